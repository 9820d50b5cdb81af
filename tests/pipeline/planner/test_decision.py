"""Golden cases for the planner's decision rule."""

from types import SimpleNamespace

import numpy as np
import pytest

from pipeline.planner.decision import choose, utility


def scores(risk, ret, unc=None):
    unc = np.zeros(len(risk)) if unc is None else unc
    return SimpleNamespace(collision_prob=np.asarray(risk, float),
                           expected_return=np.asarray(ret, float),
                           uncertainty=np.asarray(unc, float))


@pytest.mark.parametrize("risk_weight", [0.0, 1.0])
def test_equal_returns_pick_the_lowest_risk(risk_weight):
    s = scores(risk=[0.3, 0.1, 0.2], ret=[2.0, 2.0, 2.0])
    assert choose(s, risk_weight=risk_weight) == 1


def test_risk_weight_trades_return_for_safety():
    s = scores(risk=[0.5, 0.0], ret=[3.0, 2.8])
    assert choose(s, risk_weight=0.0) == 0
    assert choose(s, risk_weight=1.0) == 1  # 3.0 - 0.5 < 2.8


def test_risk_budget_rejects_candidates_above_it():
    s = scores(risk=[0.4, 0.05, 0.2], ret=[5.0, 1.0, 2.0])
    assert choose(s, risk_weight=0.0, risk_budget=1.0) == 0
    assert choose(s, risk_weight=0.0, risk_budget=0.3) == 2
    assert choose(s, risk_weight=0.0, risk_budget=0.1) == 1


def test_when_nothing_fits_the_budget_the_least_risky_candidate_wins():
    s = scores(risk=[0.6, 0.5, 0.9, 0.5], ret=[1.0, 3.0, 4.0, 3.5])  # utilities .4 2.5 3.1 3
    assert choose(s, risk_weight=1.0, risk_budget=0.55) == 3  # within budget: best utility
    assert choose(s, risk_weight=1.0, risk_budget=0.1) == 3  # none: lowest risk, then utility
    assert np.allclose(utility(s, 1.0, 0.0), [0.4, 2.5, 3.1, 3.0])


def test_uncertainty_weight_penalises_disagreement():
    s = scores(risk=[0.0, 0.0], ret=[2.0, 1.5], unc=[1.0, 0.0])
    assert choose(s, uncertainty_weight=0.0) == 0
    assert choose(s, uncertainty_weight=1.0) == 1


def test_full_ties_go_to_the_lowest_index():
    s = scores(risk=[0.1, 0.1, 0.1], ret=[1.0, 1.0, 1.0])
    assert choose(s) == 0


@pytest.mark.parametrize("bad", [
    scores(risk=[0.1, 0.2], ret=[1.0]),
    scores(risk=[], ret=[]),
    scores(risk=[np.nan], ret=[1.0]),
])
def test_bad_scores_are_refused(bad):
    with pytest.raises(ValueError, match="scores"):
        choose(bad)


def test_negative_weights_are_refused():
    with pytest.raises(ValueError, match="risk_weight"):
        choose(scores([0.0], [1.0]), risk_weight=-1.0)


def test_allowed_restricts_the_rule_to_the_allowed_candidates():
    s = scores(risk=[0.01, 0.02, 0.5, 0.03], ret=[5.0, 1.0, 9.0, 2.0])
    assert choose(s, risk_weight=0.0, risk_budget=0.1) == 0
    allowed = np.array([False, True, True, True])
    assert choose(s, risk_weight=0.0, risk_budget=0.1, allowed=allowed) == 3  # 2 over budget
    assert choose(s, risk_weight=0.0, risk_budget=0.025, allowed=allowed) == 1  # 3 over it
    # no allowed candidate within the budget, or none allowed: the rule runs on all
    assert choose(s, risk_weight=0.0, risk_budget=0.015, allowed=allowed) == 0
    assert choose(s, risk_weight=0.0, risk_budget=0.1, allowed=np.zeros(4, bool)) == 0


def test_allowed_of_the_wrong_shape_is_refused():
    with pytest.raises(ValueError, match=r"allowed must have shape \(2,\)"):
        choose(scores(risk=[0.1, 0.2], ret=[1.0, 1.0]), allowed=np.ones(3, bool))
