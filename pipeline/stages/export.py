"""Export stage: the trained world model as an ONNX planner plus its JSON sidecar.

`planner.onnx` scores K candidate meta-action sequences (dynamic K); `planner.onnx.json`
holds everything a scorer needs besides the graph (see pipeline/planner/scorer.py). The stage
fails when onnxruntime and torch disagree by more than `export.tolerance` on recorded
scenes. The reality check's surprise threshold is calibrated on the held-out test windows
(pipeline/planner/calibrate.py) and written into the sidecar. With tracking on, the file is
logged with MLflow's ONNX flavor and registered.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from models.candidates import ACTION_NAMES
from pipeline.artifacts import Artifacts
from pipeline.config import Config, PlannerRisk
from pipeline.errors import StageError
from pipeline.runner import Stage, StageContext, register
from pipeline.stage_io import replica_lanes


def parity_inputs(cfg: Config, scenes: dict[str, np.ndarray], n_candidates: int, stoch: int):
    """Recorded histories with random candidates and noise, seeded."""
    rng = np.random.default_rng(cfg.seed)
    candidates = rng.integers(0, len(ACTION_NAMES), (n_candidates, cfg.export.horizon))
    noise = rng.standard_normal((n_candidates, cfg.export.samples, cfg.export.horizon, stoch))
    for b in range(min(cfg.export.parity_scenes, len(scenes["hist"]))):
        yield (scenes["hist"][b : b + 1], scenes["hist_mask"][b : b + 1].astype(np.float32),
               candidates.astype(np.int64), noise.astype(np.float32))


def check_parity_on_scenes(planner, path: Path, cfg: Config, scenes: dict) -> float:
    from pipeline.planner.onnx_export import ParityError, check_parity

    worst = 0.0
    try:
        for inputs in parity_inputs(cfg, scenes, 7, planner.world_model.stoch_dim):
            worst = max(worst, check_parity(planner, path, *inputs, atol=cfg.export.tolerance))
    except ParityError as err:
        raise StageError(f"export: parity check failed: {err}") from None
    return worst


def calibrate_surprise(path: Path, fields: dict, cfg: Config,
                       scenes: dict) -> tuple[dict, dict[str, float]]:
    """Rewrite the sidecar of the planner at `path` with the reality check's calibrated
    threshold (export.surprise_quantile of the held-out surprises); returns the new fields
    and the summary figures."""
    from pipeline.planner.calibrate import surprise_threshold, window_surprises
    from pipeline.planner.scorer import OnnxScorer, write_sidecar

    e = cfg.export
    surprises = window_surprises(OnnxScorer.load(path, seed=cfg.seed), scenes,
                                 e.surprise_windows)
    try:
        threshold = surprise_threshold(surprises, e.surprise_quantile)
    except ValueError as err:
        raise StageError(f"export: cannot calibrate the surprise threshold: {err}") from None
    fields = {**fields, "surprise_quantile": e.surprise_quantile,
              "surprise_threshold": threshold}
    write_sidecar(path, **fields)
    return fields, {"surprise_threshold": threshold,
                    "surprise_median": float(np.median(surprises)),
                    "surprise_windows": len(surprises)}


def register_model(path: Path, fields: dict, cfg: Config) -> int:
    """Log the planner with MLflow's ONNX flavor (sidecar in the metadata) and register it."""
    import mlflow
    import onnx

    info = mlflow.onnx.log_model(onnx.load(str(path)), name="planner", metadata=fields,
                                 registered_model_name=cfg.export.model_name)
    return int(info.registered_model_version)


def produce(cfg: Config, inputs: Mapping[str, Artifacts], work: Path,
            ctx: StageContext) -> dict[str, float]:
    from pipeline.planner.build import write_planner
    from pipeline.planner.onnx_export import time_planner
    from pipeline.stage_io import PLANNER_FILE, held_out_windows, load_critic, load_model

    if cfg.export.horizon > cfg.model.horizon:
        raise StageError(f"export.horizon ({cfg.export.horizon}) exceeds the horizon the model "
                         f"was trained on (model.horizon = {cfg.model.horizon})")
    model, spec = load_model(inputs["train"])
    model.vehicle_length = cfg.export.envelope_length  # the planner checks the envelope
    model.vehicle_width = cfg.export.envelope_width
    scenes = held_out_windows(cfg, inputs).arrays
    path = work / PLANNER_FILE
    planner, fields = write_planner(model, load_critic(inputs["critic"]), cfg, spec,
                                    scenes["hist"][:1], scenes["hist_mask"][:1], path)
    worst = check_parity_on_scenes(planner, path, cfg, scenes)
    fields, calibration = calibrate_surprise(path, fields, cfg, scenes)
    inputs_125 = next(parity_inputs(cfg, scenes, 125, model.stoch_dim))
    summary = {"parity_max_abs_diff": worst, "tolerance": cfg.export.tolerance,
               "onnx_median_ms_k125": time_planner(path, *inputs_125),
               "onnx_bytes": path.stat().st_size, **calibration}
    if ctx.run_id is not None:
        summary["registered_version"] = register_model(path, fields, cfg)
    return summary


def check(cfg: Config) -> None:
    e = cfg.export
    gamma = e.gamma
    below_one = gamma < 1.0 if e.bootstrap else gamma <= 1.0
    if min(e.lookahead, e.replica_reacting_steps, e.replica_tail_steps) < 0:
        raise StageError(f"export.lookahead, export.replica_reacting_steps and "
                         f"export.replica_tail_steps must be >= 0, got {e.lookahead}, "
                         f"{e.replica_reacting_steps}, {e.replica_tail_steps}")
    if e.replica_late_idm_every < 1:
        raise StageError(f"export.replica_late_idm_every must be >= 1 (frames), got "
                         f"{e.replica_late_idm_every}")
    if not (e.lookahead_min_speed >= 0 and math.isfinite(e.lookahead_min_speed)):
        raise StageError(f"export.lookahead_min_speed must be a finite speed >= 0 (m/s), got "
                         f"{e.lookahead_min_speed}")
    check_risk(cfg)
    if gamma < 0.0 or not below_one:
        raise StageError(f"export.gamma must lie in [0, 1], and below 1 with export.bootstrap "
                         f"(the value after the horizon is r / (1 - gamma)), got {gamma}")


def check_risk(cfg: Config) -> None:
    """export.risk and the critic stage agree: a critic is fitted exactly when the planner
    uses it, and the replica's road is one it can replay."""
    risk, fitted = cfg.export.risk, cfg.critic.episodes > 0
    if risk is PlannerRisk.critic and not fitted:
        raise StageError("export.risk=critic needs a fitted risk critic: set critic.episodes "
                         "> 0")
    if fitted and risk is not PlannerRisk.critic:
        raise StageError(f"critic.episodes > 0 fits a risk critic that export.risk="
                         f"{risk.value} would not use: set export.risk=critic or "
                         f"critic.episodes=0")
    if risk is PlannerRisk.replica:
        replica_lanes(cfg, "export.risk=replica")  # one line for a road it cannot replay


STAGE = register(Stage("export", sections=("export",), inputs=("ingest", "train", "critic"),
                       produce=produce, check=check))
