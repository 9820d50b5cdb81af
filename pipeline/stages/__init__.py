"""The pipeline's stages, in the order `drivecast run` executes them."""

from pipeline.stages import gridworld, ingest

PIPELINE = [ingest.STAGE]
STAGE_NAMES = [stage.name for stage in PIPELINE]
GRIDWORLD = gridworld.STAGE
