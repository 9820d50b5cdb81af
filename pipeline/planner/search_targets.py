"""The planner's decisions: what the actor imitates (actor.search_weight).

- `planner_choices`: in each recorded window's history the exported planner scores every
  candidate that keeps the ego on the road (its lane read from the history's last frame)
  and the decision rule picks one; the target is that candidate's first action. The lane
  guard and fallback are left out: they read the live simulator, which a window lacks.
- `planner_states`: the planner drives EnvPool episodes (`RecordingPlanner`) and every
  decision it makes is kept with its history: states the planner itself leads to, as
  many as the episodes give, labelled as it drives. With `epsilon` the executed first
  action is a random road action on that share of the decisions (the label stays the
  planner's), so the states also cover the planner's near misses.
"""

from __future__ import annotations

import sys
import time

import numpy as np

from evaluation.policies import as_generator, road_mask_at
from models.candidates import enumerate_candidates
from pipeline.errors import StageError
from pipeline.features import FEATURE_NAMES
from pipeline.planner.decision import choose
from pipeline.planner.policy import PlannerPolicy

LANE = FEATURE_NAMES.index("lane")
PROGRESS_EVERY = 2000  # windows between progress lines


def planner_choices(scorer, hist: np.ndarray, hist_mask: np.ndarray, lanes: int,
                    rule: tuple[float, float, float]) -> np.ndarray:
    """The first action (W,) int64 the planner (`scorer`, an OnnxScorer) takes in each of
    W windows hist (W, H, N, D), hist_mask (W, H, N) on a road of `lanes` lanes; rule:
    (risk_weight, uncertainty_weight, risk_budget) of pipeline.planner.decision."""
    candidates = enumerate_candidates(scorer.horizon)
    choices = np.empty(len(hist), dtype=np.int64)
    start = time.perf_counter()
    for i in range(len(hist)):
        lane = int(round(float(hist[i, -1, 0, LANE])))
        kept = candidates[road_mask_at(candidates, lane, lanes)]
        choices[i] = kept[choose(scorer.score(hist[i], hist_mask[i], kept), *rule), 0]
        if (i + 1) % PROGRESS_EVERY == 0:
            print(f"[actor] planner decisions: {i + 1}/{len(hist)} windows "
                  f"({time.perf_counter() - start:.0f} s)", file=sys.stderr, flush=True)
    return choices


class RecordingPlanner(PlannerPolicy):
    """A PlannerPolicy that keeps (hist, hist_mask, its greedy first action) of each of its
    decisions in `records`; with probability `epsilon` it executes a uniformly drawn
    candidate instead (drawn from the generator `reset` gets)."""

    def __init__(self, scorer, candidates: np.ndarray, epsilon: float = 0.0, **planner_kwargs):
        if not 0.0 <= epsilon <= 1.0:
            raise ValueError(f"epsilon must be in [0, 1], got {epsilon}")
        self.epsilon = float(epsilon)
        super().__init__(scorer, candidates, **planner_kwargs)  # calls reset

    def reset(self, rng=None) -> None:
        self.rng = as_generator(rng)
        self.records: list[tuple[np.ndarray, np.ndarray, int]] = []
        self.window = None  # (hist, hist_mask) of the decision being made
        super().reset(self.rng.spawn(1)[0])

    def propose(self, candidates: np.ndarray, hist: np.ndarray,
                hist_mask: np.ndarray) -> np.ndarray:
        self.window = (hist, hist_mask)  # the planner's own cut of this decision's history
        return candidates

    def pick(self, scores, candidates: np.ndarray) -> int:
        best = super().pick(scores, candidates)
        self.records.append((*self.window, int(candidates[best, 0])))
        if self.rng.random() < self.epsilon:
            return int(self.rng.integers(len(candidates)))
        return best


def planner_states(source, make_planner, seeds: list[int], batch: int) -> dict[str, np.ndarray]:
    """hist (M, H, N, D), hist_mask (M, H, N), target (M,) of every planner decision in
    EnvPool episodes of `seeds` (`source` an EnvpoolSource), each driven by a fresh
    `make_planner()` RecordingPlanner, in seed order."""
    from functools import partial

    from evaluation.envpool_loop import drivers, run_envpool_episodes
    from pipeline.planner.batch_planner import BatchPlanner
    from pipeline.stage_io import collecting

    factory, made = collecting(make_planner)
    start = time.perf_counter()
    results = run_envpool_episodes(source, drivers(partial(BatchPlanner, source), factory),
                                   seeds, batch)
    records = [r for planner in made for r in planner.records]  # made in seed order
    crashed = sum(r.collided for r in results)
    print(f"[actor] planner decisions: {len(records)} in {len(seeds)} EnvPool episodes "
          f"({crashed} crashed, {time.perf_counter() - start:.0f} s)", file=sys.stderr,
          flush=True)
    if not records:
        raise StageError(f"actor: the planner made no decision of its own in {len(seeds)} "
                         f"EnvPool episodes (all fallback); raise actor.planner_episodes")
    hist, mask, target = zip(*records, strict=True)
    return {"hist": np.stack(hist).astype(np.float32), "hist_mask": np.stack(mask),
            "target": np.asarray(target, dtype=np.int64)}
