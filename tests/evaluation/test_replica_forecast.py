"""evaluation/replica_forecast.py: the traffic replica as a forecaster, in the window frame."""

from __future__ import annotations

import numpy as np
import pytest

from evaluation.replica_forecast import replica_states
from models.candidates import FASTER, IDLE
from pipeline.dataset import read_dataset
from pipeline.rollouts import collect
from pipeline.windows import make_windows


def straight_history(frames: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """The ego at 25 m/s in lane 1 and a leader 40 m ahead in the same lane at a steady
    20 m/s (ego frame at the last frame, 0.2 s apart); two empty slots."""
    hist = np.zeros((1, frames, 4, 7), dtype=np.float32)
    mask = np.zeros((1, frames, 4), dtype=bool)
    for i, back in enumerate(range(frames - 1, -1, -1)):
        t = -0.2 * back
        hist[0, i, 0] = [25.0 * t, 0.0, 25.0, 0.0, 1.0, 0.0, 1.0]
        hist[0, i, 1] = [40.0 + 20.0 * t, 0.0, 20.0, 0.0, 1.0, 0.0, 1.0]
        mask[0, i, :2] = True
    return hist, mask


def test_a_free_leader_keeps_its_speed_in_the_window_frame():
    hist, mask = straight_history()
    states = replica_states(hist, mask, np.array([[IDLE, IDLE, IDLE]]), lanes=3)
    assert states.shape == (1, 3, 4, 4)
    for step in range(3):
        x, y, vx, vy = states[0, step, 1]
        assert x == pytest.approx(40.0 + 20.0 * (step + 1), abs=0.05)
        assert abs(y) < 0.05 and vx == pytest.approx(20.0, abs=0.05) and abs(vy) < 0.05


def test_the_ego_action_moves_the_ego_forecast():
    hist, mask = straight_history()
    idle = replica_states(hist, mask, np.array([[IDLE, IDLE, IDLE]]), lanes=3)
    faster = replica_states(hist, mask, np.array([[FASTER, IDLE, IDLE]]), lanes=3)
    assert faster[0, -1, 0, 0] > idle[0, -1, 0, 0] + 2.0  # further ahead after 3 s


def test_the_ego_forecast_is_where_the_simulated_ego_went(tmp_path):
    """highway-env's ego follows its meta-actions exactly as the replica replays them, so
    on simulated windows (lane changes, turned ego frames) the ego's forecast error is
    ~0: the road frame is turned back into each window's frame correctly."""
    policies = [("rule", 0.3, 1.0), ("random", 0.0, 1.0)]
    collect(tmp_path, "highway-fast-v0", {"duration": 8}, policies, 12, seed=2, progress=False,
            backend="envpool")
    data = read_dataset(tmp_path)
    a = make_windows(data.frames, data.steps, data.frames_per_step, 1.0, history=5, horizon=2,
                     n_slots=6).arrays
    states = replica_states(a["hist"], a["hist_mask"], a["actions"], lanes=3)
    turned = np.abs(a["ego_pose"][:, 2]) > 0.01  # windows whose ego frame is not the road's
    ego = a["future_mask"][:, :, 0]
    assert ego.sum() > 50 and ego[turned].sum() > 5
    error = np.linalg.norm(states[:, :, 0, :2] - a["future"][:, :, 0, :2], axis=-1)
    assert np.percentile(error[ego], 95) < 0.1 and np.median(error[turned][ego[turned]]) < 0.1
