"""The pipeline's stages, in the order `drivecast run` executes them."""

from pipeline.stages import (
            actor,
            critic,
            evaluate,
            export,
            gridworld,
            ingest,
            replay,
            simulate,
            train,
)

PIPELINE = [ingest.STAGE, train.STAGE, evaluate.STAGE, critic.STAGE, export.STAGE,
            actor.STAGE, simulate.STAGE]
STAGE_NAMES = [stage.name for stage in PIPELINE]
GRIDWORLD = gridworld.STAGE
REPLAY = replay.STAGE  # `drivecast replay`, after export; not part of `drivecast run`
