"""Shards carry their dataset's identity and the manifest their checksums: a shard from
another dataset is refused, and a malformed manifest is one line naming what is wrong."""

import json
import shutil

import pytest

from pipeline.dataset import (
    MANIFEST_NAME,
    DatasetError,
    read_dataset,
    shard_files,
    write_manifest,
    write_shard,
)
from tests.pipeline.test_dataset import fake_episode


def write_dataset(path, env_id="highway-fast-v0", frequency=5, episodes=(0, 1)):
    """A dataset written as the collections write one: the manifest first, then shards."""
    path.mkdir(parents=True, exist_ok=True)
    header = {"env_id": env_id, "env_config": {}, "simulation_frequency": frequency,
              "policy_frequency": 1}
    write_manifest(path, shards=[], complete=False, **header)
    entries = [write_shard(path, i, *fake_episode(e)) for i, e in enumerate(episodes)]
    write_manifest(path, shards=entries, complete=True, **header)


def copy_shard(source, target, index=1):
    for src, dst in zip(shard_files(source, index), shard_files(target, index), strict=True):
        shutil.copyfile(src, dst)


def test_a_shard_from_another_env_and_frequency_is_refused(tmp_path):
    write_dataset(tmp_path / "highway")
    write_dataset(tmp_path / "merge", env_id="merge-v0", frequency=15)
    copy_shard(tmp_path / "merge", tmp_path / "highway")
    with pytest.raises(DatasetError, match="shard-00001.frames.parquet: shard belongs to "
                       "another dataset") as err:
        read_dataset(tmp_path / "highway")
    assert "\n" not in str(err.value)


def test_a_shard_from_another_dataset_of_the_same_env_is_refused_by_its_checksum(tmp_path):
    write_dataset(tmp_path / "a")
    write_dataset(tmp_path / "b", episodes=(0, 5))
    entries = json.loads((tmp_path / "a" / MANIFEST_NAME).read_text())["shards"]
    assert {"frames_sha256", "steps_sha256"} <= set(entries[0])
    copy_shard(tmp_path / "b", tmp_path / "a")  # a whole, valid shard: episode 5
    with pytest.raises(DatasetError, match="shard-00001.frames.parquet: contents differ from "
                       "the checksum"):
        read_dataset(tmp_path / "a")


def test_a_changed_shard_is_refused_by_its_checksum(tmp_path):
    import pyarrow.parquet as pq

    write_dataset(tmp_path)
    path = shard_files(tmp_path, 0)[0]
    table = pq.read_table(path)
    pq.write_table(table, path, compression="snappy")  # same rows, other bytes
    with pytest.raises(DatasetError, match="frames.parquet: contents differ from the checksum"):
        read_dataset(tmp_path)


def test_a_manifest_entry_listing_other_episodes_is_refused(tmp_path):
    write_dataset(tmp_path)
    manifest = json.loads((tmp_path / MANIFEST_NAME).read_text())
    manifest["shards"][1]["episodes"] = [7]
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(DatasetError, match=r"shard 'shard-00001' lists episodes \[7\]"):
        read_dataset(tmp_path)


@pytest.mark.parametrize("change, named", [
    (lambda m: m["shards"][0].pop("frames_file"), "shard entry 0 needs 'frames_file'"),
    (lambda m: m.update(shards="shard-00000"), "'shards' must be a list"),
    (lambda m: m["shards"].__setitem__(1, 3), "shard entry 1 must be a JSON object"),
    (lambda m: m["shards"][0].update(steps_file="../../etc/passwd"),
     "'steps_file' must name a file in the dataset directory"),
    (lambda m: m.update(simulation_frequency=0), "simulation_frequency and policy_frequency"),
])
def test_a_malformed_manifest_is_refused_in_one_line(tmp_path, change, named):
    write_dataset(tmp_path)
    manifest = json.loads((tmp_path / MANIFEST_NAME).read_text())
    change(manifest)
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(DatasetError, match=named.replace("(", r"\(")) as err:
        read_dataset(tmp_path)
    assert "\n" not in str(err.value)


def test_a_shard_its_reader_would_refuse_is_not_written(tmp_path):
    import numpy as np

    frames, steps = fake_episode(0)
    frames["x"] = np.where(np.arange(len(frames["x"])) == 4, 1e300, frames["x"])  # -> inf
    with pytest.raises(DatasetError, match="shard-00000.frames.parquet: column 'x' would hold "
                       "NaN or inf"):
        write_shard(tmp_path, 0, frames, steps)
    assert not list(tmp_path.iterdir())
