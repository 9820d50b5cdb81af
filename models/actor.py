"""Actor and critic in latent space, trained on imagined rollouts (Dreamer's route).

The world model (frozen) imagines from real start states: the latent state [h_0, z_0] of a
recorded history. The actor pi(a | s) draws each meta-action, the model steps its prior
(one ensemble member per rollout, sampled latents), and its heads say what each step
earned: the reward head minus `collision_penalty` times the imagined collision
probability (`model.risk`), and the probability of going on, min(continue, 1 - collision)
(a collision ends the episode, as in the planner). The critic V(s) regresses the
lambda-returns of those rollouts, bootstrapped by a slow (EMA) copy of itself; the actor
follows REINFORCE with the advantage (R - V) divided by max(1, S), S a running estimate of
the returns' 5-95% range (DreamerV3's return normalisation), plus an entropy bonus. Steps
after an imagined episode end count with the probability of having reached them.
Optionally the actor also imitates the planner's decisions in the real start states
(`imitation`): the search in the same model is its policy target, as in MuZero.

Imagination runs without gradients: the world model is only read (its parameters get no
gradient), and the losses see detached latent states.

Shapes: B start states, T imagined steps, Cf = deter + stoch latent width, A actions.
"""

from __future__ import annotations

import copy
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from models.encoder import mlp
from models.risk_sources import survival


class ImaginedRollout(NamedTuple):
    """T imagined steps from B start states."""

    feats: torch.Tensor  # (B, T+1, Cf) latent states s_0..s_T
    actions: torch.Tensor  # (B, T) int64 action taken in s_t
    reward: torch.Tensor  # (B, T) reward of step t, collision penalty included
    collision: torch.Tensor  # (B, T) probability that step t ends in a collision
    cont: torch.Tensor  # (B, T) probability of going on after step t


def lambda_returns(reward: torch.Tensor, cont: torch.Tensor, value: torch.Tensor,
                   gamma: float, lam: float) -> torch.Tensor:
    """R_t = r_t + gamma c_t ((1 - lam) V(s_{t+1}) + lam R_{t+1}), R_T = V(s_T).

    reward, cont (B, T); value (B, T+1) of states s_0..s_T -> returns (B, T)."""
    returns, running = [], value[:, -1]
    for t in reversed(range(reward.shape[1])):
        running = reward[:, t] + gamma * cont[:, t] * ((1 - lam) * value[:, t + 1]
                                                       + lam * running)
        returns.append(running)
    return torch.stack(returns[::-1], dim=1)


class Actor(nn.Module):
    """pi(a | s): action logits (..., A) from latent states (..., Cf)."""

    def __init__(self, feat_dim: int, n_actions: int, hidden_dim: int):
        super().__init__()
        self.net = mlp(feat_dim, hidden_dim, n_actions)
        nn.init.zeros_(self.net[-1].weight)  # start uniform over the actions
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.net(feats)


class Critic(nn.Module):
    """V(s): the expected lambda-return (...,) of latent states (..., Cf)."""

    def __init__(self, feat_dim: int, hidden_dim: int):
        super().__init__()
        self.net = mlp(feat_dim, hidden_dim, 1)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.net(feats)[..., 0]


class ActorCritic(nn.Module):
    """The actor, the critic, its slow copy and the running return range.

    gamma discount per decision, lam lambda of the returns, entropy weight of the entropy
    bonus, collision_penalty reward lost per expected collision, slow_rate EMA rate of the
    slow critic, scale_rate EMA rate of the return range.
    """

    def __init__(self, feat_dim: int, n_actions: int = 5, hidden_dim: int = 64,
                 gamma: float = 0.9, lam: float = 0.95, entropy: float = 1e-3,
                 collision_penalty: float = 1.0, slow_rate: float = 0.02,
                 scale_rate: float = 0.01):
        super().__init__()
        if not (0 <= gamma <= 1 and 0 <= lam <= 1):
            raise ValueError(f"gamma and lam must lie in [0, 1], got {gamma}, {lam}")
        self.feat_dim, self.n_actions = feat_dim, n_actions
        self.gamma, self.lam, self.entropy = gamma, lam, entropy
        self.collision_penalty = collision_penalty
        self.slow_rate, self.scale_rate = slow_rate, scale_rate
        self.actor = Actor(feat_dim, n_actions, hidden_dim)
        self.critic = Critic(feat_dim, hidden_dim)
        self.slow_critic = copy.deepcopy(self.critic).requires_grad_(False)
        self.register_buffer("return_range", torch.zeros(()))

    @torch.no_grad()
    def imagine(self, model: nn.Module, ctx, start: torch.Tensor, horizon: int,
                policy: str | int = "actor") -> ImaginedRollout:
        """Roll `model` (a WorldModel) `horizon` steps from start states (B, Cf) of the
        encoded histories `ctx`, actions drawn from the actor (`policy` "actor"), uniformly
        ("random"), or always the one action id `policy`. Draws from torch's global
        generator."""
        b = start.shape[0]
        members = torch.randint(model.ensemble, (b,), device=start.device)
        feats, actions = [start], []
        for _ in range(horizon):
            if policy == "random":
                action = torch.randint(self.n_actions, (b,), device=start.device)
            elif isinstance(policy, int):
                action = torch.full((b,), policy, dtype=torch.int64, device=start.device)
            else:
                action = torch.distributions.Categorical(logits=self.actor(feats[-1])).sample()
            noise = torch.randn(b, model.stoch_dim, device=start.device, dtype=start.dtype)
            feats.append(model.step(feats[-1], action, noise, members))
            actions.append(action)
        feats = torch.stack(feats, dim=1)  # (B, T+1, Cf)
        reward, collision, cont = model.outcomes(feats[:, 1:], ctx)  # (B, T) each
        return ImaginedRollout(feats, torch.stack(actions, dim=1),
                               reward - self.collision_penalty * collision, collision,
                               torch.minimum(cont, 1 - collision))

    def losses(self, rollout: ImaginedRollout) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Actor + critic loss of one imagined batch and its figures; updates the running
        return range (call once per optimiser step)."""
        feats = rollout.feats.detach()
        with torch.no_grad():
            slow = self.slow_critic(feats)  # (B, T+1)
            returns = lambda_returns(rollout.reward, rollout.cont, slow, self.gamma, self.lam)
            weights = survival(rollout.collision, rollout.cont)  # (B, T) P(reaching step t)
            self.update_range(returns)
            scale = torch.clamp(self.return_range, min=1.0)
        value = self.critic(feats[:, :-1])  # (B, T)
        critic_loss = (weights * 0.5 * (value - returns) ** 2).mean()
        logits = self.actor(feats[:, :-1])  # (B, T, A)
        log_probs = F.log_softmax(logits, dim=-1)
        chosen = log_probs.gather(-1, rollout.actions[..., None])[..., 0]  # (B, T)
        entropy = -(log_probs.exp() * log_probs).sum(dim=-1)  # (B, T)
        advantage = ((returns - value) / scale).detach()
        actor_loss = -(weights * (chosen * advantage + self.entropy * entropy)).mean()
        figures = {"actor_loss": actor_loss.detach(), "critic_loss": critic_loss.detach(),
                   "entropy": entropy.mean().detach(), "return_range": scale,
                   "imagined_return": returns[:, 0].mean(), "value": value.mean().detach(),
                   "imagined_collision": 1 - torch.prod(1 - rollout.collision, dim=1).mean()}
        return actor_loss + critic_loss, figures

    def imitation(self, start: torch.Tensor, target: torch.Tensor
                  ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Cross-entropy of pi(. | s_0) against the search's decisions `target` (B,) in the
        start states (B, Cf) (MuZero's policy target: the planner's choice in its own
        imagination), and how often the actor's most probable action is that choice."""
        logits = self.actor(start.detach())
        loss = F.cross_entropy(logits, target)
        agreement = (logits.argmax(dim=-1) == target).float().mean()
        return loss, {"search_loss": loss.detach(), "search_agreement": agreement}

    @torch.no_grad()
    def rates(self, rollout: ImaginedRollout) -> dict[str, float]:
        """Per imagined step, weighted by the probability of reaching it: the reward
        (collision penalty left out) and the collision probability; and the discounted
        return from the start states (what the real simulator's figures compare with)."""
        weights = survival(rollout.collision, rollout.cont)  # (B, T) P(reaching step t)
        reward = rollout.reward + self.collision_penalty * rollout.collision
        discount = torch.pow(self.gamma, torch.arange(reward.shape[1], dtype=reward.dtype,
                                                      device=reward.device))
        total = weights.sum()
        return {"reward_per_step": float((weights * reward).sum() / total),
                "collision_per_step": float((weights * rollout.collision).sum() / total),
                "discounted_return": float((discount * weights * reward).sum(1).mean())}

    @torch.no_grad()
    def update_range(self, returns: torch.Tensor) -> None:
        """EMA of the returns' 5-95% percentile range (the first batch sets it)."""
        low, high = torch.quantile(returns.flatten().float(),
                                   returns.new_tensor([0.05, 0.95]).float())
        spread = (high - low).to(self.return_range.dtype)
        first = self.return_range == 0
        rate = torch.where(first, torch.ones_like(spread), torch.full_like(spread,
                                                                           self.scale_rate))
        self.return_range.copy_(self.return_range + rate * (spread - self.return_range))

    @torch.no_grad()
    def update_slow_critic(self) -> None:
        """Move the slow critic `slow_rate` of the way to the critic (after each step)."""
        for slow, fast in zip(self.slow_critic.parameters(), self.critic.parameters(),
                              strict=True):
            slow.lerp_(fast, self.slow_rate)


class ActorPolicy(nn.Module):
    """The exportable actor: histories in, action probabilities out.

    forward(hist (B, H, N, D) float physical, hist_mask (B, H, N) float 1.0/0.0) ->
    probs (B, A): the actor's distribution in the encoded latent state [h_0, z_0]."""

    def __init__(self, world_model: nn.Module, actor: Actor):
        super().__init__()
        self.world_model, self.actor = world_model, actor

    def forward(self, hist: torch.Tensor, hist_mask: torch.Tensor) -> torch.Tensor:
        _, start = self.world_model.start(hist, hist_mask > 0.5)
        return torch.softmax(self.actor(start), dim=-1)
