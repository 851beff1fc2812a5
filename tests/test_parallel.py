"""minigan.parallel: blocks cover the range once, errors surface, the worker count follows the BLAS settings,
and the conv layers give bit-identical results on any number of workers (numpy and strict backends)."""

from __future__ import annotations

import contextlib
import math
import subprocess
import sys
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minigan import backend, parallel
from minigan.gradcheck import generic_point
from minigan.nn import Conv2d, ConvTranspose2d, Dropout, Linear, Maxout, optim


@pytest.fixture
def pool_of():
    """Set the number of workers for one test (every pass split, however small); restored after."""
    saved, min_split, random_min_split = parallel._workers, parallel.MIN_SPLIT, parallel.RANDOM_MIN_SPLIT

    def use(n):
        parallel.set_workers(n)
        parallel.MIN_SPLIT = parallel.RANDOM_MIN_SPLIT = 0
    yield use
    parallel.set_workers(saved)
    parallel.MIN_SPLIT, parallel.RANDOM_MIN_SPLIT = min_split, random_min_split


@settings(max_examples=40, deadline=None)
@given(n=st.integers(0, 50), workers=st.integers(1, 5))
def test_blocks_cover_the_range_exactly_once(n, workers):
    parallel.set_workers(workers)
    try:
        seen = []
        lock = threading.Lock()

        def block(a, b):
            with lock:
                seen.append((a, b))
        parallel.split(n, block)
        covered = sorted(i for a, b in seen for i in range(a, b))
        assert covered == list(range(n))
        assert len(seen) == max(1, min(workers, n))
    finally:
        parallel.set_workers(None)


def test_an_error_in_a_block_is_raised_after_every_block_finished(pool_of):
    pool_of(3)
    finished = []

    def block(a, b):
        if a > 0:
            raise ValueError(f"block {a}")
        threading.Event().wait(0.05)
        finished.append(a)
    with pytest.raises(ValueError, match="block"):
        parallel.split(9, block)
    assert finished == [0]


def test_a_block_that_splits_again_runs_its_part_whole(pool_of):
    pool_of(2)
    inner_blocks = {}
    lock = threading.Lock()

    def outer(a, b):
        blocks = []
        parallel.split(4, lambda c, d: blocks.append((c, d)))
        with lock:
            inner_blocks[threading.current_thread().name.startswith("minigan-block")] = blocks
    parallel.split(2, outer)
    assert inner_blocks[True] == [(0, 4)]  # in a pool thread: whole (no waiting on the pool from inside it)
    assert sorted(inner_blocks[False]) == [(0, 2), (2, 4)]  # in the caller: split


@pytest.mark.parametrize("env, expected", [
    ({}, 1),  # OpenBLAS's threads spin: no pool
    ({"OPENBLAS_THREAD_TIMEOUT": "4", "OPENBLAS_NUM_THREADS": "3"}, 3),
    ({"OPENBLAS_THREAD_TIMEOUT": "4", "OPENBLAS_NUM_THREADS": "x", "OMP_NUM_THREADS": "2"}, 2),
    ({"OPENBLAS_THREAD_TIMEOUT": "4"}, "cores"),
])
def test_default_workers_follow_the_blas_settings(monkeypatch, env, expected):
    for var in (*parallel.THREAD_VARIABLES, "OPENBLAS_THREAD_TIMEOUT"):
        monkeypatch.delenv(var, raising=False)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    import os
    assert parallel.default_workers() == (os.cpu_count() if expected == "cores" else expected)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_set_workers_refuses_what_is_not_a_count(bad):
    with pytest.raises(ValueError, match="positive integer"):
        parallel.set_workers(bad)


@pytest.mark.parametrize("first, timeout", [("minigan", "4"), ("numpy", "")])
def test_importing_minigan_first_lets_openblas_threads_sleep(first, timeout):
    other = "numpy" if first == "minigan" else "minigan"
    code = (f"import os; os.environ.pop('OPENBLAS_THREAD_TIMEOUT', None); import {first}; import {other}; "
            "from minigan import parallel; print(os.environ.get('OPENBLAS_THREAD_TIMEOUT', ''))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == timeout


LAYERS = [
    lambda: Conv2d(6, 2, 3, 2, 1, rng=1, method="columns"),   # input gradient batch-innermost (n 7 > 3)
    lambda: Conv2d(3, 4, 3, 1, 1, rng=2, method="columns"),   # input gradient in (n, a, b) order
    lambda: Conv2d(5, 1, 4, 1, 1, rng=3, method="taps"),
    lambda: Conv2d(1, 20, 3, 2, 1, rng=6, method="columns"),  # per image: 9 column rows < 20 outputs
    lambda: ConvTranspose2d(2, 3, 4, 2, 1, rng=4),             # batch-innermost columns
    lambda: ConvTranspose2d(4, 1, 4, 2, 1, rng=5),             # batch-innermost too (16 rows >= 4 x 4 inputs)
    lambda: ConvTranspose2d(4, 1, 3, 2, 1, rng=5),             # (n, h, w) columns
    lambda: ConvTranspose2d(20, 1, 2, 2, 0, rng=7),            # per image: 4 column rows < 20 inputs
]


@pytest.mark.parametrize("make", LAYERS)
def test_conv_layers_are_bit_identical_on_any_number_of_workers(on_backend, pool_of, make):
    x = backend.to_device(np.random.default_rng(0).standard_normal((7, make().in_channels, 5, 6)).astype(np.float32))
    results = []
    for n in (1, 2, 3):
        pool_of(n)
        layer = generic_point(make(), 0)
        y = layer.forward(x, True)
        assert layer.batch_first(x.shape) == (make().in_channels in (1, 20))  # the route this case stands for
        g = backend.to_device(np.random.default_rng(1).standard_normal(y.shape).astype(np.float32))
        dx = layer.backward(g)
        results.append([backend.to_host(a) for a in (y, dx, *layer.grads.values())])
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert np.array_equal(a, b)


@settings(max_examples=30, deadline=None)
@given(size=st.integers(1, 5 * 4096), workers=st.integers(1, 4))
def test_blockwise_visits_every_element_once_with_one_lane_per_worker(size, workers):
    saved_block, saved_split = backend.CPU_BLOCK_ELEMENTS, parallel.MIN_SPLIT
    backend.CPU_BLOCK_ELEMENTS, parallel.MIN_SPLIT = 4096, 0  # many blocks from small arrays
    parallel.set_workers(workers)
    try:
        a, b = np.zeros(size), np.arange(size, dtype=np.float64)
        lanes = {}
        lock = threading.Lock()

        def block(lane, a_, b_):
            a_ += b_ + 1
            with lock:
                lanes.setdefault(lane, set()).add(threading.current_thread().name)
        parallel.blockwise(block, a, b)
        np.testing.assert_array_equal(a, b + 1)  # every element once
        blocks = -(-size // 4096) if size > 4096 else 1
        assert sorted(lanes) == list(range(min(workers, blocks)))
        # A lane's blocks run one after another on one thread, so its scratch is never used twice at once.
        assert all(len(names) == 1 for names in lanes.values())
    finally:
        parallel.set_workers(None)
        backend.CPU_BLOCK_ELEMENTS, parallel.MIN_SPLIT = saved_block, saved_split


@pytest.mark.parametrize("make", [lambda layer: optim.Adam(layer, lr=1e-3),
                                  lambda layer: optim.Adam(layer, lr=1e-3, update_clip=0.5),
                                  lambda layer: optim.SGD(layer, lr=0.1),
                                  lambda layer: optim.SGD(layer, lr=0.1, momentum=0.7),
                                  lambda layer: optim.WeightAverage(layer, 0.9)],
                         ids=["adam", "adam-clipped", "sgd", "momentum", "average"])
def test_optimizers_are_bit_identical_on_any_number_of_workers(on_backend, pool_of, make):
    """Three steps of each update on a layer larger than a cache block, on 1-3 workers: the same bits."""
    results = []
    for n in (1, 2, 3):
        pool_of(n)
        layer = backend.to_device(Linear(300, 400, rng=0))
        opt = make(layer)
        rng = np.random.default_rng(1)
        for _ in range(3):
            for name, g in layer.grads.items():
                g[...] = backend.to_device(rng.standard_normal(g.shape).astype(g.dtype))
            opt.update() if isinstance(opt, optim.WeightAverage) else opt.step()
        state = opt.averaged() if isinstance(opt, optim.WeightAverage) else layer.params
        results.append({k: backend.to_host(v) for k, v in state.items()})
    for other in results[1:]:
        for key in results[0]:
            np.testing.assert_array_equal(other[key], results[0][key], err_msg=key)


@settings(max_examples=20, deadline=None)
@given(size=st.integers(1, 5 * 4096), workers=st.integers(1, 4), seed=st.integers(0, 2**31 - 1))
def test_blockwise_returns_each_blocks_result_in_block_order(size, workers, seed):
    """A reduction over blockwise's results (the update clip's RMS) is the same sum whoever ran which block."""
    saved_block, saved_split = backend.CPU_BLOCK_ELEMENTS, parallel.MIN_SPLIT
    backend.CPU_BLOCK_ELEMENTS, parallel.MIN_SPLIT = 4096, 0
    parallel.set_workers(workers)
    try:
        a = np.random.default_rng(seed).standard_normal(size)
        sums = parallel.blockwise(lambda lane, a_: float(a_.sum()), a)
        expected = [float(a[i:i + 4096].sum()) for i in range(0, size, 4096)] if size > 4096 else [float(a.sum())]
        assert sums == expected
    finally:
        parallel.set_workers(None)
        backend.CPU_BLOCK_ELEMENTS, parallel.MIN_SPLIT = saved_block, saved_split


@settings(max_examples=30, deadline=None)
@given(sizes=st.lists(st.integers(0, 20_000), min_size=1, max_size=6), workers=st.integers(1, 4))
def test_blockwise_many_deals_every_block_once(sizes, workers):
    """Every cache block of every group runs once, on a lane below the worker count, with lanes taking
    contiguous runs of blocks in order and none left without one (small groups first included)."""
    saved_block, saved_split = backend.CPU_BLOCK_ELEMENTS, parallel.MIN_SPLIT
    backend.CPU_BLOCK_ELEMENTS, parallel.MIN_SPLIT = 4096, 0
    parallel.set_workers(workers)
    try:
        groups = [(np.zeros(size),) for size in sizes]
        lanes = []
        lock = threading.Lock()

        def fn(lane, view):
            assert 0 <= lane < workers
            view += 1
            group = next(i for i, (a,) in enumerate(groups) if view is a or view.base is a)
            with lock:
                lanes.append(((group, view.ctypes.data), lane))
        parallel.blockwise_many(fn, groups)
        for (a,) in groups:
            np.testing.assert_array_equal(a, 1)
        in_block_order = [lane for _, lane in sorted(lanes)]
        assert in_block_order == sorted(in_block_order)
        blocks = sum(-(-size // 4096) if size > 4096 else 1 for size in sizes)
        assert set(in_block_order) == set(range(min(workers, blocks)))  # every lane gets a block
    finally:
        parallel.set_workers(None)
        backend.CPU_BLOCK_ELEMENTS, parallel.MIN_SPLIT = saved_block, saved_split


def test_adam_clip_factor_keeps_its_own_blocks(monkeypatch):
    """The clip factor's partial sums end every CLIP_SUM_BLOCK values whatever the update's block size is (its
    bits are part of every clipped run), on any number of workers."""
    from minigan.backend import updates

    rng = np.random.default_rng(5)  # data whose float64 partial sums round differently in blocks of 256 Ki
    g = (rng.standard_normal(300_001) * 3 * 10.0 ** rng.uniform(-1, 1, 300_001)).astype(np.float32)
    v = abs(rng.standard_normal(300_001)).astype(np.float32)
    factors = set()
    for block in (1 << 12, 1 << 16, 1 << 18, 1 << 24):
        for workers in (1, 2, 3):
            monkeypatch.setattr(backend, "CPU_BLOCK_ELEMENTS", block)
            parallel.set_workers(workers)
            factors.add(backend.adam_clip_scale(g, v, 0.999, 0.5, 1e-8, 1.0, {}))
    parallel.set_workers(None)
    assert len(factors) == 1
    step = updates.CLIP_SUM_BLOCK
    u = np.maximum((v * 0.999 + (g * g) * np.float32(1 - 0.999)) / np.float32(0.5), np.float32(1e-16))
    sums = [float(((g * g) / u)[i:i + step].sum(dtype=np.float64)) for i in range(0, g.size, step)]
    assert factors == {1.0 / np.sqrt(math.fsum(sums) / g.size)}


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_whole_network_updates_on_the_pool_are_the_per_tensor_updates(pool_of, workers):
    """SGD and Adam on every tensor in one hand-off (blocks of different tensors at once): the bits of one
    update per tensor in turn, on 1-3 workers."""
    rng = np.random.default_rng(4)
    shapes = [(300, 200), (7,), (), (0, 3), (250, 260), (5, 4)]
    saved = backend.CPU_BLOCK_ELEMENTS
    backend.CPU_BLOCK_ELEMENTS = 4096  # many blocks per tensor
    pool_of(workers)
    try:
        groups = [[rng.standard_normal(s).astype(np.float32) for s in shapes] for _ in range(5)]
        groups[4] = [abs(a) for a in groups[4]]  # Adam's second moment
        p, g, m, v, u = groups
        pr, gr, mr, vr, ur = [[a.copy() for a in group] for group in groups]
        backend.sgd_momentum_update_many(p, g, v, 0.05, 0.5, {})
        backend.adam_update_many(p, g, m, u, 0.5, 0.999, 1e-3, 1e-8, {})
        for i in range(len(shapes)):
            backend.sgd_momentum_update(pr[i], gr[i], vr[i], 0.05, 0.5)
            backend.adam_update(pr[i], gr[i], mr[i], ur[i], 0.5, 0.999, 1e-3, 1e-8)
        for got, want in zip((p, m, v, u), (pr, mr, vr, ur)):
            for a, b in zip(got, want):
                np.testing.assert_array_equal(a, b)
    finally:
        backend.CPU_BLOCK_ELEMENTS = saved


@contextlib.contextmanager
def _every_draw_split(workers: int):
    """``workers`` block-pool workers, and every draw split among them however small; restored after."""
    saved = parallel.RANDOM_MIN_SPLIT
    parallel.RANDOM_MIN_SPLIT = 1
    parallel.set_workers(workers)
    try:
        yield
    finally:
        parallel.set_workers(None)
        parallel.RANDOM_MIN_SPLIT = saved


def _twin_generators(seed: int, before: int, n: int, dtype):
    """Two PCG64 generators in the same state after ``before`` float32 values (so a half of a 64-bit output may
    be kept), and the first one's next ``n`` values of ``dtype``: (drawn from, still to draw, the values)."""
    whole, split = (np.random.Generator(np.random.PCG64(seed)) for _ in range(2))
    whole.random(before, dtype=np.float32)
    split.random(before, dtype=np.float32)
    return whole, split, whole.random(n, dtype=dtype)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(0, 300), workers=st.integers(1, 4), dtype=st.sampled_from([np.float32, np.float64]),
       before=st.integers(0, 3), seed=st.integers(0, 2**32 - 1), with_after=st.booleans())
def test_random_fill_draws_what_one_draw_would_and_leaves_the_same_state(n, workers, dtype, before, seed,
                                                                         with_after):
    """Split among 1-4 workers, a draw gives the values and the final state of NumPy's own draw, whatever half
    of a 64-bit output an earlier float32 draw left kept (``before`` values drawn first); ``after`` sees every
    element once, after its block is drawn."""
    with _every_draw_split(workers):
        whole, split, expected = _twin_generators(seed, before, n, dtype)
        got, seen = np.full(n, np.nan, dtype), np.zeros(n, int)

        def after(start, stop):
            assert not np.isnan(got[start:stop]).any()  # drawn before its after-pass
            seen[start:stop] += 1
        parallel.random_fill(split, got, after if with_after else None)
        np.testing.assert_array_equal(got, expected)
        assert split.bit_generator.state == whole.bit_generator.state
        np.testing.assert_array_equal(split.random(3, dtype=np.float32), whole.random(3, dtype=np.float32))
        if with_after:
            np.testing.assert_array_equal(seen, 1)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(0, 300), workers=st.integers(1, 4), dtype=st.sampled_from([np.float32, np.float64]),
       before=st.integers(0, 3), seed=st.integers(0, 2**32 - 1))
def test_random_bits_are_the_bits_behind_the_float_draw(n, workers, dtype, before, seed):
    """Split among 1-4 workers, the raw bits handed to ``consume`` make NumPy's own float draw exactly
    (``(bits >> s) * 2**-m``), each element once, in blocks that are contiguous and ordered within each call,
    and the generator ends in the float draw's state (a kept float32 half from ``before`` values included)."""
    with _every_draw_split(workers):
        whole, split, expected = _twin_generators(seed, before, n, dtype)
        bits, shift = parallel.UNIFORM_BITS[np.dtype(dtype)]
        got, seen = np.full(n, np.nan, dtype), np.zeros(n, int)

        def consume(start, stop, raw):
            assert raw.dtype == (np.uint32 if dtype == np.float32 else np.uint64) and raw.size == stop - start
            got[start:stop] = (raw >> raw.dtype.type(shift)).astype(dtype) * dtype(2.0 ** -bits)
            seen[start:stop] += 1
        parallel.random_bits(split, n, dtype, consume)
        np.testing.assert_array_equal(got, expected)
        np.testing.assert_array_equal(seen, 1)
        assert split.bit_generator.state == whole.bit_generator.state


def test_random_bits_refuses_what_it_cannot_draw_exactly():
    with pytest.raises(TypeError, match="float32 or float64"):
        parallel.random_bits(np.random.default_rng(0), 4, np.float16, lambda *_: None)
    with pytest.raises(TypeError, match="PCG64 generator is needed, got MT19937"):
        parallel.random_bits(np.random.Generator(np.random.MT19937(0)), 4, np.float32, lambda *_: None)


def test_random_fill_takes_any_bit_generator():
    """Other bit generators than PCG64 fill with NumPy's own draw (their bits make floats differently)."""
    whole, filled = (np.random.Generator(np.random.MT19937(3)) for _ in range(2))
    out, seen = np.empty(10, np.float32), []
    parallel.random_fill(filled, out, lambda a, b: seen.append((a, b)))
    np.testing.assert_array_equal(out, whole.random(10, dtype=np.float32))
    assert seen == [(0, 10)]


def test_random_fill_refuses_an_array_it_cannot_fill_in_place():
    with pytest.raises(ValueError, match="C-contiguous float32 or float64"):
        parallel.random_fill(np.random.default_rng(0), np.empty((4, 6), np.float32)[:, ::2])
    with pytest.raises(ValueError, match="C-contiguous float32 or float64"):
        parallel.random_fill(np.random.default_rng(0), np.empty(4, np.int32))


@pytest.mark.parametrize("shape", [(7, 9), (33, 5, 3), (2, 1)])
def test_dropout_masks_are_bit_identical_on_any_number_of_workers(on_backend, pool_of, shape):
    """Three training forwards and a backward of Dropout on 1-3 workers: the same masks, outputs and gradients
    as the draw made whole (the layer's generator state included)."""
    x = backend.to_device(np.random.default_rng(0).standard_normal(shape).astype(np.float32))
    results = []
    for n in (1, 2, 3):
        pool_of(n)
        layer = Dropout(0.3, seed=5)
        outputs = [backend.to_host(layer.forward(x, True)) for _ in range(3)]
        outputs.append(backend.to_host(layer.backward(x)))
        results.append((outputs, layer.rng.get_state()))
    for outputs, state in results:
        for a, b in zip(results[0][0], outputs):
            np.testing.assert_array_equal(a, b)
        assert state == results[0][1]
    reference = np.random.Generator(np.random.PCG64(backend.as_seed(5)))
    for i in range(3):
        if on_backend == "cupy":  # SplitMix64 on the GPU from one key of the host stream (backend.Rng)
            u = backend.splitmix_uniform(int(reference.integers(0, 2**64, dtype=np.uint64)), shape, np.float32)
        else:
            u = reference.random(shape, dtype=np.float32)
        expected, _ = backend.dropout_forward(backend.to_host(x), u, 0.3)
        np.testing.assert_array_equal(results[0][0][i], expected)
    assert results[0][1]["state"] == {k: str(v) for k, v in reference.bit_generator.state["state"].items()}


@pytest.mark.parametrize("ties", [False, True], ids=["distinct", "ties"])
def test_maxout_is_bit_identical_on_any_number_of_workers(on_backend, pool_of, ties):
    """Maxout's piece passes run in blocks of rows: the same outputs, winners (ties included: the first maximal
    piece wins in every block) and gradients on 1-3 workers."""
    rng = np.random.default_rng(0)
    x = rng.integers(-1, 2, (37, 6)) if ties else rng.standard_normal((37, 6))
    x = backend.to_device(x.astype(np.float32))
    results = []
    for n in (1, 2, 3):
        pool_of(n)
        layer = Maxout(6, 5, 4, rng=1)
        if ties:
            layer.params["W"][...] = backend.to_device(np.round(backend.to_host(layer.params["W"]) * 4))
        y = layer.forward(x, True)
        dx = layer.backward(backend.to_device(np.random.default_rng(2).standard_normal(y.shape).astype(np.float32)))
        results.append([backend.to_host(a) for a in (y, layer.activation_pattern(), dx, *layer.grads.values())])
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a, b)
    if ties:
        assert (results[0][1] == 0).mean() > 0.3  # ties went to the first piece
