r"""A fixed MNIST (or Fashion-MNIST) classifier, built and trained with minigan's own layers.

It serves the sample metrics of :mod:`minigan.eval.metrics`: the label accuracy of conditional samples, the class
histogram (mode-collapse check) and the Fréchet distance between its penultimate features of generated and
real images. Its weights are reproducible by one command (``minigan train-classifier --dataset mnist``).

Architecture (``hidden=(1200, 1200)``, the default)
    x (784) → Linear 1200 → ReLU → Dropout p → Linear 1200 → ReLU → Dropout p → Linear 10 (logits).
    The *features* are the second ReLU's 1200 activations (evaluation mode, so dropout is the identity).

    With ``conv=(c1, c2, …)`` (not the default; the reference readers of ``benchmarks/inpaint_ceiling.py``)
    the flat image is first reshaped to (1, 28, 28) and passed through convolutions of kernel 4, stride 2 and
    padding 1 with c1, c2, … channels, each followed by a ReLU, then flattened into the hidden layers above.

Training
    Adam (β1 = 0.9, β2 = 0.999), learning rate decayed exponentially per epoch from ``lr`` to ``lr/10`` at
    the last epoch, batch 100, loss :func:`minigan.nn.losses.softmax_cross_entropy`. Trained on the 50,000
    training images only: the validation split stays unseen, so it is a fair "real data" ceiling for the
    metrics. Every random stream (initial weights, dropout, batch order) derives from one seed, so a seed
    and an epoch count fix the weights (on one machine and BLAS; floating-point summation order may differ
    across BLAS builds).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable

import numpy as np

from .. import backend, data, io
from ..nn import DEFAULT_DTYPE, Conv2d, Dropout, Flatten, Linear, ReLU, Reshape, Sequential
from ..nn.losses import softmax_cross_entropy
from ..nn.optim import Adam

CLASSIFIER_FORMAT = 1
DEFAULT_HIDDEN = (1200, 1200)
DEFAULT_DROPOUT = 0.5
DEFAULT_EPOCHS = 10
DEFAULT_BATCH = 100
DEFAULT_LR = 1e-3
#: The optional convolutions' kernel, stride and padding (each halves the image side).
CONV_KERNEL, CONV_STRIDE, CONV_PADDING = 4, 2, 1
#: Rows per forward pass at evaluation time (bounds device memory; a few MB per batch).
EVAL_BATCH = 2000

__all__ = ["Classifier", "build_classifier", "train_classifier", "load_classifier", "default_path",
           "train_classifier_cli", "ClassifierError"]


class ClassifierError(RuntimeError):
    """A classifier file is missing or does not describe a classifier this module can rebuild."""


def default_path(dataset: str) -> Path:
    """``<cache>/classifier-<dataset>.npz``, the cache being :func:`minigan.data.cache_dir_default`."""
    return data.cache_dir_default() / f"classifier-{dataset}.npz"


def _seeds(seed: int, n: int) -> list[int]:
    return [int(s.generate_state(1)[0]) for s in np.random.SeedSequence(seed).spawn(n)]


class Classifier:
    """An MLP classifier, optionally behind strided convolutions: :meth:`logits`, :meth:`predict` (host labels)
    and :meth:`features` (device).

    Parameters
    ----------
    in_features, n_classes : int
    hidden : tuple of int
        Widths of the hidden ReLU layers; the last one's activations are the features.
    dropout : float
        Drop probability after each hidden layer (training only).
    seed : int
        Seeds the initial weights and the dropout generators.
    conv : tuple of int, default ()
        Output channels of the convolutions (kernel 4, stride 2, padding 1, ReLU) that read the image, reshaped
        to one square channel, before the hidden layers. Empty: the MLP alone.
    """

    def __init__(self, in_features: int = 784, n_classes: int = 10, hidden: tuple[int, ...] = DEFAULT_HIDDEN,
                 dropout: float = DEFAULT_DROPOUT, seed: int = 0, dtype=DEFAULT_DTYPE, conv: tuple[int, ...] = ()):
        hidden = tuple(int(h) for h in hidden)
        if not hidden:
            raise ValueError("Classifier: needs at least one hidden layer (its activations are the features)")
        self.in_features, self.n_classes, self.hidden, self.dropout = int(in_features), int(n_classes), hidden, \
            float(dropout)
        self.conv = tuple(int(c) for c in conv)
        # The MLP's seeds come first, so an MLP's weights do not depend on whether conv layers could exist.
        seeds = iter(_seeds(seed, 2 * len(hidden) + 1 + len(self.conv)))
        mlp_seeds = [next(seeds) for _ in range(2 * len(hidden) + 1)]
        layers, width = self._conv_layers(seeds, dtype)
        seeds = iter(mlp_seeds)
        for i, h in enumerate(hidden):
            layers += [Linear(width, h, "glorot", next(seeds), dtype, name=f"h{i}"), ReLU(name=f"relu{i}"),
                       Dropout(self.dropout, next(seeds), name=f"drop{i}")]
            width = h
        layers.append(Linear(width, self.n_classes, "glorot", next(seeds), dtype, name="out"))
        self.net = Sequential(*layers, name="classifier")
        self.net.set_input_grad(False)  # its input is data: skip one matrix product per step
        # The features are the output of the last hidden ReLU: everything before the last Dropout + Linear.
        self._feature_layers = self.net.layers[:-2]

    def _side(self) -> int:
        side = math.isqrt(self.in_features)
        if side * side != self.in_features:
            raise ValueError(f"Classifier: convolutions need square images, but {self.in_features} features are "
                             f"not a square")
        return side

    def _conv_layers(self, seeds, dtype) -> tuple[list, int]:
        """Reshape to one channel, then each convolution and its ReLU, then flatten (nothing without ``conv``);
        and the width of what they output."""
        if not self.conv:
            return [], self.in_features
        side = self._side()
        layers, channels = [Reshape(1, side, side, name="image")], 1
        for i, c in enumerate(self.conv):
            layers += [Conv2d(channels, c, CONV_KERNEL, CONV_STRIDE, CONV_PADDING, rng=next(seeds), dtype=dtype,
                              name=f"conv{i}"), ReLU(name=f"conv_relu{i}")]
            channels, side = c, (side + 2 * CONV_PADDING - CONV_KERNEL) // CONV_STRIDE + 1
        return layers + [Flatten(name="flat")], channels * side * side

    @property
    def architecture(self) -> dict:
        """What :func:`load_classifier` needs to rebuild the network (stored in the file's meta)."""
        arch = {"type": "conv" if self.conv else "mlp", "in_features": self.in_features, "n_classes": self.n_classes,
                "hidden": list(self.hidden), "dropout": self.dropout, "activation": "relu"}
        if self.conv:
            arch.update(conv=list(self.conv), kernel=CONV_KERNEL, stride=CONV_STRIDE, padding=CONV_PADDING)
        return arch

    @property
    def dtype(self):
        return self.net.dtype

    def _batches(self, x):
        """Device batches of ``x`` (host or device), cast to the model's dtype."""
        for start in range(0, x.shape[0], EVAL_BATCH):
            xb = x[start:start + EVAL_BATCH]
            if backend.is_device_array(xb):
                yield xb.astype(self.dtype, copy=False)
            else:
                yield backend.to_device(np.ascontiguousarray(xb, dtype=self.dtype))

    def _map(self, x, layers):
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ValueError(f"Classifier: expected images of shape (N, {self.in_features}), received {tuple(x.shape)}")
        if x.shape[0] == 0:
            raise ValueError("Classifier: received no images (shape (0, ...))")
        outs = []
        for xb in self._batches(x):
            for layer in layers:
                xb = layer.forward(xb, train=False)
            outs.append(xb)
        return outs[0] if len(outs) == 1 else backend.get_array_module(outs[0]).concatenate(outs, axis=0)

    def logits(self, x):
        """Logits (N, n_classes) on the active backend (evaluation mode)."""
        return self._map(x, self.net.layers)

    def features(self, x):
        """Penultimate activations (N, hidden[-1]) on the active backend (evaluation mode)."""
        return self._map(x, self._feature_layers)

    def predict(self, x) -> np.ndarray:
        """Predicted labels as a host int64 array (one device-to-host read)."""
        return backend.to_host(self.logits(x).argmax(axis=1)).astype(np.int64)

    def accuracy(self, x, y) -> float:
        return float(np.mean(self.predict(x) == np.asarray(y)))

    # -- persistence ---------------------------------------------------------------------------------
    def state_arrays(self) -> dict[str, np.ndarray]:
        return {name: backend.to_host(p) for name, p in self.net.params.items()}

    def load_arrays(self, arrays: dict[str, np.ndarray], where: str = "classifier") -> None:
        params = self.net.params
        if set(arrays) != set(params):
            raise ClassifierError(f"{where}: parameters do not match the architecture (missing "
                                  f"{sorted(set(params) - set(arrays))[:3]}, unexpected "
                                  f"{sorted(set(arrays) - set(params))[:3]})")
        backend.to_host(self.net)  # fill on the host, then move (device arrays refuse host assignment)
        for name, p in self.net.params.items():
            a = arrays[name]
            if a.shape != p.shape:
                raise ClassifierError(f"{where}: {name} has shape {a.shape}, expected {p.shape}")
            p[...] = np.asarray(a, dtype=p.dtype)
        backend.to_device(self.net)


def build_classifier(architecture: dict, seed: int = 0) -> Classifier:
    """A classifier from an ``architecture`` dict (as stored in a classifier file's meta)."""
    kind = architecture.get("type")
    if kind not in ("mlp", "conv"):
        raise ClassifierError(f"unknown classifier architecture {kind!r}")
    if kind == "conv" and (architecture.get("kernel"), architecture.get("stride"), architecture.get("padding")) != \
            (CONV_KERNEL, CONV_STRIDE, CONV_PADDING):
        raise ClassifierError("a convolutional classifier with kernel, stride and padding other than "
                              f"{CONV_KERNEL}, {CONV_STRIDE}, {CONV_PADDING}")
    conv = tuple(architecture["conv"]) if kind == "conv" else ()
    return Classifier(architecture["in_features"], architecture["n_classes"], tuple(architecture["hidden"]),
                      architecture["dropout"], seed, conv=conv)


def _evaluate_split(clf: Classifier, split: data.Split) -> float:
    return clf.accuracy(split.x, split.y) if len(split) else float("nan")


def train_classifier(dataset_name: str = "mnist", out_path=None, epochs: int | None = None, seed: int = 0,
                     log: Callable[[str], None] = print, *, dataset: data.Dataset | None = None,
                     data_dir=None, hidden: tuple[int, ...] = DEFAULT_HIDDEN, dropout: float = DEFAULT_DROPOUT,
                     batch_size: int = DEFAULT_BATCH, lr: float = DEFAULT_LR, conv: tuple[int, ...] = ()) -> dict:
    """Train the classifier on the training split and save it; returns accuracies and the time taken.

    Parameters
    ----------
    dataset_name : {"mnist", "fashion-mnist"}
    out_path : path or None
        Where to save (default :func:`default_path`). Written atomically by :func:`minigan.io.save_checkpoint`
        with meta ``format, architecture, dataset, epochs, seed, batch_size, lr, test_accuracy,
        valid_accuracy, seconds``.
    epochs : int or None (default 10)
    seed : int
        Seeds the weights, the dropout masks and the batch order.
    hidden, dropout, conv
        The architecture (:class:`Classifier`).
    dataset : Dataset, optional
        Use this instead of loading ``dataset_name`` (tests pass small synthetic datasets).

    Returns
    -------
    dict with ``test_accuracy``, ``valid_accuracy``, ``seconds`` (training time, excluding data loading),
    ``path`` and ``epochs``.
    """
    epochs = DEFAULT_EPOCHS if epochs is None else int(epochs)
    if epochs < 1:
        raise ValueError(f"epochs must be a positive integer, got {epochs}")
    if dataset is None:
        dataset = data.load_dataset(dataset_name, data_dir=data_dir, log=log)
    out_path = Path(out_path) if out_path is not None else default_path(dataset_name)
    s_model, s_data = _seeds(seed, 2)
    clf = Classifier(dataset.train.x.shape[1], data.N_CLASSES, hidden, dropout, s_model, conv=conv)
    opt = Adam(clf.net, lr=lr, beta1=0.9, beta2=0.999)
    gen = np.random.Generator(np.random.PCG64(s_data))
    # lr_e = lr * 0.1^(e / (epochs - 1)): from lr at the first epoch to lr/10 at the last.
    decay = 0.1 ** (1 / (epochs - 1)) if epochs > 1 else 1.0
    x_train, y_train = dataset.train.x, dataset.train.y
    start = time.perf_counter()
    for epoch in range(epochs):
        opt.lr = lr * decay ** epoch
        clf.net.train()
        xp = backend.xp()
        loss_sum, batches = xp.zeros((), dtype=np.float64), 0
        for xb, yb in data.minibatches(x_train, y_train, batch_size, gen, drop_last=False):
            xb = backend.to_device(np.ascontiguousarray(xb, dtype=clf.dtype))
            logits = clf.net.forward(xb, train=True)
            loss, dlogits = softmax_cross_entropy(logits, yb)
            clf.net.backward(dlogits)
            opt.step()
            loss_sum += loss
            batches += 1
        clf.net.eval()
        mean_loss = float(backend.to_host(loss_sum)) / batches  # one read-back per epoch
        if not math.isfinite(mean_loss):
            raise FloatingPointError(f"classifier training diverged at epoch {epoch + 1} (loss {mean_loss})")
        valid_acc = _evaluate_split(clf, dataset.valid)
        log(f"classifier {dataset_name} epoch {epoch + 1}/{epochs}: loss {mean_loss:.4f}, lr {opt.lr:.2e}, "
            f"valid accuracy {valid_acc:.4f} ({time.perf_counter() - start:.0f} s)")
    seconds = time.perf_counter() - start
    test_acc = _evaluate_split(clf, dataset.test)
    valid_acc = _evaluate_split(clf, dataset.valid)
    meta = {
        "format": CLASSIFIER_FORMAT,
        "kind": "minigan-classifier",
        "architecture": clf.architecture,
        "dataset": dataset_name,
        "dataset_source": dataset.source,
        "epochs": epochs,
        "seed": seed,
        "batch_size": batch_size,
        "lr": lr,
        "optimizer": "adam(beta1=0.9, beta2=0.999), lr decayed x0.1 over the epochs",
        "test_accuracy": test_acc,
        "valid_accuracy": valid_acc,
        "seconds": seconds,
        "backend": backend.name(),
    }
    out_path.parent.mkdir(parents=True, exist_ok=True)
    io.save_checkpoint(out_path, clf.state_arrays(), meta)
    log(f"classifier {dataset_name}: test accuracy {test_acc:.4f}, valid accuracy {valid_acc:.4f}, "
        f"{epochs} epochs in {seconds:.0f} s; saved to {out_path}")
    return {"test_accuracy": test_acc, "valid_accuracy": valid_acc, "seconds": seconds, "path": str(out_path),
            "epochs": epochs}


def load_classifier(path) -> Classifier:
    """The classifier saved by :func:`train_classifier` at ``path``, on the active backend, in eval mode.

    Its meta is available as ``classifier.meta``.
    """
    path = Path(path)
    if not path.exists():
        raise ClassifierError(f"no classifier at {path}: train one with `minigan train-classifier` "
                              f"(or minigan.eval.classifier.train_classifier)")
    arrays, meta = io.load_checkpoint(path)
    if meta.get("kind") != "minigan-classifier" or "architecture" not in meta:
        raise ClassifierError(f"{path} is not a minigan classifier file")
    try:
        clf = build_classifier(meta["architecture"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ClassifierError(f"{path}: unusable architecture in meta ({type(exc).__name__}: {exc})") from exc
    clf.load_arrays(arrays, str(path))
    clf.net.eval()
    clf.meta = meta
    clf.path = str(path)
    return clf


def train_classifier_cli(dataset: str = "mnist", out=None, epochs: int | None = None, seed: int = 0,
                         data_dir=None, log: Callable[[str], None] = print) -> int:
    """``minigan train-classifier``: train, save, print the accuracies; returns the exit status (0)."""
    train_classifier(dataset, out, epochs, seed, log, data_dir=data_dir)
    return 0
