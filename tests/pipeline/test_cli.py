from pathlib import Path

import pytest
import yaml

from pipeline import commands
from pipeline.cli import main
from pipeline.config import load_config

ROOT = Path(__file__).resolve().parents[2]
REGENERATE = "drivecast config --reference > docs/configuration.md"


@pytest.fixture
def calls(monkeypatch):
    """Replace the commands that would run stages with recorders of their arguments."""
    seen: list[tuple] = []
    for name in ("stages", "gridworld", "bench", "iterate", "replay"):
        monkeypatch.setattr(commands, name, lambda *args, _name=name: seen.append((_name, *args))
                            or 0)
    return seen


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("drivecast: error:"), err
    return err[0]


@pytest.mark.parametrize("argv, expected", [
    (["gridworld", "workdir=runs/x"], ("gridworld", None, ["workdir=runs/x"], False)),
    (["gridworld", "workdir=runs/x", "gridworld.rounds=2", "--force"],
     ("gridworld", None, ["workdir=runs/x", "gridworld.rounds=2"], True)),
    (["gridworld", "c.yaml", "workdir=runs/x"], ("gridworld", "c.yaml", ["workdir=runs/x"], False)),
    (["gridworld"], ("gridworld", None, [], False)),
    (["bench", "planner", "export.samples=1"], ("bench", "planner", None, ["export.samples=1"])),
    (["bench", "ingest", "c.yaml", "seed=2"], ("bench", "ingest", "c.yaml", ["seed=2"])),
])
def test_an_argument_with_equals_is_an_override_where_the_config_is_optional(calls, argv,
                                                                               expected):
    assert main(argv) == 0
    assert calls == [expected]


@pytest.mark.parametrize("argv, expected", [
    (["ingest", "c.yaml", "ingest.episodes=4"], ("stages", "ingest", "c.yaml",
                                                 ["ingest.episodes=4"], False)),
    (["run", "c.yaml", "--force"], ("stages", "run", "c.yaml", [], True)),
    (["iterate", "c.yaml", "seed=1"], ("iterate", "c.yaml", ["seed=1"], False)),
    (["replay", "c.yaml"], ("replay", "c.yaml", [], False)),
])
def test_verbs_with_a_required_config_get_it_first(calls, argv, expected):
    assert main(argv) == 0
    assert calls == [expected]


@pytest.mark.parametrize("verb", ["run", "ingest", "simulate", "iterate", "replay"])
def test_an_override_where_a_config_file_is_required_is_refused_in_one_line(calls, capsys,
                                                                            verb):
    assert main([verb, "workdir=runs/x", "seed=1"]) == 2
    line = one_error_line(capsys)
    assert "'workdir=runs/x' is an override" in line and "config file first" in line
    assert calls == []


def test_gridworld_reads_an_override_without_a_config(monkeypatch, tmp_path):
    """The stage itself receives the override (it used to be read as a config path)."""
    seen = []
    monkeypatch.setattr("pipeline.runner.run_stage",
                        lambda stage, cfg, inputs, tracker, force: seen.append(cfg))
    assert main(["gridworld", f"workdir={tmp_path}", "tracking.enabled=false",
                 "gridworld.rounds=2"]) == 0
    assert seen[0].workdir == str(tmp_path) and seen[0].gridworld.rounds == 2


def test_config_prints_the_resolved_config_that_loads_back(tmp_path, capsys):
    path = ROOT / "configs" / "experiment" / "highway_critic.yaml"
    assert main(["config", str(path), "seed=7"]) == 0
    printed = capsys.readouterr().out
    assert "base" not in yaml.safe_load(printed)
    again = tmp_path / "printed.yaml"
    again.write_text(printed)
    assert load_config(again) == load_config(path, ["seed=7"])


def test_config_without_a_file_prints_the_defaults_with_overrides(capsys):
    assert main(["config", "seed=5", "export.risk=critic"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["seed"] == 5 and printed["export"]["risk"] == "critic"
    assert printed["ingest"]["episodes"] == load_config(None).ingest.episodes


@pytest.mark.parametrize("argv, named", [
    (["config", "configs/nope.yaml"], "nope.yaml"),
    (["config", "seed=abc"], "seed"),
    (["config", "--reference", "configs/highway.yaml"], "--reference"),
    (["config", "--reference", "seed=1"], "--reference"),
])
def test_config_refuses_bad_input_in_one_line(capsys, argv, named):
    assert main(argv) == 2
    assert named in one_error_line(capsys)


def test_docs_configuration_md_is_the_generated_reference(capsys):
    assert main(["config", "--reference"]) == 0
    generated = capsys.readouterr().out
    assert generated.startswith("# Configuration reference\n")
    written = (ROOT / "docs" / "configuration.md").read_text()
    assert written == generated, f"docs/configuration.md is out of date; run: {REGENERATE}"
