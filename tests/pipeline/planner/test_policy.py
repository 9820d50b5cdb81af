"""PlannerPolicy: receding horizon, road pruning, latency, reality check and fallback."""

import json
import shutil

import numpy as np
import pytest

from evaluation.policies import FASTER, IDLE, LANE_LEFT, SLOWER
from models.candidates import enumerate_candidates, lane_trajectory
from pipeline.bench.planner import export_random_planner
from pipeline.highway_source import make_env
from pipeline.planner.calibrate import surprise_threshold
from pipeline.planner.policy import UNCALIBRATED_SURPRISE, PlannerPolicy, forecast_surprise
from pipeline.planner.scorer import OnnxScorer, Scores, sidecar_path, write_sidecar

DEBUG_MODEL = dict(embed_dim=16, deter_dim=32, stoch_dim=8, hidden_dim=32, heads=2,
                   action_dim=8, ensemble=2, n_vehicles=6, obs_dim=7)
F = 2
CANDIDATES = enumerate_candidates(F)  # (25, 2)


@pytest.fixture(scope="module")
def scorer(tmp_path_factory):
    """An untrained planner: its forecasts are exactly constant velocity."""
    path = tmp_path_factory.mktemp("planner") / "planner.onnx"
    export_random_planner(path, DEBUG_MODEL, history=4, horizon=F, samples=2)
    return OnnxScorer.load(path)


@pytest.fixture(scope="module")
def env():
    return make_env("highway-fast-v0", {"duration": 8})


class WrappedScorer:
    """Delegates to a real scorer; can offset forecasts, bonus one candidate, spy."""

    def __init__(self, inner, offset=0.0, favourite=None):
        self.inner, self.offset, self.favourite = inner, offset, favourite
        self.seen = []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def score(self, hist, hist_mask, candidates):
        self.seen.append(np.array(candidates))
        s = self.inner.score(hist, hist_mask, candidates)
        ret = s.expected_return.copy()
        if self.favourite is not None:
            ret += 10.0 * (candidates == self.favourite).all(axis=1)
        return Scores(s.collision_prob, ret, s.uncertainty, s.positions + self.offset)


class CountingIdle:
    name = "counting"

    def __init__(self):
        self.calls = 0

    def reset(self, rng=None):
        pass

    def act(self, env):
        self.calls += 1
        return IDLE


def drive(env, policy, steps, seed=11, each=None):
    """Run up to `steps` decisions; `each(k)` is called before decision k."""
    env.reset(seed=seed)
    policy.reset(seed)
    actions = []
    for k in range(steps):
        if each is not None:
            each(k)
        actions.append(policy.act(env))
        _, _, terminated, truncated, _ = env.step(actions[-1])
        if terminated or truncated:
            break
    return actions


def test_accurate_forecasts_keep_the_planner_in_control(env, scorer):
    policy = PlannerPolicy(scorer, CANDIDATES, surprise_threshold=5.0,
                           surprise_patience=2, fallback=CountingIdle())
    actions = drive(env, policy, 6)
    assert len(policy.latencies_ms) == len(actions) == policy.steps
    assert all(0 < ms < 1000 for ms in policy.latencies_ms)
    assert len(policy.surprises) == len(actions) - 1
    assert np.nanmax(policy.surprises) < 5.0  # constant velocity is right within metres
    assert policy.fallback_steps == 0 and policy.fallback.calls == 0


def test_wrong_forecasts_hand_control_to_the_fallback(env, scorer):
    fallback = CountingIdle()
    policy = PlannerPolicy(WrappedScorer(scorer, offset=50.0), CANDIDATES,
                           surprise_threshold=5.0, surprise_patience=2, fallback=fallback)
    actions = drive(env, policy, 6)
    assert len(actions) == 6
    assert np.nanmin(policy.surprises) > 40.0
    # decisions 1 and 2 see the surprise; from decision 2 on the fallback drives
    assert policy.fallback_steps == fallback.calls == len(actions) - 2
    assert len(policy.latencies_ms) == 2


def test_control_returns_once_forecasts_are_right_again(env, scorer):
    wrapped = WrappedScorer(scorer, offset=50.0)
    policy = PlannerPolicy(wrapped, CANDIDATES, surprise_threshold=5.0,
                           surprise_patience=2, fallback=CountingIdle(), min_fallback_steps=2)

    def heal(k):
        if k == 4:
            wrapped.offset = 0.0

    actions = drive(env, policy, 8, each=heal)
    assert len(actions) >= 6  # surprises at 1..4, forecast healed from 4, checked at 5
    assert policy.fallback_steps >= 2 and not policy.in_fallback
    assert len(policy.latencies_ms) == len(actions) - policy.fallback_steps


def test_executes_the_first_action_of_the_best_sequence(env, scorer):
    for favourite in ([FASTER, SLOWER], [SLOWER, FASTER]):
        wrapped = WrappedScorer(scorer, favourite=np.array(favourite))
        policy = PlannerPolicy(wrapped, CANDIDATES)
        assert drive(env, policy, 2) == [favourite[0]] * 2


def test_sequences_leaving_the_road_are_not_scored(env, scorer):
    wrapped = WrappedScorer(scorer, favourite=np.array([LANE_LEFT, LANE_LEFT]))
    policy = PlannerPolicy(wrapped, CANDIDATES)
    lanes = []
    drive(env, policy, 4, each=lambda k: lanes.append(env.unwrapped.vehicle.target_lane_index[2]))
    for lane, seen in zip(lanes, wrapped.seen, strict=True):
        trajectory = lane_trajectory(seen, lane)
        assert ((trajectory >= 0) & (trajectory <= 2)).all()
        assert len(seen) < len(CANDIDATES)  # some sequence always leaves a 3-lane road
    assert 0 in lanes  # the favourite drove the ego to the left edge


def test_forecast_surprise_ignores_the_ego_and_absent_slots():
    predicted = np.array([[100.0, 0.0], [10.0, 0.0], [20.0, 0.0], [0.0, 0.0]])
    observed = np.array([[0.0, 0.0], [13.0, 4.0], [20.0, 0.0], [99.0, 0.0]])
    present = np.array([True, True, True, False])
    assert forecast_surprise(predicted, present, observed, np.ones(4, bool)) == 2.5
    assert np.isnan(forecast_surprise(predicted, present, observed, np.array([1, 0, 0, 0]) > 0))


def test_an_env_with_other_timing_is_refused(scorer):
    other = make_env("highway-fast-v0", {"duration": 3, "simulation_frequency": 10})
    other.reset(seed=1)
    with pytest.raises(ValueError, match="10 frames per step"):
        PlannerPolicy(scorer, CANDIDATES).act(other)


def test_candidates_must_match_the_planner_horizon(scorer):
    with pytest.raises(ValueError, match=r"\(K, 2\)"):
        PlannerPolicy(scorer, enumerate_candidates(3))


def calibrated_copy(scorer, tmp_path, threshold):
    """A copy of the scorer's planner whose sidecar carries `threshold` (m) as calibrated."""
    path = tmp_path / "calibrated.onnx"
    shutil.copy(scorer.path, path)
    fields = json.loads(sidecar_path(scorer.path).read_text())
    write_sidecar(path, **{**fields, "surprise_quantile": 0.99, "surprise_threshold": threshold})
    return OnnxScorer.load(path)


def test_threshold_zero_takes_the_sidecars_calibrated_one(scorer, tmp_path):
    calibrated = calibrated_copy(scorer, tmp_path, 0.75)
    assert PlannerPolicy(calibrated, CANDIDATES).surprise_threshold == 0.75  # default 0
    assert PlannerPolicy(calibrated, CANDIDATES, surprise_threshold=3.0).surprise_threshold == 3.0


def test_a_planner_without_calibration_uses_the_old_metres_and_says_so(scorer, capsys,
                                                                       monkeypatch):
    monkeypatch.setattr("pipeline.planner.policy._told_uncalibrated", set())  # once per file
    policy = PlannerPolicy(scorer, CANDIDATES, surprise_threshold=0.0)
    assert scorer.calibrated_surprise is None
    assert policy.surprise_threshold == UNCALIBRATED_SURPRISE
    assert "no calibrated surprise threshold" in capsys.readouterr().err
    PlannerPolicy(scorer, CANDIDATES)
    assert capsys.readouterr().err == ""  # said once, not once per episode


def teleport_others(env, metres):
    """Move every other vehicle `metres` further from the ego along the road: drivers that
    jump, unlike any the model saw."""
    ego = env.unwrapped.vehicle
    for vehicle in env.unwrapped.road.vehicles:
        if vehicle is not ego:
            ahead = vehicle.position[0] >= ego.position[0]
            vehicle.position = vehicle.position + np.array([metres if ahead else -metres, 0.0])


def test_the_calibrated_check_fires_on_teleporting_drivers_not_on_ordinary_ones(
        env, scorer, tmp_path):
    """Calibrated on ordinary episodes (other seeds), the 0.99 quantile of the surprise
    hands control to the fallback where the others jump 10 m each decision, and not in an
    ordinary episode."""
    seen = []
    for seed in (1, 2, 3):
        ordinary = PlannerPolicy(scorer, CANDIDATES, surprise_threshold=1e9)
        drive(env, ordinary, 8, seed=seed)
        seen += [x for x in ordinary.surprises if np.isfinite(x)]
    calibrated = calibrated_copy(scorer, tmp_path, surprise_threshold(np.array(seen), 0.99))
    assert calibrated.calibrated_surprise < 5.0  # far below the old hand-set metres

    quiet = PlannerPolicy(calibrated, CANDIDATES, surprise_patience=2, fallback=CountingIdle())
    drive(env, quiet, 8)
    assert quiet.fallback_steps == 0

    jumpy = PlannerPolicy(calibrated, CANDIDATES, surprise_patience=2, fallback=CountingIdle())
    actions = drive(env, jumpy, 8, each=lambda k: teleport_others(env, 10.0) if k else None)
    # the live scene holds the frames the env stepped: the jump before decision k shows
    # in the frames of step k, checked at decision k + 1
    assert np.nanmin(jumpy.surprises[1:]) > calibrated.calibrated_surprise
    assert len(actions) == 8  # surprised at decisions 2 and 3: the fallback drives from 3
    assert jumpy.fallback_steps == jumpy.fallback.calls == len(actions) - 3
