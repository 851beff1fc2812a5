"""MinibatchStdDev: exact gradients on every backend, values against a transcription of the definition, groups
that do not see each other, a collapsed batch, and errors that name the problem."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minigan import backend
from minigan.gradcheck import check_layer
from minigan.nn import MinibatchStdDev


def _data(seed, *shape):
    return np.random.default_rng(seed).standard_normal(shape)


def _reference(x, group_size, eps=1e-4):
    """The definition, one group and one feature at a time: the mean over features of each group's std."""
    n = x.shape[0]
    g = min(group_size, n)
    stats = []
    for a in range(n // g):
        rows = x[a * g:(a + 1) * g].reshape(g, -1)
        stats += [np.mean([np.sqrt(np.var(rows[:, j]) + eps) for j in range(rows.shape[1])])] * g
    extra = np.broadcast_to(np.array(stats)[:, None, None, None], (n, 1) + x.shape[2:])
    return np.concatenate([x, extra], axis=1)


groups_and_shapes = st.tuples(st.integers(2, 4), st.integers(1, 3), st.integers(1, 3), st.integers(1, 3),
                              st.integers(1, 4))  # (group size, groups, C, H, W)


@settings(max_examples=25)
@given(case=groups_and_shapes, s=st.integers(0, 2**16))
def test_gradients_are_exact(on_backend, case, s):
    g, groups, c, h, w = case
    report = check_layer(MinibatchStdDev(g), _data(s, g * groups, c, h, w), seed=s, n_samples=8)
    assert report.passed, "\n" + report.table()
    assert all(r.checked + r.tiny > 0 for r in report.results)


@settings(max_examples=10)
@given(n=st.integers(1, 3), c=st.integers(1, 3), h=st.integers(1, 3), w=st.integers(1, 3), s=st.integers(0, 2**16))
def test_gradients_are_exact_when_the_batch_is_smaller_than_a_group(on_backend, n, c, h, w, s):
    report = check_layer(MinibatchStdDev(4), _data(s, n, c, h, w), seed=s, n_samples=8)
    assert report.passed, "\n" + report.table()


@settings(max_examples=25)
@given(case=groups_and_shapes, s=st.integers(0, 2**16))
def test_values_follow_the_definition(on_backend, case, s):
    g, groups, c, h, w = case
    x = _data(s, g * groups, c, h, w)
    y = backend.to_host(MinibatchStdDev(g).forward(backend.to_device(x)))
    np.testing.assert_allclose(y, _reference(x, g), rtol=1e-12, atol=1e-15)
    y32 = backend.to_host(MinibatchStdDev(g).forward(backend.to_device(x.astype(np.float32))))
    assert y32.dtype == np.float32
    np.testing.assert_allclose(y32, _reference(x, g), rtol=2e-5, atol=1e-6)


def test_a_batch_smaller_than_the_group_is_one_group_and_groups_are_independent(on_backend):
    x = _data(0, 3, 2, 2, 2)
    np.testing.assert_allclose(backend.to_host(MinibatchStdDev(4).forward(backend.to_device(x))), _reference(x, 3),
                               rtol=1e-12)
    layer = MinibatchStdDev(2)
    x = _data(1, 6, 2, 3, 3)
    before = backend.to_host(layer.forward(backend.to_device(x)))
    x[0] += 5.0  # group 0 only
    after = backend.to_host(layer.forward(backend.to_device(x)))
    assert not np.allclose(before[:2, 2], after[:2, 2])
    np.testing.assert_array_equal(before[2:, 2], after[2:, 2])
    # Only the last channel: its gradient reaches every row of the group, and no other group.
    dout = np.zeros_like(after)
    dout[0, 2, 0, 0] = 1.0
    dx = backend.to_host(layer.backward(backend.to_device(dout)))
    assert dx[0].any() and dx[1].any() and not dx[2:].any()
    np.testing.assert_allclose(dx[1], -dx[0], rtol=1e-12)  # a group of two: the centred rows are opposite


def test_a_collapsed_batch_reads_sqrt_eps_and_passes_finite_gradients(on_backend):
    x = np.repeat(_data(2, 1, 3, 2, 2), 4, axis=0).astype(np.float32)
    layer = MinibatchStdDev(4)
    y = backend.to_host(layer.forward(backend.to_device(x)))
    np.testing.assert_allclose(y[:, 3], np.sqrt(1e-4), rtol=1e-5)
    dout = np.ones_like(y)
    dx = backend.to_host(layer.backward(backend.to_device(dout)))
    np.testing.assert_array_equal(dx, np.ones_like(x))  # (x - mean) = 0: nothing through the statistic
    assert dx.dtype == np.float32 and y.dtype == np.float32


def test_errors_name_the_problem(on_backend):
    with pytest.raises(ValueError, match="group_size must be a positive integer"):
        MinibatchStdDev(0)
    with pytest.raises(ValueError, match="group_size must be at least 2"):
        MinibatchStdDev(1)
    for eps in (0.0, float("inf"), "1e-4"):
        with pytest.raises(ValueError, match="eps must be a positive finite number"):
            MinibatchStdDev(4, eps=eps)
    assert MinibatchStdDev(4, eps=np.float32(1e-3)).eps == pytest.approx(1e-3)
    layer = MinibatchStdDev(4, name="spread")
    with pytest.raises(RuntimeError, match="spread: backward called before forward"):
        layer.backward(backend.to_device(np.zeros((4, 2, 1, 1))))
    with pytest.raises(ValueError, match=r"spread: a batch of 6 rows does not split into groups of 4"):
        layer.forward(backend.to_device(np.zeros((6, 2, 3, 3))))
    with pytest.raises(ValueError, match=r"expected a batch of shape \(N, C, H, W\)"):
        layer.forward(backend.to_device(np.zeros((4, 8))))
    with pytest.raises(ValueError, match="spread: the batch is empty"):
        layer.forward(backend.to_device(np.zeros((0, 2, 3, 3))))
    with pytest.raises(ValueError, match="floating-point"):
        layer.forward(backend.to_device(np.zeros((4, 2, 3, 3), np.int64)))
