"""Recorded values far outside any road or above any vehicle's speed, and files with a
header but no rows, are refused on read with the file, column and lines named."""

import shutil

import pytest

from pipeline.config import RecordedConfig
from tests.pipeline.recorded.test_errors import (
    FIXTURES,
    NGSIM,
    edited_copy,
    ngsim,
    refused,
    set_cell,
)


@pytest.mark.parametrize("column, value, words", [
    ("Local_Y", "1e300", "column 'Local_Y' holds 1 value(s) beyond 1e+07 m"),
    ("Local_X", "1e12", "column 'Local_X' holds 1 value(s) beyond 1e+07 m"),
    ("v_Length", "-900", "column 'v_Length' holds 1 value(s) beyond 100 m"),
])
def test_a_value_beyond_any_road_or_vehicle_is_refused_with_its_line(tmp_path, column, value,
                                                                     words):
    path = edited_copy(NGSIM, tmp_path / "bad.csv", lambda lines: set_cell(lines, 7, column,
                                                                           value))
    message = refused(ngsim(path), tmp_path)
    assert words in message and "at line 7" in message and "bad.csv" in message
    assert not (tmp_path / "out" / "shard-00000.frames.parquet").exists()


def test_a_file_with_a_header_and_no_rows_is_refused(tmp_path):
    path = edited_copy(NGSIM, tmp_path / "empty.csv", lambda lines: lines.__delitem__(
        slice(1, None)))
    assert "empty.csv: holds a header but no rows" in refused(ngsim(path), tmp_path)


def test_a_speed_above_any_vehicles_is_refused_with_its_line(tmp_path):
    folder = tmp_path / "highd"
    shutil.copytree(FIXTURES / "highd", folder)
    tracks = folder / "01_tracks.csv"
    edited_copy(tracks, tracks, lambda lines: set_cell(lines, 4, "xVelocity", "2000"))
    message = refused(RecordedConfig(path=str(folder), preset="highd", ego_min_seconds=3),
                      tmp_path)
    assert "column 'xVelocity' holds 1 value(s) beyond 150 m/s" in message
    assert "at line 4" in message
