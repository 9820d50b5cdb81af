"""`drivecast replay`: the planner's decision rule replayed on the critic's held-out
labelled decisions, for a grid of risk budgets and lambdas (evaluation/replay.py).

Inputs: the critic stage's `labels.npz` (the decisions of the held-out labelled
episodes, the critic's own validation split) and the export stage's `planner.onnx`.
Outputs: `replay.md` (the grid, and the references with the true risk, and with the true
risk and return) and `replay.json` (its rows); the summary holds the figures of the
simulate section's own setting. Seconds, where 100 closed-loop episodes take minutes; a
screen, not a substitute (evaluation/replay.py says why).
"""

from __future__ import annotations

import sys
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from pipeline.artifacts import Artifacts, write_json_atomic, write_text_atomic
from pipeline.config import Config
from pipeline.errors import StageError
from pipeline.runner import Stage, StageContext, register

NEEDED = ("hist", "hist_mask", "valid", "first", "returns", "episode")


def check(cfg: Config) -> None:
    if cfg.critic.episodes == 0:
        raise StageError("replay needs labelled decisions: set critic.episodes > 0 (the risk "
                         "critic's labels are what the decisions are judged by)")
    budgets, weights = cfg.replay.risk_budgets, cfg.replay.risk_weights
    if not budgets or not weights:
        raise StageError("replay.risk_budgets and replay.risk_weights must not be empty")
    if any(not 0.0 <= b <= 1.0 for b in budgets) or any(w < 0 for w in weights):
        raise StageError(f"replay.risk_budgets must lie in [0, 1] and replay.risk_weights be "
                         f">= 0, got {budgets} and {weights}")


def held_out_labels(cfg: Config, critic: Artifacts) -> tuple[dict, np.ndarray]:
    """The critic's labels and the row indices of its held-out decisions."""
    from pipeline.stage_io import LABELS_FILE, held_out

    path = critic.path / LABELS_FILE
    try:
        with np.load(path) as data:
            labels = {name: data[name] for name in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise StageError(f"critic labels {path} cannot be read, they are missing, corrupt or "
                         f"truncated ({type(error).__name__})") from None
    missing = set(NEEDED) - set(labels)
    if missing:
        raise StageError(f"critic labels {path} lack {sorted(missing)}: relabel with this "
                         f"version (drivecast critic --force)")
    rows = np.flatnonzero(held_out(labels["episode"], cfg.critic.val_fraction, cfg.seed))
    return labels, rows


def produce(cfg: Config, inputs: Mapping[str, Artifacts], work: Path,
            ctx: StageContext) -> dict[str, float]:
    from evaluation.replay import replay_grid, replay_markdown, score_decisions
    from models.candidates import enumerate_candidates
    from pipeline.planner.scorer import OnnxScorer
    from pipeline.stage_io import PLANNER_FILE

    labels, rows = held_out_labels(cfg, inputs["critic"])
    scorer = OnnxScorer.load(inputs["export"].path / PLANNER_FILE, threads=cfg.simulate.threads,
                             seed=cfg.seed)
    candidates = enumerate_candidates(scorer.horizon)
    print(f"[replay] scoring {len(rows)} held-out decisions", file=sys.stderr)
    scored = score_decisions(scorer, labels, rows, candidates)
    if not scored:
        raise StageError(f"no held-out labelled decision with a road candidate in "
                         f"{inputs['critic'].path}: raise critic.episodes or "
                         f"critic.val_fraction")
    grid = replay_grid(scored, cfg.replay.risk_weights, cfg.replay.risk_budgets,
                       cfg.simulate.uncertainty_weight)
    write_text_atomic(work / "replay.md", replay_markdown(grid))
    write_json_atomic(work / "replay.json", {"rows": grid})
    return own_setting(scored, cfg)


def own_setting(scored, cfg: Config) -> dict[str, float]:
    """Figures of the simulate section's setting, and of the true-risk reference at it."""
    from evaluation.replay import replay, risk_order

    rule = cfg.simulate
    own = replay(scored, rule.risk_weight, rule.risk_budget, rule.uncertainty_weight)
    true_risk = replay(scored, rule.risk_weight, rule.risk_budget, reference="true risk")
    return own | risk_order(scored) | {f"true_risk/{k}": v for k, v in true_risk.items()
                                       if k != "decisions"}


def decision_rule(cfg: Config) -> dict:
    """The simulate section's rule (the summary's setting; beta for every row)."""
    from pipeline.stage_io import DECISION_RULE

    return {name: getattr(cfg.simulate, name) for name in DECISION_RULE}


STAGE = register(Stage("replay", sections=("replay",), inputs=("critic", "export"), produce=produce,
                       check=check, extra_key=decision_rule))
