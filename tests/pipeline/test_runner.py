"""Artifact keys, reuse, --force, atomic completion and MLflow runs, on a tiny fake stage."""

import json
from pathlib import Path

import pytest

from pipeline import artifacts
from pipeline.config import load_config
from pipeline.runner import Stage, key_of, run_stage, run_until
from pipeline.tracking import Tracker

CALLS: list[str] = []


def produce_a(cfg, inputs, work, ctx):
    CALLS.append("a")
    (work / "data.txt").write_text(str(cfg.ingest.episodes))
    ctx.log_metrics({"loss": 1.0}, step=0)
    return {"value": float(cfg.ingest.episodes)}


def produce_b(cfg, inputs, work, ctx):
    CALLS.append("b")
    return {"double": 2 * inputs["a"].summary["value"]}


def produce_killed(cfg, inputs, work, ctx):
    (work / "half.txt").write_text("half")
    raise KeyboardInterrupt


STAGE_A = Stage("a", sections=("ingest",), inputs=(), produce=produce_a)
STAGE_B = Stage("b", sections=("train",), inputs=("a",), produce=produce_b)


@pytest.fixture
def cfg(tmp_path):
    CALLS.clear()
    return load_config(None, [f"workdir={tmp_path}", "experiment=t", "tracking.enabled=false"])


def test_stage_writes_complete_directory_and_prints_it_last(cfg, capsys):
    result = run_stage(STAGE_A, cfg, {}, Tracker(cfg))
    assert artifacts.is_complete(result.path)
    assert json.loads((result.path / "summary.json").read_text()) == {"value": 40.0}
    assert "ingest:" in (result.path / "config.yaml").read_text()
    assert capsys.readouterr().out.strip().splitlines()[-1] == str(result.path)
    assert result.path == Path(cfg.workdir) / "t" / "a" / result.key


def test_complete_stage_is_reused_and_force_recomputes(cfg):
    first = run_until("b", [STAGE_A, STAGE_B], cfg, Tracker(cfg))
    again = run_until("b", [STAGE_A, STAGE_B], cfg, Tracker(cfg))
    assert CALLS == ["a", "b"]
    assert again["b"].reused and again["b"].path == first["b"].path
    run_until("b", [STAGE_A, STAGE_B], cfg, Tracker(cfg), force=["b"])
    assert CALLS == ["a", "b", "b"]


def test_key_depends_on_config_and_inputs_but_not_on_worker_count(cfg):
    from pipeline.config import load_config as load

    other = load(None, [f"workdir={cfg.workdir}", "ingest.episodes=3"])
    workers = load(None, [f"workdir={cfg.workdir}", "ingest.workers=7"])
    assert key_of(STAGE_A, cfg, {}) != key_of(STAGE_A, other, {})
    assert key_of(STAGE_A, cfg, {}) == key_of(STAGE_A, workers, {})
    a1 = artifacts.Artifacts("a", "k1", Path("."), {})
    a2 = artifacts.Artifacts("a", "k2", Path("."), {})
    assert key_of(STAGE_B, cfg, {"a": a1}) != key_of(STAGE_B, cfg, {"a": a2})


def test_a_setting_added_later_keys_a_stage_only_away_from_its_default(cfg):
    """critic.members, critic.rank_weight and critic.prior came after critic keys were in
    use: at their defaults the key is the one computed without them, so those stages are
    reused; any other value is another critic."""
    from pipeline.config import to_dict

    stage = Stage("c", sections=("critic",), inputs=(), produce=produce_a)
    later = ("members", "rank_weight", "prior")
    sections = {"critic": {k: v for k, v in to_dict(cfg.critic).items() if k not in later},
                "seed": cfg.seed}
    assert key_of(stage, cfg, {}) == artifacts.stage_key(sections, {})
    for setting in ("critic.members=2", "critic.rank_weight=0.5", "critic.prior=replica"):
        other = load_config(None, [f"workdir={cfg.workdir}", setting])
        assert key_of(stage, other, {}) != key_of(stage, cfg, {})


def test_a_second_process_at_the_same_stage_waits_and_reuses_its_result(cfg, capsys):
    """While another holds the stage's turn, run_stage waits; it then reuses what the
    other completed instead of computing it again in the same partial directory."""
    import threading
    import time

    root, key = Path(cfg.workdir) / "t", key_of(STAGE_A, cfg, {})
    results = []
    with artifacts.stage_lock(root, "a", key):
        waiting = threading.Thread(
            target=lambda: results.append(run_stage(STAGE_A, cfg, {}, Tracker(cfg))))
        waiting.start()
        time.sleep(0.5)
        assert waiting.is_alive() and CALLS == []  # it waits its turn
        work = artifacts.open_partial(root, "a", key, keep=False)
        artifacts.commit(work, artifacts.final_dir(root, "a", key), "done", {"value": 7.0})
    waiting.join(timeout=30)
    assert CALLS == [] and results[0].reused and results[0].summary == {"value": 7.0}
    assert "another drivecast process is computing" in capsys.readouterr().err


def test_killed_stage_leaves_nothing_that_looks_complete(cfg):
    stage = Stage("a", sections=("ingest",), inputs=(), produce=produce_killed)
    with pytest.raises(KeyboardInterrupt):
        run_stage(stage, cfg, {}, Tracker(cfg))
    key = key_of(stage, cfg, {})
    root = Path(cfg.workdir) / "t" / "a"
    assert not (root / key).exists()
    assert (root / f".partial-{key}" / "half.txt").exists()
    result = run_stage(STAGE_A, cfg, {}, Tracker(cfg))  # same key: the rerun completes it
    assert result.path == root / key and artifacts.is_complete(result.path)
    assert not (result.path / "half.txt").exists()


def test_mlflow_parent_run_with_nested_stage_runs(tmp_path):
    import mlflow

    cfg = load_config(None, [f"workdir={tmp_path}", "experiment=track"])
    tracker = Tracker(cfg)
    with tracker.run("run", {"seed": 0}) as parent_id:
        run_until("b", [STAGE_A, STAGE_B], cfg, tracker)
    assert (tmp_path / "mlflow.db").is_file()
    client = mlflow.MlflowClient(tracking_uri=cfg.tracking_uri)
    runs = client.search_runs([tracker.experiment_id])
    children = {r.info.run_name: r for r in runs
                if r.data.tags.get("mlflow.parentRunId") == parent_id}
    assert set(children) == {"a", "b"}
    assert children["a"].data.metrics["value"] == 40.0
    assert children["a"].data.params["ingest.episodes"] == "40"
    assert children["b"].data.metrics["double"] == 80.0
    names = {a.path for a in client.list_artifacts(children["a"].info.run_id)}
    assert {"summary.json", "config.yaml", "data.txt"} <= names
