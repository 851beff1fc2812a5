"""Conv2d and ConvTranspose2d: exact gradients on hypothesis-drawn shapes, the adjoint identity, forward values
against a naive direct convolution (and PyTorch when it is installed), scratch reuse, switches, init, errors."""

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from minigan import backend
from minigan.gradcheck import check_layer, generic_point
from minigan.nn import ReLU, Sequential
from minigan.nn import Conv2d, ConvTranspose2d, col2im, conv_output_size, im2col, spread_taps, sum_taps

METHODS = st.sampled_from(["columns", "taps"])  # Conv2d's two computations; "auto" picks one per shape


def _data(seed, *shape):
    return np.random.default_rng(seed).standard_normal(shape)


def _assert_passed(report):
    assert report.passed, "\n" + report.table()
    assert all(r.checked + r.tiny > 0 for r in report.results)


@st.composite
def conv_geometry(draw, kernels=(1, 2, 3, 4, 5, 7)):
    """(kernel, stride, padding, H, W) with an output of at least one pixel; H, W odd or even, not square."""
    k = draw(st.sampled_from(kernels))
    s = draw(st.integers(1, 3))
    p = draw(st.integers(0, 3))
    low = max(1, k - 2 * p)
    h = draw(st.integers(low, low + 5))
    w = draw(st.integers(low, low + 5))
    return k, s, p, h, w


def naive_conv2d(x, W, b, stride, padding):
    """Direct definition, one output position at a time: y[n,o,a,c] = b[o] + <W[o], window of padded x>."""
    n, _, h, w = x.shape
    out, _, kh, kw = W.shape
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    oh, ow = (h + 2 * padding - kh) // stride + 1, (w + 2 * padding - kw) // stride + 1
    y = np.zeros((n, out, oh, ow))
    for i in range(n):
        for o in range(out):
            for a in range(oh):
                for c in range(ow):
                    window = xp[i, :, a * stride:a * stride + kh, c * stride:c * stride + kw]
                    y[i, o, a, c] = np.sum(window * W[o]) + (b[o] if b is not None else 0.0)
    return y


def naive_conv_transpose2d(x, W, b, stride, padding, output_padding):
    """Direct definition, one input pixel at a time: stamp x[n,c,h,w] * W[c] onto the output at stride s."""
    n, _, h, w = x.shape
    _, out, kh, kw = W.shape
    full = np.zeros((n, out, (h - 1) * stride + kh + output_padding, (w - 1) * stride + kw + output_padding))
    for i in range(n):
        for c in range(x.shape[1]):
            for a in range(h):
                for d in range(w):
                    full[i, :, a * stride:a * stride + kh, d * stride:d * stride + kw] += x[i, c, a, d] * W[c]
    y = full[:, :, padding:full.shape[2] - padding, padding:full.shape[3] - padding]
    return y + (b.reshape(1, -1, 1, 1) if b is not None else 0.0)


# -- exact gradients, every backend ------------------------------------------------------------------------


@settings(max_examples=25)
@given(geometry=conv_geometry(), n=st.integers(1, 2), c_in=st.integers(1, 3), c_out=st.integers(1, 3),
       bias=st.booleans(), s=st.integers(0, 2**16), method=METHODS)
def test_conv2d_gradients(on_backend, geometry, n, c_in, c_out, bias, s, method):
    k, stride, p, h, w = geometry
    layer = generic_point(Conv2d(c_in, c_out, k, stride, p, bias=bias, rng=s, method=method), s)
    _assert_passed(check_layer(layer, _data(s, n, c_in, h, w), seed=s, n_samples=6))


@settings(max_examples=25)
@given(geometry=conv_geometry(), n=st.integers(1, 2), c_in=st.integers(1, 3), c_out=st.integers(1, 3),
       bias=st.booleans(), data=st.data())
def test_conv_transpose2d_gradients(on_backend, geometry, n, c_in, c_out, bias, data):
    k, stride, p, h, w = geometry
    op = data.draw(st.integers(0, stride - 1), label="output_padding")
    s = data.draw(st.integers(0, 2**16), label="seed")
    layer = ConvTranspose2d(c_in, c_out, k, stride, p, output_padding=op, bias=bias, rng=s)
    assume(min(layer.output_shape((n, c_in, h, w))[2:]) >= 1)  # else nothing is left after cropping: an error
    _assert_passed(check_layer(generic_point(layer, s), _data(s, n, c_in, h, w), seed=s, n_samples=6))


# -- the adjoint identity: <conv(x), y> = <x, conv^T(y)> ------------------------------------------------------


@settings(max_examples=30)
@given(geometry=conv_geometry(), n=st.integers(1, 3), c_in=st.integers(1, 4), c_out=st.integers(1, 4),
       s=st.integers(0, 2**16), method=METHODS)
def test_conv_transpose_is_the_adjoint_of_conv(on_backend, geometry, n, c_in, c_out, s, method):
    k, stride, p, h, w = geometry
    conv = Conv2d(c_in, c_out, k, stride, p, bias=False, rng=s, method=method).astype(np.float64)
    # The output padding that makes conv^T's output the size of x: the rows conv's stride skipped.
    op = ((h + 2 * p - k) % stride, (w + 2 * p - k) % stride)
    convT = ConvTranspose2d(c_out, c_in, k, stride, p, output_padding=op, bias=False).astype(np.float64)
    convT.params["W"][...] = conv.params["W"]  # the same array: (out, in, k, k) for one is (in, out, k, k) for the other
    x = backend.to_device(_data(s, n, c_in, h, w))
    y = backend.to_device(_data(s + 1, *conv.output_shape(x.shape)))
    cx, cty = conv.forward(x), convT.forward(y)
    assert cty.shape == x.shape
    lhs, rhs = (float(backend.to_host((a * b).sum())) for a, b in ((cx, y), (x, cty)))
    # Relative to the sum of |terms|, the scale at which the two summation orders round.
    scale = float(backend.to_host((abs(cx) * abs(y)).sum()))
    assert abs(lhs - rhs) <= 1e-12 * scale, (lhs, rhs, scale)


def test_col2im_is_the_adjoint_of_im2col():
    gen = np.random.default_rng(0)
    x = gen.standard_normal((2, 3, 9, 8))
    cols = im2col(x, (3, 2), (2, 3), (4, 3), np.empty((3, 3, 2, 2, 4, 3)))
    c = gen.standard_normal(cols.shape)
    back = col2im(c, (3, 2), (2, 3), (4, 3), np.zeros_like(x))
    assert abs(np.sum(cols * c) - np.sum(x * back)) <= 1e-12 * np.sum(np.abs(cols * c))


def test_spread_taps_is_the_adjoint_of_sum_taps():
    gen = np.random.default_rng(1)
    taps = gen.standard_normal((2, 3, 2, 2, 9, 8))  # (O, kh, kw, N, Hp, Wp); stride (2, 3) skips a column
    y = sum_taps(taps, (2, 3), (4, 3), np.empty((2, 2, 4, 3)))
    g = gen.standard_normal(y.shape)
    back = spread_taps(g, (2, 3), np.full_like(taps, np.nan))  # every entry written, zeros included
    assert np.isfinite(back).all()
    assert abs(np.sum(y * g) - np.sum(taps * back)) <= 1e-12 * np.sum(np.abs(y * g))


@settings(max_examples=25)
@given(geometry=conv_geometry(), n=st.integers(1, 3), c_in=st.integers(1, 4), c_out=st.integers(1, 4),
       bias=st.booleans(), s=st.integers(0, 2**16))
def test_columns_and_taps_compute_the_same_function_and_gradients(on_backend, geometry, n, c_in, c_out, bias, s):
    k, stride, p, h, w = geometry
    columns, taps = (generic_point(Conv2d(c_in, c_out, k, stride, p, bias=bias, rng=s, method=m), s)
                     .astype(np.float64) for m in ("columns", "taps"))
    x = backend.to_device(_data(s, n, c_in, h, w))
    y_c, y_t = columns.forward(x, True), taps.forward(x, True)
    g = backend.to_device(_data(s + 1, *y_c.shape))
    dx_c, dx_t = columns.backward(g), taps.backward(g)
    close = dict(rtol=1e-11, atol=1e-11)
    np.testing.assert_allclose(backend.to_host(y_t), backend.to_host(y_c), **close)
    np.testing.assert_allclose(backend.to_host(dx_t), backend.to_host(dx_c), **close)
    for name in columns.grads:
        np.testing.assert_allclose(backend.to_host(taps.grads[name]), backend.to_host(columns.grads[name]), **close)


def _assert_both_orders_agree(layer, kind, monkeypatch, x, g, seed, order="batch_last"):
    """The layer's output, input gradient and parameter gradients with its columns in (n, a, b) order and forced
    into ``order`` (batch-innermost, or per image) agree to float64 rounding; the forced layer passes the
    gradient check."""
    results = {}
    for other in ("batch_last", "batch_first"):
        if hasattr(kind, other) and other != order:
            monkeypatch.setattr(kind, other, lambda self, shape: False)
    for forced in (False, True):
        monkeypatch.setattr(kind, order, lambda self, shape, flag=forced: flag)
        y = layer.forward(x, True)
        dx = layer.backward(g)
        results[forced] = [backend.to_host(a) for a in (y, dx, *layer.grads.values())]
    for a, b in zip(results[True], results[False]):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    _assert_passed(check_layer(layer, backend.to_host(x), seed=seed, n_samples=6))  # still forced


@settings(max_examples=25)
@given(geometry=conv_geometry(), n=st.integers(1, 5), c_in=st.integers(1, 4), c_out=st.integers(1, 3),
       bias=st.booleans(), s=st.integers(0, 2**16))
def test_conv_batch_last_columns_compute_the_same(on_backend, monkeypatch, geometry, n, c_in, c_out, bias, s):
    k, stride, p, h, w = geometry
    layer = Conv2d(c_in, c_out, k, stride, p, bias=bias, rng=s, method="columns")
    layer = generic_point(layer, s).astype(np.float64)
    x = backend.to_device(_data(s, n, c_in, h, w))
    g = backend.to_device(_data(s + 1, *layer.output_shape(x.shape)))
    _assert_both_orders_agree(layer, Conv2d, monkeypatch, x, g, s)
    _assert_both_orders_agree(layer, Conv2d, monkeypatch, x, g, s, order="batch_first")


@settings(max_examples=25)
@given(geometry=conv_geometry(), n=st.integers(1, 5), c_in=st.integers(1, 3), c_out=st.integers(1, 4),
       bias=st.booleans(), data=st.data())
def test_conv_transpose_batch_last_columns_compute_the_same(on_backend, monkeypatch, geometry, n, c_in, c_out, bias,
                                                          data):
    k, stride, p, h, w = geometry
    op = data.draw(st.integers(0, stride - 1), label="output_padding")
    s = data.draw(st.integers(0, 2**16), label="seed")
    layer = ConvTranspose2d(c_in, c_out, k, stride, p, output_padding=op, bias=bias, rng=s)
    assume(min(layer.output_shape((n, c_in, h, w))[2:]) >= 1)
    layer = generic_point(layer, s).astype(np.float64)
    x = backend.to_device(_data(s, n, c_in, h, w))
    g = backend.to_device(_data(s + 1, *layer.output_shape(x.shape)))
    _assert_both_orders_agree(layer, ConvTranspose2d, monkeypatch, x, g, s)
    _assert_both_orders_agree(layer, ConvTranspose2d, monkeypatch, x, g, s, order="batch_first")


@pytest.mark.parametrize("layer, shape, batch_last", [
    (ConvTranspose2d(128, 64, 4, 2, 1), (64, 128, 7, 7), True),   # DCGAN's G.up1 at batch 64
    (ConvTranspose2d(64, 1, 4, 2, 1), (64, 64, 14, 14), False),   # a one-channel output: 16 column rows
    (ConvTranspose2d(128, 64, 4, 2, 1), (4, 128, 7, 7), False),   # a batch shorter than a row
])
def test_conv_transpose_order_follows_the_shape(layer, shape, batch_last):
    assert layer.batch_last(shape) is batch_last
    assert layer.batch_first(shape) is (layer.out_channels == 1)  # 16 column rows against 64 input channels


@pytest.mark.parametrize("shape, batch_last", [
    ((64, 64, 14, 14), True),   # DCGAN D.conv2 64 -> 128 at batch 64: 1024 column rows, 7 output columns
    ((64, 1, 28, 28), False),   # a one-channel input: 16 column rows against 64 outputs
    ((1, 64, 14, 14), False),   # one image: runs of 1
])
def test_the_column_order_follows_the_shape(shape, batch_last):
    layer = Conv2d(shape[1], 128 if shape[1] == 64 else 64, 4, 2, 1)
    assert layer.batch_last(shape) is batch_last
    # per image when the column matrix has fewer rows than the output: the one-channel input (16 against 64)
    assert layer.batch_first(shape) is (shape[1] == 1)


@pytest.mark.parametrize("layer, shape, taps", [
    (Conv2d(64, 1, 4, 1, 1), (2, 64, 16, 16), True),    # a PatchGAN's output: one row of products
    (Conv2d(32, 64, 4, 1, 1), (2, 32, 16, 16), False),  # its stride-1 hidden layer: more outputs than inputs
    (Conv2d(32, 64, 4, 2, 1), (2, 32, 16, 16), False),  # a stride-2 encoder layer
    (Conv2d(8, 1, 4, 1, 1, method="columns"), (2, 8, 8, 8), False),
    (Conv2d(8, 64, 4, 2, 1, method="taps"), (2, 8, 8, 8), True),
])
def test_auto_takes_the_smaller_intermediate_and_a_method_is_obeyed(layer, shape, taps):
    assert layer.uses_taps(shape) is taps


def test_unknown_method_is_refused():
    with pytest.raises(ValueError, match="method must be one of auto, columns, taps"):
        Conv2d(2, 2, 3, method="direct")


# -- forward values against independent references ----------------------------------------------------------


@settings(max_examples=20)
@given(geometry=conv_geometry(), c_in=st.integers(1, 3), c_out=st.integers(1, 3), bias=st.booleans(),
       s=st.integers(0, 2**16), method=METHODS)
def test_conv2d_matches_a_naive_direct_convolution(geometry, c_in, c_out, bias, s, method):
    k, stride, p, h, w = geometry
    layer = generic_point(Conv2d(c_in, c_out, k, stride, p, bias=bias, rng=s, method=method), s).astype(np.float64)
    x = _data(s, 2, c_in, h, w)
    expected = naive_conv2d(x, layer.params["W"], layer.params.get("b"), stride, p)
    np.testing.assert_allclose(layer.forward(x), expected, rtol=1e-12, atol=1e-12)


@settings(max_examples=20)
@given(geometry=conv_geometry(), c_in=st.integers(1, 3), c_out=st.integers(1, 3), bias=st.booleans(),
       data=st.data())
def test_conv_transpose2d_matches_a_naive_scatter(geometry, c_in, c_out, bias, data):
    k, stride, p, h, w = geometry
    op = data.draw(st.integers(0, stride - 1), label="output_padding")
    s = data.draw(st.integers(0, 2**16), label="seed")
    layer = ConvTranspose2d(c_in, c_out, k, stride, p, output_padding=op, bias=bias, rng=s).astype(np.float64)
    assume(min(layer.output_shape((1, c_in, h, w))[2:]) >= 1)
    x = _data(s, 2, c_in, h, w)
    expected = naive_conv_transpose2d(x, layer.params["W"], layer.params.get("b"), stride, p, op)
    np.testing.assert_allclose(layer.forward(x), expected, rtol=1e-12, atol=1e-12)


def test_forward_on_every_backend_is_the_numpy_forward(on_backend):
    layers = [Conv2d(2, 3, 4, 2, 1, rng=0), ConvTranspose2d(3, 2, 3, 2, 1, output_padding=1, rng=1)]
    x = _data(0, 2, 2, 7, 6).astype(np.float32)
    y = backend.to_host(layers[1].forward(layers[0].forward(backend.to_device(x))))
    reference = [Conv2d(2, 3, 4, 2, 1, rng=0), ConvTranspose2d(3, 2, 3, 2, 1, output_padding=1, rng=1)]
    backend.to_host(reference[0]), backend.to_host(reference[1])
    np.testing.assert_allclose(y, reference[1].forward(reference[0].forward(x)), rtol=1e-5, atol=1e-6)
    assert y.shape == (2, 2, 6, 6) and y.dtype == np.float32


@pytest.mark.parametrize("k, s, p, op, h, w", [
    (4, 2, 1, 0, 7, 7), (3, 2, 1, 1, 4, 5), (7, 1, 3, 0, 6, 5), (1, 2, 0, 1, 3, 4), (5, 3, 2, 2, 4, 3)])
def test_against_pytorch_with_the_same_weights(k, s, p, op, h, w):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    conv = generic_point(Conv2d(3, 4, k, s, p, rng=1), 1).astype(np.float64)
    x = _data(2, 2, 3, h + k, w + k)
    expected = F.conv2d(torch.tensor(x), torch.tensor(conv.params["W"]), torch.tensor(conv.params["b"]), s, p)
    np.testing.assert_allclose(conv.forward(x), expected.numpy(), rtol=1e-12, atol=1e-12)
    convT = generic_point(ConvTranspose2d(3, 4, k, s, p, output_padding=op, rng=1), 1).astype(np.float64)
    x = _data(3, 2, 3, h, w)
    expected = F.conv_transpose2d(torch.tensor(x), torch.tensor(convT.params["W"]), torch.tensor(convT.params["b"]),
                                  s, p, op)
    np.testing.assert_allclose(convT.forward(x), expected.numpy(), rtol=1e-12, atol=1e-12)
    # The weight layouts are PyTorch's modules' own: (out, in, kh, kw) and (in, out, kh, kw).
    assert conv.params["W"].shape == tuple(torch.nn.Conv2d(3, 4, k).weight.shape)
    assert convT.params["W"].shape == tuple(torch.nn.ConvTranspose2d(3, 4, k).weight.shape)


# -- buffers, switches, modes ---------------------------------------------------------------------------------


def test_scratch_arrays_are_reused_per_shape_and_outputs_are_fresh():
    layer = Conv2d(2, 3, 3, 1, 1, rng=0)
    x = np.ones((4, 2, 6, 5), np.float32)
    y1 = layer.forward(x)
    cols = layer._buffer("cols", (2, 3, 3, 4, 6, 5), np.float32, x)
    y1_copy = y1.copy()
    dx1 = layer.backward(np.ones_like(y1))
    y2 = layer.forward(2 * x)
    assert layer._buffer("cols", (2, 3, 3, 4, 6, 5), np.float32, x) is cols  # the same column matrix
    assert y2 is not y1 and np.array_equal(y1, y1_copy)  # the first output was not overwritten
    dx2 = layer.backward(np.ones_like(y2))
    assert dx2 is not dx1


@pytest.mark.parametrize("make", [lambda: Conv2d(2, 3, 3, 2, 1, rng=0),
                                  lambda: ConvTranspose2d(2, 3, 3, 2, 1, output_padding=1, rng=0)],
                         ids=["conv", "conv_transpose"])
def test_requires_grad_and_input_grad_switches(on_backend, make):
    layer = make()
    x = backend.to_device(np.ones((2, 2, 5, 5), np.float32))
    y = layer.forward(x, train=True)
    g = backend.to_device(np.ones(y.shape, np.float32))
    layer.set_requires_grad(False)
    dx = layer.backward(g)
    assert dx.shape == x.shape
    assert all(not backend.to_host(v).any() for v in layer.grads.values())  # parameter gradients skipped
    layer.set_requires_grad(True).set_input_grad(False)
    assert layer.backward(g) is None
    assert all(backend.to_host(v).any() for v in layer.grads.values())
    net = Sequential(make(), ReLU(), Conv2d(3, 2, 1, rng=1))
    net.forward(x)
    net.set_input_grad(False)
    assert net.backward(backend.to_device(np.ones(net.forward(x).shape, np.float32))) is None


def test_dtype_default_and_float64_cast():
    layer = Conv2d(1, 2, 3)
    assert layer.params["W"].dtype == np.float32 and layer.params["W"].shape == (2, 1, 3, 3)
    assert layer.forward(np.ones((1, 1, 4, 4), np.float32)).dtype == np.float32
    layer.astype(np.float64)
    assert layer.forward(np.ones((1, 1, 4, 4))).dtype == np.float64
    assert Conv2d(1, 2, 3, bias=False).params.keys() == {"W"}


# -- initialisation -------------------------------------------------------------------------------------------


def test_initialisation_is_seeded_and_follows_pytorch_or_dcgan():
    a, b = Conv2d(8, 16, 4, rng=7), Conv2d(8, 16, 4, rng=7)
    assert np.array_equal(a.params["W"], b.params["W"]) and np.array_equal(a.params["b"], b.params["b"])
    assert not np.array_equal(a.params["W"], Conv2d(8, 16, 4, rng=8).params["W"])
    bound = 1 / np.sqrt(8 * 4 * 4)  # kaiming_uniform(a=sqrt(5)): U(+-1/sqrt(fan_in)), fan_in = in*kh*kw
    assert np.abs(a.params["W"]).max() <= bound and np.abs(a.params["W"]).max() > 0.95 * bound
    assert np.abs(a.params["b"]).max() <= bound
    t = ConvTranspose2d(16, 8, 4, rng=0)
    bound_t = 1 / np.sqrt(8 * 4 * 4)  # PyTorch's fan_in for (in, out, kh, kw) is out*kh*kw
    assert t.params["W"].shape == (16, 8, 4, 4) and t.params["b"].shape == (8,)
    assert bound_t * 0.95 < np.abs(t.params["W"]).max() <= bound_t
    d = Conv2d(64, 128, 4, init="normal", rng=0)  # DCGAN: N(0, 0.02), zero bias
    assert abs(d.params["W"].std() - 0.02) < 0.0005 and abs(d.params["W"].mean()) < 0.0005
    assert not d.params["b"].any()
    assert not Conv2d(2, 2, 3, init="zeros").params["W"].any()


# -- errors ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad, message", [
    (np.ones((2, 3, 5), np.float32), r"expected a batch of shape \(N, C, H, W\)"),
    (np.ones((2, 2, 5, 5), np.float32), r"expected 3 channels"),
    (np.ones((2, 3, 5, 5), np.float64), r"expected dtype float32"),
    (np.ones((2, 3, 5, 5), np.int64), r"floating-point"),
    (np.ones((2, 3, 1, 5), np.float32), r"smaller than the kernel"),
])
def test_bad_input_names_the_layer(on_backend, bad, message):
    layer = Conv2d(3, 2, 4, padding=1, name="conv1")
    with pytest.raises(ValueError, match=message) as info:
        layer.forward(backend.to_device(bad))
    assert "Conv2d conv1" in str(info.value)


def test_constructor_errors():
    with pytest.raises(ValueError, match="in_channels"):
        Conv2d(0, 2, 3)
    with pytest.raises(ValueError, match="kernel_size"):
        Conv2d(1, 2, 0)
    with pytest.raises(ValueError, match="stride"):
        Conv2d(1, 2, 3, stride=0)
    with pytest.raises(ValueError, match="padding"):
        Conv2d(1, 2, 3, padding=-1)
    with pytest.raises(ValueError, match="output_padding"):
        ConvTranspose2d(1, 2, 3, stride=2, output_padding=2)
    with pytest.raises(ValueError, match="initialiser"):
        Conv2d(1, 2, 3, init="glorot")
    with pytest.raises(ValueError, match="leaves no output"):
        ConvTranspose2d(1, 1, 1, padding=1).forward(np.ones((1, 1, 2, 2), np.float32))
    with pytest.raises(RuntimeError, match="before forward"):
        Conv2d(1, 1, 1).backward(np.ones((1, 1, 1, 1), np.float32))


def test_output_size_formula():
    assert conv_output_size(28, 4, 2, 1) == 14 and conv_output_size(14, 4, 2, 1) == 7
    assert ConvTranspose2d(128, 64, 4, 2, 1).output_shape((64, 128, 7, 7)) == (64, 64, 14, 14)
    assert ConvTranspose2d(2, 2, 3, 2, 1, output_padding=1).output_shape((1, 2, 8, 8)) == (1, 2, 16, 16)


def test_batch_last_input_gradient_without_weight_gradients(on_backend):
    # G's step through D: D's weights frozen, so only the input gradient is computed from the (a, b, n) columns.
    layer = generic_point(Conv2d(6, 2, 3, 2, 1, rng=0), 0).astype(np.float64)
    x = backend.to_device(_data(0, 7, 6, 5, 6))
    assert layer.batch_last(x.shape)
    g = backend.to_device(_data(1, *layer.output_shape(x.shape)))
    layer.forward(x, True)
    with_weights = backend.to_host(layer.backward(g))
    grads = {k: backend.to_host(v).copy() for k, v in layer.grads.items()}
    layer.set_requires_grad(False)
    layer.forward(x, True)
    np.testing.assert_array_equal(backend.to_host(layer.backward(g)), with_weights)
    for k, v in layer.grads.items():  # left as they were
        np.testing.assert_array_equal(backend.to_host(v), grads[k])
    # D's first layer in D's step: weight gradients from the (a, b, n) columns, no input gradient.
    layer.set_requires_grad(True)
    layer.set_input_grad(False)
    layer.forward(x, True)
    assert layer.backward(g) is None
    for k, v in layer.grads.items():
        np.testing.assert_array_equal(backend.to_host(v), grads[k])
