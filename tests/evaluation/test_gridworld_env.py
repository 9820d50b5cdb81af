"""True slippery gridworld: map parsing, dynamics, exact policy evaluation, TV distance."""

import numpy as np
import pytest

from evaluation.gridworld_env import (
    GridWorld,
    evaluate_policy,
    mean_tv_over_visited,
    parse_map,
    rollout,
    sample_model_rollout,
    total_variation,
)
from models.gridworld import greedy_policy, value_iteration

OPEN_MAP = """\
#######
#S....#
#.....#
#..#..#
#....G#
#######
"""
UP, RIGHT, DOWN, LEFT = range(4)


def empirical_next(env, z, a, n, seed=0):
    rng = np.random.default_rng(seed)
    counts = np.zeros(env.n_states)
    for _ in range(n):
        counts[env.step(z, a, rng)[0]] += 1
    return counts / n


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("S..\n..", "row 2 has 2 characters"),
        ("S.x\n..G", "unknown symbol"),
        ("S.S\n..G", "exactly one 'S'"),
        ("S..\n...", "exactly one 'G'"),
        ("\n\n", "empty"),
    ],
)
def test_parse_map_refuses_bad_maps(text, message):
    with pytest.raises(ValueError, match=message):
        parse_map(text)


def test_states_are_the_free_squares():
    env = GridWorld(OPEN_MAP)
    assert env.n_states == 4 * 5 - 1
    assert env.cells[env.start] == (1, 1)
    assert env.cells[env.goal] == (4, 5)
    with pytest.raises(ValueError, match="wall"):
        env.state_of((3, 3))


def test_true_transition_tensor_is_a_distribution_with_absorbing_goal():
    env = GridWorld(OPEN_MAP, slip=0.3)
    P, R = env.transition_tensor()
    np.testing.assert_allclose(P.sum(axis=2), 1.0)
    assert np.all(P[env.goal, :, env.goal] == 1.0)
    assert np.all(R[env.goal] == 0.0)


def test_slip_frequencies_in_the_open():
    env = GridWorld(OPEN_MAP, slip=0.2)
    z = env.state_of((2, 2))
    freq = empirical_next(env, z, RIGHT, 20_000)
    assert freq[env.state_of((2, 3))] == pytest.approx(0.8, abs=0.015)
    assert freq[env.state_of((1, 2))] == pytest.approx(0.1, abs=0.01)  # slip up
    assert freq[env.state_of((3, 2))] == pytest.approx(0.1, abs=0.01)  # slip down
    assert freq.sum() == pytest.approx(1.0)


def test_walls_stop_moves_and_slips():
    env = GridWorld(OPEN_MAP, slip=0.2)
    z = env.state_of((2, 3))  # the wall (3, 3) is below
    freq = empirical_next(env, z, DOWN, 20_000, seed=1)
    assert freq[z] == pytest.approx(0.8, abs=0.015)  # intended move blocked: stays
    assert freq[env.state_of((2, 4))] == pytest.approx(0.1, abs=0.01)
    assert freq[env.state_of((2, 2))] == pytest.approx(0.1, abs=0.01)
    corner = env.state_of((1, 1))
    freq = empirical_next(env, corner, UP, 20_000, seed=2)
    assert freq[corner] == pytest.approx(0.9, abs=0.01)  # up and the left slip hit walls
    assert freq[env.state_of((1, 2))] == pytest.approx(0.1, abs=0.01)


def test_no_slip_is_deterministic_and_never_enters_walls():
    env = GridWorld(OPEN_MAP, slip=0.0)
    rng = np.random.default_rng(0)
    for z in range(env.n_states):
        if z == env.goal:
            continue
        for a in range(4):
            z2, _, _ = env.step(z, a, rng)
            assert z2 == env.move(z, a)
            (r1, c1), (r2, c2) = env.cells[z], env.cells[z2]
            assert abs(r1 - r2) + abs(c1 - c2) <= 1
            assert not env.walls[r2, c2]


def test_rewards_and_goal_termination():
    env = GridWorld("SG", slip=0.0, step_reward=-0.5, goal_reward=2.0)
    rng = np.random.default_rng(0)
    assert env.step(env.start, LEFT, rng) == (env.start, -0.5, False)
    assert env.step(env.start, RIGHT, rng) == (env.goal, 2.0, True)
    with pytest.raises(ValueError, match="terminal"):
        env.step(env.goal, LEFT, rng)


def test_exact_evaluation_of_a_deterministic_walk():
    env = GridWorld("S..G", slip=0.0, step_reward=-0.1, goal_reward=1.0, max_steps=10)
    go_right = np.full(env.n_states, RIGHT)
    score = evaluate_policy(env, go_right, gamma=0.5)
    assert score.success_rate == pytest.approx(1.0)
    assert score.expected_return == pytest.approx(-0.1 - 0.05 + 0.25)
    short = GridWorld("S..G", slip=0.0, max_steps=2)
    assert evaluate_policy(short, go_right, gamma=0.5).success_rate == 0.0  # cut off
    go_left = np.full(env.n_states, LEFT)
    assert evaluate_policy(env, go_left, gamma=0.5).success_rate == 0.0


def test_exact_evaluation_agrees_with_monte_carlo_and_value_iteration():
    env = GridWorld(OPEN_MAP, slip=0.4, max_steps=8)
    P, R = env.transition_tensor()
    V, Q = value_iteration(P, R, 0.9, env.terminal_mask)
    policy = greedy_policy(Q)
    score = evaluate_policy(env, policy, gamma=0.9)
    rng = np.random.default_rng(3)
    hits = [rollout(env, lambda z: policy[z], rng).reached_goal for _ in range(4000)]
    assert 0.05 < score.success_rate < 0.95  # the horizon really bites here
    assert np.mean(hits) == pytest.approx(score.success_rate, abs=0.03)
    long_env = GridWorld(OPEN_MAP, slip=0.4, max_steps=400)
    long_score = evaluate_policy(long_env, policy, gamma=0.9)
    assert long_score.expected_return == pytest.approx(V[env.start], abs=1e-6)


def test_rollout_is_seeded_and_stops_at_goal():
    env = GridWorld(OPEN_MAP, slip=0.2)
    policy = np.where(np.arange(env.n_states) % 2 == 0, RIGHT, DOWN)

    def run(seed):
        return rollout(env, lambda z: policy[z], np.random.default_rng(seed))

    first, again = run(7), run(7)
    assert first == again
    assert len(first.states) == len(first.actions) + 1
    if first.reached_goal:
        assert first.states[-1] == env.goal and env.goal not in first.states[:-1]


def test_sample_model_rollout_follows_a_deterministic_model():
    P = np.zeros((3, 1, 3))
    P[0, 0, 1] = P[1, 0, 2] = P[2, 0, 2] = 1.0
    terminal = np.array([False, False, True])
    states = sample_model_rollout(P, np.zeros(3, int), 0, terminal, 10, np.random.default_rng())
    assert states == [0, 1, 2]


def test_total_variation_golden_values():
    P = np.array([[[0.8, 0.1, 0.1], [1.0, 0.0, 0.0]]])  # (Z=1, A=2, Z=3)
    Q = np.array([[[0.8, 0.2, 0.0], [0.0, 0.0, 1.0]]])
    np.testing.assert_allclose(total_variation(P, Q), [[0.1, 1.0]])
    visits = np.array([[3, 1]])
    assert mean_tv_over_visited(P, Q, visits) == pytest.approx(0.55)
    assert mean_tv_over_visited(P, Q, visits, weighted=True) == pytest.approx(1.3 / 4)
    assert mean_tv_over_visited(P, Q, np.array([[0, 1]])) == pytest.approx(1.0)
    assert np.isnan(mean_tv_over_visited(P, Q, np.zeros((1, 2))))
