"""Independent blocks of one NumPy pass on a small thread pool: the copies and elementwise work BLAS leaves on
one core.

With every core given to the matrix products, the rest of a step (im2col's and col2im's strided copies, the
layout transposes around each product, the optimizer's elementwise update) still runs on one core and becomes
a large share of the step. NumPy releases the GIL inside its copy and ufunc loops, so disjoint slices of one
such pass run on several cores at once.

:func:`split` cuts ``range(n)`` into one contiguous block per worker and runs ``fn(start, stop)`` for each,
the first block on the calling thread. Each block computes exactly what the whole pass computes on its slice
(no sum is cut across blocks), so results are bit-identical for every number of workers.

The number of workers follows the BLAS thread count the process was started with (``OPENBLAS_NUM_THREADS``,
``OMP_NUM_THREADS`` or ``MKL_NUM_THREADS``, the first one set), else every core (:func:`os.cpu_count`), the
same rule OpenBLAS follows (:func:`default_workers`); :func:`set_workers` overrides it. Device (CuPy) arrays
are never split: the GPU runs a pass in parallel already.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import numpy as np

from . import backend

__all__ = ["split", "split_large", "blockwise", "copyto", "fill", "random_fill", "workers", "set_workers",
           "default_workers", "THREAD_VARIABLES", "MIN_SPLIT", "RANDOM_MIN_SPLIT"]

THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")

#: Passes over fewer values than this run whole: a hand-off to a pool thread costs tens of microseconds, about
#: what one core needs to copy this many float32 values.
MIN_SPLIT = 1 << 16

#: Draws of fewer values than this run whole: one uniform float costs a core about three times what copying one
#: does, so a draw pays for the hand-off at a quarter of :data:`MIN_SPLIT`.
RANDOM_MIN_SPLIT = 1 << 14

_lock = threading.Lock()
_workers: int | None = None
_pool: ThreadPoolExecutor | None = None
_pool_size = 0


def default_workers() -> int:
    """The BLAS thread count the environment asks for, else the number of cores (at least 1); 1 while OpenBLAS's
    idle threads spin (no ``OPENBLAS_THREAD_TIMEOUT``: NumPy was imported before minigan, see ``minigan/__init__``),
    since they hold the other cores and the blocks would only wait for them."""
    if not os.environ.get("OPENBLAS_THREAD_TIMEOUT", "").strip():
        return 1
    for var in THREAD_VARIABLES:
        value = os.environ.get(var, "").strip()
        if value:
            try:
                return max(1, int(value))
            except ValueError:
                continue  # OpenBLAS ignores a value it cannot read; so do we
    return max(1, os.cpu_count() or 1)


def workers() -> int:
    """How many blocks :func:`split` runs at once."""
    global _workers
    if _workers is None:
        _workers = default_workers()
    return _workers


def set_workers(n: int | None) -> None:
    """Use ``n`` workers from now on (None: back to :func:`default_workers`)."""
    global _workers, _pool
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ValueError(f"parallel.set_workers: the number of workers must be a positive integer, got {n!r}")
    with _lock:
        if _pool is not None:
            _pool.shutdown(wait=True)
            _pool = None
        _workers = n


def _executor(n: int) -> ThreadPoolExecutor:
    global _pool, _pool_size
    with _lock:
        if _pool is None or _pool_size != n:
            if _pool is not None:
                _pool.shutdown(wait=True)
            _pool, _pool_size = ThreadPoolExecutor(max_workers=n, thread_name_prefix="minigan-block"), n
        return _pool


def split(n: int, fn: Callable[[int, int], Any], like: Any = None) -> None:
    """Run ``fn(start, stop)`` over contiguous blocks covering ``range(n)``, one per worker, and wait for all.

    ``like`` is an array of the pass: on a device array the pass runs as one block. An exception in any block
    is raised here (after every block has finished, so no block still writes when the caller goes on).
    """
    k = min(workers(), n)
    nested = threading.current_thread().name.startswith("minigan-block")  # a block of a block runs whole
    if k <= 1 or nested or (like is not None and not backend.on_host_cores(like)):
        fn(0, n)
        return
    bounds = [round(i * n / k) for i in range(k + 1)]
    pool = _executor(k - 1)
    futures = [pool.submit(fn, bounds[i], bounds[i + 1]) for i in range(1, k)]
    try:
        fn(bounds[0], bounds[1])
    finally:
        errors = [f.exception() for f in futures]
    for error in errors:
        if error is not None:
            raise error


def split_large(size: int, n: int, fn: Callable[[int, int], Any], like: Any = None) -> None:
    """:func:`split` for a pass over ``size`` values in all, run whole below :data:`MIN_SPLIT`."""
    if size < MIN_SPLIT:
        fn(0, n)
    else:
        split(n, fn, like)


def blockwise(fn: Callable[..., Any], *arrays: Any) -> list:
    """``fn(lane, *views)`` over matching flat blocks of same-shaped arrays: an elementwise update on every core.

    The blocks are :func:`minigan.backend.cache_blocks`' (so a pass of several steps streams each array from
    memory once), dealt to the workers in contiguous runs; ``lane`` (0 ≤ lane < workers) names the worker a
    call runs on, so ``fn`` can keep one scratch buffer per lane. Arrays that :func:`~minigan.backend.cache_blocks`
    hands back whole (device arrays, non-contiguous ones, small ones) make one call on lane 0. The update is
    elementwise, so every worker count gives the same bits.

    Returns ``fn``'s results in block order, whichever worker ran each block: a reduction that adds them up in
    that order (:func:`minigan.backend.adam_clip_scale`) gets the same bits for every worker count too.
    """
    blocks = list(backend.cache_blocks(*arrays))
    results: list = [None] * len(blocks)
    k = min(workers(), len(blocks)) if arrays[0].size >= MIN_SPLIT else 1
    if k <= 1:
        for i, views in enumerate(blocks):
            results[i] = fn(0, *views)
        return results
    edges = [round(i * len(blocks) / k) for i in range(k + 1)]

    def run(first: int, last: int) -> None:
        for lane in range(first, last):
            for i in range(edges[lane], edges[lane + 1]):
                results[i] = fn(lane, *blocks[i])

    split(k, run, like=arrays[0])
    return results


def copyto(dst, src) -> None:
    """``dst[...] = src`` (same shape; ``src`` may be a transposed view), in blocks along axis 0."""
    xp = backend.get_array_module(dst)
    split_large(dst.size, dst.shape[0], lambda a, b: xp.copyto(dst[a:b], src[a:b]), like=dst)


def fill(dst, value) -> None:
    """``dst[...] = value``, in blocks along axis 0."""
    split_large(dst.size, dst.shape[0], lambda a, b: dst[a:b].fill(value), like=dst)


_local = threading.local()


def _block_generators(k: int) -> list:
    """``k`` PCG64 generators for :func:`random_fill`'s blocks, kept per calling thread (making one costs ~20 µs,
    about a tenth of a split draw's gain); their states are overwritten before every use."""
    kept = getattr(_local, "generators", [])
    while len(kept) < k:
        kept.append(np.random.Generator(np.random.PCG64(0)))
    _local.generators = kept
    return kept[:k]


def random_fill(generator, out, after: Callable[[int, int], Any] | None = None) -> None:
    r"""Fill ``out`` with U[0, 1) draws from ``generator`` (a PCG64 ``numpy.random.Generator``), in blocks on the
    pool, with exactly the values and the final generator state of ``generator.random(dtype=out.dtype, out=out)``.

    Why it is exact: PCG64 can jump ahead (``advance(k)``: the state after k more 64-bit outputs, in O(log k)),
    so block b starts from a copy of the state advanced past the outputs the blocks before it consume. A float64
    takes one 64-bit output. A float32 takes 32 bits: NumPy draws one 64-bit output for two float32 values,
    returns its low half and keeps the high half for the next draw (``has_uint32`` / ``uinteger`` in the
    state), so float32 blocks start at even offsets, after the half kept from an earlier draw (if any) has been
    used on the first value. The generator ends in the state of the last block's copy, which has drawn the
    draw's last 64-bit output, so it keeps (or has just used) that output's high half as the whole draw does; a
    kept half that a float64 draw never touches is put back.

    ``after(start, stop)`` (flat element indices) runs on each block right after it is drawn, on the same
    worker, so a pass that consumes the draw (dropout's threshold) reads it from the cache. ``out`` must be a
    C-contiguous float32 or float64 host array; small draws and a single worker run whole.

    Used by :meth:`minigan.backend.Rng.random` and ``Dropout.forward``.
    """
    if type(out) is not np.ndarray or not out.flags.c_contiguous:
        raise ValueError("parallel.random_fill: out must be a C-contiguous NumPy array (a flat view of it is filled)")
    flat = out.reshape(-1)
    n = flat.size
    per = 2 if out.dtype == np.float32 else 1
    bit_generator = generator.bit_generator
    k = min(workers(), max(1, n // max(RANDOM_MIN_SPLIT, 1)))
    nested = threading.current_thread().name.startswith("minigan-block")
    first = 0
    if k > 1 and not nested and type(bit_generator) is np.random.PCG64:
        state = bit_generator.state
        kept = state["has_uint32"], state["uinteger"]
        if per == 2 and kept[0]:  # the kept high half is the first value
            generator.random(dtype=out.dtype, out=flat[:1])
            first, state = 1, bit_generator.state
        outputs = -(-(n - first) // per)  # 64-bit outputs the rest of the draw consumes
        k = min(k, outputs)  # no empty block: the last one ends in the state the whole draw ends in
    else:
        k = 1
    if k <= 1:
        generator.random(dtype=out.dtype, out=flat[first:])
        if after is not None:
            after(0, n)
        return
    edges = [round(i * outputs / k) for i in range(k + 1)]
    block_generators = _block_generators(k)
    for b, block_generator in enumerate(block_generators):
        block_generator.bit_generator.state = {**state, "has_uint32": 0, "uinteger": 0}
        block_generator.bit_generator.advance(edges[b])

    def run(b: int, _: int) -> None:
        start, stop = first + edges[b] * per, min(n, first + edges[b + 1] * per)
        block_generators[b].random(dtype=out.dtype, out=flat[start:stop])
        if after is not None:
            after(0 if b == 0 else start, stop)  # block 0 also covers the kept half drawn above

    split(k, run)
    end = block_generators[-1].bit_generator.state
    if per == 1:  # a float64 draw leaves a kept float32 half where it was
        end["has_uint32"], end["uinteger"] = kept
    bit_generator.state = end
