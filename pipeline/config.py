"""The typed configuration tree: YAML file + dotted overrides -> frozen dataclasses.

Every field is documented where it is declared. Loading validates everything at once:
an unknown key, a wrong type or a missing file raises `ConfigError` with one sentence
naming the key or path. Derived values come from `resolve()`; nothing writes into a
loaded config.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from models.loss_weights import LossWeights
from pipeline.errors import DrivecastError
from pipeline.gridworld import GridworldConfig


class ConfigError(DrivecastError, ValueError):
    """A config file, key or value that cannot be used (message names it)."""


class Variant(str, enum.Enum):
    """World-model variants (see models/world_model.py)."""

    deterministic = "deterministic"
    probabilistic = "probabilistic"
    value_equivalent = "value_equivalent"


class RiskSource(str, enum.Enum):
    """Where the model's collision probability comes from (see models/risk.py)."""

    overlap = "overlap"
    head = "head"
    combined = "combined"


@dataclass(frozen=True)
class PolicyMix:
    """One behaviour policy of the ingest mixture."""

    name: str = "rule"  # idle | random | rule
    epsilon: float = 0.0  # probability of a uniformly random meta-action instead
    weight: float = 1.0  # share of episodes driven by this policy


@dataclass(frozen=True)
class RecordedConfig:
    """Recorded trajectories (ingest.source: recorded): files, column mapping, units, scenes.

    Empty strings and zeros take the preset's value (highd, ngsim) or the default named in
    the comment. pipeline/recorded*.py implements it; the README's "Recorded datasets"
    section documents every step.
    """

    path: str = ""  # a CSV/Parquet file, a directory or a glob; each file is one recording
    preset: str = ""  # "" (generic) | highd | ngsim: that layout's columns and units
    columns: dict = field(default_factory=dict)  # role -> column name, merged over the
    # preset's; roles: time, track, x, y (required), vx, vy, heading, length, width, lane
    time_unit: str = ""  # s | ms | iso (ISO 8601 text) | frame (frame numbers); default s
    frame_rate: float = 0.0  # Hz of time_unit frame (highd: read from recordingMeta.csv)
    length_unit: str = ""  # m | ft: unit of x, y, length, width (per second: vx, vy); default m
    heading_unit: str = ""  # rad | deg, counter-clockwise from +x in the file's axes; default rad
    position: str = ""  # what x, y locate: centre | front_centre | box_corner (the corner
    # with the smallest x and y of a box `length` along x, `width` along y); default centre
    y_axis: str = ""  # left | right: where +y points for a driver heading along +x. left: map
    # coordinates (east/north), mirrored on read; right: image coordinates (highD, NGSIM
    # local, highway-env); default left
    sort_rows: bool = False  # sort rows by track and time first; else they must be in order
    frequency: int = 10  # Hz of the resampled frames (linear interpolation)
    policy_frequency: int = 1  # meta-actions per second; must divide `frequency`
    max_gap: float = 0.5  # s; a track is split into two tracks at a longer gap between samples
    scene_seconds: float = 30.0  # recordings are cut into scenes this long: the time ranges
    # that train/val/test split (no scene is in two splits)
    ego_min_seconds: float = 8.0  # a vehicle in a scene this long becomes an ego in turn
    egos_per_scene: int = 0  # at most this many egos per scene, drawn with the seed (0: all)
    neighbour_radius: float = 100.0  # m; an ego's episode keeps vehicles that come this close
    lateral_speed: float = 0.6  # m/s; lateral displacement / step duration (relative to the
    # road direction) at or above which a step is LANE_LEFT / LANE_RIGHT
    acceleration: float = 0.6  # m/s^2; speed change / step duration for FASTER / SLOWER
    road_radius: float = 50.0  # m; road direction = median heading (mod 180 deg) of the ego
    # and the vehicles this close to it ...
    road_window: float = 10.0  # s; ... over this long a window centred on the step
    near_miss_ttc: float = 0.0  # s; > 0: collision labels are near misses (time to collision
    # with a vehicle ahead or behind below this); 0: collision labels are unknown (masked)
    scenes_per_shard: int = 8  # scenes per Parquet shard


@dataclass(frozen=True)
class IngestConfig:
    """Collect a trajectory dataset from highway-env, or read recorded trajectories."""

    source: str = "highway"  # where data comes from: highway (simulator) | recorded (files,
    # see `recorded`)
    env_id: str = "highway-fast-v0"  # any highway-env id: highway-v0, merge-v0, ...
    env_config: dict = field(default_factory=dict)  # highway-env config overrides
    episodes: int = 40  # episodes to record
    policies: list[PolicyMix] = field(
        default_factory=lambda: [PolicyMix("rule", 0.2, 0.7), PolicyMix("rule", 0.0, 0.2),
                                 PolicyMix("random", 0.0, 0.1)]
    )
    workers: int = 2  # parallel worker processes (the dataset does not depend on it)
    episodes_per_shard: int = 4  # episodes per Parquet shard (the unit of resume)
    recorded: RecordedConfig = field(default_factory=RecordedConfig)  # source: recorded


@dataclass(frozen=True)
class ModelConfig:
    """World-model shape. `size` expands into widths via `resolve()`."""

    variant: Variant = Variant.probabilistic
    size: str = "small"  # debug | small | base
    history: int = 10  # H: history frames (simulation frames) fed to the encoder
    horizon: int = 5  # F: future decision steps forecast per window
    vehicles: int = 8  # N: vehicle slots (ego + N-1 nearest)
    ensemble: int = 4  # E: prior heads for epistemic uncertainty
    stride: int = 1  # decision steps between consecutive window starts
    risk: RiskSource = RiskSource.overlap  # the collision probability evaluate and the planner
    # use: overlap (forecast boxes of ego and a neighbour overlap, models/risk.py; needs no
    # collision labels), head (the learned collision head), combined (1 - (1-head)(1-overlap))


# Named size presets: widths of the world model (constructor arguments of WorldModel).
MODEL_SIZES: dict[str, dict[str, int]] = {
    "debug": {"embed_dim": 16, "deter_dim": 32, "stoch_dim": 8, "hidden_dim": 32, "heads": 2,
              "action_dim": 8, "slot_dim": 16},
    "small": {"embed_dim": 32, "deter_dim": 64, "stoch_dim": 16, "hidden_dim": 64, "heads": 4,
              "action_dim": 16, "slot_dim": 32},
    "base": {"embed_dim": 64, "deter_dim": 128, "stoch_dim": 32, "hidden_dim": 128, "heads": 4,
             "action_dim": 16, "slot_dim": 32, "prior_hidden_dim": 64},
}


def model_kwargs(model: ModelConfig, dt: float) -> dict[str, Any]:
    """WorldModel constructor arguments: the size preset expanded plus the window geometry."""
    from pipeline.features import OBS_DIM

    if model.size not in MODEL_SIZES:
        raise ConfigError(f"config key 'model.size' must be one of {', '.join(MODEL_SIZES)}, "
                          f"got '{model.size}'")
    return {"obs_dim": OBS_DIM, "n_vehicles": model.vehicles, "n_actions": 5,
            "ensemble": model.ensemble, "variant": model.variant.value, "dt": dt,
            "risk": model.risk.value,
            **MODEL_SIZES[model.size]}


@dataclass(frozen=True)
class TrainConfig:
    """Lightning training of the world model."""

    epochs: int = 40
    batch_size: int = 128
    lr: float = 3e-3  # peak learning rate (linear warm-up, then cosine decay to 5%)
    weight_decay: float = 1e-5
    grad_clip: float = 10.0
    val_fraction: float = 0.15  # share of episodes held out for validation
    test_fraction: float = 0.15  # share of episodes held out for testing
    patience: int = 10  # early-stopping patience in epochs (val/forecast_ade: open-loop
    # position error of the other vehicles; val/loss for value_equivalent)
    resume: bool = False  # continue from the last checkpoint of the same stage key
    precision: str = "32-true"  # any Lightning precision, e.g. bf16-mixed
    accelerator: str = "cpu"  # cpu | gpu | auto ...
    devices: int = 1
    strategy: str = "auto"  # auto | ddp | ...
    num_nodes: int = 1
    num_workers: int = 0  # DataLoader workers
    loss: LossWeights = field(default_factory=LossWeights)


@dataclass(frozen=True)
class TestSet:
    """A shifted scenario: collected like `ingest` but with another env or env config."""

    name: str
    env_id: str = ""  # empty: ingest.env_id (and ingest.env_config is inherited)
    env_config: dict = field(default_factory=dict)  # merged over the inherited env config


def default_testsets() -> list[TestSet]:
    return [TestSet("dense", env_config={"vehicles_density": 1.5}),
            TestSet("lanes4", env_config={"lanes_count": 4}),
            TestSet("highway15hz", env_id="highway-v0", env_config={"simulation_frequency": 15}),
            TestSet("merge", env_id="merge-v0")]


@dataclass(frozen=True)
class EvaluateConfig:
    """Forecast, risk and uncertainty evaluation on held-out and shifted test sets."""

    episodes: int = 16  # episodes collected per shifted test set
    testsets: list[TestSet] = field(default_factory=default_testsets)
    samples: int = 6  # k sampled futures for minADE_k / minFDE_k
    scenes: int = 3  # forecast pictures in the report
    lane_keeping_tau: float = 1.0  # s, time constant of the lane-keeping baseline


@dataclass(frozen=True)
class CriticConfig:
    """The risk critic (models/critic.py): the planner's collision probability learned from
    decisions whose every candidate was judged on copies of the true simulator."""

    episodes: int = 0  # labelled episodes per round (0: no critic, the planner uses the
    # world model's risk)
    rounds: int = 1  # round 1 is driven by the envelope oracle; each later round by the
    # planner with the previous round's critic, so its own mistakes get labelled too
    epsilon: float = 0.1  # per decision: probability of a random first action (else the
    # envelope oracle drives), so the critic also sees states the oracle avoids
    epochs: int = 30
    batch_size: int = 16  # decisions per batch, each with all of its candidates
    lr: float = 0.002  # peak of the one-cycle schedule (AdamW)
    hidden: int = 128  # MLP width (64 fits as well on held-out decisions, 18 MFLOP less per
    # decision, but drove highway.yaml into 8% collisions vs 5%: within noise, not adopted)
    samples: int = 2  # imagined latent samples per candidate in training
    val_fraction: float = 0.125  # episodes held out for the validation figures
    commit: int = 0  # steps of each candidate its label holds the planner to: 0 = all F
    # (the candidate's own first event); k < F = the first event under the best
    # continuation of its first k actions (pipeline/critic_labels.py `contingent_first`)
    context: bool = False  # the hazard also reads the observed scene's lane summary (each
    # lane's nearest leader and follower, models/lane_scene.py) and the candidate's actions
    mirror: bool = False  # also fit on the training decisions seen in a mirror across the
    # road (left and right swapped: pipeline/critic_labels.py `mirrored`), twice the scenes
    members: int = 1  # critics fitted side by side on the same batches, each initialised
    # apart; the planner averages their hazard logits (models/critic.py CriticEnsemble)
    rank_weight: float = 0.0  # weight of a ranking term added to the likelihood: a logistic
    # loss over each decision's (truly unsafe, truly safe) candidate pairs
    # (models/critic.py rank_loss), the order the decision rule acts on
    replica: bool = False  # the hazard corrects the traffic replica's risk (highway-env's
    # IDM and MOBIL drivers rolled out per candidate, models/traffic.py) instead of the
    # world model's own; needs a straight highway-env road (`lanes_count`)


@dataclass(frozen=True)
class ExportConfig:
    """The ONNX planner: the world model scoring K candidate maneuver sequences."""

    horizon: int = 3  # F: decision steps per candidate sequence (<= model.horizon)
    samples: int = 2  # S: imagined latent samples per candidate (fixed noise input); on
    # highway.yaml S=2 drove as safely as S=4 (4% vs 5% collisions) at half the latency, and
    # with the critic S=1 as safely as S=2 (highway.yaml uses 1)
    gamma: float = 0.9  # discount of the predicted return
    bootstrap: bool = True  # add the value of driving on after the horizon, gamma^F r_F /
    # (1 - gamma) times P(surviving the horizon): a crash then costs the future it ends
    # (highway.yaml, 100 episodes: collisions 10% -> 5%)
    lookahead: int = 0  # with bootstrap, that value also needs surviving this many more
    # decision steps of constant-velocity extrapolation from the horizon's end (0: off);
    # with the world model's risk 2: 2% vs 4% collisions on seeds 1000-1099, 3% vs 3% on
    # 2000-2099; with the critic 3 halves them for about 1 m/s (highway.yaml: 3, README)
    lookahead_brake: bool = False  # in that extrapolation the ego brakes for a slower
    # vehicle ahead, down to lookahead_min_speed (models/risk.py `extrapolated_risk`): only
    # a leader slower than the ego can ever go then costs value (README, the lookahead)
    lookahead_min_speed: float = 20.0  # m/s: highway-env's lowest meta-action target speed
    replica: bool = False  # the planner's collision probability is the traffic replica's
    # (highway-env's IDM and MOBIL drivers rolled out per candidate in the graph,
    # models/traffic.py) instead of the world model's; not with a critic (critic.episodes 0);
    # needs a straight highway-env road (`lanes_count`)
    replica_reacting_steps: int = 3  # decision steps in which the replica's other drivers
    # react to each candidate's own ego; after them they drive on around an ego that keeps
    # its commands, and only the ego branches (fewer rows to simulate; README, the replica)
    replica_mobil_at_start: bool = False  # each MOBIL phase decides on the step's first
    # frame and acts at its own frame: one MOBIL evaluation a step instead of one a phase
    replica_late_idm_every: int = 1  # after the reacting steps the other drivers' IDM
    # accelerations are evaluated every this many frames and held in between (5: once a
    # step; 1: every frame, exact)
    replica_tail_steps: int = 0  # decision steps the replica rolls out after each
    # candidate's own, its ego keeping its last commands (IDLE): the collision probability
    # then also counts being caught just after the horizon (README, the traffic replica)
    # The planner's overlap risk (model.risk overlap/combined) checks a safety envelope, not
    # the bare 5 m x 2 m car: a box this long and wide around the ego (m). Forecasts are
    # least accurate exactly where the planner is tempted (tailgating, cutting in), so
    # the margin buys safety for speed: 8 x 2.5 took highway collisions from 55% to 5%.
    envelope_length: float = 8.0
    envelope_width: float = 2.5
    opset: int = 17  # ONNX opset (pinned)
    tolerance: float = 1e-4  # max |torch - onnxruntime| accepted by the parity check
    parity_scenes: int = 16  # recorded test scenes the parity check runs on
    model_name: str = "drivecast-planner"  # MLflow registered model name


@dataclass(frozen=True)
class SimulateConfig:
    """Closed-loop episodes in highway-env driven by the ONNX planner, and baselines."""

    planner: str = ""  # empty: this run's export; else an .onnx path or models:/<name>/<version>
    env_id: str = ""  # empty: ingest.env_id (with ingest.env_config)
    env_config: dict = field(default_factory=dict)  # merged over the inherited env config
    episodes: int = 20
    seed: int = 1000  # episode seeds are seed .. seed+episodes-1 (never used by ingest)
    risk_weight: float = 1.0  # lambda: utility = return - lambda*risk - beta*uncertainty
    uncertainty_weight: float = 0.0  # beta
    risk_budget: float = 0.2  # candidates above this collision probability are rejected
    # (none within it: the least risky one is taken)
    surprise_threshold: float = 5.0  # m: one-step forecast error that counts as surprise
    surprise_patience: int = 2  # consecutive surprised steps before the fallback takes over
    baselines: list[str] = field(default_factory=lambda: ["idle", "random", "rule", "oracle"])
    oracle_horizon: int = 2  # oracle lookahead depth (5^H simulator copies per decision)
    oracle_envelope: bool = False  # the oracle also rejects sequences that bring a vehicle
    # into the planner's safety envelope (export.envelope_*): the planner's rule with a
    # perfect forecast; highway, H=3, 20 episodes: 0% collisions at 29 m/s (H=2: 30%)
    gif_episodes: int = 1  # episodes rendered into simulate.gif (0: none)
    counterfactual_episodes: int = 0  # first episodes whose every scored candidate is also
    # driven on simulator copies, to check the planner's risk on the maneuvers it rejects
    # (evaluation/counterfactual.py; about 1.8 s per decision at export.horizon 3)
    lane_guard: bool = False  # refuse lane changes into too small a gap while an allowed
    # candidate is within the budget (evaluation/lane_guard.py); highway.yaml, seeds
    # 1000-1099 and 2000-2099: 13 collisions in 200 episodes vs 14 without, hence off
    guard_front_gap: float = 2.0  # m, bumper to bumper, ahead in the target lane
    guard_rear_gap: float = 2.0  # m, behind in the target lane
    guard_rear_ttc: float = 1.0  # s: the follower in the target lane closing faster refuses
    threads: int = 1  # onnxruntime intra-op threads
    workers: int = 1  # processes for the baselines' episodes (the planner always runs in
    # one, so its latency is measured alone; the oracle at H=3 takes ~1.4 s per decision)


@dataclass(frozen=True)
class ReplayConfig:
    """`drivecast replay`: the decision rule on the critic's held-out labelled decisions
    (evaluation/replay.py), one row per lambda and budget; beta is simulate's."""

    risk_weights: list[float] = field(default_factory=lambda: [1.0, 3.0])
    risk_budgets: list[float] = field(default_factory=lambda: [0.02, 0.05, 0.1, 0.2])


@dataclass(frozen=True)
class IterateConfig:
    """The model-based loop (`drivecast iterate`, pipeline/iterate.py). Round 0 is the
    ordinary pipeline (ingest, train, export, simulate); each round k >= 1 collects episodes
    driven by round k-1's planner (in `ingest.workers` processes, in `ingest.env_id`),
    retrains warm-started from round k-1's model on all data so far, exports and simulates
    on the evaluation seeds of `simulate` (never used for collection)."""

    rounds: int = 3  # rounds in total, round 0 included (1: just the ordinary pipeline)
    episodes: int = 40  # M: episodes collected with the planner in each round >= 1
    epsilon: float = 0.1  # per decision: probability of a uniformly random first action
    top_k: int = 1  # else the first action is drawn among the k best ones (1: greedy)
    branches: int = 0  # per planner decision, this many other scored candidates are also
    # driven open loop for model.horizon steps on simulator copies and kept as short episodes
    # (evaluation/exploration.py): true outcomes of the maneuvers the planner rejected
    episodes_per_shard: int = 4  # collected episodes per Parquet shard (the unit of resume)
    epochs: int = 10  # training epochs of each warm-started round (round 0: train.epochs)
    lr: float = 0.0  # peak learning rate of the warm-started rounds (0: train.lr)


@dataclass(frozen=True)
class TrackingConfig:
    """MLflow tracking."""

    uri: str = ""  # empty: sqlite:///<workdir>/mlflow.db (embedded, no server)
    enabled: bool = True


@dataclass(frozen=True)
class Config:
    """The whole experiment."""

    experiment: str = "drivecast"  # MLflow experiment and artifact folder name
    workdir: str = "runs"  # where every stage writes (<workdir>/<experiment>/<stage>/<key>)
    seed: int = 0  # the one seed every stage derives its randomness from
    ingest: IngestConfig = field(default_factory=IngestConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    critic: CriticConfig = field(default_factory=CriticConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    simulate: SimulateConfig = field(default_factory=SimulateConfig)
    replay: ReplayConfig = field(default_factory=ReplayConfig)
    iterate: IterateConfig = field(default_factory=IterateConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    gridworld: GridworldConfig = field(default_factory=GridworldConfig)

    @property
    def tracking_uri(self) -> str:
        return self.tracking.uri or f"sqlite:///{Path(self.workdir).resolve()}/mlflow.db"


# ---------------------------------------------------------------- loading


def load_config(path: str | Path | None, overrides: list[str] = ()) -> Config:
    """Read a YAML config (None: all defaults), apply `key.sub=value` overrides, validate."""
    raw = _read_yaml(Path(path)) if path is not None else {}
    for item in overrides:
        key, value = parse_override(item)
        _set_dotted(raw, key, value)
    return build(Config, raw, prefix="")


def parse_override(item: str) -> tuple[str, Any]:
    """`ingest.episodes=4` -> ("ingest.episodes", 4); the value is read as YAML."""
    key, sep, text = item.partition("=")
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override '{item}' is not of the form key.sub=value")
    try:
        return key, yaml.safe_load(text) if text else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"override '{item}': value is not valid YAML ({err.problem})") from None


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {err}".splitlines()[0]) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        kind = type(data).__name__
        raise ConfigError(f"config file {path} must hold a mapping of sections, not {kind}")
    return data


def _set_dotted(raw: dict, key: str, value: Any) -> None:
    *parents, leaf = key.split(".")
    node = raw
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override '{key}': '{part}' is not a section")
        node = child
    node[leaf] = value


def build(cls: type, raw: Any, prefix: str) -> Any:
    """Build dataclass `cls` from a plain mapping, checking keys and types."""
    if not isinstance(raw, dict):
        raise ConfigError(f"'{prefix or 'config'}' must be a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        where = f"{prefix}." if prefix else ""
        known = ", ".join(sorted(names))
        raise ConfigError(f"unknown config key '{where}{unknown[0]}' (known: {known})")
    values = {name: _coerce(hints[name], value, f"{prefix}.{name}".lstrip("."))
              for name, value in raw.items()}
    return cls(**values)


def _coerce(hint: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return build(hint, value, key)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"config key '{key}' must be a list, got {value!r}")
        (item,) = typing.get_args(hint)
        return [_coerce(item, v, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin in (typing.Union, types.UnionType):
        return _coerce_optional(hint, value, key)
    if hint is dict or origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' must be a mapping, got {value!r}")
        return value
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return _coerce_enum(hint, value, key)
    return _coerce_scalar(hint, value, key)


def _coerce_optional(hint: Any, value: Any, key: str) -> Any:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if value is None:
        return None
    return _coerce(args[0], value, key)


def _coerce_enum(hint: type[enum.Enum], value: Any, key: str) -> enum.Enum:
    try:
        return hint(value)
    except ValueError:
        choices = ", ".join(m.value for m in hint)
        raise ConfigError(f"config key '{key}' must be one of {choices}, got {value!r}") from None


def _coerce_scalar(hint: type, value: Any, key: str) -> Any:
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):  # YAML 1.1 reads 3e-4 as a string
        try:
            return float(value)
        except ValueError:
            pass
    if hint in (int, float) and isinstance(value, bool):
        raise ConfigError(f"config key '{key}' must be {hint.__name__}, got {value!r}")
    if not isinstance(value, hint):
        raise ConfigError(f"config key '{key}' must be {hint.__name__}, got {value!r}")
    return value


# ---------------------------------------------------------------- saving


def to_dict(obj: Any) -> Any:
    """Plain YAML/JSON-ready structure of a config (enums as their values)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, list | tuple):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}; lists are kept as their string form."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def dump_yaml(obj: Any) -> str:
    return yaml.safe_dump(to_dict(obj), sort_keys=False)
