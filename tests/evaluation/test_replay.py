"""Offline replay of the decision rule on labelled decisions (evaluation/replay.py)."""

import numpy as np
import pytest

from evaluation.replay import (
    Scored,
    replay,
    replay_grid,
    replay_markdown,
    risk_order,
    score_decisions,
)
from models.candidates import enumerate_candidates
from pipeline.bench.planner import export_random_planner
from pipeline.planner.scorer import OnnxScorer
from tests.pipeline.planner.test_policy import DEBUG_MODEL


def scored(risk, ret, event, returns, first_action):
    arrays = [np.asarray(a, dtype=np.float64) for a in (risk, ret)]
    return Scored(arrays[0], arrays[1], np.zeros_like(arrays[0]), np.asarray(event, bool),
                  np.asarray(returns, dtype=np.float64), np.asarray(first_action))


# the model trusts candidate 0 (fast, truly unsafe) in the first decision and distrusts
# the truly safe candidate 1; in the second it is right
DECISIONS = [scored([0.01, 0.3, 0.02], [2.0, 1.5, 1.0], [True, False, False], [0.0, 1.4, 0.9],
                    [3, 0, 4]),
             scored([0.5, 0.01], [2.0, 1.0], [True, False], [0.1, 1.0], [3, 1])]


def test_the_rule_is_judged_by_the_truth():
    got = replay(DECISIONS, risk_weight=1.0, risk_budget=0.05)
    assert got["decisions"] == 2
    assert got["chosen_event_rate"] == 0.5  # candidate 0, then candidate 1
    assert got["return_regret"] == pytest.approx((1.4 - 0.0 + 0.0) / 2)
    assert got["best_rejected_rate"] == 0.5  # 0.3 > budget in the first decision
    assert got["chosen_return"] == pytest.approx(0.5)
    assert (got["faster"], got["slower"], got["lane_change"]) == (0.5, 0.0, 0.0)
    assert got["no_safe_rate"] == 0.0


def test_the_true_risk_never_takes_an_event_while_a_safe_candidate_is_left():
    got = replay(DECISIONS, 1.0, 0.05, reference="true risk")
    assert got["chosen_event_rate"] == 0.0
    assert got["lane_change"] == 0.5  # candidate 1 of the first decision: the best safe
    truth = replay(DECISIONS, 1.0, 0.05, reference="truth")
    assert truth["return_regret"] == 0.0 and truth["chosen_return"] == pytest.approx(1.2)


def test_the_grid_has_every_setting_and_both_references():
    rows = replay_grid(DECISIONS, [1.0, 3.0], [0.05, 0.5])
    assert [(r["rule"], r["risk_weight"], r["risk_budget"]) for r in rows] == [
        ("planner", 1.0, 0.05), ("planner", 1.0, 0.5), ("planner", 3.0, 0.05),
        ("planner", 3.0, 0.5), ("true risk", 1.0, 0.5), ("truth", 1.0, 0.5)]
    # a budget of 0.5 lets lambda decide the second decision: 1 x 0.5 risk is worth
    # candidate 0's higher return, 3 x 0.5 is not
    assert (rows[1]["chosen_event_rate"], rows[3]["chosen_event_rate"]) == (1.0, 0.5)
    table = replay_markdown(rows)
    assert len(table.strip().splitlines()) == 2 + len(rows)
    assert "| planner | 3 | 0.05 | 50.0 |" in table and "| truth | any | any | 0.0 |" in table
    assert rows[-2]["chosen_event_rate"] == 0.0 and rows[-1]["return_regret"] == 0.0


def test_nothing_to_replay_or_an_unknown_reference_is_refused():
    with pytest.raises(ValueError, match="no labelled decisions"):
        replay([], 1.0, 0.05)
    with pytest.raises(ValueError, match="unknown reference"):
        replay(DECISIONS, 1.0, 0.05, reference="oracle")


def test_decisions_are_scored_on_their_road_candidates_only(tmp_path):
    path = tmp_path / "planner.onnx"
    export_random_planner(path, DEBUG_MODEL, history=5, horizon=2, samples=2)
    scorer = OnnxScorer.load(path)
    candidates = enumerate_candidates(2)
    rng = np.random.default_rng(0)
    valid = np.ones((3, len(candidates)), bool)
    valid[0, :5] = False  # no left lane change first
    valid[2] = False  # nothing on the road: skipped
    labels = {"hist": rng.normal(size=(3, 5, DEBUG_MODEL["n_vehicles"], 7)).astype(np.float32),
              "hist_mask": np.ones((3, 5, DEBUG_MODEL["n_vehicles"]), bool), "valid": valid,
              "first": rng.integers(0, 3, size=valid.shape),
              "returns": rng.normal(size=valid.shape).astype(np.float32)}
    got = score_decisions(scorer, labels, [0, 1, 2], candidates)
    assert [len(d.risk) for d in got] == [20, 25]
    assert np.array_equal(got[0].first_action, candidates[5:, 0])
    assert np.array_equal(got[0].event, labels["first"][0, 5:] < 2)
    direct = scorer.score(labels["hist"][1], labels["hist_mask"][1], candidates)
    assert np.allclose(got[1].risk, direct.collision_prob)


def test_risk_order_pools_all_candidates_and_averages_each_decision():
    order = risk_order(DECISIONS)
    # decision 1 puts its unsafe candidate below both safe ones (0 of 2 pairs right),
    # decision 2 above (1 of 1); pooled, 3 of the 6 (unsafe, safe) pairs are right and
    # one is a tie (0.01 in both decisions), which counts half
    assert order["risk_decision_auroc"] == pytest.approx(0.5)
    assert order["risk_auroc"] == pytest.approx(3.5 / 6)
    right = [scored([0.9, 0.3, 0.2], [0, 0, 0], [True, False, False], [0, 0, 0], [3, 0, 4]),
             DECISIONS[1]]
    assert risk_order(right) == {"risk_auroc": 1.0, "risk_decision_auroc": 1.0}
