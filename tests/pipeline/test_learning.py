"""Does it learn? The world model trained on debug-sized highway-env data must beat
constant velocity at 2 s on held-out episodes, and its collision risk (the default
forecast-overlap source) must rank held-out collisions with AUROC above 0.8."""

import json
from pathlib import Path

import numpy as np
import pytest

from pipeline.artifacts import load_complete
from pipeline.cli import main
from pipeline.config import load_config
from pipeline.forecast import forecast_summary
from pipeline.stage_io import load_model, load_windows

ROOT = Path(__file__).resolve().parents[2]
OVERRIDES = ["ingest.episodes=60", "ingest.workers=2", "train.epochs=60", "train.patience=60",
             "tracking.enabled=false"]


@pytest.mark.slow
def test_trained_model_beats_constant_velocity_on_held_out_episodes(tmp_path, capsys):
    overrides = [f"workdir={tmp_path}", *OVERRIDES]
    assert main(["train", str(ROOT / "configs" / "debug.yaml"), *overrides]) == 0
    train_dir = Path(capsys.readouterr().out.strip().splitlines()[-1])
    cfg = load_config(ROOT / "configs" / "debug.yaml", overrides)
    model, _ = load_model(load_complete("train", train_dir.name, train_dir))
    (ingest_dir,) = (tmp_path / "debug" / "ingest").iterdir()
    windows = load_windows(ingest_dir / "dataset", cfg)
    test_ids = json.loads((train_dir / "splits.json").read_text())["test"]
    held_out = windows.subset(np.isin(windows.arrays["episode"], test_ids))
    assert len(held_out) > 30
    figures = forecast_summary(model, held_out, prefix="test_")
    assert figures["test_fde_2s"] < figures["cv_fde_2s"], figures
    assert figures["test_risk_auroc"] > 0.8, figures
