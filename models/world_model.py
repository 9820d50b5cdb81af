"""Probabilistic latent world model of driving scenes (RSSM with an ensemble of priors).

State per future decision step t = 1..F: a deterministic recurrent state h_t (GRUCell)
and a stochastic latent z_t (diagonal Gaussian):

    h_0, z_0 = init(history summary)            (the history encoder, deterministic)
    h_t      = GRUCell([z_{t-1}, embed(a_t)], h_{t-1})
    prior      p_e(z_t | h_t),  e = 1..E        (ensemble; disagreement = epistemic uncertainty)
    posterior  q(z_t | h_t, o_t)                (o_t = set encoding of the observed scene
                                                 at the end of step t)
    heads on [h_t, z_t]: per-slot future state mean/std of [x, y, vx, vy] as a residual over
    constant velocity from t0, presence logit, reward, collision logit, continue logit.

Variants (`variant`):
- `probabilistic` (default): z sampled (reparameterised); KL(q || p_e) with free bits and
  KL balancing (DreamerV3) against every ensemble member.
- `deterministic`: z is the mean (noise is ignored everywhere); the KL becomes a latent
  prediction loss (prior means regress the encoded next observation's latent).
- `value_equivalent`: no posterior and no reconstruction: only the open-loop (prior)
  rollout is trained, on reward, collision and continue. Its forecast/presence outputs
  still exist (same heads) but receive no loss, so they stay untrained.

Besides the posterior rollout, `observe` also returns an open-loop rollout driven by the
prior (batch element b uses ensemble member b mod E) so the heads are trained on the same
kind of latent the planner imagines with.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from models.encoder import KINEMATIC_DIM, SceneEncoder, as_float_vector, mlp
from models.risk import combine_risks, overlap_risk

VARIANTS = ("deterministic", "probabilistic", "value_equivalent")
RISK_SOURCES = ("overlap", "head", "combined")
ABSENT_LOGIT = -30.0  # presence logit of slots empty at t0 (they never appear later)


class Context(NamedTuple):
    """The encoded history (B batch, N vehicles, C embed)."""

    deter: torch.Tensor  # (B, deter_dim) h_0
    stoch: torch.Tensor  # (B, stoch_dim) z_0
    tokens: torch.Tensor  # (B, N, C) vehicle tokens at t0
    last_state: torch.Tensor  # (B, N, 4) [x, y, vx, vy] at t0, physical
    present: torch.Tensor  # (B, N) bool


class Heads(NamedTuple):
    """Head outputs along a rollout, shapes (B, F, ...) (physical units)."""

    states_mean: torch.Tensor  # (B, F, N, 4)
    states_std: torch.Tensor  # (B, F, N, 4)
    presence_logit: torch.Tensor  # (B, F, N)
    reward: torch.Tensor  # (B, F)
    collision_logit: torch.Tensor  # (B, F)
    cont_logit: torch.Tensor  # (B, F)


class Observation(NamedTuple):
    """Everything the loss needs from one batch (Z stoch, E ensemble)."""

    posterior: Heads | None  # heads on the posterior rollout (None for value_equivalent)
    open_loop: Heads  # heads on the prior rollout driven by the batch's actions
    post_mean: torch.Tensor | None  # (B, F, Z)
    post_std: torch.Tensor | None  # (B, F, Z)
    prior_mean: torch.Tensor | None  # (E, B, F, Z) priors along the posterior rollout
    prior_std: torch.Tensor | None  # (E, B, F, Z)


class Imagination(NamedTuple):
    """Imagined futures (B batch, K candidates, S samples, F steps, N vehicles)."""

    states_mean: torch.Tensor  # (B, K, S, F, N, 4)
    states_std: torch.Tensor  # (B, K, S, F, N, 4)
    presence: torch.Tensor  # (B, K, S, F, N) probability
    reward: torch.Tensor  # (B, K, S, F)
    collision: torch.Tensor  # (B, K, S, F) per-step collision probability (the `risk` source)
    collision_head: torch.Tensor  # (B, K, S, F) the learned collision head's probability
    overlap: torch.Tensor  # (B, K, S, F) probability that forecast boxes overlap
    cont: torch.Tensor  # (B, K, S, F) probability the episode continues after the step
    uncertainty: torch.Tensor  # (B, K, F) ensemble disagreement, mean over samples
    feats: torch.Tensor  # (B, K, S, F, deter+stoch) the rollout latents [h_t, z_t]
    last_state: torch.Tensor  # (B, N, 4) [x, y, vx, vy] at t0, physical
    present: torch.Tensor  # (B, N) bool, the slots present at t0


class Rollout(NamedTuple):
    """Latent trajectory of M rollouts (M = B*R)."""

    feats: torch.Tensor  # (M, F, deter+stoch)
    prior_mean: torch.Tensor  # (E, M, F, Z)
    prior_std: torch.Tensor  # (E, M, F, Z)
    post_mean: torch.Tensor | None  # (M, F, Z)
    post_std: torch.Tensor | None  # (M, F, Z)


def latent_std(raw: torch.Tensor, min_std: float) -> torch.Tensor:
    """Bounded std in (min_std, min_std + 2) (sigmoid: cheaper in ONNX than softplus)."""
    return 2 * torch.sigmoid(raw / 2) + min_std


def ensemble_variance(stats: torch.Tensor) -> torch.Tensor:
    """Variance over the members of stats (E, ...) -> (...). The means over E are taken as
    products with a (1, E) row of 1/E: onnxruntime reduces over a leading axis slowly."""
    flat = stats.reshape(stats.shape[0], -1)  # (E, X)
    average = flat.new_full((1, flat.shape[0]), 1.0 / flat.shape[0])  # (1, E)
    deviation = flat - average @ flat  # (E, X)
    return (average @ (deviation * deviation)).reshape(stats.shape[1:])


def softplus(x: torch.Tensor) -> torch.Tensor:
    """log(1 + e^x) as max(x, 0) + log(1 + e^-|x|): the same values and gradients as
    F.softplus (torch.maximum splits the gradient at 0), but exported as plain elementwise
    ops (onnxruntime's Softplus kernel is about 5x slower than torch's and was the single
    most expensive node of the planner)."""
    return torch.maximum(x, x.new_zeros(())) + torch.log1p(torch.exp(-x.abs()))


def gaussian_stats(raw: torch.Tensor, min_std: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Split (..., 2Z) into mean (..., Z) and std (..., Z)."""
    mean, raw_std = raw.chunk(2, dim=-1)
    return mean, latent_std(raw_std, min_std)


def apply_2d(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Apply `module` to x (..., I) flattened to 2-D (ONNX fuses bias into Gemm) -> (..., O)."""
    out = module(x.reshape(-1, x.shape[-1]))  # (prod(...), O)
    return out.reshape(*x.shape[:-1], out.shape[-1])


def batch_field(batch: Any, name: str) -> torch.Tensor:
    """batch[name] (dict-like) or batch.name, or a ValueError naming the missing key."""
    value = batch.get(name) if isinstance(batch, Mapping) else getattr(batch, name, None)
    if value is None:
        raise ValueError(f"the batch has no '{name}' tensor (see the window contract)")
    return value


class EnsembleMLP(nn.Module):
    """E independent two-layer MLPs evaluated as one batched matmul: (M, I) -> (E, M, O)."""

    def __init__(self, members: int, in_dim: int, hidden_dim: int, out_dim: int):
        super().__init__()
        self.w1 = nn.Parameter(torch.empty(members, in_dim, hidden_dim))
        self.b1 = nn.Parameter(torch.empty(members, 1, hidden_dim))
        self.w2 = nn.Parameter(torch.empty(members, hidden_dim, out_dim))
        self.b2 = nn.Parameter(torch.empty(members, 1, out_dim))
        for weight, bias, fan_in in ((self.w1, self.b1, in_dim), (self.w2, self.b2, hidden_dim)):
            bound = fan_in ** -0.5
            nn.init.uniform_(weight, -bound, bound)
            nn.init.uniform_(bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = F.silu(x @ self.w1 + self.b1)  # (E, M, hidden)
        return hidden @ self.w2 + self.b2  # (E, M, O)


class SlotDecoder(nn.Module):
    """Per-slot decoder: relu(LN(W feat) + LN(MLP(token_t0))) -> 4 + 4 + 1 outputs per slot.

    The latent part is projected once per rollout row and the slot part once per scene,
    then broadcast-added, so the cost per (row, slot) is one narrow output layer: this
    (K*S*F*N rows) is the widest tensor of the planner, hence `slot_dim` is small.
    """

    def __init__(self, feat_dim: int, token_dim: int, hidden_dim: int, slot_dim: int):
        super().__init__()
        self.from_feat = nn.Sequential(nn.Linear(feat_dim, slot_dim), nn.LayerNorm(slot_dim))
        self.from_token = nn.Sequential(mlp(token_dim, hidden_dim, slot_dim),
                                        nn.LayerNorm(slot_dim))
        # three output layers (checkpoints keep their names), applied as one product
        self.out_mean = nn.Linear(slot_dim, KINEMATIC_DIM)
        self.out_std = nn.Linear(slot_dim, KINEMATIC_DIM)
        self.out_presence = nn.Linear(slot_dim, 1)
        nn.init.zeros_(self.out_mean.weight)  # start exactly at constant velocity
        nn.init.zeros_(self.out_mean.bias)

    def forward(self, feats: torch.Tensor, tokens: torch.Tensor):
        """feats (B, R, F, Cf), tokens (B, N, C) -> raw mean residual (B, R, F, N, 4),
        raw std (B, R, F, N, 4), presence logit (B, R, F, N)."""
        row = apply_2d(self.from_feat, feats)[..., None, :]  # (B, R, F, 1, slot)
        slot = self.from_token(tokens)[:, None, None]  # (B, 1, 1, N, slot)
        mixed = torch.relu(row + slot)  # (B, R, F, N, slot)
        layers = (self.out_mean, self.out_std, self.out_presence)
        weight = torch.cat([layer.weight for layer in layers])  # one product, not three
        bias = torch.cat([layer.bias for layer in layers])
        out = apply_2d(lambda x: F.linear(x, weight, bias), mixed)  # (B, R, F, N, 9)
        mean, std, presence = out.split([KINEMATIC_DIM, KINEMATIC_DIM, 1], dim=-1)
        return mean, std, presence.sum(dim=-1)  # sum over one: a squeeze without an If node


class WorldModel(nn.Module):
    """RSSM world model over ego-centric windows; see the module docstring.

    Sizes: obs_dim D per-vehicle history features, n_vehicles N slots, n_actions meta
    actions, embed_dim C scene embedding, deter_dim h, stoch_dim Z, hidden_dim MLP/GRU
    width, ensemble E prior heads, prior_hidden_dim width of each prior member, heads
    attention heads, action_dim action embedding, slot_dim width of the per-slot decoder
    layer (the planner's widest tensor), min_std latent std floor, dt seconds
    per future step (for the constant-velocity baseline of the forecast);
    vehicle_length, vehicle_width [m] and risk_substeps for the overlap risk
    (models/risk.py); risk: what `Imagination.collision` is, one of RISK_SOURCES.
    """

    def __init__(self, obs_dim: int = 7, n_vehicles: int = 8, n_actions: int = 5,
                 embed_dim: int = 32, deter_dim: int = 64, stoch_dim: int = 16,
                 hidden_dim: int = 64, ensemble: int = 4, variant: str = "probabilistic",
                 prior_hidden_dim: int | None = None, heads: int = 4, action_dim: int = 16,
                 slot_dim: int = 32, min_std: float = 0.1, dt: float = 1.0,
                 vehicle_length: float = 5.0, vehicle_width: float = 2.0,
                 risk_substeps: int = 2, risk: str = "overlap"):
        super().__init__()
        variant = str(getattr(variant, "value", variant))
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {', '.join(VARIANTS)}, got '{variant}'")
        if risk not in RISK_SOURCES:
            raise ValueError(f"risk must be one of {', '.join(RISK_SOURCES)}, got '{risk}'")
        if ensemble < 1 or n_vehicles < 1 or n_actions < 1:
            raise ValueError("ensemble, n_vehicles and n_actions must all be at least 1, got "
                             f"{ensemble}, {n_vehicles}, {n_actions}")
        self.obs_dim, self.n_vehicles, self.n_actions = obs_dim, n_vehicles, n_actions
        self.deter_dim, self.stoch_dim, self.ensemble = deter_dim, stoch_dim, ensemble
        self.variant, self.min_std, self.dt = variant, min_std, float(dt)
        self.vehicle_length, self.vehicle_width = float(vehicle_length), float(vehicle_width)
        self.risk_substeps, self.risk = int(risk_substeps), risk
        feat_dim = deter_dim + stoch_dim
        self.encoder = SceneEncoder(obs_dim, embed_dim, hidden_dim, heads)
        self.init_deter = nn.Linear(hidden_dim, deter_dim)
        self.init_stoch = nn.Linear(hidden_dim, stoch_dim)
        self.action_embed = nn.Embedding(n_actions, action_dim)
        self.cell = nn.GRUCell(stoch_dim + action_dim, deter_dim)
        self.prior = EnsembleMLP(ensemble, deter_dim, prior_hidden_dim or hidden_dim,
                                 2 * stoch_dim)
        self.posterior = mlp(deter_dim + embed_dim, hidden_dim, 2 * stoch_dim)
        self.decoder = SlotDecoder(feat_dim, embed_dim, hidden_dim, slot_dim)
        self.scalar_heads = mlp(feat_dim, hidden_dim, 3)  # reward, collision, continue
        self.register_buffer("target_scale", torch.ones(KINEMATIC_DIM))

    @property
    def stochastic(self) -> bool:
        return self.variant != "deterministic"

    def set_normalization(self, obs_mean, obs_std, target_scale=None) -> None:
        """Per-feature mean/std (D,) of the inputs and the forecast residual scale (4,).

        target_scale is the typical one-step error of constant velocity in
        [x, y, vx, vy] (metres, m/s); it scales the learned residual and its std.
        """
        self.encoder.set_normalization(obs_mean, obs_std)
        if target_scale is not None:
            scale = as_float_vector(target_scale, KINEMATIC_DIM, "target_scale")
            if (scale <= 0).any():
                raise ValueError(f"target_scale must be positive, got {scale.tolist()}")
            self.target_scale.copy_(scale)

    # ------------------------------------------------------------------ checks

    def _check_history(self, hist: torch.Tensor, hist_mask: torch.Tensor) -> None:
        n, d = self.n_vehicles, self.obs_dim
        if hist.dim() != 4 or hist.shape[2] != n or hist.shape[3] != d:
            raise ValueError(f"hist must have shape (B, H, {n}, {d}), got {tuple(hist.shape)}")
        if tuple(hist_mask.shape) != tuple(hist.shape[:3]):
            raise ValueError(f"hist_mask must have shape {tuple(hist.shape[:3])} (B, H, N), "
                             f"got {tuple(hist_mask.shape)}")

    def _check_future(self, batch: Any, b: int) -> None:
        actions, future = batch_field(batch, "actions"), batch_field(batch, "future")
        if actions.dim() != 2 or actions.shape[0] != b or actions.shape[1] < 1:
            raise ValueError(f"actions must have shape ({b}, F) with F >= 1, "
                             f"got {tuple(actions.shape)}")
        f, n = actions.shape[1], self.n_vehicles
        if tuple(future.shape) != (b, f, n, KINEMATIC_DIM):
            raise ValueError(f"future must have shape ({b}, {f}, {n}, 4), "
                             f"got {tuple(future.shape)}")
        if actions.numel() and (actions.min() < 0 or actions.max() >= self.n_actions):
            raise ValueError(f"actions must lie in 0..{self.n_actions - 1}, got values "
                             f"{actions.min().item()}..{actions.max().item()}")

    def _check_actions(self, actions: torch.Tensor, b: int) -> None:
        if actions.dim() != 3 or actions.shape[0] != b or actions.shape[2] < 1:
            raise ValueError(f"actions must have shape ({b}, K, F) with F >= 1, "
                             f"got {tuple(actions.shape)}")

    def _check_noise(self, noise: torch.Tensor, b: int, k: int, f: int) -> None:
        z = self.stoch_dim
        if (noise.dim() != 5 or noise.shape[0] != b or noise.shape[1] != k
                or noise.shape[3] != f or noise.shape[4] != z):
            raise ValueError(f"noise must have shape ({b}, {k}, S, {f}, {z}), "
                             f"got {tuple(noise.shape)}")

    # ------------------------------------------------------------------ verbs

    def encode(self, hist: torch.Tensor, hist_mask: torch.Tensor) -> Context:
        """hist (B, H, N, D) physical, hist_mask (B, H, N) -> Context (h_0, z_0, t0 slots)."""
        self._check_history(hist, hist_mask)
        code = self.encoder.encode_history(hist, hist_mask.bool())
        deter = torch.tanh(self.init_deter(code.summary))
        return Context(deter, self.init_stoch(code.summary), code.tokens, code.last_state,
                       code.present)

    def observe(self, batch: Any) -> Observation:
        """Posterior and open-loop rollouts of a window batch (dict of contract tensors)."""
        hist, hist_mask = batch_field(batch, "hist"), batch_field(batch, "hist_mask")
        self._check_history(hist, hist_mask)
        b = hist.shape[0]
        self._check_future(batch, b)
        actions = batch_field(batch, "actions")
        ctx = self.encode(hist, hist_mask)
        members = torch.arange(b, device=hist.device) % self.ensemble  # (B,)
        rows = actions[:, None]  # (B, 1, F): one rollout per window
        open_loop = self._rollout(ctx, rows, self._training_noise(actions), members)
        open_heads = self._squeeze_rows(self._heads(open_loop.feats[:, None], ctx))
        if self.variant == "value_equivalent":
            return Observation(None, open_heads, None, None, None, None)
        future_mask = batch_field(batch, "future_mask").bool()
        embeds = self.encoder.encode_states(batch_field(batch, "future"), future_mask)
        post = self._rollout(ctx, rows, self._training_noise(actions), None, embeds)
        post_heads = self._squeeze_rows(self._heads(post.feats[:, None], ctx))
        return Observation(post_heads, open_heads, post.post_mean, post.post_std,
                           post.prior_mean, post.prior_std)

    def imagine(self, hist: torch.Tensor, hist_mask: torch.Tensor, actions: torch.Tensor,
                noise: torch.Tensor | None = None, samples: int = 1) -> Imagination:
        """Prior rollouts of K action sequences x S samples per scene.

        hist (B, H, N, D), hist_mask (B, H, N), actions (B, K, F) int64, noise
        (B, K, S, F, Z) standard normal (None -> zeros, i.e. prior means, with `samples`
        samples). Sample s uses ensemble member s mod E. Traceable: no Python randomness.
        """
        self._check_actions(actions, hist.shape[0])
        b, k, f = actions.shape
        if noise is None:
            noise = hist.new_zeros(b, k, samples, f, self.stoch_dim)
        self._check_noise(noise, b, k, f)
        s = noise.shape[2]
        ctx = self.encode(hist, hist_mask)
        rows = actions[:, :, None].expand(-1, -1, s, -1).reshape(b, -1, f)  # (B, K*S, F)
        members = torch.arange(s, device=hist.device) % self.ensemble  # (S,)
        members = members[None, None].expand(b, k, -1).reshape(-1)  # (B*K*S,)
        roll = self._rollout(ctx, rows, noise.reshape(-1, f, self.stoch_dim), members)
        feats = roll.feats.reshape(b, -1, f, roll.feats.shape[-1])  # (B, K*S, F, Cf)
        return self._imagination(self._heads(feats, ctx), feats, roll.prior_mean, ctx, b, s)

    def start(self, hist: torch.Tensor, hist_mask: torch.Tensor) -> tuple[Context, torch.Tensor]:
        """The encoded history and its latent state [h_0, z_0] (B, deter+stoch): where
        imagination starts, and what an actor reads at a real decision."""
        ctx = self.encode(hist, hist_mask)
        return ctx, torch.cat([ctx.deter, ctx.stoch], dim=-1)

    def step(self, feat: torch.Tensor, action: torch.Tensor, noise: torch.Tensor,
             members: torch.Tensor) -> torch.Tensor:
        """One imagined decision step from latent states feat (M, deter+stoch) under actions
        (M,) int64: h' = GRU([z, embed(a)], h), z' from prior member `members` (M,) with
        standard normal `noise` (M, Z) (ignored by the deterministic variant) -> (M, ...)."""
        deter, stoch = feat.split([self.deter_dim, self.stoch_dim], dim=-1)
        deter = self.cell(torch.cat([stoch, self.action_embed(action)], dim=-1), deter)
        mean, std = gaussian_stats(self._select(self.prior(deter), members), self.min_std)
        stoch = mean + std * noise if self.stochastic else mean
        return torch.cat([deter, stoch], dim=-1)

    def outcomes(self, feats: torch.Tensor, ctx: Context):
        """Reward, collision probability (the `risk` source) and continue probability of
        imagined steps feats (B, T, deter+stoch), step t being t+1 decisions after the
        history of `ctx` -> three (B, T) tensors."""
        heads = self._squeeze_rows(self._heads(feats[:, None], ctx))
        presence = torch.sigmoid(heads.presence_logit)
        risk = self._risk(heads, presence, ctx)[0]
        return heads.reward, risk, torch.sigmoid(heads.cont_logit)

    # ------------------------------------------------------------------ internals

    def _risk(self, heads: Heads, presence: torch.Tensor, ctx: Context):
        """(risk source, collision head, overlap) probabilities, each (B, ..., F), of heads
        whose leading axis is the batch of `ctx`."""
        rollout_axes = heads.states_mean.dim() - 4  # between B and (F, N, 4)
        last = ctx.last_state[(slice(None), *([None] * (rollout_axes + 1)))]  # (B, 1.., 1, N, 4)
        overlap = overlap_risk(last[..., :2], heads.states_mean[..., :2],
                               heads.states_std[..., :2], presence, self.vehicle_length,
                               self.vehicle_width, self.risk_substeps)
        head = torch.sigmoid(heads.collision_logit)
        risk = {"overlap": overlap, "head": head}.get(self.risk)
        if risk is None:  # "combined": computed only when it is the source
            risk = combine_risks(head, overlap)
        return risk, head, overlap

    def _training_noise(self, actions: torch.Tensor) -> torch.Tensor:
        """Standard normal (B, F, Z) for stochastic variants, zeros for deterministic."""
        shape = (*actions.shape, self.stoch_dim)
        dtype = self.target_scale.dtype
        if self.stochastic:
            return torch.randn(shape, device=actions.device, dtype=dtype)
        return torch.zeros(shape, device=actions.device, dtype=dtype)

    def _first_step(self, ctx: Context, first: torch.Tensor):
        """h_1 and the raw priors (E, M, 2Z) for first actions (B, R); M = B*R rows.

        h_1 depends only on the scene and a_1, so it is computed once per possible action
        and gathered: the planner's first step then costs n_actions rows, not K*S.
        """
        b, n_act = ctx.deter.shape[0], self.n_actions
        every = self.action_embed.weight[None].expand(b, -1, -1)  # (B, nA, A)
        stoch = ctx.stoch[:, None].expand(-1, n_act, -1)  # (B, nA, Z)
        inputs = torch.cat([stoch, every], dim=-1).reshape(b * n_act, -1)  # (B*nA, Z+A)
        deter = ctx.deter[:, None].expand(-1, n_act, -1).reshape(-1, self.deter_dim)
        deter = self.cell(inputs, deter)  # (B*nA, h)
        prior = self.prior(deter)  # (E, B*nA, 2Z)
        offsets = torch.arange(b, device=first.device)[:, None] * n_act  # (B, 1)
        rows = (first + offsets).reshape(-1)  # (M,) row of each first action in B*nA
        # whole-row selects (Gather), which onnxruntime copies much faster than gather's
        # element-wise GatherElements
        return deter.index_select(0, rows), prior.index_select(1, rows)

    def _rollout(self, ctx: Context, actions: torch.Tensor, noise: torch.Tensor,
                 members: torch.Tensor | None, embeds: torch.Tensor | None = None) -> Rollout:
        """Roll M = B*R rows: actions (B, R, F) int64, noise (M, F, Z), rows ordered (B, R).

        With `embeds` (M, F, C) z_t comes from the posterior, else from the prior member
        selected by `members` (M,) member indices.
        """
        f = actions.shape[-1]
        act = self.action_embed(actions).reshape(-1, f, self.action_embed.embedding_dim)
        deter, prior_raw = self._first_step(ctx, actions[..., 0])
        stoch = ctx.stoch  # replaced at the end of step 1
        steps: list[tuple[torch.Tensor, ...]] = []
        for t in range(f):
            if t > 0:
                deter = self.cell(torch.cat([stoch, act[:, t]], dim=-1), deter)  # (M, h)
                prior_raw = self.prior(deter)  # (E, M, 2Z)
            prior_mean, prior_std = gaussian_stats(prior_raw, self.min_std)  # (E, M, Z)
            if embeds is None:
                mean, std = gaussian_stats(self._select(prior_raw, members), self.min_std)
            else:
                raw = self.posterior(torch.cat([deter, embeds[:, t]], dim=-1))
                mean, std = gaussian_stats(raw, self.min_std)  # (M, Z)
            stoch = mean + std * noise[:, t] if self.stochastic else mean
            steps.append((torch.cat([deter, stoch], dim=-1), prior_mean, prior_std, mean, std))
        stacked = (torch.stack(x, dim=-2) for x in zip(*steps, strict=True))
        feats, p_mean, p_std, q_mean, q_std = stacked  # (M, F, .) and (E, M, F, Z)
        if embeds is None:
            return Rollout(feats, p_mean, p_std, None, None)
        return Rollout(feats, p_mean, p_std, q_mean, q_std)

    @staticmethod
    def _select(stats: torch.Tensor, members: torch.Tensor) -> torch.Tensor:
        """stats (E, M, D), members (M,) member indices -> the selected member's stats
        (M, D), picked as whole rows (a Gather, not a one-hot product and sum)."""
        m = stats.shape[1]
        rows = members * m + torch.arange(m, device=stats.device)  # (M,) rows of (E*M, D)
        return stats.reshape(-1, stats.shape[-1]).index_select(0, rows)

    def _heads(self, feats: torch.Tensor, ctx: Context) -> Heads:
        """feats (B, R, F, Cf) -> Heads with shapes (B, R, F, ...)."""
        residual, raw_std, presence = self.decoder(feats, ctx.tokens)  # (B, R, F, N, 4)
        steps = torch.arange(1, feats.shape[2] + 1, dtype=feats.dtype, device=feats.device)
        steps = steps.reshape(1, 1, -1, 1, 1)  # (1, 1, F, 1, 1)
        last = ctx.last_state[:, None, None]  # (B, 1, 1, N, 4)
        position = last[..., :2] + last[..., 2:] * (steps * self.dt)
        base = torch.cat([position, last[..., 2:].expand_as(position)], dim=-1)
        scale = self.target_scale * steps  # residual and std grow with the step count
        scale = scale.expand(*scale.shape[:3], residual.shape[-2], -1)  # (1, 1, F, N, 4):
        # broadcast over leading axes only, which onnxruntime does fast
        mean = base + residual * scale
        std = (softplus(raw_std) + 0.01) * scale
        present = ctx.present[:, None, None]  # (B, 1, 1, N)
        presence = torch.where(present, presence, torch.full_like(presence, ABSENT_LOGIT))
        scalars = apply_2d(self.scalar_heads, feats)  # (B, R, F, 3)
        return Heads(mean, std, presence, scalars[..., 0], scalars[..., 1], scalars[..., 2])

    @staticmethod
    def _squeeze_rows(heads: Heads) -> Heads:
        """Drop the R = 1 rollout axis: (B, 1, F, ...) -> (B, F, ...)."""
        return Heads(*(x.squeeze(1) for x in heads))

    def _imagination(self, heads: Heads, feats: torch.Tensor, prior_mean: torch.Tensor,
                     ctx: Context, b: int, s: int) -> Imagination:
        """Heads and latents (B, K*S, F, ...), prior means (E, B*K*S, F, Z) -> Imagination."""
        def split(x: torch.Tensor) -> torch.Tensor:
            return x.reshape(b, -1, s, *x.shape[2:])  # (B, K, S, F, ...)

        spread = ensemble_variance(prior_mean).mean(dim=-1)  # (B*K*S, F)
        uncertainty = spread.reshape(b, -1, s, spread.shape[-1]).mean(dim=2)  # (B, K, F)
        presence = torch.sigmoid(heads.presence_logit)  # (B, K*S, F, N)
        risk, head, overlap = self._risk(heads, presence, ctx)  # (B, K*S, F) each
        return Imagination(split(heads.states_mean), split(heads.states_std), split(presence),
                           split(heads.reward), split(risk), split(head),
                           split(overlap), torch.sigmoid(split(heads.cont_logit)), uncertainty,
                           split(feats), ctx.last_state, ctx.present)
