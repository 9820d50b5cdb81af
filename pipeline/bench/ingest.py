"""Benchmark of ingestion: recorder overhead and multi-worker speed-up of ``collect``.

(a) the same seeds and the same action sequences are replayed on a bare highway-env env
    (gym.make, no recorder) and on ``make_env``'s RecordingEnv through ``record_episode``
    (recording every frame and building the column arrays); the ratio of steps/s is the
    recording overhead.
(b) ``collect`` runs the same episodes with 1 and with 2 workers into temp dirs.
(c) the EnvPool backend: ``collect`` records ``envpool_episodes`` episodes of the same
    policy with 1 and with 2 workers; its decisions/s are compared with (b)'s highway-env
    collection on one worker (decisions/s is frames/s over the frames per decision).

Run: ``python -m pipeline.bench.ingest [--episodes N]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import gymnasium as gym
import numpy as np

from evaluation.policies import make_policy
from pipeline.highway_source import make_env, record_episode
from pipeline.rollouts import collect


class ReplayPolicy:
    """Plays back a fixed list of actions (one list per episode)."""

    name = "replay"

    def __init__(self, actions: list[int]) -> None:
        self.actions, self.index = actions, 0

    def reset(self, rng=None) -> None:
        self.index = 0

    def act(self, env) -> int:
        action = self.actions[self.index]
        self.index += 1
        return action


def reference_actions(env_id: str, env_config: dict, seeds: list[int]) -> list[list[int]]:
    """Action sequences of an epsilon-rule policy on each seed (fixed before timing)."""
    env = make_env(env_id, env_config)
    policy = make_policy("rule", 0.2)
    return [
        record_episode(env, policy, seed, i)[1]["action"].tolist() for i, seed in enumerate(seeds)
    ]


def time_bare(env_id: str, env_config: dict, seeds: list[int], actions: list[list[int]]) -> float:
    """Steps/s of plain highway-env stepping on the given seeds and actions."""
    env = gym.make(env_id, config=dict(env_config), disable_env_checker=True)
    start, steps = time.perf_counter(), 0
    for seed, sequence in zip(seeds, actions, strict=True):
        env.reset(seed=seed)
        for action in sequence:
            env.step(action)
            steps += 1
    return steps / (time.perf_counter() - start)


def time_recorded(env_id: str, env_config: dict, seeds: list[int], actions: list[list[int]]):
    """Steps/s of record_episode (recorder + column arrays) on the same seeds and actions."""
    env = make_env(env_id, env_config)
    start, steps = time.perf_counter(), 0
    for i, (seed, sequence) in enumerate(zip(seeds, actions, strict=True)):
        _, table = record_episode(env, ReplayPolicy(sequence), seed, i, max_steps=len(sequence))
        steps += len(table["step"])
    return steps / (time.perf_counter() - start)


def time_collect(env_id: str, env_config: dict, episodes: int, seed: int, workers: int,
                 backend: str = "highway-env") -> float:
    """Steps/s of a full ``collect`` (process start-up included) with ``workers`` workers."""
    with tempfile.TemporaryDirectory() as out_dir:
        stats = collect(out_dir, env_id, env_config, [("rule", 0.2, 1.0)], episodes, seed,
                        workers=workers, episodes_per_shard=max(2, episodes // 16),
                        progress=False, backend=backend)  # fmt: skip
    return stats.steps / stats.elapsed


def envpool_figures(env_id: str, env_config: dict, episodes: int, seed: int,
                    highway_env: float) -> dict[str, float]:
    """EnvPool's collection on 1 and 2 workers against highway-env's on one (steps/s)."""
    one = time_collect(env_id, env_config, episodes, seed, 1, "envpool")
    two = time_collect(env_id, env_config, episodes, seed, 2, "envpool")
    return {"envpool_1_worker_steps_per_s": one, "envpool_2_workers_steps_per_s": two,
            "envpool_speedup_vs_highway_env": one / highway_env,
            "envpool_speedup_2_workers": two / one}


def bench_ingest(
    env_id: str = "highway-fast-v0",
    episodes: int = 8,
    seed: int = 0,
    env_config: dict | None = None,
    envpool_episodes: int = 4000,
) -> dict:
    """Measure recorder overhead, the 2-worker collect speed-up and EnvPool's collection
    (skipped for an env id EnvPool lacks); print and return the figures."""
    from pipeline.envpool_source import envpool_runs

    env_config = dict(env_config or {})
    seeds = [int(s) for s in np.random.default_rng(seed).integers(2**31 - 1, size=episodes)]
    actions = reference_actions(env_id, env_config, seeds)
    bare = time_bare(env_id, env_config, seeds, actions)
    recorded = time_recorded(env_id, env_config, seeds, actions)
    one = time_collect(env_id, env_config, episodes, seed, workers=1)
    two = time_collect(env_id, env_config, episodes, seed, workers=2)
    figures = {
        "bare_steps_per_s": bare,
        "recorded_steps_per_s": recorded,
        "recording_slowdown": bare / recorded,
        "collect_1_worker_steps_per_s": one,
        "collect_2_workers_steps_per_s": two,
        "speedup_2_workers": two / one,
        "steps": float(sum(len(a) for a in actions)),
    }
    if envpool_runs(env_id, env_config):
        figures |= envpool_figures(env_id, env_config, envpool_episodes, seed, one)
    print_table(figures)
    return figures


def print_table(figures: dict) -> None:
    width = max(len(name) for name in figures)
    print(f"{'figure':<{width}}  value")
    for name, value in figures.items():
        print(f"{name:<{width}}  {value:10.2f}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env-id", default="highway-fast-v0")
    parser.add_argument("--episodes", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    bench_ingest(args.env_id, args.episodes, args.seed)


if __name__ == "__main__":
    main()
