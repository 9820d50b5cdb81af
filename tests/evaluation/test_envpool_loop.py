"""The closed loop on EnvPool: batch-size independent, the planner sees the training
windows' features, and its road reads what highway-env's does."""

import dataclasses
from functools import partial

import numpy as np
import pytest

from evaluation.batch_policies import BatchPolicy
from evaluation.closed_loop import summarise
from evaluation.envpool_loop import crash_kind_of, drivers, run_envpool_episodes
from evaluation.policies import RuleBasedPolicy, make_policy
from models.candidates import enumerate_candidates
from pipeline.bench.planner import export_random_planner
from pipeline.envpool_source import BatchRecorder, EnvpoolSource, episode_tables
from pipeline.highway_source import make_env
from pipeline.planner.batch_planner import BatchPlanner, EnvpoolRoad
from pipeline.planner.lane_guard import LaneGuard
from pipeline.planner.policy import HighwayRoad, PlannerPolicy
from pipeline.planner.scorer import OnnxScorer
from pipeline.windows import make_windows
from tests.evaluation.test_batch_policies import scenes_of

DEBUG_MODEL = dict(embed_dim=16, deter_dim=32, stoch_dim=8, hidden_dim=32, heads=2,
                   action_dim=8, ensemble=2, n_vehicles=6, obs_dim=7)
H, F = 7, 2  # H > frames per step (5): histories span several decisions
SEEDS = range(40, 45)


@pytest.fixture(scope="module")
def source():
    return EnvpoolSource("highway-fast-v0", {"duration": 8, "vehicles_count": 15})


@pytest.fixture(scope="module")
def scorer(tmp_path_factory):
    path = tmp_path_factory.mktemp("planner") / "planner.onnx"
    export_random_planner(path, DEBUG_MODEL, history=H, horizon=F, samples=2)
    return OnnxScorer.load(path)


class SpyScorer:
    """Delegates to a real scorer and keeps every history it is given."""

    def __init__(self, inner):
        self.inner, self.seen = inner, []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def score(self, hist, hist_mask, candidates):
        self.seen.append((hist, hist_mask))
        return self.inner.score(hist, hist_mask, candidates)


def planner_driver(source, scorer, guard=None):
    return drivers(partial(BatchPlanner, source), lambda: PlannerPolicy(
        SpyScorer(scorer), enumerate_candidates(F), risk_budget=0.2, guard=guard))


def baseline_driver(name):
    return drivers(BatchPolicy, lambda: make_policy(name))


def without_latency(results):
    return [dataclasses.replace(r, latencies_ms=None) for r in results]


@pytest.mark.parametrize("name", ["planner", "random"])
def test_episodes_do_not_depend_on_the_batch_size(source, scorer, name):
    make = (planner_driver(source, scorer, LaneGuard()) if name == "planner"
            else baseline_driver(name))
    whole = run_envpool_episodes(source, make, SEEDS, batch=len(SEEDS))
    pieces = run_envpool_episodes(source, make, SEEDS, batch=2)
    assert [r.seed for r in pieces] == list(SEEDS)
    assert without_latency(pieces) == without_latency(whole)
    assert len({r.total_return for r in whole}) == len(SEEDS)  # the seeds give other episodes
    if name == "planner":
        assert all(len(r.latencies_ms) == r.steps for r in whole)


class Recording:
    """A driver that also records its frames and decisions as ingest does."""

    def __init__(self, driver, count):
        self.driver, self.policies = driver, driver.policies
        self.recorder, self.frame = BatchRecorder(count), 0

    def observe(self, snapshot, frame):
        self.recorder.add_frame(snapshot, frame)
        self.driver.observe(snapshot, frame)
        self.frame = frame

    def act(self, slots, scenes):
        actions = self.driver.act(slots, scenes)
        self.recorder.open_steps(slots, actions, self.frame)
        return actions


def test_planner_histories_equal_the_training_windows_of_the_episode(source, scorer):
    drivers = []

    def make(seeds):
        drivers.append(Recording(planner_driver(source, scorer)(seeds), len(seeds)))
        return drivers[-1]

    results = run_envpool_episodes(source, make, SEEDS[:3], batch=3)
    recording = drivers[0]
    frames_by_env, compared = recording.recorder.frames_by_env(), 0
    for slot, result in enumerate(results):
        frames, steps = episode_tables(recording.recorder, frames_by_env[slot], slot, slot,
                                       "planner", source.simulation_frequency)
        windows = make_windows(frames, steps, frames_per_step=source.frames_per_step, dt=1.0,
                               history=H, horizon=1, n_slots=DEBUG_MODEL["n_vehicles"]).arrays
        seen = recording.policies[slot].scorer.seen
        # the last decision has no window when a crash cuts it short
        assert len(seen) == result.steps and len(windows["hist"]) >= result.steps - 1
        compared += len(windows["hist"])
        for k in range(len(windows["hist"])):
            assert np.array_equal(seen[k][0], windows["hist"][k]), f"env {slot} decision {k}"
            assert np.array_equal(seen[k][1], windows["hist_mask"][k]), f"env {slot} {k}"
    assert compared >= 8


def test_envpool_road_reads_what_the_highway_road_reads():
    env, rule, guard = make_env("highway-fast-v0"), RuleBasedPolicy(), LaneGuard(10, 10, 3)
    candidates, refusals = enumerate_candidates(F), 0
    for seed in range(4):
        env.reset(seed=seed)
        done = False
        while not done:
            highway, envpool = HighwayRoad(env), EnvpoolRoad(scenes_of(env))
            assert np.array_equal(envpool.on_road(candidates), highway.on_road(candidates))
            assert np.array_equal(envpool.guard_mask(guard, candidates),
                                  highway.guard_mask(guard, candidates))
            assert envpool.fallback_action(rule) == highway.fallback_action(rule)
            refusals += not highway.guard_mask(guard, candidates).all()
            _, _, terminated, truncated, _ = env.step(rule.act(env))
            done = terminated or truncated
    assert refusals > 0  # the guard refused something


def test_crash_kind_reads_where_the_partner_is():
    #                 x    y   speed heading lane crashed
    ego = np.array([100.0, 4.0, 25.0, 0.0, 1.0, 1.0])

    def vehicle(x, y, crashed=1.0):
        return np.array([x, y, 20.0, 0.0, 1.0, crashed])

    assert crash_kind_of(np.stack([ego, vehicle(104, 4.3)])) == "front"
    assert crash_kind_of(np.stack([ego, vehicle(96, 3.8)])) == "rear"
    assert crash_kind_of(np.stack([ego, vehicle(101, 6.0), vehicle(130, 4.0)])) == "side"
    assert crash_kind_of(np.stack([ego, vehicle(104, 4.0, crashed=0.0)])) == "other"
    assert crash_kind_of(np.stack([ego * [1, 1, 1, 1, 1, 0], vehicle(104, 4.0)])) == ""


def test_baselines_crash_as_often_as_their_kind_says(source):
    results = run_envpool_episodes(source, baseline_driver("idle"), SEEDS, batch=5)
    summary = summarise(results)
    assert summary["collision_rate"] > 0  # idle crashes into slower traffic
    assert sum(summary[f"crash/{k}"] for k in ("front", "rear", "side", "other")) == \
        pytest.approx(summary["collision_rate"])
    assert all(r.truncated != r.collided for r in results)
