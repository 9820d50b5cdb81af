"""Hand-built windows for evaluation.baselines."""

import math

import numpy as np
import pytest

from evaluation import baselines as b


def _window(position, velocity, hist_len=4, n_future=5, dt=1.0):
    """Exact constant-velocity motion in the window contract layout.

    position, velocity (B, N, 2) at t0 -> hist (B, H, N, 7), hist_mask (B, H, N),
    future (B, F, N, 4), future_mask (B, F, N).
    """
    position, velocity = np.asarray(position, float), np.asarray(velocity, float)
    batch, vehicles, _ = position.shape
    past = dt * np.arange(-hist_len + 1, 1)  # (H,) ending at t0 = 0
    ahead = dt * np.arange(1, n_future + 1)  # (F,)
    hist = np.zeros((batch, hist_len, vehicles, 7), np.float32)
    hist[..., :2] = position[:, None] + velocity[:, None] * past[None, :, None, None]
    hist[..., 2:4] = velocity[:, None]
    hist[..., 4] = 1.0
    future = np.zeros((batch, n_future, vehicles, 4), np.float32)
    future[..., :2] = position[:, None] + velocity[:, None] * ahead[None, :, None, None]
    future[..., 2:4] = velocity[:, None]
    return (hist, np.ones(hist.shape[:3], bool), future, np.ones(future.shape[:3], bool))


def _scene(others_x, others_vx, others_y=None, ego_vx=25.0):
    """One scene (B=1): ego at the origin plus vehicles at (x, y) with speed vx."""
    others_y = np.zeros(len(others_x)) if others_y is None else np.asarray(others_y)
    position = np.stack([np.r_[0.0, others_x], np.r_[0.0, others_y]], axis=-1)[None]
    velocity = np.stack([np.r_[ego_vx, others_vx], np.zeros(len(others_x) + 1)], axis=-1)[None]
    hist, hist_mask, _, _ = _window(position, velocity)
    return hist, hist_mask


@pytest.mark.parametrize("dt", [1.0, 0.5])
def test_constant_velocity_is_exact_on_constant_velocity_motion(dt):
    rng = np.random.default_rng(0)
    position = rng.normal(size=(3, 4, 2)) * 20
    velocity = rng.normal(size=(3, 4, 2)) * 5 + [25.0, 0.0]
    position[:, 0] = 0.0  # ego at the origin at t0
    hist, hist_mask, future, future_mask = _window(position, velocity, dt=dt)
    forecast = b.constant_velocity(hist, hist_mask, dt=dt, n_steps=future.shape[1])
    assert forecast.shape == future.shape and forecast.dtype == np.float32
    np.testing.assert_allclose(forecast, future, atol=1e-3)


def test_constant_velocity_zeroes_slots_absent_at_t0():
    hist, hist_mask, future, _ = _window(np.ones((1, 2, 2)), np.ones((1, 2, 2)))
    hist_mask[0, -1, 1] = False
    forecast = b.constant_velocity(hist, hist_mask, dt=1.0, n_steps=3)
    np.testing.assert_array_equal(forecast[0, :, 1], 0.0)
    np.testing.assert_allclose(forecast[0, :, 0], future[0, :3, 0])


def test_constant_velocity_refuses_a_wrong_mask_shape():
    hist, hist_mask, _, _ = _window(np.ones((1, 2, 2)), np.ones((1, 2, 2)))
    with pytest.raises(ValueError, match="hist_mask has shape"):
        b.constant_velocity(hist, hist_mask[:, :, :1], dt=1.0, n_steps=3)


def test_lane_keeping_converges_toward_the_lane_centre():
    # slot 0 sits 1 m left of lane centre 0, slot 1 drifts towards it at -0.5 m/s
    position = np.array([[[0.0, 1.0], [10.0, -1.2]]])
    velocity = np.array([[[25.0, 0.0], [20.0, 0.5]]])
    hist, hist_mask, future, _ = _window(position, velocity, n_future=10)
    forecast = b.constant_velocity_lane_keeping(
        hist, hist_mask, dt=1.0, n_steps=10, lane_centers_y=[[-4.0, 0.0, 4.0]], tau=1.0
    )
    lateral = np.abs(forecast[0, :, :, 1])  # (F, N) distance to centre 0
    assert np.all(np.diff(lateral[:, 0]) < 0)  # shrinks every step from rest
    assert lateral[-1].max() < 0.01 and np.abs(forecast[0, -1, :, 3]).max() < 0.01
    np.testing.assert_allclose(forecast[..., 0], future[..., 0], atol=1e-3)  # longitudinal CV


def test_lane_keeping_finishes_a_lane_change_in_progress():
    # halfway-minus between lanes 0 and 4 but moving left at 2 m/s: heads to 4, not back to 0
    position, velocity = np.array([[[0.0, 1.5]]]), np.array([[[25.0, 2.0]]])
    hist, hist_mask, _, _ = _window(position, velocity)
    forecast = b.constant_velocity_lane_keeping(
        hist, hist_mask, dt=1.0, n_steps=8, lane_centers_y=[0.0, 4.0], tau=1.0
    )
    assert forecast[0, -1, 0, 1] == pytest.approx(4.0, abs=0.05)


def test_lane_keeping_is_constant_velocity_on_a_centred_car_or_without_lanes():
    position = np.array([[[0.0, 0.0], [30.0, 4.0]], [[0.0, 0.0], [20.0, 1.0]]])
    velocity = np.array([[[25.0, 0.0], [22.0, 0.0]], [[25.0, 0.0], [21.0, 0.3]]])
    hist, hist_mask, _, _ = _window(position, velocity)
    lanes = np.array([[0.0, 4.0], [np.nan, np.nan]])  # second row has no lane information
    forecast = b.constant_velocity_lane_keeping(hist, hist_mask, 1.0, 4, lanes, tau=1.5)
    np.testing.assert_allclose(forecast, b.constant_velocity(hist, hist_mask, 1.0, 4), atol=1e-5)


def test_time_to_collision_hand_value_and_risk_mapping():
    hist, hist_mask = _scene(others_x=[30.0], others_vx=[20.0])  # gap 25 m, closing 5 m/s
    assert b.time_to_collision(hist, hist_mask)[0] == pytest.approx(5.0)
    risk = b.ttc_risk(hist, hist_mask, horizon_s=10.0)
    assert risk.shape == (1,) and risk[0] == pytest.approx(math.exp(-1.0), rel=1e-5)


def test_ttc_risk_ranks_closing_above_receding():
    closing = b.ttc_risk(*_scene([30.0], [20.0]), horizon_s=5.0)[0]
    receding = b.ttc_risk(*_scene([30.0], [30.0]), horizon_s=5.0)[0]
    closer_and_faster = b.ttc_risk(*_scene([15.0], [15.0]), horizon_s=5.0)[0]
    assert receding == 0.0
    assert 0.0 < closing < closer_and_faster <= 1.0


def test_ttc_risk_counts_a_vehicle_closing_from_behind_but_not_other_lanes():
    from_behind = b.ttc_risk(*_scene([-20.0], [35.0]), horizon_s=5.0)[0]
    falling_back = b.ttc_risk(*_scene([-20.0], [15.0]), horizon_s=5.0)[0]
    next_lane = b.ttc_risk(*_scene([30.0], [10.0], others_y=[4.0]), horizon_s=5.0)[0]
    assert from_behind > 0.0 and falling_back == 0.0 and next_lane == 0.0


def test_ttc_uses_the_nearest_vehicle_ahead_and_overlap_is_certain():
    # nearest ahead keeps pace; the stopped car behind it is hidden from the ego
    assert b.time_to_collision(*_scene([20.0, 100.0], [25.0, 0.0]))[0] == math.inf
    overlapping = b.ttc_risk(*_scene([3.0], [30.0]), horizon_s=5.0)[0]
    assert overlapping == pytest.approx(1.0)
