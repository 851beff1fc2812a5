"""Evaluation: softmax cross-entropy, the Parzen window estimator, the Fréchet distance, the classifier and
the run evaluation. Everything is small and synthetic (no real data), so the file runs in seconds."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minigan import backend, families, io
from minigan.eval.classifier import (Classifier, ClassifierError, build_classifier, default_path, load_classifier,
                                     train_classifier)
from minigan.data import Dataset, Split
from minigan.gradcheck import check_function
from minigan.nn.losses import softmax_cross_entropy
from minigan.eval.metrics import (class_histogram, draw_samples, eval_cli, evaluate_run, feature_statistics,
                                  fid_parts, format_table, frechet_distance, frechet_from_statistics, histogram_summary,
                                  label_accuracy)
from minigan.eval.parzen import parzen_evaluate, parzen_log_likelihood, parzen_select_sigma


def dev(a):
    return backend.to_device(np.asarray(a))


def host(a):
    return backend.to_host(a)


# --------------------------------------------------------------------------------------------------
# softmax cross-entropy
# --------------------------------------------------------------------------------------------------


def test_softmax_cross_entropy_matches_the_textbook_formula(on_backend):
    gen = np.random.default_rng(0)
    logits = gen.normal(size=(6, 5)) * 3
    labels = np.array([0, 4, 2, 2, 1, 3])
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    loss, d = softmax_cross_entropy(dev(logits), labels)
    assert float(host(loss)) == pytest.approx(-np.mean(np.log(p[np.arange(6), labels])), rel=1e-13)
    expected = p.copy()
    expected[np.arange(6), labels] -= 1
    np.testing.assert_allclose(host(d), expected / 6, rtol=1e-12, atol=1e-17)
    # Device labels work too.
    loss2, _ = softmax_cross_entropy(dev(logits), dev(labels))
    assert float(host(loss2)) == float(host(loss))


@given(n=st.integers(1, 6), k=st.integers(2, 7), scale=st.sampled_from([0.1, 1.0, 10.0]),
       seed=st.integers(0, 2**31))
def test_softmax_cross_entropy_gradient_is_exact(on_backend, n, k, scale, seed):
    gen = np.random.default_rng(seed)
    logits = dev(gen.normal(size=(n, k)) * scale)
    labels = gen.integers(0, k, n)

    report = check_function(lambda: softmax_cross_entropy(logits, labels)[0],
                            lambda: {"logits": softmax_cross_entropy(logits, labels)[1]},
                            {"logits": logits}, n_samples=n * k, title="softmax_cross_entropy")
    assert report.passed, report.table()


@pytest.mark.parametrize("big", [40.0, 1e3, 1e30])
def test_softmax_cross_entropy_is_stable_and_keeps_tiny_losses(big):
    logits = np.array([[big, 0.0, -big], [0.0, big, 0.0]])
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        right, d_right = softmax_cross_entropy(logits, np.array([0, 1]))
        wrong, d_wrong = softmax_cross_entropy(logits, np.array([2, 0]))
    # Confident and right: -log p_y = log(1 + e^-big + e^-2big) (+ 2 e^-big for row 2), kept, not rounded to 0.
    expected_right = (math.log1p(math.exp(-big) + math.exp(-2 * big)) + math.log1p(2 * math.exp(-big))) / 2
    assert float(right) == pytest.approx(expected_right, rel=1e-12, abs=1e-300)
    assert float(wrong) == pytest.approx((2 * big + big) / 2, rel=1e-12)
    assert np.all(np.isfinite(d_right)) and np.all(np.isfinite(d_wrong))
    assert np.all(np.abs(d_right.sum(axis=1)) <= 1e-15 * np.abs(d_right).max(axis=1))  # rows sum to 0
    if big == 40.0:  # the label's entry p_y - 1 = -(sum of the others), not rounded to 0
        assert d_right[0, 0] == pytest.approx(-(math.exp(-40) + math.exp(-80)) / 2, rel=1e-12)


def test_softmax_cross_entropy_rejects_bad_inputs():
    with pytest.raises(ValueError, match="shape"):
        softmax_cross_entropy(np.zeros(3), np.zeros(3, int))
    with pytest.raises(ValueError, match="labels"):
        softmax_cross_entropy(np.zeros((3, 2)), np.zeros(2, int))
    with pytest.raises(ValueError, match="integer"):
        softmax_cross_entropy(np.zeros((3, 2)), np.zeros(3))


# --------------------------------------------------------------------------------------------------
# Parzen window
# --------------------------------------------------------------------------------------------------


def slow_parzen(samples, x, sigma):
    """Per pair, directly from the definition (differences, not the expanded square), in float64."""
    samples, x = np.asarray(samples, np.float64), np.asarray(x, np.float64)
    n, d = samples.shape
    out = []
    for xi in x:
        terms = [-float(((xi - mu) ** 2).sum()) / (2 * sigma ** 2) for mu in samples]
        m = max(terms)
        lse = m + math.log(sum(math.exp(t - m) for t in terms))
        out.append(lse - math.log(n) - d * math.log(sigma * math.sqrt(2 * math.pi)))
    return np.array(out)


@given(n=st.integers(1, 12), m=st.integers(1, 9), d=st.integers(1, 20), sigma=st.sampled_from([0.1, 0.3, 1.0]),
       batch=st.integers(1, 5), seed=st.integers(0, 2**31))
def test_parzen_matches_the_slow_per_pair_definition(on_backend, n, m, d, sigma, batch, seed):
    gen = np.random.default_rng(seed)
    samples, x = gen.random((n, d)), gen.random((m, d))
    ll = parzen_log_likelihood(dev(samples), x, sigma, batch_size=batch)
    assert isinstance(ll, np.ndarray) and ll.dtype == np.float64 and ll.shape == (m,)
    np.testing.assert_allclose(ll, slow_parzen(samples, x, sigma), rtol=1e-11, atol=1e-9)


def test_parzen_of_one_repeated_centre_is_the_gaussian_log_density(on_backend):
    gen = np.random.default_rng(1)
    d, sigma = 7, 0.4
    mu = gen.random(d)
    x = gen.random((5, d))
    ll = parzen_log_likelihood(dev(np.tile(mu, (13, 1))), dev(x), sigma)
    exact = -((x - mu) ** 2).sum(axis=1) / (2 * sigma ** 2) - d * math.log(sigma * math.sqrt(2 * math.pi))
    np.testing.assert_allclose(ll, exact, rtol=1e-12)


def test_parzen_far_points_do_not_underflow(on_backend):
    # -||x - mu||^2 / 2 sigma^2 ~ -5e6: exp() underflows to 0 in a naive sum; the shifted one is exact.
    samples = np.array([[0.0, 0.0], [1.0, 0.0]])
    x = np.array([[100.0, 0.0]])
    sigma = 0.03
    ll = parzen_log_likelihood(dev(samples), dev(x), sigma)
    assert np.isfinite(ll).all()
    np.testing.assert_allclose(ll, slow_parzen(samples, x, sigma), rtol=1e-12)


def test_parzen_converges_to_the_smoothed_gaussian_cross_entropy():
    # Samples and test points from N(0, s^2 I): the kernel estimate tends to N(0, (s^2 + sigma^2) I), whose
    # expected log density under N(0, s^2 I) is -d/2 log(2 pi v) - d s^2 / (2 v), v = s^2 + sigma^2.
    gen = np.random.default_rng(2)
    d, s, sigma = 2, 1.0, 0.3
    samples = gen.normal(0, s, (6000, d))
    x = gen.normal(0, s, (2000, d))
    v = s * s + sigma * sigma
    expected = -d / 2 * math.log(2 * math.pi * v) - d * s * s / (2 * v)
    ll = parzen_log_likelihood(samples, x, sigma, batch_size=1000)
    assert ll.mean() == pytest.approx(expected, abs=3 * ll.std() / math.sqrt(len(x)) + 0.01)


def test_parzen_with_a_tiny_sigma_is_the_nearest_neighbour_term():
    gen = np.random.default_rng(3)
    samples, x = gen.random((30, 5)), gen.random((8, 5))
    sigma = 1e-3
    d2 = ((x[:, None, :] - samples[None, :, :]) ** 2).sum(axis=2).min(axis=1)
    nn = -d2 / (2 * sigma ** 2) - math.log(30) - 5 * math.log(sigma * math.sqrt(2 * math.pi))
    np.testing.assert_allclose(parzen_log_likelihood(samples, x, sigma), nn, rtol=1e-9)


def test_parzen_float32_distances_are_close_to_float64():
    gen = np.random.default_rng(4)
    samples = gen.random((300, 784)).astype(np.float32) ** 4  # MNIST-like: mostly dark, norms ~ 90
    x = gen.random((50, 784)).astype(np.float32) ** 4
    exact = parzen_log_likelihood(samples, x, 0.2)
    fast = parzen_log_likelihood(samples, x, 0.2, dtype=np.float32)
    np.testing.assert_allclose(fast, exact, rtol=1e-4)
    assert abs(fast.mean() - exact.mean()) < 0.05


def test_parzen_select_sigma_and_protocol(on_backend):
    gen = np.random.default_rng(5)
    d, s = 3, 0.5
    samples = gen.normal(0, s, (2000, d))
    valid, test = gen.normal(0, s, (300, d)), gen.normal(0, s, (200, d))
    sigmas = np.logspace(-2, 1, 7)
    best, scores = parzen_select_sigma(dev(samples), dev(valid), sigmas, return_scores=True)
    assert best == max(scores, key=scores.get)
    # With 2000 samples in 3-D, a bandwidth around n^(-1/7) * s is best: not the extremes of the grid.
    assert sigmas[0] < best < sigmas[-1]
    for s_, v in scores.items():
        assert v == pytest.approx(parzen_log_likelihood(samples, valid, s_).mean(), rel=1e-12)
    result = parzen_evaluate(dev(samples), dev(valid), dev(test), sigmas=sigmas, n_valid=100)
    assert result["n_valid"] == 100 and result["n_test"] == 200 and result["n_samples"] == 2000
    assert result["sigma"] == parzen_select_sigma(samples, valid[:100], sigmas)
    ll = parzen_log_likelihood(samples, test, result["sigma"])
    assert result["mean"] == pytest.approx(ll.mean(), rel=1e-12)
    assert result["se"] == pytest.approx(ll.std() / math.sqrt(200), rel=1e-12)
    json.dumps(result)


def test_parzen_rejects_bad_inputs():
    with pytest.raises(ValueError, match="features"):
        parzen_log_likelihood(np.zeros((3, 4)), np.zeros((2, 5)), 0.1)
    with pytest.raises(ValueError, match="positive"):
        parzen_log_likelihood(np.zeros((3, 4)), np.zeros((2, 4)), 0.0)
    with pytest.raises(ValueError, match="2-D"):
        parzen_log_likelihood(np.zeros(4), np.zeros((2, 4)), 0.1)


# --------------------------------------------------------------------------------------------------
# Fréchet distance
# --------------------------------------------------------------------------------------------------


def test_frechet_closed_forms():
    m1, m2 = np.array([1.0, 2.0, 3.0]), np.array([0.0, -1.0, 3.5])
    eye = np.eye(3)
    assert frechet_from_statistics(m1, eye, m2, eye) == pytest.approx(((m1 - m2) ** 2).sum(), rel=1e-12)
    # Commuting (diagonal) covariances: sum (sqrt(a) - sqrt(b))^2.
    a, b = np.array([4.0, 1.0, 0.25]), np.array([1.0, 9.0, 0.25])
    expected = ((m1 - m2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    assert frechet_from_statistics(m1, np.diag(a), m2, np.diag(b)) == pytest.approx(expected, rel=1e-12)
    # Same Gaussian: 0; symmetric in its arguments.
    gen = np.random.default_rng(6)
    r = gen.normal(size=(4, 4))
    s1, s2 = r @ r.T + 0.1 * np.eye(4), np.cov(gen.normal(size=(4, 50)))
    mu = gen.normal(size=4)
    assert frechet_from_statistics(mu, s1, mu, s1) == pytest.approx(0.0, abs=1e-10)
    assert frechet_from_statistics(mu, s1, m1[:3].sum() + mu, s2) == pytest.approx(
        frechet_from_statistics(m1[:3].sum() + mu, s2, mu, s1), rel=1e-9)


@pytest.mark.required_in_ci
def test_frechet_matches_scipy_sqrtm_on_non_commuting_covariances():
    linalg = pytest.importorskip("scipy.linalg", reason="SciPy (test extra) is the independent matrix square root")
    gen = np.random.default_rng(7)
    a, b = gen.normal(size=(6, 6)), gen.normal(size=(6, 6))
    s1, s2 = a @ a.T, b @ b.T
    m1, m2 = gen.normal(size=6), gen.normal(size=6)
    covmean = linalg.sqrtm(s1 @ s2).real
    expected = ((m1 - m2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean)
    assert frechet_from_statistics(m1, s1, m2, s2) == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_of_feature_sets(on_backend):
    gen = np.random.default_rng(8)
    a = gen.normal(size=(4000, 3))
    b = gen.normal(size=(4000, 3)) + np.array([2.0, 0.0, 0.0])
    assert frechet_distance(dev(a), dev(a)) == pytest.approx(0.0, abs=1e-9)
    # N(0, I) vs N((2,0,0), I) is 4; the sample estimate is close.
    assert frechet_distance(dev(a), dev(b)) == pytest.approx(4.0, abs=0.2)
    # Rank-deficient features (a dead unit) are fine.
    c = np.concatenate([a, np.zeros((4000, 1))], axis=1)
    assert frechet_distance(dev(c), dev(c)) == pytest.approx(0.0, abs=1e-9)
    mean, cov = feature_statistics(dev(a))
    np.testing.assert_allclose(mean, a.mean(axis=0), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(cov, np.cov(a.T), rtol=1e-12, atol=1e-15)


def test_fid_parts_find_classes_narrower_than_the_reference(on_backend):
    """Two classes at the reference's centres, each half as wide: the mean term is ~0, each class's spread 1/4 and
    its distance 3 (1 - 1/2)^2 = 0.75 in three dimensions, the total spread (16/4 + 3/4) / (16/4 + 3) = 0.68; each
    part equals the quantity computed directly from the rows of its class."""
    gen = np.random.default_rng(11)
    n = 4000
    centres = np.array([[-2.0, 0.0, 0.0], [2.0, 0.0, 0.0]])
    ref_labels, labels = np.repeat([0, 1], n), np.tile([0, 1], n)
    ref = centres[ref_labels] + gen.normal(size=(2 * n, 3))
    narrow = centres[labels] + 0.5 * gen.normal(size=(2 * n, 3))
    parts = fid_parts(dev(narrow), dev(ref), labels, ref_labels, n_classes=2)
    assert parts["mean_term"] == pytest.approx(((narrow.mean(0) - ref.mean(0)) ** 2).sum(), rel=1e-9)
    assert parts["mean_term"] < 0.01
    assert parts["spread"] == pytest.approx(np.trace(np.cov(narrow.T)) / np.trace(np.cov(ref.T)), rel=1e-9)
    assert parts["spread"] == pytest.approx(4.75 / 7, abs=0.02)
    for k in range(2):
        a, b = narrow[labels == k], ref[ref_labels == k]
        assert parts["class_fid"][k] == pytest.approx(frechet_distance(a, b), rel=1e-9)
        assert parts["class_fid"][k] == pytest.approx(0.75, abs=0.05)
        assert parts["class_spread"][k] == pytest.approx(np.trace(np.cov(a.T)) / np.trace(np.cov(b.T)), rel=1e-9)
        assert parts["class_spread"][k] == pytest.approx(0.25, abs=0.02)
    same = fid_parts(dev(ref), dev(ref), ref_labels, ref_labels, n_classes=2)
    assert same["mean_term"] == 0.0 and same["spread"] == pytest.approx(1.0, rel=1e-12)
    assert same["class_fid"] == pytest.approx([0.0, 0.0], abs=1e-9) and same["class_spread"] == pytest.approx([1, 1])
    # No labels: the class parts are None; a class with fewer than two rows on either side is None.
    assert fid_parts(dev(narrow), dev(ref))["class_fid"] is None
    few = fid_parts(dev(narrow[:5]), dev(ref), np.array([0, 0, 0, 0, 1]), ref_labels, n_classes=3)
    assert few["class_fid"][0] is not None and few["class_fid"][1:] == [None, None]


def test_fid_parts_refuse_mismatched_inputs():
    a = np.zeros((4, 3))
    with pytest.raises(ValueError, match="feature widths differ"):
        fid_parts(a, np.zeros((4, 2)))
    with pytest.raises(ValueError, match="for both feature sets or for neither"):
        fid_parts(a, a, np.zeros(4, int))
    with pytest.raises(ValueError, match=r"labels must hold one label per feature row \(4\), got shape \(3,\)"):
        fid_parts(a, a, np.zeros(3, int), np.zeros(4, int))


# --------------------------------------------------------------------------------------------------
# Label accuracy and histogram (stub classifier)
# --------------------------------------------------------------------------------------------------


class StubClassifier:
    """Predicts the argmax of the first 10 features: fully controlled predictions."""

    def predict(self, x):
        return host(x[:, :10].argmax(axis=1)).astype(np.int64)

    def features(self, x):
        return x[:, :10]


def images_with_predictions(predicted):
    x = np.zeros((len(predicted), 784), np.float32)
    x[np.arange(len(predicted)), predicted] = 1
    return x


def test_label_accuracy_and_histogram(on_backend):
    requested = np.array([0, 0, 0, 0, 1, 1, 2, 3, 3, 3])
    predicted = np.array([0, 0, 5, 0, 1, 2, 2, 3, 3, 3])
    x = dev(images_with_predictions(predicted))
    acc = label_accuracy(StubClassifier(), x, requested)
    assert acc["overall"] == pytest.approx(0.8)
    assert acc["per_class"][:4] == [0.75, 0.5, 1.0, 1.0] and acc["per_class"][4:] == [None] * 6
    assert acc["counts"] == [4, 2, 1, 3, 0, 0, 0, 0, 0, 0] and acc["n"] == 10
    assert class_histogram(StubClassifier(), x) == [3, 1, 2, 3, 0, 1, 0, 0, 0, 0]
    summary = histogram_summary([10] * 10)
    assert summary["entropy"] == pytest.approx(1.0) and summary["min_share"] == pytest.approx(0.1)
    assert histogram_summary([0] * 9 + [5])["entropy"] == pytest.approx(0.0)
    with pytest.raises(ValueError, match="one label per sample"):
        label_accuracy(StubClassifier(), x, requested[:3])


# --------------------------------------------------------------------------------------------------
# The classifier
# --------------------------------------------------------------------------------------------------


def blobs_dataset(n_train=600, n_eval=200, seed=0, noise=0.25) -> Dataset:
    """Ten noisy prototype images in [0, 1]: easily separable, so a tiny MLP learns them in an epoch."""
    gen = np.random.default_rng(seed)
    protos = (gen.random((10, 784)) < 0.2).astype(np.float32)

    def split(n):
        y = gen.integers(0, 10, n).astype(np.int64)
        x = np.clip(protos[y] + noise * gen.normal(size=(n, 784)), 0, 1).astype(np.float32)
        return Split(x, y)

    return Dataset("mnist", split(n_train), split(n_eval), split(n_eval), "synthetic blobs")


def quiet(*_):
    pass


def mlp_predict(path, x) -> np.ndarray:
    """The saved classifier's predictions, computed here in float64 from its weights (ReLU layers, then argmax;
    dropout is off at evaluation), independently of minigan.eval.classifier."""
    arrays, meta = io.load_checkpoint(path)
    assert meta["architecture"]["activation"] == "relu"
    h = np.asarray(x, dtype=np.float64)
    for i in range(len(meta["architecture"]["hidden"])):
        h = np.maximum(h @ arrays[f"h{i}.W"].astype(np.float64) + arrays[f"h{i}.b"], 0.0)
    return np.argmax(h @ arrays["out.W"].astype(np.float64) + arrays["out.b"], axis=1)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny classifier trained on the blobs (numpy backend), its file and the dataset."""
    backend.use("numpy")
    ds = blobs_dataset()
    path = tmp_path_factory.mktemp("clf") / "classifier.npz"
    result = train_classifier("mnist", path, epochs=4, seed=3, log=quiet, dataset=ds, hidden=(32, 16), lr=2e-3)
    return result, path, ds


def test_classifier_learns_and_saves_its_meta(trained):
    result, path, ds = trained
    assert result["test_accuracy"] > 0.9 and result["valid_accuracy"] > 0.9  # chance is 0.1
    assert set(result) >= {"test_accuracy", "valid_accuracy", "seconds"} and result["seconds"] > 0
    arrays, meta = io.load_checkpoint(path)
    assert meta["architecture"] == {"type": "mlp", "in_features": 784, "n_classes": 10, "hidden": [32, 16],
                                    "dropout": 0.5, "activation": "relu"}
    assert meta["dataset"] == "mnist" and meta["epochs"] == 4 and meta["seed"] == 3
    assert meta["test_accuracy"] == result["test_accuracy"]
    assert set(arrays) == {"h0.W", "h0.b", "h1.W", "h1.b", "out.W", "out.b"}


def test_classifier_round_trip_gives_identical_predictions(trained, on_backend):
    _, path, ds = trained
    clf = load_classifier(path)
    reference = Classifier(hidden=(32, 16))
    reference.load_arrays(io.load_checkpoint(path)[0])
    predicted = clf.predict(dev(ds.test.x))
    assert predicted.dtype == np.int64 and predicted.shape == (len(ds.test),)
    np.testing.assert_array_equal(predicted, reference.predict(ds.test.x))
    # The accuracy recorded at training time, against predictions computed here from the saved weights alone.
    assert np.mean(mlp_predict(path, ds.test.x) == ds.test.y) == pytest.approx(trained[0]["test_accuracy"])
    assert clf.accuracy(ds.test.x, ds.test.y) == pytest.approx(trained[0]["test_accuracy"])
    feats = clf.features(dev(ds.test.x))
    assert backend.is_device_array(feats) == (on_backend != "numpy")
    assert feats.shape == (len(ds.test), 16) and (host(feats) >= 0).all()


def test_classifier_training_is_reproducible(trained, tmp_path):
    result, path, ds = trained
    again = train_classifier("mnist", tmp_path / "again.npz", epochs=4, seed=3, log=quiet, dataset=ds,
                             hidden=(32, 16), lr=2e-3)
    a, b = io.load_checkpoint(path)[0], io.load_checkpoint(tmp_path / "again.npz")[0]
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert again["test_accuracy"] == result["test_accuracy"]


def test_classifier_on_the_strict_backend_trains(tmp_path):
    backend.use("strict")
    try:
        ds = blobs_dataset(n_train=200, n_eval=50, seed=1)
        result = train_classifier("mnist", tmp_path / "c.npz", epochs=1, seed=0, log=quiet, dataset=ds,
                                  hidden=(16,), batch_size=50)
    finally:
        backend.use("numpy")
    assert result["test_accuracy"] > 0.3


def conv_predict(path, x) -> np.ndarray:
    """A convolutional classifier's predictions in float64, with each convolution written as an explicit sum over
    its 4x4 taps (stride 2, padding 1), independently of minigan.nn.conv."""
    arrays, meta = io.load_checkpoint(path)
    arch = meta["architecture"]
    assert (arch["kernel"], arch["stride"], arch["padding"]) == (4, 2, 1)
    h = np.asarray(x, dtype=np.float64).reshape(len(x), 1, 28, 28)
    for i in range(len(arch["conv"])):
        w, b = arrays[f"conv{i}.W"].astype(np.float64), arrays[f"conv{i}.b"].astype(np.float64)
        padded = np.pad(h, ((0, 0), (0, 0), (1, 1), (1, 1)))
        side = h.shape[2] // 2
        out = np.zeros((len(h), w.shape[0], side, side)) + b[None, :, None, None]
        for r in range(4):
            for c in range(4):
                patch = padded[:, :, r:r + 2 * side:2, c:c + 2 * side:2]
                out += np.einsum("ncab,oc->noab", patch, w[:, :, r, c])
        h = np.maximum(out, 0.0)
    h = h.reshape(len(h), -1)
    for i in range(len(arch["hidden"])):
        h = np.maximum(h @ arrays[f"h{i}.W"].astype(np.float64) + arrays[f"h{i}.b"], 0.0)
    return np.argmax(h @ arrays["out.W"].astype(np.float64) + arrays["out.b"], axis=1)


def test_convolutional_classifier_learns_saves_and_reloads(tmp_path):
    ds = blobs_dataset(n_train=400, n_eval=100, seed=2)
    path = tmp_path / "conv.npz"
    result = train_classifier("mnist", path, epochs=3, seed=1, log=quiet, dataset=ds, hidden=(16,), lr=2e-3,
                              conv=(4, 8), batch_size=20)
    assert result["test_accuracy"] > 0.9
    arrays, meta = io.load_checkpoint(path)
    assert meta["architecture"] == {"type": "conv", "in_features": 784, "n_classes": 10, "hidden": [16],
                                    "dropout": 0.5, "activation": "relu", "conv": [4, 8], "kernel": 4, "stride": 2,
                                    "padding": 1}
    assert arrays["conv0.W"].shape == (4, 1, 4, 4) and arrays["conv1.W"].shape == (8, 4, 4, 4)
    assert arrays["h0.W"].shape == (8 * 7 * 7, 16)
    clf = load_classifier(path)
    assert clf.features(ds.test.x).shape == (len(ds.test), 16)
    np.testing.assert_array_equal(clf.predict(ds.test.x), conv_predict(path, ds.test.x))
    assert clf.accuracy(ds.test.x, ds.test.y) == pytest.approx(result["test_accuracy"])
    # An MLP's weights do not depend on the convolutions' seeds being drawn after them.
    assert Classifier(hidden=(16,), seed=5).state_arrays()["h0.W"].shape == (784, 16)
    np.testing.assert_array_equal(Classifier(hidden=(16,), seed=5).state_arrays()["out.W"],
                                  Classifier(hidden=(16,), seed=5, conv=(4,)).state_arrays()["out.W"])


def test_convolutional_classifier_needs_square_images():
    with pytest.raises(ValueError, match="not a square"):
        Classifier(in_features=780, hidden=(8,), conv=(4,))
    with pytest.raises(ClassifierError, match="kernel, stride and padding"):
        build_classifier({"type": "conv", "in_features": 784, "n_classes": 10, "hidden": [8], "dropout": 0.5,
                          "conv": [4], "kernel": 3, "stride": 1, "padding": 1})


def test_load_classifier_errors(tmp_path, monkeypatch):
    with pytest.raises(ClassifierError, match="train-classifier"):
        load_classifier(tmp_path / "missing.npz")
    io.save_checkpoint(tmp_path / "other.npz", {"a": np.zeros(2)}, {"format": 1})
    with pytest.raises(ClassifierError, match="not a minigan classifier"):
        load_classifier(tmp_path / "other.npz")
    monkeypatch.setenv("MINIGAN_DATA", str(tmp_path))
    assert default_path("fashion-mnist") == tmp_path / "classifier-fashion-mnist.npz"


# --------------------------------------------------------------------------------------------------
# Evaluating a run
# --------------------------------------------------------------------------------------------------


def test_draw_samples_conditional_and_unconditional(on_backend):
    x, y = draw_samples(families.build("cgan", seed=0), n_per_class=3, seed=1)
    assert x.shape == (30, 784) and list(y) == sorted(list(range(10)) * 3)
    x2, y2 = draw_samples(families.build("gan", seed=0), n_per_class=2, seed=1)
    assert x2.shape == (20, 784) and y2 is None
    x3, _ = draw_samples(families.build("cgan", seed=0), n_per_class=3, seed=1)
    np.testing.assert_array_equal(host(x3), host(x))  # seeded


@settings(max_examples=10, deadline=None)
@given(psi=st.floats(0.05, 1.0), model=st.sampled_from(["cgan", "gan", "cdcgan"]), seed=st.integers(0, 2**16))
def test_truncated_noise_is_uniform_on_the_central_box(on_backend, psi, model, seed):
    m = families.build(model, seed=0)
    centre, half = (m.noise_low + m.noise_high) / 2, (m.noise_high - m.noise_low) / 2
    z = host(m.sample_noise(4000, backend.Rng(seed), truncation=psi))
    assert z.min() >= centre - psi * half - 1e-6 and z.max() <= centre + psi * half + 1e-6
    # uniform on it: mean at the centre, variance (psi * half)^2 / 3 (4000 x noise_dim draws)
    assert abs(z.mean() - centre) < 0.01 * half
    assert z.var() == pytest.approx((psi * half) ** 2 / 3, rel=0.03)
    whole = host(m.sample_noise(50, backend.Rng(seed)))  # the default is the whole prior, the same draws as 1
    np.testing.assert_array_equal(whole, host(m.sample_noise(50, backend.Rng(seed), truncation=1.0)))


def test_truncation_is_checked_and_recorded(trained):
    _, path, ds = trained
    model = families.build("cgan", seed=0)
    for bad in (0, -0.5, 1.5, float("nan"), True):
        with pytest.raises(ValueError, match="truncation"):
            model.sample_noise(2, backend.Rng(0), truncation=bad)
    results = evaluate_run(model, ds, load_classifier(path), n_per_class=2, seed=0, log=quiet, truncation=0.5)
    assert results["truncation"] == 0.5
    x, _ = draw_samples(model, n_per_class=2, seed=0, truncation=0.5)
    x1, _ = draw_samples(model, n_per_class=2, seed=0)
    assert not np.array_equal(host(x), host(x1))


def test_evaluate_run_and_table(trained, on_backend):
    _, path, ds = trained
    clf = load_classifier(path)
    results = evaluate_run(families.build("cgan", seed=0), ds, clf, parzen=True, n_per_class=5, seed=0, log=quiet)
    json.dumps(results)  # JSON-serialisable
    c = results["classifier"]
    assert results["n_samples"] == 50 and results["conditional"]
    assert sum(c["samples"]["histogram"]) == 50 and sum(c["real_valid"]["histogram"]) == len(ds.valid)
    assert c["samples"]["label_accuracy"]["counts"] == [5] * 10
    # Expected values from predictions computed here from the saved weights, not by the classifier's own code.
    valid_pred = mlp_predict(path, ds.valid.x)
    assert c["real_valid"]["label_accuracy"]["overall"] == pytest.approx(np.mean(valid_pred == ds.valid.y))
    assert c["real_valid"]["histogram"] == np.bincount(valid_pred, minlength=10).tolist()
    x, y = draw_samples(families.build("cgan", seed=0), n_per_class=5, seed=0)
    sample_pred = mlp_predict(path, host(x))
    assert c["samples"]["histogram"] == np.bincount(sample_pred, minlength=10).tolist()
    assert c["samples"]["label_accuracy"]["overall"] == pytest.approx(np.mean(sample_pred == host(y)))
    assert c["samples"]["label_accuracy"]["per_class"] == pytest.approx(
        [np.mean(sample_pred[host(y) == k] == k) for k in range(10)])
    assert c["real_valid"]["fid_test"] < c["samples"]["fid_test"]  # real data beat an untrained G
    # The parts, class by class against the test set's classes (the requested labels for the samples).
    assert len(c["samples"]["fid_parts"]["class_fid"]) == 10 and len(c["real_valid"]["fid_parts"]["class_fid"]) == 10
    valid_parts = fid_parts(clf.features(dev(ds.valid.x)), clf.features(dev(ds.test.x)), ds.valid.y, ds.test.y)
    for key, value in valid_parts.items():
        assert c["real_valid"]["fid_parts"][key] == pytest.approx(value, rel=1e-9), key
    assert c["samples"]["fid_parts"]["spread"] > 0
    assert results["parzen"]["n_samples"] == 50 and results["parzen"]["n_test"] == len(ds.test)
    table = format_table(results)
    assert "label accuracy" in table and "FID" in table and "Parzen" in table and "class 9" in table
    assert "within-class spread, mean of classes" in table and "its mean term" in table


def test_eval_cli_writes_eval_json(trained, tmp_path):
    from minigan.config import TrainConfig
    from minigan.train import Trainer

    _, path, ds = trained
    run = tmp_path / "run"
    small = Dataset("mnist", Split(ds.train.x[:8], ds.train.y[:8]), ds.valid, ds.test, "blobs")
    trainer = Trainer(TrainConfig(model="gan", batch=4, steps=1, out=str(run), progress=False), dataset=small,
                      log=quiet)
    trainer.run()
    lines = []
    results = eval_cli(run, parzen=False, classifier=True, n_per_class=2, log=lines.append, classifier_path=path,
                       dataset=ds)
    written = json.loads((run / "eval.json").read_text())
    assert written["classifier"]["samples"]["fid_test"] == pytest.approx(results["classifier"]["samples"]["fid_test"])
    assert written["model"] == "gan" and written["classifier"]["samples"]["label_accuracy"] is None
    assert written["classifier"]["samples"]["fid_parts"]["class_fid"] is None  # no requested labels to split by
    assert len(written["classifier"]["real_valid"]["fid_parts"]["class_fid"]) == 10
    assert "parzen" not in written
    assert any("FID" in line for line in lines)
    with pytest.raises(ClassifierError, match="train-classifier"):
        eval_cli(run, parzen=False, classifier=True, log=quiet, classifier_path=tmp_path / "none.npz", dataset=ds)


def test_train_classifier_cli_uses_the_default_path(tmp_path, monkeypatch):
    from minigan.eval import classifier as classifier_module

    ds = blobs_dataset(n_train=100, n_eval=20, seed=2)
    monkeypatch.setenv("MINIGAN_DATA", str(tmp_path))
    monkeypatch.setattr(classifier_module.data, "load_dataset", lambda name, data_dir=None, log=None: ds)
    lines = []
    assert classifier_module.train_classifier_cli("mnist", epochs=1, log=lines.append) == 0
    assert (tmp_path / "classifier-mnist.npz").exists() and any("test accuracy" in line for line in lines)
    clf = load_classifier(tmp_path / "classifier-mnist.npz")
    assert clf.meta["epochs"] == 1 and clf.architecture["hidden"] == [1200, 1200]
    with pytest.raises(ValueError, match="no images"):
        clf.predict(np.zeros((0, 784), np.float32))
