"""The traffic replica (models/traffic.py) against simulator labels, without any fitting.

    python -m evaluation.replica_check runs/<experiment>/critic/<key>/labels.npz
        [--decisions N] [--phases 0,2,4] [--skip-episodes M] [--reacting-steps R]
        [--mobil-at-start] [--late-idm-every E]

reads a critic stage's labelled decisions (pipeline/critic_labels.py: every road candidate
stepped on copies of the true simulator, with the default 8 m x 2.5 m envelope that
`ENVELOPE` here must match), scores every candidate with the replica and
prints the AUROC of its collision probability against the true events, and at risk budgets
0.05 and 0.2 the share of accepted candidates that truly meet an event and of truly safe
ones rejected; `early` is the AUROC on decisions whose history is not yet full (an
episode's first ones). --skip-episodes M drops the first M episodes (by seed), e.g. a
two-round critic's oracle-driven round, to judge the planner-driven one. --reacting-steps,
--mobil-at-start and --late-idm-every set the replica's shortcuts (models/traffic.py `Road`;
the export settings export.replica_reacting_steps, export.replica_mobil_at_start and
export.replica_late_idm_every).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from evaluation.metrics import auroc

BUDGETS = (0.05, 0.2)
BATCH = 64  # decisions scored at once
ENVELOPE = (8.0, 2.5)  # export.envelope_length, export.envelope_width of the labels


def replica_probability(hist: np.ndarray, hist_mask: np.ndarray, road,
                        horizon: int = 3) -> np.ndarray:
    """(D, K) P(an event within the horizon) of every candidate of `enumerate_candidates`,
    the replica on `road` (models/traffic.py Road)."""
    import torch

    from models.candidates import enumerate_candidates
    from models.traffic import replica_hazard

    candidates = torch.from_numpy(enumerate_candidates(horizon))
    out = []
    with torch.no_grad():
        for i in range(0, len(hist), BATCH):
            h = torch.from_numpy(hist[i:i + BATCH])
            m = torch.from_numpy(hist_mask[i:i + BATCH]).float()
            hazard = replica_hazard(h, m, candidates[None].expand(len(h), -1, -1),
                                    ENVELOPE, road)
            out.append((1 - torch.prod(1 - hazard, dim=-1)).numpy())
    return np.concatenate(out)


def report(labels: dict, prob: np.ndarray, horizon: int = 3) -> dict[str, float]:
    """The figures of the module docstring for labelled decisions and their (D, K) prob."""
    valid, event = labels["valid"], labels["first"] < horizon
    early = np.repeat(~labels["hist_mask"][:, :1, 0], valid.shape[1], axis=1)
    figures = {"auroc": auroc(prob, event, valid),
               "early_auroc": auroc(prob, event, valid & early)}
    for budget in BUDGETS:
        accepted = (prob <= budget) & valid
        figures[f"accepted_unsafe@{budget}"] = float((accepted & event).sum() / accepted.sum())
        safe = valid & ~event
        figures[f"safe_rejected@{budget}"] = float((safe & ~accepted).sum() / safe.sum())
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("labels", help="a critic stage's labels.npz")
    parser.add_argument("--decisions", type=int, default=400, help="decisions scored (first N)")
    parser.add_argument("--phases", default="0,2,4", help="MOBIL frames of each step")
    parser.add_argument("--skip-episodes", type=int, default=0)
    parser.add_argument("--reacting-steps", type=int, default=3,
                        help="steps in which the others react to each candidate's ego")
    parser.add_argument("--mobil-at-start", action="store_true",
                        help="every MOBIL phase decides on its step's first frame")
    parser.add_argument("--late-idm-every", type=int, default=1,
                        help="frames between the others' IDM evaluations after the reacting "
                             "steps")
    args = parser.parse_args(argv)
    try:
        with np.load(args.labels) as data:
            labels = {name: data[name] for name in ("hist", "hist_mask", "valid", "first",
                                                    "episode")}
        phases = tuple(int(p) for p in args.phases.split(","))
    except (OSError, KeyError, ValueError) as err:
        print(f"replica_check: cannot use {args.labels} / --phases {args.phases}: {err}",
              file=sys.stderr)
        return 2
    if args.late_idm_every < 1 or args.reacting_steps < 0:
        print(f"replica_check: --late-idm-every must be >= 1 and --reacting-steps >= 0, got "
              f"{args.late_idm_every}, {args.reacting_steps}", file=sys.stderr)
        return 2
    seeds = np.unique(labels["episode"])
    rows = np.flatnonzero(np.isin(labels["episode"], seeds[args.skip_episodes:]))
    rows = rows[:args.decisions]
    if not len(rows):
        print(f"replica_check: no decisions left after skipping {args.skip_episodes} of "
              f"{len(seeds)} episodes", file=sys.stderr)
        return 2
    labels = {name: array[rows] for name, array in labels.items()}
    from models.traffic import Road

    road = Road(mobil_phases=phases, reacting_steps=args.reacting_steps,
                mobil_at_start=args.mobil_at_start, late_idm_every=args.late_idm_every)
    prob = replica_probability(labels["hist"], labels["hist_mask"], road)
    figures = report(labels, prob)
    print(f"{len(rows)} decisions, {int(labels['valid'].sum())} candidates, MOBIL phases "
          f"{phases}, reacting steps {road.reacting_steps}, MOBIL at the step's start "
          f"{road.mobil_at_start}, IDM every {road.late_idm_every} frames after them")
    for name, value in figures.items():
        print(f"{name:22s} {value:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
