"""Ingest recorded trajectories (highD, NGSIM, any CSV/Parquet with a column mapping).

`ingest_recorded(out_dir, cfg, seed)` reads every file that `ingest.recorded.path` names
(each file is one recording), turns it into tracks on a common grid
(pipeline/recorded/tracks.py), cuts scenes and one episode per ego
(pipeline/recorded/scenes.py), and writes the drivecast dataset (schema 1) with the
pipeline/dataset.py writers: shards written atomically, `dataset.json` marked complete
last. The manifest's `recorded` key holds what differs from simulator data: collision
labels unknown (or near misses), whether lanes are known, the scene (time range) of every
episode, which the train/val/test split keeps apart.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from models.candidates import ACTION_NAMES
from pipeline.dataset import FRAME_COLUMNS, STEP_COLUMNS, write_manifest, write_shard
from pipeline.recorded.mapping import Mapping, RecordedError, check_files
from pipeline.recorded.read import read_recording
from pipeline.recorded.scenes import (
    SceneRules,
    build_scene,
    choose_egos,
    ego_episode,
    scene_ranges,
)
from pipeline.recorded.tracks import TrackStats, build_tracks


def check_recorded(cfg) -> tuple[Mapping, list[Path]]:
    """Every check possible before reading data: numbers, mapping, files and headers."""
    positive = {"frequency": cfg.frequency, "policy_frequency": cfg.policy_frequency,
                "max_gap": cfg.max_gap, "scene_seconds": cfg.scene_seconds,
                "ego_min_seconds": cfg.ego_min_seconds, "scenes_per_shard": cfg.scenes_per_shard,
                "neighbour_radius": cfg.neighbour_radius, "road_radius": cfg.road_radius,
                "road_window": cfg.road_window,
                "lateral_speed": cfg.lateral_speed, "acceleration": cfg.acceleration}
    for key, value in positive.items():
        if not value > 0:
            raise RecordedError(f"config key 'ingest.recorded.{key}' must be > 0, got {value}")
    for key in ("egos_per_scene", "near_miss_ttc"):
        if getattr(cfg, key) < 0:
            raise RecordedError(f"config key 'ingest.recorded.{key}' must be >= 0, "
                                f"got {getattr(cfg, key)}")
    if cfg.frequency % cfg.policy_frequency:
        raise RecordedError(f"ingest.recorded.frequency ({cfg.frequency} Hz) must be a multiple "
                            f"of ingest.recorded.policy_frequency ({cfg.policy_frequency} Hz)")
    if cfg.ego_min_seconds * cfg.policy_frequency < 1:
        raise RecordedError(f"config key 'ingest.recorded.ego_min_seconds' must cover one "
                            f"decision step ({1 / cfg.policy_frequency:g} s), got "
                            f"{cfg.ego_min_seconds}")
    return check_files(cfg)


def scene_rules(cfg) -> SceneRules:
    return SceneRules(
        frequency=cfg.frequency, frames_per_step=cfg.frequency // cfg.policy_frequency,
        ego_min_frames=round(cfg.ego_min_seconds * cfg.frequency) + 1,
        egos_per_scene=cfg.egos_per_scene, neighbour_radius=cfg.neighbour_radius,
        lateral_speed=cfg.lateral_speed, acceleration=cfg.acceleration,
        road_radius=cfg.road_radius, road_window=cfg.road_window,
        near_miss_ttc=cfg.near_miss_ttc)


class ShardWriter:
    """Collects episodes and writes a shard every `scenes_per_shard` scenes."""

    def __init__(self, out_dir: Path, scenes_per_shard: int):
        self.out_dir, self.per_shard = out_dir, scenes_per_shard
        self.frames: list[dict] = []
        self.steps: list[dict] = []
        self.scenes, self.entries = 0, []

    def add(self, frames: dict, steps: dict) -> None:
        self.frames.append(frames)
        self.steps.append(steps)

    def end_scene(self) -> None:
        self.scenes += 1
        if self.scenes % self.per_shard == 0:
            self.flush()

    def flush(self) -> None:
        if not self.steps:
            return
        frames = {k: np.concatenate([f[k] for f in self.frames]) for k in FRAME_COLUMNS}
        steps = {k: np.concatenate([s[k] for s in self.steps]) for k in STEP_COLUMNS}
        self.entries.append(write_shard(self.out_dir, len(self.entries), frames, steps))
        self.frames, self.steps = [], []


class Tally:
    """Running figures of the ingest summary."""

    def __init__(self):
        self.tracks = TrackStats()
        self.actions = np.zeros(len(ACTION_NAMES), np.int64)
        self.frames = self.near_misses = 0
        self.groups: list[int] = []  # scene index of each episode
        self.scenes: list[dict] = []

    def add_tracks(self, stats: TrackStats) -> None:
        for name in ("rows", "tracks", "gap_splits", "dropped"):
            setattr(self.tracks, name, getattr(self.tracks, name) + getattr(stats, name))

    def add_episode(self, frames: dict, steps: dict) -> None:
        self.groups.append(len(self.scenes))
        self.frames += len(frames["frame"])
        self.actions += np.bincount(steps["action"], minlength=len(ACTION_NAMES))
        self.near_misses += int(steps["collision"].sum())

    def summary(self, recordings: int, elapsed: float, near_miss: bool) -> dict[str, float]:
        steps = int(self.actions.sum())
        figures = {"recordings": recordings, "rows": self.tracks.rows,
                   "tracks": self.tracks.tracks, "gap_splits": self.tracks.gap_splits,
                   "tracks_dropped": self.tracks.dropped, "scenes": len(self.scenes),
                   "episodes": len(self.groups), "steps": steps, "frames": self.frames,
                   "elapsed": elapsed}
        figures |= {f"action_share/{name}": float(n / max(steps, 1))
                    for name, n in zip(ACTION_NAMES, self.actions, strict=True)}
        if near_miss:
            figures["near_miss_rate"] = self.near_misses / max(steps, 1)
        return figures


def ingest_file(path: Path, index: int, mapping: Mapping, cfg, seed: int, writer: ShardWriter,
                tally: Tally) -> None:
    """Read one recording and add its scenes' ego episodes to the writer."""
    rows = read_recording(path, mapping)
    tracks, stats = build_tracks(rows, mapping, cfg.max_gap, cfg.frequency)
    tally.add_tracks(stats)
    rules = scene_rules(cfg)
    for start, stop in scene_ranges(tracks, round(cfg.scene_seconds * cfg.frequency)):
        scene = build_scene(tracks, start, stop)
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(index, start)))
        egos = choose_egos(scene, rules, rng)
        if len(egos) == 0:
            continue
        for ego in egos:
            frames, steps = ego_episode(scene, int(ego), len(tally.groups), rules)
            tally.add_episode(frames, steps)
            writer.add(frames, steps)
        tally.scenes.append({"recording": path.name, "start": start / cfg.frequency,
                             "end": (stop - 1) / cfg.frequency})
        writer.end_scene()


def recorded_manifest(cfg, mapping: Mapping, files: list[Path], tally: Tally) -> dict:
    """The manifest's `recorded` key (see pipeline.dataset.RECORDED_KEY)."""
    return {"collision_labels": "near_miss" if cfg.near_miss_ttc > 0 else "unknown",
            "near_miss_ttc": cfg.near_miss_ttc, "lanes": mapping.has("lane"),
            "files": [str(p) for p in files], "preset": cfg.preset,
            "columns": mapping.columns, "scenes": tally.scenes,
            "episode_groups": tally.groups}


def ingest_recorded(out_dir: str | Path, cfg, seed: int) -> dict[str, float]:
    """Build the dataset directory `out_dir` (new or empty) from `cfg` (an ingest.recorded
    section)."""
    start = time.perf_counter()
    mapping, files = check_recorded(cfg)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if any(out_dir.iterdir()):  # the ingest stage is not resumable: it gets a fresh directory
        raise RecordedError(f"{out_dir}: is not empty; recorded data is converted into a "
                            f"fresh directory")
    header = {"env_id": f"recorded:{cfg.preset or 'generic'}", "env_config": {},
              "simulation_frequency": cfg.frequency, "policy_frequency": cfg.policy_frequency}
    write_manifest(out_dir, shards=[], complete=False, **header)
    writer, tally = ShardWriter(out_dir, cfg.scenes_per_shard), Tally()
    for index, path in enumerate(files):
        ingest_file(path, index, mapping, cfg, seed, writer, tally)
    writer.flush()
    if not tally.groups:
        raise RecordedError(f"ingest.recorded.path '{cfg.path}': no vehicle stays in view for "
                            f"ingest.recorded.ego_min_seconds ({cfg.ego_min_seconds} s) in any "
                            f"scene, so there is no ego episode")
    write_manifest(out_dir, shards=writer.entries, complete=True, seed=seed,
                   recorded=recorded_manifest(cfg, mapping, files, tally), **header)
    return tally.summary(len(files), time.perf_counter() - start, cfg.near_miss_ttc > 0)
