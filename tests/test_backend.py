"""Backends: selection, host/device moves, seeded generators, and the strict backend catching CuPy-only faults."""

import numpy as np
import pytest

from minigan import backend
from minigan.backend import BackendError, Rng, StrictArray, StrictBackendError, strict_xp
from minigan.nn import Layer, Linear, ReLU, Sequential


class HostConvertingReLU(Layer):
    """A planted bug: correct on NumPy, but np.asarray() on a CuPy array raises (an implicit host copy)."""

    def forward(self, x, train=None):
        host = np.asarray(x)
        self._mask = x > 0
        return x * (host > 0)

    def backward(self, dout):
        return dout * self._mask


class NumpyWhereReLU(Layer):
    """A planted bug: a NumPy function applied to a device array instead of xp.where."""

    def forward(self, x, train=None):
        self._mask = x > 0
        return np.where(self._mask, x, 0)

    def backward(self, dout):
        return dout * self._mask


class SyncingLayer(Layer):
    """A planted bug: a Python scalar pulled out of a device array per call (a GPU sync each step)."""

    def forward(self, x, train=None):
        if float(x.max()) > 1e6:
            raise ValueError("too large")
        return x

    def backward(self, dout):
        return dout


@pytest.mark.parametrize("bug", [HostConvertingReLU, NumpyWhereReLU, SyncingLayer])
def test_strict_backend_catches_planted_bug_that_numpy_hides(bug):
    x = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    net = Sequential(Linear(3, 3, rng=0), bug())
    out = net.forward(x)  # on NumPy the bug is invisible
    assert out.shape == (4, 3)

    backend.use("strict")
    try:
        net = Sequential(Linear(3, 3, rng=0), bug())
        with pytest.raises(StrictBackendError):
            net.forward(backend.to_device(x))
    finally:
        backend.use("numpy")


def test_correct_layer_runs_on_strict_backend_and_matches_numpy():
    x = np.random.default_rng(1).standard_normal((5, 3)).astype(np.float32)
    reference = Sequential(Linear(3, 4, rng=7), ReLU()).forward(x)
    backend.use("strict")
    try:
        net = Sequential(Linear(3, 4, rng=7), ReLU())
        assert isinstance(net.params["0.W"], StrictArray)
        out = net.forward(backend.to_device(x))
        assert isinstance(out, StrictArray)
        np.testing.assert_array_equal(backend.to_host(out), reference)
    finally:
        backend.use("numpy")


def test_strict_array_refusals_and_permissions():
    a = StrictArray(np.arange(6.0).reshape(2, 3))
    for refused in (
        lambda: np.asarray(a),
        lambda: np.array(a),
        lambda: np.concatenate([a, a]),
        lambda: np.sum(a),
        lambda: a + np.ones(3),
        lambda: float(a.sum()),
        lambda: bool(a.any()),
        lambda: a.item(),
        lambda: a.tolist(),
        lambda: list(a),
        lambda: strict_xp.random,
    ):
        with pytest.raises(StrictBackendError):
            refused()
    # What CuPy allows works: operators, ufuncs, xp functions, scalars, in-place ops, indexing.
    b = np.exp(a) + 1.0
    assert isinstance(b, StrictArray)
    c = strict_xp.concatenate([a, a], axis=0)
    assert c.shape == (4, 3)
    a += 1
    a[0, 0] = 10.0
    assert backend.to_host(a)[0, 0] == 10.0
    assert isinstance(strict_xp.sum(a), StrictArray)  # reductions stay on the device, as on CuPy
    assert isinstance(a.T, StrictArray) and a.T.shape == (3, 2)
    assert backend.get_array_module(a) is strict_xp
    assert backend.get_array_module(np.ones(2)) is np


def test_to_device_and_to_host_round_trip_models_and_containers():
    backend.use("strict")
    try:
        tree = backend.to_device({"a": np.ones(3), "b": [np.zeros(2), (np.arange(4),)]})
        assert isinstance(tree["a"], StrictArray) and isinstance(tree["b"][1][0], StrictArray)
        host = backend.to_host(tree)
        assert isinstance(host["b"][1][0], np.ndarray)
        np.testing.assert_array_equal(host["b"][1][0], np.arange(4))
        model = Linear(3, 2, rng=0)
        backend.to_host(model)
        assert all(isinstance(p, np.ndarray) for p in model.params.values())
        backend.to_device(model)
        assert all(isinstance(p, StrictArray) for p in model.params.values())
    finally:
        backend.use("numpy")


def test_unknown_backend_and_missing_gpu_give_clear_errors(monkeypatch):
    with pytest.raises(BackendError, match="unknown backend"):
        backend.use("tpu")
    if not backend.gpu_available():
        with pytest.raises(BackendError, match="CuPy|GPU"):
            backend.use("cupy")
        assert backend.name() == "numpy"


def test_environment_variable_selects_backend(monkeypatch):
    monkeypatch.setattr(backend, "_active", None)
    monkeypatch.setenv("MINIGAN_BACKEND", "strict")
    try:
        assert backend.name() == "strict"
        assert backend.xp() is strict_xp
    finally:
        backend.use("numpy")


def test_rng_is_seeded_and_its_state_round_trips():
    a, b = Rng(42), Rng(42)
    np.testing.assert_array_equal(a.random((3, 4)), b.random((3, 4)))
    state = a.get_state()
    import json

    state = json.loads(json.dumps(state))  # must survive a checkpoint's JSON
    first = a.random((5,), np.float64)
    a.set_state(state)
    np.testing.assert_array_equal(first, a.random((5,), np.float64))
    u = Rng(1).uniform(-2.0, 3.0, (1000,), np.float32)
    assert u.dtype == np.float32 and u.min() >= -2.0 and u.max() < 3.0
    assert isinstance(Rng(1).random((2,), like=StrictArray(np.zeros(1))), StrictArray)
    with pytest.raises(ValueError):
        a.set_state({"bit_generator": "MT19937"})
