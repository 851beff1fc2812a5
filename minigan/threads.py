"""How many cores a run uses, set in one place: the BLAS library's threads and minigan's block pool.

The matrix products run on the BLAS library NumPy links (OpenBLAS in the PyPI wheels, MKL elsewhere); the copies
and elementwise passes run on :mod:`minigan.parallel`'s pool. ``minigan train --threads N`` sets both to N
through :func:`set_threads`. The environment variables (``OPENBLAS_NUM_THREADS`` ...) do the same only before
NumPy is imported, so a running process changes the BLAS library's own setting instead: the library is found
among the shared objects the process has loaded (Linux: ``/proc/self/maps``), and its ``*_set_num_threads``
entry point is called through :mod:`ctypes`. That needs no package beyond NumPy; where that finds nothing (no
``/proc``, or a library it does not know), the optional ``threadpoolctl`` is used if it is installed.

The thread count is part of what a run computes, not only of its speed: BLAS splits each product's sums by
thread, so a GAN's trajectory can differ between 1 and 2 threads (the pool's blocks never cut a sum, so its
worker count changes nothing). OpenBLAS is deterministic at a given count; MKL is only with ``MKL_CBWR`` and
``MKL_DYNAMIC=false`` set.
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass
from typing import Callable

from . import parallel

__all__ = ["BlasLibrary", "blas_libraries", "blas_threads", "set_threads"]

# Entry points by library: (get, set). The 64-bit-integer OpenBLAS builds suffix their symbols, and the
# scipy-openblas build that NumPy's wheels carry prefixes them too.
_ENTRY_POINTS = (
    ("scipy_openblas_get_num_threads64_", "scipy_openblas_set_num_threads64_"),
    ("scipy_openblas_get_num_threads", "scipy_openblas_set_num_threads"),
    ("openblas_get_num_threads64_", "openblas_set_num_threads64_"),
    ("openblas_get_num_threads", "openblas_set_num_threads"),
    ("MKL_Get_Max_Threads", "MKL_Set_Num_Threads"),
)
_NAME_HINTS = ("blas", "mkl_rt")


@dataclass(frozen=True)
class BlasLibrary:
    """A loaded BLAS library whose thread count can be read and set."""

    path: str
    get: Callable[[], int]
    set: Callable[[int], None]


def _loaded_objects() -> list[str]:
    """Paths of the shared objects mapped into this process (Linux: ``/proc/self/maps``; elsewhere none)."""
    try:
        with open("/proc/self/maps", "rb") as maps:
            paths = {os.fsdecode(line.split(None, 5)[-1].strip()) for line in maps if b".so" in line}
    except Exception:  # no /proc, or a line it cannot read: no list, and threadpoolctl may still find the library
        return []
    return sorted(p for p in paths if p.startswith("/"))


def _ctypes_library(path: str) -> BlasLibrary | None:
    try:
        lib = ctypes.CDLL(path)
    except OSError:
        return None
    for get_name, set_name in _ENTRY_POINTS:
        getter, setter = getattr(lib, get_name, None), getattr(lib, set_name, None)
        if getter is None or setter is None:
            continue
        getter.restype, getter.argtypes = ctypes.c_int, []
        setter.restype, setter.argtypes = None, [ctypes.c_int]
        return BlasLibrary(path, lambda g=getter: int(g()), lambda n, s=setter: s(int(n)))
    return None


def _threadpoolctl_libraries() -> list[BlasLibrary]:
    try:
        import threadpoolctl
    except ImportError:
        return []
    controller = threadpoolctl.ThreadpoolController()
    found = []
    for lib in controller.select(user_api="blas").lib_controllers:
        found.append(BlasLibrary(lib.filepath, lambda lib=lib: int(lib.num_threads),
                                 lambda n, lib=lib: lib.set_num_threads(int(n))))
    return found


_by_path: dict[str, BlasLibrary | None] = {}  # every candidate path opened once: a loaded library stays loaded


def blas_libraries() -> list[BlasLibrary]:
    """The BLAS libraries loaded in this process that expose a thread setting (importing NumPy loads its own).

    The list of loaded objects is read on every call, so a library loaded later (SciPy's, PyTorch's) is found.
    """
    import numpy  # noqa: F401  (its BLAS must be loaded to be found)

    for path in _loaded_objects():
        if path not in _by_path and any(h in os.path.basename(path).lower() for h in _NAME_HINTS):
            _by_path[path] = _ctypes_library(path)
    found = [lib for lib in _by_path.values() if lib is not None]
    return found or _threadpoolctl_libraries()


def blas_threads() -> int | None:
    """The thread count of the first BLAS library found, or None when none can be read."""
    libs = blas_libraries()
    count = libs[0].get() if libs else None
    return count if count is not None and count >= 1 else None


def set_threads(n: int) -> int:
    """Use ``n`` threads for the matrix products and ``n`` workers in the block pool, from now on.

    Returns the BLAS thread count in force afterwards, read back from the library: it can be lower than asked
    (OpenBLAS caps it at the count it was built for; a sequential MKL stays at 1). Raises RuntimeError when no
    BLAS library's setting is found (the pool is then left as it was): a run asked for ``n`` threads must not
    silently use another count.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"the number of threads must be a positive integer, got {n!r}")
    libs = blas_libraries()
    if not libs:
        raise RuntimeError(
            "cannot set the BLAS thread count: no known BLAS library (OpenBLAS, MKL) with a thread setting is "
            "loaded. Set OPENBLAS_NUM_THREADS (or OMP_NUM_THREADS / MKL_NUM_THREADS) before starting, or install "
            "threadpoolctl")
    for lib in libs:
        lib.set(n)
    in_force = blas_threads() or n
    parallel.set_workers(min(n, max(in_force, 1)))
    return in_force
