"""kill -9 during ingest: the rerun keeps the finished shards, records the rest, and the
dataset equals one collected without interruption (the same shard checksums)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from pipeline.cli import main

DEBUG = str(Path(__file__).resolve().parents[2] / "configs" / "debug.yaml")
ARGS = ["tracking.enabled=false", "ingest.episodes=8", "ingest.episodes_per_shard=1"]


def shard_sums(workdir: Path) -> list[tuple]:
    (stage,) = [p for p in (workdir / "debug" / "ingest").iterdir()
                if not p.name.startswith(".")]
    manifest = json.loads((stage / "dataset" / "dataset.json").read_text())
    return [(s["episodes"], s["frames_sha256"], s["steps_sha256"]) for s in manifest["shards"]]


def test_a_killed_ingest_resumes_to_the_same_dataset(tmp_path):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", "ingest", DEBUG, *ARGS,
                             f"workdir={killed}"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=os.environ | {"OMP_NUM_THREADS": "1"})
    partial = killed / "debug" / "ingest"
    deadline = time.time() + 120
    while time.time() < deadline and not list(partial.glob(".partial-*/dataset/shard-*.steps.*")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = list(partial.glob(".partial-*/dataset/shard-*.steps.parquet"))
    assert 1 <= len(finished) < 8  # killed part way
    assert main(["ingest", DEBUG, *ARGS, f"workdir={killed}"]) == 0
    assert main(["ingest", DEBUG, *ARGS, f"workdir={whole}"]) == 0
    assert shard_sums(killed) == shard_sums(whole)
    (stage,) = [p for p in partial.iterdir() if not p.name.startswith(".")]
    summary = json.loads((stage / "summary.json").read_text())
    assert summary["shards_reused"] == len(finished)  # the finished shards were kept
