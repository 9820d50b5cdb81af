"""EnvPool's native highway as a data source: many episodes stepped in one process.

EnvPool (``envpool`` 1.2.5) ports highway-env's highway scenarios to C++ and steps a
batch of environments per call. This module runs a batch of planned episodes on it and
records them in the dataset schema that ``pipeline.highway_source`` writes:

- frames: one EnvPool step is one simulation frame (its ``policy_frequency`` is set to the
  simulation frequency); a decision's meta-action is played on its first frame and IDLE
  on the other F - 1, which reproduces highway-env's decision step exactly (target speed
  and lane, see tests/pipeline/test_envpool_source.py);
- ids: ``debug_states()`` lists an environment's vehicles in a fixed order (the ego
  first) for the whole episode, so the list index is the persistent vehicle id;
- episodes: each episode gets an environment of its own seeded with its own seed
  (``env_seed``), so an episode's data depends on its seed alone, not on the batch it
  ran in or the thread count. An environment that ends is not reset: the rest of its
  batch runs on while it idles.

Differences from highway-env (measured in ``drivecast bench backend``): a crash ends
the episode on the crash frame (highway-env finishes the decision's frames); every
vehicle is 5 m x 2 m (EnvPool reports no sizes; highway-env's defaults); the same seed
gives another scene than highway-env's.
"""

from __future__ import annotations

import importlib.util
import operator
import sys
import types
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from evaluation.batch_policies import BatchPolicy, Scenes
from models.candidates import IDLE
from pipeline.dataset import FRAME_COLUMNS, numpy_dtype
from pipeline.highway_source import check_env_values

# highway-env id -> EnvPool task id (the scenarios whose vehicles debug_states() lists).
ENVPOOL_IDS = {"highway-v0": "Highway-v0", "highway-fast-v0": "HighwayFast-v0"}
# highway-env config key -> EnvPool setting of the same meaning.
CONFIG_KEYS = {
    key: key
    for key in (
        "lanes_count", "vehicles_count", "vehicles_density", "duration",
        "simulation_frequency", "policy_frequency", "ego_spacing", "collision_reward",
        "right_lane_reward", "high_speed_reward", "lane_change_reward", "normalize_reward",
        "offroad_terminal", "initial_lane_id",
    )
}  # fmt: skip
VEHICLE_LENGTH, VEHICLE_WIDTH = 5.0, 2.0  # highway-env's default vehicle box [m]
INSTALL_HINT = "pip install --no-deps envpool==1.2.5 && pip install dm-env optree (make does)"


def load_registry():
    """EnvPool's registry with only its highway tasks registered.

    ``import envpool`` registers every EnvPool family and fails without their asset
    packages (about 750 MB of MuJoCo, Atari and ViZDoom data the highway scenarios do not
    use); importing the package's registry and highway modules alone needs none of them.
    """
    if "envpool.highway.registration" in sys.modules:
        return sys.modules["envpool.registration"].registry
    spec = importlib.util.find_spec("envpool")
    if spec is None or spec.submodule_search_locations is None:
        raise ValueError(f"backend 'envpool' needs the envpool package: {INSTALL_HINT}")
    if "envpool" not in sys.modules:
        package = types.ModuleType("envpool")
        package.__path__ = list(spec.submodule_search_locations)
        package.__spec__ = spec
        sys.modules["envpool"] = package
    try:
        import envpool.highway.registration  # noqa: F401  (registers the highway tasks)
        from envpool.registration import registry
    except ImportError as error:
        raise ValueError(
            f"backend 'envpool' could not load EnvPool ({error}): {INSTALL_HINT}") from None
    return registry


def envpool_runs(env_id: str, env_config: dict) -> bool:
    """Whether EnvPool has the scenario `env_id` and takes every key of `env_config`."""
    return env_id in ENVPOOL_IDS and set(env_config) <= {*CONFIG_KEYS, "reward_speed_range"}


def envpool_id(env_id: str) -> str:
    if env_id not in ENVPOOL_IDS:
        raise ValueError(f"env id '{env_id}' has no EnvPool counterpart; backend 'envpool' "
                         f"runs {', '.join(sorted(ENVPOOL_IDS))} (use backend 'highway-env')")
    return ENVPOOL_IDS[env_id]


def envpool_settings(env_config: dict) -> dict:
    """highway-env config overrides as EnvPool settings; refuses what EnvPool cannot take."""
    check_env_values(env_config)
    settings = {}
    for key, value in env_config.items():
        if key == "reward_speed_range":
            settings["reward_speed_low"], settings["reward_speed_high"] = map(float, value)
        elif key == "initial_lane_id":
            settings[key] = -1 if value is None else int(value)
        elif key in CONFIG_KEYS:
            settings[CONFIG_KEYS[key]] = value
        else:
            known = ", ".join(sorted([*CONFIG_KEYS, "reward_speed_range"]))
            raise ValueError(f"env_config key '{key}' has no EnvPool counterpart; backend "
                             f"'envpool' takes {known}")
    return settings


class EnvpoolSource:
    """One EnvPool highway task with highway-env's config overrides applied.

    frequencies: simulation_frequency and policy_frequency of the decision step (as
    highway-env reads them); ``frames_per_step`` = F frames per decision.
    """

    def __init__(self, env_id: str, env_config: dict | None = None) -> None:
        self.registry = load_registry()
        self.env_id, self.env_config = env_id, dict(env_config or {})
        self.task = envpool_id(env_id)
        self.settings = envpool_settings(self.env_config)
        defaults = self.registry.make_spec(self.task).config  # namedtuple-like, per task
        self.simulation_frequency = int(self.settings.get(
            "simulation_frequency", defaults.simulation_frequency))
        self.policy_frequency = int(self.settings.get(
            "policy_frequency", defaults.policy_frequency))
        self.duration = float(self.settings.get("duration", defaults.duration))
        if self.policy_frequency <= 0 or self.simulation_frequency % self.policy_frequency:
            raise ValueError(f"simulation_frequency ({self.simulation_frequency}) must be a "
                             f"positive multiple of policy_frequency ({self.policy_frequency})")

    @property
    def frames_per_step(self) -> int:
        return self.simulation_frequency // self.policy_frequency

    @property
    def max_frames(self) -> int:
        """Frames of an episode that runs to its time limit."""
        return int(round(self.duration * self.policy_frequency)) * self.frames_per_step

    def make(self, seeds: Sequence[int]):
        """A pool of len(seeds) environments, environment i seeded with seeds[i], stepping
        one simulation frame per step, on one thread (a process steps one batch at a time;
        parallel collection runs processes)."""
        settings = {**self.settings, "policy_frequency": self.simulation_frequency}
        return self.registry.make(
            self.task, env_type="gymnasium", num_envs=len(seeds),
            env_seed=[int(s) for s in seeds], seed=0,
            num_threads=1,
            max_episode_steps=self.max_frames, **settings,
        )

    def lanes_count(self, pool) -> int:
        return int(pool.config["lanes_count"])


# ---------------------------------------------------------------- reading states

STATE_FIELDS = ("x", "y", "speed", "heading", "lane_index", "crashed")
read_vehicle = operator.attrgetter(*STATE_FIELDS)


@dataclass(frozen=True)
class Snapshot:
    """Every vehicle of some environments at one frame.

    env_ids: (E,) the environments; counts: (E,) their vehicle counts; rows: (sum counts,
    6) float64 of STATE_FIELDS, environment by environment, each in list order (ego first).
    """

    env_ids: np.ndarray
    counts: np.ndarray
    rows: np.ndarray

    def starts(self) -> np.ndarray:
        return np.cumsum(self.counts) - self.counts

    def ego_rows(self) -> np.ndarray:
        return self.rows[self.starts()]

    def keep(self, env_ids: np.ndarray) -> Snapshot:
        """The snapshot of a subset of its environments."""
        chosen = np.isin(self.env_ids, env_ids)
        return Snapshot(self.env_ids[chosen], self.counts[chosen],
                        self.rows[np.repeat(chosen, self.counts)])


def target_lanes(pool, env_ids: np.ndarray) -> np.ndarray:
    """(E,) the ego's target lane index in each listed environment."""
    return np.array([s.vehicles[0].target_lane_index for s in pool.debug_states(env_ids)],
                    dtype=np.int64)


def read_snapshot(pool, env_ids: np.ndarray) -> Snapshot:
    states = pool.debug_states(env_ids)
    counts = np.array([len(state.vehicles) for state in states], dtype=np.int64)
    rows = np.array([read_vehicle(v) for state in states for v in state.vehicles],
                    dtype=np.float64).reshape(-1, len(STATE_FIELDS))
    return Snapshot(np.asarray(env_ids, dtype=np.int64), counts, rows)


def frame_rows(snapshot: Snapshot, frame: int) -> np.ndarray:
    """The snapshot as (R, 12) rows of highway_source.ROW_COLUMNS."""
    count = len(snapshot.rows)
    vehicle = np.arange(count) - np.repeat(snapshot.starts(), snapshot.counts)
    x, y, speed, heading, lane, crashed = snapshot.rows.T
    return np.column_stack([
        np.full(count, frame), vehicle, vehicle == 0, x, y,
        speed * np.cos(heading), speed * np.sin(heading), heading,
        np.full(count, VEHICLE_LENGTH), np.full(count, VEHICLE_WIDTH), lane, crashed,
    ])  # fmt: skip


def scenes_of(snapshot: Snapshot, targets: np.ndarray, lanes: int) -> Scenes:
    """What the behaviour policies read, padded to the largest vehicle count."""
    envs, width = len(snapshot.counts), int(snapshot.counts.max())
    slot = np.arange(len(snapshot.rows)) - np.repeat(snapshot.starts(), snapshot.counts)
    padded = np.zeros((envs, width, len(STATE_FIELDS)))
    present = np.zeros((envs, width), dtype=bool)
    owner = np.repeat(np.arange(envs), snapshot.counts)
    padded[owner, slot], present[owner, slot] = snapshot.rows, True
    return Scenes(x=padded[..., 0], y=padded[..., 1], speed=padded[..., 2], present=present,
                  target_lane=targets, lanes=lanes)


# ---------------------------------------------------------------- recording a batch


class BatchRecorder:
    """Frame rows (tagged with their environment) and decision rows while a batch runs."""

    def __init__(self, count: int) -> None:
        self.blocks: list[tuple[np.ndarray, np.ndarray]] = []
        self.steps: list[list[list]] = [[] for _ in range(count)]

    def add_frame(self, snapshot: Snapshot, frame: int) -> None:
        self.blocks.append((np.repeat(snapshot.env_ids, snapshot.counts),
                            frame_rows(snapshot, frame)))

    def frames_by_env(self) -> list[np.ndarray]:
        """Each environment's frame rows, in frame order."""
        owner = np.concatenate([owner for owner, _ in self.blocks])
        rows = np.concatenate([rows for _, rows in self.blocks])
        order = np.argsort(owner, kind="stable")
        bounds = np.searchsorted(owner[order], np.arange(len(self.steps) + 1))
        return [rows[order[a:b]] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]

    def open_steps(self, env_ids: np.ndarray, actions: np.ndarray, frame: int) -> None:
        for i, action in zip(env_ids, actions, strict=True):
            # step, first_frame, action, reward, collision, terminated, truncated
            self.steps[i].append([len(self.steps[i]), frame, int(action), 0.0, False, False,
                                  False])

    def close_step(self, i: int, reward: float, crashed: bool, terminated: bool,
                   truncated: bool) -> None:
        row = self.steps[i][-1]
        row[3], row[4] = float(reward), bool(crashed)
        row[5], row[6] = bool(terminated), bool(truncated)


def run_batch(source: EnvpoolSource, seeds: Sequence[int], policy: BatchPolicy,
              max_steps: int | None = None) -> BatchRecorder:
    """Run one episode per seed to its end (crash or time limit) or `max_steps` decisions.
    A `policy` with ``observe(snapshot, frame)`` (a BatchPlanner) sees every frame."""
    pool, count = source.make(seeds), len(seeds)
    pool.reset()
    lanes, per_step = source.lanes_count(pool), source.frames_per_step
    recorder = BatchRecorder(count)
    observe = getattr(policy, "observe", lambda snapshot, frame: None)
    snapshot = read_snapshot(pool, np.arange(count))
    recorder.add_frame(snapshot, 0)
    observe(snapshot, 0)
    frame = 0
    while len(snapshot.env_ids):
        actions = np.full(count, IDLE, dtype=np.int32)
        if frame % per_step == 0:
            targets = target_lanes(pool, snapshot.env_ids)
            chosen = policy.act(snapshot.env_ids, scenes_of(snapshot, targets, lanes))
            actions[snapshot.env_ids] = chosen
            recorder.open_steps(snapshot.env_ids, chosen, frame)
        _, reward, terminated, truncated, _ = pool.step(actions)
        frame += 1
        snapshot = read_snapshot(pool, snapshot.env_ids)
        recorder.add_frame(snapshot, frame)
        observe(snapshot, frame)
        running = finish_frame(recorder, snapshot, reward, terminated, truncated,
                               frame % per_step == 0, max_steps)
        snapshot = snapshot.keep(running)
    return recorder


def finish_frame(recorder: BatchRecorder, snapshot: Snapshot, reward, terminated, truncated,
                 decision_done: bool, max_steps: int | None) -> np.ndarray:
    """Record the frame's outcome on each environment's open decision; the environments
    still running."""
    still = []
    for i, crashed in zip(snapshot.env_ids, snapshot.ego_rows()[:, 5], strict=True):
        ended = bool(terminated[i] or truncated[i])
        capped = (decision_done and max_steps is not None
                  and len(recorder.steps[i]) >= max_steps and not ended)
        if decision_done or ended:
            recorder.close_step(i, reward[i], bool(crashed), terminated[i],
                                truncated[i] or capped)
        if not (ended or capped):
            still.append(i)
    return np.asarray(still, dtype=np.int64)


def episode_tables(recorder: BatchRecorder, rows: np.ndarray, i: int, episode: int,
                   policy: str, simulation_frequency: int) -> tuple[dict, dict]:
    """Environment i's episode (its frame `rows` from `frames_by_env`) as (frames, steps)
    column arrays of the dataset schema."""
    from pipeline.highway_source import ROW_COLUMNS, steps_table

    table = {name: rows[:, k] for k, name in enumerate(ROW_COLUMNS)}
    table["episode"] = np.full(len(rows), episode)
    table["time"] = table["frame"] / simulation_frequency
    frames = {name: table[name].astype(numpy_dtype(kind)) for name, kind in FRAME_COLUMNS.items()}
    rows = mark_collisions(recorder.steps[i])
    return frames, steps_table([tuple(r) for r in rows], episode, policy)


def mark_collisions(rows: list[list]) -> list[list]:
    """The collision column holds the crash flag after each decision; keep it only on the
    decision in which the ego crashed."""
    crashed_before = False
    for row in rows:
        crashed_now = row[4]
        row[4] = crashed_now and not crashed_before
        crashed_before = crashed_now
    return rows


def batches(count: int, size: int) -> list[range]:
    """Consecutive index ranges of at most `size` covering 0..count-1."""
    return [range(start, min(start + size, count)) for start in range(0, count, size)]
