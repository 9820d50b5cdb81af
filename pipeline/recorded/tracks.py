"""Recorded rows -> tracks on a common time grid, in drivecast's world frame.

Per track, in this order: split at gaps longer than `max_gap` (each piece is a track of its
own), derive the heading from the velocity where it is not mapped (from positions when the
velocity is not mapped either), move the position to the vehicle centre, derive the
velocity from the centre positions where it is not mapped, mirror y when the file's +y
points to the driver's left, and resample linearly onto the grid t = g / frequency
(g integer, t in seconds since the file's first timestamp).

drivecast's world frame is highway-env's: a driver heading along +x has +y on the right,
and a positive heading turns to the right (lane indices grow to the right).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.recorded.mapping import Mapping
from pipeline.recorded.read import Rows

MIN_HEADING_SPEED = 0.5  # m/s; slower samples hold the heading of the last faster one
DEFAULT_LENGTH, DEFAULT_WIDTH = 5.0, 2.0  # m, when length/width are not mapped
GRID_TOLERANCE = 1e-6  # s; samples this close to a grid time count as on it


@dataclass(frozen=True)
class Track:
    """One vehicle's resampled states: grid frames first .. first + T - 1."""

    id: int
    first: int  # grid frame of the first state (time first / frequency)
    states: np.ndarray  # (T, 6) x, y, vx, vy, heading, lane (pipeline.features.STATE_COLUMNS)
    length: float
    width: float

    @property
    def last(self) -> int:
        return self.first + len(self.states) - 1


@dataclass
class TrackStats:
    """What building tracks did to a recording (summed into the ingest summary)."""

    rows: int = 0
    tracks: int = 0
    gap_splits: int = 0  # extra tracks made by splitting at gaps
    dropped: int = 0  # pieces too short to keep (one sample, or no grid time inside)


# ---------------------------------------------------------------- gaps


def track_pieces(track: np.ndarray, time: np.ndarray,
                 max_gap: float) -> list[tuple[int, np.ndarray]]:
    """(track id, row indices in time order) per piece of track split at gaps > max_gap.

    Rows of one track are already in time order (checked on read); the first piece keeps
    the file's id, later pieces get new ids above the largest id of the file.
    """
    order = np.argsort(track, kind="stable")
    ids, t = track[order], time[order]
    breaks = np.flatnonzero((ids[1:] != ids[:-1]) | (np.diff(t) > max_gap)) + 1
    pieces, seen = [], set()
    next_id = int(track.max()) + 1 if len(track) else 0
    for rows in np.split(order, breaks):
        source = int(track[rows[0]])
        if source in seen:
            source, next_id = next_id, next_id + 1
        seen.add(int(track[rows[0]]))
        pieces.append((source, rows))
    return pieces


# ---------------------------------------------------------------- motion


def velocity_from_positions(t: np.ndarray, x: np.ndarray,
                            y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Central differences (one-sided at the ends) over the actual sample times."""
    return np.gradient(x, t), np.gradient(y, t)


def heading_from_velocity(vx: np.ndarray, vy: np.ndarray) -> np.ndarray:
    """atan2(vy, vx) where the speed is at least MIN_HEADING_SPEED, held over slower
    samples (the first moving sample's heading before it); 0 if the vehicle never moves."""
    moving = np.hypot(vx, vy) >= MIN_HEADING_SPEED
    if not moving.any():
        return np.zeros_like(vx)
    source = np.maximum.accumulate(np.where(moving, np.arange(len(vx)), -1))
    source = np.where(source < 0, np.argmax(moving), source)
    return np.arctan2(vy, vx)[source]


def to_centre(x: np.ndarray, y: np.ndarray, heading: np.ndarray, length: float, width: float,
              position: str) -> tuple[np.ndarray, np.ndarray]:
    """Centre of the vehicle from the mapped reference point (file axes)."""
    if position == "front_centre":
        return x - 0.5 * length * np.cos(heading), y - 0.5 * length * np.sin(heading)
    if position == "box_corner":  # smallest-x, smallest-y corner of a length x width box
        return x + 0.5 * length, y + 0.5 * width
    return x, y


def piece_size(columns: dict[str, np.ndarray], role: str, rows: np.ndarray,
               default: float) -> float:
    return float(np.median(columns[role][rows])) if role in columns else default


def piece_motion(columns: dict[str, np.ndarray], rows: np.ndarray, mapping: Mapping,
                 length: float, width: float) -> np.ndarray:
    """(T, 5) centre x, y, vx, vy, heading of one piece at its own samples, drivecast frame."""
    t, x, y = columns["time"][rows], columns["x"][rows], columns["y"][rows]
    mapped_velocity = "vx" in columns and "vy" in columns
    if mapped_velocity:
        vx, vy = columns["vx"][rows], columns["vy"][rows]
    else:
        vx, vy = velocity_from_positions(t, x, y)
    heading = (columns["heading"][rows] if "heading" in columns
               else heading_from_velocity(vx, vy))
    x, y = to_centre(x, y, heading, length, width, mapping.position)
    if not mapped_velocity:
        vx, vy = velocity_from_positions(t, x, y)
    motion = np.stack([x, y, vx, vy, heading], axis=-1)
    if mapping.y_axis == "left":  # mirror into the frame where +y is the driver's right
        motion[:, [1, 3, 4]] *= -1.0
    return motion


# ---------------------------------------------------------------- resampling


def grid_frames(t: np.ndarray, frequency: float) -> np.ndarray:
    """Grid frames g with t[0] <= g / frequency <= t[-1] (within GRID_TOLERANCE)."""
    first = int(np.ceil((t[0] - GRID_TOLERANCE) * frequency))
    last = int(np.floor((t[-1] + GRID_TOLERANCE) * frequency))
    return np.arange(first, last + 1, dtype=np.int64)


def resample(t: np.ndarray, motion: np.ndarray, lane: np.ndarray,
             frames: np.ndarray, frequency: float) -> np.ndarray:
    """(T', 6) states at the grid frames: linear interpolation (heading unwrapped first),
    the lane of the latest sample at or before each grid time."""
    grid = np.clip(frames / frequency, t[0], t[-1])
    columns = [np.interp(grid, t, motion[:, i]) for i in range(4)]
    heading = np.interp(grid, t, np.unwrap(motion[:, 4]))
    columns.append(np.angle(np.exp(1j * heading)))  # back to (-pi, pi]
    latest = np.searchsorted(t, grid + GRID_TOLERANCE, side="right") - 1
    columns.append(lane[np.clip(latest, 0, len(t) - 1)])
    return np.stack(columns, axis=-1)


# ---------------------------------------------------------------- entry point


def build_tracks(rows: Rows, mapping: Mapping, max_gap: float,
                 frequency: int) -> tuple[list[Track], TrackStats]:
    """Every track of a recording on the grid, sorted by first frame then id."""
    columns = rows.columns
    lane = columns.get("lane", np.zeros(len(rows)))
    stats, tracks = TrackStats(rows=len(rows)), []
    pieces = track_pieces(columns["track"], columns["time"], max_gap)
    stats.gap_splits = len(pieces) - len(np.unique(columns["track"]))
    for track_id, piece in pieces:
        t = columns["time"][piece]
        frames = grid_frames(t, frequency) if len(piece) >= 2 else np.zeros(0, np.int64)
        if len(frames) == 0:
            stats.dropped += 1
            continue
        length = piece_size(columns, "length", piece, DEFAULT_LENGTH)
        width = piece_size(columns, "width", piece, DEFAULT_WIDTH)
        motion = piece_motion(columns, piece, mapping, length, width)
        states = resample(t, motion, lane[piece], frames, frequency)
        tracks.append(Track(track_id, int(frames[0]), states, length, width))
    stats.tracks = len(tracks)
    return sorted(tracks, key=lambda tr: (tr.first, tr.id)), stats
