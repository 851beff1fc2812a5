"""Batching for training: :func:`one_hot` labels and shuffled :func:`minibatches`.

Holds the two helpers the model families and the classifier use on a loaded :class:`~minigan.data.Split`.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from .base import N_CLASSES


def one_hot(y, n_classes: int = N_CLASSES, dtype=np.float32) -> np.ndarray:
    """Encode integer labels as one-hot rows.

    Parameters
    ----------
    y : array_like of int, shape (N,)
        Labels in ``0..n_classes-1``.
    n_classes : int, optional
        Number of classes.
    dtype : numpy dtype, optional
        Output dtype.

    Returns
    -------
    np.ndarray
        ``(N, n_classes)`` array, C-contiguous.

    Raises
    ------
    ValueError
        If ``y`` is not a 1-D integer array or holds a label out of range (the
        message names the label and its index).
    """
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"one_hot expects 1-D labels, got shape {y.shape}")
    if y.size and not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"one_hot expects integer labels, got dtype {y.dtype}")
    if int(n_classes) < 1:
        raise ValueError(f"n_classes must be positive, got {n_classes}")
    bad = (y < 0) | (y >= n_classes)
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"label {int(y[i])} at index {i} is outside 0..{n_classes - 1}")
    out = np.zeros((len(y), int(n_classes)), dtype=dtype)
    out[np.arange(len(y)), y.astype(np.intp)] = 1
    return out


def minibatches(x: np.ndarray, y: np.ndarray | None, batch_size: int, rng: np.random.Generator,
                drop_last: bool = True) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    """Iterate over one epoch of shuffled minibatches.

    The permutation is drawn from ``rng`` when this function is called (not
    when iteration starts), so the sequence of epochs depends only on the
    generator's seed and the order of calls.

    Parameters
    ----------
    x : np.ndarray
        Examples along the first axis.
    y : np.ndarray or None
        Labels along the first axis, or ``None`` (then ``None`` is yielded).
    batch_size : int
        Examples per batch, at least 1.
    rng : np.random.Generator
        Source of the shuffle.
    drop_last : bool, optional
        Drop the final incomplete batch, so every batch has ``batch_size``
        rows (a GAN step's statistics then never see a tiny batch).

    Returns
    -------
    iterator of (np.ndarray, np.ndarray or None)
        ``(xb, yb)`` copies, C-contiguous; each example appears at most once
        per epoch, and exactly once when ``drop_last`` is False.

    Raises
    ------
    ValueError
        On mismatched lengths, a bad batch size, or when ``drop_last`` would
        leave no batch at all (a silent empty epoch hides a configuration bug).
    """
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    n = len(x)
    if y is not None and len(y) != n:
        raise ValueError(f"x has {n} rows but y has {len(y)}")
    if (isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer))
            or batch_size < 1):
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    batch_size = int(batch_size)
    if drop_last and n < batch_size:
        raise ValueError(f"batch_size {batch_size} is larger than the {n} examples; "
                         f"with drop_last=True there would be no batch")
    perm = rng.permutation(n)
    stop = (n // batch_size) * batch_size if drop_last else n

    def gen() -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        for start in range(0, stop, batch_size):
            idx = perm[start:start + batch_size]
            yield x[idx], (None if y is None else y[idx])

    return gen()
