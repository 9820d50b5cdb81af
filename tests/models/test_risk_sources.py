"""Risk sources (models/risk_sources.py): the one contract, its three implementations, and
the planner that takes exactly one of them, equal to the planner that branched on optional
arguments."""

from __future__ import annotations

import pytest
import torch

from models.critic import event_probability, imagined_logits, make_critic
from models.planner import Planner, collision_within_horizon, discounted_return, terminal_value
from models.risk_sources import CriticRisk, ImaginedRisk, ReplicaRisk, RiskSource
from models.traffic import TrafficReplica
from pipeline.planner.onnx_export import check_parity, export_planner
from tests.models.test_world_model import make_batch, tiny_model

N_VEHICLES = 5


def old_planner_forward(planner: Planner, critic, replica, hist, hist_mask, candidates, noise):
    """A copy of Planner.forward before risk sources: it branched on the optional `critic`
    and `replica` arguments (the world model's own risk when neither was given)."""
    present = hist_mask > 0.5
    out = planner.world_model.imagine(hist, present, candidates[None], noise[None])
    step_risk, cont = out.collision[0], out.cont[0]  # (K, S, F)
    if critic is not None:
        collision = event_probability(imagined_logits(critic, out, hist, present,
                                                        candidates[None])[0]).mean(dim=1)
    elif replica is not None:
        hazard = replica(hist, hist_mask, candidates[None])[0]  # (K, F)
        collision = 1.0 - torch.prod(1.0 - hazard, dim=-1)
    else:
        collision = collision_within_horizon(step_risk, cont).mean(dim=1)
    if critic is not None or replica is not None:
        step_risk, cont = torch.zeros_like(step_risk), torch.ones_like(cont)
    expected = discounted_return(out.reward[0], cont, planner.gamma)  # (K, S)
    if planner.bootstrap:
        value = terminal_value(out.reward[0], step_risk, cont, planner.gamma)
        expected = expected + value * planner.beyond_survival(out)  # (K, S)
    expected = expected.mean(dim=1)
    uncertainty = out.uncertainty[0].mean(dim=-1)  # (K,)
    positions = out.states_mean[0].mean(dim=1)[..., :2]  # (K, F, N, 2)
    return collision, expected, uncertainty, positions


def shaken_critic(model, members: int = 1, context: bool = False, replica_lanes: int = 0,
                  horizon: int = 3):
    """A critic (or ensemble) whose last layers are moved off zero, so it is not its prior."""
    torch.manual_seed(7)
    critic = make_critic(members, feat_dim=model.deter_dim + model.stoch_dim,
                         n_vehicles=model.n_vehicles, hidden_dim=16, context=context,
                         horizon=horizon, replica_lanes=replica_lanes)
    heads = critic.members if members > 1 else [critic]
    with torch.no_grad():
        for k, head in enumerate(heads):
            head.net[-1].weight.normal_(0.0, 0.5, generator=torch.Generator().manual_seed(k))
            head.net[-1].bias.fill_(-1.0)
    return critic.eval()


SOURCES = ["model", "critic", "critic-ensemble-context", "critic-replica-prior", "replica"]


def source_parts(name: str, model):
    """(the RiskSource, the old planner's critic argument, its replica argument)."""
    if name == "model":
        return ImaginedRisk(), None, None
    if name == "replica":
        replica = TrafficReplica(3, (8.0, 2.5), tail_steps=1)
        return ReplicaRisk(replica), None, replica
    critic = {"critic": lambda: shaken_critic(model),
              "critic-ensemble-context": lambda: shaken_critic(model, 2, context=True),
              "critic-replica-prior": lambda: shaken_critic(model, replica_lanes=3)}[name]()
    return CriticRisk(critic), critic, None


def random_scene(seed: int, k: int, s: int, fractional_mask: bool, stoch_dim: int):
    """hist (1, H, N, D), hist_mask (1, H, N) float, candidates (K, 3), noise (K, S, 3, Z)."""
    generator = torch.Generator().manual_seed(seed)
    batch = make_batch(b=1, n=N_VEHICLES, seed=seed)
    hist = batch["hist"] + 0.1 * torch.randn(batch["hist"].shape, generator=generator)
    mask = batch["hist_mask"].float()
    if fractional_mask:  # values between 0 and 1: every source reads the same `> 0.5`
        mask = mask * torch.rand(mask.shape, generator=generator) * 1.2
        mask[..., 0] = 1.0
    candidates = torch.randint(0, 5, (k, 3), generator=generator)
    noise = torch.randn(k, s, 3, stoch_dim, generator=generator)
    return hist, mask, candidates, noise


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("seed,k,s,bootstrap,lookahead,fractional", [
    (0, 25, 2, True, 0, False), (1, 7, 1, False, 0, True), (2, 40, 3, True, 2, True)])
def test_the_planner_equals_the_old_branching_planner(source, seed, k, s, bootstrap, lookahead,
                                                      fractional):
    model = tiny_model(N_VEHICLES, seed=seed).eval()
    risk, critic, replica = source_parts(source, model)
    planner = Planner(model, risk, gamma=0.9, bootstrap=bootstrap, lookahead=lookahead,
                      lookahead_min_speed=5.0 if lookahead else None).eval()
    args = random_scene(seed, k, s, fractional, model.stoch_dim)
    with torch.no_grad():
        new = planner(*args)
        old = old_planner_forward(planner, critic, replica, *args)
    assert new[0].shape == (k,) and new[3].shape == (k, 3, N_VEHICLES, 2)
    for name, got, want in zip(("collision", "return", "uncertainty", "positions"), new, old,
                               strict=True):
        assert torch.equal(got, want), f"{source}: {name} differs from the old planner"


def test_the_sources_give_different_probabilities():
    """So the equality above compares three formulas, not one."""
    model = tiny_model(N_VEHICLES).eval()
    args = random_scene(3, 25, 2, False, model.stoch_dim)
    with torch.no_grad():
        risks = {name: Planner(model, source_parts(name, model)[0], 0.9)(*args)[0]
                 for name in ("model", "critic", "replica")}
    assert not torch.allclose(risks["model"], risks["critic"])
    assert not torch.allclose(risks["model"], risks["replica"])
    assert not torch.allclose(risks["critic"], risks["replica"])


@pytest.mark.parametrize("b,k,s", [(1, 7, 1), (2, 5, 3), (3, 1, 2)])
@pytest.mark.parametrize("source", ["model", "critic-ensemble-context", "replica"])
def test_every_source_keeps_the_contract_shapes(source, b, k, s):
    model = tiny_model(N_VEHICLES).eval()
    risk = source_parts(source, model)[0]
    batch = make_batch(b=b, n=N_VEHICLES)
    candidates = torch.randint(0, 5, (b, k, 3), generator=torch.Generator().manual_seed(b))
    noise = torch.randn(b, k, s, 3, model.stoch_dim, generator=torch.Generator().manual_seed(s))
    present = batch["hist_mask"] > 0.5
    with torch.no_grad():
        out = model.imagine(batch["hist"], present, candidates, noise)
        p = risk(out, batch["hist"], present, candidates)
    assert p.shape == (b, k, 1 if source == "replica" else s)
    assert ((p >= 0) & (p <= 1)).all()


def test_only_the_world_models_own_risk_weights_the_return():
    assert ImaginedRisk.weights_return is True
    assert CriticRisk.weights_return is False and ReplicaRisk.weights_return is False


class ConstantRisk(RiskSource):
    """A fourth source, written against the contract alone."""

    def forward(self, out, hist, hist_mask, candidates):
        return torch.full((*candidates.shape[:2], 1), 0.25)  # (B, K, 1)


class WeightedConstantRisk(ConstantRisk):
    weights_return = True


def test_a_new_source_plugs_in_and_its_flag_chooses_the_return():
    model = tiny_model(N_VEHICLES).eval()
    args = random_scene(4, 25, 2, False, model.stoch_dim)
    with torch.no_grad():
        constant = Planner(model, ConstantRisk(), 0.9, bootstrap=True)(*args)
        weighted = Planner(model, WeightedConstantRisk(), 0.9, bootstrap=True)(*args)
        own = Planner(model, ImaginedRisk(), 0.9, bootstrap=True)(*args)
        out = model.imagine(args[0], args[1] > 0.5, args[2][None], args[3][None])
    assert torch.equal(constant[0], torch.full((25,), 0.25))
    reward, ones = out.reward[0], torch.ones_like(out.cont[0])
    riskless = (discounted_return(reward, ones, 0.9)
                + terminal_value(reward, torch.zeros_like(ones), ones, 0.9)).mean(dim=1)
    assert torch.allclose(constant[1], riskless, atol=1e-6)
    assert torch.equal(weighted[1], own[1])  # weighted by the imagination's survival
    assert not torch.allclose(constant[1], own[1])


def test_a_source_must_implement_forward():
    class Incomplete(RiskSource):
        pass

    with pytest.raises(TypeError, match="abstract"):
        RiskSource()
    with pytest.raises(TypeError, match="abstract"):
        Incomplete()
    assert isinstance(ConstantRisk(), RiskSource)


def test_the_planner_takes_exactly_one_risk_source():
    model = tiny_model(N_VEHICLES)
    with pytest.raises(TypeError, match="the planner's risk must be a RiskSource"):
        Planner(model, 0.9, 0.9)  # the old positional order: gamma where the risk goes
    with pytest.raises(TypeError, match="the planner's risk must be a RiskSource"):
        Planner(model, shaken_critic(model), 0.9)  # a critic must be wrapped: CriticRisk
    with pytest.raises(TypeError, match="CriticRisk wraps a RiskCritic"):
        CriticRisk(TrafficReplica())
    with pytest.raises(TypeError, match="ReplicaRisk wraps a TrafficReplica"):
        ReplicaRisk(shaken_critic(model))
    with pytest.raises(ValueError, match="below 1 with bootstrap"):
        Planner(model, ImaginedRisk(), gamma=1.0, bootstrap=True)
    planner = Planner(model, CriticRisk(shaken_critic(model)), 0.9)
    assert planner.world_model is model and isinstance(planner.risk, CriticRisk)


def test_the_planner_with_its_own_risk_exports_with_a_dynamic_k(tmp_path):
    """(Critic and replica planners: tests/models/test_critic.py and test_traffic.py.)"""
    model = tiny_model(N_VEHICLES).eval()
    planner = Planner(model, ImaginedRisk(), 0.9, bootstrap=True).eval()
    hist, mask, candidates, noise = random_scene(5, 7, 2, False, model.stoch_dim)
    path = tmp_path / "planner.onnx"
    export_planner(planner, path, hist, mask, n_candidates=25, samples=2, horizon=3)
    assert check_parity(planner, path, hist, mask, candidates, noise, atol=1e-4) < 1e-4
