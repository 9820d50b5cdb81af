"""Run stages in dependency order, reusing complete stage directories.

A stage is a plain function `produce(cfg, inputs, work_dir, ctx) -> summary`; this
module gives it a key, a working directory, an MLflow run, and makes its result atomic.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline import artifacts
from pipeline.artifacts import Artifacts
from pipeline.config import Config, dump_yaml, to_dict
from pipeline.tracking import Tracker, config_params


@dataclass
class StageContext:
    """What a running stage may use besides its config and inputs."""

    tracker: Tracker
    run_id: str | None  # the stage's nested MLflow run (Lightning logs into it)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        self.tracker.log_metrics(metrics, step=step)


Produce = Callable[[Config, Mapping[str, Artifacts], Path, StageContext], Mapping[str, float]]


@dataclass(frozen=True)
class Stage:
    """A pipeline stage: which config sections and upstream stages its key depends on."""

    name: str
    sections: tuple[str, ...]
    inputs: tuple[str, ...]
    produce: Produce
    # keep a killed run's partial work (ingest shards, train checkpoints) when this says so
    resumable: Callable[[Config], bool] = lambda cfg: False
    # refuses a config this stage cannot run with, before any stage writes anything
    check: Callable[[Config], None] = lambda cfg: None
    # settings outside `sections` that its output depends on (hashed into the key too)
    extra_key: Callable[[Config], dict] = lambda cfg: {}


STAGES: dict[str, Stage] = {}  # every stage pipeline/stages/ defines, by name


def register(stage: Stage) -> Stage:
    """Make `stage` findable by name (`stage_named`), so that one stage can run another
    (evaluate collects its shifted test sets through ingest) without importing it."""
    STAGES[stage.name] = stage
    return stage


def stage_named(name: str) -> Stage:
    """The registered stage called `name` (importing any stage module registers them all:
    pipeline/stages/__init__.py imports each)."""
    if name not in STAGES:
        raise KeyError(f"no stage named '{name}' is registered (known: {', '.join(STAGES)})")
    return STAGES[name]


def is_ddp_worker() -> bool:
    """True in the extra processes that Lightning's DDP launcher starts by re-running the
    command (they must neither track, clear nor commit anything: rank 0 does)."""
    return int(os.environ.get("LOCAL_RANK", 0)) > 0 or int(os.environ.get("NODE_RANK", 0)) > 0


def experiment_root(cfg: Config) -> Path:
    return Path(cfg.workdir) / cfg.experiment


# Settings that change how a stage runs but not what it produces stay out of the key.
KEY_EXEMPT = {"ingest": ("workers", "batch"), "train": ("resume", "num_workers"),
              "actor": ("resume",),
              "simulate": ("workers", "batch")}
# Settings added after stage keys were in use: at this value (their default, which is how
# those stages ran) they stay out of the key, so the existing stages are still reused.
KEY_DEFAULTS = {"ingest": {"backend": "highway-env"},
                "critic": {"members": 1, "rank_weight": 0.0, "prior": "model"},
                "export": {"lookahead_brake": False, "lookahead_min_speed": 20.0,
                           "risk": "model", "replica_reacting_steps": 3,
                           "replica_mobil_at_start": False, "replica_late_idm_every": 1,
                           "replica_tail_steps": 0},
                "simulate": {"lane_guard": False, "guard_front_gap": 2.0,
                             "guard_rear_gap": 2.0, "guard_rear_ttc": 1.0,
                             "backend": "highway-env"}}


# The same for fields of the entries of a list setting (section -> list -> field: default).
ITEM_DEFAULTS = {"evaluate": {"testsets": {"backend": None}}}


def key_of(stage: Stage, cfg: Config, inputs: Mapping[str, Artifacts]) -> str:
    sections: dict[str, Any] = {}
    for name in stage.sections:
        tree = to_dict(getattr(cfg, name))
        for field_name in KEY_EXEMPT.get(name, ()):
            tree.pop(field_name, None)
        drop_defaults(tree, KEY_DEFAULTS.get(name, {}))
        for list_name, defaults in ITEM_DEFAULTS.get(name, {}).items():
            for item in tree.get(list_name, []):
                drop_defaults(item, defaults)
        sections[name] = tree
    sections["seed"] = cfg.seed
    extra = stage.extra_key(cfg)
    if extra:
        sections["extra"] = extra
    return artifacts.stage_key(sections, {name: inputs[name].key for name in stage.inputs})


def drop_defaults(tree: dict, defaults: dict) -> None:
    for field_name, value in defaults.items():
        if field_name in tree and tree[field_name] == value:
            tree.pop(field_name)


def stage_config_text(stage: Stage, cfg: Config) -> str:
    """The resolved config saved beside the artifact (whole tree: what produced this)."""
    return f"# drivecast stage '{stage.name}' (key sections: {', '.join(stage.sections)})\n" \
        + dump_yaml(cfg)


def run_stage(stage: Stage, cfg: Config, inputs: Mapping[str, Artifacts], tracker: Tracker,
              force: bool = False) -> Artifacts:
    """Compute (or reuse) one stage; prints its directory as the last line."""
    key = key_of(stage, cfg, inputs)
    root = experiment_root(cfg)
    final = artifacts.final_dir(root, stage.name, key)
    params = {"seed": cfg.seed}
    for name in stage.sections:
        params.update(config_params(getattr(cfg, name), name))
    with tracker.run(stage.name, params, nested=True) as run_id:
        tracker.set_tags({"drivecast.stage": stage.name, "drivecast.key": key})
        with stage_turn(root, stage.name, key):
            if artifacts.is_complete(final) and not force:
                result = artifacts.load_complete(stage.name, key, final)
                print(f"[{stage.name}] reusing complete {final}", file=sys.stderr)
            else:
                result = _compute(stage, cfg, inputs, tracker, run_id, key, force)
        tracker.set_tags({"drivecast.reused": str(result.reused).lower()})
        tracker.log_metrics(result.summary)
        if not result.reused:  # a reused stage's files were logged by the run that made them
            tracker.log_dir(result.path)
    print(result.path, flush=True)
    return result


def stage_turn(root: Path, stage: str, key: str):
    """This process's turn at a stage key (`artifacts.stage_lock`); the workers of one
    distributed run share the turn of their launcher."""
    if is_ddp_worker():
        return contextlib.nullcontext()
    return artifacts.stage_lock(root, stage, key)


def _compute(stage: Stage, cfg: Config, inputs: Mapping[str, Artifacts], tracker: Tracker,
             run_id: str | None, key: str, force: bool) -> Artifacts:
    root = experiment_root(cfg)
    keep = (stage.resumable(cfg) and not force) or is_ddp_worker()
    work = artifacts.open_partial(root, stage.name, key, keep=keep)
    ctx = StageContext(tracker=tracker, run_id=run_id)
    try:
        summary = dict(stage.produce(cfg, inputs, work, ctx))
    except Exception as err:  # refused or failed; an interrupt keeps its work for the rerun
        full = artifacts.disk_full_error(root, err)  # before freeing the partial's space
        if not is_ddp_worker():
            artifacts.discard_partial(work, keep)
        if full is not None:
            raise full from err
        raise
    final = artifacts.final_dir(root, stage.name, key)
    artifacts.commit(work, final, stage_config_text(stage, cfg), summary)
    return Artifacts(stage.name, key, final, artifacts.clean_numbers(summary))


def stages_up_to(target: str, stages: list[Stage]) -> list[Stage]:
    return stages[: [s.name for s in stages].index(target) + 1]


def check_config(target: str, stages: list[Stage], cfg: Config) -> None:
    """Every check of the stages up to `target`, before anything is written."""
    for stage in stages_up_to(target, stages):
        stage.check(cfg)


def run_until(target: str, stages: list[Stage], cfg: Config, tracker: Tracker,
              force: Collection[str] = ()) -> dict[str, Artifacts]:
    """Run every stage up to and including `target`, in order; stages named in `force`
    are recomputed even when a complete directory exists."""
    done: dict[str, Artifacts] = {}
    for stage in stages_up_to(target, stages):
        needed = {name: done[name] for name in stage.inputs}
        done[stage.name] = run_stage(stage, cfg, needed, tracker, force=stage.name in force)
    return done
