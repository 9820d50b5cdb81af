"""Read one recorded file into validated rows: SI units, seconds, the file's own axes.

`read_recording` returns a `Rows`: one numpy array per mapped role, time in seconds since
the file's first timestamp, lengths in metres, headings in radians. Rows whose mapped
columns hold NaN/inf, and rows that go back in time within their track, are refused with
one line saying how many and where (CSV line numbers count the header as line 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from pipeline.recorded.mapping import Mapping, RecordedError, frame_rate, is_parquet

LENGTH_ROLES = ("x", "y", "length", "width", "vx", "vy")
# Largest magnitude of each role after unit conversion (SI): positions far outside any road
# map (UTM northings stay below 1e7 m), speeds above any road vehicle's, boxes longer than
# any vehicle, recordings longer than 11 days. A value beyond is a broken file, not traffic.
LIMITS = {"x": 1e7, "y": 1e7, "vx": 150.0, "vy": 150.0, "length": 100.0, "width": 100.0,
          "time": 1e6}
SHOWN = 3  # locations quoted in an error message


@dataclass(frozen=True)
class Rows:
    """A recording's rows in file order (or sorted by track and time with sort_rows).

    columns: role -> (R,) float64 (track and lane hold integral values); time in seconds
    since the first timestamp; x, y, length, width in m; vx, vy in m/s; heading in rad.
    source_row: (R,) the 0-based data row in the file, for error messages.
    """

    path: Path
    columns: dict[str, np.ndarray]
    source_row: np.ndarray

    def __len__(self) -> int:
        return len(self.source_row)


def where(path: Path, rows: np.ndarray) -> str:
    """'lines 5, 9, 12' (CSV, header = line 1) or 'rows 4, 8, 11' (Parquet), first few."""
    shown = ", ".join(str(int(r) + (1 if is_parquet(path) else 2)) for r in rows[:SHOWN])
    more = f" and {len(rows) - SHOWN} more" if len(rows) > SHOWN else ""
    return f"{'row' if is_parquet(path) else 'line'}{'s' if len(rows) > 1 else ''} {shown}{more}"


# ---------------------------------------------------------------- raw columns


def read_table(path: Path, mapping: Mapping) -> pa.Table:
    """The mapped columns only; numbers as float64 except an ISO time column (text)."""
    names = list(dict.fromkeys(mapping.columns.values()))
    if is_parquet(path):
        return pq.read_table(path, columns=names)
    text_time = mapping.time_unit == "iso"
    types = {name: pa.float64() for name in names}
    del types[mapping.columns["track"]]  # ids may be text: numbered in column_values
    if text_time:
        types[mapping.columns["time"]] = pa.string()
    options = pcsv.ConvertOptions(include_columns=names, column_types=types)
    try:
        return pcsv.read_csv(path, convert_options=options)
    except pa.ArrowInvalid as err:
        raise RecordedError(non_numeric_message(path, names, str(err))) from None


def non_numeric_message(path: Path, names: list[str], reason: str) -> str:
    """Locate the values that are not numbers (pyarrow's error gives no row)."""
    options = pcsv.ConvertOptions(include_columns=names,
                                  column_types={n: pa.string() for n in names})
    table = pcsv.read_csv(path, convert_options=options)
    for name in names:
        values = np.asarray(table.column(name).to_pylist(), dtype=object)
        bad = [i for i, v in enumerate(values) if v not in (None, "") and not is_number(v)]
        if bad:
            return (f"{path}: column '{name}' holds {len(bad)} value(s) that are not numbers "
                    f"('{values[bad[0]]}' at {where(path, np.asarray(bad))})")
    return f"{path}: {reason.splitlines()[0]}"


def is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def column_values(path: Path, table: pa.Table, name: str, ids: bool = False) -> np.ndarray:
    """One column as float64 (timestamps in seconds; text track ids numbered if `ids`)."""
    column = table.column(name)
    if ids and (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        return text_ids(column)
    if pa.types.is_timestamp(column.type):
        return column.cast(pa.int64()).to_numpy(zero_copy_only=False).astype(np.float64) / \
            {"s": 1, "ms": 1e3, "us": 1e6, "ns": 1e9}[column.type.unit]
    try:
        return np.asarray(column.cast(pa.float64()).to_numpy(zero_copy_only=False), np.float64)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        raise RecordedError(f"{path}: column '{name}' of type {column.type} is not numeric") \
            from None


def text_ids(column: pa.ChunkedArray) -> np.ndarray:
    """Text track ids -> 0, 1, ... in order of first appearance (empty cells -> NaN)."""
    values = np.asarray(column.to_pylist(), dtype=object)
    empty = np.array([v is None or str(v).strip() == "" for v in values], dtype=bool)
    if empty.all():
        return np.full(len(values), np.nan)
    _, first, inverse = np.unique(values[~empty].astype(str), return_index=True,
                                  return_inverse=True)
    rank = np.argsort(np.argsort(first))  # id by first appearance
    ids = np.full(len(values), np.nan)
    ids[~empty] = rank[inverse]
    return ids


# ---------------------------------------------------------------- time


def iso_seconds(path: Path, table: pa.Table, name: str) -> np.ndarray:
    """ISO 8601 text -> seconds since the epoch (naive timestamps are taken as UTC)."""
    column = table.column(name)
    if pa.types.is_timestamp(column.type):
        return column_values(path, table, name)
    text = np.asarray(pc.cast(column, pa.string()).to_pylist(), dtype=object)
    text = np.where(text == None, "", text).astype(str)  # noqa: E711 (element-wise)
    unique, inverse = np.unique(text, return_inverse=True)
    seconds = np.empty(len(unique))
    for i, value in enumerate(unique):
        seconds[i] = parse_iso(path, name, value, text)
    return seconds[inverse]


def parse_iso(path: Path, name: str, value: str, text: np.ndarray) -> float:
    try:
        stamp = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        bad = np.flatnonzero(text == value)
        raise RecordedError(f"{path}: column '{name}' holds '{value}', not an ISO 8601 "
                            f"timestamp ({where(path, bad)})") from None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=timezone.utc)
    return stamp.timestamp()


def to_seconds(path: Path, table: pa.Table, mapping: Mapping) -> np.ndarray:
    """The time column in seconds since the file's first timestamp."""
    name = mapping.columns["time"]
    if mapping.time_unit == "iso":
        raw = iso_seconds(path, table, name)
    else:
        raw = column_values(path, table, name)
    finite = raw[np.isfinite(raw)]
    origin = finite.min() if len(finite) else 0.0
    scale = {"s": 1.0, "ms": 1e-3, "iso": 1.0}.get(mapping.time_unit)
    if scale is None:  # frame numbers
        scale = 1.0 / frame_rate(path, mapping)
    return (raw - origin) * scale  # subtract first: large epoch values keep their precision


# ---------------------------------------------------------------- checks


def check_finite(path: Path, columns: dict[str, np.ndarray], names: dict[str, str]) -> None:
    """Refuse rows with NaN/inf (or empty cells) in any mapped column."""
    bad = {role: ~np.isfinite(values) for role, values in columns.items()}
    rows = np.flatnonzero(np.any(np.stack(list(bad.values())), axis=0))
    if len(rows):
        per_column = ", ".join(f"'{names[r]}' {int(b.sum())}" for r, b in bad.items() if b.any())
        raise RecordedError(f"{path}: {len(rows)} row(s) hold NaN, inf or nothing in mapped "
                            f"columns ({per_column}) at {where(path, rows)}")


def check_has_rows(path: Path, table: pa.Table) -> None:
    if table.num_rows == 0:
        raise RecordedError(f"{path}: holds a header but no rows")


def check_ranges(path: Path, columns: dict[str, np.ndarray], names: dict[str, str],
                 source_row: np.ndarray) -> None:
    """Refuse values beyond LIMITS (converted to m, m/s, s), naming column and lines."""
    for role, limit in LIMITS.items():
        if role not in columns:
            continue
        bad = np.flatnonzero(np.abs(columns[role]) > limit)
        if len(bad):
            unit = {"time": "s since the first timestamp", "vx": "m/s", "vy": "m/s"}.get(role,
                                                                                       "m")
            raise RecordedError(f"{path}: column '{names[role]}' holds {len(bad)} value(s) "
                                f"beyond {limit:g} {unit} (after unit conversion), e.g. "
                                f"{columns[role][bad[0]]:g} at {where(path, source_row[bad])}")


def check_time_order(path: Path, track: np.ndarray, time: np.ndarray, name: str,
                     source_row: np.ndarray) -> None:
    """Within each track, rows must come with strictly increasing time."""
    order = np.argsort(track, kind="stable")  # row order kept within a track
    same = track[order][1:] == track[order][:-1]
    back = order[1:][same & (np.diff(time[order]) <= 0)]  # rows not later than the one before
    if len(back):
        back = back[np.argsort(source_row[back])]
        raise RecordedError(
            f"{path}: {len(back)} row(s) do not move forward in time within their track "
            f"(column '{name}', first in track {int(track[back[0]])}) at "
            f"{where(path, source_row[back])}; sort the file by track and time or set "
            f"ingest.recorded.sort_rows=true")


# ---------------------------------------------------------------- entry point


def read_recording(path: Path, mapping: Mapping) -> Rows:
    """Read, convert units and validate one file (the header was checked before)."""
    try:
        table = read_table(path, mapping)
    except (pa.ArrowException, OSError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise RecordedError(f"{path}: cannot read the file ({reason})") from None
    check_has_rows(path, table)
    columns = {role: column_values(path, table, name, ids=role == "track")
               for role, name in mapping.columns.items() if role != "time"}
    columns["time"] = to_seconds(path, table, mapping)
    check_finite(path, columns, mapping.columns)
    source_row = np.arange(table.num_rows)
    if mapping.sort_rows:
        order = np.lexsort((columns["time"], columns["track"]))
        columns, source_row = {k: v[order] for k, v in columns.items()}, source_row[order]
    check_time_order(path, columns["track"], columns["time"], mapping.columns["time"],
                     source_row)
    for role in LENGTH_ROLES:
        if role in columns:
            columns[role] = columns[role] * mapping.length_scale
    if "heading" in columns and mapping.heading_unit == "deg":
        columns["heading"] = np.deg2rad(columns["heading"])
    check_ranges(path, columns, mapping.columns, source_row)
    return Rows(path, columns, source_row)
