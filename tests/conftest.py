"""Test-wide settings: one torch/BLAS thread per process.

The models under test are tiny; on a 2-core machine several OpenMP threads only fight each
other (a 20x slowdown was measured when another process was busy).
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

torch.set_num_threads(1)
