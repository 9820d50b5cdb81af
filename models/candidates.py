"""Candidate meta-action sequences for the planner (numpy only: used by the no-torch path).

Actions are highway-env's DiscreteMetaAction: 0 LANE_LEFT, 1 IDLE, 2 LANE_RIGHT,
3 FASTER, 4 SLOWER. LANE_LEFT lowers the lane index by one, LANE_RIGHT raises it.
"""

from __future__ import annotations

import itertools

import numpy as np

ACTION_NAMES = ("LANE_LEFT", "IDLE", "LANE_RIGHT", "FASTER", "SLOWER")  # index = action id
LANE_LEFT, IDLE, LANE_RIGHT, FASTER, SLOWER = range(len(ACTION_NAMES))


def enumerate_candidates(horizon: int, n_actions: int = 5) -> np.ndarray:
    """Every action sequence of length `horizon`: (n_actions**horizon, horizon) int64.

    Rows are in lexicographic order, so row 0 is all LANE_LEFT (0, 0, ..., 0).
    """
    if horizon < 1 or n_actions < 1:
        raise ValueError(f"horizon and n_actions must be at least 1, got {horizon}, "
                         f"{n_actions}")
    rows = itertools.product(range(n_actions), repeat=horizon)
    return np.array(list(rows), dtype=np.int64).reshape(-1, horizon)  # (K, F)


def lane_trajectory(candidates: np.ndarray, lane_index: int) -> np.ndarray:
    """Lane index after each step of each sequence (K, F), ignoring road edges."""
    shift = (candidates == LANE_RIGHT).astype(np.int64) - (candidates == LANE_LEFT)
    return lane_index + np.cumsum(shift, axis=1)  # (K, F)


def prune_candidates(candidates: np.ndarray, lane_index: int, lanes_count: int) -> np.ndarray:
    """Drop the sequences (K, F) whose lane changes would leave lanes 0..lanes_count-1.

    Every lane change counts, also those that come after a step off the road. The
    all-IDLE sequence always survives, so the result is never empty if it was present.
    """
    candidates = np.asarray(candidates)
    return candidates[on_road_mask(candidates, lane_index, lanes_count)]


def on_road_mask(candidates: np.ndarray, lane_index: int, lanes_count: int) -> np.ndarray:
    """(K,) bool: the sequences (K, F) that `prune_candidates` keeps."""
    candidates = np.asarray(candidates)
    if candidates.ndim != 2:
        raise ValueError(f"candidates must have shape (K, F), got {candidates.shape}")
    if not 0 <= lane_index < lanes_count:
        raise ValueError(f"lane_index {lane_index} is outside the road's lanes "
                         f"0..{lanes_count - 1}")
    lanes = lane_trajectory(candidates, lane_index)
    return ((lanes >= 0) & (lanes < lanes_count)).all(axis=1)
