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
`substeps` points where the offsets and their stds are linearly interpolated between
the step's start and end (two vehicles can pass through each other between decision
instants) and the largest probability is kept. Over the neighbours,
P(step collision) = 1 - prod_n (1 - P_n).
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
    scale = torch.reciprocal(std * SQRT2)
    upper = (half_width - mean) * scale
    lower = (mean + half_width) * scale  # the lower bound's argument, negated
    return 0.5 * (torch.erf(upper) + torch.erf(lower))


def relative_path(start: torch.Tensor, path: torch.Tensor, axis: int) -> torch.Tensor:
    """One axis of every neighbour's offset from the ego (slot 0) at t0 and each step end:
    start (..., 1, N, C), path (..., F, N, C) -> (..., F+1, N-1). The axis is taken with
    unbind, which exports as one Split: onnxruntime runs that faster than indexing (a
    Gather) or narrow + squeeze (a Slice and an If node)."""
    points = torch.cat([start, path], dim=-3).unbind(-1)[axis]  # (..., F+1, N)
    return points[..., 1:] - points[..., :1]


def relative_spread(std: torch.Tensor, axis: int) -> torch.Tensor:
    """One axis of the offset's std sqrt(sigma_n^2 + sigma_ego^2), 0.01 at t0:
    std (..., F, N, C) -> (..., F+1, N-1)."""
    spread = std.unbind(-1)[axis]  # (..., F, N)
    var = spread * spread
    rel = (var[..., 1:] + var[..., :1] + 1e-4).sqrt()
    return torch.cat([torch.full_like(rel[..., :1, :], 1e-2), rel], dim=-2)


def along_steps(path: torch.Tensor, substeps: int) -> list[torch.Tensor]:
    """Points inside each step of path (..., F+1, M) (t0 first): at fractions j/J
    (j = 1..J) from each step's start to its end -> J tensors (..., F, M)."""
    begin, end = path[..., :-1, :], path[..., 1:, :]
    if substeps == 1:
        return [end]
    delta = end - begin
    return [begin + (j / substeps) * delta for j in range(1, substeps)] + [end]


def overlap_risk(start: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
                 presence: torch.Tensor, length: float, width: float,
                 substeps: int = 4) -> torch.Tensor:
    """Per-step probability that the ego's box overlaps any neighbour's.

    start (..., 1, N, 2) positions at t0 (broadcast over the leading axes), mean (..., F,
    N, 2) and std (..., F, N, 2) forecast positions at each step's end (slot 0 = ego),
    presence (..., F, N) probability -> (..., F). Inside a step the offsets and their
    stds are interpolated linearly (std 0.01 m at t0). Written as same-shape elementwise
    ops on (..., F, N-1) tensors, one per axis and substep: that is what onnxruntime runs
    fastest (broadcasting over inner axes is its slow path).
    """
    start = start.expand(*mean.shape[:-3], 1, *mean.shape[-2:])
    along = axis_probabilities(start, mean, std, 0, length, substeps)
    across = axis_probabilities(start, mean, std, 1, width, substeps)
    worst = along[0] * across[0]
    for x, y in zip(along[1:], across[1:], strict=True):
        worst = torch.maximum(worst, x * y)  # the most likely overlap inside each step
    return 1.0 - torch.prod(1.0 - worst * presence[..., 1:], dim=-1)


def axis_probabilities(start: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, axis: int,
                       half_width: float, substeps: int) -> list[torch.Tensor]:
    """P(|offset| < half_width) on one axis at each substep: J tensors (..., F, N-1)."""
    offsets = along_steps(relative_path(start, mean, axis), substeps)
    spreads = along_steps(relative_spread(std, axis), substeps)
    return [interval_probability(o, s, half_width)
            for o, s in zip(offsets, spreads, strict=True)]


def combine_risks(head: torch.Tensor, overlap: torch.Tensor) -> torch.Tensor:
    """Collision probability when either source may be right: 1 - (1 - a)(1 - b)."""
    return 1.0 - (1.0 - head) * (1.0 - overlap)


def extrapolated_risk(last: torch.Tensor, std: torch.Tensor, presence: torch.Tensor, dt: float,
                      steps: int, length: float, width: float,
                      min_speed: float | None = None) -> torch.Tensor:
    """Overlap risk beyond the horizon, by constant velocity from the last forecast step.

    last (..., N, 4) states [x, y, vx, vy] at the horizon's end (slot 0 = ego), std
    (..., N, 2) their position stds, presence (..., N) -> (..., steps) per extra step of `dt`
    seconds. Cheap foresight for the value after the horizon: driving fast at a slower
    leader just beyond the horizon is not worth the value of cruising on.

    With `min_speed` (m/s) the ego brakes: for each vehicle ahead of it the ego's speed
    becomes that vehicle's, but neither above its own nor below `min_speed` (the lowest
    speed it can hold; highway-env's meta-actions: 20 m/s). What remains is a state whose
    collision braking cannot avoid (an inevitable collision state): a leader slower than
    the ego can ever go, not merely one slower than it goes now.
    """
    offsets = torch.arange(1, steps + 1, dtype=last.dtype, device=last.device) * dt
    gap = last[..., 1:, :2] - last[..., :1, :2]  # (..., N-1, 2) offsets from the ego
    closing = last[..., 1:, 2:] - ego_velocity(last, min_speed)  # (..., N-1, 2)
    relative = torch.cat([torch.zeros_like(last[..., :1, :2]), gap], dim=-2)
    rate = torch.cat([torch.zeros_like(last[..., :1, 2:]), closing], dim=-2)
    path = relative[..., None, :, :] + offsets[:, None, None] * rate[..., None, :, :]
    # path: (..., steps, N, 2), the ego at the origin
    start = relative[..., None, :, :]  # (..., 1, N, 2)
    spread = std[..., None, :, :].expand_as(path)
    present = presence[..., None, :].expand(path.shape[:-1])
    return overlap_risk(start, path, spread, present, length, width, substeps=2)


def ego_velocity(last: torch.Tensor, min_speed: float | None) -> torch.Tensor:
    """The ego's velocity (..., N-1, 2) as each neighbour of `last` (..., N, 4) sees it
    (see `extrapolated_risk`): its own, or with `min_speed` braked for a vehicle ahead."""
    ego = last[..., :1, 2:].expand(*last.shape[:-2], last.shape[-2] - 1, 2)
    if min_speed is None:
        return ego
    ego_vx, ego_vy = ego.unbind(-1)
    other_vx = last[..., 1:, 2]
    ahead = last[..., 1:, 0] > last[..., :1, 0]
    braked = torch.minimum(ego_vx, other_vx.clamp(min=min_speed))
    return torch.stack([torch.where(ahead, braked, ego_vx), ego_vy], dim=-1)
