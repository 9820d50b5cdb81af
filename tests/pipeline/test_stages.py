"""The debug config end to end through the CLI, and the train stage's promises:
checkpoint round trip, resume after a kill, DDP on CPU, MLflow runs."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from evaluation.closed_loop import CRASH_KINDS, run_episode
from evaluation.planner_view import planner_view_frames
from evaluation.trace import TracedPlanner, read_trace, trace_csv
from models.candidates import ACTION_NAMES, FASTER, enumerate_candidates
from pipeline import artifacts
from pipeline.cli import main
from pipeline.config import load_config
from pipeline.highway_source import make_env
from pipeline.planner.scorer import OnnxScorer, Scores
from pipeline.stages.simulate import CRASH_DECISIONS

ROOT = Path(__file__).resolve().parents[2]
DEBUG = str(ROOT / "configs" / "debug.yaml")


def stage_dirs(workdir: Path, stage: str) -> list[Path]:
    return sorted(p for p in (workdir / "debug" / stage).iterdir() if not p.name.startswith("."))


@pytest.fixture(scope="module")
def debug_run(tmp_path_factory):
    """`drivecast run configs/debug.yaml` once for the whole module."""
    workdir = tmp_path_factory.mktemp("debug")
    assert main(["run", DEBUG, f"workdir={workdir}"]) == 0
    return workdir


def test_debug_run_completes_every_stage(debug_run):
    for stage in ("ingest", "train", "evaluate", "critic", "export", "actor", "simulate"):
        (path,) = stage_dirs(debug_run, stage)[-1:]
        assert artifacts.is_complete(path), stage
    train = json.loads((stage_dirs(debug_run, "train")[0] / "summary.json").read_text())
    assert {"val_fde_1s", "cv_fde_1s", "val_risk_auroc", "params", "samples_per_s",
            "epochs"} <= set(train)
    assert train["epochs"] == 2
    assert 0 < train["data_wait_share"] < 1  # the loader takes some of the time, not all


def test_simulate_drives_the_actor_and_the_planner_with_actor_beside_the_planner(debug_run):
    (simulate,) = stage_dirs(debug_run, "simulate")[-1:]
    summary = json.loads((simulate / "summary.json").read_text())
    table = (simulate / "closed_loop.md").read_text()
    for name in ("actor", "planner+actor"):
        assert f"| {name} | " in table
        assert summary[f"{name}/episodes"] == summary["episodes"]
        assert summary[f"{name}/latency_p50_ms"] > 0
    assert "actor/fallback_rate" not in summary  # the actor has no reality check


def test_debug_evaluate_writes_the_report_and_every_figure(debug_run):
    (evaluate,) = stage_dirs(debug_run, "evaluate")
    report = (evaluate / "report.md").read_text()
    for name in ("fde_vs_horizon.png", "reliability.png", "risk_histogram.png", "scene_0.png"):
        assert (evaluate / name).stat().st_size > 1000
        assert f"]({name})" in report
    summary = json.loads((evaluate / "summary.json").read_text())
    for key in ("fde_3s", "cv_fde_3s", "min_fde_3s_k3", "min_ade_3s_k3", "risk_auroc",
                "risk_ap", "risk_brier", "risk_ece", "uncertainty_error_spearman",
                "merge/fde_3s", "dense/risk_ece", "replica_fde_3s", "dense/replica_fde_3s"):
        assert key in summary, key
    assert "| merge | model |" in report and "| test | replica |" in report
    assert "merge/replica_fde_1s" not in summary  # no straight road the replica knows
    for key in ("coverage90_3s", "coverage50_3s", "raw_coverage90_3s", "raw_coverage50_1s",
                "variance_scale_3s", "calibrated_nll_xy", "aleatoric_error_spearman",
                "epistemic_error_spearman", "surprise_error_spearman", "merge/coverage90_3s",
                "merge/raw_coverage90_3s", "dense/ood_auroc", "merge/ood_auroc_epistemic",
                "merge/ood_auroc_surprise", "merge/ood_auroc_input_distance",
                "input_distance_error_spearman", "latent_distance_error_spearman",
                "dense/ood_auroc_latent_distance"):
        assert key in summary, key
    assert summary["calibration_windows"] > 0 and summary["variance_scale_3s"] > 0
    assert 0 <= summary["raw_coverage50_3s"] <= summary["raw_coverage90_3s"] <= 1
    assert "ood_auroc" not in summary  # the held-out set is the in-distribution reference
    # merge-v0 simulates at 15 Hz, highway-fast at 5 Hz: its histories are unlike any seen
    assert summary["merge/ood_auroc_input_distance"] > 0.9
    assert "## Calibration and uncertainty per test set" in report
    for name in ("test", "dense", "merge"):
        assert f"### {name}" in report and f"](uncertainty_{name}.png)" in report, name
        assert (evaluate / f"uncertainty_{name}.png").stat().st_size > 1000
    assert "| 90% calibrated |" in report and "| 90% raw |" in report
    assert "| ood_auroc |" in report
    steps = load_config(DEBUG).model.horizon + 1  # t0 and each forecast step
    for name in ("test", "dense", "merge"):
        frames = iio.imread(evaluate / f"imagination_{name}.gif")
        assert frames.shape[:1] == (steps,) and frames.shape[2:] == (1200, 3), name
        assert f"](imagination_{name}.gif)" in report


def test_shifted_test_sets_are_collected_once_and_reused(debug_run, capsys):
    ingest_before = stage_dirs(debug_run, "ingest")
    assert len(ingest_before) == 3  # training data + two shifted sets, each its own key
    assert main(["evaluate", DEBUG, f"workdir={debug_run}"]) == 0
    assert stage_dirs(debug_run, "ingest") == ingest_before
    assert "reusing complete" in capsys.readouterr().err


def test_mlflow_holds_a_parent_run_with_nested_stage_runs(debug_run):
    import mlflow

    cfg = load_config(DEBUG, [f"workdir={debug_run}"])
    client = mlflow.MlflowClient(tracking_uri=cfg.tracking_uri)
    experiment = client.get_experiment_by_name("debug")
    runs = client.search_runs([experiment.experiment_id])
    (parent,) = [r for r in runs if r.info.run_name == "run"]
    nested = {r.info.run_name: r for r in runs
              if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
    assert {"ingest", "train", "evaluate"} <= set(nested)
    assert nested["ingest"].data.metrics["episodes"] == 8
    assert "collision_rate" in nested["ingest"].data.metrics
    history = client.get_metric_history(nested["train"].info.run_id, "val/loss")
    assert len(history) == 2  # one value per epoch, logged by Lightning's MLFlowLogger
    logged = {f.path for f in client.list_artifacts(nested["simulate"].info.run_id)}
    logged |= {f.path for f in client.list_artifacts(nested["simulate"].info.run_id, "episodes")}
    assert {"planner_view.gif", "episodes/1000.csv", "closed_loop.md"} <= logged
    assert "imagination_test.gif" in {f.path for f in client.list_artifacts(
        nested["evaluate"].info.run_id)}


def test_saved_model_reproduces_the_best_checkpoint(debug_run):
    from pipeline.lit_module import WorldModelModule
    from pipeline.stage_io import load_model

    (train,) = stage_dirs(debug_run, "train")
    model, spec = load_model(artifacts.load_complete("train", train.name, train))
    module = WorldModelModule.load_from_checkpoint(train / "checkpoints" / "best.ckpt",
                                                   map_location="cpu")
    n, h = spec["vehicles"], spec["history"]
    gen = torch.Generator().manual_seed(0)
    hist = torch.randn(3, h, n, 7, generator=gen) * 5
    mask = torch.ones(3, h, n, dtype=torch.bool)
    actions = torch.randint(0, 5, (3, 2, spec["horizon"]), generator=gen)
    a = model.imagine(hist, mask, actions)
    b = module.model.eval().imagine(hist, mask, actions)
    assert torch.equal(a.states_mean, b.states_mean) and torch.equal(a.collision, b.collision)


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "pipeline", *args]


def test_killed_training_resumes_from_its_last_checkpoint(debug_run):
    overrides = [f"workdir={debug_run}", "train.epochs=6", "train.patience=50",
                 "tracking.enabled=false"]
    proc = subprocess.Popen(cli("train", DEBUG, *overrides), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=os.environ | {"OMP_NUM_THREADS": "1"})
    root = debug_run / "debug" / "train"
    deadline = time.time() + 240
    while time.time() < deadline and not list(root.glob(".partial-*/checkpoints/last.ckpt")):
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    (partial,) = root.glob(".partial-*")
    key = partial.name.removeprefix(".partial-")
    assert not (root / key).exists()  # killed: nothing looks complete
    killed_at = torch.load(partial / "checkpoints" / "last.ckpt", weights_only=False)["epoch"]
    assert killed_at < 5
    done = subprocess.run(cli("train", DEBUG, *overrides, "train.resume=true"),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == str(root / key)  # same key as the killed run
    summary = json.loads((root / key / "summary.json").read_text())
    assert summary["epochs"] == 6 and summary["resumed_from_epoch"] == killed_at + 1


def test_one_epoch_with_ddp_on_two_cpu_processes(debug_run):
    done = subprocess.run(
        cli("train", DEBUG, f"workdir={debug_run}", "train.strategy=ddp", "train.devices=2",
            "train.epochs=1", "experiment=ddp"),
        capture_output=True, text=True, timeout=600, env=os.environ | {"OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "GLOBAL_RANK: 1" in done.stderr
    path = Path(done.stdout.strip().splitlines()[-1])
    summary = json.loads((path / "summary.json").read_text())
    assert summary["epochs"] == 1 and np.isfinite(summary["val_fde_1s"])


def test_critic_labels_decisions_and_the_export_scores_with_it(debug_run):
    (critic,) = stage_dirs(debug_run, "critic")
    summary = json.loads((critic / "summary.json").read_text())
    labels = np.load(critic / "labels.npz")
    assert summary["episodes"] == 4 == len(set(labels["episode"].tolist()))  # 2 rounds of 2
    assert summary["decisions"] == len(labels["episode"]) > 0
    assert (critic / "round_1.onnx").is_file()  # round 2 was driven by round 1's planner
    assert summary["labelled_candidates"] == labels["valid"].sum() > 0
    assert 0.0 <= summary["val_auroc/critic"] <= 1.0 and np.isfinite(summary["val_log_loss/critic"])
    assert 0.0 <= summary["val_decision_auroc/critic"] <= 1.0  # within each decision
    assert labels["first"].max() <= 2 and labels["hist"].shape[1:3] == (5, 6)
    assert {"critic.pt", "critic.json"} <= {p.name for p in critic.iterdir()}
    (export,) = stage_dirs(debug_run, "export")
    assert json.loads((export / "planner.onnx.json").read_text())["risk"].startswith("critic")


def test_replay_judges_the_rule_on_the_held_out_labelled_decisions(debug_run, capsys):
    from pipeline.stage_io import held_out

    cfg = load_config(DEBUG)
    assert main(["replay", DEBUG, f"workdir={debug_run}", "replay.risk_weights=[1, 3]",
                 "replay.risk_budgets=[0.1]"]) == 0
    out = capsys.readouterr().out
    (replay,) = stage_dirs(debug_run, "replay")
    (critic,) = stage_dirs(debug_run, "critic")
    labels = np.load(critic / "labels.npz")
    rows = held_out(labels["episode"], cfg.critic.val_fraction, cfg.seed)
    summary = json.loads((replay / "summary.json").read_text())
    assert summary["decisions"] == (labels["valid"][rows].any(axis=1)).sum() > 0
    assert 0.0 <= summary["chosen_event_rate"] <= 1.0
    assert summary["true_risk/chosen_event_rate"] <= summary["no_safe_rate"]
    assert 0.0 <= summary["risk_decision_auroc"] <= 1.0 and 0.0 <= summary["risk_auroc"] <= 1.0
    grid = json.loads((replay / "replay.json").read_text())["rows"]
    assert [r["rule"] for r in grid] == ["planner", "planner", "true risk", "truth"]
    assert [r["risk_weight"] for r in grid[:2]] == [1.0, 3.0]
    assert (replay / "replay.md").read_text() in out


def test_replay_without_labelled_decisions_is_refused(debug_run, capsys):
    assert main(["replay", DEBUG, f"workdir={debug_run}", "critic.episodes=0",
                 "export.risk=model"]) == 2
    assert "replay needs labelled decisions" in capsys.readouterr().err


def test_a_refit_critic_reads_its_labels_from_the_cache(debug_run, tmp_path, capsys):
    """Other fitting settings (here a contingent target, the lane context, mirrored
    decisions, the ranking term and an ensemble of two critics, which drives round 2) are
    another critic key, but the oracle-driven round's episodes are not labelled again; a
    damaged cached episode is labelled again, the same."""
    import shutil

    workdir = tmp_path / "copy"
    shutil.copytree(debug_run, workdir)
    from pipeline.stages.critic import label_cache, label_seeds, label_spec

    cfg = load_config(DEBUG, [f"workdir={workdir}"])
    cache = label_cache(cfg, label_spec(cfg, ""), "")  # round 1: the oracle drives
    damaged = cache / f"{label_seeds(cfg)[0][0]}.npz"
    intact = dict(np.load(damaged))
    damaged.write_bytes(damaged.read_bytes()[:100])
    capsys.readouterr()
    assert main(["critic", DEBUG, f"workdir={workdir}", "critic.epochs=1",
                 "critic.commit=1", "critic.context=true", "critic.mirror=true",
                 "critic.members=2", "critic.rank_weight=0.5"]) == 0
    err = capsys.readouterr().err
    assert "round 1/2: 1/2 episodes read from" in err and "labelling it again" in err
    relabelled = dict(np.load(damaged))
    assert all(np.array_equal(intact[name], relabelled[name]) for name in intact)
    (old,) = stage_dirs(debug_run, "critic")
    (refit,) = [d for d in stage_dirs(workdir, "critic") if d.name != old.name]
    before, after = (np.load(d / "labels.npz") for d in (old, refit))
    summary = json.loads((refit / "summary.json").read_text())
    assert summary["positive_rate/target"] <= summary["positive_rate"]  # some continuation
    spec = json.loads((refit / "critic.json").read_text())
    assert spec["context"] is True and spec["members"] == 2
    assert (refit / "round_1.onnx").is_file()  # the ensemble's planner drove round 2
    first_round = np.isin(before["episode"], [int(p.stem) for p in cache.glob("*.npz")])
    assert first_round.any()
    assert np.array_equal(before["first"][first_round],
                          after["first"][np.isin(after["episode"], before["episode"][first_round])])


def test_export_writes_planner_sidecar_and_registers_it(debug_run):
    (export,) = stage_dirs(debug_run, "export")
    assert (export / "planner.onnx").stat().st_size > 1000
    sidecar = json.loads((export / "planner.onnx.json").read_text())
    assert sidecar["horizon"] == 2 and sidecar["samples"] == 2 and sidecar["vehicles"] == 6
    summary = json.loads((export / "summary.json").read_text())
    assert summary["parity_max_abs_diff"] <= summary["tolerance"]
    assert summary["registered_version"] == 1
    # the reality check's threshold, calibrated on the held-out windows, travels in the sidecar
    assert sidecar["surprise_quantile"] == 0.99 and summary["surprise_windows"] > 0
    assert sidecar["surprise_threshold"] == summary["surprise_threshold"] > 0


def test_simulate_reports_planner_and_every_baseline(debug_run):
    (simulate,) = stage_dirs(debug_run, "simulate")
    summary = json.loads((simulate / "summary.json").read_text())
    for key in ("collision_rate", "mean_speed", "mean_return", "fallback_rate",
                "latency_p50_ms", "latency_p99_ms"):
        assert np.isfinite(summary[key]), key
    for baseline in ("idle", "random", "rule", "oracle"):
        assert 0 <= summary[f"{baseline}/collision_rate"] <= 1
        assert summary[f"{baseline}/mean_speed"] > 0
    (export,) = stage_dirs(debug_run, "export")
    calibrated = json.loads((export / "summary.json").read_text())["surprise_threshold"]
    assert summary["surprise_threshold"] == calibrated  # simulate.surprise_threshold 0
    assert (simulate / "simulate.gif").stat().st_size > 1000
    assert "| oracle |" in (simulate / "closed_loop.md").read_text()
    rows = [row.split(",") for row in (simulate / "episodes.csv").read_text().splitlines()[1:]]
    episodes = int(summary["episodes"])
    assert [row[0] for row in rows] == [
        name for name in ("planner", "actor", "planner+actor", "idle", "random", "rule",
                          "oracle") for _ in range(episodes)]
    for name in ("planner", "idle"):
        crashed = [row for row in rows if row[0] == name and row[3] == "1"]
        prefix = "" if name == "planner" else f"{name}/"
        assert len(crashed) == round(summary[f"{prefix}collision_rate"] * episodes)
        assert sum(summary[f"{prefix}crash/{kind}"] for kind in CRASH_KINDS) == pytest.approx(
            summary[f"{prefix}collision_rate"])
    assert summary["counterfactual/decisions"] >= 1
    assert summary["counterfactual/candidates"] >= summary["counterfactual/decisions"]
    for key in ("crash_rate", "chosen_crash_rate"):
        assert 0 <= summary[f"counterfactual/{key}"] <= 1, key
    assert "true crash rate" in (simulate / "counterfactual.md").read_text()


def test_simulate_traces_every_planner_decision_and_draws_its_view(debug_run):
    (simulate,) = stage_dirs(debug_run, "simulate")
    rows = [row.split(",") for row in (simulate / "episodes.csv").read_text().splitlines()[1:]]
    planner = [row for row in rows if row[0] == "planner"]
    for _, seed, steps, collided, *_ in planner:
        trace = read_trace(simulate / "episodes" / f"{seed}.csv")
        assert [row["step"] for row in trace] == list(range(int(steps)))
        assert trace[-1]["crashed"] == int(collided)
    frames = iio.imread(simulate / "planner_view.gif")  # gif_episodes: 1
    assert frames.shape == (int(planner[0][2]), 420, 1200, 3)
    crashed = [row for row in planner if row[3] == "1"]
    assert (simulate / "crash_view.gif").exists() == bool(crashed)
    assert "](planner_view.gif)" in (simulate / "closed_loop.md").read_text()


class FasterScorer:
    """The debug planner, with 10 more return for each FASTER in a candidate."""

    def __init__(self, inner):
        self.inner = inner

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def score(self, hist, hist_mask, candidates):
        s = self.inner.score(hist, hist_mask, candidates)
        bonus = 10.0 * (candidates == FASTER).sum(axis=1)
        return Scores(s.collision_prob, s.expected_return + bonus, s.uncertainty, s.positions)


def test_a_crash_episodes_trace_holds_the_crash_step(debug_run, tmp_path):
    """A planner that ignores risk and wants FASTER crashes in dense two-lane traffic; its
    trace ends on the crash, and the crash view is drawn from the CSV alone."""
    (export,) = stage_dirs(debug_run, "export")
    scorer = FasterScorer(OnnxScorer.load(export / "planner.onnx"))
    env = make_env("highway-fast-v0", {"duration": 20, "lanes_count": 2,
                                       "vehicles_density": 2.5})
    for seed in range(5):
        planner = TracedPlanner(scorer, enumerate_candidates(scorer.horizon), risk_weight=0.0,
                                risk_budget=1.0, surprise_threshold=float("inf"))
        result = run_episode(env, planner, seed)
        if result.collided:
            break
    assert result.collided
    (tmp_path / "trace.csv").write_text(trace_csv(planner.rows))
    rows = read_trace(tmp_path / "trace.csv")
    assert [row["crashed"] for row in rows] == [0] * (result.steps - 1) + [1]
    assert rows[-1]["action"] == ACTION_NAMES[result.actions[-1]]
    assert np.isfinite(rows[-1]["next_x0"])  # where the ego was when it crashed
    assert [row["latency_ms"] for row in rows] == pytest.approx(planner.latencies_ms, abs=1e-4)
    frames = planner_view_frames(rows[-CRASH_DECISIONS:], seed, risk_budget=1.0)
    assert len(frames) == min(CRASH_DECISIONS, len(rows))
    assert frames[0].shape == (420, 1200, 3)


def test_the_trace_of_a_fallback_decision_holds_its_one_step_forecast(debug_run, tmp_path):
    (export,) = stage_dirs(debug_run, "export")
    scorer = OnnxScorer.load(export / "planner.onnx")
    planner = TracedPlanner(scorer, enumerate_candidates(scorer.horizon),
                            surprise_threshold=-1.0, surprise_patience=1)
    run_episode(make_env("highway-fast-v0", {"duration": 4}), planner, 0)
    (tmp_path / "trace.csv").write_text(trace_csv(planner.rows))
    first, *rest = read_trace(tmp_path / "trace.csv")
    assert first["mode"] == "planner" and first["candidates"] > 0
    assert rest and all(row["mode"] == "fallback" and row["candidates"] == 0 for row in rest)
    assert all(np.isfinite(row["plan_x0_1"]) and np.isnan(row["plan_x0_2"]) for row in rest)
    assert all(row["surprise"] > -1.0 for row in rest)


def test_pictures_writes_small_stills_of_a_complete_run(debug_run, tmp_path, capsys):
    out = tmp_path / "pictures"
    assert main(["pictures", DEBUG, f"workdir={debug_run}", "--out", str(out)]) == 0
    written = [Path(line) for line in capsys.readouterr().out.splitlines()]
    names = {path.name for path in written}
    assert {"imagination_test.png", "imagination_dense.png", "imagination_merge.png"} <= names
    assert names & {"planner_view.png", "crash_view.png"}
    for path in written:
        assert path.parent == out and 1000 < path.stat().st_size < 200_000, path.name
        assert iio.imread(path).shape[1] == 1200


def test_pictures_of_a_run_not_made_is_refused(tmp_path, capsys):
    assert main(["pictures", DEBUG, f"workdir={tmp_path}", "--out", str(tmp_path)]) == 2
    assert "no complete evaluate stage" in capsys.readouterr().err


def test_simulate_from_a_registered_model_without_importing_torch(debug_run):
    code = (
        "import sys; from pipeline.cli import main; "
        f"code = main(['simulate', {DEBUG!r}, 'workdir={debug_run}', "
        "'simulate.planner=models:/drivecast-planner/1', 'simulate.baselines=[]', "
        "'simulate.gif_episodes=0', 'simulate.lane_guard=true']); "
        "assert code == 0, code; assert 'torch' not in sys.modules, 'torch was imported'"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    path = Path(done.stdout.strip().splitlines()[-1])
    summary = json.loads((path / "summary.json").read_text())
    assert summary["episodes"] == 2 and 0 <= summary["guard_rate"] <= 1


def test_simulate_refuses_more_counterfactual_episodes_than_episodes(debug_run, capsys):
    assert main(["simulate", DEBUG, f"workdir={debug_run}",
                 "simulate.counterfactual_episodes=3"]) == 2
    assert "simulate.counterfactual_episodes must lie in 0..simulate.episodes (2)" in \
        capsys.readouterr().err


def test_simulate_refuses_a_negative_lane_guard_gap(debug_run, capsys):
    assert main(["simulate", DEBUG, f"workdir={debug_run}", "simulate.lane_guard=true",
                 "simulate.guard_rear_gap=-1"]) == 2
    assert "simulate.guard_*: lane guard gaps and time must be >= 0" in capsys.readouterr().err


def test_simulate_refuses_a_missing_planner_file(debug_run, tmp_path, capsys):
    missing = tmp_path / "none.onnx"
    assert main(["simulate", DEBUG, f"workdir={debug_run}", f"simulate.planner={missing}"]) == 2
    assert str(missing) in capsys.readouterr().err


@pytest.mark.parametrize("name, content", [("model.json", "{"), ("model.json", "{}"),
                                           ("model.pt", "not a checkpoint")])
def test_a_corrupt_trained_model_is_refused_in_one_line(debug_run, tmp_path, name, content):
    import shutil

    from pipeline.artifacts import Artifacts
    from pipeline.errors import StageError
    from pipeline.stage_io import load_model

    copy = tmp_path / "train"
    shutil.copytree(stage_dirs(debug_run, "train")[0], copy)
    (copy / name).write_text(content)
    with pytest.raises(StageError, match="holds no usable trained model") as error:
        load_model(Artifacts("train", "k", copy, {}))
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("content", ["", '{"train": [0]}', '{"test": "0"}'])
def test_a_corrupt_split_file_is_refused_in_one_line(debug_run, tmp_path, content):
    from pipeline.artifacts import Artifacts
    from pipeline.errors import StageError
    from pipeline.stage_io import split_test_ids

    (tmp_path / "splits.json").write_text(content)
    with pytest.raises(StageError, match="splits.json is not a usable split") as error:
        split_test_ids(Artifacts("train", "k", tmp_path, {}))
    assert "\n" not in str(error.value)


TIMED = ("latency", "_ms", "seconds", "per_s", "registered")


@pytest.mark.parametrize("stage", ["export", "simulate"])
def test_a_killed_stage_leaves_nothing_complete_and_its_rerun_equals_the_first(
        debug_run, tmp_path, stage):
    """kill -9 part way through export or simulate: no complete-looking stage directory is
    left; the rerun completes with the figures of the uninterrupted run (timing aside)."""
    import shutil

    upstream = {"export": ("ingest", "train", "critic"),
                "simulate": ("ingest", "train", "critic", "export")}[stage]
    for name in upstream:
        if (debug_run / "debug" / name).is_dir():
            shutil.copytree(debug_run / "debug" / name, tmp_path / "debug" / name)
    args = [stage, DEBUG, f"workdir={tmp_path}", "tracking.enabled=false"]
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=os.environ | {"OMP_NUM_THREADS": "1"})
    deadline = time.time() + 120
    while time.time() < deadline and not list((tmp_path / "debug").glob(f"{stage}/.partial-*")):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "debug" / stage).is_dir() or not stage_dirs(tmp_path, stage)
    assert main(args) == 0
    (rerun,) = stage_dirs(tmp_path, stage)
    first = debug_run / "debug" / stage / rerun.name  # the same stage key
    figures = [{k: v for k, v in json.loads((d / "summary.json").read_text()).items()
                if not any(word in k for word in TIMED)} for d in (first, rerun)]
    assert figures[0] == figures[1]
