"""Cut a dataset into ego-centric training windows (the window contract).

One window per ego decision step k (every `stride` steps): the history is the H
simulation frames up to the decision frame t0, the future the next F decision steps.
Arrays are numpy; `WindowSet.arrays` maps the contract's names to (B, ...) arrays:
hist (B,H,N,D), hist_mask (B,H,N), actions (B,F), future (B,F,N,4), future_mask (B,F,N),
reward/collision/cont (B,F), step_mask/label_mask (B,F), episode (B,), step (B,), and
ego_pose (B, 3): the ego's world x, y, heading at t0. Also (read by the interaction
variant only): size (B,N,2) each slot's length and width (0 if absent),
future_frames (B,F*J,N,4) and future_frames_mask (B,F*J,N), the slots' x, y, vx, vy at
every simulation frame of the F steps (J frames per step).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from pipeline.dataset import parent_episode
from pipeline.features import (
    STATE_COLUMNS,
    TARGET_DIM,
    gather_slots,
    nearest_slots,
    to_ego_frame,
)

IDLE = 1


@dataclass(frozen=True)
class Scene:
    """One episode held densely: states (T, V, 6), present (T, V), the ego's index, and
    each vehicle's length and width (V, 2) (zeros when the frames carry none)."""

    states: np.ndarray
    present: np.ndarray
    ego: int
    sizes: np.ndarray | None = None


@dataclass(frozen=True)
class WindowSet:
    """Windows plus the decision period `dt` (seconds per future step) and the simulation
    frames per decision step."""

    arrays: dict[str, np.ndarray]
    dt: float
    frames_per_step: int = 1

    def __len__(self) -> int:
        return len(self.arrays["actions"])

    def subset(self, index: np.ndarray) -> WindowSet:
        return WindowSet({k: v[index] for k, v in self.arrays.items()}, self.dt,
                         self.frames_per_step)


def episode_rows(episode: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """(episode id, row indices) for each episode, ids ascending."""
    order = np.argsort(episode, kind="stable")
    ids, starts = np.unique(episode[order], return_index=True)
    for i, ep in enumerate(ids):
        end = starts[i + 1] if i + 1 < len(ids) else len(order)
        yield int(ep), order[starts[i]:end]


def build_scene(frames: dict[str, np.ndarray], rows: np.ndarray) -> Scene:
    """Dense (T, V, 6) states of one episode from its frames-table rows."""
    frame = frames["frame"][rows].astype(np.int64)
    ids, vehicle = np.unique(frames["vehicle_id"][rows], return_inverse=True)
    states = np.zeros((frame.max() + 1, len(ids), len(STATE_COLUMNS)), dtype=np.float64)
    present = np.zeros(states.shape[:2], dtype=bool)
    states[frame, vehicle] = np.stack([frames[c][rows] for c in STATE_COLUMNS], axis=-1)
    present[frame, vehicle] = True
    ego_rows = np.flatnonzero(frames["is_ego"][rows])
    if len(ego_rows) == 0:
        raise ValueError(f"episode {int(frames['episode'][rows[0]])} has no ego vehicle rows")
    return Scene(states, present, int(vehicle[ego_rows[0]]), vehicle_sizes(frames, rows,
                                                                           vehicle, len(ids)))


def vehicle_sizes(frames: dict[str, np.ndarray], rows: np.ndarray, vehicle: np.ndarray,
                  count: int) -> np.ndarray:
    """(V, 2) length and width of each vehicle of an episode (its last row's), zeros when
    the frames have no length/width columns."""
    sizes = np.zeros((count, 2), dtype=np.float32)
    if "length" in frames and "width" in frames:
        sizes[vehicle] = np.stack([frames["length"][rows], frames["width"][rows]], axis=-1)
    return sizes


def episode_windows(scene: Scene, steps: dict[str, np.ndarray], frames_per_step: int,
                    history: int, horizon: int, n_slots: int, stride: int) -> dict[str, np.ndarray]:
    """The K windows of one episode (one per `stride` decision steps) as (K, ...) arrays;
    `steps` holds that episode's rows sorted by step."""
    n_steps = len(steps["step"])
    k = np.arange(0, n_steps, stride)
    t0 = steps["first_frame"][k].astype(np.int64)  # (K,)
    slots = nearest_slots(scene.states, scene.present, scene.ego, t0, n_slots)  # (K, N)
    ego = scene.states[t0, scene.ego]  # (K, 6)
    pose = tuple(ego[:, [i]][:, :, None] for i in (0, 1, 4))  # each (K, 1, 1)
    hist, hist_mask = ego_frame_slots(scene, slots, t0[:, None] + np.arange(1 - history, 1),
                                      pose)
    idx = k[:, None] + np.arange(horizon)  # (K, F)
    exists = idx < n_steps
    safe = np.minimum(idx, n_steps - 1)
    end_frames = np.where(exists, steps["first_frame"][safe] + frames_per_step, -1)
    future, future_mask = ego_frame_slots(scene, slots, end_frames, pose)
    frames = t0[:, None] + 1 + np.arange(horizon * frames_per_step)  # (K, F*J)
    sub, sub_mask = ego_frame_slots(scene, slots, frames, pose)
    return {
        "size": slot_sizes(scene, slots),
        "future_frames": sub[..., :TARGET_DIM], "future_frames_mask": sub_mask,
        "hist": hist, "hist_mask": hist_mask,
        "actions": np.where(exists, steps["action"][safe], IDLE).astype(np.int64),
        "future": future[..., :TARGET_DIM], "future_mask": future_mask,
        "reward": np.where(exists, steps["reward"][safe], 0.0).astype(np.float32),
        "collision": np.where(exists, steps["collision"][safe], 0).astype(np.float32),
        "cont": np.where(exists, ~steps["terminated"][safe], 0).astype(np.float32),
        "step_mask": exists, "label_mask": exists.copy(),
        "step": k.astype(np.int64), "ego_pose": ego[:, [0, 1, 4]].astype(np.float64),
    }


def ego_frame_slots(scene: Scene, slots: np.ndarray, frames: np.ndarray,
                    pose: tuple) -> tuple[np.ndarray, np.ndarray]:
    """Ego-frame features (K, T', N, D) of the slots (K, N) at frames (K, T') (zeros where
    absent) and their mask (K, T', N)."""
    raw, mask = gather_slots(scene.states, scene.present, slots, frames)
    features = np.where(mask[..., None], to_ego_frame(raw, pose), 0.0)
    return features.astype(np.float32), mask


def slot_sizes(scene: Scene, slots: np.ndarray) -> np.ndarray:
    """Each slot's length and width (K, N, 2), zeros for empty slots."""
    if scene.sizes is None:
        return np.zeros((*slots.shape, 2), dtype=np.float32)
    sizes = np.where((slots >= 0)[..., None], scene.sizes[np.clip(slots, 0, None)], 0.0)
    return sizes.astype(np.float32)


def make_windows(frames: dict[str, np.ndarray], steps: dict[str, np.ndarray],
                 frames_per_step: int, dt: float, history: int, horizon: int,
                 n_slots: int, stride: int = 1) -> WindowSet:
    """All windows of a dataset (frames/steps as column dicts of numpy arrays)."""
    windows = window_list(frames, steps, frames_per_step, history, horizon, n_slots, stride)
    if not windows:
        raise ValueError("the dataset holds no complete episode to cut windows from")
    return WindowSet(stack_windows(windows), dt, frames_per_step)


def stack_windows(windows: list[dict]) -> dict[str, np.ndarray]:
    """One (B, ...) array per name from per-episode (K, ...) batches."""
    return {k: np.concatenate([w[k] for w in windows]) for k in windows[0]}


def window_list(frames: dict[str, np.ndarray], steps: dict[str, np.ndarray],
                frames_per_step: int, history: int, horizon: int, n_slots: int,
                stride: int = 1) -> list[dict]:
    """The windows of the episodes in `frames`/`steps`, episodes ascending, one batch of
    (K, ...) arrays per episode (see `episode_windows`)."""
    step_groups = dict(episode_rows(steps["episode"]))
    windows: list[dict] = []
    for ep, rows in episode_rows(frames["episode"]):
        if ep not in step_groups:
            continue
        srows = step_groups[ep][np.argsort(steps["step"][step_groups[ep]], kind="stable")]
        ep_steps = {k: v[srows] for k, v in steps.items()}
        batch = episode_windows(build_scene(frames, rows), ep_steps, frames_per_step,
                                history, horizon, n_slots, stride)
        if len(batch["step"]):
            batch["episode"] = np.full(len(batch["step"]), ep, dtype=np.int64)
            windows.append(batch)
    return windows


def split_episodes(episodes: np.ndarray, val_fraction: float, test_fraction: float,
                   seed: int, groups: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Episode ids per split, disjoint, a deterministic function of the seed.

    Whole groups are split: by default an episode and its counterfactual branches
    (pipeline.dataset `parent_episode`: they share the history); with `groups` (one group
    id per entry of `episodes`, e.g. the recorded scene, a time range) those instead.
    """
    episodes = np.asarray(episodes)
    what = "time ranges (recorded scenes)" if groups is not None else "episodes"
    groups = parent_episode(episodes) if groups is None else np.asarray(groups)
    parts = split_ids(np.unique(groups), val_fraction, test_fraction, seed, what)
    return {name: np.unique(episodes[np.isin(groups, ids)]) for name, ids in parts.items()}


def split_ids(ids: np.ndarray, val_fraction: float, test_fraction: float, seed: int,
              what: str) -> dict[str, np.ndarray]:
    """Sorted unique `ids` shuffled with the seed, then cut into test, val, train."""
    shuffled = np.random.default_rng(seed).permutation(ids)
    n_test = max(1, round(len(ids) * test_fraction)) if test_fraction > 0 else 0
    n_val = max(1, round(len(ids) * val_fraction)) if val_fraction > 0 else 0
    if n_test + n_val >= len(ids):
        raise ValueError(f"{len(ids)} {what} are too few for a train/val/test split "
                         f"(val {val_fraction}, test {test_fraction})")
    return {"test": np.sort(shuffled[:n_test]),
            "val": np.sort(shuffled[n_test:n_test + n_val]),
            "train": np.sort(shuffled[n_test + n_val:])}


def split_windows(windows: WindowSet, val_fraction: float, test_fraction: float,
                  seed: int) -> dict[str, WindowSet]:
    """Windows per split, by episode (by `group` when the windows carry one)."""
    parts = split_episodes(windows.arrays["episode"], val_fraction, test_fraction, seed,
                           groups=windows.arrays.get("group"))
    return {name: windows.subset(np.isin(windows.arrays["episode"], ids))
            for name, ids in parts.items()}


def lateral_offset(x: np.ndarray, y: np.ndarray, axis: float = 0.0) -> np.ndarray:
    """Offset across a straight road whose direction is `axis` (rad; 0: along world x, so
    the offset is world y): the world position (x, y) rotated into the road frame."""
    return -np.sin(axis) * x + np.cos(axis) * y


def lane_medians(lateral: np.ndarray, lane: np.ndarray) -> np.ndarray:
    """Each lane's centre line (L,), lanes ascending, as the median lateral offset of the
    vehicles driving in it (vehicles keep to lane centres most of the time)."""
    return np.array([np.median(lateral[lane == index]) for index in np.unique(lane)])


def lane_centers_ego(centers: np.ndarray, ego_pose: np.ndarray, axis: float = 0.0) -> np.ndarray:
    """Lateral offsets (B, L) of straight lane centre lines beside the ego at t0; `centers`
    (L,) and the road direction `axis` as in `lateral_offset`."""
    ego_lateral = lateral_offset(ego_pose[:, 0:1], ego_pose[:, 1:2], axis)  # (B, 1)
    return (np.cos(ego_pose[:, 2:3] - axis) * (centers[None, :] - ego_lateral)).astype(np.float32)


def observation_stats(hist: np.ndarray, hist_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and std (D,) over present entries of (B, H, N, D) histories."""
    values = hist[hist_mask]  # (M, D)
    if len(values) == 0:
        raise ValueError("no present vehicle in the training windows: cannot normalise")
    return values.mean(0).astype(np.float32), np.maximum(values.std(0), 1e-3).astype(np.float32)
