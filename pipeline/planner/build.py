"""Build the torch planner a config describes and write it as ONNX with its sidecar.

The export stage, the critic stage (a later labelling round drives with the previous
round's planner) and `drivecast bench planner` all build the planner here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from models.candidates import ACTION_NAMES
from pipeline.config import Config, CriticPrior, PlannerRisk
from pipeline.errors import StageError
from pipeline.stage_io import replica_lanes


def sidecar_fields(cfg: Config, spec: dict, model) -> dict:
    """Everything the scorer needs besides the graph; `model` is the exported WorldModel."""
    from pipeline.planner.onnx_export import INPUT_NAMES, OUTPUT_NAMES

    return {"action_names": list(ACTION_NAMES), "history": spec["history"],
            "horizon": cfg.export.horizon, "vehicles": spec["vehicles"], "obs_dim": model.obs_dim,
            "stoch_dim": model.stoch_dim, "samples": cfg.export.samples, "dt": spec["dt"],
            "frames_per_step": spec["frames_per_step"], "gamma": cfg.export.gamma,
            "bootstrap": cfg.export.bootstrap, "lookahead": cfg.export.lookahead,
            "risk": risk_description(cfg, model),
            "obs_mean": spec["obs_mean"], "obs_std": spec["obs_std"],
            "input_names": list(INPUT_NAMES), "output_names": list(OUTPUT_NAMES),
            "opset": cfg.export.opset, "tolerance": cfg.export.tolerance}


def risk_description(cfg: Config, model) -> str:
    """The sidecar's one-line account of where the collision probability comes from."""
    envelope = f"(envelope {model.vehicle_length:g} m x {model.vehicle_width:g} m)"
    risk = cfg.export.risk
    if risk is PlannerRisk.replica:
        text = f"traffic replica {envelope}"
        tail = cfg.export.replica_tail_steps
        return text + (f", {tail} IDLE steps after the candidates'" if tail else "")
    if risk is PlannerRisk.critic:
        replica = cfg.critic.prior is CriticPrior.replica
        return f"critic over {'traffic replica' if replica else model.risk} {envelope}"
    return f"{model.risk} {envelope}"


def traffic_replica(cfg: Config, needed_by: str = "export.risk=replica"):
    """The planner's TrafficReplica (models/traffic.py) as `export` sets it."""
    from models.traffic import TrafficReplica

    e = cfg.export
    return TrafficReplica(replica_lanes(cfg, needed_by),
                          (e.envelope_length, e.envelope_width), e.replica_reacting_steps,
                          e.replica_mobil_at_start, e.replica_late_idm_every,
                          e.replica_tail_steps)


def risk_source(cfg: Config, critic=None):
    """The planner's RiskSource (models/risk_sources.py) as `export.risk` names it; `critic`
    is the fitted risk critic, which export.risk=critic needs."""
    from models.risk_sources import CriticRisk, ImaginedRisk, ReplicaRisk

    if cfg.export.risk is PlannerRisk.critic:
        if critic is None:
            raise StageError("export.risk=critic needs a fitted risk critic "
                             "(critic.episodes > 0)")
        return CriticRisk(critic)
    if cfg.export.risk is PlannerRisk.replica:
        return ReplicaRisk(traffic_replica(cfg))
    return ImaginedRisk()


def write_planner(model, critic, cfg: Config, spec: dict, hist: np.ndarray,
                  hist_mask: np.ndarray, path: Path):
    """The planner over `model` (its envelope set) with the risk source `export.risk` names
    (`critic`: the fitted critic, or None), written to `path` as ONNX (traced on the example
    scene hist (1, H, N, D), hist_mask (1, H, N)) with its sidecar; returns (the torch
    planner, the sidecar fields)."""
    import torch

    from models.planner import Planner
    from pipeline.planner.onnx_export import export_planner
    from pipeline.planner.scorer import write_sidecar

    e = cfg.export
    planner = Planner(model, risk_source(cfg, critic), e.gamma, e.bootstrap, e.lookahead,
                      e.lookahead_min_speed if e.lookahead_brake else None).eval()
    export_planner(planner, path, torch.from_numpy(hist), torch.from_numpy(hist_mask),
                   n_candidates=125, samples=e.samples, opset=e.opset, horizon=e.horizon)
    fields = sidecar_fields(cfg, spec, model)
    write_sidecar(path, **fields)
    return planner, fields
