"""IDX directories to a :class:`~minigan.data.Dataset`: the ``--data DIR`` source and the Debian one.

Holds the loader of a directory of the four IDX files (each plain or ``.gz``, checked against a table of
content MD5s), the conversion of the four decoded arrays into the train / valid / test splits (also used by
the HTTP source), and the re-encoding of a decoded array to its exact IDX bytes, which is what the content
MD5s are computed over.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Mapping

import numpy as np

from .base import (_FULL_TRAIN, _FULL_VALID, _IDX_DTYPES, _U8_TO_UNIT, IDX_FILES, N_PIXELS, DataError, Dataset,
                   Split, _check_labels, _md5)
from .idx import read_idx


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
