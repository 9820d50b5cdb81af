"""Pure evaluation metrics: numpy in, numpy out (no torch).

Metrics follow the house rule ``(pred, target, mask) -> per-element values``: the caller
reduces, usually with :func:`masked_mean`. Functions whose result has fewer axes than
their mask (e.g. ADE over time) return ``(values, valid)`` so the caller still knows which
elements exist. Masked entries may hold anything (zeros, nan, garbage): they never reach a
valid result; invalid result entries are set to 0.

Shape letters: B batch, F future steps, N vehicles, S samples, L lanes. A leading
``...`` means any number of batch axes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from scipy import stats
from sklearn import metrics as skmetrics

MISS_THRESHOLD_M = 2.0
NEIGHBOUR_RADIUS_M = 50.0
CALIBRATION_BINS = 15


def _require(condition: bool, message: str) -> None:
    """Raise a ValueError with a sentence for people when ``condition`` is false."""
    if not condition:
        raise ValueError(message)


def _as_float(name: str, array) -> np.ndarray:
    """Convert to float64, naming the argument if that is impossible."""
    try:
        return np.asarray(array, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name} must be a numeric array ({error}).") from None


def _as_mask(name: str, mask, shape: tuple[int, ...]) -> np.ndarray:
    """Convert to bool and broadcast to ``shape``, naming the argument on mismatch."""
    mask = np.asarray(mask, dtype=bool)
    try:
        return np.broadcast_to(mask, shape)
    except ValueError:
        raise ValueError(
            f"{name} has shape {mask.shape} but must broadcast to the values' shape {shape}."
        ) from None


# --------------------------------------------------------------------------- reducers


def masked_mean(values, mask, axis: int | tuple[int, ...] | None = None):
    """Mean of ``values`` over entries where ``mask`` is True.

    values (...) float, mask broadcastable to values. Returns a float when ``axis`` is
    None, else an array; a mean with no valid entry is nan (never an error).
    """
    values = _as_float("values", values)
    mask = _as_mask("mask", mask, values.shape)
    total = np.where(mask, values, 0.0).sum(axis=axis)
    count = mask.sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = total / count
    return float(mean) if np.ndim(mean) == 0 else mean


def horizon_step(seconds: float, dt: float, n_steps: int) -> int:
    """Future step index whose end is ``seconds`` after t0: ``round(seconds / dt) - 1``."""
    _require(dt > 0, f"dt must be positive, got {dt}.")
    step = int(round(seconds / dt)) - 1
    _require(
        0 <= step < n_steps,
        f"horizon {seconds} s needs future step {step}, but the window has {n_steps} steps "
        f"of {dt} s.",
    )
    return step


# --------------------------------------------------------------------------- displacement


def displacement_error(pred, target) -> np.ndarray:
    """Euclidean position error per element.

    pred, target (..., F, N, P>=2) with broadcastable leading axes; only ``[..., :2]``
    (x, y) is used, so a (..., F, N, 4) ``future`` can be passed as it is.
    Returns (..., F, N) in metres.
    """
    pred, target = _as_float("pred", pred), _as_float("target", target)
    _require(
        pred.ndim >= 3 and target.ndim >= 3 and min(pred.shape[-1], target.shape[-1]) >= 2,
        f"pred {pred.shape} and target {target.shape} must be (..., F, N, 2) position arrays.",
    )
    try:
        np.broadcast_shapes(pred.shape[:-1], target.shape[:-1])
    except ValueError:
        raise ValueError(
            f"pred {pred.shape} and target {target.shape} do not agree on (..., F, N)."
        ) from None
    with np.errstate(invalid="ignore", over="ignore"):  # masked entries may hold garbage
        delta = pred[..., :2] - target[..., :2]
        return np.hypot(delta[..., 0], delta[..., 1])


def final_displacement(error, mask, step: int = -1) -> tuple[np.ndarray, np.ndarray]:
    """Error at one future step (FDE per element).

    error (..., F, N), mask (..., F, N) -> values (..., N), valid (..., N).
    """
    error = _as_float("error", error)
    mask = _as_mask("mask", mask, error.shape)
    valid = mask[..., step, :]
    return np.where(valid, error[..., step, :], 0.0), valid


def average_displacement(
    error, mask, last_step: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Mean error over the valid steps ``0..last_step`` (inclusive; None = all), ADE.

    error (..., F, N), mask (..., F, N) -> values (..., N), valid (..., N) where valid
    means at least one step counted.
    """
    error = _as_float("error", error)
    mask = _as_mask("mask", mask, error.shape)
    stop = error.shape[-2] if last_step is None else last_step + 1
    used = mask[..., :stop, :]
    total = np.where(used, error[..., :stop, :], 0.0).sum(axis=-2)
    count = used.sum(axis=-2)
    values = np.divide(total, count, out=np.zeros_like(total), where=count > 0)
    return values, count > 0


def ade_fde_by_horizon(
    error, mask, seconds: Sequence[float], dt: float
) -> tuple[np.ndarray, np.ndarray]:
    """ADE and FDE (metres) at each horizon second, pooled over every valid entry.

    error (..., F, N), mask (..., F, N). FDE at ``s`` is the masked mean of the error at
    step ``round(s / dt) - 1``; ADE at ``s`` is the masked mean over steps up to and
    including it (every valid vehicle-step counts once). Returns two (len(seconds),)
    arrays; a horizon with no valid entry gives nan.
    """
    error = _as_float("error", error)
    mask = _as_mask("mask", mask, error.shape)
    ade, fde = [], []
    for second in seconds:
        step = horizon_step(second, dt, error.shape[-2])
        ade.append(masked_mean(error[..., : step + 1, :], mask[..., : step + 1, :]))
        fde.append(masked_mean(error[..., step, :], mask[..., step, :]))
    return np.asarray(ade), np.asarray(fde)


def _sample_errors(samples, target, mask) -> tuple[np.ndarray, np.ndarray]:
    """Errors of every sample: samples (S, ..., F, N, 2) -> error, mask (S, ..., F, N)."""
    samples, target = _as_float("samples", samples), _as_float("target", target)
    _require(
        samples.ndim == target.ndim + 1,
        f"samples {samples.shape} must be (S, ...) over target {target.shape} (one extra "
        "leading sample axis).",
    )
    error = displacement_error(samples, target[None])
    return error, _as_mask("mask", mask, error.shape)


def min_ade_k(samples, target, mask, last_step: int | None = None):
    """Best-of-S ADE per element.

    samples (S, ..., F, N, 2), target (..., F, N, >=2), mask (..., F, N)
    -> values (..., N), valid (..., N).
    """
    error, mask = _sample_errors(samples, target, mask)
    values, valid = average_displacement(error, mask, last_step)
    return values.min(axis=0), valid[0]


def min_fde_k(samples, target, mask, step: int = -1):
    """Best-of-S error at ``step`` (default: the last future step) per element.

    samples (S, ..., F, N, 2), target (..., F, N, >=2), mask (..., F, N)
    -> values (..., N), valid (..., N).
    """
    error, mask = _sample_errors(samples, target, mask)
    values, valid = final_displacement(error, mask, step)
    return values.min(axis=0), valid[0]


def misses(final_error, threshold: float = MISS_THRESHOLD_M) -> np.ndarray:
    """1.0 where the final error exceeds ``threshold`` metres, else 0.0 (same shape)."""
    return (_as_float("final_error", final_error) > threshold).astype(np.float64)


def miss_rate(final_error, valid, threshold: float = MISS_THRESHOLD_M) -> float:
    """Fraction of valid elements whose final error exceeds ``threshold`` (nan if none)."""
    return masked_mean(misses(final_error, threshold), valid)


# --------------------------------------------------------------------------- uncertainty


def gaussian_nll(mean, std, target, min_std: float = 1e-6) -> np.ndarray:
    """Negative log-likelihood of ``target`` under N(mean, std**2), per element (nats).

    mean, std, target broadcast together, e.g. (..., F, N, 2); sum the last axis for the
    joint NLL of a diagonal 2-D position. ``std`` is floored at ``min_std`` so masked
    entries holding zeros do not produce infinities.
    """
    mean, target = _as_float("mean", mean), _as_float("target", target)
    std = np.maximum(_as_float("std", std), min_std)
    with np.errstate(invalid="ignore", over="ignore"):
        z = (target - mean) / std
        return 0.5 * np.log(2.0 * np.pi) + np.log(std) + 0.5 * z**2


def spearman(uncertainty, error, mask=None) -> float:
    """Spearman rank correlation between uncertainty and error over valid entries.

    Any equal shapes; nan when fewer than two valid entries or either side is constant.
    """
    u, e = _as_float("uncertainty", uncertainty), _as_float("error", error)
    _require(u.shape == e.shape, f"uncertainty {u.shape} and error {e.shape} must match.")
    keep = np.ones(u.shape, bool) if mask is None else _as_mask("mask", mask, u.shape)
    u, e = u[keep], e[keep]
    if u.size < 2 or np.ptp(u) == 0 or np.ptp(e) == 0:
        return float("nan")
    return float(stats.spearmanr(u, e).statistic)


# --------------------------------------------------------------------------- neighbours


def neighbour_mask(hist, hist_mask, radius: float = NEIGHBOUR_RADIUS_M) -> np.ndarray:
    """Vehicles present at t0 within ``radius`` metres of the ego, ego (slot 0) excluded.

    hist (..., H, N, D>=2), hist_mask (..., H, N) -> (..., N) bool. Combine with a
    (..., F, N) future mask as ``future_mask & near[..., None, :]``.
    """
    hist = _as_float("hist", hist)
    _require(hist.ndim >= 3 and hist.shape[-1] >= 2, f"hist {hist.shape} must be (..., H, N, D).")
    hist_mask = _as_mask("hist_mask", hist_mask, hist.shape[:-1])
    position = hist[..., -1, :, :2]  # (..., N, 2)
    offset = position - position[..., :1, :]
    near = hist_mask[..., -1, :] & (np.hypot(offset[..., 0], offset[..., 1]) <= radius)
    near[..., 0] = False
    return near


# --------------------------------------------------------------------------- collision risk


class ReliabilityBins(NamedTuple):
    """Reliability diagram data over equal-width probability bins (nan for empty bins)."""

    edges: np.ndarray  # (n_bins + 1,)
    count: np.ndarray  # (n_bins,) int
    mean_prob: np.ndarray  # (n_bins,)
    frequency: np.ndarray  # (n_bins,) observed positive rate


def _valid_prob_label(prob, label, mask) -> tuple[np.ndarray, np.ndarray]:
    """Flatten the valid entries; checks probabilities lie in [0, 1] and labels are 0/1."""
    prob, label = _as_float("prob", prob), _as_float("label", label)
    _require(prob.shape == label.shape, f"prob {prob.shape} and label {label.shape} must match.")
    keep = np.ones(prob.shape, bool) if mask is None else _as_mask("mask", mask, prob.shape)
    prob, label = prob[keep], label[keep]
    _require(bool(np.all((prob >= 0) & (prob <= 1))), "prob must lie in [0, 1] where valid.")
    _require(bool(np.all((label == 0) | (label == 1))), "label must hold only 0 and 1.")
    return prob, label


def _one_class(label: np.ndarray) -> bool:
    return label.size == 0 or np.unique(label).size < 2


def auroc(prob, label, mask=None) -> float:
    """Area under the ROC curve over valid entries (nan when only one class is present)."""
    prob, label = _valid_prob_label(prob, label, mask)
    return float("nan") if _one_class(label) else float(skmetrics.roc_auc_score(label, prob))


def decision_auroc(prob, label, mask) -> float:
    """Mean over the rows (decisions) of the AUROC among each row's valid entries, rows
    with only one class skipped (nan when none has both): how well a risk orders the
    candidates of one decision, which the pooled `auroc` mixes with the order across
    scenes. prob, label, mask (D, K)."""
    prob, label, mask = (np.asarray(a) for a in (prob, label, mask))
    _require(prob.ndim == 2 and prob.shape == label.shape == mask.shape,
             f"prob, label and mask must be (D, K) of one shape, got {prob.shape}, "
             f"{label.shape}, {mask.shape}.")
    rows = [auroc(p, y, m) for p, y, m in zip(prob, label, mask, strict=True)]
    rows = [r for r in rows if not np.isnan(r)]
    return float(np.mean(rows)) if rows else float("nan")


def average_precision(prob, label, mask=None) -> float:
    """Average precision over valid entries (nan when only one class is present)."""
    prob, label = _valid_prob_label(prob, label, mask)
    if _one_class(label):
        return float("nan")
    return float(skmetrics.average_precision_score(label, prob))


def brier(prob, label) -> np.ndarray:
    """Brier score per element: ``(prob - label) ** 2`` (same shape)."""
    return (_as_float("prob", prob) - _as_float("label", label)) ** 2


def reliability_bins(prob, label, n_bins: int = CALIBRATION_BINS, mask=None) -> ReliabilityBins:
    """Per-bin count, mean predicted probability and positive frequency.

    Bins split [0, 1] into ``n_bins`` equal widths; a probability of exactly 1 falls in
    the last bin.
    """
    _require(n_bins >= 1, f"n_bins must be at least 1, got {n_bins}.")
    prob, label = _valid_prob_label(prob, label, mask)
    index = np.clip((prob * n_bins).astype(int), 0, n_bins - 1)
    count = np.bincount(index, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):  # empty bins become nan
        mean_prob = np.bincount(index, weights=prob, minlength=n_bins) / count
        frequency = np.bincount(index, weights=label, minlength=n_bins) / count
    return ReliabilityBins(np.linspace(0.0, 1.0, n_bins + 1), count, mean_prob, frequency)


def expected_calibration_error(prob, label, mask=None, n_bins: int = CALIBRATION_BINS) -> float:
    """ECE = sum_b (n_b / n) * |frequency_b - mean_prob_b| (positive-class reliability).

    nan when no entry is valid.
    """
    bins = reliability_bins(prob, label, n_bins, mask)
    total = bins.count.sum()
    if total == 0:
        return float("nan")
    filled = bins.count > 0
    gaps = np.abs(bins.frequency[filled] - bins.mean_prob[filled])
    return float(np.sum(bins.count[filled] / total * gaps))


Z95 = 1.959964  # two-sided 95% quantile of the standard normal


def wilson_interval(events: float, trials: float) -> tuple[float, float]:
    """95% Wilson score interval of a binomial rate (events of trials)."""
    if trials <= 0:
        return float("nan"), float("nan")
    rate = events / trials
    z2 = Z95 * Z95
    centre = (rate + z2 / (2 * trials)) / (1 + z2 / trials)
    half = Z95 * np.sqrt(rate * (1 - rate) / trials + z2 / (4 * trials * trials)) \
        / (1 + z2 / trials)
    # at 0 or `trials` events the bound is exactly 0 or 1 (rounding would leave it just off)
    low = 0.0 if events <= 0 else max(0.0, centre - half)
    high = 1.0 if events >= trials else min(1.0, centre + half)
    return float(low), float(high)
