"""What each CLI command does, given its already-parsed arguments."""

from __future__ import annotations

import dataclasses

from pipeline.config import Config, ConfigError, dump_yaml, load_config, reference_markdown, to_dict
from pipeline.runner import check_config, is_ddp_worker, run_until
from pipeline.tracking import Tracker, config_params


def stages(command: str, config_path: str, overrides: list[str], force: bool) -> int:
    """`run` (every stage) or one stage with the stages it depends on."""
    from pipeline.stages import PIPELINE, STAGE_NAMES, simulate

    cfg = load_config(config_path, overrides)
    if is_ddp_worker():
        cfg = dataclasses.replace(cfg, tracking=dataclasses.replace(cfg.tracking, enabled=False))
    target = STAGE_NAMES[-1] if command == "run" else command
    forced = STAGE_NAMES if (force and command == "run") else ([target] if force else [])
    stages = PIPELINE
    if command == "simulate" and cfg.simulate.planner:  # a given planner needs no upstream
        stages = [simulate.STANDALONE]
    check_config(target, stages, cfg)
    tracker = Tracker(cfg)
    with tracker.run(command, _all_params(cfg)):
        tracker.set_tags({"drivecast.command": command, "drivecast.config": str(config_path)})
        run_until(target, stages, cfg, tracker, force=forced)
    return 0


def iterate(config_path: str, overrides: list[str], force: bool) -> int:
    """The model-based loop (pipeline/iterate.py); `force` recomputes every stage."""
    from pipeline.iterate import check_iterate, run_iterate

    cfg = load_config(config_path, overrides)
    check_iterate(cfg)
    tracker = Tracker(cfg)
    with tracker.run("iterate", _all_params(cfg)):
        tracker.set_tags({"drivecast.command": "iterate", "drivecast.config": str(config_path)})
        run_iterate(cfg, tracker, force=force)
    return 0


def replay(config_path: str, overrides: list[str], force: bool) -> int:
    """The stages up to export (reused when complete), then the replay (pipeline/stages/
    replay.py); `force` recomputes the replay only. Prints its table."""
    from pipeline.runner import run_stage
    from pipeline.stages import PIPELINE, REPLAY

    cfg = load_config(config_path, overrides)
    check_config("export", PIPELINE, cfg)
    REPLAY.check(cfg)
    tracker = Tracker(cfg)
    with tracker.run("replay", _all_params(cfg)):
        tracker.set_tags({"drivecast.command": "replay", "drivecast.config": str(config_path)})
        done = run_until("export", PIPELINE, cfg, tracker)
        result = run_stage(REPLAY, cfg, done, tracker, force=force)
    print((result.path / "replay.md").read_text(), end="")
    return 0


def gridworld(config_path: str | None, overrides: list[str], force: bool) -> int:
    from pipeline.runner import run_stage
    from pipeline.stages import GRIDWORLD

    cfg = load_config(config_path, overrides)
    tracker = Tracker(cfg)
    with tracker.run("gridworld"):
        run_stage(GRIDWORLD, cfg, {}, tracker, force=force)
    return 0


def bench(which: str, config_path: str | None, overrides: list[str]) -> int:
    from pipeline.bench import BENCHMARKS

    cfg = load_config(config_path, overrides)
    BENCHMARKS[which](cfg)
    return 0


def config(config_path: str | None, overrides: list[str], reference: bool) -> int:
    """Print the resolved config as YAML, or (`reference`) the Markdown reference of every
    config section and field (docs/configuration.md is its output)."""
    if not reference:
        print(dump_yaml(load_config(config_path, overrides)), end="")
        return 0
    if config_path is not None or overrides:
        raise ConfigError("drivecast config --reference describes every field; it takes no "
                          "config file or overrides")
    print(reference_markdown(), end="")
    return 0


def pictures(config_path: str, overrides: list[str], out: str) -> int:
    """Still frames (PNG) of the pictures of the config's complete evaluate and simulate
    stages (evaluation/example_frames.py), written to `out`; nothing is run. Prints each
    path."""
    from pathlib import Path

    from evaluation.example_frames import write_example_frames
    from pipeline import artifacts
    from pipeline.errors import StageError
    from pipeline.report import pipeline_keys

    cfg = load_config(config_path, overrides)
    stages = pipeline_keys(cfg)
    for name in ("evaluate", "simulate"):
        if not artifacts.is_complete(stages[name].path):
            raise StageError(f"{config_path}: no complete {name} stage at "
                             f"{stages[name].path}; run `drivecast run {config_path}` with "
                             f"the same workdir first")
    try:
        paths = write_example_frames(stages["evaluate"].path, stages["simulate"].path,
                                     Path(out), cfg.simulate.risk_budget)
    except FileNotFoundError as err:
        raise StageError(str(err)) from None
    for path in paths:
        print(path)
    return 0


def _all_params(cfg: Config) -> dict:
    params = {"experiment": cfg.experiment, "seed": cfg.seed, "workdir": cfg.workdir}
    for name, section in to_dict(cfg).items():
        if isinstance(section, dict) and name != "gridworld":
            params.update(config_params(getattr(cfg, name), name))
    return params
