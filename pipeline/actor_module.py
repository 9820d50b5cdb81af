"""Lightning wraps the actor-critic: imagined batches from real start states, Adam, logging.

The world model is a frozen submodule (its parameters take no gradient and are left out
of the optimiser); the maths lives in models/actor.py.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from models.actor import ActorCritic
from models.world_models import make_world_model
from pipeline.lit_module import epoch_seed


class StartDraws:
    """The histories imagination starts from: at (epoch, step) `batch_size` windows drawn
    with replacement from (seed, epoch, step) alone, so a batch never depends on what ran
    before (also in a fit resumed from a checkpoint). targets (W,) int64: the planner's
    decision in each window (None: no imitation); a draw returns -1 targets without them."""

    def __init__(self, hist: np.ndarray, hist_mask: np.ndarray, batch_size: int, seed: int,
                 targets: np.ndarray | None = None):
        self.hist, self.hist_mask = torch.from_numpy(hist), torch.from_numpy(hist_mask)
        self.targets = (torch.full((len(hist),), -1, dtype=torch.int64) if targets is None
                        else torch.as_tensor(targets, dtype=torch.int64))
        self.batch_size, self.seed = batch_size, seed

    def draw(self, epoch: int, step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, epoch, step))
        rows = torch.randint(len(self.hist), (self.batch_size,), generator=generator)
        return self.hist[rows], self.hist_mask[rows], self.targets[rows]


def step_loader(batches: int) -> DataLoader:
    """The step indices 0..batches-1 of an epoch (the module draws its own start states)."""
    return DataLoader(range(batches), batch_size=None)


class ActorModule(L.LightningModule):
    """Trains an ActorCritic in the imagination of a frozen world model.

    model_kwargs: the world model's constructor arguments (its weights come from
    `world_state` or a checkpoint); actor_kwargs: ActorCritic's; horizon T imagined steps;
    search_weight: weight of the imitation of the planner's decisions (0: none).
    """

    def __init__(self, model_kwargs: dict[str, Any], actor_kwargs: dict[str, Any],
                 horizon: int, lr: float, world_state: dict | None = None,
                 search_weight: float = 0.0):
        super().__init__()
        self.save_hyperparameters(ignore=["world_state"])
        self.world_model = make_world_model(**model_kwargs).eval().requires_grad_(False)
        if world_state is not None:
            self.world_model.load_state_dict(world_state)
        feat_dim = self.world_model.deter_dim + self.world_model.stoch_dim
        self.agent = ActorCritic(feat_dim, self.world_model.n_actions, **actor_kwargs)
        self.starts: StartDraws | None = None  # set before fitting (not part of the state)

    def train(self, mode: bool = True):
        super().train(mode)
        self.world_model.eval()  # frozen: never in training mode
        return self

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        hist, hist_mask, target = (t.to(self.device) for t in
                                   self.starts.draw(self.current_epoch, batch_idx))
        with torch.no_grad():
            ctx, start = self.world_model.start(hist, hist_mask.bool())
        rollout = self.agent.imagine(self.world_model, ctx, start, self.hparams.horizon)
        loss, figures = self.agent.losses(rollout)
        if self.hparams.search_weight:
            imitation, more = self.agent.imitation(rollout.feats[:, 0], target)
            loss, figures = loss + self.hparams.search_weight * imitation, figures | more
        self.log_dict({f"actor/{k}": v for k, v in figures.items()}, on_step=True,
                      on_epoch=False, batch_size=hist.shape[0], prog_bar=False)
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        self.agent.update_slow_critic()

    def configure_optimizers(self):
        agent = self.agent
        return torch.optim.Adam([*agent.actor.parameters(), *agent.critic.parameters()],
                                lr=self.hparams.lr)
