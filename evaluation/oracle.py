"""Oracle lookahead: scores candidate sequences on copies of the TRUE simulator.

An upper bound for the learned planner: it sees the exact future (highway-fast's other
vehicles are deterministic given the state). Each decision, every candidate sequence
(the same road-pruned set the planner would score) is stepped on a ``copy.deepcopy`` of
``env.unwrapped``; sequences sharing a prefix share the copies of that prefix (a tree of
copies), which gives the same figures as stepping each sequence from its own copy.

Score: discounted highway-env reward sum_t gamma^t r_t, stopped at a crash or at the end
of the episode. Sequences without a crash are preferred whenever one exists, then the
highest score, then the lowest index. With ``envelope`` (length, width) a sequence also
counts as crashing when, after any of its steps, another vehicle's centre is within
length along and width across the road of the ego's: the safety envelope the planner's
overlap risk checks (models/risk.py), so the oracle is the planner's decision rule with a
perfect forecast. (An exact lookahead is reckless without it: it drives into gaps that
close just after its horizon.) Only copies are stepped, never the original, and
the copy is of the bare highway-env (no recording wrapper), so nothing is recorded.
"""

from __future__ import annotations

import copy
import time

import numpy as np

from evaluation.policies import road_candidates


def lookahead_step(core, action: int) -> tuple[float, bool, bool]:
    """One decision step of a highway-env copy without computing its observation.

    Same as ``core.step(action)`` minus ``observation_type.observe()`` and the info dict
    (a fifth of the step's cost, unused here). Returns (reward, episode over, crashed).
    """
    core.time += 1 / core.config["policy_frequency"]
    core._simulate(action)
    reward = float(core._reward(action))
    over = bool(core._is_terminated()) or bool(core._is_truncated())
    return reward, over, bool(core.vehicle.crashed)


class OracleLookahead:
    """Policy protocol; candidates (K, F) action ids, gamma discount.

    Per-episode stats (cleared by reset): latencies_ms (wall time per decision).
    """

    name = "oracle"

    def __init__(self, candidates: np.ndarray, gamma: float = 0.9,
                 envelope: tuple[float, float] | None = None):
        candidates = np.asarray(candidates, dtype=np.int64)
        if candidates.ndim != 2 or not candidates.size:
            raise ValueError(f"candidates must have shape (K, F) with K, F >= 1, "
                             f"got {candidates.shape}")
        if not 0.0 <= gamma <= 1.0:
            raise ValueError(f"gamma must lie in [0, 1], got {gamma}")
        if envelope is not None and min(envelope) <= 0:
            raise ValueError(f"envelope length and width must be positive, got {envelope}")
        self.candidates, self.gamma, self.envelope = candidates, float(gamma), envelope
        self.reset()

    def reset(self, rng=None) -> None:
        self.latencies_ms: list[float] = []

    def act(self, env) -> int:
        start = time.perf_counter()
        core = env.unwrapped
        candidates = road_candidates(core, self.candidates)
        returns, crashed, _ = self.evaluate(core, candidates)
        best = best_candidate(returns, crashed)
        self.latencies_ms.append((time.perf_counter() - start) * 1000)
        return int(candidates[best, 0])

    def evaluate(self, core, candidates: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
        """returns (K,), crashed (K,) bool and the number of simulated steps."""
        returns, first, steps = self.first_events(core, candidates)
        return returns, first < candidates.shape[1], steps

    def first_events(self, core, candidates: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
        """returns (K,), first (K,) int64: the 0-based step after which each sequence has
        first crashed (or met the envelope), F = candidates.shape[1] when never, and the
        number of simulated steps."""
        returns = np.zeros(len(candidates))
        first = np.full(len(candidates), candidates.shape[1], dtype=np.int64)
        steps = self.expand(core, candidates, np.arange(len(candidates)), 0, returns, first)
        return returns, first, steps

    def expand(self, core, candidates, rows, depth, returns, first) -> int:
        """Step a copy of `core` for each distinct action at `depth` among `rows` (the
        sequences sharing the prefix that led to `core`), then recurse; returns steps."""
        steps = 0
        for action in np.unique(candidates[rows, depth]):
            group = rows[candidates[rows, depth] == action]
            child = copy.deepcopy(core)
            reward, over, crash = lookahead_step(child, int(action))
            crash = crash or (self.envelope is not None and intrudes(child, *self.envelope))
            steps += 1
            returns[group] += self.gamma ** depth * reward
            if crash:
                first[group] = np.minimum(first[group], depth)
            if not over and depth + 1 < candidates.shape[1]:
                steps += self.expand(child, candidates, group, depth + 1, returns, first)
        return steps


def intrudes(core, length: float, width: float) -> bool:
    """Another vehicle's centre is within `length` along x and `width` along y of the ego's."""
    ego = core.vehicle
    return any(abs(v.position[0] - ego.position[0]) < length
               and abs(v.position[1] - ego.position[1]) < width
               for v in core.road.vehicles if v is not ego)


def best_candidate(returns: np.ndarray, crashed: np.ndarray) -> int:
    """Highest return among the crash-free sequences if any, lowest index on ties."""
    allowed = ~crashed if (~crashed).any() else np.ones_like(crashed)
    value = np.where(allowed, returns, -np.inf)
    return int(np.flatnonzero(value == value.max())[0])
