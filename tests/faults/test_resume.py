"""A training killed after an epoch and resumed with train.resume=true ends as one that
ran through: the same figures and the same weights, bit for bit (the shuffle order and
the sampled latents of each epoch depend on the seed and the epoch alone)."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from pipeline import lit_module
from pipeline.cli import main

DEBUG = str(Path(__file__).resolve().parents[2] / "configs" / "debug.yaml")
TIMING = ("fit_seconds", "samples_per_s", "resumed_from_epoch", "data_wait_share")


class Killed(Exception):
    """Stands for kill -9 after an epoch: nothing after it runs."""


class KilledAtEpoch(lit_module.EpochSeed):
    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == 2:
            raise Killed


def train_dir(workdir: Path) -> Path:
    (path,) = [p for p in (workdir / "debug" / "train").iterdir()
               if not p.name.startswith(".")]
    return path


def test_a_killed_and_resumed_training_ends_as_one_that_ran_through(tmp_path, monkeypatch):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    common = [DEBUG, "tracking.enabled=false", "train.epochs=4", "train.patience=50"]
    assert main(["ingest", *common, f"workdir={whole}"]) == 0
    shutil.copytree(whole / "debug" / "ingest", killed / "debug" / "ingest")
    assert main(["train", *common, f"workdir={whole}"]) == 0
    with monkeypatch.context() as patch:
        patch.setattr(lit_module, "EpochSeed", KilledAtEpoch)
        with pytest.raises(Killed):
            main(["train", *common, f"workdir={killed}", "train.resume=true"])
    (partial,) = (killed / "debug" / "train").glob(".partial-*/checkpoints/last.ckpt")
    assert torch.load(partial, weights_only=False)["epoch"] == 1
    assert main(["train", *common, f"workdir={killed}", "train.resume=true"]) == 0
    a, b = train_dir(whole), train_dir(killed)
    assert a.name == b.name  # the same stage key
    first, resumed = (json.loads((d / "summary.json").read_text()) for d in (a, b))
    assert resumed["resumed_from_epoch"] == 2
    assert {k: v for k, v in first.items() if k not in TIMING} == \
        {k: v for k, v in resumed.items() if k not in TIMING}
    weights = [torch.load(d / "model.pt", weights_only=True) for d in (a, b)]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_resuming_from_a_truncated_checkpoint_is_refused_in_one_line(tmp_path, capsys):
    from pipeline.artifacts import Artifacts
    from pipeline.config import load_config
    from pipeline.runner import key_of, stage_named

    common = [DEBUG, "tracking.enabled=false", f"workdir={tmp_path}", "train.resume=true"]
    assert main(["ingest", *common]) == 0
    cfg = load_config(common[0], common[1:])
    (ingest,) = [p for p in (tmp_path / "debug" / "ingest").iterdir()
                 if not p.name.startswith(".")]
    key = key_of(stage_named("train"), cfg, {"ingest": Artifacts("ingest", ingest.name,
                                                                 ingest, {})})
    last = tmp_path / "debug" / "train" / f".partial-{key}" / "checkpoints" / "last.ckpt"
    last.parent.mkdir(parents=True)
    last.write_bytes(b"PK\x03\x04 half a checkpoint")
    capsys.readouterr()
    assert main(["train", *common]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("drivecast: error: ")]
    assert len(lines) == 1 and "Traceback" not in err
    assert f"{last}: checkpoint cannot be read" in lines[0]
    assert last.is_file()  # kept: the message says what to do with it
