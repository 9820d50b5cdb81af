"""Ego-centric scene features, in numpy only (the no-torch simulate path uses them too).

A scene is held densely: `states` (T, V, 6) with columns STATE_COLUMNS for every frame T
and every vehicle V (by persistent id), and `present` (T, V) bool. A window at frame t0
expresses everything in the ego frame at t0: origin at the ego, x along its heading.
"""

from __future__ import annotations

import numpy as np

STATE_COLUMNS = ("x", "y", "vx", "vy", "heading", "lane")
FEATURE_NAMES = ("x", "y", "vx", "vy", "cos_heading", "sin_heading", "lane")
OBS_DIM = len(FEATURE_NAMES)  # D
TARGET_DIM = 4  # x, y, vx, vy


def ego_pose(states: np.ndarray, ego: int, t0: int) -> tuple[float, float, float]:
    """(x, y, heading) of vehicle `ego` at frame t0."""
    x, y, _, _, heading, _ = states[t0, ego]
    return float(x), float(y), float(heading)


def to_ego_frame(states: np.ndarray, pose: tuple) -> np.ndarray:
    """World states (..., 6) -> ego-frame features (..., D=7), see FEATURE_NAMES. The pose
    (x, y, heading) holds floats, or arrays that broadcast against states[..., 0]."""
    x0, y0, h0 = pose
    c, s = np.cos(h0), np.sin(h0)
    dx, dy = states[..., 0] - x0, states[..., 1] - y0
    vx, vy = states[..., 2], states[..., 3]
    rel_heading = states[..., 4] - h0
    features = np.stack([
        c * dx + s * dy, -s * dx + c * dy,
        c * vx + s * vy, -s * vx + c * vy,
        np.cos(rel_heading), np.sin(rel_heading), states[..., 5],
    ], axis=-1)
    return features.astype(np.float32)


def nearest_slots(states: np.ndarray, present: np.ndarray, ego: int, t0,
                  n_slots: int) -> np.ndarray:
    """Vehicle indices for the N slots: the ego first, then the nearest present at t0.

    `t0` is one frame or an array of K frames; returns (N,) or (K, N) int64 with -1 for
    empty slots.
    """
    frames = np.atleast_1d(np.asarray(t0, dtype=np.int64))
    offset = states[frames, :, :2] - states[frames, ego, :2][:, None]  # (K, V, 2)
    distance = np.where(present[frames], np.hypot(offset[..., 0], offset[..., 1]), np.inf)
    distance[:, ego] = np.inf
    order = np.argsort(distance, axis=1, kind="stable")[:, : n_slots - 1]
    nearest = np.take_along_axis(distance, order, axis=1)
    slots = np.full((len(frames), n_slots), -1, dtype=np.int64)
    slots[:, 0] = ego
    slots[:, 1 : 1 + order.shape[1]] = np.where(np.isfinite(nearest), order, -1)
    return slots if np.ndim(t0) else slots[0]


def gather_slots(array: np.ndarray, present: np.ndarray, slots: np.ndarray,
                 frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pick frames (..., T') and slots (..., N) out of (T, V, C) / (T, V); -1 means absent.

    Frames outside [0, T) are absent too. Leading axes (K windows) are shared by `frames`
    and `slots`. Returns (..., T', N, C) with zeros where absent, and the (..., T', N)
    presence mask.
    """
    n_frames = array.shape[0]
    valid_frame = (frames >= 0) & (frames < n_frames)
    f = np.clip(frames, 0, n_frames - 1)[..., :, None]  # (..., T', 1)
    v = np.clip(slots, 0, None)[..., None, :]  # (..., 1, N)
    mask = present[f, v] & valid_frame[..., :, None] & (slots >= 0)[..., None, :]
    values = np.where(mask[..., None], array[f, v], 0.0)  # (..., T', N, C)
    return values, mask


def scene_history(states: np.ndarray, present: np.ndarray, ego: int, t0: int,
                  history: int, n_slots: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ego-centric history at t0: features (H, N, D), mask (H, N), and the slots (N,)."""
    slots = nearest_slots(states, present, ego, t0, n_slots)
    frames = np.arange(t0 - history + 1, t0 + 1)
    raw, mask = gather_slots(states, present, slots, frames)
    features = np.where(mask[..., None], to_ego_frame(raw, ego_pose(states, ego, t0)), 0.0)
    return features.astype(np.float32), mask, slots
