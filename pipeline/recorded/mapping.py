"""Recorded trajectories: the column mapping, its presets, and checks before any reading.

A `Mapping` says which file column plays which role (time, track id, x, y, ...) and in
which units and conventions the file is written. Presets (highD, NGSIM) are a few lines of
the same mapping; the config's non-empty values win over the preset's. Everything here
fails with a one-line `RecordedError` naming the key, file or column.
"""

from __future__ import annotations

import csv
import difflib
import glob
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

from pipeline.errors import DrivecastError

ROLES = ("time", "track", "x", "y", "vx", "vy", "heading", "length", "width", "lane")
REQUIRED_ROLES = ("time", "track", "x", "y")
TIME_UNITS = ("s", "ms", "iso", "frame")
LENGTH_UNITS = {"m": 1.0, "ft": 0.3048}  # metres per unit
HEADING_UNITS = ("rad", "deg")
POSITIONS = ("centre", "front_centre", "box_corner")
Y_AXES = ("left", "right")
DEFAULTS = {"time_unit": "s", "length_unit": "m", "heading_unit": "rad", "position": "centre",
            "y_axis": "left"}

# Each preset is the mapping of one public layout (column names as the dataset ships them).
PRESETS: dict[str, dict] = {
    # highD: XX_tracks.csv at 25 Hz, metres, x/y = upper-left corner of the bounding box
    # in image coordinates (y down), box `width` along x and `height` along y.
    "highd": {"columns": {"time": "frame", "track": "id", "x": "x", "y": "y",
                          "vx": "xVelocity", "vy": "yVelocity", "length": "width",
                          "width": "height", "lane": "laneId"},
              "time_unit": "frame", "length_unit": "m", "position": "box_corner",
              "y_axis": "right", "pattern": "*tracks.csv"},
    # NGSIM US-101 / I-80: 10 Hz, feet, Local_Y along the road and Local_X to the right of
    # the direction of travel, both at the front centre; Global_Time in ms.
    "ngsim": {"columns": {"time": "Global_Time", "track": "Vehicle_ID", "x": "Local_Y",
                          "y": "Local_X", "length": "v_Length", "width": "v_Width",
                          "lane": "Lane_ID"},
              "time_unit": "ms", "length_unit": "ft", "position": "front_centre",
              "y_axis": "right", "pattern": "*.csv"},
}
GENERIC_PATTERNS = ("*.csv", "*.parquet")


class RecordedError(DrivecastError, ValueError):
    """A recorded-data file or its mapping cannot be used (message names it)."""


@dataclass(frozen=True)
class Mapping:
    """A resolved mapping: every value filled from the config, the preset or the default."""

    columns: dict[str, str]  # role -> column name (only mapped roles)
    time_unit: str
    frame_rate: float  # Hz, time_unit frame only (0: read from the preset's meta file)
    length_scale: float  # metres per file unit
    heading_unit: str
    position: str
    y_axis: str
    sort_rows: bool
    preset: str

    def has(self, role: str) -> bool:
        return role in self.columns


def choose(key: str, value: str, preset: dict, allowed) -> str:
    """The config value, else the preset's, else the default; checked against `allowed`."""
    chosen = value or preset.get(key) or DEFAULTS[key]
    if chosen not in allowed:
        raise RecordedError(f"config key 'ingest.recorded.{key}' must be one of "
                            f"{', '.join(allowed)}, got '{chosen}'")
    return chosen


def resolve_mapping(cfg) -> Mapping:
    """Mapping of a RecordedConfig (pipeline.config), checked for unknown values and roles."""
    if cfg.preset and cfg.preset not in PRESETS:
        raise RecordedError(f"config key 'ingest.recorded.preset' must be one of "
                            f"{', '.join(PRESETS)} or empty, got '{cfg.preset}'")
    preset = PRESETS.get(cfg.preset, {})
    columns = {**preset.get("columns", {}), **{str(k): str(v) for k, v in cfg.columns.items()}}
    unknown = sorted(set(columns) - set(ROLES))
    if unknown:
        raise RecordedError(f"config key 'ingest.recorded.columns.{unknown[0]}' is not a role "
                            f"(roles: {', '.join(ROLES)})")
    missing = [role for role in REQUIRED_ROLES if not columns.get(role)]
    if missing:
        raise RecordedError(f"config key 'ingest.recorded.columns' must map role "
                            f"'{missing[0]}' to a column (required: {', '.join(REQUIRED_ROLES)})")
    return Mapping(
        columns={role: name for role, name in columns.items() if name},
        time_unit=choose("time_unit", cfg.time_unit, preset, TIME_UNITS),
        frame_rate=float(cfg.frame_rate),
        length_scale=LENGTH_UNITS[choose("length_unit", cfg.length_unit, preset, LENGTH_UNITS)],
        heading_unit=choose("heading_unit", cfg.heading_unit, preset, HEADING_UNITS),
        position=choose("position", cfg.position, preset, POSITIONS),
        y_axis=choose("y_axis", cfg.y_axis, preset, Y_AXES),
        sort_rows=bool(cfg.sort_rows), preset=cfg.preset)


# ---------------------------------------------------------------- files


def recording_files(path: str, preset: str = "") -> list[Path]:
    """The files `ingest.recorded.path` names: a file, a directory (the preset's pattern,
    else *.csv and *.parquet) or a glob; sorted."""
    if not path:
        raise RecordedError("config key 'ingest.recorded.path' is empty; name a CSV/Parquet "
                            "file, a directory or a glob")
    target = Path(path)
    if target.is_file():
        return [target]
    if target.is_dir():
        pattern = PRESETS.get(preset, {}).get("pattern")
        found = {p for pat in ([pattern] if pattern else GENERIC_PATTERNS)
                 for p in target.glob(pat)}
    else:
        found = {Path(p) for p in glob.glob(path)}
    files = sorted(p for p in found if p.is_file())
    if not files:
        raise RecordedError(f"ingest.recorded.path '{path}' matches no recording file")
    return files


def is_parquet(path: Path) -> bool:
    return path.suffix.lower() in (".parquet", ".pq")


def read_header(path: Path) -> list[str]:
    """Column names of a CSV (first line) or Parquet file."""
    try:
        if is_parquet(path):
            return list(pq.read_schema(path).names)
        with open(path, newline="", encoding="utf-8-sig") as handle:
            return [name.strip() for name in next(csv.reader(handle), [])]
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise RecordedError(f"{path}: cannot read the header ({err})") from None


def check_header(path: Path, header: list[str], mapping: Mapping) -> None:
    """Every mapped column must be in the header; a near miss is suggested."""
    for role, column in mapping.columns.items():
        if column in header:
            continue
        close = difflib.get_close_matches(column, header, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else f" (header: {', '.join(header)})"
        raise RecordedError(f"{path}: column '{column}' (ingest.recorded.columns.{role}) is not "
                            f"in the header{hint}")


def highd_meta_path(tracks: Path) -> Path:
    """XX_recordingMeta.csv beside XX_tracks.csv (recordingMeta.csv beside tracks.csv)."""
    return tracks.with_name(tracks.name.replace("tracks.csv", "recordingMeta.csv"))


def frame_rate(path: Path, mapping: Mapping) -> float:
    """Hz of frame-number time: the config's frame_rate, else highD's recordingMeta.csv."""
    if mapping.frame_rate > 0:
        return mapping.frame_rate
    if mapping.preset != "highd":
        raise RecordedError("config key 'ingest.recorded.frame_rate' must be > 0 with "
                            "time_unit 'frame'")
    meta = highd_meta_path(path)
    if not meta.is_file():
        raise RecordedError(f"{path}: highD recording meta file {meta.name} is missing beside it")
    with open(meta, newline="", encoding="utf-8-sig") as handle:
        rows = list(csv.DictReader(handle))
    try:
        return float(rows[0]["frameRate"])
    except (IndexError, KeyError, ValueError):
        raise RecordedError(f"{meta}: holds no numeric 'frameRate' value") from None


def check_files(cfg) -> tuple[Mapping, list[Path]]:
    """Resolve the mapping and check every file's header (and frame rate) before reading."""
    mapping = resolve_mapping(cfg)
    files = recording_files(cfg.path, cfg.preset)
    for path in files:
        check_header(path, read_header(path), mapping)
        if mapping.time_unit == "frame":
            frame_rate(path, mapping)
    return mapping, files
