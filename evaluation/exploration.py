"""Exploration for collecting data with the planner (numpy only, no torch).

A planner that only ever takes its favourite action collects data where its model already
agrees with itself. While collecting (``drivecast iterate``) each decision first picks a
*first action*, then executes the best candidate sequence that starts with it:

- with probability ``epsilon`` the first action is uniformly random among the first
  actions of the candidates on the road;
- otherwise it is drawn uniformly among the ``top_k`` best first actions, ranked by the
  planner's own decision rule (``pipeline.planner.decision.choose``; ``ranked_first_actions``).
  While any candidate is within the risk budget, only first actions whose best candidate
  is within it are drawn. ``top_k = 1`` and ``epsilon = 0`` is exactly the greedy planner.

Executing a whole candidate that starts with the chosen action keeps the reality check
honest: the forecast remembered for the next surprise check is that of the action taken.

Counterfactual branches (``branches`` > 0): the data above still only label the maneuvers
the planner took. At each planner decision, ``branches`` of the other scored candidates
(drawn uniformly, from their own random stream, so the episode itself is the same with or
without them) are also driven open loop for ``branch_steps`` steps on copies of the
simulator (pipeline.highway_source ``record_branch``; a shorter candidate is followed by
IDLE). They land in ``branch_runs`` as short episodes of their own: the true outcome of the
maneuvers the planner weighed, including those it rejected as too risky.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from evaluation.policies import IDLE, as_generator
from pipeline.planner.decision import choose
from pipeline.planner.policy import PlannerPolicy


def candidate_subset(scores, index: np.ndarray) -> SimpleNamespace:
    """The three score arrays of the candidates `index` (what `choose` reads)."""
    return SimpleNamespace(**{name: np.asarray(getattr(scores, name))[index]
                              for name in ("collision_prob", "expected_return", "uncertainty")})


def ranked_first_actions(scores, candidates: np.ndarray, risk_weight: float,
                         uncertainty_weight: float, risk_budget: float) -> np.ndarray:
    """The best candidate of each distinct first action, best first: the planner's own
    choice (`pipeline.planner.decision.choose`), then its choice once that first action is ruled
    out, and so on, so the ranking follows the decision rule whatever it is."""
    remaining, ranked = np.arange(len(candidates)), []
    while len(remaining):
        pick = int(remaining[choose(candidate_subset(scores, remaining), risk_weight,
                                    uncertainty_weight, risk_budget)])
        ranked.append(pick)
        remaining = remaining[candidates[remaining, 0] != candidates[pick, 0]]
    return np.array(ranked, dtype=np.int64)


def explore_choice(scores, candidates: np.ndarray, rng: np.random.Generator, epsilon: float,
                   top_k: int, risk_weight: float = 1.0, uncertainty_weight: float = 0.0,
                   risk_budget: float = 1.0) -> int:
    """Index of the candidate (K, F) to execute; see the module docstring."""
    best = ranked_first_actions(scores, np.asarray(candidates), risk_weight, uncertainty_weight,
                                risk_budget)
    within = np.asarray(scores.collision_prob)[best] <= risk_budget
    eligible = int(within.sum()) or len(best)  # none within the budget: all are eligible
    # Draw all three numbers every time: the stream does not depend on the branch taken.
    explore, any_pick = rng.random(), int(rng.integers(len(best)))
    top_pick = int(rng.integers(min(top_k, eligible)))
    return int(best[any_pick] if explore < epsilon else best[top_pick])


def exploring_name(epsilon: float, top_k: int) -> str:
    """The policy name an exploring planner records in the steps table and manifest."""
    return f"planner+eps{epsilon:g}+top{top_k}"


class ExploringPlanner(PlannerPolicy):
    """A PlannerPolicy whose planner decisions explore (epsilon, top_k; module docstring).

    The reality check, the fallback and the per-episode stats (``surprises``,
    ``fallback_steps``, ...) are PlannerPolicy's. ``reset(rng)`` seeds the exploration.
    """

    def __init__(self, scorer, candidates: np.ndarray, epsilon: float = 0.0, top_k: int = 1,
                 branches: int = 0, branch_steps: int = 0, **planner_kwargs):
        if not 0.0 <= epsilon <= 1.0 or top_k < 1:
            raise ValueError(f"epsilon must be in [0, 1] and top_k >= 1, got {epsilon}, {top_k}")
        if branches < 0 or (branches and branch_steps < 1):
            raise ValueError(f"branches must be >= 0 and branch_steps >= 1 with branches, got "
                             f"{branches}, {branch_steps}")
        self.epsilon, self.top_k = float(epsilon), int(top_k)
        self.branches, self.branch_steps = int(branches), int(branch_steps)
        super().__init__(scorer, candidates, **planner_kwargs)  # calls reset
        self.name = exploring_name(self.epsilon, self.top_k)

    def reset(self, rng=None) -> None:
        self.rng = as_generator(rng)
        fallback_rng, self.branch_rng = self.rng.spawn(2)  # spawning draws nothing from rng
        self.branch_runs: list[tuple[dict, dict]] = []  # (frames, steps), episode ids 1, 2, ..
        self.scored = None  # (candidates (K, F), chosen index) of the last planner decision
        super().reset(fallback_rng)

    def act(self, env) -> int:
        action = super().act(env)
        if self.branches and not self.in_fallback:
            self.record_branches(env)
        return action

    def pick(self, scores, candidates: np.ndarray) -> int:
        """``explore_choice`` in place of the greedy decision rule."""
        chosen = explore_choice(scores, candidates, self.rng, self.epsilon, self.top_k,
                                self.risk_weight, self.uncertainty_weight, self.risk_budget)
        self.scored = (candidates, chosen)
        return chosen

    def record_branches(self, env) -> None:
        """Drive `branches` of the other scored candidates on copies of `env`."""
        from pipeline.highway_source import record_branch

        candidates, chosen = self.scored
        others = np.delete(np.arange(len(candidates)), chosen)
        for index in self.branch_rng.permutation(others)[:self.branches]:
            actions = branch_actions(candidates[index], self.branch_steps)
            self.branch_runs.append(record_branch(env, actions, self.scorer.history,
                                                  episode=len(self.branch_runs) + 1))


def branch_actions(candidate: np.ndarray, steps: int) -> np.ndarray:
    """The first `steps` actions of `candidate` (F,), IDLE after its end."""
    tail = np.full(max(steps - len(candidate), 0), IDLE, dtype=np.int64)
    return np.concatenate([np.asarray(candidate, dtype=np.int64)[:steps], tail])
