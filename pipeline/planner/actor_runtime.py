"""The exported actor as a driving policy (numpy + onnxruntime only, no torch).

An exported actor is two files: ``actor.onnx`` (histories (B, H, N, D) and masks (B, H, N)
in, action probabilities (B, A) out) and its sidecar ``actor.onnx.json`` (ACTOR_KEYS).
``ActorSession.load`` checks both against each other and refuses anything it cannot trust
with a one-line ``ScorerError`` naming the file.

``ActorDriver`` drives highway-env with it: each decision cuts the live history (the same
features as the training windows), drops the actions that would leave the road and takes
the most probable of the rest. ``ActorGuidedPlanner`` is the planner scoring only the
candidates whose first action is among the actor's `top_actions` most probable (the
actor proposes, the planner verifies).
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import numpy as np

from evaluation.policies import as_generator
from pipeline.artifacts import write_text_atomic
from pipeline.planner.live_scene import LiveScene
from pipeline.planner.policy import HighwayRoad, PlannerPolicy, check_period
from pipeline.planner.scorer import (
    ScorerError,
    as_array,
    check_keys_and_counts,
    onnx_sha256,
    open_session,
    plain,
    read_json_object,
    sidecar_path,
)

ACTOR_FILE = "actor.onnx"
ACTOR_INPUTS = ("hist", "hist_mask")
ACTOR_OUTPUTS = ("probs",)
ACTOR_VERSION = 1
ACTOR_KEYS = (
    "format_version",  # int, ACTOR_VERSION
    "kind",  # "actor"
    "action_names",  # list[str], index = action id
    "history",  # H frames of history
    "vehicles",  # N slots (slot 0 = ego)
    "obs_dim",  # D features per vehicle
    "dt",  # seconds per decision step
    "frames_per_step",  # simulation frames per decision step
    "opset",  # ONNX opset of the default domain
    "tolerance",  # max abs torch-vs-onnxruntime difference accepted at export
    "onnx_sha256",  # hex sha256 of the ONNX file it was written for
)
POSITIVE_INTS = ("history", "vehicles", "obs_dim", "frames_per_step", "opset")


def write_actor_sidecar(onnx_path: str | os.PathLike, **fields) -> Path:
    """Write the sidecar of the actor at ``onnx_path`` (every ACTOR_KEYS field but
    format_version, kind and onnx_sha256, which are added here) and return its path."""
    fields = {k: plain(v) for k, v in fields.items()}
    if not Path(onnx_path).is_file():
        raise ScorerError(f"ONNX actor {onnx_path} is missing: its sidecar records its hash, so "
                          f"the ONNX file is written first")
    fields = {"format_version": ACTOR_VERSION, "kind": "actor", **fields,
              "onnx_sha256": onnx_sha256(Path(onnx_path))}
    path = sidecar_path(onnx_path)
    check_actor_sidecar(fields, path)
    write_text_atomic(path, json.dumps(fields, indent=2))
    return path


def read_actor_sidecar(path: Path) -> dict:
    """The checked actor sidecar at ``path`` (see ACTOR_KEYS)."""
    fields = read_json_object(path, "actor sidecar", "the actor stage")
    check_actor_sidecar(fields, path)
    return fields


def check_actor_sidecar(fields: dict, path: Path) -> None:
    """Refuse another version or kind, missing/unknown keys and values of the wrong kind."""
    if fields.get("format_version") != ACTOR_VERSION or fields.get("kind") != "actor":
        raise ScorerError(f"actor sidecar {path} has format_version "
                          f"{fields.get('format_version')!r} and kind {fields.get('kind')!r}; "
                          f"this runtime reads version {ACTOR_VERSION} of kind 'actor'")
    check_keys_and_counts(fields, ACTOR_KEYS, POSITIVE_INTS, f"actor sidecar {path}")
    for key in ("dt", "tolerance"):
        value = fields[key]
        if not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
            raise ScorerError(f"actor sidecar {path}: '{key}' must be a number above 0, got "
                              f"{value!r}")
    names = fields["action_names"]
    if not (isinstance(names, list) and names and all(isinstance(n, str) for n in names)):
        raise ScorerError(f"actor sidecar {path}: 'action_names' must be a list of names")


class ActorSession:
    """The exported actor: `probs(hist, hist_mask)` for a batch of scenes.

    Attributes from the sidecar: history H, vehicles N, obs_dim D, dt, action_names, meta.
    """

    def __init__(self, session, meta: dict, path: Path):
        self.session, self.meta, self.path = session, meta, path
        self.history, self.vehicles = meta["history"], meta["vehicles"]
        self.obs_dim, self.dt = meta["obs_dim"], float(meta["dt"])
        self.action_names = tuple(meta["action_names"])

    @classmethod
    def load(cls, onnx_path: str | os.PathLike, threads: int = 1) -> ActorSession:
        path = Path(onnx_path)
        session = open_session(path, threads, "ONNX actor")
        meta = read_actor_sidecar(sidecar_path(path))
        if onnx_sha256(path) != meta["onnx_sha256"]:
            raise ScorerError(f"ONNX actor {path} is not the file its sidecar "
                              f"{sidecar_path(path)} was written for (sha256 differs)")
        names = ([i.name for i in session.get_inputs()], [o.name for o in session.get_outputs()])
        if names != (list(ACTOR_INPUTS), list(ACTOR_OUTPUTS)):
            raise ScorerError(f"ONNX actor {path} has inputs {names[0]} and outputs "
                              f"{names[1]}, expected {list(ACTOR_INPUTS)} and "
                              f"{list(ACTOR_OUTPUTS)}")
        return cls(session, meta, path)

    def probs(self, hist, hist_mask) -> np.ndarray:
        """hist (B, H, N, D) physical units, hist_mask (B, H, N) -> probabilities (B, A)."""
        h, n, d = self.history, self.vehicles, self.obs_dim
        hist, hist_mask = as_array("hist", hist, np.float32), as_array("hist_mask", hist_mask,
                                                                       np.float32)
        if hist.ndim != 4 or hist.shape[1:] != (h, n, d) or hist_mask.shape != hist.shape[:3]:
            raise ScorerError(f"the actor {self.path} takes hist (B, {h}, {n}, {d}) and "
                              f"hist_mask (B, {h}, {n}), got {hist.shape} and {hist_mask.shape}")
        if not np.isfinite(hist).all():
            raise ScorerError("hist holds non-finite values")
        return self.session.run(list(ACTOR_OUTPUTS), {"hist": hist, "hist_mask": hist_mask})[0]


class ActorDriver:
    """Policy protocol (``reset(rng)``, ``act(env)``; ``decide(road)`` for the EnvPool
    closed loop, as PlannerPolicy): the actor's most probable action among those that keep
    the ego on the road. latencies_ms: per decision (history cut, forward pass, choice)."""

    name = "actor"

    def __init__(self, actor: ActorSession):
        self.scorer = actor  # what check_period and the EnvPool loop read
        self.actions = np.arange(len(actor.action_names), dtype=np.int64)[:, None]  # (A, 1)
        self.live = LiveScene(actor.history, actor.vehicles)
        self.reset()

    def reset(self, rng=None) -> None:
        self.live.reset()
        self.latencies_ms: list[float] = []

    def act(self, env) -> int:
        config = env.unwrapped.config
        check_period(config["simulation_frequency"], config["policy_frequency"], self.scorer)
        self.live.update(env)
        return self.decide(HighwayRoad(env))

    def decide(self, road) -> int:
        start = time.perf_counter()
        hist, hist_mask, _ = self.live.window()
        probs = self.scorer.probs(hist[None], hist_mask[None])[0]
        allowed = np.isin(self.actions[:, 0], road.on_road(self.actions)[:, 0])
        action = int(np.argmax(np.where(allowed, probs, -1.0)))
        self.latencies_ms.append((time.perf_counter() - start) * 1000)
        return action


class ExploringActor(ActorDriver):
    """The actor collecting data in the model-based loop (`iterate.collector: actor`): on
    `epsilon` of its decisions a uniformly drawn road action instead of its own (from the
    generator `reset` gets). Has the per-episode stats the collect stage reads (no reality
    check: no surprises, no fallback) and no branches."""

    def __init__(self, actor: ActorSession, epsilon: float):
        if not 0.0 <= epsilon <= 1.0:
            raise ValueError(f"epsilon must be in [0, 1], got {epsilon}")
        self.epsilon = float(epsilon)
        self.name = f"actor+eps{self.epsilon:g}"
        super().__init__(actor)

    def reset(self, rng=None) -> None:
        super().reset(rng)
        self.rng = as_generator(rng)
        self.surprises, self.branch_runs = [], []
        self.fallback_steps = self.steps = 0

    def decide(self, road) -> int:
        action = super().decide(road)
        self.steps += 1
        if self.rng.random() < self.epsilon:
            return int(self.rng.choice(road.on_road(self.actions)[:, 0]))
        return action


class ActorGuidedPlanner(PlannerPolicy):
    """The planner on the candidates whose first action is among the actor's `top_actions`
    most probable road actions (all candidates' first actions if fewer are on the road)."""

    name = "planner+actor"

    def __init__(self, scorer, candidates: np.ndarray, actor: ActorSession, top_actions: int,
                 **planner_kwargs):
        if top_actions < 1:
            raise ValueError(f"top_actions must be at least 1, got {top_actions}")
        self.actor, self.top_actions = actor, top_actions
        super().__init__(scorer, candidates, **planner_kwargs)

    def propose(self, candidates: np.ndarray, hist: np.ndarray,
                hist_mask: np.ndarray) -> np.ndarray:
        probs = self.actor.probs(hist[None], hist_mask[None])[0]
        firsts = np.unique(candidates[:, 0])
        kept = firsts[np.argsort(-probs[firsts], kind="stable")[:self.top_actions]]
        return candidates[np.isin(candidates[:, 0], kept)]
