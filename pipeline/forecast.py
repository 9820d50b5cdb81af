"""Run a trained world model over windows and score it against constant velocity."""

from __future__ import annotations

import numpy as np
import torch

from evaluation import baselines, metrics
from pipeline.windows import WindowSet


@torch.no_grad()
def predict(model: torch.nn.Module, windows: WindowSet,
            batch_size: int = 512) -> dict[str, np.ndarray]:
    """Open-loop forecasts under the recorded actions (prior mean, no sampling).

    Returns states (B, F, N, 4), states_std (B, F, N, 4), collision (B, F) per-step
    probability, uncertainty (B, F).
    """
    model.eval()
    device = next(model.parameters()).device
    parts: dict[str, list[np.ndarray]] = {"states": [], "states_std": [], "collision": [],
                                          "uncertainty": []}
    a = windows.arrays
    for start in range(0, len(windows), batch_size):
        part = slice(start, start + batch_size)
        out = model.imagine(torch.from_numpy(a["hist"][part]).to(device),
                            torch.from_numpy(a["hist_mask"][part]).to(device),
                            torch.from_numpy(a["actions"][part][:, None, :]).to(device))
        parts["states"].append(out.states_mean[:, 0, 0].cpu().numpy())  # (b, F, N, 4)
        parts["states_std"].append(out.states_std[:, 0, 0].cpu().numpy())
        parts["collision"].append(out.collision[:, 0, 0].cpu().numpy())  # (b, F)
        parts["uncertainty"].append(out.uncertainty[:, 0].cpu().numpy())  # (b, F)
    return {k: np.concatenate(v) for k, v in parts.items()}


def horizon_seconds(windows: WindowSet) -> list[int]:
    """Whole seconds that the window's future steps reach (1 .. F*dt)."""
    n_steps = windows.arrays["actions"].shape[1]
    return [s for s in range(1, int(n_steps * windows.dt + 1e-9) + 1)
            if abs(s / windows.dt - round(s / windows.dt)) < 1e-6]


def neighbour_future_mask(windows: WindowSet) -> np.ndarray:
    """(B, F, N): neighbours within 50 m of the ego at t0, present at that future step."""
    a = windows.arrays
    near = metrics.neighbour_mask(a["hist"], a["hist_mask"])  # (B, N)
    return a["future_mask"] & a["step_mask"][..., None] & near[:, None, :]


def fde_table(pred_states: np.ndarray, windows: WindowSet) -> dict[int, float]:
    """Mean FDE (metres) of neighbours within 50 m at each horizon second."""
    error = metrics.displacement_error(pred_states, windows.arrays["future"])
    seconds = horizon_seconds(windows)
    _, fde = metrics.ade_fde_by_horizon(error, neighbour_future_mask(windows), seconds, windows.dt)
    return dict(zip(seconds, fde.tolist(), strict=True))


def constant_velocity_states(windows: WindowSet) -> np.ndarray:
    a = windows.arrays
    return baselines.constant_velocity(a["hist"], a["hist_mask"], windows.dt, a["actions"].shape[1])


def risk_auroc(collision_prob: np.ndarray, windows: WindowSet) -> float:
    a = windows.arrays
    return metrics.auroc(collision_prob, a["collision"], a["step_mask"] & a["label_mask"])


def forecast_summary(model: torch.nn.Module, windows: WindowSet, prefix: str) -> dict[str, float]:
    """`<prefix>fde_<s>s`, `cv_fde_<s>s` and `<prefix>risk_auroc` on the given windows."""
    pred = predict(model, windows)
    summary = {f"{prefix}fde_{s}s": v for s, v in fde_table(pred["states"], windows).items()}
    summary |= {f"cv_fde_{s}s": v for s, v in fde_table(constant_velocity_states(windows),
                                                         windows).items()}
    summary[f"{prefix}risk_auroc"] = risk_auroc(pred["collision"], windows)
    return summary
