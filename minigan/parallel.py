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

import bisect
import itertools
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import numpy as np

from . import backend

__all__ = ["split", "split_large", "blockwise", "blockwise_many", "copyto", "fill", "random_fill", "random_bits",
           "UNIFORM_BITS", "workers", "set_workers", "default_workers", "THREAD_VARIABLES", "MIN_SPLIT",
           "RANDOM_MIN_SPLIT"]

THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")

#: Passes over fewer values than this run whole. A hand-off to a pool thread and back (waking it, and the caller
#: when it is last) took ~60 µs on the 2-core AMD EPYC, a no-op block included: about what one core needs for
#: a few passes over this many float32 values. Measured in the CGAN iteration at batch 100 (Maxout's z of 96-240 k
#: values): its passes outside the products took 2.2-2.3 ms a step split over two workers at 2**16, 1.5-1.7 ms
#: whole at 2**18 (two runs of four rounds each, medians).
MIN_SPLIT = 1 << 18

#: Draws split into blocks of at least this many values (fewer: drawn whole): one value from raw outputs
#: (:func:`random_bits`) costs a core about a nanosecond, and a hand-off to a pool thread and back ~60 µs on the
#: 2-core AMD EPYC (measured: a dropout draw of 120 k float32 values took as long on two workers as on one, 160 k
#: values 0.18 against 0.21 ms, 1.2 M values 0.87 against 1.57 ms).
RANDOM_MIN_SPLIT = 1 << 16

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


def blockwise(fn: Callable[..., Any], *arrays: Any, block: int | None = None) -> list:
    """``fn(lane, *views)`` over matching flat blocks of same-shaped arrays: an elementwise update on every core.

    The blocks are :func:`minigan.backend.cache_blocks`' (so a pass of several steps streams each array from
    memory once), dealt to the workers in contiguous runs; ``lane`` (0 ≤ lane < workers) names the worker a
    call runs on, so ``fn`` can keep one scratch buffer per lane. Arrays that :func:`~minigan.backend.cache_blocks`
    hands back whole (device arrays, non-contiguous ones, small ones) make one call on lane 0. The update is
    elementwise, so every worker count gives the same bits.

    Returns ``fn``'s results in block order, whichever worker ran each block: a reduction that adds them up in
    that order (:func:`minigan.backend.adam_clip_scale`) gets the same bits for every worker count too. Its bits
    do depend on where the blocks end, so such a reduction passes its own ``block`` (elements per block).
    """
    return blockwise_many(fn, [arrays], block=block)


def blockwise_many(fn: Callable[..., Any], groups: list, block: int | None = None) -> list:
    """:func:`blockwise` over several groups of same-shaped arrays in one hand-off: an optimizer's update of every
    tensor of a network. ``groups`` is a list of tuples of arrays (one tuple per tensor); the cache blocks of
    all of them are dealt to the workers in contiguous runs of about equal numbers of values (at least one block
    each), and ``fn(lane, *views)`` runs on each. One hand-off per step instead of one per large tensor (~60 µs
    each on the AMD EPYC). Returns ``fn``'s results in block order, groups in turn.

    The caller makes sure no two groups write the same memory (blocks of different groups run at once); results
    are bit-identical to :func:`blockwise` on each group in turn, since the update is elementwise.
    """
    blocks = [views for arrays in groups for views in backend.cache_blocks(*arrays, block=block)]
    results: list = [None] * len(blocks)
    ends = list(itertools.accumulate(views[0].size for views in blocks))  # values up to each block's end
    k = min(workers(), len(blocks)) if blocks and ends[-1] >= MIN_SPLIT else 1
    if k <= 1:
        for i, views in enumerate(blocks):
            results[i] = fn(0, *views)
        return results
    edges = [0]
    for lane in range(1, k):  # lane boundaries after the block that passes each k-th of the values
        passing = bisect.bisect_left(ends, ends[-1] * lane / k) + 1
        edges.append(min(max(passing, edges[-1] + 1), len(blocks) - (k - lane)))
    edges.append(len(blocks))

    def run(first: int, last: int) -> None:
        for lane in range(first, last):
            for i in range(edges[lane], edges[lane + 1]):
                results[i] = fn(lane, *blocks[i])

    split(k, run, like=groups[0][0])
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
    """``k`` PCG64 bit generators for :func:`random_bits`' blocks, kept per calling thread (making one costs
    ~20 µs, about a tenth of a split draw's gain); their states are overwritten before every use."""
    kept = getattr(_local, "generators", [])
    while len(kept) < k:
        kept.append(np.random.PCG64(0))
    _local.generators = kept
    return kept[:k]


#: Bits of a PCG64 output that NumPy's U[0, 1) floats keep, and the shift that drops the rest, by dtype:
#: ``generator.random`` makes a float32 from a 32-bit word ``w`` as ``(w >> 8) * 2**-24`` and a float64 from
#: a 64-bit output ``r`` as ``(r >> 11) * 2**-53`` (numpy/random/src: ``next_float``, ``pcg64_next_double``).
UNIFORM_BITS = {np.dtype(np.float32): (24, 8), np.dtype(np.float64): (53, 11)}


def random_bits(generator, n: int, dtype, consume: Callable[[int, int, Any], Any]) -> None:
    r"""The raw bits behind ``generator.random(n, dtype=dtype)`` (a PCG64 ``numpy.random.Generator``), drawn in
    blocks on the pool: ``consume(start, stop, bits)`` runs on each block's worker with the bits of elements
    ``start .. stop-1``, and the generator ends in exactly the state the float draw leaves.

    ``bits`` are the 32-bit words (``uint32``) of a float32 draw or the 64-bit outputs (``uint64``) of a float64
    one; element ``i`` of the draw is ``(bits >> s) * 2**-m`` with ``(m, s)`` = :data:`UNIFORM_BITS` [dtype]. They
    are scratch: ``consume`` may overwrite them. Drawing raw outputs (``random_raw``) costs a core about half
    of what NumPy's float32 draw does, which calls a function per value; and a pass that only compares the
    draw with a threshold (dropout) can compare the integers and skip the conversion.

    Why it is exact: PCG64 can jump ahead (``advance(k)``: the state after k more 64-bit outputs, in O(log k)),
    so block b starts from a copy of the state advanced past the outputs the blocks before it consume. A
    float64 takes one 64-bit output. A float32 takes 32 bits: NumPy draws one 64-bit output for two float32
    values, returns its low half and keeps the high half for the next value (``has_uint32`` / ``uinteger`` in
    the state); so a kept half from an earlier draw is the first word, the rest are the outputs' halves, low
    first, and the generator is left keeping the last output's high half, used (an even count) or not (odd),
    as NumPy leaves it. A float64 draw leaves a kept half alone.

    Blocks of fewer than :data:`RANDOM_MIN_SPLIT` values, a single worker and nested calls draw whole (on the
    calling thread). Used by :func:`random_fill` and ``minigan.backend.dropout_draw``.
    """
    dtype = np.dtype(dtype)
    if dtype not in UNIFORM_BITS:
        raise TypeError(f"parallel.random_bits: dtype must be float32 or float64, got {dtype}")
    bit_generator = generator.bit_generator
    if type(bit_generator) is not np.random.PCG64:
        raise TypeError(f"parallel.random_bits: a PCG64 generator is needed, got {type(bit_generator).__name__}")
    per = 2 if dtype == np.float32 else 1
    state = bit_generator.state
    has_kept, kept = state["has_uint32"], state["uinteger"]
    first = 0
    if per == 2 and has_kept and n > 0:
        consume(0, 1, np.array([kept], np.uint32))  # the kept high half is the first word
        first = 1
    outputs = -(-(n - first) // per)  # 64-bit outputs the rest of the draw consumes
    k = min(workers(), max(1, n // max(RANDOM_MIN_SPLIT, 1)), max(outputs, 1))
    if threading.current_thread().name.startswith("minigan-block"):
        k = 1
    edges = [round(i * outputs / k) for i in range(k + 1)]
    last: list = [None] * k  # each block's last output, read before consume may overwrite its bits
    generators = [bit_generator] if k == 1 else _block_generators(k)
    if k > 1:
        plain = {**state, "has_uint32": 0, "uinteger": 0}
        for b, block_generator in enumerate(generators):
            block_generator.state = plain
            block_generator.advance(edges[b])

    def run(b: int, _: int) -> None:
        count = edges[b + 1] - edges[b]
        if count == 0:
            return
        raw = generators[b].random_raw(count)
        last[b] = int(raw[-1])
        start, stop = first + edges[b] * per, min(n, first + edges[b + 1] * per)
        consume(start, stop, raw.view(np.uint32)[:stop - start] if per == 2 else raw)

    if k == 1:
        run(0, 0)
    else:
        split(k, run)
    end = generators[-1].state
    if per == 1 or outputs == 0:
        end["has_uint32"], end["uinteger"] = (0, kept) if first else (has_kept, kept)
    else:
        end["has_uint32"], end["uinteger"] = (n - first) % 2, last[-1] >> 32
    bit_generator.state = end


def random_fill(generator, out, after: Callable[[int, int], Any] | None = None) -> None:
    r"""Fill ``out`` with U[0, 1) draws from ``generator`` (a ``numpy.random.Generator``), in blocks on the pool,
    with exactly the values and the final generator state of ``generator.random(dtype=out.dtype, out=out)``.

    For PCG64 (every :class:`minigan.backend.Rng`) the values are made from :func:`random_bits`' raw outputs as
    NumPy makes them (exact: integers below 2**24 or 2**53 are floats as they are, and the scale is a power of
    two); other bit generators draw whole with NumPy's own draw.

    ``after(start, stop)`` (flat element indices) runs on each block right after it is drawn, on the same
    worker, so a pass that consumes the draw reads it from the cache. ``out`` must be a C-contiguous float32
    or float64 host array. Used by :meth:`minigan.backend.Rng.random`.
    """
    if type(out) is not np.ndarray or not out.flags.c_contiguous or out.dtype not in UNIFORM_BITS:
        raise ValueError("parallel.random_fill: out must be a C-contiguous float32 or float64 NumPy array "
                         "(a flat view of it is filled)")
    flat = out.reshape(-1)
    if type(generator.bit_generator) is not np.random.PCG64:
        generator.random(dtype=out.dtype, out=flat)
        if after is not None:
            after(0, flat.size)
        return
    bits, shift = UNIFORM_BITS[out.dtype]
    scale = out.dtype.type(2.0 ** -bits)

    def consume(start: int, stop: int, raw) -> None:
        values = flat[start:stop]
        np.right_shift(raw, raw.dtype.type(shift), out=raw)
        np.copyto(values, raw, casting="unsafe")  # exact: fewer than 2**24 (2**53) values each
        values *= scale
        if after is not None:
            after(start, stop)

    random_bits(generator, flat.size, out.dtype, consume)
