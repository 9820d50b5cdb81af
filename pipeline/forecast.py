"""Run a trained world model over windows (torch side of evaluation)."""

from __future__ import annotations

import numpy as np
import torch

from evaluation import baselines, forecast_eval, metrics
from pipeline.windows import WindowSet


def _batches(windows: WindowSet, batch_size: int, device: torch.device, sizes: bool):
    """(hist, hist_mask, actions (b, K=1, F), extra imagine() arguments) per batch; the
    extra arguments hold the slots' sizes for a model that reads them (`sizes`)."""
    a = windows.arrays
    for start in range(0, len(windows), batch_size):
        part = slice(start, start + batch_size)
        extra = ({"sizes": torch.from_numpy(a["size"][part]).to(device)}
                 if sizes and "size" in a else {})
        yield (torch.from_numpy(a["hist"][part]).to(device),
               torch.from_numpy(a["hist_mask"][part]).to(device),
               torch.from_numpy(a["actions"][part][:, None, :]).to(device), extra)


def reads_sizes(model: torch.nn.Module) -> bool:
    """Whether the model takes the vehicles' lengths and widths (the interaction variant)."""
    return bool(getattr(model, "reads_sizes", False))


@torch.no_grad()
def predict(model: torch.nn.Module, windows: WindowSet, samples: int = 0, seed: int = 0,
            batch_size: int = 256) -> dict[str, np.ndarray]:
    """Open-loop forecasts under the recorded actions.

    Prior-mean rollout: states (B, F, N, 4), states_std (B, F, N, 4), collision (B, F)
    (the model's risk source), collision_head and overlap (B, F) (both sources),
    uncertainty (B, F); with `samples` S > 0 also samples (S, B, F, N, 2), positions of S
    rollouts with seeded latent noise.
    """
    model.eval()
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    parts: dict[str, list[np.ndarray]] = {}
    for hist, mask, actions, extra in _batches(windows, batch_size, device, reads_sizes(model)):
        mean = model.imagine(hist, mask, actions, **extra)
        out = {"states": mean.states_mean[:, 0, 0], "states_std": mean.states_std[:, 0, 0],
               "collision": mean.collision[:, 0, 0], "uncertainty": mean.uncertainty[:, 0],
               "collision_head": mean.collision_head[:, 0, 0], "overlap": mean.overlap[:, 0, 0]}
        if samples:
            noise = torch.randn((*actions.shape[:2], samples, actions.shape[2], model.stoch_dim),
                                generator=generator).to(device)  # (b, 1, S, F, Z)
            drawn = model.imagine(hist, mask, actions, noise, **extra).states_mean[:, 0, ..., :2]
            out["samples"] = drawn.transpose(0, 1)  # (S, b, F, N, 2)
        for key, value in out.items():
            parts.setdefault(key, []).append(value.cpu().numpy())
    return {k: np.concatenate(v, axis=1 if k == "samples" else 0) for k, v in parts.items()}


def constant_velocity_states(windows: WindowSet) -> np.ndarray:
    a = windows.arrays
    return baselines.constant_velocity(a["hist"], a["hist_mask"], windows.dt, a["actions"].shape[1])


def forecast_summary(model: torch.nn.Module, windows: WindowSet, prefix: str) -> dict[str, float]:
    """`<prefix>fde_<s>s`, `cv_fde_<s>s`, `<prefix>risk_auroc` (the model's risk source) and
    `<prefix>risk_auroc_head` / `_overlap` (each source alone) on the given windows."""
    a, dt = windows.arrays, windows.dt
    pred = predict(model, windows)
    seconds = forecast_eval.horizon_seconds(a["actions"].shape[1], dt)
    cv = constant_velocity_states(windows)
    summary = dict(zip([f"{prefix}fde_{s}s" for s in seconds],
                       forecast_eval.fde_curve(pred["states"], a, dt), strict=True))
    summary |= dict(zip([f"cv_fde_{s}s" for s in seconds],
                        forecast_eval.fde_curve(cv, a, dt), strict=True))
    mask = a["step_mask"] & a["label_mask"]
    for name, key in (("", "collision"), ("_head", "collision_head"), ("_overlap", "overlap")):
        summary[f"{prefix}risk_auroc{name}"] = metrics.auroc(pred[key], a["collision"], mask)
    return summary


@torch.no_grad()
def history_codes(model: torch.nn.Module, windows: WindowSet,
                  batch_size: int = 256) -> np.ndarray | None:
    """(B, deter_dim) the model's encoding h_0 of each window's history (`encode`), or None
    for a model whose context has no such vector (the interaction variant)."""
    model.eval()
    device = next(model.parameters()).device
    parts = []
    for hist, mask, _, _ in _batches(windows, batch_size, device, sizes=False):
        deter = getattr(model.encode(hist, mask), "deter", None)
        if deter is None:
            return None
        parts.append(deter.cpu().numpy())
    return np.concatenate(parts) if parts else None
