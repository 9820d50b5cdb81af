"""highway-env as a data source: env factory, persistent vehicle ids, per-frame recording.

highway-env has no vehicle ids and only exposes the state at decision steps. This module
adds both, without touching highway-env's classes:

- ids: every vehicle object gets an int attribute ``drivecast_id`` (ego = 0 at reset, then
  the other vehicles in road order; vehicles that appear later get the next free id). The
  next free id lives on the road (``road.drivecast_next_id``), so ``copy.deepcopy(env)``
  carries ids and counter along and a copy hands out the same ids as the original would.
- frames: ``RecordingEnv.step`` wraps ``road.step`` with an instance attribute for the
  duration of the step only, recording every vehicle after each simulation frame, then
  deletes the attribute. Outside ``step`` the env is plain highway-env, so a deepcopy
  taken between steps is clean and stepping it never records into the original.

Frame 0 is the state after reset; decision step k covers frames k*F+1 .. (k+1)*F with
F = simulation_frequency / policy_frequency.

Branches (``record_branch``): from the current state of a recording env, a deep copy drives a
given action sequence open loop; the result is a short episode of its own (the copied last
frames as history, then the branch's frames, same frame numbers and vehicle ids), while
the original env goes on untouched.
"""

from __future__ import annotations

import copy
import math

import gymnasium as gym
import highway_env  # noqa: F401  (registers the highway-env ids with gymnasium)
import numpy as np
from highway_env.envs.common.action import DiscreteMetaAction
from highway_env.utils import wrap_to_pi

from models.candidates import ACTION_NAMES
from pipeline.dataset import BRANCH_POLICY, FRAME_COLUMNS, STEP_COLUMNS, numpy_dtype

ID_ATTR = "drivecast_id"
NEXT_ID_ATTR = "drivecast_next_id"
# Column order of one recorded frame row, before episode/time are added.
ROW_COLUMNS = (
    "frame", "vehicle_id", "is_ego", "x", "y", "vx", "vy",
    "heading", "length", "width", "lane", "crashed",
)  # fmt: skip


def highway_env_ids() -> list[str]:
    """All gymnasium ids registered by highway-env, sorted."""
    return sorted(
        env_id
        for env_id, spec in gym.registry.items()
        if isinstance(spec.entry_point, str) and spec.entry_point.startswith("highway_env.")
    )


def check_env_id(env_id: str) -> None:
    known = highway_env_ids()
    if env_id not in known:
        raise ValueError(f"unknown env id '{env_id}'; highway-env ids are: {', '.join(known)}")


def check_env_config(env_id: str, env_config: dict) -> None:
    """Refuse keys the env does not know (highway-env would silently ignore a typo)."""
    env_class = gym.registry[env_id].entry_point
    module_name, class_name = env_class.split(":")
    module = __import__(module_name, fromlist=[class_name])
    known = getattr(module, class_name).default_config()
    unknown = sorted(set(env_config) - set(known))
    if unknown:
        raise ValueError(f"env_config key(s) {unknown} are unknown to {env_id}")
    check_env_values(env_config)
    action_type = dict(env_config.get("action", {})).get("type", "DiscreteMetaAction")
    if action_type != "DiscreteMetaAction":
        raise ValueError(f"env_config.action.type must be DiscreteMetaAction, got '{action_type}'")


# env_config keys with a lower bound: above 0, or at least 0 (any number must be finite).
POSITIVE_ENV_KEYS = ("lanes_count", "vehicles_density", "duration", "simulation_frequency",
                     "policy_frequency")
NON_NEGATIVE_ENV_KEYS = ("vehicles_count",)


def check_env_values(env_config: dict) -> None:
    """Refuse NaN or inf numbers, negative vehicle counts, and lane counts, densities,
    durations and frequencies that are not > 0."""
    for key, value in env_config.items():
        if not isinstance(value, int | float) or isinstance(value, bool):
            continue
        if key in POSITIVE_ENV_KEYS and not value > 0:
            raise ValueError(f"env_config.{key} must be a number above 0, got {value!r}")
        if key in NON_NEGATIVE_ENV_KEYS and not value >= 0:
            raise ValueError(f"env_config.{key} must be a number >= 0, got {value!r}")
        if not math.isfinite(value):
            raise ValueError(f"env_config.{key} must be a finite number, got {value!r}")


def check_frequencies(config: dict) -> None:
    sim, policy = config["simulation_frequency"], config["policy_frequency"]
    if policy <= 0 or sim % policy != 0:
        raise ValueError(
            f"simulation_frequency ({sim}) must be a positive multiple "
            f"of policy_frequency ({policy})"
        )


def make_env(env_id: str = "highway-fast-v0", env_config: dict | None = None, render: bool = False):
    """A recording highway-env environment with DiscreteMetaAction (0 LANE_LEFT .. 4 SLOWER).

    env_config: overrides of the env's default config (lanes_count, vehicles_count,
    vehicles_density, duration, simulation_frequency, policy_frequency, ...).
    render: create it with render_mode="rgb_array".
    Returns a RecordingEnv; ``env.unwrapped`` is the highway-env AbstractEnv.
    """
    check_env_id(env_id)
    config = dict(env_config or {})
    check_env_config(env_id, config)
    config["action"] = {**dict(config.get("action", {})), "type": "DiscreteMetaAction"}
    env = gym.make(
        env_id,
        config=config,
        render_mode="rgb_array" if render else None,
        disable_env_checker=True,
    )
    check_frequencies(env.unwrapped.config)
    if not isinstance(env.unwrapped.action_type, DiscreteMetaAction):
        raise ValueError(f"{env_id} did not take a DiscreteMetaAction action type")
    return RecordingEnv(env)


# ---------------------------------------------------------------- persistent ids


def assign_ids(core) -> None:
    """At reset: ego gets id 0, the others 1.. in road order; the counter lives on the road."""
    setattr(core.road, NEXT_ID_ATTR, 0)
    ego = core.vehicle
    if ego is not None:
        setattr(ego, ID_ATTR, None)
    for vehicle in core.road.vehicles:
        setattr(vehicle, ID_ATTR, None)
    tag_new_vehicles(core.road, first=ego)


def tag_new_vehicles(road, first=None) -> None:
    """Give the next free ids to vehicles without one (``first`` before the others)."""
    next_id = getattr(road, NEXT_ID_ATTR, 0)
    ordered = ([first] if first is not None else []) + list(road.vehicles)
    for vehicle in ordered:
        if getattr(vehicle, ID_ATTR, None) is None:
            setattr(vehicle, ID_ATTR, next_id)
            next_id += 1
    setattr(road, NEXT_ID_ATTR, next_id)


def vehicle_id(vehicle) -> int:
    """The persistent id of a vehicle (raises AttributeError for an untagged one)."""
    return getattr(vehicle, ID_ATTR)


def snapshot(core, frame: int) -> np.ndarray:
    """All vehicles of the road at this frame as rows of ROW_COLUMNS, shape (N, 12) float64."""
    ego = core.vehicle
    rows = []
    for v in core.road.vehicles:
        velocity = v.velocity
        lane = v.lane_index[2] if v.lane_index is not None else -1
        rows.append((
            frame, vehicle_id(v), v is ego, v.position[0], v.position[1], velocity[0],
            velocity[1], wrap_to_pi(v.heading), v.LENGTH, v.WIDTH, lane, v.crashed,
        ))  # fmt: skip
    return np.asarray(rows, dtype=np.float64).reshape(-1, len(ROW_COLUMNS))  # (N, 12)


# ---------------------------------------------------------------- recording wrapper


class RecordingEnv(gym.Wrapper):
    """Records every simulation frame of every vehicle; see the module docstring.

    ``frame_log`` is a list of (N_t, 12) arrays, one per frame since the last reset;
    ``frame_index`` is the index of the latest recorded frame.
    """

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.frame_log: list[np.ndarray] = []
        self.frame_index = 0

    @property
    def simulation_frequency(self) -> int:
        return int(self.env.unwrapped.config["simulation_frequency"])

    @property
    def policy_frequency(self) -> int:
        return int(self.env.unwrapped.config["policy_frequency"])

    @property
    def frames_per_step(self) -> int:
        return self.simulation_frequency // self.policy_frequency

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        assign_ids(self.env.unwrapped)
        self.frame_index = 0
        self.frame_log = [snapshot(self.env.unwrapped, 0)]
        return obs, info

    def step(self, action):
        road = self.env.unwrapped.road
        road.step = self.recording_step(road)
        try:
            result = self.env.step(action)
        finally:
            del road.step  # back to Road.step; nothing of ours stays on the road
        tag_new_vehicles(self.env.unwrapped.road)
        return result

    def recording_step(self, road):
        """A stand-in for ``road.step`` that records the road after each frame."""
        core, original_step = self.env.unwrapped, type(road).step

        def step(dt: float) -> None:
            original_step(road, dt)
            tag_new_vehicles(road)
            self.frame_index += 1
            self.frame_log.append(snapshot(core, self.frame_index))

        return step

    def frames_table(self, episode: int) -> dict[str, np.ndarray]:
        """The frames recorded since reset as FRAME_COLUMNS arrays (rows sorted by frame, id)."""
        rows = np.concatenate(self.frame_log, axis=0)  # (R, 12)
        rows = rows[np.lexsort((rows[:, 1], rows[:, 0]))]
        table = {name: rows[:, i] for i, name in enumerate(ROW_COLUMNS)}
        table["episode"] = np.full(len(rows), episode)
        table["time"] = table["frame"] / self.simulation_frequency
        return {name: table[name].astype(numpy_dtype(kind)) for name, kind in FRAME_COLUMNS.items()}


# ---------------------------------------------------------------- episodes


def policy_rng(seed: int) -> np.random.Generator:
    """The policy's random stream for an episode seed (independent of the env's stream)."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1,)))


def check_action(action, policy) -> int:
    if not (isinstance(action, int | np.integer) and 0 <= action < len(ACTION_NAMES)):
        raise ValueError(f"policy {policy_name(policy)} returned {action!r}, not an action in 0..4")
    return int(action)


def policy_name(policy) -> str:
    return str(getattr(policy, "name", type(policy).__name__))


def record_episode(
    env: RecordingEnv, policy, seed: int, episode: int, max_steps: int | None = None
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Run one episode and return (frames, steps) column arrays in the dataset schema.

    env: from ``make_env``. policy: has ``reset(rng)`` and ``act(env) -> int`` (see
    evaluation.policies). seed: env reset seed; the policy gets ``policy_rng(seed)``.
    max_steps: stop after this many decisions (the last one is then marked truncated).
    frames: R_f = sum over frames of N_t rows; steps: one row per decision.
    """
    if not isinstance(env, RecordingEnv):
        raise ValueError(f"record_episode needs an env from make_env, got {type(env).__name__}")
    env.reset(seed=int(seed))
    policy.reset(policy_rng(int(seed)))
    rows = record_steps(env, policy, max_steps)
    return env.frames_table(episode), steps_table(rows, episode, policy_name(policy))


def record_steps(env: RecordingEnv, policy, max_steps: int | None) -> list[tuple]:
    """`record_step` rows until the episode ends or `max_steps` decisions are taken (the
    last one is then marked truncated)."""
    rows = []
    while max_steps is None or len(rows) < max_steps:
        row = record_step(env, policy, len(rows))
        rows.append(row)
        if row[-2] or row[-1]:
            break
    if rows and max_steps is not None and len(rows) == max_steps:
        rows[-1] = (*rows[-1][:-1], True)
    return rows


def record_step(env: RecordingEnv, policy, step: int) -> tuple:
    """One decision: (step, first_frame, action, reward, collision, terminated, truncated)."""
    core = env.unwrapped
    crashed_before, first_frame = bool(core.vehicle.crashed), env.frame_index
    action = check_action(policy.act(env), policy)
    _, reward, terminated, truncated, _ = env.step(action)
    collision = bool(core.vehicle.crashed) and not crashed_before
    return step, first_frame, action, float(reward), collision, bool(terminated), bool(truncated)


def steps_table(rows: list[tuple], episode: int, policy: str) -> dict[str, np.ndarray]:
    names = ("step", "first_frame", "action", "reward", "collision", "terminated", "truncated")
    columns = {name: np.asarray([row[i] for row in rows]) for i, name in enumerate(names)}
    columns["episode"] = np.full(len(rows), episode)
    columns["policy"] = np.full(len(rows), policy, dtype=object)
    return {name: columns[name].astype(numpy_dtype(kind)) for name, kind in STEP_COLUMNS.items()}


# ---------------------------------------------------------------- counterfactual branches


class ScriptedActions:
    """Policy protocol over a fixed action sequence (the branch's)."""

    name = BRANCH_POLICY

    def __init__(self, actions) -> None:
        self.actions = iter(int(a) for a in actions)

    def reset(self, rng=None) -> None:
        pass

    def act(self, env) -> int:
        return next(self.actions)


def detached_copy(env: RecordingEnv, keep_frames: int) -> RecordingEnv:
    """A deep copy of `env` (simulator state, ids, frame counter) holding only its last
    `keep_frames` recorded frames; `env` itself is left as it was."""
    log = env.frame_log
    env.frame_log = log[-keep_frames:]  # the copy need not carry the whole episode
    try:
        return copy.deepcopy(env)
    finally:
        env.frame_log = log


def record_branch(env: RecordingEnv, actions, history: int,
                  episode: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Drive `actions` open loop on a copy of `env` from its current state: (frames, steps)
    of episode `episode` in the dataset schema, policy BRANCH_POLICY.

    frames: the last `history` + 1 recorded frames (the history windows need), then the
    branch's. The branch ends early at a crash or the end of the episode; a branch that
    runs all its actions has its last step marked truncated, as ``record_episode`` marks
    `max_steps` (the road goes on, the recording stops).
    """
    if not isinstance(env, RecordingEnv):
        raise ValueError(f"record_branch needs an env from make_env, got {type(env).__name__}")
    if len(actions) == 0:
        raise ValueError("record_branch needs at least one action")
    twin = detached_copy(env, history + 1)
    rows = record_steps(twin, ScriptedActions(actions), max_steps=len(actions))
    return twin.frames_table(episode), steps_table(rows, episode, BRANCH_POLICY)
