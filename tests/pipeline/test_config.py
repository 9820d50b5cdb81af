import ast
import dataclasses
import inspect
import re
import textwrap
from pathlib import Path

import pytest
import yaml

from pipeline.cli import main
from pipeline.config import (
    Config,
    ConfigError,
    PlannerRisk,
    Variant,
    config_sections,
    field_comments,
    flatten,
    load_config,
    merge_tree,
    parse_override,
    reference_markdown,
    source_comments,
    to_dict,
)
from pipeline.errors import DrivecastError

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_override_parsing_reads_yaml_values():
    assert parse_override("ingest.episodes=4") == ("ingest.episodes", 4)
    assert parse_override("tracking.enabled=false") == ("tracking.enabled", False)
    assert parse_override("ingest.env_config={lanes_count: 4}") == (
        "ingest.env_config", {"lanes_count": 4})
    with pytest.raises(ConfigError, match="key.sub=value"):
        parse_override("ingest.episodes")


def test_overrides_apply_over_the_file(tmp_path):
    cfg = load_config(write(tmp_path, "ingest: {episodes: 9}\n"),
                      ["ingest.workers=3", "model.variant=deterministic", "train.lr=1",
                       "train.weight_decay=3e-4"])
    assert cfg.ingest.episodes == 9 and cfg.ingest.workers == 3
    assert cfg.model.variant is Variant.deterministic
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float)
    assert cfg.train.weight_decay == 3e-4


@pytest.mark.parametrize("text, overrides, named", [
    ("ingest: {episods: 3}\n", [], "ingest.episods"),
    ("", ["train.lossx=1"], "train.lossx"),
    ("ingest: {episodes: many}\n", [], "ingest.episodes"),
    ("ingest: {episodes: true}\n", [], "ingest.episodes"),
    ("model: {variant: magic}\n", [], "model.variant"),
    ("ingest: {policies: [{name: rule, epsilonn: 1}]}\n", [], "epsilonn"),
    ("train: 3\n", [], "train"),
])
def test_bad_keys_and_types_name_the_key(tmp_path, text, overrides, named):
    with pytest.raises(ConfigError, match=named.replace(".", r"\.").replace("[", r"\[")):
        load_config(write(tmp_path, text), overrides)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml"):
        load_config(tmp_path / "nope.yaml")


@pytest.mark.parametrize("args, named", [
    (["ingest", "{cfg}", "ingest.episods=2"], "ingest.episods"),
    (["ingest", "{missing}"], "missing.yaml"),
    (["run", "{cfg}", "seed=abc"], "seed"),
    (["ingest", "{cfg}", "ingest.policies=[{{name: foo}}]"], "foo"),
    (["ingest", "{cfg}", "ingest.env_id=nope-v0"], "nope-v0"),
    (["ingest", "{cfg}", "ingest.env_config={{lanes_cnt: 3}}"], "lanes_cnt"),
])
def test_cli_refuses_bad_config_with_exit_2_and_writes_nothing(tmp_path, capsys, args, named):
    cfg = write(tmp_path, f"workdir: {tmp_path / 'w'}\n")
    argv = [a.format(cfg=cfg, missing=tmp_path / "missing.yaml") for a in args]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and named in err[0] and err[0].startswith("drivecast: error:")
    assert not (tmp_path / "w").exists()


def test_to_dict_round_trips_through_load(tmp_path):
    cfg = load_config(CONFIGS / "debug.yaml", ["train.epochs=7"])
    again = load_config(write(tmp_path, yaml.safe_dump(to_dict(cfg))))
    assert again == cfg


# ---------------------------------------------------------------- base composition


def write_at(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def one_line_error(path: Path, overrides: list[str] = ()) -> str:
    with pytest.raises(ConfigError) as err:
        load_config(path, overrides)
    message = str(err.value)
    assert "\n" not in message
    return message


def test_base_mappings_merge_deeply_and_scalars_are_replaced(tmp_path):
    write_at(tmp_path / "base.yaml", "seed: 4\ningest: {episodes: 9, workers: 3, env_config: "
             "{lanes_count: 4, duration: 10}}\ntrain: {epochs: 7}\n")
    over = write_at(tmp_path / "over.yaml", "base: base.yaml\nseed: 5\n"
                    "ingest: {episodes: 2, env_config: {duration: 20}}\n")
    cfg = load_config(over)
    assert cfg.seed == 5 and cfg.train.epochs == 7
    assert (cfg.ingest.episodes, cfg.ingest.workers) == (2, 3)
    assert cfg.ingest.env_config == {"lanes_count": 4, "duration": 20}


def test_base_lists_are_replaced_not_merged(tmp_path):
    write_at(tmp_path / "base.yaml", "ingest: {policies: [{name: rule}, {name: random}]}\n"
             "simulate: {baselines: [idle, rule, oracle]}\n")
    over = write_at(tmp_path / "over.yaml", "base: base.yaml\n"
                    "ingest: {policies: [{name: idle, weight: 2.0}]}\n"
                    "simulate: {baselines: [rule]}\n")
    cfg = load_config(over)
    assert [(p.name, p.weight) for p in cfg.ingest.policies] == [("idle", 2.0)]
    assert cfg.simulate.baselines == ["rule"]


def test_merge_tree_leaves_its_inputs_alone():
    base = {"a": {"b": 1, "c": [1, 2]}, "d": 1}
    over = {"a": {"c": [3]}, "e": 2}
    assert merge_tree(base, over) == {"a": {"b": 1, "c": [3]}, "d": 1, "e": 2}
    assert base == {"a": {"b": 1, "c": [1, 2]}, "d": 1} and over == {"a": {"c": [3]}, "e": 2}


def test_base_is_relative_to_the_file_not_the_working_directory(tmp_path, monkeypatch):
    write_at(tmp_path / "configs" / "base.yaml", "experiment: shared\nseed: 3\n")
    over = write_at(tmp_path / "configs" / "experiment" / "over.yaml",
                    "base: ../base.yaml\nseed: 8\n")
    monkeypatch.chdir(write_at(tmp_path / "elsewhere" / "x", "").parent)
    cfg = load_config(Path("..") / "configs" / "experiment" / "over.yaml")
    assert (cfg.experiment, cfg.seed) == ("shared", 8)
    assert load_config(over) == cfg


def test_a_chain_of_two_bases_applies_nearest_last(tmp_path):
    write_at(tmp_path / "root" / "a.yaml", "experiment: a\nseed: 1\ntrain: {epochs: 1}\n")
    write_at(tmp_path / "mid" / "b.yaml", "base: ../root/a.yaml\nseed: 2\n"
             "train: {epochs: 2, batch_size: 8}\n")
    top = write_at(tmp_path / "c.yaml", "base: mid/b.yaml\ntrain: {epochs: 3}\n")
    cfg = load_config(top)
    assert (cfg.experiment, cfg.seed, cfg.train.epochs, cfg.train.batch_size) == ("a", 2, 3, 8)


def test_the_resolved_config_holds_no_base(tmp_path, capsys):
    write_at(tmp_path / "base.yaml", "seed: 3\n")
    over = write_at(tmp_path / "over.yaml", "base: base.yaml\n")
    assert "base" not in to_dict(load_config(over))
    assert "unknown config key 'base'" in one_line_error(over, ["base=other.yaml"])
    assert main(["config", str(over)]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert "base" not in printed and printed["seed"] == 3


@pytest.mark.parametrize("files", [
    {"a.yaml": "base: a.yaml\n"},
    {"a.yaml": "base: b.yaml\n", "b.yaml": "base: a.yaml\n"},
    {"a.yaml": "base: sub/b.yaml\n", "sub/b.yaml": "base: ../c.yaml\n", "c.yaml": "base: a.yaml\n"},
])
def test_a_base_cycle_is_refused_in_one_line(tmp_path, files):
    for name, text in files.items():
        write_at(tmp_path / name, text)
    message = one_line_error(tmp_path / "a.yaml")
    assert "cycle" in message and "a.yaml" in message and message.startswith("config file ")


def test_a_missing_base_is_refused_in_one_line_naming_both_files(tmp_path):
    over = write_at(tmp_path / "over.yaml", "base: ../nope/base.yaml\n")
    message = one_line_error(over)
    assert str(over) in message and str(tmp_path.parent / "nope" / "base.yaml") in message
    assert "does not exist" in message


@pytest.mark.parametrize("value", ["3", "[a.yaml]", "{path: a.yaml}", "''", "null"])
def test_a_base_that_is_not_a_path_is_refused(tmp_path, value):
    over = write_at(tmp_path / "over.yaml", f"base: {value}\n")
    message = one_line_error(over)
    assert str(over) in message and "'base' must be a path" in message


# ---------------------------------------------------------------- shipped configs


def shipped(relative: str) -> dict:
    return flatten(to_dict(load_config(CONFIGS / relative)))


def differences(relative: str) -> dict:
    base, overlay = shipped("highway.yaml"), shipped(relative)
    assert base.keys() == overlay.keys()
    return {key: overlay[key] for key in base if overlay[key] != base[key]}


def test_every_yaml_under_configs_loads():
    paths = sorted(CONFIGS.rglob("*.yaml"))
    assert {"highway.yaml", "experiment/highway_replica.yaml",
            "experiment/highway_critic.yaml"} <= {p.relative_to(CONFIGS).as_posix() for p in paths}
    for path in paths:
        assert load_config(path).experiment, path


def test_highway_is_the_learned_models_config():
    cfg = load_config(CONFIGS / "highway.yaml")
    assert cfg.export.risk is PlannerRisk.model and cfg.export.samples == 2
    assert (cfg.simulate.risk_weight, cfg.simulate.risk_budget) == (1.0, 0.2)
    assert cfg.export.lookahead == 0 and cfg.critic.episodes == 0
    raw = yaml.safe_load((CONFIGS / "highway.yaml").read_text())
    assert not [key for key in raw["export"] if key.startswith("replica") or key == "samples"]


def test_the_replica_overlay_differs_from_highway_only_in_the_replica_settings():
    assert differences("experiment/highway_replica.yaml") == {
        "export.risk": "replica", "export.samples": 1, "export.replica_reacting_steps": 1,
        "export.replica_mobil_at_start": True, "export.replica_late_idm_every": 5,
        "export.replica_tail_steps": 1, "simulate.risk_weight": 3.0,
        "simulate.risk_budget": 0.05}


def test_the_critic_overlay_differs_from_highway_only_in_the_critic_settings():
    assert differences("experiment/highway_critic.yaml") == {
        "critic.episodes": 80, "export.risk": "critic", "export.samples": 1,
        "export.lookahead": 3}


def test_overlays_keep_the_highway_experiment_and_its_data_and_model():
    for relative in ("experiment/highway_replica.yaml", "experiment/highway_critic.yaml"):
        base, overlay = load_config(CONFIGS / "highway.yaml"), load_config(CONFIGS / relative)
        assert overlay.experiment == "highway"
        assert (overlay.ingest, overlay.model, overlay.train) == (base.ingest, base.model,
                                                                  base.train)


def test_config_comments_say_what_a_field_means_one_line_each():
    for path in sorted(CONFIGS.rglob("*.yaml")):
        lines = path.read_text().splitlines()
        first_key = next(i for i, line in enumerate(lines) if line and not line.startswith("#"))
        stray = [line for line in lines[first_key:] if line.strip().startswith("#")]
        assert not stray, f"{path}: comment-only line inside the config: {stray[0]!r}"
        assert not re.search(r"README|[Ss]ession \d", path.read_text()), path


# ---------------------------------------------------------------- field documentation


def config_classes() -> list[type]:
    return [cls for _, cls in config_sections(Config, "")
            if cls.__module__ == "pipeline.config"]


def test_every_config_field_has_exactly_one_comment_line():
    assert len(config_classes()) >= 14
    for cls in config_classes():
        source = textwrap.dedent(inspect.getsource(cls))
        comments = source_comments(source)
        declared = [node for node in ast.parse(source).body[0].body
                    if isinstance(node, ast.AnnAssign)]
        field_lines = {n for node in declared for n in range(node.lineno, node.end_lineno + 1)}
        assert set(comments) <= field_lines, f"{cls.__name__}: comment line outside a field"
        meanings = field_comments(cls)
        for f in dataclasses.fields(cls):
            assert meanings.get(f.name), f"{cls.__name__}.{f.name} has no comment"
            lines = [n for n in comments if n in range(*_lines_of(declared, f.name))]
            assert len(lines) == 1, f"{cls.__name__}.{f.name} has {len(lines)} comments"


def _lines_of(declared: list[ast.AnnAssign], name: str) -> tuple[int, int]:
    node = next(node for node in declared if node.target.id == name)
    return node.lineno, node.end_lineno + 1


def test_field_comments_hold_no_measured_results():
    measured = re.compile(r"\d\s*%|README|highway\.yaml|[Ss]ession \d| vs ")
    for cls in config_classes():
        for name, meaning in field_comments(cls).items():
            assert not measured.search(meaning), f"{cls.__name__}.{name}: {meaning}"


def test_reference_lists_every_section_and_field_with_its_meaning():
    text = reference_markdown()
    for title, cls in config_sections(Config, ""):
        assert (f"## `{title}`" if title else "## Top level") in text
        for name, meaning in field_comments(cls).items():
            assert f"| `{name}` |" in text
            if meaning:
                assert meaning.replace("|", "\\|") in text, (title, name)
    assert "| `risk` | model \\| replica \\| critic | `model` |" in text
    assert "| `name` | str | required |" in text


@pytest.mark.parametrize("relative", ["highway.yaml", "experiment/highway_replica.yaml",
                                      "experiment/highway_critic.yaml"])
def test_highway_and_its_overlays_pass_every_stage_check(relative):
    from pipeline.runner import check_config
    from pipeline.stages import PIPELINE

    check_config("simulate", PIPELINE, load_config(CONFIGS / relative))
    with pytest.raises(DrivecastError):  # the same checks refuse a critic risk with no critic
        check_config("simulate", PIPELINE,
                     load_config(CONFIGS / relative, ["export.risk=critic", "critic.episodes=0"]))
