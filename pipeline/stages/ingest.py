"""Ingest stage: record a trajectory dataset from highway-env with behaviour policies."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from pipeline.artifacts import Artifacts
from pipeline.config import Config, IngestConfig
from pipeline.errors import StageError
from pipeline.runner import Stage, StageContext

DATASET_DIR = "dataset"
KNOWN_POLICIES = ("idle", "random", "rule")


def produce(cfg: Config, inputs: Mapping[str, Artifacts], work: Path,
            ctx: StageContext) -> dict[str, float]:
    """Collect `ingest.episodes` episodes into `work/dataset` (finished shards are kept)."""
    from pipeline.collect import collect

    stats = collect(
        work / DATASET_DIR,
        env_id=cfg.ingest.env_id,
        env_config=cfg.ingest.env_config,
        policies=[(p.name, p.epsilon, p.weight) for p in cfg.ingest.policies],
        episodes=cfg.ingest.episodes,
        seed=cfg.seed,
        workers=cfg.ingest.workers,
        episodes_per_shard=cfg.ingest.episodes_per_shard,
    )
    return stats_summary(stats)


def stats_summary(stats) -> dict[str, float]:
    summary = {
        "episodes": stats.episodes,
        "steps": stats.steps,
        "frames": stats.frames,
        "collision_rate": stats.collision_rate,
        "steps_per_s": stats.steps_per_s,
    }
    for policy, rate in stats.collision_rate_by_policy.items():
        summary[f"collision_rate/{policy}"] = rate
    return summary


def check_ingest_config(ingest: IngestConfig) -> None:
    """Refuse values that would only fail deep inside a worker."""
    if ingest.source != "highway":
        raise StageError(f"ingest.source '{ingest.source}' is not known (known: highway)")
    if ingest.episodes < 1:
        raise StageError(f"ingest.episodes must be at least 1, got {ingest.episodes}")
    if not ingest.policies:
        raise StageError("ingest.policies is empty: name at least one behaviour policy")
    for i, policy in enumerate(ingest.policies):
        if policy.name not in KNOWN_POLICIES:
            raise StageError(f"ingest.policies[{i}].name '{policy.name}' is not one of "
                             f"{', '.join(KNOWN_POLICIES)}")
        if not 0.0 <= policy.epsilon <= 1.0 or policy.weight <= 0:
            raise StageError(f"ingest.policies[{i}] needs 0 <= epsilon <= 1 and weight > 0")
    check_env_config(ingest.env_id, ingest.env_config)


def check_env_config(env_id: str, env_config: Mapping) -> None:
    """The env id must be a highway-env id and every override one of its config keys."""
    from pipeline.highway_source import check_env_config as check_keys
    from pipeline.highway_source import check_env_id

    try:
        check_env_id(env_id)
        check_keys(env_id, dict(env_config))
    except ValueError as err:
        raise StageError(f"ingest: {err}") from None


def dataset_path(ingest: Artifacts) -> Path:
    return ingest.path / DATASET_DIR


STAGE = Stage("ingest", sections=("ingest",), inputs=(), produce=produce,
              resumable=lambda cfg: True, check=lambda cfg: check_ingest_config(cfg.ingest))
