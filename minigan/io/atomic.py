"""Atomic file replacement: a temporary file in the destination directory, fsync, rename, directory fsync.

Every file minigan writes (checkpoints, PNG grids) goes through :func:`_atomic_write`, so a reader never sees a
half-written file and a failed write leaves the previous one untouched."""

from __future__ import annotations

import errno
import os
import tempfile


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
