"""The planner over the interaction world model exports to ONNX: dynamic K, torch vs
onnxruntime parity with sampling noise, and a planner built from the model risk."""

from __future__ import annotations

import torch

from models.candidates import enumerate_candidates
from models.planner import Planner
from models.risk_sources import ImaginedRisk
from pipeline.planner.onnx_export import check_parity, export_planner, planner_session
from tests.models.test_interaction import tiny
from tests.models.test_world_model import make_batch


def test_interaction_planner_parity_for_several_candidate_counts(tmp_path):
    model = tiny(5, seed=7)  # two sub-steps per decision step
    planner = Planner(model, ImaginedRisk(), gamma=0.95, bootstrap=True, lookahead=1)
    batch = make_batch(b=1, n=5, seed=2)
    path = tmp_path / "planner.onnx"
    export_planner(planner, path, batch["hist"], batch["hist_mask"], n_candidates=25,
                   samples=2, horizon=2)
    every = torch.from_numpy(enumerate_candidates(2))
    generator = torch.Generator().manual_seed(0)
    for k in (25, 4):
        noise = torch.randn(k, 2, 2, model.stoch_dim, generator=generator)
        diff = check_parity(planner, path, batch["hist"], batch["hist_mask"].float(), every[:k],
                            noise, atol=1e-4)
        assert diff < 1e-4
    session = planner_session(path)
    assert session.get_inputs()[3].shape[-1] == model.stoch_dim  # N x vehicle_stoch
    assert isinstance(session.get_inputs()[2].shape[0], str)  # K is symbolic
