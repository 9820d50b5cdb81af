"""The planner's view of its decisions, redrawn from a trace (evaluation/trace.py rows).

One frame per decision, in the ego frame at that decision. Left, the road: every vehicle
where it is (solid boxes, the ego red), where the chosen plan's forecast puts it at each
future step (translucent boxes on a dashed path; the ego's path is its plan) and where it
really was at the next decision (dashed outlines). Right, one bar per first action: the
lowest collision probability of the candidates starting with it (the risk budget as a
line) and their highest expected return; the executed action is outlined in black.
"""

from __future__ import annotations

import math

import numpy as np

from evaluation.road_view import (
    clear_artists,
    draw_box,
    draw_road,
    figure_image,
    new_figure,
    slot_color,
    span,
)
from models.candidates import ACTION_NAMES

SHORT_NAMES = ("LEFT", "IDLE", "RIGHT", "FASTER", "SLOWER")  # ACTION_NAMES, in bar labels
X_RANGE = (-60.0, 160.0)  # m: the widest view along the ego's heading
FIGSIZE = (12.0, 4.2)


def slots_of(row: dict) -> int:
    """N: the number of slots the row's x<n> columns hold."""
    n = 0
    while f"x{n}" in row:
        n += 1
    return n


def horizon_of(row: dict) -> int:
    """F: the forecast steps the row's plan_x0_<f> columns hold."""
    f = 0
    while f"plan_x0_{f + 1}" in row:
        f += 1
    return f


def points(row: dict, prefix: str, suffix: str = "") -> np.ndarray:
    """(N, 2) positions of the columns <prefix>x<n><suffix>, NaN where absent."""
    return np.array([[row.get(f"{prefix}{axis}{n}{suffix}", math.nan) for axis in "xy"]
                     for n in range(slots_of(row))], dtype=float)


def plan_track(row: dict) -> np.ndarray:
    """(F+1, N, 2): where each slot is, then the plan's forecast of each step."""
    steps = [points(row, "plan_", f"_{f}") for f in range(1, horizon_of(row) + 1)]
    return np.stack([points(row, ""), *steps])


def view_xlim(rows: list[dict]) -> tuple[float, float]:
    """One x range for all frames: every position the rows hold, within X_RANGE."""
    xs = np.concatenate([np.concatenate([plan_track(r)[..., 0].ravel(),
                                         points(r, "next_")[:, 0]]) for r in rows])
    low, high = span(xs, -30.0, 60.0)
    return max(low, X_RANGE[0]), min(high, X_RANGE[1])


def draw_road_view(axes, row: dict, xlim: tuple[float, float]) -> None:
    lanes = np.array([row[k] for k in row if k.startswith("lane")], dtype=float)
    track, seen_next = plan_track(row), points(row, "next_")
    clear_artists(axes)
    ys = np.concatenate([track[..., 1].ravel(), seen_next[:, 1]])
    draw_road(axes, lanes, xlim, ys, row.get("tilt", 0.0))
    for slot in np.flatnonzero(np.isfinite(track[0, :, 0])):
        color = slot_color(slot)
        path = track[:, slot][np.isfinite(track[:, slot, 0])]
        axes.plot(path[:, 0], path[:, 1], linestyle="--", color=color,
                  linewidth=1.8 if slot == 0 else 1.0)
        for step, xy in enumerate(path[1:], start=1):
            draw_box(axes, xy, color, alpha=0.45 / step)
        draw_box(axes, track[0, slot], color)
        if np.isfinite(seen_next[slot]).all():
            draw_box(axes, seen_next[slot], color, outline=True)


BARS = (("risk", "tab:red", "lowest risk (: budget)"), ("return", "tab:blue", "highest return"))


def setup_axes(road, bars, risk_budget: float) -> None:
    """Labels, ticks and titles that stay the same from frame to frame."""
    road.set_xlabel("x along the ego's heading (m)", fontsize="small")
    road.set_ylabel("y lateral (m)", fontsize="small")
    road.tick_params(labelsize="x-small")
    positions = np.arange(len(ACTION_NAMES))
    for axes, (_, _, title) in zip(bars, BARS, strict=True):
        axes.set_yticks(positions, SHORT_NAMES if axes is bars[0] else [""] * len(positions),
                        fontsize="x-small")
        axes.set_ylim(len(positions) - 0.5, -0.5)
        axes.tick_params(axis="x", labelsize="x-small")
        axes.set_title(title, fontsize="small")
    bars[0].set_xlim(0, 1)


def draw_bars(bars, row: dict, risk_budget: float) -> None:
    """Per first action: lowest risk and highest return; the executed action outlined."""
    positions = np.arange(len(ACTION_NAMES))
    widths = [2.0 if name == row["action"] else 0.0 for name in ACTION_NAMES]
    for axes, (name, color, _) in zip(bars, BARS, strict=True):
        clear_artists(axes)
        values = np.array([row.get(f"{name}_{a}", math.nan) for a in ACTION_NAMES], dtype=float)
        axes.barh(positions, np.nan_to_num(values), color=color, alpha=0.7, edgecolor="k",
                  linewidth=widths)
        for i in np.flatnonzero(np.isnan(values)):
            axes.text(0, i, " not scored", va="center", fontsize="x-small", color="grey")
    bars[0].axvline(risk_budget, color="k", linestyle=":", linewidth=1)
    bars[1].autoscale_view()


def frame_title(row: dict, seed: int) -> str:
    surprise = row.get("surprise", math.nan)
    checked = "" if math.isnan(surprise) else f", surprise {surprise:.1f} m"
    plan = f" (plan {row['plan']})" if row.get("plan") else ""
    crash = "  -  CRASH after this step" if row.get("crashed") == 1 else ""
    return (f"seed {seed}, decision {int(row['step'])}: {row['mode']} chose {row['action']}"
            f"{plan}{checked}{crash}")


LEGEND = ("solid: where vehicles are (ego red)  ·  translucent on dashed: the chosen plan's "
          "forecast, one box per step  ·  dashed outline: where they really were one step later")


def planner_view_frames(rows: list[dict], seed: int, risk_budget: float) -> list[np.ndarray]:
    """RGB frames (H, W, 3) of fixed size, one per trace row (decision)."""
    if not rows:
        raise ValueError(f"the trace of seed {seed} holds no decision to draw")
    figure = new_figure(*FIGSIZE)
    grid = figure.add_gridspec(1, 3, width_ratios=(5.0, 1.0, 1.0), left=0.06, right=0.99,
                               top=0.86, bottom=0.2, wspace=0.12)
    road, *bars = (figure.add_subplot(grid[0, i]) for i in range(3))
    setup_axes(road, bars, risk_budget)
    figure.text(0.06, 0.02, LEGEND, fontsize="x-small", color="dimgrey")
    xlim, frames = view_xlim(rows), []
    for row in rows:
        draw_road_view(road, row, xlim)
        draw_bars(bars, row, risk_budget)
        figure.suptitle(frame_title(row, seed), fontsize="medium")
        frames.append(figure_image(figure))
    return frames
