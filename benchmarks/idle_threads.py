"""How idle threads wait, for benchmarks that interleave contenders in one process.

After a parallel region, OpenBLAS's threads (NumPy's products) and OpenMP's threads (PyTorch's) keep spinning
for a while, waiting for more work, and so hold the cores. In one process, the next contender then waits for
the previous one's spinning threads. Measured on 2 cores (2026-12-02): PyTorch's CGAN iteration took 76.6 ms
beside NumPy's spinning OpenBLAS threads and 38.3 ms once they slept; minigan's pix2pix iteration took 216.7 ms
after PyTorch's turns with OpenMP spinning, 207.4 ms with it passive (PyTorch 246.8 -> 253.6 ms, its own
cost of sleeping). So every contender's idle threads sleep:

* ``OPENBLAS_THREAD_TIMEOUT`` is set by importing minigan before NumPy (``minigan/__init__.py``), which
  ``minigan train`` does too;
* ``OMP_WAIT_POLICY=PASSIVE`` for PyTorch's OpenMP threads (read when PyTorch starts its thread pool).

A value already in the environment is kept. :func:`apply` returns what is in force, for the result JSON.
"""

from __future__ import annotations

import os

SETTINGS = {"OMP_WAIT_POLICY": "PASSIVE"}


def apply() -> dict:
    for var, value in SETTINGS.items():
        os.environ.setdefault(var, value)
    import minigan  # noqa: F401  (before NumPy: sets OPENBLAS_THREAD_TIMEOUT)

    return {var: os.environ.get(var) for var in (*SETTINGS, "OPENBLAS_THREAD_TIMEOUT")}
