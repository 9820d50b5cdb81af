"""Export the actor (world-model encoder + actor head) to ONNX and check it against torch.

Inputs: hist (B, H, N, D) float32, hist_mask (B, H, N) float32 (1.0/0.0); output: probs
(B, A), the actor's action distribution. B is a dynamic axis (many scenes per call).
"""

from __future__ import annotations

import os

import numpy as np
import torch

from models.actor import ActorPolicy
from pipeline.planner.actor_runtime import ACTOR_INPUTS, ACTOR_OUTPUTS
from pipeline.planner.onnx_export import ParityError, export_module, planner_session


def export_actor(policy: ActorPolicy, path: str | os.PathLike, example_hist: np.ndarray,
                 example_mask: np.ndarray, opset: int = 17) -> None:
    """Write `policy` to `path` as ONNX with a dynamic batch axis (temp file, renamed)."""
    inputs = (torch.as_tensor(example_hist, dtype=torch.float32),
              torch.as_tensor(example_mask, dtype=torch.float32))
    dynamic = {name: {0: "B"} for name in (*ACTOR_INPUTS, *ACTOR_OUTPUTS)}
    export_module(policy, inputs, path, ACTOR_INPUTS, ACTOR_OUTPUTS, dynamic, opset)


def check_actor_parity(policy: ActorPolicy, path: str | os.PathLike, hist: np.ndarray,
                       hist_mask: np.ndarray, atol: float) -> float:
    """Max |torch - onnxruntime| of the action probabilities on histories (B, H, N, D),
    masks (B, H, N); a ParityError above `atol`."""
    feeds = {"hist": np.ascontiguousarray(hist, dtype=np.float32),
             "hist_mask": np.ascontiguousarray(hist_mask, dtype=np.float32)}
    with torch.no_grad():
        want = policy(*(torch.from_numpy(feeds[name]) for name in ACTOR_INPUTS)).numpy()
    have = planner_session(path).run(list(ACTOR_OUTPUTS), feeds)[0]
    if have.shape != want.shape:
        raise ParityError(f"ONNX actor {path} returns probs of shape {have.shape}, torch "
                          f"{want.shape}")
    diff = float(np.abs(want - have).max(initial=0.0))
    if diff > atol:
        raise ParityError(f"ONNX actor {path} differs from torch by {diff:.3g} (> atol {atol})")
    return diff
