"""Export the Planner to ONNX (dynamic K axis) and check it against torch.

Inputs: hist (1, H, N, D) float32, hist_mask (1, H, N) float32 (1.0/0.0), candidates
(K, F) int64, noise (K, S, F, Z) float32. Outputs: collision_prob (K,), expected_return
(K,), uncertainty (K,), positions (K, F, N, 2). Uses the TorchScript-based exporter
(`dynamo=False`): it traces the unrolled rollout into a small, fast graph.
"""

from __future__ import annotations

import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from models.candidates import enumerate_candidates
from models.planner import Planner

INPUT_NAMES = ("hist", "hist_mask", "candidates", "noise")
OUTPUT_NAMES = ("collision_prob", "expected_return", "uncertainty", "positions")


class ParityError(AssertionError):
    """The ONNX planner's outputs differ from torch's by more than the tolerance."""


def example_candidates(n_candidates: int, horizon: int, n_actions: int) -> torch.Tensor:
    """(K, F) int64: the first K enumerated sequences, cycled if K exceeds them all."""
    every = enumerate_candidates(horizon, n_actions)
    rows = np.arange(n_candidates) % len(every)
    return torch.from_numpy(every[rows])


def export_planner(planner: Planner, path: str | os.PathLike, example_hist: torch.Tensor,
                   example_mask: torch.Tensor, n_candidates: int, samples: int,
                   opset: int = 17, horizon: int = 3) -> None:
    """Write `planner` to `path` as ONNX with a dynamic K axis (written to temp, renamed).

    example_hist (1, H, N, D), example_mask (1, H, N) (bool or 0/1 float); the exported
    graph has fixed H, N, D, F = horizon and S = samples.
    """
    model = planner.world_model
    candidates = example_candidates(n_candidates, horizon, model.n_actions)
    noise = torch.zeros(n_candidates, samples, horizon, model.stoch_dim)
    inputs = (example_hist.float(), example_mask.float(), candidates, noise)
    dynamic = {"candidates": {0: "K"}, "noise": {0: "K"}}
    dynamic.update({name: {0: "K"} for name in OUTPUT_NAMES})
    export_module(planner, inputs, path, INPUT_NAMES, OUTPUT_NAMES, dynamic, opset)


def export_module(module: torch.nn.Module, inputs: tuple, path: str | os.PathLike,
                  input_names, output_names, dynamic: dict, opset: int) -> None:
    """Trace `module` in eval mode on `inputs` into the ONNX file `path` (written to a
    temp file, shape arithmetic folded, then renamed), with the `dynamic` axes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(suffix=".onnx.tmp", dir=path.parent)
    os.close(handle)
    try:
        was_training = module.training
        module.eval()
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings about shape checks
            torch.onnx.export(module, inputs, tmp, input_names=list(input_names),
                              output_names=list(output_names), dynamic_axes=dynamic,
                              opset_version=opset, dynamo=False)
        module.train(was_training)
        fold_static_shapes(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def fold_static_shapes(path: str | os.PathLike) -> None:
    """Rewrite the ONNX file at `path` with the tracer's shape arithmetic folded.

    The tracer computes every reshape target from Shape nodes, even on axes that are fixed
    (all but K): about a third of the graph's nodes. With symbolic shapes inferred (K as a
    symbol) onnxscript's optimizer folds those on fixed axes into constants, which saves
    onnxruntime about 5% of a decision and changes no value (the parity check runs after).
    """
    import onnx
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference
    from onnxscript import optimizer

    model = SymbolicShapeInference.infer_shapes(onnx.load(str(path)), auto_merge=True)
    onnx.save(optimizer.optimize(model), str(path))


def planner_session(onnx_path: str | os.PathLike, threads: int = 1):
    """An onnxruntime CPU session with `threads` intra-op threads and 1 inter-op thread."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])


def feeds(hist, mask, candidates, noise) -> dict[str, np.ndarray]:
    """The ONNX input dict from tensors or arrays (dtypes as the graph expects)."""
    def array(x, dtype):
        x = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
        return np.ascontiguousarray(x, dtype=dtype)

    return {"hist": array(hist, np.float32), "hist_mask": array(mask, np.float32),
            "candidates": array(candidates, np.int64), "noise": array(noise, np.float32)}


def check_parity(planner: Planner, onnx_path: str | os.PathLike, hist, mask, candidates,
                 noise, atol: float) -> float:
    """Max abs difference over all four outputs between torch and onnxruntime (1 thread).

    Raises ParityError (an AssertionError) if it exceeds `atol`.
    """
    inputs = feeds(hist, mask, candidates, noise)
    planner.eval()
    with torch.no_grad():
        expected = planner(*(torch.from_numpy(inputs[name]) for name in INPUT_NAMES))
    got = planner_session(onnx_path).run(list(OUTPUT_NAMES), inputs)
    diff = 0.0
    for name, want, have in zip(OUTPUT_NAMES, expected, got, strict=True):
        if tuple(want.shape) != have.shape:
            raise ParityError(f"ONNX output '{name}' has shape {have.shape}, torch gives "
                                 f"{tuple(want.shape)}")
        diff = max(diff, float(np.abs(want.numpy() - have).max(initial=0.0)))
    if diff > atol:
        raise ParityError(f"ONNX planner {onnx_path} differs from torch by {diff:.3g} "
                             f"(> atol {atol})")
    return diff


def time_planner(onnx_path: str | os.PathLike, hist, mask, candidates, noise,
                 repeats: int = 50, threads: int = 1) -> float:
    """Median milliseconds per decision of the ONNX planner (after 5 warm-up runs)."""
    session = planner_session(onnx_path, threads)
    inputs = feeds(hist, mask, candidates, noise)
    for _ in range(5):
        session.run(None, inputs)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        session.run(None, inputs)
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1000)
