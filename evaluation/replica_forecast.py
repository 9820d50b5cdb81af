"""The traffic replica as a forecaster: a reference for the learned world model.

models/traffic.py replays highway-env's own drivers (IDM along the lane, MOBIL lane
changes) from the observed history. Given the ego's true actions, its rollout is a
forecast of every slot's future: what a forecaster that knows the simulator's driver
models and constants reaches on the same windows. The learned model is measured against
it (`replica_fde_<s>s` in the evaluate summary); it is never part of the learned planner,
and recorded traffic or another simulator has no such copy.

The replica steps highway-fast's rates (5 simulation frames of 0.2 s per decision), in the
road frame; each decision step's last frame is rotated back into the window's ego frame at
t0 and averaged over the MOBIL phases the history cannot show.
"""

from __future__ import annotations

import numpy as np

BATCH = 256  # windows rolled out together


def replica_states(hist: np.ndarray, hist_mask: np.ndarray, actions: np.ndarray,
                   lanes: int) -> np.ndarray:
    """(B, F, N, 4) ego-frame x, y, vx, vy of every slot at the end of each decision step,
    for windows hist (B, H, N, 7), hist_mask (B, H, N), the ego's actions (B, F), on a
    straight road of `lanes` lanes."""
    import torch

    from models.traffic import Road

    road = Road(lanes=int(lanes))
    parts = []
    with torch.no_grad():
        for start in range(0, len(hist), BATCH):
            part = slice(start, start + BATCH)
            parts.append(batch_states(torch.from_numpy(hist[part]),
                                      torch.from_numpy(hist_mask[part]),
                                      torch.from_numpy(actions[part]).long(), road))
    return np.concatenate(parts).astype(np.float32)


def batch_states(hist, hist_mask, actions, road) -> np.ndarray:
    """`replica_states` of one batch (torch tensors in, numpy out)."""
    import torch

    from models.traffic import initial_traffic, road_heading, rollout

    b, n_phases = len(hist), len(road.mobil_phases)
    present = hist_mask[:, -1] > 0.5
    present[:, 0] = True
    now = hist[:, -1]
    h0 = road_heading(torch.atan2(now[..., 5], now[..., 4]), present)  # (b,)
    y0 = initial_traffic(hist, hist_mask, 1, road).y[0, :, 0]  # the ego's lateral, (b,)
    steps = []
    for _, frame, t in rollout(hist, hist_mask, actions[:, None, :], road):
        if frame == road.substeps - 1:
            values = torch.stack([t.x, t.y, t.speed * torch.cos(t.heading),
                                  t.speed * torch.sin(t.heading)], dim=-1)  # (N, P b, 1, 4)
            steps.append(values[:, :, 0].reshape(-1, n_phases, b, 4).mean(dim=1))  # (N, b, 4)
    road_frame = torch.stack(steps).permute(2, 0, 1, 3)  # (b, F, N, 4)
    return to_window_frame(road_frame, h0, y0).numpy()


def to_window_frame(values, h0, y0):
    """Road-frame x, y, vx, vy (b, F, N, 4) -> the ego frame at t0 (models/traffic.py
    `initial_traffic` backwards: the ego starts at x 0, y y0, heading h0 on the road)."""
    import torch

    c, s = torch.cos(h0)[:, None, None], torch.sin(h0)[:, None, None]
    x, dy = values[..., 0], values[..., 1] - y0[:, None, None]
    vx, vy = values[..., 2], values[..., 3]
    return torch.stack([c * x + s * dy, -s * x + c * dy, c * vx + s * vy, -s * vx + c * vy],
                       dim=-1)
