"""Score a model's forecasts on one test set against the baselines (numpy only).

Inputs are the window arrays (the window contract, plus `lane_centers` (B, L)) and the
model's predictions: states (B, F, N, 4) and states_std under the prior mean, collision
(B, F), uncertainty (B, F), and `samples` (S, B, F, N, 2) sampled futures; optionally
`replica_states` (B, F, N, 4), the traffic replica's forecast, scored as a reference.
With a variance scale (F,) fitted on the validation windows (evaluation/calibration.py)
the prediction regions are scored both raw and calibrated.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from evaluation import baselines, calibration, metrics


@dataclass
class TestsetResult:
    """Headline figures (flat) plus what the report draws."""

    summary: dict[str, float]
    fde_curves: dict[str, list[float]] = field(default_factory=dict)  # name -> per second
    seconds: list[int] = field(default_factory=list)
    reliability: metrics.ReliabilityBins | None = None
    risk_prob: np.ndarray | None = None  # valid per-step probabilities (M,)
    risk_label: np.ndarray | None = None  # (M,)
    coverage: dict[str, list[float]] = field(default_factory=dict)  # e.g. raw90 -> per second
    window_scores: dict[str, np.ndarray] = field(default_factory=dict)  # name -> (B,)
    window_error: np.ndarray | None = None  # (B,) mean ADE of the neighbours within 50 m


def horizon_seconds(n_steps: int, dt: float) -> list[int]:
    """Whole seconds reached by the future steps (1 .. F*dt)."""
    return [s for s in range(1, int(n_steps * dt + 1e-9) + 1)
            if abs(s / dt - round(s / dt)) < 1e-6]


def neighbour_future_mask(a: dict[str, np.ndarray]) -> np.ndarray:
    """(B, F, N): neighbours within 50 m of the ego at t0, present at that future step."""
    near = metrics.neighbour_mask(a["hist"], a["hist_mask"])  # (B, N)
    return a["future_mask"] & a["step_mask"][..., None] & near[:, None, :]


def fde_curve(pred_states: np.ndarray, a: dict[str, np.ndarray], dt: float) -> list[float]:
    error = metrics.displacement_error(pred_states, a["future"])
    seconds = horizon_seconds(a["actions"].shape[1], dt)
    _, fde = metrics.ade_fde_by_horizon(error, neighbour_future_mask(a), seconds, dt)
    return fde.tolist()


def baseline_states(a: dict[str, np.ndarray], dt: float, tau: float) -> dict[str, np.ndarray]:
    n_steps = a["actions"].shape[1]
    cv = baselines.constant_velocity(a["hist"], a["hist_mask"], dt, n_steps)
    lk = baselines.constant_velocity_lane_keeping(a["hist"], a["hist_mask"], dt, n_steps,
                                                  a["lane_centers"], tau=tau)
    return {"cv": cv, "cv_lane": lk}


def forecast_figures(pred: dict, a: dict, dt: float, tau: float) -> tuple[dict, dict]:
    """FDE per second for the model and baselines, plus ADE, minFDE_k, miss rate and NLL."""
    seconds = horizon_seconds(a["actions"].shape[1], dt)
    references = baseline_states(a, dt, tau)
    if "replica_states" in pred:  # the simulator's own drivers (evaluation/replica_forecast.py)
        references["replica"] = pred["replica_states"]
    curves = {"model": fde_curve(pred["states"], a, dt)}
    curves |= {name: fde_curve(s, a, dt) for name, s in references.items()}
    summary = {}
    for name, curve in curves.items():
        prefix = "" if name == "model" else f"{name}_"
        summary |= {f"{prefix}fde_{s}s": v for s, v in zip(seconds, curve, strict=True)}
    mask = neighbour_future_mask(a)
    last = len(seconds) and metrics.horizon_step(seconds[-1], dt, a["actions"].shape[1])
    error = metrics.displacement_error(pred["states"], a["future"])
    summary["ade"] = metrics.masked_mean(*metrics.average_displacement(error, mask, last))
    final, valid = metrics.final_displacement(error, mask, step=last)
    summary["miss_rate"] = metrics.miss_rate(final, valid)
    k = len(pred["samples"])
    min_fde, min_valid = metrics.min_fde_k(pred["samples"], a["future"][..., :2], mask, step=last)
    summary[f"min_fde_{seconds[-1]}s_k{k}"] = metrics.masked_mean(min_fde, min_valid)
    min_ade, ade_valid = metrics.min_ade_k(pred["samples"], a["future"][..., :2], mask, last)
    summary[f"min_ade_{seconds[-1]}s_k{k}"] = metrics.masked_mean(min_ade, ade_valid)
    nll = metrics.gaussian_nll(pred["states"][..., :2], pred["states_std"][..., :2],
                               a["future"][..., :2]).sum(-1)  # (B, F, N)
    summary["nll_xy"] = metrics.masked_mean(nll, mask)
    return summary, curves


def risk_figures(pred: dict, a: dict, dt: float) -> tuple[dict, metrics.ReliabilityBins, tuple]:
    """Per-step collision-risk quality, and the time-to-collision baseline per window."""
    mask = a["step_mask"] & a["label_mask"]
    prob, label = pred["collision"], a["collision"]
    summary = {"risk_auroc": metrics.auroc(prob, label, mask),
               "risk_ap": metrics.average_precision(prob, label, mask),
               "risk_brier": metrics.masked_mean(metrics.brier(prob, label), mask),
               "risk_ece": metrics.expected_calibration_error(prob, label, mask),
               "collision_rate": metrics.masked_mean(label, mask)}
    for name, source in (("head", "collision_head"), ("overlap", "overlap")):
        summary[f"risk_auroc_{name}"] = metrics.auroc(pred[source], label, mask)  # alone
    window_label = (label * mask).max(axis=1)  # (B,) any collision within the horizon
    window_prob = 1.0 - np.prod(np.where(mask, 1.0 - prob, 1.0), axis=1)
    ttc = baselines.ttc_risk(a["hist"], a["hist_mask"], horizon_s=a["actions"].shape[1] * dt)
    summary["window_risk_auroc"] = metrics.auroc(window_prob, window_label)
    summary["ttc_window_risk_auroc"] = metrics.auroc(ttc, window_label)
    bins = metrics.reliability_bins(prob, label, mask=mask)
    return summary, bins, (prob[mask], label[mask])


def window_error(pred: dict, a: dict) -> np.ndarray:
    """(B,) the window's forecast error: mean ADE of its neighbours within 50 m (nan when
    none is seen in the future)."""
    mask = neighbour_future_mask(a)
    error = metrics.displacement_error(pred["states"], a["future"])  # (B, F, N)
    per_window_error, has_error = metrics.average_displacement(error, mask)  # (B, N)
    return metrics.masked_mean(per_window_error, has_error, axis=1)  # (B,)


def uncertainty_figures(pred: dict, a: dict, densities: dict | None = None
                        ) -> tuple[dict[str, float], dict, np.ndarray]:
    """Does the model's uncertainty rank its own errors? (Spearman per window, for the
    ensemble's disagreement and each window score of evaluation/calibration.py; with
    `densities` fitted on in-distribution windows also `input_distance` (their history
    features, key "input") and `latent_distance` (the model's encoding of the history,
    key "latent", read from pred["history_code"] (B, C)))."""
    errors = window_error(pred, a)
    scores = calibration.window_scores(pred, a)
    densities = densities or {}
    if "input" in densities:
        scores["input_distance"] = calibration.feature_distance(
            densities["input"], calibration.window_features(a))
    if "latent" in densities and "history_code" in pred:
        scores["latent_distance"] = calibration.feature_distance(densities["latent"],
                                                                 pred["history_code"])
    window_unc = metrics.masked_mean(pred["uncertainty"], a["step_mask"], axis=1)  # (B,)
    valid = np.isfinite(errors) & np.isfinite(window_unc)
    summary = {"uncertainty_error_spearman": metrics.spearman(window_unc, errors, valid),
               "mean_uncertainty": metrics.masked_mean(window_unc, valid)}
    summary |= calibration.score_spearmans(scores, errors)
    return summary, scores, errors


def calibration_figures(pred: dict, a: dict, dt: float,
                        scale: np.ndarray | None) -> tuple[dict[str, float], dict]:
    """Coverage of the 50% and 90% position regions per horizon second on the FDE's
    neighbour mask, raw (`raw_coverage<p>_<s>s`) and under the variance `scale` (F,)
    (`coverage<p>_<s>s`; the raw figure when no scale is given), and the calibrated NLL."""
    seconds = horizon_seconds(a["actions"].shape[1], dt)
    mask = neighbour_future_mask(a)
    m2 = calibration.mahalanobis2(pred["states"], pred["states_std"], a["future"])
    summary, curves = {}, {}
    for p in calibration.LEVELS:
        level = round(100 * p)
        raw = calibration.coverage_by_horizon(m2, mask, seconds, dt, p)
        calibrated = (raw if scale is None else
                      calibration.coverage_by_horizon(m2, mask, seconds, dt, p, scale))
        curves[f"raw{level}"], curves[f"calibrated{level}"] = raw.tolist(), calibrated.tolist()
        for s, r, c in zip(seconds, raw, calibrated, strict=True):
            summary[f"raw_coverage{level}_{s}s"] = float(r)
            summary[f"coverage{level}_{s}s"] = float(c)
    calibrated_pred = pred if scale is None else calibration.calibrate(pred, scale)
    nll = metrics.gaussian_nll(calibrated_pred["states"][..., :2],
                               calibrated_pred["states_std"][..., :2],
                               a["future"][..., :2]).sum(-1)  # (B, F, N)
    summary["calibrated_nll_xy"] = metrics.masked_mean(nll, mask)
    return summary, curves


def evaluate_testset(pred: dict[str, np.ndarray], a: dict[str, np.ndarray], dt: float,
                     lane_keeping_tau: float = 1.0,
                     variance_scale: np.ndarray | None = None,
                     densities: dict | None = None) -> TestsetResult:
    """Every figure of one test set; `variance_scale` (F,) the validation-fitted scale of
    the position variance per future step, `densities` the validation windows' feature
    densities (evaluation/calibration.py; see `uncertainty_figures`)."""
    forecast, curves = forecast_figures(pred, a, dt, lane_keeping_tau)
    risk, bins, (prob, label) = risk_figures(pred, a, dt)
    uncertainty, scores, errors = uncertainty_figures(pred, a, densities)
    coverage, coverage_curves = calibration_figures(pred, a, dt, variance_scale)
    summary = forecast | risk | uncertainty | coverage | {"windows": len(a["actions"])}
    return TestsetResult(summary, curves, horizon_seconds(a["actions"].shape[1], dt), bins,
                         prob, label, coverage_curves, scores, errors)
