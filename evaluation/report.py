"""The evaluation report: `report.md` plus PNG figures, readable without MLflow."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from evaluation import plots
from evaluation.forecast_eval import TestsetResult

HEADLINE = ("windows", "ade", "miss_rate", "nll_xy", "risk_auroc", "risk_auroc_head",
            "risk_auroc_overlap", "risk_ap", "risk_brier",
            "risk_ece", "window_risk_auroc", "ttc_window_risk_auroc", "collision_rate",
            "uncertainty_error_spearman", "mean_uncertainty", "calibrated_nll_xy")


def fmt(value: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def fde_table(results: dict[str, TestsetResult]) -> list[str]:
    """One row per test set and forecaster: FDE at each horizon second."""
    seconds = max((r.seconds for r in results.values()), key=len)
    lines = ["| test set | forecaster | " + " | ".join(f"FDE {s}s (m)" for s in seconds) + " |",
             "|---|---|" + "---|" * len(seconds)]
    for name, result in results.items():
        for forecaster, curve in result.fde_curves.items():
            cells = [fmt(v) for v in curve] + ["n/a"] * (len(seconds) - len(curve))
            lines.append(f"| {name} | {forecaster} | " + " | ".join(cells) + " |")
    return lines


def figure_table(results: dict[str, TestsetResult]) -> list[str]:
    names = list(results)
    lines = ["| figure | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for key in HEADLINE:
        lines.append(f"| {key} | " + " | ".join(fmt(results[n].summary.get(key)) for n in names)
                     + " |")
    min_keys = sorted({k for r in results.values() for k in r.summary
                       if k.startswith(("min_ade", "min_fde"))})
    for key in min_keys:
        lines.append(f"| {key} | " + " | ".join(fmt(results[n].summary.get(key)) for n in names)
                     + " |")
    return lines


def draw_figures(results: dict[str, TestsetResult], scenes: list[dict], out: Path) -> list[str]:
    """Write the PNGs; returns their file names in report order."""
    main = next(iter(results.values()))
    files = ["fde_vs_horizon.png", "reliability.png", "risk_histogram.png"]
    plots.plot_fde_vs_horizon(main.seconds, main.fde_curves, out / files[0],
                              title="FDE of neighbours within 50 m (held-out test episodes)")
    plots.plot_reliability({n: r.reliability for n, r in results.items()}, out / files[1],
                           title="Per-step collision probability: reliability")
    plots.plot_risk_histograms(main.risk_prob, main.risk_label, out / files[2],
                               title="Predicted per-step collision probability")
    for i, scene in enumerate(scenes):
        name = f"scene_{i}.png"
        plots.plot_forecast_scene(scene["hist"], scene["hist_mask"], scene["future"],
                                  scene["future_mask"], scene["samples"], out / name,
                                  title=scene["title"])
        files.append(name)
    return files


def coverage_table(result: TestsetResult) -> list[str]:
    """Coverage of the 50% and 90% position regions per horizon second, raw and calibrated."""
    lines = ["| region | " + " | ".join(f"{s}s" for s in result.seconds) + " |",
             "|---|" + "---|" * len(result.seconds)]
    for name, curve in result.coverage.items():
        kind, level = name.rstrip("0123456789"), name[len(name.rstrip("0123456789")):]
        lines.append(f"| {level}% {kind} | " + " | ".join(fmt(float(v)) for v in curve) + " |")
    return lines


def calibration_section(results: dict[str, TestsetResult], calibration: dict[str, float],
                        out: Path) -> list[str]:
    """Per test set: the coverage table, the uncertainty-vs-error plot
    (`uncertainty_<set>.png`), the uncertainty–error Spearmans and, for a shifted set, the
    OOD AUROC of each window score against the held-out test windows."""
    scales = ", ".join(f"{k.removeprefix('variance_scale_')}: {fmt(v)}"
                       for k, v in calibration.items() if k.startswith("variance_scale_"))
    lines = ["## Calibration and uncertainty per test set\n",
             f"Position variance scale per horizon second, fitted on "
             f"{calibration.get('calibration_windows', 'n/a')} validation windows so that the "
             f"90% region covers 90% there (means unchanged): {scales or 'n/a'}. Coverage: "
             f"share of the true positions of the neighbours within 50 m inside the model's "
             f"region of that probability.\n"]
    for name, result in results.items():
        lines += [f"### {name}\n", *coverage_table(result), ""]
        if result.window_error is not None and result.window_scores:
            figure = f"uncertainty_{name}.png"
            plots.plot_uncertainty_vs_error(result.window_scores, result.window_error,
                                            out / figure, title=f"{name}: window uncertainty "
                                            f"vs forecast error")
            lines += [f"![{figure}]({figure})", ""]
        spearmans = [k for k in result.summary if k.endswith("error_spearman")]
        ood = [k for k in result.summary if k.startswith("ood_auroc")]
        lines += ["| figure | value |", "|---|---|",
                  *[f"| {k} | {fmt(result.summary[k])} |" for k in spearmans + ood], ""]
    return lines


def draw_imagination(scene_sets: dict[str, list[dict]], dt: float, out: Path) -> list[str]:
    """imagination_<set>.gif per test set (evaluation/imagination.py), one frame per future
    step at real time; returns their file names."""
    from evaluation.closed_loop import write_gif
    from evaluation.imagination import imagination_frames

    files = []
    for name, scenes in scene_sets.items():
        if scenes:
            files.append(f"imagination_{name}.gif")
            write_gif(out / files[-1], imagination_frames(scenes, dt, name), fps=1.0 / dt)
    return files


def write_report(results: dict[str, TestsetResult], scene_sets: dict[str, list[dict]],
                 out: Path, header: str, dt: float,
                 calibration: dict[str, float] | None = None) -> Path:
    """report.md with the tables and every figure; `scene_sets` the picked windows of each
    test set (the first set's are also drawn as stills), `dt` seconds per step,
    `calibration` the fitted variance scales (`variance_scale_<s>s`); returns its path."""
    from pipeline.artifacts import write_text_atomic

    figures = draw_figures(results, next(iter(scene_sets.values()), []), out)
    figures += draw_imagination(scene_sets, dt, out)
    lines = [f"# drivecast evaluation\n\n{header}\n", "## Forecast error vs horizon\n",
             *fde_table(results), "", "## Figures per test set\n", *figure_table(results), "",
             "`risk_*` are per future step, for the model's risk source (`model.risk`); "
             "`risk_auroc_head` / `risk_auroc_overlap` score the learned collision head and "
             "the forecast-overlap risk alone; `window_risk_auroc` scores collision within the "
             "horizon per window, `ttc_window_risk_auroc` the time-to-collision baseline on "
             "the same windows. `risk_ece`: 15 equal-width bins, positive-class reliability.\n",
             *calibration_section(results, calibration or {}, out),
             "## Pictures\n",
             "`imagination_<set>.gif`: per test set, the busiest held-out windows rolled out "
             "by the world model under the actions really taken; left what happened, right "
             "the imagined samples (how to read them: docs/pictures.md).\n",
             *[f"![{f}]({f})" for f in figures]]
    path = out / "report.md"
    write_text_atomic(path, "\n".join(lines) + "\n")
    return path


def pick_scenes(a: dict[str, np.ndarray], samples: np.ndarray, count: int) -> list[dict]:
    """The `count` busiest windows (the most neighbours present), one per episode while
    episodes last, those whose whole horizon lies within the episode first; with the lane
    centres (their offsets across the road) and the ego's heading off the road for a
    simulator road (recorded roads' directions are not in the windows) and the vehicle
    sizes, when the windows carry them."""
    order = np.lexsort((-a["hist_mask"][:, -1].sum(1), ~a["step_mask"].all(1)))
    _, first = np.unique(a["episode"][order], return_index=True)
    repeat = np.ones(len(order), dtype=bool)
    repeat[first] = False
    busy = np.concatenate([order[np.sort(first)], order[repeat]])[:count]
    return [scene_of(a, samples, b) for b in busy]


def scene_of(a: dict[str, np.ndarray], samples: np.ndarray, b: int) -> dict:
    """Window `b` as a scene for plots.plot_forecast_scene and evaluation/imagination.py."""
    scene = {"hist": a["hist"][b], "hist_mask": a["hist_mask"][b], "future": a["future"][b],
             "future_mask": a["future_mask"][b], "samples": samples[:, b],
             "title": f"episode {int(a['episode'][b])}, step {int(a['step'][b])}"}
    if "size" in a:
        scene["size"] = a["size"][b]
    if "lane_centers" in a:
        tilt = 0.0 if "group" in a else float(a["ego_pose"][b, 2])
        scene |= {"lanes": a["lane_centers"][b] / np.cos(tilt), "tilt": tilt}
    return scene
