"""Array backends: NumPy (default), CuPy (opt-in GPU) and a CPU "strict" backend for tests.

This is the only package in minigan that knows CuPy exists. Every other module writes its array code once
against an ``xp`` namespace obtained with :func:`get_array_module` (the CuPy/Chainer convention), and moves
data between host and device only through :func:`to_device` and :func:`to_host`.

The package: this file chooses the backend and moves arrays; :mod:`~minigan.backend.strict` is the strict
backend; :mod:`~minigan.backend.rng` the random numbers; :mod:`~minigan.backend.kernels` the CUDA sources of
the fused passes, which :mod:`~minigan.backend.fused` (layers and losses) and :mod:`~minigan.backend.updates`
(optimizers) run. Everything public is importable from ``minigan.backend`` itself.

Choosing a backend
------------------
* ``minigan.backend.use("numpy" | "cupy" | "strict")`` from Python;
* the environment variable ``MINIGAN_BACKEND`` (read once, when the active backend is first asked for);
* ``--device gpu`` on the command line (which calls ``use("cupy")``).

CuPy is imported lazily, only when it is asked for; asking for it without CuPy installed, or without a
usable GPU, raises :class:`BackendError` with one sentence saying which and what to do.

The strict backend
------------------
Code that runs on NumPy can still break on CuPy: ``np.asarray(device_array)`` raises there, a NumPy function
applied to a device array is a host round trip (or an error), mixing host and device arrays in one operation
raises, and pulling a Python scalar out of a device array (``float(x)``, ``if x.any():``) synchronises the GPU.
:class:`StrictArray` is a CPU array that *behaves like a device array* and turns each of these into a
:class:`StrictBackendError`, so the test suite catches CuPy-only faults on machines without a GPU.

Random numbers
--------------
:class:`Rng` is a per-object, seeded generator. It always owns a host PCG64 stream (so its state can be
saved in a checkpoint and restored exactly); on NumPy and strict backends it draws from that stream. On CuPy
each draw takes one key from that stream and computes SplitMix64's outputs from it on the GPU (a counter-based
generator: no state on the device), so the host state decides the GPU's numbers as well and a resumed GPU run
continues exactly; :func:`splitmix_uniform` computes the same numbers on the host.
"""

from __future__ import annotations

import os
from typing import Any, Callable

import numpy as np

__all__ = [
    "BackendError",
    "StrictBackendError",
    "StrictArray",
    "Rng",
    "as_seed",
    "use",
    "name",
    "xp",
    "get_array_module",
    "to_device",
    "to_host",
    "is_device_array",
    "on_host_cores",
    "computes_on_host",
    "gpu_available",
    "synchronize",
    "bce_logits",
    "dropout_forward",
    "dropout_draw",
    "dropout_threshold",
    "splitmix_uniform",
    "sigmoid",
    "relu_forward",
    "column_sum",
    "maxout_forward",
    "maxout_backward",
    "sgd_momentum_update",
    "sgd_momentum_update_many",
    "adam_update",
    "adam_update_many",
    "adam_clip_scale",
    "lane_arrays",
]

BACKENDS = ("numpy", "cupy", "strict")


class BackendError(RuntimeError):
    """The requested backend cannot be used on this machine (CuPy missing, no GPU, unknown name)."""


# --------------------------------------------------------------------------------------------------
# Choosing the backend
# --------------------------------------------------------------------------------------------------

_active: str | None = None
_cupy: Any = None


def _import_cupy():
    """Import CuPy and check that a GPU is usable; raise BackendError saying what is missing."""
    global _cupy
    if _cupy is not None:
        return _cupy
    try:
        import cupy  # the single place minigan imports CuPy
    except ImportError as exc:
        raise BackendError(
            "the GPU backend needs CuPy, which is not installed: pip install 'minigan[gpu]' "
            "(or a cupy-cudaXX wheel matching your CUDA), or use the CPU (--device cpu)"
        ) from exc
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CUDA driver missing or broken: CuPy raises its own runtime errors
        raise BackendError(f"CuPy is installed but no usable GPU was found ({exc}); use --device cpu") from exc
    if count < 1:
        raise BackendError("CuPy is installed but this machine has no GPU; use --device cpu")
    _cupy = cupy
    return cupy


def gpu_available() -> bool:
    """True when CuPy imports and sees a GPU (never raises; tests use it to add the CuPy backend)."""
    try:
        _import_cupy()
    except BackendError:
        return False
    return True


def use(backend: str) -> None:
    """Make ``backend`` ("numpy", "cupy" or "strict") the active backend for new arrays and models."""
    global _active
    backend = backend.lower()
    if backend in ("gpu", "cuda"):
        backend = "cupy"
    if backend in ("cpu", "np"):
        backend = "numpy"
    if backend not in BACKENDS:
        raise BackendError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend == "cupy":
        _import_cupy()
    _active = backend


def name() -> str:
    """Name of the active backend ("numpy", "cupy" or "strict")."""
    if _active is None:
        use(os.environ.get("MINIGAN_BACKEND", "numpy") or "numpy")
    return _active  # type: ignore[return-value]


def computes_on_host() -> bool:
    """True when the active backend computes on the CPU's cores (numpy, strict), whose thread count matters."""
    return name() != "cupy"


def xp():
    """The array namespace of the active backend (numpy, cupy, or the strict namespace)."""
    active = name()
    if active == "cupy":
        return _cupy
    if active == "strict":
        return strict_xp
    return np


def _is_cupy_array(a: Any) -> bool:
    # Looking at the type's module avoids importing CuPy just to ask the question.
    return type(a).__module__.startswith("cupy")


def is_device_array(a: Any) -> bool:
    """True for arrays that do not live in host memory as plain NumPy arrays (CuPy or strict arrays)."""
    return isinstance(a, StrictArray) or _is_cupy_array(a)


def on_host_cores(a: Any) -> bool:
    """True when work on ``a`` runs on the CPU's cores (NumPy and strict arrays), False for CuPy arrays."""
    return not _is_cupy_array(a)


def get_array_module(*arrays: Any):
    """The namespace to compute on ``arrays`` with: numpy, cupy, or the strict namespace.

    The first device array decides; host arrays and scalars give numpy.
    """
    for a in arrays:
        if type(a) is np.ndarray:  # the common case first: this runs several times per layer and step
            continue
        if isinstance(a, StrictArray):
            return strict_xp
        if _is_cupy_array(a):
            return _import_cupy()
    return np


def _map_arrays(obj: Any, convert: Callable[[Any], Any]) -> Any:
    """Apply ``convert`` to every array in ``obj``: an array, a dict/list/tuple of them, or a model.

    Models (anything with a ``map_arrays`` method, such as minigan layers) are converted in place and
    returned, so ``model = to_device(model)`` and ``to_device(model)`` both work.
    """
    if hasattr(obj, "map_arrays") and callable(obj.map_arrays):
        obj.map_arrays(convert)
        return obj
    if isinstance(obj, dict):
        return {k: _map_arrays(v, convert) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_map_arrays(v, convert) for v in obj)
    if isinstance(obj, (np.ndarray, np.generic, StrictArray)) or _is_cupy_array(obj):
        return convert(obj)
    return obj


def _host_array(a: Any) -> np.ndarray:
    if isinstance(a, StrictArray):
        return a._data.copy()
    if _is_cupy_array(a):
        return a.get()
    # Always a copy, as on CuPy: a caller that edits what to_host returned must never edit the model.
    return np.array(a)


def to_host(obj: Any) -> Any:
    """Copy arrays (or the arrays of a model / container) to host NumPy arrays. Explicit, never implicit.

    The result is always a copy, on every backend, so it is safe to modify.
    """
    return _map_arrays(obj, _host_array)


def to_device(obj: Any, backend: str | None = None) -> Any:
    """Move arrays (or a whole model) onto the active backend (or ``backend``); no-op on NumPy."""
    target = backend or name()
    if target == "cupy":
        cupy = _import_cupy()
        return _map_arrays(obj, lambda a: cupy.asarray(_host_array(a) if isinstance(a, StrictArray) else a))
    if target == "strict":
        return _map_arrays(
            obj, lambda a: a if isinstance(a, StrictArray) else StrictArray(np.array(_host_array(a)))
        )
    if target == "numpy":
        return _map_arrays(obj, _host_array)
    raise BackendError(f"unknown backend {target!r}; choose one of {', '.join(BACKENDS)}")


#: Elements per block of a memory-bound, multi-pass update on the CPU (see :func:`cache_blocks`). 256 Ki float32
#: is 1 MiB per array, so the arrays of an SGD step (parameter, gradient, velocity, scratch) stay in L3 between
#: passes. Each block costs a few ufunc calls, and on the block pool every call hands the GIL between the
#: workers; fewer, larger blocks cost less than the L2 misses they bring. Measured in the CGAN iteration on the
#: 2-core AMD EPYC (batch 100): both SGD steps 2.49 ms in blocks of 64 Ki, 2.08 ms in 256 Ki, 2.6 ms whole-array
#: on two workers; 2.52 against 2.36 ms on one. (On an earlier machine, 64 Ki had been best: 4.5 ms, 128 Ki 4.7.)
CPU_BLOCK_ELEMENTS = 1 << 18


def cache_blocks(*arrays: Any, block: int | None = None):
    """Yield tuples of matching flat views of same-shaped arrays, block by block, for in-place updates.

    An update of several elementwise passes (SGD: scale the gradient, decay the velocity, add, step) over
    arrays larger than the cache streams every array from memory once per pass; done block by block, only the
    first pass of a block misses the cache. On a GPU one pass is one kernel launch, so the arrays come back
    whole. Arrays that are not C-contiguous also come back whole (a flat view of them would be a copy).
    ``block``: elements per block (default :data:`CPU_BLOCK_ELEMENTS`); a reduction whose bits depend on where
    the blocks end fixes its own.
    """
    size = CPU_BLOCK_ELEMENTS if block is None else block
    first = arrays[0]
    flat = all(a.flags.c_contiguous for a in arrays)
    if _is_cupy_array(first) or not flat or first.size <= size:
        yield arrays
        return
    views = [a.reshape(-1) for a in arrays]
    for start in range(0, first.size, size):
        yield tuple(v[start:start + size] for v in views)


def synchronize() -> None:
    """Wait for queued device work (no-op off the GPU). Benchmarks call this before reading a clock."""
    if name() == "cupy":
        _cupy.cuda.get_current_stream().synchronize()


def _parallel():
    from .. import parallel  # parallel imports this package

    return parallel


def _blockwise(fn, *arrays, block: int | None = None) -> list:
    return _parallel().blockwise(fn, *arrays, block=block)


# The rest of the package, imported after the core above (each module takes what it needs from it).
from .strict import StrictArray, StrictBackendError, strict_xp  # noqa: E402
from .rng import Rng, as_seed, splitmix_uniform  # noqa: E402
from .fused import (  # noqa: E402
    bce_logits, column_sum, dropout_draw, dropout_forward, dropout_threshold, maxout_backward, maxout_forward,
    relu_forward, sigmoid,
)
from .updates import (  # noqa: E402
    adam_clip_scale, adam_update, adam_update_many, lane_arrays, sgd_momentum_update, sgd_momentum_update_many,
)
