"""ONNX export of the planner: dynamic K, torch vs onnxruntime parity, atomic write."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.candidates import enumerate_candidates
from models.planner import Planner
from models.risk_sources import ImaginedRisk
from pipeline.planner.onnx_export import check_parity, export_planner, planner_session, time_planner
from tests.models.test_world_model import make_batch, tiny_model


def exported(tmp_path, variant="probabilistic", samples=4):
    model = tiny_model(n=6, variant=variant, seed=5).eval()
    model.set_normalization(torch.tensor([10.0, 0, 25, 0, 1, 0, 1]),
                            torch.tensor([30.0, 4, 5, 1, 1, 1, 1]), [0.5, 0.5, 1.0, 1.0])
    planner = Planner(model, ImaginedRisk(), gamma=0.95)
    batch = make_batch(b=1, n=6)
    path = tmp_path / "out" / "planner.onnx"
    export_planner(planner, path, batch["hist"], batch["hist_mask"], n_candidates=125,
                   samples=samples)
    return planner, path, batch


def test_parity_with_a_different_number_of_candidates(tmp_path):
    planner, path, batch = exported(tmp_path)
    assert sorted(p.name for p in path.parent.iterdir()) == ["planner.onnx"]  # no temp left
    generator = torch.Generator().manual_seed(0)
    every = torch.from_numpy(enumerate_candidates(3))
    for k in (125, 7):
        noise = torch.randn(k, 4, 3, planner.world_model.stoch_dim, generator=generator)
        diff = check_parity(planner, path, batch["hist"], batch["hist_mask"].float(),
                            every[:k], noise, atol=1e-4)
        assert diff < 1e-4
    session = planner_session(path)
    names = [i.name for i in session.get_inputs()]
    assert names == ["hist", "hist_mask", "candidates", "noise"]
    assert isinstance(session.get_inputs()[2].shape[0], str)  # K is symbolic


def test_export_folds_the_shape_arithmetic_of_fixed_axes(tmp_path, monkeypatch):
    import onnx

    import pipeline.planner.onnx_export as onnx_export

    def op_counts(path):
        ops = [node.op_type for node in onnx.load(str(path)).graph.node]
        return len(ops), ops.count("Shape")

    _, folded, _ = exported(tmp_path / "folded")
    monkeypatch.setattr(onnx_export, "fold_static_shapes", lambda path: None)
    _, traced, _ = exported(tmp_path / "traced")
    (nodes, shapes), (raw_nodes, raw_shapes) = op_counts(folded), op_counts(traced)
    assert nodes < 0.8 * raw_nodes and shapes < raw_shapes / 2


def test_other_scene_and_deterministic_variant(tmp_path):
    planner, path, _ = exported(tmp_path, variant="deterministic", samples=2)
    scene = make_batch(b=1, n=6, seed=11)
    candidates = torch.from_numpy(enumerate_candidates(3))[40:52]
    noise = torch.randn(12, 2, 3, planner.world_model.stoch_dim)
    assert check_parity(planner, path, scene["hist"], scene["hist_mask"], candidates, noise,
                        atol=1e-4) < 1e-4
    ms = time_planner(path, scene["hist"], scene["hist_mask"], candidates, noise, repeats=3)
    assert ms > 0


def test_parity_check_catches_a_stale_export(tmp_path):
    planner, path, batch = exported(tmp_path)
    with torch.no_grad():
        planner.world_model.scalar_heads[-1].bias.add_(1.0)  # torch moves on, ONNX does not
    noise = np.random.default_rng(0).standard_normal((5, 4, 3, planner.world_model.stoch_dim))
    with pytest.raises(AssertionError, match="differs from torch"):
        check_parity(planner, path, batch["hist"], batch["hist_mask"],
                     enumerate_candidates(3)[:5], noise, atol=1e-4)


@pytest.mark.parametrize("overrides,refused", [(["export.gamma=1.0"], True),
                                               (["export.gamma=1.0", "export.bootstrap=false"],
                                                False),
                                               (["export.gamma=0.95"], False)])
def test_export_refuses_gamma_one_when_bootstrapping(overrides, refused):
    from pipeline.config import load_config
    from pipeline.errors import StageError
    from pipeline.stages import export

    cfg = load_config(None, overrides)
    if refused:
        with pytest.raises(StageError, match="below 1 with export.bootstrap"):
            export.check(cfg)
    else:
        export.check(cfg)


@pytest.mark.parametrize("overrides,message", [
    (["export.lookahead=-1"], "export.lookahead, export.replica_reacting_steps and"),
    (["export.replica_reacting_steps=-1"], "export.replica_tail_steps must be >= 0, got 0, -1"),
    (["export.replica_tail_steps=-2"], "export.replica_tail_steps must be >= 0, got 0, 3, -2"),
    (["export.replica_late_idm_every=0"], "export.replica_late_idm_every must be >= 1"),
    (["export.lookahead_min_speed=-5"], "export.lookahead_min_speed must be a finite speed"),
    (["export.lookahead_min_speed=.inf"], "export.lookahead_min_speed must be a finite speed"),
    (["export.risk=replica", "critic.episodes=4"], "critic.episodes > 0 fits a risk critic"),
    (["export.risk=critic"], "export.risk=critic needs a fitted risk critic")])
def test_export_refuses_a_bad_lookahead_or_two_risks(overrides, message):
    from pipeline.config import load_config
    from pipeline.errors import StageError
    from pipeline.stages import export

    with pytest.raises(StageError, match=message) as err:
        export.check(load_config(None, overrides))
    assert "\n" not in str(err.value)


def test_planner_graph_scores_the_configured_risk_source(tmp_path):
    """The exported collision_prob follows model.risk: overlap and head differ."""
    torch.manual_seed(0)
    batch = make_batch(b=1, n=4)
    candidates = torch.from_numpy(enumerate_candidates(2))
    risks = {}
    for source in ("overlap", "head"):
        model = tiny_model(4, risk=source).eval()
        noise = torch.zeros(len(candidates), 1, 2, model.stoch_dim)
        path = tmp_path / f"{source}.onnx"
        export_planner(Planner(model, ImaginedRisk(), 0.9), path, batch["hist"],
                       batch["hist_mask"].float(),
                       n_candidates=len(candidates), samples=1, horizon=2)
        session = planner_session(path)
        feed = dict(zip([i.name for i in session.get_inputs()],
                        [batch["hist"].numpy(), batch["hist_mask"].float().numpy(),
                         candidates.numpy(), noise.numpy()], strict=True))
        risks[source] = session.run(None, feed)[0]
    assert not np.allclose(risks["overlap"], risks["head"])


@pytest.mark.parametrize("min_speed", [None, 0.5])
def test_parity_with_a_bootstrapped_lookahead_return(tmp_path, min_speed):
    model = tiny_model(5).eval()
    batch = make_batch(b=1, n=5)
    plain = Planner(model, ImaginedRisk(), gamma=0.9, bootstrap=True)
    ahead = Planner(model, ImaginedRisk(), gamma=0.9, bootstrap=True, lookahead=2,
                    lookahead_min_speed=min_speed)
    path = tmp_path / "planner.onnx"
    export_planner(ahead, path, batch["hist"], batch["hist_mask"].float(), n_candidates=25,
                   samples=2, horizon=2)
    candidates = torch.from_numpy(enumerate_candidates(2))
    noise = torch.randn(25, 2, 2, model.stoch_dim, generator=torch.Generator().manual_seed(1))
    args = (batch["hist"], batch["hist_mask"].float(), candidates, noise)
    assert check_parity(ahead, path, *args, atol=1e-4) < 1e-4
    none = Planner(model, ImaginedRisk(), gamma=0.9)
    one = (*args[:3], noise[:, :1])  # one sample: the mean over samples could mix signs
    with torch.no_grad():  # surviving the extrapolated steps can only shrink the value
        value_ahead = ahead(*one)[1] - none(*one)[1]
        value_plain = plain(*one)[1] - none(*one)[1]
    assert (value_ahead.abs() <= value_plain.abs() + 1e-6).all()
    assert not torch.allclose(value_ahead, value_plain)
