"""Report figures: each function writes one PNG, atomically (temp file + os.replace).

Uses matplotlib's object API with the Agg canvas (no pyplot state, no display needed).
Every function returns the written path.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from evaluation.metrics import ReliabilityBins

VEHICLE_LENGTH_M = 5.0
VEHICLE_WIDTH_M = 2.0
EGO_COLOR = "tab:red"


def _new_figure(width: float = 7.0, height: float = 4.5) -> Figure:
    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Figure, path) -> Path:
    """Write ``figure`` as PNG to ``path`` via a temp file in the same folder, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=".png", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            figure.savefig(stream, format="png", bbox_inches="tight")
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return path


def plot_fde_vs_horizon(
    seconds: Sequence[float],
    curves: Mapping[str, Sequence[float]],
    path,
    ylabel: str = "FDE (m)",
    title: str = "Final displacement error vs horizon",
) -> Path:
    """One line per method: error (metres) against horizon (seconds)."""
    figure = _new_figure()
    axes = figure.add_subplot()
    for name, values in curves.items():
        if len(values) != len(seconds):
            raise ValueError(
                f"curve '{name}' has {len(values)} values but there are {len(seconds)} horizons."
            )
        axes.plot(seconds, values, marker="o", label=name)
    axes.set(xlabel="horizon (s)", ylabel=ylabel, title=title)
    axes.grid(alpha=0.3)
    axes.legend()
    return _save(figure, path)


def plot_reliability(
    bins: ReliabilityBins | Mapping[str, ReliabilityBins],
    path,
    title: str = "Collision-risk reliability",
) -> Path:
    """Reliability diagram (observed frequency vs mean predicted probability) over a
    histogram of bin counts; ``bins`` from ``metrics.reliability_bins``, one or named."""
    curves = {"model": bins} if isinstance(bins, ReliabilityBins) else dict(bins)
    figure = _new_figure(6.0, 6.5)
    top, bottom = figure.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    top.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfectly calibrated")
    for name, curve in curves.items():
        filled = np.asarray(curve.count) > 0
        top.plot(curve.mean_prob[filled], curve.frequency[filled], marker="o", label=name)
        bottom.stairs(curve.count, curve.edges, label=name)
    top.set(ylabel="observed collision frequency", title=title, xlim=(0, 1), ylim=(0, 1))
    top.grid(alpha=0.3)
    top.legend()
    bottom.set(xlabel="predicted collision probability", ylabel="count")
    bottom.set_yscale("log", nonpositive="clip")  # rare collisions: counts span decades
    return _save(figure, path)


def plot_risk_histograms(prob, label, path, title: str = "Predicted collision risk") -> Path:
    """Per-class density of predicted probability: collision (label 1) vs safe (label 0).

    Densities, not counts, so the rare collision class stays visible; n is in the legend.
    """
    prob = np.asarray(prob, dtype=float).ravel()
    label = np.asarray(label).ravel()
    if prob.shape != label.shape:
        raise ValueError(f"prob has {prob.size} entries but label has {label.size}.")
    figure = _new_figure()
    axes = figure.add_subplot()
    edges = np.linspace(0.0, 1.0, 21)
    for value, name, color in ((0, "no collision", "tab:blue"), (1, "collision", EGO_COLOR)):
        chosen = prob[label == value]
        axes.hist(
            chosen,
            bins=edges,
            density=chosen.size > 0,
            alpha=0.5,
            color=color,
            label=f"{name} (n={chosen.size})",
        )
    axes.set(xlabel="predicted collision probability", ylabel="density", title=title)
    axes.legend()
    return _save(figure, path)


OTHER_COLORS = ("C0", "C1", "C2", "C4", "C5", "C6", "C8", "C9")  # tab10 without red / grey


def _vehicle_color(slot: int) -> str:
    return EGO_COLOR if slot == 0 else OTHER_COLORS[(slot - 1) % len(OTHER_COLORS)]


def _draw_boxes(axes, position: np.ndarray, present: np.ndarray) -> None:
    """Vehicle footprints at t0: position (N, 2), present (N,)."""
    for slot in np.flatnonzero(present):
        corner = position[slot] - [VEHICLE_LENGTH_M / 2, VEHICLE_WIDTH_M / 2]
        box = Rectangle(
            corner, VEHICLE_LENGTH_M, VEHICLE_WIDTH_M, alpha=0.35, color=_vehicle_color(slot)
        )
        axes.add_patch(box)


def _draw_track(axes, start, points, valid, **style) -> None:
    """Polyline from ``start`` (2,) through the valid rows of ``points`` (F, 2)."""
    line = np.vstack([start[None], points[valid]])  # (1 + F_valid, 2)
    if len(line) > 1:
        axes.plot(line[:, 0], line[:, 1], **style)


def plot_forecast_scene(
    hist, hist_mask, future, future_mask, samples, path, title: str = "Forecast"
) -> Path:
    """Ego-centric top view of one window.

    hist (H, N, D), hist_mask (H, N), future (F, N, >=2), future_mask (F, N),
    samples (S, F, N, >=2) or None. Draws history (dotted), ground truth (solid, thick)
    and each sampled future (thin, translucent) for every slot present at t0.
    """
    hist, future = np.asarray(hist, float), np.asarray(future, float)
    hist_mask, future_mask = np.asarray(hist_mask, bool), np.asarray(future_mask, bool)
    samples = np.zeros((0, *future.shape[:2], 2)) if samples is None else np.asarray(samples)
    if hist.ndim != 3 or future.ndim != 3 or samples.ndim != 4:
        raise ValueError(
            f"plot_forecast_scene takes one window: hist (H, N, D) {hist.shape}, future "
            f"(F, N, 4) {future.shape}, samples (S, F, N, 2) {samples.shape}."
        )
    figure = _new_figure(11.0, 4.5)
    axes = figure.add_subplot()
    present = hist_mask[-1]
    _draw_boxes(axes, hist[-1, :, :2], present)
    for slot in np.flatnonzero(present):
        color, start = _vehicle_color(slot), hist[-1, slot, :2]
        seen = hist_mask[:, slot]
        axes.plot(hist[seen, slot, 0], hist[seen, slot, 1], ":", color=color, linewidth=1.5)
        for sample in samples:
            _draw_track(
                axes,
                start,
                sample[:, slot, :2],
                future_mask[:, slot],
                color=color,
                alpha=0.25,
                linewidth=0.8,
            )
        _draw_track(
            axes, start, future[:, slot, :2], future_mask[:, slot], color=color, linewidth=2.2
        )
    axes.plot([], [], ":", color="k", label="history")
    axes.plot([], [], "-", color="k", linewidth=2.2, label="ground truth")
    axes.plot([], [], "-", color="k", alpha=0.25, label=f"{len(samples)} sampled futures")
    axes.set(xlabel="x along ego heading (m)", title=title,
             ylabel="y lateral, toward higher lane indices (m)")
    axes.grid(alpha=0.3)
    axes.legend(loc="upper left", fontsize="small")
    return _save(figure, path)


def plot_learning_curve(
    rounds: Sequence[int],
    curves: Mapping[str, Sequence[float]],
    path,
    references: Mapping[str, Mapping[str, float]] | None = None,
    title: str = "Model-based loop: figures per round",
    log_curves: Collection[str] = (),
) -> Path:
    """One panel per named curve (a value per round; NaN leaves a gap), two panels a row;
    ``references[curve][name]`` draws a dashed horizontal line (e.g. a baseline); curves in
    ``log_curves`` get a symmetric-log y axis (a rate of a few % beside baselines near 1)."""
    references = references or {}
    for name, values in curves.items():
        if len(values) != len(rounds):
            raise ValueError(f"curve '{name}' has {len(values)} values but there are "
                             f"{len(rounds)} rounds.")
    rows = max(-(-len(curves) // 2), 1)
    figure = _new_figure(10.0, 2.8 * rows)
    figure.set_layout_engine("constrained")  # titles and axis labels of stacked panels
    panels = figure.subplots(rows, 2, squeeze=False).ravel()
    for axes, (name, values) in zip(panels, curves.items(), strict=False):
        axes.plot(rounds, np.asarray(values, dtype=float), marker="o", color=EGO_COLOR,
                  label="planner" if name in references else None)
        for i, (ref, value) in enumerate(references.get(name, {}).items()):
            axes.axhline(value, linestyle="--", color=OTHER_COLORS[i % len(OTHER_COLORS)],
                         label=ref)
        axes.set(xlabel="round", title=name)
        if name in log_curves:
            axes.set_yscale("symlog", linthresh=0.01)
        axes.set_xticks(list(rounds))
        axes.grid(alpha=0.3)
        if name in references:
            axes.legend(fontsize="small")
    for axes in panels[len(curves):]:
        axes.set_visible(False)
    figure.suptitle(title)
    return _save(figure, path)


def plot_uncertainty_vs_error(
    scores: Mapping[str, np.ndarray],
    error: np.ndarray,
    path,
    title: str = "Window uncertainty vs forecast error",
) -> Path:
    """One scatter panel per window score (B,) against the window's error (B,) in metres,
    the panel titled with the score's name and its Spearman rank correlation."""
    from evaluation.metrics import spearman

    figure = _new_figure(width=3.2 * max(len(scores), 1), height=3.2)
    error = np.asarray(error, dtype=float)
    for i, (name, values) in enumerate(scores.items()):
        values = np.asarray(values, dtype=float)
        if values.shape != error.shape:
            raise ValueError(f"score '{name}' has shape {values.shape} but the error has "
                             f"{error.shape}.")
        valid = np.isfinite(values) & np.isfinite(error)
        axes = figure.add_subplot(1, max(len(scores), 1), i + 1)
        axes.scatter(values[valid], error[valid], s=8, alpha=0.6)
        rho = spearman(np.nan_to_num(values), np.nan_to_num(error), valid)
        axes.set_title(f"{name} (Spearman {rho:.2f})", fontsize=9)
        axes.set_xlabel(name)
        if i == 0:
            axes.set_ylabel("window ADE (m)")
    figure.suptitle(title, fontsize=10)
    return _save(figure, path)
