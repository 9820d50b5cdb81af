"""Counterfactual risk check: every scored candidate labelled by the true simulator."""

import numpy as np
import pytest

from evaluation.closed_loop import run_episodes
from evaluation.counterfactual import (
    CounterfactualPlanner,
    Decision,
    counterfactual_summary,
    reliability_table,
)
from evaluation.policies import FASTER
from models.candidates import enumerate_candidates
from pipeline.bench.planner import export_random_planner
from pipeline.planner.policy import PlannerPolicy
from pipeline.planner.scorer import OnnxScorer
from tests.pipeline.planner.test_policy import DEBUG_MODEL, WrappedScorer

F = 2
CANDIDATES = enumerate_candidates(F)
ENV = ("highway-fast-v0", {"duration": 8, "vehicles_density": 2.0})
SEEDS = [3, 4, 5]


def decision(risk, crashed, returns, chosen):
    return Decision(np.array(risk), np.array(crashed), np.array(returns), chosen)


def test_summary_figures_on_two_hand_made_decisions():
    decisions = [decision([0.1, 0.9], [False, True], [1.0, 0.2], 0),
                 decision([0.3, 0.05], [True, False], [0.0, 0.8], 0)]
    got = counterfactual_summary(decisions, risk_budget=0.2)
    assert got["decisions"] == 2 and got["candidates"] == 4
    assert got["crash_rate"] == 0.5 and got["risk_auroc"] == 1.0
    assert got["accepted_crash_rate"] == 0.0 and got["rejected_safe_rate"] == 0.0
    assert got["chosen_crash_rate"] == 0.5
    assert got["return_regret"] == pytest.approx(0.4)  # (1.0 - 1.0 + 0.8 - 0.0) / 2
    loose = counterfactual_summary(decisions, risk_budget=0.5)  # 0.3 (a crash) accepted
    assert loose["accepted_crash_rate"] == pytest.approx(1 / 3)
    assert got["best_rejected_rate"] == loose["best_rejected_rate"] == 0.0
    strict = counterfactual_summary(decisions, risk_budget=0.08)  # 1st best safe at 0.1 out
    assert strict["best_rejected_rate"] == 0.5
    assert "| 0.07-0.13 | 1 | 0.100 | 0.000 |" in reliability_table(decisions)
    with pytest.raises(ValueError, match="no planner decisions"):
        counterfactual_summary([], 0.2)


@pytest.fixture(scope="module")
def reckless(tmp_path_factory):
    """A scorer whose return bonus makes the planner floor it: (FASTER, FASTER) always."""
    path = tmp_path_factory.mktemp("planner") / "planner.onnx"
    export_random_planner(path, DEBUG_MODEL, history=4, horizon=F, samples=2)
    return WrappedScorer(OnnxScorer.load(path), favourite=[FASTER, FASTER])


def test_labels_agree_with_the_episode_and_decisions_are_the_planners(reckless):
    planners = []

    def factory():
        planners.append(CounterfactualPlanner(reckless, CANDIDATES))
        return planners[-1]

    checked = run_episodes(*ENV, factory, SEEDS)
    plain = run_episodes(*ENV, lambda: PlannerPolicy(reckless, CANDIDATES), SEEDS)
    assert [r.actions for r in checked] == [r.actions for r in plain]
    assert any(r.collided for r in checked)  # the check below must be exercised
    for result, planner in zip(checked, planners, strict=True):
        decisions = planner.decisions
        assert len(decisions) == result.steps
        assert all(d.risk.shape == d.crashed.shape == d.returns.shape for d in decisions)
        last = decisions[-1]
        # same state, same first action, a deterministic simulator: a real crash after
        # the last decision must be in the chosen candidate's label
        assert last.crashed[last.chosen] or not result.collided
    assert any(d.crashed.any() and not d.crashed.all() for p in planners for d in p.decisions)
