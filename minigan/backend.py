"""Array backends: NumPy (default), CuPy (opt-in GPU) and a CPU "strict" backend for tests.

This is the only module in minigan that knows CuPy exists. Every other module writes its array code once
against an ``xp`` namespace obtained with :func:`get_array_module` (the CuPy/Chainer convention), and moves
data between host and device only through :func:`to_device` and :func:`to_host`.

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
saved in a checkpoint and restored exactly); on NumPy and strict backends it draws from that stream, on CuPy
it draws on the GPU from a device generator seeded from the host stream.
"""

from __future__ import annotations

import numbers
import os
import types
from typing import Any, Callable

import numpy as np
from numpy.lib.mixins import NDArrayOperatorsMixin

__all__ = [
    "BackendError",
    "StrictBackendError",
    "StrictArray",
    "Rng",
    "use",
    "name",
    "xp",
    "get_array_module",
    "to_device",
    "to_host",
    "is_device_array",
    "gpu_available",
    "synchronize",
]

BACKENDS = ("numpy", "cupy", "strict")


class BackendError(RuntimeError):
    """The requested backend cannot be used on this machine (CuPy missing, no GPU, unknown name)."""


class StrictBackendError(TypeError):
    """Code did something with a (strict) device array that would fail or synchronise on CuPy."""


# --------------------------------------------------------------------------------------------------
# The strict backend: a CPU array with device-array manners.
# --------------------------------------------------------------------------------------------------


def _unwrap(obj: Any) -> Any:
    """Replace StrictArrays inside ``obj`` (possibly nested in tuples/lists/dicts) by their host data."""
    if isinstance(obj, StrictArray):
        return obj._data
    if isinstance(obj, tuple):
        return tuple(_unwrap(o) for o in obj)
    if isinstance(obj, list):
        return [_unwrap(o) for o in obj]
    if isinstance(obj, dict):
        return {k: _unwrap(v) for k, v in obj.items()}
    return obj


def _wrap(obj: Any) -> Any:
    """Wrap NumPy arrays and NumPy scalars coming out of a computation as StrictArrays.

    Scalars are wrapped too (as 0-d arrays) because CuPy reductions return 0-d *device* arrays: code that
    then calls ``float()`` on them must go through :func:`to_host`, as it must on the GPU.
    """
    if isinstance(obj, np.ndarray):
        return StrictArray(obj)
    if isinstance(obj, np.generic):
        return StrictArray(np.asarray(obj))
    if isinstance(obj, tuple):
        return tuple(_wrap(o) for o in obj)
    if isinstance(obj, list):
        return [_wrap(o) for o in obj]
    return obj


def _reject_host_arrays(args: Any, what: str) -> None:
    """Raise if a non-scalar host NumPy array takes part in a device operation (CuPy raises too)."""
    for a in args if isinstance(args, (tuple, list)) else (args,):
        if isinstance(a, (tuple, list)):
            _reject_host_arrays(a, what)
        elif isinstance(a, np.ndarray) and a.ndim > 0:
            raise StrictBackendError(
                f"{what} mixes a host NumPy array (shape {a.shape}) with device arrays; "
                "move it first with minigan.backend.to_device()"
            )


class StrictArray(NDArrayOperatorsMixin):
    """A CPU array that refuses what a CuPy array would refuse (and what would silently sync a GPU).

    Arithmetic operators, indexing and array methods work and return StrictArrays. These raise
    :class:`StrictBackendError`:

    * implicit conversion to a host array (``np.asarray(a)``, ``np.array(a)``);
    * any NumPy *function* applied to it (``np.where(a, ...)``, ``np.sum(a)``): use ``xp.where``;
    * an operation mixing it with a host NumPy array (``a + np.ones(3)``);
    * pulling a Python scalar out of it (``float(a)``, ``int(a)``, ``bool(a)``, ``a.item()``, ``a.tolist()``,
      iteration): on a GPU each is a device synchronisation; use :func:`to_host` explicitly.

    NumPy ufuncs (``np.exp(a)``) are allowed, as CuPy allows them through ``__array_ufunc__``.
    """

    __slots__ = ("_data",)
    __array_priority__ = 1000.0

    def __init__(self, data: np.ndarray):
        if not isinstance(data, np.ndarray):
            raise TypeError(f"StrictArray wraps a numpy.ndarray, got {type(data).__name__}")
        self._data = data

    # -- what a device array refuses -----------------------------------------------------------
    def __array__(self, dtype=None, copy=None):
        raise StrictBackendError(
            "implicit conversion of a device array to a host NumPy array (np.asarray / np.array); "
            "use minigan.backend.to_host() where a host copy is really wanted"
        )

    def __array_function__(self, func, types, args, kwargs):
        raise StrictBackendError(
            f"NumPy function numpy.{func.__name__}() applied to a device array; "
            "use xp = minigan.backend.get_array_module(x) and call xp."
            f"{func.__name__}() instead"
        )

    def _sync(self, what: str):
        raise StrictBackendError(
            f"{what} of a device array pulls a value to the host (a GPU synchronisation); "
            "use minigan.backend.to_host() explicitly, outside hot loops"
        )

    def __float__(self):
        self._sync("float()")

    def __int__(self):
        self._sync("int()")

    def __index__(self):
        self._sync("using as an index")

    def __bool__(self):
        self._sync("bool() / an if-test")

    def __complex__(self):
        self._sync("complex()")

    def __iter__(self):
        self._sync("iteration")

    def item(self, *args):
        self._sync(".item()")

    def tolist(self):
        self._sync(".tolist()")

    # -- what it allows ------------------------------------------------------------------------
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        _reject_host_arrays(inputs, f"numpy.{ufunc.__name__}")
        out = kwargs.get("out")
        if out is not None:
            _reject_host_arrays(out, f"numpy.{ufunc.__name__}(out=...)")
        result = getattr(ufunc, method)(*_unwrap(inputs), **_unwrap(kwargs))
        if out is not None:
            # In-place forms (a += b, out=...) must hand back the very objects they wrote into.
            return out[0] if len(out) == 1 else out
        return _wrap(result)

    def __getitem__(self, key):
        return _wrap(self._data[_unwrap(key)])

    def __setitem__(self, key, value):
        if isinstance(value, np.ndarray) and value.ndim > 0:
            _reject_host_arrays((value,), "assignment into a device array")
        self._data[_unwrap(key)] = _unwrap(value)

    def __len__(self):
        return len(self._data)

    def __repr__(self):
        return f"StrictArray({self._data!r})"

    def get(self) -> np.ndarray:
        """Explicit device-to-host copy (CuPy's ``ndarray.get``)."""
        return self._data.copy()

    # Attributes that are plain metadata pass straight through; methods are wrapped.
    _METADATA = frozenset({"shape", "dtype", "ndim", "size", "itemsize", "nbytes", "strides", "flags"})

    def __getattr__(self, attr):
        if attr.startswith("__"):
            # __array_interface__, __array_struct__, __dlpack__ ... would hand NumPy the host buffer.
            raise AttributeError(attr)
        if attr in StrictArray._METADATA:
            return getattr(self._data, attr)
        value = getattr(self._data, attr)
        if isinstance(value, np.ndarray):  # .T, .real, .imag
            return StrictArray(value)
        if callable(value):

            def method(*args, **kwargs):
                _reject_host_arrays(args, f"ndarray.{attr}")
                return _wrap(value(*_unwrap(args), **_unwrap(kwargs)))

            return method
        return value

    def __copy__(self):
        return StrictArray(self._data.copy())

    def __deepcopy__(self, memo):
        return StrictArray(self._data.copy())


class _StrictNamespace:
    """The ``xp`` of the strict backend: NumPy's functions, taking and returning StrictArrays.

    Host arrays passed to ``xp.asarray`` / ``xp.array`` are an explicit transfer (as with ``cupy.asarray``);
    elsewhere a host array mixed with device arrays is refused. ``xp.random`` is refused: randomness comes
    from per-object :class:`Rng` generators.
    """

    _TRANSFERS = frozenset({"asarray", "array", "ascontiguousarray", "asanyarray"})

    def __init__(self, module: types.ModuleType = np, prefix: str = "numpy"):
        self._module = module
        self._prefix = prefix
        self.__name__ = "minigan.strict"

    def __getattr__(self, attr):
        if attr == "random":
            raise StrictBackendError(
                "xp.random used: draw random numbers from a seeded minigan.backend.Rng instead"
            )
        value = getattr(self._module, attr)
        if isinstance(value, types.ModuleType):
            wrapped: Any = _StrictNamespace(value, f"{self._prefix}.{attr}")
        elif callable(value) and not isinstance(value, type):
            wrapped = self._wrap_function(value, attr)
        else:
            wrapped = value
        setattr(self, attr, wrapped)  # cache: later lookups skip __getattr__
        return wrapped

    def _wrap_function(self, func: Callable, attr: str) -> Callable:
        qualified = f"{self._prefix}.{attr}"
        transfers = attr in self._TRANSFERS

        def strict_function(*args, **kwargs):
            if not transfers:
                _reject_host_arrays(args, qualified)
            out = kwargs.get("out")
            result = func(*_unwrap(args), **_unwrap(kwargs))
            if isinstance(out, StrictArray):
                return out
            return _wrap(result)

        strict_function.__name__ = attr
        strict_function.__doc__ = f"Strict-backend version of {qualified}."
        return strict_function


strict_xp = _StrictNamespace()


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


def get_array_module(*arrays: Any):
    """The namespace to compute on ``arrays`` with: numpy, cupy, or the strict namespace.

    The first device array decides; host arrays and scalars give numpy.
    """
    for a in arrays:
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


#: Elements per block of a memory-bound, multi-pass update on the CPU (see :func:`cache_blocks`): 64 Ki float32
#: is 256 KiB per array, so the four arrays of an SGD step (parameter, gradient, velocity, scratch) stay within
#: this machine's 1 MiB L2 between passes. Measured on the CGAN's 3.6 M parameters: 4.5 ms per SGD step in
#: blocks of 64 Ki against 6.4 ms whole-array (16 Ki: 6.6 ms, call overhead; 128 Ki: 4.7 ms).
CPU_BLOCK_ELEMENTS = 65536


def cache_blocks(*arrays: Any):
    """Yield tuples of matching flat views of same-shaped arrays, block by block, for in-place updates.

    An update of several elementwise passes (SGD: scale the gradient, decay the velocity, add, step) over
    arrays larger than the cache streams every array from memory once per pass; done block by block, only the
    first pass of a block misses the cache. On a GPU one pass is one kernel launch, so the arrays come back
    whole. Arrays that are not C-contiguous also come back whole (a flat view of them would be a copy).
    """
    first = arrays[0]
    flat = all(a.flags.c_contiguous for a in arrays)
    if _is_cupy_array(first) or not flat or first.size <= CPU_BLOCK_ELEMENTS:
        yield arrays
        return
    views = [a.reshape(-1) for a in arrays]
    for start in range(0, first.size, CPU_BLOCK_ELEMENTS):
        yield tuple(v[start:start + CPU_BLOCK_ELEMENTS] for v in views)


def synchronize() -> None:
    """Wait for queued device work (no-op off the GPU). Benchmarks call this before reading a clock."""
    if name() == "cupy":
        _cupy.cuda.get_current_stream().synchronize()


# --------------------------------------------------------------------------------------------------
# Random numbers
# --------------------------------------------------------------------------------------------------


class Rng:
    """A seeded random generator drawing arrays on the backend of the array it is asked to match.

    Parameters
    ----------
    seed : int or numpy.random.SeedSequence
        Seed of the host PCG64 stream. Two Rngs with the same seed draw the same numbers on the CPU.

    Notes
    -----
    The state is the host PCG64 state (:meth:`get_state` / :meth:`set_state`, JSON-serialisable), so a CPU
    run resumed from a checkpoint continues the very same stream. On CuPy, a device generator is seeded from
    the host stream on first use; after a restore it is re-seeded from the restored host state, so a resumed
    GPU run is deterministic but not the same stream as an uninterrupted one.
    """

    def __init__(self, seed: int | np.random.SeedSequence = 0):
        self.host = np.random.Generator(np.random.PCG64(seed))
        self._device = None

    # -- drawing -------------------------------------------------------------------------------
    def random(self, shape, dtype=np.float32, like: Any = None):
        """U[0, 1) array of ``shape`` and ``dtype``, on the backend of ``like`` (or the active one)."""
        namespace = get_array_module(like) if like is not None else xp()
        dtype = np.dtype(dtype)
        if namespace is np or namespace is strict_xp:
            draw = self.host.random(shape, dtype=dtype)
            return StrictArray(draw) if namespace is strict_xp else draw
        return self._device_generator().random(shape, dtype=dtype)

    def uniform(self, low: float, high: float, shape, dtype=np.float32, like: Any = None):
        """U[low, high) array of ``shape`` and ``dtype`` on the backend of ``like`` (or the active one)."""
        u = self.random(shape, dtype, like)
        u *= high - low
        u += low
        return u

    def permutation(self, n: int) -> np.ndarray:
        """A host permutation of range(n) (data shuffling happens on the host)."""
        return self.host.permutation(n)

    def _device_generator(self):
        if self._device is None:
            cupy = _import_cupy()
            self._device = cupy.random.default_rng(int(self.host.integers(0, 2**63 - 1)))
        return self._device

    # -- state -----------------------------------------------------------------------------------
    def get_state(self) -> dict:
        """JSON-serialisable state (PCG64's 128-bit integers as decimal strings)."""
        state = self.host.bit_generator.state
        return {
            "bit_generator": state["bit_generator"],
            "state": {k: str(v) for k, v in state["state"].items()},
            "has_uint32": int(state["has_uint32"]),
            "uinteger": int(state["uinteger"]),
        }

    def set_state(self, state: dict) -> None:
        """Restore a state returned by :meth:`get_state`."""
        if not isinstance(state, dict) or state.get("bit_generator") != "PCG64":
            raise ValueError(f"not a PCG64 generator state: {state!r:.200}")
        self.host.bit_generator.state = {
            "bit_generator": "PCG64",
            "state": {k: int(v) for k, v in state["state"].items()},
            "has_uint32": int(state["has_uint32"]),
            "uinteger": int(state["uinteger"]),
        }
        self._device = None  # re-seeded from the restored host stream on next use


def as_seed(seed: Any) -> int | np.random.SeedSequence:
    """Accept an int, a SeedSequence or None (fresh OS entropy) as a seed."""
    if seed is None:
        return np.random.SeedSequence()
    if isinstance(seed, (np.random.SeedSequence, numbers.Integral)):
        return seed
    raise TypeError(f"a seed must be an int, a numpy SeedSequence or None, got {type(seed).__name__}")
