"""`drivecast report`: records from stage directories, tables from records, the README block."""

import json
from pathlib import Path

import pytest

from evaluation.metrics import wilson_interval
from pipeline import artifacts
from pipeline.config import load_config
from pipeline.report import (
    BEGIN,
    END,
    RESULTS_DIR,
    ReportError,
    collect,
    load_results,
    picture_paths,
    pipeline_keys,
    readme_block,
    render,
    save,
    update_readme,
)

ROOT = Path(__file__).resolve().parents[2]
EVALUATE = {"windows": 40, "fde_1s": 0.3, "fde_3s": 1.2, "cv_fde_3s": 2.4, "risk_auroc": 0.91}
SIMULATE = {"episodes": 20, "collision_rate": 0.05, "mean_speed": 24.5, "mean_return": 22.0,
            "latency_p50_ms": 1.5, "latency_p99_ms": 2.5, "rule/episodes": 20,
            "rule/collision_rate": 0.0, "rule/mean_speed": 23.0, "rule/mean_return": 21.5}


def fake_stages(cfg, summaries: dict[str, dict]) -> None:
    """Complete stage directories at the keys `cfg` names, holding the given summaries."""
    for name, found in pipeline_keys(cfg).items():
        if name in summaries:
            work = artifacts.partial_dir(found.path.parents[1], name, found.key)
            work.mkdir(parents=True)
            artifacts.commit(work, found.path, "seed: 0\n", summaries[name])


def test_readme_results_block_is_what_report_writes_from_the_kept_records():
    records = load_results(ROOT / RESULTS_DIR)
    names = {r["name"] for r in records}
    assert "quickstart" in names  # the default job is always recorded
    assert readme_block(ROOT / "README.md") == render(records), \
        "README.md's results differ from the records: run `drivecast report --readme README.md`"


def test_kept_records_match_the_stage_keys_of_the_shipped_configs():
    for record in load_results(ROOT / RESULTS_DIR):
        cfg = load_config(ROOT / record["config"])
        keys = {name: a.key for name, a in pipeline_keys(cfg).items()}
        assert keys == record["keys"], f"{record['config']}: stage keys moved; rerun it and " \
            f"`drivecast report {record['config']}`"


def test_collect_reads_the_stage_directories_the_config_names(tmp_path):
    cfg = load_config(ROOT / "configs/debug.yaml", [f"workdir={tmp_path}"])
    fake_stages(cfg, {"evaluate": EVALUATE, "export": {"onnx_bytes": 10}, "simulate": SIMULATE})
    record = collect(cfg, "configs/debug.yaml")
    assert record["name"] == "debug" and record["command"] == "drivecast run configs/debug.yaml"
    assert record["summaries"]["simulate"]["collision_rate"] == 0.05
    path = save(record, tmp_path / "results")
    assert load_results(path.parent) == [record]
    table = render([record])
    assert "| debug | 40 | 1.20 at 3 s | 0.50 | 0.910 |" in table
    assert "| debug | planner | 1/20 (0.9-23.6%) | 24.50 | 22.00 | 1.5 / 2.5 |" in table
    assert "| debug | rule | 0/20 (0.0-16.1%) | 23.00 | 21.50 |  |" in table


def test_picture_paths_are_the_pictures_the_stages_drew(tmp_path):
    cfg = load_config(ROOT / "configs/debug.yaml", [f"workdir={tmp_path}"])
    fake_stages(cfg, {"evaluate": EVALUATE, "simulate": SIMULATE})
    stages = pipeline_keys(cfg)
    drawn = [stages["evaluate"].path / "imagination_test.gif",
             stages["simulate"].path / "crash_view.gif",
             stages["simulate"].path / "planner_view.gif"]
    for path in [*drawn, stages["simulate"].path / "simulate.gif"]:
        path.write_bytes(b"GIF89a")
    assert picture_paths(cfg) == drawn


def test_collect_refuses_a_missing_stage_in_one_line(tmp_path):
    cfg = load_config(ROOT / "configs/debug.yaml", [f"workdir={tmp_path}"])
    fake_stages(cfg, {"evaluate": EVALUATE})
    with pytest.raises(ReportError, match="no complete export stage") as err:
        collect(cfg, "configs/debug.yaml")
    assert "\n" not in str(err.value)


def test_update_readme_rewrites_only_the_block(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{BEGIN}\nold\n{END}\n\nafter\n")
    assert update_readme(readme, "new table\n")
    assert readme.read_text() == f"# x\n\n{BEGIN}\nnew table\n{END}\n\nafter\n"
    assert not update_readme(readme, "new table\n")
    assert readme_block(readme) == "new table\n"
    readme.write_text("no markers\n")
    with pytest.raises(ReportError, match="must hold one"):
        update_readme(readme, "t\n")


def test_load_results_refuses_a_record_without_its_summaries(tmp_path):
    (tmp_path / "bad.json").write_text(json.dumps({"name": "bad", "command": "x"}))
    with pytest.raises(ReportError, match="not a drivecast results record"):
        load_results(tmp_path)
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ReportError, match="not readable JSON"):
        load_results(tmp_path)


def test_wilson_interval_golden_values():
    low, high = wilson_interval(2, 100)
    assert (round(low, 4), round(high, 4)) == (0.0055, 0.0700)
    low, high = wilson_interval(0, 100)
    assert low == 0.0 and round(high, 4) == 0.0370
    assert wilson_interval(10, 10)[1] == 1.0 and wilson_interval(0, 7)[0] == 0.0  # exact ends
    assert wilson_interval(10, 10)[0] == pytest.approx(0.7225, abs=1e-4)
