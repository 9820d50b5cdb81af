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
from pipeline.recorded.scenes import fold
from pipeline.windows import WindowSet, lane_centers_ego, lane_medians, lateral_offset


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
    lateral = lateral_offset(frames["x"][rows], frames["y"][rows], axis)
    return axis, lane_medians(lateral, frames["lane"][rows])


def episode_recordings(data: Dataset, groups: np.ndarray) -> np.ndarray:
    """(E,) integer code of the recording each episode comes from (via its scene)."""
    names = [scene["recording"] for scene in data.manifest[RECORDED_KEY]["scenes"]]
    codes = np.unique(names, return_inverse=True)[1].reshape(-1).astype(np.int64)
    return codes[groups]


def lane_centers(data: Dataset, groups: np.ndarray, episode: np.ndarray,
                 ego_pose: np.ndarray) -> np.ndarray:
    """(B, L) lateral offsets of each recording's lane centres beside the ego at t0
    (the simulator's lane_centers_ego, with the road axis of the window's recording)."""
    if not data.manifest[RECORDED_KEY].get("lanes"):
        return np.full((len(episode), 1), np.nan, dtype=np.float32)
    recording = episode_recordings(data, groups)
    frame_recording, window_recording = recording[data.frames["episode"]], recording[episode]
    per_recording = {code: axis_and_lanes(data.frames, np.flatnonzero(frame_recording == code))
                     for code in np.unique(window_recording)}
    width = max(len(centres) for _, centres in per_recording.values())
    out = np.full((len(episode), width), np.nan, dtype=np.float32)
    for code, (axis, centres) in per_recording.items():
        rows = window_recording == code
        out[rows, :len(centres)] = lane_centers_ego(centres, ego_pose[rows], axis)
    return out


def adapt_windows(windows: WindowSet, data: Dataset) -> None:
    """Add `group`, mask unknown labels and set per-recording `lane_centers` (in place)."""
    a = windows.arrays
    groups = episode_groups(data)
    a["group"] = groups[a["episode"]]
    if data.manifest[RECORDED_KEY].get("collision_labels") != "near_miss":
        a["label_mask"] = np.zeros_like(a["label_mask"])
    a["lane_centers"] = lane_centers(data, groups, a["episode"], a["ego_pose"])
