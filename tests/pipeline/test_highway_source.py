import copy

import numpy as np
import pytest
from highway_env.vehicle.behavior import IDMVehicle

from evaluation.policies import IdlePolicy, make_policy
from pipeline.dataset import FRAME_COLUMNS, STEP_COLUMNS, numpy_dtype
from pipeline.highway_source import (
    ID_ATTR,
    NEXT_ID_ATTR,
    make_env,
    record_branch,
    record_episode,
    vehicle_id,
)

SHORT = {"duration": 5, "vehicles_count": 10}
DENSE = {"duration": 8, "vehicles_count": 15, "vehicles_density": 2.0}


@pytest.fixture(scope="module")
def env():
    return make_env("highway-fast-v0", SHORT)


def ids_by_object(core) -> dict[int, int]:
    return {id(v): vehicle_id(v) for v in core.road.vehicles}


def test_unknown_env_id_is_refused_in_one_line():
    with pytest.raises(ValueError, match="unknown env id 'highway-vX'") as error:
        make_env("highway-vX", {})
    assert "\n" not in str(error.value)


def test_unknown_config_key_and_other_action_type_are_refused():
    with pytest.raises(ValueError, match="vehicle_count"):
        make_env("highway-fast-v0", {"vehicle_count": 3})
    with pytest.raises(ValueError, match="DiscreteMetaAction"):
        make_env("highway-fast-v0", {"action": {"type": "ContinuousAction"}})


def test_frequencies_must_divide():
    with pytest.raises(ValueError, match="multiple of policy_frequency"):
        make_env("highway-fast-v0", {"simulation_frequency": 5, "policy_frequency": 2})


@pytest.mark.parametrize("sim, policy", [(5, 1), (6, 2)])
def test_frames_per_step_is_sim_over_policy_frequency(sim, policy):
    config = {**SHORT, "duration": 3, "simulation_frequency": sim, "policy_frequency": policy}
    frames, steps = record_episode(make_env("highway-fast-v0", config), IdlePolicy(), 1, 0)
    per_step = sim // policy
    assert np.array_equal(steps["first_frame"], steps["step"] * per_step)
    assert frames["frame"].max() == len(steps["step"]) * per_step
    assert np.unique(frames["frame"]).size == len(steps["step"]) * per_step + 1
    np.testing.assert_allclose(frames["time"], frames["frame"] / sim)


def test_tables_have_schema_dtypes_and_ego_is_id_zero(env):
    frames, steps = record_episode(env, make_policy("rule", 0.3), seed=5, episode=7)
    for table, columns in ((frames, FRAME_COLUMNS), (steps, STEP_COLUMNS)):
        assert list(table) == list(columns)
        for name, kind in columns.items():  # str columns: any width of unicode
            assert np.issubdtype(table[name].dtype, numpy_dtype(kind)), name
    assert np.all(frames["vehicle_id"][frames["is_ego"]] == 0)
    assert np.all(frames["episode"] == 7) and np.all(steps["policy"] == "rule+eps0.3")
    per_frame = np.bincount(frames["frame"])
    assert np.all(per_frame == len(env.unwrapped.road.vehicles))  # all vehicles, every frame


def test_same_seed_gives_identical_tables(env):
    first = record_episode(env, make_policy("rule", 0.5), seed=11, episode=0)
    second = record_episode(env, make_policy("rule", 0.5), seed=11, episode=0)
    other = record_episode(env, make_policy("rule", 0.5), seed=12, episode=0)
    for a, b in zip(first, second, strict=True):
        assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(first[0]["x"][:50], other[0]["x"][:50])


def test_ids_follow_the_same_objects_and_positions_are_continuous(env):
    env.reset(seed=3)
    core = env.unwrapped
    before = ids_by_object(core)
    assert vehicle_id(core.vehicle) == 0
    assert sorted(before.values()) == list(range(len(before)))
    for _ in range(4):
        env.step(3)
    assert ids_by_object(core) == before
    frames = env.frames_table(episode=0)
    dt = 1 / env.simulation_frequency
    for vid in np.unique(frames["vehicle_id"]):
        rows = frames["vehicle_id"] == vid
        assert np.array_equal(frames["frame"][rows], np.arange(rows.sum()))
        step = np.hypot(np.diff(frames["x"][rows]), np.diff(frames["y"][rows]))
        assert step.max() < 40.0 * dt + 0.5  # never faster than MAX_SPEED: no id swaps


def test_vehicles_that_appear_later_get_the_next_free_id(env):
    env.reset(seed=4)
    core = env.unwrapped
    next_id = getattr(core.road, NEXT_ID_ATTR)
    lane = core.road.network.get_lane(("0", "1", 0))
    newcomer = IDMVehicle(core.road, lane.position(core.vehicle.position[0] - 60, 0), speed=20)
    core.road.vehicles.append(newcomer)
    env.step(1)
    assert vehicle_id(newcomer) == next_id
    assert getattr(core.road, NEXT_ID_ATTR) == next_id + 1
    frames = env.frames_table(episode=0)
    assert np.unique(frames["frame"][frames["vehicle_id"] == next_id]).size == 5


def test_ids_survive_deepcopy_and_the_copy_does_not_record_into_the_original(env):
    env.reset(seed=8)
    env.step(1)
    twin = copy.deepcopy(env)
    assert "step" not in vars(env.unwrapped.road)  # nothing of the recorder left between steps
    assert [vehicle_id(v) for v in twin.unwrapped.road.vehicles] == [
        vehicle_id(v) for v in env.unwrapped.road.vehicles
    ]
    frames_before = len(env.frame_log)
    twin.step(3)
    twin.step(3)
    assert len(env.frame_log) == frames_before
    assert len(twin.frame_log) == frames_before + 2 * twin.frames_per_step
    assert all(getattr(v, ID_ATTR) is not None for v in twin.unwrapped.road.vehicles)
    env.step(3)
    env.step(3)  # the original replays the copy exactly (same state, same RNG)
    np.testing.assert_array_equal(env.frame_log[-1], twin.frame_log[-1])


def test_deepcopy_of_unwrapped_env_keeps_ids(env):
    env.reset(seed=9)
    twin = copy.deepcopy(env.unwrapped)
    assert [vehicle_id(v) for v in twin.road.vehicles] == [
        vehicle_id(v) for v in env.unwrapped.road.vehicles
    ]
    assert getattr(twin.road, NEXT_ID_ATTR) == getattr(env.unwrapped.road, NEXT_ID_ATTR)


def test_collision_is_recorded_in_steps_and_frames():
    env = make_env("highway-fast-v0", DENSE)
    for seed in range(10):  # idle in dense traffic crashes within a few seeds
        frames, steps = record_episode(env, IdlePolicy(), seed=seed, episode=seed)
        if steps["collision"].any():
            break
    assert steps["collision"].sum() == 1 and steps["collision"][-1] and steps["terminated"][-1]
    ego = frames["is_ego"]
    assert not frames["crashed"][ego][0] and frames["crashed"][ego][-1]
    crash_frame = frames["frame"][ego][np.argmax(frames["crashed"][ego])]
    assert steps["first_frame"][-1] < crash_frame <= steps["first_frame"][-1] + 5


def test_max_steps_truncates(env):
    _, steps = record_episode(env, IdlePolicy(), seed=2, episode=0, max_steps=2)
    assert len(steps["step"]) == 2 and steps["truncated"][-1] and not steps["truncated"][0]


def test_record_episode_needs_a_recording_env():
    import gymnasium as gym

    bare = gym.make("highway-fast-v0", disable_env_checker=True)
    with pytest.raises(ValueError, match="make_env"):
        record_episode(bare, IdlePolicy(), seed=0, episode=0)


def advance(env, seed: int, steps: int) -> None:
    env.reset(seed=seed)
    for _ in range(steps):
        env.step(1)


def test_a_branch_is_what_the_real_env_does_and_leaves_it_untouched(env):
    advance(env, seed=4, steps=2)
    log, index = list(env.frame_log), env.frame_index
    ego = env.unwrapped.vehicle.position.copy()
    frames, steps = record_branch(env, [3, 1, 1], history=4, episode=9)
    assert env.frame_index == index and len(env.frame_log) == len(log)
    assert all(a is b for a, b in zip(env.frame_log, log, strict=True))
    np.testing.assert_array_equal(env.unwrapped.vehicle.position, ego)
    assert set(frames["episode"]) == set(steps["episode"]) == {9}
    assert set(steps["policy"]) == {"branch"} and steps["first_frame"][0] == index
    assert frames["frame"].min() == index - 4  # the history the window at t0 needs
    env.step(3)  # the real env takes the branch's first action: the same next frame
    real = env.frame_log[-1]
    branch = np.stack([frames[c] for c in ("vehicle_id", "x", "y", "vx", "vy")], axis=1)
    branch = branch[frames["frame"] == env.frame_index]
    np.testing.assert_allclose(branch[np.argsort(branch[:, 0])][:, 1:],
                               real[np.argsort(real[:, 1])][:, 3:7], atol=1e-4)


def test_a_branch_that_does_not_crash_ends_truncated(env):
    advance(env, seed=2, steps=1)
    _, steps = record_branch(env, [1, 1], history=3, episode=1)
    assert steps["action"].tolist() == [1, 1] and steps["step"].tolist() == [0, 1]
    assert steps["truncated"].tolist() == [False, True] and not steps["terminated"].any()


def test_a_branch_stops_at_its_crash():
    env = make_env("highway-fast-v0", DENSE)
    for seed in range(10):
        advance(env, seed=seed, steps=0)
        _, steps = record_branch(env, [3] * 8, history=2, episode=1)
        if steps["collision"].any():
            break
    assert steps["collision"][-1] and steps["terminated"][-1] and not steps["truncated"][-1]
    assert len(steps["step"]) < 8


def test_record_branch_needs_a_recording_env():
    import gymnasium as gym

    bare = gym.make("highway-fast-v0", disable_env_checker=True)
    with pytest.raises(ValueError, match="make_env"):
        record_branch(bare, [1], history=2, episode=1)
    with pytest.raises(ValueError, match="at least one action"):
        record_branch(make_env("highway-fast-v0", SHORT), [], history=2, episode=1)
