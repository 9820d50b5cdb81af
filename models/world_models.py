"""Any world-model variant: build it from its constructor arguments (`model.json`) and
compute its training loss."""

from __future__ import annotations

from typing import Any

from torch import nn

from models.interaction import VARIANT as INTERACTION
from models.interaction import InteractionWorldModel
from models.interaction_loss import interaction_loss
from models.loss_weights import LossWeights
from models.losses import world_model_loss
from models.world_model import VARIANTS, WorldModel

ALL_VARIANTS = (*VARIANTS, INTERACTION)


def make_world_model(**kwargs: Any) -> nn.Module:
    """An InteractionWorldModel for variant 'interaction', else the RSSM `WorldModel`."""
    variant = str(getattr(kwargs.get("variant"), "value", kwargs.get("variant")))
    if variant == INTERACTION:
        return InteractionWorldModel(**kwargs)
    return WorldModel(**kwargs)


def training_loss(model: nn.Module, batch: Any,
                  weights: LossWeights | None = None) -> tuple[Any, dict]:
    """(loss, metrics) of a window batch: `interaction_loss` for the interaction variant
    (per-vehicle latents), `world_model_loss` for the RSSM's."""
    if isinstance(model, InteractionWorldModel):
        return interaction_loss(model, batch, weights)
    return world_model_loss(model, batch, weights)
