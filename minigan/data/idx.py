"""The IDX reader: :func:`read_idx`, plain or gzip-compressed, with the header checked before any allocation.

Holds :func:`read_idx` (a file by path) and ``_read_idx_fileobj`` (an open, seekable file object; the HTTP
source hands it downloaded bytes), and the stream reader both share.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from .base import _CHUNK, _IDX_DTYPES, DEFAULT_MAX_IDX_BYTES, DataError


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
