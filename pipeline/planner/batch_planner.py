"""The ONNX planner driving a batch of EnvPool episodes (numpy + onnxruntime, no torch).

``BatchPlanner`` keeps one ``PlannerPolicy`` per environment slot of a batch, all over one
scorer: each slot has its own live scene, reality check, fallback and per-episode stats,
so an episode's decisions depend on its own frames only, not on the batch it runs in.

- ``observe(snapshot, frame)``, every simulation frame: each environment's rows
  (``envpool_source.frame_rows``: the dataset's columns, every vehicle 5 m x 2 m) are
  pushed into its live scene, which cuts the same history features from them as from a
  highway-env ``RecordingEnv`` (pipeline/planner/live_scene.py);
- ``act(slots, scenes)``, at decision frames: ``PlannerPolicy.decide`` per slot with an
  ``EnvpoolRoad`` that reads the batch's ``Scenes`` where a ``HighwayRoad`` reads
  highway-env: road pruning from the target lane and the lane count
  (``evaluation.policies.road_mask_at``), the lane guard's gaps from ``lane_views`` and
  the rule fallback from ``rule_actions`` (evaluation/batch_policies.py, the same gaps and
  rule as highway-env's neighbour search).

The exported graph scores one scene per call (hist (1, H, N, D), candidates (K, F)), so
the scenes of a decision frame are scored one after another: one onnxruntime run per
scene, as on highway-env; the batch saves the simulator's time, not the scorer's.
"""

from __future__ import annotations

import numpy as np

from evaluation.batch_policies import Scenes, lane_views, rule_actions
from evaluation.policies import LaneView, RuleBasedPolicy, road_mask_at
from models.candidates import LANE_LEFT, LANE_RIGHT
from pipeline.envpool_source import EnvpoolSource, Snapshot, frame_rows
from pipeline.planner.lane_guard import allowed_first
from pipeline.planner.policy import PlannerPolicy, check_period

VIEW_FIELDS = ("front_gap", "front_ttc", "rear_gap", "rear_ttc", "rear_speed")


def scene_row(scenes: Scenes, row: int) -> Scenes:
    """Row `row` of `scenes` as a one-scene Scenes."""
    pick = slice(row, row + 1)
    return Scenes(x=scenes.x[pick], y=scenes.y[pick], speed=scenes.speed[pick],
                  present=scenes.present[pick], target_lane=scenes.target_lane[pick],
                  lanes=scenes.lanes,
                  length=None if scenes.length is None else scenes.length[pick])


class EnvpoolRoad:
    """What the planner reads of one EnvPool scene beside its history (the counterpart of
    ``pipeline.planner.policy.HighwayRoad``); `scene` is a one-row Scenes."""

    def __init__(self, scene: Scenes) -> None:
        self.scene = scene
        self.lane, self.lanes = int(scene.target_lane[0]), int(scene.lanes)

    def on_road(self, candidates: np.ndarray) -> np.ndarray:
        return np.asarray(candidates)[road_mask_at(candidates, self.lane, self.lanes)]

    def guard_mask(self, guard, candidates: np.ndarray) -> np.ndarray:
        return allowed_first(guard.refused(self.lane_views()), candidates)

    def lane_views(self) -> dict[int, LaneView]:
        """The ego's view of each adjacent lane that exists, by the action entering it."""
        views = {}
        for action, target in ((LANE_LEFT, self.lane - 1), (LANE_RIGHT, self.lane + 1)):
            if 0 <= target < self.lanes:
                seen = lane_views(self.scene, np.array([target]))
                views[action] = LaneView(*(float(getattr(seen, f)[0]) for f in VIEW_FIELDS))
        return views

    def fallback_action(self, fallback) -> int:
        if not isinstance(fallback, RuleBasedPolicy):
            raise ValueError(f"the EnvPool closed loop falls back on the rule policy only, "
                             f"got {type(fallback).__name__}")
        return int(rule_actions(self.scene, fallback)[0])


class BatchPlanner:
    """One PlannerPolicy per slot (`policies`, each reset with its episode's generator)
    driving the environments of an EnvpoolSource batch; see the module docstring."""

    def __init__(self, source: EnvpoolSource, policies: list[PlannerPolicy]) -> None:
        for policy in policies:
            check_period(source.simulation_frequency, source.policy_frequency, policy.scorer)
        self.policies = policies

    def observe(self, snapshot: Snapshot, frame: int) -> None:
        """Push frame `frame` of every environment in `snapshot` into its live scene."""
        rows = frame_rows(snapshot, frame)
        for env, start, count in zip(snapshot.env_ids, snapshot.starts(), snapshot.counts,
                                     strict=True):
            self.policies[env].live.push(rows[start:start + count])

    def act(self, slots: np.ndarray, scenes: Scenes) -> np.ndarray:
        """(len(slots),) the planner's action in each scene (row i of `scenes` is slot
        slots[i])."""
        return np.array([self.policies[slot].decide(EnvpoolRoad(scene_row(scenes, row)))
                         for row, slot in enumerate(slots)], dtype=np.int64)
