"""Loss of the interaction world model: `interaction_loss(model, batch, weights)`.

Terms (masked means, as in models/losses.py):
- the RSSM's head terms (forecast NLL at each step's end, presence, reward, collision,
  continue) on the posterior rollout plus `open_loop` x the same on the prior rollout;
  both rollouts run on their own predicted states, so these are multi-step losses;
- forecast NLL at every sub-step, against the simulation frames inside each step when the
  batch carries them (`future_frames`, `future_frames_mask`) and their count is a multiple
  of the model's sub-steps; weighted like the step-end forecast;
- the per-vehicle KL(q || p_e) with free bits and balancing, averaged over the E prior
  members, masked to the vehicles present at t0 and the steps inside the episode.
"""

from __future__ import annotations

from typing import Any

import torch

from models.interaction import InteractionObservation, InteractionWorldModel
from models.loss_weights import LossWeights
from models.losses import beta_nll, gaussian_kl, head_terms, masked_mean
from models.world_model import batch_field


def sub_step_targets(batch: Any, steps: int, substeps: int):
    """(frames (B, F*J, N, 4), mask (B, F*J, N)) at the model's sub-step ends, or None when
    the batch carries no frames or their count per step is not a multiple of J."""
    frames = batch.get("future_frames") if hasattr(batch, "get") else None
    if frames is None or frames.shape[1] % steps:
        return None
    per_step = frames.shape[1] // steps
    if per_step % substeps:
        return None
    every = per_step // substeps
    index = torch.arange(every - 1, frames.shape[1], every, device=frames.device)
    mask = batch_field(batch, "future_frames_mask").bool().index_select(1, index)
    step = batch_field(batch, "step_mask").bool()  # (B, F)
    step = step[:, :, None].expand(-1, -1, substeps).reshape(step.shape[0], -1)  # (B, F*J)
    return frames.index_select(1, index), mask & step[..., None]


def sub_step_nll(frames: tuple[torch.Tensor, torch.Tensor], targets, present_t0: torch.Tensor,
                 beta: float) -> torch.Tensor:
    """Masked mean NLL of sub-step means/stds (B, F*J, N, 4) against targets; 0 if None."""
    if targets is None:
        return frames[0].new_zeros(())
    values, mask = targets
    nll = beta_nll(frames[0], frames[1], values, beta).sum(-1)  # (B, F*J, N)
    return masked_mean(nll, mask & present_t0[:, None])


def vehicle_kl(obs: InteractionObservation, mask: torch.Tensor,
               weights: LossWeights) -> tuple[torch.Tensor, torch.Tensor]:
    """(balanced KL loss, raw KL) per present vehicle and step; mask (B, F, N)."""
    q_mean, q_std = obs.post_mean[None], obs.post_std[None]  # (1, B, F, N, Zv)
    p_mean, p_std = obs.prior_mean, obs.prior_std  # (E, B, F, N, Zv)
    dyn = gaussian_kl(q_mean.detach(), q_std.detach(), p_mean, p_std)  # (E, B, F, N)
    rep = gaussian_kl(q_mean, q_std, p_mean.detach(), p_std.detach())
    raw = dyn.detach().mean(0)
    dyn, rep = dyn.clamp(min=weights.free_bits), rep.clamp(min=weights.free_bits)
    balanced = weights.kl_balance * dyn + (1 - weights.kl_balance) * rep
    return masked_mean(balanced.mean(0), mask), masked_mean(raw, mask)


def interaction_loss(model: InteractionWorldModel, batch: Any,
                     weights: LossWeights | None = None) -> tuple[torch.Tensor, dict]:
    """Total loss (scalar) and detached metrics (name -> 0-d tensor), named as
    `world_model_loss` names them, plus `forecast_frames_nll`."""
    weights = weights or LossWeights()
    obs = model.observe(batch)
    post, open_loop = (head_terms(h, batch, weights) for h in (obs.posterior, obs.open_loop))
    terms = {k: post[k] + weights.open_loop * open_loop[k] for k in post}
    step = batch_field(batch, "step_mask").bool()
    present_t0 = batch_field(batch, "hist_mask").bool()[:, -1]  # (B, N)
    targets = sub_step_targets(batch, step.shape[1], model.substeps)
    frames = (sub_step_nll(obs.post_frames, targets, present_t0, weights.nll_beta)
              + weights.open_loop * sub_step_nll(obs.open_frames, targets, present_t0,
                                                 weights.nll_beta))
    latent, divergence = vehicle_kl(obs, step[..., None] & present_t0[:, None], weights)
    loss = (weights.latent * latent + weights.forecast * (terms["forecast"] + frames)
            + weights.presence * terms["presence"] + weights.reward * terms["reward"]
            + weights.collision * terms["collision"] + weights.cont * terms["cont"])
    metrics = {
        "loss": loss, "forecast_nll": terms["forecast"], "forecast_frames_nll": frames,
        "presence_bce": terms["presence"], "latent": latent, "kl": divergence,
        "reward_mse": terms["reward"], "collision_bce": terms["collision"],
        "cont_bce": terms["cont"], "ade_open_loop": open_loop["ade"],
    }
    return loss, {k: v.detach().float() for k, v in metrics.items()}
