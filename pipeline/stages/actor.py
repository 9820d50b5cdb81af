"""Actor stage: an actor and critic trained in the imagination of the trained world model.

Input: the trained world model (frozen) and its training windows, whose real histories
are where imagination starts (models/actor.py: lambda-returns, return normalisation, an
entropy bonus, the imagined collision as termination). A Lightning Trainer runs
`actor.epochs` x `actor.batches` optimiser steps, logs the losses, the imagined return and
the entropy per step to MLflow and keeps `checkpoints/last.ckpt` (resumed with
`actor.resume`). Then the encoder + actor go to ONNX (`actor.onnx`, dynamic batch axis,
checked against torch on held-out scenes) with its sidecar, and `actor.pt` keeps the
actor-critic's weights.

Summary: the imagined figures of the actor and of a uniformly random policy from the
held-out test windows (reward and collision probability per imagined step, discounted
return over the horizon), the imagined latent steps per second of training, and the
parity. With `actor.epochs` 0 the stage writes nothing but {"epochs": 0}.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path

from pipeline.artifacts import Artifacts
from pipeline.config import Config, Variant
from pipeline.errors import StageError
from pipeline.runner import Stage, StageContext, register

CHECKPOINTS = "checkpoints"
ACTOR_WEIGHTS = "actor.pt"


def actor_kwargs(cfg: Config) -> dict:
    a = cfg.actor
    return {"hidden_dim": a.hidden, "gamma": a.gamma, "lam": a.lam, "entropy": a.entropy,
            "collision_penalty": a.collision_penalty, "slow_rate": a.slow_rate}


def fit(cfg: Config, module, windows, work: Path, ctx: StageContext) -> dict[str, float]:
    """Train `module` (an ActorModule) on start states of `windows`; returns the figures."""
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint

    from pipeline.actor_module import StartDraws, step_loader
    from pipeline.lit_module import EpochSeed
    from pipeline.stage_io import completed_epochs, mlflow_logger

    a = cfg.actor
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    trainer = L.Trainer(
        max_epochs=a.epochs, accelerator=cfg.train.accelerator, devices=1,
        callbacks=[ModelCheckpoint(dirpath=work / CHECKPOINTS, filename="last",
                                   enable_version_counter=False),  # one file, each epoch
                   EpochSeed(cfg.seed)],
        logger=mlflow_logger(cfg, ctx), default_root_dir=work, deterministic=True,
        log_every_n_steps=10, enable_model_summary=False, enable_progress_bar=False)
    last = work / CHECKPOINTS / "last.ckpt"
    resume_from = str(last) if a.resume and last.is_file() else None
    resumed = completed_epochs(resume_from)
    module.starts = StartDraws(windows.arrays["hist"], windows.arrays["hist_mask"],
                               a.batch_size, cfg.seed)
    start = time.perf_counter()
    trainer.fit(module, step_loader(a.batches), ckpt_path=resume_from)
    elapsed = time.perf_counter() - start
    steps = (a.epochs - resumed) * a.batches * a.batch_size * a.horizon
    return {"epochs": a.epochs, "resumed_from_epoch": resumed, "fit_seconds": elapsed,
            "imagined_steps_per_s": steps / max(elapsed, 1e-9)}


def imagined_figures(cfg: Config, module, windows) -> dict[str, float]:
    """The actor's and a random policy's imagined figures from the windows' histories."""
    import torch

    from pipeline.lit_module import reseed

    hist = torch.from_numpy(windows.arrays["hist"])
    mask = torch.from_numpy(windows.arrays["hist_mask"]).bool()
    figures, model, agent = {}, module.world_model, module.agent
    with torch.no_grad():
        ctx, start = model.start(hist, mask)
        for policy in ("actor", "random"):
            reseed(cfg.seed)
            rollout = agent.imagine(model, ctx, start, cfg.actor.horizon, policy)
            prefix = "imagined_" if policy == "actor" else "random/imagined_"
            figures |= {prefix + k: v for k, v in agent.rates(rollout).items()}
    return figures


def export(cfg: Config, module, spec: dict, windows, work: Path) -> dict[str, float]:
    """actor.onnx + its sidecar, checked against torch on up to export.parity_scenes."""
    from models.actor import ActorPolicy
    from models.candidates import ACTION_NAMES
    from pipeline.planner.actor_export import check_actor_parity, export_actor
    from pipeline.planner.actor_runtime import ACTOR_FILE, write_actor_sidecar
    from pipeline.planner.onnx_export import ParityError

    policy = ActorPolicy(module.world_model, module.agent.actor).eval()
    hist, mask = windows.arrays["hist"], windows.arrays["hist_mask"].astype("float32")
    path = work / ACTOR_FILE
    export_actor(policy, path, hist[:2], mask[:2], cfg.export.opset)
    scenes = slice(0, max(cfg.export.parity_scenes, 2))
    try:
        diff = check_actor_parity(policy, path, hist[scenes], mask[scenes], cfg.export.tolerance)
    except ParityError as err:
        raise StageError(f"actor: parity check failed: {err}") from None
    write_actor_sidecar(path, action_names=list(ACTION_NAMES), history=spec["history"],
                        vehicles=spec["vehicles"], obs_dim=module.world_model.obs_dim,
                        dt=spec["dt"], frames_per_step=spec["frames_per_step"],
                        opset=cfg.export.opset, tolerance=cfg.export.tolerance)
    return {"parity_max_abs_diff": diff, "onnx_bytes": path.stat().st_size}


def produce(cfg: Config, inputs: Mapping[str, Artifacts], work: Path,
            ctx: StageContext) -> dict[str, float]:
    import torch

    from pipeline.actor_module import ActorModule
    from pipeline.lit_module import reseed
    from pipeline.stage_io import held_out_splits, load_model

    if cfg.actor.epochs == 0:
        return {"epochs": 0}
    model, spec = load_model(inputs["train"])
    windows = held_out_splits(cfg, inputs, ("train", "test"))
    reseed(cfg.seed)  # the initial weights do not depend on what ran before in the process
    module = ActorModule(spec["model_kwargs"], actor_kwargs(cfg), cfg.actor.horizon,
                         cfg.actor.lr, model.state_dict())
    summary = fit(cfg, module, windows["train"], work, ctx)
    module.eval()
    torch.save(module.agent.state_dict(), work / ACTOR_WEIGHTS)
    summary |= imagined_figures(cfg, module, windows["test"])
    summary |= export(cfg, module, spec, windows["test"], work)
    return summary


def check(cfg: Config) -> None:
    if cfg.actor.epochs and cfg.model.variant is Variant.interaction:
        raise StageError("actor: the actor is trained in an RSSM world model's latent space; "
                         "model.variant=interaction has none (set actor.epochs=0)")


def export_settings(cfg: Config) -> dict:
    """The `export` settings the ONNX actor is written and checked with."""
    if cfg.actor.epochs == 0:
        return {}
    e = cfg.export
    return {"export": {"opset": e.opset, "tolerance": e.tolerance,
                       "parity_scenes": e.parity_scenes}}


STAGE = register(Stage("actor", sections=("actor",), inputs=("ingest", "train"),
                       produce=produce, check=check, extra_key=export_settings,
                       resumable=lambda cfg: cfg.actor.resume))
