"""Actor stage: an actor and critic trained in the imagination of the trained world model.

Input: the trained world model (frozen) and its training windows, whose real histories
are where imagination starts (models/actor.py: lambda-returns, return normalisation, an
entropy bonus, the imagined collision as termination). A Lightning Trainer runs
`actor.epochs` x `actor.batches` optimiser steps, logs the losses, the imagined return and
the entropy per step to MLflow and keeps `checkpoints/last.ckpt` (resumed with
`actor.resume`). Then the encoder + actor go to ONNX (`actor.onnx`, dynamic batch axis,
checked against torch on held-out scenes) with its sidecar, and `actor.pt` keeps the
actor-critic's weights.

With `actor.search_weight` > 0 the actor also imitates the exported planner's decision in
each training window (pipeline/planner/search_targets.py, with simulate's decision rule):
the search in the same world model is its policy target, as in MuZero. With
`actor.planner_episodes` > 0 the planner drives that many EnvPool episodes first and each
of its decisions joins the training windows, as a labelled state and a start state.

Summary: the imagined figures of the actor, of a uniformly random policy and of each
always-the-same-action policy from the held-out test windows (reward and collision
probability per imagined step, discounted return over the horizon), the imagined latent
steps per second of training, and the parity; with imitation, `search_agreement`: how
often the actor's most probable action is the planner's on the test windows. With
`actor.epochs` 0 the stage writes nothing but {"epochs": 0}.
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
# the simulate settings the planner's targets depend on: its decision rule, then how it
# drives (actor.planner_episodes), and the evaluation seeds its episodes avoid
DRIVING = ("risk_weight", "uncertainty_weight", "risk_budget", "surprise_threshold",
           "surprise_patience", "lane_guard", "guard_front_gap", "guard_rear_gap",
           "guard_rear_ttc", "env_id", "env_config", "seed", "episodes")
ACTOR_WEIGHTS = "actor.pt"


def actor_kwargs(cfg: Config) -> dict:
    a = cfg.actor
    return {"hidden_dim": a.hidden, "gamma": a.gamma, "lam": a.lam, "entropy": a.entropy,
            "collision_penalty": a.collision_penalty, "slow_rate": a.slow_rate}


def fit(cfg: Config, module, starts: dict, work: Path, ctx: StageContext) -> dict[str, float]:
    """Train `module` (an ActorModule) from the start states `starts` (hist, hist_mask and
    target: the planner's decisions in them, or None); returns the figures."""
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
    module.starts = StartDraws(starts["hist"], starts["hist_mask"], a.batch_size, cfg.seed,
                               starts["target"])
    start = time.perf_counter()
    trainer.fit(module, step_loader(a.batches), ckpt_path=resume_from)
    elapsed = time.perf_counter() - start
    steps = (a.epochs - resumed) * a.batches * a.batch_size * a.horizon
    return {"epochs": a.epochs, "resumed_from_epoch": resumed, "fit_seconds": elapsed,
            "imagined_steps_per_s": steps / max(elapsed, 1e-9)}


def imagined_figures(cfg: Config, module, windows) -> dict[str, float]:
    """The imagined figures of the actor, of a random policy and of each always-the-same
    action policy (`always/<ACTION>/`), from the windows' histories on the same draws."""
    import torch

    from models.candidates import ACTION_NAMES
    from pipeline.lit_module import reseed

    hist = torch.from_numpy(windows.arrays["hist"])
    mask = torch.from_numpy(windows.arrays["hist_mask"]).bool()
    figures, model, agent = {}, module.world_model, module.agent
    prefixes = {"actor": "imagined_", "random": "random/imagined_"}
    prefixes |= {i: f"always/{name}/imagined_" for i, name in enumerate(ACTION_NAMES)}
    with torch.no_grad():
        ctx, start = model.start(hist, mask)
        for policy, prefix in prefixes.items():
            reseed(cfg.seed)
            rollout = agent.imagine(model, ctx, start, cfg.actor.horizon, policy)
            figures |= {prefix + k: v for k, v in agent.rates(rollout).items()}
    return figures


def planner_labeller(cfg: Config, inputs: Mapping[str, Artifacts]):
    """windows -> the exported planner's first action (W,) in each of them (the planner
    loaded once)."""
    from pipeline.planner.scorer import OnnxScorer
    from pipeline.planner.search_targets import planner_choices
    from pipeline.stage_io import PLANNER_FILE, road_lanes

    scorer = OnnxScorer.load(inputs["export"].path / PLANNER_FILE, threads=1, seed=cfg.seed)
    s, lanes = cfg.simulate, road_lanes(cfg, "actor.search_weight")
    rule = (s.risk_weight, s.uncertainty_weight, s.risk_budget)
    return lambda windows: planner_choices(scorer, windows.arrays["hist"],
                                           windows.arrays["hist_mask"], lanes, rule)


def driven_states(cfg: Config, inputs: Mapping[str, Artifacts]) -> dict:
    """Every decision of `actor.planner_episodes` EnvPool episodes driven by the exported
    planner, with its history and its choice (pipeline/planner/search_targets.py)."""
    from functools import partial

    from pipeline.envpool_source import EnvpoolSource
    from pipeline.planner.search_targets import RecordingPlanner, planner_states
    from pipeline.stage_io import (
        ACTOR_SEED_STREAM,
        PLANNER_FILE,
        collection_seeds,
        env_of,
        evaluation_seeds,
        planner_factory,
    )

    a = cfg.actor
    make = planner_factory(cfg, inputs["export"].path / PLANNER_FILE,
                           partial(RecordingPlanner, epsilon=a.planner_epsilon))
    seeds = collection_seeds(cfg.seed, 0, a.planner_episodes, evaluation_seeds(cfg.simulate),
                             ACTOR_SEED_STREAM)
    return planner_states(EnvpoolSource(*env_of(cfg)), make, seeds, cfg.simulate.batch)


def start_states(cfg: Config, inputs: Mapping[str, Artifacts], windows, label) -> dict:
    """Where imagination starts: the training windows, labelled by `label` (a
    planner_labeller, or None: no imitation), and the states the planner drives into
    (actor.planner_episodes)."""
    import numpy as np

    starts = {"hist": windows.arrays["hist"], "hist_mask": windows.arrays["hist_mask"],
              "target": None if label is None else label(windows)}
    if cfg.actor.planner_episodes:
        driven = driven_states(cfg, inputs)
        starts = {k: np.concatenate([v, driven[k]]) for k, v in starts.items()}
    return starts


def search_agreement(module, windows, targets) -> float:
    """How often the actor's most probable action is the planner's in the windows."""
    import torch

    hist = torch.from_numpy(windows.arrays["hist"])
    mask = torch.from_numpy(windows.arrays["hist_mask"]).bool()
    with torch.no_grad():
        _, start = module.world_model.start(hist, mask)
        _, figures = module.agent.imitation(start, torch.from_numpy(targets))
    return float(figures["search_agreement"])


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
    label = planner_labeller(cfg, inputs) if cfg.actor.search_weight > 0 else None
    starts = start_states(cfg, inputs, windows["train"], label)
    reseed(cfg.seed)  # the initial weights do not depend on what ran before in the process
    module = ActorModule(spec["model_kwargs"], actor_kwargs(cfg), cfg.actor.horizon,
                         cfg.actor.lr, model.state_dict(), cfg.actor.search_weight)
    summary = fit(cfg, module, starts, work, ctx) | {"start_states": len(starts["hist"])}
    module.eval()
    torch.save(module.agent.state_dict(), work / ACTOR_WEIGHTS)
    summary |= imagined_figures(cfg, module, windows["test"])
    if label is not None:
        test = windows["test"]
        summary["search_agreement"] = search_agreement(module, test, label(test))
    summary |= export(cfg, module, spec, windows["test"], work)
    return summary


def check(cfg: Config) -> None:
    if cfg.actor.epochs and cfg.model.variant is Variant.interaction:
        raise StageError("actor: the actor is trained in an RSSM world model's latent space; "
                         "model.variant=interaction has none (set actor.epochs=0)")
    if cfg.actor.planner_episodes and cfg.actor.search_weight == 0:
        raise StageError("actor: actor.planner_episodes labels states for imitation; set "
                         "actor.search_weight above 0 (or actor.planner_episodes=0)")


def export_settings(cfg: Config) -> dict:
    """The `export` settings the ONNX actor is written and checked with, and with
    imitation the decision rule that picks the planner's targets."""
    if cfg.actor.epochs == 0:
        return {}
    e, s = cfg.export, cfg.simulate
    settings = {"export": {"opset": e.opset, "tolerance": e.tolerance,
                           "parity_scenes": e.parity_scenes}}
    if cfg.actor.search_weight > 0:
        names = DRIVING if cfg.actor.planner_episodes else DRIVING[:3]
        settings["simulate"] = {name: getattr(s, name) for name in names}
    return settings


STAGE = register(Stage("actor", sections=("actor",), inputs=("ingest", "train", "export"),
                       produce=produce, check=check, extra_key=export_settings,
                       resumable=lambda cfg: cfg.actor.resume))
