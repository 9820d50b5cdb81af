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
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
    summary = json.loads((path / SUMMARY).read_text())
    return Artifacts(stage, key, path, summary, reused=True)


@contextmanager
def stage_lock(root: Path, stage: str, key: str) -> Iterator[None]:
    """Hold `<root>/.locks/<stage>-<key>` exclusively (an advisory file lock, released
    when the process ends however it ends); wait, saying so, while another process holds
    it. The locks live apart so that a stage's directory holds only its keyed results."""
    path = root / ".locks" / f"{stage}-{key}"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"[{stage}] another drivecast process is computing {key}: waiting for it",
                  file=sys.stderr, flush=True)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def open_partial(root: Path, stage: str, key: str, keep: bool) -> Path:
    """The working directory of a stage run; emptied unless the stage resumes (`keep`)."""
    work = partial_dir(root, stage, key)
    if work.exists() and not keep:
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    return work


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
