"""`drivecast bench NAME`: benchmarks that print their figures as ratios to a baseline
measured in the same run."""

from __future__ import annotations

from collections.abc import Callable

from pipeline.config import Config


def ingest(cfg: Config) -> dict[str, float]:
    """Recording overhead vs bare highway-env, and 2 workers vs 1."""
    from pipeline.bench_ingest import bench_ingest

    return bench_ingest(env_id=cfg.ingest.env_id, seed=cfg.seed)


BENCHMARKS: dict[str, Callable[[Config], dict[str, float]]] = {"ingest": ingest}
