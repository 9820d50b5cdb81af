"""Closed-loop episodes in highway-env and their summary (no torch on this path).

``run_episodes`` drives one fresh policy per episode (``policy_factory()``), reset with
the same per-seed random stream as data collection, records how an episode's collision
happened (``crash_kind``), and keeps what a policy exposes of the optional per-episode
stats: ``latencies_ms`` (per decision), ``surprises`` (per checked decision),
``fallback_steps`` and ``guard_steps``; a policy with a ``finish(env)`` method is told when
its episode has ended (evaluation/trace.py completes its last row). Optionally the first
episodes are rendered offscreen (``render_mode="rgb_array"``, one image per decision step)
into a GIF written atomically.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.highway_source import check_action, make_env, policy_rng


@dataclass(frozen=True)
class EpisodeResult:
    """One episode: `steps` decisions; `speeds` the ego speed (m/s) after each of them;
    `crash` how the ego collided (`crash_kind`; "" without a collision).

    latencies_ms, surprises, fallback_steps, guard_steps are None when the policy does not
    expose them.
    """

    seed: int
    steps: int
    collided: bool
    truncated: bool
    total_return: float
    speeds: tuple[float, ...]
    actions: tuple[int, ...]
    latencies_ms: tuple[float, ...] | None = None
    surprises: tuple[float, ...] | None = None
    fallback_steps: int | None = None
    guard_steps: int | None = None
    crash: str = ""


CRASH_KINDS = ("front", "rear", "side", "other")
SIDE_OFFSET = 1.0  # m: a partner this far to the side (vehicles are 2 m wide) is lateral


def crash_kind(core) -> str:
    """How the crashed ego of the highway-env `core` met the nearest other crashed
    vehicle, in the frame of the ego's lane: "front" (the ego ran into it: ahead, less
    than SIDE_OFFSET to the side), "rear" (it ran into the ego from behind), "side" (a
    lateral contact: a lane change by either); "" when the ego did not crash, "other"
    when no crashed partner is on the road (an obstacle, say)."""
    ego = core.vehicle
    if not ego.crashed:
        return ""
    others = [v for v in core.road.vehicles if v is not ego and v.crashed]
    if not others:
        return "other"
    partner = min(others, key=lambda v: float(np.linalg.norm(v.position - ego.position)))
    ego_s, ego_r = ego.lane.local_coordinates(ego.position)
    partner_s, partner_r = ego.lane.local_coordinates(partner.position)
    if abs(partner_r - ego_r) >= SIDE_OFFSET:
        return "side"
    return "front" if partner_s > ego_s else "rear"


def run_episodes(env_id: str, env_config: dict | None, policy_factory: Callable[[], object],
                 seeds: Sequence[int], max_steps: int | None = None,
                 gif_path: str | os.PathLike | None = None,
                 gif_episodes: int = 1) -> list[EpisodeResult]:
    """Run one episode per seed; with `gif_path` the first `gif_episodes` are rendered."""
    seeds = [int(seed) for seed in seeds]
    n_gif = min(gif_episodes, len(seeds)) if gif_path is not None else 0
    results, images = [], []
    if n_gif:
        offscreen_video_driver()
        env = make_env(env_id, env_config, render=True)
        try:
            for seed in seeds[:n_gif]:
                results.append(run_episode(env, policy_factory(), seed, max_steps, images))
        finally:
            env.close()
        write_gif(gif_path, images, fps=env.unwrapped.config["policy_frequency"])
    env = make_env(env_id, env_config)
    try:
        results += [run_episode(env, policy_factory(), seed, max_steps)
                    for seed in seeds[n_gif:]]
    finally:
        env.close()
    return results


def offscreen_video_driver() -> None:
    """Let pygame draw without a display. SDL's "offscreen" driver, not "dummy":
    highway-env's viewer skips all drawing (blank frames) when the driver is "dummy"."""
    if os.environ.get("SDL_VIDEODRIVER") in (None, "", "dummy"):
        os.environ["SDL_VIDEODRIVER"] = "offscreen"


def run_episode(env, policy, seed: int, max_steps: int | None = None,
                images: list | None = None) -> EpisodeResult:
    """One episode of `policy` on the RecordingEnv `env`; appends frames to `images`."""
    env.reset(seed=seed)
    policy.reset(policy_rng(seed))
    core = env.unwrapped
    speeds, actions, total, terminated, truncated = [], [], 0.0, False, False
    if images is not None:
        images.append(env.render())
    while not (terminated or truncated) and (max_steps is None or len(actions) < max_steps):
        action = check_action(policy.act(env), policy)
        _, reward, terminated, truncated, _ = env.step(action)
        actions.append(action)
        speeds.append(float(core.vehicle.speed))
        total += float(reward)
        if images is not None:
            images.append(env.render())
    if hasattr(policy, "finish"):  # a policy that traces its decisions completes the last
        policy.finish(env)
    return EpisodeResult(
        seed=seed, steps=len(actions), collided=bool(core.vehicle.crashed),
        truncated=bool(truncated) or not terminated, total_return=total,
        speeds=tuple(speeds), actions=tuple(actions), crash=crash_kind(core),
        **policy_stats(policy))


def policy_stats(policy) -> dict:
    """The optional per-episode stats a policy exposes (see the module docstring)."""
    stats = {}
    for name in ("latencies_ms", "surprises"):
        if hasattr(policy, name):
            stats[name] = tuple(float(x) for x in getattr(policy, name))
    for name in ("fallback_steps", "guard_steps"):
        if hasattr(policy, name):
            stats[name] = int(getattr(policy, name))
    return stats


def summarise(results: Sequence[EpisodeResult]) -> dict[str, float]:
    """Flat figures over episodes: episodes, collision_rate with collision_low and
    collision_high (its 95% Wilson interval), mean_speed (m/s, over all decision steps),
    mean_return, mean_length (decisions), crash/<kind> (the share of the
    episodes whose collision was of each of CRASH_KINDS); plus fallback_rate (fallback
    steps / steps), guard_rate (guard steps / steps), latency_p50_ms, latency_p99_ms and
    surprise_mean when exposed."""
    if not results:
        raise ValueError("cannot summarise zero episodes")
    from evaluation.metrics import wilson_interval

    speeds = np.concatenate([np.asarray(r.speeds, dtype=float) for r in results])
    collisions = sum(r.collided for r in results)
    low, high = wilson_interval(collisions, len(results))
    summary = {
        "episodes": float(len(results)),
        "collision_rate": collisions / len(results),
        "collision_low": low,
        "collision_high": high,
        "mean_speed": float(speeds.mean()) if len(speeds) else float("nan"),
        "mean_return": float(np.mean([r.total_return for r in results])),
        "mean_length": float(np.mean([r.steps for r in results])),
    }
    for kind in CRASH_KINDS:
        summary[f"crash/{kind}"] = float(np.mean([r.crash == kind for r in results]))
    return {**summary, **policy_summary(results)}


def policy_summary(results: Sequence[EpisodeResult]) -> dict[str, float]:
    summary = {}
    for name in ("fallback", "guard"):
        exposed = [r for r in results if getattr(r, f"{name}_steps") is not None]
        if exposed:
            steps = max(sum(r.steps for r in exposed), 1)
            summary[f"{name}_rate"] = sum(getattr(r, f"{name}_steps") for r in exposed) / steps
    latencies = [x for r in results if r.latencies_ms for x in r.latencies_ms]
    if latencies:
        summary["latency_p50_ms"] = float(np.percentile(latencies, 50))
        summary["latency_p99_ms"] = float(np.percentile(latencies, 99))
    surprises = np.array([x for r in results if r.surprises for x in r.surprises])
    if np.isfinite(surprises).any():
        summary["surprise_mean"] = float(np.nanmean(surprises))
    return summary


EPISODE_COLUMNS = ("policy", "seed", "steps", "collided", "crash", "last_action", "mean_speed",
                   "return", "fallback_steps", "guard_steps")


def episodes_csv(results: dict[str, Sequence[EpisodeResult]]) -> str:
    """One CSV row per episode of each policy (`results`: policy name -> its episodes):
    EPISODE_COLUMNS, `last_action` the name of the episode's last action."""
    from models.candidates import ACTION_NAMES

    lines = [",".join(EPISODE_COLUMNS)]
    for name, episodes in results.items():
        for r in episodes:
            speed = f"{np.mean(r.speeds):.3f}" if r.speeds else ""
            last = ACTION_NAMES[r.actions[-1]] if r.actions else ""
            counts = ["" if n is None else str(n) for n in (r.fallback_steps, r.guard_steps)]
            lines.append(",".join([name, str(r.seed), str(r.steps), str(int(r.collided)),
                                   r.crash, last, speed, f"{r.total_return:.4f}", *counts]))
    return "\n".join(lines) + "\n"


def write_gif(path: str | os.PathLike, images: list[np.ndarray], fps: float) -> Path:
    """Write RGB frames (H, W, 3) as a looping GIF, atomically (temp file, then rename)."""
    import imageio.v2 as imageio

    path = Path(path)
    if not images:
        raise ValueError(f"no frames to write to {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(suffix=".gif", dir=path.parent)
    os.close(handle)
    try:
        imageio.mimsave(tmp, [np.asarray(image) for image in images], format="GIF",
                        duration=1000.0 / fps, loop=0)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path
