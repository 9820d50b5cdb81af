"""Critic stage: label decisions on the true simulator, then fit the risk critic.

Input: the trained world model (frozen here). With `critic.episodes` 0 the stage writes
nothing but its summary and the planner keeps the world model's own risk.

Each of `critic.rounds` rounds:
1. labels `critic.episodes` episodes of `ingest.env_id` (seeds drawn like a collection
   round's, never an evaluation seed) in `ingest.workers` processes
   (pipeline/critic_labels.py): every road candidate of every decision, with the first
   step at which the true simulator crashes or meets the envelope (`export.envelope_*`).
   Round 1 is driven by the envelope oracle; a later round by the ONNX planner with the
   previous round's critic (`round_<k>.onnx`, written as export writes its planner, driven
   with the simulate stage's decision rule), so the
   states that planner gets itself into are labelled too;
2. fits a fresh critic (models/critic.py) on the world model's imagination of every
   label so far; `critic.val_fraction` of the episodes are held out. `critic.commit`
   says what it learns: each candidate's own first event (0), or the first event under
   the best continuation of the candidate's first `commit` actions
   (pipeline/critic_labels.py `contingent_first`). With `critic.mirror` the training
   decisions' mirror images (left and right swapped, `mirrored`) are fitted too.

Writes `labels.npz` (the labelled decisions), `critic.pt` + `critic.json` (the last
critic's weights and `models.critic.make_critic` arguments; with `critic.members` > 1 an
ensemble of critics fitted side by side, whose hazard logits the planner averages).
Summary: the label counts, the share of positive labels (`positive_rate`, and
`positive_rate/target` as fitted) and, on the held-out episodes, the risk AUROC and log
loss of the critic and of the world model's own risk. Every labelled episode is also
kept in `<workdir>/<experiment>/critic_labels/<spec key>/<seed>.npz` (`label_cache`):
refitting with other `critic.*` fitting settings, or with more episodes, labels only
what is new, and a killed stage resumes its labelling there (fitting starts again).
Delete that directory to label from scratch.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import time
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from pipeline.artifacts import Artifacts, write_json_atomic
from pipeline.config import Config, CriticPrior, to_dict
from pipeline.errors import StageError
from pipeline.runner import Stage, StageContext, register
from pipeline.stage_io import (
    CRITIC_FILE,
    CRITIC_SPEC,
    DECISION_RULE,
    LABELS_FILE,
    held_out,
    replica_lanes,
    road_lanes,
)


def label_spec(cfg: Config, planner: str):
    from pipeline.critic_labels import LabelSpec

    e, s = cfg.export, cfg.simulate
    return LabelSpec(cfg.ingest.env_id, dict(cfg.ingest.env_config), cfg.model.history,
                     cfg.model.vehicles, e.horizon, (e.envelope_length, e.envelope_width),
                     e.gamma, cfg.critic.epsilon, planner, s.risk_weight,
                     s.uncertainty_weight, s.risk_budget)


def label_seeds(cfg: Config) -> list[list[int]]:
    """Each round's episode seeds: round 0 of the collection seed stream (`drivecast
    iterate` collects from round 1 on), never an evaluation seed."""
    from pipeline.stage_io import collection_seeds, evaluation_seeds

    n = cfg.critic.episodes
    seeds = collection_seeds(cfg.seed, 0, n * cfg.critic.rounds, evaluation_seeds(cfg.simulate))
    return [seeds[r * n:(r + 1) * n] for r in range(cfg.critic.rounds)]


LABEL_VERSION = 2  # bump when labelling changes what an episode's labels are


def label_cache(cfg: Config, spec, planner: str) -> Path:
    """The directory of labelled episodes for this labelling spec: one `<seed>.npz` each.

    Keyed by the spec (and the bytes of the planner that drives, if any), not by the
    stage's key: changing how the critic is fitted, or adding episodes, labels only what
    is new, and a killed stage resumes at the episodes it had not finished.
    """
    from pipeline.runner import experiment_root

    fields = dict(vars(spec), planner="", version=LABEL_VERSION)
    if planner:
        fields["planner"] = hashlib.sha256(Path(planner).read_bytes()).hexdigest()
    else:  # the oracle drives: the planner's decision rule plays no part
        for name in DECISION_RULE:
            fields.pop(name)
    key = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:12]
    return experiment_root(cfg) / "critic_labels" / key


def cached_episode(path: Path) -> dict | None:
    """The labels of one cached episode, or None when the file is missing or unreadable
    (a damaged file is labelled again, with a warning)."""
    from pipeline.critic_labels import LABEL_ARRAYS

    if not path.is_file():
        return None
    try:
        with np.load(path) as data:
            return {name: data[name] for name in LABEL_ARRAYS}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
        print(f"[critic] {path} is unreadable ({type(err).__name__}): labelling it again",
              file=sys.stderr, flush=True)
        return None


def collect_labels(cfg: Config, seeds: list[int], planner: str, tag: str) -> list[dict]:
    """Labelled episodes of `seeds` (cached ones read back), one progress line each."""
    from pipeline.critic_labels import label_episodes
    from pipeline.dataset import atomic_write_bytes

    spec = label_spec(cfg, planner)
    cache = label_cache(cfg, spec, planner)
    cache.mkdir(parents=True, exist_ok=True)
    cached = {seed: cached_episode(cache / f"{seed}.npz") for seed in seeds}
    parts = [part for part in cached.values() if part is not None]
    if parts:
        print(f"[critic] {tag}: {len(parts)}/{len(seeds)} episodes read from {cache}",
              file=sys.stderr, flush=True)
    start = time.perf_counter()
    todo = [seed for seed, part in cached.items() if part is None]
    for part in label_episodes(spec, todo, cfg.ingest.workers):
        atomic_write_bytes(cache / f"{int(part['episode'][0])}.npz",
                           lambda handle, part=part: np.savez_compressed(handle, **part))
        parts.append(part)
        print(f"[critic] {tag}: labelled {len(parts)}/{len(seeds)} episodes "
              f"({sum(len(p['episode']) for p in parts)} decisions, "
              f"{time.perf_counter() - start:.0f} s)", file=sys.stderr, flush=True)
    return parts


def produce(cfg: Config, inputs: Mapping[str, Artifacts], work: Path,
            ctx: StageContext) -> dict[str, float]:
    import torch

    from models.critic import critic_spec
    from pipeline.critic_fit import fit_critic
    from pipeline.critic_labels import concat_labels, fitting_labels
    from pipeline.planner.build import write_planner
    from pipeline.stage_io import load_model

    if cfg.critic.episodes == 0:
        return {"episodes": 0}
    model, spec = load_model(inputs["train"])
    model.vehicle_length = cfg.export.envelope_length  # the prior: the planner's own risk
    model.vehicle_width = cfg.export.envelope_width
    parts, labels, critic, label_seconds = [], {}, None, 0.0
    lanes = replica_lanes(cfg, "critic.prior=replica") \
        if cfg.critic.prior is CriticPrior.replica else 0
    for r, seeds in enumerate(label_seeds(cfg)):
        planner = ""
        if critic is not None:  # this round is driven by the previous round's planner
            planner = str(work / f"round_{r}.onnx")
            write_planner(model, critic, cfg, spec, labels["hist"][:1], labels["hist_mask"][:1],
                          Path(planner))
        start = time.perf_counter()
        parts += collect_labels(cfg, seeds, planner, f"round {r + 1}/{cfg.critic.rounds}")
        label_seconds += time.perf_counter() - start
        labels = concat_labels(parts)
        val = held_out(labels["episode"], cfg.critic.val_fraction, cfg.seed)
        target = fitting_labels(labels, cfg.critic.commit, cfg.export.horizon)
        critic, figures = fit_critic(model, *with_mirror(target, val, cfg), cfg, ctx,
                                     r * cfg.critic.epochs, lanes)
    np.savez_compressed(work / LABELS_FILE, **labels)
    torch.save(critic.state_dict(), work / CRITIC_FILE)
    write_json_atomic(work / CRITIC_SPEC, critic_spec(critic))
    valid = labels["valid"]
    return {"episodes": len(parts), "decisions": len(labels["episode"]),
            "labelled_candidates": int(valid.sum()),
            "positive_rate": positive_rate(labels["first"], valid, cfg.export.horizon),
            "positive_rate/target": positive_rate(target["first"], valid, cfg.export.horizon),
            "label_seconds": label_seconds, **figures}


def with_mirror(labels: dict, val: np.ndarray, cfg: Config) -> tuple[dict, np.ndarray]:
    """(labels, val) to fit on: with `critic.mirror`, the training decisions' mirror images
    (pipeline/critic_labels.py `mirrored`) are added to the training rows; the held-out
    rows stay as they were labelled."""
    if not cfg.critic.mirror:
        return labels, val
    from models.candidates import enumerate_candidates
    from pipeline.critic_labels import mirrored

    train = {name: array[~val] for name, array in labels.items()}
    images = mirrored(train, road_lanes(cfg, "critic.mirror"),
                      enumerate_candidates(cfg.export.horizon))
    both = {name: np.concatenate([labels[name], images[name]]) for name in labels}
    return both, np.concatenate([val, np.zeros(len(images["episode"]), dtype=bool)])


def positive_rate(first: np.ndarray, valid: np.ndarray, horizon: int) -> float:
    """The share of the labelled candidates that meet an event within the horizon."""
    return float(((first < horizon) & valid).sum() / max(valid.sum(), 1))


def check(cfg: Config) -> None:
    c = cfg.critic
    if c.episodes < 0 or min(c.rounds, c.epochs, c.batch_size, c.hidden, c.samples,
                             c.members) < 1:
        raise StageError(f"critic: episodes must be >= 0 and rounds, epochs, batch_size, "
                         f"hidden, samples and members >= 1, got {c.episodes}, {c.rounds}, "
                         f"{c.epochs}, {c.batch_size}, {c.hidden}, {c.samples}, {c.members}")
    if not 0.0 <= c.epsilon <= 1.0 or not 0.0 < c.val_fraction < 1.0 or c.lr <= 0:
        raise StageError(f"critic: epsilon must lie in [0, 1], val_fraction in (0, 1) and lr "
                         f"be positive, got {c.epsilon}, {c.val_fraction}, {c.lr}")
    if not (c.rank_weight >= 0 and math.isfinite(c.rank_weight)):
        raise StageError(f"critic.rank_weight must be a finite number >= 0, got "
                         f"{c.rank_weight}")
    if not 0 <= c.commit <= cfg.export.horizon:
        raise StageError(f"critic.commit must lie in [0, export.horizon = "
                         f"{cfg.export.horizon}], got {c.commit}")
    if c.episodes and c.episodes * c.rounds < 2:
        raise StageError("critic: episodes x rounds must be 0 (off) or at least 2 (one "
                         "episode is held out)")
    if c.episodes and c.prior is CriticPrior.replica:
        replica_lanes(cfg, "critic.prior=replica")  # one line for a road it cannot replay


# what one oracle-driven round reads of `export`: the labels and the fitted hazard
LABEL_EXPORT = ("horizon", "gamma", "envelope_length", "envelope_width")


def upstream_settings(cfg: Config) -> dict:
    """The settings outside `critic` that the stage's output depends on: the `export`
    fields of LABEL_EXPORT; with `critic.rounds` > 1 the later rounds are driven by an
    exported planner with the simulate stage's decision rule, so all of `export` and that
    rule (not the rest of `simulate`). A setting the critic never reads (say
    `export.lookahead` with one round) then reuses the fitted critic."""
    if cfg.critic.episodes == 0:
        return {}
    if cfg.critic.rounds == 1:
        return {"export": {name: getattr(cfg.export, name) for name in LABEL_EXPORT}}
    return {"export": to_dict(cfg.export),
            **{name: getattr(cfg.simulate, name) for name in DECISION_RULE}}


STAGE = register(Stage("critic", sections=("critic",), inputs=("train",), produce=produce,
                       check=check, extra_key=upstream_settings))
