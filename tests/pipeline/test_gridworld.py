"""The gridworld stage: config checks, learning to near-optimal, determinism, files."""

import csv
from dataclasses import replace

import pytest

from pipeline.gridworld import GridworldConfig, UnseenPrior, learn, run_gridworld

SUMMARY_KEYS = {
    "rounds", "success_rate", "optimal_success_rate", "transition_tv",
    "expected_return", "optimal_expected_return",
}


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ({"slip": 1.5}, "gridworld.slip"),
        ({"gamma": 1.0}, "gridworld.gamma"),
        ({"rounds": 0}, "gridworld.rounds"),
        ({"epsilon": -0.1}, "gridworld.epsilon"),
        ({"unseen_prior": "hopeful"}, "gridworld.unseen_prior"),
        ({"map_text": "S.\n.G.\n"}, "gridworld map row 2"),
    ],
)
def test_config_refuses_bad_values_naming_the_key(override, key):
    with pytest.raises(ValueError, match=key):
        GridworldConfig(**override)


def test_config_accepts_prior_as_text():
    cfg = GridworldConfig(unseen_prior="optimistic", goal_reward=2.0)
    assert cfg.unseen_prior is UnseenPrior.OPTIMISTIC
    assert cfg.unseen_reward == 2.0
    assert GridworldConfig(step_reward=-0.3).unseen_reward == -0.3


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_learned_policy_comes_within_five_points_of_optimal(seed):
    results, model = learn(GridworldConfig(rounds=16, seed=seed))
    first, last = results[0], results[-1]
    assert last.optimal_success_rate > 0.99
    assert last.success_rate >= last.optimal_success_rate - 0.05
    assert first.success_rate < last.optimal_success_rate - 0.05  # it had to learn
    assert last.transition_tv < first.transition_tv
    assert last.env_steps == int(model.visit_counts().sum())


def test_same_seed_same_result_and_other_seed_differs():
    cfg = GridworldConfig(rounds=3, seed=5)
    assert learn(cfg)[0] == learn(cfg)[0]
    assert learn(cfg)[0] != learn(replace(cfg, seed=6))[0]


def test_run_gridworld_writes_every_file(tmp_path, capsys):
    cfg = GridworldConfig(rounds=2, episodes_per_round=4, max_steps=12, imagination_episodes=1)
    logged = []
    summary = run_gridworld(cfg, tmp_path, lambda *item: logged.append(item))

    assert set(summary) == SUMMARY_KEYS
    assert summary["rounds"] == 2
    assert 0.0 <= summary["success_rate"] <= 1.0
    names = ["rounds.csv", "round_01.png", "round_02.png", "optimal.png", "rounds.gif",
             "imagination.gif"]
    for name in names:
        assert (tmp_path / name).stat().st_size > 0, name
    with (tmp_path / "rounds.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [row["round"] for row in rows] == ["1", "2"]
    assert float(rows[-1]["success_rate"]) == pytest.approx(summary["success_rate"], abs=1e-6)
    assert {(name, step) for name, _, step in logged} >= {("success_rate", 1),
                                                          ("transition_tv", 2)}
    assert capsys.readouterr().err.count("gridworld round") == 2
