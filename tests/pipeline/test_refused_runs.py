"""A refused run leaves nothing behind: no partial folder and no lock file; a damaged
complete directory is refused in one line."""

from pathlib import Path

import pytest

from pipeline.config import load_config
from pipeline.errors import StageError
from pipeline.runner import Stage, run_stage, run_until
from pipeline.tracking import Tracker


def produce_ok(cfg, inputs, work, ctx):
    (work / "data.txt").write_text("ok")
    return {"value": 1.0}


def produce_refused(cfg, inputs, work, ctx):
    (work / "half.txt").write_text("half")  # written before the stage found its input bad
    raise StageError("the input is bad")


OK = Stage("a", sections=("ingest",), inputs=(), produce=produce_ok)
REFUSED = Stage("b", sections=("train",), inputs=("a",), produce=produce_refused)
REFUSED_RESUMABLE = Stage("b", sections=("train",), inputs=("a",), produce=produce_refused,
                          resumable=lambda cfg: True)


def leftovers(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_a_refused_stage_leaves_no_partial_folder_and_no_lock(tmp_path):
    cfg = load_config(None, [f"workdir={tmp_path}", "experiment=t", "tracking.enabled=false"])
    with pytest.raises(StageError):
        run_until("b", [OK, REFUSED], cfg, Tracker(cfg))
    root = tmp_path / "t"
    assert [p for p in leftovers(root) if p != "a" and not p.startswith("a/")] == []


def test_a_refused_resumable_stage_keeps_only_its_finished_work(tmp_path):
    cfg = load_config(None, [f"workdir={tmp_path}", "experiment=t", "tracking.enabled=false"])
    a = run_stage(OK, cfg, {}, Tracker(cfg))
    with pytest.raises(StageError):
        run_stage(REFUSED_RESUMABLE, cfg, {"a": a}, Tracker(cfg))
    (partial,) = (tmp_path / "t" / "b").iterdir()
    assert partial.name.startswith(".partial-") and (partial / "half.txt").is_file()
    assert not (tmp_path / "t" / ".locks").exists()


@pytest.mark.parametrize("text", ["", "[1, 2]", "{\"value\": "])
def test_a_damaged_summary_in_a_complete_directory_is_refused_in_one_line(tmp_path, text):
    from pipeline import artifacts

    cfg = load_config(None, [f"workdir={tmp_path}", "experiment=t", "tracking.enabled=false"])
    done = run_stage(OK, cfg, {}, Tracker(cfg))
    (done.path / "summary.json").write_text(text)
    with pytest.raises(StageError, match="summary.json .*: remove .* or run drivecast a with "
                       "--force") as err:
        run_stage(OK, cfg, {}, Tracker(cfg))
    assert "\n" not in str(err.value)
    recomputed = run_stage(OK, cfg, {}, Tracker(cfg), force=True)
    assert artifacts.read_summary("a", recomputed.path) == {"value": 1.0}
