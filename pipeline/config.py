"""The typed configuration tree: YAML file + dotted overrides -> frozen dataclasses.

Every field is documented where it is declared: one comment line saying what it is, its
unit and its choices (longer explanations sit in the class docstring);
`drivecast config --reference` turns them into docs/configuration.md. A YAML file may
name a `base` file (relative to its own directory) whose keys it is merged over. Loading
validates everything at once: an unknown key, a wrong type or a missing file raises
`ConfigError` with one sentence naming the key or path. Derived values come from
`model_kwargs()`; nothing writes into a loaded config.
"""

from __future__ import annotations

import ast
import dataclasses
import enum
import inspect
import io
import json
import math
import os
import textwrap
import tokenize
import types
import typing
from collections.abc import Iterator
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
    """World-model variants (see models/world_model.py; interaction: models/interaction.py)."""

    deterministic = "deterministic"
    probabilistic = "probabilistic"
    value_equivalent = "value_equivalent"
    interaction = "interaction"


class ModelRisk(str, enum.Enum):
    """How the world model turns its imagination into a collision probability
    (models/risk.py)."""

    overlap = "overlap"
    head = "head"
    combined = "combined"


class PlannerRisk(str, enum.Enum):
    """The planner's risk source (models/risk_sources.py): the world model's imagination,
    the traffic replica, or the risk critic."""

    model = "model"
    replica = "replica"
    critic = "critic"


class Collector(str, enum.Enum):
    """Who drives the model-based loop's collection rounds: the previous round's planner,
    or the previous round's actor (pipeline/stages/collect.py)."""

    planner = "planner"
    actor = "actor"


class Backend(str, enum.Enum):
    """The simulator that ingest or simulate runs: highway-env itself, or EnvPool's native
    C++ port of its highway scenarios (pipeline/envpool_source.py), many episodes per
    process."""

    highway_env = "highway-env"
    envpool = "envpool"


class CriticPrior(str, enum.Enum):
    """The risk the critic's hazard corrects: the world model's or the traffic replica's."""

    model = "model"
    replica = "replica"


@dataclass(frozen=True)
class PolicyMix:
    """One behaviour policy of the ingest mixture."""

    name: str = "rule"  # behaviour policy: idle | faster | random | rule
    epsilon: float = 0.0  # probability of a uniformly random meta-action instead, in [0, 1]
    weight: float = 1.0  # relative share of episodes driven by this policy


def default_policies() -> list[PolicyMix]:
    """Mostly the rule policy with some noise, some clean rule driving, some random driving."""
    return [PolicyMix("rule", 0.2, 0.7), PolicyMix("rule", 0.0, 0.2),
            PolicyMix("random", 0.0, 0.1)]


@dataclass(frozen=True)
class RecordedConfig:
    """Recorded trajectories (ingest.source: recorded): files, column mapping, units, scenes.

    Empty strings and zeros take the preset's value (highd, ngsim) or the default named in
    the field's comment; pipeline/recorded/ implements it.

    `columns` maps roles to column names, merged over the preset's; the roles are time,
    track, x, y (required), vx, vy, heading, length, width and lane. `position: box_corner`
    is the corner with the smallest x and y of a box `length` along x and `width` along y.
    `y_axis: left` means map coordinates (east/north), mirrored on read; `right` means
    image coordinates (highD, NGSIM local, highway-env).

    Meta-actions are inferred relative to the road direction: the median heading (mod 180
    deg) of the ego and the vehicles within `road_radius` of it, over a `road_window`
    centred on the step. A step whose lateral displacement per step duration reaches
    `lateral_speed` is LANE_LEFT / LANE_RIGHT; one whose speed change per step duration
    reaches `acceleration` is FASTER / SLOWER. With `near_miss_ttc` > 0 the collision labels
    are near misses (time to collision with a vehicle ahead or behind below it); with 0 they
    are unknown and masked.
    """

    path: str = ""  # a CSV/Parquet file, a directory or a glob; each file is one recording
    preset: str = ""  # column layout and units: "" (generic) | highd | ngsim
    columns: dict = field(default_factory=dict)  # role -> column name, over the preset's
    time_unit: str = ""  # time column unit: s | ms | iso (ISO 8601 text) | frame; default s
    frame_rate: float = 0.0  # Hz of time_unit frame (highd: read from recordingMeta.csv)
    length_unit: str = ""  # unit of x, y, length, width (and per s: vx, vy): m | ft; default m
    heading_unit: str = ""  # rad | deg, counter-clockwise from +x in the file; default rad
    position: str = ""  # point that x, y locate: centre | front_centre | box_corner
    y_axis: str = ""  # where +y points for a driver heading along +x: left | right
    sort_rows: bool = False  # sort rows by track and time first; else they must be in order
    frequency: int = 10  # Hz of the resampled frames (linear interpolation)
    policy_frequency: int = 1  # meta-actions per second; must divide `frequency`
    max_gap: float = 0.5  # s: a longer gap between a track's samples splits the track
    scene_seconds: float = 30.0  # s: length of a scene, the unit the train/val/test split keeps
    ego_min_seconds: float = 8.0  # s: a vehicle in a scene this long becomes an ego in turn
    egos_per_scene: int = 0  # most egos per scene, drawn with the seed (0: all)
    neighbour_radius: float = 100.0  # m: an ego's episode keeps vehicles that come this close
    lateral_speed: float = 0.6  # m/s: lateral speed at or above which a step is a lane change
    acceleration: float = 0.6  # m/s^2: speed change at or above which a step is FASTER/SLOWER
    road_radius: float = 50.0  # m: vehicles this close to the ego set the road direction
    road_window: float = 10.0  # s: time window, centred on the step, of the road direction
    near_miss_ttc: float = 0.0  # s: TTC under which a step is a near miss (0: labels masked)
    scenes_per_shard: int = 8  # scenes per Parquet shard


@dataclass(frozen=True)
class IngestConfig:
    """Collect a trajectory dataset from highway-env, or read recorded trajectories."""

    source: str = "highway"  # where data comes from: highway (simulator) | recorded (files)
    env_id: str = "highway-fast-v0"  # highway-env id: highway-fast-v0, highway-v0, merge-v0, ...
    backend: Backend = Backend.highway_env  # ingest and iterate: highway-env | envpool (highway id)
    env_config: dict = field(default_factory=dict)  # highway-env config overrides
    episodes: int = 40  # episodes to record
    policies: list[PolicyMix] = field(default_factory=default_policies)  # behaviour mixture
    workers: int = 2  # parallel worker processes (the dataset does not depend on it)
    batch: int = 64  # episodes envpool steps together (the dataset does not depend on it)
    episodes_per_shard: int = 4  # episodes per Parquet shard (the unit of resume)
    recorded: RecordedConfig = field(default_factory=RecordedConfig)  # files of source: recorded


@dataclass(frozen=True)
class ModelConfig:
    """World-model shape. `size` expands into widths via `model_kwargs()` (MODEL_SIZES).

    `variant`: the RSSM (models/world_model.py) as probabilistic, deterministic or
    value_equivalent, or interaction (models/interaction.py: a latent state per vehicle,
    attention between vehicles at sub-steps of each decision; INTERACTION_SIZES).

    `risk` is the collision probability that evaluate and the planner's model risk use:
    overlap (the forecast boxes of the ego and a neighbour overlap, models/risk.py; needs no
    collision labels), head (the learned collision head) or combined
    (1 - (1 - head)(1 - overlap)).
    """

    variant: Variant = Variant.probabilistic  # an RSSM kind or interaction (see above)
    size: str = "small"  # width preset: debug | small | base
    history: int = 10  # H: history frames (simulation frames) fed to the encoder
    horizon: int = 5  # F: future decision steps forecast per window
    vehicles: int = 8  # N: vehicle slots (the ego and its N-1 nearest)
    ensemble: int = 4  # E: prior heads for epistemic uncertainty
    stride: int = 1  # decision steps between consecutive window starts
    risk: ModelRisk = ModelRisk.overlap  # imagined collision probability: overlap | head | combined


# Named size presets: widths of the world model (constructor arguments of WorldModel).
MODEL_SIZES: dict[str, dict[str, int]] = {
    "debug": {"embed_dim": 16, "deter_dim": 32, "stoch_dim": 8, "hidden_dim": 32, "heads": 2,
              "action_dim": 8, "slot_dim": 16},
    "small": {"embed_dim": 32, "deter_dim": 64, "stoch_dim": 16, "hidden_dim": 64, "heads": 4,
              "action_dim": 16, "slot_dim": 32},
    "base": {"embed_dim": 64, "deter_dim": 128, "stoch_dim": 32, "hidden_dim": 128, "heads": 4,
             "action_dim": 16, "slot_dim": 32, "prior_hidden_dim": 64},
}

# The same presets for the interaction variant (constructor arguments of
# models/interaction.py InteractionWorldModel): per-vehicle latent widths and the sub-steps
# of each decision step at which vehicles interact.
INTERACTION_SIZES: dict[str, dict[str, int]] = {
    "debug": {"embed_dim": 16, "hidden_dim": 32, "vehicle_stoch": 2, "heads": 2,
              "action_dim": 8, "substeps": 5},
    "small": {"embed_dim": 32, "hidden_dim": 64, "vehicle_stoch": 4, "heads": 2,
              "action_dim": 8, "substeps": 5},
    "base": {"embed_dim": 64, "hidden_dim": 96, "vehicle_stoch": 4, "heads": 4,
             "action_dim": 16, "substeps": 5},
}


def model_kwargs(model: ModelConfig, dt: float) -> dict[str, Any]:
    """WorldModel constructor arguments: the size preset expanded plus the window geometry."""
    from pipeline.features import OBS_DIM

    if model.size not in MODEL_SIZES:
        raise ConfigError(f"config key 'model.size' must be one of {', '.join(MODEL_SIZES)}, "
                          f"got '{model.size}'")
    sizes = INTERACTION_SIZES if model.variant is Variant.interaction else MODEL_SIZES
    return {"obs_dim": OBS_DIM, "n_vehicles": model.vehicles, "n_actions": 5,
            "ensemble": model.ensemble, "variant": model.variant.value, "dt": dt,
            "risk": model.risk.value,
            **sizes[model.size]}


@dataclass(frozen=True)
class TrainConfig:
    """Lightning training of the world model (AdamW).

    The learning rate rises linearly over a short warm-up to `lr`, then decays along a
    cosine to 5% of it. Early stopping watches val/forecast_ade (the open-loop position
    error of the other vehicles), or val/loss for the value_equivalent variant.
    """

    epochs: int = 40  # most training epochs
    batch_size: int = 128  # windows per batch
    lr: float = 3e-3  # peak learning rate
    weight_decay: float = 1e-5  # AdamW weight decay
    grad_clip: float = 10.0  # gradient norm above which gradients are scaled down
    val_fraction: float = 0.15  # share of episodes held out for validation
    test_fraction: float = 0.15  # share of episodes held out for testing
    patience: int = 10  # epochs without improvement before early stopping
    resume: bool = False  # continue from the last checkpoint of the same stage key
    precision: str = "32-true"  # any Lightning precision: 32-true | bf16-mixed | 16-mixed ...
    accelerator: str = "cpu"  # Lightning accelerator: cpu | gpu | auto ...
    devices: int = 1  # devices per node
    strategy: str = "auto"  # Lightning strategy: auto | ddp ...
    num_nodes: int = 1  # machines taking part in training
    num_workers: int = 0  # DataLoader worker processes (0: load in the main process)
    loss: LossWeights = field(default_factory=LossWeights)  # weights of the loss terms


@dataclass(frozen=True)
class TestSet:
    """A shifted scenario: collected like `ingest` but with another env or env config."""

    name: str  # name of the test set in the report and the artifacts
    env_id: str = ""  # highway-env id; empty: ingest.env_id, with ingest.env_config inherited
    env_config: dict = field(default_factory=dict)  # merged over the inherited env config
    backend: Backend | None = None  # simulator; unset: ingest's if EnvPool has it, else highway-env


def default_testsets() -> list[TestSet]:
    return [TestSet("dense", env_config={"vehicles_density": 1.5}),
            TestSet("lanes4", env_config={"lanes_count": 4}),
            TestSet("highway15hz", env_id="highway-v0", env_config={"simulation_frequency": 15}),
            TestSet("merge", env_id="merge-v0")]


@dataclass(frozen=True)
class EvaluateConfig:
    """Forecast, risk and uncertainty evaluation on held-out and shifted test sets."""

    episodes: int = 16  # episodes collected per shifted test set
    testsets: list[TestSet] = field(default_factory=default_testsets)  # shifted scenarios
    samples: int = 6  # k: sampled futures for minADE_k / minFDE_k
    scenes: int = 3  # forecast pictures in the report, and windows per imagination GIF
    lane_keeping_tau: float = 1.0  # s: time constant of the lane-keeping baseline


@dataclass(frozen=True)
class CriticConfig:
    """The risk critic (models/critic.py): the planner's collision probability learned from
    decisions whose every candidate was judged on copies of the true simulator.

    Round 1 is driven by the envelope oracle (a random first action with probability
    `epsilon`, so the critic also sees states the oracle avoids); each later round by the
    planner with the previous round's critic, so its own mistakes get labelled too.

    `commit` 0 labels each candidate with its own first event; k < F labels it with the
    first event under the best continuation of its first k actions
    (pipeline/critic_labels.py `contingent_first`). `context` lets the hazard also read the
    observed scene's lane summary (each lane's nearest leader and follower,
    models/lane_scene.py) and the candidate's actions. `mirror` adds the training decisions
    seen in a mirror across the road (left and right swapped). With `members` > 1 the
    critics start from different initialisations and the planner averages their hazard
    logits (models/critic.py CriticEnsemble). `rank_weight` weighs a logistic loss over each
    decision's (truly unsafe, truly safe) candidate pairs (models/critic.py rank_loss), the
    order the decision rule acts on. `prior: replica` needs a straight highway-env road.
    """

    episodes: int = 0  # labelled episodes per round (0: no critic)
    rounds: int = 1  # labelling rounds (round 1: the envelope oracle drives; later: the planner)
    epsilon: float = 0.1  # per decision: probability of a random first action, in [0, 1]
    epochs: int = 30  # training epochs
    batch_size: int = 16  # decisions per batch, each with all of its candidates
    lr: float = 0.002  # peak learning rate of the one-cycle schedule (AdamW)
    hidden: int = 128  # MLP width
    samples: int = 2  # imagined latent samples per candidate in training
    val_fraction: float = 0.125  # share of episodes held out for the validation figures
    commit: int = 0  # steps of each candidate its label holds the planner to (0: all F)
    context: bool = False  # the hazard also reads the scene's lane summary and the actions
    mirror: bool = False  # also fit on the training decisions mirrored across the road
    members: int = 1  # critics fitted side by side; the planner averages their hazard logits
    rank_weight: float = 0.0  # weight of the candidate-ranking loss added to the likelihood
    prior: CriticPrior = CriticPrior.model  # the risk the hazard corrects: model | replica


@dataclass(frozen=True)
class ActorConfig:
    """The actor and critic trained in imagination (models/actor.py, Dreamer's route).

    From the latent states of the training windows' real histories the frozen world model
    imagines `horizon` decision steps with actions drawn from the actor; each step earns
    the reward head minus `collision_penalty` times the imagined collision probability
    (model.risk, with the world model's own vehicle boxes) and goes on with probability
    min(continue, 1 - collision). The critic regresses lambda-returns, the actor follows
    REINFORCE with returns scaled by their running 5-95% range, plus `entropy` times its
    entropy. With `search_weight` > 0 the actor also learns the exported planner's
    decisions (cross-entropy with that weight; MuZero's policy target) in each training
    window and, with `planner_episodes` > 0, in every decision of that many EnvPool
    episodes the planner drives (a random action executed on `planner_epsilon` of them);
    those states are imagination start states too. `epochs` 0 trains no actor: simulate
    then drives no actor rows.
    """

    epochs: int = 0  # training epochs (0: no actor)
    batches: int = 100  # optimiser steps per epoch
    batch_size: int = 256  # imagined rollouts per step, each from one training window
    horizon: int = 5  # T: imagined decision steps per rollout
    gamma: float = 0.9  # discount per decision step
    lam: float = 0.95  # lambda of the lambda-returns
    entropy: float = 1e-3  # weight of the entropy bonus
    collision_penalty: float = 1.0  # reward lost per expected imagined collision
    lr: float = 3e-4  # Adam learning rate of actor and critic
    hidden: int = 64  # MLP width of actor and critic
    slow_rate: float = 0.02  # per step: how far the slow critic moves to the critic
    search_weight: float = 0.0  # weight of imitating the planner's decisions (0: none)
    planner_episodes: int = 0  # EnvPool episodes the planner drives to label more states
    planner_epsilon: float = 0.1  # share of those decisions executed as a random action
    resume: bool = False  # continue from the last checkpoint of the same stage key


@dataclass(frozen=True)
class ExportConfig:
    """The ONNX planner: the world model scoring K candidate maneuver sequences.

    `risk` chooses the planner's collision probability (models/risk_sources.py): model (the
    world model's imagination, see model.risk), replica (highway-env's IDM and MOBIL drivers
    rolled out per candidate in the graph, models/traffic.py: a hand-written reference that
    needs a straight highway-env road) or critic (fitted by the critic stage; needs
    critic.episodes > 0).

    With `bootstrap` the return adds the value of driving on after the horizon,
    gamma^F r_F / (1 - gamma), times the probability of surviving the horizon: a crash then
    costs the future it ends. `lookahead` > 0 makes that value also need surviving that many
    more decision steps of constant-velocity extrapolation from the horizon's end; with
    `lookahead_brake` the ego brakes there for a slower vehicle ahead, down to
    `lookahead_min_speed` (models/risk.py `extrapolated_risk`).

    The replica's other drivers react to each candidate's own ego during the first
    `replica_reacting_steps`; after them they drive on around an ego that keeps its
    commands, and only the ego branches. `replica_mobil_at_start` decides each MOBIL phase
    on the step's first frame and acts at its own frame (one MOBIL evaluation per step
    instead of one per phase). After the reacting steps the IDM accelerations are evaluated
    every `replica_late_idm_every` frames and held in between (1: every frame, exact).
    `replica_tail_steps` rolls out that many IDLE steps after each candidate's own, so being
    caught just after the horizon counts too.

    The overlap risk (model.risk overlap or combined) checks a safety envelope
    `envelope_length` x `envelope_width` around the ego rather than the bare 5 m x 2 m car:
    forecasts are least accurate where the planner is tempted (tailgating, cutting in), and
    the margin trades speed for safety there.

    The reality check's surprise threshold is calibrated here: the planner's one-step
    forecast error (pipeline/planner/calibrate.py) on up to `surprise_windows` held-out test
    windows, under the actions really taken; its `surprise_quantile` is stored in the
    sidecar, and simulate.surprise_threshold 0 uses it.
    """

    horizon: int = 3  # F: decision steps per candidate sequence (<= model.horizon)
    samples: int = 2  # S: imagined latent samples per candidate (a fixed noise input)
    gamma: float = 0.9  # discount of the predicted return
    bootstrap: bool = True  # add the survival-weighted value of driving on after the horizon
    lookahead: int = 0  # decision steps of constant-velocity extrapolation after it (0: off)
    lookahead_brake: bool = False  # in that extrapolation the ego brakes for a slower leader
    lookahead_min_speed: float = 20.0  # m/s: braking floor (highway-env's lowest target speed)
    risk: PlannerRisk = PlannerRisk.model  # planner's risk source: model | replica | critic
    replica_reacting_steps: int = 3  # decision steps in which the replica's drivers react to ego
    replica_mobil_at_start: bool = False  # replica: one MOBIL evaluation a step, on its first frame
    replica_late_idm_every: int = 1  # replica: frames between IDM evaluations after reacting steps
    replica_tail_steps: int = 0  # replica: IDLE steps rolled out after each candidate's own
    envelope_length: float = 8.0  # m: length of the safety envelope around the ego
    envelope_width: float = 2.5  # m: width of the safety envelope around the ego
    opset: int = 17  # ONNX opset (pinned)
    tolerance: float = 1e-4  # max |torch - onnxruntime| accepted by the parity check
    parity_scenes: int = 16  # recorded test scenes the parity check runs on
    model_name: str = "drivecast-planner"  # MLflow registered model name
    surprise_quantile: float = 0.99  # quantile of held-out surprise stored as the threshold
    surprise_windows: int = 3000  # held-out windows the threshold is calibrated on (0: all)


def default_baselines() -> list[str]:
    return ["idle", "random", "rule", "oracle"]


@dataclass(frozen=True)
class SimulateConfig:
    """Closed-loop episodes in highway-env driven by the ONNX planner, and baselines.

    The decision rule scores utility = return - risk_weight * risk - uncertainty_weight *
    uncertainty and rejects candidates whose collision probability exceeds `risk_budget`
    (when none is within it, the least risky one is taken). Once the one-step forecast
    error has exceeded `surprise_threshold` on `surprise_patience` consecutive decisions, a
    fallback policy drives; `surprise_threshold` 0 takes the threshold the export calibrated
    on held-out data (export.surprise_quantile, in the sidecar; a planner exported without
    one uses 5 m and says so), a number > 0 is an explicit threshold in metres.
    `oracle_envelope` makes the oracle also reject sequences that
    bring a vehicle into the planner's safety envelope (export.envelope_*): the planner's
    rule with a perfect forecast. `counterfactual_episodes` also drives every scored
    candidate of the first episodes on simulator copies (evaluation/counterfactual.py), to
    check the planner's risk on the maneuvers it rejects. `lane_guard` refuses lane changes
    into too small a gap while an allowed candidate is within the budget
    (pipeline/planner/lane_guard.py). The planner always runs in one process, so that its
    latency is measured alone; `workers` applies to the baselines. With `backend: envpool`
    the planner and the baselines drive `batch` EnvPool episodes per pool in this process
    (evaluation/envpool_loop.py; the oracle, which copies highway-env, is refused); the GIF
    and the counterfactual check still run on highway-env.
    """

    planner: str = ""  # empty: this run's export; else an .onnx path or `models:/<name>/<version>`
    env_id: str = ""  # highway-env id; empty: ingest.env_id (with ingest.env_config)
    env_config: dict = field(default_factory=dict)  # merged over the inherited env config
    episodes: int = 20  # closed-loop episodes per policy
    seed: int = 1000  # episode seeds are seed .. seed+episodes-1 (never used by ingest)
    risk_weight: float = 1.0  # lambda: weight of the collision probability in the utility
    uncertainty_weight: float = 0.0  # beta: weight of the uncertainty in the utility
    risk_budget: float = 0.2  # collision probability above which a candidate is rejected
    surprise_threshold: float = 0.0  # m: one-step forecast error counted as surprise; 0: calibrated
    surprise_patience: int = 2  # consecutive surprised steps before the fallback takes over
    baselines: list[str] = field(default_factory=default_baselines)  # idle | random | rule | oracle
    oracle_horizon: int = 2  # H: oracle lookahead depth (5^H simulator copies per decision)
    oracle_envelope: bool = False  # the oracle also keeps vehicles out of the safety envelope
    gif_episodes: int = 1  # episodes rendered into simulate.gif and planner_view.gif (0: none)
    counterfactual_episodes: int = 0  # first episodes whose candidates all run on sim copies
    lane_guard: bool = False  # refuse lane changes into too small a gap in the target lane
    guard_front_gap: float = 2.0  # m, bumper to bumper: smallest gap ahead in the target lane
    guard_rear_gap: float = 2.0  # m, bumper to bumper: smallest gap behind in the target lane
    guard_rear_ttc: float = 1.0  # s: a target-lane follower closing in under this TTC refuses
    threads: int = 1  # onnxruntime intra-op threads
    workers: int = 1  # processes for the baselines' episodes
    backend: Backend = Backend.highway_env  # simulator: highway-env | envpool (highway ids only)
    batch: int = 64  # episodes envpool steps together (the results do not depend on it)
    actor_top_actions: int = 2  # planner+actor: first actions scored, the actor's most probable


@dataclass(frozen=True)
class ReplayConfig:
    """`drivecast replay`: the decision rule on the critic's held-out labelled decisions
    (evaluation/replay.py), one row per lambda and budget; beta is simulate's."""

    risk_weights: list[float] = field(default_factory=lambda: [1.0, 3.0])  # lambdas replayed
    risk_budgets: list[float] = field(
        default_factory=lambda: [0.02, 0.05, 0.1, 0.2])  # risk budgets replayed


@dataclass(frozen=True)
class IterateConfig:
    """The model-based loop (`drivecast iterate`, pipeline/iterate.py). Round 0 is the
    ordinary pipeline (ingest, train, export, simulate); each round k >= 1 collects episodes
    driven by round k-1's planner, or with `collector: actor` by round k-1's actor (in
    `ingest.workers` processes, in `ingest.env_id`), retrains warm-started from round
    k-1's model on all data so far, exports and simulates on the evaluation seeds of
    `simulate` (never used for collection). `epsilon` applies to either collector, `top_k`
    and `branches` to the planner only.

    With `branches` > 0, per planner decision that many other scored candidates are also
    driven open loop for model.horizon steps on simulator copies and kept as short
    episodes (evaluation/exploration.py): true outcomes of the maneuvers the planner
    rejected.
    """

    rounds: int = 3  # rounds in total, round 0 included (1: just the ordinary pipeline)
    episodes: int = 40  # M: episodes collected in each round >= 1
    collector: Collector = Collector.planner  # who collects them: planner | actor
    epsilon: float = 0.1  # per decision: probability of a uniformly random first action
    top_k: int = 1  # otherwise the first action is drawn among the k best (1: greedy)
    branches: int = 0  # other candidates per decision also driven on simulator copies
    episodes_per_shard: int = 4  # collected episodes per Parquet shard (the unit of resume)
    epochs: int = 10  # training epochs of each warm-started round (round 0: train.epochs)
    lr: float = 0.0  # peak learning rate of the warm-started rounds (0: train.lr)


@dataclass(frozen=True)
class TrackingConfig:
    """MLflow tracking."""

    uri: str = ""  # tracking URI; empty: `sqlite:///<workdir>/mlflow.db` (embedded, no server)
    enabled: bool = True  # log runs, parameters, metrics and artifacts to MLflow


@dataclass(frozen=True)
class Config:
    """The whole experiment."""

    experiment: str = "drivecast"  # MLflow experiment and artifact folder name
    workdir: str = "runs"  # where every stage writes: `<workdir>/<experiment>/<stage>/<key>`
    seed: int = 0  # the one seed every stage derives its randomness from
    ingest: IngestConfig = field(default_factory=IngestConfig)  # the dataset
    model: ModelConfig = field(default_factory=ModelConfig)  # the world model's shape
    train: TrainConfig = field(default_factory=TrainConfig)  # world-model training
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)  # forecast evaluation
    critic: CriticConfig = field(default_factory=CriticConfig)  # the risk critic
    actor: ActorConfig = field(default_factory=ActorConfig)  # the actor trained in imagination
    export: ExportConfig = field(default_factory=ExportConfig)  # the ONNX planner
    simulate: SimulateConfig = field(default_factory=SimulateConfig)  # closed-loop driving
    replay: ReplayConfig = field(default_factory=ReplayConfig)  # `drivecast replay`
    iterate: IterateConfig = field(default_factory=IterateConfig)  # the model-based loop
    tracking: TrackingConfig = field(default_factory=TrackingConfig)  # MLflow tracking
    gridworld: GridworldConfig = field(default_factory=GridworldConfig)  # `drivecast gridworld`

    @property
    def tracking_uri(self) -> str:
        return self.tracking.uri or f"sqlite:///{Path(self.workdir).resolve()}/mlflow.db"


# ---------------------------------------------------------------- loading

BASE_KEY = "base"  # top-level key naming the file a config is merged over


def load_config(path: str | Path | None, overrides: list[str] = ()) -> Config:
    """Read a YAML config (None: all defaults) over its `base` chain, apply `key.sub=value`
    overrides, validate."""
    raw = read_tree(Path(path)) if path is not None else {}
    empty = path is not None and not raw
    for item in overrides:
        key, value = parse_override(item)
        _set_dotted(raw, key, value)
    cfg = build(Config, raw, prefix="")
    if empty:  # after `build`, so that a misspelt override is named first
        raise ConfigError(f"config file {path} is empty: give it at least one section, or "
                          f"leave the file out to run with every default")
    check_values(cfg)
    return cfg


def read_tree(path: Path) -> dict:
    """The file's mapping merged over its `base` file's (recursively); holds no `base` key."""
    return _compose(path, ())


def merge_tree(base: dict, over: dict) -> dict:
    """`over` merged onto `base`: mappings merged deeply, lists and scalars replaced."""
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_tree(merged[key], value)
        else:
            merged[key] = value
    return merged


def _compose(path: Path, chain: tuple[Path, ...]) -> dict:
    raw = _read_yaml(path)
    if BASE_KEY not in raw:
        return raw
    chain = (*chain, path)
    base = _base_path(path, raw.pop(BASE_KEY), chain)
    return merge_tree(_compose(base, chain), raw)


def _base_path(path: Path, base: Any, chain: tuple[Path, ...]) -> Path:
    """The file `base` names, relative to `path`'s directory; refused if missing or a cycle."""
    if not isinstance(base, str) or not base.strip():
        raise ConfigError(f"config file {path}: 'base' must be a path relative to the file, "
                          f"got {base!r}")
    target = Path(os.path.normpath(path.parent / base))
    if not target.is_file():
        raise ConfigError(f"config file {path}: base file {target} does not exist")
    if any(target.resolve() == seen.resolve() for seen in chain):
        cycle = " -> ".join(str(p) for p in (*chain, target))
        raise ConfigError(f"config file {path}: base {base} makes a cycle ({cycle})")
    return target


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


# ---------------------------------------------------------------- value ranges
# Checked when a config is loaded, so a bad value is refused before any stage runs. Settings
# that a stage's own check refuses (ingest.episodes and policies, export.lookahead and the
# replica's steps, critic.*, simulate.episodes, workers and lane guard, iterate.*) keep
# that check's message (replay's ranges too: here only that its numbers are finite).

AT_LEAST_ONE = ("ingest.workers", "ingest.batch", "ingest.episodes_per_shard",
                "ingest.recorded.scenes_per_shard", "model.history", "model.horizon",
                "model.vehicles", "model.ensemble", "model.stride", "train.epochs",
                "train.batch_size", "train.devices", "train.num_nodes", "evaluate.episodes",
                "evaluate.samples", "export.horizon", "export.samples", "export.opset",
                "export.parity_scenes", "simulate.surprise_patience", "simulate.oracle_horizon",
                "simulate.threads", "actor.batches", "actor.batch_size", "actor.horizon",
                "actor.hidden", "simulate.actor_top_actions")
AT_LEAST_ZERO = ("seed", "actor.epochs", "actor.planner_episodes", "train.patience",
                 "train.num_workers", "evaluate.scenes", "export.surprise_windows",
                 "simulate.seed", "simulate.gif_episodes")
POSITIVE = ("train.lr", "actor.lr", "evaluate.lane_keeping_tau", "export.envelope_length",
            "export.envelope_width", "export.tolerance")
NOT_NEGATIVE = ("train.weight_decay", "train.grad_clip", "simulate.risk_weight",
                "simulate.surprise_threshold", "actor.entropy", "actor.collision_penalty",
                "simulate.uncertainty_weight", "actor.search_weight",
                *(f"train.loss.{f.name}" for f in dataclasses.fields(LossWeights)))
OPEN_FRACTIONS = ("train.val_fraction", "export.surprise_quantile")
CLOSED_FRACTIONS = ("simulate.risk_budget", "actor.gamma", "actor.lam", "actor.slow_rate",
                    "actor.planner_epsilon")


def check_values(cfg: Config) -> None:
    """Refuse a value out of its range (ConfigError naming the key and the range)."""
    if cfg.model.size not in MODEL_SIZES:
        raise ConfigError(f"config key 'model.size' must be one of {', '.join(MODEL_SIZES)}, "
                          f"got '{cfg.model.size}'")
    rules = [(AT_LEAST_ONE, lambda v: v >= 1, "must be at least 1"),
             (AT_LEAST_ZERO, lambda v: v >= 0, "must be at least 0"),
             (POSITIVE, lambda v: math.isfinite(v) and v > 0, "must be a finite number above 0"),
             (NOT_NEGATIVE, lambda v: math.isfinite(v) and v >= 0,
              "must be a finite number >= 0"),
             (OPEN_FRACTIONS, lambda v: 0 < v < 1, "must lie strictly between 0 and 1"),
             (CLOSED_FRACTIONS, lambda v: 0 <= v <= 1, "must lie in [0, 1]")]
    for keys, ok, rule in rules:
        for key in keys:
            value = dotted_value(cfg, key)
            if not ok(value):
                raise ConfigError(f"config key '{key}' {rule}, got {value!r}")
    t = cfg.train
    if not 0 <= t.test_fraction < 1 or t.val_fraction + t.test_fraction >= 1:
        raise ConfigError(f"config key 'train.test_fraction' must lie in [0, 1) and leave "
                          f"training episodes beside train.val_fraction ({t.val_fraction}), "
                          f"got {t.test_fraction!r}")
    for key in ("replay.risk_weights", "replay.risk_budgets"):  # ranges: the replay's check
        if not all(math.isfinite(v) for v in dotted_value(cfg, key)):
            raise ConfigError(f"config key '{key}' must hold finite numbers, got "
                              f"{dotted_value(cfg, key)!r}")


def dotted_value(cfg: Any, key: str) -> Any:
    """The value of `key` ('train.loss.forecast') in a loaded config."""
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return cfg


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


# ---------------------------------------------------------------- reference

REFERENCE_INTRO = """\
# Configuration reference

Generated from the config dataclasses (pipeline/config.py and the classes it nests) by
`drivecast config --reference > docs/configuration.md`: edit the comments beside the
fields, then regenerate this page.

A config is a YAML file of the sections below; every key is optional and falls back to
its default. `drivecast COMMAND CONFIG key.sub=value ...` overrides single keys (values
are read as YAML), and `drivecast config CONFIG [overrides]` prints the resolved config.
A file may hold `base: <path>`, relative to its own directory: that file is loaded first
(with its own base, if any), and this file's keys are merged over it: mappings merged
deeply, lists and scalars replaced. Experiment overlays live in `configs/experiment/`.
"""


def reference_markdown() -> str:
    """Markdown reference of every config section and field: the class docstrings as
    section intros, the comment beside each field as its meaning."""
    sections = [_section_markdown(title, cls) for title, cls in config_sections(Config, "")]
    return "\n".join([REFERENCE_INTRO, *sections])


def config_sections(cls: type, title: str) -> Iterator[tuple[str, type]]:
    """(dotted name, dataclass) of `cls` and of every section nested in it, depth first;
    a list of sections is named `key[]`."""
    yield title, cls
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        inner, suffix = _section_type(hints[f.name])
        if inner is not None:
            yield from config_sections(inner, f"{title}.{f.name}{suffix}".lstrip("."))


def field_comments(cls: type) -> dict[str, str]:
    """Each field of dataclass `cls` -> the comment on its declaration's line(s)."""
    source = textwrap.dedent(inspect.getsource(cls))
    comments = source_comments(source)
    body = ast.parse(source).body[0].body
    return {node.target.id: " ".join(comments[n] for n in range(node.lineno, node.end_lineno + 1)
                                     if n in comments)
            for node in body if isinstance(node, ast.AnnAssign)}


def source_comments(source: str) -> dict[int, str]:
    """Line number (1-based) -> text of the comment on that line of Python `source`."""
    tokens = tokenize.generate_tokens(io.StringIO(source).readline)
    return {tok.start[0]: tok.string.lstrip("#").strip()
            for tok in tokens if tok.type == tokenize.COMMENT}


def _section_type(hint: Any) -> tuple[type | None, str]:
    if dataclasses.is_dataclass(hint):
        return hint, ""
    args = typing.get_args(hint)
    if typing.get_origin(hint) is list and args and dataclasses.is_dataclass(args[0]):
        return args[0], "[]"
    return None, ""


def _section_markdown(title: str, cls: type) -> str:
    hints = typing.get_type_hints(cls)
    meanings = field_comments(cls)
    rows = ["| field | type | default | meaning |", "|---|---|---|---|"]
    rows += [_table_row([f"`{f.name}`", _type_text(hints[f.name]), _default_text(f),
                         meanings.get(f.name, "")])
             for f in dataclasses.fields(cls)]
    heading = f"## `{title}`" if title else "## Top level"
    if title.endswith("[]"):
        heading += " (each item)"
    return "\n\n".join([heading, inspect.getdoc(cls) or "", "\n".join(rows)]) + "\n"


def _table_row(cells: list[str]) -> str:
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"


def _type_text(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return "section"
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return " | ".join(member.value for member in hint)
    if origin is list:
        (item,) = typing.get_args(hint)
        return "list of sections" if dataclasses.is_dataclass(item) else \
            f"list of {_type_text(item)}"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_text(arg) for arg in typing.get_args(hint))
    if hint is dict or origin is dict:
        return "mapping"
    return "null" if hint is type(None) else hint.__name__


def _default_text(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return "required"
    if dataclasses.is_dataclass(value):
        return "(its section)"
    return f"`{_one_line(to_dict(value))}`"


def _one_line(value: Any) -> str:
    """A default as one line: YAML flow style (`[1.0, 3.0]`, `{}`, `''`); a multi-line
    string as a JSON string (newlines escaped)."""
    if isinstance(value, str) and "\n" in value:
        return json.dumps(value)
    text = yaml.safe_dump(value, default_flow_style=True, width=1 << 30, sort_keys=False)
    return text.removesuffix("\n").removesuffix("\n...").strip()
