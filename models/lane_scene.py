"""Lane-structured summary of the observed scene: each lane's nearest leader and follower.

The world model's history lists the neighbours by distance, so the vehicle the ego will
meet on a lane change may sit in any slot; a flat network must learn that geometry from
the few thousand labelled decisions the risk critic has. This summary hands it over:
for each lane from two to the ego's left to two to its right, the nearest vehicle ahead
and the nearest behind (by the lane index the simulator reports), with its presence,
gap, lateral offset, speed difference, lateral speed, recent longitudinal acceleration
and inverse gap, plus the ego's lane, speed, lateral speed and heading. Everything is
read from the last frame of the history (the acceleration from `LAG` frames earlier),
in physical units scaled to O(1). Plain tensor ops, so it exports to ONNX.
"""

from __future__ import annotations

import torch

LANE_OFFSETS = (-2, -1, 0, 1, 2)  # lanes relative to the ego's (index order of the road)
LAG = 5  # frames back for the acceleration (1 s at highway-env's 5 Hz)
FAR = 1.0e4  # the gap of an empty lane side, m (finite: ONNX ArgMin needs no inf)
EGO_LANES = 4  # the ego's lane index is one-hot over 0..EGO_LANES-1 (clipped)
PER_VEHICLE = 7
WIDTH = EGO_LANES + 3 + 2 * len(LANE_OFFSETS) * PER_VEHICLE


def lane_scene(hist: torch.Tensor, hist_mask: torch.Tensor) -> torch.Tensor:
    """hist (B, H, N, 7) ego-frame features (pipeline/features.py FEATURE_NAMES), hist_mask
    (B, H, N) -> (B, WIDTH) float32; see the module docstring."""
    back = max(hist.shape[1] - 1 - LAG, 0)  # the frame the acceleration looks back to
    now, before = hist[:, -1], hist[:, back]
    present, earlier = hist_mask[:, -1, 1:] > 0, hist_mask[:, back, 1:] > 0
    ego, others = now[:, 0], now[:, 1:]
    lane = torch.round(ego[:, 6])
    ego_lane = torch.clamp(lane, 0, EGO_LANES - 1).long()
    parts = [torch.nn.functional.one_hot(ego_lane, EGO_LANES).to(hist.dtype),
             ego[:, 2:3] / 30.0, ego[:, 3:4] / 2.0, ego[:, 5:6]]
    dx, dy = others[..., 0], others[..., 1]
    fields = torch.stack([dx / 30.0, dy / 4.0, (others[..., 2] - ego[:, None, 2]) / 10.0,
                          others[..., 3] / 2.0,
                          torch.where(earlier, others[..., 2] - before[:, 1:, 2],
                                      torch.zeros_like(dx)) / 5.0,
                          1.0 / (1.0 + dx.abs() / 10.0)], dim=-1)  # (B, N-1, 6)
    rel_lane = torch.round(others[..., 6]) - lane[:, None]  # (B, N-1)
    parts.append(nearest_per_side(present, rel_lane, dx, fields))
    return torch.cat(parts, dim=-1)


def nearest_per_side(present: torch.Tensor, rel_lane: torch.Tensor, dx: torch.Tensor,
                     fields: torch.Tensor) -> torch.Tensor:
    """present, rel_lane, dx (B, N-1), fields (B, N-1, 6) -> (B, 2L * PER_VEHICLE): per
    lane offset (LANE_OFFSETS order), ahead then behind, [found, the nearest's fields].

    All 2L lane sides at once (one ArgMin and two Gathers, not 2L of each: onnxruntime
    pays per node far more than per element here)."""
    sides = torch.tensor([[offset, ahead] for offset in LANE_OFFSETS for ahead in (1, 0)],
                         dtype=dx.dtype, device=dx.device)  # (2L, 2): [offset, ahead]
    on_side = (present[:, None] & (rel_lane[:, None] == sides[:, 0, None])
               & ((dx[:, None] > 0) == (sides[:, 1, None] > 0)))  # (B, 2L, N-1)
    gap = torch.where(on_side, dx.abs()[:, None], torch.full_like(dx, FAR)[:, None])
    nearest = torch.argmin(gap, dim=-1, keepdim=True)  # (B, 2L, 1)
    found = (torch.gather(gap, -1, nearest) < FAR).to(dx.dtype)  # (B, 2L, 1)
    rows = fields[:, None].expand(-1, len(sides), -1, -1)  # (B, 2L, N-1, 6)
    index = nearest[..., None].expand(-1, -1, -1, fields.shape[-1])  # (B, 2L, 1, 6)
    picked = torch.gather(rows, 2, index)[:, :, 0] * found  # (B, 2L, 6)
    return torch.cat([found, picked], dim=-1).flatten(1)
