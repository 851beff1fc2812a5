"""BatchNorm, ConditionalBatchNorm and InstanceNorm2d: exact gradients (training and evaluation), PyTorch's running statistics,
values against a NumPy transcription of the definition and against PyTorch when installed, and the buffers
that carry the running statistics (dotted names, casting, devices, a checkpoint round trip)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minigan import backend, io
from minigan.gradcheck import check_layer, generic_point
from minigan.nn import LeakyReLU, Linear, Sequential
from minigan.nn import BatchNorm, Conditioned, ConditionalBatchNorm, Conv2d, Dropout, Flatten, Identity, InstanceNorm2d, Join
from minigan.nn.norm import standing_statistics


def _data(seed, *shape, scale=1.0, shift=0.0):
    return shift + scale * np.random.default_rng(seed).standard_normal(shape)


def _assert_passed(report):
    assert report.passed, "\n" + report.table()
    assert all(r.checked + r.tiny > 0 for r in report.results)


batch_shapes = st.one_of(
    st.tuples(st.integers(3, 6), st.integers(1, 4)),  # (N, C)
    st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 4), st.integers(1, 5)),  # (N, C, H, W)
# At least three values per channel: with two, x_hat is +-1 up to O(eps / d^2) (d their distance), a derivative
# that a finite difference at h = 1e-3 cannot resolve (measured: 21 of 300 random cases fail, none with three).
).filter(lambda shape: np.prod(shape) // shape[1] >= 3)


# -- exact gradients -------------------------------------------------------------------------------------------


@settings(max_examples=25)
@given(shape=batch_shapes, train=st.booleans(), affine=st.booleans(), s=st.integers(0, 2**16))
def test_batchnorm_gradients(on_backend, shape, train, affine, s):
    layer = generic_point(BatchNorm(shape[1], affine=affine), s)
    # A generic point for evaluation mode too: running statistics that are not (0, 1).
    layer.buffers["running_mean"][...] = backend.to_device(_data(s, shape[1]).astype(np.float32))
    layer.buffers["running_var"][...] = backend.to_device(np.random.default_rng(s).uniform(0.5, 2, shape[1])
                                                          .astype(np.float32))
    _assert_passed(check_layer(layer, _data(s, *shape, scale=2.0, shift=1.0), train=train, seed=s, n_samples=8))


@settings(max_examples=25)
@given(n=st.integers(1, 3), c=st.integers(1, 3), h=st.integers(1, 5), w=st.integers(3, 5), affine=st.booleans(),
       s=st.integers(0, 2**16))
def test_instancenorm_gradients(on_backend, n, c, h, w, affine, s):
    layer = generic_point(InstanceNorm2d(c, affine=affine), s)
    _assert_passed(check_layer(layer, _data(s, n, c, h, w, scale=2.0, shift=-1.0), seed=s, n_samples=8))


def _conditioned(channels, n_classes, flatten):
    """x through a ConditionalBatchNorm (and Flatten for images) beside the labels: every input is checked."""
    cbn = ConditionalBatchNorm(channels, n_classes, name="cbn")
    branch = Sequential(cbn, Flatten()) if flatten else Sequential(cbn)
    return Conditioned(Join({"x": branch, "y": Identity()}), name="cond"), cbn


@settings(max_examples=25)
@given(shape=batch_shapes, train=st.booleans(), k=st.integers(1, 4), s=st.integers(0, 2**16))
def test_conditional_batchnorm_gradients_labels_included(on_backend, shape, train, k, s):
    net, cbn = _conditioned(shape[1], k, len(shape) == 4)
    generic_point(net, s)
    cbn.buffers["running_mean"][...] = backend.to_device(_data(s, shape[1]).astype(np.float32))
    cbn.buffers["running_var"][...] = backend.to_device(np.random.default_rng(s).uniform(0.5, 2, shape[1])
                                                        .astype(np.float32))
    labels = np.eye(k)[np.random.default_rng(s).integers(0, k, shape[0])]
    report = check_layer(net, (_data(s, *shape, scale=2.0, shift=1.0), labels), train=train, seed=s, n_samples=8)
    _assert_passed(report)
    assert {r.name for r in report.results} >= {"body.x.cbn.class_gamma", "body.x.cbn.class_beta", "input[1]"}


@pytest.mark.parametrize("shape", [(6, 3), (5, 3, 2, 4)])
@pytest.mark.parametrize("train", [True, False])
def test_conditional_batchnorm_is_batchnorm_with_each_class_gain_and_offset(on_backend, shape, train):
    """Starting tables: BatchNorm, forward (bit for bit) and backward. Then each row is gamma + Gamma[k], beta + B[k]
    applied to BatchNorm's x_hat (the class-free output, undone: (y - beta) / gamma)."""
    gen = np.random.default_rng(1)
    x = backend.to_device(_data(2, *shape, scale=2.0, shift=1.0))
    g = backend.to_device(_data(3, *shape))
    classes = np.arange(shape[0]) % 4
    y1 = backend.to_device(np.eye(4)[classes])
    plain, cbn = BatchNorm(shape[1], dtype=np.float64), ConditionalBatchNorm(shape[1], 4, dtype=np.float64)
    plain.params["gamma"][...] = backend.to_device(gen.uniform(0.5, 2, shape[1]))
    cbn.params["gamma"][...] = plain.params["gamma"]
    cbn.condition = y1
    np.testing.assert_array_equal(backend.to_host(cbn.forward(x, train)), backend.to_host(plain.forward(x, train)))
    # the input gradient multiplies by gamma at another point of the same sums: equal to rounding
    np.testing.assert_allclose(backend.to_host(cbn.backward(g)), backend.to_host(plain.backward(g)), rtol=1e-12,
                               atol=1e-14)
    for name in ("gamma", "beta"):
        np.testing.assert_allclose(backend.to_host(cbn.grads[name]), backend.to_host(plain.grads[name]), rtol=1e-12)
    assert not backend.to_host(cbn.condition_grad).any()  # zero tables: the label changes nothing

    table_g, table_b = gen.standard_normal((4, shape[1])), gen.standard_normal((4, shape[1]))
    cbn.params["class_gamma"][...] = backend.to_device(table_g)
    cbn.params["class_beta"][...] = backend.to_device(table_b)
    per_row = (-1, shape[1]) + (1,) * (len(shape) - 2)
    gamma = backend.to_host(plain.params["gamma"])
    x_hat = backend.to_host(plain.forward(x, train)) / gamma.reshape((1,) + per_row[1:])  # beta is 0
    expected = x_hat * (gamma + table_g[classes]).reshape(per_row) + table_b[classes].reshape(per_row)
    np.testing.assert_allclose(backend.to_host(cbn.forward(x, train)), expected, rtol=1e-10, atol=1e-12)


def test_conditional_batchnorm_errors_name_the_problem():
    cbn = ConditionalBatchNorm(3, 10, name="cbn")
    x = np.ones((4, 3), np.float32)
    with pytest.raises(ValueError, match="no condition set"):
        cbn.forward(x)
    cbn.condition = np.eye(10, dtype=np.float32)[:3]
    with pytest.raises(ValueError, match=r"condition of shape \(3, 10\) for a batch of 4"):
        cbn.forward(x)
    with pytest.raises(ValueError, match="n_classes"):
        ConditionalBatchNorm(3, 0)
    with pytest.raises(ValueError, match="no conditional layer"):
        Conditioned(Sequential(BatchNorm(3)))
    with pytest.raises(ValueError, match="ending with the one-hot condition"):
        Conditioned(Sequential(ConditionalBatchNorm(3, 2))).forward(x)


def test_conditional_batchnorm_takes_part_in_standing_statistics(on_backend):
    """A BatchNorm like the others: standing statistics find it inside a Conditioned network and re-estimate its
    running statistics from the batches (the labels set the output, not the statistics)."""
    net, cbn = _conditioned(3, 2, False)
    generic_point(net, 4)
    labels = backend.to_device(np.eye(2, dtype=np.float32)[[0, 1, 0, 1, 1]])
    x = _data(0, 5, 3).astype(np.float32)
    with standing_statistics(net) as layers:
        assert layers == [cbn]
        net.forward((backend.to_device(x), labels), train=False)
    np.testing.assert_allclose(backend.to_host(cbn.buffers["running_mean"]), x.mean(axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(backend.to_host(cbn.buffers["running_var"]), x.var(axis=0, ddof=1), rtol=1e-4)


def test_gradcheck_catches_a_forgotten_gamma():
    class Wrong(BatchNorm):
        def backward(self, dout):  # the input gradient without the factor gamma
            dx = super().backward(dout)
            return dx / self.params["gamma"].reshape(1, -1)

    layer = generic_point(Wrong(3), 0)
    assert not check_layer(layer, _data(0, 5, 3)).passed


@pytest.mark.parametrize("norm", [lambda: BatchNorm(3), lambda: InstanceNorm2d(3, affine=True)], ids=["bn", "in"])
def test_a_conv_bias_before_a_norm_has_zero_gradient_and_passes_as_tiny(on_backend, norm):
    # The normalisation removes any per-channel constant, so dL/db is exactly 0 and its finite difference is
    # round-off: the check holds it to absolute agreement at the scale of sum |Y*R| ("tiny"), and passes.
    net = generic_point(Sequential(Conv2d(2, 3, 3, padding=1, rng=0), norm()), 0)
    report = check_layer(net, _data(0, 2, 2, 4, 5), n_samples=6)
    _assert_passed(report)
    bias = next(r for r in report.results if r.name == "0.b")
    assert bias.tiny == 3 and bias.checked == 0
    assert not np.any(backend.to_host(net.grads["0.b"]) > 1e-12)


# -- values ------------------------------------------------------------------------------------------------------


def _reference_batchnorm(x, gamma, beta, eps=1e-5):
    axes = (0,) + tuple(range(2, x.ndim))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    mean, var = x.mean(axis=axes), x.var(axis=axes)
    return gamma.reshape(shape) * (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + eps) + beta.reshape(shape)


@pytest.mark.parametrize("shape", [(8, 3), (4, 3, 5, 6)])
def test_batchnorm_training_statistics_and_running_averages(on_backend, shape):
    layer = generic_point(BatchNorm(3), 1).astype(np.float64)
    gamma, beta = backend.to_host(layer.params["gamma"]), backend.to_host(layer.params["beta"])
    running_mean, running_var = np.zeros(3), np.ones(3)
    axes = (0,) + tuple(range(2, len(shape)))
    count = np.prod(shape) // 3
    for step in range(3):
        x = _data(step, *shape, scale=3.0, shift=step)
        y = backend.to_host(layer.forward(backend.to_device(x), train=True))
        np.testing.assert_allclose(y, _reference_batchnorm(x, gamma, beta), rtol=1e-12, atol=1e-12)
        # PyTorch: momentum 0.1, and the *unbiased* batch variance in the running average.
        running_mean = 0.9 * running_mean + 0.1 * x.mean(axis=axes)
        running_var = 0.9 * running_var + 0.1 * x.var(axis=axes) * count / (count - 1)
    np.testing.assert_allclose(backend.to_host(layer.buffers["running_mean"]), running_mean, rtol=1e-12)
    np.testing.assert_allclose(backend.to_host(layer.buffers["running_var"]), running_var, rtol=1e-12)
    # Evaluation mode normalises with the running statistics and leaves them alone.
    x = _data(9, *shape)
    shape_c = (1, -1) + (1,) * (len(shape) - 2)
    expected = (gamma.reshape(shape_c) * (x - running_mean.reshape(shape_c))
                / np.sqrt(running_var.reshape(shape_c) + 1e-5) + beta.reshape(shape_c))
    layer.eval()
    np.testing.assert_allclose(backend.to_host(layer.forward(backend.to_device(x))), expected, rtol=1e-12)
    np.testing.assert_allclose(backend.to_host(layer.buffers["running_mean"]), running_mean, rtol=1e-12)


def test_instancenorm_normalises_each_plane():
    x = _data(0, 2, 3, 4, 5, scale=4.0, shift=2.0)
    y = InstanceNorm2d(3).astype(np.float64).forward(x)
    np.testing.assert_allclose(y.mean(axis=(2, 3)), 0, atol=1e-12)
    np.testing.assert_allclose(y.var(axis=(2, 3)), x.var(axis=(2, 3)) / (x.var(axis=(2, 3)) + 1e-5), rtol=1e-12)
    assert InstanceNorm2d(3).params == {} and InstanceNorm2d(3).buffers == {}


@pytest.mark.parametrize("shape", [(6, 4), (3, 4, 5, 2)])
def test_against_pytorch(shape):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    layer = generic_point(BatchNorm(4), 2).astype(np.float64)
    gamma, beta = (torch.tensor(layer.params[k]) for k in ("gamma", "beta"))
    rm, rv = torch.zeros(4, dtype=torch.float64), torch.ones(4, dtype=torch.float64)
    for step in range(2):
        x = _data(step, *shape, scale=2.0, shift=0.5)
        expected = F.batch_norm(torch.tensor(x), rm, rv, gamma, beta, training=True, momentum=0.1, eps=1e-5)
        np.testing.assert_allclose(layer.forward(x, train=True), expected.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(layer.buffers["running_mean"], rm.numpy(), rtol=1e-12)
    np.testing.assert_allclose(layer.buffers["running_var"], rv.numpy(), rtol=1e-12)
    expected = F.batch_norm(torch.tensor(x), rm, rv, gamma, beta, training=False, eps=1e-5)
    np.testing.assert_allclose(layer.forward(x, train=False), expected.numpy(), rtol=1e-10, atol=1e-12)
    if len(shape) == 4:
        inorm = generic_point(InstanceNorm2d(4, affine=True), 3).astype(np.float64)
        expected = F.instance_norm(torch.tensor(x), weight=torch.tensor(inorm.params["gamma"]),
                                   bias=torch.tensor(inorm.params["beta"]), eps=1e-5)
        np.testing.assert_allclose(inorm.forward(x), expected.numpy(), rtol=1e-10, atol=1e-12)


# -- buffers: names, casting, devices, checkpoints -------------------------------------------------------------


def _net():
    return Sequential(Conv2d(1, 2, 3, padding=1, rng=0, name="conv"), BatchNorm(2, name="bn"), LeakyReLU(0.2),
                      Sequential(Conv2d(2, 2, 3, padding=1, rng=1), BatchNorm(2), name="block"), name="D")


def test_buffers_have_dotted_names_and_stay_out_of_params():
    net = _net()
    assert set(net.buffers) == {"bn.running_mean", "bn.running_var", "block.1.running_mean",
                                "block.1.running_var"}
    assert not set(net.buffers) & set(net.params)
    assert {"bn.gamma", "bn.beta", "block.1.gamma"} <= set(net.params)
    assert set(net.grads) == set(net.params)
    assert Linear(2, 2).buffers == {}


def test_buffers_are_cast_and_moved_with_the_model(on_backend):
    net = _net()
    net.astype(np.float64)
    assert all(b.dtype == np.float64 for b in net.buffers.values())
    host = backend.to_host(net)
    assert all(isinstance(b, np.ndarray) for b in host.buffers.values())
    moved = backend.to_device(host)
    assert all(backend.is_device_array(b) == (on_backend != "numpy") for b in moved.buffers.values())


def test_buffers_round_trip_through_a_checkpoint(tmp_path, on_backend):
    net = _net().train()
    for step in range(3):
        net.forward(backend.to_device(_data(step, 4, 1, 5, 5).astype(np.float32)))
    arrays = {f"buffers.D.{k}": backend.to_host(v) for k, v in net.buffers.items()}
    io.save_checkpoint(tmp_path / "ckpt.npz", arrays, {"format": "test"})
    loaded, _ = io.load_checkpoint(tmp_path / "ckpt.npz")
    fresh = _net()
    for k, b in fresh.buffers.items():
        b[...] = backend.to_device(loaded[f"buffers.D.{k}"])
    for k in net.buffers:
        np.testing.assert_array_equal(backend.to_host(fresh.buffers[k]), backend.to_host(net.buffers[k]))
    x = backend.to_device(_data(7, 2, 1, 5, 5).astype(np.float32))
    np.testing.assert_array_equal(backend.to_host(fresh.eval().forward(x)), backend.to_host(net.eval().forward(x)))


# -- switches and errors -----------------------------------------------------------------------------------------


def test_switches_and_eval_mode_leaves_running_statistics_alone(on_backend):
    layer = BatchNorm(3)
    x = backend.to_device(_data(0, 4, 3, 2, 2).astype(np.float32))
    before = backend.to_host(layer.buffers["running_var"])
    layer.eval().forward(x)
    assert np.array_equal(backend.to_host(layer.buffers["running_var"]), before)
    layer.train().forward(x)
    assert not np.array_equal(backend.to_host(layer.buffers["running_var"]), before)
    layer.set_requires_grad(False)
    g = backend.to_device(np.ones((4, 3, 2, 2), np.float32))
    assert layer.backward(g).shape == (4, 3, 2, 2)
    assert not any(backend.to_host(v).any() for v in layer.grads.values())
    layer.set_requires_grad(True).set_input_grad(False)
    assert layer.backward(g) is None


def test_errors():
    with pytest.raises(ValueError, match="more than one value per channel"):
        BatchNorm(3).forward(np.ones((1, 3), np.float32), train=True)
    BatchNorm(3).forward(np.ones((1, 3), np.float32), train=False)  # evaluation is fine with one row
    with pytest.raises(ValueError, match=r"expected 3 channels"):
        BatchNorm(3, name="bn").forward(np.ones((4, 2), np.float32))
    with pytest.raises(ValueError, match="momentum"):
        BatchNorm(3, momentum=1.5)
    with pytest.raises(ValueError, match="eps"):
        InstanceNorm2d(3, eps=0)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        InstanceNorm2d(3).forward(np.ones((4, 3), np.float32))


# -- standing statistics -----------------------------------------------------------------------------------------


def _standing_net():
    return Sequential(Linear(4, 5, 0.5, 0, np.float64, name="h0"), BatchNorm(5, dtype=np.float64, name="bn0"),
                      LeakyReLU(0.2), Dropout(0.5, 3), Linear(5, 3, 0.5, 1, np.float64, name="h1"),
                      BatchNorm(3, dtype=np.float64, name="bn1"), name="G")


def test_standing_statistics_are_the_mean_batch_statistics_of_the_weights_as_they_are(on_backend):
    """On exit each BatchNorm holds the plain mean, over the batches, of its batch mean and unbiased batch
    variance, each batch normalised by its own statistics on the way (a NumPy transcription), dropout off."""
    net = _standing_net()
    for i, p in enumerate(net.params.values()):  # weights away from their initial values, gammas and betas too
        p[...] = backend.to_device(_data(100 + i, *p.shape, scale=0.7, shift=0.3))
    batches = [_data(10 + b, 6, 4, scale=2.0, shift=b) for b in range(3)]
    live = {k: backend.to_host(v).copy() for k, v in net.buffers.items()}
    P = {k: backend.to_host(v) for k, v in net.params.items()}
    expected = {"bn0": [], "bn1": []}
    for x in batches:
        h0 = x @ P["h0.W"] + P["h0.b"]
        expected["bn0"].append((h0.mean(0), h0.var(0) * 6 / 5))
        a = _reference_batchnorm(h0, P["bn0.gamma"], P["bn0.beta"])
        a = np.where(a > 0, a, 0.2 * a)  # LeakyReLU; Dropout is the identity in evaluation mode
        h1 = a @ P["h1.W"] + P["h1.b"]
        expected["bn1"].append((h1.mean(0), h1.var(0) * 6 / 5))
    with standing_statistics(net) as layers:
        assert [layer.path for layer in layers] == ["G.bn0", "G.bn1"]
        for x in batches:
            net.forward(backend.to_device(x), train=False)
        # Inside, the running statistics are still the live ones.
        assert all(np.array_equal(backend.to_host(v), live[k]) for k, v in net.buffers.items())
    for bn, stats in expected.items():
        np.testing.assert_allclose(backend.to_host(net.buffers[f"{bn}.running_mean"]),
                                   np.mean([m for m, _ in stats], axis=0), rtol=1e-12)
        np.testing.assert_allclose(backend.to_host(net.buffers[f"{bn}.running_var"]),
                                   np.mean([v for _, v in stats], axis=0), rtol=1e-12)
    # Afterwards evaluation mode uses them and changes nothing.
    after = {k: backend.to_host(v).copy() for k, v in net.buffers.items()}
    net.forward(backend.to_device(batches[0]), train=False)
    assert all(np.array_equal(backend.to_host(v), after[k]) for k, v in net.buffers.items())


def test_standing_statistics_leave_the_buffers_alone_on_failure(on_backend):
    net = _standing_net()
    live = {k: backend.to_host(v).copy() for k, v in net.buffers.items()}
    x = backend.to_device(_data(0, 6, 4))
    with pytest.raises(ValueError, match="no batch went through"):
        with standing_statistics(net):
            pass
    with pytest.raises(KeyError):
        with standing_statistics(net):
            net.forward(x, train=False)
            raise KeyError("interrupted")
    with pytest.raises(RuntimeError, match="no backward pass"):
        with standing_statistics(net):
            net.forward(x, train=False)
            net.backward(backend.to_device(np.ones((6, 3))))
    with pytest.raises(RuntimeError, match="already being measured"):
        with standing_statistics(net):
            with standing_statistics(net):
                pass
    assert all(np.array_equal(backend.to_host(v), live[k]) for k, v in net.buffers.items())
    # Training-mode forwards inside still update the running statistics the usual way (and are not counted).
    with pytest.raises(ValueError, match="no batch went through"):
        with standing_statistics(net):
            net.forward(x, train=True)
    assert not np.array_equal(backend.to_host(net.buffers["bn0.running_mean"]), live["bn0.running_mean"])
    with standing_statistics(Linear(2, 2)) as layers:  # nothing to measure
        assert layers == []
