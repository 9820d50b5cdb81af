"""What the stages share: artifact file names, loaders of one stage's output for the next,
the checks of a config section that more than one stage reads, and the seed ranges that
keep evaluation and collection apart.

Stages import this module, never each other (tests/pipeline/test_layout.py checks it).
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from pipeline.artifacts import Artifacts
from pipeline.config import Backend, Config, IngestConfig, SimulateConfig
from pipeline.errors import StageError
from pipeline.windows import (
    WindowSet,
    lane_centers_ego,
    lane_medians,
    make_windows,
    stack_windows,
    window_list,
)

# ---------------------------------------------------------------- ingest

DATASET_DIR = "dataset"


def check_ingest_config(ingest: IngestConfig) -> None:
    """Refuse values that would only fail deep inside a worker (or, for recorded data, after
    reading a large file): the recorded mapping is checked against every file's header."""
    if ingest.source == "recorded":
        from pipeline.recorded import check_recorded

        check_recorded(ingest.recorded)
        return
    from pipeline.highway_source import check_env_config, check_env_id
    from pipeline.rollouts import check_policies

    if ingest.source != "highway":
        raise StageError(f"ingest.source '{ingest.source}' is not known (known: highway, "
                         f"recorded)")
    if ingest.episodes < 1:
        raise StageError(f"ingest.episodes must be at least 1, got {ingest.episodes}")
    try:
        check_policies([(p.name, p.epsilon, p.weight) for p in ingest.policies])
        check_env_id(ingest.env_id)
        check_env_config(ingest.env_id, dict(ingest.env_config))
        if ingest.backend == Backend.envpool:
            from pipeline.envpool_source import EnvpoolSource

            EnvpoolSource(ingest.env_id, dict(ingest.env_config))
    except ValueError as err:
        raise StageError(f"ingest: {err}") from None


def dataset_path(ingest: Artifacts) -> Path:
    return ingest.path / DATASET_DIR


# ---------------------------------------------------------------- train

MODEL_FILE = "model.pt"
MODEL_SPEC = "model.json"
SPLITS = "splits.json"


def load_windows(dataset_dir: Path, cfg: Config) -> WindowSet:
    """Read and validate a dataset, then cut it into the configured windows."""
    from pipeline.dataset import read_dataset, read_manifest
    from pipeline.recorded.windows import adapt_windows, is_recorded

    manifest = read_manifest(dataset_dir)
    if not is_recorded(manifest):
        return simulator_windows(Path(dataset_dir), manifest, cfg)
    data = read_dataset(dataset_dir)
    windows = make_windows(data.frames, data.steps, data.frames_per_step,
                           1.0 / float(manifest["policy_frequency"]), history=cfg.model.history,
                           horizon=cfg.model.horizon, n_slots=cfg.model.vehicles,
                           stride=cfg.model.stride)
    adapt_windows(windows, data)  # scene groups, unknown labels masked, per-road lanes
    return windows


def simulator_windows(dataset_dir: Path, manifest: dict, cfg: Config) -> WindowSet:
    """The windows of a simulator dataset, cut shard by shard so that only one shard's
    frames are in memory at a time (each episode lies in one shard); the same windows, in
    the same order, as cutting the whole dataset at once."""
    from pipeline.dataset import DatasetError, read_shards

    frames_per_step = int(manifest["simulation_frequency"]) // int(manifest["policy_frequency"])
    parts, lateral, lanes, seen = [], [], [], set()
    for frames, steps in read_shards(dataset_dir, manifest):
        episodes = set(np.unique(steps["episode"]).tolist())
        if episodes & seen:
            raise DatasetError(f"{dataset_dir}: episode {min(episodes & seen)} is split over "
                               f"two shards")
        seen |= episodes
        windows = window_list(frames, steps, frames_per_step, cfg.model.history,
                              cfg.model.horizon, cfg.model.vehicles, cfg.model.stride)
        if windows:
            parts.append(stack_windows(windows))
        lateral.append(frames["y"])
        lanes.append(frames["lane"])
    if not parts:
        raise StageError(f"{dataset_dir}: the dataset holds no complete episode to cut "
                         f"windows from")
    episode = np.concatenate([part["episode"] for part in parts])
    order = np.argsort(episode, kind="stable")  # episodes ascending, as one cut
    arrays = {}
    for key in list(parts[0]):  # one name at a time: the peak holds one array twice
        arrays[key] = np.concatenate([part.pop(key) for part in parts])[order]
    centers = lane_medians(np.concatenate(lateral), np.concatenate(lanes))
    arrays["lane_centers"] = lane_centers_ego(centers, arrays["ego_pose"])
    return WindowSet(arrays, 1.0 / float(manifest["policy_frequency"]), frames_per_step)


def load_model(train: Artifacts):
    """Rebuild the trained world model (eval mode, CPU) from a train stage directory."""
    import torch

    from models.world_models import make_world_model

    spec_path, weights = train.path / MODEL_SPEC, train.path / MODEL_FILE
    if not spec_path.is_file() or not weights.is_file():
        raise StageError(f"{train.path} holds no trained model ({MODEL_SPEC}, {MODEL_FILE})")
    try:
        spec = json.loads(spec_path.read_text())
        model = make_world_model(**spec["model_kwargs"])
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    except (OSError, ValueError, TypeError, KeyError, RuntimeError,
            pickle.UnpicklingError) as err:
        raise StageError(f"{train.path} holds no usable trained model ({first_line(err)}); "
                         f"rerun train with --force") from None
    return model.eval(), spec


def first_line(err: Exception) -> str:
    """An exception's first message line, or its type name when it has no message."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


# ---------------------------------------------------------------- evaluate

def held_out_windows(cfg: Config, inputs: Mapping[str, Artifacts]) -> WindowSet:
    return held_out_splits(cfg, inputs, ("test",))["test"]


def held_out_splits(cfg: Config, inputs: Mapping[str, Artifacts],
                    splits: tuple[str, ...]) -> dict[str, WindowSet]:
    """The windows of each of the train stage's `splits` ("test"; "val": the validation
    episodes post-hoc calibration is fitted on), the dataset cut once."""
    windows = load_windows(dataset_path(inputs["ingest"]), cfg)
    return {split: windows.subset(np.isin(windows.arrays["episode"],
                                          split_episode_ids(inputs["train"], split)))
            for split in splits}


def split_test_ids(train: Artifacts) -> list[int]:
    """The test split's episode ids that the train stage recorded in splits.json."""
    return split_episode_ids(train, "test")


def split_episode_ids(train: Artifacts, split: str) -> list[int]:
    """The episode ids of `split` ("train", "val" or "test") recorded in splits.json."""
    path = train.path / SPLITS
    try:
        ids = json.loads(path.read_text())[split]
        if not isinstance(ids, list) or not all(isinstance(e, int) for e in ids):
            raise ValueError(f"'{split}' is not a list of episode ids")
    except (OSError, ValueError, TypeError, KeyError) as err:
        raise StageError(f"{path} is not a usable split ({first_line(err)}); rerun train "
                         f"with --force") from None
    return ids


# ---------------------------------------------------------------- export

PLANNER_FILE = "planner.onnx"


# ---------------------------------------------------------------- critic

LABELS_FILE = "labels.npz"
CRITIC_FILE = "critic.pt"
CRITIC_SPEC = "critic.json"
# the simulate stage's decision rule: it drives the critic's planner-driven labelling rounds
DECISION_RULE = ("risk_weight", "uncertainty_weight", "risk_budget")


def held_out(episodes: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """(D,) bool: the decisions of the validation episodes, as training splits them
    (pipeline/windows.py `split_ids`, no test split)."""
    from pipeline.windows import split_ids

    val = split_ids(np.unique(episodes), fraction, 0.0, seed, "labelled episodes")["val"]
    return np.isin(episodes, val)


def load_critic(critic: Artifacts):
    """The fitted critic (a RiskCritic, or a CriticEnsemble with `members` in its spec; eval
    mode, CPU), or None when the stage fitted none."""
    import torch

    from models.critic import make_critic

    spec, weights = critic.path / CRITIC_SPEC, critic.path / CRITIC_FILE
    if not spec.is_file():
        return None
    try:
        model = make_critic(**json.loads(spec.read_text()))
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    except (OSError, ValueError, TypeError, RuntimeError, pickle.UnpicklingError) as err:
        raise StageError(f"{critic.path} holds no usable risk critic ({first_line(err)})") \
            from None
    return model.eval()


def env_settings(cfg: Config) -> dict:
    """The full config of `ingest.env_id` with its `env_config` (highway-env's defaults
    filled in)."""
    from pipeline.highway_source import make_env

    env = make_env(cfg.ingest.env_id, dict(cfg.ingest.env_config))
    try:
        return dict(env.unwrapped.config)
    finally:
        env.close()


def road_lanes(cfg: Config, needed_by: str, settings: dict | None = None) -> int:
    """The number of lanes of `ingest.env_id` with its `env_config` (a StageError naming
    the setting `needed_by` for an env without a `lanes_count`: no straight road the
    mirror or the traffic replica knows of); settings: `env_settings(cfg)` if known."""
    lanes = (settings if settings is not None else env_settings(cfg)).get("lanes_count")
    if not isinstance(lanes, int) or lanes < 1:
        raise StageError(f"{needed_by} needs a straight road with `lanes_count` lanes; "
                         f"{cfg.ingest.env_id} has none")
    return lanes


def replica_lanes(cfg: Config, needed_by: str) -> int:
    """`road_lanes` for the traffic replica (models/traffic.py), which steps highway-fast's
    5 simulation frames of 0.2 s per decision: a StageError for an env at other rates."""
    from models.traffic import Road

    settings = env_settings(cfg)
    rates = (settings.get("simulation_frequency"), settings.get("policy_frequency"))
    road = Road()
    if rates != (round(1 / road.dt), round(1 / (road.dt * road.substeps))):
        raise StageError(f"{needed_by} replays highway-env at 5 simulation frames a second and "
                         f"1 decision a second; {cfg.ingest.env_id} runs at {rates[0]} and "
                         f"{rates[1]}")
    return road_lanes(cfg, needed_by, settings)


# ---------------------------------------------------------------- simulate

def evaluation_seeds(simulate: SimulateConfig) -> range:
    """The closed-loop episode seeds (iterate never collects on them)."""
    return range(simulate.seed, simulate.seed + simulate.episodes)


def env_of(cfg: Config) -> tuple[str, dict]:
    """The closed loop's env id and config: simulate's, over ingest's for the same id."""
    env_id = cfg.simulate.env_id or cfg.ingest.env_id
    inherited = dict(cfg.ingest.env_config) if env_id == cfg.ingest.env_id else {}
    return env_id, inherited | dict(cfg.simulate.env_config)


def lane_guard(simulate: SimulateConfig):
    """The planner's LaneGuard, or None when `simulate.lane_guard` is off."""
    from pipeline.planner.lane_guard import LaneGuard

    if not simulate.lane_guard:
        return None
    try:
        return LaneGuard(simulate.guard_front_gap, simulate.guard_rear_gap,
                         simulate.guard_rear_ttc)
    except ValueError as err:
        raise StageError(f"simulate.guard_*: {err}") from None


def planner_factory(cfg: Config, path: Path, policy=None):
    """A factory of fresh planner policies (`policy`: a PlannerPolicy class, default
    PlannerPolicy) over one scorer of the ONNX `path`."""
    from models.candidates import enumerate_candidates
    from pipeline.planner.policy import PlannerPolicy, resolve_surprise_threshold
    from pipeline.planner.scorer import OnnxScorer

    scorer = OnnxScorer.load(path, threads=cfg.simulate.threads, seed=cfg.seed)
    candidates = enumerate_candidates(scorer.horizon)
    s, policy = cfg.simulate, policy or PlannerPolicy
    guard = lane_guard(s)
    threshold = resolve_surprise_threshold(s.surprise_threshold, scorer)  # 0: calibrated
    return lambda: policy(scorer, candidates, risk_weight=s.risk_weight,
                          uncertainty_weight=s.uncertainty_weight, risk_budget=s.risk_budget,
                          surprise_threshold=threshold,
                          surprise_patience=s.surprise_patience, guard=guard)


def collecting(make):
    """A factory that keeps every policy it makes (in order) and that list."""
    made = []

    def factory():
        made.append(make())
        return made[-1]

    return factory, made



# ---------------------------------------------------------------- collect

SEED_STREAM = 7919  # spawn-key tag of collection env seeds (ingest spawns (episode,) keys)
ACTOR_SEED_STREAM = 7927  # spawn-key tag of the env seeds the actor stage's planner drives


def collection_seeds(seed: int, round_index: int, episodes: int,
                     forbidden: range | set[int], stream: int = SEED_STREAM) -> list[int]:
    """`episodes` distinct env seeds of a round, from (seed, round, stream) alone; a draw
    that is in `forbidden` (the evaluation seeds) or already taken is skipped and drawn
    again. `stream`: SEED_STREAM for the loop's collection, ACTOR_SEED_STREAM for the
    episodes the actor stage has the planner drive."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(stream, round_index)))
    seeds: list[int] = []
    while len(seeds) < episodes:
        drawn = int(rng.integers(2**31 - 1))
        if drawn not in forbidden and drawn not in seeds:
            seeds.append(drawn)
    return seeds


# ---------------------------------------------------------------- Lightning fits
# (train and actor: stages that train with a Lightning Trainer)


def mlflow_logger(cfg: Config, ctx):
    """Lightning logs its per-epoch metrics into the stage's own nested MLflow run."""
    if ctx.run_id is None:
        return False
    from lightning.pytorch.loggers import MLFlowLogger

    return MLFlowLogger(tracking_uri=cfg.tracking_uri, run_id=ctx.run_id)


def completed_epochs(checkpoint: str | None) -> int:
    """Epochs a (last) checkpoint has finished; 0 without one. A checkpoint that cannot be
    read (a kill while it was written by an older Lightning, a full disk) is refused."""
    if checkpoint is None:
        return 0
    import torch

    try:
        return int(torch.load(checkpoint, map_location="cpu", weights_only=False)["epoch"]) + 1
    except Exception as err:  # torch.load raises many types on a damaged file
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise StageError(f"{checkpoint}: checkpoint cannot be read ({reason}); delete it to "
                         f"train from the start, or run without resume (train.resume, "
                         f"actor.resume)") from None
