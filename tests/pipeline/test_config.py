from pathlib import Path

import pytest

from pipeline.cli import main
from pipeline.config import ConfigError, Variant, load_config, parse_override, to_dict

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_every_shipped_config_loads():
    for path in sorted(CONFIGS.glob("*.yaml")):
        cfg = load_config(path)
        assert cfg.experiment, path


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
    import yaml

    cfg = load_config(CONFIGS / "debug.yaml", ["train.epochs=7"])
    again = load_config(write(tmp_path, yaml.safe_dump(to_dict(cfg))))
    assert again == cfg
