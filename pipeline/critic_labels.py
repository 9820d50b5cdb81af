"""Risk-critic labels: recorded decisions whose every candidate was judged by the truth.

Episodes run in highway-env. At each decision the planner's history is cut from the live
scene exactly as the planner cuts it (pipeline/planner/live_scene.py), and every road candidate
of `export.horizon` steps is stepped on copies of the true simulator
(evaluation/oracle.py, with the planner's safety envelope): its label is the step after
which it first crashes or lets another vehicle into the envelope, F when never. The
episode is driven by that same oracle's choice, or by an ONNX planner (`LabelSpec.planner`:
the critic stage's later rounds drive with the previous round's critic, so the critic
learns the states its own planner gets into), except on `critic.epsilon` of the
decisions, where a uniformly random road candidate's first action is taken: the planner
must judge states the oracle would not drive into, too. No torch on this path.

Arrays per decision (D decisions, K = 5^F candidates in `enumerate_candidates` order):
hist (D, H, N, D_obs) float32, hist_mask (D, H, N) bool, valid (D, K) bool (the
candidate stays on the road; others are unlabelled), first (D, K) int64, returns (D, K)
float32 (the true discounted reward sum over the candidate, stopped at a crash or the
episode's end; 0 when unlabelled), episode (D,) int64 (the env seed), speed (D,) float32
(the ego's at the decision).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

LABEL_ARRAYS = ("hist", "hist_mask", "valid", "first", "returns", "episode", "speed")


@dataclass(frozen=True)
class LabelSpec:
    """What a worker needs to label episodes (picklable)."""

    env_id: str
    env_config: dict
    history: int
    vehicles: int
    horizon: int
    envelope: tuple[float, float]
    gamma: float
    epsilon: float
    planner: str = ""  # an ONNX planner that drives instead of the oracle (empty: the oracle)
    risk_weight: float = 1.0  # the planner's decision rule (simulate.*)
    uncertainty_weight: float = 0.0
    risk_budget: float = 0.2


class Labeller:
    """One env, oracle and live scene, reused across a worker's episodes."""

    def __init__(self, spec: LabelSpec):
        from evaluation.oracle import OracleLookahead
        from models.candidates import enumerate_candidates
        from pipeline.highway_source import make_env
        from pipeline.planner.live_scene import LiveScene

        self.spec = spec
        self.candidates = enumerate_candidates(spec.horizon)
        self.oracle = OracleLookahead(self.candidates, spec.gamma, spec.envelope)
        self.env = make_env(spec.env_id, spec.env_config)
        self.live = LiveScene(spec.history, spec.vehicles)
        self.driver = planner_driver(spec, self.candidates) if spec.planner else None

    def episode(self, seed: int) -> dict[str, np.ndarray]:
        """Label every decision of one episode; see the module docstring."""
        from evaluation.oracle import best_candidate
        from pipeline.highway_source import policy_rng

        rng = policy_rng(seed)
        self.env.reset(seed=seed)
        if self.driver is not None:
            self.driver.reset(rng)
        rows: list[tuple] = []
        over = False
        while not over:
            valid, first, returns = self.decision_labels()
            hist, hist_mask, _ = self.live.window()
            rows.append((hist, hist_mask, valid, first, returns, seed,
                         self.env.unwrapped.vehicle.speed))
            on_road = np.flatnonzero(valid)
            if rng.random() < self.spec.epsilon:
                action = int(self.candidates[rng.choice(on_road), 0])
            elif self.driver is not None:
                action = int(self.driver.act(self.env))
            else:
                crashed = first[on_road] < self.spec.horizon
                action = int(self.candidates[on_road[best_candidate(returns[on_road], crashed)], 0])
            _, _, terminated, truncated, _ = self.env.step(action)
            over = terminated or truncated
        return stack_rows(rows)

    def decision_labels(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """valid (K,), first (K,), returns (K,) for the env's current state."""
        from evaluation.policies import road_mask

        self.live.update(self.env)
        k, horizon = len(self.candidates), self.spec.horizon
        valid = road_mask(self.env, self.candidates)
        first, returns = np.full(k, horizon, dtype=np.int64), np.zeros(k)
        rows = np.flatnonzero(valid)
        returns[rows], first[rows], _ = self.oracle.first_events(self.env.unwrapped,
                                                                 self.candidates[rows])
        return valid, first, returns

    def close(self) -> None:
        self.env.close()


def planner_driver(spec: LabelSpec, candidates: np.ndarray):
    """The ONNX planner of `spec.planner` as a policy (one onnxruntime thread)."""
    from pipeline.planner.policy import UNCALIBRATED_SURPRISE, PlannerPolicy
    from pipeline.planner.scorer import OnnxScorer

    scorer = OnnxScorer.load(spec.planner, threads=1, seed=0)
    # the critic's labelling planners are not calibrated: they keep the fixed threshold
    return PlannerPolicy(scorer, candidates, risk_weight=spec.risk_weight,
                         uncertainty_weight=spec.uncertainty_weight,
                         risk_budget=spec.risk_budget, surprise_threshold=UNCALIBRATED_SURPRISE)


def stack_rows(rows: list[tuple]) -> dict[str, np.ndarray]:
    hist, mask, valid, first, returns, episode, speed = zip(*rows, strict=True)
    return {"hist": np.stack(hist).astype(np.float32), "hist_mask": np.stack(mask).astype(bool),
            "valid": np.stack(valid), "first": np.stack(first).astype(np.int64),
            "returns": np.stack(returns).astype(np.float32),
            "episode": np.asarray(episode, dtype=np.int64),
            "speed": np.asarray(speed, dtype=np.float32)}


def label_in_worker(labeller: Labeller, seed: int) -> dict[str, np.ndarray]:
    return labeller.episode(seed)


def label_episodes(spec: LabelSpec, seeds: list[int], workers: int) -> Iterator[dict]:
    """Labelled episodes, one dict per seed, in completion order (spawned workers)."""
    from pipeline.rollouts import run_pool

    yield from run_pool(list(seeds), workers, label_in_worker, Labeller, (spec,))


def concat_labels(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Episodes in seed order, one array per name."""
    parts = sorted(parts, key=lambda part: int(part["episode"][0]))
    return {name: np.concatenate([part[name] for part in parts]) for name in LABEL_ARRAYS}


def contingent_first(first: np.ndarray, valid: np.ndarray, candidates: np.ndarray,
                     commit: int) -> np.ndarray:
    """first (D, K) and valid (D, K) of candidates (K, F) -> (D, K): each valid candidate's
    first-event step replaced by the latest one among the valid candidates that share its
    first `commit` >= 1 actions (F when one of them never meets an event). (`critic.commit`
    0 means the whole sequence: `fitting_labels` then leaves the labels as they are.)

    The planner executes one step and then plans again, so it is not held to a whole
    sequence: a fixed sequence carries every uncertain future, a contingent label only
    what no continuation of the committed actions avoids.
    """
    out = first.copy()
    _, group_of = np.unique(candidates[:, :commit], axis=0, return_inverse=True)
    group_of = group_of.reshape(-1)  # (K,) the index of each candidate's prefix
    for g in range(group_of.max() + 1):
        group = group_of == g  # (K,)
        best = np.where(valid[:, group], first[:, group], -1).max(axis=1)  # (D,)
        out[:, group] = np.where(valid[:, group], best[:, None], first[:, group])
    return out


def fitting_labels(labels: dict[str, np.ndarray], commit: int, horizon: int) -> dict:
    """`labels` with `first` as the critic learns it: the candidate's own (`commit` 0 or
    >= horizon), or under the best continuation of its first `commit` actions."""
    if commit == 0 or commit >= horizon:
        return labels
    from models.candidates import enumerate_candidates

    candidates = enumerate_candidates(horizon)
    return {**labels, "first": contingent_first(labels["first"], labels["valid"], candidates,
                                                commit)}


MIRRORED_FEATURES = ("y", "vy", "sin_heading")  # the ego-frame features that change sign


def mirror_permutation(candidates: np.ndarray) -> np.ndarray:
    """(K,) index of each candidate's mirror image (LANE_LEFT and LANE_RIGHT swapped) among
    `candidates` (K, F), which must hold every mirror image."""
    from models.candidates import LANE_LEFT, LANE_RIGHT

    swapped = candidates.copy()
    swapped[candidates == LANE_LEFT], swapped[candidates == LANE_RIGHT] = LANE_RIGHT, LANE_LEFT
    index = {tuple(row): k for k, row in enumerate(candidates.tolist())}
    try:
        return np.array([index[tuple(row)] for row in swapped.tolist()], dtype=np.int64)
    except KeyError as err:
        raise ValueError(f"the candidate set lacks the mirror image {err.args[0]}") from None


def mirrored(labels: dict[str, np.ndarray], lanes: int, candidates: np.ndarray) -> dict:
    """The labelled decisions seen in a mirror across the road's centre line, for a road
    of `lanes` lanes: lateral positions, speeds and headings change sign, lane i becomes
    lanes - 1 - i, and each candidate trades labels with its mirror image (left and right
    lane changes swapped). highway-env's traffic obeys the same rules on either side
    (IDM and MOBIL look at both neighbouring lanes alike), so the mirrored `valid` and
    `first` are what the simulator would label in the mirrored scene. `returns` only
    trade places: the right-lane bonus in them is not mirrored (the critic fits none)."""
    from pipeline.features import FEATURE_NAMES

    hist = labels["hist"].copy()
    for name in MIRRORED_FEATURES:
        hist[..., FEATURE_NAMES.index(name)] *= -1.0
    lane = FEATURE_NAMES.index("lane")
    hist[..., lane] = np.where(labels["hist_mask"], lanes - 1 - hist[..., lane], 0.0)
    swap = mirror_permutation(candidates)
    out = {**labels, "hist": hist}
    for name in ("valid", "first", "returns"):
        out[name] = labels[name][:, swap]
    return out
