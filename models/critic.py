"""Risk critic: the collision probability of a candidate maneuver, learned from the truth.

The world model's own risk (models/risk.py) reads collisions off forecast geometry with a
margin; its forecasts are least accurate exactly where the planner is tempted (cutting
in, closing on a leader), so the margin costs speed and still misses crashes. The critic
is trained on what really happens: for every candidate at a recorded decision, the
decision step at which the true simulator, stepped on copies, first crashes or brings
another vehicle into the safety envelope (`pipeline/critic_labels.py`).

It is a per-step hazard on top of the frozen world model's imagination: at step t,

    h_t = sigmoid(mlp([latent_t, scene_{t-1}, scene_t]))

where latent_t is the rollout state [h_t, z_t] and scene_t the forecast ego state and
every neighbour's offset, relative velocity, position std and presence at the end of step
t (scene_0 is the last observed frame); with `context` the MLP also reads the candidate's
actions and the observed scene's lane summary (models/lane_scene.py: each lane's nearest
leader and follower, the geometry a distance-ordered slot list hides), the same at every
step. P(event within the horizon) = 1 - prod_t (1 - h_t).
Trained by the exact likelihood of the first-event step (steps after an event have no
label: the truth stops there).
"""

from __future__ import annotations

import torch
from torch import nn

from models.candidates import ACTION_NAMES
from models.encoder import mlp
from models.lane_scene import WIDTH as LANE_WIDTH
from models.lane_scene import lane_scene
from models.traffic import TrafficReplica

PRIOR_EPS = 1e-4  # the prior probability is clipped to [eps, 1 - eps] before its logit
SCENE_SCALE = (10.0, 2.0, 5.0, 1.0)  # m, m, m/s, m/s: offsets and velocities to O(1)


def scene_maps(n_vehicles: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The linear maps of `scene_features` for N slots: values (7N, W), gate (N, W) and
    gate_bias (W,), W = 4 + 7 (N-1).

    Each feature is a fixed linear function of [states, stds, presence] (the ego's scaled
    state; a neighbour's scaled offset from the ego, scaled std, presence flag) times a
    presence gate (1 for the ego's state and the flags, the neighbour's presence
    otherwise). As matrix products the features need no broadcast over small inner axes,
    which onnxruntime runs element by element.
    """
    n, width = n_vehicles, 4 + 7 * (n_vehicles - 1)
    values, gate, gate_bias = torch.zeros(7 * n, width), torch.zeros(n, width), torch.zeros(width)
    inverse = [1.0 / s for s in SCENE_SCALE]
    gate_bias[:4] = 1.0
    for k in range(4):
        values[k, k] = inverse[k]
    for i in range(1, n):
        base = 4 + 7 * (i - 1)
        for k in range(4):
            values[4 * i + k, base + k] = inverse[k]  # the neighbour's state ...
            values[k, base + k] = -inverse[k]  # ... minus the ego's
        for k in range(2):
            values[4 * n + 2 * i + k, base + 4 + k] = inverse[k]
        values[6 * n + i, base + 6] = 1.0
        gate[i, base:base + 6] = 1.0
        gate_bias[base + 6] = 1.0
    return values, gate, gate_bias


def scene_features(states: torch.Tensor, std: torch.Tensor, presence: torch.Tensor,
                   maps: tuple[torch.Tensor, ...] | None = None) -> torch.Tensor:
    """states (..., N, 4) [x, y, vx, vy], std (..., N, 2) position stds, presence (..., N)
    -> (..., 4 + 7 (N-1)): the ego's state, then each neighbour's offset from the ego,
    position std and presence (absent neighbours: offsets and stds zeroed). maps:
    `scene_maps(N)` (built here when None)."""
    values, gate, gate_bias = maps if maps is not None else scene_maps(states.shape[-2])
    raw = torch.cat([states.flatten(-2), std.flatten(-2), presence], dim=-1)  # (..., 7N)
    return (raw @ values) * (presence @ gate + gate_bias)


class RiskCritic(nn.Module):
    """Per-step hazard over imagined rollouts; see the module docstring.

    feat_dim: the world model's [h, z] width; n_vehicles N slots; hidden_dim MLP width;
    context: the hazard also reads the observed scene's lane summary
    (models/lane_scene.py) and the candidate's actions (one-hot, `horizon` steps).
    replica_lanes: > 0, the prior is the traffic replica's per-step probability
    (models/traffic.py, on a road of that many lanes, with the safety `envelope` (length,
    width)) instead of the world model's own risk; 0: the world model's.
    """

    def __init__(self, feat_dim: int, n_vehicles: int, hidden_dim: int = 128,
                 context: bool = False, horizon: int = 0, replica_lanes: int = 0,
                 envelope: tuple[float, float] = (8.0, 2.5)):
        super().__init__()
        if feat_dim < 1 or n_vehicles < 2 or hidden_dim < 1:
            raise ValueError(f"feat_dim and hidden_dim must be >= 1 and n_vehicles >= 2, got "
                             f"{feat_dim}, {n_vehicles}, {hidden_dim}")
        if context and horizon < 1:
            raise ValueError(f"a critic with context needs the horizon (>= 1), got {horizon}")
        self.feat_dim, self.n_vehicles, self.hidden_dim = feat_dim, n_vehicles, hidden_dim
        self.context, self.horizon = bool(context), int(horizon) if context else 0
        if replica_lanes < 0:
            raise ValueError(f"replica_lanes must be >= 0, got {replica_lanes}")
        self.replica_lanes, self.envelope = int(replica_lanes), tuple(float(v) for v in envelope)
        self.replica = TrafficReplica(replica_lanes, envelope) if replica_lanes else None
        scene_dim = 4 + 7 * (n_vehicles - 1)
        self.net = mlp(feat_dim + 2 * scene_dim + 1, hidden_dim, 1)
        # the context is the same at every step and sample: its share of the first layer
        # is computed once per candidate and added (a Linear over the concatenation)
        self.context_in = (nn.Linear(LANE_WIDTH + len(ACTION_NAMES) * self.horizon, hidden_dim,
                                     bias=False) if context else None)
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)
        for name, tensor in zip(("values", "gate", "gate_bias"), scene_maps(n_vehicles),
                                strict=True):
            self.register_buffer(f"scene_{name}", tensor, persistent=False)

    def forward(self, feats: torch.Tensor, start: torch.Tensor, states: torch.Tensor,
                std: torch.Tensor, presence: torch.Tensor, prior: torch.Tensor,
                context: torch.Tensor | None = None) -> torch.Tensor:
        """Hazard logits (..., F): a learned correction of the `prior` per-step
        probability (..., F) (the world model's own risk), zero at initialisation.

        feats (..., F, feat_dim) rollout latents; start (..., N, 4) the last observed
        states (broadcast over the leading axes) with every slot present there as
        presence 1/0 in presence's t0; states (..., F, N, 4) forecast means, std (..., F,
        N, 2) their position stds, presence (..., F + 1, N) with t0 first; context (...,
        C) (`critic_context`; needed when the critic has context), the same at every step,
        its leading axes broadcast to feats' (a context of (B, K, 1, C) serves S samples).
        """
        inputs, prior_logit = self.step_inputs(feats, start, states, std, presence, prior)
        return self.hazard(inputs, prior_logit, context)

    def step_inputs(self, feats, start, states, std, presence, prior):
        """(inputs (..., F, feat_dim + 2 scene + 1), prior logits (..., F)) of `forward`."""
        start = start.expand(*states.shape[:-3], *start.shape[-2:])[..., None, :, :]
        path = torch.cat([start, states], dim=-3)  # (..., F+1, N, 4)
        spread = torch.cat([torch.zeros_like(std[..., :1, :, :]), std], dim=-3)
        maps = (self.scene_values, self.scene_gate, self.scene_gate_bias)
        scene = scene_features(path, spread, presence, maps)  # (..., F+1, S)
        prior_logit = torch.logit(prior.clamp(PRIOR_EPS, 1 - PRIOR_EPS))
        inputs = torch.cat([feats, scene[..., :-1, :], scene[..., 1:, :], prior_logit[..., None]],
                           dim=-1)
        return inputs, prior_logit

    def hazard(self, inputs: torch.Tensor, prior_logit: torch.Tensor,
               context: torch.Tensor | None) -> torch.Tensor:
        """The hazard logits (..., F) of `step_inputs`' output and the context."""
        first = self.net[0](inputs)  # (..., F, hidden)
        if self.context_in is not None:
            if context is None:
                raise ValueError("this critic reads a context: pass hist, hist_mask and "
                                 "candidates (imagined_logits) or critic_context(...)")
            first = first + self.context_in(context)[..., None, :]
        return prior_logit + self.net[1:](first)[..., 0]


class CriticEnsemble(nn.Module):
    """`members` RiskCritics of the same shape (RiskCritic's arguments), each initialised
    apart and fitted on the same batches; the hazard logits are the members' mean.

    Called like a RiskCritic. The step inputs (the scene features) are computed once for
    all members; only the MLPs are repeated. While `each` is True (fitting) the call
    returns every member's logits (M, ..., F) instead, so each member is fitted alone.
    """

    def __init__(self, members: int, feat_dim: int, n_vehicles: int, hidden_dim: int = 128,
                 context: bool = False, horizon: int = 0, replica_lanes: int = 0,
                 envelope: tuple[float, float] = (8.0, 2.5)):
        super().__init__()
        if members < 2:
            raise ValueError(f"an ensemble needs at least 2 members, got {members}")
        self.members = nn.ModuleList(RiskCritic(feat_dim, n_vehicles, hidden_dim, context,
                                                horizon, replica_lanes, envelope)
                                     for _ in range(members))
        first = self.members[0]
        self.feat_dim, self.n_vehicles, self.hidden_dim = feat_dim, n_vehicles, hidden_dim
        self.context, self.horizon = first.context, first.horizon
        self.replica_lanes, self.envelope = first.replica_lanes, first.envelope
        self.replica = first.replica
        self.each = False

    def forward(self, feats, start, states, std, presence, prior, context=None):
        inputs, prior_logit = self.members[0].step_inputs(feats, start, states, std, presence,
                                                          prior)
        logits = torch.stack([m.hazard(inputs, prior_logit, context) for m in self.members])
        return logits if self.each else logits.mean(dim=0)


def make_critic(members: int = 1, **kwargs) -> RiskCritic | CriticEnsemble:
    """A RiskCritic (members 1) or a CriticEnsemble of `members`; kwargs: RiskCritic's."""
    if members < 1:
        raise ValueError(f"a critic needs at least 1 member, got {members}")
    return RiskCritic(**kwargs) if members == 1 else CriticEnsemble(members, **kwargs)


def critic_spec(critic: RiskCritic | CriticEnsemble) -> dict:
    """The `make_critic` arguments that rebuild `critic` (critic.json)."""
    spec = {"feat_dim": critic.feat_dim, "n_vehicles": critic.n_vehicles,
            "hidden_dim": critic.hidden_dim, "context": critic.context,
            "horizon": critic.horizon}
    if critic.replica_lanes:
        spec["replica_lanes"], spec["envelope"] = critic.replica_lanes, list(critic.envelope)
    if isinstance(critic, CriticEnsemble):
        spec["members"] = len(critic.members)
    return spec


def event_probability(logits: torch.Tensor) -> torch.Tensor:
    """P(an event within the horizon) (...) from hazard logits (..., F)."""
    return 1.0 - torch.prod(torch.sigmoid(-logits), dim=-1)


def hazard_loss(logits: torch.Tensor, first: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood of the first-event step (summed over any extra leading
    axes of `logits`: a CriticEnsemble's members while fitting).

    logits (..., F) hazards; first (...) int64, the 0-based step of the first event, F
    when none; valid (...) bool, the candidates that were labelled. Steps up to the event
    are binary targets (1 at the event, 0 before); later steps carry no label.
    """
    steps = torch.arange(logits.shape[-1], device=logits.device)
    labelled = (steps <= first[..., None]) & valid[..., None]  # (..., F)
    target = (steps == first[..., None]).to(logits.dtype).expand_as(logits)
    per_step = nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none")
    count = valid.sum().clamp(min=1)
    return (per_step * labelled).sum() / count


def event_log_odds(logits: torch.Tensor) -> torch.Tensor:
    """log(P / (1 - P)) (...) of P(an event within the horizon) from hazard logits (..., F),
    computed from the survival log-probability so it stays finite for small P."""
    survive = nn.functional.logsigmoid(-logits).sum(dim=-1)  # log(1 - P), <= 0
    return torch.log(-torch.expm1(survive.clamp(max=-1e-7))) - survive


def rank_loss(logits: torch.Tensor, first: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean logistic loss over the pairs of one decision's candidates of which one truly
    meets an event within the horizon and the other does not: softplus(safe - event) of
    their event log-odds, so it falls as the critic orders each decision's candidates as the
    truth does (the order the decision rule acts on). Summed over extra leading axes of
    `logits` like `hazard_loss`.

    logits (..., B, K, S, F); first and valid (B, K, S) as in `hazard_loss`. Decisions
    with only one class give no pairs; no pair at all gives 0.
    """
    odds = event_log_odds(logits).transpose(-1, -2)  # (..., B, S, K)
    event = ((first < logits.shape[-1]) & valid).transpose(-1, -2)  # (B, S, K)
    safe = ((first >= logits.shape[-1]) & valid).transpose(-1, -2)
    pairs = event[..., :, None] & safe[..., None, :]  # (B, S, K event, K safe)
    gap = odds[..., None, :] - odds[..., :, None]  # safe's odds minus the event's
    loss = nn.functional.softplus(gap) * pairs
    return loss.sum() / pairs.sum().clamp(min=1)


def critic_context(hist: torch.Tensor, hist_mask: torch.Tensor,
                   candidates: torch.Tensor) -> torch.Tensor:
    """(B, K, 1, C) context of a critic with context (the same for every sample): the lane
    summary of hist (B, H, N, D) / hist_mask (B, H, N), and each candidate's one-hot
    actions, candidates (B, K, F)."""
    lanes = lane_scene(hist, hist_mask.to(hist.dtype))  # (B, W)
    actions = torch.arange(len(ACTION_NAMES), device=candidates.device)
    one_hot = (candidates[..., None] == actions).to(hist.dtype).flatten(-2)  # (B, K, F * A)
    lanes = lanes[:, None, :].expand(*one_hot.shape[:2], lanes.shape[-1])
    return torch.cat([lanes, one_hot], dim=-1)[:, :, None, :]


def imagined_logits(critic: RiskCritic, out, hist: torch.Tensor | None = None,
                    hist_mask: torch.Tensor | None = None,
                    candidates: torch.Tensor | None = None) -> torch.Tensor:
    """Hazard logits (B, K, S, F) of the critic over a world model Imagination `out` of
    hist (B, H, N, D), hist_mask (B, H, N) under candidates (B, K, F) (those three only
    needed by a critic with context or the replica prior)."""
    present = out.present.to(out.presence.dtype)[:, None, None, None]  # (B, 1, 1, 1, N)
    present = present.expand(*out.presence.shape[:3], 1, -1)
    presence = torch.cat([present, out.presence], dim=-2)  # (B, K, S, F+1, N)
    start = out.last_state[:, None, None]  # (B, 1, 1, N, 4)
    scene = hist is not None and hist_mask is not None and candidates is not None
    context = critic_context(hist, hist_mask, candidates) if critic.context and scene else None
    return critic(out.feats, start, out.states_mean, out.states_std[..., :2], presence,
                  critic_prior(critic, out, hist, hist_mask, candidates), context)


def critic_prior(critic: RiskCritic, out, hist: torch.Tensor | None = None,
                 hist_mask: torch.Tensor | None = None,
                 candidates: torch.Tensor | None = None) -> torch.Tensor:
    """The per-step probability (B, K, S, F) the critic corrects: the traffic replica's
    (models/traffic.py; the same for every sample) or the world model's own risk."""
    if not critic.replica_lanes:
        return out.collision
    if hist is None or hist_mask is None or candidates is None:
        raise ValueError("this critic's prior is the traffic replica: pass hist, hist_mask "
                         "and candidates (imagined_logits)")
    return critic.replica(hist, hist_mask, candidates)[:, :, None, :].expand_as(out.collision)
