"""Ingest stage: record a trajectory dataset from highway-env with behaviour policies
(`ingest.source: highway`), or read recorded trajectories (`recorded`,
pipeline/recorded/)."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path

from pipeline.artifacts import Artifacts
from pipeline.config import Config
from pipeline.dataset import file_sha256
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


def recorded_content(cfg: Config) -> dict:
    """The content of the recorded files (sha256 by file name), part of the stage key, so
    a recording edited in place is ingested afresh instead of reusing the old dataset."""
    if cfg.ingest.source != "recorded":
        return {}
    from pipeline.recorded.mapping import highd_meta_path, recording_files

    files = recording_files(cfg.ingest.recorded.path, cfg.ingest.recorded.preset)
    if cfg.ingest.recorded.preset == "highd":
        files += [m for m in map(highd_meta_path, files) if m.is_file()]
    return {"recorded_sha256": {str(path): content_sha256(path) for path in sorted(files)}}


@functools.cache
def _sha256(path: Path, size: int, mtime_ns: int) -> str:
    return file_sha256(path)


def content_sha256(path: Path) -> str:
    """sha256 of a file's bytes, computed once per process for an unchanged file."""
    stat = path.stat()
    return _sha256(path.resolve(), stat.st_size, stat.st_mtime_ns)


# Simulator collection keeps a killed run's complete shards; recorded data starts afresh.
STAGE = register(Stage("ingest", sections=("ingest",), inputs=(), produce=produce,
                       resumable=lambda cfg: cfg.ingest.source == "highway",
                       check=lambda cfg: check_ingest_config(cfg.ingest),
                       extra_key=recorded_content))
