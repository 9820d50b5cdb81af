"""Imagination vs reality frames: one per future step, a fixed size, errors measured."""

import numpy as np
import pytest

from evaluation.imagination import imagination_frames, imagined_tracks, mean_error, real_track

H, N, F, S = 3, 4, 2, 3


def scene(present_slots: int = 3) -> dict:
    """Slots moving along x at 20 m/s in lanes 0, 4 and 8 m; the last slot absent."""
    hist = np.zeros((H, N, 7), dtype=np.float32)
    hist[-1, :, 1] = [0.0, 4.0, 8.0, 0.0]
    hist[-1, :, 0] = [0.0, 15.0, -10.0, 0.0]
    hist_mask = np.zeros((H, N), dtype=bool)
    hist_mask[:, :present_slots] = True
    future = np.zeros((F, N, 4), dtype=np.float32)
    for f in range(F):
        future[f, :, :2] = hist[-1, :, :2] + [20.0 * (f + 1), 0.0]
    samples = np.stack([future[..., :2] + [s, 0.0] for s in range(S)])  # (S, F, N, 2)
    return {"hist": hist, "hist_mask": hist_mask, "future": future,
            "future_mask": np.repeat(hist_mask[-1:], F, axis=0), "samples": samples,
            "title": "episode 0, step 0", "lanes": np.array([0.0, 4.0, 8.0])}


def test_tracks_start_at_t0_and_leave_out_slots_absent_there():
    real, imagined = real_track(scene()), imagined_tracks(scene())
    assert real.shape == (F + 1, N, 2) and imagined.shape == (S, F + 1, N, 2)
    assert np.isnan(real[:, 3]).all() and np.isnan(imagined[:, :, 3]).all()
    np.testing.assert_allclose(imagined[:, 0, :3], np.broadcast_to(real[0, :3], (S, 3, 2)))


def test_mean_error_is_the_samples_mean_distance_from_reality():
    real, imagined = real_track(scene()), imagined_tracks(scene())
    assert mean_error(real[0], imagined[:, 0]) == 0.0
    assert mean_error(real[1], imagined[:, 1]) == pytest.approx(np.mean(range(S)))


def test_one_frame_per_future_step_of_one_size():
    frames = imagination_frames([scene(), scene(2)], dt=1.0, name="test")
    assert len(frames) == F + 1
    assert {frame.shape for frame in frames} == {(frames[0].shape[0], 1200, 3)}
    assert frames[0].shape[0] > 400  # two scenes, one row each
    assert not np.array_equal(frames[0], frames[-1])


def test_no_scene_is_refused():
    with pytest.raises(ValueError, match="no scenes of test set 'merge'"):
        imagination_frames([], dt=1.0, name="merge")
