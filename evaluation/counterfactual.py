"""Counterfactual risk check: the planner's collision probability of every candidate it
scored against what the true simulator says happens when that candidate is driven.

Held-out behaviour data (the evaluate stage) labels only the maneuvers the behaviour
policy took. The planner's decisions hinge on the maneuvers it weighs and rejects, so
here, at each planner decision, the same road candidates are also driven open loop on
deep copies of the simulator (``evaluation.oracle``): every candidate gets a label,
crashed within its F steps, and a true discounted return. The planner still drives with
its own choice, so the episode is the one the plain planner drives on that seed.

Costs 5^F simulator copies per decision (about 1.8 s at F = 3): meant for a few episodes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from evaluation import metrics
from evaluation.oracle import OracleLookahead
from pipeline.planner.policy import PlannerPolicy


@dataclass(frozen=True)
class Decision:
    """One planner decision over K candidates: the model's collision_prob (K,), the true
    crashed (K,) bool and returns (K,), and the index of the chosen candidate."""

    risk: np.ndarray
    crashed: np.ndarray
    returns: np.ndarray
    chosen: int


class CounterfactualPlanner(PlannerPolicy):
    """PlannerPolicy that labels every scored candidate with the true simulator.

    Same decisions as PlannerPolicy; `decisions` (kept across episodes, one per planner
    decision) holds the labels. Its latencies include the simulator copies: do not report
    them as the planner's.
    """

    name = "planner (counterfactual check)"

    def __init__(self, scorer, candidates: np.ndarray, **planner_kwargs):
        self.decisions: list[Decision] = []
        self.truth = OracleLookahead(candidates, scorer.gamma)  # the planner's discount
        self.core = None
        super().__init__(scorer, candidates, **planner_kwargs)

    def act(self, env) -> int:
        self.core = env.unwrapped
        return super().act(env)

    def pick(self, scores, candidates: np.ndarray) -> int:
        best = super().pick(scores, candidates)
        returns, crashed, _ = self.truth.evaluate(self.core, candidates)
        self.decisions.append(Decision(np.asarray(scores.collision_prob, dtype=np.float64),
                                       crashed, returns, best))
        return best


def counterfactual_summary(decisions: list[Decision], risk_budget: float) -> dict[str, float]:
    """Flat figures over every scored candidate of `decisions`:

    candidates, crash_rate (true), risk_auroc and risk_ece (model risk vs true crash),
    accepted_crash_rate (true crashes among candidates within `risk_budget`),
    rejected_safe_rate (truly safe candidates among those above it), chosen_crash_rate
    (decisions whose chosen candidate truly crashes open loop), return_regret (mean over
    decisions with a truly safe candidate: its best true return minus the chosen's) and
    best_rejected_rate (over the same decisions: the truly best safe candidate, the one a
    perfect model would take, is above the budget, so the planner cannot take it).
    """
    if not decisions:
        raise ValueError("no planner decisions to summarise")
    risk = np.concatenate([d.risk for d in decisions])
    crashed = np.concatenate([d.crashed for d in decisions])
    accepted = risk <= risk_budget
    open_ = [d for d in decisions if (~d.crashed).any()]  # some candidate is truly safe
    regrets = [d.returns[~d.crashed].max() - d.returns[d.chosen] for d in open_]
    best = [d.risk[np.argmax(np.where(d.crashed, -np.inf, d.returns))] for d in open_]
    return {
        "decisions": float(len(decisions)), "candidates": float(len(risk)),
        "crash_rate": float(crashed.mean()),
        "risk_auroc": metrics.auroc(risk, crashed),
        "risk_ece": metrics.expected_calibration_error(risk, crashed),
        "accepted_crash_rate": rate(crashed[accepted]),
        "rejected_safe_rate": rate(~crashed[~accepted]),
        "chosen_crash_rate": float(np.mean([d.crashed[d.chosen] for d in decisions])),
        "return_regret": float(np.mean(regrets)) if regrets else float("nan"),
        "best_rejected_rate": rate(np.array(best) > risk_budget),
    }


def rate(flags: np.ndarray) -> float:
    """Mean of a boolean array; NaN when it is empty."""
    return float(flags.mean()) if len(flags) else float("nan")


def reliability_table(decisions: list[Decision]) -> str:
    """Markdown: per model-risk bin, candidates and the true crash rate."""
    risk = np.concatenate([d.risk for d in decisions])
    crashed = np.concatenate([d.crashed for d in decisions])
    bins = metrics.reliability_bins(risk, crashed)
    lines = ["| model risk | candidates | mean model risk | true crash rate |", "|---|---|---|---|"]
    for low, high, count, mean_prob, frequency in zip(bins.edges[:-1], bins.edges[1:],
                                                       bins.count, bins.mean_prob,
                                                       bins.frequency, strict=True):
        if count:
            lines.append(f"| {low:.2f}-{high:.2f} | {int(count)} | {mean_prob:.3f} | "
                         f"{frequency:.3f} |")
    return "\n".join(lines) + "\n"
