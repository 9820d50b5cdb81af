"""The planner's per-decision trace in closed loop, one CSV per episode (no torch).

``TracedPlanner`` drives exactly as ``PlannerPolicy`` and, after each decision, records one
row; the recording happens in ``act`` around the decision, outside the timed part
(``latencies_ms`` does not include it). A row holds (TRACE_COLUMNS, then the wide columns):

- step, mode (planner | fallback), action (executed), plan (the chosen candidate's actions),
  speed (m/s at the decision), crashed (1 on the decision after which the ego collided),
  surprise (m, this decision's reality check; empty when none), latency_ms (planner
  decisions), guard (1 when the lane guard changed the choice), candidates (K scored);
- risk, return, uncertainty of the chosen candidate and, per first action A of
  ACTION_NAMES, risk_A (the lowest collision probability of the candidates starting with A),
  return_A (the highest expected return) and uncertainty_A (the lowest); empty when no
  road candidate starts with A, and on fallback decisions (no candidate is scored);
- tilt: the ego's heading off its lane's direction (rad); lane<i>: each lane centre's
  offset (m) from the ego across the road, at the decision;
- per slot n (0 the ego): x<n>, y<n> where it is, plan_x<n>_<f>, plan_y<n>_<f> where the
  chosen candidate's forecast puts it f steps later (fallback: step 1 only), next_x<n>,
  next_y<n> where it really was at the next decision (after the last step: when the
  episode ended); all in the ego frame at the decision, empty when the slot is absent.

That is enough to redraw the planner's view of any decision (evaluation/planner_view.py)
and to analyse a crash without running the episode again.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import numpy as np

from models.candidates import ACTION_NAMES
from pipeline.planner.policy import PlannerPolicy

TRACE_COLUMNS = ("step", "mode", "action", "plan", "speed", "crashed", "surprise",
                 "latency_ms", "guard", "candidates", "risk", "return", "uncertainty")
TEXT_COLUMNS = ("mode", "action", "plan")
SUMMARY_FIELDS = (("risk", "collision_prob", np.min), ("return", "expected_return", np.max),
                  ("uncertainty", "uncertainty", np.min))


class TracedPlanner(PlannerPolicy):
    """PlannerPolicy recording `rows` (one dict per decision, cleared by reset); call
    `finish(env)` after the episode's last step to complete the last row."""

    def reset(self, rng=None) -> None:
        super().reset(rng)
        self.rows: list[dict] = []
        self.scored = None  # (scores, candidates, best) of the current planner decision

    def pick(self, scores, candidates: np.ndarray) -> int:
        best = super().pick(scores, candidates)
        self.scored = (scores, candidates, best)  # references only: this part is timed
        return best

    def act(self, env) -> int:
        previous, checks, guards = self.pending, len(self.surprises), self.guard_steps
        action = super().act(env)
        self.complete_last(env, previous)
        row = {"step": len(self.rows), "mode": "fallback" if self.in_fallback else "planner",
               "action": ACTION_NAMES[action], "speed": float(env.unwrapped.vehicle.speed),
               "crashed": 0, "guard": int(self.guard_steps > guards),
               "surprise": self.surprises[-1] if len(self.surprises) > checks else math.nan,
               "latency_ms": math.nan if self.in_fallback else self.latencies_ms[-1]}
        self.rows.append(row | self.summary_columns() | self.scene_columns(env)
                         | self.plan_columns())
        self.scored = None
        return action

    def finish(self, env) -> None:
        """Complete the last row with where its slots ended up and whether the ego crashed."""
        self.live.update(env)
        self.complete_last(env, self.pending)

    def complete_last(self, env, pending) -> None:
        """Add next_x<n>, next_y<n> and crashed to the last row; `pending` its forecast."""
        if pending is None or not self.rows:
            return
        _, _, slots, pose = pending
        positions, present = self.live.observed_positions(slots, pose)
        self.rows[-1] |= slot_columns("next_", positions, present)
        self.rows[-1]["crashed"] = int(env.unwrapped.vehicle.crashed)

    def summary_columns(self) -> dict:
        """The candidates' summary of a planner decision (none on a fallback one)."""
        if self.scored is None:
            return {"plan": "", "candidates": 0}
        scores, candidates, best = self.scored
        row = {"plan": " ".join(ACTION_NAMES[a] for a in candidates[best]),
               "candidates": len(candidates)}
        for name, field, reduce in SUMMARY_FIELDS:
            values = np.asarray(getattr(scores, field), dtype=float)
            row[name] = float(values[best])
            for action, action_name in enumerate(ACTION_NAMES):
                starts = candidates[:, 0] == action
                row[f"{name}_{action_name}"] = float(reduce(values[starts])) if starts.any() \
                    else math.nan
        return row

    def plan_columns(self) -> dict:
        """The chosen candidate's forecast of every step (a fallback decision: step 1)."""
        positions, present, _, _ = self.pending
        if self.scored is None:
            return slot_columns("plan_", positions, present, "_1")
        scores, _, best = self.scored
        row = {}
        for step, step_positions in enumerate(scores.positions[best], start=1):  # (N, 2)
            row |= slot_columns("plan_", step_positions, present, f"_{step}")
        return row

    def scene_columns(self, env) -> dict:
        """Lane centres and where each slot is, in the ego frame at this decision."""
        _, present, slots, pose = self.pending
        positions, _ = self.live.observed_positions(slots, pose)
        lanes = {f"lane{i}": offset for i, offset in enumerate(lane_offsets(env.unwrapped))}
        return {"tilt": road_tilt(env.unwrapped)} | lanes | slot_columns("", positions, present)


def lane_offsets(core) -> list[float]:
    """Offset (m) of each lane centre beside the ego's lane from the ego, across the road
    (lane 0 first)."""
    ego = core.vehicle
    network = core.road.network
    lanes = [network.get_lane(index) for index in network.all_side_lanes(ego.lane_index)]
    return [-float(lane.local_coordinates(ego.position)[1]) for lane in lanes]


def road_tilt(core) -> float:
    """The ego's heading off its lane's direction (rad) at its position."""
    ego = core.vehicle
    along, _ = ego.lane.local_coordinates(ego.position)
    return float(ego.heading - ego.lane.heading_at(along))


def slot_columns(prefix: str, positions: np.ndarray, present: np.ndarray,
                 suffix: str = "") -> dict:
    """{<prefix>x<n><suffix>, <prefix>y<n><suffix>} per slot n of positions (N, 2); NaN
    for the slots not present (N,)."""
    row = {}
    for n, (xy, here) in enumerate(zip(positions, present, strict=True)):
        row[f"{prefix}x{n}{suffix}"] = float(xy[0]) if here else math.nan
        row[f"{prefix}y{n}{suffix}"] = float(xy[1]) if here else math.nan
    return row


def columns_of(rows: list[dict]) -> list[str]:
    """TRACE_COLUMNS first, then every other column in the order rows first hold it."""
    seen = dict.fromkeys(TRACE_COLUMNS)
    for row in rows:
        seen |= dict.fromkeys(row)
    return list(seen)


def cell(value) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.4f}"
    return str(value)


def trace_csv(rows: list[dict]) -> str:
    """The rows as CSV text; absent values (NaN, a column a row lacks) are empty."""
    columns = columns_of(rows)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([cell(row.get(name, math.nan)) for name in columns])
    return out.getvalue()


def read_trace(path: str | Path) -> list[dict]:
    """A trace CSV back as rows: text columns as str, the others as float (NaN if empty)."""
    path = Path(path)
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or "step" not in reader.fieldnames:
            raise ValueError(f"{path} is not a planner trace (no 'step' column)")
        return [{k: v if k in TEXT_COLUMNS else (float(v) if v else math.nan)
                 for k, v in row.items()} for row in reader]
