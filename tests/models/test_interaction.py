"""The interaction world model: shapes, vehicle-order invariance, absent vehicles, sampling,
the ego's actions reaching the others, and its loss."""

from __future__ import annotations

import pytest
import torch

from models.interaction import InteractionWorldModel
from models.interaction_loss import interaction_loss, sub_step_targets
from models.world_models import make_world_model, training_loss
from tests.models.test_world_model import make_batch

TINY = {"obs_dim": 7, "embed_dim": 16, "hidden_dim": 24, "vehicle_stoch": 2, "heads": 2,
        "action_dim": 4, "ensemble": 2, "substeps": 2}


def tiny(n: int = 5, seed: int = 0, **overrides) -> InteractionWorldModel:
    torch.manual_seed(seed)
    model = InteractionWorldModel(n_vehicles=n, **{**TINY, **overrides})
    model.set_normalization(torch.tensor([10.0, 0, 25, 0, 1, 0, 1]),
                            torch.tensor([30.0, 4, 5, 1, 1, 1, 1]), [0.5, 0.5, 1.0, 1.0])
    return model.eval()


def imagine(model, batch, actions, noise, **kwargs):
    with torch.no_grad():
        return model.imagine(batch["hist"], batch["hist_mask"], actions, noise, **kwargs)


@pytest.mark.parametrize("b,n,k,s", [(1, 2, 7, 1), (2, 5, 3, 2)])
def test_imagine_shapes(b, n, k, s):
    model = tiny(n)
    batch = make_batch(b=b, n=n)
    out = imagine(model, batch, torch.randint(0, 5, (b, k, 3)),
                  torch.randn(b, k, s, 3, model.stoch_dim))
    assert model.stoch_dim == n * TINY["vehicle_stoch"]
    assert out.states_mean.shape == out.states_std.shape == (b, k, s, 3, n, 4)
    assert out.presence.shape == (b, k, s, 3, n)
    for name in ("reward", "collision", "collision_head", "overlap", "cont"):
        assert getattr(out, name).shape == (b, k, s, 3)
    assert out.uncertainty.shape == (b, k, 3)
    assert out.feats.shape == (b, k, s, 3, model.deter_dim + model.stoch_dim)
    assert (out.states_std > 0).all() and (out.uncertainty >= 0).all()
    for prob in (out.presence, out.collision, out.cont):
        assert ((prob >= 0) & (prob <= 1)).all()


def permuted(batch, noise, order):
    """The batch with slots reordered (slot 0 stays the ego) and the per-vehicle noise too."""
    moved = dict(batch)
    for key in ("hist", "hist_mask"):
        moved[key] = batch[key][:, :, order]
    per_vehicle = noise.reshape(*noise.shape[:-1], len(order), -1)[..., order, :]
    return moved, per_vehicle.reshape(noise.shape)


def test_permuting_other_vehicles_permutes_the_forecasts():
    model = tiny(6, seed=1)
    batch = make_batch(b=2, n=6, seed=3)
    actions = torch.randint(0, 5, (2, 4, 3))
    noise = torch.randn(2, 4, 2, 3, model.stoch_dim)
    order = torch.tensor([0, 4, 1, 5, 3, 2])
    base = imagine(model, batch, actions, noise)
    moved_batch, moved_noise = permuted(batch, noise, order)
    moved = imagine(model, moved_batch, actions, moved_noise)
    torch.testing.assert_close(moved.states_mean, base.states_mean[..., order, :], atol=1e-4,
                               rtol=1e-4)
    torch.testing.assert_close(moved.presence, base.presence[..., order], atol=1e-5, rtol=1e-5)
    for name in ("reward", "collision", "cont", "overlap"):
        torch.testing.assert_close(getattr(moved, name), getattr(base, name), atol=1e-5,
                                   rtol=1e-4)


def test_absent_vehicles_change_nothing():
    model = tiny(6, seed=2)
    batch = make_batch(b=3, n=6, seed=4)
    batch["hist_mask"][:, :, 2] = False  # slot 2 absent in every frame of every scene
    actions = torch.randint(0, 5, (3, 2, 3))
    noise = torch.randn(3, 2, 2, 3, model.stoch_dim)
    base = imagine(model, batch, actions, noise)
    junk = dict(batch)
    junk["hist"] = batch["hist"].clone()
    junk["hist"][:, :, 2] = 1e3 * torch.randn_like(junk["hist"][:, :, 2])  # garbage values
    other_noise = noise.reshape(3, 2, 2, 3, 6, -1).clone()
    other_noise[..., 2, :] = torch.randn_like(other_noise[..., 2, :])  # its latent too
    moved = imagine(model, junk, actions, other_noise.reshape(noise.shape))
    keep = torch.tensor([0, 1, 3, 4, 5])
    torch.testing.assert_close(moved.states_mean[..., keep, :], base.states_mean[..., keep, :])
    for name in ("reward", "collision", "cont", "overlap", "uncertainty"):
        torch.testing.assert_close(getattr(moved, name), getattr(base, name))
    assert (base.presence[..., 2] < 1e-6).all()


def test_noise_samples_different_futures_and_zero_noise_is_deterministic():
    model = tiny(4, seed=3)
    batch = make_batch(b=1, n=4)
    actions = torch.ones(1, 1, 3, dtype=torch.long)
    drawn = imagine(model, batch, actions, torch.randn(1, 1, 2, 3, model.stoch_dim))
    assert (drawn.states_mean[0, 0, 0] - drawn.states_mean[0, 0, 1]).abs().max() > 1e-3
    means = imagine(model, batch, actions, None, samples=3)  # sample s: member s mod 2
    torch.testing.assert_close(means.states_mean[:, :, 0], means.states_mean[:, :, 2])
    assert (means.states_mean[:, :, 0] - means.states_mean[:, :, 1]).abs().max() > 1e-4


def test_the_ego_action_reaches_the_other_vehicles():
    model = tiny(4, seed=4)
    batch = make_batch(b=1, n=4)
    batch["hist_mask"][:] = True
    actions = torch.tensor([[[1, 1, 1], [0, 0, 0]]])  # IDLE vs LANE_LEFT
    out = imagine(model, batch, actions, None)
    others = out.states_mean[0, :, 0, :, 1:]  # (K, F, N-1, 4)
    assert (others[0, 0] - others[1, 0]).abs().max() > 1e-4  # already in the first step


def test_vehicle_sizes_are_an_input():
    model = tiny(4, seed=5)
    batch = make_batch(b=1, n=4)
    actions = torch.ones(1, 1, 3, dtype=torch.long)
    cars = imagine(model, batch, actions, None)
    sizes = torch.tensor([[[5.0, 2.0], [5.0, 2.0], [5.0, 2.0], [16.0, 2.5]]])  # slot 3 present
    truck = imagine(model, batch, actions, None, sizes=sizes)
    assert (cars.states_mean - truck.states_mean).abs().max() > 1e-5
    default = imagine(model, batch, actions, None, sizes=torch.tensor([[[5.0, 2.0]] * 4]))
    torch.testing.assert_close(default.states_mean, cars.states_mean)


def frames_of(batch, per_step: int):
    """Linear interpolation of the batch's step-end states: (B, F*per_step, N, 4) frames."""
    future, mask = batch["future"], batch["future_mask"]
    start = torch.cat([batch["hist"][:, -1:, :, :4], future[:, :-1]], dim=1)
    fractions = torch.arange(1, per_step + 1) / per_step  # (J,)
    frames = start[:, :, None] + fractions[None, None, :, None, None] * (future - start)[:, :, None]
    b, f, n = mask.shape
    return (frames.reshape(b, f * per_step, n, 4),
            mask[:, :, None].expand(b, f, per_step, n).reshape(b, f * per_step, n))


def test_loss_uses_the_frames_inside_each_step_and_trains_every_part():
    model = tiny(5, seed=6).train()
    batch = make_batch(b=4, n=5)
    batch["future_frames"], batch["future_frames_mask"] = frames_of(batch, 4)
    targets = sub_step_targets(batch, 3, model.substeps)  # 4 frames per step -> every 2nd
    assert targets[0].shape == (4, 6, 5, 4)
    torch.testing.assert_close(targets[0][:, 1::2], batch["future"])
    loss, metrics = training_loss(model, batch)  # dispatches on the variant
    assert torch.isfinite(loss) and metrics["forecast_frames_nll"] > 0
    loss.backward()
    silent = [name for name, p in model.named_parameters()
              if p.grad is None or not p.grad.abs().sum() > 0]
    assert not silent, silent
    three = dict(batch, future_frames=batch["future_frames"][:, :9],
                 future_frames_mask=batch["future_frames_mask"][:, :9])
    assert sub_step_targets(three, 3, model.substeps) is None  # 3 frames per step: not a multiple
    _, without = interaction_loss(model, {k: v for k, v in batch.items()
                                          if not k.startswith("future_frames")})
    assert without["forecast_frames_nll"] == 0


def test_factory_builds_each_variant():
    assert isinstance(make_world_model(n_vehicles=3, variant="interaction", **TINY),
                      InteractionWorldModel)
    rssm = make_world_model(obs_dim=7, n_vehicles=3, variant="probabilistic")
    assert type(rssm).__name__ == "WorldModel"
    with pytest.raises(ValueError, match="interaction"):
        InteractionWorldModel(n_vehicles=3, variant="probabilistic", **{
            k: v for k, v in TINY.items()})
