"""minigan: a from-scratch GAN engine on NumPy (CuPy for the GPU) with hand-written, exact gradients."""

import os as _os
import sys as _sys

# OpenBLAS's idle threads spin for a while after each matrix product, waiting for the next, and so hold every
# core between products: work handed to another core meanwhile (minigan's block pool, :mod:`minigan.parallel`,
# or PyTorch's threads in a benchmark) waits for them. Measured on 2 cores: the pool's copies gained nothing
# beside the spinning threads and ran 1.9x faster once they slept; PyTorch in the same process took twice its
# time. A short timeout lets them sleep at once (no measurable cost to the products). OpenBLAS reads it when it
# loads, so it applies when minigan is imported before NumPy (the command line and the benchmarks do this).
if "numpy" not in _sys.modules:
    _os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

__version__ = "0.1.0"
