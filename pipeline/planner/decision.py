"""The planner's decision rule over scored candidates (pure numpy).

utility_k = expected_return_k - risk_weight * collision_prob_k
            - uncertainty_weight * uncertainty_k
The best candidate maximises utility among those with collision_prob <= risk_budget;
when none is within the budget, the least risky candidate is taken (utility breaks ties):
no return is worth a probable crash. Remaining ties go to the lower index. With an
``allowed`` mask (a hard constraint such as pipeline/planner/lane_guard.py) the rule runs on the
allowed candidates only while one of them is within the budget: when none is, the
constraint has no safe plan to offer (highway-env cannot slow below 20 m/s, so a lane
change it refuses can be the only way out) and the rule runs on all of them.
"""

from __future__ import annotations

import numpy as np


def utility(scores, risk_weight: float, uncertainty_weight: float) -> np.ndarray:
    """(K,) return - lambda * risk - beta * uncertainty of `scores` (has the three (K,)
    arrays collision_prob, expected_return, uncertainty)."""
    return weigh(*score_arrays(scores), risk_weight, uncertainty_weight)


def weigh(risk: np.ndarray, ret: np.ndarray, unc: np.ndarray, risk_weight: float,
          uncertainty_weight: float) -> np.ndarray:
    """The utility formula on the three (K,) arrays."""
    return ret - risk_weight * risk - uncertainty_weight * unc


def score_arrays(scores) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(risk, return, uncertainty) as float64 (K,) arrays, checked for shape and values."""
    arrays = [np.asarray(getattr(scores, name), dtype=np.float64)
              for name in ("collision_prob", "expected_return", "uncertainty")]
    k = arrays[0].shape
    if len(k) != 1 or k[0] == 0 or any(a.shape != k for a in arrays):
        raise ValueError(f"scores must hold three (K,) arrays with K >= 1, got shapes "
                         f"{[a.shape for a in arrays]}")
    if not all(np.isfinite(a).all() for a in arrays):
        raise ValueError("scores hold non-finite values")
    return arrays[0], arrays[1], arrays[2]


def choose(scores, risk_weight: float = 1.0, uncertainty_weight: float = 0.0,
           risk_budget: float = 1.0, allowed: np.ndarray | None = None) -> int:
    """Index of the best candidate; see the module docstring (`allowed`: (K,) bool)."""
    if risk_weight < 0 or uncertainty_weight < 0:
        raise ValueError(f"risk_weight and uncertainty_weight must be >= 0, got "
                         f"{risk_weight}, {uncertainty_weight}")
    risk, ret, unc = score_arrays(scores)
    value = weigh(risk, ret, unc, risk_weight, uncertainty_weight)
    rows = np.arange(len(risk))
    if allowed is not None:
        allowed = np.asarray(allowed, dtype=bool)
        if allowed.shape != risk.shape:
            raise ValueError(f"allowed must have shape {risk.shape}, got {allowed.shape}")
        if (risk[allowed] <= risk_budget).any():
            rows = np.flatnonzero(allowed)
    return int(rows[best_within_budget(risk[rows], value[rows], risk_budget)])


def best_within_budget(risk: np.ndarray, value: np.ndarray, risk_budget: float) -> int:
    within = risk <= risk_budget
    # lexsort is stable (ties keep the lower index) and its last key is the primary one
    if not within.any():
        return int(np.lexsort((-value, risk))[0])
    return int(np.lexsort((risk, -value, ~within))[0])
