"""Collect stage (`drivecast iterate`, round k >= 1): episodes driven by round k-1's planner,
or with `iterate.collector: actor` by round k-1's actor.

Inputs: round k-1's export (`planner.onnx` + sidecar) and actor (`actor.onnx` + sidecar).
The stage runs with its round's config (pipeline/iterate.py `round_config`:
`iterate.rounds = k + 1`, the shortest loop that ends with round k), so its key covers the
round, the exploration settings (`iterate`), the environment (`ingest`) and the planner's
decision and evaluation settings (`simulate`).

The planner explores (evaluation/exploration.py: `iterate.epsilon`, `iterate.top_k`) and keeps
its reality check and rule-based fallback; the actor explores with `iterate.epsilon`
(pipeline/planner/actor_runtime.py `ExploringActor`). Workers are spawned processes
(`ingest.workers`) that load the ONNX files themselves: no torch on this path.

Writes, resumably like ingest (complete shards of a killed run are kept):
- `dataset/`: the dataset schema; episode ids `k * EPISODE_OFFSET + i`, so they never clash
  with another round's; the manifest's `env_seeds` lists each episode's env seed, none of
  them an evaluation seed (simulate.seed .. simulate.seed + simulate.episodes - 1);
  with `iterate.branches`, each episode is followed by its counterfactual branches
  (evaluation/exploration.py; ids `parent + n * BRANCH_STRIDE`, policy `branch`);
- `episode_stats/shard-*.json`: per episode the planner's surprises (one-step forecast error
  of the neighbours in metres, model vs reality) and its fallback and decision counts.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from pipeline.artifacts import Artifacts, write_json_atomic
from pipeline.config import Backend, Collector, Config
from pipeline.errors import StageError
from pipeline.runner import Stage, StageContext, register
from pipeline.stage_io import DATASET_DIR, PLANNER_FILE, collection_seeds, evaluation_seeds

STATS_DIR = "episode_stats"
EPISODE_OFFSET = 1_000_000  # round k's episode ids start at k * EPISODE_OFFSET


@dataclass(frozen=True)
class PlannerSpec:
    """How a worker builds its exploring planner (picklable: a path and numbers)."""

    onnx_path: str
    seed: int  # the scorer's latent-noise seed (as in simulate)
    threads: int
    risk_weight: float
    uncertainty_weight: float
    risk_budget: float
    surprise_threshold: float
    surprise_patience: int
    epsilon: float
    top_k: int
    branches: int
    branch_steps: int
    actor_path: str = ""  # the ONNX actor that drives instead of the planner ("": planner)


@dataclass(frozen=True)
class PlannedEpisode:
    """index: 0..M-1 within this collection (shard = index // episodes_per_shard);
    episode: the id written to the dataset; env_seed: the env reset seed."""

    index: int
    episode: int
    env_seed: int


def planner_spec(cfg: Config, onnx_path: Path, actor_path: Path | None = None) -> PlannerSpec:
    s = cfg.simulate
    return PlannerSpec(str(onnx_path), cfg.seed, s.threads, s.risk_weight, s.uncertainty_weight,
                       s.risk_budget, s.surprise_threshold, s.surprise_patience,
                       cfg.iterate.epsilon, cfg.iterate.top_k, cfg.iterate.branches,
                       cfg.model.horizon, str(actor_path or ""))


def policy_factory(spec: PlannerSpec):
    """A factory of fresh exploring planners over one load of the ONNX planner, or of
    exploring actors when the spec names an actor (numpy + onnxruntime only)."""
    from evaluation.exploration import ExploringPlanner
    from models.candidates import enumerate_candidates
    from pipeline.planner.actor_runtime import ActorSession, ExploringActor
    from pipeline.planner.scorer import OnnxScorer

    if spec.actor_path:
        session = ActorSession.load(spec.actor_path, spec.threads)
        return lambda: ExploringActor(session, spec.epsilon)
    scorer = OnnxScorer.load(spec.onnx_path, threads=spec.threads, seed=spec.seed)
    candidates = enumerate_candidates(scorer.horizon)
    return lambda: ExploringPlanner(scorer, candidates, epsilon=spec.epsilon, top_k=spec.top_k,
                                    branches=spec.branches, branch_steps=spec.branch_steps,
                                    risk_weight=spec.risk_weight,
                                    uncertainty_weight=spec.uncertainty_weight,
                                    risk_budget=spec.risk_budget,
                                    surprise_threshold=spec.surprise_threshold,
                                    surprise_patience=spec.surprise_patience)


# ---------------------------------------------------------------- which episodes


def round_of(cfg: Config) -> int:
    """The round this stage collects for (it runs with iterate.rounds = round + 1)."""
    return cfg.iterate.rounds - 1


def plan_round(cfg: Config) -> list[PlannedEpisode]:
    k = round_of(cfg)
    seeds = collection_seeds(cfg.seed, k, cfg.iterate.episodes, evaluation_seeds(cfg.simulate))
    return [PlannedEpisode(i, k * EPISODE_OFFSET + i, s) for i, s in enumerate(seeds)]


# ---------------------------------------------------------------- running episodes

def make_worker(env_id: str, env_config: dict, spec: PlannerSpec) -> tuple:
    """(env, exploring planner) of one process."""
    from pipeline.highway_source import make_env

    return make_env(env_id, env_config), policy_factory(spec)()


def run_planned(worker: tuple, plan: PlannedEpisode) -> tuple[int, dict, dict, dict]:
    """(index, frames, steps, stats) of one recorded episode and its branches (if any);
    stats are the planner's."""
    from pipeline.highway_source import record_episode

    env, policy = worker
    frames, steps = record_episode(env, policy, seed=plan.env_seed, episode=plan.episode)
    frames, steps = with_branches(frames, steps, policy.branch_runs, plan.episode)
    return plan.index, frames, steps, episode_stats(plan, policy)


def episode_stats(plan: PlannedEpisode, policy) -> dict:
    """The driver's surprises, fallback steps and decisions in one episode."""
    surprises = [float(x) for x in policy.surprises if np.isfinite(x)]
    return {"episode": plan.episode, "surprises": surprises,
            "fallback_steps": int(policy.fallback_steps), "decisions": int(policy.steps)}


def make_envpool_worker(env_id: str, env_config: dict, spec: PlannerSpec) -> tuple:
    """(EnvPool source, factory of exploring drivers) of one process."""
    from pipeline.envpool_source import EnvpoolSource

    return EnvpoolSource(env_id, env_config), policy_factory(spec)


def run_planned_group(worker: tuple, plans: list[PlannedEpisode]) -> list[tuple]:
    """(index, frames, steps, stats) of each plan, stepped together in one EnvPool batch;
    each episode has its own environment, env seed and driver, so grouping changes nothing."""
    from pipeline.envpool_source import episode_tables, run_batch
    from pipeline.highway_source import policy_name, policy_rng
    from pipeline.planner.batch_planner import BatchPlanner

    source, make = worker
    drivers = [make() for _ in plans]
    for plan, driver in zip(plans, drivers, strict=True):
        driver.reset(policy_rng(plan.env_seed))
    recorder = run_batch(source, [p.env_seed for p in plans], BatchPlanner(source, drivers))
    rows = recorder.frames_by_env()
    return [(plan.index, *episode_tables(recorder, rows[slot], slot, plan.episode,
                                         policy_name(driver), source.simulation_frequency),
             episode_stats(plan, driver))
            for slot, (plan, driver) in enumerate(zip(plans, drivers, strict=True))]


def envpool_pool(cfg: Config, spec: PlannerSpec, local: tuple):
    """`pool(todo)` for collect_shards: the plans in EnvPool batches of `ingest.batch`,
    over `ingest.workers` processes."""
    from pipeline.envpool_source import batches
    from pipeline.rollouts import run_pool

    def pool(todo: list[PlannedEpisode]):
        groups = [[todo[i] for i in chunk] for chunk in batches(len(todo), cfg.ingest.batch)]
        args = (cfg.ingest.env_id, dict(cfg.ingest.env_config), spec)
        for results in run_pool(groups, cfg.ingest.workers, run=run_planned_group,
                                make=make_envpool_worker, make_args=args, local=local):
            yield from results
    return pool


def with_branches(frames: dict, steps: dict, branch_runs: list[tuple[dict, dict]],
                  parent: int) -> tuple[dict, dict]:
    """The episode's tables followed by its branches', each branch under its own id
    (pipeline.dataset `branch_episode`)."""
    from pipeline.dataset import branch_episode, concat_columns

    all_frames, all_steps = [frames], [steps]
    for n, (branch_frames, branch_steps) in enumerate(branch_runs, start=1):
        episode = branch_episode(parent, n)
        all_frames.append(relabelled(branch_frames, episode))
        all_steps.append(relabelled(branch_steps, episode))
    return concat_columns(all_frames, "frames"), concat_columns(all_steps, "steps")


def relabelled(table: dict, episode: int) -> dict:
    """`table` (column arrays) with every row's episode id set to `episode`."""
    return table | {"episode": np.full(len(table["episode"]), episode)}


# ---------------------------------------------------------------- shards


def stats_file(work: Path, shard: int) -> Path:
    from pipeline.dataset import shard_name

    return work / STATS_DIR / f"{shard_name(shard)}.json"


def write_round_shard(work: Path, shard: int, results: list) -> None:
    """The shard's episode stats first, then its Parquet files (which make it complete)."""
    from pipeline.dataset import write_shard
    from pipeline.rollouts import merge_episodes

    results = sorted(results, key=lambda r: r[0])  # the stats file in episode order
    write_json_atomic(stats_file(work, shard), {"episodes": [r[3] for r in results]})
    frames, steps = merge_episodes([r[:3] for r in results])
    write_shard(work / DATASET_DIR, shard, by_episode(frames), by_episode(steps))


def by_episode(table: dict) -> dict:
    """Rows in episode order (the schema's), each episode's rows keeping their order: the
    branches (larger ids) move behind the shard's driven episodes."""
    order = np.argsort(table["episode"], kind="stable")
    return {name: column[order] for name, column in table.items()}


# ---------------------------------------------------------------- figures


def planner_figures(work: Path, shards: range) -> dict[str, float]:
    """Surprise (metres, per checked decision) and fallback share over every episode."""
    episodes = [e for s in shards
                for e in json.loads(stats_file(work, s).read_text())["episodes"]]
    surprises = np.array([x for e in episodes for x in e["surprises"]], dtype=float)
    decisions = sum(e["decisions"] for e in episodes)
    nan = float("nan")
    return {"surprise_mean": float(surprises.mean()) if len(surprises) else nan,
            "surprise_median": float(np.median(surprises)) if len(surprises) else nan,
            "fallback_rate": sum(e["fallback_steps"] for e in episodes) / max(decisions, 1)}


# ---------------------------------------------------------------- the stage


def collection_manifest(cfg: Config, env, plans: list[PlannedEpisode], planner_key: str,
                        policy_name: str, actor_key: str) -> dict:
    """Everything that determines the collected data (compared on resume, kept in the
    manifest): the collect.py settings plus round, episode offset, env seeds, planner and
    actor (the stage keys of their rounds)."""
    from pipeline.rollouts import PolicySpec, collection_settings

    it = cfg.iterate
    policy = PolicySpec(policy_name, it.epsilon, 1.0)
    settings = collection_settings(cfg.ingest.env_id, dict(cfg.ingest.env_config), env, cfg.seed,
                                   it.episodes, it.episodes_per_shard, [policy],
                                   cfg.ingest.backend.value)
    return settings | {"round": round_of(cfg), "episode_offset": round_of(cfg) * EPISODE_OFFSET,
                       "env_seeds": [p.env_seed for p in plans], "top_k": it.top_k,
                       "branches": it.branches, "branch_steps": cfg.model.horizon,
                       "planner": planner_key, "collector": it.collector.value,
                       "actor": actor_key}


def check_timing_of(env, driver) -> None:
    """The env (highway-env's or an EnvpoolSource) must step the driver's decision period."""
    from pipeline.planner.policy import check_period

    frequencies = (env.simulation_frequency, env.policy_frequency)
    try:
        check_period(*frequencies, driver.scorer)
    except ValueError as err:
        raise StageError(f"collect: {err}") from None


def produce(cfg: Config, inputs: Mapping[str, Artifacts], work: Path,
            ctx: StageContext) -> dict[str, float]:
    """Collect `iterate.episodes` planner-driven episodes into `work/dataset`."""
    from pipeline.rollouts import collect_shards, num_shards, run_pool

    start, it, onnx_path = time.perf_counter(), cfg.iterate, inputs["export"].path / PLANNER_FILE
    env_id, env_config = cfg.ingest.env_id, dict(cfg.ingest.env_config)
    spec = planner_spec(cfg, onnx_path, collecting_actor(cfg, inputs["actor"]))
    envpool = cfg.ingest.backend is Backend.envpool
    worker = (make_envpool_worker if envpool else make_worker)(env_id, env_config, spec)
    driver = worker[1]() if envpool else worker[1]
    check_timing_of(worker[0], driver)
    plans = plan_round(cfg)
    settings = collection_manifest(cfg, worker[0], plans, inputs["export"].key,
                                   driver.name, inputs["actor"].key)
    pool = envpool_pool(cfg, spec, worker) if envpool else partial(
        run_pool, workers=cfg.ingest.workers, run=run_planned, make=make_worker,
        make_args=(env_id, env_config, spec), local=worker)
    stats = collect_shards(work / DATASET_DIR, settings, plans, it.episodes_per_shard, pool,
                           partial(write_round_shard, work), progress=True, start=start)
    if not envpool:
        worker[0].close()
    shards = range(num_shards(it.episodes, it.episodes_per_shard))
    return {"round": round_of(cfg), **stats.summary(), **planner_figures(work, shards)}


def collecting_actor(cfg: Config, actor: Artifacts) -> Path | None:
    """The previous round's ONNX actor when the actor collects, else None."""
    from pipeline.planner.actor_runtime import ACTOR_FILE

    if cfg.iterate.collector is not Collector.actor:
        return None
    path = actor.path / ACTOR_FILE
    if not path.is_file():
        raise StageError(f"collect: iterate.collector=actor, but {actor.path} holds no "
                         f"{ACTOR_FILE}; rerun its actor stage with --force")
    return path


def check(cfg: Config) -> None:
    """Refuse iterate settings that would only fail inside a round."""
    from pipeline.windows import split_episodes

    it = cfg.iterate
    if cfg.ingest.source != "highway":
        raise StageError(f"iterate collects in the simulator: ingest.source must be highway, "
                         f"got '{cfg.ingest.source}'")
    if it.rounds < 1 or it.epochs < 1 or it.episodes_per_shard < 1 or it.top_k < 1:
        raise StageError(f"iterate.rounds, epochs, episodes_per_shard and top_k must be at "
                         f"least 1, got {it.rounds}, {it.epochs}, {it.episodes_per_shard}, "
                         f"{it.top_k}")
    if it.branches < 0:
        raise StageError(f"iterate.branches must be >= 0, got {it.branches}")
    if it.branches and cfg.ingest.backend is Backend.envpool:
        raise StageError("iterate.branches drive candidates on highway-env copies; with "
                         "ingest.backend=envpool set iterate.branches=0")
    if it.collector is Collector.actor and (cfg.actor.epochs == 0 or it.branches):
        raise StageError("iterate.collector=actor needs an actor (actor.epochs > 0) and no "
                         f"branches (iterate.branches=0), got {cfg.actor.epochs} epochs and "
                         f"{it.branches} branches")
    if not 0.0 <= it.epsilon <= 1.0 or it.lr < 0:
        raise StageError(f"iterate.epsilon must be in [0, 1] and iterate.lr >= 0, got "
                         f"{it.epsilon}, {it.lr}")
    try:  # each collected dataset is split into train/val/test episodes on its own
        split_episodes(np.arange(max(it.episodes, 1)), cfg.train.val_fraction,
                       cfg.train.test_fraction, cfg.seed)
    except ValueError:
        raise StageError(f"iterate.episodes ({it.episodes}) is too few to split into train, "
                         f"val and test episodes; raise it") from None


STAGE = register(Stage("collect", sections=("iterate", "ingest", "simulate"),
                       inputs=("export", "actor"),
                       produce=produce, resumable=lambda cfg: True, check=check))
