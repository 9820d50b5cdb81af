"""Behaviour policies for data collection, also used as baselines.

Every policy subclasses `Policy` (the contract: a ``name``, ``reset(rng)`` and
``act(env) -> int``; see its docstring). ``env`` may be the gymnasium env (wrapped, e.g. a
RecordingEnv) or its ``unwrapped`` highway-env AbstractEnv: these policies only read
``env.unwrapped`` (the TRUE simulator state: road, vehicles, lanes) and never step or
modify it.
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass

import numpy as np

from models.candidates import (
    ACTION_NAMES,
    FASTER,
    IDLE,
    LANE_LEFT,
    LANE_RIGHT,
    SLOWER,
    on_road_mask,
)

NUM_ACTIONS = len(ACTION_NAMES)


class Policy(abc.ABC):
    """The behaviour-policy contract: what drives the ego in data collection, evaluation
    and as a baseline.

    name: a short label (str) for tables and file names.
    reset(rng): called at the start of every episode with a seed, an
    ``np.random.Generator`` or None; a policy that draws random numbers draws them from a
    generator set here only, so an episode is reproducible from its seed.
    act(env) -> int: the next DiscreteMetaAction (0 LANE_LEFT, 1 IDLE, 2 LANE_RIGHT,
    3 FASTER, 4 SLOWER) for the simulator `env` (gymnasium env or its ``unwrapped``); it
    may read the env but never steps or modifies it.
    """

    name: str

    @abc.abstractmethod
    def reset(self, rng: np.random.Generator | int | None = None) -> None:
        """Start an episode; `rng` seeds any randomness of the policy."""

    @abc.abstractmethod
    def act(self, env) -> int:
        """The next meta-action id for the current state of `env`."""


def as_generator(rng: np.random.Generator | int | None) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


class ConstantPolicy(Policy):
    """The same meta-action at every decision."""

    action = IDLE

    def reset(self, rng=None) -> None:
        pass

    def act(self, env) -> int:
        return self.action


class IdlePolicy(ConstantPolicy):
    """Always IDLE: keeps the lane and the initial target speed."""

    name, action = "idle", IDLE


class FasterPolicy(ConstantPolicy):
    """Always FASTER: keeps the lane and raises the target speed to the top."""

    name, action = "faster", FASTER


class RandomPolicy(Policy):
    """Uniformly random meta-action from its own generator."""

    name = "random"

    def __init__(self) -> None:
        self.rng = np.random.default_rng(0)

    def reset(self, rng=None) -> None:
        self.rng = as_generator(rng)

    def act(self, env) -> int:
        return int(self.rng.integers(NUM_ACTIONS))


@dataclass(frozen=True)
class LaneView:
    """What the ego sees in one lane: bumper-to-bumper gaps [m] and times to collision [s].

    front_ttc: gap / (ego speed - front speed) when closing, else inf.
    rear_ttc: gap / (rear speed - ego speed) when the rear vehicle is closing, else inf.
    rear_speed: speed of the rear vehicle [m/s] (0 when there is none).
    """

    front_gap: float
    front_ttc: float
    rear_gap: float
    rear_ttc: float
    rear_speed: float


def time_to_collision(gap: float, closing_speed: float) -> float:
    return gap / closing_speed if closing_speed > 1e-6 else math.inf


def lane_view(ego, lane_index) -> LaneView:
    """Gaps and TTCs to the nearest vehicles ahead and behind the ego, projected on a lane."""
    road = ego.road
    lane = road.network.get_lane(lane_index)
    front, rear = road.neighbour_vehicles(ego, lane_index)
    s_ego = lane.local_coordinates(ego.position)[0]
    front_gap = front_ttc = rear_gap = rear_ttc = math.inf
    rear_speed = 0.0
    if front is not None:
        s_front = lane.local_coordinates(front.position)[0]
        front_gap = s_front - s_ego - (ego.LENGTH + front.LENGTH) / 2
        front_ttc = time_to_collision(front_gap, ego.speed - front.speed)
    if rear is not None:
        s_rear = lane.local_coordinates(rear.position)[0]
        rear_gap = s_ego - s_rear - (ego.LENGTH + rear.LENGTH) / 2
        rear_ttc = time_to_collision(rear_gap, rear.speed - ego.speed)
        rear_speed = rear.speed
    return LaneView(front_gap, front_ttc, rear_gap, rear_ttc, rear_speed)


class RuleBasedPolicy(Policy):
    """Time-to-collision aware lane keeper (acts on the true simulator state).

    Each decision looks at the ego's target lane (where it is heading):
    - danger ahead: front gap < ``headway`` * ego speed or front TTC < ``ttc_threshold``;
    - free ahead: no danger, front gap > ``free_gap`` and front TTC > ``free_ttc`` -> FASTER;
    - otherwise (danger, or blocked by a slower vehicle) change to an adjacent lane that
      exists on this road and is safe to enter: no danger ahead in it by the rule above, rear
      gap > max(``rear_gap``, ``rear_headway`` * rear speed), rear TTC >
      ``rear_ttc_threshold``, and a front gap larger than the current one (by
      ``overtake_gain`` when merely blocked); the largest front gap wins. No new lane change
      while one is in progress. No lane -> SLOWER in danger, else IDLE.

    Units: headway, rear_headway, ttc_threshold, rear_ttc_threshold, free_ttc [s];
    rear_gap, free_gap, overtake_gain [m]. Gaps are bumper to bumper along the lane.
    Defaults were tuned on highway-fast-v0 (seeds 1000-1049): ~2% collisions.
    """

    name = "rule"

    def __init__(
        self,
        ttc_threshold: float = 5.0,
        headway: float = 1.0,
        rear_ttc_threshold: float = 4.0,
        rear_gap: float = 8.0,
        rear_headway: float = 0.6,
        free_gap: float = 40.0,
        free_ttc: float = 8.0,
        overtake_gain: float = 15.0,
    ) -> None:
        self.ttc_threshold, self.headway = ttc_threshold, headway
        self.rear_ttc_threshold, self.rear_gap = rear_ttc_threshold, rear_gap
        self.rear_headway = rear_headway
        self.free_gap, self.free_ttc = free_gap, free_ttc
        self.overtake_gain = overtake_gain

    def reset(self, rng=None) -> None:
        pass

    def danger_ahead(self, view: LaneView, speed: float) -> bool:
        return view.front_gap < self.headway * speed or view.front_ttc < self.ttc_threshold

    def safe_to_enter(self, view: LaneView, speed: float) -> bool:
        rear_needed = max(self.rear_gap, self.rear_headway * view.rear_speed)
        return (
            not self.danger_ahead(view, speed)
            and view.rear_gap > rear_needed
            and view.rear_ttc > self.rear_ttc_threshold
        )

    def act(self, env) -> int:
        ego = env.unwrapped.vehicle
        current = lane_view(ego, ego.target_lane_index)
        danger = self.danger_ahead(current, ego.speed)
        if not danger and current.front_gap > self.free_gap and current.front_ttc > self.free_ttc:
            return FASTER
        # Blocked or in danger: look for a better adjacent lane (in danger any gain will do).
        needed_gap = current.front_gap + (0.0 if danger else self.overtake_gain)
        target = None if lane_change_in_progress(ego) else self.best_side_lane(ego, needed_gap)
        if target is not None:
            return LANE_LEFT if target[2] < ego.target_lane_index[2] else LANE_RIGHT
        return SLOWER if danger else IDLE

    def best_side_lane(self, ego, needed_gap: float):
        """The reachable adjacent lane with the largest safe front gap above needed_gap, or None."""
        best, best_gap = None, needed_gap
        for lane_index in side_lanes(ego):
            view = lane_view(ego, lane_index)
            if self.safe_to_enter(view, ego.speed) and view.front_gap > best_gap:
                best, best_gap = lane_index, view.front_gap
        return best


def lane_change_in_progress(ego, tolerance: float = 1.0) -> bool:
    """Whether the ego is still more than ``tolerance`` m off its target lane's centre line."""
    target = ego.road.network.get_lane(ego.target_lane_index)
    return abs(target.local_coordinates(ego.position)[1]) > tolerance


def lanes_count(env) -> int:
    """Lanes of a highway-env road (2 when its config does not say)."""
    return int(env.unwrapped.config.get("lanes_count", 2))


def road_candidates(env, candidates: np.ndarray) -> np.ndarray:
    """The candidate sequences (K, F) whose lane changes keep the ego on the road, starting
    from its target lane (all of them if none does): what the planner and the oracle score."""
    return np.asarray(candidates)[road_mask(env, candidates)]


def road_mask(env, candidates: np.ndarray) -> np.ndarray:
    """(K,) bool: the rows of `candidates` that `road_candidates` keeps."""
    lane = int(env.unwrapped.vehicle.target_lane_index[2])
    return road_mask_at(candidates, lane, lanes_count(env))


def road_mask_at(candidates: np.ndarray, lane: int, lanes: int) -> np.ndarray:
    """`road_mask` for an ego whose target lane is `lane` on a road of `lanes` lanes."""
    kept = on_road_mask(candidates, min(max(lane, 0), lanes - 1), lanes)
    return kept if kept.any() else np.ones_like(kept)


def side_lanes(ego) -> list:
    """Adjacent lanes of the ego's target lane that exist on this road and are reachable."""
    network = ego.road.network
    return [
        index
        for index in network.side_lanes(ego.target_lane_index)
        if network.get_lane(index).is_reachable_from(ego.position)
    ]


class MixturePolicy(Policy):
    """``base`` with probability 1 - epsilon, a uniformly random action with probability epsilon."""

    def __init__(self, base: Policy, epsilon: float) -> None:
        if not 0.0 <= epsilon <= 1.0:
            raise ValueError(f"epsilon must be in [0, 1], got {epsilon}")
        self.base, self.epsilon = base, float(epsilon)
        self.name = f"{base.name}+eps{self.epsilon:g}"
        self.rng = np.random.default_rng(0)

    def reset(self, rng=None) -> None:
        self.rng = as_generator(rng)
        self.base.reset(self.rng.spawn(1)[0])

    def act(self, env) -> int:
        # Always draw both numbers so the random stream does not depend on the branch taken.
        explore, random_action = self.rng.random(), int(self.rng.integers(NUM_ACTIONS))
        base_action = self.base.act(env)
        return random_action if explore < self.epsilon else base_action


POLICIES = {"idle": IdlePolicy, "faster": FasterPolicy, "random": RandomPolicy,
            "rule": RuleBasedPolicy}


def make_policy(name: str, epsilon: float = 0.0) -> Policy:
    """Policy by name (``idle``, ``faster``, ``random``, ``rule``), mixed with
    epsilon-random actions if > 0."""
    if name not in POLICIES:
        raise ValueError(f"unknown policy '{name}'; choose one of {sorted(POLICIES)}")
    base = POLICIES[name]()
    return MixturePolicy(base, epsilon) if epsilon > 0 else base
