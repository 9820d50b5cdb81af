"""Risk critic: the hazard likelihood, its start at the world model's risk, planner and ONNX."""

from __future__ import annotations

import math

import pytest
import torch

from models.candidates import enumerate_candidates
from models.critic import (
    PRIOR_EPS,
    CriticEnsemble,
    RiskCritic,
    critic_spec,
    event_log_odds,
    event_probability,
    hazard_loss,
    imagined_logits,
    make_critic,
    rank_loss,
    scene_features,
)
from models.planner import Planner
from models.risk_sources import CriticRisk, ImaginedRisk
from pipeline.planner.onnx_export import check_parity, export_planner
from tests.models.test_world_model import make_batch, tiny_model


def critic_for(model, hidden: int = 16, context: bool = False, horizon: int = 0) -> RiskCritic:
    torch.manual_seed(3)
    return RiskCritic(model.deter_dim + model.stoch_dim, model.n_vehicles, hidden, context,
                      horizon)


def test_hazard_loss_is_the_likelihood_of_the_first_event_step():
    logits = torch.tensor([[0.3, -1.0, 2.0], [0.5, 0.1, -0.4], [1.0, 1.0, 1.0]])
    first = torch.tensor([1, 3, 0])  # event after step 1; never; after step 0
    valid = torch.tensor([True, True, True])
    h = torch.sigmoid(logits)
    nll = [-math.log(1 - h[0, 0]) - math.log(h[0, 1]),
           -sum(math.log(1 - h[1, t]) for t in range(3)),
           -math.log(h[2, 0])]
    assert hazard_loss(logits, first, valid).item() == pytest.approx(sum(nll) / 3, rel=1e-5)
    masked = hazard_loss(logits, first, torch.tensor([True, False, False]))
    assert masked.item() == pytest.approx(nll[0], rel=1e-5)  # unlabelled rows count nothing


def test_event_probability_is_one_minus_surviving_every_step():
    logits = torch.tensor([[-2.0, 0.0, 1.0]])
    h = torch.sigmoid(logits)[0]
    want = 1 - (1 - h[0]) * (1 - h[1]) * (1 - h[2])
    assert event_probability(logits).item() == pytest.approx(want.item(), rel=1e-6)


def test_event_log_odds_are_the_logit_of_the_event_probability():
    logits = torch.tensor([[-2.0, 0.0, 1.0], [-12.0, -11.0, -13.0]])
    p = event_probability(logits.double())
    want = torch.log(p / (1 - p))
    assert torch.allclose(event_log_odds(logits), want.float(), atol=1e-4)
    assert torch.isfinite(event_log_odds(torch.full((1, 3), -40.0))).all()  # P ~ 1e-17


def test_rank_loss_scores_each_decisions_unsafe_safe_pairs():
    # one decision (B 1), three candidates (K 3), one sample (S 1), F 2: candidate 0 meets
    # an event at step 1, 1 and 2 are safe (first = F); candidate 2 is unlabelled
    logits = torch.tensor([[[[0.5, 1.0]], [[-1.0, -2.0]], [[3.0, 3.0]]]])  # (1, 3, 1, 2)
    first = torch.tensor([[[1], [2], [2]]])
    valid = torch.tensor([[[True], [True], [False]]])
    odds = event_log_odds(logits)[0, :, 0]
    want = torch.nn.functional.softplus(odds[1] - odds[0])  # the one labelled pair
    assert rank_loss(logits, first, valid).item() == pytest.approx(want.item(), rel=1e-5)
    ordered = torch.tensor([[[[-3.0, -3.0]], [[-1.0, -2.0]], [[3.0, 3.0]]]])  # event < safe
    assert rank_loss(ordered, first, valid) > rank_loss(logits, first, valid)
    members = torch.stack([logits, logits])  # a fitting ensemble: summed like hazard_loss
    assert rank_loss(members, first, valid).item() == pytest.approx(2 * want.item(), rel=1e-5)
    no_pairs = torch.tensor([[[2], [2], [2]]])  # every candidate safe: nothing to order
    assert rank_loss(logits, no_pairs, valid).item() == 0.0


def test_rank_loss_does_not_pair_candidates_of_different_decisions():
    logits = torch.tensor([[[[2.0]], [[-2.0]]], [[[-2.0]], [[2.0]]]])  # (2, 2, 1, 1)
    event_first = torch.tensor([[[0], [1]], [[1], [0]]])  # the riskier one meets the event
    valid = torch.ones(2, 2, 1, dtype=torch.bool)
    swapped = torch.tensor([[[1], [0]], [[0], [1]]])
    assert rank_loss(logits, event_first, valid) < rank_loss(logits, swapped, valid)
    across = torch.tensor([[[0], [0]], [[1], [1]]])  # one class per decision: no pair
    assert rank_loss(logits, across, valid).item() == 0.0


def test_scene_features_zero_absent_neighbours_and_are_relative_to_the_ego():
    states = torch.tensor([[[0.0, 0, 25, 0], [12, 4, 20, 0], [99, 99, 9, 9]]])  # (1, 3, 4)
    std = torch.ones(1, 3, 2)
    feats = scene_features(states, std, torch.tensor([[1.0, 1.0, 0.0]]))
    assert feats.shape == (1, 4 + 7 * 2)
    assert feats[0, :4].tolist() == pytest.approx([0.0, 0.0, 5.0, 0.0])  # the ego, scaled
    assert feats[0, 4:8].tolist() == pytest.approx([1.2, 2.0, -1.0, 0.0])  # scaled offset
    assert feats[0, 8:11].tolist() == pytest.approx([0.1, 0.5, 1.0])  # scaled std, presence
    assert feats[0, 11:].abs().sum() == 0  # the absent slot carries nothing


def test_a_fresh_critic_returns_the_world_models_own_risk():
    model = tiny_model(5).eval()
    batch = make_batch(b=2, n=5)
    actions = torch.randint(0, 5, (2, 4, 3))
    noise = torch.randn(2, 4, 2, 3, model.stoch_dim)
    out = model.imagine(batch["hist"], batch["hist_mask"], actions, noise)
    logits = imagined_logits(critic_for(model), out)
    assert logits.shape == (2, 4, 2, 3)
    prior = out.collision.clamp(1e-4, 1 - 1e-4)
    assert torch.allclose(torch.sigmoid(logits), prior, atol=1e-6)


def test_critic_learns_labels_the_prior_gets_wrong():
    """Events are decided by the first action (FASTER crashes at step 1), which the
    untrained world model's geometry does not know: on held-out scenes the fitted critic
    must beat its prior's log loss."""
    model = tiny_model(5).eval()
    critic = critic_for(model, hidden=32)
    candidates = torch.from_numpy(enumerate_candidates(2))  # (25, 2)
    first = torch.where(candidates[:, 0] == 3, 1, 2)  # (25,): FASTER -> event after step 1

    def imagined(seed):
        batch = make_batch(b=8, n=5, seed=seed)
        with torch.no_grad():
            return model.imagine(batch["hist"], batch["hist_mask"],
                                 candidates[None].expand(8, -1, -1),
                                 torch.randn(8, 25, 1, 2, model.stoch_dim))

    labels = first[None, :, None].expand(8, -1, 1)
    valid = torch.ones_like(labels, dtype=torch.bool)
    optimizer = torch.optim.Adam(critic.parameters(), lr=1e-2)
    for step in range(150):
        loss = hazard_loss(imagined_logits(critic, imagined(step)), labels, valid)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    test = imagined(1000)
    with torch.no_grad():
        fitted = hazard_loss(imagined_logits(critic, test), labels, valid).item()
        prior = hazard_loss(torch.logit(test.collision.clamp(1e-4, 1 - 1e-4)), labels,
                            valid).item()
    assert fitted < 0.5 * prior


@pytest.mark.parametrize("context", [False, True])
def test_planner_with_a_critic_scores_its_risk_and_a_riskless_return(tmp_path, context):
    model = tiny_model(5).eval()
    critic = critic_for(model, context=context, horizon=2)
    with torch.no_grad():  # away from the prior, so the critic visibly decides
        critic.net[-1].bias.fill_(-1.5)
        if context:  # the context visibly matters too
            critic.net[-1].weight.normal_(0.0, 0.5, generator=torch.Generator().manual_seed(4))
    batch = make_batch(b=1, n=5)
    candidates = torch.from_numpy(enumerate_candidates(2))
    noise = torch.randn(25, 2, 2, model.stoch_dim, generator=torch.Generator().manual_seed(2))
    args = (batch["hist"], batch["hist_mask"].float(), candidates, noise)
    with_critic = Planner(model, CriticRisk(critic), gamma=0.9, bootstrap=True)
    plain = Planner(model, ImaginedRisk(), gamma=0.9, bootstrap=True)
    with torch.no_grad():
        risk, ret, _, _ = with_critic(*args)
        out = model.imagine(batch["hist"], batch["hist_mask"], candidates[None], noise[None])
        logits = imagined_logits(critic, out, batch["hist"], batch["hist_mask"], candidates[None])
        want_risk = event_probability(logits[0]).mean(dim=1)
        reward = out.reward[0]  # (K, S, F): no survival factor anywhere in the return
        want_ret = (reward[..., 0] + 0.9 * reward[..., 1]
                    + 0.9 ** 2 / 0.1 * reward[..., 1]).mean(dim=1)
        assert torch.allclose(risk, want_risk, atol=1e-6)
        assert torch.allclose(ret, want_ret, atol=1e-5)
        assert not torch.allclose(risk, plain(*args)[0])
    path = tmp_path / "planner.onnx"
    export_planner(with_critic, path, batch["hist"], batch["hist_mask"].float(),
                   n_candidates=25, samples=2, horizon=2)
    assert check_parity(with_critic, path, *args, atol=1e-4) < 1e-4


def test_critic_refuses_bad_sizes():
    with pytest.raises(ValueError, match="n_vehicles >= 2"):
        RiskCritic(8, 1)
    with pytest.raises(ValueError, match="hidden_dim must be >= 1"):
        RiskCritic(8, 3, hidden_dim=0)
    with pytest.raises(ValueError, match="needs the horizon"):
        RiskCritic(8, 3, context=True)


def test_a_critic_with_context_reads_the_lanes_and_the_actions():
    model = tiny_model(5).eval()
    critic = critic_for(model, context=True, horizon=2)
    with torch.no_grad():
        critic.net[-1].weight.normal_(0.0, 0.5, generator=torch.Generator().manual_seed(4))
    batch = make_batch(b=1, n=5)
    candidates = torch.from_numpy(enumerate_candidates(2))[None]
    noise = torch.zeros(1, 25, 2, 2, model.stoch_dim)
    moved = batch["hist"].clone()
    moved[0, -1, 1, 6] += 1.0  # the nearest neighbour now on the next lane

    def logits(hist):
        with torch.no_grad():
            out = model.imagine(hist, batch["hist_mask"], candidates, noise)
            return imagined_logits(critic, out, hist, batch["hist_mask"], candidates)

    base = logits(batch["hist"])
    assert not torch.allclose(base, logits(moved))
    with torch.no_grad():  # blind to the actions: the same imagination scores otherwise
        critic.context_in.weight[:, -2 * 5:] = 0.0
    assert not torch.allclose(base, logits(batch["hist"]))
    with pytest.raises(ValueError, match="reads a context"), torch.no_grad():
        out = model.imagine(batch["hist"], batch["hist_mask"], candidates, noise)
        imagined_logits(critic, out)


def shaken_ensemble(model, members: int = 3) -> CriticEnsemble:
    """An ensemble of context critics whose members visibly disagree."""
    torch.manual_seed(5)
    ensemble = make_critic(members, feat_dim=model.deter_dim + model.stoch_dim,
                           n_vehicles=model.n_vehicles, hidden_dim=16, context=True, horizon=2)
    with torch.no_grad():
        for k, member in enumerate(ensemble.members):
            member.net[-1].weight.normal_(0.0, 0.5, generator=torch.Generator().manual_seed(k))
    return ensemble


def test_an_ensemble_averages_its_members_hazard_logits():
    model = tiny_model(5).eval()
    ensemble = shaken_ensemble(model)
    batch = make_batch(b=2, n=5)
    candidates = torch.from_numpy(enumerate_candidates(2))[None].expand(2, -1, -1)
    scene = (batch["hist"], batch["hist_mask"], candidates)
    with torch.no_grad():
        out = model.imagine(*scene, torch.randn(2, 25, 2, 2, model.stoch_dim))
        each = [imagined_logits(member, out, *scene) for member in ensemble.members]
        mean = imagined_logits(ensemble, out, *scene)
        ensemble.each = True
        stacked = imagined_logits(ensemble, out, *scene)
    assert mean.shape == each[0].shape == (2, 25, 2, 2) and stacked.shape == (3, 2, 25, 2, 2)
    assert not torch.allclose(each[0], each[1])  # the members differ ...
    assert torch.allclose(mean, torch.stack(each).mean(dim=0), atol=1e-6)  # ... and are averaged
    assert torch.allclose(stacked, torch.stack(each), atol=1e-6)
    first = torch.full((2, 25, 2), 2)
    valid = torch.ones_like(first, dtype=torch.bool)
    total = sum(hazard_loss(logits, first, valid) for logits in each)
    assert hazard_loss(stacked, first, valid).item() == pytest.approx(total.item(), rel=1e-5)


def test_an_ensemble_is_rebuilt_from_its_spec_and_exports_with_parity(tmp_path):
    model = tiny_model(5).eval()
    ensemble = shaken_ensemble(model, members=2)
    again = make_critic(**critic_spec(ensemble))
    again.load_state_dict(ensemble.state_dict())
    assert isinstance(again, CriticEnsemble) and len(again.members) == 2
    assert isinstance(make_critic(**critic_spec(critic_for(model))), RiskCritic)
    batch = make_batch(b=1, n=5)
    candidates = torch.from_numpy(enumerate_candidates(2))
    noise = torch.randn(25, 1, 2, model.stoch_dim, generator=torch.Generator().manual_seed(2))
    args = (batch["hist"], batch["hist_mask"].float(), candidates, noise)
    planner = Planner(model, CriticRisk(again.eval()), gamma=0.9, bootstrap=True)
    with torch.no_grad():
        one = Planner(model, CriticRisk(ensemble.members[0]), gamma=0.9,
                      bootstrap=True)(*args)[0]
        assert not torch.allclose(planner(*args)[0], one)  # not just its first member
    path = tmp_path / "planner.onnx"
    export_planner(planner, path, batch["hist"], batch["hist_mask"].float(), n_candidates=25,
                   samples=1, horizon=2)
    assert check_parity(planner, path, *args, atol=1e-4) < 1e-4


def test_an_ensemble_needs_two_members_and_a_critic_one():
    with pytest.raises(ValueError, match="at least 2 members"):
        CriticEnsemble(1, 8, 3)
    with pytest.raises(ValueError, match="at least 1 member"):
        make_critic(0, feat_dim=8, n_vehicles=3)


def test_a_replica_prior_critic_starts_at_the_replica():
    """(The replica's ONNX parity: tests/models/test_traffic.py, the planner that ships it.)"""
    from models.traffic import replica_hazard

    model = tiny_model(5).eval()
    torch.manual_seed(3)
    critic = RiskCritic(model.deter_dim + model.stoch_dim, model.n_vehicles, 16,
                        replica_lanes=3, envelope=(8.0, 2.5))
    again = make_critic(**critic_spec(critic))
    assert (again.replica_lanes, again.envelope) == (3, (8.0, 2.5))
    batch = make_batch(b=1, n=5)
    candidates = torch.from_numpy(enumerate_candidates(2))
    noise = torch.randn(25, 1, 2, model.stoch_dim, generator=torch.Generator().manual_seed(2))
    args = (batch["hist"], batch["hist_mask"].float(), candidates, noise)
    planner = Planner(model, CriticRisk(critic.eval()), gamma=0.9, bootstrap=True)
    with torch.no_grad():  # the last layer starts at zero: the critic is its prior
        prior = replica_hazard(batch["hist"], batch["hist_mask"].float(), candidates[None],
                               (8.0, 2.5))[0].clamp(PRIOR_EPS, 1 - PRIOR_EPS)
        assert torch.allclose(planner(*args)[0], 1 - torch.prod(1 - prior, dim=-1), atol=1e-5)
        out = model.imagine(batch["hist"], batch["hist_mask"], candidates[None], noise[None])
        with pytest.raises(ValueError, match="prior is the traffic replica"):
            imagined_logits(critic, out)


def test_a_replica_needs_a_road_and_a_positive_envelope():
    with pytest.raises(ValueError, match="replica_lanes must be >= 0"):
        RiskCritic(8, 3, replica_lanes=-1)
    with pytest.raises(ValueError, match="a positive envelope"):
        RiskCritic(8, 3, replica_lanes=3, envelope=(0.0, 2.5))
