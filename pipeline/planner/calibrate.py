"""Calibrate the planner's reality check on held-out in-distribution windows (no torch).

The reality check (pipeline/planner/policy.py) compares, at every decision, the executed
candidate's step-1 forecast of the neighbour slots with where those vehicles are one
decision later, reduced by ``forecast_surprise`` (mean metres over the slots present at
both times). Here the same statistic is computed on recorded windows: the ONNX planner
scores the window's history under the actions really taken, and its step-1 positions are
compared with the window's first future step (both in the t0 ego frame). The export stage
stores a high quantile of this distribution in the sidecar as ``surprise_threshold``: a
surprise beyond it is rare in the worlds the model was trained on.
"""

from __future__ import annotations

import numpy as np

from pipeline.planner.policy import forecast_surprise

IDLE = 1


def window_surprises(scorer, arrays: dict[str, np.ndarray], limit: int = 0) -> np.ndarray:
    """(W,) surprise [m] of each window whose first future step exists and has a neighbour
    to compare (NaN ones are dropped), for at most `limit` windows spread evenly over the
    set (0: all). arrays: the window contract (pipeline/windows.py): hist (B, H, N, D),
    hist_mask (B, H, N), actions (B, F'), future (B, F', N, 4), future_mask (B, F', N),
    step_mask (B, F'), with F' >= scorer.horizon."""
    usable = np.flatnonzero(arrays["step_mask"][:, 0])
    if limit and len(usable) > limit:
        usable = usable[np.linspace(0, len(usable) - 1, limit).round().astype(int)]
    actions = arrays["actions"][:, :scorer.horizon]
    actions = np.where((actions >= 0) & (actions < len(scorer.action_names)), actions, IDLE)
    surprises = []
    for b in usable:
        scores = scorer.score(arrays["hist"][b], arrays["hist_mask"][b], actions[b:b + 1])
        surprises.append(forecast_surprise(scores.positions[0, 0],  # (N, 2)
                                           arrays["hist_mask"][b, -1].astype(bool),
                                           arrays["future"][b, 0, :, :2],
                                           arrays["future_mask"][b, 0].astype(bool)))
    surprises = np.asarray(surprises, dtype=float)
    return surprises[np.isfinite(surprises)]


def surprise_threshold(surprises: np.ndarray, quantile: float) -> float:
    """The `quantile` of the surprises [m]; ValueError when there is none."""
    if not len(surprises):
        raise ValueError("no held-out window has a neighbour whose one-step forecast can be "
                         "checked")
    return float(np.quantile(surprises, quantile))
