"""Simulate stage: closed-loop episodes driven by the ONNX planner.

Imports no torch: the scorer needs numpy, onnxruntime and the simulator only. The same
seeds are driven by the baselines (`idle`, `random`, the rule-based TTC policy and the
oracle lookahead that deep-copies the true simulator). Writes closed_loop.md (the table,
each collision rate with its 95% Wilson interval, also printed to stderr), episodes.csv
(one row per episode of each policy: its collision and how it happened,
evaluation/closed_loop.py `crash_kind`), episodes/<seed>.csv (each planner decision,
evaluation/trace.py), simulate.gif, planner_view.gif and crash_view.gif (the planner's
view redrawn from those traces, evaluation/planner_view.py) and, with counterfactual
episodes, counterfactual.md.

`simulate.backend` picks the simulator of the table's episodes: highway-env, or EnvPool
(`simulate.batch` episodes per pool, evaluation/envpool_loop.py; the oracle is refused, it
copies highway-env). The GIFs, the traces and the counterfactual check run on highway-env
either way: with envpool they show highway-env episodes of the first `gif_episodes` seeds,
whose scenes differ from EnvPool's, and no trace is written for the EnvPool episodes.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path

from pipeline.artifacts import Artifacts, write_text_atomic
from pipeline.config import Backend, Config
from pipeline.errors import StageError
from pipeline.runner import Stage, StageContext, register
from pipeline.stage_io import (
    collecting,
    env_of,
    evaluation_seeds,
    lane_guard,
    planner_factory,
)

BASELINES = ("idle", "random", "rule", "oracle")
MODEL_URI_PREFIX = "models:/"
TRACE_DIR = "episodes"  # one per-decision trace per planner episode: <seed>.csv
CRASH_DECISIONS = 6  # the last decisions of a crash drawn into crash_view.gif
# collision_low, collision_high: the 95% Wilson interval of collision_rate
TABLE_KEYS = ("collision_rate", "collision_low", "collision_high", "mean_speed", "mean_return",
              "mean_length", "fallback_rate", "guard_rate", "latency_p50_ms", "latency_p99_ms")


def planner_path(cfg: Config, inputs: Mapping[str, Artifacts], work: Path) -> Path:
    """The ONNX file to drive with: this run's export, a file, or a registry model URI."""
    from pipeline.stage_io import PLANNER_FILE

    source = cfg.simulate.planner
    if not source:
        return inputs["export"].path / PLANNER_FILE
    if source.startswith(MODEL_URI_PREFIX):
        return download_registered(source, cfg, work)
    path = Path(source)
    if not path.is_file():
        raise StageError(f"simulate.planner: {path} does not exist")
    return path


def download_registered(uri: str, cfg: Config, work: Path) -> Path:
    """Fetch `models:/<name>/<version>` and rebuild the sidecar from the model metadata."""
    import mlflow
    import yaml

    from pipeline.planner.scorer import write_sidecar

    mlflow.set_tracking_uri(cfg.tracking_uri)
    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri,
                                                         dst_path=str(work / "planner")))
    except mlflow.exceptions.MlflowException as err:
        raise StageError(f"simulate.planner: cannot load {uri} ({err.message})") from None
    meta = yaml.safe_load((local / "MLmodel").read_text()).get("metadata") or {}
    onnx_file = next(local.glob("*.onnx"), None)
    if onnx_file is None or not meta:
        raise StageError(f"simulate.planner: {uri} is not a drivecast planner (no ONNX file "
                         "or no sidecar metadata)")
    meta.pop("format_version", None)
    write_sidecar(onnx_file, **meta)
    return onnx_file


def baseline_factory(name: str, cfg: Config):
    from evaluation.oracle import OracleLookahead
    from evaluation.policies import make_policy
    from models.candidates import enumerate_candidates

    if name == "oracle":
        candidates = enumerate_candidates(cfg.simulate.oracle_horizon)
        envelope = ((cfg.export.envelope_length, cfg.export.envelope_width)
                    if cfg.simulate.oracle_envelope else None)
        return lambda: OracleLookahead(candidates, gamma=cfg.export.gamma, envelope=envelope)
    return lambda: make_policy(name)  # names were checked by `check` before any stage ran


def baseline_worker(name: str, cfg: Config):
    """A worker's env and the factory of baseline `name` (module level: pickled)."""
    from pipeline.highway_source import make_env

    return make_env(*env_of(cfg)), baseline_factory(name, cfg)


def baseline_episode(worker, seed: int):
    from evaluation.closed_loop import run_episode

    env, factory = worker
    return run_episode(env, factory(), seed)


def baseline_episodes(cfg: Config, name: str, seeds: range) -> list:
    """The episodes of baseline `name` on `seeds` in `simulate.workers` processes, in seed
    order (each is reset by its seed: the results do not depend on the workers), with a
    progress line every tenth of them."""
    import time

    from pipeline.rollouts import run_pool

    start, step, results = time.perf_counter(), max(1, len(seeds) // 10), []
    print(f"[simulate] baseline {name} on {len(seeds)} episodes", file=sys.stderr, flush=True)
    for result in run_pool(list(seeds), cfg.simulate.workers, baseline_episode,
                           baseline_worker, (name, cfg)):
        results.append(result)
        if len(results) % step == 0 and len(results) < len(seeds):
            print(f"[simulate] baseline {name}: {len(results)}/{len(seeds)} episodes "
                  f"({time.perf_counter() - start:.0f} s)", file=sys.stderr, flush=True)
    return sorted(results, key=lambda result: result.seed)


def actor_path(inputs: Mapping[str, Artifacts]) -> Path | None:
    """This run's exported actor, or None when no actor was trained (actor.epochs 0)."""
    from pipeline.planner.actor_runtime import ACTOR_FILE

    trained = inputs.get("actor")
    path = None if trained is None else trained.path / ACTOR_FILE
    return path if path is not None and path.is_file() else None


def actor_factories(cfg: Config, planner: Path, actor: Path) -> dict:
    """Factories of fresh `actor` (ActorDriver) and `planner+actor` (ActorGuidedPlanner)
    policies over one session of the ONNX actor."""
    from pipeline.planner.actor_runtime import ActorDriver, ActorGuidedPlanner, ActorSession

    session = ActorSession.load(actor, threads=cfg.simulate.threads)

    def guided(scorer, candidates, **kwargs):
        return ActorGuidedPlanner(scorer, candidates, session,
                                  cfg.simulate.actor_top_actions, **kwargs)

    return {"actor": lambda: ActorDriver(session),
            "planner+actor": planner_factory(cfg, planner, guided)}


def surprise_threshold_used(cfg: Config, path: Path) -> float:
    """The reality check's threshold [m] the planner at `path` drives with."""
    from pipeline.planner.policy import resolve_surprise_threshold
    from pipeline.planner.scorer import OnnxScorer

    return resolve_surprise_threshold(cfg.simulate.surprise_threshold, OnnxScorer.load(path))


def table(results: dict[str, dict[str, float]]) -> str:
    lines = ["| policy | " + " | ".join(TABLE_KEYS) + " |", "|---|" + "---|" * len(TABLE_KEYS)]
    for name, figures in results.items():
        cells = [f"{figures[k]:.3f}" if k in figures else "" for k in TABLE_KEYS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def produce(cfg: Config, inputs: Mapping[str, Artifacts], work: Path,
            ctx: StageContext) -> dict[str, float]:
    from evaluation.closed_loop import episodes_csv, run_episodes, summarise
    from evaluation.trace import TracedPlanner

    env_id, env_config = env_of(cfg)
    seeds = evaluation_seeds(cfg.simulate)
    path = planner_path(cfg, inputs, work)
    factory, planners = collecting(planner_factory(cfg, path, TracedPlanner))
    gif = work / "simulate.gif" if cfg.simulate.gif_episodes else None
    learned = {"planner": planner_factory(cfg, path)}
    actor = actor_path(inputs)
    if actor is not None:
        learned |= actor_factories(cfg, path, actor)
    if cfg.simulate.backend == Backend.envpool:
        episodes = envpool_episodes(cfg, learned, seeds)
        shown = seeds[:cfg.simulate.gif_episodes]  # rendered on highway-env, not in the table
        traced = run_episodes(env_id, env_config, factory, shown, gif_path=gif,
                              gif_episodes=len(shown)) if gif is not None else []
    else:
        episodes = {"planner": run_episodes(env_id, env_config, factory, seeds, gif_path=gif,
                                            gif_episodes=cfg.simulate.gif_episodes)}
        for name, make in list(learned.items())[1:]:
            print(f"[simulate] {name} on {len(seeds)} episodes", file=sys.stderr, flush=True)
            episodes[name] = run_episodes(env_id, env_config, make, seeds)
        for name in cfg.simulate.baselines:
            episodes[name] = baseline_episodes(cfg, name, seeds)
        traced = episodes["planner"]
    traces = write_traces(work, traced, planners)
    pictures = draw_pictures(cfg, traces, traced, planners, work)
    results = {name: summarise(runs) for name, runs in episodes.items()}
    write_text_atomic(work / "episodes.csv", episodes_csv(episodes))
    write_text_atomic(work / "closed_loop.md", table(results) + pictures_section(pictures))
    print(table(results), end="", file=sys.stderr, flush=True)  # `make run` shows the result
    summary = dict(results["planner"])
    summary["surprise_threshold"] = surprise_threshold_used(cfg, path)  # m, as driven
    for name in [*list(learned)[1:], *cfg.simulate.baselines]:
        summary |= {f"{name}/{k}": v for k, v in results[name].items()}
    if cfg.simulate.counterfactual_episodes:
        figures = counterfactual_check(cfg, path, work)
        summary |= {f"counterfactual/{k}": v for k, v in figures.items()}
    return summary


def envpool_episodes(cfg: Config, learned: dict, seeds: range) -> dict[str, list]:
    """The learned policies' (`learned`: name -> factory of fresh PlannerPolicies or
    ActorDrivers) and the baselines' episodes on EnvPool, `simulate.batch` per pool."""
    from functools import partial

    from evaluation.batch_policies import BatchPolicy
    from evaluation.envpool_loop import drivers, run_envpool_episodes
    from pipeline.envpool_source import EnvpoolSource
    from pipeline.planner.batch_planner import BatchPlanner

    source, batch = EnvpoolSource(*env_of(cfg)), cfg.simulate.batch
    makers = {name: drivers(partial(BatchPlanner, source), factory)
              for name, factory in learned.items()}
    makers |= {name: drivers(BatchPolicy, baseline_factory(name, cfg))
               for name in cfg.simulate.baselines}
    episodes = {}
    for name, make in makers.items():
        print(f"[simulate] {name} on {len(seeds)} EnvPool episodes", file=sys.stderr, flush=True)
        episodes[name] = run_envpool_episodes(source, make, seeds, batch)
    return episodes


def write_traces(work: Path, results: list, planners: list) -> dict[int, Path]:
    """episodes/<seed>.csv: each planner episode's per-decision trace (evaluation/trace.py);
    `planners` made in the order of `results`. Returns the paths by seed."""
    from evaluation.trace import trace_csv

    (work / TRACE_DIR).mkdir(exist_ok=True)
    paths = {}
    for result, planner in zip(results, planners, strict=True):
        paths[result.seed] = work / TRACE_DIR / f"{result.seed}.csv"
        write_text_atomic(paths[result.seed], trace_csv(planner.rows))
    return paths


def draw_pictures(cfg: Config, traces: dict[int, Path], results: list, planners: list,
                  work: Path) -> list[str]:
    """planner_view.gif (the first `simulate.gif_episodes` planner episodes) and
    crash_view.gif (the last CRASH_DECISIONS decisions of the first planner episode that
    crashed), redrawn from the traces at real time; none with gif_episodes 0. Returns the
    file names; prints how long the drawing took (it is outside every timed decision)."""
    import time

    from evaluation.closed_loop import write_gif
    from evaluation.planner_view import planner_view_frames
    from evaluation.trace import read_trace

    start, files, budget = time.perf_counter(), [], cfg.simulate.risk_budget
    shown = results[:cfg.simulate.gif_episodes]
    dt = planners[0].scorer.dt if planners else 1.0
    if shown:
        frames = [f for r in shown for f in planner_view_frames(read_trace(traces[r.seed]),
                                                                r.seed, budget)]
        files.append(write_gif(work / "planner_view.gif", frames, fps=1.0 / dt).name)
    crashed = [r for r in results if r.collided]
    if shown and crashed:
        rows = read_trace(traces[crashed[0].seed])[-CRASH_DECISIONS:]
        frames = planner_view_frames(rows, crashed[0].seed, budget)
        files.append(write_gif(work / "crash_view.gif", frames, fps=1.0 / dt).name)
    print(f"[simulate] planner views drawn in {time.perf_counter() - start:.1f} s",
          file=sys.stderr, flush=True)
    return files


def pictures_section(files: list[str]) -> str:
    """closed_loop.md's links to the pictures and the traces."""
    lines = ["", "## Pictures", "",
             f"Per-decision traces of the planner's episodes: `{TRACE_DIR}/<seed>.csv` "
             "(columns: evaluation/trace.py; how to read the pictures: docs/pictures.md).", ""]
    return "\n".join(lines + [f"![{name}]({name})" for name in files]) + "\n"


def counterfactual_check(cfg: Config, path: Path, work: Path) -> dict[str, float]:
    """Drive the first `counterfactual_episodes` seeds again with every scored candidate
    labelled by the true simulator; writes counterfactual.md."""
    from evaluation.closed_loop import run_episodes
    from evaluation.counterfactual import (
        CounterfactualPlanner,
        counterfactual_summary,
        reliability_table,
    )

    seeds = evaluation_seeds(cfg.simulate)[:cfg.simulate.counterfactual_episodes]
    print(f"[simulate] counterfactual check on {len(seeds)} episodes", file=sys.stderr)
    factory, planners = collecting(planner_factory(cfg, path, CounterfactualPlanner))
    run_episodes(*env_of(cfg), factory, seeds)
    decisions = [d for planner in planners for d in planner.decisions]
    figures = counterfactual_summary(decisions, cfg.simulate.risk_budget)
    write_text_atomic(work / "counterfactual.md", reliability_table(decisions))
    return figures


def check(cfg: Config) -> None:
    for name in cfg.simulate.baselines:
        if name not in BASELINES:
            raise StageError(f"simulate.baselines: '{name}' is not one of {', '.join(BASELINES)}")
    if cfg.simulate.episodes < 1 or cfg.simulate.workers < 1:
        raise StageError(f"simulate.episodes and simulate.workers must be at least 1, got "
                         f"{cfg.simulate.episodes}, {cfg.simulate.workers}")
    if not 0 <= cfg.simulate.counterfactual_episodes <= cfg.simulate.episodes:
        raise StageError(f"simulate.counterfactual_episodes must lie in 0..simulate.episodes "
                         f"({cfg.simulate.episodes}), got {cfg.simulate.counterfactual_episodes}")
    lane_guard(cfg.simulate)  # its figures are checked before any stage runs
    if cfg.simulate.backend == Backend.envpool:
        check_envpool(cfg)


def check_envpool(cfg: Config) -> None:
    """What backend envpool cannot run is refused before any stage runs."""
    from pipeline.envpool_source import EnvpoolSource

    if "oracle" in cfg.simulate.baselines:
        raise StageError("simulate.baselines: 'oracle' copies highway-env and cannot run on "
                         "simulate.backend envpool (drop it or use backend highway-env)")
    if cfg.simulate.batch < 1:
        raise StageError(f"simulate.batch must be at least 1, got {cfg.simulate.batch}")
    try:
        EnvpoolSource(*env_of(cfg))
    except ValueError as err:
        raise StageError(f"simulate: {err}") from None


STAGE = register(Stage("simulate", sections=("simulate",), inputs=("export", "actor"),
                       produce=produce,
                       check=check))
# With `simulate.planner` set, simulate needs no upstream stage (commands.py picks this).
STANDALONE = Stage("simulate", sections=("simulate", "export", "ingest"), inputs=(),
                   produce=produce, check=check)
