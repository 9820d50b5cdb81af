"""A planner.onnx is served only with the sidecar written for it; the scorer's inputs
are refused in one line when they are not numbers."""

import json
import shutil

import numpy as np
import pytest

from models.candidates import enumerate_candidates
from pipeline.bench.planner import export_random_planner
from pipeline.planner.scorer import OnnxScorer, ScorerError, sidecar_path, write_sidecar

DEBUG_MODEL = dict(embed_dim=16, deter_dim=32, stoch_dim=8, hidden_dim=32, heads=2,
                   action_dim=8, ensemble=2, n_vehicles=6, obs_dim=7)
H, F, S = 4, 3, 2


@pytest.fixture(scope="module")
def two_exports(tmp_path_factory):
    """Two planners of the same shapes, the second with its own ONNX file (other bytes)
    and a sidecar of its own saying gamma 0.95."""
    import onnx

    root = tmp_path_factory.mktemp("exports")
    a, b = root / "a.onnx", root / "b.onnx"
    export_random_planner(a, DEBUG_MODEL, history=H, horizon=F, samples=S)
    graph = onnx.load(str(a))
    graph.doc_string = "another export"
    onnx.save(graph, str(b))
    fields = json.loads(sidecar_path(a).read_text())
    write_sidecar(b, **{**fields, "gamma": 0.95})
    return a, b


def test_a_sidecar_from_another_export_is_refused(two_exports, tmp_path):
    a, b = two_exports
    path = tmp_path / "planner.onnx"
    shutil.copy(a, path)
    shutil.copy(sidecar_path(b), sidecar_path(path))  # same shapes, gamma 0.95
    with pytest.raises(ScorerError, match="is not the file its sidecar") as error:
        OnnxScorer.load(path)
    assert "\n" not in str(error.value) and str(path) in str(error.value)
    shutil.copy(sidecar_path(a), sidecar_path(path))  # its own sidecar
    assert OnnxScorer.load(path).gamma == pytest.approx(0.9)


def test_a_sidecar_written_before_the_hash_still_loads(two_exports, tmp_path):
    path = tmp_path / "planner.onnx"
    shutil.copy(two_exports[0], path)
    fields = json.loads(sidecar_path(two_exports[0]).read_text())
    for key in ("onnx_sha256", "surprise_quantile", "surprise_threshold"):
        del fields[key]
    sidecar_path(path).write_text(json.dumps({**fields, "format_version": 2}))
    assert OnnxScorer.load(path).horizon == F


@pytest.mark.parametrize("which, value", [
    ("hist", np.full((H, 6, 7), "x")),
    ("hist", [[1.0, 2.0], [3.0]]),
    ("hist_mask", np.full((H, 6), None, dtype=object)),
    ("candidates", [["a"] * F]),
])
def test_score_inputs_that_are_not_numbers_are_refused_in_one_line(two_exports, which,
                                                                   value):
    scorer = OnnxScorer.load(two_exports[1])
    inputs = {"hist": np.zeros((H, 6, 7), np.float32), "hist_mask": np.ones((H, 6), bool),
              "candidates": enumerate_candidates(F)}
    inputs[which] = value
    with pytest.raises(ScorerError, match=which) as error:
        scorer.score(**inputs)
    assert "\n" not in str(error.value)
