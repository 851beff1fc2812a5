r"""Evaluating a generator: classifier-based sample metrics, and a whole run (``minigan eval``).

Classifier metrics
------------------
With a fixed classifier (:mod:`minigan.eval.classifier`): :func:`label_accuracy` (do conditional samples show the
requested class?), :func:`class_histogram` (are all classes produced? mode collapse shows as empty bins) and
:func:`frechet_distance` between the classifier's penultimate features of generated and real images

.. math:: d^2 = \lVert m_a - m_b\rVert^2 + \operatorname{tr}\big(S_a + S_b - 2 (S_a^{1/2} S_b S_a^{1/2})^{1/2}\big).

:math:`S_a^{1/2} S_b S_a^{1/2}` is symmetric positive semi-definite, so the trace of its square root is the sum
of the square roots of its eigenvalues: two symmetric eigendecompositions (NumPy's ``eigh``), no SciPy.
:math:`\operatorname{tr}((S_aS_b)^{1/2})` equals that trace (:math:`S_aS_b` is similar to it), which is the usual
formula. Means and covariances are accumulated in float64.

Where a distance comes from
---------------------------
:func:`fid_parts` splits it: the mean term :math:`\lVert m_a - m_b\rVert^2` (the classes' centres in the wrong
place or the wrong mix), the spread :math:`\operatorname{tr} S_a / \operatorname{tr} S_b` (1: as spread out as the
reference), and with labels the same distance and spread class by class, each class of the samples against the
same class of the reference. A generator whose classes are each narrower than the real ones (each image more
typical of its class) shows a within-class spread under 1, and one whose classes sit further apart a total spread
over 1.

The Parzen-window estimator is :mod:`minigan.eval.parzen`.
"""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .. import backend, data
from ..backend import get_array_module
from ..config import ConfigError
from ..runs import load_model
from .parzen import parzen_evaluate

N_CLASSES = 10

__all__ = [
    "label_accuracy",
    "class_histogram",
    "feature_statistics",
    "frechet_distance",
    "frechet_from_statistics",
    "fid_parts",
    "draw_samples",
    "evaluate_run",
    "format_table",
    "eval_cli",
]


# --------------------------------------------------------------------------------------------------
# Classifier metrics
# --------------------------------------------------------------------------------------------------


def _accuracy_from_predictions(predicted: np.ndarray, labels, n_classes: int = N_CLASSES) -> dict:
    labels = np.asarray(labels).astype(np.int64)
    if labels.ndim != 1 or labels.shape[0] != predicted.shape[0]:
        raise ValueError(f"label_accuracy: need one label per sample ({predicted.shape[0]}), got shape {labels.shape}")
    correct = predicted == labels
    per_class, counts = [], []
    for k in range(n_classes):
        mask = labels == k
        counts.append(int(mask.sum()))
        per_class.append(float(correct[mask].mean()) if mask.any() else None)
    return {"overall": float(correct.mean()) if correct.size else None, "per_class": per_class,
            "counts": counts, "n": int(labels.size)}


def _histogram_from_predictions(predicted: np.ndarray, n_classes: int = N_CLASSES) -> list[int]:
    return [int(c) for c in np.bincount(predicted, minlength=n_classes)[:n_classes]]


def label_accuracy(classifier, samples, labels, n_classes: int = N_CLASSES) -> dict:
    """How often the classifier recognises the requested class in conditional samples.

    ``classifier`` is anything with ``predict(x) -> host int labels``; ``samples`` host or device arrays.

    Returns
    -------
    dict: ``overall`` (float), ``per_class`` (list of floats, None for a class with no samples), ``counts``
    (samples per requested class), ``n``.
    """
    return _accuracy_from_predictions(np.asarray(classifier.predict(samples)), labels, n_classes)


def class_histogram(classifier, samples, n_classes: int = N_CLASSES) -> list[int]:
    """Counts of samples per predicted class (a collapsed generator leaves classes nearly empty)."""
    return _histogram_from_predictions(np.asarray(classifier.predict(samples)), n_classes)


def histogram_summary(counts) -> dict:
    """Normalised entropy (1 = uniform, 0 = one class) and the smallest/largest class shares."""
    c = np.asarray(counts, dtype=np.float64)
    total = c.sum()
    if total <= 0:
        return {"entropy": None, "min_share": None, "max_share": None}
    p = c / total
    nz = p[p > 0]
    entropy = max(0.0, float(-(nz * np.log(nz)).sum() / math.log(len(c)))) if len(c) > 1 else 1.0  # no -0.0
    return {"entropy": entropy,
            "min_share": float(p.min()), "max_share": float(p.max())}


def feature_statistics(features) -> tuple[np.ndarray, np.ndarray]:
    """Mean (d,) and covariance (d, d) of feature rows, in float64, as host arrays.

    Computed on the features' backend (one (d, d) product); only the statistics are read back.
    The covariance is the unbiased one (divisor N - 1).
    """
    if not hasattr(features, "ndim") or features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"feature statistics need a 2-D array with at least 2 rows, received "
                         f"{getattr(features, 'shape', type(features).__name__)}")
    f = features.astype(np.float64)
    mean = f.mean(axis=0)
    centred = f - mean
    cov = (centred.T @ centred) / (f.shape[0] - 1)
    return backend.to_host(mean), backend.to_host(cov)


def _sym_sqrt(s: np.ndarray) -> np.ndarray:
    """Square root of a symmetric PSD matrix via eigh; negative rounding eigenvalues are clipped to 0."""
    w, v = np.linalg.eigh(s)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_from_statistics(mu_a, cov_a, mu_b, cov_b) -> float:
    r"""Fréchet distance between N(mu_a, cov_a) and N(mu_b, cov_b) (host arrays; float64).

    :math:`\lVert m_a-m_b\rVert^2 + \operatorname{tr} S_a + \operatorname{tr} S_b - 2\sum_i\sqrt{\lambda_i}`,
    :math:`\lambda_i` the eigenvalues of :math:`S_a^{1/2} S_b S_a^{1/2}` (symmetrised before ``eigh``;
    negative rounding residues clipped to 0). The result is clipped at 0 (it is a squared distance).
    """
    mu_a, mu_b = np.asarray(mu_a, np.float64), np.asarray(mu_b, np.float64)
    cov_a, cov_b = np.atleast_2d(np.asarray(cov_a, np.float64)), np.atleast_2d(np.asarray(cov_b, np.float64))
    if mu_a.shape != mu_b.shape or cov_a.shape != cov_b.shape or cov_a.shape != (mu_a.size, mu_a.size):
        raise ValueError(f"frechet: shapes do not match: means {mu_a.shape}, {mu_b.shape}; covariances "
                         f"{cov_a.shape}, {cov_b.shape}")
    root_a = _sym_sqrt((cov_a + cov_a.T) / 2)
    m = root_a @ cov_b @ root_a
    eig = np.linalg.eigvalsh((m + m.T) / 2)
    trace_sqrt = float(np.sqrt(np.clip(eig, 0.0, None)).sum())
    diff = mu_a - mu_b
    d2 = float(diff @ diff) + float(np.trace(cov_a)) + float(np.trace(cov_b)) - 2.0 * trace_sqrt
    return max(d2, 0.0)


def frechet_distance(feat_a, feat_b) -> float:
    """Fréchet distance between Gaussians fitted to two sets of feature rows (host or device arrays)."""
    if feat_a.shape[1:] != feat_b.shape[1:]:
        raise ValueError(f"frechet_distance: feature widths differ: {feat_a.shape} vs {feat_b.shape}")
    return frechet_from_statistics(*feature_statistics(feat_a), *feature_statistics(feat_b))


def _rows_of_class(features, labels, k: int):
    return features[backend.to_device(np.flatnonzero(np.asarray(labels) == k))]


def fid_parts(features, ref_features, labels=None, ref_labels=None, n_classes: int = N_CLASSES, *, stats=None,
              ref_stats=None) -> dict:
    r"""Where the Fréchet distance between two feature sets comes from (host or device arrays).

    Returns ``mean_term`` (:math:`\lVert m - m_{ref}\rVert^2`, in float64), ``spread`` (:math:`\operatorname{tr}
    S / \operatorname{tr} S_{ref}`), and, when both label arrays are given, ``class_fid`` and ``class_spread``: for
    each class k, the Fréchet distance and the spread of the rows labelled k against the reference rows labelled
    k (None for a class with fewer than two rows on either side); without labels those two are None. A spread
    against a reference without any (all its rows alike) is None. ``stats`` and ``ref_stats`` are the two sets'
    :func:`feature_statistics` where the caller has them already.
    """
    if features.shape[1:] != ref_features.shape[1:]:
        raise ValueError(f"fid_parts: feature widths differ: {features.shape} vs {ref_features.shape}")
    if (labels is None) != (ref_labels is None):
        raise ValueError("fid_parts: give labels for both feature sets or for neither")
    if labels is not None:
        for name, feats, labs in (("labels", features, labels), ("ref_labels", ref_features, ref_labels)):
            if np.asarray(labs).shape != (feats.shape[0],):
                raise ValueError(f"fid_parts: {name} must hold one label per feature row ({feats.shape[0]}), got "
                                 f"shape {np.asarray(labs).shape}")
    mean, cov = stats if stats is not None else feature_statistics(features)
    ref_mean, ref_cov = ref_stats if ref_stats is not None else feature_statistics(ref_features)
    parts = {"mean_term": float(((mean - ref_mean) ** 2).sum()), "spread": _spread(cov, ref_cov),
             "class_fid": None, "class_spread": None}
    if labels is None:
        return parts
    class_fid: list[float | None] = []
    class_spread: list[float | None] = []
    for k in range(n_classes):
        rows, ref_rows = _rows_of_class(features, labels, k), _rows_of_class(ref_features, ref_labels, k)
        if rows.shape[0] < 2 or ref_rows.shape[0] < 2:
            class_fid.append(None)
            class_spread.append(None)
            continue
        (m, s), (rm, rs) = feature_statistics(rows), feature_statistics(ref_rows)
        class_fid.append(frechet_from_statistics(m, s, rm, rs))
        class_spread.append(_spread(s, rs))
    parts["class_fid"], parts["class_spread"] = class_fid, class_spread
    return parts


def _spread(cov, ref_cov) -> float | None:
    ref = float(np.trace(ref_cov))
    return float(np.trace(cov)) / ref if ref > 0 else None


def _mean_of_known(values) -> float | None:
    known = [v for v in (values or []) if v is not None]
    return float(np.mean(known)) if known else None


# --------------------------------------------------------------------------------------------------
# Evaluating a run
# --------------------------------------------------------------------------------------------------


def draw_samples(model, n_per_class: int = 1000, n_samples: int | None = None, seed: int = 0,
                 batch: int = 1000, truncation: float = 1.0):
    """Samples for evaluation on the active backend, and their requested labels (host int64, or None).

    A conditional model gives ``n_per_class`` samples of each class, class by class; an unconditional one
    ``n_samples`` (default ``n_per_class * n_classes``, i.e. 10,000). ``truncation`` < 1 draws the noise from the
    central part of the prior (:meth:`~minigan.families.base.GANModel.sample_noise`).
    """
    rng = backend.Rng(seed)
    chunks, labels = [], []
    if model.conditional:
        for k in range(model.n_classes):
            for start in range(0, n_per_class, batch):
                x, y = model.sample(min(batch, n_per_class - start), rng, label=k, truncation=truncation)
                chunks.append(x)
                labels.append(y)
    else:
        total = n_samples if n_samples is not None else n_per_class * N_CLASSES
        for start in range(0, total, batch):
            x, _ = model.sample(min(batch, total - start), rng, truncation=truncation)
            chunks.append(x)
    xp = get_array_module(chunks[0])
    x = chunks[0] if len(chunks) == 1 else xp.concatenate(chunks, axis=0)
    return x, (np.concatenate(labels) if labels else None)


def evaluate_run(model, dataset: data.Dataset, classifier=None, parzen: bool = False, n_per_class: int = 1000,
                 n_samples: int | None = None, seed: int = 0, parzen_dtype=np.float64,
                 log: Callable[[str], None] = print, truncation: float = 1.0) -> dict:
    """Sample metrics of a generator, and the same metrics for the real validation set (the ceiling).

    With a ``classifier``: label accuracy of conditional samples (per class and overall), the class histogram
    of the samples, the Fréchet distance between the classifier's features of the samples and of the real
    test set and its parts (:func:`fid_parts`; class by class for a conditional model's requested labels); for
    the real validation set: its accuracy, its histogram, and its Fréchet distance to the test set and its
    parts, class by class. With ``parzen``: the Parzen protocol on the same samples (:func:`parzen_evaluate`).
    ``truncation`` < 1 draws the samples from the central part of the noise prior (:func:`draw_samples`); the
    result records it.

    Returns a JSON-serialisable dict.
    """
    t0 = time.perf_counter()
    samples, labels = draw_samples(model, n_per_class, n_samples, seed, truncation=truncation)
    results: dict[str, Any] = {
        "model": model.name,
        "conditional": bool(model.conditional),
        "n_samples": int(samples.shape[0]),
        "n_per_class": int(n_per_class) if model.conditional else None,
        "seed": int(seed),
        "truncation": float(truncation),
        "dataset": dataset.name,
        "n_test": len(dataset.test),
        "n_valid": len(dataset.valid),
    }
    log(f"eval: drew {samples.shape[0]} samples ({time.perf_counter() - t0:.1f} s)")
    if classifier is not None:
        t = time.perf_counter()

        def summarise(x, requested):
            feats = classifier.features(x)
            predicted = np.asarray(classifier.predict(x))
            hist = _histogram_from_predictions(predicted)
            return feats, feature_statistics(feats), {
                "label_accuracy": (_accuracy_from_predictions(predicted, requested)
                                   if requested is not None else None),
                "histogram": hist,
                "histogram_summary": histogram_summary(hist),
            }

        test_feats, test_stats, _ = summarise(dataset.test.x, None)
        sample_feats, sample_stats, sample_metrics = summarise(samples, labels)
        valid_feats, valid_stats, valid_metrics = summarise(dataset.valid.x, dataset.valid.y)
        sample_metrics["fid_test"] = frechet_from_statistics(*sample_stats, *test_stats)
        valid_metrics["fid_test"] = frechet_from_statistics(*valid_stats, *test_stats)
        test_labels = dataset.test.y if labels is not None else None
        sample_metrics["fid_parts"] = fid_parts(sample_feats, test_feats, labels, test_labels, stats=sample_stats,
                                                ref_stats=test_stats)
        valid_metrics["fid_parts"] = fid_parts(valid_feats, test_feats, dataset.valid.y, dataset.test.y,
                                               stats=valid_stats, ref_stats=test_stats)
        results["classifier"] = {
            "path": getattr(classifier, "path", None),
            "test_accuracy": (getattr(classifier, "meta", None) or {}).get("test_accuracy"),
            "samples": sample_metrics,
            "real_valid": valid_metrics,
            "seconds": time.perf_counter() - t,
        }
        log(f"eval: classifier metrics ({results['classifier']['seconds']:.1f} s)")
    if parzen:
        results["parzen"] = parzen_evaluate(samples, dataset.valid.x, dataset.test.x, dtype=parzen_dtype)
        log(f"eval: Parzen log-likelihood ({results['parzen']['seconds']:.1f} s)")
    results["seconds"] = time.perf_counter() - t0
    return results


def _fmt(v, spec: str = ".4f") -> str:
    return "-" if v is None else format(v, spec)


def format_table(results: dict) -> str:
    """A plain-text table of :func:`evaluate_run`'s results: the model's numbers beside the real-data ceiling."""
    lines = [f"{results.get('model', '?')} on {results.get('dataset', '?')}: {results.get('n_samples')} samples"
             + (f" ({results['n_per_class']} per class)" if results.get("n_per_class") else "")
             + f", seed {results.get('seed')}"]
    rows: list[tuple[str, str, str]] = []
    clf = results.get("classifier")
    if clf:
        s, r = clf["samples"], clf["real_valid"]
        sa, ra = s.get("label_accuracy"), r.get("label_accuracy")
        rows.append(("label accuracy", _fmt(sa["overall"]) if sa else "-", _fmt(ra["overall"])))
        for k in range(len(ra["per_class"])):
            rows.append((f"  class {k}", _fmt(sa["per_class"][k]) if sa else "-", _fmt(ra["per_class"][k])))
        rows.append(("FID vs test (classifier features)", _fmt(s["fid_test"], ".3f"), _fmt(r["fid_test"], ".3f")))
        sp, rp = s.get("fid_parts"), r.get("fid_parts")
        if sp and rp:  # an eval.json from before the parts has none
            rows.append(("  its mean term", _fmt(sp["mean_term"], ".3f"), _fmt(rp["mean_term"], ".3f")))
            rows.append(("  spread (1 = the test set's)", _fmt(sp["spread"], ".3f"), _fmt(rp["spread"], ".3f")))
            rows.append(("  within-class FID, mean of classes", _fmt(_mean_of_known(sp["class_fid"]), ".3f"),
                         _fmt(_mean_of_known(rp["class_fid"]), ".3f")))
            rows.append(("  within-class spread, mean of classes", _fmt(_mean_of_known(sp["class_spread"]), ".3f"),
                         _fmt(_mean_of_known(rp["class_spread"]), ".3f")))
        rows.append(("histogram entropy (1 = uniform)", _fmt(s["histogram_summary"]["entropy"]),
                     _fmt(r["histogram_summary"]["entropy"])))
        rows.append(("smallest class share", _fmt(s["histogram_summary"]["min_share"]),
                     _fmt(r["histogram_summary"]["min_share"])))
    p = results.get("parzen")
    if p:
        rows.append((f"Parzen LL (sigma {p['sigma']:.4f})", f"{p['mean']:.2f} ± {p['se']:.2f}",
                     _fmt(results.get("parzen_real", {}).get("mean"), ".2f")))
    if rows:
        w = max(len(r[0]) for r in rows)
        w1 = max(max(len(r[1]) for r in rows), len("samples"))
        lines.append(f"  {'metric':<{w}}  {'samples':>{w1}}  {'real valid':>10}")
        lines += [f"  {a:<{w}}  {b:>{w1}}  {c:>10}" for a, b, c in rows]
    if clf:
        lines.append(f"  predicted-class histogram of samples: {clf['samples']['histogram']}")
        lines.append(f"  (real valid: {clf['real_valid']['histogram']})")
    if not rows:
        lines.append("  (no metrics computed)")
    return "\n".join(lines)


def _write_json(path: Path, obj: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, allow_nan=True)
        f.write("\n")
    os.replace(tmp, path)


def eval_cli(run_dir, parzen: bool = False, classifier: bool = False, n_per_class: int = 1000, seed: int = 0,
             log: Callable[[str], None] = print, *, classifier_path=None, dataset: data.Dataset | None = None,
             data_dir=None, parzen_dtype=np.float64, truncation: float = 1.0) -> dict:
    """``minigan eval RUN_DIR [--parzen] [--classifier]``: evaluate a run, print the table, write eval.json.

    Neither flag given means both. The model comes from ``RUN_DIR/checkpoint.npz``
    (:func:`minigan.runs.load_model`), the dataset from the run's config (or ``dataset``/``data_dir``), the
    classifier from ``classifier_path`` (default ``<cache>/classifier-<dataset>.npz``; a missing one is an
    error that says how to train it). Returns the results dict (also written to ``RUN_DIR/eval.json``).
    """
    from . import classifier as classifier_module

    if not parzen and not classifier:
        parzen = classifier = True
    run_dir = Path(run_dir)
    model, meta = load_model(run_dir)
    if not model.draws_samples:
        raise ConfigError(f"{run_dir}: a {model.name} run translates images and draws no samples to evaluate; "
                          "see benchmarks/pix2pix_ablation.py for its metrics")
    config = meta.get("config", {})
    dataset_name = config.get("dataset", "mnist")
    clf = None
    if classifier:  # fail before the slow parts if the classifier is missing
        clf = classifier_module.load_classifier(classifier_path or classifier_module.default_path(dataset_name))
    if dataset is None:
        dataset = data.load_dataset(dataset_name, data_dir=data_dir or config.get("data_dir"), log=log)
    results = evaluate_run(model, dataset, clf, parzen=parzen, n_per_class=n_per_class, seed=seed,
                           parzen_dtype=parzen_dtype, log=log, truncation=truncation)
    results["run_dir"] = str(run_dir)
    results["epoch"] = meta.get("epoch")
    results["updates"] = meta.get("updates")
    log(format_table(results))
    out = (run_dir if run_dir.is_dir() else run_dir.parent) / "eval.json"
    _write_json(out, results)
    log(f"wrote {out}")
    return results
