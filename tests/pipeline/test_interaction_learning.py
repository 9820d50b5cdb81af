"""Does the interaction variant learn? Trained through the train stage on a small
debug-config dataset, it must beat the RSSM (probabilistic variant, same data, same
epochs) and constant velocity at 2 s on the held-out test episodes."""

import json
from pathlib import Path

import numpy as np

from pipeline.artifacts import load_complete
from pipeline.cli import main
from pipeline.config import load_config
from pipeline.forecast import forecast_summary
from pipeline.stage_io import load_model, load_windows

ROOT = Path(__file__).resolve().parents[2]
DEBUG = str(ROOT / "configs" / "debug.yaml")
DATA = ["ingest.episodes=36", "ingest.workers=1", "tracking.enabled=false"]
TRAINING = ["train.epochs=12", "train.patience=12", "train.lr=0.006"]


def held_out_figures(tmp_path: Path, capsys, variant: str) -> dict[str, float]:
    overrides = [f"workdir={tmp_path}", *DATA, *TRAINING, f"model.variant={variant}"]
    assert main(["train", DEBUG, *overrides]) == 0
    train_dir = Path(capsys.readouterr().out.strip().splitlines()[-1])
    model, _ = load_model(load_complete("train", train_dir.name, train_dir))
    (ingest_dir,) = (tmp_path / "debug" / "ingest").iterdir()  # both train on the same data
    windows = load_windows(ingest_dir / "dataset", load_config(DEBUG, overrides))
    test_ids = json.loads((train_dir / "splits.json").read_text())["test"]
    held_out = windows.subset(np.isin(windows.arrays["episode"], test_ids))
    assert len(held_out) > 30
    return forecast_summary(model, held_out, prefix="test_")


def test_interaction_beats_the_rssm_and_constant_velocity_at_2s(tmp_path, capsys):
    interaction = held_out_figures(tmp_path, capsys, "interaction")
    rssm = held_out_figures(tmp_path, capsys, "probabilistic")
    assert interaction["test_fde_2s"] < rssm["test_fde_2s"], (interaction, rssm)
    assert interaction["test_fde_2s"] < interaction["cv_fde_2s"], interaction
