"""Imagination beside reality: the world model's open-loop rollouts of held-out windows
under the actions really taken, drawn frame by frame next to what really happened.

One frame per future step 0..F (step 0 is t0). Each scene is a row of two panels in the
ego frame at t0: on the left what happened (solid boxes, the path so far as a line), on
the right the S imagined samples (translucent boxes and paths; where they fan out, the
model is unsure) with what happened as dashed outlines. Only the slots present at t0 are
drawn: the model imagines those.
"""

from __future__ import annotations

import numpy as np

from evaluation.road_view import (
    clear_artists,
    draw_box,
    draw_road,
    figure_image,
    new_figure,
    slot_color,
    span,
)

X_RANGE = (-150.0, 200.0)  # m: the widest view along the ego's heading


def real_track(scene: dict) -> np.ndarray:
    """(F+1, N, 2) real positions at t0 and each future step; NaN where a slot is absent
    or was not present at t0."""
    present = scene["hist_mask"][-1]
    start = np.where(present[:, None], scene["hist"][-1, :, :2], np.nan)  # (N, 2)
    known = scene["future_mask"] & present[None, :]  # (F, N)
    future = np.where(known[..., None], scene["future"][..., :2], np.nan)  # (F, N, 2)
    return np.concatenate([start[None], future]).astype(float)


def imagined_tracks(scene: dict) -> np.ndarray:
    """(S, F+1, N, 2) imagined positions, each sample starting at the real t0 position;
    NaN for slots absent at t0."""
    samples = np.asarray(scene["samples"], dtype=float)  # (S, F, N, 2)
    start = real_track(scene)[0]  # (N, 2)
    tracks = np.concatenate([np.broadcast_to(start, (len(samples), 1, *start.shape)),
                             samples], axis=1)
    return np.where(np.isnan(start)[None, None], np.nan, tracks)


def mean_error(real: np.ndarray, imagined: np.ndarray) -> float:
    """Mean distance (m) of the imagined samples (S, N, 2) from the real positions (N, 2)
    over the slots known in both; NaN when there is none."""
    distance = np.linalg.norm(imagined - real[None], axis=-1)  # (S, N)
    finite = distance[np.isfinite(distance)]
    return float(finite.mean()) if len(finite) else float("nan")


def vehicle_size(scene: dict, slot: int) -> tuple[float, float] | None:
    """(length, width) of a slot when the window carries it, else None (the default box)."""
    sizes = scene.get("size")
    if sizes is None or not (sizes[slot] > 0).all():
        return None
    return float(sizes[slot, 0]), float(sizes[slot, 1])


def draw_reality(axes, scene: dict, real: np.ndarray, step: int) -> None:
    for slot in np.flatnonzero(np.isfinite(real[0, :, 0])):
        color = slot_color(slot)
        axes.plot(real[:step + 1, slot, 0], real[:step + 1, slot, 1], color=color, linewidth=1.2)
        if np.isfinite(real[step, slot]).all():
            draw_box(axes, real[step, slot], color, size=vehicle_size(scene, slot))


def draw_imagination(axes, scene: dict, real: np.ndarray, imagined: np.ndarray,
                     step: int) -> None:
    for slot in np.flatnonzero(np.isfinite(real[0, :, 0])):
        color, size = slot_color(slot), vehicle_size(scene, slot)
        for track in imagined[:, :, slot]:  # (F+1, 2) per sample
            axes.plot(track[:step + 1, 0], track[:step + 1, 1], color=color, alpha=0.35,
                      linewidth=0.8)
            draw_box(axes, track[step], color, alpha=0.25, size=size)
        if np.isfinite(real[step, slot]).all():
            draw_box(axes, real[step, slot], color, outline=True, size=size)


def draw_scene(panels, scene: dict, step: int, dt: float) -> None:
    """Both panels of one scene at future step `step`."""
    real, imagined = real_track(scene), imagined_tracks(scene)
    xlim = span(np.concatenate([real[..., 0].ravel(), imagined[..., 0].ravel()]), -20.0, 40.0)
    xlim = (max(xlim[0], X_RANGE[0]), min(xlim[1], X_RANGE[1]))
    ys = np.concatenate([real[..., 1].ravel(), imagined[..., 1].ravel()])
    for axes in panels:
        clear_artists(axes)
        draw_road(axes, scene.get("lanes", np.array([])), xlim, ys, scene.get("tilt", 0.0))
    draw_reality(panels[0], scene, real, step)
    draw_imagination(panels[1], scene, real, imagined, step)
    error = mean_error(real[step], imagined[:, step])
    panels[0].set_title(f"what happened: {scene['title']}, t0 + {step * dt:g} s",
                        fontsize="small")
    panels[1].set_title(f"imagined: {len(imagined)} samples (dashed: what happened), mean "
                        f"error {error:.1f} m", fontsize="small")


def imagination_frames(scenes: list[dict], dt: float, name: str) -> list[np.ndarray]:
    """RGB frames (H, W, 3), one per future step 0..F, all scenes as rows.

    Each scene: hist (H, N, D), hist_mask (H, N), future (F, N, >=2), future_mask (F, N),
    samples (S, F, N, 2), title; optionally lanes (L,) the lane centres' offsets across the
    road, tilt (the ego's heading off the road, rad) and size (N, 2).
    `name` names the test set in the heading.
    """
    if not scenes:
        raise ValueError(f"no scenes of test set '{name}' to draw")
    horizon = scenes[0]["future"].shape[0]
    figure = new_figure(12.0, 0.8 + 2.3 * len(scenes))
    panels = figure.subplots(len(scenes), 2, squeeze=False)
    for axes in panels.ravel():
        axes.tick_params(labelsize="x-small")
    figure.subplots_adjust(left=0.05, right=0.99, top=1 - 0.6 / (0.8 + 2.3 * len(scenes)),
                           bottom=0.06, hspace=0.45, wspace=0.08)
    frames = []
    for step in range(horizon + 1):
        for row, scene in zip(panels, scenes, strict=True):
            draw_scene(row, scene, step, dt)
        figure.suptitle(f"Imagination vs reality on '{name}': the world model rolled out "
                        f"under the actions really taken (ego red; x, y in m, ego frame at t0)",
                        fontsize="medium")
        frames.append(figure_image(figure))
    return frames
