"""The exportable planner: scores K candidate action sequences with imagined rollouts.

`Planner.forward` is tensors in, tensors out (no dicts, no Python-side sampling), so it
exports to ONNX with a dynamic K axis. Per candidate it returns the probability of a
collision within the horizon, the expected discounted return, the ensemble disagreement
and the mean forecast positions of every slot.
"""

from __future__ import annotations

import torch
from torch import nn

from models.candidates import enumerate_candidates, prune_candidates
from models.critic import RiskCritic, event_probability, imagined_logits
from models.risk import extrapolated_risk
from models.traffic import TrafficReplica
from models.world_model import Imagination, WorldModel

__all__ = ["Planner", "collision_within_horizon", "discounted_return", "enumerate_candidates",
           "prune_candidates", "terminal_value"]


def cumulative_product(x: torch.Tensor) -> torch.Tensor:
    """cumprod over the last axis (..., F), unrolled (ONNX has no CumProd operator)."""
    if x.shape[-1] == 0:
        return x
    running, out = torch.ones_like(x[..., 0]), []
    for t in range(x.shape[-1]):
        running = running * x[..., t]
        out.append(running)
    return torch.stack(out, dim=-1)


def alive_after(collision: torch.Tensor, cont: torch.Tensor) -> torch.Tensor:
    """P(episode still running at the end of each step) (..., F) from per-step probs.

    Uses min(cont, 1 - collision) per step: a collision always ends the episode.
    """
    return cumulative_product(torch.minimum(cont, 1 - collision))


def survival(collision: torch.Tensor, cont: torch.Tensor) -> torch.Tensor:
    """P(episode still running at the start of each step) (..., F)."""
    after = alive_after(collision, cont)  # (..., F)
    return torch.cat([torch.ones_like(after[..., :1]), after[..., :-1]], dim=-1)


def collision_within_horizon(collision: torch.Tensor, cont: torch.Tensor) -> torch.Tensor:
    """P(collision in steps 1..F) (...) = sum_t alive_t * p_t, always within [0, 1].

    collision, cont: (..., F) per-step probabilities. With cont = 1 - p this is
    1 - prod_t (1 - p_t); a predicted termination without collision stops the count.
    """
    return (survival(collision, cont) * collision).sum(dim=-1).clamp(0.0, 1.0)


def discounted_return(reward: torch.Tensor, cont: torch.Tensor, gamma: float) -> torch.Tensor:
    """sum_t gamma^t * P(alive at the start of step t) * r_t over (..., F) -> (...)."""
    alive = torch.cat([torch.ones_like(cont[..., :1]), cumulative_product(cont[..., :-1])],
                      dim=-1)
    steps = torch.arange(reward.shape[-1], dtype=reward.dtype, device=reward.device)
    return (torch.pow(gamma, steps) * alive * reward).sum(dim=-1)


def terminal_value(reward: torch.Tensor, collision: torch.Tensor, cont: torch.Tensor,
                   gamma: float) -> torch.Tensor:
    """Value of driving on after the horizon (...): gamma^F r_F / (1 - gamma), the last
    step's predicted reward kept forever, times P(no collision or end in steps 1..F).

    Without it a crash costs only the few steps of reward inside the horizon; with it, it
    costs the future it ends. reward, collision, cont: (..., F); gamma < 1.
    """
    horizon = reward.shape[-1]
    survived = alive_after(collision, cont)[..., -1]
    return gamma ** horizon / (1.0 - gamma) * reward[..., -1] * survived


class Planner(nn.Module):
    """Wraps a WorldModel for batched candidate scoring of one scene.

    bootstrap: add `terminal_value` to each candidate's expected return (needs gamma < 1);
    lookahead: with bootstrap, that value also needs surviving this many more steps of
    constant-velocity extrapolation (models/risk.py `extrapolated_risk`); 0: none;
    lookahead_min_speed: in that extrapolation the ego brakes for a slower leader down to
    this speed (m/s; None: it keeps its own).
    critic: a RiskCritic (models/critic.py) whose probability replaces the world model's
    risk. The return then counts no risk (the reward earned if the maneuver does not end
    the episode): the risk enters the decision once, through the budget and lambda.
    replica: a TrafficReplica (models/traffic.py) whose probability replaces the world
    model's risk the same way (not with a critic: a critic may read the replica itself).
    """

    def __init__(self, world_model: WorldModel, gamma: float, bootstrap: bool = False,
                 lookahead: int = 0, critic: RiskCritic | None = None,
                 lookahead_min_speed: float | None = None,
                 replica: TrafficReplica | None = None):
        super().__init__()
        if not 0.0 <= gamma <= 1.0 or (bootstrap and gamma >= 1.0):
            raise ValueError(f"gamma must lie in [0, 1] (below 1 with bootstrap), got {gamma}")
        if lookahead < 0:
            raise ValueError(f"lookahead must be >= 0, got {lookahead}")
        if critic is not None and replica is not None:
            raise ValueError("a planner takes its risk from a critic or from the replica, "
                             "not both")
        self.world_model = world_model
        self.gamma, self.bootstrap, self.lookahead = float(gamma), bool(bootstrap), int(lookahead)
        self.critic, self.replica = critic, replica
        self.lookahead_min_speed = lookahead_min_speed

    def forward(self, hist: torch.Tensor, hist_mask: torch.Tensor, candidates: torch.Tensor,
                noise: torch.Tensor):
        """Score K candidates with S samples each.

        hist (1, H, N, D) float physical, hist_mask (1, H, N) float 1.0/0.0,
        candidates (K, F) int64, noise (K, S, F, Z) float standard normal ->
        collision_prob (K,), expected_return (K,), uncertainty (K,), positions (K, F, N, 2).
        """
        if hist.dim() != 4 or hist.shape[0] != 1:
            raise ValueError(f"hist must have shape (1, H, N, D), got {tuple(hist.shape)}")
        present = hist_mask > 0.5
        out = self.world_model.imagine(hist, present, candidates[None], noise[None])
        step_risk, cont = out.collision[0], out.cont[0]  # (K, S, F)
        if self.critic is not None:
            collision = event_probability(imagined_logits(self.critic, out, hist, present,
                                                            candidates[None])[0]).mean(dim=1)
        elif self.replica is not None:
            hazard = self.replica(hist, hist_mask, candidates[None])[0]  # (K, F)
            collision = 1.0 - torch.prod(1.0 - hazard, dim=-1)
        else:
            collision = collision_within_horizon(step_risk, cont).mean(dim=1)
        if self.critic is not None or self.replica is not None:
            step_risk, cont = torch.zeros_like(step_risk), torch.ones_like(cont)
        expected = discounted_return(out.reward[0], cont, self.gamma)  # (K, S)
        if self.bootstrap:
            value = terminal_value(out.reward[0], step_risk, cont, self.gamma)
            expected = expected + value * self.beyond_survival(out)  # (K, S)
        expected = expected.mean(dim=1)
        uncertainty = out.uncertainty[0].mean(dim=-1)  # (K,)
        positions = out.states_mean[0].mean(dim=1)[..., :2]  # (K, F, N, 2)
        return collision, expected, uncertainty, positions

    def beyond_survival(self, out: Imagination) -> torch.Tensor | float:
        """P(no overlap in `lookahead` extrapolated steps after the horizon) (K, S), or 1."""
        if not self.lookahead:
            return 1.0
        model = self.world_model
        risk = extrapolated_risk(out.states_mean[0, :, :, -1], out.states_std[0, :, :, -1, :, :2],
                                 out.presence[0, :, :, -1], model.dt, self.lookahead,
                                 model.vehicle_length, model.vehicle_width,
                                 self.lookahead_min_speed)  # (K, S, steps)
        return torch.prod(1.0 - risk, dim=-1)
