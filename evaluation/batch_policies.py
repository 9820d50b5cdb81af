"""The behaviour policies over many scenes at once, for simulators that step a batch.

`Scenes` holds E scenes of a straight multi-lane road as arrays (vehicle 0 is the ego).
`rule_actions` is `RuleBasedPolicy`'s decision computed for all scenes with numpy: the
same gaps, times to collision and lane choice, for lanes along x spaced LANE_WIDTH apart
with lane i centred at y = i * LANE_WIDTH (highway-env's straight road; a test checks the
two agree action for action on highway-env scenes). `BatchPolicy` gives every scene its
own policy from `make_policy` and draws random numbers exactly as that policy would, so a
mixture episode's random stream depends on its seed alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from evaluation.policies import (
    NUM_ACTIONS,
    ConstantPolicy,
    MixturePolicy,
    Policy,
    RandomPolicy,
    RuleBasedPolicy,
)
from models.candidates import FASTER, IDLE, LANE_LEFT, LANE_RIGHT, SLOWER

LANE_WIDTH = 4.0  # [m] highway-env's StraightLane default
ON_LANE_MARGIN = 1.0  # [m] highway-env's neighbour search counts a vehicle this far outside
LANE_CHANGE_TOLERANCE = 1.0  # [m] off the target lane's centre line = lane change in progress


@dataclass(frozen=True)
class Scenes:
    """E scenes with up to V vehicles each; vehicle 0 is the ego.

    x, y [m], speed [m/s]: (E, V); present: (E, V) bool (False pads a shorter scene);
    length: (E, V) [m] or None for highway-env's 5 m; target_lane: (E,) the ego's target
    lane index; lanes: the road's lane count.
    """

    x: np.ndarray
    y: np.ndarray
    speed: np.ndarray
    present: np.ndarray
    target_lane: np.ndarray
    lanes: int
    length: np.ndarray | None = None

    def lengths(self) -> np.ndarray:
        return np.full_like(self.x, 5.0) if self.length is None else self.length


@dataclass(frozen=True)
class LaneViews:
    """Per scene, what the ego sees in one lane (RuleBasedPolicy's LaneView, as arrays)."""

    front_gap: np.ndarray
    front_ttc: np.ndarray
    rear_gap: np.ndarray
    rear_ttc: np.ndarray
    rear_speed: np.ndarray


def time_to_collision(gap: np.ndarray, closing: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(closing > 1e-6, gap / np.where(closing > 1e-6, closing, 1.0), np.inf)


def lane_views(scenes: Scenes, lane: np.ndarray) -> LaneViews:
    """Gaps and TTCs to the nearest vehicle ahead and behind the ego in lane `lane` (E,)."""
    others = scenes.present.copy()
    others[:, 0] = False
    centre = lane[:, None] * LANE_WIDTH
    on_lane = others & (np.abs(scenes.y - centre) <= LANE_WIDTH / 2 + ON_LANE_MARGIN)
    ahead = scenes.x - scenes.x[:, :1]  # (E, V) longitudinal offset from the ego
    rows = np.arange(len(lane))
    lengths, speed = scenes.lengths(), scenes.speed
    front_mask, rear_mask = on_lane & (ahead >= 0), on_lane & (ahead < 0)
    front = np.argmin(np.where(front_mask, ahead, np.inf), axis=1)
    rear = np.argmax(np.where(rear_mask, ahead, -np.inf), axis=1)
    has_front, has_rear = front_mask[rows, front], rear_mask[rows, rear]
    half = lengths[:, 0] / 2
    front_gap = np.where(has_front, ahead[rows, front] - half - lengths[rows, front] / 2, np.inf)
    rear_gap = np.where(has_rear, -ahead[rows, rear] - half - lengths[rows, rear] / 2, np.inf)
    front_ttc = np.where(has_front, time_to_collision(front_gap, speed[:, 0] - speed[rows, front]),
                         np.inf)
    rear_ttc = np.where(has_rear, time_to_collision(rear_gap, speed[rows, rear] - speed[:, 0]),
                        np.inf)
    rear_speed = np.where(has_rear, speed[rows, rear], 0.0)
    return LaneViews(front_gap, front_ttc, rear_gap, rear_ttc, rear_speed)


def danger_ahead(rule: RuleBasedPolicy, view: LaneViews, speed: np.ndarray) -> np.ndarray:
    return (view.front_gap < rule.headway * speed) | (view.front_ttc < rule.ttc_threshold)


def safe_to_enter(rule: RuleBasedPolicy, view: LaneViews, speed: np.ndarray) -> np.ndarray:
    rear_needed = np.maximum(rule.rear_gap, rule.rear_headway * view.rear_speed)
    return (~danger_ahead(rule, view, speed) & (view.rear_gap > rear_needed)
            & (view.rear_ttc > rule.rear_ttc_threshold))


def rule_actions(scenes: Scenes, rule: RuleBasedPolicy | None = None) -> np.ndarray:
    """(E,) RuleBasedPolicy's action in every scene (see its docstring for the rule)."""
    rule = rule or RuleBasedPolicy()
    speed, lane = scenes.speed[:, 0], scenes.target_lane
    current = lane_views(scenes, lane)
    danger = danger_ahead(rule, current, speed)
    free = ~danger & (current.front_gap > rule.free_gap) & (current.front_ttc > rule.free_ttc)
    best_gap = current.front_gap + np.where(danger, 0.0, rule.overtake_gain)
    changing = np.abs(scenes.y[:, 0] - lane * LANE_WIDTH) > LANE_CHANGE_TOLERANCE
    choice = np.full(len(lane), IDLE)
    for side, action in ((-1, LANE_LEFT), (1, LANE_RIGHT)):  # left first wins ties
        target = lane + side
        exists = (target >= 0) & (target < scenes.lanes)
        view = lane_views(scenes, np.clip(target, 0, scenes.lanes - 1))
        better = exists & ~changing & safe_to_enter(rule, view, speed) & (view.front_gap > best_gap)
        choice = np.where(better, action, choice)
        best_gap = np.where(better, view.front_gap, best_gap)
    fallback = np.where(danger, SLOWER, IDLE)
    return np.where(free, FASTER, np.where(choice == IDLE, fallback, choice))


class BatchPolicy:
    """One policy per scene slot, acting on all the slots asked for at once.

    policies: Policy objects from `make_policy` (idle, faster, random, rule, or a MixturePolicy of
    one), already reset with their episode's generator.
    """

    def __init__(self, policies: list[Policy]) -> None:
        for policy in policies:
            base = policy.base if isinstance(policy, MixturePolicy) else policy
            if not isinstance(base, ConstantPolicy | RandomPolicy | RuleBasedPolicy):
                raise ValueError(f"policy {policy.name} cannot act on batched scenes")
        self.policies = policies

    def observe(self, snapshot, frame: int) -> None:
        """Every frame of a closed loop (evaluation/envpool_loop.py): nothing to keep, these
        policies read the decision frame's scenes alone."""

    def act(self, slots: np.ndarray, scenes: Scenes) -> np.ndarray:
        """(len(slots),) actions of the policies of `slots` in their scenes (row i of
        `scenes` is slot slots[i])."""
        rules = None
        actions = np.empty(len(slots), dtype=np.int64)
        for row, slot in enumerate(slots):
            policy = self.policies[slot]
            explore = random_action = None
            if isinstance(policy, MixturePolicy):  # the same draws as MixturePolicy.act
                explore = policy.rng.random()
                random_action = int(policy.rng.integers(NUM_ACTIONS))
                base = policy.base
            else:
                base = policy
            if isinstance(base, RuleBasedPolicy) and rules is None:
                rules = rule_actions(scenes, base)
            actions[row] = base_action(base, rules, row)
            if explore is not None and explore < policy.epsilon:
                actions[row] = random_action
        return actions


def base_action(policy: Policy, rules: np.ndarray | None, row: int) -> int:
    if isinstance(policy, RuleBasedPolicy):
        return int(rules[row])
    if isinstance(policy, RandomPolicy):
        return int(policy.rng.integers(NUM_ACTIONS))
    return policy.action
