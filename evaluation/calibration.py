"""Calibration of the forecast's per-vehicle position Gaussian, and window-level
uncertainty scores for ranking errors and detecting shifted inputs (numpy only).

The model predicts each vehicle's future position as a diagonal 2-D Gaussian
(states[..., :2], states_std[..., :2]). Its region of probability p is the ellipse
whose squared Mahalanobis radius is -2 ln(1 - p) (the chi-square quantile with two
degrees of freedom), so coverage is the share of true positions inside that ellipse.
Post-hoc calibration multiplies the variance at each future step by one scale, fitted on
the validation windows so that the scaled 90% region covers 90% there: the means never
move.
"""

from __future__ import annotations

import numpy as np

from evaluation import metrics

LEVELS = (0.5, 0.9)  # probabilities of the reported prediction regions
FIT_LEVEL = 0.9  # the region the variance scale is fitted to


def region_radius2(p: float) -> float:
    """Squared Mahalanobis radius of a 2-D Gaussian's region of probability p in (0, 1)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"a prediction region's probability must lie in (0, 1), got {p}")
    return float(-2.0 * np.log1p(-p))


def mahalanobis2(mean, std, target, min_std: float = 1e-6) -> np.ndarray:
    """Squared Mahalanobis distance of the true position under a diagonal Gaussian.

    mean, std, target (..., F, N, P>=2); only [..., :2] (x, y) is used. Returns (..., F, N).
    """
    z = (np.asarray(target)[..., :2] - np.asarray(mean)[..., :2]) / np.maximum(
        np.asarray(std)[..., :2], min_std)
    return (z ** 2).sum(-1)


def coverage_by_horizon(m2, mask, seconds: list[int], dt: float, p: float,
                        scale=None) -> np.ndarray:
    """Share of valid true positions inside the region of probability p, per horizon second.

    m2, mask (B, F, N); scale (F,) variance scale per step (None: 1). Returns (len(seconds),),
    nan where a second has no valid position.
    """
    m2 = np.asarray(m2, dtype=np.float64)
    if scale is not None:
        m2 = m2 / np.asarray(scale, dtype=np.float64)[None, :, None]
    inside = m2 <= region_radius2(p)
    n_steps = m2.shape[1]
    steps = [metrics.horizon_step(s, dt, n_steps) for s in seconds]
    return np.array([metrics.masked_mean(inside[:, f], mask[:, f]) for f in steps])


def fit_variance_scale(m2, mask, p: float = FIT_LEVEL) -> np.ndarray:
    """(F,) variance scale per future step whose scaled region of probability p covers
    exactly p of the valid positions (the p-quantile of m2 over the radius); 1 at a step
    with no valid position. m2, mask (B, F, N)."""
    m2 = np.asarray(m2, dtype=np.float64)
    scale = np.ones(m2.shape[1])
    for f in range(m2.shape[1]):
        valid = m2[:, f][mask[:, f]]
        if valid.size:
            scale[f] = max(float(np.quantile(valid, p)) / region_radius2(p), 1e-12)
    return scale


def calibrate(pred: dict[str, np.ndarray], scale: np.ndarray) -> dict[str, np.ndarray]:
    """The predictions with the position std of step f multiplied by sqrt(scale[f]); every
    other array (the means, samples, risk, uncertainty) is the same object as before."""
    std = np.array(pred["states_std"], copy=True)  # (B, F, N, 4)
    std[..., :2] *= np.sqrt(np.asarray(scale, dtype=std.dtype))[None, :, None, None]
    return pred | {"states_std": std}


# ---------------------------------------------------------------- window-level scores

def window_scores(pred: dict[str, np.ndarray], a: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per window (B,) uncertainty scores known before the future happens:

    - `epistemic`: the ensemble's disagreement, mean over the valid future steps;
    - `aleatoric`: the predicted position std (sqrt(sx^2 + sy^2)), mean over the valid steps
      and the neighbours within 50 m at t0;
    - `aleatoric_near`: the same for the nearest neighbour at t0 only;
    - `surprise`: the history's departure from constant velocity, the mean over the
      neighbours within 50 m of their mean position residual (m) when each history step
      is predicted from the one before at its velocity.
    """
    near = metrics.neighbour_mask(a["hist"], a["hist_mask"])  # (B, N)
    step = a["step_mask"]  # (B, F)
    mask = step[:, :, None] & near[:, None, :]  # (B, F, N)
    spread = np.hypot(pred["states_std"][..., 0], pred["states_std"][..., 1])  # (B, F, N)
    dist = np.hypot(a["hist"][:, -1, :, 0], a["hist"][:, -1, :, 1])  # (B, N) ego-centric
    nearest = np.argmin(np.where(near, dist, np.inf), axis=1)  # (B,)
    only_nearest = near & (np.arange(near.shape[1])[None, :] == nearest[:, None])
    return {"epistemic": metrics.masked_mean(pred["uncertainty"], step, axis=1),
            "aleatoric": metrics.masked_mean(spread, mask, axis=(1, 2)),
            "aleatoric_near": metrics.masked_mean(spread, step[:, :, None]
                                                  & only_nearest[:, None, :], axis=(1, 2)),
            "surprise": history_surprise(a["hist"], a["hist_mask"], near)}


def history_surprise(hist, hist_mask, near, dt_hist: float | None = None) -> np.ndarray:
    """(B,) mean over the `near` vehicles of the constant-velocity residual of their history.

    hist (B, H, N, D>=4) with x, y, vx, vy (ego-centric, per step of the window's dt);
    hist_mask (B, H, N); near (B, N). The residual of step h is the distance between the
    position at h and the position at h-1 moved on by the mean of the two velocities
    times the step's length, which is estimated from the positions themselves when
    `dt_hist` is None (residuals are then relative to how far the vehicle moved)."""
    pos, vel = hist[..., :2], hist[..., 2:4]
    moved = pos[:, 1:] - pos[:, :-1]  # (B, H-1, N, 2)
    mean_vel = 0.5 * (vel[:, 1:] + vel[:, :-1])
    valid = hist_mask[:, 1:] & hist_mask[:, :-1] & near[:, None, :]  # (B, H-1, N)
    if dt_hist is None:  # the least-squares step length over the valid pairs of the window
        num = metrics.masked_mean((moved * mean_vel).sum(-1), valid, axis=(1, 2))
        den = metrics.masked_mean((mean_vel ** 2).sum(-1), valid, axis=(1, 2))
        dt_hist = np.where(den > 1e-9, num / np.where(den > 1e-9, den, 1.0), 0.0)[:, None, None,
                                                                                  None]
    residual = np.linalg.norm(moved - mean_vel * dt_hist, axis=-1)  # (B, H-1, N)
    return metrics.masked_mean(residual, valid, axis=(1, 2))


def score_spearmans(scores: dict[str, np.ndarray], window_error: np.ndarray) -> dict[str, float]:
    """`<score>_error_spearman` per window score against the window's forecast error."""
    out = {}
    for name, score in scores.items():
        valid = np.isfinite(score) & np.isfinite(window_error)
        out[f"{name}_error_spearman"] = metrics.spearman(np.nan_to_num(score),
                                                         np.nan_to_num(window_error), valid)
    return out


def ood_auroc(in_distribution, shifted) -> float:
    """AUROC of a window score separating shifted windows (positive) from in-distribution
    ones; non-finite scores are dropped; nan when either side is empty."""
    a, b = np.asarray(in_distribution, float), np.asarray(shifted, float)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if not a.size or not b.size:
        return float("nan")
    from sklearn.metrics import roc_auc_score  # scores are no probabilities: metrics.auroc refuses

    return float(roc_auc_score(np.concatenate([np.zeros(a.size), np.ones(b.size)]),
                               np.concatenate([a, b])))


# ---------------------------------------------------------------- input density

WINDOW_FEATURES = ("neighbours", "nearest_m", "ego_speed", "mean_speed", "speed_spread",
                   "lateral_speed", "heading_off", "speed_change", "frame_period", "surprise")


def window_features(a: dict[str, np.ndarray]) -> np.ndarray:
    """(B, len(WINDOW_FEATURES)) what a window's history looks like, from the windows alone:
    neighbours within 50 m at t0, the nearest one's distance, the ego's speed, the
    neighbours' mean speed and its spread, their mean |lateral speed|, mean |sin| of their
    heading off the ego's, mean |speed change| per history frame, the history's frame
    period as the positions and velocities imply it, and `history_surprise`. nan where a
    window has no neighbour."""
    hist, hist_mask = a["hist"], a["hist_mask"]  # (B, H, N, D>=4), (B, H, N)
    near = metrics.neighbour_mask(hist, hist_mask)  # (B, N)
    last = hist[:, -1]  # (B, N, D)
    dist = np.where(near, np.hypot(last[..., 0], last[..., 1]), np.inf).min(axis=1)
    speed = np.hypot(last[..., 2], last[..., 3])  # (B, N)
    heading = np.abs(last[..., 5]) if hist.shape[-1] > 5 else np.zeros_like(speed)
    pairs = hist_mask[:, 1:] & hist_mask[:, :-1] & near[:, None, :]  # (B, H-1, N)
    dv = np.linalg.norm(hist[:, 1:, :, 2:4] - hist[:, :-1, :, 2:4], axis=-1)
    moved = np.linalg.norm(hist[:, 1:, :, :2] - hist[:, :-1, :, :2], axis=-1)
    mean_speed = 0.5 * np.linalg.norm(hist[:, 1:, :, 2:4] + hist[:, :-1, :, 2:4], axis=-1)
    period = (metrics.masked_mean(moved, pairs, axis=(1, 2))
              / metrics.masked_mean(mean_speed, pairs, axis=(1, 2)))
    with np.errstate(invalid="ignore"):
        spread = np.sqrt(np.maximum(metrics.masked_mean(speed ** 2, near, axis=1)
                                    - metrics.masked_mean(speed, near, axis=1) ** 2, 0.0))
    return np.stack([near.sum(1).astype(float), np.where(np.isfinite(dist), dist, np.nan),
                     speed[:, 0], metrics.masked_mean(speed, near, axis=1), spread,
                     metrics.masked_mean(np.abs(last[..., 3]), near, axis=1),
                     metrics.masked_mean(heading, near, axis=1),
                     metrics.masked_mean(dv, pairs, axis=(1, 2)), period,
                     history_surprise(hist, hist_mask, near)], axis=1)


MIN_FEATURE_STD = 1e-3  # floor of a feature's spread (its units: m, m/s, s, counts)


def fit_feature_density(features: np.ndarray, shrink: float = 0.1) -> dict[str, np.ndarray]:
    """A Gaussian over the standardised window features (B, D) of in-distribution windows
    (nan entries ignored), its covariance shrunk towards the identity by `shrink`."""
    mean = np.nanmean(features, axis=0)
    std = np.nanstd(features, axis=0)
    # a feature constant in distribution (e.g. the frame period) flags any departure
    std = np.where(np.isfinite(std), np.maximum(std, MIN_FEATURE_STD), 1.0)
    mean = np.where(np.isfinite(mean), mean, 0.0)
    z = np.nan_to_num((features - mean) / std)  # a missing feature sits at the mean
    cov = (1 - shrink) * np.cov(z, rowvar=False) + shrink * np.eye(z.shape[1])
    return {"mean": mean, "std": std, "precision": np.linalg.inv(cov)}


def feature_distance(density: dict[str, np.ndarray], features: np.ndarray) -> np.ndarray:
    """(B,) Mahalanobis distance of each window's features under `fit_feature_density`."""
    z = np.nan_to_num((features - density["mean"]) / density["std"])
    return np.sqrt(np.einsum("bi,ij,bj->b", z, density["precision"], z))
