"""Export stage: the trained world model as an ONNX planner plus its JSON sidecar.

`planner.onnx` scores K candidate meta-action sequences (dynamic K); `planner.onnx.json`
holds everything a scorer needs besides the graph (see pipeline/scorer.py). The stage
fails when onnxruntime and torch disagree by more than `export.tolerance` on recorded
scenes. With tracking on, the file is logged with MLflow's ONNX flavor and registered.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from models.candidates import ACTION_NAMES
from pipeline.artifacts import Artifacts
from pipeline.config import Config
from pipeline.errors import StageError
from pipeline.runner import Stage, StageContext

PLANNER_FILE = "planner.onnx"


def parity_inputs(cfg: Config, scenes: dict[str, np.ndarray], n_candidates: int, stoch: int):
    """Recorded histories with random candidates and noise, seeded."""
    rng = np.random.default_rng(cfg.seed)
    candidates = rng.integers(0, len(ACTION_NAMES), (n_candidates, cfg.export.horizon))
    noise = rng.standard_normal((n_candidates, cfg.export.samples, cfg.export.horizon, stoch))
    for b in range(min(cfg.export.parity_scenes, len(scenes["hist"]))):
        yield (scenes["hist"][b : b + 1], scenes["hist_mask"][b : b + 1].astype(np.float32),
               candidates.astype(np.int64), noise.astype(np.float32))


def check_parity_on_scenes(planner, path: Path, cfg: Config, scenes: dict) -> float:
    from pipeline.onnx_export import ParityError, check_parity

    worst = 0.0
    try:
        for inputs in parity_inputs(cfg, scenes, 7, planner.world_model.stoch_dim):
            worst = max(worst, check_parity(planner, path, *inputs, atol=cfg.export.tolerance))
    except ParityError as err:
        raise StageError(f"export: parity check failed: {err}") from None
    return worst


def sidecar_fields(cfg: Config, spec: dict, model, critic: bool = False) -> dict:
    """Everything the scorer needs besides the graph; `model` is the exported WorldModel,
    `critic` whether a risk critic gives the collision probability."""
    from pipeline.onnx_export import INPUT_NAMES, OUTPUT_NAMES

    envelope = f"(envelope {model.vehicle_length:g} m x {model.vehicle_width:g} m)"
    replica = cfg.export.replica or (critic and cfg.critic.replica)
    risk = f"traffic replica {envelope}" if replica else f"{model.risk} {envelope}"
    if cfg.export.replica and cfg.export.replica_tail_steps:  # its horizon is longer
        risk += f", {cfg.export.replica_tail_steps} IDLE steps after the candidates'"
    return {"action_names": list(ACTION_NAMES), "history": spec["history"],
            "horizon": cfg.export.horizon, "vehicles": spec["vehicles"], "obs_dim": model.obs_dim,
            "stoch_dim": model.stoch_dim, "samples": cfg.export.samples, "dt": spec["dt"],
            "frames_per_step": spec["frames_per_step"], "gamma": cfg.export.gamma,
            "bootstrap": cfg.export.bootstrap, "lookahead": cfg.export.lookahead,
            "risk": f"critic over {risk}" if critic else risk,
            "obs_mean": spec["obs_mean"], "obs_std": spec["obs_std"],
            "input_names": list(INPUT_NAMES), "output_names": list(OUTPUT_NAMES),
            "opset": cfg.export.opset, "tolerance": cfg.export.tolerance}


def traffic_replica(cfg: Config):
    """The planner's TrafficReplica (models/traffic.py) as `export` sets it, or None when
    export.replica is off."""
    from models.traffic import TrafficReplica
    from pipeline.stages.critic import replica_lanes

    e = cfg.export
    if not e.replica:
        return None
    return TrafficReplica(replica_lanes(cfg, "export.replica"),
                          (e.envelope_length, e.envelope_width), e.replica_reacting_steps,
                          e.replica_mobil_at_start, e.replica_late_idm_every,
                          e.replica_tail_steps)


def write_planner(model, critic, cfg: Config, spec: dict, hist: np.ndarray,
                  hist_mask: np.ndarray, path: Path):
    """The planner over `model` (its envelope set) and the optional `critic`, written to
    `path` as ONNX (traced on the example scene hist (1, H, N, D), hist_mask (1, H, N)) with
    its sidecar; returns (the torch planner, the sidecar fields)."""
    import torch

    from models.planner import Planner
    from pipeline.onnx_export import export_planner
    from pipeline.scorer import write_sidecar

    e = cfg.export
    planner = Planner(model, e.gamma, e.bootstrap, e.lookahead, critic,
                      e.lookahead_min_speed if e.lookahead_brake else None,
                      traffic_replica(cfg)).eval()
    export_planner(planner, path, torch.from_numpy(hist), torch.from_numpy(hist_mask),
                   n_candidates=125, samples=e.samples, opset=e.opset, horizon=e.horizon)
    fields = sidecar_fields(cfg, spec, model, critic is not None)
    write_sidecar(path, **fields)
    return planner, fields


def register(path: Path, fields: dict, cfg: Config) -> int:
    """Log the planner with MLflow's ONNX flavor (sidecar in the metadata) and register it."""
    import mlflow
    import onnx

    info = mlflow.onnx.log_model(onnx.load(str(path)), name="planner", metadata=fields,
                                 registered_model_name=cfg.export.model_name)
    return int(info.registered_model_version)


def produce(cfg: Config, inputs: Mapping[str, Artifacts], work: Path,
            ctx: StageContext) -> dict[str, float]:
    from pipeline.onnx_export import time_planner
    from pipeline.stages.critic import load_critic
    from pipeline.stages.evaluate import held_out_windows
    from pipeline.stages.train import load_model

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
    inputs_125 = next(parity_inputs(cfg, scenes, 125, model.stoch_dim))
    summary = {"parity_max_abs_diff": worst, "tolerance": cfg.export.tolerance,
               "onnx_median_ms_k125": time_planner(path, *inputs_125),
               "onnx_bytes": path.stat().st_size}
    if ctx.run_id is not None:
        summary["registered_version"] = register(path, fields, cfg)
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
    if e.replica and cfg.critic.episodes > 0:
        raise StageError("export.replica gives the planner's risk and so does a critic "
                         "(critic.episodes > 0): set one of them off (a critic can correct "
                         "the replica with critic.replica=true)")
    if e.replica:
        from pipeline.stages.critic import replica_lanes

        replica_lanes(cfg, "export.replica")  # a one-line error for a road it cannot replay
    if gamma < 0.0 or not below_one:
        raise StageError(f"export.gamma must lie in [0, 1], and below 1 with export.bootstrap "
                         f"(the value after the horizon is r / (1 - gamma)), got {gamma}")


STAGE = Stage("export", sections=("export",), inputs=("ingest", "train", "critic"),
              produce=produce, check=check)
