"""The actor and critic in latent space (models/actor.py)."""

import numpy as np
import pytest
import torch
from torch import nn

from models.actor import ActorCritic, ActorPolicy, lambda_returns
from models.risk_sources import survival
from models.world_model import WorldModel


def test_lambda_returns_match_a_hand_computed_case():
    reward = torch.tensor([[1.0, 2.0]])
    cont = torch.tensor([[0.5, 1.0]])
    value = torch.tensor([[0.0, 4.0, 8.0]])
    gamma, lam = 0.9, 0.5
    # R_1 = 2 + 0.9 * 1.0 * (0.5 * 8 + 0.5 * 8) = 9.2
    # R_0 = 1 + 0.9 * 0.5 * (0.5 * 4 + 0.5 * 9.2) = 3.97
    returns = lambda_returns(reward, cont, value, gamma, lam)
    assert torch.allclose(returns, torch.tensor([[3.97, 9.2]]))


def test_lambda_one_is_the_discounted_sum_and_lambda_zero_one_step_bootstrap():
    reward, cont = torch.rand(3, 4), torch.rand(3, 4)
    value = torch.rand(3, 5)
    full = lambda_returns(reward, cont, value, 0.8, 1.0)
    running, expected = value[:, -1], []
    for t in reversed(range(4)):
        running = reward[:, t] + 0.8 * cont[:, t] * running
        expected.append(running)
    assert torch.allclose(full, torch.stack(expected[::-1], dim=1))
    one_step = lambda_returns(reward, cont, value, 0.8, 0.0)
    assert torch.allclose(one_step, reward + 0.8 * cont * value[:, 1:])


def test_the_losses_weigh_each_step_by_the_probability_of_reaching_it():
    cont = torch.tensor([[0.5, 0.5, 1.0], [1.0, 0.0, 1.0]])
    assert torch.allclose(survival(torch.zeros_like(cont), cont),
                          torch.tensor([[1.0, 0.5, 0.25], [1.0, 1.0, 0.0]]))


def small_world_model(**kwargs) -> WorldModel:
    torch.manual_seed(0)
    return WorldModel(obs_dim=7, n_vehicles=4, embed_dim=16, deter_dim=16, stoch_dim=4,
                      hidden_dim=16, ensemble=2, heads=2, action_dim=4, slot_dim=8,
                      **kwargs).eval()


def histories(b: int, h: int = 3, n: int = 4):
    generator = torch.Generator().manual_seed(1)
    hist = torch.randn(b, h, n, 7, generator=generator)
    return hist, torch.ones(b, h, n, dtype=torch.bool)


@pytest.mark.parametrize(("b", "horizon"), [(1, 1), (5, 3), (8, 6)])
def test_an_imagined_rollout_has_the_documented_shapes_and_is_seeded(b, horizon):
    model = small_world_model()
    agent = ActorCritic(model.deter_dim + model.stoch_dim, hidden_dim=8)
    ctx, start = model.start(*histories(b))
    torch.manual_seed(3)
    first = agent.imagine(model, ctx, start, horizon)
    torch.manual_seed(3)
    again = agent.imagine(model, ctx, start, horizon)
    assert first.feats.shape == (b, horizon + 1, 20)
    assert first.actions.shape == first.reward.shape == first.cont.shape == (b, horizon)
    assert torch.equal(first.feats[:, 0], start)
    assert all(torch.equal(x, y) for x, y in zip(first, again, strict=True))
    assert ((first.cont >= 0) & (first.cont <= 1 - first.collision + 1e-6)).all()
    braking = agent.imagine(model, ctx, start, horizon, policy=4)
    assert (braking.actions == 4).all()


def test_the_losses_train_actor_and_critic_and_leave_the_world_model_alone():
    model = small_world_model()
    agent = ActorCritic(model.deter_dim + model.stoch_dim, hidden_dim=8)
    ctx, start = model.start(*histories(6))
    loss, figures = agent.losses(agent.imagine(model, ctx, start, 4))
    loss.backward()
    assert all(p.grad is None for p in model.parameters())
    assert all(p.grad is not None for p in agent.critic.parameters())
    assert agent.actor.net[-1].weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in agent.slow_critic.parameters())
    assert {"actor_loss", "critic_loss", "entropy", "imagined_return"} <= set(figures)


def test_the_return_range_starts_at_the_first_batch_then_moves_slowly():
    agent = ActorCritic(4, scale_rate=0.1)
    agent.update_range(torch.linspace(0, 10, 101))
    assert agent.return_range.item() == pytest.approx(9.0)
    agent.update_range(torch.zeros(50))
    assert agent.return_range.item() == pytest.approx(8.1)


def test_the_slow_critic_moves_part_of_the_way_to_the_critic():
    agent = ActorCritic(4, slow_rate=0.25)
    with torch.no_grad():
        for p in agent.critic.parameters():
            p.add_(1.0)
    before = [p.clone() for p in agent.slow_critic.parameters()]
    agent.update_slow_critic()
    for old, slow, fast in zip(before, agent.slow_critic.parameters(),
                               agent.critic.parameters(), strict=True):
        assert torch.allclose(slow, old + 0.25 * (fast - old))


def test_the_exported_policy_is_a_distribution_over_the_actions():
    model = small_world_model()
    agent = ActorCritic(model.deter_dim + model.stoch_dim, hidden_dim=8)
    hist, mask = histories(3)
    probs = ActorPolicy(model, agent.actor)(hist, mask.float())
    assert probs.shape == (3, 5) and torch.allclose(probs.sum(-1), torch.ones(3))


# ---------------------------------------------------------------- learning

class OneLaneScene(nn.Module):
    """A one-lane road as a latent world: state [gap to the leader / 50 m, own speed / 30];
    the leader drives 20 m/s. IDLE keeps the speed, FASTER adds 5 m/s, SLOWER takes 5 off
    (lane changes act as IDLE); reward = speed / 30 per step; the gap closing to 0 is a
    collision. Deterministic, so it is also the "real environment" the actor drives."""

    ensemble, stoch_dim, n_actions = 1, 1, 5

    def start(self, gaps: torch.Tensor, speeds: torch.Tensor):
        return None, torch.stack([gaps / 50, speeds / 30], dim=-1)

    def step(self, feat, action, noise, members):
        speed = feat[:, 1] * 30 + 5.0 * (action == 3) - 5.0 * (action == 4)
        speed = speed.clamp(15.0, 35.0)
        gap = feat[:, 0] * 50 + (20.0 - speed)
        return torch.stack([gap / 50, speed / 30], dim=-1)

    def outcomes(self, feats, ctx):
        gap, speed = feats[..., 0] * 50, feats[..., 1] * 30
        collision = (gap <= 0).float()
        return speed / 30, collision, torch.ones_like(collision)


def real_return(agent, world, gaps, speeds, steps: int, policy: str, seed: int) -> float:
    """Undiscounted return of `steps` decisions driven in the one-lane world; a collision
    ends the episode."""
    rng = np.random.default_rng(seed)
    _, feat = world.start(gaps, speeds)
    total, alive = torch.zeros(len(gaps)), torch.ones(len(gaps))
    for _ in range(steps):
        if policy == "random":
            action = torch.from_numpy(rng.integers(0, 5, len(gaps)))
        else:
            action = agent.actor(feat).argmax(-1)
        feat = world.step(feat, action, None, None)
        reward, collision, _ = world.outcomes(feat, None)
        alive = alive * (1 - collision)
        total = total + alive * reward
    return float(total.mean())


def test_the_actor_learns_a_one_lane_scene_better_than_random():
    torch.manual_seed(0)
    world = OneLaneScene()
    agent = ActorCritic(2, hidden_dim=32, gamma=0.9, entropy=1e-3, collision_penalty=1.0)
    optimiser = torch.optim.Adam([*agent.actor.parameters(), *agent.critic.parameters()],
                                 lr=3e-3)
    for _ in range(300):
        gaps, speeds = torch.rand(128) * 40 + 5, torch.rand(128) * 10 + 20
        ctx, start = world.start(gaps, speeds)
        loss, _ = agent.losses(agent.imagine(world, ctx, start, 8))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        agent.update_slow_critic()
    gaps, speeds = torch.rand(256) * 40 + 5, torch.rand(256) * 10 + 20
    ctx, start = world.start(gaps, speeds)
    torch.manual_seed(1)
    learned = agent.rates(agent.imagine(world, ctx, start, 8))
    torch.manual_seed(1)
    random = agent.rates(agent.imagine(world, ctx, start, 8, policy="random"))
    assert learned["discounted_return"] > random["discounted_return"] + 0.3
    assert learned["collision_per_step"] < random["collision_per_step"]
    driven = real_return(agent, world, gaps, speeds, 20, "actor", 0)
    assert driven > real_return(agent, world, gaps, speeds, 20, "random", 0) + 1.0


def test_imitation_teaches_the_actor_the_searchs_decisions_and_nothing_else():
    """The planner's stand-in brakes when the gap is under 20 m and speeds up otherwise."""
    torch.manual_seed(0)
    world = OneLaneScene()
    agent = ActorCritic(2, hidden_dim=32)
    optimiser = torch.optim.Adam(agent.actor.parameters(), lr=3e-3)

    def decisions(gaps):
        return torch.where(gaps < 20, 4, 3)

    for _ in range(200):
        gaps, speeds = torch.rand(128) * 40 + 5, torch.rand(128) * 10 + 20
        loss, figures = agent.imitation(world.start(gaps, speeds)[1], decisions(gaps))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    assert all(p.grad is None for p in agent.critic.parameters())
    gaps, speeds = torch.rand(256) * 40 + 5, torch.rand(256) * 10 + 20
    _, figures = agent.imitation(world.start(gaps, speeds)[1], decisions(gaps))
    assert figures["search_agreement"] > 0.9
