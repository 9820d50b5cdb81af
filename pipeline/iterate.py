"""`drivecast iterate`: learn dynamics, plan with them, collect more data, repeat.

Round 0 is the ordinary pipeline: ingest (behaviour policies), train, export, simulate.
Round k >= 1: `collect` records `iterate.episodes` episodes driven by round k-1's planner
(exploring: pipeline/stages/collect.py), `train` fits on every dataset so far (round 0's and
each round's collection) warm-started from round k-1's model, then export and simulate on
the fixed evaluation seeds of `simulate`.

Every stage is an ordinary keyed stage run with its round's config (`round_config`), so a
killed loop, run again, reuses each complete stage and goes on where it stopped; the loop
only walks the rounds. Round 0's keys are those of `drivecast run`, so an existing run is
round 0. The loop's own stage `iterate/<key>/` holds `summary.json` (`rounds` and
`<figure>_round_<k>`), `rounds.md` and `learning_curve.png`.

MLflow: the command's parent run, a nested run per round (with the round's stage runs
nested in it) holding the round's figures, the figures also on the parent with the round
as step, and the loop's files as the parent's artifacts.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path

from pipeline.artifacts import Artifacts, write_text_atomic
from pipeline.config import Config
from pipeline.errors import StageError
from pipeline.runner import Stage, StageContext, run_stage, run_until
from pipeline.tracking import Tracker

FDE_SECONDS = 3  # the forecast horizon reported per round (else the longest one)
NAN = float("nan")
# Per-round figures: summary.json holds each as <name>_round_<k>; (column title, format).
FIGURES = {
    "episodes": ("episodes", "{:.0f}"),
    "dataset_steps": ("dataset steps", "{:.0f}"),
    "collision_rate": ("collision rate", "{:.3f}"),
    "mean_speed": ("mean speed (m/s)", "{:.2f}"),
    "mean_return": ("mean return", "{:.2f}"),
    "fallback_rate": ("fallback rate", "{:.3f}"),
    "val_fde": ("val FDE (m)", "{:.2f}"),
    "fde": ("held-out FDE (m)", "{:.2f}"),
    "risk_ece": ("held-out risk ECE", "{:.4f}"),
    "counterfactual_auroc": ("risk AUROC on the planner's candidates", "{:.3f}"),
    "collect_surprise": ("collection surprise (m)", "{:.2f}"),
    "collect_collision_rate": ("collection collision rate", "{:.3f}"),
    "actor_collision_rate": ("actor collision rate", "{:.3f}"),
    "actor_mean_return": ("actor mean return", "{:.2f}"),
    "actor_imagined_reward": ("actor reward per step, imagined", "{:.3f}"),
    "actor_reward": ("actor reward per step, real", "{:.3f}"),
    "actor_imagined_collision": ("actor collisions per step, imagined", "{:.4f}"),
    "actor_collision": ("actor collisions per step, real", "{:.4f}"),
}
CURVES = {"collision_rate": "collision rate", "mean_speed": "mean speed (m/s)",
          "fde": "held-out FDE (m)", "risk_ece": "held-out risk ECE",
          "collect_surprise": "collection surprise (m)", "dataset_steps": "dataset steps"}
REFERENCE_FIGURES = ("collision_rate", "mean_speed")  # baselines drawn as horizontal lines


@dataclass(frozen=True)
class Round:
    """The stages of one round. datasets: round 0's ingest, then each round's collection."""

    index: int
    datasets: tuple[Artifacts, ...]
    train: Artifacts
    export: Artifacts
    simulate: Artifacts
    collect: Artifacts | None = None
    actor: Artifacts | None = None


def round_config(cfg: Config, k: int) -> Config:
    """The config round k's stages run with (and save beside their artifacts): that of the
    shortest loop ending with round k (`iterate.rounds = k + 1`, so adding rounds later keeps
    every key); for k >= 1 also the warm-start training (iterate.epochs, iterate.lr) and no
    baselines in simulate (they do not depend on the planner: round 0 drives them on the
    same seeds)."""
    loop = dataclasses.replace(cfg.iterate, rounds=k + 1)
    if k == 0:
        return dataclasses.replace(cfg, iterate=loop)
    train = dataclasses.replace(cfg.train, epochs=cfg.iterate.epochs,
                                lr=cfg.iterate.lr or cfg.train.lr)
    simulate = dataclasses.replace(cfg.simulate, baselines=[])
    return dataclasses.replace(cfg, iterate=loop, train=train, simulate=simulate)


# ---------------------------------------------------------------- rounds


def run_round_zero(cfg: Config, tracker: Tracker, force: bool) -> Round:
    """ingest, train, critic, export, actor, simulate: the stages (and keys) of `drivecast
    run`."""
    from pipeline.stages import actor, critic, export, ingest, simulate, train

    stages = [ingest.STAGE, train.STAGE, critic.STAGE, export.STAGE, actor.STAGE,
              simulate.STAGE]
    forced = [s.name for s in stages] if force else ()
    done = run_until("simulate", stages, round_config(cfg, 0), tracker, force=forced)
    return Round(0, (done["ingest"],), done["train"], done["export"], done["simulate"],
                 actor=done["actor"])


def run_next_round(cfg: Config, previous: Round, tracker: Tracker, force: bool) -> Round:
    """collect with the previous planner, train warm-started on all data, fit the critic
    (when `critic.episodes`), export, train the actor in the new model (when
    `actor.epochs`), simulate."""
    from pipeline.stages import actor, collect, critic, export, simulate, train

    k = previous.index + 1
    rcfg = round_config(cfg, k)
    collected = run_stage(collect.STAGE, rcfg, {"export": previous.export,
                                                "actor": previous.actor}, tracker, force)
    datasets = (*previous.datasets, collected)
    inputs = {f"data_{i}": d for i, d in enumerate(datasets)} | {"init": previous.train}
    trained = run_stage(train.warm_stage(len(datasets)), rcfg, inputs, tracker, force)
    fitted = run_stage(critic.STAGE, rcfg, {"train": trained}, tracker, force)
    exported = run_stage(export.STAGE, rcfg, {"ingest": datasets[0], "train": trained,
                                              "critic": fitted}, tracker, force)
    acted = run_stage(actor.STAGE, rcfg, {"ingest": datasets[0], "train": trained,
                                           "export": exported}, tracker, force)
    simulated = run_stage(simulate.STAGE, rcfg, {"export": exported, "actor": acted}, tracker,
                          force)
    return Round(k, datasets, trained, exported, simulated, collected, acted)


# ---------------------------------------------------------------- figures


def number(summary: Mapping, key: str) -> float:
    """A summary figure as float; NaN when missing or null (JSON has no NaN)."""
    value = summary.get(key)
    return NAN if value is None else float(value)


def reported_seconds(seconds: Collection[int]) -> int | None:
    """The forecast horizon (s) reported per round among `seconds`: FDE_SECONDS if there,
    else the longest; None when there is none."""
    if not seconds:
        return None
    return FDE_SECONDS if FDE_SECONDS in seconds else max(seconds)


def horizon_key(summary: Mapping, prefix: str) -> str | None:
    """`<prefix><s>s` for the reported horizon s among those present (`reported_seconds`)."""
    at = reported_seconds([int(k[len(prefix):-1]) for k in summary if k.startswith(prefix)
                           and k.endswith("s") and k[len(prefix):-1].isdigit()])
    return None if at is None else f"{prefix}{at}s"


def heldout_figures(model, windows) -> dict[str, float]:
    """FDE (m, at the `reported_seconds` horizon) of the other vehicles and the ECE of the
    per-step collision risk, of `model` on `windows`."""
    from evaluation import metrics
    from evaluation.forecast_eval import fde_curve, horizon_seconds
    from pipeline.forecast import predict

    a, dt = windows.arrays, windows.dt
    pred = predict(model, windows)
    seconds = horizon_seconds(a["actions"].shape[1], dt)
    curve = fde_curve(pred["states"], a, dt)
    at = reported_seconds(seconds)
    mask = a["step_mask"] & a["label_mask"]
    return {"fde": NAN if at is None else float(curve[seconds.index(at)]),
            "fde_seconds": NAN if at is None else float(at),
            "risk_ece": metrics.expected_calibration_error(pred["collision"], a["collision"],
                                                           mask)}


def round_figures(rnd: Round, heldout) -> dict[str, float]:
    """The round's headline figures (FIGURES); `heldout`: round 0's test windows."""
    from pipeline.stage_io import load_model

    sim, trained = rnd.simulate.summary, rnd.train.summary
    val_key = horizon_key(trained, "val_fde_")
    collected = rnd.collect.summary if rnd.collect is not None else {}
    figures = {
        "round": float(rnd.index),
        "episodes": sum(number(d.summary, "episodes") for d in rnd.datasets),
        "dataset_steps": sum(number(d.summary, "steps") for d in rnd.datasets),
        "collision_rate": number(sim, "collision_rate"),
        "mean_speed": number(sim, "mean_speed"),
        "mean_return": number(sim, "mean_return"),
        "fallback_rate": number(sim, "fallback_rate"),
        "simulate_surprise": number(sim, "surprise_mean"),
        "counterfactual_auroc": number(sim, "counterfactual/risk_auroc"),  # NaN: not run
        "val_fde": number(trained, val_key) if val_key else NAN,
        "collect_surprise": number(collected, "surprise_mean"),
        "collect_collision_rate": number(collected, "collision_rate"),
    }
    return figures | actor_figures(rnd) | heldout_figures(load_model(rnd.train)[0], heldout)


def actor_figures(rnd: Round) -> dict[str, float]:
    """The imagination gap: the actor's reward and collision probability per imagined step
    (actor stage, from held-out histories) beside the same per decision in the simulator
    (simulate's `actor` row); NaN without an actor."""
    sim = rnd.simulate.summary
    imagined = rnd.actor.summary if rnd.actor is not None else {}
    length = number(sim, "actor/mean_length")
    return {"actor_collision_rate": number(sim, "actor/collision_rate"),
            "actor_mean_return": number(sim, "actor/mean_return"),
            "actor_imagined_reward": number(imagined, "imagined_reward_per_step"),
            "actor_reward": number(sim, "actor/mean_return") / length,
            "actor_imagined_collision": number(imagined, "imagined_collision_per_step"),
            "actor_collision": number(sim, "actor/collision_rate") / length}


def baseline_references(round_zero: Round) -> dict[str, dict[str, float]]:
    """{figure: {baseline: value}} of the baselines simulate drove in round 0."""
    summary = round_zero.simulate.summary
    refs: dict[str, dict[str, float]] = {}
    for key, value in summary.items():
        name, _, figure = key.partition("/")
        if figure in REFERENCE_FIGURES and value is not None:
            refs.setdefault(figure, {})[name] = float(value)
    return refs


# ---------------------------------------------------------------- the loop's outputs


def rounds_table(rows: list[dict[str, float]], refs: dict[str, dict[str, float]]) -> str:
    """rounds.md: one line per round, then the baselines on the same evaluation seeds."""
    head = "| round | " + " | ".join(title for title, _ in FIGURES.values()) + " |"
    lines = [head, "|---|" + "---|" * len(FIGURES)]
    for row in rows:
        cells = ["" if math.isnan(row[k]) else fmt.format(row[k])
                 for k, (_, fmt) in FIGURES.items()]
        lines.append(f"| {row['round']:.0f} | " + " | ".join(cells) + " |")
    for figure, values in refs.items():
        shown = ", ".join(f"{name} {value:.3f}" for name, value in values.items())
        lines.append(f"\nBaselines on the same seeds, {figure}: {shown}.")
    return "\n".join(lines) + "\n"


def loop_summary(rows: list[dict[str, float]]) -> dict[str, float]:
    summary: dict[str, float] = {"rounds": len(rows)}
    for row in rows:
        k = int(row["round"])
        summary |= {f"{name}_round_{k}": value for name, value in row.items() if name != "round"}
    return summary


def write_loop_outputs(rows: list[dict[str, float]], refs: dict[str, dict[str, float]],
                       work: Path) -> dict[str, float]:
    from evaluation.plots import plot_learning_curve

    write_text_atomic(work / "rounds.md", rounds_table(rows, refs))
    curves = {title: [row[name] for row in rows] for name, title in CURVES.items()}
    plot_learning_curve([int(row["round"]) for row in rows], curves, work / "learning_curve.png",
                        references={CURVES[k]: v for k, v in refs.items()},
                        log_curves={CURVES["collision_rate"]})
    return loop_summary(rows)


def loop_stage(rounds: list[Round], rows: list[dict[str, float]],
               refs: dict[str, dict[str, float]]) -> tuple[Stage, dict[str, Artifacts]]:
    """The `iterate` stage (key: iterate section + every round's stage keys) and its inputs."""
    inputs = {"round_0_ingest": rounds[0].datasets[0]}
    for rnd in rounds:
        for name in ("collect", "train", "export", "actor", "simulate"):
            if getattr(rnd, name) is not None:
                inputs[f"round_{rnd.index}_{name}"] = getattr(rnd, name)

    def produce(cfg: Config, inputs: Mapping[str, Artifacts], work: Path,
                ctx: StageContext) -> dict[str, float]:
        return write_loop_outputs(rows, refs, work)

    return Stage("iterate", sections=("iterate",), inputs=tuple(inputs), produce=produce), inputs


# ---------------------------------------------------------------- entry points


def check_iterate(cfg: Config) -> None:
    """Every check of the stages the loop runs, before anything is written."""
    from pipeline.stages import actor, collect, critic, export, ingest, simulate, train

    if cfg.simulate.planner:
        raise StageError(f"iterate simulates each round's own planner: simulate.planner must "
                         f"be empty, got '{cfg.simulate.planner}'")
    if cfg.train.devices != 1 or cfg.train.num_nodes != 1:
        raise StageError("iterate trains in one process: train.devices and train.num_nodes "
                         "must be 1")
    collect.check(cfg)
    for stage in (ingest.STAGE, train.STAGE, critic.STAGE, export.STAGE, actor.STAGE,
                  simulate.STAGE):
        stage.check(cfg)


def run_round(cfg: Config, previous: Round | None, tracker: Tracker, force: bool) -> Round:
    """Round 0 without a previous round, else the round after `previous`."""
    if previous is None:
        return run_round_zero(cfg, tracker, force)
    return run_next_round(cfg, previous, tracker, force)


def run_iterate(cfg: Config, tracker: Tracker, force: bool = False) -> Artifacts:
    """Walk rounds 0 .. iterate.rounds-1 (reusing complete stages), then write the loop's
    stage; `force` recomputes every stage. Returns the loop's stage."""
    from pipeline.stage_io import held_out_windows

    rounds: list[Round] = []
    rows: list[dict[str, float]] = []
    heldout = None
    for k in range(cfg.iterate.rounds):
        with tracker.run(f"round_{k}", {"round": k}, nested=True):
            rounds.append(run_round(cfg, rounds[-1] if rounds else None, tracker, force))
            if heldout is None:  # round 0's test episodes: the same windows every round
                heldout = held_out_windows(cfg, {"ingest": rounds[0].datasets[0],
                                                 "train": rounds[0].train})
            rows.append(round_figures(rounds[-1], heldout))
            tracker.log_metrics(rows[-1])
        tracker.log_metrics(rows[-1], step=k)  # the parent run: curves over rounds
    stage, inputs = loop_stage(rounds, rows, baseline_references(rounds[0]))
    result = run_stage(stage, cfg, inputs, tracker, force)
    tracker.log_metrics(result.summary)
    tracker.log_dir(result.path)
    return result
