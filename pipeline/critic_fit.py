"""Fitting the risk critic (models/critic.py) on labelled decisions (the critic stage).

The world model is frozen: each batch of decisions is imagined under every candidate with
fresh latent noise (`critic.samples` per candidate), and only the critic learns. AdamW
with a one-cycle schedule; runs on the GPU when `train.accelerator` asks for one and
there is one.
"""

from __future__ import annotations

import sys
import time

import numpy as np

from pipeline.config import Config

EVAL_BATCH = 64  # decisions per evaluation batch


def pick_device(accelerator: str):
    import torch

    wants_gpu = accelerator in ("gpu", "cuda", "auto")
    return torch.device("cuda" if wants_gpu and torch.cuda.is_available() else "cpu")


class LabelBatches:
    """Imagined rollouts of labelled decisions; the world model runs without gradients."""

    def __init__(self, model, labels: dict[str, np.ndarray], horizon: int, samples: int,
                 device):
        import torch

        from models.candidates import enumerate_candidates

        self.model, self.labels, self.samples, self.device = model, labels, samples, device
        self.candidates = torch.from_numpy(enumerate_candidates(horizon)).to(device)

    def __call__(self, rows: np.ndarray, generator=None):
        """(Imagination, first (B, K, S), valid (B, K, S), scene) of decisions `rows`;
        scene (hist, hist_mask, candidates (B, K, F)) is what a critic with context reads."""
        import torch

        def tensor(name):
            return torch.from_numpy(self.labels[name][rows]).to(self.device)

        b, (k, f) = len(rows), self.candidates.shape
        noise = torch.randn(b, k, self.samples, f, self.model.stoch_dim, generator=generator)
        scene = (tensor("hist"), tensor("hist_mask"), self.candidates[None].expand(b, -1, -1))
        with torch.no_grad():
            out = self.model.imagine(*scene, noise.to(self.device))
        shape = (b, k, self.samples)
        return (out, tensor("first")[..., None].expand(shape),
                tensor("valid")[..., None].expand(shape), scene)


def fit_critic(model, labels: dict[str, np.ndarray], val: np.ndarray, cfg: Config, ctx,
               first_step: int = 0, replica_lanes: int = 0):
    """Train a RiskCritic on the decisions outside `val` (D,) bool; returns it (CPU, eval
    mode) and the held-out figures. `model` (the world model, its envelope set) is frozen;
    MLflow steps of the loss curve start at `first_step`; replica_lanes > 0: the prior is
    the traffic replica on a road of that many lanes (models/critic.py RiskCritic)."""
    import torch

    from models.critic import CriticEnsemble, hazard_loss, imagined_logits, make_critic, rank_loss

    c = cfg.critic
    torch.manual_seed(cfg.seed)
    device = pick_device(cfg.train.accelerator)
    model = model.to(device)
    for weight in model.parameters():
        weight.requires_grad_(False)
    critic = make_critic(c.members, feat_dim=model.deter_dim + model.stoch_dim,
                         n_vehicles=model.n_vehicles, hidden_dim=c.hidden, context=c.context,
                         horizon=cfg.export.horizon, replica_lanes=replica_lanes,
                         envelope=(cfg.export.envelope_length, cfg.export.envelope_width))
    critic = critic.to(device)
    members = len(critic.members) if isinstance(critic, CriticEnsemble) else 1
    if members > 1:
        critic.each = True  # every member is fitted on its own logits (their losses summed)
    batches = LabelBatches(model, labels, cfg.export.horizon, c.samples, device)
    train_rows, rng = np.flatnonzero(~val), np.random.default_rng(cfg.seed)
    per_epoch = max(len(train_rows) // c.batch_size, 1)
    optimizer = torch.optim.AdamW(critic.parameters(), lr=c.lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, c.lr,
                                                   total_steps=c.epochs * per_epoch)
    for epoch in range(c.epochs):
        start, total = time.perf_counter(), 0.0
        order = rng.permutation(train_rows)
        for i in range(per_epoch):
            out, first, valid, scene = batches(order[i * c.batch_size:(i + 1) * c.batch_size])
            logits = imagined_logits(critic, out, *scene)
            loss = hazard_loss(logits, first, valid)
            if c.rank_weight > 0:
                loss = loss + c.rank_weight * rank_loss(logits, first, valid)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item() / members  # logged per member
        ctx.tracker.log_metrics({"critic/train_loss": total / per_epoch}, step=first_step + epoch)
        print(f"[critic] epoch {epoch + 1}/{c.epochs} loss {total / per_epoch:.4f} "
              f"({time.perf_counter() - start:.0f} s)", file=sys.stderr, flush=True)
    if members > 1:
        critic.each = False  # from here on the members' mean
    critic = critic.cpu().eval()
    model.cpu()
    return critic, held_out_figures(critic, model, labels, np.flatnonzero(val), cfg)


def held_out_figures(critic, model, labels: dict[str, np.ndarray], rows: np.ndarray,
                     cfg: Config) -> dict[str, float]:
    """Risk AUROC and mean log loss of the first-event step, critic vs its prior (`model`:
    the world model's own risk; `replica`: the traffic replica's), on the held-out
    decisions (fixed noise)."""
    import torch

    from evaluation.metrics import auroc, decision_auroc
    from models.critic import (
        PRIOR_EPS,
        critic_prior,
        event_probability,
        hazard_loss,
        imagined_logits,
    )

    batches = LabelBatches(model, labels, cfg.export.horizon, cfg.critic.samples, "cpu")
    generator = torch.Generator().manual_seed(cfg.seed)
    prior = "replica" if critic.replica_lanes else "model"
    probs = {"critic": [], prior: []}
    losses = {"critic": 0.0, prior: 0.0}
    with torch.no_grad():
        for i in range(0, len(rows), EVAL_BATCH):
            out, first, valid, scene = batches(rows[i:i + EVAL_BATCH], generator)
            base = critic_prior(critic, out, *scene).clamp(PRIOR_EPS, 1 - PRIOR_EPS)
            for name, logits in (("critic", imagined_logits(critic, out, *scene)),
                                 (prior, torch.logit(base))):
                losses[name] += hazard_loss(logits, first, valid).item() * valid.sum().item()
                probs[name].append(event_probability(logits).mean(dim=2).numpy())
    valid = labels["valid"][rows]
    label = labels["first"][rows] < cfg.export.horizon
    count = valid.sum() * cfg.critic.samples
    figures = {}
    for name in probs:
        prob = np.concatenate(probs[name])
        figures[f"val_auroc/{name}"] = auroc(prob, label, valid)
        figures[f"val_decision_auroc/{name}"] = decision_auroc(prob, label, valid)
        figures[f"val_log_loss/{name}"] = losses[name] / max(count, 1)
    return figures
