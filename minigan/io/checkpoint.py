"""The checkpoint format.

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

import json
import math
import os
import struct
import time
import tokenize
import zipfile
import zlib

import numpy as np

from .atomic import _atomic_write, _DirSyncError

__all__ = ["CheckpointError", "save_checkpoint", "load_checkpoint"]

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
