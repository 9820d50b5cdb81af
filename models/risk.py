"""Collision risk from forecast geometry: do the ego's and a neighbour's boxes overlap?

The learned collision head only knows what the behaviour data showed it, and collisions
are rare there: it can miss exactly the maneuvers a planner likes (driving into a slower
leader). The forecasts, in contrast, are trained on every frame of every vehicle. This
module turns them into a per-step collision probability that needs no collision labels:

    relative position d_n(t) = p_n(t) - p_ego(t) ~ N(mu, sigma^2) per axis, with
    sigma^2 = sigma_n^2 + sigma_ego^2 (independent forecast errors),
    P(overlap_n(t)) = P(|d_x| < L) * P(|d_y| < W) * P(n present at t),

where L, W are the sums of half-lengths / half-widths of two vehicles, i.e. one vehicle
length and width. A step spans several simulation frames, so each step is checked at
`substeps` points linearly interpolated between the forecasts at its start and end
(two vehicles can pass through each other between decision instants) and the largest
probability is kept. Over the neighbours, P(step collision) = 1 - prod_n (1 - P_n).
Everything is in the ego frame at t0; the boxes are taken as axis-aligned (headings on
a highway stay within a few degrees of the road).
"""

from __future__ import annotations

import math

import torch

SQRT2 = math.sqrt(2.0)


def interval_probability(mean: torch.Tensor, std: torch.Tensor,
                         half_width: float) -> torch.Tensor:
    """P(|X| < half_width) for X ~ N(mean, std^2), elementwise."""
    upper = (half_width - mean) / (std * SQRT2)
    lower = (-half_width - mean) / (std * SQRT2)
    return 0.5 * (torch.erf(upper) - torch.erf(lower))


def interpolate_steps(start: torch.Tensor, path: torch.Tensor, substeps: int) -> torch.Tensor:
    """Points inside each step: start (..., 1, N, C) at t0, path (..., F, N, C) at the step
    ends -> (J, ..., F, N, C), J = substeps, at fractions j/J (j = 1..J) of each step."""
    previous = torch.cat([start, path[..., :-1, :, :]], dim=-3)  # (..., F, N, C)
    fractions = torch.arange(1, substeps + 1, dtype=path.dtype, device=path.device) / substeps
    fractions = fractions.reshape(-1, *([1] * path.dim()))  # (J, 1, ..., 1)
    return previous + fractions * (path - previous)


def overlap_risk(start: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
                 presence: torch.Tensor, length: float, width: float,
                 substeps: int = 4) -> torch.Tensor:
    """Per-step probability that the ego's box overlaps any neighbour's.

    start (B, 1, 1, N, 2) positions at t0, mean (B, R, F, N, 2) and std (B, R, F, N, 2)
    forecast positions at each step's end (slot 0 = ego), presence (B, R, F, N)
    probability -> (B, R, F).
    """
    start = start.expand(*mean.shape[:2], 1, *mean.shape[3:])  # (B, R, 1, N, 2)
    points = interpolate_steps(start, mean, substeps)  # (J, B, R, F, N, 2)
    spread = interpolate_steps(torch.zeros_like(start), std, substeps)
    relative = points[..., 1:, :] - points[..., :1, :]  # (J, B, R, F, N-1, 2)
    rel_std = (spread[..., 1:, :].pow(2) + spread[..., :1, :].pow(2) + 1e-4).sqrt()
    along = interval_probability(relative[..., 0], rel_std[..., 0], length)
    across = interval_probability(relative[..., 1], rel_std[..., 1], width)
    overlap = (along * across).amax(dim=0) * presence[..., 1:]  # (B, R, F, N-1)
    return 1.0 - torch.prod(1.0 - overlap, dim=-1)


def combine_risks(head: torch.Tensor, overlap: torch.Tensor) -> torch.Tensor:
    """Collision probability when either source may be right: 1 - (1 - a)(1 - b)."""
    return 1.0 - (1.0 - head) * (1.0 - overlap)


def extrapolated_risk(last: torch.Tensor, std: torch.Tensor, presence: torch.Tensor, dt: float,
                      steps: int, length: float, width: float) -> torch.Tensor:
    """Overlap risk beyond the horizon, by constant velocity from the last forecast step.

    last (..., N, 4) states [x, y, vx, vy] at the horizon's end (slot 0 = ego), std
    (..., N, 2) their position stds, presence (..., N) -> (..., steps) per extra step of `dt`
    seconds. Cheap foresight for the value after the horizon: driving fast at a slower
    leader just beyond the horizon is not worth the value of cruising on.
    """
    offsets = torch.arange(1, steps + 1, dtype=last.dtype, device=last.device) * dt
    path = last[..., None, :, :2] + offsets[:, None, None] * last[..., None, :, 2:]
    # path: (..., steps, N, 2)
    start = last[..., None, :, :2]  # (..., 1, N, 2)
    spread = std[..., None, :, :].expand_as(path)
    present = presence[..., None, :].expand(path.shape[:-1])
    return overlap_risk(start, path, spread, present, length, width, substeps=2)
