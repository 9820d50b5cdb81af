"""Train stage: fit the world model on ingest windows with a Lightning Trainer.

Writes `checkpoints/{best,last}.ckpt`, `model.pt` + `model.json` (everything needed to
rebuild the model without Lightning: constructor arguments, normalisation statistics,
window geometry) and `splits.json` (episode ids per split).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from pipeline.artifacts import Artifacts, write_json_atomic, write_text_atomic
from pipeline.config import Config, model_kwargs, to_dict
from pipeline.errors import StageError
from pipeline.runner import Stage, StageContext, register
from pipeline.stage_io import (
    MODEL_FILE,
    MODEL_SPEC,
    SPLITS,
    completed_epochs,
    dataset_path,
    load_model,
    load_windows,
    mlflow_logger,
)
from pipeline.windows import (
    WindowSet,
    observation_stats,
    split_windows,
)

CHECKPOINTS = "checkpoints"


def split(cfg: Config, windows: WindowSet) -> dict[str, WindowSet]:
    try:
        return split_windows(windows, cfg.train.val_fraction, cfg.train.test_fraction, cfg.seed)
    except ValueError as err:
        fix = ("give more recorded data or lower ingest.recorded.scene_seconds"
               if "time ranges" in str(err) else "raise ingest.episodes")
        raise StageError(f"train: {err}; {fix}") from None


def build_trainer(cfg: Config, work: Path, ctx: StageContext):
    import lightning as L
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

    from pipeline.lit_module import DataWait, EpochSeed

    t, monitor = cfg.train, monitored_metric(cfg)
    checkpoint = ModelCheckpoint(dirpath=work / CHECKPOINTS, filename="best", monitor=monitor,
                                 mode="min", save_top_k=1, save_last=True)
    return L.Trainer(
        max_epochs=t.epochs, accelerator=t.accelerator, devices=t.devices, strategy=t.strategy,
        num_nodes=t.num_nodes, precision=t.precision, gradient_clip_val=t.grad_clip,
        callbacks=[checkpoint, EarlyStopping(monitor, patience=t.patience, mode="min"),
                   EpochSeed(cfg.seed), DataWait()],
        logger=mlflow_logger(cfg, ctx), default_root_dir=work, deterministic=True,
        log_every_n_steps=1, enable_model_summary=False,
    )


def monitored_metric(cfg: Config) -> str:
    """What checkpointing and early stopping watch: the open-loop prior-mean position error
    of the other vehicles (what evaluation scores; val/loss mixes in noisy sampled-latent
    and KL terms), or val/loss for value_equivalent, whose forecast is not trained."""
    return "val/loss" if cfg.model.variant.value == "value_equivalent" else "val/forecast_ade"


def make_module(cfg: Config, train: WindowSet):
    from pipeline.lit_module import WorldModelModule

    mean, std = observation_stats(train.arrays["hist"], train.arrays["hist_mask"])
    return WorldModelModule(model_kwargs(cfg.model, train.dt), to_dict(cfg.train.loss),
                            cfg.train.lr, cfg.train.weight_decay, mean.tolist(), std.tolist(),
                            target_scale(train).tolist())


def target_scale(train: WindowSet) -> np.ndarray:
    """RMS one-step error of constant velocity per [x, y, vx, vy]: the forecast residual scale."""
    from pipeline.forecast import constant_velocity_states

    a = train.arrays
    valid = a["future_mask"][:, 0] & a["step_mask"][:, :1]  # (B, N)
    error = (constant_velocity_states(train)[:, 0] - a["future"][:, 0])[valid]  # (M, 4)
    if len(error) == 0:
        return np.ones(4, dtype=np.float32)
    return np.maximum(np.sqrt((error ** 2).mean(0)), 0.05).astype(np.float32)


def fit(cfg: Config, splits: dict[str, WindowSet], work: Path, ctx: StageContext,
        init: Artifacts | None = None):
    """Train; returns the module with the best checkpoint's weights and figures of the fit.
    `init`: a train stage to warm-start from (see `warm_module`)."""
    import lightning as L

    from pipeline.lit_module import DataWait, WorldModelModule, window_loader

    L.seed_everything(cfg.seed, workers=True, verbose=False)
    module = make_module(cfg, splits["train"]) if init is None else warm_module(cfg, init,
                                                                                splits["train"])
    trainer = build_trainer(cfg, work, ctx)
    last = work / CHECKPOINTS / "last.ckpt"
    resume_from = str(last) if cfg.train.resume and last.is_file() else None
    loaders = [window_loader(splits[name].arrays, cfg.train.batch_size, name == "train",
                             cfg.seed, cfg.train.num_workers) for name in ("train", "val")]
    resumed = completed_epochs(resume_from)
    start = time.perf_counter()
    trainer.fit(module, *loaders, ckpt_path=resume_from)
    if trainer.global_rank != 0:
        raise SystemExit(0)  # a DDP worker: rank 0 evaluates and writes the stage
    elapsed = time.perf_counter() - start
    epochs = trainer.current_epoch
    best = trainer.checkpoint_callback.best_model_path or str(last)
    module = WorldModelModule.load_from_checkpoint(best, map_location="cpu")
    figures = {"epochs": epochs, "resumed_from_epoch": resumed,
               "samples_per_s": len(splits["train"]) * (epochs - resumed) / max(elapsed, 1e-9),
               "fit_seconds": elapsed,
               "data_wait_share": next(c for c in trainer.callbacks
                                       if isinstance(c, DataWait)).share()}
    return module, figures


def save_model(module, cfg: Config, windows: WindowSet, work: Path) -> None:
    """model.pt (state dict) + model.json: enough to rebuild the model without Lightning."""
    import torch

    spec = {"model_kwargs": module.hparams.model_kwargs, "obs_mean": module.hparams.obs_mean,
            "obs_std": module.hparams.obs_std, "dt": windows.dt,
            "frames_per_step": windows.frames_per_step, "history": cfg.model.history,
            "horizon": cfg.model.horizon, "vehicles": cfg.model.vehicles}
    tmp = work / f".{MODEL_FILE}.tmp"
    torch.save(module.model.state_dict(), tmp)
    tmp.replace(work / MODEL_FILE)
    write_text_atomic(work / MODEL_SPEC, json.dumps(spec, indent=2) + "\n")


def produce(cfg: Config, inputs: Mapping[str, Artifacts], work: Path,
            ctx: StageContext) -> dict[str, float]:

    windows = load_windows(dataset_path(inputs["ingest"]), cfg)
    return train_on(cfg, split(cfg, windows), work, ctx)


def train_on(cfg: Config, splits: dict[str, WindowSet], work: Path, ctx: StageContext,
             init: Artifacts | None = None) -> dict[str, float]:
    """Fit on `splits` (optionally warm-started from the train stage `init`), write the
    splits and the model, and return the stage summary."""
    from pipeline.forecast import forecast_summary
    from pipeline.lit_module import reseed

    write_json_atomic(work / SPLITS, {k: np.unique(v.arrays["episode"]).tolist()
                                      for k, v in splits.items()})
    module, figures = fit(cfg, splits, work, ctx, init=init)
    save_model(module, cfg, splits["train"], work)  # (its dt and frames per step)
    reseed(cfg.seed)  # the figures' samples: the same after a resumed or a whole training
    summary = forecast_summary(module.model, splits["val"], prefix="val_") | figures
    summary |= {"params": sum(p.numel() for p in module.model.parameters()),
                "train_windows": len(splits["train"]), "val_windows": len(splits["val"])}
    return summary


STAGE = register(Stage("train", sections=("model", "train"), inputs=("ingest",), produce=produce,
                       resumable=lambda cfg: cfg.train.resume))


# ---------------------------------------------------------------- several datasets, warm start
# (`drivecast iterate`, pipeline/iterate.py: round k trains on every dataset so far, starting
# from round k-1's model)


def concat_windows(parts: list[WindowSet]) -> WindowSet:
    """Windows of several datasets in order. Lane centres stay each dataset's own; a dataset
    with fewer lanes seen repeats its outermost centre (nearest-lane lookups are unchanged)."""
    if len({(p.dt, p.frames_per_step) for p in parts}) > 1:
        raise StageError("train: the datasets differ in decision period or frames per step")
    lanes = max(p.arrays["lane_centers"].shape[1] for p in parts)
    arrays = {}
    for name in parts[0].arrays:
        values = [p.arrays[name] for p in parts]
        if name == "lane_centers":
            values = [np.pad(v, ((0, 0), (0, lanes - v.shape[1])), mode="edge") for v in values]
        arrays[name] = np.concatenate(values)
    return WindowSet(arrays, parts[0].dt, parts[0].frames_per_step)


def load_windows_many(dataset_dirs: list[Path], cfg: Config) -> list[WindowSet]:
    """Each dataset's windows; refuses datasets that share an episode id (splits are by id)."""
    parts = [load_windows(path, cfg) for path in dataset_dirs]
    seen: dict[int, Path] = {}
    for path, part in zip(dataset_dirs, parts, strict=True):
        for episode in np.unique(part.arrays["episode"]).tolist():
            if episode in seen:
                raise StageError(f"train: episode id {episode} is in both {seen[episode]} and "
                                 f"{path}")
            seen[episode] = path
    return parts


def split_each(cfg: Config, parts: list[WindowSet]) -> dict[str, WindowSet]:
    """Every dataset split on its own, then joined per split: a dataset's split is the same
    in every round that trains on it (round 0's test episodes are never trained on)."""
    each = [split(cfg, part) for part in parts]
    return {name: concat_windows([s[name] for s in each]) for name in each[0]}


def warm_module(cfg: Config, init: Artifacts, train: WindowSet):
    """A module holding `init`'s model: its weights and its input normalisation and target
    scale (the inputs the model learned on do not shift); optimiser and schedule are new."""
    from pipeline.lit_module import WorldModelModule

    previous, spec = load_model(init)
    wanted = json.loads(json.dumps(model_kwargs(cfg.model, train.dt)))
    if spec["model_kwargs"] != wanted:
        raise StageError(f"train: cannot warm-start from {init.path}: its model was built with "
                         f"{spec['model_kwargs']}, this config builds {wanted}")
    module = WorldModelModule(wanted, to_dict(cfg.train.loss), cfg.train.lr,
                              cfg.train.weight_decay, spec["obs_mean"], spec["obs_std"],
                              previous.target_scale.tolist())
    module.model.load_state_dict(previous.state_dict())
    return module


def data_inputs(inputs: Mapping[str, Artifacts]) -> list[Artifacts]:
    """The `data_<i>` inputs of a warm-started train stage, in order."""
    count = sum(name.startswith("data_") for name in inputs)
    return [inputs[f"data_{i}"] for i in range(count)]


def produce_warm(cfg: Config, inputs: Mapping[str, Artifacts], work: Path,
                 ctx: StageContext) -> dict[str, float]:
    """Like `produce`, on every `data_<i>` dataset, warm-started from the `init` train stage."""

    parts = load_windows_many([dataset_path(d) for d in data_inputs(inputs)], cfg)
    return train_on(cfg, split_each(cfg, parts), work, ctx, init=inputs["init"])


def warm_stage(datasets: int) -> Stage:
    """The train stage on `datasets` datasets (inputs data_0 .. data_<n-1>), warm-started
    from the train stage given as input `init`."""
    names = tuple(f"data_{i}" for i in range(datasets))
    return Stage("train", sections=("model", "train"), inputs=(*names, "init"),
                 produce=produce_warm, resumable=lambda cfg: cfg.train.resume)
