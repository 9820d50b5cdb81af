"""Re-encode a simulator dataset as recorded data, to exercise the recorded ingest at scale.

    python -m pipeline.recorded.export DATASET_DIR OUT.csv [--format ngsim|generic]
        [--frequency 10] [--angle 30] [--gap 60]

`ngsim`: NGSIM US-101 layout: every vehicle resampled (linearly) to `--frequency` Hz,
feet and ft/s, Local_Y along the road and Local_X to the right at the front centre,
Global_Time in ms, Lane_ID from 1. Vehicle ids restart in every episode, as NGSIM reuses
ids: the reader tells them apart by the time gap between episodes (`--gap` seconds).
`generic`: map coordinates (+y to the left, east/north) rotated by `--angle` degrees,
centre positions, yaw in degrees, ISO 8601 timestamps, text ids, no lanes, at the
simulation frequency (the reader resamples).

The traffic is highway-env's: this is simulator data in recorded clothes, not real traffic.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv

from pipeline.dataset import RECORDED_KEY, read_dataset
from pipeline.errors import DrivecastError
from pipeline.recorded.mapping import LENGTH_UNITS
from pipeline.recorded.tracks import grid_frames, resample

FOOT = LENGTH_UNITS["ft"]  # m
NGSIM_EPOCH_MS = 1_118_846_980_200  # a US-101 Global_Time, 2005-06-15 07:49:40.2 (UTC)
GENERIC_EPOCH = dt.datetime(2024, 5, 2, 8, 0, tzinfo=dt.timezone.utc)
MOTION_COLUMNS = ("x", "y", "vx", "vy", "heading")  # the motion columns resample() takes


def vehicle_series(frames: dict[str, np.ndarray], rows: np.ndarray, frequency: float,
                   out_frequency: float | None) -> dict[str, np.ndarray]:
    """One vehicle's states in one episode, resampled to out_frequency (None: as recorded)
    by the recorded ingest's own resampling (pipeline.recorded.tracks.resample).

    Returns columns t (s since the episode start), x, y, vx, vy, heading, lane, length, width.
    """
    t = frames["frame"][rows] / frequency
    grid, grid_hz = (frames["frame"][rows], frequency) if out_frequency is None else \
        (grid_frames(t, out_frequency), out_frequency)
    motion = np.stack([frames[c][rows] for c in MOTION_COLUMNS], axis=-1).astype(np.float64)
    states = resample(t, motion, frames["lane"][rows], grid, grid_hz)  # (T', 6)
    series = {"t": grid / grid_hz} | dict(zip(MOTION_COLUMNS, states[:, :5].T, strict=True))
    series["lane"] = states[:, 5].astype(frames["lane"].dtype)
    series["length"] = np.full(len(grid), float(frames["length"][rows][0]))
    series["width"] = np.full(len(grid), float(frames["width"][rows][0]))
    return series


def episode_series(frames: dict[str, np.ndarray], frequency: float,
                   out_frequency: float | None):
    """Yield (episode, vehicle id, series) in episode then vehicle order."""
    order = np.lexsort((frames["frame"], frames["vehicle_id"], frames["episode"]))
    keys = np.stack([frames["episode"][order], frames["vehicle_id"][order]], axis=1)
    starts = np.flatnonzero(np.r_[True, np.any(keys[1:] != keys[:-1], axis=1)])
    for rows in np.split(order, starts[1:]):
        series = vehicle_series(frames, rows, frequency, out_frequency)
        if len(series["t"]):
            yield int(frames["episode"][rows[0]]), int(frames["vehicle_id"][rows[0]]), series


def episode_offsets(frames: dict[str, np.ndarray], frequency: float, gap: float) -> dict:
    """Start time (s) of each episode on one long clock, `gap` seconds apart."""
    offsets, clock = {}, 0.0
    for episode in np.unique(frames["episode"]):
        offsets[int(episode)] = clock
        clock += frames["frame"][frames["episode"] == episode].max() / frequency + gap
    return offsets


def ngsim_columns(vehicle: int, s: dict[str, np.ndarray], start: float,
                  frequency: float) -> dict[str, np.ndarray]:
    """NGSIM rows of one vehicle: front centre in feet, ms clock, 1-based lanes."""
    half = 0.5 * s["length"]
    clock = start + s["t"]
    speed = np.hypot(s["vx"], s["vy"])
    accel = np.gradient(speed, s["t"]) if len(speed) > 1 else np.zeros_like(speed)
    return {"Vehicle_ID": np.full(len(clock), vehicle + 1),
            "Frame_ID": np.rint(clock * frequency).astype(np.int64),
            "Total_Frames": np.full(len(clock), len(clock)),
            "Global_Time": NGSIM_EPOCH_MS + np.rint(clock * 1000).astype(np.int64),
            "Local_X": np.round((s["y"] + half * np.sin(s["heading"])) / FOOT, 3),
            "Local_Y": np.round((s["x"] + half * np.cos(s["heading"])) / FOOT, 3),
            "v_Length": np.round(s["length"] / FOOT, 2), "v_Width": np.round(s["width"] / FOOT, 2),
            "v_Class": np.full(len(clock), 2), "v_Vel": np.round(speed / FOOT, 2),
            "v_Acc": np.round(accel / FOOT, 2), "Lane_ID": s["lane"].astype(np.int64) + 1}


def generic_columns(episode: int, vehicle: int, s: dict[str, np.ndarray], start: float,
                    angle_deg: float) -> dict[str, np.ndarray]:
    """Generic rows of one vehicle: map axes (y mirrored to point left), rotated by angle."""
    a = np.deg2rad(angle_deg)
    x, y = s["x"], -s["y"]  # highway-env's +y is the driver's right; a map's +y is its left
    stamps = [(GENERIC_EPOCH + dt.timedelta(seconds=float(c))).isoformat(timespec="milliseconds")
              .replace("+00:00", "Z") for c in start + s["t"]]
    return {"timestamp": np.array(stamps),
            "object_id": np.full(len(x), f"veh-{episode}-{vehicle}"),
            "east_m": np.round(np.cos(a) * x - np.sin(a) * y, 4),
            "north_m": np.round(np.sin(a) * x + np.cos(a) * y, 4),
            "yaw_deg": np.round(np.rad2deg(a - s["heading"]), 4),
            "length_m": s["length"], "width_m": s["width"]}


def export(dataset_dir: str | Path, out: str | Path, fmt: str = "ngsim",
           frequency: float = 10.0, angle: float = 30.0, gap: float = 60.0) -> int:
    """Write `out` (CSV) from the simulator dataset; returns the number of rows."""
    data = read_dataset(dataset_dir)
    if RECORDED_KEY in data.manifest:
        raise DrivecastError(f"{dataset_dir}: is already a recorded dataset")
    sim_hz = float(data.simulation_frequency)
    offsets = episode_offsets(data.frames, sim_hz, gap)
    parts = []
    for episode, vehicle, s in episode_series(data.frames, sim_hz,
                                              frequency if fmt == "ngsim" else None):
        if fmt == "ngsim":
            parts.append(ngsim_columns(vehicle, s, offsets[episode], frequency))
        else:
            parts.append(generic_columns(episode, vehicle, s, offsets[episode], angle))
    columns = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    time_key = "Global_Time" if fmt == "ngsim" else "timestamp"
    order = np.argsort(columns[time_key], kind="stable")  # a recording is in time order
    table = pa.table({k: v[order] for k, v in columns.items()})
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(out).with_name(f".{Path(out).name}.tmp")
    with open(tmp, "wb") as handle:  # header unquoted, as the public files have it
        handle.write((",".join(table.column_names) + "\n").encode())
        pcsv.write_csv(table, handle, pcsv.WriteOptions(include_header=False,
                                                        quoting_style="none"))
    tmp.replace(out)
    return table.num_rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.recorded.export",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", help="a simulator dataset directory (drivecast ingest)")
    parser.add_argument("out", help="the CSV file to write")
    parser.add_argument("--format", choices=("ngsim", "generic"), default="ngsim")
    parser.add_argument("--frequency", type=float, default=10.0, help="ngsim rows per second")
    parser.add_argument("--angle", type=float, default=30.0, help="generic road angle, degrees")
    parser.add_argument("--gap", type=float, default=60.0, help="seconds between episodes")
    args = parser.parse_args(argv)
    try:
        rows = export(args.dataset, args.out, args.format, args.frequency, args.angle, args.gap)
    except DrivecastError as err:
        print(f"recorded_export: error: {err}", file=sys.stderr)
        return 2
    print(f"{rows} rows -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
