"""Physics baselines for forecasting and collision risk (numpy only).

All inputs follow the window contract: ``hist`` (B, H, N, D) with features
``[x, y, vx, vy, cos, sin, lane_index]`` in the ego frame at t0 (x forward, y left),
``hist_mask`` (B, H, N). Forecasts are (B, F, N, 4) ``[x, y, vx, vy]`` at the end of each
future step, like ``future``; slots absent at t0 are zeros (mask them with ``future_mask``).
"""

from __future__ import annotations

import numpy as np

DEFAULT_LANE_TAU_S = 1.0
VEHICLE_LENGTH_M = 5.0  # highway-env default vehicle length


def _require(condition: bool, message: str) -> None:
    """Raise a ValueError with a sentence for people when ``condition`` is false."""
    if not condition:
        raise ValueError(message)


def _last_state(hist, hist_mask) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """State at t0.

    hist (B, H, N, D>=4), hist_mask (B, H, N) -> position (B, N, 2), velocity (B, N, 2),
    present (B, N); slots absent at t0 get zero position and velocity.
    """
    hist = np.asarray(hist, dtype=np.float64)
    hist_mask = np.asarray(hist_mask, dtype=bool)
    _require(
        hist.ndim == 4 and hist.shape[-1] >= 4,
        f"hist must be (B, H, N, D>=4) with [x, y, vx, vy, ...], got shape {hist.shape}.",
    )
    _require(
        hist_mask.shape == hist.shape[:3],
        f"hist_mask has shape {hist_mask.shape} but hist needs (B, H, N) = {hist.shape[:3]}.",
    )
    present = hist_mask[:, -1]  # (B, N)
    last = np.where(present[..., None], hist[:, -1], 0.0)  # (B, N, D) with absent slots zeroed
    return last[..., 0:2], last[..., 2:4], present


def _step_times(dt: float, n_steps: int) -> np.ndarray:
    """End time of each future step in seconds: (F,) = dt * [1, ..., F]."""
    _require(dt > 0, f"dt must be positive, got {dt}.")
    _require(n_steps >= 1, f"n_steps must be at least 1, got {n_steps}.")
    return dt * np.arange(1, n_steps + 1, dtype=np.float64)


def _pack(x, y, vx, vy, present) -> np.ndarray:
    """Stack (B, F, N) components into (B, F, N, 4) float32, zero where absent at t0."""
    state = np.stack(np.broadcast_arrays(x, y, vx, vy), axis=-1)  # (B, F, N, 4)
    return np.where(present[:, None, :, None], state, 0.0).astype(np.float32)


def constant_velocity(hist, hist_mask, dt: float, n_steps: int) -> np.ndarray:
    """Constant-velocity forecast from the last history frame.

    hist (B, H, N, D), hist_mask (B, H, N) -> (B, F=n_steps, N, 4): position
    ``p + v * t`` at each step end ``t = dt * (k + 1)``, velocity unchanged.
    """
    position, velocity, present = _last_state(hist, hist_mask)
    t = _step_times(dt, n_steps)[None, :, None]  # (1, F, 1)
    x = position[:, None, :, 0] + velocity[:, None, :, 0] * t  # (B, F, N)
    y = position[:, None, :, 1] + velocity[:, None, :, 1] * t  # (B, F, N)
    return _pack(x, y, velocity[:, None, :, 0], velocity[:, None, :, 1], present)


def _nearest_lane_center(y, lane_centers_y) -> tuple[np.ndarray, np.ndarray]:
    """Nearest lane centre to each lateral position.

    y (B, N), lane_centers_y (B, L) with nan for missing lanes -> centre (B, N),
    found (B, N) (False when a row has no lane at all; centre is 0 there).
    """
    distance = np.abs(y[:, :, None] - lane_centers_y[:, None, :])  # (B, N, L)
    distance = np.where(np.isnan(distance), np.inf, distance)
    nearest = np.argmin(distance, axis=-1)[..., None]  # (B, N, 1)
    found = np.isfinite(np.take_along_axis(distance, nearest, axis=-1))[..., 0]
    centre = np.take_along_axis(lane_centers_y[:, None, :], nearest, axis=-1)[..., 0]
    return np.where(found, centre, 0.0), found


def _critically_damped(offset0, speed0, t, tau: float) -> tuple[np.ndarray, np.ndarray]:
    """Offset and its rate for a critically damped return to zero with time constant tau.

    offset0, speed0 (B, 1, N), t (1, F, 1) -> offset, speed (B, F, N). Starts at
    (offset0, speed0) and decays like ``(offset0 + a t) exp(-t / tau)``, so the measured
    lateral speed is honoured at t0 and both offset and speed go to zero.
    """
    slope = speed0 + offset0 / tau
    decay = np.exp(-t / tau)
    offset = (offset0 + slope * t) * decay
    speed = (speed0 - slope * t / tau) * decay
    return offset, speed


def constant_velocity_lane_keeping(
    hist, hist_mask, dt: float, n_steps: int, lane_centers_y, tau: float = DEFAULT_LANE_TAU_S
) -> np.ndarray:
    """Constant longitudinal velocity; lateral offset to a lane centre decays with ``tau``.

    hist (B, H, N, D), hist_mask (B, H, N), lane_centers_y (B, L) or (L,) lateral lane
    centres in the ego frame at t0 (nan pads rows with fewer lanes) -> (B, F, N, 4).
    The target lane is the centre nearest to ``y + vy * tau`` (where the current lateral
    speed carries the vehicle within one time constant, so a lane change in progress
    finishes instead of being pulled back). The offset to it follows a critically damped
    decay: it starts at the measured (y, vy), and both offset and vy decay to zero. Rows
    without any lane centre fall back to constant velocity.
    """
    _require(tau > 0, f"tau must be positive, got {tau}.")
    position, velocity, present = _last_state(hist, hist_mask)
    centres = np.atleast_2d(np.asarray(lane_centers_y, dtype=np.float64))
    _require(
        centres.ndim == 2 and centres.shape[0] in (1, position.shape[0]),
        f"lane_centers_y has shape {centres.shape} but must be (B={position.shape[0]}, L) or (L,).",
    )
    centres = np.broadcast_to(centres, (position.shape[0], centres.shape[1]))
    y0, vy0 = position[..., 1], velocity[..., 1]  # (B, N)
    centre, found = _nearest_lane_center(y0 + vy0 * tau, centres)
    t = _step_times(dt, n_steps)[None, :, None]  # (1, F, 1)
    offset, lateral_speed = _critically_damped((y0 - centre)[:, None], vy0[:, None], t, tau)
    keep_lane = found[:, None]  # (B, 1, N)
    y = np.where(keep_lane, centre[:, None] + offset, y0[:, None] + vy0[:, None] * t)
    vy = np.where(keep_lane, lateral_speed, vy0[:, None])
    x = position[:, None, :, 0] + velocity[:, None, :, 0] * t  # (B, F, N)
    return _pack(x, y, velocity[:, None, :, 0], vy, present)


def _ttc_to_nearest(distance, closing_speed, candidate, vehicle_length: float) -> np.ndarray:
    """Time to collision with the nearest candidate vehicle per row.

    distance (B, N) centre-to-centre along x (positive), closing_speed (B, N) (positive
    when the gap shrinks), candidate (B, N) bool -> ttc (B,) seconds; inf when there is
    no candidate or it is not closing, 0 when the bodies already overlap.
    """
    masked = np.where(candidate, distance, np.inf)
    nearest = np.argmin(masked, axis=1)[:, None]  # (B, 1)
    gap = np.take_along_axis(masked, nearest, axis=1)[:, 0] - vehicle_length
    closing = np.take_along_axis(closing_speed, nearest, axis=1)[:, 0]
    with np.errstate(divide="ignore", invalid="ignore"):
        ttc = np.where(closing > 0, np.maximum(gap, 0.0) / closing, np.inf)
    ttc = np.where(gap <= 0, 0.0, ttc)
    return np.where(np.isfinite(gap), ttc, np.inf)


def time_to_collision(
    hist, hist_mask, lane_half_width: float = 2.0, vehicle_length: float = VEHICLE_LENGTH_M
) -> np.ndarray:
    """Smallest constant-velocity time to collision (s) between the ego and its lane mates.

    hist (B, H, N, D), hist_mask (B, H, N) -> (B,). Looks at the nearest vehicle ahead
    (dx > 0) and the nearest behind (dx < 0) among those with |dy| < lane_half_width at
    t0, bumper to bumper (centre distance minus ``vehicle_length``); inf when neither
    is closing in.
    """
    position, velocity, present = _last_state(hist, hist_mask)
    dx = position[..., 0] - position[:, :1, 0]  # (B, N)
    dy = position[..., 1] - position[:, :1, 1]
    dvx = velocity[..., 0] - velocity[:, :1, 0]
    in_lane = present & (np.abs(dy) < lane_half_width)
    in_lane[:, 0] = False
    ahead = _ttc_to_nearest(dx, -dvx, in_lane & (dx > 0), vehicle_length)
    behind = _ttc_to_nearest(-dx, dvx, in_lane & (dx < 0), vehicle_length)
    ttc = np.minimum(ahead, behind)
    return np.where(present[:, 0], ttc, np.inf)


def ttc_risk(
    hist,
    hist_mask,
    horizon_s: float,
    lane_half_width: float = 2.0,
    vehicle_length: float = VEHICLE_LENGTH_M,
    tau: float | None = None,
) -> np.ndarray:
    """Collision-risk score in [0, 1] from time to collision: ``exp(-ttc / tau)``.

    hist (B, H, N, D), hist_mask (B, H, N) -> (B,) float32. ``tau`` defaults to
    ``horizon_s / 2``, so overlapping bodies score 1, a collision due exactly at the
    horizon scores exp(-2) ~ 0.14, and no closing vehicle scores 0. The score decreases
    strictly with TTC, so it ranks scenes for AUROC; it is not a calibrated probability.
    """
    _require(horizon_s > 0, f"horizon_s must be positive, got {horizon_s}.")
    tau = horizon_s / 2.0 if tau is None else tau
    _require(tau > 0, f"tau must be positive, got {tau}.")
    ttc = time_to_collision(hist, hist_mask, lane_half_width, vehicle_length)
    return np.exp(-ttc / tau).astype(np.float32)
