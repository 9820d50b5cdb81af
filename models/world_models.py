"""Build a world model of any variant from its constructor arguments (`model.json`)."""

from __future__ import annotations

from typing import Any

from torch import nn

from models.interaction import VARIANT as INTERACTION
from models.interaction import InteractionWorldModel
from models.world_model import VARIANTS, WorldModel

ALL_VARIANTS = (*VARIANTS, INTERACTION)


def make_world_model(**kwargs: Any) -> nn.Module:
    """An InteractionWorldModel for variant 'interaction', else the RSSM `WorldModel`."""
    variant = str(getattr(kwargs.get("variant"), "value", kwargs.get("variant")))
    if variant == INTERACTION:
        return InteractionWorldModel(**kwargs)
    return WorldModel(**kwargs)
