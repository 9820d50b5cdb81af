"""WorldModel: shapes, variants, determinism, save/load, ensemble assignment, learning."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from models.risk import combine_risks
from models.world_model import VARIANTS, WorldModel, ensemble_variance, softplus

TINY = dict(embed_dim=16, deter_dim=32, stoch_dim=8, hidden_dim=32, ensemble=3, heads=2,
            action_dim=8, slot_dim=16)


def make_batch(b: int = 4, h: int = 4, n: int = 5, f: int = 3, seed: int = 0,
               dt: float = 1.0) -> dict[str, torch.Tensor]:
    """Synthetic windows in the contract's layout.

    Other vehicles drive at constant velocity in lanes 4 m apart; the ego (slot 0, at the
    origin at t0) obeys its actions: FASTER/SLOWER change its speed by 4 m/s, LANE_LEFT /
    LANE_RIGHT move it 4 m left/right. A collision is an overlap with a present vehicle.
    """
    g = torch.Generator().manual_seed(seed)
    lanes = torch.randint(0, 3, (b, n), generator=g).float()
    lanes[:, 0] = 1.0
    x0 = torch.rand(b, n, generator=g) * 60 - 20
    x0[:, 0] = 0.0
    speed = 20 + 10 * torch.rand(b, n, generator=g)
    y0 = (1.0 - lanes) * 4.0
    present = torch.rand(b, n, generator=g) > 0.3
    present[:, 0] = True
    times = torch.arange(-(h - 1), 1, dtype=torch.float32) * dt  # (H,)
    x = x0[:, None] + speed[:, None] * times[None, :, None]  # (B, H, N)
    zeros, ones = torch.zeros_like(x), torch.ones_like(x)
    hist = torch.stack([x, y0[:, None].expand_as(x), speed[:, None].expand_as(x), zeros, ones,
                        zeros, lanes[:, None].expand_as(x)], dim=-1)  # (B, H, N, 7)
    hist_mask = present[:, None].expand(b, h, n).clone()
    actions = torch.randint(0, 5, (b, f), generator=g)
    future, future_mask = ego_obeys(actions, x0, y0, speed, present, dt)
    return finish_batch(hist * hist_mask[..., None], hist_mask, actions, future, future_mask)


def ego_obeys(actions, x0, y0, speed, present, dt):
    """Future (B, F, N, 4) and its mask: others at constant velocity, the ego obeying."""
    b, f = actions.shape
    n = x0.shape[1]
    dv = 4.0 * ((actions == 3).float() - (actions == 4).float())
    dy = 4.0 * ((actions == 0).float() - (actions == 2).float())
    ego_v = speed[:, :1] + dv.cumsum(1)  # (B, F)
    steps = torch.arange(1, f + 1, dtype=torch.float32) * dt
    fx = x0[:, None] + speed[:, None] * steps[None, :, None]  # (B, F, N)
    fx[:, :, 0] = (ego_v * dt).cumsum(1)
    fy = y0[:, None].expand(b, f, n).clone()
    fy[:, :, 0] = dy.cumsum(1)
    fvx = speed[:, None].expand(b, f, n).clone()
    fvx[:, :, 0] = ego_v
    future_mask = present[:, None].expand(b, f, n).clone()
    future = torch.stack([fx, fy, fvx, torch.zeros_like(fx)], dim=-1) * future_mask[..., None]
    return future, future_mask


def finish_batch(hist, hist_mask, actions, future, future_mask):
    """Labels from the future: collision, reward, cont, and masks after the first crash."""
    ego, others = future[:, :, :1], future[:, :, 1:]
    near = ((others[..., 0] - ego[..., 0]).abs() < 6) & ((others[..., 1] - ego[..., 1]).abs() < 2)
    collision = (near & future_mask[:, :, 1:]).any(-1).float()  # (B, F)
    crashed_before = (collision.cumsum(1) - collision) > 0
    step_mask = ~crashed_before
    return {
        "hist": hist, "hist_mask": hist_mask, "actions": actions,
        "future": future, "future_mask": future_mask & step_mask[..., None],
        "reward": (future[:, :, 0, 2] - 20) / 10, "collision": collision,
        "cont": 1 - collision, "step_mask": step_mask, "label_mask": step_mask.clone(),
    }


def tiny_model(n: int = 5, seed: int = 0, **overrides) -> WorldModel:
    torch.manual_seed(seed)
    return WorldModel(n_vehicles=n, **{**TINY, **overrides})


@pytest.mark.parametrize("b,n,k,s", [(1, 2, 7, 1), (2, 5, 3, 4), (3, 8, 1, 2)])
def test_imagine_shapes(b, n, k, s):
    model = tiny_model(n)
    batch = make_batch(b=b, n=n)
    actions = torch.randint(0, 5, (b, k, 3))
    noise = torch.randn(b, k, s, 3, model.stoch_dim)
    out = model.imagine(batch["hist"], batch["hist_mask"], actions, noise)
    assert out.states_mean.shape == (b, k, s, 3, n, 4)
    assert out.states_std.shape == (b, k, s, 3, n, 4)
    assert out.presence.shape == (b, k, s, 3, n)
    for name in ("reward", "collision", "cont"):
        assert getattr(out, name).shape == (b, k, s, 3)
    assert out.uncertainty.shape == (b, k, 3)
    assert (out.states_std > 0).all() and (out.uncertainty >= 0).all()
    for prob in (out.presence, out.collision, out.cont):
        assert ((prob >= 0) & (prob <= 1)).all()


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("b,n", [(1, 3), (4, 6)])
def test_observe_shapes_each_variant(variant, b, n):
    model = tiny_model(n, variant=variant)
    obs = model.observe(make_batch(b=b, n=n, f=2))
    assert obs.open_loop.states_mean.shape == (b, 2, n, 4)
    assert obs.open_loop.collision_logit.shape == (b, 2)
    if variant == "value_equivalent":
        assert obs.posterior is None and obs.post_mean is None
    else:
        assert obs.posterior.presence_logit.shape == (b, 2, n)
        assert obs.post_mean.shape == (b, 2, model.stoch_dim)
        assert obs.prior_mean.shape == (model.ensemble, b, 2, model.stoch_dim)


def test_seeded_init_and_outputs_are_deterministic():
    batch = make_batch()
    first, second, other = tiny_model(seed=3), tiny_model(seed=3), tiny_model(seed=4)
    for p, q in zip(first.state_dict().values(), second.state_dict().values(), strict=True):
        assert torch.equal(p, q)
    torch.manual_seed(9)
    a = first.observe(batch).posterior.states_mean
    torch.manual_seed(9)
    b = second.observe(batch).posterior.states_mean
    assert torch.equal(a, b)
    assert not torch.equal(first.prior.w1, other.prior.w1)


def test_imagine_without_noise_is_the_prior_mean_and_repeatable():
    model = tiny_model()
    batch = make_batch(b=2)
    actions = torch.randint(0, 5, (2, 4, 3))
    one = model.imagine(batch["hist"], batch["hist_mask"], actions, samples=2)
    two = model.imagine(batch["hist"], batch["hist_mask"], actions, samples=2)
    zeros = model.imagine(batch["hist"], batch["hist_mask"], actions,
                          torch.zeros(2, 4, 2, 3, model.stoch_dim))
    noisy = model.imagine(batch["hist"], batch["hist_mask"], actions,
                          torch.randn(2, 4, 2, 3, model.stoch_dim))
    for x, y, z in zip(one, two, zeros, strict=True):
        assert torch.equal(x, y) and torch.equal(x, z)
    assert not torch.allclose(one.reward, noisy.reward)


def test_deterministic_variant_ignores_noise():
    model = tiny_model(variant="deterministic")
    batch = make_batch(b=2)
    actions = torch.randint(0, 5, (2, 3, 3))
    plain = model.imagine(batch["hist"], batch["hist_mask"], actions, samples=3)
    noisy = model.imagine(batch["hist"], batch["hist_mask"], actions,
                          torch.randn(2, 3, 3, 3, model.stoch_dim))
    assert torch.allclose(plain.reward, noisy.reward)


def test_samples_use_ensemble_member_s_mod_e():
    model = tiny_model(ensemble=2)
    batch = make_batch(b=1)
    actions = torch.randint(0, 5, (1, 2, 3))
    out = model.imagine(batch["hist"], batch["hist_mask"], actions, samples=4)
    assert torch.equal(out.reward[:, :, 0], out.reward[:, :, 2])
    assert torch.equal(out.reward[:, :, 1], out.reward[:, :, 3])
    assert not torch.allclose(out.reward[:, :, 0], out.reward[:, :, 1])


def test_graph_friendly_helpers_match_their_torch_definitions():
    x = torch.linspace(-60.0, 60.0, 241, requires_grad=True)
    assert torch.allclose(softplus(x), F.softplus(x), atol=1e-6)
    (grad,) = torch.autograd.grad(softplus(x).sum(), x)
    assert torch.allclose(grad, torch.sigmoid(x), atol=1e-6)
    stats = torch.randn(4, 5, 3, 2)
    assert torch.allclose(ensemble_variance(stats), stats.var(dim=0, unbiased=False), atol=1e-6)
    members = torch.tensor([2, 0, 3, 1, 2])  # (M = 5,) a member per row
    picked = WorldModel._select(stats[..., 0], members)  # (5, 3)
    assert torch.equal(picked, stats[members, torch.arange(5), :, 0])


def test_collision_is_the_configured_risk_source():
    batch = make_batch(b=1)
    actions = torch.randint(0, 5, (1, 3, 3))
    outs = {risk: tiny_model(risk=risk).imagine(batch["hist"], batch["hist_mask"], actions)
            for risk in ("overlap", "head", "combined")}
    assert torch.equal(outs["overlap"].collision, outs["overlap"].overlap)
    assert torch.equal(outs["head"].collision, outs["head"].collision_head)
    both = outs["combined"]
    assert torch.allclose(both.collision, combine_risks(both.collision_head, both.overlap))
    assert not torch.allclose(both.collision, both.overlap)


def test_single_member_has_no_disagreement():
    model = tiny_model(ensemble=1)
    batch = make_batch(b=2)
    out = model.imagine(batch["hist"], batch["hist_mask"], torch.randint(0, 5, (2, 3, 3)),
                        torch.randn(2, 3, 2, 3, model.stoch_dim))
    assert torch.all(out.uncertainty == 0)
    several = tiny_model(ensemble=3).imagine(batch["hist"], batch["hist_mask"],
                                             torch.randint(0, 5, (2, 3, 3)), samples=1)
    assert torch.all(several.uncertainty > 0)


def test_untrained_forecast_is_constant_velocity_and_absent_slots_stay_absent():
    model = tiny_model()
    batch = make_batch(b=3)
    out = model.imagine(batch["hist"], batch["hist_mask"], torch.randint(0, 5, (3, 2, 3)))
    last = batch["hist"][:, -1, :, :4]  # (B, N, 4)
    steps = torch.arange(1, 4, dtype=torch.float32)[:, None, None]
    expected = last[:, None, :, :2] + last[:, None, :, 2:] * steps  # (B, F, N, 2)
    assert torch.allclose(out.states_mean[:, 0, 0, ..., :2], expected, atol=1e-5)
    absent = ~batch["hist_mask"][:, -1]  # (B, N)
    assert absent.any()
    assert (out.presence[:, :, :, :, :][absent[:, None, None, None].expand_as(out.presence)]
            < 1e-6).all()


def test_state_dict_round_trip_gives_identical_predictions(tmp_path):
    model = tiny_model(seed=1)
    model.set_normalization(torch.arange(7.0), torch.arange(1.0, 8.0), [0.5, 0.4, 1.0, 2.0])
    batch = make_batch(b=2)
    actions = torch.randint(0, 5, (2, 3, 3))
    noise = torch.randn(2, 3, 2, 3, model.stoch_dim)
    before = model.imagine(batch["hist"], batch["hist_mask"], actions, noise)
    torch.save(model.state_dict(), tmp_path / "model.pt")
    loaded = tiny_model(seed=2)
    loaded.load_state_dict(torch.load(tmp_path / "model.pt"))
    assert torch.equal(loaded.encoder.obs_std, torch.arange(1.0, 8.0))
    assert torch.equal(loaded.target_scale, torch.tensor([0.5, 0.4, 1.0, 2.0]))
    after = loaded.imagine(batch["hist"], batch["hist_mask"], actions, noise)
    for x, y in zip(before, after, strict=True):
        assert torch.equal(x, y)


def test_bad_inputs_are_refused_with_a_sentence():
    model = tiny_model(n=5)
    batch = make_batch(b=2, n=4)
    with pytest.raises(ValueError, match="hist must have shape"):
        model.imagine(batch["hist"], batch["hist_mask"], torch.zeros(2, 1, 3, dtype=torch.long))
    good = make_batch(b=2)
    with pytest.raises(ValueError, match="noise must have shape"):
        model.imagine(good["hist"], good["hist_mask"], torch.zeros(2, 1, 3, dtype=torch.long),
                      torch.zeros(2, 1, 1, 3, model.stoch_dim + 1))
    with pytest.raises(ValueError, match="actions must lie in"):
        model.observe({**good, "actions": good["actions"] + 5})
    with pytest.raises(ValueError, match="no 'future'"):
        model.observe({k: v for k, v in good.items() if k != "future"})
    with pytest.raises(ValueError, match="variant must be one of"):
        WorldModel(variant="bayesian")
    with pytest.raises(ValueError, match="target_scale must be positive"):
        model.set_normalization(torch.zeros(7), torch.ones(7), torch.zeros(4))


@pytest.mark.slow
def test_learns_the_ego_response_to_actions_better_than_constant_velocity():
    from models.losses import world_model_loss

    model = tiny_model(seed=0)
    train = make_batch(b=64, seed=1)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(200):
        loss, _ = world_model_loss(model, train)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    test = make_batch(b=64, seed=2)
    with torch.no_grad():
        out = model.imagine(test["hist"], test["hist_mask"], test["actions"][:, None])
    last = test["hist"][:, -1, :, :4]
    steps = torch.arange(1, 4, dtype=torch.float32)[:, None, None]
    constant_velocity = last[:, None, :, :2] + last[:, None, :, 2:] * steps  # (B, F, N, 2)
    mask = test["future_mask"]
    target = test["future"][..., :2]
    model_error = (out.states_mean[:, 0, 0, ..., :2] - target).norm(dim=-1)[mask].mean()
    cv_error = (constant_velocity - target).norm(dim=-1)[mask].mean()
    assert model_error < 0.7 * cv_error
