"""Checkpoints, image grids, PNG encoding/decoding and metric plots.

Everything here depends on NumPy and the standard library only.  Matplotlib
is used by :func:`plot_metrics` when it happens to be importable; otherwise a
small built-in rasteriser draws the plot.

Checkpoints
-----------
A checkpoint is an ordinary ``.npz`` archive (a zip of ``.npy`` members, as
written by :func:`numpy.savez`) holding one member per array plus a reserved
member ``__meta__`` with the JSON-encoded metadata as a ``uint8`` array.
Writes are atomic (temporary file in the same directory, ``fsync``,
``os.replace``, directory ``fsync``), and loads validate the archive
*before* NumPy parses it, so a corrupt or hostile file produces a single
:class:`CheckpointError` instead of running code or allocating huge buffers.

Environment
-----------
MINIGAN_SLOW_CHECKPOINT
    Fault-injection hook.  When set to a number of seconds (a float),
    :func:`save_checkpoint` sleeps that long after the temporary file is
    fully written and synced but *before* it is renamed onto the target.
    This widens the window in which a test can kill the process to check
    that an interrupted save leaves the previous checkpoint intact.
    Unset, empty or ``0`` means no delay.  ``hold`` makes that window
    last until the process ends: the save prints one line on stderr
    (``... holding before the rename ...``) and waits there; each signal
    whose handler returns prints ``... signal SIGxxx received; still
    holding ...``, and a handler that raises (a second Ctrl-C) ends the
    save with that exception, the temporary file removed.  Tests
    synchronise on these lines instead of on the clock.
"""

from __future__ import annotations

import errno
import json
import math
import os
import struct
import tempfile
import time
import tokenize
import zipfile
import zlib

import numpy as np

__all__ = [
    "CheckpointError",
    "save_checkpoint",
    "load_checkpoint",
    "image_grid",
    "write_png",
    "read_png",
    "plot_metrics",
]

META_KEY = "__meta__"
SLOW_ENV = "MINIGAN_SLOW_CHECKPOINT"

# A deflate-compressed member may legitimately be smaller than its content,
# but a ratio this large together with a total far beyond the archive size
# is the signature of a zip bomb rather than of model weights.
_MAX_RATIO = 100

# Exceptions that parsing a damaged archive can raise from zipfile, zlib,
# struct, json or numpy's .npy reader.  They are all turned into a single
# CheckpointError; anything else is a bug in this module and propagates.
_CORRUPT_ERRORS = (
    zipfile.BadZipFile,
    zlib.error,
    struct.error,
    ValueError,  # includes UnicodeDecodeError and json.JSONDecodeError
    EOFError,
    OSError,
    KeyError,
    IndexError,
    TypeError,
    OverflowError,
    NotImplementedError,  # zipfile: "compressed patched data", etc.
    RuntimeError,  # includes RecursionError (deeply nested JSON)
    SyntaxError,
    tokenize.TokenError,  # numpy's .npy header parser on an unterminated dict literal
    MemoryError,
)


class CheckpointError(Exception):
    """Any problem saving or loading a checkpoint.

    The message always names the file and says what is wrong with it.
    """


# --------------------------------------------------------------------------
# atomic file writing
# --------------------------------------------------------------------------


class _DirSyncError(OSError):
    """The rename succeeded but fsyncing the directory failed."""


def _fsync_dir(directory: str) -> None:
    """Make a rename in *directory* durable.

    Some filesystems (and non-POSIX platforms) cannot fsync a directory;
    that only weakens durability after a power loss, not atomicity, so
    EINVAL/ENOTSUP/EBADF/EACCES are tolerated.
    """
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF, errno.EACCES):
            raise _DirSyncError(exc.errno, exc.strerror) from exc
    finally:
        os.close(fd)


def _atomic_write(path: str, write_fn, *, prefix: str, before_replace=None) -> None:
    """Write a file atomically: temp file in the same dir, fsync, rename.

    Parameters
    ----------
    path : str
        Final destination.
    write_fn : callable
        Called with a binary file object open on the temporary file.
    prefix : str
        Prefix of the temporary file name (``suffix`` is ``.tmp``).
    before_replace : callable, optional
        Called after the temporary file is complete and synced, just before
        the rename (used for the fault-injection delay).

    Notes
    -----
    The temporary file lives in the destination directory because
    ``os.replace`` is only atomic within one filesystem.  On any exception
    the temporary file is removed and the destination is untouched; the
    original exception propagates.
    """
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=prefix, suffix=".tmp")
    try:
        # mkstemp creates the file 0600; keep the mode of the file being
        # replaced, or use the conventional 0644 for a new file.
        try:
            mode = os.stat(path).st_mode & 0o777
        except OSError:
            mode = 0o644
        with os.fdopen(fd, "wb") as f:
            fd = -1  # now owned (and closed) by f
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
            os.fchmod(f.fileno(), mode)
        if before_replace is not None:
            before_replace()
        os.replace(tmp, path)
        tmp = None
    finally:
        if fd != -1:
            os.close(fd)
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
    _fsync_dir(directory)


# --------------------------------------------------------------------------
# checkpoints: saving
# --------------------------------------------------------------------------


HOLD = "hold"  # MINIGAN_SLOW_CHECKPOINT=hold: wait before the rename until the process ends


def _slow_delay(path: str) -> float | str:
    """Parse MINIGAN_SLOW_CHECKPOINT: seconds (0.0 when unset or empty), or ``"hold"``."""
    raw = os.environ.get(SLOW_ENV, "").strip()
    if not raw:
        return 0.0
    if raw == HOLD:
        return HOLD
    try:
        delay = float(raw)
    except ValueError:
        raise CheckpointError(
            f"cannot save checkpoint {path}: {SLOW_ENV}={raw!r} is not a number of seconds (or {HOLD!r})"
        ) from None
    if not math.isfinite(delay) or delay < 0:
        raise CheckpointError(
            f"cannot save checkpoint {path}: {SLOW_ENV}={raw!r} must be a finite, non-negative number"
        )
    return delay


def _hold_before_rename(path: str) -> None:
    """``MINIGAN_SLOW_CHECKPOINT=hold``: announce, then wait until the process ends or a signal handler raises.

    Signals are seen through a wakeup pipe (``signal.set_wakeup_fd``), so one that arrives at any moment after
    the announcement is noticed; by the time ``select`` returns, Python has run its handler.
    """
    import select
    import signal
    import sys
    import threading

    def say(message: str) -> None:
        sys.stderr.write(f"minigan: {SLOW_ENV}={HOLD}: {message}\n")
        sys.stderr.flush()

    where = f"checkpoint {path} is complete in its temporary file; holding before the rename"
    if threading.current_thread() is not threading.main_thread():  # no signal handlers run here
        say(where + " until the process ends")
        threading.Event().wait()
    r, w = os.pipe()
    os.set_blocking(w, False)
    previous = signal.set_wakeup_fd(w)
    try:
        say(where + " until the process ends or a signal handler raises")
        while True:
            select.select([r], [], [])  # a signal handler that raises (KeyboardInterrupt) ends the hold here
            for number in os.read(r, 64):
                try:
                    name = signal.Signals(number).name
                except ValueError:
                    name = f"signal {number}"
                say(f"{name} received; still holding")
    finally:
        signal.set_wakeup_fd(previous)
        os.close(r)
        os.close(w)


def save_checkpoint(path, arrays: dict[str, np.ndarray], meta: dict) -> None:
    """Atomically save arrays and metadata to an ``.npz`` checkpoint.

    Parameters
    ----------
    path : str or os.PathLike
        Destination file.  Written exactly as given (no ``.npz`` suffix is
        appended, unlike :func:`numpy.savez`).
    arrays : dict of str to numpy.ndarray
        Host arrays to store, e.g. ``{"G.fc1.W": ..., "rng.G": ...}``.  Keys
        may contain dots; they must be non-empty strings without ``/`` or
        ``\\`` and must not be the reserved ``"__meta__"``.  Object dtypes and
        non-ndarray values are rejected (they would need pickle).
    meta : dict
        JSON-serialisable metadata (epoch, config, ...).  NaN/inf floats are
        allowed (Python's JSON dialect).

    Raises
    ------
    CheckpointError
        On invalid input (nothing is written) or any I/O failure such as a
        read-only directory or a full disk; in the latter case the message
        says that the previous checkpoint, if any, is intact.

    Notes
    -----
    The archive is written uncompressed to a temporary file in the target
    directory (``.ckpt-*.tmp``), flushed and fsynced, renamed over *path*
    with ``os.replace`` and the directory is fsynced.  A crash at any moment
    therefore leaves either the old or the new complete checkpoint.  Members
    carry a fixed timestamp so identical state gives identical bytes.

    If the environment variable ``MINIGAN_SLOW_CHECKPOINT`` holds a number of
    seconds, the function sleeps that long between writing the temporary file
    and renaming it, to make crash-during-save tests practical; ``hold``
    waits there until the process ends (see the module docstring).
    """
    path = os.fspath(path)
    if not isinstance(arrays, dict):
        raise CheckpointError(f"cannot save checkpoint {path}: arrays must be a dict, got {type(arrays).__name__}")
    if not isinstance(meta, dict):
        raise CheckpointError(f"cannot save checkpoint {path}: meta must be a dict, got {type(meta).__name__}")

    # Validate everything before touching the disk.
    for key, value in arrays.items():
        if not isinstance(key, str) or not key:
            raise CheckpointError(f"cannot save checkpoint {path}: array key {key!r} is not a non-empty string")
        if key == META_KEY:
            raise CheckpointError(f"cannot save checkpoint {path}: array key {META_KEY!r} is reserved for metadata")
        if "/" in key or "\\" in key:
            raise CheckpointError(f"cannot save checkpoint {path}: array key {key!r} contains a path separator")
        if not isinstance(value, np.ndarray):
            raise CheckpointError(
                f"cannot save checkpoint {path}: {key!r} is a {type(value).__module__}.{type(value).__name__}, "
                "not a host numpy.ndarray (copy device arrays to the host first)"
            )
        if value.dtype.hasobject:
            raise CheckpointError(f"cannot save checkpoint {path}: {key!r} has object dtype {value.dtype}, which cannot be stored without pickle")
    try:
        meta_bytes = json.dumps(meta).encode("utf-8")
    except (TypeError, ValueError, RecursionError) as exc:
        raise CheckpointError(f"cannot save checkpoint {path}: meta is not JSON-serialisable: {exc}") from exc
    meta_array = np.frombuffer(meta_bytes, dtype=np.uint8)
    delay = _slow_delay(path)

    def write(f):
        with zipfile.ZipFile(f, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
            for key, value in list(arrays.items()) + [(META_KEY, meta_array)]:
                info = zipfile.ZipInfo(key + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_STORED
                # force_zip64 because the member size is not known up front
                # (same choice as numpy.savez); harmless for small arrays.
                with zf.open(info, mode="w", force_zip64=True) as member:
                    np.lib.format.write_array(member, np.asarray(value), allow_pickle=False)

    def pause():
        if delay == HOLD:
            _hold_before_rename(path)
        elif delay > 0:
            time.sleep(delay)

    try:
        _atomic_write(path, write, prefix=".ckpt-", before_replace=pause)
    except _DirSyncError as exc:
        raise CheckpointError(
            f"checkpoint {path} was written, but syncing its directory failed "
            f"({exc.strerror or exc}); it may not survive a power loss"
        ) from exc
    except OSError as exc:
        raise CheckpointError(
            f"could not write checkpoint {path}: {exc.strerror or exc}; "
            "the previous checkpoint (if any) is intact"
        ) from exc
    except Exception as exc:  # e.g. ValueError from write_array: still atomic
        raise CheckpointError(
            f"could not write checkpoint {path}: {type(exc).__name__}: {exc}; "
            "the previous checkpoint (if any) is intact"
        ) from exc


# --------------------------------------------------------------------------
# checkpoints: loading
# --------------------------------------------------------------------------


def _read_npy_header(stream):
    """Parse a ``.npy`` header from *stream*; return (shape, dtype, header_len).

    Uses NumPy's header readers, which evaluate the header dict with
    ``ast.literal_eval`` (no code execution) and cap its length.
    """
    version = np.lib.format.read_magic(stream)
    if version == (1, 0):
        shape, _fortran, dtype = np.lib.format.read_array_header_1_0(stream)
    elif version == (2, 0):
        shape, _fortran, dtype = np.lib.format.read_array_header_2_0(stream)
    else:
        raise ValueError(f"unsupported .npy format version {version}")
    return shape, dtype, stream.tell()


def _check_layout(f, zf, infos, bad) -> None:
    """Check that the members tile the archive from byte 0 to the central directory.

    zipfile trusts the central directory, so damage there can make it list
    only some of the members (or point into the middle of the data) while
    every listed member still passes its CRC; the load would then silently
    drop arrays.  Walking the local headers and requiring no gaps or overlaps
    turns that into an error.
    """
    expected = 0
    prev_flags = 0
    for info in sorted(infos, key=lambda i: i.header_offset):
        if info.header_offset != expected:
            # A data descriptor (flag bit 3, written by streaming writers)
            # may sit between members: 12/16 bytes, 20/24 with zip64.
            if not (prev_flags & 0x8 and info.header_offset - expected in (12, 16, 20, 24)):
                raise bad(f"member {info.filename!r} is not where the previous member ends (damaged zip directory)")
        f.seek(info.header_offset)
        local = f.read(30)
        if len(local) != 30 or local[:4] != b"PK\x03\x04":
            raise bad(f"member {info.filename!r} has no local file header (damaged zip directory)")
        name_len, extra_len = struct.unpack("<HH", local[26:30])
        expected = info.header_offset + 30 + name_len + extra_len + info.compress_size
        prev_flags = info.flag_bits
    end = getattr(zf, "start_dir", None)  # CPython: where the central directory starts
    if end is not None and end != expected and not (
        prev_flags & 0x8 and end - expected in (12, 16, 20, 24)
    ):
        raise bad("the zip directory does not account for all data in the file")


def _check_archive(f, path: str, file_size: int, max_bytes: int) -> dict[str, tuple]:
    """Validate the zip structure and every ``.npy`` header without loading data.

    Returns ``{key: (shape, dtype)}`` for a cross-check after loading.
    Raises CheckpointError describing the first problem found.
    """

    def bad(problem):
        return CheckpointError(f"corrupt or unsafe checkpoint {path}: {problem}")

    # np.load dispatches on the first bytes: a file that is a valid zip
    # *after* some prefix could otherwise be read as a bare .npy.
    head = f.read(4)
    if head != b"PK\x03\x04":
        raise bad("not a zip/npz archive (bad magic bytes)")
    f.seek(0)
    try:
        zf = zipfile.ZipFile(f)
    except zipfile.BadZipFile as exc:
        raise bad(f"not a readable zip archive ({exc})") from exc

    infos = zf.infolist()
    names = [i.filename for i in infos]
    if len(set(names)) != len(names):
        raise bad("duplicate member names")
    total = 0
    compressed_total = 0
    for info in infos:
        name = info.filename
        if not name.endswith(".npy") or len(name) <= 4:
            raise bad(f"member {name!r} is not a .npy array")
        if info.flag_bits & 0x1:
            raise bad(f"member {name!r} is encrypted")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise bad(f"member {name!r} uses unsupported compression method {info.compress_type}")
        if info.file_size > max_bytes:
            raise bad(f"member {name!r} declares {info.file_size} bytes, more than the limit of {max_bytes}")
        if info.compress_size > file_size:
            raise bad(f"member {name!r} declares {info.compress_size} compressed bytes but the file has only {file_size}")
        if info.compress_type == zipfile.ZIP_STORED and info.compress_size != info.file_size:
            raise bad(f"stored member {name!r} has inconsistent sizes")
        total += info.file_size
        if info.compress_type == zipfile.ZIP_DEFLATED:
            compressed_total += info.file_size
            ratio = info.file_size / max(info.compress_size, 1)
            if ratio > _MAX_RATIO and compressed_total > file_size * _MAX_RATIO:
                raise bad(
                    f"member {name!r} expands {ratio:.0f}x ({info.file_size} bytes from a "
                    f"{file_size}-byte file): looks like a zip bomb"
                )
    if total > max_bytes:
        raise bad(f"members declare {total} bytes in total, more than the limit of {max_bytes}")
    if META_KEY + ".npy" not in names:
        raise bad(f"missing {META_KEY!r} metadata")
    _check_layout(f, zf, infos, bad)

    headers = {}
    for info in infos:
        name = info.filename
        try:
            with zf.open(info) as stream:
                shape, dtype, header_len = _read_npy_header(stream)
        except (ValueError, SyntaxError) as exc:
            raise bad(f"member {name!r} has an invalid .npy header ({exc})") from exc
        except _CORRUPT_ERRORS as exc:  # BadZipFile (e.g. bad CRC), zlib.error, EOFError...
            raise bad(f"member {name!r} cannot be read ({type(exc).__name__}: {exc})") from exc
        if dtype.hasobject:
            raise bad(f"member {name!r} has object dtype {dtype}; refusing to unpickle")
        nbytes = math.prod(shape) * dtype.itemsize  # Python ints: no overflow
        if header_len + nbytes != info.file_size:
            raise bad(
                f"member {name!r} header declares shape {shape} of {dtype} ({nbytes} bytes) "
                f"but the member holds {info.file_size - header_len} data bytes"
            )
        headers[name[:-4]] = (shape, dtype)
    return headers


def load_checkpoint(path, max_bytes: int = 2**31) -> tuple[dict[str, np.ndarray], dict]:
    """Load a checkpoint written by :func:`save_checkpoint`.

    Parameters
    ----------
    path : str or os.PathLike
        Checkpoint file.
    max_bytes : int, optional
        Upper bound on the uncompressed size of any member and of all
        members together (default 2 GiB).

    Returns
    -------
    arrays : dict of str to numpy.ndarray
        Every stored array except the metadata.
    meta : dict
        The decoded metadata.

    Raises
    ------
    CheckpointError
        If there is no file at *path* or the file is corrupt, truncated or
        hostile.  The message names the file and the problem.

    Notes
    -----
    Before NumPy sees the file it is checked to be a zip whose members are all
    ``.npy`` files, with declared sizes within *max_bytes*, no zip-bomb
    compression ratio, no object dtypes, and ``.npy`` headers whose
    shape x itemsize matches the member size (so a header cannot make NumPy
    allocate more than the data present).  Loading then uses
    ``np.load(..., allow_pickle=False)``; zip CRCs are verified as members
    are read.  All checks and the load use one open file handle, so the file
    cannot be swapped in between.
    """
    path = os.fspath(path)
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise CheckpointError(f"no checkpoint at {path}") from None
    except IsADirectoryError:
        raise CheckpointError(f"no checkpoint at {path}: it is a directory") from None
    except OSError as exc:
        raise CheckpointError(f"cannot open checkpoint {path}: {exc.strerror or exc}") from exc

    with f:
        try:
            file_size = os.fstat(f.fileno()).st_size
        except OSError as exc:
            raise CheckpointError(f"cannot stat checkpoint {path}: {exc}") from exc
        if file_size == 0:
            raise CheckpointError(f"corrupt or unsafe checkpoint {path}: the file is empty")
        try:
            headers = _check_archive(f, path, file_size, max_bytes)
        except CheckpointError:
            raise
        except _CORRUPT_ERRORS as exc:
            raise CheckpointError(
                f"corrupt or unsafe checkpoint {path}: {type(exc).__name__}: {exc}"
            ) from exc

        arrays: dict[str, np.ndarray] = {}
        try:
            f.seek(0)
            with np.load(f, allow_pickle=False) as npz:
                if not isinstance(npz, np.lib.npyio.NpzFile):
                    raise CheckpointError(f"corrupt or unsafe checkpoint {path}: not an npz archive")
                for key in npz.files:
                    arrays[key] = npz[key]
        except CheckpointError:
            raise
        except _CORRUPT_ERRORS as exc:
            raise CheckpointError(
                f"corrupt checkpoint {path}: {type(exc).__name__}: {exc}"
            ) from exc

    for key, (shape, dtype) in headers.items():
        arr = arrays.get(key)
        if arr is None or arr.shape != tuple(shape) or arr.dtype != dtype:
            raise CheckpointError(f"corrupt checkpoint {path}: member {key!r} changed while loading")

    raw_meta = arrays.pop(META_KEY)
    if raw_meta.dtype != np.uint8 or raw_meta.ndim != 1:
        raise CheckpointError(
            f"corrupt checkpoint {path}: {META_KEY!r} must be a 1-D uint8 array, "
            f"got {raw_meta.dtype} with shape {raw_meta.shape}"
        )
    try:
        meta = json.loads(raw_meta.tobytes().decode("utf-8"))
    except (ValueError, RecursionError) as exc:
        raise CheckpointError(f"corrupt checkpoint {path}: {META_KEY!r} is not valid UTF-8 JSON ({exc})") from exc
    if not isinstance(meta, dict):
        raise CheckpointError(f"corrupt checkpoint {path}: {META_KEY!r} is JSON but not an object")
    return arrays, meta


# --------------------------------------------------------------------------
# image grids
# --------------------------------------------------------------------------


def _to_uint8(x) -> np.ndarray:
    """Map floats in [0, 1] to uint8: NaN -> 0, clip, scale, round half-even."""
    x = np.nan_to_num(np.asarray(x, dtype=np.float64), nan=0.0, posinf=1.0, neginf=0.0)
    return np.rint(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)


def image_grid(images, rows: int, cols: int, shape=(28, 28), pad: int = 2, pad_value: float = 0.0) -> np.ndarray:
    """Tile images into one grayscale uint8 picture.

    Parameters
    ----------
    images : array_like
        ``(rows*cols, H*W)`` flat images (reshaped with *shape*) or
        ``(rows*cols, H, W)`` images (*shape* is then ignored).  Values are
        intensities in [0, 1]; they are clipped, NaN becomes 0, and the result
        is rounded to the nearest of 256 levels.
    rows, cols : int
        Grid size.  Image ``i`` goes to row ``i // cols``, column ``i % cols``.
    shape : tuple of int, optional
        ``(H, W)`` of one image for flat input.  Default ``(28, 28)``.
    pad : int, optional
        Pixels of padding around and between images.  Default 2.
    pad_value : float, optional
        Intensity in [0, 1] of the padding.  Default 0 (black).

    Returns
    -------
    numpy.ndarray
        ``uint8`` array of shape ``(pad + rows*(H+pad), pad + cols*(W+pad))``;
        image ``(r, c)`` has its top-left pixel at
        ``(pad + r*(H+pad), pad + c*(W+pad))``.

    Raises
    ------
    ValueError
        If the grid size, padding or image shapes are inconsistent.
    """
    for name, v in (("rows", rows), ("cols", cols)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"image_grid: {name} must be a positive integer, got {v!r}")
    if isinstance(pad, bool) or not isinstance(pad, (int, np.integer)) or pad < 0:
        raise ValueError(f"image_grid: pad must be a non-negative integer, got {pad!r}")
    images = np.asarray(images)
    if images.dtype.kind not in "biuf":
        raise ValueError(f"image_grid: images must be numeric, got dtype {images.dtype}")
    n = rows * cols
    if images.ndim == 2:
        try:
            h, w = (int(s) for s in shape)
        except (TypeError, ValueError):
            raise ValueError(f"image_grid: shape must be (H, W), got {shape!r}") from None
        if h < 1 or w < 1:
            raise ValueError(f"image_grid: shape must be positive, got {shape!r}")
        if images.shape[1] != h * w:
            raise ValueError(
                f"image_grid: images have {images.shape[1]} pixels each but shape {tuple(shape)} needs {h * w}"
            )
        images = images.reshape(images.shape[0], h, w)
    elif images.ndim == 3:
        h, w = images.shape[1:]
        if h < 1 or w < 1:
            raise ValueError(f"image_grid: images must be non-empty, got shape {images.shape}")
    else:
        raise ValueError(f"image_grid: images must be (N, H*W) or (N, H, W), got shape {images.shape}")
    if images.shape[0] != n:
        raise ValueError(f"image_grid: {rows}x{cols} grid needs {n} images, got {images.shape[0]}")

    pixels = _to_uint8(images)
    grid = np.full((pad + rows * (h + pad), pad + cols * (w + pad)), _to_uint8(pad_value), dtype=np.uint8)
    # Write all tiles at once through a strided view of the grid: view[r, c]
    # is the tile slot of image r*cols + c.
    body = grid[pad:, pad:].reshape(rows, h + pad, cols, w + pad)
    body[:, :h, :, :w] = pixels.reshape(rows, cols, h, w).transpose(0, 2, 1, 3)
    return grid


# --------------------------------------------------------------------------
# PNG
# --------------------------------------------------------------------------

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def _paeth_predictor(a, b, c):
    """Vectorised Paeth predictor on int16 arrays (PNG spec, section 9.4)."""
    p = a + b - c
    pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - c)
    return np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))


def _filter_rows(raw: np.ndarray, bpp: int) -> np.ndarray:
    """All five PNG filters of every row: shape (5, H, rowbytes), uint8.

    Filtering uses only unfiltered bytes, so it vectorises over the image.
    """
    x = raw.astype(np.int16)
    a = np.zeros_like(x)
    a[:, bpp:] = x[:, :-bpp]
    b = np.zeros_like(x)
    b[1:] = x[:-1]
    c = np.zeros_like(x)
    c[1:, bpp:] = x[:-1, :-bpp]
    out = np.stack([x, x - a, x - b, x - (a + b) // 2, x - _paeth_predictor(a, b, c)])
    return (out & 0xFF).astype(np.uint8)


def _encode_png(image: np.ndarray, filter_type=None) -> bytes:
    """Encode a validated uint8 (H, W) or (H, W, 3) image as PNG bytes.

    Parameters
    ----------
    filter_type : None, int or sequence of int
        None picks per row among None/Sub/Up by the usual minimum-sum-of-
        absolute-differences heuristic (these three also decode quickly);
        an int forces one filter (0-4) for every row; a sequence gives one
        filter per row (used by the tests to exercise the decoder).
    """
    h, w = image.shape[:2]
    channels = 1 if image.ndim == 2 else 3
    raw = np.ascontiguousarray(image).reshape(h, w * channels)
    filtered = _filter_rows(raw, channels)
    if filter_type is None:
        cost = np.abs(filtered[:3].view(np.int8).astype(np.int64)).sum(axis=2)
        choice = np.argmin(cost, axis=0)
    else:
        choice = np.broadcast_to(np.asarray(filter_type, dtype=np.int64), (h,))
        if np.any((choice < 0) | (choice > 4)):
            raise ValueError(f"PNG filter types are 0-4, got {filter_type!r}")
    rows = filtered[choice, np.arange(h)]
    scan = np.concatenate([choice.astype(np.uint8)[:, None], rows], axis=1)
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0 if channels == 1 else 2, 0, 0, 0)
    return b"".join(
        [
            _PNG_SIGNATURE,
            _chunk(b"IHDR", ihdr),
            _chunk(b"IDAT", zlib.compress(scan.tobytes(), 6)),
            _chunk(b"IEND", b""),
        ]
    )


def _validate_png_image(image) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"write_png: image must be uint8, got {image.dtype}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
        raise ValueError(f"write_png: image must be (H, W) or (H, W, 3), got shape {image.shape}")
    if image.shape[0] < 1 or image.shape[1] < 1 or max(image.shape[:2]) > 2**31 - 1:
        raise ValueError(f"write_png: invalid image size {image.shape[:2]}")
    return image


def write_png(path, image: np.ndarray) -> None:
    """Write an 8-bit grayscale or RGB PNG, atomically.

    Parameters
    ----------
    path : str or os.PathLike
        Destination; replaced atomically (temp file + ``os.replace``), so a
        reader never sees a half-written image.
    image : numpy.ndarray
        ``uint8`` array, ``(H, W)`` grayscale (``(H, W, 1)`` accepted) or
        ``(H, W, 3)`` RGB.

    Raises
    ------
    ValueError
        If *image* has the wrong dtype or shape.
    OSError
        If the file cannot be written (the old file, if any, is untouched).
    """
    data = _encode_png(_validate_png_image(image))
    _atomic_write(os.fspath(path), lambda f: f.write(data), prefix=".png-")


def _unfilter(data: bytes, h: int, rowbytes: int, bpp: int, path) -> np.ndarray:
    """Undo PNG filtering; returns (h, rowbytes) uint8."""
    scan = np.frombuffer(data, dtype=np.uint8).reshape(h, rowbytes + 1)
    ftypes = scan[:, 0]
    if np.any(ftypes > 4):
        bad = int(np.flatnonzero(ftypes > 4)[0])
        raise ValueError(f"read_png: {path}: invalid filter type {ftypes[bad]} on row {bad}")
    out = np.empty((h, rowbytes), dtype=np.uint8)
    prev = np.zeros(rowbytes, dtype=np.uint8)
    for y in range(h):
        line = scan[y, 1:]
        ft = ftypes[y]
        if ft == 0:
            cur = line
        elif ft == 1:
            # Sub: running sum per channel, mod 256 (uint8 cumsum wraps).
            padded = np.zeros(-(-rowbytes // bpp) * bpp, dtype=np.uint8)
            padded[:rowbytes] = line
            cur = np.cumsum(padded.reshape(-1, bpp), axis=0, dtype=np.uint8).reshape(-1)[:rowbytes]
        elif ft == 2:
            cur = line + prev  # uint8 arithmetic wraps mod 256
        else:
            # Average and Paeth depend on the reconstructed left neighbour,
            # so they are sequential; plain Python ints are fastest here.
            src, up = line.tolist(), prev.tolist()
            res = [0] * rowbytes
            if ft == 3:
                for i in range(rowbytes):
                    left = res[i - bpp] if i >= bpp else 0
                    res[i] = (src[i] + ((left + up[i]) >> 1)) & 0xFF
            else:
                for i in range(rowbytes):
                    if i >= bpp:
                        a, c = res[i - bpp], up[i - bpp]
                    else:
                        a = c = 0
                    b = up[i]
                    p = a + b - c
                    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                    pred = a if (pa <= pb and pa <= pc) else (b if pb <= pc else c)
                    res[i] = (src[i] + pred) & 0xFF
            cur = np.array(res, dtype=np.uint8)
        out[y] = cur
        prev = out[y]
    return out


_PNG_CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}  # colour type -> samples per pixel (8-bit, no palette)


def read_png(path) -> np.ndarray:
    """Decode an 8-bit, non-interlaced grayscale or RGB PNG, with or without an alpha channel.

    Parameters
    ----------
    path : str or os.PathLike
        PNG file.

    Returns
    -------
    numpy.ndarray
        ``uint8`` array: ``(H, W)`` for grayscale, ``(H, W, 2)`` for grayscale + alpha, ``(H, W, 3)`` for
        RGB and ``(H, W, 4)`` for RGBA (what matplotlib writes, e.g. a run's ``losses.png``).

    Raises
    ------
    ValueError
        On a bad signature, bad chunk CRC, truncated data, invalid or
        unsupported IHDR (bit depth other than 8, palette colour type,
        interlacing), unknown critical chunks or malformed image data.
    OSError
        If the file cannot be read.

    Notes
    -----
    All five filter types are supported.  Ancillary chunks are skipped.  The
    expected decompressed size is checked against deflate's maximum ratio
    before inflating, so a tiny file cannot claim a gigantic image.
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        blob = f.read()

    def bad(problem):
        return ValueError(f"read_png: {path}: {problem}")

    if blob[:8] != _PNG_SIGNATURE:
        raise bad("not a PNG file (bad signature)")
    pos = 8
    ihdr = None
    idat = []
    seen_iend = False
    last_tag = None
    while pos < len(blob):
        if pos + 12 > len(blob):
            raise bad("truncated chunk header")
        (length,) = struct.unpack(">I", blob[pos : pos + 4])
        tag = blob[pos + 4 : pos + 8]
        if length > 2**31 - 1 or pos + 12 + length > len(blob):
            raise bad(f"truncated or oversized chunk {tag!r}")
        if not all(65 <= ch <= 90 or 97 <= ch <= 122 for ch in tag):
            raise bad(f"invalid chunk type {tag!r}")
        data = blob[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", blob[pos + 8 + length : pos + 12 + length])
        if zlib.crc32(tag + data) != crc:
            raise bad(f"CRC mismatch in chunk {tag.decode('ascii')}")
        pos += 12 + length
        if ihdr is None and tag != b"IHDR":
            raise bad("first chunk is not IHDR")
        if tag == b"IHDR":
            if ihdr is not None:
                raise bad("duplicate IHDR")
            if length != 13:
                raise bad("IHDR has wrong length")
            ihdr = struct.unpack(">IIBBBBB", data)
        elif tag == b"IDAT":
            if idat and last_tag != b"IDAT":
                raise bad("IDAT chunks are not consecutive")
            idat.append(data)
        elif tag == b"IEND":
            seen_iend = True
            break  # anything after IEND is ignored, as decoders customarily do
        elif not (tag[0] & 0x20) and tag != b"PLTE":
            # Upper-case first letter = critical chunk we do not understand.
            raise bad(f"unsupported critical chunk {tag.decode('ascii')}")
        last_tag = tag
    if ihdr is None:
        raise bad("missing IHDR")
    if not seen_iend:
        raise bad("missing IEND (file truncated?)")
    if not idat:
        raise bad("no image data (IDAT)")

    w, h, depth, ctype, comp, filt, interlace = ihdr
    if not (1 <= w <= 2**31 - 1 and 1 <= h <= 2**31 - 1):
        raise bad(f"invalid size {w}x{h}")
    if depth != 8:
        raise bad(f"unsupported bit depth {depth} (only 8 is supported)")
    channels = _PNG_CHANNELS.get(ctype)
    if channels is None:
        raise bad(f"unsupported colour type {ctype} (only grayscale 0, RGB 2, grayscale+alpha 4 and RGBA 6)")
    if comp != 0 or filt != 0:
        raise bad("invalid compression or filter method")
    if interlace != 0:
        raise bad("interlaced PNGs are not supported")
    rowbytes = w * channels
    expected = h * (rowbytes + 1)
    compressed = b"".join(idat)
    # Deflate cannot expand by more than ~1032:1; a claimed size beyond that
    # is corrupt, and rejecting it early avoids huge allocations.
    if expected > 1100 * len(compressed) + 1024:
        raise bad(f"image data too short for {w}x{h} pixels")
    try:
        d = zlib.decompressobj()
        raw = d.decompress(compressed, expected)
        if d.unconsumed_tail or (d.eof and d.unused_data.strip(b"\0")):
            raise bad("more image data than the header declares")
        if not d.eof:
            raw += d.flush()
            if not d.eof:
                raise bad("image data stream is truncated")
    except zlib.error as exc:
        raise bad(f"corrupt image data ({exc})") from exc
    if len(raw) != expected:
        raise bad(f"image data has {len(raw)} bytes, expected {expected}")
    pixels = _unfilter(raw, h, rowbytes, channels, path)
    return pixels.reshape(h, w) if channels == 1 else pixels.reshape(h, w, channels)


# --------------------------------------------------------------------------
# metric plots
# --------------------------------------------------------------------------

# 5x7 bitmap font, one string of seven 5-bit rows per glyph.  Lower-case
# letters are drawn with the upper-case glyphs to keep the table small.
_FONT_SRC = {
    "0": "01110 10001 10011 10101 11001 10001 01110",
    "1": "00100 01100 00100 00100 00100 00100 01110",
    "2": "01110 10001 00001 00010 00100 01000 11111",
    "3": "11111 00010 00100 00010 00001 10001 01110",
    "4": "00010 00110 01010 10010 11111 00010 00010",
    "5": "11111 10000 11110 00001 00001 10001 01110",
    "6": "00110 01000 10000 11110 10001 10001 01110",
    "7": "11111 00001 00010 00100 01000 01000 01000",
    "8": "01110 10001 10001 01110 10001 10001 01110",
    "9": "01110 10001 10001 01111 00001 00010 01100",
    "A": "01110 10001 10001 11111 10001 10001 10001",
    "B": "11110 10001 10001 11110 10001 10001 11110",
    "C": "01110 10001 10000 10000 10000 10001 01110",
    "D": "11100 10010 10001 10001 10001 10010 11100",
    "E": "11111 10000 10000 11110 10000 10000 11111",
    "F": "11111 10000 10000 11110 10000 10000 10000",
    "G": "01110 10001 10000 10111 10001 10001 01111",
    "H": "10001 10001 10001 11111 10001 10001 10001",
    "I": "01110 00100 00100 00100 00100 00100 01110",
    "J": "00111 00010 00010 00010 00010 10010 01100",
    "K": "10001 10010 10100 11000 10100 10010 10001",
    "L": "10000 10000 10000 10000 10000 10000 11111",
    "M": "10001 11011 10101 10101 10001 10001 10001",
    "N": "10001 10001 11001 10101 10011 10001 10001",
    "O": "01110 10001 10001 10001 10001 10001 01110",
    "P": "11110 10001 10001 11110 10000 10000 10000",
    "Q": "01110 10001 10001 10001 10101 10010 01101",
    "R": "11110 10001 10001 11110 10100 10010 10001",
    "S": "01111 10000 10000 01110 00001 00001 11110",
    "T": "11111 00100 00100 00100 00100 00100 00100",
    "U": "10001 10001 10001 10001 10001 10001 01110",
    "V": "10001 10001 10001 10001 10001 01010 00100",
    "W": "10001 10001 10001 10101 10101 10101 01010",
    "X": "10001 10001 01010 00100 01010 10001 10001",
    "Y": "10001 10001 10001 01010 00100 00100 00100",
    "Z": "11111 00001 00010 00100 01000 10000 11111",
    ".": "00000 00000 00000 00000 00000 01100 01100",
    "-": "00000 00000 00000 11111 00000 00000 00000",
    "+": "00000 00100 00100 11111 00100 00100 00000",
    "_": "00000 00000 00000 00000 00000 00000 11111",
    ":": "00000 01100 01100 00000 01100 01100 00000",
    "/": "00001 00010 00010 00100 01000 01000 10000",
    "(": "00010 00100 01000 01000 01000 00100 00010",
    ")": "01000 00100 00010 00010 00010 00100 01000",
    "=": "00000 00000 11111 00000 11111 00000 00000",
    " ": "00000 00000 00000 00000 00000 00000 00000",
    "?": "01110 10001 00001 00010 00100 00000 00100",
}
_FONT = {
    ch: np.array([[bit == "1" for bit in row] for row in src.split()], dtype=bool)
    for ch, src in _FONT_SRC.items()
}

# Matplotlib's default "tab10" colours, so both back ends look alike.
_COLOURS = [
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
]


def _text_width(text: str, scale: int = 1) -> int:
    return max(len(text) * 6 - 1, 0) * scale


def _draw_text(canvas, x: int, y: int, text: str, colour, scale: int = 1) -> None:
    """Draw *text* with its top-left corner at (x, y), clipped to the canvas."""
    H, W = canvas.shape[:2]
    for k, ch in enumerate(text):
        glyph = _FONT.get(ch.upper(), _FONT["?"])
        if scale > 1:
            glyph = np.kron(glyph, np.ones((scale, scale), dtype=bool))
        gy, gx = np.nonzero(glyph)
        px, py = gx + x + k * 6 * scale, gy + y
        keep = (px >= 0) & (px < W) & (py >= 0) & (py < H)
        canvas[py[keep], px[keep]] = colour


def _draw_line(canvas, x0, y0, x1, y1, colour, width: int = 1) -> None:
    """Aliased line by dense sampling (one sample per pixel step)."""
    H, W = canvas.shape[:2]
    n = int(max(abs(x1 - x0), abs(y1 - y0))) + 1
    xs = np.rint(np.linspace(x0, x1, n)).astype(np.int64)
    ys = np.rint(np.linspace(y0, y1, n)).astype(np.int64)
    for d in range(width):
        # thicken perpendicular-ish: vertical offset for flat lines,
        # horizontal for steep ones
        if abs(x1 - x0) >= abs(y1 - y0):
            px, py = xs, ys + d
        else:
            px, py = xs + d, ys
        keep = (px >= 0) & (px < W) & (py >= 0) & (py < H)
        canvas[py[keep], px[keep]] = colour


def _fill_rect(canvas, x0, y0, x1, y1, colour) -> None:
    """Fill the inclusive pixel rectangle, clipped to the canvas."""
    H, W = canvas.shape[:2]
    x0, x1 = max(int(x0), 0), min(int(x1), W - 1)
    y0, y1 = max(int(y0), 0), min(int(y1), H - 1)
    if x0 <= x1 and y0 <= y1:
        canvas[y0 : y1 + 1, x0 : x1 + 1] = colour


def _nice_ticks(lo: float, hi: float, target: int = 5, integer: bool = False):
    """Round tick positions (1, 2, 5 x 10^k steps) covering [lo, hi]."""
    span = hi - lo
    raw = span / max(target, 1)
    mag = 10.0 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    if integer:
        step = max(step, 1.0)
    first = math.ceil(lo / step - 1e-9) * step
    ticks = []
    t = first
    while t <= hi + step * 1e-9 and len(ticks) < 50:
        ticks.append(t)
        t = first + len(ticks) * step
    return ticks, step


def _format_tick(v: float, step: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1e5 or abs(v) < 1e-3:
        return f"{v:.1e}".replace("e+0", "e").replace("e-0", "e-").replace("e+", "e")
    decimals = max(0, -math.floor(math.log10(step) + 1e-9))
    return f"{v:.{decimals}f}"


def _series(records, keys):
    """Extract (x_label, x, [(key, y), ...]) with NaN for missing/non-numeric."""
    if any(isinstance(r, dict) and "epoch" in r for r in records):
        x_key = "epoch"
    elif any(isinstance(r, dict) and "step" in r for r in records):
        x_key = "step"
    else:
        x_key = None

    def num(v):
        try:
            return float(v)
        except (TypeError, ValueError):
            return math.nan

    recs = [r for r in records if isinstance(r, dict)]
    if x_key is None:
        x = np.arange(1, len(recs) + 1, dtype=np.float64)
    else:
        x = np.array([num(r.get(x_key)) for r in recs], dtype=np.float64)
    series = []
    for key in keys:
        if any(key in r for r in recs):
            series.append((key, np.array([num(r.get(key)) for r in recs], dtype=np.float64)))
    return (x_key or "record"), x, series


def _plot_matplotlib(path, x_label, x, series, title) -> bool:
    """Plot with matplotlib's object API (no pyplot, no global backend switch).

    Returns False if matplotlib is unavailable.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return False
    fig = Figure(figsize=(6.4, 4.0), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for key, y in series:
        ok = np.isfinite(x) & np.isfinite(y)
        # NaN breaks the line, as in the fallback renderer
        ax.plot(np.where(ok, x, np.nan), np.where(ok, y, np.nan), marker="o" if len(x) <= 40 else None,
                markersize=3, label=key)
    ax.set_xlabel(x_label)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if series:
        ax.legend()
    fig.tight_layout()
    _atomic_write(os.fspath(path), lambda f: fig.savefig(f, format="png"), prefix=".png-")
    return True


def _plot_fallback(x_label, x, series, title, width: int = 480, height: int = 320) -> np.ndarray:
    """Rasterise the plot into an RGB uint8 canvas without matplotlib."""
    canvas = np.full((height, width, 3), 255, dtype=np.uint8)
    black, grey, lightgrey = (0, 0, 0), (90, 90, 90), (225, 225, 225)
    left, right, top, bottom = 56, width - 14, 28, height - 34

    # Data ranges from finite points only; degenerate ranges are widened so
    # that one point or a constant series still maps inside the axes.
    finite = [(x[np.isfinite(x) & np.isfinite(y)], y[np.isfinite(x) & np.isfinite(y)]) for _, y in series]
    xs = np.concatenate([fx for fx, _ in finite]) if finite else np.empty(0)
    ys = np.concatenate([fy for _, fy in finite]) if finite else np.empty(0)
    if xs.size:
        x_lo, x_hi = float(xs.min()), float(xs.max())
        y_lo, y_hi = float(ys.min()), float(ys.max())
    else:
        x_lo, x_hi, y_lo, y_hi = 0.0, 1.0, 0.0, 1.0
    if x_hi - x_lo <= 1e-12 * max(1.0, abs(x_lo)):
        x_lo, x_hi = x_lo - 1.0, x_hi + 1.0
    if y_hi - y_lo <= 1e-12 * max(1.0, abs(y_lo)):
        d = max(abs(y_lo) * 0.1, 0.5)
        y_lo, y_hi = y_lo - d, y_hi + d
    else:
        d = 0.05 * (y_hi - y_lo)
        y_lo, y_hi = y_lo - d, y_hi + d
    integer_x = bool(xs.size) and bool(np.all(xs == np.round(xs)))

    def px(v):
        return left + (v - x_lo) / (x_hi - x_lo) * (right - left)

    def py(v):
        return bottom - (v - y_lo) / (y_hi - y_lo) * (bottom - top)

    # grid lines and tick labels
    xticks, xstep = _nice_ticks(x_lo, x_hi, 6, integer=integer_x)
    for t in xticks:
        c = int(round(px(t)))
        _draw_line(canvas, c, top, c, bottom, lightgrey)
        _draw_line(canvas, c, bottom, c, bottom + 3, black)
        label = _format_tick(t, xstep)
        _draw_text(canvas, c - _text_width(label) // 2, bottom + 6, label, grey)
    yticks, ystep = _nice_ticks(y_lo, y_hi, 5)
    for t in yticks:
        r = int(round(py(t)))
        _draw_line(canvas, left, r, right, r, lightgrey)
        _draw_line(canvas, left - 3, r, left, r, black)
        label = _format_tick(t, ystep)
        _draw_text(canvas, left - 6 - _text_width(label), r - 3, label, grey)

    # series: polyline through consecutive finite points (NaN breaks the
    # line); small square markers when there are few points or a point is
    # isolated, so a single-record run is still visible.
    for k, (key, y) in enumerate(series):
        colour = _COLOURS[k % len(_COLOURS)]
        ok = np.isfinite(x) & np.isfinite(y)
        for i in range(len(x)):
            if not ok[i]:
                continue
            x0, y0 = px(x[i]), py(y[i])
            has_next = i + 1 < len(x) and ok[i + 1]
            if has_next:
                _draw_line(canvas, x0, y0, px(x[i + 1]), py(y[i + 1]), colour, width=2)
            isolated = not has_next and not (i > 0 and ok[i - 1])
            if len(x) <= 40 or isolated:
                _fill_rect(canvas, round(x0) - 1, round(y0) - 1, round(x0) + 1, round(y0) + 1, colour)

    # axes box drawn last so it sits on top of the data
    _draw_line(canvas, left, top, right, top, black)
    _draw_line(canvas, left, bottom, right, bottom, black)
    _draw_line(canvas, left, top, left, bottom, black)
    _draw_line(canvas, right, top, right, bottom, black)

    # legend in the top-right corner of the axes
    if series:
        lw = max(_text_width(key) for key, _ in series) + 28
        lh = 12 * len(series) + 6
        lx, ly = right - 6 - lw, top + 6
        _fill_rect(canvas, lx, ly, lx + lw, ly + lh, (255, 255, 255))
        for a, b, c, d in ((lx, ly, lx + lw, ly), (lx, ly + lh, lx + lw, ly + lh), (lx, ly, lx, ly + lh), (lx + lw, ly, lx + lw, ly + lh)):
            _draw_line(canvas, a, b, c, d, grey)
        for k, (key, _) in enumerate(series):
            row = ly + 5 + 12 * k
            _fill_rect(canvas, lx + 5, row, lx + 18, row + 6, _COLOURS[k % len(_COLOURS)])
            _draw_text(canvas, lx + 23, row, key, black)

    _draw_text(canvas, (width - _text_width(title, 2)) // 2, 6, title, black, scale=2)
    _draw_text(canvas, (left + right - _text_width(x_label)) // 2, height - 12, x_label, black)
    return canvas


def plot_metrics(records: list[dict], path, keys=("loss_D", "loss_G"), title="minigan") -> None:
    """Plot training curves to a PNG file.

    Parameters
    ----------
    records : list of dict
        One dict per epoch (or step), e.g. ``{"epoch": 1, "loss_D": 0.6,
        "loss_G": 0.9, ...}``.  The x axis is ``epoch`` if any record has it,
        else ``step``, else the record index (from 1).
    path : str or os.PathLike
        Output PNG, written atomically.
    keys : sequence of str, optional
        Series to plot; keys present in no record are skipped.  Missing,
        non-numeric, NaN and infinite values are skipped (they break the
        line).
    title : str, optional
        Plot title.

    Notes
    -----
    Uses matplotlib (``Figure`` + Agg canvas directly, so no global backend
    or pyplot state changes) when importable; otherwise a built-in
    rasteriser draws a 480x320 RGB image with grid, tick labels (5x7 bitmap
    font), coloured polylines and a legend.  Empty input gives empty axes.
    """
    x_label, x, series = _series(list(records), list(keys))
    if _plot_matplotlib(path, x_label, x, series, str(title)):
        return
    write_png(path, _plot_fallback(x_label, x, series, str(title)))
