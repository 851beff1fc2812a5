"""Losses (values, stability, exact gradients) and optimizers/schedules (update rules, state round trips)."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from minigan import backend
from minigan.gradcheck import check_function
from minigan.nn import Linear, Sequential, Tanh
from minigan.nn.losses import bce_with_logits, discriminator_loss, generator_loss, softplus
from minigan.nn.optim import SGD, Adam, ExponentialDecay, LinearRamp, LinearWarmup, WeightAverage

logits = arrays(np.float64, st.tuples(st.integers(1, 8), st.just(1)), elements=st.floats(-30, 30))


def _host(a):
    return float(backend.to_host(a))


def test_bce_matches_the_textbook_formula_at_moderate_logits(on_backend):
    l = np.array([[-3.0], [-0.5], [0.0], [0.7], [4.0]])
    t = np.array([[0.0], [1.0], [1.0], [0.0], [1.0]])
    p = 1 / (1 + np.exp(-l))
    expected = np.mean(-t * np.log(p) - (1 - t) * np.log(1 - p))
    loss, d = bce_with_logits(backend.to_device(l), backend.to_device(t))
    assert _host(loss) == pytest.approx(expected, rel=1e-12)
    np.testing.assert_allclose(backend.to_host(d), (p - t) / len(l), rtol=1e-12)


@pytest.mark.parametrize("big", [100.0, 1e4, 1e30])
def test_bce_is_stable_for_huge_logits(big):
    l = np.array([[big], [-big]])
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        loss_right, d_right = bce_with_logits(l, np.array([[1.0], [0.0]]))  # confident and right
        loss_wrong, d_wrong = bce_with_logits(l, np.array([[0.0], [1.0]]))  # confident and wrong
    assert float(loss_right) == pytest.approx(0.0, abs=1e-40)
    assert float(loss_wrong) == pytest.approx(big, rel=1e-12)  # -log(sigmoid(-big)) = big (+ tiny)
    np.testing.assert_allclose(d_wrong, [[0.5], [-0.5]])
    assert np.all(np.isfinite(d_right))
    assert softplus(np.array([-big]))[0] >= 0


@given(l=logits, t=st.floats(0, 1))
def test_bce_gradient_is_exact(l, t):
    _check_loss(lambda x: bce_with_logits(x, t), l)


@given(l=logits)
def test_generator_losses_gradients_are_exact(l):
    _check_loss(lambda x: generator_loss(x, "non_saturating"), l)
    _check_loss(lambda x: generator_loss(x, "minimax"), l)


@given(real=logits, fake=logits)
def test_discriminator_loss_is_half_the_sum_and_its_gradient_is_exact(real, fake):
    loss, (d_real, d_fake) = discriminator_loss(real, fake)
    expected = 0.5 * (float(bce_with_logits(real, 1.0)[0]) + float(bce_with_logits(fake, 0.0)[0]))
    assert float(loss) == pytest.approx(expected, rel=1e-12, abs=1e-300)
    _check_loss(lambda x: (discriminator_loss(x, fake)[0], discriminator_loss(x, fake)[1][0]), real)
    _check_loss(lambda x: (discriminator_loss(real, x)[0], discriminator_loss(real, x)[1][1]), fake)


def _check_loss(fn, l):
    l = l.copy()
    report = check_function(lambda: fn(l)[0], lambda: {"logits": fn(l)[1]}, {"logits": l})
    assert report.passed, report.table()


def test_generator_loss_forms():
    l = np.array([[-20.0], [0.0]])
    ns, d_ns = generator_loss(l, "non_saturating")
    mm, d_mm = generator_loss(l, "minimax")
    # Non-saturating keeps a gradient where D confidently rejects the sample; minimax's vanishes there.
    assert abs(d_ns[0, 0]) > 0.49 and abs(d_mm[0, 0]) < 1e-8
    assert float(mm) < 0 < float(ns)
    with pytest.raises(ValueError, match="kind"):
        generator_loss(l, "wasserstein")
    with pytest.raises(ValueError, match=r"shape \(N, 1\)"):
        bce_with_logits(np.zeros(3), 1.0)


# -- optimizers --------------------------------------------------------------------------------------------


def _model_with_grads(seed=0):
    model = Sequential(Linear(3, 4, rng=seed), Tanh(), Linear(4, 2, rng=seed + 1)).astype(np.float64)
    gen = np.random.default_rng(seed)
    for g in model.grads.values():
        g[...] = backend.to_device(gen.standard_normal(g.shape))
    return model


def test_sgd_classical_momentum_by_hand(on_backend):
    model = backend.to_device(_model_with_grads())
    p0 = backend.to_host(model.params)
    g = backend.to_host(model.grads)
    opt = SGD(model, lr=0.1, momentum=0.5)
    v = {k: np.zeros_like(a) for k, a in p0.items()}
    expected = {k: a.copy() for k, a in p0.items()}
    for lr, mu in ((0.1, 0.5), (0.05, 0.6), (0.02, 0.7)):
        opt.lr, opt.momentum = lr, mu
        opt.step()
        for k in expected:
            v[k] = mu * v[k] - lr * g[k]
            expected[k] += v[k]
    for k, a in backend.to_host(model.params).items():
        np.testing.assert_allclose(a, expected[k], rtol=1e-13, atol=1e-15)
    assert opt.steps == 3


def test_adam_matches_the_paper_algorithm(on_backend):
    model = backend.to_device(_model_with_grads(1))
    p = backend.to_host(model.params)
    g = backend.to_host(model.grads)
    opt = Adam(model, lr=1e-2, beta1=0.5, beta2=0.999, eps=1e-8)
    m = {k: 0.0 for k in p}
    v = {k: 0.0 for k in p}
    for t in range(1, 5):
        opt.step()
        for k in p:
            m[k] = 0.5 * m[k] + 0.5 * g[k]
            v[k] = 0.999 * v[k] + 0.001 * g[k] ** 2
            p[k] = p[k] - 1e-2 * (m[k] / (1 - 0.5**t)) / (np.sqrt(v[k] / (1 - 0.999**t)) + 1e-8)
    for k, a in backend.to_host(model.params).items():
        np.testing.assert_allclose(a, p[k], rtol=1e-12, atol=1e-14)


def _adam_reference(p, g_steps, lr, beta1, beta2, eps, clip=None):
    """Adam by the formulas, in float64, with StableAdamW's per-tensor clip; returns the parameters and the
    per-step RMS r of each tensor."""
    p = {k: a.astype(np.float64).copy() for k, a in p.items()}
    m = {k: 0.0 for k in p}
    v = {k: 0.0 for k in p}
    ratios = []
    for t, g in enumerate(g_steps, start=1):
        step_ratios = {}
        for k in p:
            m[k] = beta1 * m[k] + (1 - beta1) * g[k]
            v[k] = beta2 * v[k] + (1 - beta2) * g[k] ** 2
            v_hat = v[k] / (1 - beta2 ** t)
            r = np.sqrt(np.mean(g[k] ** 2 / np.maximum(v_hat, eps ** 2)))
            step_ratios[k] = r
            scale = 1.0 if clip is None else 1.0 / max(1.0, r / clip)
            p[k] = p[k] - lr * scale * (m[k] / (1 - beta1 ** t)) / (np.sqrt(v_hat) + eps)
        ratios.append(step_ratios)
    return p, ratios


@pytest.mark.parametrize("clip", [1.0, 3.0])
def test_adam_update_clip_is_stable_adamw(on_backend, clip):
    """200 quiet steps, then a gradient 100 times larger: the clipped steps equal the formulas (StableAdamW's
    eta / max(1, r / c)), the clip acts exactly when r > c, and the spike's step stays under c * lr per
    coordinate (RMS), where plain Adam's jumps to several lr."""
    model = backend.to_device(_model_with_grads(3))
    p0 = backend.to_host(model.params)
    gen = np.random.default_rng(5)
    g_steps = [{k: 0.01 * gen.standard_normal(a.shape) for k, a in p0.items()} for _ in range(200)]
    g_steps.append({k: gen.standard_normal(a.shape) for k, a in p0.items()})
    lr, beta2 = 1e-2, 0.99
    opt = Adam(model, lr=lr, beta1=0.5, beta2=beta2, eps=1e-8, update_clip=clip)
    plain = Adam(backend.to_device(_model_with_grads(3)), lr=lr, beta1=0.5, beta2=beta2, eps=1e-8)
    for g in g_steps:
        before = backend.to_host(model.params)
        plain_before = backend.to_host(plain.model.params)
        for net in (model, plain.model):
            for k, a in g.items():
                net.grads[k][...] = backend.to_device(a)
        opt.step()
        plain.step()
    expected, ratios = _adam_reference(p0, g_steps, lr, 0.5, beta2, 1e-8, clip)
    for k, a in backend.to_host(model.params).items():
        np.testing.assert_allclose(a, expected[k], rtol=1e-11, atol=1e-13)
    assert any(r <= clip for step in ratios for r in step.values())  # the formulas' branch taken both ways
    assert all(r > 5 for r in ratios[-1].values())  # the spike: the second moment lags far behind
    for k, a in backend.to_host(model.params).items():
        assert np.sqrt(np.mean((a - before[k]) ** 2)) < clip * lr
    for k, a in backend.to_host(plain.model.params).items():
        assert np.sqrt(np.mean((a - plain_before[k]) ** 2)) > 3 * lr


def test_adam_update_clip_leaves_ordinary_steps_alone():
    """While r <= c the clipped optimizer takes plain Adam's steps bit for bit."""
    a, b = _model_with_grads(4), _model_with_grads(4)
    opt_a, opt_b = Adam(a, lr=1e-3), Adam(b, lr=1e-3, update_clip=1e6)
    for _ in range(5):
        opt_a.step()
        opt_b.step()
    for name in a.params:
        np.testing.assert_array_equal(a.params[name], b.params[name])


@pytest.mark.parametrize("bad", [0, -1.0, True, "1", float("nan")])
def test_adam_update_clip_refuses_what_is_not_a_positive_number(bad):
    with pytest.raises(ValueError, match="update_clip"):
        Adam(_model_with_grads(), update_clip=bad)


def test_adam_update_clip_is_saved_and_an_unclipped_state_resumes_unclipped():
    a = _model_with_grads(2)
    clipped = Adam(a, lr=1e-3, update_clip=2.0)
    clipped.step()
    arrays, scalars = clipped.state_dict()
    assert scalars["update_clip"] == 2.0
    restored = Adam(_model_with_grads(2), lr=1e-3)
    restored.load_state_dict(arrays, scalars)
    assert restored.update_clip == 2.0
    plain = Adam(_model_with_grads(2), lr=1e-3)
    plain.step()
    arrays, scalars = plain.state_dict()
    assert "update_clip" not in scalars
    again = Adam(_model_with_grads(2), lr=1e-3, update_clip=1.0)  # e.g. a preset that clips since
    again.load_state_dict(arrays, scalars)
    assert again.update_clip is None


@pytest.mark.parametrize("make", [lambda m: SGD(m, 0.1, 0.5), lambda m: SGD(m, 0.1, 0.0), lambda m: Adam(m, 1e-3)],
                         ids=["sgd", "sgd-no-momentum", "adam"])
def test_blocked_updates_equal_whole_array_updates_bit_for_bit(on_backend, make, monkeypatch):
    # A weight matrix of 3 blocks and a bit (plus a bias, a single block): the cache-blocked update must be
    # the very same float32 arithmetic as one pass over the whole arrays.
    rng = np.random.default_rng(4)
    values = {"W": rng.standard_normal((1100, 800)), "gW": rng.standard_normal((1100, 800)),
              "gb": rng.standard_normal(800)}

    def model():
        m = Linear(1100, 800, rng=0)
        m.params["W"][...] = backend.to_device(values["W"].astype(np.float32))
        m.grads["W"][...] = backend.to_device(values["gW"].astype(np.float32))
        m.grads["b"][...] = backend.to_device(values["gb"].astype(np.float32))
        return m

    blocked, whole = model(), model()
    assert blocked.params["W"].size > 3 * backend.CPU_BLOCK_ELEMENTS
    opt_blocked, opt_whole = make(blocked), make(whole)
    for _ in range(3):
        opt_blocked.step()
    monkeypatch.setattr(backend, "CPU_BLOCK_ELEMENTS", 10 ** 9)
    for _ in range(3):
        opt_whole.step()
    for name in blocked.params:
        np.testing.assert_array_equal(backend.to_host(blocked.params[name]), backend.to_host(whole.params[name]))


@pytest.mark.parametrize("make", [lambda m: SGD(m, 0.1, 0.5), lambda m: Adam(m, 1e-3)], ids=["sgd", "adam"])
def test_optimizer_state_round_trip_continues_identically(make):
    a, b = _model_with_grads(2), _model_with_grads(2)
    opt_a, opt_b = make(a), make(b)
    opt_a.step()
    opt_a.step()
    arrays, scalars = opt_a.state_dict()
    for name, p in a.params.items():
        b.params[name][...] = p
    opt_b.load_state_dict(arrays, scalars)
    opt_a.step()
    opt_b.step()
    for name in a.params:
        np.testing.assert_array_equal(a.params[name], b.params[name])
    with pytest.raises(ValueError, match="shape"):
        opt_b.load_state_dict({f"{next(iter(arrays)).split('.')[0]}.0.W": np.zeros((9, 9))}, scalars)


def test_schedules():
    decay = ExponentialDecay(0.1, 1.00004, floor=1e-6)
    assert decay(0) == 0.1
    assert decay(1000) == pytest.approx(0.1 / 1.00004**1000)
    assert decay(10**7) == 1e-6  # the floor
    ramp = LinearRamp(0.5, 0.7, saturate=250)
    assert ramp(0) == 0.5 and ramp(125) == pytest.approx(0.6) and ramp(250) == 0.7 and ramp(900) == 0.7
    with pytest.raises(ValueError):
        ExponentialDecay(0.1, 0.9)
    with pytest.raises(ValueError):
        LinearRamp(0.5, 0.7, saturate=0)


@given(n=st.integers(1, 50), t=st.integers(0, 120))
def test_linear_warmup_moves_from_one_schedule_to_the_other_then_follows_it(n, t):
    start, end = ExponentialDecay(2e-3, 1.00015), ExponentialDecay(4e-3, 1.00015)
    warm = LinearWarmup(start, end, n)
    fraction = min(1.0, (t + 1) / n)
    assert warm(t) == pytest.approx(start(t) + fraction * (end(t) - start(t)), rel=1e-12)
    if t >= n - 1:
        assert warm(t) == end(t)  # exactly: after the warm-up the run is on D's own schedule, bit for bit
    else:
        assert start(t) < warm(t) < end(t)
    assert LinearWarmup(start, end, 1)(0) == end(0)  # one update of warm-up is none
    with pytest.raises(ValueError, match="updates"):
        LinearWarmup(start, end, 0)


@given(beta=st.floats(0.5, 0.999), n_steps=st.integers(1, 12), seed=st.integers(0, 2**31 - 1))
def test_weight_average_is_the_normalised_exponential_mean_of_the_iterates(beta, n_steps, seed):
    """Independent reference: sum_i beta^(t-i) theta_i / sum_i beta^(t-i), in float64 from the recorded iterates."""
    model = Linear(3, 2, 0.5, seed, np.float64)
    average = WeightAverage(model, beta)
    rng = np.random.default_rng(seed)
    iterates = []
    for _ in range(n_steps):
        for p in model.params.values():
            p[...] = rng.normal(size=p.shape)
        iterates.append({k: p.copy() for k, p in model.params.items()})
        average.update()
    weights = np.array([beta ** (n_steps - 1 - i) for i in range(n_steps)])
    for name, got in average.averaged().items():
        expected = sum(w * it[name] for w, it in zip(weights, iterates)) / weights.sum()
        np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12)


def test_weight_average_swaps_in_and_restores_the_live_weights_exactly(on_backend):
    model = Linear(4, 3, 0.5, 1, np.float32)
    average = WeightAverage(model, 0.9)
    assert all(np.array_equal(backend.to_host(a), backend.to_host(p))  # before any step: the live weights
               for a, p in zip(average.averaged().values(), model.params.values()))
    average.update()
    live = {k: backend.to_host(p).copy() for k, p in model.params.items()}
    for p in model.params.values():
        p += 1.0
    average.update()
    after = {k: backend.to_host(p).copy() for k, p in model.params.items()}
    with average.swapped_in() as m:
        assert m is model
        for k, p in model.params.items():  # weights 1 and beta on the two iterates
            np.testing.assert_allclose(backend.to_host(p), (0.9 * live[k] + after[k]) / 1.9, rtol=1e-6)
    for k, p in model.params.items():
        np.testing.assert_array_equal(backend.to_host(p), after[k])


def test_weight_average_state_round_trip_and_refusals():
    a_model, b_model = Linear(3, 2, 0.5, 3, np.float64), Linear(3, 2, 0.5, 3, np.float64)
    a, b = WeightAverage(a_model, 0.99), WeightAverage(b_model, 0.99)
    for _ in range(3):
        a_model.params["W"][...] += 0.25
        a.update()
    arrays, scalars = a.state_dict()
    b.load_state_dict(arrays, scalars)
    for name in a_model.params:
        np.testing.assert_array_equal(a.averaged()[name], b.averaged()[name])
    assert b.steps == 3
    with pytest.raises(ValueError, match="beta"):
        b.load_state_dict(arrays, {"beta": 0.5, "steps": 3})
    with pytest.raises(ValueError, match="do not match"):
        b.load_state_dict({"W": arrays["W"]}, scalars)
    with pytest.raises(ValueError, match="shape"):
        b.load_state_dict({"W": np.zeros((9, 9)), "b": arrays["b"]}, scalars)
    for bad in (0.0, 1.0, -0.5, "0.9"):
        with pytest.raises(ValueError, match="beta must be"):
            WeightAverage(a_model, bad)
