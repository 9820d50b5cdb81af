"""Windowing on a hand-built dataset whose answers are known."""

import numpy as np
import pytest

from pipeline.features import nearest_slots, to_ego_frame
from pipeline.windows import make_windows, observation_stats, split_episodes

FPS = 5  # frames per decision step


def straight_episode(episode: int, n_steps: int, crash_at: int | None = None):
    """Ego (id 0) at 20 m/s in lane 1; car 1 ahead at 25 m/s in lane 1; car 2 behind in lane 0,
    appearing only from frame 3; car 3 far away (70 m)."""
    frames = {k: [] for k in ("episode", "frame", "vehicle_id", "is_ego", "x", "y", "vx", "vy",
                              "heading", "lane")}
    n_frames = n_steps * FPS + 1
    cars = {0: (0.0, 4.0, 20.0, 1), 1: (15.0, 4.0, 25.0, 1), 2: (-10.0, 0.0, 22.0, 0),
            3: (70.0, 8.0, 20.0, 2)}
    for f in range(n_frames):
        t = f / FPS
        for vid, (x0, y, v, lane) in cars.items():
            if vid == 2 and f < 3:
                continue
            for key, value in (("episode", episode), ("frame", f), ("vehicle_id", vid),
                               ("is_ego", vid == 0), ("x", x0 + v * t), ("y", y), ("vx", v),
                               ("vy", 0.0), ("heading", 0.0), ("lane", lane)):
                frames[key].append(value)
    steps = {
        "episode": np.full(n_steps, episode), "step": np.arange(n_steps),
        "first_frame": np.arange(n_steps) * FPS, "action": np.arange(n_steps) % 5,
        "reward": np.linspace(0, 1, n_steps).astype(np.float32),
        "collision": np.arange(n_steps) == (-1 if crash_at is None else crash_at),
        "terminated": np.arange(n_steps) == (-1 if crash_at is None else crash_at),
    }
    return {k: np.asarray(v) for k, v in frames.items()}, steps


def concat(parts):
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


@pytest.fixture
def windows():
    eps = [straight_episode(0, 6), straight_episode(1, 4, crash_at=3)]
    frames, steps = concat([e[0] for e in eps]), concat([e[1] for e in eps])
    return make_windows(frames, steps, FPS, dt=1.0, history=4, horizon=3, n_slots=3)


def test_one_window_per_step_with_contract_shapes(windows):
    a = windows.arrays
    assert len(windows) == 6 + 4
    assert a["hist"].shape == (10, 4, 3, 7) and a["hist_mask"].shape == (10, 4, 3)
    assert a["future"].shape == (10, 3, 3, 4) and a["actions"].shape == (10, 3)
    assert a["hist"].dtype == np.float32 and a["actions"].dtype == np.int64


def test_slots_are_ego_then_nearest_and_far_car_is_left_out(windows):
    a = windows.arrays
    k = 1  # episode 0, step 1 (t0 = frame 5): car 2 at (-8, -4), car 1 at (+20, 0), car 3 at +70
    assert np.allclose(a["hist"][k, -1, 0, :4], [0, 0, 20, 0])
    assert np.allclose(a["hist"][k, -1, 1, :2], [-8, -4], atol=1e-4)  # nearest first
    assert np.allclose(a["hist"][k, -1, 2, :2], [20, 0], atol=1e-4)
    assert not np.any(np.isclose(a["hist"][k, -1, :, 0], 70.0))


def test_future_is_in_the_t0_ego_frame(windows):
    a = windows.arrays
    k = 0  # t0 = frame 0; ego moves 20 m per step, car 1 (slot with x=15 at t0) 25 m per step
    ego_future_x = a["future"][k, :, 0, 0]
    assert np.allclose(ego_future_x, [20, 40, 60])
    slot_car1 = int(np.argmin(np.abs(a["hist"][k, -1, :, 0] - 15.0)))
    assert np.allclose(a["future"][k, :, slot_car1, 0], [15 + 25, 15 + 50, 15 + 75])


def test_history_before_frame_0_and_late_vehicles_are_masked(windows):
    a = windows.arrays
    assert a["hist_mask"][0, :3].sum() == 0  # frames -3..-1 do not exist
    assert not np.any(a["hist"][0, :3])
    # car 2 appears at frame 3: at step 0 (t0 = 0) the slots are the ego, car 1 and car 3
    assert np.allclose(sorted(a["hist"][0, -1, :, 0]), [0, 15, 70])


def test_padding_after_episode_end_and_labels(windows):
    a = windows.arrays
    last = 9  # episode 1, step 3: the crash step, nothing after it
    assert a["step_mask"][last].tolist() == [True, False, False]
    assert a["collision"][last].tolist() == [1.0, 0.0, 0.0]
    assert a["cont"][last].tolist() == [0.0, 0.0, 0.0]
    assert not a["future_mask"][last, 1:].any()
    assert a["actions"][last, 1:].tolist() == [1, 1]  # padded with IDLE


def test_rotation_into_ego_heading():
    states = np.array([[[0, 0, 10, 0, np.pi / 2, 0], [0, 5, 0, 10, np.pi / 2, 0]]], float)
    feats = to_ego_frame(states, (0.0, 0.0, np.pi / 2))
    assert np.allclose(feats[0, 1, :4], [5, 0, 10, 0], atol=1e-5)  # ahead, moving forward
    assert np.allclose(feats[0, 1, 4:6], [1, 0], atol=1e-6)


def test_nearest_slots_pads_with_minus_one():
    states = np.zeros((1, 2, 6))
    states[0, 1, 0] = 3.0
    assert nearest_slots(states, np.ones((1, 2), bool), 0, 0, 4).tolist() == [0, 1, -1, -1]


def test_nearest_slots_over_many_frames_pick_each_frames_nearest():
    rng = np.random.default_rng(0)
    states = rng.normal(scale=30.0, size=(6, 5, 6))
    present = rng.random((6, 5)) < 0.6
    present[:, 2] = True  # the ego
    frames = np.array([0, 3, 5, 3])
    slots = nearest_slots(states, present, 2, frames, 4)
    for t, row in zip(frames, slots, strict=True):
        others = [v for v in range(5) if present[t, v] and v != 2]
        others.sort(key=lambda v: np.hypot(*(states[t, v, :2] - states[t, 2, :2])))
        assert row.tolist() == ([2] + others[:3] + [-1] * 3)[:4]
    assert np.array_equal(slots[1], nearest_slots(states, present, 2, 3, 4))


def test_split_is_disjoint_deterministic_and_seeded():
    eps = np.arange(20)
    a, b = split_episodes(eps, 0.2, 0.2, seed=3), split_episodes(eps, 0.2, 0.2, seed=3)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert len(a["val"]) == 4 and len(a["test"]) == 4 and len(a["train"]) == 12
    assert not set(a["train"]) & set(a["val"]) and not set(a["val"]) & set(a["test"])
    assert not np.array_equal(split_episodes(eps, 0.2, 0.2, seed=4)["test"], a["test"])


def test_observation_stats_ignore_absent_entries(windows):
    a = windows.arrays
    mean, std = observation_stats(a["hist"], a["hist_mask"])
    assert mean.shape == (7,) and np.all(std > 0)
    assert np.isclose(mean[4], 1.0)  # cos(0) of present vehicles; absent zeros ignored


def test_branches_go_to_their_parents_split_and_plain_ids_split_as_before():
    from pipeline.dataset import branch_episode
    from pipeline.windows import split_ids

    parents = np.arange(100, 140)
    branches = np.array([branch_episode(int(p), n) for p in parents[::3] for n in (1, 2)])
    parts = split_episodes(np.concatenate([parents, branches]), 0.2, 0.2, seed=5)
    for name, ids in parts.items():
        kids = branches[np.isin(branches % 10**9, ids)]
        assert np.isin(kids, ids).all(), name
    plain = split_episodes(parents, 0.2, 0.2, seed=5)
    assert {k: v.tolist() for k, v in plain.items()} == {
        k: v.tolist() for k, v in split_ids(parents, 0.2, 0.2, 5, "episodes").items()}
    for name in parts:
        np.testing.assert_array_equal(parts[name][parts[name] < 10**9], plain[name])
