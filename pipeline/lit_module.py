"""Lightning wraps the world model: optimiser, the combined loss and logging.

The maths lives in `models/`; this module only feeds batches to
`models.world_models.training_loss` (the variant's loss) and logs what it returns.
"""

from __future__ import annotations

import math
import random
import time
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from models.losses import LossWeights
from models.world_model import WorldModel
from models.world_models import make_world_model, training_loss

TENSOR_KEYS = ("hist", "hist_mask", "actions", "future", "future_mask", "reward", "collision",
               "cont", "step_mask", "label_mask")
OPTIONAL_KEYS = ("size", "future_frames", "future_frames_mask")  # read by the interaction variant


class WindowDataset(Dataset):
    """Windows (the contract's arrays) as a map-style dataset of tensor dicts."""

    def __init__(self, arrays: dict[str, np.ndarray]):
        keys = TENSOR_KEYS + tuple(k for k in OPTIONAL_KEYS if k in arrays)
        self.tensors = {k: torch.from_numpy(np.ascontiguousarray(arrays[k])) for k in keys}
        self.size = len(arrays["actions"])

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {k: v[index] for k, v in self.tensors.items()}


def window_loader(arrays: dict[str, np.ndarray], batch_size: int, shuffle: bool, seed: int,
                  num_workers: int = 0) -> DataLoader:
    """Batches of windows; shuffled in an order that depends on (seed, epoch) alone."""
    dataset = WindowDataset(arrays)
    sampler = EpochShuffle(len(dataset), seed) if shuffle else None
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                      persistent_workers=num_workers > 0)


def epoch_seed(seed: int, *position: int) -> int:
    """A seed of its own for each (epoch[, batch]) of a training seeded with `seed`."""
    return int(np.random.SeedSequence([seed, *position]).generate_state(1)[0])


class EpochShuffle(Sampler[int]):
    """A permutation drawn from (seed, epoch) alone (Lightning calls `set_epoch` before each
    epoch): a training resumed at epoch k sees the batches one that ran through saw, where
    a loader's own generator would start again from its first epoch's order."""

    def __init__(self, size: int, seed: int):
        self.size, self.seed, self.epoch = size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
        return iter(torch.randperm(self.size, generator=generator).tolist())

    def __len__(self) -> int:
        return self.size


class EpochSeed(L.Callback):
    """Reseeds torch, numpy and random before every training batch from (seed, epoch,
    batch) and before every validation from (seed, epoch): the sampled latents then do not
    depend on what ran before in this process, so a training resumed from an epoch's
    checkpoint goes on as one that ran through (Lightning's checkpoints hold no generator
    states, and the first epoch of a fit draws from them where later ones do not)."""

    def __init__(self, seed: int):
        self.seed = seed

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule,
                             batch: Any, batch_idx: int) -> None:
        reseed(epoch_seed(self.seed, trainer.current_epoch, batch_idx))

    def on_validation_epoch_start(self, trainer: L.Trainer,
                                  pl_module: L.LightningModule) -> None:
        reseed(epoch_seed(self.seed, trainer.current_epoch))


class DataWait(L.Callback):
    """Time of the training steps spent waiting for the next batch (the loader, from the end
    of one step to the start of the next) against the time spent in the steps."""

    def __init__(self) -> None:
        self.waiting = self.stepping = 0.0
        self.mark: float | None = None

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.mark = time.perf_counter()

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule,
                             batch: Any, batch_idx: int) -> None:
        now = time.perf_counter()
        self.waiting += now - self.mark if self.mark is not None else 0.0
        self.mark = now

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        now = time.perf_counter()
        self.stepping += now - self.mark
        self.mark = now

    def share(self) -> float:
        """Share of the training time spent waiting for data (0 before any step)."""
        total = self.waiting + self.stepping
        return self.waiting / total if total > 0 else 0.0


def reseed(seed: int) -> None:
    """Seed every generator a training draws from."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class WorldModelModule(L.LightningModule):
    """Trains a `WorldModel`; hyperparameters are saved so checkpoints rebuild it alone."""

    def __init__(self, model_kwargs: dict[str, Any], loss_weights: dict[str, float],
                 lr: float, weight_decay: float, obs_mean: list[float], obs_std: list[float],
                 target_scale: list[float]):
        super().__init__()
        self.save_hyperparameters()
        self.model = make_world_model(**model_kwargs)
        self.model.set_normalization(torch.tensor(obs_mean), torch.tensor(obs_std),
                                     torch.tensor(target_scale))
        self.weights = LossWeights(**loss_weights)

    def _step(self, batch: dict[str, torch.Tensor], split: str) -> torch.Tensor:
        loss, metrics = training_loss(self.model, batch, self.weights)
        size = batch["actions"].shape[0]
        self.log(f"{split}/loss", loss, prog_bar=True, on_epoch=True, on_step=False,
                 batch_size=size, sync_dist=split != "train")
        self.log_dict({f"{split}/{k}": v for k, v in metrics.items() if k != "loss"}, on_epoch=True,
                      on_step=False, batch_size=size, sync_dist=split != "train")
        return loss

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        size = batch["actions"].shape[0]
        self.log("val/forecast_ade", forecast_ade(self.model, batch), prog_bar=True,
                 on_epoch=True, on_step=False, batch_size=size, sync_dist=True)
        return self._step(batch, "val")

    def configure_optimizers(self):
        """AdamW with a short linear warm-up, then cosine decay to 5% over the planned epochs."""
        optimizer = torch.optim.AdamW(self.model.parameters(), lr=self.hparams.lr,
                                      weight_decay=self.hparams.weight_decay)
        trainer = self._trainer
        epochs = trainer.max_epochs if trainer is not None and trainer.max_epochs else 0
        if epochs <= 0:
            return optimizer
        steps = max(int(trainer.estimated_stepping_batches), 1)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(steps))
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def warmup_cosine(total_steps: int, warmup: float = 0.05, floor: float = 0.05):
    """LR factor per optimiser step: linear warm-up over `warmup` of the steps, then cosine
    decay to `floor` (short runs on few windows need the high rate, long ones the decay)."""
    ramp = max(int(total_steps * warmup), 1)

    def factor(step: int) -> float:
        if step < ramp:
            return (step + 1) / ramp
        progress = min((step - ramp) / max(total_steps - ramp, 1), 1.0)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


@torch.no_grad()
def forecast_ade(model: WorldModel, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean position error (m) of the other vehicles under the open-loop prior-mean rollout
    (what evaluation scores), over present steps; the early-stopping metric."""
    extra = ({"sizes": batch["size"]} if getattr(model, "reads_sizes", False) and "size" in batch
             else {})
    imagined = model.imagine(batch["hist"], batch["hist_mask"], batch["actions"][:, None],
                             **extra)
    position = imagined.states_mean[:, 0, 0, ..., :2]  # (B, F, N, 2)
    error = (position - batch["future"][..., :2]).norm(dim=-1)  # (B, F, N)
    valid = batch["future_mask"].bool() & batch["step_mask"].bool()[..., None]
    valid = valid & batch["hist_mask"].bool()[:, -1, None, :]
    valid[..., 0] = False  # the ego follows the recorded actions; score the others
    return torch.where(valid, error, torch.zeros_like(error)).sum() / valid.sum().clamp(min=1)
