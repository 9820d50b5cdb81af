"""Tracks -> scenes -> one episode per ego, with inferred meta-actions and near-miss labels.

A recording's grid frames are cut into segments (stretches where some vehicle is in view)
and each segment into scenes of `scene_seconds`: the scenes are the time ranges that the
train/val/test split keeps apart. In a scene, every vehicle in view for at least
`ego_min_seconds` becomes the ego of an episode of its own (or a seeded sample of
`egos_per_scene` of them). The episode spans the ego's frames and keeps every vehicle that
comes within `neighbour_radius` of it.

Meta-action of decision step k (frames k*F .. (k+1)*F, F = frequency / policy_frequency,
step duration D = F / frequency), from the ego's own motion:
- lateral = displacement over the step projected on the road's right-hand normal. The road
  direction is the median heading, modulo 180 degrees, of the ego and the moving vehicles
  within `road_radius` of it over `road_window` seconds centred on the step: robust to
  the ego's own lane change (its heading tilts for a few seconds only) and to a few
  lane-changing neighbours, and it follows a curving road. lateral / D <= -lateral_speed:
  LANE_LEFT; >= lateral_speed: LANE_RIGHT;
- otherwise speed change / D >= acceleration: FASTER; <= -acceleration: SLOWER;
- otherwise IDLE.
Near miss (optional label): the ego's time to collision with a vehicle ahead or behind
that overlaps it sideways (in the ego's heading frame, boxes of the mapped length and
width, constant velocities) falls below `near_miss_ttc` at a frame of the step.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.candidates import FASTER, IDLE, LANE_LEFT, LANE_RIGHT, SLOWER
from pipeline.recorded.tracks import MIN_HEADING_SPEED, Track

POLICY = "recorded"  # steps.policy of recorded episodes


@dataclass(frozen=True)
class Scene:
    """One time range of a recording held densely; vehicles sorted by id."""

    start: int  # grid frame of scene frame 0
    states: np.ndarray  # (T, V, 6) x, y, vx, vy, heading, lane
    present: np.ndarray  # (T, V)
    ids: np.ndarray  # (V,) int
    size: np.ndarray  # (V, 2) length, width in m


@dataclass(frozen=True)
class SceneRules:
    """The ingest.recorded settings that cut episodes and label them."""

    frequency: int
    frames_per_step: int
    ego_min_frames: int
    egos_per_scene: int
    neighbour_radius: float
    lateral_speed: float
    acceleration: float
    road_radius: float
    road_window: float
    near_miss_ttc: float

    @property
    def step_seconds(self) -> float:
        return self.frames_per_step / self.frequency


# ---------------------------------------------------------------- cutting


def segments(tracks: list[Track]) -> list[tuple[int, int]]:
    """[first, stop) grid-frame ranges in which at least one track is present."""
    if not tracks:
        return []
    origin = min(t.first for t in tracks)
    covered = np.zeros(max(t.last for t in tracks) - origin + 2, dtype=bool)
    for track in tracks:
        covered[track.first - origin:track.last - origin + 1] = True
    edges = np.flatnonzero(np.diff(np.concatenate([[False], covered])).astype(bool))
    return [(int(a) + origin, int(b) + origin) for a, b in zip(edges[::2], edges[1::2],
                                                               strict=True)]


def scene_ranges(tracks: list[Track], frames_per_scene: int) -> list[tuple[int, int]]:
    """Consecutive [start, stop) ranges of at most frames_per_scene inside each segment."""
    return [(a, min(a + frames_per_scene, stop)) for first, stop in segments(tracks)
            for a in range(first, stop, frames_per_scene)]


def build_scene(tracks: list[Track], start: int, stop: int) -> Scene:
    """Dense states of the tracks overlapping [start, stop)."""
    inside = sorted((t for t in tracks if t.first < stop and t.last >= start), key=lambda t: t.id)
    states = np.zeros((stop - start, len(inside), 6))
    present = np.zeros((stop - start, len(inside)), dtype=bool)
    for v, track in enumerate(inside):
        a, b = max(track.first, start), min(track.last + 1, stop)
        states[a - start:b - start, v] = track.states[a - track.first:b - track.first]
        present[a - start:b - start, v] = True
    size = np.array([[t.length, t.width] for t in inside]).reshape(-1, 2)
    return Scene(start, states, present, np.array([t.id for t in inside], np.int64), size)


def choose_egos(scene: Scene, rules: SceneRules, rng: np.random.Generator) -> np.ndarray:
    """Vehicle indices in view for at least ego_min_frames, sampled down to egos_per_scene."""
    eligible = np.flatnonzero(scene.present.sum(0) >= rules.ego_min_frames)
    if 0 < rules.egos_per_scene < len(eligible):
        eligible = np.sort(rng.choice(eligible, rules.egos_per_scene, replace=False))
    return eligible


# ---------------------------------------------------------------- meta-actions


def fold(angle: np.ndarray) -> np.ndarray:
    """Angles wrapped to (-pi/2, pi/2]: a heading and its opposite fold onto one value."""
    return np.pi / 2 - np.mod(np.pi / 2 - angle, np.pi)


def road_direction(scene: Scene, ego: int, t0: int, t1: int, rules: SceneRules) -> float:
    """Median heading (modulo pi, relative to the ego's at t0) of the ego and the moving
    vehicles within road_radius of it, over `road_window` seconds centred on the step."""
    half = round(rules.road_window * rules.frequency / 2)
    mid = (t0 + t1) // 2
    span = slice(max(0, mid - half), min(len(scene.states), mid + half + 1))
    states, present = scene.states[span], scene.present[span]
    offset = states[..., :2] - states[:, ego:ego + 1, :2]
    use = (present & present[:, ego:ego + 1] & (np.hypot(*np.moveaxis(offset, -1, 0))
                                                <= rules.road_radius)
           & (np.hypot(states[..., 2], states[..., 3]) >= MIN_HEADING_SPEED))
    reference = float(scene.states[t0, ego, 4])
    if not use.any():
        return reference
    return reference + float(np.median(fold(states[..., 4][use] - reference)))


def step_action(scene: Scene, ego: int, t0: int, t1: int, rules: SceneRules) -> int:
    """The meta-action of the ego's motion from frame t0 to t1 (module docstring)."""
    direction = road_direction(scene, ego, t0, t1, rules)
    dx, dy = scene.states[t1, ego, :2] - scene.states[t0, ego, :2]
    lateral = (-np.sin(direction) * dx + np.cos(direction) * dy) / rules.step_seconds
    if lateral <= -rules.lateral_speed:
        return LANE_LEFT
    if lateral >= rules.lateral_speed:
        return LANE_RIGHT
    speeds = np.hypot(scene.states[[t0, t1], ego, 2], scene.states[[t0, t1], ego, 3])
    change = (speeds[1] - speeds[0]) / rules.step_seconds
    if change >= rules.acceleration:
        return FASTER
    if change <= -rules.acceleration:
        return SLOWER
    return IDLE


# ---------------------------------------------------------------- near misses


def time_to_collision(scene: Scene, ego: int) -> np.ndarray:
    """(T,) smallest time to collision of the ego with a sideways-overlapping vehicle ahead
    or behind at each frame (constant velocities, boxes in the ego's heading frame); inf
    when none is closing in, 0 when boxes already overlap."""
    s, h = scene.states, scene.states[:, ego, 4:5]  # (T, V, 6), (T, 1)
    rel = s[..., :4] - s[:, ego:ego + 1, :4]  # (T, V, 4)
    c, n = np.cos(h), np.sin(h)
    along, across = c * rel[..., 0] + n * rel[..., 1], -n * rel[..., 0] + c * rel[..., 1]
    closing = -np.sign(along) * (c * rel[..., 2] + n * rel[..., 3])  # rate |along| shrinks
    reach = 0.5 * (scene.size[ego] + scene.size)  # (V, 2) half length, half width sums
    gap = np.abs(along) - reach[:, 0]
    overlap = scene.present & scene.present[:, ego:ego + 1] & (np.abs(across) < reach[:, 1])
    overlap[:, ego] = False
    with np.errstate(divide="ignore", invalid="ignore"):
        ttc = np.where(gap <= 0, 0.0, np.where(closing > 0, gap / closing, np.inf))
    return np.where(overlap, ttc, np.inf).min(axis=1, initial=np.inf)


def near_misses(ttc: np.ndarray, first: int, steps: int, frames_per_step: int,
                threshold: float) -> np.ndarray:
    """(K,) whether the TTC drops below threshold in frames first+k*F+1 .. first+(k+1)*F."""
    frames = first + np.arange(steps)[:, None] * frames_per_step \
        + np.arange(1, frames_per_step + 1)[None, :]  # (K, F)
    return (ttc[frames] < threshold).any(axis=1)


# ---------------------------------------------------------------- episodes


def neighbours(scene: Scene, ego: int, first: int, last: int, radius: float) -> np.ndarray:
    """Vehicle indices (ego included) that come within radius of the ego in [first, last]."""
    span = slice(first, last + 1)
    offset = scene.states[span, :, :2] - scene.states[span, ego:ego + 1, :2]
    close = scene.present[span] & (np.hypot(offset[..., 0], offset[..., 1]) <= radius)
    keep = close.any(axis=0)
    keep[ego] = True
    return np.flatnonzero(keep)


def ego_steps(scene: Scene, ego: int, first: int, last: int, episode: int,
              rules: SceneRules) -> dict[str, np.ndarray]:
    """Steps-table columns of one ego episode (frames counted from `first`)."""
    f = rules.frames_per_step
    count = (last - first) // f
    starts = first + f * np.arange(count)
    actions = [step_action(scene, ego, t0, t0 + f, rules) for t0 in starts]
    near = np.zeros(count, dtype=bool)
    if rules.near_miss_ttc > 0:
        near = near_misses(time_to_collision(scene, ego), first, count, f, rules.near_miss_ttc)
    return {"episode": np.full(count, episode, np.int64), "step": np.arange(count),
            "first_frame": f * np.arange(count), "action": np.asarray(actions, np.int8),
            "reward": np.zeros(count), "collision": near,
            "terminated": np.zeros(count, bool), "truncated": np.arange(count) == count - 1,
            "policy": np.full(count, POLICY)}


def ego_frames(scene: Scene, ego: int, first: int, last: int, episode: int,
               rules: SceneRules) -> dict[str, np.ndarray]:
    """Frames-table columns of one ego episode, sorted by frame then vehicle id."""
    kept = neighbours(scene, ego, first, last, rules.neighbour_radius)
    present = scene.present[first:last + 1, kept]
    frame, slot = np.nonzero(present)  # row-major: by frame, then by id (vehicles sorted)
    vehicle = kept[slot]
    states = scene.states[first + frame, vehicle]  # (R, 6)
    return {"episode": np.full(len(frame), episode, np.int64), "frame": frame,
            "time": (scene.start + first + frame) / rules.frequency,
            "vehicle_id": scene.ids[vehicle], "is_ego": vehicle == ego,
            "x": states[:, 0], "y": states[:, 1], "vx": states[:, 2], "vy": states[:, 3],
            "heading": states[:, 4], "length": scene.size[vehicle, 0],
            "width": scene.size[vehicle, 1], "lane": states[:, 5],
            "crashed": np.zeros(len(frame), bool)}


def ego_episode(scene: Scene, ego: int, episode: int,
                rules: SceneRules) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(frames, steps) columns of the episode of `ego` over its frames in the scene."""
    frames = np.flatnonzero(scene.present[:, ego])
    first, last = int(frames[0]), int(frames[-1])
    return (ego_frames(scene, ego, first, last, episode, rules),
            ego_steps(scene, ego, first, last, episode, rules))
