"""Offline replay: the planner's decision rule on labelled decisions, judged by the truth.

The risk critic's labels (pipeline/critic_labels.py) hold, for every road candidate of a
recorded decision, whether the true simulator brings it into the safety envelope within
its F steps (`first` < F) and its true discounted return. Replaying a decision means
scoring those same candidates with the ONNX planner and applying the decision rule
(pipeline/planner/decision.py) at a given risk budget and lambda: the chosen candidate can then
be judged without driving. A grid of settings costs one scoring pass, so settings are
screened in seconds rather than the minutes of 100 closed-loop episodes.

What replay cannot show: the states a setting would drive into. Decisions are those of
the labelling episodes (driven by the envelope oracle), so a setting that is bold here is
judged only where the oracle went; the closed loop (`drivecast simulate`) stays the test.
No torch on this path.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from evaluation.counterfactual import Decision, counterfactual_summary
from evaluation.metrics import auroc, decision_auroc
from models.candidates import FASTER, LANE_LEFT, LANE_RIGHT, SLOWER
from pipeline.planner.decision import choose

LANE_CHANGES = (LANE_LEFT, LANE_RIGHT)
REFERENCES = ("true risk", "truth")  # the model's return with the true risk; both true


@dataclass(frozen=True)
class Scored:
    """One replayed decision over its K road candidates: the planner's risk, return and
    uncertainty (K,), the true event flags and returns (K,), and each first action (K,)."""

    risk: np.ndarray
    ret: np.ndarray
    unc: np.ndarray
    event: np.ndarray
    returns: np.ndarray
    first_action: np.ndarray


@dataclass(frozen=True)
class Scores:
    """The three arrays `pipeline.planner.decision.choose` reads."""

    collision_prob: np.ndarray
    expected_return: np.ndarray
    uncertainty: np.ndarray


def score_decisions(scorer, labels: dict, rows: Iterable[int],
                    candidates: np.ndarray) -> list[Scored]:
    """Score the road candidates of the labelled decisions `rows` with `scorer` (an
    OnnxScorer); `candidates` (K, F) is the order the labels were written in."""
    horizon = candidates.shape[1]
    scored = []
    for row in rows:
        road = np.flatnonzero(labels["valid"][row])
        if not len(road):
            continue
        scores = scorer.score(labels["hist"][row], labels["hist_mask"][row], candidates[road])
        scored.append(Scored(np.asarray(scores.collision_prob, dtype=np.float64),
                             np.asarray(scores.expected_return, dtype=np.float64),
                             np.asarray(scores.uncertainty, dtype=np.float64),
                             labels["first"][row, road] < horizon,
                             labels["returns"][row, road].astype(np.float64),
                             candidates[road, 0]))
    return scored


def as_scores(decision: Scored, reference: str = "") -> Scores:
    """The arrays the rule reads: the planner's, or a reference's (REFERENCES)."""
    if reference not in ("", *REFERENCES):
        raise ValueError(f"unknown reference {reference!r}; choose from {REFERENCES}")
    risk = decision.event.astype(np.float64) if reference else decision.risk
    ret = decision.returns if reference == "truth" else decision.ret
    return Scores(risk, ret, np.zeros_like(ret) if reference else decision.unc)


def replay(scored: list[Scored], risk_weight: float, risk_budget: float,
           uncertainty_weight: float = 0.0, reference: str = "") -> dict[str, float]:
    """The decision rule on every replayed decision, judged by the truth.

    Figures: chosen_event_rate (the chosen sequence truly meets the envelope),
    return_regret and best_rejected_rate (evaluation/counterfactual.py, against the
    budget), no_safe_rate (decisions with no truly safe candidate), chosen_return (mean
    true return of the chosen), and the first action's share: slower, faster, lane_change.
    """
    if not scored:
        raise ValueError("no labelled decisions to replay")
    decisions, firsts = [], []
    for decision in scored:
        scores = as_scores(decision, reference)
        best = choose(scores, risk_weight, uncertainty_weight, risk_budget)
        decisions.append(Decision(scores.collision_prob, decision.event, decision.returns, best))
        firsts.append(decision.first_action[best])
    summary = counterfactual_summary(decisions, risk_budget)
    firsts = np.asarray(firsts)
    return {"decisions": summary["decisions"],
            "chosen_event_rate": summary["chosen_crash_rate"],
            "return_regret": summary["return_regret"],
            "best_rejected_rate": summary["best_rejected_rate"],
            "no_safe_rate": float(np.mean([d.event.all() for d in scored])),
            "chosen_return": float(np.mean([d.returns[c.chosen]
                                            for d, c in zip(scored, decisions, strict=True)])),
            "slower": float(np.mean(firsts == SLOWER)),
            "faster": float(np.mean(firsts == FASTER)),
            "lane_change": float(np.mean(np.isin(firsts, LANE_CHANGES)))}


def replay_grid(scored: list[Scored], risk_weights: Iterable[float],
                risk_budgets: Iterable[float], uncertainty_weight: float = 0.0) -> list[dict]:
    """One row per (lambda, budget) setting, then one per reference, taken at lambda 1 and
    budget 0.5: with a true 0/1 risk any budget below 1 and any lambda choose the same."""
    rows = [{"rule": "planner", "risk_weight": weight, "risk_budget": budget,
             **replay(scored, weight, budget, uncertainty_weight)}
            for weight in risk_weights for budget in risk_budgets]
    for reference in REFERENCES:
        rows.append({"rule": reference, "risk_weight": 1.0, "risk_budget": 0.5,
                     **replay(scored, 1.0, 0.5, reference=reference)})
    return rows


def risk_order(scored: list[Scored]) -> dict[str, float]:
    """AUROC of the planner's risk against the true events over every replayed candidate
    (risk_auroc) and within each decision on average (risk_decision_auroc: the order the
    rule acts on)."""
    width = max(len(d.risk) for d in scored)

    def padded(name):
        return np.stack([np.pad(getattr(d, name), (0, width - len(d.risk))) for d in scored])

    valid = np.stack([np.arange(width) < len(d.risk) for d in scored])
    risk, event = padded("risk"), padded("event")
    return {"risk_auroc": auroc(risk, event, valid),
            "risk_decision_auroc": decision_auroc(risk, event, valid)}


COLUMNS = ("chosen_event_rate", "return_regret", "best_rejected_rate", "chosen_return",
           "slower", "faster", "lane_change")


def replay_markdown(rows: list[dict]) -> str:
    """The grid as a markdown table (rates in %)."""
    head = "| rule | lambda | budget | event % | regret | best rejected % | true return | " \
           "slower % | faster % | lane change % |"
    lines = [head, "|" + "---|" * 10]
    for row in rows:
        setting = [f"{row['risk_weight']:g}", f"{row['risk_budget']:g}"]
        cells = [row["rule"], *(setting if row["rule"] == "planner" else ["any", "any"])]
        for name in COLUMNS:
            value = row[name]
            rate = name not in ("return_regret", "chosen_return")
            cells.append(f"{100 * value:.1f}" if rate else f"{value:.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
