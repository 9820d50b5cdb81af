"""`drivecast bench actor`: the actor's imagination and its decisions on one CPU thread.

On a freshly initialised world model and actor-critic of the config's sizes:
- imagined latent steps per second of training (imagine + losses + backward + Adam step,
  `actor.batch_size` rollouts of `actor.horizon` steps) and of imagination alone, against
  the world model's open-loop rollout of the same number of fixed action sequences (the
  planner's imagination, `WorldModel.imagine`), measured in the same run;
- one decision of the ONNX actor (one scene) against one decision of the ONNX planner
  (5^F candidates, `export.samples` samples), p50/p99 ms, and the actor's milliseconds
  per scene when it decides 64 scenes in one call.

This module imports torch: it is the benchmark, not the deployed path.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from models.actor import ActorCritic, ActorPolicy
from models.candidates import ACTION_NAMES, enumerate_candidates
from models.world_models import make_world_model
from pipeline.bench.planner import example_history, export_random_planner, timings_ms
from pipeline.planner.actor_export import export_actor
from pipeline.planner.actor_runtime import ActorSession, write_actor_sidecar
from pipeline.planner.scorer import OnnxScorer

BATCH_SCENES = 64


def steps_per_s(run, steps: int, repeats: int) -> float:
    """Imagined steps per second of `run` (which imagines `steps`), best of `repeats`."""
    run()  # warm-up
    best = min(timed(run) for _ in range(repeats))
    return steps / best


def timed(run) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def imagination_rates(model, agent: ActorCritic, batch: int, horizon: int, history: int,
                      repeats: int, seed: int) -> dict[str, float]:
    hist, mask = example_history(history, model.n_vehicles, model.obs_dim, seed)
    hist, mask = hist.expand(batch, -1, -1, -1), mask.expand(batch, -1, -1).bool()
    optimiser = torch.optim.Adam([*agent.actor.parameters(), *agent.critic.parameters()])
    actions = torch.randint(model.n_actions, (batch, 1, horizon))

    def train_step():
        with torch.no_grad():
            ctx, start = model.start(hist, mask)
        loss, _ = agent.losses(agent.imagine(model, ctx, start, horizon))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        agent.update_slow_critic()

    def imagine_only():
        with torch.no_grad():
            ctx, start = model.start(hist, mask)
            agent.imagine(model, ctx, start, horizon)

    def open_loop():
        with torch.no_grad():
            model.imagine(hist, mask, actions)

    steps = batch * horizon
    return {"train_steps_per_s": steps_per_s(train_step, steps, repeats),
            "imagine_steps_per_s": steps_per_s(imagine_only, steps, repeats),
            "open_loop_steps_per_s": steps_per_s(open_loop, steps, repeats)}


def decision_latencies(model, agent: ActorCritic, cfg, tmp: Path) -> dict[str, float]:
    history = cfg.model.history
    hist, mask = example_history(history, model.n_vehicles, model.obs_dim, cfg.seed)
    actor_path = tmp / "actor.onnx"
    export_actor(ActorPolicy(model, agent.actor), actor_path, hist.numpy(), mask.numpy())
    write_actor_sidecar(actor_path, action_names=list(ACTION_NAMES), history=history,
                        vehicles=model.n_vehicles, obs_dim=model.obs_dim, dt=model.dt,
                        frames_per_step=5, opset=17, tolerance=1e-4)
    actor = ActorSession.load(actor_path)
    many = (np.repeat(hist.numpy(), BATCH_SCENES, 0), np.repeat(mask.numpy(), BATCH_SCENES, 0))
    planner_path = tmp / "planner.onnx"
    export_random_planner(planner_path, model_kwargs_of(cfg), history, cfg.export.horizon,
                          cfg.export.samples, seed=cfg.seed)
    scorer = OnnxScorer.load(planner_path)
    candidates = enumerate_candidates(cfg.export.horizon)
    actor_ms = timings_ms(lambda: actor.probs(hist.numpy(), mask.numpy()), 200)
    planner_ms = timings_ms(lambda: scorer.score(hist[0].numpy(), mask[0].numpy() > 0,
                                                 candidates), 100)
    batch_ms = timings_ms(lambda: actor.probs(*many), 50)
    return {"actor_p50_ms": float(np.percentile(actor_ms, 50)),
            "actor_p99_ms": float(np.percentile(actor_ms, 99)),
            "planner_p50_ms": float(np.percentile(planner_ms, 50)),
            "planner_p99_ms": float(np.percentile(planner_ms, 99)),
            "actor_batched_ms_per_scene": float(np.percentile(batch_ms, 50)) / BATCH_SCENES,
            "candidates": float(len(candidates))}


def model_kwargs_of(cfg) -> dict:
    from pipeline.config import model_kwargs

    return model_kwargs(cfg.model, dt=1.0)


def bench_actor(cfg, repeats: int = 5) -> dict[str, float]:
    """Every figure of the module docstring, on one torch and one onnxruntime thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(cfg.seed)
        model = make_world_model(**model_kwargs_of(cfg)).eval().requires_grad_(False)
        a = cfg.actor
        agent = ActorCritic(model.deter_dim + model.stoch_dim, model.n_actions,
                            hidden_dim=a.hidden, gamma=a.gamma, lam=a.lam)
        result = imagination_rates(model, agent, a.batch_size, a.horizon, cfg.model.history,
                                   repeats, cfg.seed)
        with tempfile.TemporaryDirectory() as tmp:
            result |= decision_latencies(model, agent, cfg, Path(tmp))
    finally:
        torch.set_num_threads(threads)
    result["batch"], result["horizon"] = float(cfg.actor.batch_size), float(cfg.actor.horizon)
    print_table(result)
    return result


def print_table(r: dict[str, float]) -> None:
    open_loop = r["open_loop_steps_per_s"]
    print(f"imagination, {int(r['batch'])} rollouts x {int(r['horizon'])} steps, 1 thread")
    print(f"{'':<34}{'steps/s':>12}{'vs open loop':>14}")
    for name, key in (("actor training step", "train_steps_per_s"),
                      ("actor imagination alone", "imagine_steps_per_s"),
                      ("open-loop rollout (planner's)", "open_loop_steps_per_s")):
        print(f"{name:<34}{r[key]:>12.0f}{r[key] / open_loop:>13.2f}x")
    print(f"one decision, 1 thread{'':<12}{'p50 ms':>10}{'p99 ms':>10}")
    print(f"{'ONNX actor':<34}{r['actor_p50_ms']:>10.3f}{r['actor_p99_ms']:>10.3f}")
    print(f"{'ONNX planner, K=' + str(int(r['candidates'])):<34}{r['planner_p50_ms']:>10.3f}"
          f"{r['planner_p99_ms']:>10.3f}")
    print(f"actor / planner (p50): {r['actor_p50_ms'] / r['planner_p50_ms']:.3f}x; the actor "
          f"on {BATCH_SCENES} scenes per call: {r['actor_batched_ms_per_scene']:.4f} ms a scene")
