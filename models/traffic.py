"""Traffic replica: highway-env's own driver models rolled out in tensors, per candidate.

The learned forecast is least sure exactly where the planner is tempted (closing on a
leader, a neighbour's lane change), yet highway-fast's traffic follows known rules: each
other vehicle drives the Intelligent Driver Model along its lane and changes lanes by
MOBIL; the ego tracks the target speed and lane its meta-actions set. This module
reconstructs the road from the planner's observed history and replays those rules for F
decision steps under every candidate, at the simulator's own 5 Hz, with its constants
(highway-env `IDMVehicle`, `ControlledVehicle`, `MDPVehicle`, kinematic bicycle).

What the history cannot show is estimated: the ego's heading on the road (the heading
most other vehicles share), its lateral position (from the lanes the others drive in),
its target speed (inverted from its last speed step), every target lane (from the
lateral speed) and every other vehicle's desired speed (its highest recent speed).
Each vehicle's MOBIL timer (highway-env fires it every 1-1.2 s at a phase the history
does not show) is covered by rolling out once per phase, MOBIL evaluated at frame 0, 2
or 4 of every step, and averaging; a vehicle already changing lanes decides nothing in
the first step. Vehicles beyond the observed slots are not simulated, nor are crashes
between other vehicles. Three shortcuts trade a little of this for time (`Road`
reacting_steps, mobil_at_start and late_idm_every, README: the traffic replica), and
`Road.tail_steps` looks past the candidates' own steps, the ego keeping its commands.

`replica_margins` returns, per candidate and decision step, the smallest normalised
distance of any vehicle to the ego: below 1 their boxes overlap during the step (a
collision) or the vehicle is inside the planner's safety envelope at its end, the two
events the risk critic's labels and the envelope oracle count. `replica_hazard` turns it
into a per-step probability. Plain tensor ops with a fixed loop, so it exports to ONNX.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
from torch import nn

FAR = 1.0e4  # m: the gap to an absent leader (finite for ONNX)


@dataclass(frozen=True)
class Road:
    """highway-fast-v0's road and driver constants (highway-env 1.10)."""

    lanes: int = 3
    lane_width: float = 4.0
    on_lane_margin: float = 1.0  # a vehicle counts on a lane within width / 2 + this
    target_speeds: tuple[float, ...] = (20.0, 25.0, 30.0)  # the ego's (MDPVehicle)
    speed_limit: float = 30.0
    dt: float = 0.2  # 1 / simulation_frequency
    substeps: int = 5  # simulation frames per decision
    length: float = 5.0
    kp_a: float = 1 / 0.6
    kp_heading: float = 1 / 0.2
    kp_lateral: float = 1 / 0.6
    max_steering: float = math.pi / 3
    comfort_acc: float = 3.0
    comfort_dec: float = 5.0
    acc_max: float = 6.0
    distance_wanted: float = 10.0
    time_wanted: float = 1.5
    delta: float = 4.0
    lane_change_gain: float = 0.2
    lane_change_braking: float = 2.0
    target_lane_lead: float = 0.6  # s: a target lane is where the lateral speed points
    turning_speed: float = 0.5  # m/s: a lateral speed above this is a lane change
    mobil_phases: tuple[int, ...] = (0, 2, 4)  # frames of a step at which MOBIL may be
    # evaluated, one rollout each (their risks averaged)
    reacting_steps: int = 3  # decision steps in which the others react to each candidate's
    # own ego (`replica_margins`)
    mobil_at_start: bool = False  # every phase decides on the step's first frame (one MOBIL
    # evaluation a step) and acts at its own frame
    late_idm_every: int = 1  # after the reacting steps the others' IDM accelerations are
    # evaluated every this many frames and held in between (1: every frame)
    tail_steps: int = 0  # decision steps rolled out after each candidate's own, its ego
    # keeping its last commands (IDLE): the risk of being caught just after the horizon


@dataclass
class Traffic:
    """Road-frame state, each (N, B, K): x along the road from the ego's start, y across
    it (lane i centred at i * lane_width), heading, speed, target speed and target lane;
    present (N, B, 1) bool (slot 0, the ego, always); waiting (N, B, 1) bool: the vehicles
    changing lanes at the start, whose MOBIL timer has just been reset (they decide
    nothing in the first decision step).

    Vehicles lead and candidates trail: every pairwise tensor is (N, N, B, K), so the ONNX
    graph's broadcasts run along the long candidate axis (onnxruntime broadcasts over a
    short innermost axis several times slower)."""

    x: torch.Tensor
    y: torch.Tensor
    heading: torch.Tensor
    speed: torch.Tensor
    target_speed: torch.Tensor
    target_lane: torch.Tensor
    present: torch.Tensor
    waiting: torch.Tensor


def road_heading(rel: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """The ego's heading on the road (B,) from the others' headings relative to it, rel
    (B, N) (slot 0 the ego): minus the relative heading that most present others share
    (within 0.02 rad; of tied ones the nearest to the ego's own); 0 without others."""
    others = present.clone()
    others[:, 0] = False
    close = (rel[:, :, None] - rel[:, None, :]).abs() < 0.02
    votes = (close & others[:, None, :]).sum(dim=-1).to(rel.dtype)  # (B, N)
    votes = votes - 0.01 * rel.abs()  # |rel| < pi: less than one vote
    votes = torch.where(others, votes, torch.full_like(votes, -1.0))
    best = torch.argmax(votes, dim=-1, keepdim=True)
    shared = torch.gather(rel, 1, best)[:, 0]
    return torch.where(others.any(dim=-1), -shared, torch.zeros_like(shared))


def ego_lateral(y: torch.Tensor, vy: torch.Tensor, lane: torch.Tensor, present: torch.Tensor,
                road: Road) -> torch.Tensor:
    """The ego's y on the road (B,): its lane's centre when it is settled, otherwise the
    mean over settled others of (their lane's centre minus their offset from the ego),
    held within the ego's lane."""
    centre = lane * road.lane_width  # (B, N)
    settled = present & (vy.abs() < 0.3)
    others = settled.clone()
    others[:, 0] = False
    weight = others.to(y.dtype)
    from_others = ((centre - y) * weight).sum(-1) / weight.sum(-1).clamp(min=1.0)
    ego_centre = centre[:, 0]
    estimate = torch.where(others.any(dim=-1), from_others, ego_centre)
    half = road.lane_width / 2
    estimate = torch.minimum(torch.maximum(estimate, ego_centre - half), ego_centre + half)
    return torch.where(settled[:, 0], ego_centre, estimate)


def snap_speed(speed: torch.Tensor, road: Road) -> torch.Tensor:
    """The nearest of the ego's target speeds."""
    speeds = torch.tensor(road.target_speeds, dtype=speed.dtype, device=speed.device)
    index = torch.argmin((speed[..., None] - speeds).abs(), dim=-1)
    return speeds[index]


def initial_traffic(hist: torch.Tensor, hist_mask: torch.Tensor, k: int, road: Road) -> Traffic:
    """The road-frame state at the last observed frame, repeated for K candidates.

    hist (B, H, N, 7) ego-frame features (pipeline/features.py FEATURE_NAMES), hist_mask
    (B, H, N)."""
    mask = hist_mask > 0.5
    now, present = hist[:, -1], mask[:, -1].clone()
    present[:, 0] = True
    rel = torch.atan2(now[..., 5], now[..., 4])
    h0 = road_heading(rel, present)
    c, s = torch.cos(h0)[:, None], torch.sin(h0)[:, None]
    x = c * now[..., 0] - s * now[..., 1]
    dy = s * now[..., 0] + c * now[..., 1]
    vx = c * now[..., 2] - s * now[..., 3]
    vy = s * now[..., 2] + c * now[..., 3]
    y = ego_lateral(dy, vy, now[..., 6], present, road)[:, None] + dy
    speed = torch.sqrt(vx * vx + vy * vy)
    heading = h0[:, None] + rel
    seen = torch.sqrt(hist[..., 2] ** 2 + hist[..., 3] ** 2) * mask
    desired = torch.clamp(seen.max(dim=1).values, max=road.speed_limit)
    ego_target = snap_speed(ego_target_speed(hist, mask, road), road)
    desired = torch.cat([ego_target[:, None], desired[:, 1:]], dim=1)
    lane = torch.round((y + road.target_lane_lead * vy) / road.lane_width)
    lane = lane.clamp(0, road.lanes - 1)

    def repeat(t):  # (B, N) -> (N, B, K)
        return t.transpose(0, 1)[:, :, None].expand(-1, -1, k)

    waiting = present & (vy.abs() > road.turning_speed)
    return Traffic(repeat(x), repeat(y), repeat(heading), repeat(speed), repeat(desired),
                   repeat(lane), repeat(present)[..., :1], repeat(waiting)[..., :1])


def ego_target_speed(hist: torch.Tensor, mask: torch.Tensor, road: Road) -> torch.Tensor:
    """(B,) the speed the ego's controller tracks, from its last speed step
    (v' = v + dt * kp_a * (target - v)); its speed when it has one frame only."""
    speed = torch.sqrt(hist[:, :, 0, 2] ** 2 + hist[:, :, 0, 3] ** 2)  # (B, H)
    if speed.shape[1] < 2:
        return speed[:, -1]
    step = speed[:, -1] - speed[:, -2]
    target = speed[:, -2] + step / (road.dt * road.kp_a)
    return torch.where(mask[:, -2, 0], target, speed[:, -1])


def idm(speed, desired, gap, closing, has_leader, road: Road) -> torch.Tensor:
    """IDM acceleration: speed, desired speed, gap to the leader (centre to centre),
    closing speed, has_leader (bool; None: every one has); all broadcastable."""
    free = 1 - torch.pow(speed.clamp(min=0) / desired.clamp(min=0.01), road.delta)
    brake = 1 / (2 * math.sqrt(road.comfort_acc * road.comfort_dec))
    wanted = road.distance_wanted + speed * (road.time_wanted + closing * brake)
    follow = torch.pow(wanted / gap.clamp(min=0.01), 2)
    if has_leader is not None:
        follow = torch.where(has_leader, follow, 0.0)
    return road.comfort_acc * (free - follow)


class Neighbours:
    """Leaders and followers on given lanes, for every vehicle of a Traffic state."""

    def __init__(self, t: Traffic, road: Road):
        self.t, self.road = t, road
        n = t.x.shape[0]
        self.gap = t.x[None] - t.x[:, None]  # (query, other, B, K)
        slot = torch.arange(n, device=t.x.device)
        self.other = t.present[None] & (slot[:, None] != slot[None, :])[..., None, None]

    def on_lane(self, lane: torch.Tensor) -> torch.Tensor:
        """(..., query, other, B, K): the other vehicle is on lane[query] (..., N, B, K)."""
        offset = self.t.y[None] - lane[..., :, None, :, :] * self.road.lane_width
        return self.other & (offset.abs() <= self.road.lane_width / 2
                             + self.road.on_lane_margin)

    def leader(self, lane: torch.Tensor, on_lane: torch.Tensor | None = None):
        """(gap, leader index, found), each (..., N, B, K), of every vehicle on `lane`
        (..., N, B, K); on_lane: `on_lane(lane)` if already known."""
        on_lane = self.on_lane(lane) if on_lane is None else on_lane
        return nearest(on_lane & (self.gap >= 0), self.gap)

    def follower(self, lane: torch.Tensor, on_lane: torch.Tensor | None = None):
        """(gap >= 0, follower index, found) of each vehicle on `lane`."""
        on_lane = self.on_lane(lane) if on_lane is None else on_lane
        return nearest(on_lane & (self.gap < 0), -self.gap)


def nearest(candidate: torch.Tensor, gap: torch.Tensor):
    """(smallest gap, its index, found) over the other axis (-3) of (..., query, other, B,
    K) where `candidate`."""
    gap, index = torch.where(candidate, gap, torch.full_like(gap, FAR)).min(dim=-3)
    return gap, index, gap < FAR


def pick(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """values (N, B, K) at index (..., M, B, K) -> (..., M, B, K)."""
    return torch.gather(values.expand(*index.shape[:-3], *values.shape), -3, index)


def idm_behind(t: Traffic, front: torch.Tensor, gap, has_front, road: Road) -> torch.Tensor:
    """IDM acceleration (..., N, B, K) of every vehicle behind vehicles `front` (indices
    (..., N, B, K)) at `gap`; no leader where not has_front. The closing speed is the
    difference of the speeds (all drive nearly along the road)."""
    closing = t.speed - pick(t.speed, front)
    return idm(t.speed, t.target_speed, gap, closing, has_front, road)


def lane_changes(t: Traffic, near: Neighbours, lane: torch.Tensor, road: Road) -> torch.Tensor:
    """Every other vehicle's target lane after a MOBIL decision (N, B, K) (politeness 0,
    highway-env's checks in its order: the right side wins when both pass)."""
    own_gap, own_leader, own_found = near.leader(lane)
    own_a = idm_behind(t, own_leader, own_gap, own_found, road)
    free = (lane == t.target_lane) & (t.speed >= 1) & t.present & ~t.waiting
    free[0] = False
    sides = torch.tensor([-1.0, 1.0], dtype=lane.dtype, device=lane.device)
    new = lane + sides[:, None, None, None]  # (2, N, B, K): left, right
    on_new = near.on_lane(new)
    gap_p, lead, has_p = near.leader(new, on_new)
    gap_f, follow, has_f = near.follower(new, on_new)
    follower_speed = pick(t.speed, follow)  # the follower's IDM behind the vehicle itself
    follower_then = idm(follower_speed, pick(t.target_speed, follow), gap_f,
                        follower_speed - t.speed, None, road)
    safe = ~has_f | (follower_then >= -road.lane_change_braking)
    gain = idm_behind(t, lead, gap_p, has_p, road) - own_a
    go = free & safe & (gain >= road.lane_change_gain) & (new >= 0) & (new < road.lanes)
    return torch.where(go[1], new[1], torch.where(go[0], new[0], t.target_lane))


def accelerations(t: Traffic, near: Neighbours, lane: torch.Tensor, road: Road) -> torch.Tensor:
    """(N, B, K): IDM on the current lane (and the target lane while changing) for the
    others, the speed controller for the ego."""
    gap, lead, found = near.leader(torch.stack([lane, t.target_lane]))
    # the two lanes' IDM (2, N, B, K): the same where a vehicle changes no lane
    acc = idm_behind(t, lead, gap, found, road).min(dim=0).values
    return with_ego_controller(t, acc.clamp(-road.acc_max, road.acc_max), road)


def with_ego_controller(t: Traffic, acc: torch.Tensor, road: Road) -> torch.Tensor:
    """acc (N, B, K) with the ego's row (slot 0) its speed controller's."""
    ego = torch.arange(acc.shape[0], device=acc.device)[:, None, None] == 0
    return torch.where(ego, ego_acceleration(t, road), acc)


def ego_acceleration(t: Traffic, road: Road) -> torch.Tensor:
    """The ego's speed controller (MDPVehicle) applied to every vehicle of `t`."""
    return road.kp_a * (t.target_speed - t.speed)


def steering_slip(t: Traffic, road: Road) -> torch.Tensor:
    """The slip angle beta (N, B, K) of highway-env's lane-keeping steering controller."""
    speed = torch.where(t.speed.abs() < 1e-2, torch.full_like(t.speed, 1e-2), t.speed)
    inverse = 1 / speed
    offset = t.y - t.target_lane * road.lane_width
    # asin is monotonic: clipping its argument clips the angle (the reference to +-pi/4)
    bound = math.sin(math.pi / 4)
    heading_ref = torch.asin((offset * inverse * -road.kp_lateral).clamp(-bound, bound))
    rate = road.kp_heading * road.length / 2 * (heading_ref - t.heading)
    # highway-env steers atan(2 tan(slip)) clipped to max_steering, then slips by
    # atan(tan(steering) / 2): the slip itself, clipped where the steering is
    bound = math.sin(math.atan(0.5 * math.tan(road.max_steering)))
    return torch.asin((rate * inverse).clamp(-bound, bound))


def step(t: Traffic, acc: torch.Tensor, road: Road) -> Traffic:
    """One simulation frame of the kinematic bicycle for every vehicle."""
    beta = steering_slip(t, road)
    course, travel = t.heading + beta, t.speed * road.dt
    return replace(t, x=t.x + travel * torch.cos(course), y=t.y + travel * torch.sin(course),
                   heading=t.heading + travel * torch.sin(beta) * (2 / road.length),
                   speed=t.speed + acc * road.dt)


def ego_command(t: Traffic, action: torch.Tensor, road: Road) -> Traffic:
    """The ego's target speed and lane after meta-action `action` (B, K) (candidates'
    action ids: 0 LANE_LEFT, 1 IDLE, 2 LANE_RIGHT, 3 FASTER, 4 SLOWER)."""
    speeds = torch.tensor(road.target_speeds, dtype=t.speed.dtype, device=t.speed.device)
    top = len(road.target_speeds) - 1
    now = torch.round((t.speed[0] - speeds[0]) / (speeds[-1] - speeds[0]) * top)
    now = now.clamp(0, top)
    shift = (action == 3).to(now.dtype) - (action == 4).to(now.dtype)
    wanted = speeds[(now + shift).clamp(0, top).long()]
    ego_speed = torch.where(shift != 0, wanted, t.target_speed[0])
    turn = (action == 2).to(now.dtype) - (action == 0).to(now.dtype)
    ego_lane = (t.target_lane[0] + turn).clamp(0, road.lanes - 1)
    return replace(t, target_speed=torch.cat([ego_speed[None], t.target_speed[1:]]),
                   target_lane=torch.cat([ego_lane[None], t.target_lane[1:]]))


def closest_lane(t: Traffic, road: Road) -> torch.Tensor:
    return torch.round(t.y / road.lane_width).clamp(0, road.lanes - 1)


@dataclass
class Poses:
    """Where the vehicles of a Traffic state are over several frames: x, y and heading
    (frames, N, B, K), present (N, B, 1); distances are taken on all frames at once."""

    x: torch.Tensor
    y: torch.Tensor
    heading: torch.Tensor
    present: torch.Tensor


def poses(frames: list[Traffic]) -> Poses:
    """The poses of consecutive Traffic states (N, B, K): (len(frames), N, B, K)."""
    def stacked(values):  # one Concat and one Reshape in the graph (stack: an Unsqueeze each)
        return torch.cat(values).reshape(len(values), *values[0].shape[:-1], -1)

    return Poses(stacked([f.x for f in frames]), stacked([f.y for f in frames]),
                 stacked([f.heading for f in frames]), frames[-1].present)


def others(v: torch.Tensor) -> torch.Tensor:
    """Every vehicle but the ego of (..., N, B, K)."""
    return v[..., 1:, :, :]


def ego_of(v: torch.Tensor) -> torch.Tensor:
    """The ego's row (slot 0) of (..., N, B, K), kept as an axis of one."""
    return v[..., :1, :, :]


def envelope_distance(t: Traffic | Poses, envelope: tuple[float, float]) -> torch.Tensor:
    """(..., B, K): min over present others of max(|dx| / length, |dy| / width) to the
    ego, of a state (N, B, K) or of every frame of poses (..., N, B, K)."""
    dx = (others(t.x) - ego_of(t.x)).abs() / envelope[0]
    dy = (others(t.y) - ego_of(t.y)).abs() / envelope[1]
    distance = torch.where(others(t.present), torch.maximum(dx, dy), torch.full_like(dx, FAR))
    return distance.min(dim=-3).values


def box_distance(t: Traffic | Poses, road: Road, width: float = 2.0) -> torch.Tensor:
    """(..., B, K): min over present others of max(|dx| / (ex + ex'), |dy| / (ey + ey')),
    the half extents along and across the road of their rectangles and the ego's (length x
    width, rotated by heading): below 1 the bounding boxes overlap, a slightly wider test
    than highway-env's rectangles (the same when both drive straight). Of a state (N, B,
    K) or of every frame of poses (..., N, B, K)."""
    c, s = torch.cos(t.heading).abs(), torch.sin(t.heading).abs()
    c, s = others(c) + ego_of(c), others(s) + ego_of(s)  # summed over each pair
    half_length, half_width = road.length / 2, width / 2
    dx = (others(t.x) - ego_of(t.x)).abs() / (half_length * c + half_width * s)
    dy = (others(t.y) - ego_of(t.y)).abs() / (half_length * s + half_width * c)
    ratio = torch.where(others(t.present), torch.maximum(dx, dy), torch.full_like(dx, FAR))
    return ratio.min(dim=-3).values


def rollout(hist: torch.Tensor, hist_mask: torch.Tensor, candidates: torch.Tensor,
            road: Road = Road()):
    """Yield (step, frame, Traffic (N, P B, K)) for every simulation frame of every decision
    step under candidates (B, K, F) int64 action ids, for the P = len(road.mobil_phases)
    frames at which every other vehicle may evaluate MOBIL in each step (highway-env's
    per-vehicle timers are hidden), one after the other along the batch axis."""
    t = phased(initial_traffic(hist, hist_mask, candidates.shape[1], road), road)
    actions = candidates.repeat(len(road.mobil_phases), 1, 1)
    for step_index in range(candidates.shape[-1]):
        start = ego_command(t, actions[..., step_index], road)
        for frame, t in step_frames(start, step_index, candidates.shape[0], road):
            yield step_index, frame, t


def phased(t: Traffic, road: Road) -> Traffic:
    """`t` repeated along the batch axis once per MOBIL phase."""
    return Traffic(*(v.repeat(1, len(road.mobil_phases), 1) for v in vars(t).values()))


def step_frames(t: Traffic, step_index: int, b: int, road: Road, idm_every: int = 1):
    """Yield (frame, Traffic) over the frames of one decision step of phased states
    (N, P b, K), the ego's command already set; the others' IDM evaluated every
    `idm_every` frames and held in between."""
    phases = road.mobil_phases
    for frame in range(road.substeps):
        fresh = frame % idm_every == 0
        if fresh or (frame in phases and not road.mobil_at_start):  # a target lane moves
            lane = closest_lane(t, road)  # neither
        if fresh:  # the others' IDM (and MOBIL at the step's start) read it
            near = Neighbours(t, road)
        if road.mobil_at_start and frame == 0:
            decided = lane_changes(t, near, lane, road)
        if frame in phases:  # the rows of the phase deciding now take their decision
            start = phases.index(frame) * b
            if road.mobil_at_start:
                ours = decided[:, start:start + b]
            else:
                rows = Traffic(*(v[:, start:start + b] for v in vars(t).values()))
                ours = lane_changes(rows, Neighbours(rows, road), lane[:, start:start + b], road)
            target = torch.cat([t.target_lane[:, :start], ours, t.target_lane[:, start + b:]],
                               dim=1)
            t = replace(t, target_lane=target)
        if fresh:
            held = accelerations(t, near, lane, road)
            t = step(t, held, road)
        else:  # the others keep their accelerations, the ego's controller runs on
            t = step(t, with_ego_controller(t, held, road), road)
        if step_index == 0 and frame == road.substeps - 1:  # from now on every driver decides
            t = replace(t, waiting=torch.zeros_like(t.waiting))
        yield frame, t


def step_margin(p: Poses, envelope, road: Road) -> torch.Tensor:
    """(B, K) one decision step's smallest distance (`replica_margins`) from the poses of
    its frames (frames, N, B, K)."""
    end = Poses(p.x[-1], p.y[-1], p.heading[-1], p.present)
    return torch.minimum(box_distance(p, road).min(dim=0).values,
                         envelope_distance(end, envelope))


def branch(t: Traffic, n: int) -> Traffic:
    """Every candidate of `t` (N, B, K) repeated n times in a row: (N, B, K n)."""
    def each(v):
        return v[..., None].expand(-1, -1, -1, n).reshape(*v.shape[:2], -1)

    return replace(t, x=each(t.x), y=each(t.y), heading=each(t.heading), speed=each(t.speed),
                   target_speed=each(t.target_speed), target_lane=each(t.target_lane))


def replica_margins(hist: torch.Tensor, hist_mask: torch.Tensor, candidates: torch.Tensor,
                    envelope: tuple[float, float], road: Road = Road(),
                    n_actions: int = 5) -> torch.Tensor:
    """(P, B, K, F + road.tail_steps): per MOBIL phase (`rollout`) and decision step the
    smallest distance of any vehicle to the ego: `box_distance` (a collision) at every frame
    of the step, `envelope_distance` at its end (where the envelope oracle checks it).

    Candidates sharing a prefix share its rollout: step s is simulated once per distinct
    prefix of the full enumeration of `n_actions` ids (models/candidates.py order), n^(s+1)
    of them, and each candidate reads its prefix's row: for K = 125 the three steps cost
    5 + 25 + 125 rollout steps instead of 3 x 125, the same numbers. After
    `road.reacting_steps` steps the others stop branching: they drive on once per prefix
    of that length, around an ego that keeps its commands (IDLE), and only the ego
    branches (`with_ego`): exact where nobody reacts to the ego, while a follower the ego
    cuts in front of after them no longer brakes for it. The `road.tail_steps` after the
    candidates' own steps branch nothing: the same numbers as an IDLE step appended to
    every candidate."""
    b, k, horizon = candidates.shape
    p = len(road.mobil_phases)
    t = phased(initial_traffic(hist, hist_mask, 1, road), road)
    prefix = torch.zeros_like(candidates[..., 0]).repeat(p, 1)  # (P b, K) row of each prefix
    margins, ego = [], None
    for step_index in range(horizon + road.tail_steps):
        own = step_index < horizon  # a step of the candidates' own: it branches n ways
        if step_index < road.reacting_steps:
            start = commanded(branch(t, n_actions), n_actions, road) if own else t
            frames = [t for _, t in step_frames(start, step_index, b, road)]
            seen = poses(frames)
        else:
            ego = slot(t, 0) if ego is None else ego
            ego = commanded(branch(ego, n_actions), n_actions, road) if own else ego
            start = t  # its ego IDLE: as it was
            frames, egos = [], []
            for _, t in step_frames(start, step_index, b, road, road.late_idm_every):
                ego = step(ego, ego_acceleration(ego, road), road)
                frames.append(t)
                egos.append(ego)
            seen = with_ego(poses(egos), poses(frames))
        t = frames[-1]
        closest = step_margin(seen, envelope, road)
        if own:
            prefix = prefix * n_actions + candidates[..., step_index].repeat(p, 1)
        margins.append(torch.gather(closest, 1, prefix))  # (P b, K)
    return torch.stack(margins, dim=-1).reshape(p, b, k, len(margins))


def commanded(t: Traffic, n_actions: int, road: Road) -> Traffic:
    """A `branch`ed state with each branch's ego command set (`each_action`)."""
    return ego_command(t, each_action(t, n_actions), road)


def each_action(t: Traffic, n_actions: int) -> torch.Tensor:
    """(P b, K) action ids 0..n-1 in turn along the candidates of a `branch`ed state."""
    ids = torch.arange(n_actions, device=t.x.device)
    return ids.repeat(t.x.shape[-1] // n_actions)[None].expand(t.x.shape[1], -1)


def slot(t: Traffic, index: int) -> Traffic:
    """The one-vehicle state of slot `index`."""
    return Traffic(*(v[index:index + 1] for v in vars(t).values()))


def with_ego(ego: Poses, p: Poses) -> Poses:
    """The ego branches (frames, 1, P b, W) among the others of `p` (frames, N, P b, w), w
    dividing W: branch i meets the others of candidate i // (W / w)."""
    parent = torch.arange(ego.x.shape[-1], device=ego.x.device) // (
        ego.x.shape[-1] // p.x.shape[-1])
    return Poses(*(torch.cat([ego_of(e), others(v) if v.dtype == torch.bool
                              else others(v)[..., parent]], dim=-3)
                   for e, v in zip(vars(ego).values(), vars(p).values(), strict=True)))


def replica_hazard(hist: torch.Tensor, hist_mask: torch.Tensor, candidates: torch.Tensor,
                   envelope: tuple[float, float], road: Road = Road(),
                   width: float = 0.1) -> torch.Tensor:
    """(B, K, F + road.tail_steps) per-step event probability: sigmoid((1 - margin) /
    width) of `replica_margins`, averaged over the MOBIL phases."""
    margins = replica_margins(hist, hist_mask, candidates, envelope, road)
    return torch.sigmoid((1.0 - margins) / width).mean(dim=0)


class TrafficReplica(nn.Module):
    """The replica as a planner part: forward(hist (B, H, N, D), hist_mask (B, H, N),
    candidates (B, K, F)) -> the per-step event probability (B, K, F + tail_steps)
    (`replica_hazard`) on a road of `lanes` lanes with the safety `envelope` (length,
    width); reacting_steps, mobil_at_start, late_idm_every and tail_steps as `Road` takes
    them."""

    def __init__(self, lanes: int = 3, envelope: tuple[float, float] = (8.0, 2.5),
                 reacting_steps: int = 3, mobil_at_start: bool = False,
                 late_idm_every: int = 1, tail_steps: int = 0):
        super().__init__()
        if (lanes < 1 or min(envelope) <= 0 or reacting_steps < 0 or late_idm_every < 1
                or tail_steps < 0):
            raise ValueError(f"the replica needs lanes >= 1, a positive envelope, "
                             f"reacting_steps >= 0, late_idm_every >= 1 and tail_steps >= 0, "
                             f"got {lanes}, {envelope}, {reacting_steps}, {late_idm_every}, "
                             f"{tail_steps}")
        self.road = Road(lanes=int(lanes), reacting_steps=int(reacting_steps),
                         mobil_at_start=bool(mobil_at_start), late_idm_every=int(late_idm_every),
                         tail_steps=int(tail_steps))
        self.envelope = (float(envelope[0]), float(envelope[1]))

    def forward(self, hist: torch.Tensor, hist_mask: torch.Tensor,
                candidates: torch.Tensor) -> torch.Tensor:
        return replica_hazard(hist, hist_mask.to(hist.dtype), candidates, self.envelope,
                              self.road)
