"""`drivecast bench NAME`: benchmarks that print their figures as ratios to a baseline
measured in the same run."""

from __future__ import annotations

from collections.abc import Callable

from pipeline.config import Config


def ingest(cfg: Config) -> dict[str, float]:
    """Recording overhead vs bare highway-env, 2 workers vs 1, and EnvPool's collection
    against highway-env's."""
    from pipeline.bench.ingest import bench_ingest

    return bench_ingest(env_id=cfg.ingest.env_id, seed=cfg.seed)


def planner(cfg: Config) -> dict[str, float]:
    """One decision over the 5^F candidates on 1 thread: onnxruntime vs torch eager, and
    achieved FLOP/s against this machine's single-thread matmul peak."""
    from pipeline.bench.planner import bench_planner
    from pipeline.config import PlannerRisk, model_kwargs
    from pipeline.planner.build import traffic_replica

    return bench_planner(model_kwargs(cfg.model, dt=1.0), candidates=5 ** cfg.export.horizon,
                         samples=cfg.export.samples, horizon=cfg.export.horizon,
                         history=cfg.model.history, seed=cfg.seed,
                         critic_hidden=cfg.critic.hidden if cfg.critic.episodes else 0,
                         critic_context=cfg.critic.context, critic_members=cfg.critic.members,
                         lookahead=cfg.export.lookahead,
                         lookahead_min_speed=(cfg.export.lookahead_min_speed
                                              if cfg.export.lookahead_brake else None),
                         replica=(traffic_replica(cfg)
                                  if cfg.export.risk is PlannerRisk.replica else None))


def backend(cfg: Config) -> dict[str, float]:
    """EnvPool's native highway against highway-env on `ingest.episodes` episodes per
    policy: the ego's collision rate, speed and episode length, and the other vehicles'
    speeds, accelerations and lane changes."""
    from pipeline.bench.backend import bench_backend

    return bench_backend(env_id=cfg.ingest.env_id, env_config=dict(cfg.ingest.env_config),
                         seed=cfg.seed, episodes=cfg.ingest.episodes, workers=cfg.ingest.workers)


def actor(cfg: Config) -> dict[str, float]:
    """Imagined latent steps per second (the actor's training and imagination against the
    planner's open-loop rollout) and one ONNX actor decision against one planner decision."""
    from pipeline.bench.actor import bench_actor

    return bench_actor(cfg)


BENCHMARKS: dict[str, Callable[[Config], dict[str, float]]] = {"ingest": ingest,
                                                                "planner": planner,
                                                                "backend": backend,
                                                                "actor": actor}
