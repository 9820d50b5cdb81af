import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.dataset import (
    FRAME_COLUMNS,
    MANIFEST_NAME,
    SCHEMA_VERSION,
    DatasetError,
    complete_shards,
    read_dataset,
    shard_files,
    write_manifest,
    write_shard,
)


def fake_episode(episode: int, vehicles: int = 3, steps: int = 2, per_step: int = 5):
    """Hand-built frames/steps columns of one episode (no simulator needed)."""
    frames_count = steps * per_step + 1
    frame = np.repeat(np.arange(frames_count), vehicles)
    vid = np.tile(np.arange(vehicles), frames_count)
    rows = len(frame)
    frames = {
        "episode": np.full(rows, episode),
        "frame": frame,
        "time": frame / per_step,
        "vehicle_id": vid,
        "is_ego": vid == 0,
        "x": frame * 5.0 + vid * 20.0,
        "y": vid * 4.0,
        "vx": np.full(rows, 25.0),
        "vy": np.zeros(rows),
        "heading": np.zeros(rows),
        "length": np.full(rows, 5.0),
        "width": np.full(rows, 2.0),
        "lane": vid % 3,
        "crashed": np.zeros(rows, bool),
    }
    step = np.arange(steps)
    steps_table = {
        "episode": np.full(steps, episode),
        "step": step,
        "first_frame": step * per_step,
        "action": np.ones(steps),
        "reward": np.full(steps, 0.5),
        "collision": np.zeros(steps, bool),
        "terminated": np.zeros(steps, bool),
        "truncated": step == steps - 1,
        "policy": np.array(["rule"] * steps),
    }
    return frames, steps_table


def write_dataset(path, episodes=(0, 1)):
    entries = [write_shard(path, i, *fake_episode(e)) for i, e in enumerate(episodes)]
    write_manifest(path, "highway-fast-v0", {"duration": 2}, 5, 1, entries)
    return entries


def rewrite(path, table: pa.Table) -> None:
    pq.write_table(table, path)


def test_round_trip_keeps_values_and_dtypes(tmp_path):
    write_dataset(tmp_path)
    data = read_dataset(tmp_path)
    expected = fake_episode(0)[0]
    assert data.frames["x"].dtype == np.float32 and data.frames["lane"].dtype == np.int16
    assert data.steps["action"].dtype == np.int8 and data.steps["policy"][0] == "rule"
    np.testing.assert_array_equal(data.frames["x"][: len(expected["x"])], expected["x"])
    assert data.episodes.tolist() == [0, 1]
    assert data.frames_per_step == 5
    assert data.manifest["schema_version"] == SCHEMA_VERSION
    meta = pq.read_schema(shard_files(tmp_path, 0)[0]).metadata
    assert meta[b"drivecast.schema_version"] == str(SCHEMA_VERSION).encode()


def test_shard_is_complete_only_with_both_files_and_no_temp_files_remain(tmp_path):
    write_dataset(tmp_path)
    shard_files(tmp_path, 1)[1].unlink()
    assert complete_shards(tmp_path) == [0]
    assert not list(tmp_path.glob(".*tmp*"))


def test_missing_directory_and_manifest(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        read_dataset(tmp_path / "nope")
    with pytest.raises(DatasetError, match="manifest is missing"):
        read_dataset(tmp_path)


def test_truncated_shard_is_refused_naming_the_file(tmp_path):
    write_dataset(tmp_path)
    frames_path = shard_files(tmp_path, 1)[0]
    frames_path.write_bytes(frames_path.read_bytes()[:-100])
    with pytest.raises(DatasetError, match="shard-00001.frames.parquet: corrupt or truncated"):
        read_dataset(tmp_path)


def test_missing_column_is_refused_naming_file_and_column(tmp_path):
    write_dataset(tmp_path)
    path = shard_files(tmp_path, 0)[0]
    rewrite(path, pq.read_table(path).drop_columns(["heading"]))
    with pytest.raises(DatasetError, match=r"shard-00000.frames.parquet: missing column 'heading'"):
        read_dataset(tmp_path)


def test_wrong_dtype_is_refused(tmp_path):
    write_dataset(tmp_path)
    path = shard_files(tmp_path, 0)[1]
    table = pq.read_table(path)
    index = table.schema.get_field_index("reward")
    rewrite(path, table.set_column(index, "reward", table.column("reward").cast(pa.float64())))
    with pytest.raises(DatasetError, match="column 'reward' has type double, expected float"):
        read_dataset(tmp_path)


def test_nan_is_refused(tmp_path):
    write_dataset(tmp_path)
    path = shard_files(tmp_path, 1)[0]
    table = pq.read_table(path)
    x = table.column("x").to_numpy().copy()
    x[3] = np.nan
    index = table.schema.get_field_index("x")
    rewrite(path, table.set_column(index, pa.field("x", pa.float32()), pa.array(x)))
    with pytest.raises(DatasetError, match="shard-00001.frames.parquet: column 'x' holds NaN"):
        read_dataset(tmp_path)


def test_wrong_schema_version_in_manifest_or_file(tmp_path):
    write_dataset(tmp_path)
    manifest_path = tmp_path / MANIFEST_NAME
    manifest = json.loads(manifest_path.read_text())
    manifest_path.write_text(json.dumps({**manifest, "schema_version": 99}))
    with pytest.raises(DatasetError, match="schema_version is 99"):
        read_dataset(tmp_path)
    manifest_path.write_text(json.dumps(manifest))
    path = shard_files(tmp_path, 0)[1]
    table = pq.read_table(path)
    rewrite(path, table.replace_schema_metadata({b"drivecast.schema_version": b"0"}))
    with pytest.raises(DatasetError, match="shard-00000.steps.parquet: schema_version is '0'"):
        read_dataset(tmp_path)


def test_incomplete_manifest_and_missing_shard_file(tmp_path):
    entries = write_dataset(tmp_path)
    write_manifest(tmp_path, "highway-fast-v0", {}, 5, 1, entries, complete=False)
    with pytest.raises(DatasetError, match="incomplete"):
        read_dataset(tmp_path)
    write_manifest(tmp_path, "highway-fast-v0", {}, 5, 1, entries)
    shard_files(tmp_path, 0)[1].unlink()
    with pytest.raises(DatasetError, match="shard-00000.steps.parquet: shard file .* missing"):
        read_dataset(tmp_path)


def test_write_shard_refuses_missing_columns(tmp_path):
    frames, steps = fake_episode(0)
    del frames["lane"]
    with pytest.raises(ValueError, match="lane"):
        write_shard(tmp_path, 0, frames, steps)
    assert set(FRAME_COLUMNS) - set(frames) == {"lane"}
    assert complete_shards(tmp_path) == []
