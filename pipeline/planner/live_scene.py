"""The live scene of a running highway-env episode as planner input (numpy only).

``LiveScene`` keeps the last H simulation frames of a ``RecordingEnv`` (every frame, not
only decision frames; or frames pushed one by one, as the EnvPool closed loop does) keyed
by persistent vehicle id, and cuts the same ego-centric
history as the training windows (``features.scene_history``). Values pass through the
dataset's column dtypes (float32 positions, int16 lanes) exactly as a recorded episode
does on its way through the Parquet dataset, and vehicles are ordered by id as in
``windows.build_scene``, so live features are identical to the training windows'.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from pipeline.features import STATE_COLUMNS, scene_history, to_ego_frame
from pipeline.highway_source import ROW_COLUMNS, RecordingEnv

STATE_INDEX = [ROW_COLUMNS.index(name) for name in STATE_COLUMNS]
ID_INDEX, EGO_INDEX = ROW_COLUMNS.index("vehicle_id"), ROW_COLUMNS.index("is_ego")
LANE_POSITION = STATE_COLUMNS.index("lane")


def dataset_states(rows: np.ndarray) -> np.ndarray:
    """Snapshot rows (R, 12) -> states (R, 6) float64 rounded like the dataset columns."""
    states = rows[:, STATE_INDEX].astype(np.float32)  # x, y, vx, vy, heading as float32
    states[:, LANE_POSITION] = rows[:, ROW_COLUMNS.index("lane")].astype(np.int16)
    return states.astype(np.float64)


class LiveScene:
    """Rolling buffer of the last `history` H frames; `n_slots` N vehicle slots."""

    def __init__(self, history: int, n_slots: int):
        if history < 1 or n_slots < 1:
            raise ValueError(f"history and n_slots must be at least 1, got {history}, {n_slots}")
        self.history, self.n_slots = history, n_slots
        self.frames: deque[np.ndarray] = deque(maxlen=history)
        self.log: list | None = None  # the env's frame_log being followed
        self.pulled = 0  # frames of that log already in the buffer

    def reset(self) -> None:
        self.frames.clear()
        self.log, self.pulled = None, 0

    def update(self, env) -> None:
        """Pull the frames recorded since the last update (a reset env restarts the buffer)."""
        if not isinstance(env, RecordingEnv):
            raise ValueError(f"the live scene needs the RecordingEnv from make_env, got "
                             f"{type(env).__name__}")
        if env.frame_log is not self.log:  # a new episode (the log is replaced, never cut)
            self.reset()
            self.log = env.frame_log
        self.frames.extend(self.log[max(self.pulled, len(self.log) - self.history):])
        self.pulled = len(self.log)

    def push(self, rows: np.ndarray) -> None:
        """Append one frame's snapshot rows (R, 12) of ROW_COLUMNS, for a simulator that is
        not a RecordingEnv (EnvPool: ``envpool_source.frame_rows``)."""
        self.frames.append(rows)

    def latest(self) -> np.ndarray:
        """Snapshot rows (R, 12) of the latest buffered frame."""
        if not self.frames:
            raise ValueError("the live scene is empty: call update(env) after env.reset()")
        return self.frames[-1]

    @property
    def frame(self) -> int:
        """Index of the latest buffered frame (t0 of the next history)."""
        return int(self.latest()[0, 0])

    def dense(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        """states (H, V, 6), present (H, V), vehicle ids (V,) ascending, ego index.

        Leading frames before the episode start are absent (as in the windows).
        """
        latest = self.latest()
        ids = np.unique(np.concatenate([rows[:, ID_INDEX] for rows in self.frames]))
        states = np.zeros((self.history, len(ids), len(STATE_COLUMNS)))
        present = np.zeros((self.history, len(ids)), dtype=bool)
        first = self.history - len(self.frames)
        for t, rows in enumerate(self.frames, start=first):
            vehicle = np.searchsorted(ids, rows[:, ID_INDEX])
            states[t, vehicle] = dataset_states(rows)
            present[t, vehicle] = True
        ego_rows = np.flatnonzero(latest[:, EGO_INDEX])
        if len(ego_rows) == 0:
            raise ValueError(f"frame {self.frame} of the live scene has no ego vehicle")
        ego_id = latest[ego_rows[0], ID_INDEX]
        return states, present, ids, int(np.searchsorted(ids, ego_id))

    def window(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """hist (H, N, D) float32, hist_mask (H, N) bool, slots (N,) persistent vehicle ids
        (-1 empty) at the latest frame, as ``features.scene_history`` cuts them."""
        states, present, ids, ego = self.dense()
        hist, mask, slots = scene_history(states, present, ego, self.history - 1,
                                          self.history, self.n_slots)
        return hist, mask, np.where(slots >= 0, ids[np.maximum(slots, 0)], -1).astype(np.int64)

    def pose(self) -> tuple[float, float, float]:
        """The ego's world (x, y, heading) at the latest frame (dataset rounding)."""
        rows = self.latest()
        ego = dataset_states(rows[rows[:, EGO_INDEX] > 0][:1])
        if len(ego) == 0:
            raise ValueError(f"frame {self.frame} of the live scene has no ego vehicle")
        x, y, _, _, heading, _ = ego[0]
        return float(x), float(y), float(heading)

    def observed_positions(self, slots: np.ndarray,
                           pose: tuple[float, float, float]) -> tuple[np.ndarray, np.ndarray]:
        """Where the vehicles of `slots` (N,) ids are at the latest frame, in the ego frame
        of `pose` (the previous t0): positions (N, 2) float32 (0 if absent), present (N,)."""
        rows = self.latest()
        order = np.argsort(rows[:, ID_INDEX], kind="stable")
        sorted_ids = rows[order, ID_INDEX]
        at = np.clip(np.searchsorted(sorted_ids, slots), 0, len(sorted_ids) - 1)
        present = (np.asarray(slots) >= 0) & (sorted_ids[at] == slots)
        xy = to_ego_frame(dataset_states(rows[order[at]]), pose)[:, :2]  # (N, 2)
        return np.where(present[:, None], xy, 0.0).astype(np.float32), present
