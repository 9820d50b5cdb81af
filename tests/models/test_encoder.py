"""SceneEncoder: shapes, slot-order invariance, masking, normalisation buffers."""

from __future__ import annotations

import pytest
import torch

from models.encoder import SceneEncoder
from tests.models.test_world_model import make_batch


def encoder(seed: int = 0) -> SceneEncoder:
    torch.manual_seed(seed)
    return SceneEncoder(obs_dim=7, embed_dim=16, hidden_dim=24, heads=2)


@pytest.mark.parametrize("b,h,n", [(1, 1, 1), (2, 4, 5), (5, 3, 8)])
def test_shapes(b, h, n):
    enc = encoder()
    batch = make_batch(b=b, h=h, n=n, f=2)
    code = enc.encode_history(batch["hist"], batch["hist_mask"])
    assert code.summary.shape == (b, 24)
    assert code.tokens.shape == (b, n, 16)
    assert code.last_state.shape == (b, n, 4)
    assert torch.equal(code.present, batch["hist_mask"][:, -1])
    frames = enc.encode_states(batch["future"], batch["future_mask"])
    assert frames.shape == (b, 2, 16)


def test_invariant_to_order_of_other_vehicles_but_not_to_the_ego_slot():
    enc = encoder()
    batch = make_batch(b=3, n=6)
    hist, mask = batch["hist"], batch["hist_mask"]
    perm = torch.tensor([0, 4, 2, 5, 1, 3])
    code = enc.encode_history(hist, mask)
    shuffled = enc.encode_history(hist[:, :, perm], mask[:, :, perm])
    assert torch.allclose(code.summary, shuffled.summary, atol=1e-5)
    assert torch.allclose(code.tokens[:, perm], shuffled.tokens, atol=1e-6)
    frames = enc.encode_states(batch["future"], batch["future_mask"])
    frames_shuffled = enc.encode_states(batch["future"][:, :, perm],
                                        batch["future_mask"][:, :, perm])
    assert torch.allclose(frames, frames_shuffled, atol=1e-5)
    swap_ego = torch.tensor([1, 0, 2, 3, 4, 5])
    mask_all = torch.ones_like(mask)
    other = enc.encode_history(hist[:, :, swap_ego], mask_all)
    assert not torch.allclose(enc.encode_history(hist, mask_all).summary, other.summary)


def test_values_of_absent_vehicles_do_not_matter():
    enc = encoder()
    batch = make_batch(b=4, n=6)
    hist, mask = batch["hist"], batch["hist_mask"]
    assert (~mask).any()
    garbage = hist.clone()
    garbage[~mask] = torch.randn(int((~mask).sum()), 7) * 1e3
    garbage[..., 0] = torch.where(mask, garbage[..., 0], torch.tensor(float("nan")))
    code = enc.encode_history(hist, mask)
    noisy = enc.encode_history(garbage, mask)
    assert torch.equal(code.summary, noisy.summary)
    future = batch["future"].clone()
    future[~batch["future_mask"]] = float("nan")
    assert torch.equal(enc.encode_states(batch["future"], batch["future_mask"]),
                       enc.encode_states(future, batch["future_mask"]))
    # a present vehicle's values do matter
    moved = hist.clone()
    moved[mask] += 1.0
    assert not torch.allclose(enc.encode_history(moved, mask).summary, code.summary)


def test_normalisation_makes_units_irrelevant():
    """Physical inputs with matching buffers == pre-normalised inputs with identity buffers."""
    batch = make_batch(b=3, n=5)
    hist, mask = batch["hist"], batch["hist_mask"]
    mean, std = torch.tensor([5.0, -1, 25, 0, 1, 0, 1]), torch.tensor([30.0, 4, 5, 1, 1, 1, 2])
    physical = encoder()
    physical.set_normalization(mean, std)
    identity = encoder()
    normalised = torch.where(mask[..., None], (hist - mean) / std, torch.zeros_like(hist))
    a = physical.encode_history(hist, mask).summary
    b = identity.encode_history(normalised, mask).summary
    assert torch.allclose(a, b, atol=1e-5)
    assert not torch.allclose(a, identity.encode_history(hist, mask).summary)


def test_normalisation_buffers_are_saved_and_validated():
    enc = encoder()
    enc.set_normalization([1.0] * 7, [2.0, 0.0, 2.0, 2.0, 2.0, 2.0, 2.0])
    state = enc.state_dict()
    assert torch.equal(state["obs_mean"], torch.ones(7))
    assert state["obs_std"][1] == 1.0  # a constant feature is not divided by zero
    with pytest.raises(ValueError, match="obs_mean must hold 7 values"):
        enc.set_normalization(torch.zeros(6), torch.ones(7))
    with pytest.raises(ValueError, match="obs_std holds non-finite"):
        enc.set_normalization(torch.zeros(7), torch.full((7,), float("nan")))
