"""The fused elementwise passes of minigan.backend against the layers, losses and formulas they replace.

On NumPy and the strict backend each fused function runs the very passes of the code it replaces, so the
results must be bit-identical. On CuPy (benchmarks/gpu_check.sh) each is one ElementwiseKernel compiled without
FMA contraction; it is compared with the same unfused CuPy code, to a few float32 ulps (CUDA's exp and log1p in
one kernel or in several are the same functions, but this is where a GPU has the last word).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minigan import backend, parallel
from minigan.nn import losses, optim
from minigan.nn import Dropout, Linear, Maxout, ReLU


def same(fused, reference, on_backend):
    """Bit-identical on numpy/strict; within a few float32 ulps on CuPy."""
    a, b = backend.to_host(fused), backend.to_host(reference)
    assert a.dtype == b.dtype and a.shape == b.shape
    if on_backend == "cupy":
        np.testing.assert_allclose(a, b, rtol=4e-7 if a.dtype == np.float32 else 1e-15, atol=1e-30)
    else:
        np.testing.assert_array_equal(a, b)
        assert np.array_equal(np.signbit(a), np.signbit(b))  # -0.0 where the reference has it


def device(x):
    return backend.to_device(np.asarray(x))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bce_logits_matches_the_unfused_loss(on_backend, dtype):
    rng = np.random.default_rng(0)
    logits = device((rng.standard_normal((37, 1)) * 8).astype(dtype))
    logits[:4, 0] = device(np.array([40.0, -40.0, 0.0, 100.0], dtype))  # saturated and exact-zero rows
    for target in (1.0, 0.0):
        # A float target takes the fused pass; an array of that value, the loss's own unfused passes.
        loss_fused, d_fused = losses.bce_with_logits(logits, target)
        loss, d = losses.bce_with_logits(logits, backend.xp().full_like(logits, target))
        same(d_fused, d, on_backend)
        same(loss_fused, loss, on_backend)
    # discriminator_loss's halves: scale 0.5 in the same pass
    _, (d_real, d_fake) = losses.discriminator_loss(logits, logits[::-1].copy())
    same(backend.bce_logits(logits, 1.0, logits.shape[0], scale=0.5)[1], d_real, on_backend)


def test_dropout_layer_is_the_formula(on_backend):
    """The layer (which calls the fused pass) draws u ~ U[0, 1) and keeps m = [u >= p] / (1 - p); y = x * m."""
    x = device(np.random.default_rng(1).standard_normal((50, 240)).astype(np.float32))
    for p in (0.5, 0.2):
        layer = Dropout(p, seed=3)
        y = layer.forward(x, train=True)
        u = backend.to_host(backend.Rng(3).random(x.shape, x.dtype, like=x))  # the layer's own draw, again
        mask = (u >= p).astype(np.float32) * (1 / (1 - p))
        same(y, device(backend.to_host(x) * mask), on_backend)
        same(layer.backward(backend.xp().ones_like(x)), device(mask), on_backend)  # backward is dout * mask
        assert 0 < float(backend.to_host(mask == 0).mean()) < 1


@settings(max_examples=200, deadline=None)
@given(p=st.one_of(st.floats(0.0, 1.0, exclude_max=True), st.sampled_from([0.2, 0.5, 0.8, 1 - 2.0**-26, 2.0**-30])),
       dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 2**32 - 1))
def test_dropout_threshold_is_the_float_comparison(p, dtype, seed):
    """``bits >= dropout_threshold(p)`` is ``u >= p`` for the float ``u`` the bits make, at the threshold, on
    either side of it and at random; p that rounds to 1 in float32 keeps nothing."""
    bits, shift = parallel.UNIFORM_BITS[np.dtype(dtype)]
    word = np.uint32 if dtype == np.float32 else np.uint64
    threshold = backend.dropout_threshold(p, dtype)
    top = 2 ** (bits + shift)
    near = [threshold + d for d in (-1, 0, 1, *range(-2 << shift, 2 << shift, 1 << (shift - 2)))]
    raw = np.random.default_rng(seed).integers(0, top, 1000, dtype=word)
    raw = np.concatenate([raw, np.array([w for w in near if 0 <= w < top] + [0, top - 1], word)])
    u = (raw >> word(shift)).astype(dtype) * dtype(2.0 ** -bits)
    kept = raw >= threshold if threshold < top else np.zeros(raw.size, bool)
    np.testing.assert_array_equal(kept, u >= p)


def test_dropout_that_rounds_to_dropping_everything_drops_everything():
    p = 1 - 2.0**-26  # below 1 as a Python float, 1.0 as a float32
    x = np.ones((3, 5), np.float32)
    y, mask = backend.dropout_draw(x, backend.Rng(0), p)
    y_ref, mask_ref = backend.dropout_forward(x, backend.Rng(0).random(x.shape, np.float32), p)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(mask, mask_ref)
    assert not mask.any()


@pytest.mark.parametrize("pieces", [5, 4, 1])
def test_maxout_forward_and_backward_match_the_layer(on_backend, pieces):
    rng = np.random.default_rng(2)
    layer = backend.to_device(Maxout(30, 12, pieces, rng=4))
    x = device(rng.standard_normal((9, 30)).astype(np.float32))
    x[0] = 0.0  # every piece of row 0 equals its bias: ties go to the first maximal piece
    layer.params["b"][...] = device(np.repeat(rng.standard_normal(12), pieces).astype(np.float32))
    h = layer.forward(x, train=True)
    z = x @ layer.params["W"] + layer.params["b"]
    h_fused, winner = backend.maxout_forward(z, 12, pieces)
    same(h_fused, h, on_backend)
    same(winner, layer.activation_pattern(), on_backend)
    # the bias passed apart is added as z is read (CuPy) or in place first (NumPy, strict): the same values
    h_bias, winner_bias = backend.maxout_forward(x @ layer.params["W"], 12, pieces, layer.params["b"])
    same(h_bias, h, on_backend)
    same(winner_bias, winner, on_backend)
    with pytest.raises(ValueError, match=r"bias has shape \(7,\), expected \(" + str(12 * pieces)):
        backend.maxout_forward(z, 12, pieces, device(np.zeros(7, np.float32)))
    assert backend.to_host(winner)[0].tolist() == [0] * 12
    dout = device(rng.standard_normal((9, 12)).astype(np.float32))
    dx = layer.backward(dout)
    dz = backend.maxout_backward(dout, winner, pieces)
    same(dz @ layer.params["W"].T, dx, on_backend)
    same(x.T @ dz, layer.grads["W"], on_backend)


@pytest.mark.parametrize("pieces", [5, 4, 1])
def test_maxout_layer_takes_the_same_values_on_its_device_and_host_paths(on_backend, pieces):
    """On device arrays (CuPy, strict) Maxout calls the fused passes; on NumPy it runs its own row-block passes
    into reused buffers. With small-integer data every product and sum is exact whatever the summation order,
    so the two paths agree bit for bit, ties (frequent here) included, on every backend."""
    rng = np.random.default_rng(5)
    x, dout = (rng.integers(-2, 3, shape).astype(np.float32) for shape in ((9, 30), (9, 12)))
    W, b = rng.integers(-2, 3, (30, 12 * pieces)), rng.integers(-2, 3, 12 * pieces)
    results = []
    for place in (np.asarray, device):
        layer = backend.to_device(Maxout(30, 12, pieces, rng=4), "numpy" if place is np.asarray else None)
        layer.params["W"][...], layer.params["b"][...] = place(W.astype(np.float32)), place(b.astype(np.float32))
        h = layer.forward(place(x), train=True)
        dx = layer.backward(place(dout))
        results.append([backend.to_host(a) for a in (h, layer.activation_pattern(), dx, *layer.grads.values())])
    for on_host, on_device in zip(*results):
        assert on_host.dtype == on_device.dtype
        np.testing.assert_array_equal(on_host, on_device)
    assert pieces == 1 or (results[0][1] > 0).any()  # not every winner is the first piece


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sigmoid_and_relu_match_their_unfused_passes(on_backend, dtype):
    xp = backend.xp()
    x = device(np.concatenate([np.random.default_rng(1).standard_normal(40) * 30,
                               [0.0, -0.0, 1e-30, -1e-30, 100.0, -100.0, 1000.0, -1000.0, np.nan]]).astype(dtype))
    t = xp.negative(x)  # the four passes of activations.sigmoid's derivation
    with np.errstate(over="ignore"):
        xp.exp(t, out=t)
    t += 1
    same(backend.sigmoid(x), xp.reciprocal(t, out=t), on_backend)
    y, positive = backend.relu_forward(x)
    same(y, xp.maximum(x, 0), on_backend)
    assert np.array_equal(backend.to_host(positive), backend.to_host(x > 0)) and positive.dtype == np.bool_
    relu = ReLU()
    same(relu.forward(x), y, on_backend)
    same(relu.backward(xp.ones_like(x)), (x > 0).astype(dtype), on_backend)


@pytest.mark.parametrize("low, high", [(-1.0, 1.0), (0.0, 1.0), (-3.5, 0.25)])
def test_uniform_is_the_scaled_and_shifted_draw(on_backend, low, high):
    rng, again = backend.Rng(4), backend.Rng(4)
    u = rng.uniform(low, high, (7, 50), np.float32)
    draw = again.random((7, 50), np.float32)
    draw *= high - low
    draw += low
    same(u, draw, on_backend)
    host = backend.to_host(u)
    assert host.min() >= low and host.max() <= high and host.std() > 0


@pytest.mark.parametrize("rows", [1, 7, 300])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_column_sum_is_the_sum_over_the_batch(on_backend, rows, dtype):
    a = device(np.random.default_rng(rows).standard_normal((rows, 13)).astype(dtype))
    out = backend.xp().empty(13, dtype)
    assert backend.column_sum(a, out) is out
    if on_backend == "cupy":  # one cuBLAS product instead of CuPy's reduction: another summation order
        np.testing.assert_allclose(backend.to_host(out), backend.to_host(a).sum(axis=0), rtol=1e-5, atol=1e-5)
    else:
        same(out, a.sum(axis=0), on_backend)
    strided = backend.xp().zeros((13, 2), dtype)[:, 0]  # an output that is not contiguous still gets the sums
    backend.column_sum(a, strided)
    np.testing.assert_allclose(backend.to_host(strided), backend.to_host(out), rtol=1e-6)


def test_maxout_forward_propagates_nan_like_maximum(on_backend):
    z = device(np.array([[1.0, np.nan, 3.0, 0.0, 2.0, np.nan]], np.float32))
    h, _ = backend.maxout_forward(z, 2, 3)
    assert np.isnan(backend.to_host(h)).all()


def _param_and_grad(seed, shape):
    rng = np.random.default_rng(seed)
    return (device(rng.standard_normal(shape).astype(np.float32)),
            device(rng.standard_normal(shape).astype(np.float32)))


def _sgd_reference(p, g, v, lr, mu):
    """Classical momentum as written in the docstring, whole arrays, one operation at a time."""
    v = v * mu
    v = v - g * lr
    return p + v, v


def _adam_reference(p, g, m, v, b1, b2, lr_t, eps_t):
    """Adam's update as written in the docstring, whole arrays, one operation at a time."""
    m = m * b1
    m = m + g * (1 - b1)
    v = v * b2
    v = v + (g * g) * (1 - b2)
    return p - (m * lr_t) / (backend.get_array_module(v).sqrt(v) + eps_t), m, v


@pytest.mark.parametrize("shape", [(30, 20), (300, 300)])  # 300*300 > one cache block: the blocked path
def test_sgd_momentum_update_is_the_formula(on_backend, shape):
    """The optimizer's update (the fused function, blocked and on the pool) is the formula, operation by operation."""
    layer = backend.to_device(Linear(*shape, rng=0))
    opt = optim.SGD(layer, lr=0.1, momentum=0.5)
    xp = backend.xp()
    p = layer.params["W"].copy()
    v = xp.zeros_like(p)
    for step in range(3):
        g = _param_and_grad(step, shape)[1]
        layer.grads["W"][...] = g
        layer.grads["b"][...] = 0
        opt.step()
        p, v = _sgd_reference(p, g, v, 0.1, 0.5)
    same(layer.params["W"], p, on_backend)


@pytest.mark.parametrize("shape", [(30, 20), (300, 300)])
def test_adam_update_is_the_formula(on_backend, shape):
    layer = backend.to_device(Linear(*shape, rng=0))
    opt = optim.Adam(layer, lr=2e-3, beta1=0.5, beta2=0.999)
    xp = backend.xp()
    p = layer.params["W"].copy()
    m, v = xp.zeros_like(p), xp.zeros_like(p)
    for step in range(3):
        g = _param_and_grad(step, shape)[1]
        layer.grads["W"][...] = g
        layer.grads["b"][...] = 0
        opt.step()
        p, m, v = _adam_reference(p, g, m, v, opt.beta1, opt.beta2, opt._lr_t, opt._eps_t)
    same(layer.params["W"], p, on_backend)


def test_kernel_sources_are_complete():
    """Every fused function has its kernel source; the module stays importable without CuPy."""
    assert set(backend.kernels._KERNEL_SOURCES) == {"bce_logits", "dropout", "maxout_forward", "maxout_backward",
                                            "sgd_momentum", "adam", "sigmoid", "relu_forward", "uniform_affine",
                                            "uniform", "dropout_draw"}
    for in_params, out_params, body in backend.kernels._KERNEL_SOURCES.values():
        assert in_params and out_params and body.strip().endswith(";")


def _splitmix64(state: int, count: int) -> list[int]:
    """SplitMix64 as published (Steele, Lea & Flood 2014; Vigna's splitmix64.c), one output at a time."""
    out = []
    for _ in range(count):
        state = (state + 0x9E3779B97F4A7C15) % 2**64
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) % 2**64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) % 2**64
        out.append(z ^ (z >> 31))
    return out


def test_splitmix_uniform_is_splitmix64_from_its_key():
    # the published first outputs from state 1234567
    assert _splitmix64(1234567, 3) == [6457827717110365317, 3203168211198807973, 9817491932198370423]
    for key in (0, 1234567, 2**64 - 1):
        outputs = _splitmix64(key, 12)
        np.testing.assert_array_equal(backend.splitmix_uniform(key, (3, 4), np.float64),
                                      np.array([z >> 11 for z in outputs]).reshape(3, 4) * 2.0**-53)
        u32 = backend.splitmix_uniform(key, 12, np.float32)
        assert u32.dtype == np.float32
        np.testing.assert_array_equal(u32, np.array([z >> 40 for z in outputs], np.float32) * np.float32(2.0**-24))
    u = backend.splitmix_uniform(99, (1_000_000,))
    assert 0 <= u.min() and u.max() < 1
    assert abs(u.mean() - 0.5) < 2e-3 and abs(u.var() - 1 / 12) < 1e-3  # ~7 and ~3 standard errors
    assert abs(np.corrcoef(u[:-1], u[1:])[0, 1]) < 5e-3  # neighbours (consecutive counters) are not correlated
    with pytest.raises(TypeError, match="float32 or float64"):
        backend.splitmix_uniform(1, 4, np.int32)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rng_draws_are_a_function_of_the_host_stream(on_backend, dtype):
    """NumPy/strict draw the host PCG64 stream itself; CuPy draws SplitMix64 from one key taken from it. Either
    way the host state decides every number, so a checkpoint (which holds that state) resumes the draws."""
    rng, replay = backend.Rng(7), np.random.Generator(np.random.PCG64(7))
    u = rng.random((33, 17), dtype)
    if on_backend == "cupy":
        expected = backend.splitmix_uniform(int(replay.integers(0, 2**64, dtype=np.uint64)), (33, 17), dtype)
    else:
        expected = replay.random((33, 17), dtype=dtype)
    assert u.dtype == dtype
    np.testing.assert_array_equal(backend.to_host(u), expected)
    assert rng.get_state()["state"] == {k: str(v) for k, v in replay.bit_generator.state["state"].items()}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_multi_tensor_updates_are_the_per_tensor_updates(on_backend, dtype):
    """One launch for every tensor on CuPy (a table of addresses), one hand-off of every tensor's blocks to the
    block pool on NumPy, tensor by tensor on strict arrays: every way the bits of one update per tensor in turn. Shapes include one longer than the kernel's grid (a grid-stride
    loop), a 0-d and an empty one; a non-contiguous tensor, or one parameter under two names (updated twice,
    in turn), sends CuPy back to the per-tensor kernels, and a shared parameter NumPy back to tensor by tensor."""
    rng = np.random.default_rng(11)

    def tensors(shapes):
        return [device(rng.standard_normal(s).astype(dtype)) for s in shapes]

    for variant in ("contiguous", "strided", "shared"):
        shapes = [(3, 5), (1,), (), (1100, 1000), (7, 2, 3), (0, 4)]
        if variant == "shared":
            shapes[4] = shapes[0]
        p, g, m = tensors(shapes), tensors(shapes), tensors(shapes)
        v_sgd, v_adam = tensors(shapes), [abs(x) for x in tensors(shapes)]  # a velocity; a second moment
        if variant == "strided":
            p[0] = backend.xp().zeros((3, 10), dtype)[:, ::2]
            p[0][...] = device(rng.standard_normal((3, 5)).astype(dtype))
        if variant == "shared":
            p[4] = p[0]
        reference = [[x.copy() for x in group] for group in (p, g, m, v_sgd, v_adam)]
        if variant == "shared":
            reference[0][4] = reference[0][0]
        backend.sgd_momentum_update_many(p, g, v_sgd, 0.05, 0.5)
        backend.adam_update_many(p, g, m, v_adam, 0.5, 0.999, 1e-3, 1e-8)
        pr, gr, mr, vr_sgd, vr_adam = reference
        for i in range(len(shapes)):
            backend.sgd_momentum_update(pr[i], gr[i], vr_sgd[i], 0.05, 0.5)
        for i in range(len(shapes)):
            backend.adam_update(pr[i], gr[i], mr[i], vr_adam[i], 0.5, 0.999, 1e-3, 1e-8)
        for got, want in zip((p, m, v_sgd, v_adam), (pr, mr, vr_sgd, vr_adam)):
            for a, b in zip(got, want):
                same(a, b, on_backend)
    backend.sgd_momentum_update_many(*(tensors([(0,), (2, 0)]) for _ in range(3)), 0.1, 0.5)  # nothing to do


@pytest.mark.parametrize("make", [lambda net: optim.SGD(net, lr=0.1, momentum=0.5),
                                  lambda net: optim.Adam(net, lr=1e-3)], ids=["sgd", "adam"])
def test_optimizer_steps_update_every_tensor_as_before(on_backend, make):
    """SGD with momentum and Adam without a clip step all tensors in one call: the bits of the base class's
    step, which updates tensor by tensor (``_update``)."""
    net, twin = (backend.to_device(Linear(6, 4, rng=0)) for _ in range(2))
    for layer in (net, twin):
        for k, g in layer.grads.items():
            g[...] = device(np.random.default_rng(len(k)).standard_normal(g.shape).astype(g.dtype))
    opt, reference = make(net), make(twin)
    for _ in range(3):
        opt.step()
        if isinstance(reference, optim.Adam):
            reference._prepare_step()
        optim.Optimizer.step(reference)
    for k in net.params:
        same(net.params[k], twin.params[k], on_backend)
    assert opt.steps == reference.steps == 3
    assert opt.state.keys() == reference.state.keys()
