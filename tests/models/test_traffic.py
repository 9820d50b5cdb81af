"""The traffic replica (models/traffic.py): highway-env's drivers rolled out in tensors."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from models.candidates import ACTION_NAMES, enumerate_candidates
from models.traffic import (
    Road,
    box_distance,
    envelope_distance,
    initial_traffic,
    phased,
    replica_hazard,
    replica_margins,
    road_heading,
    rollout,
    step_frames,
)

ACTION = {name: i for i, name in enumerate(ACTION_NAMES)}
ROAD = Road()


def vehicle(x: float, y: float, speed: float, lane: int, heading: float = 0.0) -> list[float]:
    """Ego-frame features (pipeline/features.py FEATURE_NAMES) of a vehicle."""
    return [x, y, speed * math.cos(heading), speed * math.sin(heading), math.cos(heading),
            math.sin(heading), float(lane)]


def scene(now: list[list[float]], frames: int = 3):
    """hist (1, frames, N, 7), hist_mask: the same frame repeated (steady speeds)."""
    hist = torch.tensor([[now] * frames], dtype=torch.float32)
    return hist, torch.ones(hist.shape[:3])


def states(hist, mask, actions: list[str]):
    """Every frame's Traffic under one candidate."""
    candidate = torch.tensor([[[ACTION[a] for a in actions]]])
    return [t for _, _, t in rollout(hist, mask, candidate, ROAD)]


def test_the_ego_tracks_its_target_speed_as_highway_env_does():
    hist, mask = scene([vehicle(0, 0, 25, 1)])
    frames = states(hist, mask, ["FASTER", "IDLE", "IDLE"])
    speed, x = 25.0, 0.0
    for t in frames:  # v' = v + dt kp_a (30 - v), x' = x + v dt (the speed before the step)
        x, speed = x + speed * ROAD.dt, speed + ROAD.dt * ROAD.kp_a * (30.0 - speed)
        assert t.x[0, 0, 0].item() == pytest.approx(x, abs=1e-3)
        assert t.speed[0, 0, 0].item() == pytest.approx(speed, abs=1e-4)
    assert frames[-1].y[0, 0, 0].item() == pytest.approx(4.0)  # still centred on lane 1


def test_a_lane_change_ends_on_the_next_lane_centre():
    hist, mask = scene([vehicle(0, 0, 25, 1)])
    last = states(hist, mask, ["LANE_LEFT", "IDLE", "IDLE"])[-1]
    assert last.y[0, 0, 0].item() == pytest.approx(0.0, abs=0.3)  # lane 0, 4 m to the left
    assert abs(last.heading[0, 0, 0].item()) < 0.05


def test_idm_brakes_behind_a_slower_leader_and_keeps_its_speed_on_a_free_road():
    hist, mask = scene([vehicle(0, 0, 25, 2), vehicle(100, -8, 22, 0),
                        vehicle(130, -8, 15, 0), vehicle(200, -4, 22, 1)])
    after = states(hist, mask, ["IDLE"])[-1]
    assert after.speed[1, 0, 0].item() < 21.0  # 30 m behind a 15 m/s leader: it brakes
    assert after.speed[3, 0, 0].item() == pytest.approx(22.0, abs=1e-3)  # nothing ahead


def test_a_vehicle_changing_lanes_brakes_for_the_leader_on_either_lane():
    slow_leader = vehicle(125, -8, 15, 0)  # on lane 0; lane 1 is free ahead
    for heading, brakes in ((-0.2, True), (0.0, False)):  # turning into lane 0, or staying
        hist, mask = scene([vehicle(0, 0, 25, 2), vehicle(100, -4, 22, 1, heading),
                            slow_leader])
        first = states(hist, mask, ["IDLE"])[0]
        if brakes:
            assert first.speed[1, 0, 0].item() < 21.5
        else:
            assert first.speed[1, 0, 0].item() == pytest.approx(22.0, abs=1e-4)


def test_mobil_changes_lanes_for_a_gain_unless_it_would_make_the_new_follower_brake():
    slow_leader = [vehicle(0, 0, 25, 2), vehicle(100, -8, 25, 0), vehicle(125, -8, 15, 0)]
    hist, mask = scene(slow_leader)
    assert states(hist, mask, ["IDLE"])[0].target_lane[1, 0, 0].item() == 1.0  # overtakes
    blocked = slow_leader + [vehicle(95, -4, 30, 1)]  # a fast car just behind in lane 1
    hist, mask = scene(blocked)
    assert states(hist, mask, ["IDLE"])[0].target_lane[1, 0, 0].item() == 0.0


def test_a_vehicle_already_changing_lanes_waits_a_step_before_mobil_again():
    turning = math.asin(-1.0 / 25)  # 1 m/s back towards its lane's centre
    scene_of = [vehicle(0, 0, 25, 2), vehicle(100, -7.7, 25, 0, turning),
                vehicle(125, -8, 15, 0)]
    frames = states(*scene(scene_of), ["IDLE", "IDLE"])
    assert frames[0].target_lane[1, 0, 0].item() == 0.0  # its MOBIL timer was just reset
    assert frames[5].target_lane[1, 0, 0].item() == 1.0  # a step later it overtakes


def test_the_envelope_is_met_at_the_step_the_gap_closes():
    hist, mask = scene([vehicle(0, 0, 30, 1), vehicle(25, 0, 20, 1)])
    candidates = torch.tensor([[[ACTION["IDLE"]] * 3]])
    # IDLE keeps 30 m/s; the leader brakes only a little; 25 m closes by 10 m a second
    margins = replica_margins(hist, mask, candidates, (8.0, 2.5))[0, 0, 0]
    assert margins[0] > 1.0 and margins[1] < 1.0


def test_the_prefix_tree_gives_every_candidate_its_own_rollout():
    """replica_margins simulates each action prefix once; rolling out every candidate of
    any subset on its own gives the same numbers."""
    hist, mask = scene([vehicle(0, 0, 27, 1), vehicle(22, 0, 21, 1), vehicle(-12, 4, 26, 2),
                        vehicle(6, -4, 23, 0), vehicle(40, 4.5, 22, 2, -0.05)])
    candidates = torch.from_numpy(enumerate_candidates(3))[None, 3:110:3]
    closest = [[] for _ in range(3)]
    for step_index, frame, t in rollout(hist, mask, candidates, ROAD):
        closest[step_index].append(box_distance(t, ROAD))
        if frame == ROAD.substeps - 1:
            closest[step_index].append(envelope_distance(t, (8.0, 2.5)))
    alone = torch.stack([torch.stack(c, -1).min(-1).values for c in closest], -1)
    tree = replica_margins(hist, mask, candidates, (8.0, 2.5))
    assert torch.equal(tree.reshape(alone.shape), alone)
    assert (tree < 1).any() and (tree > 1).any()  # some candidates meet a vehicle


def test_others_that_stop_reacting_drive_on_around_an_ego_that_keeps_its_commands():
    """reacting_steps < F shares the others' rollout between the candidates: exact where
    nobody reacts to the ego; a follower the ego cuts in front of no longer brakes."""
    candidates = torch.from_numpy(enumerate_candidates(3))[None]
    far = scene([vehicle(0, 0, 22, 1), vehicle(90, 4, 22, 2), vehicle(120, -4, 23, 0)])
    exact = replica_margins(*far, candidates, (8.0, 2.5))
    for steps in (0, 1, 2):
        shared = replica_margins(*far, candidates, (8.0, 2.5), Road(reacting_steps=steps))
        assert torch.allclose(shared, exact, atol=1e-4)
    cut_in = scene([vehicle(0, 0, 25, 1), vehicle(-12, -4, 27, 0)])
    left = torch.tensor([[[ACTION["LANE_LEFT"], ACTION["IDLE"], ACTION["IDLE"]]]])
    exact = replica_margins(*cut_in, left, (8.0, 2.5))[0, 0, 0]
    shared = replica_margins(*cut_in, left, (8.0, 2.5), Road(reacting_steps=0))[0, 0, 0]
    assert shared.min() < exact.min() - 0.05  # the follower keeps closing in


def test_mobil_at_the_step_start_leaves_the_first_phase_as_it_was():
    hist, mask = scene([vehicle(0, 0, 27, 1), vehicle(22, 0, 21, 1), vehicle(-12, 4, 26, 2),
                        vehicle(6, -4, 23, 0), vehicle(40, 4.5, 22, 2, -0.05)])
    candidates = torch.from_numpy(enumerate_candidates(3))[None]
    exact = replica_margins(hist, mask, candidates, (8.0, 2.5))
    once = replica_margins(hist, mask, candidates, (8.0, 2.5), Road(mobil_at_start=True))
    assert torch.equal(once[0], exact[0])  # phase 0 decides on frame 0 either way
    assert not torch.equal(once[1:], exact[1:])  # the later phases decide on older states
    assert torch.isfinite(once).all() and (once < 1).any() and (once > 1).any()


def test_held_idm_brakes_at_the_first_frame_rate_and_leaves_the_reacting_steps_alone():
    hist, mask = scene([vehicle(0, 0, 25, 2), vehicle(100, -8, 22, 0),
                        vehicle(130, -8, 15, 0), vehicle(200, -4, 22, 1)])
    start = phased(initial_traffic(hist, mask, 1, ROAD), ROAD)
    exact = [t.speed[1, 0, 0].item() for _, t in step_frames(start, 0, 1, ROAD)]
    held = [t.speed[1, 0, 0].item() for _, t in step_frames(start, 0, 1, ROAD, 5)]
    assert held[0] == pytest.approx(exact[0], abs=1e-6)  # the same first evaluation
    rate = held[0] - 22.0
    assert rate < -0.2  # braking behind the 15 m/s leader, then at that rate all step
    assert held == pytest.approx([22.0 + rate * (i + 1) for i in range(5)], abs=1e-4)
    assert held[-1] != pytest.approx(exact[-1], abs=1e-3)  # IDM eases off as the gap closes
    candidates = torch.from_numpy(enumerate_candidates(3))[None]
    plain = replica_margins(hist, mask, candidates, (8.0, 2.5), Road(reacting_steps=1))
    once = replica_margins(hist, mask, candidates, (8.0, 2.5),
                           Road(reacting_steps=1, late_idm_every=5))
    assert torch.equal(once[..., 0], plain[..., 0])  # the step the planner acts on
    assert not torch.equal(once[..., 1:], plain[..., 1:])  # the later ones hold the IDM


def test_tail_steps_are_an_idle_step_appended_to_every_candidate():
    """A tail step branches nothing, yet gives each candidate what an explicit IDLE step
    would, with or without the others reacting to it, and leaves the own steps alone."""
    hist, mask = scene([vehicle(0, 0, 27, 1), vehicle(22, 0, 21, 1), vehicle(-12, 4, 26, 2),
                        vehicle(6, -4, 23, 0), vehicle(40, 4.5, 22, 2, -0.05)])
    three = torch.from_numpy(enumerate_candidates(3))[None]
    four = torch.cat([three, torch.full_like(three[..., :1], ACTION["IDLE"])], dim=-1)
    for road in (Road(reacting_steps=1, mobil_at_start=True, late_idm_every=5),
                 Road(reacting_steps=4)):
        tail = replica_margins(hist, mask, three, (8.0, 2.5), replace(road, tail_steps=1))
        assert tail.shape == (3, 1, 125, 4)
        assert torch.equal(tail, replica_margins(hist, mask, four, (8.0, 2.5), road))
        assert torch.equal(tail[..., :3], replica_margins(hist, mask, three, (8.0, 2.5), road))


def test_a_tail_step_sees_the_leader_caught_just_after_the_horizon():
    hist, mask = scene([vehicle(0, 0, 30, 1), vehicle(35, 0, 20, 1)])
    keep = torch.tensor([[[ACTION["IDLE"]] * 2]])  # 30 m/s closing 10 m/s a second on 35 m
    plain = replica_hazard(hist, mask, keep, (8.0, 2.5))[0, 0]
    tail = replica_hazard(hist, mask, keep, (8.0, 2.5), Road(tail_steps=1))[0, 0]
    assert plain.max() < 0.5 < tail[-1]  # the envelope is met in the third step only
    assert torch.equal(tail[:2], plain)


def test_the_road_heading_is_the_one_most_others_share():
    rel = torch.tensor([[0.0, -0.1, -0.1, 0.2, -0.1]])  # slot 0: the ego
    present = torch.tensor([[True, True, True, True, True]])
    assert road_heading(rel, present).item() == pytest.approx(0.1)
    assert road_heading(rel, torch.tensor([[True, False, False, False, False]])).item() == 0.0


def test_a_rotated_ego_frame_gives_the_same_rollout():
    """The ego 0.1 rad into a lane change: its frame is rotated, the road is not."""
    world = [(0.0, 5.0, 25.0, 0.1, 1), (30.0, 4.0, 22.0, 0.0, 1), (-20.0, 0.0, 24.0, 0.0, 0)]
    turned = []
    for x, y, speed, heading, lane in world:
        dx, dy = x - world[0][0], y - world[0][1]
        c, s = math.cos(0.1), math.sin(0.1)
        turned.append(vehicle(c * dx + s * dy, -s * dx + c * dy, speed, lane, heading - 0.1))
    start = states(*scene(turned), ["IDLE"])[0]  # one frame on
    # the others drive along the road, centred on their lanes: only the rotation that
    # undoes the ego's 0.1 rad and the ego's 1 m off its lane centre make them so
    assert start.heading[1:, 0, 0].tolist() == pytest.approx([0.0, 0.0], abs=1e-3)
    assert start.y[1:, 0, 0].tolist() == pytest.approx([4.0, 0.0], abs=1e-3)


@pytest.mark.slow
def test_the_replica_ranks_true_simulator_labels():
    """On decisions labelled by copies of the true simulator (a short highway-fast episode
    driven by the envelope oracle), the replica's margin separates the candidates that
    meet the envelope from those that do not."""
    from evaluation.metrics import auroc
    from pipeline.critic_labels import Labeller, LabelSpec

    spec = LabelSpec("highway-fast-v0", {"duration": 8}, history=10, vehicles=8, horizon=3,
                     envelope=(8.0, 2.5), gamma=0.9, epsilon=0.3)
    labeller = Labeller(spec)
    try:
        labels = labeller.episode(seed=11)
    finally:
        labeller.close()
    candidates = torch.from_numpy(enumerate_candidates(3))
    hist = torch.from_numpy(labels["hist"])
    args = (hist, torch.from_numpy(labels["hist_mask"]).float(),
            candidates[None].expand(len(hist), -1, -1), (8.0, 2.5))
    event = labels["first"] < 3
    valid = labels["valid"]
    assert event[valid].any() and (~event[valid]).any()
    for road in (Road(), Road(reacting_steps=1, mobil_at_start=True)):  # highway.yaml's
        hazard = replica_hazard(*args, road=road)
        assert auroc((1 - torch.prod(1 - hazard, dim=-1)).numpy(), event, valid) > 0.95


def test_a_planner_scores_with_the_replica_and_exports_with_parity(tmp_path):
    from models.planner import Planner
    from models.risk_sources import ImaginedRisk, ReplicaRisk
    from models.traffic import TrafficReplica
    from pipeline.planner.onnx_export import check_parity, export_planner
    from tests.models.test_world_model import make_batch, tiny_model

    model = tiny_model(5).eval()
    batch = make_batch(b=1, n=5)
    hist, mask = batch["hist"], batch["hist_mask"].float()
    candidates = torch.from_numpy(enumerate_candidates(2))
    noise = torch.randn(25, 1, 2, model.stoch_dim, generator=torch.Generator().manual_seed(2))
    replica = TrafficReplica(3, (8.0, 2.5), tail_steps=1)  # the graph's tail step too
    planner = Planner(model, ReplicaRisk(replica), gamma=0.9, bootstrap=True)
    with torch.no_grad():
        risk = planner(hist, mask, candidates, noise)[0]
        hazard = replica(hist, mask, candidates[None])[0]
        assert hazard.shape == (25, 3)
        assert torch.allclose(risk, 1 - torch.prod(1 - hazard, dim=-1))
        own = Planner(model, ImaginedRisk(), gamma=0.9, bootstrap=True)(hist, mask, candidates,
                                                                       noise)
        assert not torch.allclose(risk, own[0])  # not the world model's own risk
    path = tmp_path / "planner.onnx"
    export_planner(planner, path, hist, mask, n_candidates=25, samples=1, horizon=2)
    assert check_parity(planner, path, hist, mask, candidates, noise, atol=1e-4) < 1e-4
    with pytest.raises(TypeError, match="ReplicaRisk wraps a TrafficReplica"):
        ReplicaRisk(model)
    with pytest.raises(ValueError, match="lanes >= 1, a positive envelope"):
        TrafficReplica(0)
    with pytest.raises(ValueError, match="tail_steps >= 0"):
        TrafficReplica(3, tail_steps=-1)
