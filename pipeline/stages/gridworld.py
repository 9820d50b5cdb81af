"""Gridworld stage: the counting world-model example, tracked like the driving stages."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from pipeline.artifacts import Artifacts
from pipeline.config import Config
from pipeline.runner import Stage, StageContext, register


def produce(cfg: Config, inputs: Mapping[str, Artifacts], work: Path,
            ctx: StageContext) -> Mapping[str, float]:
    from pipeline.gridworld import run_gridworld

    def log_metric(name: str, value: float, step: int) -> None:
        ctx.log_metrics({name: value}, step=step)

    return run_gridworld(cfg.gridworld, work, log_metric=log_metric)


STAGE = register(Stage("gridworld", sections=("gridworld",), inputs=(), produce=produce))
