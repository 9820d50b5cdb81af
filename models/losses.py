"""World-model loss: `world_model_loss(model, batch, weights) -> (loss, metrics)`.

Terms (each a masked mean, 0 when its mask is empty):
- forecast: Gaussian NLL of future [x, y, vx, vy] (summed over the 4 features), masked
  by future_mask & step_mask;
- presence: BCE of slot presence, masked by step_mask & "slot present at t0";
- latent: probabilistic -> KL(q || p_e) with free bits and KL balancing, averaged over
  the E prior members; deterministic -> the same balancing on squared errors between
  prior means and the posterior latent; value_equivalent -> 0;
- reward (MSE), collision (BCE with pos_weight) and cont (BCE), masked by
  step_mask & label_mask.
Head terms are computed on the posterior rollout plus `open_loop` x the same on the
open-loop (prior) rollout; value_equivalent has only the open-loop rollout and no
forecast/presence loss (they are still reported as metrics).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from models.loss_weights import LossWeights
from models.world_model import Heads, Observation, WorldModel, batch_field

HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of `values` where `mask` (broadcastable) is True; 0 for an empty mask."""
    mask = mask.expand_as(values)
    total = torch.where(mask, values, torch.zeros_like(values)).sum()
    return total / mask.sum().clamp(min=1)


def gaussian_nll(mean: torch.Tensor, std: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-element negative log-likelihood of target under N(mean, std^2)."""
    return 0.5 * ((target - mean) / std).pow(2) + std.log() + HALF_LOG_2PI


def beta_nll(mean: torch.Tensor, std: torch.Tensor, target: torch.Tensor,
             beta: float) -> torch.Tensor:
    """Gaussian NLL weighted by the detached variance^beta (Seitzer et al. 2022).

    Plain NLL lets confidently predicted slots (tiny std) dominate the gradient of the
    shared decoder, so badly predicted ones (large std) stop learning their mean;
    beta = 1 gives the mean the gradient of an MSE, beta = 0 is the plain NLL.
    """
    weight = std.detach().pow(2 * beta) if beta else 1.0
    return weight * gaussian_nll(mean, std, target)


def gaussian_kl(mean_q: torch.Tensor, std_q: torch.Tensor, mean_p: torch.Tensor,
                std_p: torch.Tensor) -> torch.Tensor:
    """KL(q || p) of diagonal Gaussians, summed over the last axis (..., Z) -> (...)."""
    ratio = (std_q / std_p).pow(2)
    return 0.5 * (ratio + ((mean_q - mean_p) / std_p).pow(2) - 1 - ratio.log()).sum(-1)


def head_terms(heads: Heads, batch: Any, weights: LossWeights) -> dict[str, torch.Tensor]:
    """Unweighted head losses of one rollout (B, F, ...) against the batch."""
    future = batch_field(batch, "future")
    step = batch_field(batch, "step_mask").bool()
    labelled = step & batch_field(batch, "label_mask").bool()
    slots = batch_field(batch, "future_mask").bool() & step[..., None]  # (B, F, N)
    present_t0 = batch_field(batch, "hist_mask").bool()[:, -1]  # (B, N)
    nll = beta_nll(heads.states_mean, heads.states_std, future, weights.nll_beta).sum(-1)
    error = (heads.states_mean[..., :2] - future[..., :2]).norm(dim=-1)  # (B, F, N)
    presence = F.binary_cross_entropy_with_logits(
        heads.presence_logit, batch_field(batch, "future_mask").to(future.dtype),
        reduction="none")
    collision = F.binary_cross_entropy_with_logits(
        heads.collision_logit, batch_field(batch, "collision"), reduction="none",
        pos_weight=torch.tensor(weights.collision_pos_weight, dtype=future.dtype,
                                device=future.device))
    cont = F.binary_cross_entropy_with_logits(heads.cont_logit, batch_field(batch, "cont"),
                                              reduction="none")
    return {
        "forecast": masked_mean(nll, slots),
        "presence": masked_mean(presence, step[..., None] & present_t0[:, None]),
        "reward": masked_mean((heads.reward - batch_field(batch, "reward")).pow(2), labelled),
        "collision": masked_mean(collision, labelled),
        "cont": masked_mean(cont, labelled),
        "ade": masked_mean(error, slots),
    }


def latent_terms(obs: Observation, step: torch.Tensor, variant: str,
                 weights: LossWeights) -> tuple[torch.Tensor, torch.Tensor]:
    """(balanced latent loss, raw divergence) masked by step (B, F); zeros without posterior."""
    if obs.post_mean is None:
        zero = step.new_zeros((), dtype=torch.float32)
        return zero, zero
    q_mean, q_std = obs.post_mean[None], obs.post_std[None]  # (1, B, F, Z)
    p_mean, p_std = obs.prior_mean, obs.prior_std  # (E, B, F, Z)
    if variant == "deterministic":
        dyn = (p_mean - q_mean.detach()).pow(2).sum(-1)  # (E, B, F)
        rep = (p_mean.detach() - q_mean).pow(2).sum(-1)
        raw = dyn.detach()
    else:
        dyn = gaussian_kl(q_mean.detach(), q_std.detach(), p_mean, p_std)  # (E, B, F)
        rep = gaussian_kl(q_mean, q_std, p_mean.detach(), p_std.detach())
        raw = dyn.detach()
        dyn, rep = dyn.clamp(min=weights.free_bits), rep.clamp(min=weights.free_bits)
    balanced = weights.kl_balance * dyn + (1 - weights.kl_balance) * rep
    return masked_mean(balanced.mean(0), step), masked_mean(raw.mean(0), step)


def combine_rollouts(obs: Observation, batch: Any,
                     weights: LossWeights) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Head terms summed over the posterior and (weighted) open-loop rollouts, + open ADE."""
    open_terms = head_terms(obs.open_loop, batch, weights)
    if obs.posterior is None:
        return open_terms, open_terms["ade"]
    post_terms = head_terms(obs.posterior, batch, weights)
    terms = {k: post_terms[k] + weights.open_loop * open_terms[k] for k in post_terms}
    return terms, open_terms["ade"]


def world_model_loss(model: WorldModel, batch: Any,
                     weights: LossWeights | None = None) -> tuple[torch.Tensor, dict]:
    """Total loss (scalar) and detached metrics (name -> 0-d tensor) for one window batch."""
    weights = weights or LossWeights()
    obs = model.observe(batch)
    terms, open_ade = combine_rollouts(obs, batch, weights)
    step = batch_field(batch, "step_mask").bool()
    latent, divergence = latent_terms(obs, step, model.variant, weights)
    loss = (weights.latent * latent + weights.reward * terms["reward"]
            + weights.collision * terms["collision"] + weights.cont * terms["cont"])
    if model.variant != "value_equivalent":  # value_equivalent reconstructs nothing
        loss = loss + weights.forecast * terms["forecast"] + weights.presence * terms["presence"]
    metrics = {
        "loss": loss, "forecast_nll": terms["forecast"], "presence_bce": terms["presence"],
        "latent": latent, "kl": divergence, "reward_mse": terms["reward"],
        "collision_bce": terms["collision"], "cont_bce": terms["cont"],
        "ade_open_loop": open_ade,
    }
    return loss, {k: v.detach().float() for k, v in metrics.items()}
