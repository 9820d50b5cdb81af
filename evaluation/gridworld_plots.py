"""Pictures of the gridworld example: a PNG per round, a GIF over rounds, imagination vs real.

Shape letters: Z states, H map rows, W map columns. Figures are drawn with matplotlib's Agg
canvas directly (no pyplot, no display needed) at a fixed size, so every PNG of a run has the
same pixel size and the frames stack into a GIF.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import imageio.v3 as iio
import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Colormap, ListedColormap
from matplotlib.figure import Figure

from evaluation.gridworld_env import MOVES, GridWorld

FIGSIZE = (6.0, 5.0)
DPI = 100
WALL_COLOR = "#3a3a3a"
FLOOR_COLOR = "#f2f2f2"


def value_grid(env: GridWorld, values: np.ndarray) -> np.ndarray:
    """Spread per-state values of shape (Z,) onto the map: (H, W), nan on walls."""
    grid = np.full(env.shape, np.nan)
    for z, (row, col) in enumerate(env.cells):
        grid[row, col] = values[z]
    return grid


def plot_round(
    env: GridWorld,
    values: np.ndarray,
    policy: np.ndarray,
    path: Sequence[int],
    title: str,
    out_png: Path,
    value_range: tuple[float, float],
    value_label: str = "V(z) under the learned model",
) -> Path:
    """Save one round's picture: value map, policy arrows, S, G and the planned path.

    Args:
        env: the true environment (only its map is drawn).
        values: V under the learned model, shape (Z,).
        policy: greedy action per state, shape (Z,).
        path: the planned path as states, e.g. from ``models.gridworld.most_likely_path``.
        title: text above the map.
        out_png: where to write the PNG.
        value_range: (vmin, vmax) of the colour scale, fixed across rounds; larger values
            (optimistic guesses about untried moves) show in the "over" colour.
        value_label: colour bar label.
    """
    fig = Figure(figsize=FIGSIZE, dpi=DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    image = _draw_values(ax, env, values, value_range)
    fig.colorbar(image, ax=ax, shrink=0.8, extend="max", label=value_label)
    _draw_arrows(ax, env, policy)
    _draw_path(ax, env, path, color="#d62728")
    _draw_start_goal(ax, env)
    ax.set_title(title, fontsize=10)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png)
    return out_png


def rounds_gif(png_paths: Sequence[Path], out_gif: Path, seconds_per_frame: float = 1.0) -> Path:
    """Stack the per-round PNGs (all the same size) into a looping GIF."""
    if not png_paths:
        raise ValueError(f"rounds_gif got no PNG files to put into {out_gif}.")
    frames = [iio.imread(path)[..., :3] for path in png_paths]  # each (H_px, W_px, 3)
    return _write_gif(frames, out_gif, seconds_per_frame)


def imagination_gif(
    env: GridWorld,
    policy: np.ndarray,
    imagined: Sequence[Sequence[int]],
    real: Sequence[Sequence[int]],
    out_gif: Path,
    seconds_per_frame: float = 0.25,
) -> Path:
    """GIF with episodes sampled from the learned model (left) beside real ones (right).

    Args:
        env: the true environment (its map, and which move each action intends).
        policy: the action per state all episodes followed, shape (Z,).
        imagined: episodes (lists of states) sampled purely from the learned model; they
            never touched the true environment.
        real: as many episodes of the same policy in the true environment.
    Episode k of both sides plays at the same time; the shorter one holds its last frame.
    Each panel counts its slips: moves that did not land where the intended move would have.
    """
    if len(imagined) != len(real) or not imagined:
        raise ValueError(
            f"imagination_gif needs the same positive number of imagined and real episodes, "
            f"got {len(imagined)} and {len(real)}."
        )
    fig, canvas, panels = _imagination_figure(env)
    frames = []
    for number, pair in enumerate(zip(imagined, real, strict=True), start=1):
        slips = [count_slips(env, policy, states) for states in pair]
        for t in range(max(len(states) for states in pair)):
            for panel, states, slip in zip(panels, pair, slips, strict=True):
                _show_step(env, panel, states, slip, t, f"episode {number}/{len(real)}")
            canvas.draw()
            frames.append(np.asarray(canvas.buffer_rgba())[..., :3].copy())  # (H_px, W_px, 3)
    return _write_gif(frames, out_gif, seconds_per_frame)


def count_slips(env: GridWorld, policy: np.ndarray, states: Sequence[int]) -> np.ndarray:
    """Running number of slips after each step of ``states``, shape (len(states),)."""
    moves = zip(states[:-1], states[1:], strict=True)
    slipped = [z2 != env.move(z, int(policy[z])) for z, z2 in moves]
    return np.concatenate([[0], np.cumsum(slipped, dtype=int)])


def _imagination_figure(env: GridWorld) -> tuple[Figure, FigureCanvasAgg, list[dict]]:
    """One figure reused for every frame: the map drawn once, trail and agent updated."""
    fig = Figure(figsize=(9.0, 3.6), dpi=DPI)
    canvas = FigureCanvasAgg(fig)
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.03, top=0.84, wspace=0.08)
    names = ("imagined: learned model only", "real: true environment")
    colors = ("#1f77b4", "#d62728")
    panels = []
    for index, (name, color) in enumerate(zip(names, colors, strict=True)):
        ax = fig.add_subplot(1, 2, index + 1)
        _draw_floor(ax, env)
        _draw_start_goal(ax, env)
        (trail,) = ax.plot([], [], "-o", color=color, linewidth=3, markersize=4, alpha=0.8)
        (agent,) = ax.plot([], [], "o", markersize=14, color=color, markeredgecolor="black",
                          zorder=5)
        panels.append({"ax": ax, "name": name, "trail": trail, "agent": agent})
    return fig, canvas, panels


def _show_step(
    env: GridWorld, panel: dict, states: Sequence[int], slips: np.ndarray, t: int, label: str
) -> None:
    step = min(t, len(states) - 1)
    rows, cols = zip(*(env.cells[z] for z in states[: step + 1]), strict=True)
    panel["trail"].set_data(cols, rows)
    panel["agent"].set_data([cols[-1]], [rows[-1]])
    title = f"{panel['name']}\n{label}, step {step}, slips {slips[step]}"
    panel["ax"].set_title(title, fontsize=10)


def _write_gif(frames: Sequence[np.ndarray], out_gif: Path, seconds_per_frame: float) -> Path:
    out_gif.parent.mkdir(parents=True, exist_ok=True)
    stacked = np.stack(frames)  # (frames, H_px, W_px, 3)
    iio.imwrite(out_gif, stacked, extension=".gif", duration=seconds_per_frame * 1000, loop=0)
    return out_gif


def _draw_values(ax: Axes, env: GridWorld, values: np.ndarray, value_range: tuple[float, float]):
    grid = np.ma.masked_invalid(value_grid(env, values))
    cmap = _value_cmap()
    vmin, vmax = value_range
    image = ax.imshow(grid, cmap=cmap, vmin=vmin, vmax=vmax)
    _style_axes(ax, env)
    return image


def _value_cmap() -> Colormap:
    # walls are "bad" (nan); "over" marks optimistic values above anything real
    return colormaps["viridis"].with_extremes(bad=WALL_COLOR, over="#ff7f0e")


def _draw_floor(ax: Axes, env: GridWorld) -> None:
    floor = np.ma.masked_invalid(np.where(env.walls, np.nan, 0.0))
    cmap = ListedColormap([FLOOR_COLOR]).with_extremes(bad=WALL_COLOR)
    ax.imshow(floor, cmap=cmap, vmin=0.0, vmax=1.0)
    _style_axes(ax, env)


def _style_axes(ax: Axes, env: GridWorld) -> None:
    height, width = env.shape
    ax.hlines(np.arange(-0.5, height), -0.5, width - 0.5, colors="white", linewidth=0.5)
    ax.vlines(np.arange(-0.5, width), -0.5, height - 0.5, colors="white", linewidth=0.5)
    ax.set_xticks([])
    ax.set_yticks([])


def _draw_arrows(ax: Axes, env: GridWorld, policy: np.ndarray) -> None:
    for z, (row, col) in enumerate(env.cells):
        if z == env.goal:
            continue
        d_row, d_col = MOVES[int(policy[z])]
        ax.annotate(
            "", xy=(col + 0.3 * d_col, row + 0.3 * d_row), xytext=(col, row),
            arrowprops={"arrowstyle": "->", "color": "white", "lw": 1.0},
        )


def _draw_path(ax: Axes, env: GridWorld, path: Sequence[int], color: str) -> None:
    rows, cols = zip(*(env.cells[z] for z in path), strict=True)
    ax.plot(cols, rows, "-o", color=color, linewidth=3, markersize=4, alpha=0.8)


def _draw_start_goal(ax: Axes, env: GridWorld) -> None:
    for z, label in ((env.start, "S"), (env.goal, "G")):
        row, col = env.cells[z]
        ax.text(col, row, label, ha="center", va="center", fontsize=14, fontweight="bold",
                color="black", bbox={"boxstyle": "round", "facecolor": "white", "alpha": 0.8})
