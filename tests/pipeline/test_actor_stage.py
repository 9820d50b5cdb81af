"""The actor stage: trained in imagination with Lightning, resumed bit for bit, exported to
ONNX with a sidecar the runtime checks, and driven without torch."""

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline import lit_module

REPO = Path(__file__).resolve().parents[2]
DEBUG = str(REPO / "configs" / "debug.yaml")
# the planner the actor imitates scores with the world model's own risk (no critic to fit)
COMMON = [DEBUG, "tracking.enabled=false", "actor.epochs=3", "actor.search_weight=0.5",
          "actor.planner_episodes=2", "critic.episodes=0", "export.risk=model"]
TIMING = ("fit_seconds", "imagined_steps_per_s", "resumed_from_epoch")


class Killed(Exception):
    """Stands for kill -9 after an epoch: nothing after it runs."""


class KilledAtEpoch(lit_module.EpochSeed):
    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == 2:
            raise Killed


def actor_dir(workdir: Path) -> Path:
    (path,) = [p for p in (workdir / "debug" / "actor").iterdir() if not p.name.startswith(".")]
    return path


def run_actor(workdir: Path, *overrides: str) -> None:
    """ingest, train, critic (nothing to fit), export and the actor stage on the debug
    config (evaluate, which `drivecast actor` runs first, is not an input of the actor)."""
    from pipeline.config import load_config
    from pipeline.runner import run_until
    from pipeline.tracking import Tracker

    cfg = load_config(DEBUG, [*COMMON[1:], f"workdir={workdir}", *overrides])
    from pipeline.stages import actor, critic, export, ingest, train

    stages = [ingest.STAGE, train.STAGE, critic.STAGE, export.STAGE, actor.STAGE]
    run_until("actor", stages, cfg, Tracker(cfg))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("actor")
    run_actor(workdir)
    return workdir


def test_the_actor_stage_writes_its_figures_weights_and_onnx_actor(trained):
    path = actor_dir(trained)
    summary = json.loads((path / "summary.json").read_text())
    assert summary["epochs"] == 3 and summary["imagined_steps_per_s"] > 0
    for prefix in ("imagined_", "random/imagined_", "always/IDLE/imagined_",
                   "always/SLOWER/imagined_"):
        assert 0 <= summary[prefix + "collision_per_step"] <= 1
        assert np.isfinite(summary[prefix + "discounted_return"])
    assert summary["parity_max_abs_diff"] <= 1e-4
    assert 0 <= summary["search_agreement"] <= 1
    assert summary["start_states"] > 2  # the training windows and the planner's decisions
    assert {"actor.onnx", "actor.onnx.json", "actor.pt"} <= {p.name for p in path.iterdir()}
    assert (path / "checkpoints" / "last.ckpt").is_file()


def test_the_planner_targets_are_its_decisions_among_the_road_actions(trained):
    from models.candidates import enumerate_candidates
    from pipeline.planner.decision import choose
    from pipeline.planner.scorer import OnnxScorer
    from pipeline.planner.search_targets import LANE, planner_choices

    (export,) = [p for p in (trained / "debug" / "export").iterdir()
                 if not p.name.startswith(".")]
    scorer = OnnxScorer.load(export / "planner.onnx")
    rng = np.random.default_rng(0)
    hist = rng.normal(size=(12, scorer.history, scorer.vehicles, scorer.obs_dim)) * 5
    hist = hist.astype(np.float32)
    hist[:, :, 0, LANE] = np.repeat([0.0, 2.0], 6)[:, None]  # left lane, then right lane
    mask = np.ones(hist.shape[:3], dtype=bool)
    rule = (1.0, 0.0, 0.2)
    choices = planner_choices(scorer, hist, mask, 3, rule)
    assert choices.shape == (12,) and choices.dtype == np.int64
    assert (choices[:6] != 0).all() and (choices[6:] != 2).all()  # never off the road
    every = enumerate_candidates(scorer.horizon)
    lanes = np.cumsum(np.where(every == 0, -1, np.where(every == 2, 1, 0)), axis=1)
    kept = every[((lanes >= 0) & (lanes <= 2)).all(axis=1)]  # from lane 0 of 3, on the road
    assert choices[0] == kept[choose(scorer.score(hist[0], mask[0], kept), *rule), 0]
    assert np.array_equal(choices, planner_choices(scorer, hist, mask, 3, rule))


def test_the_onnx_actor_matches_torch_and_refuses_a_foreign_sidecar(trained, tmp_path):
    from models.actor import ActorCritic, ActorPolicy
    from pipeline.artifacts import Artifacts
    from pipeline.planner.actor_runtime import ActorSession
    from pipeline.planner.scorer import ScorerError
    from pipeline.stage_io import load_model

    (train,) = [p for p in (trained / "debug" / "train").iterdir() if not p.name.startswith(".")]
    model, _ = load_model(Artifacts("train", train.name, train, {}))
    path = actor_dir(trained)
    agent = ActorCritic(model.deter_dim + model.stoch_dim, hidden_dim=64)
    agent.load_state_dict(torch.load(path / "actor.pt", weights_only=True))
    session = ActorSession.load(path / "actor.onnx")
    generator = torch.Generator().manual_seed(0)
    hist = torch.randn(7, session.history, session.vehicles, session.obs_dim,
                       generator=generator) * 5
    mask = torch.ones(7, session.history, session.vehicles)
    want = ActorPolicy(model, agent.actor)(hist, mask).detach().numpy()
    assert np.abs(session.probs(hist.numpy(), mask.numpy()) - want).max() < 1e-4
    with pytest.raises(ScorerError, match="takes hist"):
        session.probs(hist.numpy()[:, :-1], mask.numpy()[:, :-1])
    shutil.copy(path / "actor.onnx", tmp_path / "actor.onnx")
    sidecar = json.loads((path / "actor.onnx.json").read_text())
    (tmp_path / "actor.onnx.json").write_text(json.dumps(sidecar | {"onnx_sha256": "0" * 64}))
    with pytest.raises(ScorerError, match="sha256 differs"):
        ActorSession.load(tmp_path / "actor.onnx")
    (tmp_path / "actor.onnx").write_bytes(b"\0" * 100)
    with pytest.raises(ScorerError, match="ONNX actor .* cannot be loaded"):
        ActorSession.load(tmp_path / "actor.onnx")


def test_a_killed_and_resumed_actor_ends_as_one_that_ran_through(trained, tmp_path,
                                                                monkeypatch):
    killed = tmp_path / "killed"
    for stage in ("ingest", "train", "critic", "export"):
        shutil.copytree(trained / "debug" / stage, killed / "debug" / stage)
    with monkeypatch.context() as patch:
        patch.setattr(lit_module, "EpochSeed", KilledAtEpoch)
        with pytest.raises(Killed):
            run_actor(killed, "actor.resume=true")
    (partial,) = (killed / "debug" / "actor").glob(".partial-*/checkpoints/last.ckpt")
    assert torch.load(partial, weights_only=False)["epoch"] == 1
    run_actor(killed, "actor.resume=true")
    a, b = actor_dir(trained), actor_dir(killed)
    assert a.name == b.name  # the same stage key
    first, resumed = (json.loads((d / "summary.json").read_text()) for d in (a, b))
    assert resumed["resumed_from_epoch"] == 2
    assert {k: v for k, v in first.items() if k not in TIMING} == \
        {k: v for k, v in resumed.items() if k not in TIMING}
    weights = [torch.load(d / "actor.pt", weights_only=True) for d in (a, b)]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_the_actor_drives_highway_env_and_envpool_without_importing_torch(trained):
    actor = actor_dir(trained) / "actor.onnx"
    script = textwrap.dedent(f"""
        import sys
        from functools import partial
        from evaluation.closed_loop import run_episodes, summarise
        from evaluation.envpool_loop import drivers, run_envpool_episodes
        from pipeline.envpool_source import EnvpoolSource
        from pipeline.planner.actor_runtime import ActorDriver, ActorSession
        from pipeline.planner.batch_planner import BatchPlanner
        session = ActorSession.load({str(actor)!r})
        make = lambda: ActorDriver(session)
        results = run_episodes("highway-fast-v0", {{"duration": 3}}, make, [5])
        assert summarise(results)["latency_p50_ms"] > 0 and results[0].steps >= 1
        source = EnvpoolSource("highway-fast-v0", {{"duration": 3}})
        pooled = run_envpool_episodes(source, drivers(partial(BatchPlanner, source), make),
                                      [5, 6])
        assert len(pooled) == 2 and summarise(pooled)["latency_p50_ms"] > 0, pooled
        heavy = [name for name in ("torch", "lightning", "mlflow") if name in sys.modules]
        assert not heavy, heavy
        print("ok")
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("ok")


def test_the_actor_learns_in_a_value_equivalent_model_too(tmp_path):
    """MuZero's three functions: representation (the encoder), dynamics (GRU, prior and
    the reward/collision/continue heads) and prediction (the actor and critic here)."""
    run_actor(tmp_path, "model.variant=value_equivalent", "actor.epochs=1")
    summary = json.loads((actor_dir(tmp_path) / "summary.json").read_text())
    assert summary["epochs"] == 1 and summary["parity_max_abs_diff"] <= 1e-4


def test_the_recording_planner_labels_each_decision_with_its_greedy_choice(trained):
    from functools import partial

    from evaluation.envpool_loop import drivers, run_envpool_episodes
    from pipeline.config import load_config
    from pipeline.envpool_source import EnvpoolSource
    from pipeline.planner.batch_planner import BatchPlanner
    from pipeline.planner.search_targets import RecordingPlanner, planner_states
    from pipeline.stage_io import planner_factory

    (export,) = [p for p in (trained / "debug" / "export").iterdir()
                 if not p.name.startswith(".")]
    planner = export / "planner.onnx"
    cfg = load_config(DEBUG, [*COMMON[1:], "simulate.surprise_threshold=1000"])  # no fallback
    source, seeds = EnvpoolSource("highway-fast-v0", {"duration": 4}), [3, 4]
    driven = run_envpool_episodes(source, drivers(partial(BatchPlanner, source),
                                                  planner_factory(cfg, planner)), seeds, 2)
    executed = np.concatenate([r.actions for r in driven])
    states = {epsilon: planner_states(source, planner_factory(
        cfg, planner, partial(RecordingPlanner, epsilon=epsilon)), seeds, 2)
        for epsilon in (0.0, 1.0)}
    greedy, explored = states[0.0], states[1.0]
    assert np.array_equal(greedy["target"], executed)  # every decision, its own choice
    assert greedy["hist"].shape == (len(executed), cfg.model.history, cfg.model.vehicles, 7)
    assert greedy["hist_mask"].shape == greedy["hist"].shape[:3]
    # exploring changes what is driven, not the label of the first scene
    assert explored["target"][0] == greedy["target"][0]
    assert not np.array_equal(explored["hist"][:3], greedy["hist"][:3])


def test_an_actor_for_the_interaction_variant_is_refused_before_anything_runs(tmp_path,
                                                                             capsys):
    from pipeline.cli import main

    assert main(["actor", *COMMON, f"workdir={tmp_path}", "model.variant=interaction"]) == 2
    err = capsys.readouterr().err
    assert "actor: the actor is trained in an RSSM" in err
    assert not (tmp_path / "debug").exists()


def test_planner_episodes_without_imitation_are_refused(tmp_path, capsys):
    from pipeline.cli import main

    assert main(["actor", *COMMON, f"workdir={tmp_path}", "actor.search_weight=0"]) == 2
    assert "actor.planner_episodes labels states for imitation" in capsys.readouterr().err
