"""The simulate stage's baselines run in worker processes without changing their episodes."""

import json
from pathlib import Path

import pytest

from pipeline import runner
from pipeline.bench.planner import export_random_planner
from pipeline.cli import main
from pipeline.config import SimulateConfig, load_config, to_dict
from pipeline.errors import StageError
from pipeline.runner import key_of
from pipeline.stages.simulate import STANDALONE, baseline_episodes, check, table

DEBUG = str(Path(__file__).resolve().parents[2] / "configs" / "debug.yaml")
DEBUG_MODEL = dict(embed_dim=16, deter_dim=32, stoch_dim=8, hidden_dim=32, heads=2,
                   action_dim=8, ensemble=2, n_vehicles=6, obs_dim=7)
SHORT = ["ingest.env_config={duration: 4}", "simulate.episodes=3"]


def test_baseline_episodes_do_not_depend_on_the_workers():
    one = baseline_episodes(load_config(None, SHORT), "random", range(1000, 1003))
    two = baseline_episodes(load_config(None, [*SHORT, "simulate.workers=2"]), "random",
                            range(1000, 1003))
    assert [r.seed for r in two] == [1000, 1001, 1002]  # seed order, not completion order
    assert two == one
    assert len({r.actions for r in one}) > 1  # the episodes differ from seed to seed


def test_workers_stay_out_of_the_stage_key_and_must_be_positive():
    cfg = load_config(None, SHORT)
    assert key_of(STANDALONE, cfg, {}) == key_of(
        STANDALONE, load_config(None, [*SHORT, "simulate.workers=2"]), {})
    with pytest.raises(StageError, match="simulate.workers"):
        check(load_config(None, [*SHORT, "simulate.workers=0"]))


def test_closed_loop_table_shows_the_collision_interval():
    figures = {"collision_rate": 0.0, "collision_low": 0.0, "collision_high": 0.2775,
               "mean_speed": 23.0}
    header, _, row = table({"rule": figures}).splitlines()
    assert header.startswith("| policy | collision_rate | collision_low | collision_high |")
    assert row.startswith("| rule | 0.000 | 0.000 | 0.278 | 23.000 |")


ENVPOOL = [*SHORT, "simulate.backend=envpool", "simulate.baselines=[rule]"]


def test_backend_default_keeps_old_keys_and_batch_stays_out_of_the_key(monkeypatch):
    plain, envpool = load_config(None, SHORT), load_config(None, ENVPOOL)
    key, envpool_key = key_of(STANDALONE, plain, {}), key_of(STANDALONE, envpool, {})
    assert envpool_key != key_of(STANDALONE, load_config(None, [*SHORT,
                                                               "simulate.baselines=[rule]"]), {})
    assert envpool_key == key_of(STANDALONE, load_config(None, [*ENVPOOL, "simulate.batch=3"]),
                                 {})

    def without_new_fields(obj):  # the simulate section before backend and batch existed
        tree = to_dict(obj)
        if isinstance(obj, SimulateConfig):
            del tree["backend"], tree["batch"]
        return tree

    monkeypatch.setattr(runner, "to_dict", without_new_fields)
    assert key_of(STANDALONE, plain, {}) == key


@pytest.mark.parametrize("overrides, message", [
    (["simulate.env_id=merge-v0"], "env id 'merge-v0' has no EnvPool counterpart"),
    (["simulate.env_config={centering_position: [0.3, 0.5]}"],
     "env_config key 'centering_position' has no EnvPool counterpart"),
    (["simulate.baselines=[rule, oracle]"], "'oracle' copies highway-env"),
    (["simulate.batch=0"], "simulate.batch must be at least 1"),
])
def test_envpool_refuses_what_it_cannot_run_in_one_line(overrides, message):
    with pytest.raises(StageError, match=message) as err:
        check(load_config(None, [*ENVPOOL, *overrides]))
    assert "\n" not in str(err.value)


def test_simulate_on_envpool_end_to_end(tmp_path):
    planner = tmp_path / "planner.onnx"
    export_random_planner(planner, DEBUG_MODEL, history=5, horizon=2, samples=2)
    assert main(["simulate", DEBUG, f"workdir={tmp_path}", f"simulate.planner={planner}",
                 "simulate.backend=envpool", "simulate.baselines=[rule, idle]",
                 "simulate.episodes=4", "simulate.batch=3", "simulate.counterfactual_episodes=0",
                 "simulate.lane_guard=true", "tracking.enabled=false"]) == 0
    (stage,) = [p for p in (tmp_path / "debug" / "simulate").iterdir()
                if not p.name.startswith(".")]
    summary = json.loads((stage / "summary.json").read_text())
    for prefix in ("", "rule/", "idle/"):
        assert summary[f"{prefix}episodes"] == 4
        assert summary[f"{prefix}collision_low"] <= summary[f"{prefix}collision_rate"] \
            <= summary[f"{prefix}collision_high"]
    assert summary["guard_rate"] >= 0 and summary["latency_p50_ms"] > 0
    assert summary["idle/collision_rate"] > summary["rule/collision_rate"]
    table = (stage / "closed_loop.md").read_text().split("\n\n")[0].splitlines()
    assert [line.split(" | ")[0] for line in table[2:]] == ["| planner", "| rule", "| idle"]
    # the traces and the planner's view come from the GIF's highway-env episodes
    assert len(list((stage / "episodes").glob("*.csv"))) == 1
    assert (stage / "planner_view.gif").stat().st_size > 1000
    rows = (stage / "episodes.csv").read_text().splitlines()[1:]
    assert [row.split(",")[0] for row in rows] == ["planner"] * 4 + ["rule"] * 4 + ["idle"] * 4
    assert (stage / "simulate.gif").stat().st_size > 1000  # rendered on highway-env
