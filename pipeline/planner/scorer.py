"""The deployed ONNX planner: numpy + onnxruntime only (no torch anywhere on this path).

An exported planner is two files: ``planner.onnx`` and its sidecar ``planner.onnx.json``
(SIDECAR_KEYS below). ``OnnxScorer.load`` checks both against each other and refuses
anything it cannot trust with a one-line ``ScorerError`` naming the file.

``OnnxScorer.score(hist (H, N, D), hist_mask (H, N), candidates (K, F))`` returns
``Scores`` per candidate. The sampling noise is drawn once, from a seed, with shape
(S, F, Z) and shared by every candidate (common random numbers: candidates are compared
under the same imagined futures, and the noise does not depend on K or on pruning).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

from pipeline.artifacts import write_text_atomic
from pipeline.errors import DrivecastError

SIDECAR_VERSION = 4  # 2: adds "bootstrap", "lookahead" and "risk"; 3: adds "onnx_sha256";
# 4: adds "surprise_quantile" and "surprise_threshold" (the calibrated reality check)
READABLE_VERSIONS = (2, 3, 4)  # older sidecars lack the keys added since (SINCE_VERSION)
SIDECAR_KEYS = (
    "format_version",  # int, SIDECAR_VERSION
    "action_names",  # list[str], index = action id
    "history",  # H frames of history
    "horizon",  # F future decision steps per candidate
    "vehicles",  # N slots (slot 0 = ego)
    "obs_dim",  # D features per vehicle
    "stoch_dim",  # Z latent noise width
    "samples",  # S imagined samples per candidate
    "dt",  # seconds per decision step
    "frames_per_step",  # simulation frames per decision step
    "gamma",  # discount of expected_return
    "bootstrap",  # whether expected_return includes the value after the horizon
    "lookahead",  # extrapolated steps that value must survive (0: none)
    "risk",  # what collision_prob is made of: head | overlap | combined, with the overlap
    # safety envelope (informative)
    "obs_mean",  # (D,) training feature mean (informative: the graph normalises itself)
    "obs_std",  # (D,) training feature std
    "input_names",  # graph input names in the order hist, hist_mask, candidates, noise
    "output_names",  # collision_prob, expected_return, uncertainty, positions
    "opset",  # ONNX opset of the default domain
    "tolerance",  # max abs torch-vs-onnxruntime difference accepted at export
    "onnx_sha256",  # hex sha256 of the ONNX file it was written for (from version 3)
    "surprise_quantile",  # q of the calibration below, or null (from version 4)
    "surprise_threshold",  # m: the q-quantile of the reality check's surprise on held-out
    # in-distribution windows (pipeline/planner/calibrate.py), or null: not calibrated
)
SINCE_VERSION = {"onnx_sha256": 3, "surprise_quantile": 4, "surprise_threshold": 4}
OPTIONAL_KEYS = ("surprise_quantile", "surprise_threshold")  # write_sidecar: null if absent
INT_KEYS = ("format_version", "history", "horizon", "vehicles", "obs_dim", "stoch_dim",
            "samples", "frames_per_step", "opset")
FLOAT_KEYS = ("dt", "gamma", "tolerance")
SHAPE_KEYS = ("history", "vehicles", "obs_dim", "horizon", "samples", "stoch_dim")


class ScorerError(DrivecastError):
    """The ONNX planner or its sidecar cannot be used, or an input has the wrong shape."""


class Scores(NamedTuple):
    """Per-candidate planner outputs (K candidates, F steps, N slots), numpy float32."""

    collision_prob: np.ndarray  # (K,) P(collision within the horizon)
    expected_return: np.ndarray  # (K,) expected discounted return
    uncertainty: np.ndarray  # (K,) ensemble disagreement
    positions: np.ndarray  # (K, F, N, 2) forecast x, y of each slot, ego frame at t0


def sidecar_path(onnx_path: str | os.PathLike) -> Path:
    """``<onnx_path>.json``."""
    return Path(f"{os.fspath(onnx_path)}.json")


# ---------------------------------------------------------------- sidecar


def write_sidecar(onnx_path: str | os.PathLike, **fields) -> Path:
    """Write the sidecar of ``onnx_path`` atomically and return its path.

    fields: every key of SIDECAR_KEYS except format_version and onnx_sha256 (both added
    here, the hash of the file at ``onnx_path``) and the OPTIONAL_KEYS (null when not
    given); unknown or missing keys are refused.
    """
    fields = {**dict.fromkeys(OPTIONAL_KEYS), **fields}
    fields = {k: plain(v) for k, v in fields.items() if k not in ("format_version",
                                                                 "onnx_sha256")}
    fields = {"format_version": SIDECAR_VERSION, **fields, "onnx_sha256": "0" * 64}
    path = sidecar_path(onnx_path)
    check_sidecar(fields, path)
    if not Path(onnx_path).is_file():
        raise ScorerError(f"ONNX planner {onnx_path} is missing: its sidecar records its hash, "
                          f"so the ONNX file is written first")
    fields["onnx_sha256"] = onnx_sha256(Path(onnx_path))
    write_text_atomic(path, json.dumps(fields, indent=2))
    return path


def onnx_sha256(path: Path) -> str:
    """Hex sha256 of the file at ``path`` (hashlib is all the serving path needs)."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_belongs(onnx_path: Path, meta: dict) -> None:
    """The sidecar was written for this very ONNX file (not another export's)."""
    if meta["format_version"] < 3:
        return
    if onnx_sha256(onnx_path) != meta["onnx_sha256"]:
        raise ScorerError(f"ONNX planner {onnx_path} is not the file its sidecar "
                          f"{sidecar_path(onnx_path)} was written for (sha256 differs): serve "
                          f"each planner.onnx with the sidecar exported beside it")


def plain(value):
    """Tuples, numpy arrays and numpy scalars as JSON-ready Python lists and numbers."""
    if isinstance(value, tuple):
        return [plain(v) for v in value]
    return value.tolist() if isinstance(value, np.ndarray | np.generic) else value


def read_sidecar(path: Path) -> dict:
    """The checked sidecar at ``path`` (see SIDECAR_KEYS)."""
    fields = read_json_object(path, "planner sidecar", "the export")
    check_sidecar(fields, path)
    return fields


def read_json_object(path: Path, what: str, writer: str) -> dict:
    """The JSON object in the file at ``path``, or a one-line ScorerError naming `what` it
    is and the `writer` that writes it."""
    if not path.is_file():
        raise ScorerError(f"{what} {path} is missing (it is written by {writer})")
    try:
        fields = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ScorerError(f"{what} {path} is not valid JSON ({one_line(error)})") from None
    if not isinstance(fields, dict):
        raise ScorerError(f"{what} {path} must hold a JSON object")
    return fields


def check_sidecar(fields: dict, path: Path) -> None:
    """Refuse a wrong version, missing/unknown keys and values of the wrong kind."""
    version = fields.get("format_version")
    if version not in READABLE_VERSIONS or isinstance(version, bool):
        raise ScorerError(f"planner sidecar {path} has format_version {version!r}; this "
                          f"scorer reads versions {', '.join(map(str, READABLE_VERSIONS))}")
    keys = [key for key in SIDECAR_KEYS if SINCE_VERSION.get(key, 2) <= version]
    check_keys_and_counts(fields, keys, INT_KEYS, f"planner sidecar {path}")
    for key in FLOAT_KEYS:
        value = fields[key]
        if not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
            raise ScorerError(f"planner sidecar {path}: '{key}' must be a non-negative "
                              f"number, got {value!r}")
    check_sidecar_lists(fields, path)
    check_calibration(fields, path)
    digest = fields.get("onnx_sha256", "0" * 64)
    if not (isinstance(digest, str) and len(digest) == 64
            and all(c in "0123456789abcdef" for c in digest)):
        raise ScorerError(f"planner sidecar {path}: 'onnx_sha256' must be 64 hex digits, got "
                          f"{digest!r}"[:300])


def check_keys_and_counts(fields: dict, keys, counts, what: str) -> None:
    """Refuse missing or unknown keys (all of `keys` are expected) and `counts` that are not
    positive integers; `what` names the file in the message."""
    missing = [key for key in keys if key not in fields]
    unknown = sorted(set(fields) - set(keys))
    if missing or unknown:
        raise ScorerError(f"{what} is missing keys {missing} / has unknown keys {unknown}")
    for key in counts:
        value = fields[key]
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ScorerError(f"{what}: '{key}' must be a positive integer, got {value!r}")


def check_sidecar_lists(fields: dict, path: Path) -> None:
    d = fields["obs_dim"]
    for key in ("obs_mean", "obs_std"):
        value = fields[key]
        if not (isinstance(value, list) and len(value) == d
                and all(isinstance(v, int | float) for v in value)):
            raise ScorerError(f"planner sidecar {path}: '{key}' must be a list of {d} "
                              f"numbers (obs_dim), got {value!r}")
    for key, length in (("input_names", 4), ("output_names", 4), ("action_names", None)):
        value = fields[key]
        if not (isinstance(value, list) and all(isinstance(v, str) for v in value)
                and (length is None or len(value) == length) and value):
            raise ScorerError(f"planner sidecar {path}: '{key}' must be a list of "
                              f"{length or 'some'} names, got {value!r}")


def check_calibration(fields: dict, path: Path) -> None:
    """surprise_quantile in (0, 1) and surprise_threshold a finite number > 0 [m], both
    null when the planner was not calibrated (absent before version 4)."""
    q, threshold = fields.get("surprise_quantile"), fields.get("surprise_threshold")
    if (q is None) != (threshold is None):
        raise ScorerError(f"planner sidecar {path}: 'surprise_quantile' and "
                          f"'surprise_threshold' must both be null or both numbers, got "
                          f"{q!r} and {threshold!r}")
    if q is None:
        return
    numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (q, threshold))
    if not (numbers and 0 < q < 1 and math.isfinite(threshold) and threshold > 0):
        raise ScorerError(f"planner sidecar {path}: 'surprise_quantile' must lie in (0, 1) and "
                          f"'surprise_threshold' be a finite number of metres > 0, got {q!r} "
                          f"and {threshold!r}")


def one_line(error: BaseException) -> str:
    """The first non-empty line of an exception message (library errors can be long)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0][:300] if lines else type(error).__name__


# ---------------------------------------------------------------- session


def open_session(onnx_path: Path, threads: int, what: str = "ONNX planner"):
    """An onnxruntime CPU session, or a ScorerError naming the file (`what` it is)."""
    import onnxruntime as ort

    if not onnx_path.is_file():
        raise ScorerError(f"{what} {onnx_path} is missing")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: a refused file is reported by us
    try:
        return ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises several unrelated types here
        raise ScorerError(f"{what} {onnx_path} cannot be loaded by onnxruntime, it is "
                          f"corrupt or truncated ({one_line(error)})") from None


def graph_opset(onnx_path: Path) -> int | None:
    """Default-domain opset of the model, read with the onnx package if it is installed."""
    try:
        import onnx
    except ImportError:
        return None
    model = onnx.load(str(onnx_path), load_external_data=False)
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)


def expected_shapes(meta: dict) -> dict[int, tuple]:
    """Graph input shapes the sidecar implies, by input position (None = dynamic axis)."""
    h, n, d = meta["history"], meta["vehicles"], meta["obs_dim"]
    f, s, z = meta["horizon"], meta["samples"], meta["stoch_dim"]
    return {0: (1, h, n, d), 1: (1, h, n), 2: (None, f), 3: (None, s, f, z)}


def check_graph(session, meta: dict, onnx_path: Path) -> None:
    """The graph's input/output names and fixed input shapes must match the sidecar."""
    inputs, outputs = session.get_inputs(), session.get_outputs()
    names = [i.name for i in inputs], [o.name for o in outputs]
    if names != (meta["input_names"], meta["output_names"]):
        raise ScorerError(f"ONNX planner {onnx_path} has inputs {names[0]} and outputs "
                          f"{names[1]}, its sidecar says {meta['input_names']} and "
                          f"{meta['output_names']}")
    for position, want in expected_shapes(meta).items():
        have = tuple(dim if isinstance(dim, int) else None for dim in inputs[position].shape)
        if have != want:
            raise ScorerError(f"ONNX planner {onnx_path} input '{inputs[position].name}' has "
                              f"shape {have}, its sidecar implies {want} (H, N, D, F, S, Z "
                              f"= {', '.join(str(meta[k]) for k in SHAPE_KEYS)})")


# ---------------------------------------------------------------- scorer


class OnnxScorer:
    """Scores candidate action sequences of one scene with the exported planner.

    Attributes from the sidecar: history H, horizon F, vehicles N, obs_dim D,
    stoch_dim Z, samples S, dt, gamma, action_names, calibrated_surprise (m, the sidecar's
    surprise_threshold; None when it has none), meta (the whole sidecar).
    """

    def __init__(self, session, meta: dict, path: Path, seed: int = 0):
        self.session, self.meta, self.path = session, meta, path
        self.history, self.horizon = meta["history"], meta["horizon"]
        self.vehicles, self.obs_dim = meta["vehicles"], meta["obs_dim"]
        self.stoch_dim, self.samples = meta["stoch_dim"], meta["samples"]
        self.dt, self.gamma = float(meta["dt"]), float(meta["gamma"])
        self.action_names = tuple(meta["action_names"])
        threshold = meta.get("surprise_threshold")
        self.calibrated_surprise = None if threshold is None else float(threshold)
        self.input_names = tuple(meta["input_names"])
        self.output_names = tuple(meta["output_names"])
        rng = np.random.default_rng(seed)
        shape = (self.samples, self.horizon, self.stoch_dim)
        self.noise = rng.standard_normal(shape).astype(np.float32)  # (S, F, Z)

    @classmethod
    def load(cls, onnx_path: str | os.PathLike, threads: int = 1, seed: int = 0) -> OnnxScorer:
        """Open ``onnx_path`` and its sidecar; one-line ScorerError on any mismatch."""
        path = Path(onnx_path)
        session = open_session(path, threads)
        meta = read_sidecar(sidecar_path(path))
        check_belongs(path, meta)
        check_graph(session, meta, path)
        opset = graph_opset(path)
        if opset is not None and opset != meta["opset"]:
            raise ScorerError(f"ONNX planner {path} uses opset {opset}, its sidecar says "
                              f"{meta['opset']}")
        return cls(session, meta, path, seed)

    def score(self, hist: np.ndarray, hist_mask: np.ndarray, candidates: np.ndarray) -> Scores:
        """hist (H, N, D) physical units, hist_mask (H, N) bool, candidates (K, F) action
        ids -> Scores with (K,) figures and positions (K, F, N, 2)."""
        hist, hist_mask, candidates = self.check_inputs(hist, hist_mask, candidates)
        k = len(candidates)
        noise = np.broadcast_to(self.noise[None], (k, *self.noise.shape))  # (K, S, F, Z)
        feeds = dict(zip(self.input_names, (
            hist[None], hist_mask[None].astype(np.float32), candidates,
            np.ascontiguousarray(noise)), strict=True))
        outputs = self.session.run(list(self.output_names), feeds)
        scores = Scores(*(np.asarray(out, dtype=np.float32) for out in outputs))
        self.check_outputs(scores, k)
        return scores

    def check_inputs(self, hist, hist_mask, candidates):
        """Arrays with the graph's dtypes, or a one-line ScorerError naming the input."""
        hist, hist_mask = self.check_history(hist, hist_mask)
        return hist, hist_mask, self.check_candidates(candidates)

    def check_history(self, hist, hist_mask) -> tuple[np.ndarray, np.ndarray]:
        h, n, d = self.history, self.vehicles, self.obs_dim
        hist = as_array("hist", hist, np.float32)
        hist_mask = as_array("hist_mask", hist_mask, None)
        if hist.shape != (h, n, d):
            raise ScorerError(f"hist must have shape (H, N, D) = {(h, n, d)} for {self.path}, "
                              f"got {hist.shape}")
        if hist_mask.shape != (h, n):
            raise ScorerError(f"hist_mask must have shape (H, N) = {(h, n)} for {self.path}, "
                              f"got {hist_mask.shape}")
        if not np.isfinite(hist).all():
            raise ScorerError("hist holds non-finite values")
        return hist, hist_mask.astype(bool)

    def check_candidates(self, candidates) -> np.ndarray:
        candidates, f = as_array("candidates", candidates, None), self.horizon
        if candidates.ndim != 2 or candidates.shape[1] != f or len(candidates) == 0:
            raise ScorerError(f"candidates must have shape (K, F) with K >= 1 and F = {f} for "
                              f"{self.path}, got {candidates.shape}")
        if not np.issubdtype(candidates.dtype, np.integer):
            raise ScorerError(f"candidates must hold integer action ids, got {candidates.dtype}")
        n_actions = len(self.action_names)
        if candidates.min() < 0 or candidates.max() >= n_actions:
            raise ScorerError(f"candidates must hold action ids in 0..{n_actions - 1}, got "
                              f"{candidates.min()}..{candidates.max()}")
        return candidates.astype(np.int64)

    def check_outputs(self, scores: Scores, k: int) -> None:
        want = {"collision_prob": (k,), "expected_return": (k,), "uncertainty": (k,),
                "positions": (k, self.horizon, self.vehicles, 2)}
        for name, value in zip(Scores._fields, scores, strict=True):
            if value.shape != want[name]:
                raise ScorerError(f"ONNX planner {self.path} returned {name} with shape "
                                  f"{value.shape}, expected {want[name]}")


def as_array(name: str, value, dtype) -> np.ndarray:
    """``value`` as a contiguous numpy array (of ``dtype`` if given), or a one-line
    ScorerError naming the input (text, ragged lists and objects are not numbers)."""
    try:
        array = np.ascontiguousarray(value, dtype=dtype)
    except (ValueError, TypeError) as error:
        raise ScorerError(f"{name} must be an array of numbers ({one_line(error)})") from None
    if array.dtype.kind not in "biuf":
        raise ScorerError(f"{name} must be an array of numbers, got dtype {array.dtype}")
    return array
