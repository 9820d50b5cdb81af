"""Closed-loop runner and summary; the deployed simulate path imports no torch."""

import subprocess
import sys
import textwrap
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import pytest

from evaluation.closed_loop import (
    CRASH_KINDS,
    EpisodeResult,
    crash_kind,
    episodes_csv,
    run_episodes,
    summarise,
)
from evaluation.policies import IdlePolicy, RandomPolicy
from pipeline.bench.planner import export_random_planner
from pipeline.highway_source import make_env

SHORT = {"duration": 5}
REPO = Path(__file__).resolve().parents[2]
DEBUG_MODEL = dict(embed_dim=16, deter_dim=32, stoch_dim=8, hidden_dim=32, heads=2,
                   action_dim=8, ensemble=2, n_vehicles=6, obs_dim=7)


def result(steps, collided, total, speeds, **stats):
    return EpisodeResult(seed=0, steps=steps, collided=collided, truncated=not collided,
                         total_return=total, speeds=tuple(speeds), actions=(1,) * steps,
                         **stats)


def test_idle_episodes_and_their_summary():
    results = run_episodes("highway-fast-v0", SHORT, IdlePolicy, [1000, 1001])
    assert [r.seed for r in results] == [1000, 1001]
    for r in results:
        assert 1 <= r.steps <= 5 and len(r.speeds) == len(r.actions) == r.steps
        assert set(r.actions) == {1} and r.latencies_ms is None
    summary = summarise(results)
    speeds = np.concatenate([r.speeds for r in results])
    assert summary["mean_speed"] == pytest.approx(speeds.mean())
    assert summary["mean_length"] == np.mean([r.steps for r in results])
    assert "fallback_rate" not in summary and "latency_p50_ms" not in summary


def test_idle_collisions_are_told_apart_by_kind():
    results = run_episodes("highway-fast-v0", {"duration": 15}, IdlePolicy, range(1000, 1006))
    assert any(r.collided for r in results)  # idle crashes in most episodes
    for r in results:
        assert (r.crash in CRASH_KINDS) == r.collided and (r.crash == "") == (not r.collided)
    summary = summarise(results)
    assert sum(summary[f"crash/{kind}"] for kind in CRASH_KINDS) == summary["collision_rate"]


@pytest.mark.parametrize(("offset", "kind"), [((6.0, 0.0), "front"), ((-4.5, 0.3), "rear"),
                                              ((2.0, 1.8), "side"), ((-3.0, -2.0), "side")])
def test_crash_kind_reads_where_the_partner_is(offset, kind):
    env = make_env("highway-fast-v0", {})
    env.reset(seed=3)
    core = env.unwrapped
    ego, partner = core.vehicle, core.road.vehicles[1]
    assert crash_kind(core) == ""
    ego.crashed = True
    assert crash_kind(core) == "other"  # no crashed partner on the road
    partner.position = ego.position + np.array(offset)
    partner.crashed = True
    far = core.road.vehicles[2]  # a crashed pair further away is not the ego's partner
    far.position, far.crashed = ego.position + np.array([-60.0, 4.0]), True
    assert crash_kind(core) == kind
    env.close()


def test_episode_rows_name_the_policy_crash_and_last_action():
    rows = episodes_csv({"planner": [result(2, True, 1.5, [20, 22], fallback_steps=1,
                                                guard_steps=0, crash="rear")],
                         "idle": [result(3, False, 2.0, [25] * 3)]}).splitlines()
    assert rows[0].startswith("policy,seed,steps,collided,crash")
    assert rows[1].split(",")[:5] == ["planner", "0", "2", "1", "rear"]
    assert rows[1].split(",")[5:] == ["IDLE", "21.000", "1.5000", "1", "0"]
    assert rows[2].split(",")[-2:] == ["", ""] and len(rows) == 3


def test_random_policy_is_reproducible_per_seed_and_max_steps_truncates():
    first = run_episodes("highway-fast-v0", SHORT, RandomPolicy, [7, 8], max_steps=3)
    again = run_episodes("highway-fast-v0", SHORT, RandomPolicy, [7, 8], max_steps=3)
    assert [r.actions for r in first] == [r.actions for r in again]
    assert first[0].actions != first[1].actions
    assert all(r.steps <= 3 for r in first)
    assert all(r.truncated for r in first if not r.collided)


def test_summary_golden_figures():
    results = [
        result(4, True, 2.0, [10, 20, 30, 40], latencies_ms=(1.0, 2.0),
               surprises=(1.0, float("nan")), fallback_steps=2, guard_steps=1),
        result(6, False, 5.0, [10] * 6, latencies_ms=(3.0,) * 6, surprises=(3.0,),
               fallback_steps=0, guard_steps=2),
    ]
    summary = summarise(results)
    assert summary["collision_rate"] == 0.5
    # 1 of 2 episodes: the 95% Wilson interval 9.5%..90.5%
    assert summary["collision_low"] == pytest.approx(0.0945, abs=1e-4)
    assert summary["collision_high"] == pytest.approx(0.9055, abs=1e-4)
    assert summary["mean_speed"] == pytest.approx(160 / 10)
    assert summary["mean_return"] == 3.5 and summary["mean_length"] == 5.0
    assert summary["fallback_rate"] == pytest.approx(2 / 10)
    assert summary["guard_rate"] == pytest.approx(3 / 10)
    assert summary["latency_p50_ms"] == 3.0
    assert summary["surprise_mean"] == pytest.approx(2.0)
    with pytest.raises(ValueError, match="zero episodes"):
        summarise([])


def test_gif_of_the_first_episode(tmp_path):
    path = tmp_path / "gifs" / "episode.gif"
    results = run_episodes("highway-fast-v0", {"duration": 3}, IdlePolicy, [3, 4],
                           gif_path=path)
    frames = imageio.mimread(path)
    assert len(results) == 2
    assert len(frames) == results[0].steps + 1  # reset frame + one per decision
    assert len(np.unique(frames[0].reshape(-1, frames[0].shape[-1]), axis=0)) > 2
    assert [p.name for p in path.parent.iterdir()] == ["episode.gif"]  # no temp files left


def test_simulate_path_runs_without_torch(tmp_path):
    onnx_path = tmp_path / "planner.onnx"
    export_random_planner(onnx_path, DEBUG_MODEL, history=3, horizon=2, samples=2)
    script = textwrap.dedent(f"""
        import sys
        from evaluation.closed_loop import run_episodes, summarise
        from pipeline.planner.decision import choose
        from evaluation.oracle import OracleLookahead
        from pipeline.planner.policy import PlannerPolicy
        from models.candidates import enumerate_candidates
        from pipeline.planner.live_scene import LiveScene
        from pipeline.planner.scorer import OnnxScorer
        scorer = OnnxScorer.load({str(onnx_path)!r})
        make = lambda: PlannerPolicy(scorer, enumerate_candidates(2))
        results = run_episodes("highway-fast-v0", {{"duration": 3}}, make, [5])
        summary = summarise(results)
        assert summary["latency_p50_ms"] > 0 and results[0].steps >= 1, summary
        from functools import partial
        from evaluation.envpool_loop import drivers, run_envpool_episodes
        from pipeline.envpool_source import EnvpoolSource
        from pipeline.planner.batch_planner import BatchPlanner
        source = EnvpoolSource("highway-fast-v0", {{"duration": 3}})
        pooled = run_envpool_episodes(source, drivers(partial(BatchPlanner, source), make),
                                      [5, 6])
        assert summarise(pooled)["latency_p50_ms"] > 0, pooled
        heavy = [name for name in ("torch", "lightning", "mlflow") if name in sys.modules]
        assert not heavy, heavy
        print("ok", results[0].steps)
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("ok")
