"""Object-centric interaction world model (`variant: interaction`).

One latent state per vehicle, stepped at `substeps` points inside each decision step:

    h_i(0)    = GRU over vehicle i's own history tokens, then one round of attention
                over the other vehicles                         (the history encoder)
    z_i(t)    ~ prior p_e(z_i | h_i)  or  posterior q(z_i | h_i, o_i(t))   once per step t
                (per-vehicle intent for the next decision period: a lane change, a speed
                target; E prior heads, their disagreement = epistemic uncertainty)
    per sub-step:
      m_i     = attention of vehicle i over all present vehicles j, keys from h_j and the
                pair's relative state and size (absent vehicles masked out)
      h_i     = GRUCell([m_i, z_i, embed(a_t) (ego only), is_ego, own state], h_i)
      v_i    += acceleration head(h_i) * dt_sub (+ for the ego a learned per-action,
                per-sub-step velocity change);  p_i += mean velocity * dt_sub

The ego's meta-action a_t enters the ego's update only: the others respond to the ego
through its imagined state, which they read by attention at every sub-step, as drivers
do (given the action, they would learn the data's correlations between the ego's
choices and the traffic instead: "the ego changes lanes, so everyone is slow"). The
rollout runs on its own predicted states, also in training, so the loss is a multi-step
open-loop loss. Nothing depends on the order of slots 1..N-1: tokens, attention and the
pooled scene summary are all permutation-equivariant or invariant.

The outputs follow the RSSM's contract (`models/world_model.py`): `imagine` returns an
`Imagination`, `observe` what `interaction_loss` needs; the per-step noise is an input of
shape (..., F, N * vehicle_stoch), so the exported planner holds no random draws.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
from torch import nn

from models.encoder import KINEMATIC_DIM, SceneEncoder, as_float_vector, mlp
from models.risk import combine_risks, overlap_risk
from models.world_model import (
    ABSENT_LOGIT,
    RISK_SOURCES,
    EnsembleMLP,
    Heads,
    Imagination,
    apply_2d,
    batch_field,
    ensemble_variance,
    gaussian_stats,
    softplus,
)

VARIANT = "interaction"
DEFAULT_SIZE = (5.0, 2.0)  # highway-env's vehicle length and width (m), when none is given
SIZE_SCALE = (2.0, 0.5)  # spread used to normalise lengths and widths
PAIR_SCALE = (10.0, 2.0, 5.0, 1.0)  # metres, metres, m/s, m/s: offsets of a typical neighbour
PAIR_DIM = KINEMATIC_DIM + 5 + 2  # relative state, proximity features, the sender's size


class InteractionContext(NamedTuple):
    """The encoded history (B batch, N vehicles, G hidden)."""

    hidden: torch.Tensor  # (B, N, G) per-vehicle state h_i(0)
    last_state: torch.Tensor  # (B, N, 4) [x, y, vx, vy] at t0, physical, 0 if absent
    present: torch.Tensor  # (B, N) bool
    sizes: torch.Tensor  # (B, N, 2) normalised length and width, 0 if absent


class Trajectory(NamedTuple):
    """One rollout of M rows (M = B*R) over F steps of J sub-steps."""

    states: torch.Tensor  # (M, F*J, N, 4) physical, at every sub-step end
    std: torch.Tensor  # (M, F*J, N, 4)
    presence_logit: torch.Tensor  # (M, F, N)
    scene: torch.Tensor  # (M, F, 2G) [ego h, mean of the others' h] at each step end
    stoch: torch.Tensor  # (M, F, N*Zv) the latents used
    prior_mean: torch.Tensor  # (E, M, F, N*Zv)
    prior_std: torch.Tensor  # (E, M, F, N*Zv)
    post_mean: torch.Tensor | None  # (M, F, N*Zv)
    post_std: torch.Tensor | None  # (M, F, N*Zv)


class InteractionObservation(NamedTuple):
    """What `interaction_loss` needs from one batch."""

    posterior: Heads  # (B, F, ...) heads of the rollout whose latents come from q
    open_loop: Heads  # (B, F, ...) heads of the rollout driven by the prior
    post_frames: tuple[torch.Tensor, torch.Tensor]  # sub-step means, stds (B, F*J, N, 4)
    open_frames: tuple[torch.Tensor, torch.Tensor]
    post_mean: torch.Tensor  # (B, F, N, Zv)
    post_std: torch.Tensor  # (B, F, N, Zv)
    prior_mean: torch.Tensor  # (E, B, F, N, Zv) priors along the posterior rollout
    prior_std: torch.Tensor  # (E, B, F, N, Zv)


class VehicleFeatures(SceneEncoder):
    """Per-vehicle, per-frame input features of a history (SceneEncoder's token features:
    normalised state, state relative to the ego, heading and lane, leader and motion
    features). Holds only the normalisation buffers, no layers."""

    def __init__(self, obs_dim: int):
        nn.Module.__init__(self)
        if obs_dim < KINEMATIC_DIM:
            raise ValueError(f"obs_dim must be at least {KINEMATIC_DIM} ([x, y, vx, vy]), "
                             f"got {obs_dim}")
        self.obs_dim = obs_dim
        self.register_buffer("obs_mean", torch.zeros(obs_dim))
        self.register_buffer("obs_std", torch.ones(obs_dim))

    @property
    def feature_dim(self) -> int:
        return self.obs_dim + 6 + 8

    def history_features(self, hist: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """hist (B, H, N, D) physical, mask (B, H, N) bool -> features (B, H, N, D+14)."""
        b, t, n, _ = hist.shape
        kin = torch.where(mask[..., None], hist[..., :KINEMATIC_DIM],
                          torch.zeros_like(hist[..., :KINEMATIC_DIM]))
        k_mean, k_std = self.obs_mean[:KINEMATIC_DIM], self.obs_std[:KINEMATIC_DIM]
        motion = self.motion_features((kin - k_mean) / k_std, mask).reshape(b * t, n, 3)
        flat = hist.reshape(b * t, n, -1)  # (B*H, N, D)
        features = self.token_features(flat[..., :KINEMATIC_DIM], flat[..., KINEMATIC_DIM:],
                                       1.0, mask.reshape(b * t, n), motion)
        return features.reshape(b, t, n, -1)  # (B, H, N, D+14)


class PairAttention(nn.Module):
    """Multi-head attention of every vehicle over every present vehicle (itself included):
    keys and values are a projection of the other's hidden state plus a projection of the
    pair's features (relative state, proximity, the other's size; nonlinear already):
    (M, N, G) -> messages (M, N, C).

    The pair projections are never formed per pair: q_i . (Wk h_j + Pk p_ij) is taken as
    q_i . Wk h_j + (Pk^T q_i) . p_ij and sum_j w_ij (Wv h_j + Pv p_ij) as
    sum_j w_ij Wv h_j + Pv sum_j w_ij p_ij, so the widest tensors are (M, N, N, P),
    P = PAIR_DIM, not (M, N, N, C), and every product is a batched matmul: the planner
    has K*S*N*N pairs per sub-step."""

    def __init__(self, hidden_dim: int, embed_dim: int, heads: int):
        super().__init__()
        if embed_dim % heads:
            raise ValueError(f"embed_dim {embed_dim} must be divisible by heads {heads}")
        self.heads, self.embed_dim = heads, embed_dim
        self.query = nn.Linear(hidden_dim, embed_dim)
        self.node = nn.Linear(hidden_dim, 2 * embed_dim)
        self.pair_key = nn.Parameter(torch.empty(heads, embed_dim // heads, PAIR_DIM))
        self.pair_value = nn.Parameter(torch.empty(heads, embed_dim // heads, PAIR_DIM))
        for weight in (self.pair_key, self.pair_value):
            nn.init.uniform_(weight, -PAIR_DIM ** -0.5, PAIR_DIM ** -0.5)
        self.out = nn.Linear(embed_dim, embed_dim)

    def forward(self, hidden: torch.Tensor, pair: torch.Tensor,
                present: torch.Tensor) -> torch.Tensor:
        """hidden (M, N, G), pair (M, N, N, P) features of j seen from i (axis 1 = i,
        axis 2 = j), present (M, N) bool -> messages (M, N, C)."""
        m, n, _ = hidden.shape
        h, d = self.heads, self.embed_dim // self.heads
        p = pair.shape[-1]
        query = self.query(hidden).reshape(m, n, h, d)
        key, value = self.node(hidden).chunk(2, dim=-1)
        key = key.reshape(m, n, h, d).transpose(1, 2)  # (M, h, N_j, d)
        value = value.reshape(m, n, h, d).transpose(1, 2)  # (M, h, N_j, d)
        node_scores = query.transpose(1, 2) @ key.transpose(-1, -2)  # (M, h, N_i, N_j)
        by_head = query.permute(2, 0, 1, 3).reshape(h, m * n, d)  # (h, M*N_i, d)
        query_pair = (by_head @ self.pair_key).permute(1, 2, 0)  # (M*N_i, P, h)
        pairs = pair.reshape(m * n, n, p)  # (M*N_i, N_j, P)
        pair_scores = (pairs @ query_pair).reshape(m, n, n, h)  # (M, N_i, N_j, h)
        scores = (node_scores.permute(0, 2, 3, 1) + pair_scores) / math.sqrt(d)
        scores = scores.masked_fill(~present[:, None, :, None], -1e9)
        weights = torch.softmax(scores, dim=2)  # (M, N_i, N_j, h) over the senders j
        from_nodes = weights.permute(0, 3, 1, 2) @ value  # (M, h, N_i, d)
        pooled = weights.reshape(m * n, n, h).transpose(1, 2) @ pairs  # (M*N_i, h, P)
        pooled = pooled.transpose(0, 1)  # (h, M*N_i, P)
        from_pairs = (pooled @ self.pair_value.transpose(1, 2)).reshape(h, m, n, d)
        message = from_nodes.permute(0, 2, 1, 3) + from_pairs.permute(1, 2, 0, 3)  # (M,N,h,d)
        return self.out(message.reshape(m, n, h * d))  # (M, N, C)


class InteractionWorldModel(nn.Module):
    """Per-vehicle latent states stepped with attention between vehicles (module docstring).

    Constructor arguments mirror `WorldModel`'s where they mean the same thing; the
    attributes the pipeline reads (obs_dim, n_vehicles, n_actions, deter_dim, stoch_dim,
    ensemble, variant, dt, vehicle_length, vehicle_width, risk, encoder, target_scale)
    exist with the same meaning. stoch_dim = n_vehicles * vehicle_stoch: the noise of one
    step holds every vehicle's latent; feats = [ego h, mean of the others' h, all z].
    """

    def __init__(self, obs_dim: int, n_vehicles: int, n_actions: int = 5, embed_dim: int = 32,
                 hidden_dim: int = 64, vehicle_stoch: int = 4, heads: int = 2,
                 action_dim: int = 8, ensemble: int = 4, substeps: int = 5,
                 variant: str = VARIANT, min_std: float = 0.1, dt: float = 1.0,
                 vehicle_length: float = 5.0, vehicle_width: float = 2.0,
                 risk_substeps: int = 2, risk: str = "overlap"):
        super().__init__()
        variant = str(getattr(variant, "value", variant))
        if variant != VARIANT:
            raise ValueError(f"InteractionWorldModel is the '{VARIANT}' variant, got '{variant}'")
        if risk not in RISK_SOURCES:
            raise ValueError(f"risk must be one of {', '.join(RISK_SOURCES)}, got '{risk}'")
        if min(ensemble, n_vehicles, n_actions, substeps, vehicle_stoch) < 1:
            raise ValueError("ensemble, n_vehicles, n_actions, substeps and vehicle_stoch must "
                             f"all be at least 1, got {ensemble}, {n_vehicles}, {n_actions}, "
                             f"{substeps}, {vehicle_stoch}")
        self.obs_dim, self.n_vehicles, self.n_actions = obs_dim, n_vehicles, n_actions
        self.hidden_dim, self.vehicle_stoch, self.substeps = hidden_dim, vehicle_stoch, substeps
        self.deter_dim, self.stoch_dim = 2 * hidden_dim, n_vehicles * vehicle_stoch
        self.ensemble, self.variant, self.min_std, self.dt = ensemble, variant, min_std, float(dt)
        self.vehicle_length, self.vehicle_width = float(vehicle_length), float(vehicle_width)
        self.risk_substeps, self.risk = int(risk_substeps), risk
        self.encoder = VehicleFeatures(obs_dim)
        self.token = mlp(self.encoder.feature_dim + 2, hidden_dim, embed_dim)
        self.history = nn.GRU(embed_dim, hidden_dim, batch_first=True)
        self.interact = PairAttention(hidden_dim, embed_dim, heads)
        self.settle = nn.Linear(embed_dim, hidden_dim)  # h_i(0) += settle(message)
        self.action_embed = nn.Embedding(n_actions, action_dim)
        self.cell = nn.GRUCell(embed_dim + vehicle_stoch + action_dim + 1 + 3, hidden_dim)
        self.prior = EnsembleMLP(ensemble, hidden_dim, hidden_dim, 2 * vehicle_stoch)
        self.posterior = mlp(hidden_dim + KINEMATIC_DIM + 1, hidden_dim, 2 * vehicle_stoch)
        self.motion = nn.Linear(hidden_dim, 2 + KINEMATIC_DIM)  # acceleration, raw std
        # the ego's mean velocity change per sub-step of each meta-action (in units of ten times
        # the velocity spread): a direct path from the action to the ego's motion, learned
        # from the data like every other weight (a lane change is 4 m in about a second)
        self.ego_profile = nn.Parameter(torch.zeros(n_actions, substeps, 2))
        self.presence = nn.Linear(hidden_dim, 1)
        self.scalar_heads = mlp(2 * hidden_dim, hidden_dim, 3)  # reward, collision, continue
        self.register_buffer("target_scale", torch.ones(KINEMATIC_DIM))

    reads_sizes = True  # imagine() takes the vehicles' lengths and widths (sizes=...)

    @property
    def stochastic(self) -> bool:
        return True

    def set_normalization(self, obs_mean, obs_std, target_scale=None) -> None:
        """As `WorldModel.set_normalization`: input mean/std (D,), residual scale (4,)."""
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

    def _check_actions(self, actions: torch.Tensor, b: int) -> None:
        if actions.dim() != 3 or actions.shape[0] != b or actions.shape[2] < 1:
            raise ValueError(f"actions must have shape ({b}, K, F) with F >= 1, "
                             f"got {tuple(actions.shape)}")

    def _check_noise(self, noise: torch.Tensor, b: int, k: int, f: int) -> None:
        z = self.stoch_dim
        if (noise.dim() != 5 or noise.shape[0] != b or noise.shape[1] != k
                or noise.shape[3] != f or noise.shape[4] != z):
            raise ValueError(f"noise must have shape ({b}, {k}, S, {f}, {z}) (Z = vehicles x "
                             f"vehicle_stoch), got {tuple(noise.shape)}")

    # ------------------------------------------------------------------ verbs

    def encode(self, hist: torch.Tensor, hist_mask: torch.Tensor,
               sizes: torch.Tensor | None = None) -> InteractionContext:
        """hist (B, H, N, D) physical, hist_mask (B, H, N) bool, sizes (B, N, 2) length and
        width in metres (None: highway-env's 5 x 2) -> InteractionContext."""
        self._check_history(hist, hist_mask)
        mask = hist_mask.bool()
        b, h, n, _ = hist.shape
        present = mask[:, -1]
        sizes = self._normalised_sizes(sizes, present)  # (B, N, 2)
        features = self.encoder.history_features(hist, mask)  # (B, H, N, Din)
        size_in = sizes[:, None].expand(-1, h, -1, -1) * mask[..., None]
        tokens = self.token(torch.cat([features, size_in], dim=-1))  # (B, H, N, C)
        tokens = tokens.transpose(1, 2).reshape(b * n, h, -1)  # (B*N, H, C)
        _, last = self.history(tokens)  # (1, B*N, G)
        hidden = last[0].reshape(b, n, -1)  # (B, N, G)
        last_state = torch.where(present[..., None], hist[:, -1, :, :KINEMATIC_DIM],
                                 torch.zeros_like(hist[:, -1, :, :KINEMATIC_DIM]))
        pair = self._pair_features(last_state, sizes)
        hidden = hidden + self.settle(self.interact(hidden, pair, present))
        hidden = hidden * present[..., None]
        return InteractionContext(hidden, last_state, present, sizes)

    def observe(self, batch: Any) -> InteractionObservation:
        """Posterior and open-loop rollouts of a window batch (dict of contract tensors;
        `size` (B, N, 2) is read when present)."""
        hist, hist_mask = batch_field(batch, "hist"), batch_field(batch, "hist_mask")
        actions, future = batch_field(batch, "actions"), batch_field(batch, "future")
        b, f = actions.shape
        if tuple(future.shape) != (b, f, self.n_vehicles, KINEMATIC_DIM):
            raise ValueError(f"future must have shape ({b}, {f}, {self.n_vehicles}, 4), "
                             f"got {tuple(future.shape)}")
        ctx = self.encode(hist, hist_mask, batch.get("size") if hasattr(batch, "get") else None)
        members = torch.arange(b, device=hist.device) % self.ensemble  # (B,)
        noise = torch.randn(b, f, self.stoch_dim, device=hist.device, dtype=hist.dtype)
        open_roll = self._rollout(ctx, actions, noise, members)
        targets = (future, batch_field(batch, "future_mask").bool())
        noise = torch.randn(b, f, self.stoch_dim, device=hist.device, dtype=hist.dtype)
        post = self._rollout(ctx, actions, noise, None, targets)
        zv = self.vehicle_stoch

        def per_vehicle(x: torch.Tensor) -> torch.Tensor:
            return x.reshape(*x.shape[:-1], self.n_vehicles, zv)  # (..., N, Zv)

        return InteractionObservation(
            self._heads(post, ctx.present), self._heads(open_roll, ctx.present),
            (post.states, post.std), (open_roll.states, open_roll.std),
            per_vehicle(post.post_mean), per_vehicle(post.post_std),
            per_vehicle(post.prior_mean), per_vehicle(post.prior_std))

    def imagine(self, hist: torch.Tensor, hist_mask: torch.Tensor, actions: torch.Tensor,
                noise: torch.Tensor | None = None, samples: int = 1,
                sizes: torch.Tensor | None = None) -> Imagination:
        """Prior rollouts of K action sequences x S samples per scene.

        hist (B, H, N, D), hist_mask (B, H, N), actions (B, K, F) int64, noise
        (B, K, S, F, N*Zv) standard normal (None -> zeros: prior means), sizes (B, N, 2)
        or None. Sample s uses ensemble member s mod E. Traceable.
        """
        self._check_actions(actions, hist.shape[0])
        b, k, f = actions.shape
        if noise is None:
            noise = hist.new_zeros(b, k, samples, f, self.stoch_dim)
        self._check_noise(noise, b, k, f)
        s = noise.shape[2]
        ctx = self.encode(hist, hist_mask, sizes)
        rows = k * s
        wide = InteractionContext(*(repeat_rows(x, rows) for x in ctx))  # (B*K*S, ...)
        flat_actions = actions[:, :, None].expand(-1, -1, s, -1).reshape(-1, f)  # (M, F)
        members = torch.arange(s, device=hist.device) % self.ensemble  # (S,)
        members = members[None, None].expand(b, k, -1).reshape(-1)  # (M,)
        roll = self._rollout(wide, flat_actions, noise.reshape(-1, f, self.stoch_dim), members)
        return self._imagination(roll, wide, ctx, b, k, s)

    # ------------------------------------------------------------------ internals

    def _normalised_sizes(self, sizes: torch.Tensor | None,
                          present: torch.Tensor) -> torch.Tensor:
        """(B, N, 2) metres or None -> normalised sizes, zero where absent."""
        default = torch.tensor(DEFAULT_SIZE, dtype=self.target_scale.dtype,
                               device=present.device)
        if sizes is None:
            sizes = default.expand(*present.shape, 2)
        elif tuple(sizes.shape) != (*present.shape, 2):
            raise ValueError(f"sizes must have shape {(*present.shape, 2)} (B, N, [length, "
                             f"width]), got {tuple(sizes.shape)}")
        scale = torch.tensor(SIZE_SCALE, dtype=default.dtype, device=default.device)
        return (sizes.to(default.dtype) - default) / scale * present[..., None]

    def _pair_features(self, state: torch.Tensor, sizes: torch.Tensor) -> torch.Tensor:
        """state (M, N, 4) physical, sizes (M, N, 2) normalised -> (M, N, N, PAIR_DIM): for
        receiver i (axis 1) and sender j (axis 2), s_j - s_i scaled by PAIR_SCALE; the
        closeness c = 1 / (1 + |dx|), the signed side dx / (1 + |dx|), the lateral overlap
        o = exp(-dy^2) (about 1 in the same lane), c * o and the closing speed times c * o
        (what car following reacts to); and j's size."""
        scale = torch.tensor(PAIR_SCALE, dtype=state.dtype, device=state.device)
        relative = (state[:, None, :, :] - state[:, :, None, :]) / scale  # (M, N, N, 4)
        dx, dy, dvx, _ = relative.unbind(-1)
        closeness = 1.0 / (1.0 + dx.abs())
        overlap = torch.exp(-dy * dy)
        near_same_lane = closeness * overlap
        proximity = torch.stack([closeness, dx * closeness, overlap, near_same_lane,
                                 -dvx * near_same_lane], dim=-1)  # (M, N, N, 5)
        size = sizes[:, None, :, :].expand(-1, state.shape[1], -1, -1)
        return torch.cat([relative, proximity, size], dim=-1)

    def _own_features(self, state: torch.Tensor) -> torch.Tensor:
        """state (M, N, 4) physical -> normalised [y, vx, vy] (M, N, 3) (x in the t0 frame
        says nothing about a vehicle: only its offsets to the others do)."""
        mean, std = self.encoder.obs_mean[1:KINEMATIC_DIM], self.encoder.obs_std[1:KINEMATIC_DIM]
        return (state[..., 1:] - mean) / std

    def _latent(self, hidden: torch.Tensor, noise: torch.Tensor, members: torch.Tensor | None,
                target: torch.Tensor | None, state: torch.Tensor):
        """Per-vehicle latent of one step. hidden (M, N, G), noise (M, N*Zv), target (M, N, 5)
        ([x, y, vx, vy] at the step's end, flag) or None -> z (M, N, Zv), prior mean/std
        (E, M, N*Zv), posterior mean/std (M, N*Zv) or None."""
        m, n, g = hidden.shape
        zv = self.vehicle_stoch
        prior_raw = self.prior(hidden.reshape(m * n, g))  # (E, M*N, 2Zv)
        prior_mean, prior_std = gaussian_stats(prior_raw, self.min_std)  # (E, M*N, Zv)
        if target is None:
            rows = members[:, None].expand(m, n).reshape(-1) * (m * n)
            rows = rows + torch.arange(m * n, device=hidden.device)  # (M*N,) of (E*M*N, 2Zv)
            chosen = prior_raw.reshape(-1, 2 * zv).index_select(0, rows)  # (M*N, 2Zv)
            mean, std = gaussian_stats(chosen, self.min_std)
            post = None
        else:
            offset = (target[..., :KINEMATIC_DIM] - self._constant_velocity(state))
            offset = offset / self.target_scale * target[..., KINEMATIC_DIM:]
            raw = self.posterior(torch.cat([hidden, offset, target[..., KINEMATIC_DIM:]], -1))
            mean, std = gaussian_stats(raw.reshape(m * n, 2 * zv), self.min_std)
            post = (mean.reshape(m, n * zv), std.reshape(m, n * zv))
        z = mean + std * noise.reshape(m * n, zv)
        flat = (prior_mean.reshape(-1, m, n * zv), prior_std.reshape(-1, m, n * zv))
        return z.reshape(m, n, zv), flat, post

    def _constant_velocity(self, state: torch.Tensor) -> torch.Tensor:
        """state (..., 4) -> the state one decision step later at constant velocity."""
        return torch.cat([state[..., :2] + state[..., 2:] * self.dt, state[..., 2:]], dim=-1)

    def _rollout(self, ctx: InteractionContext, actions: torch.Tensor, noise: torch.Tensor,
                 members: torch.Tensor | None,
                 targets: tuple[torch.Tensor, torch.Tensor] | None = None) -> Trajectory:
        """Roll M rows: ctx fields (M, ...), actions (M, F) int64, noise (M, F, N*Zv),
        members (M,) prior member per row (used without targets); targets (future (M, F, N,
        4), future_mask (M, F, N)) make the latents come from the posterior."""
        m, f = actions.shape
        n, j = self.n_vehicles, self.substeps
        hidden, state, present = ctx.hidden, ctx.last_state, ctx.present
        keep = present[..., None].to(hidden.dtype)  # (M, N, 1)
        is_ego = torch.cat([torch.ones_like(keep[:, :1]), torch.zeros_like(keep[:, 1:])], 1)
        embedded = self.action_embed(actions)  # (M, F, A)
        sub_dt = self.dt / j
        accel_scale = self.target_scale[2:] / self.dt
        profile_scale = 10.0 * self.encoder.obs_std[2:KINEMATIC_DIM]
        others = torch.zeros_like(state[:, 1:, 2:])  # (M, N-1, 2): no profile for the others
        std_scale = self.target_scale / j
        states, stds, presence, scene, stoch = [], [], [], [], []
        prior_means, prior_stds, post_means, post_stds = [], [], [], []
        for t in range(f):
            target = None
            if targets is not None:
                flag = (targets[1][:, t] & present)[..., None].to(hidden.dtype)  # (M, N, 1)
                target = torch.cat([targets[0][:, t] * flag, flag], dim=-1)  # (M, N, 5)
            z, prior, post = self._latent(hidden, noise[:, t], members, target, state)
            prior_means.append(prior[0])
            prior_stds.append(prior[1])
            if post is not None:
                post_means.append(post[0])
                post_stds.append(post[1])
            stoch.append(z.reshape(m, -1))
            action = embedded[:, t, None] * is_ego  # (M, N, A): zeros for the others
            profile = self.ego_profile.index_select(0, actions[:, t]) * profile_scale  # (M, J, 2)
            for i in range(j):
                message = self.interact(hidden, self._pair_features(state, ctx.sizes), present)
                inputs = torch.cat([message, z, action, is_ego, self._own_features(state)], -1)
                hidden = self.cell(inputs.reshape(m * n, -1),
                                   hidden.reshape(m * n, -1)).reshape(m, n, -1) * keep
                out = apply_2d(self.motion, hidden)  # (M, N, 6)
                ego_change = torch.cat([profile[:, i, None], others], dim=1)  # (M, N, 2)
                velocity = state[..., 2:] + out[..., :2] * accel_scale * sub_dt + ego_change
                position = state[..., :2] + 0.5 * (state[..., 2:] + velocity) * sub_dt
                state = torch.cat([position, velocity], dim=-1) * keep  # (M, N, 4)
                elapsed = t * j + i + 1  # sub-steps since t0
                stds.append((softplus(out[..., 2:]) + 0.01) * std_scale * elapsed)
                states.append(state)
            presence.append(apply_2d(self.presence, hidden)[..., 0])  # (M, N)
            scene.append(self._scene(hidden, present))
        prior_mean = torch.stack(prior_means, dim=2)  # (E, M, F, N*Zv)
        prior_std = torch.stack(prior_stds, dim=2)
        post_mean = torch.stack(post_means, dim=1) if post_means else None
        post_std = torch.stack(post_stds, dim=1) if post_stds else None
        return Trajectory(torch.stack(states, 1), torch.stack(stds, 1),
                          torch.stack(presence, 1), torch.stack(scene, 1), torch.stack(stoch, 1),
                          prior_mean, prior_std, post_mean, post_std)

    @staticmethod
    def _scene(hidden: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """[ego h, mean of the present others' h] (M, 2G): order-invariant scene summary."""
        others = present[:, 1:, None].to(hidden.dtype)  # (M, N-1, 1)
        pooled = (hidden[:, 1:] * others).sum(1) / others.sum(1).clamp(min=1.0)
        return torch.cat([hidden[:, 0], pooled], dim=-1)

    def _heads(self, roll: Trajectory, present: torch.Tensor) -> Heads:
        """Rollout (M, ...) -> Heads at the step ends (M, F, ...); present (M, N)."""
        j = self.substeps
        ends = torch.arange(j - 1, roll.states.shape[1], j, device=roll.states.device)
        presence = torch.where(present[:, None], roll.presence_logit,
                               torch.full_like(roll.presence_logit, ABSENT_LOGIT))
        scalars = apply_2d(self.scalar_heads, roll.scene)  # (M, F, 3)
        return Heads(roll.states.index_select(1, ends), roll.std.index_select(1, ends),
                     presence, scalars[..., 0], scalars[..., 1], scalars[..., 2])

    def _imagination(self, roll: Trajectory, wide: InteractionContext, ctx: InteractionContext,
                     b: int, k: int, s: int) -> Imagination:
        """Rollout of M = B*K*S rows -> Imagination (overlap checked at every sub-step)."""
        heads = self._heads(roll, wide.present)
        f = heads.reward.shape[1]

        def split(x: torch.Tensor) -> torch.Tensor:
            return x.reshape(b, k, s, *x.shape[1:])  # (B, K, S, F, ...)

        presence = torch.sigmoid(heads.presence_logit)  # (M, F, N)
        sub_presence = presence[:, :, None].expand(-1, -1, self.substeps, -1)
        sub_presence = sub_presence.reshape(presence.shape[0], -1, presence.shape[-1])
        # (M, F*J, N): each step's presence at its sub-steps
        overlap = overlap_risk(wide.last_state[:, None, :, :2], roll.states[..., :2],
                               roll.std[..., :2], sub_presence, self.vehicle_length,
                               self.vehicle_width, 1)  # (M, F*J)
        overlap = overlap.reshape(-1, f, self.substeps).amax(dim=-1)  # (M, F)
        head = torch.sigmoid(heads.collision_logit)
        risk = {"overlap": overlap, "head": head}.get(self.risk)
        if risk is None:
            risk = combine_risks(head, overlap)
        spread = ensemble_variance(roll.prior_mean).mean(dim=-1)  # (M, F)
        uncertainty = spread.reshape(b, k, s, f).mean(dim=2)  # (B, K, F)
        feats = torch.cat([roll.scene, roll.stoch], dim=-1)  # (M, F, 2G + N*Zv)
        return Imagination(split(heads.states_mean), split(heads.states_std), split(presence),
                           split(heads.reward), split(risk), split(head), split(overlap),
                           torch.sigmoid(split(heads.cont_logit)), uncertainty, split(feats),
                           ctx.last_state, ctx.present)


def repeat_rows(x: torch.Tensor, rows: int) -> torch.Tensor:
    """(B, ...) -> (B*rows, ...), each scene's row repeated `rows` times in a block."""
    return x[:, None].expand(x.shape[0], rows, *x.shape[1:]).reshape(-1, *x.shape[1:])
