import numpy as np
import pytest
from highway_env.vehicle.behavior import IDMVehicle

from evaluation.policies import (
    FASTER,
    IDLE,
    LANE_LEFT,
    LANE_RIGHT,
    POLICIES,
    SLOWER,
    IdlePolicy,
    MixturePolicy,
    Policy,
    RandomPolicy,
    RuleBasedPolicy,
    make_policy,
    road_candidates,
)
from models.candidates import enumerate_candidates, lane_trajectory
from pipeline.highway_source import make_env, record_episode


def scene(ego_lane: int, others: list[tuple[int, float, float]], lanes: int = 3):
    """Ego alone at 25 m/s in ego_lane, plus vehicles (lane, metres ahead of ego, speed)."""
    env = make_env("highway-fast-v0", {"lanes_count": lanes, "vehicles_count": 0,
                                       "initial_lane_id": ego_lane, "duration": 5})  # fmt: skip
    env.reset(seed=0)
    core = env.unwrapped
    x = core.vehicle.position[0]
    for lane_id, ahead, speed in others:
        lane = core.road.network.get_lane(("0", "1", lane_id))
        vehicle = IDMVehicle(core.road, lane.position(x + ahead, 0), speed=speed)
        vehicle.target_speed = speed
        core.road.vehicles.append(vehicle)
    return env


@pytest.mark.parametrize("lanes, ego_lane", [(2, 1), (4, 0), (4, 2)])
def test_road_candidates_read_the_lane_count_and_target_lane_from_the_env(lanes, ego_lane):
    every = enumerate_candidates(2)
    kept = road_candidates(scene(ego_lane, [], lanes=lanes), every)
    on_road = (lane_trajectory(every, ego_lane) >= 0) & (lane_trajectory(every, ego_lane) < lanes)
    np.testing.assert_array_equal(kept, every[on_road.all(axis=1)])
    assert 0 < len(kept) < len(every)


def test_make_policy_names_and_errors():
    assert make_policy("idle").name == "idle" and isinstance(make_policy("idle"), IdlePolicy)
    assert isinstance(make_policy("random"), RandomPolicy)
    mixed = make_policy("rule", 0.2)
    assert isinstance(mixed, MixturePolicy) and mixed.name == "rule+eps0.2"
    with pytest.raises(ValueError, match="unknown policy 'fast'"):
        make_policy("fast")
    with pytest.raises(ValueError, match="epsilon"):
        make_policy("rule", 1.5)


def test_a_policy_must_implement_reset_and_act():
    class NoAct(Policy):
        name = "no-act"

        def reset(self, rng=None) -> None:
            pass

    class NoReset(Policy):
        name = "no-reset"

        def act(self, env) -> int:
            return IDLE

    class Complete(NoAct):
        def act(self, env) -> int:
            return IDLE

    for incomplete, missing in ((Policy, "act"), (NoAct, "act"), (NoReset, "reset")):
        with pytest.raises(TypeError, match=f"abstract.*{missing}"):
            incomplete()
    assert isinstance(Complete(), Policy) and Complete().act(None) == IDLE


@pytest.mark.parametrize("name", sorted(POLICIES))
@pytest.mark.parametrize("epsilon", [0.0, 0.3])
def test_every_policy_make_policy_returns_is_a_policy(name, epsilon):
    policy = make_policy(name, epsilon)
    assert isinstance(policy, Policy)
    assert isinstance(policy.name, str) and policy.name.startswith(name)
    if epsilon:
        assert isinstance(policy.base, Policy)
    policy.reset(0)
    assert policy.act(scene(1, [])) in range(5)


def test_rule_speeds_up_on_a_free_road():
    assert RuleBasedPolicy().act(scene(1, [])) == FASTER


def test_rule_changes_to_the_free_lane_that_exists_and_never_off_the_road():
    stopped_ahead = [(0, 20.0, 0.0)]
    assert RuleBasedPolicy().act(scene(0, stopped_ahead)) == LANE_RIGHT  # no lane on the left
    assert RuleBasedPolicy().act(scene(2, [(2, 20.0, 0.0)])) == LANE_LEFT  # none on the right


def test_rule_slows_down_when_no_side_lane_is_safe():
    blocked = [(0, 20.0, 0.0), (1, 3.0, 25.0)]  # a car alongside in the only other lane
    assert RuleBasedPolicy().act(scene(0, blocked, lanes=2)) == SLOWER
    rear_threat = [(0, 20.0, 0.0), (1, -12.0, 35.0)]  # fast car closing from behind
    assert RuleBasedPolicy().act(scene(0, rear_threat, lanes=2)) == SLOWER


def test_rule_keeps_lane_behind_a_slightly_slower_car_without_a_better_lane():
    assert RuleBasedPolicy().act(scene(0, [(0, 35.0, 24.0)], lanes=1)) == IDLE


def test_rule_never_picks_a_lane_change_off_the_road_in_traffic():
    env = make_env("highway-fast-v0", {"duration": 8, "vehicles_density": 1.5})
    policy, seen_edge = RuleBasedPolicy(), 0
    for seed in range(6):
        env.reset(seed=seed)
        for _ in range(8):
            lane = env.unwrapped.vehicle.target_lane_index[2]
            action = policy.act(env)
            lanes = env.unwrapped.config["lanes_count"]
            assert not (lane == 0 and action == LANE_LEFT)
            assert not (lane == lanes - 1 and action == LANE_RIGHT)
            seen_edge += lane in (0, lanes - 1)
            _, _, terminated, truncated, _ = env.step(action)
            if terminated or truncated:
                break
    assert seen_edge > 0  # the ego did drive in an edge lane


def test_rule_crashes_less_than_idle_and_gets_further():
    env = make_env("highway-fast-v0", {"duration": 10})
    results = {}
    for name in ("rule", "idle"):
        crashes, progress = 0, 0.0
        for seed in range(6):
            frames, steps = record_episode(env, make_policy(name), seed=100 + seed, episode=seed)
            crashes += steps["collision"].any()
            ego_x = frames["x"][frames["is_ego"]]
            progress += ego_x[-1] - ego_x[0]
        results[name] = (crashes, progress)
    assert results["rule"][0] < results["idle"][0]
    assert results["rule"][1] > results["idle"][1]


def test_random_and_mixture_are_reproducible_from_the_reset_seed():
    env = scene(1, [])

    def actions(policy, seed):
        policy.reset(np.random.default_rng(seed))
        return [policy.act(env) for _ in range(50)]

    assert actions(RandomPolicy(), 1) == actions(RandomPolicy(), 1)
    assert actions(RandomPolicy(), 1) != actions(RandomPolicy(), 2)
    mixed = MixturePolicy(RuleBasedPolicy(), 0.5)
    assert actions(mixed, 3) == actions(mixed, 3)
    assert set(actions(MixturePolicy(IdlePolicy(), 0.0), 4)) == {IDLE}
    assert set(actions(MixturePolicy(IdlePolicy(), 1.0), 4)) == set(range(5))
    share = np.mean(np.array(actions(MixturePolicy(IdlePolicy(), 0.3), 5)) != IDLE)
    assert 0.05 < share < 0.5  # about 0.3 * 4/5 of actions differ from IDLE


def test_policies_accept_the_unwrapped_env():
    env = scene(1, [(1, 15.0, 10.0)])
    assert RuleBasedPolicy().act(env.unwrapped) == RuleBasedPolicy().act(env)
