"""Values out of range are refused when the config is loaded: before any stage runs,
with one line naming the key, and nothing written."""

from pathlib import Path

import pytest

from pipeline.cli import main
from pipeline.config import ConfigError, load_config

DEBUG = str(Path(__file__).resolve().parents[2] / "configs" / "debug.yaml")


@pytest.mark.parametrize("override, named", [
    ("model.size=huge", "model.size"),
    ("train.lr=.nan", "train.lr"),
    ("train.lr=0", "train.lr"),
    ("train.val_fraction=1.5", "train.val_fraction"),
    ("train.test_fraction=0.8", "train.test_fraction"),
    ("train.epochs=-1", "train.epochs"),
    ("train.loss.forecast=.inf", "train.loss.forecast"),
    ("ingest.episodes_per_shard=0", "ingest.episodes_per_shard"),
    ("ingest.workers=0", "ingest.workers"),
    ("export.horizon=0", "export.horizon"),
    ("simulate.risk_budget=2", "simulate.risk_budget"),
    ("seed=-1", "seed"),
    ("replay.risk_weights=[.nan]", "replay.risk_weights"),
])
def test_a_value_out_of_range_is_refused_before_any_stage_runs(tmp_path, capsys, override,
                                                               named):
    workdir = tmp_path / "w"
    assert main(["train", DEBUG, override, f"workdir={workdir}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"'{named}'" in err[0], err
    assert not workdir.exists()


def test_an_empty_config_file_is_refused(tmp_path):
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing here\n")
    with pytest.raises(ConfigError, match="empty.yaml is empty"):
        load_config(empty)
    with pytest.raises(ConfigError, match="train.lossx"):  # a misspelt override comes first
        load_config(empty, ["train.lossx=1"])


def test_every_shipped_config_passes_the_value_checks():
    configs = Path(DEBUG).parent
    for path in [*configs.glob("*.yaml"), *configs.glob("experiment/*.yaml")]:
        load_config(path)
