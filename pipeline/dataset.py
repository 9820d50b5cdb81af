"""Parquet driving dataset: a frames table and a steps table, schema versioned.

A dataset directory holds a ``dataset.json`` manifest and shards. Shard ``i`` is the pair
``shard-0000i.frames.parquet`` + ``shard-0000i.steps.parquet``; each file is written
atomically (temp file in the same directory, then ``os.replace``), so a file with its final
name is always whole, and a shard is complete only when both files are there.

Frames table: one row per vehicle per simulation frame (world frame, SI units).
Steps table: one row per ego decision. The README documents every column.

``read_dataset`` returns numpy column arrays (concatenated over shards, in manifest order,
each shard sorted by episode then frame then vehicle id), which is what windowing needs.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.errors import DrivecastError

SCHEMA_VERSION = 1
MANIFEST_NAME = "dataset.json"
SCHEMA_VERSION_KEY = b"drivecast.schema_version"
TABLE_KEY = b"drivecast.table"

FRAME_COLUMNS: dict[str, pa.DataType] = {
    "episode": pa.int64(),
    "frame": pa.int32(),
    "time": pa.float64(),
    "vehicle_id": pa.int32(),
    "is_ego": pa.bool_(),
    "x": pa.float32(),
    "y": pa.float32(),
    "vx": pa.float32(),
    "vy": pa.float32(),
    "heading": pa.float32(),
    "length": pa.float32(),
    "width": pa.float32(),
    "lane": pa.int16(),
    "crashed": pa.bool_(),
}

STEP_COLUMNS: dict[str, pa.DataType] = {
    "episode": pa.int64(),
    "step": pa.int32(),
    "first_frame": pa.int32(),
    "action": pa.int8(),
    "reward": pa.float32(),
    "collision": pa.bool_(),
    "terminated": pa.bool_(),
    "truncated": pa.bool_(),
    "policy": pa.string(),
}

TABLE_COLUMNS = {"frames": FRAME_COLUMNS, "steps": STEP_COLUMNS}

# Counterfactual branches (`iterate.branches`): a short open-loop episode driven on a copy of
# the simulator from one decision of a recorded episode, its steps tagged BRANCH_POLICY. Its
# id is parent + n * BRANCH_STRIDE (n >= 1), so every id stays an int64 and
# `parent_episode` finds the episode it branched from (train/val/test splits keep the two
# together: they share the history).
BRANCH_POLICY = "branch"
BRANCH_STRIDE = 10**9


def branch_episode(parent: int, n: int) -> int:
    """The id of the n-th branch (n >= 1) of episode `parent` (0 <= parent < BRANCH_STRIDE)."""
    if not 0 <= parent < BRANCH_STRIDE or n < 1:
        raise ValueError(f"no branch id for parent {parent}, n {n}")
    return int(parent) + int(n) * BRANCH_STRIDE


def parent_episode(episode: np.ndarray) -> np.ndarray:
    """The episode each id branched from; an ordinary episode is its own parent."""
    return np.asarray(episode, dtype=np.int64) % BRANCH_STRIDE


MANIFEST_KEYS = (
    "schema_version",
    "env_id",
    "env_config",
    "simulation_frequency",
    "policy_frequency",
    "shards",
)
# Optional manifest key of recorded datasets (pipeline/recorded/); simulator datasets have
# none. It holds collision_labels ("unknown", or "near_miss": steps.collision is a near-miss
# label), lanes (whether the lane column is real), scenes ([{recording, start, end}] in
# seconds: the time ranges) and episode_groups (the scene index of every episode).
RECORDED_KEY = "recorded"


class DatasetError(DrivecastError, ValueError):
    """A dataset on disk is missing, incomplete or does not match the schema."""


@dataclass(frozen=True)
class Dataset:
    """A loaded dataset: numpy column arrays plus the manifest.

    frames: column name -> array of length R_f (rows = vehicles x frames).
    steps: column name -> array of length R_s (rows = ego decisions); ``policy`` is a str array.
    """

    path: Path
    frames: dict[str, np.ndarray]
    steps: dict[str, np.ndarray]
    manifest: dict

    @property
    def simulation_frequency(self) -> int:
        return int(self.manifest["simulation_frequency"])

    @property
    def frames_per_step(self) -> int:
        """Simulation frames per ego decision (sim_freq / policy_freq)."""
        return self.simulation_frequency // int(self.manifest["policy_frequency"])

    @property
    def episodes(self) -> np.ndarray:
        """Sorted unique episode indices present in the steps table."""
        return np.unique(self.steps["episode"])


def numpy_dtype(arrow_type: pa.DataType) -> np.dtype:
    """The numpy dtype that a column of ``arrow_type`` is held in (strings -> str)."""
    if pa.types.is_string(arrow_type):
        return np.dtype(str)
    return np.dtype(arrow_type.to_pandas_dtype())


def shard_name(index: int) -> str:
    return f"shard-{index:05d}"


def shard_files(dataset_dir: str | Path, index: int) -> tuple[Path, Path]:
    """(frames file, steps file) of shard ``index``."""
    base = Path(dataset_dir) / shard_name(index)
    return base.parent / f"{base.name}.frames.parquet", base.parent / f"{base.name}.steps.parquet"


def complete_shards(dataset_dir: str | Path) -> list[int]:
    """Indices of the shards whose frames and steps files both exist, sorted."""
    found = []
    for path in Path(dataset_dir).glob("shard-*.steps.parquet"):
        index = int(path.name.split(".")[0].removeprefix("shard-"))
        if shard_files(dataset_dir, index)[0].exists():
            found.append(index)
    return sorted(found)


def remove_temp_files(dataset_dir: str | Path) -> None:
    """Delete temp files left by a writer that was killed mid-write."""
    for path in Path(dataset_dir).glob(".*.tmp-*"):
        path.unlink(missing_ok=True)


# ---------------------------------------------------------------- writing


def atomic_write_bytes(path: Path, write) -> None:
    """Call ``write(file)`` on a temp file next to ``path``, fsync, then rename onto ``path``."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def to_table(columns: dict, table: str) -> pa.Table:
    """Build a pyarrow table of ``table`` ("frames" or "steps") from numpy-like columns."""
    schema_columns = TABLE_COLUMNS[table]
    missing = [name for name in schema_columns if name not in columns]
    if missing:
        raise ValueError(f"{table} columns are missing {missing}")
    lengths = {name: len(columns[name]) for name in schema_columns}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"{table} columns have different lengths: {lengths}")
    arrays = {name: to_arrow(columns[name], kind) for name, kind in schema_columns.items()}
    metadata = {SCHEMA_VERSION_KEY: str(SCHEMA_VERSION).encode(), TABLE_KEY: table.encode()}
    schema = pa.schema([pa.field(n, k, nullable=False) for n, k in schema_columns.items()])
    return pa.Table.from_pydict(arrays, schema=schema.with_metadata(metadata))


def to_arrow(values, kind: pa.DataType) -> pa.Array:
    if pa.types.is_string(kind):
        return pa.array([str(v) for v in values], type=kind)
    return pa.array(np.asarray(values, dtype=numpy_dtype(kind)), type=kind)


def write_table(path: Path, table: pa.Table) -> None:
    atomic_write_bytes(path, lambda handle: pq.write_table(table, handle, compression="zstd"))


def write_shard(dataset_dir: str | Path, index: int, frames: dict, steps: dict) -> dict:
    """Write shard ``index`` (frames file first, steps file last) and return its manifest entry.

    frames/steps: column name -> 1-D array, with the columns of FRAME_COLUMNS / STEP_COLUMNS.
    """
    frames_path, steps_path = shard_files(dataset_dir, index)
    frames_table, steps_table = to_table(frames, "frames"), to_table(steps, "steps")
    write_table(frames_path, frames_table)
    write_table(steps_path, steps_table)
    return shard_entry(index, steps_table.column("episode").to_numpy(), frames_table.num_rows)


def shard_entry(index: int, step_episodes: np.ndarray, num_frames: int) -> dict:
    frames_path, steps_path = shard_files(".", index)
    return {
        "name": shard_name(index),
        "frames_file": frames_path.name,
        "steps_file": steps_path.name,
        "episodes": sorted(int(e) for e in np.unique(step_episodes)),
        "num_frames": int(num_frames),
        "num_steps": int(len(step_episodes)),
    }


def write_manifest(
    dataset_dir: str | Path,
    env_id: str,
    env_config: dict,
    simulation_frequency: int,
    policy_frequency: int,
    shards: list[dict],
    **extra,
) -> Path:
    """Write ``dataset.json`` atomically; ``extra`` keys (e.g. seed, policies) are stored too."""
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "env_id": env_id,
        "env_config": env_config,
        "simulation_frequency": int(simulation_frequency),
        "policy_frequency": int(policy_frequency),
        "shards": shards,
        **extra,
    }
    path = Path(dataset_dir) / MANIFEST_NAME
    text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
    atomic_write_bytes(path, lambda handle: handle.write(text.encode()))
    return path


# ---------------------------------------------------------------- reading


def read_manifest(dataset_dir: str | Path) -> dict:
    """Load and check ``dataset.json``; raise DatasetError naming the file on any problem."""
    dataset_dir = Path(dataset_dir)
    if not dataset_dir.is_dir():
        raise DatasetError(f"dataset directory {dataset_dir} does not exist")
    path = dataset_dir / MANIFEST_NAME
    if not path.is_file():
        raise DatasetError(f"{path}: manifest is missing (not a drivecast dataset directory)")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DatasetError(f"{path}: manifest is not valid JSON ({error})") from None
    missing = [key for key in MANIFEST_KEYS if key not in manifest]
    if missing:
        raise DatasetError(f"{path}: manifest lacks key(s) {missing}")
    if manifest["schema_version"] != SCHEMA_VERSION:
        raise DatasetError(
            f"{path}: schema_version is {manifest['schema_version']!r}, "
            f"this code reads version {SCHEMA_VERSION}"
        )
    if manifest.get("complete") is False:
        raise DatasetError(f"{path}: dataset is incomplete (collection was interrupted)")
    return manifest


def read_table_file(path: Path, table: str) -> dict[str, np.ndarray]:
    """Read one shard file, validate it against the schema, return numpy columns."""
    if not path.is_file():
        raise DatasetError(f"{path}: shard file listed in the manifest is missing")
    try:
        data = pq.read_table(path)
    except (pa.ArrowException, OSError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise DatasetError(f"{path}: corrupt or truncated parquet file ({reason})") from None
    check_schema_version(path, data.schema.metadata or {})
    return {
        name: column_array(path, data, name, kind) for name, kind in TABLE_COLUMNS[table].items()
    }


def check_schema_version(path: Path, metadata: dict) -> None:
    found = metadata.get(SCHEMA_VERSION_KEY)
    if found is None:
        raise DatasetError(f"{path}: parquet metadata has no drivecast.schema_version")
    if found != str(SCHEMA_VERSION).encode():
        raise DatasetError(
            f"{path}: schema_version is {found.decode()!r}, "
            f"this code reads version {SCHEMA_VERSION}"
        )


def column_array(path: Path, data: pa.Table, name: str, kind: pa.DataType) -> np.ndarray:
    """One validated column as numpy: present, right type, no nulls, finite floats."""
    if name not in data.column_names:
        raise DatasetError(f"{path}: missing column '{name}'")
    column = data.column(name)
    if column.type != kind:
        raise DatasetError(f"{path}: column '{name}' has type {column.type}, expected {kind}")
    if column.null_count:
        raise DatasetError(f"{path}: column '{name}' holds {column.null_count} null value(s)")
    if pa.types.is_string(kind):
        return np.asarray(column.to_pylist(), dtype=str)
    values = column.to_numpy()
    if pa.types.is_floating(kind) and not np.isfinite(values).all():
        raise DatasetError(f"{path}: column '{name}' holds NaN or inf values")
    return values


def concat_columns(parts: list[dict[str, np.ndarray]], table: str) -> dict[str, np.ndarray]:
    if not parts:
        return {n: np.zeros(0, dtype=numpy_dtype(k)) for n, k in TABLE_COLUMNS[table].items()}
    return {name: np.concatenate([part[name] for part in parts]) for name in TABLE_COLUMNS[table]}


def read_dataset(path: str | Path) -> Dataset:
    """Load and validate a dataset directory written by ``write_shard`` + ``write_manifest``.

    Raises DatasetError (one line, naming the file and column) for a missing directory or
    manifest, a wrong schema version, a missing shard file, a corrupt or truncated parquet
    file, a missing column, a wrong dtype, nulls, or NaN/inf in a float column.
    """
    path = Path(path)
    manifest = read_manifest(path)
    frames, steps = [], []
    for shard in manifest["shards"]:
        frames.append(read_table_file(path / shard["frames_file"], "frames"))
        steps.append(read_table_file(path / shard["steps_file"], "steps"))
        check_same_episodes(path / shard["steps_file"], frames[-1], steps[-1])
    return Dataset(path, concat_columns(frames, "frames"), concat_columns(steps, "steps"), manifest)


def check_same_episodes(path: Path, frames: dict, steps: dict) -> None:
    frame_episodes, step_episodes = np.unique(frames["episode"]), np.unique(steps["episode"])
    if not np.array_equal(frame_episodes, step_episodes):
        raise DatasetError(
            f"{path}: episodes {step_episodes.tolist()} differ from those of its frames file "
            f"{frame_episodes.tolist()}"
        )
