"""The exportable planner: scores K candidate action sequences with imagined rollouts.

`Planner.forward` is tensors in, tensors out (no dicts, no Python-side sampling), so it
exports to ONNX with a dynamic K axis. Per candidate it returns the probability of a
collision within the horizon (from one risk source, models/risk_sources.py), the expected
discounted return, the ensemble disagreement and the mean forecast positions of every slot.
"""

from __future__ import annotations

import torch
from torch import nn

from models.candidates import enumerate_candidates, prune_candidates
from models.risk import extrapolated_risk
from models.risk_sources import (
    RiskSource,
    alive_after,
    collision_within_horizon,
    cumulative_product,
)
from models.world_model import Imagination, WorldModel

__all__ = ["Planner", "collision_within_horizon", "discounted_return", "enumerate_candidates",
           "prune_candidates", "terminal_value"]


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

    risk: where the collision probability comes from (models/risk_sources.py):
    `ImaginedRisk()` the world model's own, `CriticRisk(critic)` a risk critic's,
    `ReplicaRisk(replica)` the traffic replica's. Unless the source says the return is
    weighted by survival (`risk.weights_return`, the world model's own risk only), the
    return counts no risk (the reward earned if the maneuver does not end the episode):
    the risk enters the decision once, through the budget and lambda.
    bootstrap: add `terminal_value` to each candidate's expected return (needs gamma < 1);
    lookahead: with bootstrap, that value also needs surviving this many more steps of
    constant-velocity extrapolation (models/risk.py `extrapolated_risk`); 0: none;
    lookahead_min_speed: in that extrapolation the ego brakes for a slower leader down to
    this speed (m/s; None: it keeps its own).
    """

    def __init__(self, world_model: WorldModel, risk: RiskSource, gamma: float,
                 bootstrap: bool = False, lookahead: int = 0,
                 lookahead_min_speed: float | None = None):
        super().__init__()
        if not isinstance(risk, RiskSource):
            raise TypeError(f"the planner's risk must be a RiskSource (models/risk_sources.py: "
                            f"ImaginedRisk(), CriticRisk(critic) or ReplicaRisk(replica)), got "
                            f"{type(risk).__name__}")
        if not 0.0 <= gamma <= 1.0 or (bootstrap and gamma >= 1.0):
            raise ValueError(f"gamma must lie in [0, 1] (below 1 with bootstrap), got {gamma}")
        if lookahead < 0:
            raise ValueError(f"lookahead must be >= 0, got {lookahead}")
        self.world_model, self.risk = world_model, risk
        self.gamma, self.bootstrap, self.lookahead = float(gamma), bool(bootstrap), int(lookahead)
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
        collision = self.risk(out, hist, present, candidates[None])[0].mean(dim=1)  # (K,)
        step_risk, cont = out.collision[0], out.cont[0]  # (K, S, F)
        if not self.risk.weights_return:  # a property of the source, not of a tensor
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
