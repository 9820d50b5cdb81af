"""LaneGuard: which lane changes it refuses, and the planner that runs under it."""

import numpy as np
import pytest

from evaluation.policies import IDLE, LANE_LEFT, LANE_RIGHT
from models.candidates import enumerate_candidates
from pipeline.planner.lane_guard import LaneGuard
from pipeline.planner.policy import PlannerPolicy
from tests.evaluation.test_policies import scene
from tests.pipeline.planner.test_policy import CANDIDATES, WrappedScorer, scorer  # noqa: F401

GUARD = LaneGuard(front_gap=2.0, rear_gap=2.0, rear_ttc=1.0)


@pytest.mark.parametrize("ahead, refused", [
    (-0.5, {LANE_LEFT}),  # abreast, just behind the ego's centre: overlapping
    (4.0, {LANE_LEFT}),  # 4 m ahead: -1 m bumper to bumper
    (-6.5, {LANE_LEFT}),  # 1.5 m gap behind
    (-8.0, set()),  # 3 m gap behind, same speed
    (8.0, set()),  # 3 m gap ahead
])
def test_refuses_a_lane_change_into_a_small_gap(ahead, refused):
    env = scene(1, [(0, ahead, 25.0)])
    assert GUARD.refused_actions(env) == refused


def test_a_fast_follower_in_the_target_lane_is_refused_by_its_time_to_collision():
    slow_closing = scene(1, [(2, -15.0, 30.0)])  # 10 m gap closing at 5 m/s: 2 s
    fast_closing = scene(1, [(2, -15.0, 40.0)])  # 10 m gap closing at 15 m/s: 0.67 s
    assert GUARD.refused_actions(slow_closing) == set()
    assert GUARD.refused_actions(fast_closing) == {LANE_RIGHT}


def test_lanes_off_the_road_are_not_looked_at():
    env = scene(0, [(1, 0.0, 25.0)], lanes=2)  # leftmost lane: only the right lane exists
    assert GUARD.refused_actions(env) == {LANE_RIGHT}


def test_mask_reads_only_the_first_action():
    candidates = enumerate_candidates(2)
    mask = GUARD.mask(scene(1, [(0, 0.0, 25.0)]), candidates)
    assert (mask == (candidates[:, 0] != LANE_LEFT)).all()
    assert (candidates[mask][:, 1] == LANE_LEFT).any()  # a later lane change is kept


def test_negative_figures_are_refused():
    with pytest.raises(ValueError, match=">= 0"):
        LaneGuard(rear_gap=-1.0)


def test_the_planner_never_takes_a_refused_lane_change_and_counts_the_overrides(scorer):  # noqa: F811
    favourite = np.array([LANE_LEFT, IDLE])
    for guard, expect_left in ((None, True), (GUARD, False)):
        policy = PlannerPolicy(WrappedScorer(scorer, favourite=favourite), CANDIDATES,
                               guard=guard)
        policy.reset(0)
        first = policy.act(scene(1, [(0, 0.0, 25.0)]))  # a car abreast on the left
        assert (first == LANE_LEFT) == expect_left
        assert policy.guard_steps == (0 if guard is None else 1)
