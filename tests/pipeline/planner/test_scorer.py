"""OnnxScorer: loading checks with one-line errors, scoring shapes, noise, torch parity."""

import json
import shutil

import numpy as np
import pytest
import torch

from models.candidates import enumerate_candidates
from pipeline.bench.planner import export_random_planner
from pipeline.errors import DrivecastError
from pipeline.planner.scorer import (
    SIDECAR_KEYS,
    OnnxScorer,
    ScorerError,
    sidecar_path,
    write_sidecar,
)

DEBUG_MODEL = dict(embed_dim=16, deter_dim=32, stoch_dim=8, hidden_dim=32, heads=2,
                   action_dim=8, ensemble=2, n_vehicles=6, obs_dim=7)
H, F, S = 4, 3, 2


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(onnx path, torch planner) of a freshly initialised debug planner."""
    path = tmp_path_factory.mktemp("planner") / "planner.onnx"
    planner = export_random_planner(path, DEBUG_MODEL, history=H, horizon=F, samples=S)
    return path, planner


@pytest.fixture
def copy_of(exported, tmp_path):
    """A private copy of the exported files (tests may damage it)."""
    path = tmp_path / "planner.onnx"
    shutil.copy(exported[0], path)
    shutil.copy(sidecar_path(exported[0]), sidecar_path(path))
    return path


def scene(seed=0):
    rng = np.random.default_rng(seed)
    hist = rng.normal(size=(H, 6, 7)).astype(np.float32)
    hist[..., 0] *= 20
    mask = rng.random((H, 6)) > 0.2
    mask[:, 0] = True
    return np.where(mask[..., None], hist, 0).astype(np.float32), mask


def refused(path, match):
    with pytest.raises(ScorerError, match=match) as error:
        OnnxScorer.load(path)
    message = str(error.value)
    assert "\n" not in message and str(path) in message
    return message


def edit_sidecar(path, **changes):
    fields = json.loads(sidecar_path(path).read_text())
    fields.update(changes)
    for key, value in changes.items():
        if value is None:
            del fields[key]
    sidecar_path(path).write_text(json.dumps(fields))


def test_score_shapes_and_one_intra_op_thread(exported):
    scorer = OnnxScorer.load(exported[0])
    hist, mask = scene()
    candidates = enumerate_candidates(F)
    scores = scorer.score(hist, mask, candidates)
    k = len(candidates)
    assert scores.collision_prob.shape == scores.expected_return.shape == (k,)
    assert scores.uncertainty.shape == (k,)
    assert scores.positions.shape == (k, F, 6, 2)
    assert ((scores.collision_prob >= 0) & (scores.collision_prob <= 1)).all()
    assert scorer.session.get_session_options().intra_op_num_threads == 1
    assert (scorer.history, scorer.horizon, scorer.vehicles, scorer.samples) == (H, F, 6, S)


def test_scores_match_torch_planner_with_the_scorer_noise(exported):
    path, planner = exported
    scorer = OnnxScorer.load(path, seed=3)
    hist, mask = scene(1)
    candidates = enumerate_candidates(F)[::7]
    scores = scorer.score(hist, mask, candidates)
    noise = np.broadcast_to(scorer.noise[None], (len(candidates), S, F, 8)).copy()
    with torch.no_grad():
        want = planner(torch.from_numpy(hist[None]), torch.from_numpy(mask[None]).float(),
                       torch.from_numpy(candidates), torch.from_numpy(noise))
    for got, expected in zip(scores, want, strict=True):
        np.testing.assert_allclose(got, expected.numpy(), atol=1e-4)


def test_noise_is_seeded_and_shared_by_candidates(exported):
    hist, mask = scene(2)
    candidates = enumerate_candidates(F)
    first = OnnxScorer.load(exported[0], seed=5).score(hist, mask, candidates)
    again = OnnxScorer.load(exported[0], seed=5).score(hist, mask, candidates)
    other = OnnxScorer.load(exported[0], seed=6)
    assert np.array_equal(first.expected_return, again.expected_return)
    assert not np.array_equal(other.noise, OnnxScorer.load(exported[0], seed=5).noise)
    # common random numbers: a candidate's score does not depend on the others scored
    subset = OnnxScorer.load(exported[0], seed=5).score(hist, mask, candidates[10:13])
    np.testing.assert_allclose(subset.expected_return, first.expected_return[10:13], atol=1e-6)


def test_missing_onnx_file(tmp_path):
    refused(tmp_path / "nowhere.onnx", "missing")


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_or_truncated_onnx(copy_of, damage):
    data = copy_of.read_bytes()
    copy_of.write_bytes(b"not a model at all" * 10 if damage == "garbage"
                        else data[: len(data) // 2])
    refused(copy_of, "corrupt or truncated")


def test_scorer_error_is_a_drivecast_error():
    assert issubclass(ScorerError, DrivecastError)


def test_missing_sidecar(copy_of):
    sidecar_path(copy_of).unlink()
    refused(copy_of, "sidecar .* is missing")


def test_sidecar_not_json(copy_of):
    sidecar_path(copy_of).write_text('{"format_version": 1, "history": ')
    refused(copy_of, "not valid JSON")


def test_sidecar_missing_key(copy_of):
    edit_sidecar(copy_of, gamma=None)
    assert "gamma" in refused(copy_of, "missing keys")


def test_sidecar_wrong_version(copy_of):
    edit_sidecar(copy_of, format_version=99)
    refused(copy_of, "format_version 99")


@pytest.mark.parametrize("key, value", [("vehicles", 7), ("obs_dim", 6), ("history", 9),
                                        ("samples", 3), ("stoch_dim", 4)])
def test_sidecar_that_disagrees_with_the_graph(copy_of, key, value):
    changes = {key: value}
    if key == "obs_dim":
        changes.update(obs_mean=[0.0] * value, obs_std=[1.0] * value)
    edit_sidecar(copy_of, **changes)
    refused(copy_of, "its sidecar implies")


def test_sidecar_with_other_input_names(copy_of):
    edit_sidecar(copy_of, input_names=["a", "b", "c", "d"])
    refused(copy_of, "its sidecar says")


def test_write_sidecar_round_trip_with_numpy_values(copy_of):
    fields = json.loads(sidecar_path(copy_of).read_text())
    del fields["format_version"]
    fields.update(obs_mean=np.arange(7, dtype=np.float32), samples=np.int64(S),
                  action_names=tuple(fields["action_names"]))
    write_sidecar(copy_of, **fields)
    scorer = OnnxScorer.load(copy_of)
    assert scorer.meta["obs_mean"] == list(range(7)) and scorer.samples == S


def test_write_sidecar_refuses_missing_keys(tmp_path):
    with pytest.raises(ScorerError, match="missing keys"):
        write_sidecar(tmp_path / "p.onnx", history=3)
    assert not sidecar_path(tmp_path / "p.onnx").exists()
    assert SIDECAR_KEYS[0] == "format_version"


@pytest.mark.parametrize("which", ["hist", "mask", "candidates", "actions"])
def test_bad_score_inputs_are_refused_in_one_line(exported, which):
    scorer = OnnxScorer.load(exported[0])
    hist, mask = scene()
    candidates = enumerate_candidates(F)
    if which == "hist":
        hist = hist[:, :5]
    elif which == "mask":
        mask = mask[1:]
    elif which == "candidates":
        candidates = candidates[:, :2]
    else:
        candidates = candidates + 1
    with pytest.raises(ScorerError) as error:
        scorer.score(hist, mask, candidates)
    assert "\n" not in str(error.value)
    assert {"hist": "hist ", "mask": "hist_mask", "candidates": "(K, F)",
            "actions": "0..4"}[which] in str(error.value)


def test_the_calibrated_surprise_threshold_is_read_from_the_sidecar(copy_of):
    assert OnnxScorer.load(copy_of).calibrated_surprise is None  # written without one
    fields = json.loads(sidecar_path(copy_of).read_text())
    write_sidecar(copy_of, **{**fields, "surprise_quantile": 0.99, "surprise_threshold": 1.25})
    scorer = OnnxScorer.load(copy_of)
    assert scorer.calibrated_surprise == 1.25 and scorer.meta["surprise_quantile"] == 0.99


def test_a_version_3_sidecar_without_calibration_still_loads(copy_of):
    fields = json.loads(sidecar_path(copy_of).read_text())
    del fields["surprise_quantile"], fields["surprise_threshold"]
    sidecar_path(copy_of).write_text(json.dumps({**fields, "format_version": 3}))
    assert OnnxScorer.load(copy_of).calibrated_surprise is None


@pytest.mark.parametrize("quantile, threshold", [(0.99, None), (1.5, 1.0), (0.9, -1.0),
                                                 (0.9, "1 m")])
def test_a_bad_calibration_is_refused(copy_of, quantile, threshold):
    edit_sidecar(copy_of, surprise_quantile=quantile, surprise_threshold=threshold)
    refused(copy_of, "surprise_")
