"""Ingest stage: record a trajectory dataset from highway-env with behaviour policies
(`ingest.source: highway`), or read recorded trajectories (`recorded`,
pipeline/recorded/)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from pipeline.artifacts import Artifacts
from pipeline.config import Config
from pipeline.runner import Stage, StageContext, register
from pipeline.stage_io import DATASET_DIR, check_ingest_config


def produce(cfg: Config, inputs: Mapping[str, Artifacts], work: Path,
            ctx: StageContext) -> dict[str, float]:
    """Collect `ingest.episodes` episodes into `work/dataset` (finished shards are kept),
    or convert the recorded files of `ingest.recorded` (not resumable: the runner hands
    it an empty working directory)."""
    if cfg.ingest.source == "recorded":
        from pipeline.recorded import ingest_recorded

        return ingest_recorded(work / DATASET_DIR, cfg.ingest.recorded, cfg.seed)
    from pipeline.rollouts import collect

    stats = collect(
        work / DATASET_DIR,
        env_id=cfg.ingest.env_id,
        env_config=cfg.ingest.env_config,
        policies=[(p.name, p.epsilon, p.weight) for p in cfg.ingest.policies],
        episodes=cfg.ingest.episodes,
        seed=cfg.seed,
        workers=cfg.ingest.workers,
        episodes_per_shard=cfg.ingest.episodes_per_shard,
        backend=cfg.ingest.backend.value,
        batch=cfg.ingest.batch,
    )
    return stats.summary()


# Simulator collection keeps a killed run's complete shards; recorded data starts afresh.
STAGE = register(Stage("ingest", sections=("ingest",), inputs=(), produce=produce,
                       resumable=lambda cfg: cfg.ingest.source == "highway",
                       check=lambda cfg: check_ingest_config(cfg.ingest)))
