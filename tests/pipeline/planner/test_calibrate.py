"""The reality check's calibration: the held-out surprise reduced as the policy reduces it."""

import numpy as np
import pytest

from pipeline.planner.calibrate import surprise_threshold, window_surprises
from pipeline.planner.scorer import Scores

B, H, F, N = 4, 3, 2, 3


class FixedScorer:
    """Forecasts every slot at (step + 1, 0) m whatever the history; records the actions."""

    horizon = F
    action_names = ("LANE_LEFT", "IDLE", "LANE_RIGHT", "FASTER", "SLOWER")

    def __init__(self):
        self.seen = []

    def score(self, hist, hist_mask, candidates):
        self.seen.append(np.array(candidates))
        k = len(candidates)
        positions = np.zeros((k, F, N, 2), np.float32)
        positions[..., 0] = np.arange(1, F + 1)[None, :, None]  # (K, F, N)
        return Scores(np.zeros(k), np.zeros(k), np.zeros(k), positions)


def windows():
    """Four windows: errors 3 m and 4 m (mean 3.5), one neighbour at 1 m, one whose
    episode ends at t0, one with no neighbour present at t0."""
    future = np.zeros((B, 3, N, 4), np.float32)
    future[:, 0, :, 0] = 1.0  # where the scorer says, then per-window errors:
    future[0, 0, 1, 1] = 3.0
    future[0, 0, 2, 1] = 4.0
    future[1, 0, 1, 0] = 2.0
    hist_mask = np.ones((B, H, N), bool)
    hist_mask[1, -1, 2] = False  # slot 2 absent at t0: not checked
    hist_mask[3, -1, 1:] = False
    step_mask = np.ones((B, 3), bool)
    step_mask[2] = False
    actions = np.array([[3, 4, 1], [0, -1, 1], [1, 1, 1], [1, 1, 1]])  # -1: padding
    return {"hist": np.zeros((B, H, N, 7), np.float32), "hist_mask": hist_mask,
            "actions": actions, "future": future, "future_mask": np.ones((B, 3, N), bool),
            "step_mask": step_mask}


def test_window_surprises_reduce_as_the_reality_check_does():
    scorer = FixedScorer()
    surprises = window_surprises(scorer, windows())
    np.testing.assert_allclose(surprises, [3.5, 1.0])  # window 2 ends, window 3 has nobody
    np.testing.assert_array_equal(scorer.seen[0], [[3, 4]])  # the actions taken, F of them
    np.testing.assert_array_equal(scorer.seen[1], [[0, 1]])  # padding scored as IDLE
    assert len(scorer.seen) == 3


def test_window_surprises_keep_at_most_the_limit_spread_over_the_set():
    scorer = FixedScorer()
    window_surprises(scorer, windows(), limit=2)
    assert len(scorer.seen) == 2


def test_the_threshold_is_the_quantile_and_needs_a_surprise():
    assert surprise_threshold(np.arange(101.0), 0.99) == pytest.approx(99.0)
    with pytest.raises(ValueError, match="no held-out window"):
        surprise_threshold(np.array([]), 0.99)
