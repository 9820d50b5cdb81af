"""The interaction overlay: highway.yaml with the interaction world model, nothing else."""

from pathlib import Path

from pipeline.config import Variant, load_config, model_kwargs
from tests.pipeline.test_config import differences

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_the_interaction_overlay_differs_from_highway_only_in_the_variant():
    assert differences("experiment/highway_interaction.yaml") == {"model.variant": "interaction"}


def test_the_interaction_overlay_passes_every_stage_check_and_builds_its_model():
    from models.interaction import InteractionWorldModel
    from models.world_models import make_world_model
    from pipeline.runner import check_config
    from pipeline.stages import PIPELINE

    cfg = load_config(CONFIGS / "experiment" / "highway_interaction.yaml")
    check_config("simulate", PIPELINE, cfg)
    assert cfg.model.variant is Variant.interaction and cfg.experiment == "highway"
    model = make_world_model(**model_kwargs(cfg.model, 1.0))
    assert isinstance(model, InteractionWorldModel)
    assert model.stoch_dim == cfg.model.vehicles * model.vehicle_stoch
