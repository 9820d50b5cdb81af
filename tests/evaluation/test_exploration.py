"""Exploration while collecting with the planner: greedy when asked, top-k and epsilon draws."""

import numpy as np
import pytest

from evaluation.exploration import ExploringPlanner, branch_actions, explore_choice
from models.candidates import enumerate_candidates
from pipeline.bench.planner import export_random_planner
from pipeline.highway_source import make_env, record_episode
from pipeline.planner.decision import choose
from pipeline.planner.policy import PlannerPolicy
from pipeline.planner.scorer import OnnxScorer, Scores

CANDIDATES = enumerate_candidates(2)  # (25, 2)


def random_scores(rng):
    k = len(CANDIDATES)
    return Scores(rng.uniform(0, 0.4, k).astype(np.float32),
                  rng.normal(0, 1, k).astype(np.float32),
                  rng.uniform(0, 1, k).astype(np.float32), np.zeros((k, 2, 3, 2), np.float32))


def draws(scores, n=300, **kw):
    rng = np.random.default_rng(0)
    return [explore_choice(scores, CANDIDATES, rng, **kw) for _ in range(n)]


def test_no_exploration_is_the_planners_own_choice():
    rng = np.random.default_rng(1)
    for trial in range(40):
        scores, budget = random_scores(rng), [1.0, 0.2, 0.05][trial % 3]
        expected = choose(scores, 1.0, 0.5, budget)
        got = explore_choice(scores, CANDIDATES, rng, epsilon=0.0, top_k=1, risk_weight=1.0,
                             uncertainty_weight=0.5, risk_budget=budget)
        assert got == expected


def test_top_k_draws_the_best_candidate_of_each_of_the_k_best_first_actions():
    scores = random_scores(np.random.default_rng(2))  # every risk within the budget of 1
    utility = scores.expected_return - scores.collision_prob
    best_of = {a: int(np.flatnonzero(CANDIDATES[:, 0] == a)[np.argmax(
        utility[CANDIDATES[:, 0] == a])]) for a in range(5)}
    two_best = sorted(best_of.values(), key=lambda i: -utility[i])[:2]
    picked = draws(scores, epsilon=0.0, top_k=2)
    assert set(picked) == set(two_best)


def test_top_k_keeps_to_the_risk_budget_while_it_can():
    scores = random_scores(np.random.default_rng(3))
    risk = scores.collision_prob.copy()
    risk[CANDIDATES[:, 0] != 1] = 0.9  # only sequences starting with IDLE are under budget
    scores = scores._replace(collision_prob=risk)
    picked = draws(scores, epsilon=0.0, top_k=3, risk_budget=0.5)
    assert {int(CANDIDATES[p, 0]) for p in picked} == {1}


def test_epsilon_one_draws_every_first_action_and_its_best_sequence():
    scores = random_scores(np.random.default_rng(4))
    picked = draws(scores, epsilon=1.0, top_k=1)
    firsts = CANDIDATES[picked, 0]
    assert set(firsts.tolist()) == set(range(5))
    utility = scores.expected_return - scores.collision_prob
    for p in set(picked):
        same_start = CANDIDATES[:, 0] == CANDIDATES[p, 0]
        assert utility[p] == utility[same_start].max()


@pytest.fixture(scope="module")
def scorer(tmp_path_factory):
    path = tmp_path_factory.mktemp("planner") / "planner.onnx"
    model = dict(embed_dim=16, deter_dim=32, stoch_dim=8, hidden_dim=32, heads=2, action_dim=8,
                 ensemble=2, n_vehicles=6, obs_dim=7)
    export_random_planner(path, model, history=4, horizon=2, samples=2)
    return OnnxScorer.load(path)


def test_greedy_exploring_planner_drives_like_the_planner_and_is_seeded(scorer):
    env = make_env("highway-fast-v0", {"duration": 6})
    greedy = ExploringPlanner(scorer, CANDIDATES, epsilon=0.0, top_k=1)
    plain = PlannerPolicy(scorer, CANDIDATES)
    a = record_episode(env, greedy, seed=5, episode=0)[1]["action"]
    b = record_episode(env, plain, seed=5, episode=0)[1]["action"]
    np.testing.assert_array_equal(a, b)
    exploring = ExploringPlanner(scorer, CANDIDATES, epsilon=0.5, top_k=2)
    c = record_episode(env, exploring, seed=5, episode=0)[1]
    d = record_episode(env, exploring, seed=5, episode=0)[1]
    np.testing.assert_array_equal(c["action"], d["action"])
    assert set(c["policy"]) == {"planner+eps0.5+top2"}
    assert len(exploring.surprises) == len(c["action"]) - 1  # checked at every later decision


def test_branches_leave_the_episode_as_it_was_and_replay_scored_candidates(scorer):
    env = make_env("highway-fast-v0", {"duration": 5})
    plain = ExploringPlanner(scorer, CANDIDATES, epsilon=0.3, top_k=2)
    branching = ExploringPlanner(scorer, CANDIDATES, epsilon=0.3, top_k=2, branches=2,
                                 branch_steps=3)
    a = record_episode(env, plain, seed=3, episode=0)
    b = record_episode(env, branching, seed=3, episode=0)
    for table in range(2):
        for name in a[table]:
            np.testing.assert_array_equal(a[table][name], b[table][name])
    decisions = len(b[1]["step"]) - branching.fallback_steps
    assert plain.branch_runs == [] and len(branching.branch_runs) == 2 * decisions
    first_frames = set(b[1]["first_frame"].tolist())
    for n, (frames, steps) in enumerate(branching.branch_runs, start=1):
        assert set(steps["episode"]) == set(frames["episode"]) == {n}
        assert steps["first_frame"][0] in first_frames
        actions = steps["action"].tolist()  # a scored candidate then IDLE, cut at its end
        assert any(actions == branch_actions(c, 3)[:len(actions)].tolist() for c in CANDIDATES)
        assert len(actions) == 3 or steps["terminated"][-1] or steps["truncated"][-1]


def test_branch_actions_pad_with_idle_or_cut():
    assert branch_actions(np.array([3, 0]), 4).tolist() == [3, 0, 1, 1]
    assert branch_actions(np.array([3, 0, 2]), 2).tolist() == [3, 0]


def test_branches_need_steps():
    with pytest.raises(ValueError, match="branch_steps"):
        ExploringPlanner(None, CANDIDATES, branches=1, branch_steps=0)
