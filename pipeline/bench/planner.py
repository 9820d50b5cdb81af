"""`drivecast bench planner`: one planner decision (K candidates) on one CPU thread.

onnxruntime vs torch eager on the same freshly initialised planner, in the same run;
p50/p99 milliseconds of each and their ratio. The ONNX decision's achieved FLOP/s
(FLOPs of its matrix products, counted by torch's FlopCounterMode on the eager forward)
is reported as a fraction of this machine's single-thread float32 matmul peak, measured
in the same run (best of several 512x512x512 torch.mm). This module imports torch: it is
the benchmark, not the deployed path.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from models.candidates import enumerate_candidates
from models.critic import make_critic
from models.planner import Planner
from models.risk_sources import CriticRisk, ImaginedRisk, ReplicaRisk
from models.traffic import TrafficReplica
from models.world_models import make_world_model
from pipeline.highway_source import ACTION_NAMES
from pipeline.planner.onnx_export import INPUT_NAMES, OUTPUT_NAMES, export_planner
from pipeline.planner.scorer import OnnxScorer, write_sidecar

PEAK_SIZE = 512


def example_history(history: int, n_vehicles: int, obs_dim: int, seed: int):
    """A plausible random scene: hist (1, H, N, D) float32 and an all-present mask."""
    generator = torch.Generator().manual_seed(seed)
    hist = torch.randn(1, history, n_vehicles, obs_dim, generator=generator)
    hist[..., 0] *= 30.0  # longitudinal offsets of tens of metres
    hist[..., 2] += 25.0  # highway speeds
    return hist, torch.ones(1, history, n_vehicles)


def export_random_planner(onnx_path: str | os.PathLike, model_kwargs: dict, history: int,
                          horizon: int, samples: int, gamma: float = 0.9, seed: int = 0,
                          frames_per_step: int = 5, opset: int = 17,
                          critic_hidden: int = 0, critic_context: bool = False,
                          critic_members: int = 1, lookahead: int = 0,
                          lookahead_min_speed: float | None = None,
                          replica: TrafficReplica | None = None) -> Planner:
    """Export a freshly initialised planner plus its sidecar to `onnx_path`; returns it.
    critic_hidden > 0: with a risk critic of that width (models/critic.py), reading the
    lane context when critic_context, an ensemble of critic_members > 1; lookahead and
    lookahead_min_speed as models.planner.Planner takes them; replica: the risk is this
    traffic replica's (models/traffic.py)."""
    torch.manual_seed(seed)
    model = make_world_model(**model_kwargs)  # any variant
    critic = (make_critic(critic_members, feat_dim=model.deter_dim + model.stoch_dim,
                          n_vehicles=model.n_vehicles, hidden_dim=critic_hidden,
                          context=critic_context, horizon=horizon) if critic_hidden else None)
    risk = CriticRisk(critic) if critic else ReplicaRisk(replica) if replica else ImaginedRisk()
    planner = Planner(model, risk, gamma, bootstrap=True, lookahead=lookahead,
                      lookahead_min_speed=lookahead_min_speed).eval()
    hist, mask = example_history(history, model.n_vehicles, model.obs_dim, seed)
    export_planner(planner, onnx_path, hist, mask, n_candidates=model.n_actions ** horizon,
                   samples=samples, opset=opset, horizon=horizon)
    write_sidecar(onnx_path, action_names=list(ACTION_NAMES[:model.n_actions]),
                  history=history, horizon=horizon, vehicles=model.n_vehicles,
                  obs_dim=model.obs_dim, stoch_dim=model.stoch_dim, samples=samples,
                  dt=model.dt, frames_per_step=frames_per_step, gamma=gamma,
                  bootstrap=planner.bootstrap, lookahead=planner.lookahead,
                  risk=("traffic replica" if replica else
                        f"critic over {model.risk}" if critic else model.risk),
                  obs_mean=model.encoder.obs_mean.tolist(),
                  obs_std=model.encoder.obs_std.tolist(), input_names=list(INPUT_NAMES),
                  output_names=list(OUTPUT_NAMES), opset=opset, tolerance=1e-4)
    return planner


def timings_ms(run, repeats: int, warmup: int = 3) -> np.ndarray:
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1000)
    return np.asarray(times)


def matmul_peak_flops(size: int = PEAK_SIZE, repeats: int = 10) -> float:
    """Best single-thread float32 FLOP/s of a size^3 torch.mm (call with 1 torch thread)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    best_ms = timings_ms(lambda: torch.mm(a, b), repeats).min()
    return float(2.0 * size ** 3 / (best_ms / 1000))


def decision_flops(planner: Planner, inputs: tuple) -> int:
    """FLOPs of the matrix products of one eager planner forward."""
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        planner(*inputs)
    return int(counter.get_total_flops())


def bench_planner(model_kwargs: dict | None = None, candidates: int = 125, samples: int = 4,
                  horizon: int = 3, history: int = 10, seed: int = 0, rounds: int = 7,
                  repeats: int = 40, critic_hidden: int = 0, critic_context: bool = False,
                  critic_members: int = 1, lookahead: int = 0,
                  lookahead_min_speed: float | None = None,
                  replica: TrafficReplica | None = None) -> dict[str, float]:
    """Time one decision over `candidates` K sequences, onnxruntime vs torch eager, in
    `rounds` alternating rounds of `repeats` decisions each (critic_hidden > 0: the planner
    carries a risk critic of that width, with the lane context when critic_context, an
    ensemble of critic_members > 1; the lookahead and replica settings as
    `export_random_planner`)."""
    model_kwargs = dict(model_kwargs or {})
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            onnx_path = Path(tmp) / "planner.onnx"
            planner = export_random_planner(onnx_path, model_kwargs, history, horizon,
                                            samples, seed=seed, critic_hidden=critic_hidden,
                                            critic_context=critic_context,
                                            critic_members=critic_members,
                                            lookahead=lookahead,
                                            lookahead_min_speed=lookahead_min_speed,
                                            replica=replica)
            scorer = OnnxScorer.load(onnx_path, threads=1, seed=seed)
            result = measure(planner, scorer, candidates, rounds, repeats, seed)
    finally:
        torch.set_num_threads(threads)
    print_table(result)
    return result


def measure(planner: Planner, scorer: OnnxScorer, k: int, rounds: int, repeats: int,
            seed: int) -> dict[str, float]:
    """The engines alternate round by round, so a slow spell of a shared machine hits
    both; the ratio is the median over rounds of the per-round p50 ratios."""
    model = planner.world_model
    hist, mask = example_history(scorer.history, model.n_vehicles, model.obs_dim, seed)
    every = enumerate_candidates(scorer.horizon, model.n_actions)
    cands = every[np.arange(k) % len(every)]  # (K, F)
    noise = np.broadcast_to(scorer.noise[None], (k, *scorer.noise.shape))  # (K, S, F, Z)
    inputs = (hist, mask, torch.from_numpy(cands), torch.from_numpy(noise.copy()))
    onnx_ms, torch_ms = [], []
    with torch.no_grad():
        for _ in range(rounds):
            onnx_ms.append(timings_ms(
                lambda: scorer.score(hist[0].numpy(), mask[0].numpy() > 0, cands), repeats))
            torch_ms.append(timings_ms(lambda: planner(*inputs), repeats))
    ratios = [np.median(t) / np.median(o) for t, o in zip(torch_ms, onnx_ms, strict=True)]
    onnx_all, torch_all = np.concatenate(onnx_ms), np.concatenate(torch_ms)
    flops = decision_flops(planner, inputs)
    peak = matmul_peak_flops()
    onnx_p50 = float(np.percentile(onnx_all, 50))
    achieved = flops / (onnx_p50 / 1000)
    return {
        "candidates": float(k), "rounds": float(rounds), "onnx_p50_ms": onnx_p50,
        "onnx_p99_ms": float(np.percentile(onnx_all, 99)),
        "torch_p50_ms": float(np.percentile(torch_all, 50)),
        "torch_p99_ms": float(np.percentile(torch_all, 99)),
        "torch_over_onnx": float(np.median(ratios)),
        "torch_over_onnx_min": float(np.min(ratios)),
        "torch_over_onnx_max": float(np.max(ratios)),
        "decision_mflop": flops / 1e6, "onnx_gflops": achieved / 1e9,
        "peak_gflops": peak / 1e9, "fraction_of_peak": achieved / peak,
    }


def print_table(result: dict[str, float]) -> None:
    print(f"planner decision, K={int(result['candidates'])}, 1 thread")
    print(f"{'engine':<12}{'p50 ms':>10}{'p99 ms':>10}")
    for engine in ("onnx", "torch"):
        print(f"{engine:<12}{result[engine + '_p50_ms']:>10.2f}{result[engine + '_p99_ms']:>10.2f}")
    print(f"torch eager / onnxruntime (p50): {result['torch_over_onnx']:.2f}x (median of "
          f"{int(result['rounds'])} alternating rounds, range "
          f"{result['torch_over_onnx_min']:.2f}-{result['torch_over_onnx_max']:.2f})")
    print(f"decision: {result['decision_mflop']:.1f} MFLOP at {result['onnx_gflops']:.2f} GFLOP/s"
          f" = {100 * result['fraction_of_peak']:.1f}% of the 1-thread matmul peak "
          f"({result['peak_gflops']:.1f} GFLOP/s)")
