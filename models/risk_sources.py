"""Risk sources: where the planner's collision probability comes from.

One contract (`RiskSource`): given the world model's imagination of K candidates with S
samples each and the observed scene, the probability of a collision within the horizon
per candidate and sample. Three implementations:

- `ImaginedRisk`: the world model's own per-step risk (`model.risk`: forecast overlap, the
  collision head or both) and continuation, composed over the horizon;
- `CriticRisk`: a risk critic (models/critic.py) learned from the true simulator, a
  correction of the world model's or the replica's per-step risk;
- `ReplicaRisk`: the traffic replica (models/traffic.py), highway-env's drivers rolled
  out in tensors (the same for every sample).

Only the world model's own risk also weights the planner's return by its survival: a
critic's or the replica's risk enters the decision once, through the risk budget and
lambda, and the return is then the reward earned if the maneuver does not end the
episode. The sources hold no Python-side branching on tensors: they trace into the
exported planner graph.
"""

from __future__ import annotations

import abc
from typing import ClassVar

import torch
from torch import nn

from models.critic import CriticEnsemble, RiskCritic, event_probability, imagined_logits
from models.traffic import TrafficReplica
from models.world_model import Imagination

__all__ = ["CriticRisk", "ImaginedRisk", "ReplicaRisk", "RiskSource", "alive_after",
           "collision_within_horizon", "cumulative_product", "survival"]


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


class RiskSource(nn.Module, abc.ABC):
    """The planner's collision probability: the one contract every risk source keeps.

    forward(out, hist, hist_mask, candidates) -> (B, K, S') the probability of a collision
    within the horizon for each candidate and imagined sample, in [0, 1]; S' = S, or 1 for
    a source that does not depend on the sample (the planner averages over that axis).

    out: the world model's `Imagination` of the scene under the candidates (B batch, K
    candidates, S samples, F steps, N vehicles); hist (B, H, N, D) the observed history,
    physical; hist_mask (B, H, N) bool, the slots observed (the planner passes
    `hist_mask > 0.5`); candidates (B, K, F) int64 meta-action ids.

    weights_return: whether the planner weights its return (and the value after the
    horizon) by the imagination's survival (`out.collision`, `out.cont`). True only for
    the world model's own risk; any other source's risk enters the decision once, through
    the risk budget and lambda, and the return counts no risk.
    """

    weights_return: ClassVar[bool] = False

    @abc.abstractmethod
    def forward(self, out: Imagination, hist: torch.Tensor, hist_mask: torch.Tensor,
                candidates: torch.Tensor) -> torch.Tensor:
        """(B, K, S') P(a collision within the horizon); see the class docstring."""


class ImaginedRisk(RiskSource):
    """The world model's own risk: its per-step collision probability and continuation
    (`out.collision`, `out.cont`, (B, K, S, F)) composed by `collision_within_horizon`."""

    weights_return: ClassVar[bool] = True

    def forward(self, out: Imagination, hist: torch.Tensor, hist_mask: torch.Tensor,
                candidates: torch.Tensor) -> torch.Tensor:
        return collision_within_horizon(out.collision, out.cont)  # (B, K, S)


class CriticRisk(RiskSource):
    """A risk critic's probability (models/critic.py): its hazard logits (B, K, S, F) over
    the imagination (`imagined_logits`, the members' mean for a CriticEnsemble) composed by
    `event_probability`. critic: a RiskCritic or CriticEnsemble, reading the lane context
    and the replica prior from hist, hist_mask and candidates where it was built to."""

    def __init__(self, critic: RiskCritic | CriticEnsemble):
        super().__init__()
        if not isinstance(critic, RiskCritic | CriticEnsemble):
            raise TypeError(f"CriticRisk wraps a RiskCritic or CriticEnsemble "
                            f"(models/critic.py), got {type(critic).__name__}")
        self.critic = critic

    def forward(self, out: Imagination, hist: torch.Tensor, hist_mask: torch.Tensor,
                candidates: torch.Tensor) -> torch.Tensor:
        logits = imagined_logits(self.critic, out, hist, hist_mask, candidates)  # (B, K, S, F)
        return event_probability(logits)  # (B, K, S)


class ReplicaRisk(RiskSource):
    """The traffic replica's probability (models/traffic.py): 1 - prod_t (1 - hazard_t) of
    its per-step event probability (B, K, F + tail_steps), the same for every sample
    (S' = 1). replica: a TrafficReplica."""

    def __init__(self, replica: TrafficReplica):
        super().__init__()
        if not isinstance(replica, TrafficReplica):
            raise TypeError(f"ReplicaRisk wraps a TrafficReplica (models/traffic.py), got "
                            f"{type(replica).__name__}")
        self.replica = replica

    def forward(self, out: Imagination, hist: torch.Tensor, hist_mask: torch.Tensor,
                candidates: torch.Tensor) -> torch.Tensor:
        hazard = self.replica(hist, hist_mask, candidates)  # (B, K, F + tail_steps)
        return (1.0 - torch.prod(1.0 - hazard, dim=-1))[..., None]  # (B, K, 1)
