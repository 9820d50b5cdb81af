"""Tabular count model, value iteration and greedy policy of the gridworld example."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evaluation.gridworld_env import GridWorld
from models.gridworld import CountModel, greedy_policy, most_likely_path, value_iteration

transitions = st.lists(
    st.tuples(
        st.integers(0, 4), st.integers(0, 2), st.integers(0, 4), st.floats(-1, 1)
    ),
    max_size=60,
)


@settings(max_examples=50, deadline=None)
@given(transitions)
def test_learned_probabilities_sum_to_one(observed):
    model = CountModel(n_states=5, n_actions=3)
    for z, a, z2, r in observed:
        model.update(z, a, z2, r)
    P = model.transition_matrix()
    assert P.shape == (5, 3, 5)
    assert np.all(P >= 0)
    np.testing.assert_allclose(P.sum(axis=2), 1.0)


def test_probabilities_are_count_ratios():
    model = CountModel(n_states=3, n_actions=2)
    for z2 in (1, 1, 1, 2):
        model.update(0, 1, z2, 0.0)
    np.testing.assert_allclose(model.transition_matrix()[0, 1], [0.0, 0.75, 0.25])
    assert model.visit_counts()[0, 1] == 4


def test_unseen_pairs_self_loop_with_prior_reward():
    model = CountModel(n_states=3, n_actions=2, unseen_reward=0.7)
    model.update(0, 0, 2, -1.0)
    model.update(0, 0, 2, 0.0)
    P, R = model.transition_matrix(), model.reward_table()
    for z, a in [(0, 1), (1, 0), (1, 1), (2, 0), (2, 1)]:
        assert P[z, a, z] == 1.0
        assert R[z, a] == pytest.approx(0.7)
    assert R[0, 0] == pytest.approx(-0.5)  # mean observed reward
    assert model.seen_mask().sum() == 1


def test_update_rejects_out_of_range_state():
    model = CountModel(n_states=3, n_actions=2)
    with pytest.raises(ValueError, match="next state z2=3"):
        model.update(0, 0, 3, 0.0)


def test_value_iteration_two_state_chain():
    # state 0: action 0 stays (reward 0), action 1 goes to terminal state 1 paying 1;
    # the hand solution is V(0) = max(1, gamma * V(0)) = 1.
    P = np.zeros((2, 2, 2))
    P[0, 0, 0] = P[0, 1, 1] = P[1, :, 1] = 1.0
    R = np.array([[0.0, 1.0], [5.0, 5.0]])  # terminal rewards must be ignored
    V, Q = value_iteration(P, R, gamma=0.9, terminal_mask=np.array([False, True]))
    np.testing.assert_allclose(V, [1.0, 0.0], atol=1e-7)
    np.testing.assert_allclose(Q[0], [0.9, 1.0], atol=1e-7)


THREE_BY_THREE = "S..\n.#.\n..G"


def test_value_iteration_matches_hand_solved_3x3_without_slip():
    env = GridWorld(THREE_BY_THREE, slip=0.0, step_reward=-0.1, goal_reward=1.0)
    P, R = env.transition_tensor()
    g, c = 0.9, -0.1
    V, Q = value_iteration(P, R, g, env.terminal_mask)
    expected = {
        (2, 2): 0.0,  # goal: terminal
        (1, 2): 1.0, (2, 1): 1.0,  # one move from G
        (0, 2): c + g, (2, 0): c + g,
        (0, 1): c + g * c + g**2, (1, 0): c + g * c + g**2,
        (0, 0): c + g * c + g**2 * c + g**3,
    }
    for cell, value in expected.items():
        assert V[env.state_of(cell)] == pytest.approx(value, abs=1e-6)
    policy = greedy_policy(Q)
    assert policy[env.state_of((0, 0))] == 1  # right and down tie; lowest index wins
    assert policy[env.state_of((0, 2))] == 2  # down
    assert policy[env.state_of((2, 0))] == 1  # right


def test_value_iteration_matches_hand_solved_3x3_with_slip():
    # From (1, 2) "down" reaches G with 0.8; both slips (into the centre wall, off the map)
    # stay put: V = 0.8 * goal + 0.2 * (step + g * V)  =>  V = (0.8 + 0.2 c) / (1 - 0.2 g).
    env = GridWorld(THREE_BY_THREE, slip=0.2, step_reward=-0.1, goal_reward=1.0)
    P, R = env.transition_tensor()
    g, c = 0.9, -0.1
    V, Q = value_iteration(P, R, g, env.terminal_mask)
    state = env.state_of((1, 2))
    assert V[state] == pytest.approx((0.8 + 0.2 * c) / (1 - 0.2 * g), abs=1e-6)
    assert greedy_policy(Q)[state] == 2


def test_value_iteration_rejects_bad_gamma_and_shapes():
    P = np.ones((2, 1, 2)) / 2
    with pytest.raises(ValueError, match="gamma"):
        value_iteration(P, np.zeros((2, 1)), gamma=1.0)
    with pytest.raises(ValueError, match="R of shape"):
        value_iteration(P, np.zeros((2, 2)), gamma=0.5)


def test_greedy_policy_ties():
    Q = np.array([[1.0, 1.0 - 1e-9, 0.0], [0.0, 2.0, 2.0]])
    np.testing.assert_array_equal(greedy_policy(Q), [0, 1])
    rng = np.random.default_rng(0)
    picks = {tuple(greedy_policy(Q, rng=rng)) for _ in range(50)}
    assert {p[0] for p in picks} == {0, 1}  # rounding-level ties are ties
    assert {p[1] for p in picks} == {1, 2}


def test_most_likely_path_follows_plan_and_stops_at_self_loop():
    model = CountModel(n_states=4, n_actions=1)
    model.update(0, 0, 1, 0.0)
    model.update(1, 0, 2, 0.0)  # state 2 never tried: self-loop prior
    terminal = np.zeros(4, dtype=bool)
    path = most_likely_path(model.transition_matrix(), np.zeros(4, int), 0, terminal, 10)
    assert path == [0, 1, 2]
