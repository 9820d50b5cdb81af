"""OracleLookahead: exact lookahead on copies, the original untouched, beats idle."""

import copy

import numpy as np
import pytest

from evaluation.closed_loop import run_episodes
from evaluation.oracle import OracleLookahead, best_candidate, intrudes, lookahead_step
from evaluation.policies import IdlePolicy
from models.candidates import enumerate_candidates
from pipeline.highway_source import NEXT_ID_ATTR, make_env


@pytest.fixture
def env():
    env = make_env("highway-fast-v0", {"duration": 6})
    env.reset(seed=1000)
    env.step(1)
    return env


def test_lookahead_step_equals_a_real_step(env):
    for action in (3, 0):
        twin = copy.deepcopy(env.unwrapped)
        reward, over, crashed = lookahead_step(twin, action)
        _, want_reward, terminated, truncated, _ = env.step(action)
        core = env.unwrapped
        assert reward == want_reward and over == (terminated or truncated)
        assert crashed == core.vehicle.crashed
        assert np.array_equal(twin.vehicle.position, core.vehicle.position)
        assert [v.position.tolist() for v in twin.road.vehicles] == \
            [v.position.tolist() for v in core.road.vehicles]


def test_act_leaves_the_true_simulator_and_its_recording_alone(env):
    core = env.unwrapped
    before = (len(env.frame_log), env.frame_index, core.time, core.vehicle.position.copy(),
              getattr(core.road, NEXT_ID_ATTR), core.steps)
    oracle = OracleLookahead(enumerate_candidates(2))
    oracle.act(env)
    after = (len(env.frame_log), env.frame_index, core.time, core.vehicle.position.copy(),
             getattr(core.road, NEXT_ID_ATTR), core.steps)
    assert before[:3] == after[:3] and before[4:] == after[4:]
    assert np.array_equal(before[3], after[3])
    assert len(oracle.latencies_ms) == 1


def test_shared_prefixes_score_like_one_copy_per_sequence(env):
    candidates = np.array([[3, 1], [3, 4], [1, 1], [4, 3], [3, 3]])
    oracle = OracleLookahead(candidates, gamma=0.8)
    returns, crashed, steps = oracle.evaluate(env.unwrapped, candidates)
    assert steps == 3 + 5  # distinct first actions, then every sequence
    for k, sequence in enumerate(candidates):
        twin, total = copy.deepcopy(env.unwrapped), 0.0
        for t, action in enumerate(sequence):
            reward, over, _ = lookahead_step(twin, int(action))
            total += 0.8 ** t * reward
            if over:
                break
        assert returns[k] == pytest.approx(total, abs=1e-12)
        assert crashed[k] == twin.vehicle.crashed


def test_best_candidate_avoids_crashes_then_maximises_return():
    assert best_candidate(np.array([3.0, 1.0, 2.0]), np.array([True, False, False])) == 2
    assert best_candidate(np.array([3.0, 1.0]), np.array([True, True])) == 0
    assert best_candidate(np.array([1.0, 1.0]), np.array([False, False])) == 0


def test_oracle_beats_idle_on_short_episodes():
    seeds = [1003, 1001]  # on 1003 idle runs into the car ahead within 7 s
    config = {"duration": 7}
    idle = run_episodes("highway-fast-v0", config, IdlePolicy, seeds)
    oracle = run_episodes("highway-fast-v0", config,
                          lambda: OracleLookahead(enumerate_candidates(1)), seeds)
    assert idle[0].collided
    for lazy, best in zip(idle, oracle, strict=True):
        assert not best.collided
        assert best.total_return > lazy.total_return
        assert best.latencies_ms is not None and len(best.latencies_ms) == best.steps


def test_intrudes_measures_centre_distances_along_and_across(env):
    core = env.unwrapped
    ego = core.vehicle.position
    gaps = np.array([np.abs(v.position - ego) for v in core.road.vehicles
                     if v is not core.vehicle])  # (V-1, 2)
    nearest = gaps[np.argmin(gaps[:, 0])]
    assert intrudes(core, nearest[0] + 0.01, nearest[1] + 0.01)
    assert not intrudes(core, gaps[:, 0].min() - 0.01, 100.0)


def test_the_envelope_also_rejects_sequences_that_come_too_close(env):
    candidates = enumerate_candidates(2)
    core = env.unwrapped
    plain_returns, plain_crashed, _ = OracleLookahead(candidates).evaluate(core, candidates)
    tiny = OracleLookahead(candidates, envelope=(0.01, 0.01)).evaluate(core, candidates)
    np.testing.assert_array_equal(tiny[1], plain_crashed)
    np.testing.assert_array_equal(tiny[0], plain_returns)
    assert OracleLookahead(candidates, envelope=(1e4, 1e4)).evaluate(core, candidates)[1].all()
    _, crashed, _ = OracleLookahead(candidates, envelope=(25.0, 2.5)).evaluate(core, candidates)
    for sequence, flagged in zip(candidates, crashed, strict=True):
        twin, close = copy.deepcopy(core), False
        for action in sequence:
            _, over, crash = lookahead_step(twin, int(action))
            close |= crash or intrudes(twin, 25.0, 2.5)
            if over:
                break
        assert flagged == close
    assert crashed.any() and not crashed.all()  # the check tells sequences apart here
    with pytest.raises(ValueError, match="envelope"):
        OracleLookahead(candidates, envelope=(0.0, 2.0))
