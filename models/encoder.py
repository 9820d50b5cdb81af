"""Scene encoder: a set of vehicles per frame -> one embedding, a history -> one summary.

Each vehicle slot becomes a token (a small MLP over its normalised state, its state
relative to the ego in the same frame and a presence flag). A multi-head attention pool
whose query comes from the ego token (plus a learned query) reads the tokens of the
present vehicles and an always-present learned "null" token, so the frame embedding is
invariant to the order of slots 1..N-1 and absent vehicles (masked to zero before the
MLP and to -inf in the attention) cannot change it. A GRU summarises the H frame
embeddings of the history.

Callers pass physical units; the normalisation buffers (`obs_mean`, `obs_std`) live in
the module and so in its state_dict.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

KINEMATIC_DIM = 4  # [x, y, vx, vy]: the part of a vehicle state that future frames carry
LANE_FEATURE = 6  # index of lane_index in the window contract's history features
CONTEXT_DIM = 8  # leader [dx, dy, dvx, dvy] + flag, velocity change [dvx, dvy] + flag
NO_LEADER_GAP = 1e6  # normalised gap of slots without a leader (never the minimum)


def mlp(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    """Linear -> LayerNorm -> SiLU -> Linear."""
    return nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.LayerNorm(hidden_dim), nn.SiLU(),
                         nn.Linear(hidden_dim, out_dim))


def as_float_vector(values, length: int, name: str) -> torch.Tensor:
    """A (length,) float32 tensor from a sequence/array/tensor, or a ValueError naming it."""
    vector = torch.as_tensor(values, dtype=torch.float32).detach().flatten().clone()
    if vector.shape != (length,):
        raise ValueError(f"{name} must hold {length} values, got shape "
                         f"{tuple(torch.as_tensor(values).shape)}")
    if not torch.isfinite(vector).all():
        raise ValueError(f"{name} holds non-finite values: {vector.tolist()}")
    return vector


class HistoryCode(NamedTuple):
    """What the encoder extracts from a history (B batch, N vehicles, C embed, G hidden)."""

    summary: torch.Tensor  # (B, G) GRU summary of the H frame embeddings
    tokens: torch.Tensor  # (B, N, C) vehicle tokens of the last history frame t0
    last_state: torch.Tensor  # (B, N, 4) [x, y, vx, vy] at t0, physical units, 0 if absent
    present: torch.Tensor  # (B, N) bool: slot present at t0


class AttentionPool(nn.Module):
    """Multi-head attention of one ego-derived query over a set of tokens (+ a null token)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"embed_dim {dim} must be divisible by attention heads {heads}")
        self.heads = heads
        self.query = nn.Parameter(torch.zeros(dim))
        self.query_from_ego = nn.Linear(dim, dim)
        self.key_value = nn.Linear(dim, 2 * dim)
        self.null = nn.Parameter(0.02 * torch.randn(dim))
        self.out = nn.Linear(dim, dim)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """tokens (M, N, C), mask (M, N) bool, slot 0 = ego -> pooled (M, C)."""
        m, _, c = tokens.shape
        d = c // self.heads
        null = self.null.expand(m, 1, c)
        keys_in = torch.cat([null, tokens], dim=1)  # (M, N+1, C)
        valid = torch.cat([torch.ones_like(mask[:, :1]), mask], dim=1)  # (M, N+1)
        query = (self.query + self.query_from_ego(tokens[:, 0])).reshape(m, self.heads, 1, d)
        key, value = self.key_value(keys_in).chunk(2, dim=-1)
        key = key.reshape(m, -1, self.heads, d).transpose(1, 2)  # (M, heads, N+1, d)
        value = value.reshape(m, -1, self.heads, d).transpose(1, 2)  # (M, heads, N+1, d)
        scores = query @ key.transpose(-1, -2) / math.sqrt(d)  # (M, heads, 1, N+1)
        scores = scores.masked_fill(~valid[:, None, None, :], -1e9)
        pooled = torch.softmax(scores, dim=-1) @ value  # (M, heads, 1, d)
        return self.out(pooled.reshape(m, c))  # (M, C)


class SetEncoder(nn.Module):
    """Vehicle tokens + attention pool: one frame of N slots -> (frame embedding, tokens)."""

    def __init__(self, token_in_dim: int, embed_dim: int, hidden_dim: int, heads: int):
        super().__init__()
        self.token = mlp(token_in_dim, hidden_dim, embed_dim)
        self.pool = AttentionPool(embed_dim, heads)
        self.frame = mlp(2 * embed_dim, hidden_dim, embed_dim)

    def forward(self, features: torch.Tensor, mask: torch.Tensor):
        """features (M, N, Din), mask (M, N) bool -> frame (M, C), tokens (M, N, C)."""
        tokens = self.token(features)  # (M, N, C)
        pooled = self.pool(tokens, mask)
        frame = self.frame(torch.cat([pooled, tokens[:, 0]], dim=-1))
        return frame, tokens


class SceneEncoder(nn.Module):
    """Normalises physical states, encodes frames with a SetEncoder, summarises history.

    Token features per slot (Din = D + 14): normalised [x, y, vx, vy], the same relative
    to the ego slot of that frame (scaled by obs_std), the normalised extra features
    (cos, sin, lane for D=7; zeros for future frames, which only carry [x, y, vx, vy]),
    a flag "extra features known", the presence flag, then the interaction and motion
    features only history frames know (zeros for future frames): [x, y, vx, vy] of the
    slot's leader (nearest present vehicle ahead in the same lane) relative to the slot
    plus a "has a leader" flag (5), and the velocity change since the previous frame
    plus a "previous frame present" flag (3). The leader drives the car-following
    acceleration of simulated (IDM) traffic, which no single-slot feature reveals.
    Absent slots get all zeros. Everything is computed on normalised values, so units
    do not matter.
    """

    def __init__(self, obs_dim: int, embed_dim: int, hidden_dim: int, heads: int = 4):
        super().__init__()
        if obs_dim < KINEMATIC_DIM:
            raise ValueError(f"obs_dim must be at least {KINEMATIC_DIM} ([x, y, vx, vy]), "
                             f"got {obs_dim}")
        self.obs_dim = obs_dim
        self.register_buffer("obs_mean", torch.zeros(obs_dim))
        self.register_buffer("obs_std", torch.ones(obs_dim))
        self.set_encoder = SetEncoder(obs_dim + 6 + CONTEXT_DIM, embed_dim, hidden_dim,
                                      heads)
        self.history = nn.GRU(embed_dim, hidden_dim, batch_first=True)

    def set_normalization(self, obs_mean, obs_std) -> None:
        """Store per-feature mean and std (D,); a std below 1e-6 (constant feature) -> 1."""
        mean = as_float_vector(obs_mean, self.obs_dim, "obs_mean")
        std = as_float_vector(obs_std, self.obs_dim, "obs_std")
        std = torch.where(std > 1e-6, std, torch.ones_like(std))
        self.obs_mean.copy_(mean)
        self.obs_std.copy_(std)

    def token_features(self, kin: torch.Tensor, extra: torch.Tensor, has_extra: float,
                       mask: torch.Tensor, motion: torch.Tensor) -> torch.Tensor:
        """kin (M, N, 4), extra (M, N, D-4) physical, mask (M, N), motion (M, N, 3)
        -> features (M, N, D+14)."""
        present = mask[..., None]
        kin = torch.where(present, kin, torch.zeros_like(kin))
        extra = torch.where(present, extra, torch.zeros_like(extra))
        k_mean, k_std = self.obs_mean[:KINEMATIC_DIM], self.obs_std[:KINEMATIC_DIM]
        e_mean, e_std = self.obs_mean[KINEMATIC_DIM:], self.obs_std[KINEMATIC_DIM:]
        kin_n = (kin - k_mean) / k_std
        relative = kin_n - kin_n[:, :1]
        extra_n = (extra - e_mean) / e_std * has_extra
        flags = torch.ones_like(kin[..., :2])
        flags = flags * torch.tensor([has_extra, 1.0], dtype=kin.dtype, device=kin.device)
        leader = self.leader_features(kin_n, extra_n, mask) * has_extra
        features = torch.cat([kin_n, relative, extra_n, flags, leader, motion * has_extra],
                             dim=-1)
        return torch.where(present, features, torch.zeros_like(features))

    def leader_features(self, kin_n: torch.Tensor, extra_n: torch.Tensor,
                        mask: torch.Tensor) -> torch.Tensor:
        """Normalised kin_n (M, N, 4), extra_n (M, N, D-4), mask (M, N) -> (M, N, 5):
        the leader's [x, y, vx, vy] minus the slot's, and a flag (zeros without leader).

        Same lane = equal lane index (when the features carry one, else any lane)."""
        ahead = kin_n[:, None, :, 0] - kin_n[:, :, None, 0]  # (M, N, N) x_j - x_i
        candidate = mask[:, None, :] & (ahead > 0)  # strictly ahead: never the slot itself
        lane = LANE_FEATURE - KINEMATIC_DIM
        if extra_n.shape[-1] > lane:
            lanes = extra_n[..., lane]
            candidate = candidate & ((lanes[:, None, :] - lanes[:, :, None]).abs() < 1e-3)
        gap = torch.where(candidate, ahead, torch.full_like(ahead, NO_LEADER_GAP))
        index = gap.argmin(dim=-1)  # (M, N)
        found = candidate.any(dim=-1, keepdim=True)  # (M, N, 1)
        leader = torch.gather(kin_n, 1, index[..., None].expand(-1, -1, KINEMATIC_DIM))
        relative = torch.where(found, leader - kin_n, torch.zeros_like(kin_n))
        return torch.cat([relative, found.to(kin_n.dtype)], dim=-1)

    @staticmethod
    def motion_features(kin_n: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Normalised states (B, T, N, 4), mask (B, T, N) -> (B, T, N, 3): velocity change
        since the previous frame (x10, as it is small against the velocity spread) and a
        flag "present in both frames"; zeros in the first frame."""
        both = mask[:, 1:] & mask[:, :-1]  # (B, T-1, N)
        change = 10 * (kin_n[:, 1:, :, 2:] - kin_n[:, :-1, :, 2:])  # (B, T-1, N, 2)
        change = torch.where(both[..., None], change, torch.zeros_like(change))
        motion = torch.cat([change, both[..., None].to(kin_n.dtype)], dim=-1)
        first = torch.zeros_like(kin_n[:, :1, :, :3])  # (B, 1, N, 3)
        return torch.cat([first, motion], dim=1)  # (B, T, N, 3)

    def encode_frames(self, states: torch.Tensor, mask: torch.Tensor, has_extra: bool):
        """states (B, T, N, Ds) physical, mask (B, T, N) -> frames (B, T, C), tokens (B,T,N,C)."""
        b, t, n, _ = states.shape
        kin_all = torch.where(mask[..., None], states[..., :KINEMATIC_DIM],
                              torch.zeros_like(states[..., :KINEMATIC_DIM]))
        k_mean, k_std = self.obs_mean[:KINEMATIC_DIM], self.obs_std[:KINEMATIC_DIM]
        motion = self.motion_features((kin_all - k_mean) / k_std, mask).reshape(b * t, n, 3)
        flat = states.reshape(b * t, n, -1)  # (B*T, N, Ds)
        flat_mask = mask.reshape(b * t, n)  # (B*T, N)
        kin = flat[..., :KINEMATIC_DIM]
        if has_extra:
            extra = flat[..., KINEMATIC_DIM:]
        else:
            extra = torch.zeros_like(flat[..., :1]).expand(-1, -1, self.obs_dim - KINEMATIC_DIM)
        features = self.token_features(kin, extra, float(has_extra), flat_mask, motion)
        frames, tokens = self.set_encoder(features, flat_mask)
        return frames.reshape(b, t, -1), tokens.reshape(b, t, n, -1)  # (B, T, C), (B, T, N, C)

    def encode_history(self, hist: torch.Tensor, hist_mask: torch.Tensor) -> HistoryCode:
        """hist (B, H, N, D) physical, hist_mask (B, H, N) bool -> HistoryCode."""
        frames, tokens = self.encode_frames(hist, hist_mask, has_extra=True)
        _, last_hidden = self.history(frames)  # (1, B, G)
        present = hist_mask[:, -1]
        kin = hist[:, -1, :, :KINEMATIC_DIM]
        last_state = torch.where(present[..., None], kin, torch.zeros_like(kin))
        return HistoryCode(last_hidden[0], tokens[:, -1], last_state, present)

    def encode_states(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Future frames: states (B, F, N, 4) physical, mask (B, F, N) -> embeddings (B, F, C)."""
        frames, _ = self.encode_frames(states, mask, has_extra=False)
        return frames
