"""Top-down road views in the ego frame: lanes and vehicle boxes, drawn frame by frame.

The ego frame of a decision (or a window's t0): origin at the ego, x along its heading,
y lateral toward higher lane indices (highway-env's lane 0 is on top, so y grows
downwards on screen, as in the simulator's own render). Figures are drawn on matplotlib's
Agg canvas at a fixed pixel size, so the frames of one picture stack into a GIF.
"""

from __future__ import annotations

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from evaluation.plots import EGO_COLOR, OTHER_COLORS, VEHICLE_LENGTH_M, VEHICLE_WIDTH_M

LANE_WIDTH_M = 4.0  # highway-env's StraightLane.DEFAULT_WIDTH
ROAD_COLOR = "#ececec"
DPI = 100


def slot_color(slot: int) -> str:
    """Slot 0 (the ego) red; the neighbours cycle through OTHER_COLORS."""
    return EGO_COLOR if slot == 0 else OTHER_COLORS[(slot - 1) % len(OTHER_COLORS)]


def new_figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(figure)
    return figure


def figure_image(figure: Figure) -> np.ndarray:
    """The figure's pixels (H, W, 3) uint8 at its fixed size (no tight bounding box)."""
    figure.canvas.draw()
    return np.asarray(figure.canvas.buffer_rgba())[..., :3].copy()


def clear_artists(axes: Axes) -> None:
    """Remove what was drawn (boxes, lines, texts), keeping the axes, ticks and titles:
    much cheaper per frame than `axes.clear()`."""
    for artist in [*axes.patches, *axes.lines, *axes.texts, *axes.collections]:
        artist.remove()


def draw_road(axes: Axes, lane_offsets: np.ndarray, xlim: tuple[float, float],
              ys: np.ndarray, tilt: float = 0.0) -> None:
    """Grey road, dashed lane lines and solid edges of a straight road whose lane centres
    lie `lane_offsets` (L,) metres from the ego, across the road (NaN entries are no lane),
    the ego heading `tilt` rad off the road's direction (the road then runs at -tilt in the
    ego frame). x limits `xlim`; y limits (downwards) cover the road beside the ego and the
    finite lateral positions `ys`."""
    offsets = np.asarray(lane_offsets, dtype=float)
    offsets = np.sort(offsets[np.isfinite(offsets)])
    half = LANE_WIDTH_M / 2
    edges = np.concatenate([offsets[:1] - half, offsets[-1:] + half]) / np.cos(tilt)
    top, bottom = span(np.concatenate([edges, np.ravel(ys)]), -3.0, 3.0, pad=1.5)
    axes.set_xlim(*xlim)
    axes.set_ylim(bottom, top)
    if len(offsets) == 0:
        return
    x = np.array(xlim)
    slope = -np.tan(tilt)  # a line `offset` across the road: y = offset / cos(tilt) - tan(tilt) x
    axes.fill_between(x, edges[0] + slope * x, edges[1] + slope * x, color=ROAD_COLOR,
                      zorder=0, linewidth=0)
    for edge in edges:
        axes.plot(x, edge + slope * x, color="k", linewidth=1.2, zorder=1)
    for line in (offsets[1:] + offsets[:-1]) / 2 / np.cos(tilt):
        axes.plot(x, line + slope * x, color="grey", linewidth=0.8, linestyle=(0, (6, 6)),
                  zorder=1)


def draw_box(axes: Axes, xy: np.ndarray, color: str, alpha: float = 1.0,
             outline: bool = False, size: tuple[float, float] | None = None) -> None:
    """One vehicle footprint centred at xy (2,), filled, or an outline only (dashed)."""
    length, width = size if size is not None else (VEHICLE_LENGTH_M, VEHICLE_WIDTH_M)
    corner = np.asarray(xy, dtype=float) - [length / 2, width / 2]
    if outline:
        box = Rectangle(corner, length, width, fill=False, edgecolor=color, linewidth=1.4,
                        linestyle=(0, (2, 1.5)), zorder=4)
    else:
        box = Rectangle(corner, length, width, facecolor=color, edgecolor="k",
                        linewidth=0.5 if alpha >= 1 else 0.0, alpha=alpha, zorder=3)
    axes.add_patch(box)


def span(values: np.ndarray, low: float, high: float, pad: float = 8.0) -> tuple[float, float]:
    """(min - pad, max + pad) of the finite `values`, at least [low, high]."""
    finite = np.asarray(values, dtype=float)
    finite = finite[np.isfinite(finite)]
    if len(finite) == 0:
        return low, high
    return min(low, float(finite.min()) - pad), max(high, float(finite.max()) + pad)
