"""`drivecast replay`'s refusals (the end-to-end run is in test_stages.py)."""

import numpy as np
import pytest

from pipeline.artifacts import Artifacts
from pipeline.config import load_config
from pipeline.errors import StageError
from pipeline.stages.replay import check, held_out_labels


def critic_dir(tmp_path, write):
    directory = tmp_path / "critic"
    directory.mkdir()
    write(directory / "labels.npz")
    return Artifacts("critic", "0" * 12, directory, {})


@pytest.mark.parametrize("override, message", [
    ("critic.episodes=0", "replay needs labelled decisions"),
    ("replay.risk_budgets=[]", "must not be empty"),
    ("replay.risk_budgets=[1.5]", "must lie in [0, 1]"),
    ("replay.risk_weights=[-1]", "must lie in [0, 1] and replay.risk_weights be >= 0"),
])
def test_a_config_replay_cannot_run_is_refused(override, message):
    cfg = load_config(None, ["critic.episodes=2", override])
    with pytest.raises(StageError, match=message.replace("[", r"\[").replace("]", r"\]")):
        check(cfg)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "missing"])
def test_unreadable_labels_give_one_line(tmp_path, damage):
    def write(path):
        np.savez_compressed(path, hist=np.zeros((2, 3, 4, 7)), episode=np.arange(2))
        data = path.read_bytes()
        if damage == "truncated":
            path.write_bytes(data[: len(data) // 2])
        elif damage == "garbage":
            path.write_bytes(b"not a zip file")
        else:
            path.unlink()

    with pytest.raises(StageError, match="missing, corrupt or truncated") as error:
        held_out_labels(load_config(None), critic_dir(tmp_path, write))
    assert "\n" not in str(error.value)


def test_labels_of_an_older_format_are_refused(tmp_path):
    def write(path):  # label format 1: no true returns
        np.savez_compressed(path, hist=np.zeros((2, 3, 4, 7)), hist_mask=np.ones((2, 3, 4)),
                            valid=np.ones((2, 5), bool), first=np.zeros((2, 5), int),
                            episode=np.arange(2))

    with pytest.raises(StageError, match=r"lack \['returns'\]"):
        held_out_labels(load_config(None), critic_dir(tmp_path, write))
