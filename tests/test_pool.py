"""The elementwise thread pool (minigan.backend): every pooled pass equals its single-threaded self bit for bit.

The passes run the same ufunc calls on row blocks (or cache blocks) of their arrays, so the result must not depend
on the number of threads nor on where the blocks are cut. These tests shrink the block sizes so that small arrays
are cut into many uneven blocks, and compare 1, 2 and 3 threads with each other and with the formulas written out
unthreaded (the code the pool replaced), on NumPy and the strict backend, float32 and float64, contiguous and
strided inputs. Also: the pool's life cycle (shutdown, reuse, errors, nesting) and ``set_threads``.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minigan import backend
from minigan.nn import Dropout, LeakyReLU, Maxout, ReLU, Sigmoid, Tanh, losses, optim

THREADS = (1, 2, 3)


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch):
    """Blocks of a few elements, so that test-sized arrays are split (unevenly) among the threads."""
    monkeypatch.setattr(backend, "MIN_BLOCK_ELEMENTS", 5)
    monkeypatch.setattr(backend, "CPU_BLOCK_ELEMENTS", 37)
    previous = backend.pool_threads()
    yield
    backend.set_pool_threads(previous)


def host(a):
    return backend.to_host(a)


def same(a, b):
    a, b = host(a), host(b)
    assert a.dtype == b.dtype and a.shape == b.shape
    assert np.array_equal(a, b, equal_nan=True)
    assert np.array_equal(np.signbit(a), np.signbit(b))


def at_each_thread_count(fn):
    """``fn()`` at 1, 2 and 3 threads; the results (a tuple of arrays) must all be bit-identical."""
    results = []
    for n in THREADS:
        backend.set_pool_threads(n)
        results.append(tuple(host(r) for r in fn()))
    for other in results[1:]:
        for a, b in zip(results[0], other):
            same(a, b)
    return results[0]


def array(data, dtype, strided):
    """A device array of ``data``; ``strided``: a non-contiguous view (every other column of a wider array)."""
    a = np.asarray(data, dtype)
    if strided:
        wide = np.zeros((a.shape[0], 2 * a.shape[1]), dtype)
        wide[:, ::2] = a
        return backend.to_device(wide)[:, ::2]
    return backend.to_device(a)


shapes = st.tuples(st.integers(1, 23), st.integers(1, 19))
dtypes = st.sampled_from([np.float32, np.float64])


def values(shape, seed):
    rng = np.random.default_rng(seed)
    v = rng.standard_normal(shape) * 30  # some exp() overflows in sigmoid, exact zeros, a -0.0
    v.flat[0] = 0.0
    if v.size > 1:
        v.flat[1] = -0.0
    return v


@settings(max_examples=12)
@given(shape=shapes, dtype=dtypes, strided=st.booleans(), seed=st.integers(0, 2**16))
def test_activations_are_bit_identical_at_any_thread_count(on_backend, shape, dtype, strided, seed):
    x = array(values(shape, seed), dtype, strided)
    dout = array(values(shape, seed + 1), dtype, strided)
    for layer in (ReLU(), LeakyReLU(0.2), Sigmoid(), Tanh()):
        y, dx = at_each_thread_count(lambda: (layer.forward(x), layer.backward(dout)))
        xh, dh = host(x), host(dout)
        # the formulas as the layers wrote them before the pool
        if isinstance(layer, ReLU):
            same(y, np.maximum(xh, 0)), same(dx, dh * (xh > 0))
        elif isinstance(layer, LeakyReLU):
            scale = (xh > 0).astype(xh.dtype)
            scale *= 1 - 0.2
            scale += 0.2
            same(y, xh * scale), same(dx, dh * scale)
        elif isinstance(layer, Sigmoid):
            t = np.negative(xh)
            with np.errstate(over="ignore"):
                np.exp(t, out=t)
            t += 1
            same(y, np.reciprocal(t)), same(dx, dh * y * (1 - y))
        else:
            same(y, np.tanh(xh)), same(dx, dh * (1 - y * y))


@settings(max_examples=10)
@given(shape=shapes, dtype=dtypes, strided=st.booleans(), p=st.sampled_from([0.5, 0.2]), seed=st.integers(0, 99))
def test_dropout_masks_and_outputs_do_not_depend_on_the_thread_count(on_backend, shape, dtype, strided, p, seed):
    x = array(values(shape, seed), dtype, strided)
    dout = array(values(shape, seed + 1), dtype, False)

    def run():
        layer = Dropout(p, seed=seed)
        return layer.forward(x, train=True), layer.backward(dout), layer.rng.random((1,), np.float64, like=x)

    y, dx, after = at_each_thread_count(run)
    u = np.random.Generator(np.random.PCG64(seed)).random(shape, dtype=dtype)  # the one draw, as before the pool
    mask = (u >= p).astype(dtype) * dtype(1 / (1 - p))
    same(y, host(x) * mask)
    same(dx, host(dout) * mask)
    assert after.shape == (1,)  # the generator moved on by exactly one draw of x's shape (same state each time)


@settings(max_examples=10)
@given(rows=st.integers(1, 17), units=st.integers(1, 9), pieces=st.sampled_from([1, 2, 5]), seed=st.integers(0, 99))
def test_maxout_is_bit_identical_at_any_thread_count(on_backend, rows, units, pieces, seed):
    layer = backend.to_device(Maxout(7, units, pieces, rng=seed))
    rng = np.random.default_rng(seed)
    x = backend.to_device(rng.standard_normal((rows, 7)).astype(np.float32))
    x[0] = 0.0  # ties: every piece of row 0 equals its bias
    layer.params["b"][...] = backend.to_device(np.repeat(rng.standard_normal(units), pieces).astype(np.float32))
    dout = backend.to_device(rng.standard_normal((rows, units)).astype(np.float32))
    h, winner, dx, dW = at_each_thread_count(
        lambda: (layer.forward(x, train=True), layer.activation_pattern(), layer.backward(dout), layer.grads["W"]))
    # against the running max written out on the host
    z = host(x) @ host(layer.params["W"]) + host(layer.params["b"])
    pieces_first = z.reshape(rows, units, pieces)
    same(h, pieces_first.max(axis=2))
    np.testing.assert_array_equal(winner, pieces_first.argmax(axis=2))


@settings(max_examples=8)
@given(shape=st.tuples(st.integers(1, 40), st.integers(1, 30)), dtype=dtypes, seed=st.integers(0, 99))
def test_optimizer_and_average_updates_are_bit_identical_at_any_thread_count(on_backend, shape, dtype, seed):
    rng = np.random.default_rng(seed)
    p0, g = (rng.standard_normal(shape).astype(dtype) for _ in range(2))

    def run(kind):
        p = backend.to_device(p0.copy())
        state = [backend.to_device(np.zeros(shape, dtype)) for _ in range(2)]
        gd = backend.to_device(g)
        for _ in range(3):
            if kind == "sgd":
                backend.sgd_update(p, gd, 0.1)
            elif kind == "momentum":
                backend.sgd_momentum_update(p, gd, state[0], 0.1, 0.5)
            elif kind == "adam":
                backend.adam_update(p, gd, state[0], state[1], 0.5, 0.999, 2e-3, 1e-8)
            else:
                backend.ema_update(state[0], p, 0.99)
        return p, state[0], state[1]

    for kind in ("sgd", "momentum", "adam", "ema"):
        p, s0, _ = at_each_thread_count(lambda: run(kind))
        # the same passes over whole arrays, unthreaded and unblocked
        ref, v, m, w = p0.copy(), np.zeros(shape, dtype), np.zeros(shape, dtype), np.zeros(shape, dtype)
        for _ in range(3):
            if kind == "sgd":
                ref -= g * 0.1
            elif kind == "momentum":
                v *= 0.5
                v -= g * 0.1
                ref += v
            elif kind == "adam":
                m *= 0.5
                m += g * (1 - 0.5)
                w *= 0.999
                a = g * g
                a *= 1 - 0.999
                w += a
                a = m * 2e-3
                b = np.sqrt(w)
                b += 1e-8
                a /= b
                ref -= a
            else:
                v *= 0.99
                v += ref * (1 - 0.99)
        same(p, ref)
        if kind == "ema":
            same(s0, v)


def test_optimizers_use_the_blocked_updates(on_backend):
    """SGD, Adam and WeightAverage through a layer, at 1 and 3 threads: same parameters bit for bit."""
    from minigan.nn import Linear

    def run():
        layer = backend.to_device(Linear(13, 11, rng=0))
        opts = [optim.SGD(layer, lr=0.1, momentum=0.5), optim.SGD(layer, lr=0.05), optim.Adam(layer, lr=1e-3)]
        avg = optim.WeightAverage(layer, 0.9)
        for step in range(3):
            layer.grads["W"][...] = backend.to_device(np.random.default_rng(step).standard_normal((13, 11))
                                                      .astype(np.float32))
            opts[step].step()
            avg.update()
        return layer.params["W"], layer.params["b"], avg.shadow["W"]

    at_each_thread_count(run)


def test_bce_is_unchanged_for_float_and_array_targets(on_backend):
    logits = backend.to_device((np.random.default_rng(0).standard_normal((31, 1)) * 9).astype(np.float32))
    for target in (1.0, 0.0):
        loss, d = losses.bce_with_logits(logits, target)
        ones = backend.to_device(np.full((31, 1), target, np.float32))
        loss_arr, d_arr = losses.bce_with_logits(logits, ones)  # the unfused formula (array targets)
        np.testing.assert_allclose(host(loss), host(loss_arr), rtol=1e-6)
        np.testing.assert_allclose(host(d), host(d_arr), rtol=1e-6, atol=1e-12)


# -- the pool itself --------------------------------------------------------------------------------


def test_blocks_cover_every_row_once_and_run_on_several_threads():
    backend.set_pool_threads(3)
    seen, names = np.zeros(50, int), set()
    together = threading.Barrier(3, timeout=30)  # the three blocks run at the same time, on three threads

    def block(rows):
        names.add(threading.current_thread().name)
        together.wait()
        rows += 1

    backend.map_rows(block, seen)
    assert (seen == 1).all()
    assert len(names) == 3 and threading.current_thread().name in names


def test_shutdown_and_reuse():
    backend.set_pool_threads(2)
    x = np.arange(40.0)
    backend.map_rows(lambda a: np.multiply(a, 2, out=a), x)
    backend.shutdown_pool()
    assert not [t for t in threading.enumerate() if t.name.startswith("minigan-pool")]
    backend.map_rows(lambda a: np.multiply(a, 2, out=a), x)  # starts again
    np.testing.assert_array_equal(x, np.arange(40.0) * 4)
    backend.shutdown_pool()
    backend.shutdown_pool()  # twice is harmless


def test_an_error_in_a_block_is_raised_after_every_block_finished():
    backend.set_pool_threads(3)
    done = []

    def block(a):
        if a[0] == 0:
            raise ValueError("first block")
        done.append(len(a))

    with pytest.raises(ValueError, match="first block"):
        backend.map_rows(block, np.arange(30.0))
    assert sum(done) == 20  # the other two blocks ran to the end before the error came back


def test_nested_calls_run_inline():
    backend.set_pool_threads(2)
    outer = np.zeros((20, 3))

    def block(rows):
        backend.map_rows(lambda r: np.add(r, 1, out=r), rows)  # inside a block: no second hand-off (no deadlock)

    backend.map_rows(block, outer)
    assert (outer == 1).all()


def test_caller_errstate_reaches_the_workers():
    backend.set_pool_threads(2)
    with np.errstate(over="raise"):
        with pytest.raises(FloatingPointError):
            backend.map_rows(lambda a: np.exp(a, out=a), np.full(40, 1000.0))


def test_thread_count_validation():
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError):
            backend.set_pool_threads(bad)


def test_set_threads_sets_pool_and_blas_and_using_threads_restores_them(monkeypatch):
    threadpoolctl = pytest.importorskip("threadpoolctl")

    def blas():
        return max(i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas")

    before_pool, before_blas = backend.pool_threads(), blas()
    with backend.using_threads(2) as info:
        assert info == {"pool": 2, "blas": 2} and blas() == 2
        assert backend.threads_info() == info
    assert backend.pool_threads() == before_pool and blas() == before_blas
    with backend.using_threads(None) as info:  # every core
        assert info["pool"] == backend.cores()
    assert backend.pool_threads() == before_pool and blas() == before_blas


# -- minigan train --threads --------------------------------------------------------------------------


@pytest.mark.usefixtures("isolated_run_env")
def test_train_threads_option_sets_and_records_the_counts_and_restores_them(tmp_path, capsys):
    from minigan.cli import main

    from helpers import write_idx_dir

    idx = write_idx_dir(tmp_path / "idx", n_train=25)
    before = backend.threads_info()
    seen = []
    from minigan import train as training

    original = training.Trainer._train_step

    def spy(self):
        seen.append(backend.pool_threads())
        return original(self)

    argv = ["train", "--data", str(idx), "--batch", "5", "--steps", "2", "--no-progress", "--threads", "1"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(training.Trainer, "_train_step", spy)
        assert main(argv + ["--out", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert seen == [1, 1]  # (one thread: BLAS at two threads stalls on a busy test machine)
    assert backend.threads_info() == before  # the CLI put both counts back (main() may run in-process)
    blas = "unknown" if before["blas"] is None else 1
    assert f"backend numpy (1 thread, BLAS {blas})" in out  # the log names the counts; epoch records do too


@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5"])
def test_train_threads_option_refuses_non_positive_counts(value, capsys):
    from minigan.cli import main

    assert main(["train", "--threads", value]) == 2
    err = capsys.readouterr().err
    assert err.startswith("minigan: error: ") and "--threads" in err and "positive" in err
