"""Stage directories: content-addressed keys, atomic completion, reuse.

A stage writes into `<workdir>/<experiment>/<stage>/<key>/`. The key hashes the stage's
config and its inputs' keys. Work happens in `<stage>/.partial-<key>/`, which is renamed
to `<key>` only once `config.yaml` and `summary.json` are written, so a killed stage never
leaves a directory that looks complete. Stages that can resume (ingest) keep what the
partial directory already holds; the others start from an empty one. Two processes that
reach the same stage and key take turns (`stage_lock`): the second waits, then reuses
what the first completed, instead of both writing into one partial directory.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from pipeline.errors import StageError

SUMMARY = "summary.json"
CONFIG = "config.yaml"


@dataclass(frozen=True)
class Artifacts:
    """What a finished stage hands on: where its files are and its headline figures."""

    stage: str
    key: str
    path: Path
    summary: Mapping[str, float]
    reused: bool = False


def check_workdir(workdir: Path) -> None:
    """Refuse a workdir that is a file or cannot be written (StageError naming it), before
    any stage runs; creates it otherwise (every command writes there)."""
    if workdir.exists() and not workdir.is_dir():
        raise StageError(f"workdir {workdir} is a file, not a folder: set workdir= to a folder")
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=workdir):
            pass
    except OSError as err:
        raise StageError(f"workdir {workdir} cannot be written ({err.strerror or err}): set "
                         f"workdir= to a writable folder") from None


def stage_key(stage_config: Any, input_keys: Mapping[str, str]) -> str:
    """12 hex digits of a hash of the stage config and the keys of its inputs."""
    payload = json.dumps({"config": stage_config, "inputs": dict(sorted(input_keys.items()))},
                         sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def final_dir(root: Path, stage: str, key: str) -> Path:
    return root / stage / key


def partial_dir(root: Path, stage: str, key: str) -> Path:
    return root / stage / f".partial-{key}"


def is_complete(path: Path) -> bool:
    return (path / SUMMARY).is_file() and (path / CONFIG).is_file()


def load_complete(stage: str, key: str, path: Path) -> Artifacts:
    return Artifacts(stage, key, path, read_summary(stage, path), reused=True)


def read_summary(stage: str, path: Path) -> dict[str, Any]:
    """A complete stage's summary.json (a JSON object of figures), or a StageError naming
    the file and how to compute the stage again."""
    file = path / SUMMARY
    fix = f"remove {path} or run drivecast {stage} with --force to compute it again"
    try:
        summary = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        reason = getattr(err, "msg", None) or getattr(err, "strerror", None) or str(err)
        raise StageError(f"{file} cannot be read ({reason}): {fix}") from None
    if not isinstance(summary, dict):
        raise StageError(f"{file} is not a JSON object of figures: {fix}")
    return summary


@contextmanager
def stage_lock(root: Path, stage: str, key: str) -> Iterator[None]:
    """Hold `<root>/.locks/<stage>-<key>` exclusively (an advisory file lock, released
    when the process ends however it ends); wait, saying so, while another process holds
    it. The locks live apart so that a stage's directory holds only its keyed results; the
    holder removes its lock file when done, so a finished run leaves no lock behind."""
    path = root / ".locks" / f"{stage}-{key}"
    handle = acquire_lock(path, f"[{stage}] another drivecast process is computing {key}: "
                                "waiting for it")
    try:
        yield
    finally:
        path.unlink(missing_ok=True)  # before unlocking: a waiter then sees a removed file
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()
        with suppress(OSError):  # only when empty; another process may be adding a lock
            path.parent.rmdir()


def acquire_lock(path: Path, waiting: str) -> IO:
    """An open handle holding the flock of `path`, the file that is at `path` now (a holder
    that finished meanwhile removed the one this process waited on: it locks afresh)."""
    told = False
    while True:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            handle = open(path, "a")  # noqa: SIM115 (it outlives this call: it holds the lock)
        except FileNotFoundError:  # the folder was removed between mkdir and open
            continue
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not told:
                print(waiting, file=sys.stderr, flush=True)
                told = True
            fcntl.flock(handle, fcntl.LOCK_EX)
        if is_same_file(handle, path):
            return handle
        handle.close()


def is_same_file(handle: IO, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(handle.fileno()), os.stat(path))
    except FileNotFoundError:
        return False


def open_partial(root: Path, stage: str, key: str, keep: bool) -> Path:
    """The working directory of a stage run; emptied unless the stage resumes (`keep`)."""
    work = partial_dir(root, stage, key)
    if work.exists() and not keep:
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    return work


def discard_partial(work: Path, keep: bool) -> None:
    """After a refused or failed stage: remove its working directory, or with `keep` (a
    resumable stage's finished work) only if it is empty; then the stage folder if empty."""
    if not keep:
        shutil.rmtree(work, ignore_errors=True)
    else:
        with suppress(OSError):
            work.rmdir()  # only when empty
    with suppress(OSError):
        work.parent.rmdir()


FULL_DISK_BYTES = 16 << 20  # free space under which a failed write is put down to a full disk


def disk_full_error(root: Path, err: Exception) -> StageError | None:
    """A one-line StageError for an error that is not one already (torch and Lightning
    report a failed write as a RuntimeError without errno) raised while the disk under
    `root` is full; None otherwise."""
    if isinstance(err, StageError | OSError) or not root.exists():
        return None
    free = shutil.disk_usage(root).free
    if free >= FULL_DISK_BYTES:
        return None
    first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
    return StageError(f"{root}: the disk is full ({free >> 10} KiB free) and a write failed "
                      f"({first}); free some space and run again")


def commit(work: Path, final: Path, config_text: str, summary: Mapping[str, float]) -> None:
    """Write config.yaml and summary.json into `work`, then rename it to `final`."""
    write_text_atomic(work / CONFIG, config_text)
    write_json_atomic(work / SUMMARY, summary)
    if final.exists():
        shutil.rmtree(final)
    os.replace(work, final)


def write_text_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):  # a failed write leaves nothing behind
            os.remove(tmp)


def write_json_atomic(path: Path, data: Mapping[str, Any]) -> None:
    write_text_atomic(path, json.dumps(clean_numbers(data), indent=2, sort_keys=True) + "\n")


def clean_numbers(data: Mapping[str, Any]) -> dict[str, Any]:
    """JSON has no NaN: non-finite floats become null; numpy scalars become Python numbers."""
    out = {}
    for key, value in data.items():
        if hasattr(value, "item"):
            value = value.item()
        if isinstance(value, float) and not math.isfinite(value):
            value = None
        out[key] = value
    return out
