"""The batched policies decide exactly as the one-scene policies do."""

import numpy as np
import pytest

from evaluation.batch_policies import BatchPolicy, Scenes, rule_actions
from evaluation.policies import Policy, RuleBasedPolicy, make_policy
from models.candidates import LANE_LEFT, LANE_RIGHT
from pipeline.highway_source import make_env


def scenes_of(env) -> Scenes:
    """A highway-env scene as a one-row Scenes (ego first)."""
    core = env.unwrapped
    ego = core.vehicle
    vehicles = [ego] + [v for v in core.road.vehicles if v is not ego]

    def column(read):
        return np.array([[read(v) for v in vehicles]], dtype=np.float64)

    return Scenes(x=column(lambda v: v.position[0]), y=column(lambda v: v.position[1]),
                  speed=column(lambda v: v.speed), present=np.ones((1, len(vehicles)), bool),
                  target_lane=np.array([ego.target_lane_index[2]]),
                  lanes=int(core.config["lanes_count"]), length=column(lambda v: v.LENGTH))


def test_rule_actions_match_the_rule_policy_on_highway_env_scenes():
    env, rule, driver = make_env("highway-fast-v0"), RuleBasedPolicy(), make_policy("rule", 0.3)
    expected, got = [], []
    for seed in range(6):
        env.reset(seed=seed)
        driver.reset(seed)
        done = False
        while not done:
            expected.append(rule.act(env))
            got.append(int(rule_actions(scenes_of(env))[0]))
            _, _, terminated, truncated, _ = env.step(driver.act(env))
            done = terminated or truncated
    assert got == expected
    assert {LANE_LEFT, LANE_RIGHT} & set(expected)  # lane choices were exercised


def test_rule_actions_are_computed_per_row():
    env = make_env("highway-fast-v0")
    scenes = []
    for seed in (1, 2, 3):
        env.reset(seed=seed)
        scenes.append(scenes_of(env))
    width = max(s.x.shape[1] for s in scenes)

    def stack(name):
        return np.concatenate([np.pad(getattr(s, name), ((0, 0), (0, width - s.x.shape[1])))
                               for s in scenes])

    batch = Scenes(x=stack("x"), y=stack("y"), speed=stack("speed"), present=stack("present"),
                   target_lane=np.concatenate([s.target_lane for s in scenes]), lanes=3,
                   length=stack("length"))
    assert list(rule_actions(batch)) == [int(rule_actions(s)[0]) for s in scenes]


@pytest.mark.parametrize("name,epsilon", [("random", 0.0), ("rule", 0.5), ("idle", 0.3),
                                          ("faster", 0.0)])
def test_batch_policy_draws_the_same_random_stream(name, epsilon):
    env = make_env("highway-fast-v0")
    env.reset(seed=4)
    scene = scenes_of(env)
    single, batched = make_policy(name, epsilon), make_policy(name, epsilon)
    single.reset(np.random.default_rng(9))
    batched.reset(np.random.default_rng(9))
    policy = BatchPolicy([batched])
    expected = [single.act(env) for _ in range(40)]
    got = [int(policy.act(np.array([0]), scene)[0]) for _ in range(40)]
    assert got == expected


def test_batch_policy_refuses_a_policy_it_cannot_batch():
    class Planner(Policy):
        name = "planner"

        def reset(self, rng=None):
            pass

        def act(self, env):
            return 1

    with pytest.raises(ValueError, match="planner cannot act on batched scenes"):
        BatchPolicy([Planner()])
