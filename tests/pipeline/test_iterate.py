"""`drivecast iterate` on the debug config: two rounds, interrupted in round 1 and resumed."""

import contextlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from pipeline import artifacts
from pipeline.cli import EXIT_INTERRUPTED, main
from pipeline.config import load_config
from pipeline.dataset import BRANCH_POLICY, parent_episode, read_dataset, read_manifest
from pipeline.iterate import horizon_key, reported_seconds, round_config
from pipeline.runner import key_of
from pipeline.stage_io import collection_seeds, load_windows
from pipeline.stages import collect, train

ROOT = Path(__file__).resolve().parents[2]
DEBUG = str(ROOT / "configs" / "debug.yaml")
ROUND_ZERO = ("ingest", "train", "critic", "export", "simulate")


def complete_dirs(workdir: Path, stage: str) -> list[Path]:
    root = workdir / "debug" / stage
    return sorted(p for p in root.iterdir() if artifacts.is_complete(p)) if root.is_dir() else []


def interrupt(*args, **kwargs):
    raise KeyboardInterrupt  # as if the loop were killed while round 1 trains


@pytest.fixture(scope="module")
def loop(tmp_path_factory):
    """The loop interrupted in round 1's training (after its collection), then run again."""
    workdir = tmp_path_factory.mktemp("iterate")
    args = ["iterate", DEBUG, f"workdir={workdir}"]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(train, "produce_warm", interrupt)
        assert main(args) == EXIT_INTERRUPTED
    interrupted = {stage: complete_dirs(workdir, stage)
                   for stage in (*ROUND_ZERO, "collect", "iterate")}
    mtimes = {p: (p / "summary.json").stat().st_mtime_ns for d in interrupted.values() for p in d}
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert main(args) == 0
    cfg = load_config(DEBUG, [f"workdir={workdir}"])
    (loop_dir,) = complete_dirs(workdir, "iterate")
    summary = json.loads((loop_dir / "summary.json").read_text())
    return workdir, cfg, interrupted, mtimes, err.getvalue(), loop_dir, summary


def test_the_interrupted_loop_kept_round_0_and_the_collection(loop):
    _, _, interrupted, _, _, _, _ = loop
    for stage in ROUND_ZERO:
        assert len(interrupted[stage]) == 1, stage
    assert len(interrupted["collect"]) == 1
    assert interrupted["iterate"] == []  # nothing claims the loop is done


def test_the_rerun_reuses_every_completed_stage_without_redoing_it(loop):
    _, _, interrupted, mtimes, err, _, _ = loop
    for stage, dirs in interrupted.items():
        for path in dirs:
            assert f"[{stage}] reusing complete {path}" in err
            assert (path / "summary.json").stat().st_mtime_ns == mtimes[path]


def test_two_rounds_complete_every_artifact(loop):
    workdir, _, _, _, _, loop_dir, summary = loop
    assert summary["rounds"] == 2
    for k in (0, 1):
        for name in ("collision_rate", "mean_speed", "dataset_steps", "fde", "risk_ece",
                     "counterfactual_auroc"):
            assert np.isfinite(summary[f"{name}_round_{k}"]), (name, k)
    assert summary["collect_surprise_round_1"] > 0  # metres, model vs reality while collecting
    trains, exports = complete_dirs(workdir, "train"), complete_dirs(workdir, "export")
    assert len(trains) == len(exports) == len(complete_dirs(workdir, "simulate")) == 2
    assert all((p / "model.pt").is_file() for p in trains)
    assert all((p / "planner.onnx").is_file() for p in exports)
    table = (loop_dir / "rounds.md").read_text()
    assert "\n| 0 |" in table and "\n| 1 |" in table
    assert (loop_dir / "learning_curve.png").stat().st_size > 1000


def test_each_round_trains_an_actor_in_its_own_model_and_shows_the_imagination_gap(loop):
    workdir, _, _, _, _, loop_dir, summary = loop
    actors = complete_dirs(workdir, "actor")
    assert len(actors) == 2 and all((p / "actor.onnx").is_file() for p in actors)
    assert len({p.name for p in actors}) == 2  # one actor per round's world model
    for k in (0, 1):
        for name in ("actor_imagined_reward", "actor_reward", "actor_imagined_collision",
                     "actor_collision", "actor_collision_rate", "actor_mean_return"):
            assert np.isfinite(summary[f"{name}_round_{k}"]), (name, k)
    assert "actor reward per step, imagined" in (loop_dir / "rounds.md").read_text()


def test_the_dataset_grows_and_round_0_test_episodes_stay_held_out(loop):
    workdir, _, _, _, _, _, summary = loop
    (ingest,), (collected,) = complete_dirs(workdir, "ingest"), complete_dirs(workdir, "collect")
    steps = [json.loads((p / "summary.json").read_text())["steps"] for p in (ingest, collected)]
    assert summary["dataset_steps_round_0"] == steps[0]
    assert summary["dataset_steps_round_1"] == steps[0] + steps[1] > steps[0]
    trains = complete_dirs(workdir, "train")
    small, large = sorted((json.loads((p / "splits.json").read_text()) for p in trains),
                          key=lambda splits: len(splits["train"]))
    assert small["test"] == [e for e in large["test"] if e < collect.EPISODE_OFFSET]
    assert any(e >= collect.EPISODE_OFFSET for e in large["train"])
    assert set(small["train"]) < set(large["train"])


def test_round_1_starts_from_round_0s_model_and_normalisation(loop):
    import torch

    from pipeline.stage_io import load_model
    from pipeline.stages.train import warm_module

    workdir, cfg, _, _, _, _, _ = loop
    specs = [json.loads((p / "model.json").read_text()) for p in complete_dirs(workdir, "train")]
    assert specs[0]["obs_mean"] == specs[1]["obs_mean"]
    assert specs[0]["obs_std"] == specs[1]["obs_std"]
    (ingest,) = complete_dirs(workdir, "ingest")
    round_0 = next(p for p in complete_dirs(workdir, "train")
                   if max(json.loads((p / "splits.json").read_text())["train"])
                   < collect.EPISODE_OFFSET)
    init = artifacts.load_complete("train", round_0.name, round_0)
    windows = load_windows(ingest / "dataset", cfg)
    module = warm_module(round_config(cfg, 1), init, windows)
    before = load_model(init)[0].state_dict()
    assert all(torch.equal(v, before[k]) for k, v in module.model.state_dict().items())


def test_collected_episodes_never_use_an_evaluation_seed(loop):
    workdir, cfg, _, _, _, _, _ = loop
    (collected,) = complete_dirs(workdir, "collect")
    data = read_dataset(collected / "dataset")
    seeds = data.manifest["env_seeds"]
    assert len(seeds) == len(set(seeds)) == cfg.iterate.episodes
    evaluation = range(cfg.simulate.seed, cfg.simulate.seed + cfg.simulate.episodes)
    assert not set(seeds) & set(evaluation)
    driven = data.steps["episode"][data.steps["policy"] != BRANCH_POLICY]
    assert sorted(set(driven.tolist())) == [
        collect.EPISODE_OFFSET + i for i in range(cfg.iterate.episodes)]
    assert all(p.startswith("planner+eps") for p in set(data.steps["policy"]) - {BRANCH_POLICY})


def test_branches_are_kept_beside_their_episode_and_split_with_it(loop):
    workdir, cfg, _, _, _, _, _ = loop
    (collected,) = complete_dirs(workdir, "collect")
    data, summary = read_dataset(collected / "dataset"), json.loads(
        (collected / "summary.json").read_text())
    is_branch = data.steps["policy"] == BRANCH_POLICY
    branches = np.unique(data.steps["episode"][is_branch])
    assert cfg.iterate.branches == 1 and len(branches) == summary["branch_episodes"] > 0
    assert summary["episodes"] == cfg.iterate.episodes
    assert set(parent_episode(branches)) <= set(data.steps["episode"][~is_branch].tolist())
    assert (data.steps["step"][is_branch] < cfg.model.horizon).all()
    splits = max((json.loads((p / "splits.json").read_text()) for p in
                  complete_dirs(workdir, "train")), key=lambda s: len(s["train"]))
    for name, ids in splits.items():
        mine = np.isin(branches, ids)
        assert np.isin(parent_episode(branches[mine]), ids).all(), name


def test_collection_seeds_skip_forbidden_seeds_and_draw_again():
    drawn = collection_seeds(0, 1, 5, forbidden=set())
    again = collection_seeds(0, 1, 5, forbidden=set(drawn[:2]))
    assert len(again) == 5 and not set(again) & set(drawn[:2])
    assert again[:3] == drawn[2:]  # the same stream, minus the forbidden draws
    assert collection_seeds(0, 2, 5, forbidden=set()) != drawn  # another round


def test_adding_rounds_keeps_the_keys_of_earlier_rounds():
    two, three = (load_config(DEBUG, [f"iterate.rounds={n}"]) for n in (2, 3))
    inputs = {"export": artifacts.Artifacts("export", "abc", Path("."), {}),
              "actor": artifacts.Artifacts("actor", "def", Path("."), {})}
    assert key_of(collect.STAGE, round_config(two, 1), inputs) == \
        key_of(collect.STAGE, round_config(three, 1), inputs)
    assert key_of(collect.STAGE, round_config(three, 1), inputs) != \
        key_of(collect.STAGE, round_config(three, 2), inputs)


def test_round_0_has_the_keys_of_drivecast_run():
    from pipeline.stages import actor, critic, export, ingest, simulate

    def keys(cfg):
        data = artifacts.Artifacts("ingest", key_of(ingest.STAGE, cfg, {}), Path("."), {})
        model = artifacts.Artifacts("train", key_of(train.STAGE, cfg, {"ingest": data}),
                                    Path("."), {})
        fitted = artifacts.Artifacts("critic", key_of(critic.STAGE, cfg, {"train": model}),
                                     Path("."), {})
        planner = artifacts.Artifacts("export", key_of(export.STAGE, cfg, {
            "ingest": data, "train": model, "critic": fitted}), Path("."), {})
        acted = artifacts.Artifacts("actor", key_of(actor.STAGE, cfg, {
            "ingest": data, "train": model, "export": planner}), Path("."), {})
        return (data.key, model.key, fitted.key, planner.key, acted.key,
                key_of(simulate.STAGE, cfg, {"export": planner, "actor": acted}))

    cfg = load_config(DEBUG)
    assert keys(round_config(cfg, 0)) == keys(cfg)


def test_mlflow_holds_the_loop_with_a_nested_run_per_round(loop):
    import mlflow

    _, cfg, _, _, _, _, _ = loop
    client = mlflow.MlflowClient(tracking_uri=cfg.tracking_uri)
    experiment = client.get_experiment_by_name("debug")
    runs = client.search_runs([experiment.experiment_id], "attributes.status = 'FINISHED'")
    (parent,) = [r for r in runs if r.info.run_name == "iterate"
                 and "mlflow.parentRunId" not in r.data.tags]
    nested = {r.info.run_name: r for r in runs
              if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
    assert {"round_0", "round_1", "iterate"} <= set(nested)
    assert {"collision_rate", "fde", "risk_ece", "dataset_steps"} <= set(
        nested["round_0"].data.metrics)
    assert nested["round_1"].data.metrics["collect_surprise"] > 0
    history = client.get_metric_history(parent.info.run_id, "collision_rate")
    assert sorted(m.step for m in history) == [0, 1]
    files = [f.path for f in client.list_artifacts(parent.info.run_id)]
    assert "learning_curve.png" in files


def test_iterate_refuses_a_given_planner_and_too_few_episodes(tmp_path, capsys):
    base = ["iterate", DEBUG, f"workdir={tmp_path}"]
    assert main([*base, "simulate.planner=x.onnx"]) == 2
    assert "simulate.planner must be empty" in capsys.readouterr().err
    assert main([*base, "iterate.episodes=2"]) == 2
    assert "iterate.episodes (2)" in capsys.readouterr().err
    assert not (tmp_path / "debug").exists()


def test_the_reported_forecast_horizon_is_3_s_else_the_longest():
    assert reported_seconds([1, 2, 3, 4]) == 3
    assert reported_seconds([2, 1]) == 2 and reported_seconds([]) is None
    summary = {"val_fde_1s": 1.0, "val_fde_5s": 2.0, "val_fde_xs": 3.0, "val_ade_3s": 4.0}
    assert horizon_key(summary, "val_fde_") == "val_fde_5s"
    assert horizon_key(summary | {"val_fde_3s": 0.5}, "val_fde_") == "val_fde_3s"
    assert horizon_key({"val_loss": 1.0}, "val_fde_") is None


def test_a_round_collected_by_the_actor_records_its_driving(loop, tmp_path):
    workdir = tmp_path / "actor"
    for stage in (*ROUND_ZERO, "actor"):  # round 0 (and round 1) as the loop left them
        shutil.copytree(loop[0] / "debug" / stage, workdir / "debug" / stage)
    args = ["iterate", DEBUG, f"workdir={workdir}", "iterate.collector=actor",
            "iterate.branches=0", "tracking.enabled=false"]
    assert main(args) == 0
    (collected,) = complete_dirs(workdir, "collect")
    manifest = read_manifest(collected / "dataset")
    assert manifest["collector"] == "actor" and manifest["actor"]
    data = read_dataset(collected / "dataset")
    assert set(data.steps["policy"]) == {"actor+eps0.1"}
    assert len(np.unique(data.steps["episode"])) == 4
    summary = json.loads((collected / "summary.json").read_text())
    assert summary["fallback_rate"] == 0.0  # the actor has no fallback
    round_zero = {p.name for p in complete_dirs(loop[0], "train")}
    assert len({p.name for p in complete_dirs(workdir, "train")} - round_zero) == 1


def test_an_actor_collector_needs_an_actor_and_no_branches(tmp_path, capsys):
    base = ["iterate", DEBUG, f"workdir={tmp_path}", "iterate.collector=actor"]
    assert main(base) == 2
    assert "iterate.collector=actor needs an actor" in capsys.readouterr().err
    assert main([*base, "iterate.branches=0", "actor.epochs=0"]) == 2
    assert not (tmp_path / "debug").exists()


@pytest.mark.parametrize("collector", ["planner", "actor"])
def test_an_envpool_collection_is_the_same_in_any_batch(loop, tmp_path, collector):
    from pipeline.runner import StageContext
    from pipeline.tracking import Tracker

    workdir = loop[0]
    inputs = {stage: artifacts.Artifacts(stage, p.name, p, {}) for stage in ("export", "actor")
              for p in complete_dirs(workdir, stage)[:1]}
    datasets = []
    for batch, workers in ((1, 1), (4, 2)):
        cfg = round_config(load_config(DEBUG, [
            "ingest.backend=envpool", f"ingest.batch={batch}", f"ingest.workers={workers}",
            "iterate.branches=0", f"iterate.collector={collector}", "tracking.enabled=false"]), 1)
        work = tmp_path / f"batch{batch}"
        summary = collect.produce(cfg, inputs, work, StageContext(Tracker(cfg), None))
        assert summary["episodes"] == 4
        datasets.append(read_dataset(work / "dataset"))
        assert read_manifest(work / "dataset")["backend"] == "envpool"
    one, four = datasets
    assert set(one.steps["policy"]) == {"planner+eps0.1+top2" if collector == "planner"
                                        else "actor+eps0.1"}
    for table in ("frames", "steps"):
        a, b = getattr(one, table), getattr(four, table)
        assert all(np.array_equal(a[k], b[k]) for k in a), table
