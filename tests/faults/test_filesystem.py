"""Filesystem faults end in one line naming the path and what to do, exit code 2: a
workdir that is a file or cannot be written, a disk that fills up during ingest."""

import errno
import os
from pathlib import Path

import pytest

from pipeline import dataset
from pipeline.cli import main

DEBUG = str(Path(__file__).resolve().parents[2] / "configs" / "debug.yaml")


def one_error_line(capsys) -> str:
    """The one error line on stderr (progress bars may come before it), no traceback."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "drivecast: error: " in line]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def unwritable_folder(tmp_path: Path) -> Path:
    """A folder this process cannot write in (root writes through permissions: sysfs)."""
    if os.geteuid() == 0:
        return Path("/sys/drivecast-test-workdir")
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o500)
    return folder / "w"


def test_a_workdir_that_is_a_file_is_refused_in_one_line(tmp_path, capsys):
    workdir = tmp_path / "file"
    workdir.write_text("not a folder")
    assert main(["train", DEBUG, f"workdir={workdir}"]) == 2
    assert f"workdir {workdir} is a file" in one_error_line(capsys)
    assert workdir.read_text() == "not a folder"


def test_a_workdir_inside_a_file_is_refused_in_one_line(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    assert main(["ingest", DEBUG, f"workdir={tmp_path / 'file' / 'w'}"]) == 2
    assert "cannot be written" in one_error_line(capsys)


def test_a_read_only_workdir_is_refused_in_one_line(tmp_path, capsys):
    workdir = unwritable_folder(tmp_path)
    assert main(["ingest", DEBUG, f"workdir={workdir}"]) == 2
    assert f"workdir {workdir} cannot be written" in one_error_line(capsys)


def test_a_full_disk_during_ingest_ends_in_one_line_and_the_rerun_completes(
        tmp_path, capsys, monkeypatch):
    def full(path, table):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    args = ["ingest", DEBUG, f"workdir={tmp_path}", "ingest.episodes=2",
            "tracking.enabled=false"]
    with monkeypatch.context() as patch:
        patch.setattr(dataset, "write_table", full)
        assert main(args) == 2
    line = one_error_line(capsys)
    assert "No space left on device; free some space" in line and ".parquet" in line
    assert not [p for p in (tmp_path / "debug" / "ingest").iterdir()
                if not p.name.startswith(".")]  # nothing complete-looking
    assert main(args) == 0


def test_a_write_failing_on_a_full_disk_without_an_errno_ends_in_one_line(tmp_path, capsys,
                                                                          monkeypatch):
    """torch.save and Lightning report a full disk as a RuntimeError: a stage failing while
    the workdir's disk is full says so in one line."""
    import shutil

    from pipeline import runner
    from pipeline.config import load_config
    from pipeline.errors import StageError
    from pipeline.tracking import Tracker

    def produce(cfg, inputs, work, ctx):
        raise RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed")

    cfg = load_config(None, [f"workdir={tmp_path}", "experiment=t", "tracking.enabled=false"])
    tracker = Tracker(cfg)
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=4096))
    stage = runner.Stage("a", sections=("train",), inputs=(), produce=produce)
    with pytest.raises(StageError, match=r"the disk is full \(4 KiB free\) and a write "
                       "failed .*file write failed") as err:
        runner.run_stage(stage, cfg, {}, tracker)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "t" / "a").exists()
