"""Layers: forward semantics, exact gradients (hypothesis-drawn shapes), modes, and input validation."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minigan import backend
from minigan.gradcheck import check_layer, generic_point
from minigan.nn import (Dropout, Join, LeakyReLU, Linear, Maxout, ReLU, Sequential, Sigmoid, Tanh,
                            checking_finite_inputs, sigmoid)

batch = st.integers(1, 6)
width = st.integers(1, 7)
seed = st.integers(0, 2**16)


def _data(seed, *shape, scale=1.0):
    return scale * np.random.default_rng(seed).standard_normal(shape)


def _assert_passed(report):
    assert report.passed, "\n" + report.table()
    assert sum(r.checked + r.tiny for r in report.results) > 0


# -- exact gradients, every layer, every backend --------------------------------------------------------


@given(n=batch, d_in=width, d_out=width, s=seed)
def test_linear_gradients(on_backend, n, d_in, d_out, s):
    _assert_passed(check_layer(Linear(d_in, d_out, rng=s), _data(s, n, d_in), seed=s))


@settings(max_examples=20)
@given(n=st.integers(1, 70), d_in=st.integers(1, 300), s=seed, sn=st.booleans())
def test_one_output_input_gradient_is_the_product_to_the_bit(on_backend, n, d_in, s, sn):
    # A logit layer's input gradient G W^T is written as a broadcast outer product, not a k = 1 GEMM.
    layer = Linear(d_in, 1, rng=s, spectral_norm=sn)
    x, g = (backend.to_device(_data(s + i, n, w).astype(np.float32)) for i, w in ((0, d_in), (1, 1)))
    layer.forward(x, True)
    dx = backend.to_host(layer.backward(g))
    W = backend.to_host(layer._W)
    np.testing.assert_array_equal(dx, backend.to_host(g) @ W.T)


@given(n=batch, d_in=width, units=st.integers(1, 5), pieces=st.integers(1, 4), s=seed)
def test_maxout_gradients(on_backend, n, d_in, units, pieces, s):
    _assert_passed(check_layer(generic_point(Maxout(d_in, units, pieces, rng=s), s), _data(s, n, d_in), seed=s))


@pytest.mark.parametrize("make", [ReLU, lambda: LeakyReLU(0.2), Sigmoid, Tanh, lambda: Dropout(0.4, seed=3)],
                         ids=["relu", "leaky_relu", "sigmoid", "tanh", "dropout"])
@given(n=batch, d=width, s=seed)
def test_activation_gradients(on_backend, make, n, d, s):
    _assert_passed(check_layer(make(), _data(s, n, d, scale=2.0), seed=s))


@given(n=batch, s=seed, p=st.floats(0.0, 0.8))
def test_sequential_gradients(on_backend, n, s, p):
    net = Sequential(Linear(5, 6, rng=s), ReLU(), Dropout(p, seed=s), Maxout(6, 3, 2, rng=s + 1), Tanh(),
                     Linear(3, 2, rng=s + 2), Sigmoid())
    _assert_passed(check_layer(generic_point(net, s), _data(s, n, 5), seed=s))


@given(n=batch, s=seed)
def test_join_gradients(on_backend, n, s):
    net = Join({"x": Sequential(Maxout(4, 3, 2, rng=s), Dropout(0.5, seed=s)),
                "y": Sequential(Linear(3, 2, rng=s + 1), LeakyReLU())})
    _assert_passed(check_layer(generic_point(net, s), (_data(s, n, 4), _data(s + 1, n, 3)), seed=s))


def test_gradcheck_fails_on_a_wrong_gradient():
    class OffByOnePercentTanh(Tanh):
        def backward(self, dout):
            return 1.01 * super().backward(dout)

    report = check_layer(Sequential(Linear(4, 3, rng=0), OffByOnePercentTanh()), _data(0, 3, 4))
    assert not report.passed
    assert report.max_rel_error > 1e-3


def test_gradcheck_reports_kinks_instead_of_failing():
    x = np.array([[1e-9, -1e-9, 0.5, -0.5]])  # two entries sit within the step of ReLU's kink
    report = check_layer(ReLU(), x, check_inputs=True)
    row = {r.name: r for r in report.results}["input"]
    assert row.kinks == 2
    assert row.checked == 1 and row.tiny == 1 and row.tiny_failures == 0  # -0.5 has an exactly zero gradient
    assert report.passed


# -- forward semantics -------------------------------------------------------------------------------------


def test_linear_is_x_w_plus_b_with_w_shaped_in_out():
    layer = Linear(3, 2, rng=0)
    assert layer.params["W"].shape == (3, 2) and layer.params["b"].shape == (2,)
    layer.params["b"][:] = [1.0, -1.0]
    x = _data(1, 4, 3).astype(np.float32)
    np.testing.assert_allclose(layer.forward(x), x @ layer.params["W"] + layer.params["b"], rtol=1e-6)


@settings(max_examples=30, deadline=None)
@given(data=st.data(), units=st.integers(1, 6), pieces=st.integers(1, 7), n=st.integers(1, 5))
def test_maxout_winner_is_the_first_maximal_piece_even_with_ties(data, units, pieces, n):
    # Small integer pre-activations make ties common; the winner must be argmax's (the first maximal piece),
    # and the backward pass must route each unit's gradient to that piece alone.
    z = np.array(data.draw(st.lists(st.integers(-2, 2), min_size=n * units * pieces, max_size=n * units * pieces)),
                 np.float32).reshape(n, units * pieces)
    layer = Maxout(n, units=units, pieces=pieces, init="zeros")
    layer.params["W"][...] = z  # x = identity rows, so Z = I @ W = z (b = 0)
    out = layer.forward(np.eye(n, dtype=np.float32))
    z3 = z.reshape(n, units, pieces)
    np.testing.assert_array_equal(out, z3.max(axis=2))
    np.testing.assert_array_equal(layer.activation_pattern(), z3.argmax(axis=2))
    g = np.arange(1, n * units + 1, dtype=np.float32).reshape(n, units)
    layer.backward(g)
    expected_dz = np.zeros_like(z3)
    np.put_along_axis(expected_dz, z3.argmax(axis=2)[..., None], g[..., None], axis=2)
    np.testing.assert_array_equal(layer.grads["W"][:n], expected_dz.reshape(n, -1))


def test_maxout_pieces_of_a_unit_are_adjacent_columns():
    layer = Maxout(2, units=2, pieces=3, init="zeros")
    # Column u*pieces + j is piece j of unit u: make piece 2 of unit 0 and piece 0 of unit 1 win.
    layer.params["b"][:] = [0, 1, 5, 7, 2, 3]
    out = layer.forward(np.zeros((1, 2), np.float32))
    np.testing.assert_array_equal(out, [[5, 7]])
    np.testing.assert_array_equal(layer.activation_pattern(), [[2, 0]])


def test_dropout_is_inverted_seeded_and_freezable():
    x = np.ones((2000, 50), np.float32)
    d = Dropout(0.3, seed=5)
    y = d.forward(x, train=True)
    kept = y != 0
    assert abs(kept.mean() - 0.7) < 0.01
    np.testing.assert_allclose(y[kept], 1 / 0.7, rtol=1e-6)
    assert abs(y.mean() - 1.0) < 0.02  # inverted: the expectation is unchanged
    np.testing.assert_array_equal(d.forward(x, train=False), x)
    np.testing.assert_array_equal(Dropout(0.3, seed=5).forward(x, train=True), y)  # same seed, same mask
    d.freeze()
    np.testing.assert_array_equal(d.forward(x, train=True), y)
    d.unfreeze()
    assert not np.array_equal(d.forward(x, train=True), y)
    np.testing.assert_array_equal(d.backward(np.ones_like(x)), d._mask)


def test_sigmoid_is_stable_for_huge_logits():
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # underflow to 0 is the right answer
        s = sigmoid(np.array([-1e4, -1000.0, -100.0, 0.0, 100.0, 1000.0, 1e4]))
    assert s[3] == 0.5 and s[-1] == 1.0 and s[0] == 0.0
    np.testing.assert_allclose(s[2], np.exp(-100.0), rtol=1e-12)
    assert np.all(np.isfinite(s))


def test_train_eval_modes_zero_grad_and_switches():
    net = Sequential(Linear(3, 4, rng=0), Dropout(0.5, seed=0), Linear(4, 1, rng=1))
    x = np.ones((8, 3), np.float32)
    net.eval()
    np.testing.assert_array_equal(net.forward(x), net.forward(x))  # no dropout in eval mode
    net.train()
    assert all(layer.training for layer in net.walk())
    net.forward(x)
    dx = net.backward(np.ones((8, 1), np.float32))
    assert dx.shape == (8, 3)
    assert any(np.any(g != 0) for g in net.grads.values())
    net.zero_grad()
    assert all(np.all(g == 0) for g in net.grads.values())
    net.set_requires_grad(False)
    net.forward(x)
    net.backward(np.ones((8, 1), np.float32))
    assert all(np.all(g == 0) for g in net.grads.values())  # parameter gradients skipped
    net.set_requires_grad(True).set_input_grad(False)
    net.forward(x)
    assert net.backward(np.ones((8, 1), np.float32)) is None


def test_container_names_and_float64_cast():
    net = Sequential(Join({"x": Linear(2, 3, rng=0), "y": Linear(1, 1, rng=1)}, name="in"),
                     Linear(4, 1, rng=2, name="out"), name="D")
    assert set(net.params) == {"in.x.W", "in.x.b", "in.y.W", "in.y.b", "out.W", "out.b"}
    assert set(net.grads) == set(net.params)
    net.astype(np.float64)
    assert all(p.dtype == np.float64 for p in net.params.values())
    assert net.forward((np.ones((2, 2)), np.ones((2, 1)))).dtype == np.float64


# -- bad input -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad, message", [
    (np.ones(3, np.float32), r"expected a 2-D batch of shape \(N, 3\).*shape \(3,\)"),
    (np.ones((2, 4), np.float32), r"expected 3 features per row.*received shape \(2, 4\)"),
    (np.ones((2, 3), np.int64), r"expected a floating-point input.*int64"),
    (np.ones((2, 3), np.float64), r"expected dtype float32.*received dtype float64"),
    ([[1.0, 2.0, 3.0]], r"expected an array"),
])
def test_bad_input_names_layer_expected_and_received(on_backend, bad, message):
    net = Sequential(Linear(3, 2, rng=0, name="fc"), name="G")
    if isinstance(bad, np.ndarray):
        bad = backend.to_device(bad)
    with pytest.raises(ValueError, match=message) as info:
        net.forward(bad)
    assert "Linear G.fc" in str(info.value)


def test_nan_input_rejected_when_asked_to_check(on_backend):
    layer = Linear(2, 2, rng=0, name="fc")
    x = backend.to_device(np.array([[1.0, np.nan]], np.float32))
    layer.forward(x)  # unchecked by default: no device sync per layer
    with checking_finite_inputs():
        with pytest.raises(ValueError, match="fc: input holds NaN"):
            layer.forward(x)


def test_constructor_errors():
    with pytest.raises(ValueError, match="in_features"):
        Linear(0, 3)
    with pytest.raises(ValueError, match="pieces"):
        Maxout(3, 2, 0)
    with pytest.raises(ValueError, match="drop probability"):
        Dropout(1.0)
    with pytest.raises(ValueError, match="initialiser"):
        Linear(2, 2, init="bogus")
    with pytest.raises(ValueError, match="2 inputs"):
        Join({"x": Linear(1, 1), "y": Linear(1, 1)}).forward(np.ones((1, 1), np.float32))


def test_scratch_buffers_are_kept_per_shape_for_the_alternating_batch_sizes():
    # D sees 2B rows in its own step and B rows in G's: both buffers must survive the alternation (no
    # reallocation per step), and only the few most recently used shapes are kept.
    layer = Maxout(6, units=3, pieces=2, rng=0)
    big, small = np.ones((8, 6), np.float32), np.ones((4, 6), np.float32)
    layer.forward(big)
    z_big = layer._buffer("z", (8, 6), np.float32, big)
    layer.forward(small)
    layer.forward(big)
    assert layer._buffer("z", (8, 6), np.float32, big) is z_big
    for n in range(1, 6):
        layer.forward(np.ones((n, 6), np.float32))
    assert len(layer.__dict__["_work"]["z"]) <= 3


def test_buffers_are_non_trainable_state_under_dotted_names(on_backend):
    class Counter(Linear):  # a layer with one buffer, as BatchNorm keeps its running statistics
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self._buffers = backend.to_device({"seen": np.zeros(1, np.float32)})

        def forward(self, x, train=None):
            self._buffers["seen"] += x.shape[0]
            return super().forward(x, train)

    net = Join({"x": Sequential(Linear(2, 3, rng=0), Counter(3, 1, rng=1, name="c")), "y": Linear(1, 1, rng=2)})
    assert set(net.buffers) == {"x.c.seen"} and not set(net.buffers) & set(net.params)
    net.forward((backend.to_device(np.ones((4, 2), np.float32)), backend.to_device(np.ones((4, 1), np.float32))))
    assert backend.to_host(net.buffers["x.c.seen"]).tolist() == [4.0]
    net.astype(np.float64)
    assert net.buffers["x.c.seen"].dtype == np.float64
    host = backend.to_host(net)
    assert isinstance(host.buffers["x.c.seen"], np.ndarray)
    assert Linear(2, 2).buffers == {} and Linear(2, 2).dtype == np.float32


# -- spectral normalisation and the projection head ------------------------------------------------------


@given(n=batch, d_in=width, d_out=width, pieces=st.integers(1, 3), s=seed)
def test_spectral_norm_gradients(on_backend, n, d_in, d_out, pieces, s):
    layer = (Linear(d_in, d_out, rng=s, spectral_norm=True) if pieces == 1
             else Maxout(d_in, d_out, pieces, rng=s, spectral_norm=True))
    _assert_passed(check_layer(generic_point(layer, s), _data(s, n, d_in), seed=s))


def test_spectral_norm_divides_by_the_top_singular_value(on_backend):
    layer = Linear(30, 20, rng=4, spectral_norm=True)
    x = backend.to_device(np.eye(30, dtype=np.float32))
    for _ in range(60):  # power iteration: one step per training forward
        y = layer.forward(x, train=True)
    W = backend.to_host(layer.params["W"]).astype(np.float64)
    top = np.linalg.svd(W, compute_uv=False)[0]
    # Y = I W_bar + b: the normalised weight itself, whose top singular value is 1.
    assert np.linalg.svd(backend.to_host(y).astype(np.float64), compute_uv=False)[0] == pytest.approx(1, rel=1e-4)
    assert float(backend.to_host(layer._sigma)) == pytest.approx(top, rel=1e-4)
    # Evaluation reuses u and v: the same function, and the buffers do not move.
    u = backend.to_host(layer.buffers["u"]).copy()
    assert np.array_equal(backend.to_host(layer.forward(x, train=False)), backend.to_host(y))
    assert np.array_equal(backend.to_host(layer.buffers["u"]), u)


def test_spectral_norm_frozen_keeps_u_and_v():
    layer = Linear(5, 4, rng=0, spectral_norm=True)
    u0 = layer.buffers["u"].copy()
    layer.freeze()
    layer.forward(np.ones((2, 5), np.float32), train=True)
    assert np.array_equal(layer.buffers["u"], u0)
    layer.unfreeze()
    layer.forward(np.ones((2, 5), np.float32), train=True)
    assert not np.array_equal(layer.buffers["u"], u0)
    assert sorted(layer.buffers) == ["u", "v"] and sorted(layer.params) == ["W", "b"]


@given(n=batch, f=width, c=st.integers(1, 5), s=seed, sn=st.booleans())
def test_projection_head_gradients(on_backend, n, f, c, s, sn):
    from minigan.nn import ProjectionHead

    labels = np.random.default_rng(s).integers(0, c, n)
    x = np.hstack([_data(s, n, f), np.eye(c)[labels]])
    _assert_passed(check_layer(generic_point(ProjectionHead(f, c, rng=s, embed_rng=s + 1, spectral_norm=sn), s),
                               x, seed=s))


def test_projection_head_scores_hw_plus_b_plus_class_embedding():
    from minigan.nn import ProjectionHead

    head = ProjectionHead(3, 2, rng=0, embed_rng=1, dtype=np.float64)
    head.params["W"][...] = [[1.0], [2.0], [3.0]]
    head.params["b"][...] = 0.5
    head.params["E"][...] = [[1.0, 0.0, 0.0], [0.0, 0.0, -1.0]]
    h = np.array([[1.0, 1.0, 1.0], [2.0, 0.0, 1.0]])
    y = np.array([[1.0, 0.0], [0.0, 1.0]])
    out = head.forward(np.hstack([h, y]))
    # Row 0, class 0: 6 + 0.5 + 1; row 1, class 1: 5 + 0.5 - 1.
    np.testing.assert_allclose(out, [[7.5], [4.5]])
