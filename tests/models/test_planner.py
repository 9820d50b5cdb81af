"""Planner scoring, candidate enumeration and pruning."""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from models.candidates import enumerate_candidates, prune_candidates
from models.planner import Planner, collision_within_horizon, discounted_return, terminal_value
from models.risk_sources import ImaginedRisk
from tests.models.test_world_model import make_batch, tiny_model

ROOT = Path(__file__).resolve().parents[2]


def test_enumeration_holds_every_sequence_once():
    every = enumerate_candidates(3)
    assert every.shape == (5 ** 3, 3) and every.dtype == np.int64
    assert len({tuple(row) for row in every}) == len(every)
    assert every.min() == 0 and every.max() == 4
    assert enumerate_candidates(2, n_actions=3).shape == (9, 2)
    with pytest.raises(ValueError, match="horizon and n_actions"):
        enumerate_candidates(0)


def brute_force_keep(sequence, lane, lanes_count) -> bool:
    for action in sequence:
        lane += {0: -1, 2: 1}.get(int(action), 0)
        if not 0 <= lane < lanes_count:
            return False
    return True


@pytest.mark.parametrize("lane,lanes_count", [(0, 3), (2, 3), (1, 3), (0, 1), (3, 4)])
def test_pruning_drops_exactly_the_sequences_leaving_the_road(lane, lanes_count):
    every = enumerate_candidates(3)
    kept = prune_candidates(every, lane, lanes_count)
    expected = [row for row in every if brute_force_keep(row, lane, lanes_count)]
    assert np.array_equal(kept, np.array(expected))
    assert any((row == 1).all() for row in kept)  # all-IDLE always survives
    if lane == 0:
        assert not (kept[:, 0] == 0).any()  # no immediate LANE_LEFT from the left edge
    if lanes_count > 1 and lane in (0, lanes_count - 1):
        assert len(kept) < len(every)


def test_pruning_refuses_a_lane_off_the_road():
    with pytest.raises(ValueError, match="lane_index 3 is outside"):
        prune_candidates(enumerate_candidates(2), 3, 3)


def test_candidates_module_imports_without_torch():
    code = ("import sys; import models.candidates; "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr


def test_collision_within_horizon_golden():
    p = torch.tensor([[0.5, 0.5], [0.2, 0.0]])
    assert torch.allclose(collision_within_horizon(p, 1 - p), torch.tensor([0.75, 0.2]))
    # the episode terminates after step 1 without a collision: step 2 cannot crash
    ended = collision_within_horizon(torch.tensor([0.5, 0.5]), torch.tensor([0.0, 1.0]))
    assert torch.isclose(ended, torch.tensor(0.5))
    # inconsistent heads (cont above 1 - p) still give 1 - prod(1 - p) at most
    high = collision_within_horizon(torch.tensor([0.9, 0.9]), torch.tensor([1.0, 1.0]))
    assert torch.isclose(high, torch.tensor(0.99))


def test_discounted_return_golden():
    reward = torch.tensor([1.0, 2.0, 4.0])
    assert torch.isclose(discounted_return(reward, torch.ones(3), 0.5), torch.tensor(3.0))
    # terminated at step 2: step 3's reward is not collected
    cont = torch.tensor([1.0, 0.0, 1.0])
    assert torch.isclose(discounted_return(reward, cont, 0.5), torch.tensor(2.0))


def test_terminal_value_golden():
    reward, cont = torch.tensor([1.0, 2.0, 4.0]), torch.ones(3)
    safe = terminal_value(reward, torch.zeros(3), cont, 0.5)
    assert torch.isclose(safe, torch.tensor(0.5 ** 3 / 0.5 * 4.0))  # gamma^F r_F / (1 - gamma)
    risky = terminal_value(reward, torch.tensor([0.0, 0.5, 0.0]), cont, 0.5)
    assert torch.isclose(risky, safe * 0.5)  # only the surviving futures keep their value
    ended = terminal_value(reward, torch.zeros(3), torch.tensor([1.0, 0.0, 1.0]), 0.5)
    assert ended.item() == 0.0


def test_bootstrap_raises_the_return_by_the_terminal_value_and_needs_gamma_below_one():
    model = tiny_model(4).eval()
    batch = make_batch(b=1, n=4)
    candidates = torch.from_numpy(enumerate_candidates(2))
    noise = torch.zeros(len(candidates), 1, 2, model.stoch_dim)
    args = (batch["hist"], batch["hist_mask"].float(), candidates, noise)
    with torch.no_grad():
        plain = Planner(model, ImaginedRisk(), gamma=0.9)(*args)[1]
        boot = Planner(model, ImaginedRisk(), gamma=0.9, bootstrap=True)(*args)[1]
        out = model.imagine(batch["hist"], batch["hist_mask"], candidates[None], noise[None])
    extra = terminal_value(out.reward[0], out.collision[0], out.cont[0], 0.9).mean(dim=1)
    assert torch.allclose(boot - plain, extra, atol=1e-5) and not torch.allclose(boot, plain)
    with pytest.raises(ValueError, match="below 1 with bootstrap"):
        Planner(model, ImaginedRisk(), gamma=1.0, bootstrap=True)


@pytest.mark.parametrize("k,s,n", [(125, 4, 5), (7, 1, 3), (1, 3, 8)])
def test_planner_outputs(k, s, n):
    model = tiny_model(n).eval()
    planner = Planner(model, ImaginedRisk(), gamma=0.9)
    batch = make_batch(b=1, n=n)
    candidates = torch.from_numpy(enumerate_candidates(3))[:k]
    noise = torch.randn(k, s, 3, model.stoch_dim)
    mask = batch["hist_mask"].float()
    with torch.no_grad():
        collision, value, uncertainty, positions = planner(batch["hist"], mask, candidates, noise)
        again = planner(batch["hist"], mask, candidates, noise)
    assert collision.shape == value.shape == uncertainty.shape == (k,)
    assert positions.shape == (k, 3, n, 2)
    assert ((collision >= 0) & (collision <= 1)).all()
    assert (uncertainty >= 0).all() and torch.isfinite(value).all()
    for x, y in zip((collision, value, uncertainty, positions), again, strict=True):
        assert torch.equal(x, y)


def test_planner_matches_imagine():
    model = tiny_model().eval()
    batch = make_batch(b=1)
    candidates = torch.from_numpy(enumerate_candidates(2))
    noise = torch.randn(len(candidates), 2, 2, model.stoch_dim)
    with torch.no_grad():
        planner = Planner(model, ImaginedRisk(), 0.9)
        _, _, _, positions = planner(batch["hist"], batch["hist_mask"].float(), candidates, noise)
        out = model.imagine(batch["hist"], batch["hist_mask"], candidates[None], noise[None])
    assert torch.allclose(positions, out.states_mean[0, ..., :2].mean(1))


def test_planner_refuses_a_batch_of_scenes():
    batch = make_batch(b=2)
    with pytest.raises(ValueError, match=r"hist must have shape \(1, H, N, D\)"):
        Planner(tiny_model(), ImaginedRisk(), 0.9)(batch["hist"], batch["hist_mask"].float(),
                                                   torch.ones(3, 3, dtype=torch.long),
                                                   torch.zeros(3, 1, 3, 8))


def test_all_lane_sequences_are_enumerated():
    every = {tuple(r) for r in enumerate_candidates(2)}
    assert every == set(itertools.product(range(5), repeat=2))
