"""Overlap risk from forecast geometry (models/risk.py) on hand-built scenes."""

from __future__ import annotations

import math

import torch

from models.risk import (
    along_steps,
    combine_risks,
    extrapolated_risk,
    interval_probability,
    overlap_risk,
)


def normal_cdf(x: float) -> float:
    return 0.5 * (1 + math.erf(x / math.sqrt(2)))


def test_interval_probability_matches_the_normal_cdf():
    got = interval_probability(torch.tensor([1.0]), torch.tensor([2.0]), 3.0).item()
    assert abs(got - (normal_cdf(1.0) - normal_cdf(-2.0))) < 1e-6


def test_substeps_walk_from_the_previous_step_end():
    path = torch.tensor([[0.0, 0.0], [4.0, 0.0], [8.0, 4.0]])  # (F+1=3, M=2), t0 first
    points = along_steps(path, substeps=2)  # J=2 tensors (F=2, M=2)
    assert len(points) == 2
    assert torch.allclose(points[0], torch.tensor([[2.0, 0.0], [6.0, 2.0]]))
    assert torch.allclose(points[1], path[1:])
    assert torch.equal(along_steps(path, substeps=1)[0], path[1:])


def scene(ego_path, other_path, std=0.3, present=1.0):
    """One rollout (B=1, R=1) of two slots along (F, 2) paths, starting at their t0 rows."""
    ego, other = torch.tensor(ego_path), torch.tensor(other_path)
    mean = torch.stack([ego[1:], other[1:]], dim=1)[None, None]  # (1, 1, F, 2, 2)
    start = torch.stack([ego[0], other[0]])[None, None, None]  # (1, 1, 1, 2, 2)
    presence = torch.full(mean.shape[:-1], present)
    return start, mean, torch.full_like(mean, std), presence


def test_driving_into_a_slower_leader_is_risky_and_keeping_distance_is_not():
    leader = [[20.0, 0.0], [40.0, 0.0], [60.0, 0.0]]  # 20 m/s, 20 m ahead
    crash = overlap_risk(*scene([[0.0, 0.0], [30.0, 0.0], [60.0, 0.0]], leader), 5.0, 2.0)
    safe = overlap_risk(*scene([[0.0, 0.0], [20.0, 0.0], [40.0, 0.0]], leader), 5.0, 2.0)
    assert crash.shape == (1, 1, 2)
    assert crash[0, 0, 1] > 0.95 and crash[0, 0, 0] < 0.01
    assert safe.max() < 0.01


def test_a_vehicle_in_the_next_lane_or_absent_is_no_risk():
    beside = overlap_risk(*scene([[0.0, 0.0], [20.0, 0.0]], [[0.0, 4.0], [20.0, 4.0]]), 5.0, 2.0)
    gone = overlap_risk(*scene([[0.0, 0.0], [20.0, 0.0]], [[0.0, 0.0], [20.0, 0.0]],
                               present=0.0), 5.0, 2.0)
    assert beside.max() < 0.01 and gone.max() == 0.0


def test_passing_through_between_decision_instants_is_caught():
    ego = [[0.0, 0.0], [40.0, 0.0]]  # ends 4 m beyond a leader it drove through
    leader = [[20.0, 0.0], [30.0, 0.0]]
    assert overlap_risk(*scene(ego, leader), 5.0, 2.0, substeps=1).item() < 0.01
    assert overlap_risk(*scene(ego, leader), 5.0, 2.0, substeps=8).item() > 0.9


def test_larger_forecast_uncertainty_spreads_the_risk():
    ego, leader = [[0.0, 0.0], [20.0, 0.0]], [[28.0, 0.0], [28.0, 0.0]]  # 8 m gap at the end
    sure = overlap_risk(*scene(ego, leader, std=0.2), 5.0, 2.0).item()
    unsure = overlap_risk(*scene(ego, leader, std=3.0), 5.0, 2.0).item()
    assert sure < 1e-3 < unsure < 0.5


def test_combined_risk_is_at_least_either_source():
    head, overlap = torch.tensor([0.1, 0.5, 0.0]), torch.tensor([0.3, 0.0, 0.0])
    both = combine_risks(head, overlap)
    assert torch.allclose(both, torch.tensor([0.37, 0.5, 0.0]))


def test_extrapolated_risk_sees_a_slower_leader_beyond_the_horizon():
    # ego at 30 m/s, leader 20 m ahead at 20 m/s: they meet about 2 s later
    last = torch.tensor([[0.0, 0.0, 30.0, 0.0], [20.0, 0.0, 20.0, 0.0]])  # (N=2, 4)
    std, presence = torch.full((2, 2), 0.3), torch.ones(2)
    risk = extrapolated_risk(last[None, None], std[None, None], presence[None, None],
                             dt=1.0, steps=3, length=5.0, width=2.0)
    assert risk.shape == (1, 1, 3)
    assert risk[0, 0, 0] < 0.01 and risk[0, 0, 1:].max() > 0.9
    same_speed = last.clone()
    same_speed[0, 2] = 20.0
    calm = extrapolated_risk(same_speed[None, None], std[None, None], presence[None, None],
                             dt=1.0, steps=3, length=5.0, width=2.0)
    assert calm.max() < 0.01


def braked_risk(ego_speed: float, other: list[float], min_speed: float | None = 20.0):
    """extrapolated_risk of the ego (at the origin, `ego_speed`) and one vehicle
    [x, y, vx, vy], 3 steps of 1 s, bare 5 m x 2 m boxes."""
    last = torch.tensor([[0.0, 0.0, ego_speed, 0.0], other])
    return extrapolated_risk(last[None], torch.full((1, 2, 2), 0.3), torch.ones(1, 2),
                             dt=1.0, steps=3, length=5.0, width=2.0, min_speed=min_speed)[0]


def test_a_braking_ego_only_fears_a_leader_slower_than_it_can_go():
    # 30 m/s behind a 22 m/s leader 15 m ahead: constant velocity meets it, braking to
    # the leader's speed does not
    assert braked_risk(30.0, [15.0, 0.0, 22.0, 0.0], None).max() > 0.9
    assert braked_risk(30.0, [15.0, 0.0, 22.0, 0.0]).max() < 0.01
    # a leader at 15 m/s: the ego cannot go below 20, and closes 5 m a second
    assert braked_risk(20.0, [10.0, 0.0, 15.0, 0.0]).max() > 0.9
    # never faster than its own speed: an ego at 18 m/s behind a 15 m/s leader 12 m ahead
    # closes 3 m a second (braking to 20 would be speeding up)
    assert braked_risk(18.0, [12.0, 0.0, 15.0, 0.0]).max() > 0.9
    assert braked_risk(18.0, [12.0, 0.0, 15.0, 0.0], min_speed=None).max() > 0.9


def test_a_braking_ego_does_not_brake_for_a_follower():
    # a follower 10 m behind at 28 m/s closes on a 20 m/s ego whatever the ego does ahead
    chased = braked_risk(20.0, [-10.0, 0.0, 28.0, 0.0])
    assert torch.allclose(chased, braked_risk(20.0, [-10.0, 0.0, 28.0, 0.0], None))
    assert chased.max() > 0.9
