"""Closed-loop episodes on EnvPool, a batch of them per pool, one EpisodeResult each.

``run_envpool_episodes`` runs the seeds in consecutive groups of at most ``batch``; a group
is one EnvPool pool whose environment i is seeded with the group's seed i
(``EnvpoolSource.make``), driven by ``make_driver(seeds)``: a driver whose slot i plays
seed i's episode, its policy reset with ``policy_rng(seed)`` as on highway-env. Drivers
(``evaluation.batch_policies.BatchPolicy``, ``pipeline.planner.batch_planner.BatchPlanner``)
have ``observe(snapshot, frame)`` (every frame), ``act(slots, scenes)`` (decision frames)
and ``policies`` (one per slot, for the per-episode stats of ``policy_stats``). An
episode's result depends on its seed alone, not on the batch size.

As in ingest (pipeline/envpool_source.py), one pool step is one simulation frame: the
decision's action on its first frame, IDLE on the others. A decision's reward is the
reward of its last frame (highway-env computes it once, after the decision's frames) and
its speed the ego's speed then. A crash ends the episode on the crash frame; how it
happened (``crash_kind_of``) is read from the frame's vehicles as ``closed_loop.crash_kind``
reads highway-env's, on EnvPool's straight lanes along x.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from evaluation.closed_loop import SIDE_OFFSET, EpisodeResult, policy_stats
from models.candidates import IDLE
from pipeline.envpool_source import (
    EnvpoolSource,
    Snapshot,
    batches,
    read_snapshot,
    scenes_of,
    target_lanes,
)
from pipeline.highway_source import check_action, policy_rng


@dataclass
class Tally:
    """One running episode: its decisions so far and, once ended, how it ended."""

    seed: int
    actions: list[int] = field(default_factory=list)
    speeds: list[float] = field(default_factory=list)
    total_return: float = 0.0
    terminated: bool = False
    truncated: bool = False
    collided: bool = False
    crash: str = ""


def crash_kind_of(rows: np.ndarray) -> str:
    """`closed_loop.crash_kind` on one environment's vehicles (V, 6) of
    envpool_source.STATE_FIELDS, ego first: lanes run along x, so the offset across the lane
    is the difference in y."""
    x, y, crashed = rows[:, 0], rows[:, 1], rows[:, 5] > 0
    if not crashed[0]:
        return ""
    others = np.flatnonzero(crashed[1:]) + 1
    if not len(others):
        return "other"
    partner = others[np.argmin(np.hypot(x[others] - x[0], y[others] - y[0]))]
    if abs(y[partner] - y[0]) >= SIDE_OFFSET:
        return "side"
    return "front" if x[partner] > x[0] else "rear"


def drivers(wrap: Callable, factory: Callable) -> Callable:
    """A `make_driver` for run_envpool_episodes: one fresh `factory()` policy per seed,
    reset with ``policy_rng(seed)``, all wrapped by `wrap(policies)` (``BatchPolicy``, or
    ``functools.partial(BatchPlanner, source)``)."""
    def make(seeds: list[int]):
        policies = []
        for seed in seeds:
            policies.append(factory())
            policies[-1].reset(policy_rng(seed))
        return wrap(policies)
    return make


def run_envpool_episodes(source: EnvpoolSource, make_driver: Callable, seeds: Sequence[int],
                         batch: int = 64) -> list[EpisodeResult]:
    """One EpisodeResult per seed, in seed order (see the module docstring)."""
    if batch < 1:
        raise ValueError(f"batch must be at least 1, got {batch}")
    seeds = [int(seed) for seed in seeds]
    results = []
    for group in batches(len(seeds), batch):
        chunk = [seeds[i] for i in group]
        results += run_group(source, make_driver(chunk), chunk)
    return results


def run_group(source: EnvpoolSource, driver, seeds: list[int]) -> list[EpisodeResult]:
    """The episodes of `seeds`, stepped together in one pool."""
    pool, count = source.make(seeds), len(seeds)
    pool.reset()
    lanes, per_step = source.lanes_count(pool), source.frames_per_step
    tallies = [Tally(seed) for seed in seeds]
    snapshot = read_snapshot(pool, np.arange(count))
    driver.observe(snapshot, 0)
    frame = 0
    while len(snapshot.env_ids):
        actions = np.full(count, IDLE, dtype=np.int32)
        if frame % per_step == 0:
            scenes = scenes_of(snapshot, target_lanes(pool, snapshot.env_ids), lanes)
            chosen = driver.act(snapshot.env_ids, scenes)
            for i, action in zip(snapshot.env_ids, chosen, strict=True):
                tallies[i].actions.append(check_action(action, driver.policies[i]))
            actions[snapshot.env_ids] = chosen
        _, reward, terminated, truncated, _ = pool.step(actions)
        frame += 1
        snapshot = read_snapshot(pool, snapshot.env_ids)
        driver.observe(snapshot, frame)
        running = close_frame(tallies, snapshot, reward, terminated, truncated,
                              frame % per_step == 0)
        snapshot = snapshot.keep(running)
    return [result_of(tally, driver.policies[i]) for i, tally in enumerate(tallies)]


def close_frame(tallies: list[Tally], snapshot: Snapshot, reward, terminated, truncated,
                decision_done: bool) -> np.ndarray:
    """Close the decisions that end on this frame; the environments still running."""
    still = []
    rows = np.split(snapshot.rows, np.cumsum(snapshot.counts)[:-1])
    for i, vehicles in zip(snapshot.env_ids, rows, strict=True):
        tally, ended = tallies[i], bool(terminated[i] or truncated[i])
        if decision_done or ended:
            tally.total_return += float(reward[i])
            tally.speeds.append(float(vehicles[0, 2]))
        if ended:
            tally.terminated, tally.truncated = bool(terminated[i]), bool(truncated[i])
            tally.collided, tally.crash = bool(vehicles[0, 5]), crash_kind_of(vehicles)
        else:
            still.append(i)
    return np.asarray(still, dtype=np.int64)


def result_of(tally: Tally, policy) -> EpisodeResult:
    return EpisodeResult(
        seed=tally.seed, steps=len(tally.actions), collided=tally.collided,
        truncated=tally.truncated or not tally.terminated, total_return=tally.total_return,
        speeds=tuple(tally.speeds), actions=tuple(tally.actions), crash=tally.crash,
        **policy_stats(policy))
