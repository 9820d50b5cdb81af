"""What training windows of a recorded dataset need beyond the simulator's.

- `group` (B,): the scene (time range) of each window's episode; the split keeps groups
  whole, so no time range is in two splits (several egos share a scene).
- `label_mask` False everywhere when collision labels are unknown: reward, collision and
  continue losses and risk metrics skip them (near-miss labels keep the mask).
- `lane_centers` (B, L) per recording, lanes measured across the recording's road axis
  (median heading modulo 180 degrees), so straight roads at any angle work; NaN when the mapping has
  no lane column (the lane-keeping baseline then falls back to constant velocity).
"""

from __future__ import annotations

import numpy as np

from pipeline.dataset import RECORDED_KEY, Dataset, DatasetError
from pipeline.recorded_scenes import fold
from pipeline.windows import WindowSet


def is_recorded(manifest: dict) -> bool:
    return RECORDED_KEY in manifest


def episode_groups(data: Dataset) -> np.ndarray:
    """(E,) scene index of episode e, checked against the dataset's episodes."""
    groups = np.asarray(data.manifest[RECORDED_KEY].get("episode_groups", []), dtype=np.int64)
    episodes = data.episodes
    if len(episodes) and (episodes.min() < 0 or episodes.max() >= len(groups)):
        raise DatasetError(f"{data.path}/dataset.json: recorded.episode_groups holds "
                           f"{len(groups)} entries, episodes go up to {int(episodes.max())}")
    return groups


def road_axis(heading: np.ndarray) -> float:
    """Median heading modulo pi (around the doubled-angle mean): lane changes and noise
    do not tilt it, and both driving directions count."""
    doubled = 2.0 * heading
    mean = 0.5 * np.arctan2(np.sin(doubled).sum(), np.cos(doubled).sum())
    return float(mean + np.median(fold(heading - mean)))


def axis_and_lanes(frames: dict[str, np.ndarray], rows: np.ndarray) -> tuple[float, np.ndarray]:
    """Road axis and lane centres (L,) across it, of some frame rows."""
    axis = road_axis(frames["heading"][rows].astype(np.float64))
    lateral = -np.sin(axis) * frames["x"][rows] + np.cos(axis) * frames["y"][rows]
    lanes = frames["lane"][rows]
    return axis, np.array([np.median(lateral[lanes == lane]) for lane in np.unique(lanes)])


def lane_centers(data: Dataset, groups: np.ndarray, episode: np.ndarray,
                 ego_pose: np.ndarray) -> np.ndarray:
    """(B, L) lateral offsets of each recording's lane centres beside the ego at t0
    (the simulator's lane_centers_ego, with the road axis of the window's recording)."""
    info = data.manifest[RECORDED_KEY]
    if not info.get("lanes"):
        return np.full((len(episode), 1), np.nan, dtype=np.float32)
    recording = np.array([info["scenes"][g]["recording"] for g in groups])  # per episode
    frame_recording = recording[data.frames["episode"]]
    per_window: dict[str, tuple[float, np.ndarray]] = {
        name: axis_and_lanes(data.frames, np.flatnonzero(frame_recording == name))
        for name in np.unique(recording[episode])}
    width = max(len(c) for _, c in per_window.values())
    out = np.full((len(episode), width), np.nan)
    for name, (axis, centres) in per_window.items():
        rows = recording[episode] == name
        x, y, h = ego_pose[rows, 0], ego_pose[rows, 1], ego_pose[rows, 2]
        ego_lateral = -np.sin(axis) * x + np.cos(axis) * y
        out[rows, :len(centres)] = np.cos(h - axis)[:, None] * (centres[None, :]
                                                                 - ego_lateral[:, None])
    return out.astype(np.float32)


def adapt_windows(windows: WindowSet, data: Dataset) -> None:
    """Add `group`, mask unknown labels and set per-recording `lane_centers` (in place)."""
    a = windows.arrays
    groups = episode_groups(data)
    a["group"] = groups[a["episode"]]
    if data.manifest[RECORDED_KEY].get("collision_labels") != "near_miss":
        a["label_mask"] = np.zeros_like(a["label_mask"])
    a["lane_centers"] = lane_centers(data, groups, a["episode"], a["ego_pose"])
