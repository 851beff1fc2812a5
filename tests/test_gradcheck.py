"""The whole GAN objective: D's loss into D, and G's loss through D into G, for both paper models."""

import io
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from minigan import families, gradcheck
from minigan.gradcheck import check_discriminator, check_generator, check_simultaneous, generic_point, run_cli

PAPER_MODELS = ("cgan", "gan")  # the DCGAN family's objectives: tests/test_dcgan.py


def _setup(name, seed, n):
    m = families.build(name, seed=seed, g_irange="glorot", d_irange="glorot")
    generic_point(m.G, seed)
    generic_point(m.D, seed + 1)
    gen = np.random.default_rng(seed)
    y = np.eye(10)[gen.integers(0, 10, n)] if m.conditional else None
    z = gen.uniform(m.noise_low, m.noise_high, (n, m.noise_dim))
    return m, gen.random((n, 784)), gen.random((n, 784)), y, z


@pytest.mark.parametrize("name", PAPER_MODELS)
@settings(max_examples=4)
@given(n=st.integers(1, 6), seed=st.integers(0, 1000))
def test_discriminator_objective_gradients(on_backend, name, n, seed):
    m, x_real, x_fake, y, _ = _setup(name, seed, n)
    report = check_discriminator(m.D, x_real, x_fake, y, y, seed=seed, n_samples=6)
    assert report.passed, report.table()
    assert {r.name for r in report.results} >= {f"D.{k}" for k in m.D.params} | {"x_real", "x_fake"}


@pytest.mark.parametrize("name", PAPER_MODELS)
@pytest.mark.parametrize("kind", ["non_saturating", "minimax"])
@settings(max_examples=4)
@given(n=st.integers(1, 6), seed=st.integers(0, 1000))
@example(n=2, seed=180)  # gan: a tiny G.out.W entry whose f rounds above the ulps of |f| (re-measured at 10 h)
def test_generator_objective_gradients_through_d(on_backend, name, kind, n, seed):
    m, _, _, y, z = _setup(name, seed, n)
    report = check_generator(m.G, m.D, z, y, kind=kind, seed=seed, n_samples=6)
    assert report.passed, report.table()
    assert {r.name for r in report.results} >= {f"G.{k}" for k in m.G.params} | {"z"}


@pytest.mark.parametrize("name", PAPER_MODELS)
@pytest.mark.parametrize("kind", ["non_saturating", "minimax"])
@settings(max_examples=3)
@given(n=st.integers(1, 5), seed=st.integers(0, 1000))
@example(n=1, seed=225)  # gan, minimax: the same, for a G.h0.W entry
def test_one_pass_update_gradients(on_backend, name, kind, n, seed):
    """D's loss into D and G's loss through the same D pass (same masks) into G, from one forward pass."""
    m, x_real, _, y, z = _setup(name, seed, n)
    d_report, g_report = check_simultaneous(m.G, m.D, x_real, z, y, kind=kind, seed=seed, n_samples=6)
    assert d_report.passed, d_report.table()
    assert g_report.passed, g_report.table()
    assert {r.name for r in d_report.results} == {f"D.{k}" for k in m.D.params}
    assert {r.name for r in g_report.results} == {f"G.{k}" for k in m.G.params} | {"z"}


def test_one_pass_update_matches_the_separate_steps_with_the_same_masks():
    """With D's masks frozen, the one-pass gradients equal discriminator_step's (D) and a G step through an
    identical D pass (G): the one-pass update changes which D the gradients see, not the gradients' maths."""
    from minigan.gradcheck import frozen_dropout
    from minigan.nn.losses import generator_loss
    from minigan.objective import discriminator_step, simultaneous_step

    m, x_real, _, y, z = _setup("cgan", 5, 3)
    m.G.astype(np.float64)
    m.D.astype(np.float64)
    with frozen_dropout(m.G, m.D):
        loss_D, loss_G, logits, _ = simultaneous_step(m.G, m.D, x_real, z, y)
        d_grads = {k: g.copy() for k, g in m.D.grads.items()}
        g_grads = {k: g.copy() for k, g in m.G.grads.items()}
        x_fake = m.G.forward((z, y), True)
        loss_D2, logits2, _ = discriminator_step(m.D, x_real, x_fake, y, y)
        assert float(loss_D2) == pytest.approx(float(loss_D), rel=1e-12)
        np.testing.assert_allclose(logits2, logits, rtol=1e-12)
        for k in d_grads:
            np.testing.assert_allclose(m.D.grads[k], d_grads[k], rtol=1e-10, atol=1e-14, err_msg=k)
        # G's gradient by hand: G's loss on the fake rows of the same stacked D pass.
        m.D.set_requires_grad(False).set_input_grad(True)
        m.D.forward((np.concatenate([x_real, x_fake]), np.concatenate([y, y])), True)
        n = len(x_real)
        loss, dlogits = generator_loss(logits2[n:])
        assert float(loss) == pytest.approx(float(loss_G), rel=1e-12)
        dx = m.D.backward(np.concatenate([np.zeros_like(dlogits), dlogits]))[0][n:]
        m.G.set_requires_grad(True)
        m.G.backward(dx)
        for k in g_grads:
            np.testing.assert_allclose(m.G.grads[k], g_grads[k], rtol=1e-10, atol=1e-14, err_msg=k)


def test_a_wrong_gradient_deep_inside_d_is_caught():
    m, x_real, x_fake, y, z = _setup("cgan", 3, 4)
    hidden = m.D.layers[2]  # the combined maxout layer
    original = type(hidden).backward

    def off_by_two_percent(dout):
        return 1.02 * original(hidden, dout)

    hidden.backward = off_by_two_percent
    report = check_generator(m.G, m.D, z, y, n_samples=6)
    assert not report.passed
    assert report.max_rel_error > 1e-3


def test_a_gradient_that_should_be_zero_is_caught_even_when_tiny():
    # An analytic gradient that is nonzero where f does not move at all must fail the absolute check.
    x = np.zeros((2, 3))
    report = gradcheck.check_function(lambda: np.sum(x[:, :2] ** 2), lambda: {"x": np.full((2, 3), 1e-6)},
                                      {"x": x})
    assert not report.passed


def test_an_entry_off_by_round_off_alone_is_measured_again_at_a_wider_step_and_a_wrong_one_still_fails():
    # f = (C + 3x) - C rounds at C's scale, far above |f|: at the default step the central difference is off
    # by 1.3e-7 (relative) from round-off alone; ten times wider it is within 2e-8. A gradient off by 1e-6 fails
    # at both steps.
    C, x = 3e4, np.array([0.3])

    def f():
        return np.float64(C + 3.0 * x[0]) - C

    h = gradcheck._DEFAULT_STEP[2]
    at_default_step = ((C + 3.0 * (x[0] + h)) - (C + 3.0 * (x[0] - h))) / (2 * h)
    assert gradcheck.relative_error(3.0, at_default_step) > 1e-7
    report = gradcheck.check_function(f, lambda: {"x": np.array([3.0])}, {"x": x}, order=2)
    assert report.passed and report.results[0].checked == 1 and report.max_rel_error < 3e-8
    wrong = gradcheck.check_function(f, lambda: {"x": np.array([3.0 * (1 + 1e-6)])}, {"x": x}, order=2)
    assert not wrong.passed and wrong.max_rel_error > 4e-7


def test_dropout_masks_stay_frozen_during_the_check():
    m, x_real, x_fake, y, _ = _setup("cgan", 0, 3)
    report = check_discriminator(m.D, x_real, x_fake, y, y, n_samples=4)
    assert report.passed
    assert not any(layer.frozen for layer in m.D.walk() if hasattr(layer, "frozen"))  # restored after


_ERRORS = re.compile(r"\d\.\d{2,3}e[-+]\d\d")  # relative errors: their last digits follow the BLAS summation order
REPO = Path(__file__).resolve().parents[1]


def test_command_line_tour_passes_and_prints_every_table(capsys):
    """`minigan gradcheck` as users run it (defaults): every table, and the committed output README quotes."""
    from minigan.cli import main as minigan_main

    assert minigan_main(["gradcheck"]) == 0
    text = capsys.readouterr().out
    # benchmarks/results/gradcheck-default.txt is this command's output (one BLAS thread): the same tables, the
    # same sampled, tiny and kink counts, every error under the threshold; README's excerpt is lines of it.
    committed = (REPO / "benchmarks" / "results" / "gradcheck-default.txt").read_text()
    assert _ERRORS.sub("E", committed) == _ERRORS.sub("E", text)
    assert all(float(e) <= 1e-7 for e in _ERRORS.findall(committed))
    readme = (REPO / "README.md").read_text()
    excerpt = readme.split("```text\nConv2d k4_s2_p1_skips")[1].split("```")[0].splitlines()[1:]
    lines = set(committed.splitlines())
    assert len(excerpt) > 10 and all(line in lines for line in excerpt if line.strip() != "..."), \
        [line for line in excerpt if line not in lines and line.strip() != "..."]
    for needle in ("Linear", "Maxout", "Dropout", "Join", "D's parameters and inputs under D's loss",
                   "G's parameters and noise", "one-pass update", "all 57 checks passed", "cdcgan (d_norm=none): D's parameters and inputs under the matching-aware term (the same real images with wrong labels as fakes, two batches)", "cdcgan (d_norm=batchnorm): D's parameters and inputs under D's loss (real and fake as two batches)", "D's parameters and inputs under the matching-aware term (the same real images", "pix2pix (batch norm): G's parameters and input", "pix2pix (instance norm): D's parameters", "dcgan (d_norm=none): D's parameters and inputs under D's loss (real and fake as two batches)", "cdcgan (d_norm=none): D's parameters", "cdcgan (d_norm=none): G's parameters",
                   "Identity", "ProjectionHead", "Linear sn_linear", "Maxout sn_maxout", "G.in.y.0.W",
                   "Conv2d k4_s2_p1_skips", "Conv2d taps_k4_s1_p1", "ConvTranspose2d T_k3_s2_p1_op1", "BatchNorm bn_train_NCHW", "Conditioned conditional_bn",
                   "InstanceNorm2d", "MinibatchStdDev minibatch_std", "ReflectionPad2d", "Upsample", "Residual resnet_block", "UNetBlock unet_block"):
        assert needle in text


def test_command_line_tour_fails_on_a_planted_gradient_bug(monkeypatch):
    # Sigmoid's backward off by 0.1%: G's output layer and everything below it in G is wrong, D is not.
    from minigan.nn import Sigmoid

    exact = Sigmoid.backward
    monkeypatch.setattr(Sigmoid, "backward", lambda self, dout: exact(self, dout) * 1.001)
    out = io.StringIO()
    assert run_cli(batch=2, samples=3, layers=False, out=out) == 1
    text = out.getvalue()
    assert "FAIL" in text and "D's parameters and inputs under D's loss" in text


@pytest.mark.parametrize("seed", [0, 1])
def test_matching_aware_term_gradient(on_backend, seed):
    from minigan import backend
    from minigan.objective import matching_aware_step

    m, x_real, _, y, _ = _setup("cgan", seed, 4)
    m.D.astype(np.float64)
    x = backend.to_device(x_real)
    y_wrong = backend.to_device(np.roll(y, 1 + seed, axis=1))
    y = backend.to_device(y)
    with gradcheck.frozen_dropout(m.D):
        matching_aware_step(m.D, x, y, y_wrong)  # draws the dropout masks
        report = gradcheck.check_function(
            lambda: matching_aware_step(m.D, x, y, y_wrong, backward=False),
            lambda: (matching_aware_step(m.D, x, y, y_wrong), dict(m.D.grads))[1],
            dict(m.D.params), models=[m.D], n_samples=5, title="matching-aware D term")
    assert report.passed, report.table()


def test_sampling_scores_the_entries_that_matter_on_one_hot_inputs():
    # A layer on one-hot labels has non-zero weight gradients only in the rows of the classes present: here 2
    # rows of 50 (2 of 500 entries). Uniform sampling alone would find only exact zeros to compare.
    from minigan.nn import Linear

    layer = Linear(50, 10, init=0.5, rng=0).astype(np.float64)
    x = np.zeros((3, 50))
    x[[0, 1, 2], [7, 7, 31]] = 1
    report = gradcheck.check_layer(layer, x, n_samples=6, seed=0)
    weights = next(r for r in report.results if r.name == "W")
    assert weights.checked >= 3 and weights.max_rel_error <= 1e-7
    assert weights.tiny >= 1  # the uniform half still looks at (and holds to zero) the other rows


def test_conv_tour_fails_exactly_where_a_conv_gradient_is_wrong(monkeypatch):
    from minigan.gradcheck import conv_tour
    from minigan.nn import ConvTranspose2d

    assert all(r.passed for r in conv_tour(batch=2, n_samples=4))
    exact = ConvTranspose2d.backward
    monkeypatch.setattr(ConvTranspose2d, "backward", lambda self, dout: exact(self, dout) * 1.0001)
    failed = {r.title for r in conv_tour(batch=2, n_samples=4) if not r.passed}
    assert failed == {"ConvTranspose2d T_k4_s2_p1", "ConvTranspose2d T_k3_s2_p1_op1", "ConvTranspose2d T_k7_s1_p3",
                      "ConvTranspose2d T_k4_s2_p1_batch_last", "ConvTranspose2d T_k1_s2_op1",
                      "ConvTranspose2d T_k2_s2_batch_first", "Sequential dcgan",
                      "UNetBlock unet_block"}
