"""world_model_loss: finite terms, empty masks, golden pieces, optimisation decreases it."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from models.losses import (
    LossWeights,
    beta_nll,
    gaussian_kl,
    gaussian_nll,
    masked_mean,
    world_model_loss,
)
from models.world_model import VARIANTS
from tests.models.test_world_model import make_batch, tiny_model

METRICS = {"loss", "forecast_nll", "presence_bce", "latent", "kl", "reward_mse",
           "collision_bce", "cont_bce", "ade_open_loop"}


def test_masked_mean_golden_and_empty():
    values = torch.tensor([[1.0, 2.0], [3.0, float("nan")]])
    mask = torch.tensor([[True, False], [True, False]])
    assert masked_mean(values, mask).item() == 2.0
    assert masked_mean(values, torch.zeros_like(mask)).item() == 0.0


def test_gaussian_pieces_match_torch_distributions():
    mean, std, target = torch.randn(5, 3), torch.rand(5, 3) + 0.1, torch.randn(5, 3)
    expected = -Normal(mean, std).log_prob(target)
    assert torch.allclose(gaussian_nll(mean, std, target), expected, atol=1e-5)
    assert torch.allclose(beta_nll(mean, std, target, 0.5), std * expected, atol=1e-5)
    q = (torch.randn(4, 6), torch.rand(4, 6) + 0.2)
    p = (torch.randn(4, 6), torch.rand(4, 6) + 0.2)
    expected_kl = kl_divergence(Normal(*q), Normal(*p)).sum(-1)
    assert torch.allclose(gaussian_kl(*q, *p), expected_kl, atol=1e-5)


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_term_is_finite_for_each_variant(variant):
    model = tiny_model(variant=variant)
    loss, metrics = world_model_loss(model, make_batch(b=6), LossWeights())
    assert set(metrics) == METRICS
    assert torch.isfinite(loss) and loss.requires_grad
    assert all(torch.isfinite(v) and not v.requires_grad for v in metrics.values())
    if variant == "value_equivalent":
        assert metrics["latent"] == 0


@pytest.mark.parametrize("variant", VARIANTS)
def test_empty_masks_give_finite_zero_terms(variant):
    batch = make_batch(b=3)
    batch["step_mask"] = torch.zeros_like(batch["step_mask"])
    batch["label_mask"] = torch.zeros_like(batch["label_mask"])
    batch["future_mask"] = torch.zeros_like(batch["future_mask"])
    loss, metrics = world_model_loss(tiny_model(variant=variant), batch)
    assert torch.isfinite(loss)
    for name in ("forecast_nll", "presence_bce", "reward_mse", "collision_bce", "cont_bce",
                 "latent"):
        assert metrics[name] == 0
    loss.backward()


def test_unlabelled_steps_train_forecasts_but_not_rewards():
    batch = make_batch(b=4)
    batch["label_mask"] = torch.zeros_like(batch["label_mask"])
    _, metrics = world_model_loss(tiny_model(), batch)
    assert metrics["reward_mse"] == 0 and metrics["collision_bce"] == 0
    assert metrics["forecast_nll"] != 0


def test_collision_pos_weight_scales_the_positive_class():
    batch = make_batch(b=16)
    assert batch["collision"][batch["label_mask"]].sum() > 0
    torch.manual_seed(0)
    _, low = world_model_loss(tiny_model(), batch, LossWeights(collision_pos_weight=1.0))
    torch.manual_seed(0)
    _, high = world_model_loss(tiny_model(), batch, LossWeights(collision_pos_weight=50.0))
    assert high["collision_bce"] > low["collision_bce"]


def test_free_bits_floor_the_kl_term():
    torch.manual_seed(0)
    _, metrics = world_model_loss(tiny_model(), make_batch(), LossWeights(free_bits=100.0))
    assert math.isclose(metrics["latent"].item(), 100.0, rel_tol=1e-6)
    assert metrics["kl"] < 100.0


def test_value_equivalent_gives_the_forecast_heads_no_gradient():
    model = tiny_model(variant="value_equivalent")
    loss, _ = world_model_loss(model, make_batch())
    loss.backward()
    assert model.decoder.out_mean.weight.grad is None
    assert model.scalar_heads[0].weight.grad.abs().sum() > 0


@pytest.mark.parametrize("variant", VARIANTS)
def test_a_few_optimisation_steps_decrease_the_loss(variant):
    model = tiny_model(variant=variant)
    batch = make_batch(b=8, seed=3)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for step in range(12):
        torch.manual_seed(step % 2)  # same two noise draws, so losses are comparable
        loss, _ = world_model_loss(model, batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] and losses[-2] < losses[0]
