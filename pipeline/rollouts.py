"""Collect a highway-env dataset with a mixture of behaviour policies, in parallel, resumably.

Determinism: episode i's env seed and behaviour policy come from
``SeedSequence(seed, spawn_key=(i,))`` only, and shard s always holds episodes
[s * episodes_per_shard, (s + 1) * episodes_per_shard), so the files are identical whatever
the worker count or the order in which workers finish.

Resume: ``dataset.json`` is written first with ``complete: false`` and the collection
settings; a rerun with the same settings keeps every complete shard (both files present)
and only runs the episodes of the missing ones. The manifest gets its shard list and
``complete: true`` at the end.
"""

from __future__ import annotations

import json
import multiprocessing
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from evaluation.batch_policies import BatchPolicy
from evaluation.policies import make_policy
from pipeline.dataset import (
    BRANCH_POLICY,
    MANIFEST_NAME,
    SCHEMA_VERSION,
    complete_shards,
    remove_temp_files,
    shard_entry,
    shard_files,
    write_manifest,
    write_shard,
)
from pipeline.envpool_source import EnvpoolSource, batches, episode_tables, run_batch
from pipeline.highway_source import make_env, policy_name, policy_rng, record_episode


@dataclass(frozen=True)
class PolicySpec:
    """One behaviour policy of the mixture: ``make_policy(name, epsilon)`` drawn with ``weight``."""

    name: str
    epsilon: float = 0.0
    weight: float = 1.0


@dataclass(frozen=True)
class EpisodePlan:
    episode: int
    env_seed: int
    policy: PolicySpec


@dataclass(frozen=True)
class CollectStats:
    """Figures of a collected dataset (totals over all its shards, reused ones included).

    episodes and collision_rate (fraction in which the ego crashed) count the driven
    episodes, not counterfactual branches (`branch_episodes`; their rate is under the policy
    name BRANCH_POLICY in collision_rate_by_policy). steps (all decisions, branches' too)
    and steps_per_s: decisions collected by this call / elapsed [s].
    """

    episodes: int
    steps: int
    frames: int
    collision_rate: float
    collision_rate_by_policy: dict[str, float] = field(default_factory=dict)
    steps_per_s: float = 0.0
    elapsed: float = 0.0
    episodes_collected: int = 0
    shards_reused: int = 0
    branch_episodes: int = 0

    def summary(self) -> dict[str, float]:
        """Flat ``name: number`` figures, per-policy rates as ``collision_rate/<policy>``."""
        flat = {k: v for k, v in asdict(self).items() if k != "collision_rate_by_policy"}
        flat.update({f"collision_rate/{k}": v for k, v in self.collision_rate_by_policy.items()})
        return flat


# ---------------------------------------------------------------- planning


def check_policies(policies: Sequence) -> list[PolicySpec]:
    """(name, epsilon, weight) tuples -> PolicySpecs; refuses bad names and weights."""
    if not policies:
        raise ValueError("policies is empty; give at least one (name, epsilon, weight)")
    specs = [p if isinstance(p, PolicySpec) else PolicySpec(*p) for p in policies]
    specs = [PolicySpec(str(p.name), float(p.epsilon), float(p.weight)) for p in specs]
    for spec in specs:
        make_policy(spec.name, spec.epsilon)  # raises for an unknown name or bad epsilon
        if not spec.weight > 0:
            raise ValueError(f"policy '{spec.name}' has weight {spec.weight}; weights must be > 0")
    return specs


def plan_episode(seed: int, episode: int, policies: list[PolicySpec]) -> EpisodePlan:
    """Env seed and behaviour policy of one episode, from (seed, episode) alone."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(episode,)))
    weights = np.array([p.weight for p in policies], dtype=np.float64)
    choice = int(rng.choice(len(policies), p=weights / weights.sum()))
    return EpisodePlan(episode, int(rng.integers(2**31 - 1)), policies[choice])


def shard_episodes(shard: int, episodes: int, episodes_per_shard: int) -> range:
    return range(shard * episodes_per_shard, min((shard + 1) * episodes_per_shard, episodes))


def num_shards(episodes: int, episodes_per_shard: int) -> int:
    return -(-episodes // episodes_per_shard)


# ---------------------------------------------------------------- running episodes

_WORKER_STATE = None  # what `make(*make_args)` built in this worker process


def run_plan(env, plan: EpisodePlan) -> tuple[int, dict, dict]:
    policy = make_policy(plan.policy.name, plan.policy.epsilon)
    frames, steps = record_episode(env, policy, seed=plan.env_seed, episode=plan.episode)
    return plan.episode, frames, steps


def run_envpool(source: EnvpoolSource, plans: list[EpisodePlan], batch: int,
                workers: int) -> Iterator:
    """Yield ``(episode, frames, steps)`` of each plan, run on EnvPool in groups of at most
    ``batch`` episodes spread over ``workers`` processes; each episode runs in an
    environment of its own seeded with its env seed, so grouping changes nothing."""
    size = max(1, min(batch, -(-len(plans) // max(workers, 1))))
    groups = [[plans[i] for i in chunk] for chunk in batches(len(plans), size)]
    args = (source.env_id, source.env_config)
    for results in run_pool(groups, workers, run=run_group, make=EnvpoolSource, make_args=args,
                            local=source):
        yield from results


def run_group(source: EnvpoolSource, group: list[EpisodePlan]) -> list[tuple[int, dict, dict]]:
    """One EnvPool batch: ``(episode, frames, steps)`` of each plan of `group`."""
    policies = []
    for plan in group:
        policy = make_policy(plan.policy.name, plan.policy.epsilon)
        policy.reset(policy_rng(plan.env_seed))
        policies.append(policy)
    recorder = run_batch(source, [p.env_seed for p in group], BatchPolicy(policies))
    frames = recorder.frames_by_env()
    return [
        (plan.episode, *episode_tables(recorder, frames[slot], slot, plan.episode,
                                       policy_name(policy), source.simulation_frequency))
        for slot, (plan, policy) in enumerate(zip(group, policies, strict=True))
    ]


def _init_worker(make: Callable, make_args: tuple) -> None:
    global _WORKER_STATE
    _WORKER_STATE = make(*make_args)


def _run_in_worker(run: Callable, item):
    return run(_WORKER_STATE, item)


def run_pool(items: list, workers: int, run: Callable, make: Callable, make_args: tuple,
             local=None) -> Iterator:
    """Yield ``run(state, item)`` for each item, in completion order. ``state`` is built once
    per process by ``make(*make_args)`` (module-level functions: they are pickled); with one
    worker (or one item) everything runs here, on ``local`` if given."""
    if workers <= 1 or len(items) <= 1:
        state = local if local is not None else make(*make_args)
        yield from (run(state, item) for item in items)
        return
    context = multiprocessing.get_context("spawn")  # the parent may hold torch threads
    with context.Pool(min(workers, len(items)), initializer=_init_worker,
                      initargs=(make, make_args)) as pool:
        yield from pool.imap_unordered(partial(_run_in_worker, run), items, chunksize=1)


# ---------------------------------------------------------------- shards and manifest


def merge_episodes(results: list[tuple[int, dict, dict]]) -> tuple[dict, dict]:
    """Concatenate per-episode columns in episode order."""
    results = sorted(results, key=lambda r: r[0])
    frames = {k: np.concatenate([r[1][k] for r in results]) for k in results[0][1]}
    steps = {k: np.concatenate([r[2][k] for r in results]) for k in results[0][2]}
    return frames, steps


def collection_settings(env_id, env_config, env, seed, episodes, episodes_per_shard, specs,
                        backend="highway-env"):
    """Everything that determines the dataset's content (compared on resume)."""
    settings = {
        "schema_version": SCHEMA_VERSION,
        "backend": backend,
        "env_id": env_id,
        "env_config": env_config,
        "simulation_frequency": env.simulation_frequency,
        "policy_frequency": env.policy_frequency,
        "seed": int(seed),
        "episodes": int(episodes),
        "episodes_per_shard": int(episodes_per_shard),
        "policies": [asdict(spec) for spec in specs],
    }
    return json.loads(json.dumps(settings))  # normalise tuples etc. as the manifest stores them


def prepare_out_dir(out_dir: Path, settings: dict) -> None:
    """Check that out_dir is empty of data or holds this same collection; mark it incomplete."""
    manifest_path = out_dir / MANIFEST_NAME
    if manifest_path.exists():
        old = json.loads(manifest_path.read_text())
        for key, value in settings.items():
            if old.get(key) != value:
                raise ValueError(
                    f"{manifest_path}: holds a dataset collected with another {key} "
                    f"({old.get(key)!r}, now {value!r}); use a fresh out_dir"
                )
    elif complete_shards(out_dir):
        raise ValueError(
            f"{out_dir}: holds shard files but no {MANIFEST_NAME}; use a fresh out_dir"
        )
    remove_temp_files(out_dir)
    save_manifest(out_dir, settings, shards=[], complete=False)


def save_manifest(out_dir: Path, settings: dict, shards: list[dict], complete: bool) -> None:
    fields = ("env_id", "env_config", "simulation_frequency", "policy_frequency")
    header = {key: settings[key] for key in fields}
    extra = {k: v for k, v in settings.items() if k not in fields and k != "schema_version"}
    write_manifest(out_dir, shards=shards, complete=complete, **header, **extra)


def read_shard_summary(out_dir: Path, shard: int) -> tuple[dict, dict]:
    """(manifest entry, steps columns episode/collision/policy) of a written shard."""
    frames_path, steps_path = shard_files(out_dir, shard)
    steps = pq.read_table(steps_path, columns=["episode", "collision", "policy"])
    columns = {
        name: steps.column(name).to_numpy(zero_copy_only=False) for name in steps.column_names
    }
    entry = shard_entry(shard, columns["episode"], pq.ParquetFile(frames_path).metadata.num_rows)
    return entry, columns


def dataset_stats(entries: list[dict], steps: list[dict], elapsed: float, new_steps: int, **kw):
    episode = np.concatenate([s["episode"] for s in steps])
    collision = np.concatenate([s["collision"] for s in steps])
    policy = np.concatenate([s["policy"] for s in steps]).astype(str)
    crashed = defaultdict(bool)
    names = {}
    for e, c, p in zip(episode, collision, policy, strict=True):
        crashed[int(e)] |= bool(c)
        names[int(e)] = p
    by_policy = defaultdict(list)
    for e, p in names.items():
        by_policy[p].append(crashed[e])
    driven = [crashed[e] for e, p in names.items() if p != BRANCH_POLICY]
    return CollectStats(
        episodes=len(driven),
        steps=len(episode),
        frames=sum(entry["num_frames"] for entry in entries),
        collision_rate=float(np.mean(driven)) if driven else 0.0,
        collision_rate_by_policy={str(p): float(np.mean(v)) for p, v in sorted(by_policy.items())},
        steps_per_s=new_steps / elapsed if elapsed > 0 else 0.0,
        elapsed=elapsed,
        branch_episodes=len(names) - len(driven),
        **kw,
    )


# ---------------------------------------------------------------- progress


class Progress:
    """tqdm bar on stderr counting episodes, with steps/s as postfix (no-op when disabled)."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.bar, self.steps, self.start = None, 0, time.perf_counter()
        if enabled and total:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="ep", desc="collect", file=sys.stderr)

    def update(self, steps: int) -> None:
        self.steps += steps
        if self.bar is not None:
            rate = self.steps / max(time.perf_counter() - self.start, 1e-9)
            self.bar.set_postfix_str(f"{rate:.1f} steps/s", refresh=False)
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# ---------------------------------------------------------------- entry point


def check_counts(episodes: int, workers: int, episodes_per_shard: int) -> None:
    for name, value in (("episodes", episodes), ("workers", workers),
                        ("episodes_per_shard", episodes_per_shard)):  # fmt: skip
        if int(value) != value or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


def collect(
    out_dir: str | Path,
    env_id: str,
    env_config: dict,
    policies: Sequence,
    episodes: int,
    seed: int,
    workers: int = 1,
    episodes_per_shard: int = 4,
    progress: bool = True,
    backend: str = "highway-env",
    batch: int = 64,
) -> CollectStats:
    """Record ``episodes`` episodes into the dataset directory ``out_dir`` (resumable).

    policies: (name, epsilon, weight) tuples or PolicySpecs; each episode draws one with
    probability proportional to weight. backend: ``highway-env`` or ``envpool`` (``batch``
    episodes stepped together). workers: processes ("spawn" context). The dataset is
    identical for any worker count and batch size.
    """
    check_counts(episodes, workers, episodes_per_shard)
    specs, start = check_policies(policies), time.perf_counter()
    env_config = dict(env_config or {})
    out_dir = Path(out_dir)
    plans = [plan_episode(seed, episode, specs) for episode in range(episodes)]
    if backend == "envpool":
        env = EnvpoolSource(env_id, env_config)  # refuses a bad id/config
        pool = partial(run_envpool, env, batch=batch, workers=workers)
    elif backend == "highway-env":
        env = make_env(env_id, env_config)  # refuses a bad id/config before any file is written
        pool = partial(run_pool, workers=workers, run=run_plan, make=make_env,
                       make_args=(env_id, env_config), local=env)
    else:
        raise ValueError(f"unknown backend '{backend}'; choose highway-env or envpool")
    settings = collection_settings(
        env_id, env_config, env, seed, episodes, episodes_per_shard, specs, backend
    )
    return collect_shards(
        out_dir, settings, plans, episodes_per_shard, pool,
        lambda shard, done: write_shard(out_dir, shard, *merge_episodes(done)), progress, start,
    )


def collect_shards(out_dir: Path, settings: dict, items: list, episodes_per_shard: int,
                   pool: Callable[[list], Iterable], write: Callable[[int, list], None],
                   progress: bool, start: float) -> CollectStats:
    """The resumable collection shared by ingest and `drivecast iterate`'s collect stage.

    items: one per episode of the collection (index i goes to shard i // episodes_per_shard);
    `out_dir` is checked against `settings` and marked incomplete, the items of the shards
    not yet complete are run by ``pool(todo)`` (yielding ``(index, frames, steps, ...)``),
    each shard is written by ``write(shard, results)`` once all of its episodes are in, and
    the manifest is marked complete with every shard. ``start``: perf_counter at the start.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    prepare_out_dir(out_dir, settings)
    shards = range(num_shards(len(items), episodes_per_shard))
    reused = set(complete_shards(out_dir)) & set(shards)
    todo = [items[i] for shard in shards if shard not in reused
            for i in shard_episodes(shard, len(items), episodes_per_shard)]
    new_steps = write_results(pool(todo), len(todo), len(items), episodes_per_shard, write,
                              progress)
    summaries = [read_shard_summary(out_dir, shard) for shard in shards]
    entries = [entry for entry, _ in summaries]
    save_manifest(out_dir, settings, entries, complete=True)
    return dataset_stats(entries, [s for _, s in summaries], time.perf_counter() - start,
                         new_steps, episodes_collected=len(todo), shards_reused=len(reused))


def write_results(results: Iterable, todo: int, episodes: int, episodes_per_shard: int,
                  write: Callable[[int, list], None], progress: bool) -> int:
    """Consume ``todo`` results ``(index, frames, steps, ...)`` of a collection of ``episodes``
    and call ``write(shard, results)`` as soon as all of a shard's episodes are in; returns
    the decisions recorded."""
    pending: dict[int, list] = defaultdict(list)
    bar, total_steps = Progress(todo, progress), 0
    try:
        for result in results:
            shard, steps = result[0] // episodes_per_shard, len(result[2]["step"])
            pending[shard].append(result)
            total_steps += steps
            bar.update(steps)
            if len(pending[shard]) == len(shard_episodes(shard, episodes, episodes_per_shard)):
                write(shard, pending.pop(shard))
    finally:
        bar.close()
    return total_steps
