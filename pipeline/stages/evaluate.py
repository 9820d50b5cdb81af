"""Evaluate stage: forecasts, risk calibration and uncertainty on held-out and shifted data.

The held-out set is the train stage's test split (episodes never seen in training). Each
shifted scenario in `evaluate.testsets` is collected through the ingest stage with its own
seed, so it lands in `<experiment>/ingest/<key>/` and is reused across runs. Besides
report.md and its figures, each set gets imagination_<set>.gif: its busiest windows rolled
out by the model beside what happened (evaluation/imagination.py).

The position variance is calibrated after training: one scale per future step, fitted on
the train stage's validation episodes (evaluation/calibration.py); every set's prediction
regions are scored raw and calibrated, and each shifted set's windows are told apart from
the held-out ones by the model's window-level uncertainty scores (`<set>/ood_auroc*`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pipeline.artifacts import Artifacts
from pipeline.config import Backend, Config, TestSet
from pipeline.errors import StageError
from pipeline.runner import Stage, StageContext, register, run_stage, stage_named
from pipeline.stage_io import (
    check_ingest_config,
    dataset_path,
    held_out_splits,
    load_model,
    load_windows,
    replica_lanes,
)
from pipeline.windows import WindowSet

if TYPE_CHECKING:  # evaluation/ loads sklearn, scipy and matplotlib: only when evaluating
    from evaluation.forecast_eval import TestsetResult

TESTSET_SEED_OFFSET = 1_000_003  # shifted sets never share episode seeds with ingest


def testset_config(cfg: Config, index: int, testset: TestSet) -> Config:
    """The config whose ingest stage collects this shifted test set."""
    env_id = testset.env_id or cfg.ingest.env_id
    inherited = dict(cfg.ingest.env_config) if env_id == cfg.ingest.env_id else {}
    env_config = inherited | dict(testset.env_config)
    section = dataclasses.replace(cfg.ingest, env_id=env_id, env_config=env_config,
                                  episodes=cfg.evaluate.episodes,
                                  backend=testset_backend(testset, cfg.ingest.backend, env_id,
                                                          env_config))
    return dataclasses.replace(cfg, ingest=section,
                               seed=cfg.seed + TESTSET_SEED_OFFSET * (index + 1))


def testset_backend(testset: TestSet, backend: Backend, env_id: str,
                    env_config: dict) -> Backend:
    """The test set's own backend, else ingest's where EnvPool runs the scenario, else
    highway-env."""
    from pipeline.envpool_source import envpool_runs

    if testset.backend is not None:
        return testset.backend
    if backend is Backend.envpool and not envpool_runs(env_id, env_config):
        return Backend.highway_env
    return backend


def shifted_windows(cfg: Config, ctx: StageContext) -> dict[str, WindowSet]:
    """Each shifted highway-env scenario's windows; none for recorded data (a simulator
    scenario is no shift of recorded traffic: evaluate.testsets is ignored there)."""
    if cfg.ingest.source == "recorded":
        return {}
    sets = {}
    for i, testset in enumerate(cfg.evaluate.testsets):
        testset_cfg = testset_config(cfg, i, testset)
        collected = run_stage(stage_named("ingest"), testset_cfg, {}, ctx.tracker)
        sets[testset.name] = load_windows(dataset_path(collected), cfg)
    return sets


def score(model, windows: WindowSet, cfg: Config, lanes: int | None = None,
          variance_scale: np.ndarray | None = None,
          densities: dict | None = None) -> tuple[TestsetResult, dict]:
    """The set's figures and the model's predictions; with `lanes` (a straight highway-env
    road at the replica's rates) the traffic replica is scored as a forecaster too;
    `variance_scale` (F,) calibrates the position variance per future step; `densities`,
    those of the validation windows (`input_densities`), add the `input_distance` and
    `latent_distance` window scores."""
    from evaluation.forecast_eval import evaluate_testset
    from pipeline.forecast import history_codes, predict

    pred = predict(model, windows, samples=cfg.evaluate.samples, seed=cfg.seed)
    code = history_codes(model, windows)
    if code is not None:
        pred["history_code"] = code  # (B, C)
    if lanes is not None:
        from evaluation.replica_forecast import replica_states

        a = windows.arrays
        pred["replica_states"] = replica_states(a["hist"], a["hist_mask"], a["actions"], lanes)
    return evaluate_testset(pred, windows.arrays, windows.dt, cfg.evaluate.lane_keeping_tau,
                            variance_scale, densities), pred


def fit_calibration(model, windows: WindowSet) -> np.ndarray:
    """(F,) variance scale per future step fitted on the validation windows so that the
    scaled 90% position region covers 90% of their neighbours' true positions (ones when
    there are no validation windows)."""
    from evaluation import calibration
    from evaluation.forecast_eval import neighbour_future_mask
    from pipeline.forecast import predict

    n_steps = windows.arrays["actions"].shape[1]
    if not len(windows):
        return np.ones(n_steps)
    pred = predict(model, windows)
    a = windows.arrays
    m2 = calibration.mahalanobis2(pred["states"], pred["states_std"], a["future"])
    return calibration.fit_variance_scale(m2, neighbour_future_mask(a))


def input_densities(model, windows: WindowSet) -> dict:
    """Gaussian densities of the validation windows: "input" over their history features
    (evaluation/calibration.py `window_features`), "latent" over the model's encoding of
    their histories; none with fewer than two validation windows."""
    from evaluation import calibration
    from pipeline.forecast import history_codes

    if len(windows) < 2:
        return {}
    densities = {"input": calibration.fit_feature_density(
        calibration.window_features(windows.arrays))}
    code = history_codes(model, windows)
    if code is not None:
        densities["latent"] = calibration.fit_feature_density(code)
    return densities


def scale_summary(scale: np.ndarray, windows: WindowSet, validation: int) -> dict[str, float]:
    """`variance_scale_<s>s` per horizon second and the validation windows it was fitted on."""
    from evaluation.forecast_eval import horizon_seconds
    from evaluation.metrics import horizon_step

    seconds = horizon_seconds(len(scale), windows.dt)
    return {f"variance_scale_{s}s": float(scale[horizon_step(s, windows.dt, len(scale))])
            for s in seconds} | {"calibration_windows": validation}


def ood_summary(results: dict[str, TestsetResult]) -> dict[str, dict[str, float]]:
    """Per shifted set: `ood_auroc_<score>` of each window score against the held-out test
    windows, and `ood_auroc` for the model's predicted position spread (`aleatoric`: of the
    scores measured on quickstart it told shifted sets apart best; the ensemble's
    disagreement is `ood_auroc_epistemic`)."""
    from evaluation.calibration import ood_auroc

    test, *_ = results.values()
    out = {}
    for name, result in list(results.items())[1:]:
        figures = {f"ood_auroc_{score}": ood_auroc(test.window_scores[score], values)
                   for score, values in result.window_scores.items()}
        out[name] = {"ood_auroc": figures["ood_auroc_aleatoric"]} | figures
    return out


def replica_road(cfg: Config) -> int | None:
    """The lanes of the set's road where the traffic replica can replay it (a simulator
    scenario on a straight road at highway-fast's rates), else None."""
    if cfg.ingest.source == "recorded":
        return None
    try:
        return replica_lanes(cfg, "the replica forecast")
    except StageError:
        return None


def set_configs(cfg: Config) -> dict[str, Config]:
    """The config each scored set was collected with: `test` the run's own, then each
    shifted test set's."""
    shifted = {} if cfg.ingest.source == "recorded" else {
        t.name: testset_config(cfg, i, t) for i, t in enumerate(cfg.evaluate.testsets)}
    return {"test": cfg} | shifted


def flat_summary(results: dict[str, TestsetResult]) -> dict[str, float]:
    """The held-out set's figures unprefixed, each shifted set's under `<name>/`."""
    summary: dict[str, float] = {}
    for i, (name, result) in enumerate(results.items()):
        prefix = "" if i == 0 else f"{name}/"
        summary |= {f"{prefix}{k}": v for k, v in result.summary.items()}
    return summary


def produce(cfg: Config, inputs: Mapping[str, Artifacts], work: Path,
            ctx: StageContext) -> dict[str, float]:
    from evaluation.report import pick_scenes, write_report

    model, _ = load_model(inputs["train"])
    held_out = held_out_splits(cfg, inputs, ("test", "val"))
    scale = fit_calibration(model, held_out["val"])
    densities = input_densities(model, held_out["val"])
    sets = {"test": held_out["test"]} | shifted_windows(cfg, ctx)
    configs = set_configs(cfg)
    results, scenes = {}, {}
    for name, windows in sets.items():
        results[name], pred = score(model, windows, cfg, replica_road(configs[name]), scale,
                                      densities)
        scenes[name] = pick_scenes(windows.arrays, pred["samples"], cfg.evaluate.scenes)
    for name, figures in ood_summary(results).items():
        results[name].summary |= figures
    calibration = scale_summary(scale, sets["test"], len(held_out["val"]))
    write_report(results, scenes, work, report_header(cfg, inputs, sets["test"]),
                 sets["test"].dt, calibration)
    return flat_summary(results) | calibration


def report_header(cfg: Config, inputs: Mapping[str, Artifacts], test: WindowSet) -> str:
    """What the report scores: held-out episodes and shifted scenarios, or for recorded
    data the held-out scenes (time ranges)."""
    if cfg.ingest.source != "recorded":
        return (f"Model: `{inputs['train'].path}`. Held-out test episodes of the training "
                f"distribution (`test`) and shifted scenarios: "
                + ", ".join(f"`{t.name}` ({t.env_id or cfg.ingest.env_id} {t.env_config})"
                            for t in cfg.evaluate.testsets) + ".")
    groups = np.unique(test.arrays["group"])
    return (f"Model: `{inputs['train'].path}`. Recorded data: held-out time ranges (`test`: "
            f"{len(groups)} scenes, {len(np.unique(test.arrays['episode']))} ego episodes, "
            f"none of their time ranges seen in training). Collision labels are unknown unless "
            f"ingest.recorded.near_miss_ttc is set (risk figures then score near misses); the "
            f"shifted highway-env scenarios (evaluate.testsets) are skipped.")


def check(cfg: Config) -> None:
    if cfg.ingest.source == "recorded":
        return  # evaluate.testsets is not collected for recorded data
    for i, testset in enumerate(cfg.evaluate.testsets):
        check_ingest_config(testset_config(cfg, i, testset).ingest)


STAGE = register(Stage("evaluate", sections=("evaluate", "ingest"), inputs=("ingest", "train"),
                       produce=produce, check=check))
