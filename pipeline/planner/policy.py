"""The ONNX planner as a driving policy, with a reality check and a fallback (no torch).

Every decision (receding horizon): cut the live history, drop the candidate sequences
that would leave the road, score the rest, pick one with ``decision.choose`` and execute
its first action only.

Reality check: at the next decision the chosen candidate's step-1 forecast of the
neighbour slots (slots 1..N-1 present at t0 and still on the road) is compared with where
those vehicles actually are, in the same t0 ego frame. The mean position error in metres
is the *surprise* (NaN when no neighbour can be compared; NaN counts as not surprising).

Fallback: once the surprise has exceeded ``surprise_threshold`` on ``surprise_patience``
consecutive decisions (threshold 0: the one calibrated at export on held-out data, the
sidecar's ``surprise_threshold``, see pipeline/planner/calibrate.py; a planner without one
uses UNCALIBRATED_SURPRISE m and prints one line saying so), the ``fallback`` policy
drives. Meanwhile the planner keeps forecasting in shadow mode (the fallback's action
followed by IDLE, one candidate, so the check goes on); control returns to the planner
when the surprise is back at or below the threshold, but not before ``min_fallback_steps``
fallback decisions.

Lane guard (optional, pipeline/planner/lane_guard.py): the rule runs only on the candidates
whose first action the guard lets through, while one of them is within the risk budget
(pipeline.planner.decision); ``guard_steps`` counts the decisions where that changed the choice.

An env whose decision period or frames per step differ from the planner's sidecar is
refused (the history would not mean what the model learned).

``act(env)`` drives highway-env. ``decide(road)`` is the same decision for a simulator that
pushes its frames into the live scene itself and answers the road's questions (road
pruning, the guard's gaps, the fallback's action) through `road`: the EnvPool closed loop
(pipeline/planner/batch_planner.py).
"""

from __future__ import annotations

import sys
import time

import numpy as np

from evaluation.policies import IDLE, RuleBasedPolicy, road_candidates
from pipeline.planner.decision import choose
from pipeline.planner.live_scene import LiveScene


def forecast_surprise(predicted: np.ndarray, predicted_present: np.ndarray,
                      observed: np.ndarray, observed_present: np.ndarray) -> float:
    """Mean distance (m) between predicted and observed positions (N, 2) of the neighbour
    slots 1..N-1 present in both masks (N,); NaN when there is none."""
    both = predicted_present & observed_present
    both[0] = False  # the ego moves as the action says; the check is about the others
    if not both.any():
        return float("nan")
    return float(np.linalg.norm(predicted[both] - observed[both], axis=-1).mean())


UNCALIBRATED_SURPRISE = 5.0  # m: threshold 0 with a planner exported before calibration
_told_uncalibrated: set[str] = set()


def resolve_surprise_threshold(threshold: float, scorer) -> float:
    """The reality check's threshold [m]: `threshold` unless it is 0, else the scorer's
    calibrated one (``calibrated_surprise``), else UNCALIBRATED_SURPRISE with one printed
    line per planner file."""
    if threshold != 0:
        return float(threshold)
    calibrated = getattr(scorer, "calibrated_surprise", None)
    if calibrated is not None:
        return float(calibrated)
    path = str(getattr(scorer, "path", "the planner"))
    if path not in _told_uncalibrated:
        _told_uncalibrated.add(path)
        print(f"[planner] {path} carries no calibrated surprise threshold (its sidecar has "
              f"none): the reality check uses {UNCALIBRATED_SURPRISE:g} m; set "
              f"simulate.surprise_threshold to choose", file=sys.stderr, flush=True)
    return UNCALIBRATED_SURPRISE


def check_timing(env, scorer) -> None:
    """The env must step the planner's decision period with its frames per step."""
    config = env.unwrapped.config
    check_period(config["simulation_frequency"], config["policy_frequency"], scorer)


def check_period(simulation_frequency: int, policy_frequency: int, scorer) -> None:
    """A simulator at these frequencies [Hz] must step the planner's decision period with
    its frames per step."""
    frames = simulation_frequency // policy_frequency
    dt = 1.0 / policy_frequency
    want_frames = scorer.meta["frames_per_step"]
    if frames != want_frames or abs(dt - scorer.dt) > 1e-9:
        raise ValueError(f"the env decides every {dt:g} s with {frames} frames per step, the "
                         f"planner {scorer.path} was trained for {scorer.dt:g} s and "
                         f"{want_frames}")


class HighwayRoad:
    """What the planner reads of a highway-env episode beside its history: the lanes (road
    pruning), the target-lane gaps (lane guard) and the fallback's action. The EnvPool
    closed loop passes its own (pipeline/planner/batch_planner.py)."""

    def __init__(self, env) -> None:
        self.env = env

    def on_road(self, candidates: np.ndarray) -> np.ndarray:
        return road_candidates(self.env, candidates)

    def guard_mask(self, guard, candidates: np.ndarray) -> np.ndarray:
        return guard.mask(self.env, candidates)

    def fallback_action(self, fallback) -> int:
        return int(fallback.act(self.env))


class PlannerPolicy:
    """Policy protocol (``reset(rng)``, ``act(env)``) over an OnnxScorer-like ``scorer``.

    candidates (K, F) action ids, F = scorer.horizon (those leaving the road are not
    scored: ``evaluation.policies.road_candidates``);
    risk_weight lambda, uncertainty_weight beta, risk_budget: see pipeline.planner.decision;
    surprise_threshold [m] (0: calibrated), surprise_patience, min_fallback_steps, guard (a
    LaneGuard or None): see the module docstring. Per-episode stats (cleared by reset): latencies_ms
    (planner decisions, history + score + guard + choice), surprises (one per checked
    decision), fallback_steps, guard_steps, steps (all decisions).
    """

    name = "planner"

    def __init__(self, scorer, candidates: np.ndarray, risk_weight: float = 1.0,
                 uncertainty_weight: float = 0.0, risk_budget: float = 1.0,
                 surprise_threshold: float = 0.0, surprise_patience: int = 2, fallback=None,
                 min_fallback_steps: int = 3, guard=None):
        candidates = np.asarray(candidates, dtype=np.int64)
        if candidates.ndim != 2 or candidates.shape[1] != scorer.horizon or not len(candidates):
            raise ValueError(f"candidates must have shape (K, {scorer.horizon}) with K >= 1 "
                             f"(the planner's horizon), got {candidates.shape}")
        if surprise_patience < 1 or min_fallback_steps < 0:
            raise ValueError(f"surprise_patience must be >= 1 and min_fallback_steps >= 0, "
                             f"got {surprise_patience}, {min_fallback_steps}")
        self.scorer, self.candidates = scorer, candidates
        self.risk_weight, self.uncertainty_weight = risk_weight, uncertainty_weight
        self.risk_budget = risk_budget
        self.surprise_threshold = resolve_surprise_threshold(surprise_threshold, scorer)
        self.surprise_patience, self.min_fallback_steps = surprise_patience, min_fallback_steps
        self.fallback = fallback if fallback is not None else RuleBasedPolicy()
        self.guard, self.allowed = guard, None
        self.live = LiveScene(scorer.history, scorer.vehicles)
        self.reset()

    def reset(self, rng=None) -> None:
        self.live.reset()
        self.fallback.reset(rng)
        self.latencies_ms: list[float] = []
        self.surprises: list[float] = []
        self.fallback_steps = self.guard_steps = self.steps = self.streak = 0
        self.in_fallback, self.fallback_run = False, 0
        self.pending = None  # (positions (N, 2), present (N,), slots (N,), pose) to check

    def act(self, env) -> int:
        check_timing(env, self.scorer)
        self.live.update(env)
        return self.decide(HighwayRoad(env))

    def decide(self, road) -> int:
        """One decision on the frames the live scene holds; `road` (a HighwayRoad or the
        EnvPool loop's) answers what the history does not: lanes, gaps, the fallback."""
        self.check_reality()
        self.update_mode()
        self.steps += 1
        if self.in_fallback:
            return self.act_fallback(road)
        return self.act_planner(road)

    # ------------------------------------------------------------ reality check

    def check_reality(self) -> None:
        """Surprise of the last forecast against the latest frame; updates the streak."""
        if self.pending is None:
            return
        predicted, predicted_present, slots, pose = self.pending
        observed, observed_present = self.live.observed_positions(slots, pose)
        surprise = forecast_surprise(predicted, predicted_present, observed, observed_present)
        self.surprises.append(surprise)
        self.streak = self.streak + 1 if surprise > self.surprise_threshold else 0

    def update_mode(self) -> None:
        if self.in_fallback:
            if self.fallback_run >= self.min_fallback_steps and self.streak == 0:
                self.in_fallback = False
        elif self.streak >= self.surprise_patience:
            self.in_fallback, self.fallback_run = True, 0

    # ------------------------------------------------------------ decisions

    def act_planner(self, road) -> int:
        start = time.perf_counter()
        hist, hist_mask, slots = self.live.window()
        candidates = self.propose(road.on_road(self.candidates), hist, hist_mask)
        scores = self.scorer.score(hist, hist_mask, candidates)
        self.allowed = None if self.guard is None else road.guard_mask(self.guard, candidates)
        best = self.pick(scores, candidates)
        self.latencies_ms.append((time.perf_counter() - start) * 1000)
        self.remember(scores.positions[best, 0], hist_mask[-1], slots)
        return int(candidates[best, 0])

    def propose(self, candidates: np.ndarray, hist: np.ndarray,
                hist_mask: np.ndarray) -> np.ndarray:
        """The candidates (K, F) to score in the scene (hist, hist_mask): all of them here;
        a subclass may prune (pipeline/planner/actor_runtime.py ActorGuidedPlanner)."""
        return candidates

    def pick(self, scores, candidates: np.ndarray) -> int:
        """Index of the candidate to execute: the decision rule (pipeline.planner.decision) on
        the candidates the guard allows."""
        rule = (self.risk_weight, self.uncertainty_weight, self.risk_budget)
        best = choose(scores, *rule, self.allowed)
        if self.allowed is not None and best != choose(scores, *rule):
            self.guard_steps += 1
        return best

    def act_fallback(self, road) -> int:
        action = road.fallback_action(self.fallback)
        self.fallback_steps += 1
        self.fallback_run += 1
        hist, hist_mask, slots = self.live.window()
        shadow = np.full((1, self.scorer.horizon), IDLE, dtype=np.int64)  # (1, F)
        shadow[0, 0] = action
        scores = self.scorer.score(hist, hist_mask, shadow)
        self.remember(scores.positions[0, 0], hist_mask[-1], slots)
        return action

    def remember(self, positions: np.ndarray, present: np.ndarray, slots: np.ndarray) -> None:
        """Keep the step-1 forecast (N, 2) to check at the next decision."""
        self.pending = (np.asarray(positions), np.asarray(present, bool), slots,
                        self.live.pose())
