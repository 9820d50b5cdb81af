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

import hashlib
import json
import os
from collections.abc import Iterator
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
DATASET_KEY = b"drivecast.dataset"  # the identity of the dataset a shard was written for

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
# What a dataset is, as its shards carry it: a shard written for a manifest with other
# values (another env, other frequencies) is refused when read with this one.
IDENTITY_KEYS = MANIFEST_KEYS[:-1]
# Each manifest shard entry: key -> type. Entries written since the checksums came also
# hold frames_sha256 and steps_sha256 (hex digests of the two files).
SHARD_ENTRY_KEYS = {"name": str, "frames_file": str, "steps_file": str, "episodes": list,
                    "num_frames": int, "num_steps": int}
CHECKSUM_KEYS = {"frames_file": "frames_sha256", "steps_file": "steps_sha256"}
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


def to_table(columns: dict, table: str, identity: str | None = None) -> pa.Table:
    """Build a pyarrow table of ``table`` ("frames" or "steps") from numpy-like columns;
    ``identity``: that of the dataset it is written for (`dataset_identity`)."""
    schema_columns = TABLE_COLUMNS[table]
    missing = [name for name in schema_columns if name not in columns]
    if missing:
        raise ValueError(f"{table} columns are missing {missing}")
    lengths = {name: len(columns[name]) for name in schema_columns}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"{table} columns have different lengths: {lengths}")
    arrays = {name: to_arrow(columns[name], kind) for name, kind in schema_columns.items()}
    metadata = {SCHEMA_VERSION_KEY: str(SCHEMA_VERSION).encode(), TABLE_KEY: table.encode()}
    if identity is not None:
        metadata[DATASET_KEY] = identity.encode()
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
    identity = written_identity(dataset_dir)
    frames_table = to_table(frames, "frames", identity)
    steps_table = to_table(steps, "steps", identity)
    check_writable(frames_path, frames_table)
    check_writable(steps_path, steps_table)
    write_table(frames_path, frames_table)
    write_table(steps_path, steps_table)
    return shard_entry(index, steps_table.column("episode").to_numpy(), frames_table.num_rows)


def check_writable(path: Path, table: pa.Table) -> None:
    """Refuse to write a shard its reader would refuse: NaN or inf in a float column (a
    value beyond float32's range becomes inf)."""
    for name in table.column_names:
        column = table.column(name)
        if pa.types.is_floating(column.type) and not np.isfinite(column.to_numpy()).all():
            raise DatasetError(f"{path}: column '{name}' would hold NaN or inf (a value beyond "
                               f"float32's range?); the shard is not written")


def dataset_identity(manifest: dict) -> str:
    """16 hex digits of a hash of the manifest's IDENTITY_KEYS."""
    payload = json.dumps({key: manifest.get(key) for key in IDENTITY_KEYS}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def written_identity(dataset_dir: str | Path) -> str | None:
    """The identity of the manifest a writer put in ``dataset_dir`` before its shards (the
    collections and the recorded ingest do), or None without one."""
    path = Path(dataset_dir) / MANIFEST_NAME
    return dataset_identity(json.loads(path.read_text())) if path.is_file() else None


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def with_checksums(dataset_dir: Path, entry: dict) -> dict:
    """The shard entry with the sha256 of each of its files that is written."""
    entry = dict(entry)
    for file_key, sum_key in CHECKSUM_KEYS.items():
        path = dataset_dir / entry[file_key]
        if sum_key not in entry and path.is_file():
            entry[sum_key] = file_sha256(path)
    return entry


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
        "shards": [with_checksums(Path(dataset_dir), entry) for entry in shards],
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
    if not isinstance(manifest, dict):
        raise DatasetError(f"{path}: manifest must hold a JSON object, not "
                           f"{type(manifest).__name__}")
    missing = [key for key in MANIFEST_KEYS if key not in manifest]
    if missing:
        raise DatasetError(f"{path}: manifest lacks key(s) {missing}")
    check_manifest_values(path, manifest)
    if manifest["schema_version"] != SCHEMA_VERSION:
        raise DatasetError(
            f"{path}: schema_version is {manifest['schema_version']!r}, "
            f"this code reads version {SCHEMA_VERSION}"
        )
    if manifest.get("complete") is False:
        raise DatasetError(f"{path}: dataset is incomplete (collection was interrupted)")
    return manifest


def check_manifest_values(path: Path, manifest: dict) -> None:
    """The frequencies and the shard list have the shape the reader relies on."""
    sim, policy = manifest["simulation_frequency"], manifest["policy_frequency"]
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (sim, policy)) \
            or sim % policy:
        raise DatasetError(f"{path}: simulation_frequency and policy_frequency must be "
                           f"positive integers, the first a multiple of the second, got {sim!r} "
                           f"and {policy!r}")
    if not isinstance(manifest["shards"], list):
        raise DatasetError(f"{path}: 'shards' must be a list of shard entries, got "
                           f"{type(manifest['shards']).__name__}")
    for number, entry in enumerate(manifest["shards"]):
        check_shard_entry(path, number, entry)


def check_shard_entry(path: Path, number: int, entry) -> None:
    where = f"{path}: shard entry {number}"
    if not isinstance(entry, dict):
        raise DatasetError(f"{where} must be a JSON object, got {entry!r}"[:300])
    for key, kind in SHARD_ENTRY_KEYS.items():
        if not isinstance(entry.get(key), kind) or isinstance(entry.get(key), bool):
            raise DatasetError(f"{where} needs '{key}' as {kind.__name__}, got "
                               f"{entry.get(key)!r}"[:300])
    for key in ("frames_file", "steps_file"):
        if Path(entry[key]).name != entry[key] or entry[key] in ("", ".", ".."):
            raise DatasetError(f"{where}: '{key}' must name a file in the dataset directory, "
                               f"got {entry[key]!r}")
    if not all(isinstance(e, int) and not isinstance(e, bool) for e in entry["episodes"]):
        raise DatasetError(f"{where}: 'episodes' must be a list of integers")


def read_table_file(path: Path, table: str, identity: str | None = None,
                    checksum: str | None = None) -> dict[str, np.ndarray]:
    """Read one shard file, validate it against the schema (and against the identity and
    checksum its manifest records, when given), return numpy columns."""
    if not path.is_file():
        raise DatasetError(f"{path}: shard file listed in the manifest is missing")
    try:
        data = pq.read_table(path)
    except (pa.ArrowException, OSError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise DatasetError(f"{path}: corrupt or truncated parquet file ({reason})") from None
    check_schema_version(path, data.schema.metadata or {})
    columns = {
        name: column_array(path, data, name, kind) for name, kind in TABLE_COLUMNS[table].items()
    }
    check_identity(path, data.schema.metadata or {}, identity)
    if checksum is not None and file_sha256(path) != checksum:  # last: a damaged file is
        # named for its damage first
        raise DatasetError(f"{path}: contents differ from the checksum in {MANIFEST_NAME} "
                           f"(changed, or copied from another dataset); run the stage that "
                           f"wrote it again with --force")
    return columns


def check_schema_version(path: Path, metadata: dict) -> None:
    found = metadata.get(SCHEMA_VERSION_KEY)
    if found is None:
        raise DatasetError(f"{path}: parquet metadata has no drivecast.schema_version")
    if found != str(SCHEMA_VERSION).encode():
        raise DatasetError(
            f"{path}: schema_version is {found.decode()!r}, "
            f"this code reads version {SCHEMA_VERSION}"
        )


def check_identity(path: Path, metadata: dict, identity: str | None) -> None:
    """A shard stamped for another dataset (another env, other frequencies) is refused."""
    found = metadata.get(DATASET_KEY)
    if identity is not None and found is not None and found.decode() != identity:
        raise DatasetError(f"{path}: shard belongs to another dataset (identity "
                           f"{found.decode()}; {MANIFEST_NAME} here is {identity}: another "
                           f"env_id, env_config or frequency); it cannot be mixed into this one")


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
    for shard_frames, shard_steps in read_shards(path, manifest):
        frames.append(shard_frames)
        steps.append(shard_steps)
    return Dataset(path, concat_columns(frames, "frames"), concat_columns(steps, "steps"), manifest)


def read_shards(path: Path, manifest: dict) -> Iterator[tuple[dict, dict]]:
    """Each shard's (frames, steps) column arrays, validated as ``read_dataset`` does, one
    shard in memory at a time."""
    identity = dataset_identity(manifest)
    for shard in manifest["shards"]:
        frames = read_table_file(path / shard["frames_file"], "frames", identity,
                                 shard.get("frames_sha256"))
        steps = read_table_file(path / shard["steps_file"], "steps", identity,
                                shard.get("steps_sha256"))
        check_same_episodes(path / shard["steps_file"], frames, steps)
        check_entry_counts(path / MANIFEST_NAME, shard, frames, steps)
        yield frames, steps


def check_entry_counts(path: Path, shard: dict, frames: dict, steps: dict) -> None:
    """The shard holds the episodes and rows its manifest entry lists."""
    found = (sorted(np.unique(steps["episode"]).tolist()), len(frames["episode"]),
             len(steps["episode"]))
    listed = (sorted(shard["episodes"]), shard["num_frames"], shard["num_steps"])
    if found != listed:
        raise DatasetError(f"{path}: shard '{shard['name']}' lists episodes {listed[0]}, "
                           f"{listed[1]} frame rows and {listed[2]} step rows, its files hold "
                           f"{found[0]}, {found[1]} and {found[2]}"[:400])


def check_same_episodes(path: Path, frames: dict, steps: dict) -> None:
    frame_episodes, step_episodes = np.unique(frames["episode"]), np.unique(steps["episode"])
    if not np.array_equal(frame_episodes, step_episodes):
        raise DatasetError(
            f"{path}: episodes {step_episodes.tolist()} differ from those of its frames file "
            f"{frame_episodes.tolist()}"
        )
