"""Benchmark of the simulator backends: EnvPool's native highway against highway-env.

(a) speed: ``collect`` records rule-policy episodes (epsilon 0.2) with each backend on one
    worker, and EnvPool on two; figures are decisions recorded per second, as ratios to
    highway-env's.
(b) alignment: each behaviour policy drives episodes on both simulators (recorded through
    ``collect``, so the figures are those of the datasets ingest writes): collision rate
    with its 95% Wilson interval, the ego's mean speed and decisions per episode. The two
    simulators agree on a policy where their intervals overlap.
"""

from __future__ import annotations

import tempfile

import numpy as np

from evaluation.metrics import wilson_interval
from pipeline.dataset import read_dataset
from pipeline.rollouts import collect

ALIGNMENT_POLICIES = (("idle", 0.0), ("rule", 0.0), ("rule", 0.2), ("random", 0.0))


def record(env_id: str, env_config: dict, policy: tuple[str, float], episodes: int, seed: int,
           backend: str, workers: int):
    """(CollectStats, Dataset) of `episodes` episodes of one policy, in a temp dir."""
    with tempfile.TemporaryDirectory() as out_dir:
        stats = collect(out_dir, env_id, env_config, [(*policy, 1.0)], episodes, seed,
                        workers=workers, episodes_per_shard=max(1, episodes // 8),
                        progress=False, backend=backend)  # fmt: skip
        return stats, read_dataset(out_dir)


def behaviour(dataset) -> dict[str, float]:
    """Collision rate (and its 95% interval), mean ego speed [m/s] and decisions per episode."""
    steps, frames = dataset.steps, dataset.frames
    episodes = np.unique(steps["episode"])
    crashed = np.unique(steps["episode"][steps["collision"]])
    ego = frames["is_ego"].astype(bool)
    speed = np.hypot(frames["vx"][ego], frames["vy"][ego])
    low, high = wilson_interval(len(crashed), len(episodes))
    return {"episodes": float(len(episodes)), "collision_rate": len(crashed) / len(episodes),
            "collision_low": low, "collision_high": high, "speed": float(speed.mean()),
            "decisions": len(steps["step"]) / len(episodes)}


def speed_figures(env_id: str, env_config: dict, seed: int, highway_episodes: int,
                  envpool_episodes: int) -> dict[str, float]:
    rule = ("rule", 0.2)
    baseline, _ = record(env_id, env_config, rule, highway_episodes, seed, "highway-env", 1)
    one, _ = record(env_id, env_config, rule, envpool_episodes, seed, "envpool", 1)
    two, _ = record(env_id, env_config, rule, envpool_episodes, seed, "envpool", 2)
    return {
        "highway_env_decisions_per_s": baseline.steps_per_s,
        "envpool_decisions_per_s": one.steps_per_s,
        "envpool_vehicle_rows_per_s": one.frames / one.elapsed,
        "envpool_speedup": one.steps_per_s / baseline.steps_per_s,
        "envpool_2_workers_speedup": two.steps_per_s / one.steps_per_s,
    }


def alignment_rows(env_id: str, env_config: dict, seed: int, highway_episodes: int,
                   envpool_episodes: int, workers: int) -> list[dict]:
    rows = []
    for policy in ALIGNMENT_POLICIES:
        for backend, episodes in (("highway-env", highway_episodes),
                                  ("envpool", envpool_episodes)):
            _, dataset = record(env_id, env_config, policy, episodes, seed, backend, workers)
            label = policy[0] if policy[1] == 0 else f"{policy[0]} eps {policy[1]}"
            rows.append({"policy": label, "backend": backend, **behaviour(dataset)})
    return rows


def print_alignment(rows: list[dict]) -> None:
    print(f"{'policy':<14} {'backend':<12} {'episodes':>8}  {'collisions [95% CI]':<22} "
          f"{'speed':>6} {'decisions':>9}")
    for row in rows:
        rate = (f"{100 * row['collision_rate']:5.1f}% [{100 * row['collision_low']:.1f}, "
                f"{100 * row['collision_high']:.1f}]")
        print(f"{row['policy']:<14} {row['backend']:<12} {row['episodes']:>8.0f}  {rate:<22} "
              f"{row['speed']:>6.2f} {row['decisions']:>9.1f}")


def bench_backend(env_id: str = "highway-fast-v0", env_config: dict | None = None,
                  seed: int = 0, highway_episodes: int = 100, envpool_episodes: int = 1000,
                  workers: int = 2) -> dict[str, float]:
    """Print and return the speed figures, then print the alignment table."""
    from pipeline.bench.ingest import print_table

    env_config = dict(env_config or {})
    figures = speed_figures(env_id, env_config, seed, highway_episodes, envpool_episodes)
    print_table(figures)
    rows = alignment_rows(env_id, env_config, seed, highway_episodes, envpool_episodes, workers)
    print()
    print_alignment(rows)
    for row in rows:
        key = f"{row['policy'].replace(' ', '_')}/{row['backend']}"
        figures[f"collision_rate/{key}"] = row["collision_rate"]
        figures[f"speed/{key}"] = row["speed"]
    return figures
