"""Still frames (PNG) of a run's pictures, for documentation (`drivecast pictures`).

From a complete evaluate stage: the last frame (t0 + F) of each `imagination_<set>.gif`.
From a complete simulate stage, redrawn from the per-decision traces alone (nothing is
run again): the middle decision of the first planner episode without a collision
(`planner_view.png`) and the last decision of the first one with a collision
(`crash_view.png`, when an episode crashed).
"""

from __future__ import annotations

import csv
import os
import tempfile
from pathlib import Path

import imageio.v3 as iio
import numpy as np

from evaluation.planner_view import planner_view_frames
from evaluation.trace import read_trace


def write_png(path: Path, image: np.ndarray) -> Path:
    """Write an RGB image (H, W, 3) as PNG via a temp file in the same folder, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=".png", dir=path.parent)
    os.close(handle)
    try:
        iio.imwrite(temp, image, extension=".png")
        os.replace(temp, path)
    finally:
        Path(temp).unlink(missing_ok=True)
    return path


def imagination_stills(evaluate_dir: Path, out: Path) -> list[Path]:
    """imagination_<set>.png: the last frame of each imagination GIF."""
    return [write_png(out / f"{gif.stem}.png", iio.imread(gif)[-1])
            for gif in sorted(evaluate_dir.glob("imagination_*.gif"))]


def planner_episodes(simulate_dir: Path) -> list[tuple[int, bool]]:
    """(seed, collided) of each planner episode, from the stage's episodes.csv."""
    with (simulate_dir / "episodes.csv").open(newline="") as handle:
        return [(int(row["seed"]), row["collided"] == "1") for row in csv.DictReader(handle)
                if row["policy"] == "planner"]


def planner_stills(simulate_dir: Path, out: Path, risk_budget: float) -> list[Path]:
    """planner_view.png (a safe episode's middle decision) and crash_view.png (a crashed
    episode's last decision), each redrawn from its trace."""
    episodes, files = planner_episodes(simulate_dir), []
    for name, collided in (("planner_view", False), ("crash_view", True)):
        seeds = [seed for seed, crashed in episodes if crashed == collided]
        if seeds:
            rows = read_trace(simulate_dir / "episodes" / f"{seeds[0]}.csv")
            row = rows[-1] if collided else rows[len(rows) // 2]
            (frame,) = planner_view_frames([row], seeds[0], risk_budget)
            files.append(write_png(out / f"{name}.png", frame))
    return files


def write_example_frames(evaluate_dir: Path, simulate_dir: Path, out: Path,
                         risk_budget: float) -> list[Path]:
    """Every still of the module docstring in `out`; returns their paths."""
    for folder, needed in ((evaluate_dir, "imagination_test.gif"),
                           (simulate_dir, "episodes")):
        if not (folder / needed).exists():
            raise FileNotFoundError(f"{folder} holds no {needed}: run the stage again with "
                                    f"--force to draw its pictures")
    return imagination_stills(evaluate_dir, out) + planner_stills(simulate_dir, out,
                                                                  risk_budget)
