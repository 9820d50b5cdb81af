"""LiveScene: live features equal the training windows of the same recorded episode."""

import numpy as np
import pytest

from evaluation.policies import RuleBasedPolicy
from pipeline.highway_source import make_env, record_episode
from pipeline.planner.live_scene import LiveScene
from pipeline.windows import make_windows

H, N = 7, 6  # H > frames per step (5), so histories span several decisions


class LiveCapture:
    """Drives with the rule policy and keeps what the live scene produces each decision."""

    name = "rule"

    def __init__(self):
        self.base, self.live = RuleBasedPolicy(), LiveScene(H, N)
        self.windows, self.observed, self.frames = [], [], []

    def reset(self, rng=None):
        self.base.reset(rng)

    def act(self, env):
        self.live.update(env)
        if self.windows:  # where the previous slots went, in the previous ego frame
            _, _, slots, pose = self.windows[-1]
            self.observed.append(self.live.observed_positions(slots, pose))
        hist, mask, slots = self.live.window()
        self.windows.append((hist, mask, slots, self.live.pose()))
        self.frames.append(self.live.frame)
        return self.base.act(env)


@pytest.fixture(scope="module")
def recorded():
    env = make_env("highway-fast-v0", {"duration": 8, "vehicles_density": 1.5})
    capture = LiveCapture()
    frames, steps = record_episode(env, capture, seed=3, episode=0)
    windows = make_windows(frames, steps, frames_per_step=env.frames_per_step, dt=1.0,
                           history=H, horizon=1, n_slots=N)
    return capture, steps, windows.arrays, env


def test_live_history_equals_training_windows(recorded):
    capture, steps, arrays, _ = recorded
    assert len(capture.windows) == len(steps["step"]) == len(arrays["hist"]) >= 5
    assert capture.frames == list(steps["first_frame"])
    for k, (hist, mask, _, pose) in enumerate(capture.windows):
        assert np.array_equal(hist, arrays["hist"][k]), f"decision {k}"
        assert np.array_equal(mask, arrays["hist_mask"][k]), f"decision {k}"
        assert np.array_equal(pose, arrays["ego_pose"][k])


def test_first_decision_has_only_the_reset_frame(recorded):
    _, mask, slots, _ = recorded[0].windows[0]
    assert not mask[:-1].any() and mask[-1, 0]
    assert slots[0] == 0  # the ego's persistent id


def test_observed_positions_equal_the_windows_future(recorded):
    capture, _, arrays, _ = recorded
    for k, (positions, present) in enumerate(capture.observed):
        assert np.array_equal(present, arrays["future_mask"][k, 0]), f"decision {k}"
        assert np.array_equal(positions, arrays["future"][k, 0, :, :2]), f"decision {k}"
    moved = [np.abs(p[m][:, 0]).max() for p, m in capture.observed if m[1:].any()]
    assert max(moved) > 1.0  # the future is not trivially zero


def test_a_new_episode_restarts_the_buffer(recorded):
    env = recorded[3]
    live = LiveScene(H, N)
    env.reset(seed=4)
    for _ in range(3):
        env.step(1)
    live.update(env)
    assert live.window()[1][:, 0].all()  # 16 frames: the whole history is present
    env.reset(seed=5)
    live.update(env)
    assert live.frame == 0 and live.window()[1][:, 0].sum() == 1


def test_live_scene_refuses_a_plain_env_and_an_empty_buffer():
    with pytest.raises(ValueError, match="RecordingEnv"):
        LiveScene(H, N).update(make_env("highway-fast-v0").unwrapped)
    with pytest.raises(ValueError, match="empty"):
        LiveScene(H, N).window()
