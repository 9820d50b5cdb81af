"""The simulate stage's baselines run in worker processes without changing their episodes."""

import pytest

from pipeline.config import load_config
from pipeline.errors import StageError
from pipeline.runner import key_of
from pipeline.stages.simulate import STANDALONE, baseline_episodes, check, table

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
