"""Bad recorded files and mappings give the promised one-line errors, before writing."""

import shutil
from pathlib import Path

import pytest

from pipeline.cli import main
from pipeline.config import RecordedConfig
from pipeline.recorded import check_recorded, ingest_recorded
from pipeline.recorded.mapping import RecordedError

ROOT = Path(__file__).resolve().parents[3]
FIXTURES = ROOT / "tests" / "fixtures" / "recorded"
NGSIM = FIXTURES / "ngsim" / "trajectories-0750am-0805am.csv"
GENERIC = FIXTURES / "generic" / "rotated_road.csv"
GENERIC_COLUMNS = {"time": "timestamp", "track": "object", "x": "east_m", "y": "north_m",
                   "heading": "yaw_deg"}


def edited_copy(source: Path, target: Path, edit) -> Path:
    """Copy a fixture with `edit(lines)` applied (lines[0] is the header, line 1 of the file)."""
    lines = source.read_text().splitlines()
    edit(lines)
    target.write_text("\n".join(lines) + "\n")
    return target


def set_cell(lines: list[str], line_number: int, column: str, value: str) -> None:
    header = lines[0].split(",")
    cells = lines[line_number - 1].split(",")
    cells[header.index(column)] = value
    lines[line_number - 1] = ",".join(cells)


def ngsim(path: Path, **kw) -> RecordedConfig:
    return RecordedConfig(path=str(path), preset="ngsim", **({"ego_min_seconds": 3} | kw))


def refused(cfg: RecordedConfig, tmp_path: Path) -> str:
    with pytest.raises(RecordedError) as info:
        ingest_recorded(tmp_path / "out", cfg, seed=0)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_misspelled_column_is_named_with_a_suggestion(tmp_path):
    cfg = RecordedConfig(path=str(GENERIC), columns=GENERIC_COLUMNS | {"x": "east"},
                         time_unit="iso", heading_unit="deg")
    message = refused(cfg, tmp_path)
    assert "column 'east' (ingest.recorded.columns.x) is not in the header" in message
    assert "did you mean 'east_m'?" in message and str(GENERIC) in message
    assert not (tmp_path / "out").exists()  # checked before anything is written


def test_missing_column_lists_the_header(tmp_path):
    cfg = RecordedConfig(path=str(GENERIC), columns=GENERIC_COLUMNS | {"lane": "lane_index"},
                         time_unit="iso", heading_unit="deg")
    message = refused(cfg, tmp_path)
    assert "'lane_index'" in message and "header: timestamp, object, east_m" in message


def test_nan_inf_and_empty_cells_are_counted_and_located(tmp_path):
    def edit(lines):
        set_cell(lines, 5, "Local_Y", "NaN")
        set_cell(lines, 9, "Local_Y", "inf")
        set_cell(lines, 30, "v_Length", "")
    message = refused(ngsim(edited_copy(NGSIM, tmp_path / "bad.csv", edit)), tmp_path)
    assert "3 row(s) hold NaN, inf or nothing" in message
    assert "'Local_Y' 2" in message and "'v_Length' 1" in message
    assert "lines 5, 9, 30" in message


def test_time_going_back_within_a_track_is_counted_and_located(tmp_path):
    def edit(lines):  # swap lines 10 and 11 (vehicle 11 at 0.8 s and 0.9 s)
        lines[9], lines[10] = lines[10], lines[9]
    bad = edited_copy(NGSIM, tmp_path / "bad.csv", edit)
    message = refused(ngsim(bad), tmp_path)
    assert "1 row(s) do not move forward in time within their track" in message
    assert "'Global_Time'" in message and "track 11" in message and "line 11" in message
    assert "sort_rows=true" in message
    summary = ingest_recorded(tmp_path / "sorted", ngsim(bad, sort_rows=True), seed=0)
    assert summary["episodes"] == 3  # the same file, sorted on read


def test_text_in_a_number_column_is_located(tmp_path):
    bad = edited_copy(NGSIM, tmp_path / "bad.csv", lambda lines: set_cell(lines, 7, "Local_X",
                                                                           "abc"))
    message = refused(ngsim(bad), tmp_path)
    assert "column 'Local_X' holds 1 value(s) that are not numbers ('abc' at line 7)" in message


def test_text_that_is_no_iso_timestamp_is_located(tmp_path):
    def edit(lines):
        lines[3] = "yesterday" + lines[3][len("2024-05-02T08:00:00.000Z"):]
    bad = edited_copy(GENERIC, tmp_path / "bad.csv", edit)
    cfg = RecordedConfig(path=str(bad), columns=GENERIC_COLUMNS, time_unit="iso",
                         heading_unit="deg")
    message = refused(cfg, tmp_path)
    assert "'yesterday', not an ISO 8601 timestamp (line 4)" in message


@pytest.mark.parametrize("change, words", [
    ({"preset": "argoverse"}, "ingest.recorded.preset"),
    ({"length_unit": "yd"}, "ingest.recorded.length_unit"),
    ({"columns": {"speed": "v_Vel"}}, "ingest.recorded.columns.speed' is not a role"),
    ({"columns": {"x": ""}}, "must map role 'x'"),
    ({"frequency": 10, "policy_frequency": 3}, "must be a multiple"),
    ({"max_gap": 0.0}, "ingest.recorded.max_gap' must be > 0"),
    ({"path": "/nonexistent/*.csv"}, "matches no recording file"),
])
def test_bad_config_values_are_named(change, words):
    fields = {"path": str(NGSIM), "preset": "ngsim"} | change
    with pytest.raises(RecordedError, match=words.replace("(", r"\(").replace(".", r"\.")):
        check_recorded(RecordedConfig(**fields))


def test_highd_without_its_recording_meta_is_refused(tmp_path):
    for name in ("01_tracks.csv", "01_tracksMeta.csv"):
        shutil.copy(FIXTURES / "highd" / name, tmp_path / name)
    with pytest.raises(RecordedError, match="01_recordingMeta.csv is missing"):
        check_recorded(RecordedConfig(path=str(tmp_path), preset="highd"))


def test_no_vehicle_long_enough_in_view_is_refused(tmp_path):
    message = refused(ngsim(NGSIM, ego_min_seconds=5.0), tmp_path)  # the file holds 4 s
    assert "no vehicle stays in view" in message and "ego_min_seconds (5.0 s)" in message


def test_an_output_directory_holding_files_is_refused(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "dataset.json").write_text("{}")
    message = refused(ngsim(NGSIM), tmp_path)
    assert "out: is not empty" in message
    assert (tmp_path / "out" / "dataset.json").read_text() == "{}"  # nothing overwritten


def test_cli_exits_2_with_one_line_and_writes_nothing(tmp_path, capsys):
    code = main(["ingest", str(ROOT / "configs" / "recorded_ngsim.yaml"), f"workdir={tmp_path}",
                 f"ingest.recorded.path={NGSIM}", "ingest.recorded.columns.y=Local_Z",
                 "tracking.enabled=false"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "column 'Local_Z' (ingest.recorded.columns.y)" in err[0]
    assert "did you mean 'Local_Y'?" in err[0] or "did you mean 'Local_X'?" in err[0]
    assert list(tmp_path.iterdir()) == []
