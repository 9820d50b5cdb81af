"""Ingest stage: record a trajectory dataset from highway-env with behaviour policies
(`ingest.source: highway`), or read recorded trajectories (`recorded`, pipeline/recorded.py)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from pipeline.artifacts import Artifacts
from pipeline.config import Config, IngestConfig
from pipeline.errors import StageError
from pipeline.runner import Stage, StageContext

DATASET_DIR = "dataset"


def produce(cfg: Config, inputs: Mapping[str, Artifacts], work: Path,
            ctx: StageContext) -> dict[str, float]:
    """Collect `ingest.episodes` episodes into `work/dataset` (finished shards are kept),
    or convert the recorded files of `ingest.recorded` (not resumable: the runner hands
    it an empty working directory)."""
    if cfg.ingest.source == "recorded":
        from pipeline.recorded import ingest_recorded

        return ingest_recorded(work / DATASET_DIR, cfg.ingest.recorded, cfg.seed)
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
    return stats.summary()


def check_ingest_config(ingest: IngestConfig) -> None:
    """Refuse values that would only fail deep inside a worker (or, for recorded data, after
    reading a large file): the recorded mapping is checked against every file's header."""
    if ingest.source == "recorded":
        from pipeline.recorded import check_recorded

        check_recorded(ingest.recorded)
        return
    from pipeline.collect import check_policies
    from pipeline.highway_source import check_env_config, check_env_id

    if ingest.source != "highway":
        raise StageError(f"ingest.source '{ingest.source}' is not known (known: highway, "
                         f"recorded)")
    if ingest.episodes < 1:
        raise StageError(f"ingest.episodes must be at least 1, got {ingest.episodes}")
    try:
        check_policies([(p.name, p.epsilon, p.weight) for p in ingest.policies])
        check_env_id(ingest.env_id)
        check_env_config(ingest.env_id, dict(ingest.env_config))
    except ValueError as err:
        raise StageError(f"ingest: {err}") from None


def dataset_path(ingest: Artifacts) -> Path:
    return ingest.path / DATASET_DIR


# Simulator collection keeps a killed run's complete shards; recorded data starts afresh.
STAGE = Stage("ingest", sections=("ingest",), inputs=(), produce=produce,
              resumable=lambda cfg: cfg.ingest.source == "highway",
              check=lambda cfg: check_ingest_config(cfg.ingest))
