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
saved in a checkpoint and restored exactly); on NumPy and strict backends it draws from that stream. On CuPy
each draw takes one key from that stream and computes SplitMix64's outputs from it on the GPU (a counter-based
generator: no state on the device), so the host state decides the GPU's numbers as well and a resumed GPU run
continues exactly; :func:`splitmix_uniform` computes the same numbers on the host.
"""

from __future__ import annotations

import math
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
    "on_host_cores",
    "computes_on_host",
    "gpu_available",
    "synchronize",
    "bce_logits",
    "dropout_forward",
    "dropout_draw",
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
    "lane_arrays",
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
    The state is the host PCG64 state (:meth:`get_state` / :meth:`set_state`, JSON-serialisable), so a run
    resumed from a checkpoint continues the very same stream. On NumPy and strict arrays the numbers come from
    that stream. On CuPy each draw takes one 64-bit key from it and computes its numbers on the GPU, element
    ``i`` being SplitMix64's ``i``-th output from the key (:func:`splitmix_uniform` is the same on the host):
    no generator state lives on the GPU, so a resumed GPU run continues the uninterrupted run's draws too.
    """

    def __init__(self, seed: int | np.random.SeedSequence = 0):
        self.host = np.random.Generator(np.random.PCG64(seed))

    # -- drawing -------------------------------------------------------------------------------
    def random(self, shape, dtype=np.float32, like: Any = None):
        """U[0, 1) array of ``shape`` and ``dtype``, on the backend of ``like`` (or the active one)."""
        namespace = get_array_module(like) if like is not None else xp()
        dtype = np.dtype(dtype)
        if namespace is np or namespace is strict_xp:
            draw = np.empty(shape, dtype)
            _parallel().random_fill(self.host, draw)  # the same values as self.host.random, on every core
            return StrictArray(draw) if namespace is strict_xp else draw
        u = namespace.empty(shape, dtype)
        self._check_device_dtype(dtype)
        _kernel("uniform")(self.device_key(), u)
        return u

    @staticmethod
    def _check_device_dtype(dtype) -> None:
        if dtype not in (np.float32, np.float64):
            raise TypeError(f"Rng: GPU draws are float32 or float64, got {dtype}")

    def device_key(self) -> np.uint64:
        """The key of the next counter-based draw on the GPU: one 64-bit number from the host stream."""
        return self.host.integers(0, 2**64, dtype=np.uint64)

    def uniform(self, low: float, high: float, shape, dtype=np.float32, like: Any = None):
        """U[low, high) array of ``shape`` and ``dtype`` on the backend of ``like`` (or the active one): the
        :meth:`random` draw times ``high - low`` plus ``low`` (two roundings; on CuPy in the drawing kernel)."""
        namespace = get_array_module(like) if like is not None else xp()
        if namespace is not np and namespace is not strict_xp:
            u = namespace.empty(shape, np.dtype(dtype))
            self._check_device_dtype(u.dtype)
            _kernel("uniform_affine")(self.device_key(), _scalar(u, high - low), _scalar(u, low), u)
            return u
        u = self.random(shape, dtype, like)
        u *= high - low
        u += low
        return u

    def permutation(self, n: int) -> np.ndarray:
        """A host permutation of range(n) (data shuffling happens on the host)."""
        return self.host.permutation(n)

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


def splitmix_uniform(key: int, shape, dtype=np.float32) -> np.ndarray:
    """On the host, the U[0, 1) numbers that a CuPy draw with ``key`` computes (``Rng.random`` on CuPy).

    Element ``i`` (C order) is SplitMix64's ``i``-th output from state ``key`` (Steele, Lea & Flood 2014:
    ``mix(key + (i+1)·0x9E3779B97F4A7C15)``), scaled from its top 24 bits for float32 or 53 for float64.
    The reference the GPU kernels are tested against.
    """
    dtype = np.dtype(dtype)
    shape = tuple(shape) if isinstance(shape, (tuple, list)) else (int(shape),)
    z = np.uint64(key) + np.arange(1, math.prod(shape) + 1, dtype=np.uint64) * np.uint64(_SPLITMIX_GAMMA)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(_SPLITMIX_M1)  # uint64 arithmetic wraps mod 2**64, as in C
    z = (z ^ (z >> np.uint64(27))) * np.uint64(_SPLITMIX_M2)
    z ^= z >> np.uint64(31)
    if dtype == np.float32:
        u = (z >> np.uint64(40)).astype(np.float32) * np.float32(2.0**-24)
    elif dtype == np.float64:
        u = (z >> np.uint64(11)).astype(np.float64) * 2.0**-53
    else:
        raise TypeError(f"splitmix_uniform: dtype must be float32 or float64, got {dtype}")
    return u.reshape(shape)


def as_seed(seed: Any) -> int | np.random.SeedSequence:
    """Accept an int, a SeedSequence or None (fresh OS entropy) as a seed."""
    if seed is None:
        return np.random.SeedSequence()
    if isinstance(seed, (np.random.SeedSequence, numbers.Integral)):
        return seed
    raise TypeError(f"a seed must be an int, a numpy SeedSequence or None, got {type(seed).__name__}")


# --------------------------------------------------------------------------------------------------
# Fused elementwise passes
# --------------------------------------------------------------------------------------------------
#
# Each function below does one elementwise step of a training iteration that the layers, losses and
# optimizers now do as several passes. On NumPy and on the strict backend it runs exactly those passes, in
# the same order, so its result is bit-identical to the code it is meant to replace (tests/test_fused.py
# checks that against the layers, losses and optimizers themselves). On CuPy it is one ElementwiseKernel: one
# launch instead of several, and no temporaries. The kernels are compiled with --fmad=false, so no
# multiply-add is contracted into an FMA and each step rounds as the separate passes do; the GPU check runs
# the same tests on CuPy against the unfused CuPy passes.
#
# Called: sgd_momentum_update and adam_update by the optimizers (on the CPU their blocks run on the block
# pool), bce_logits by the BCE loss, dropout_forward by Dropout, sigmoid and relu_forward by the activations,
# uniform and uniform_affine by Rng.random and Rng.uniform, dropout_draw by Dropout, maxout_forward/backward by Maxout on device
# arrays (CuPy, strict; on NumPy the layer runs the same passes in row blocks on the block pool, into reused
# buffers).

_KERNEL_OPTIONS = ("--fmad=false",)
_kernels: dict = {}


def _kernel(name: str):
    """The CuPy ElementwiseKernel ``name`` (compiled on first use; CuPy caches the binary on disk)."""
    if name not in _kernels:
        cupy = _import_cupy()
        in_params, out_params, body = _KERNEL_SOURCES[name]
        _kernels[name] = cupy.ElementwiseKernel(in_params, out_params, body, f"minigan_{name}",
                                                options=_KERNEL_OPTIONS, preamble=_PREAMBLE)
    return _kernels[name]


# Counter-based random numbers (CuPy): element i of a draw with key k is the i-th output of SplitMix64 started
# at k (Steele, Lea & Flood 2014), i.e. the mix of k + (i+1)·gamma, so a draw needs no generator state on the
# GPU and is reproduced from its key alone; U[0, 1) from the top 24 (float32) or 53 (float64) bits, as NumPy's.
_SPLITMIX_GAMMA, _SPLITMIX_M1, _SPLITMIX_M2 = 0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB
_PREAMBLE = f"""
__device__ unsigned long long minigan_splitmix64(unsigned long long key, unsigned long long i) {{
    unsigned long long z = key + (i + 1ULL) * {_SPLITMIX_GAMMA:#x}ULL;
    z = (z ^ (z >> 30)) * {_SPLITMIX_M1:#x}ULL;
    z = (z ^ (z >> 27)) * {_SPLITMIX_M2:#x}ULL;
    return z ^ (z >> 31);
}}
template <typename F> __device__ F minigan_unit_uniform(unsigned long long key, unsigned long long i) {{
    unsigned long long z = minigan_splitmix64(key, i);
    return sizeof(F) == 4 ? (F)((float)(z >> 40) * 5.9604644775390625e-08f)
                          : (F)((double)(z >> 11) * 1.1102230246251565e-16);
}}
"""
_SIGMOID = "(T)1 / ((T)1 + exp(-{x}))"
_SOFTPLUS = "(({x} > (T)0 || isnan({x})) ? {x} : (T)0) + log1p(exp(-fabs({x})))"

_KERNEL_SOURCES = {
    # terms = t sp(-l) + (1-t) sp(l);  dlogits = scale * (((1-t) sigma(l) - t sigma(-l)) / divisor)
    "bce_logits": (
        "T l, T t, T one_minus_t, T divisor, T scale", "T terms, T dlogits",
        "T sp_neg = " + _SOFTPLUS.format(x="(-l)") + ";\n"
        "T sp_pos = " + _SOFTPLUS.format(x="l") + ";\n"
        "terms = t * sp_neg + one_minus_t * sp_pos;\n"
        "T d = one_minus_t * (" + _SIGMOID.format(x="l") + ") - t * (" + _SIGMOID.format(x="(-l)") + ");\n"
        "d = d / divisor;\n"
        "dlogits = scale * d;"),
    # u = the i-th U[0, 1) number of the draw with this key (Rng.random on CuPy)
    "uniform": ("uint64 key", "T u", "u = minigan_unit_uniform<T>(key, i);"),
    # the "dropout" kernel below on the key's draw, computed in place of reading it: one launch, no u array
    "dropout_draw": (
        "T x, uint64 key, T p, T scale", "T y, T mask",
        "T m = (T)(minigan_unit_uniform<T>(key, i) >= p) * scale;\nmask = m;\ny = x * m;"),
    # mask (in place over the uniform draw u) = [u >= p] * scale;  y = x * mask
    "dropout": (
        "T x, T p, T scale", "T y, T mask",
        "T m = (T)(mask >= p) * scale;\nmask = m;\ny = x * m;"),
    # h[r, u] = max_j z[r, u*P + j]; winner = the first maximal piece (NaN propagates into h, as xp.maximum)
    # z holds XW without the bias b, which is added here when there is one (one rounding, as the unfused
    # z += b): the pass over z that adding it apart would cost is gone.
    "maxout_forward": (
        "raw T z, raw T b, bool has_bias, int32 pieces, int32 units", "T h, W winner",
        "const T* row = &z[i * pieces];\n"
        "const T* bias = &b[has_bias ? (i % units) * pieces : 0];\n"
        "T best = has_bias ? row[0] + bias[0] : row[0];\nW w = 0;\n"
        "for (int j = 1; j < pieces; ++j) {\n"
        "    T v = has_bias ? row[j] + bias[j] : row[j];\n"
        "    bool better = v > best;\n"
        "    if (better) w = (W)j;\n"
        "    if (better || isnan(v)) best = v;\n"
        "}\n"
        "h = best;\nwinner = w;"),
    # dz[r, u*P + j] = dout[r, u] * [winner[r, u] == j]  (a product, as the unfused pass: -0.0 and NaN alike)
    "maxout_backward": (
        "raw T dout, raw W winner, int32 pieces", "T dz",
        "const long k = i / pieces;\nconst int j = (int)(i % pieces);\n"
        "dz = dout[k] * (T)(winner[k] == j);"),
    # y = 1 / (1 + exp(-x))  (overflow of exp gives exactly 0, as the unfused passes)
    "sigmoid": ("T x", "T y", "y = " + _SIGMOID.format(x="x") + ";"),
    # positive = [x > 0];  y = max(x, 0), NaN kept (xp.maximum's), -0.0 becomes +0.0 (as xp.maximum(-0.0, 0))
    "relu_forward": ("T x", "T y, bool positive",
                     "positive = x > (T)0;\ny = (positive || isnan(x)) ? x : (T)0;"),
    # u = U[0, 1) draw of the key * (high - low) + low (two roundings, as the unfused passes)
    "uniform_affine": ("uint64 key, T scale, T shift", "T u",
                       "T v = minigan_unit_uniform<T>(key, i) * scale;\nu = v + shift;"),
    # v = v mu - g lr;  p = p + v
    "sgd_momentum": (
        "T g, T lr, T mu", "T p, T v",
        "T lr_g = g * lr;\nT v_ = v * mu;\nv_ = v_ - lr_g;\nv = v_;\np = p + v_;"),
    # m = m b1 + g (1-b1);  v = v b2 + g g (1-b2);  p = p - (m lr_t) / (sqrt(v) + eps_t)
    "adam": (
        "T g, T b1, T c1, T b2, T c2, T lr_t, T eps_t", "T p, T m, T v",
        "T m_ = m * b1;\nm_ = m_ + g * c1;\n"
        "T gg = g * g;\ngg = gg * c2;\nT v_ = v * b2;\nv_ = v_ + gg;\n"
        "T a = m_ * lr_t;\nT b = sqrt(v_);\nb = b + eps_t;\na = a / b;\n"
        "p = p - a;\nm = m_;\nv = v_;"),
}


def _scalar(like, value):
    """``value`` as a scalar of ``like``'s dtype: what NumPy does to a Python float in ``array * value``."""
    return like.dtype.type(value)


def _sigmoid_passes(xp, x):
    # the four in-place passes derived in minigan.nn.activations.sigmoid (which calls sigmoid below)
    t = xp.negative(x)
    with np.errstate(over="ignore"):
        xp.exp(t, out=t)
    t += 1
    return xp.reciprocal(t, out=t)


def _softplus_passes(xp, x):
    # minigan.losses.softplus
    return xp.maximum(x, 0) + xp.log1p(xp.exp(-xp.abs(x)))


def sigmoid(x):
    r"""The logistic function :math:`1/(1+e^{-x})`, fused: one kernel on CuPy, the four in-place passes of
    :func:`minigan.nn.activations.sigmoid`'s derivation elsewhere (bit-identical to them on NumPy/strict)."""
    if _is_cupy_array(x):
        return _kernel("sigmoid")(x)
    return _sigmoid_passes(get_array_module(x), x)


def relu_forward(x):
    """ReLU's forward, fused: ``(y, positive)`` with ``y = max(x, 0)`` and the mask ``positive = x > 0`` that
    the backward multiplies by. One kernel on CuPy; NumPy/strict: the layer's two passes, bit-identical."""
    if _is_cupy_array(x):
        return _kernel("relu_forward")(x)
    xp = get_array_module(x)
    positive = x > 0
    return xp.maximum(x, 0), positive


def bce_logits(logits, target: float, n: int | float, scale: float = 1.0):
    r"""Binary cross-entropy on logits, fused: the per-row loss terms and the scaled gradient in one pass.

    ``terms`` = :math:`t\,\mathrm{sp}(-\ell) + (1-t)\,\mathrm{sp}(\ell)` (their mean is the loss) and
    ``dlogits`` = :math:`\text{scale}\cdot[(1-t)\sigma(\ell) - t\sigma(-\ell)]/n`, for a Python float target
    ``t`` (1.0 real, 0.0 fake). With ``n`` = N and ``scale`` = 1 these are
    :func:`minigan.losses.bce_with_logits`'s terms and gradient; ``scale`` = 0.5 gives
    :func:`minigan.losses.discriminator_loss`'s halves. NumPy/strict: bit-identical to those functions.

    Called by ``minigan/nn/losses.py``'s ``bce_with_logits`` for a float target, in place of its two ``softplus``
    calls, the two ``sigmoid`` calls and the arithmetic around them (about 20 elementwise passes on CuPy, 2
    here). ``discriminator_loss`` could pass ``scale=0.5`` instead of multiplying afterwards (not done yet).
    """
    xp = get_array_module(logits)
    t = float(target)
    if _is_cupy_array(logits):
        terms, dlogits = _kernel("bce_logits")(logits, _scalar(logits, t), _scalar(logits, 1 - t),
                                               _scalar(logits, n), _scalar(logits, scale))
        return terms, dlogits
    terms = t * _softplus_passes(xp, -logits) + (1 - t) * _softplus_passes(xp, logits)
    dlogits = ((1 - t) * _sigmoid_passes(xp, logits) - t * _sigmoid_passes(xp, -logits)) / n
    dlogits = dlogits.astype(logits.dtype, copy=False)
    return terms, scale * dlogits


def dropout_forward(x, u, p: float, out=None):
    r"""Inverted dropout's training forward, fused: ``u`` (a U[0, 1) draw shaped like ``x``) becomes the mask.

    ``u`` is overwritten in place with :math:`m = [u \ge p]/(1-p)` and :math:`y = x \odot m` is returned with
    it: ``(y, mask)``, ``mask is u``; ``y`` is written into ``out`` when given. NumPy/strict: the three passes of ``Dropout.forward``, bit-identical;
    CuPy: one kernel, exactly the same arithmetic (products by 0 and by the float-rounded scale).

    Called by ``minigan/nn/dropout.py``'s ``Dropout.forward`` for a fresh mask. ``Dropout.backward``
    (``dout * mask``) is one pass already.
    """
    scale = 1 / (1 - p)
    if _is_cupy_array(x):
        y = _import_cupy().empty_like(x) if out is None else out
        _kernel("dropout")(x, _scalar(u, p), _scalar(u, scale), y, u)
        return y, u
    xp = get_array_module(x)
    xp.greater_equal(u, p, out=u)
    u *= scale
    return (x * u if out is None else xp.multiply(x, u, out=out)), u


def dropout_draw(x, rng: Rng, p: float):
    r"""Inverted dropout's training forward with a fresh mask from ``rng``: ``(y, mask)``, the same bits as
    ``dropout_forward(x, rng.random(x.shape, x.dtype, like=x), p)``.

    NumPy (a C-contiguous float array): the draw and :func:`dropout_forward`'s three passes run block by block
    on the block pool (:func:`minigan.parallel.random_fill`, the passes as its ``after``), each block's passes
    reading its fresh draw from the cache. CuPy: one kernel computes the key's draw where it uses it (no array
    of uniforms is written and read back). Elsewhere (strict, other layouts): the draw, then
    :func:`dropout_forward`. Called by ``Dropout.forward``.
    """
    if _is_cupy_array(x) and x.dtype in (np.float32, np.float64):
        cupy = _import_cupy()
        x = cupy.ascontiguousarray(x)  # element i of the draw meets element i of x in C order, as rng.random's
        y, mask = cupy.empty_like(x), cupy.empty_like(x)
        _kernel("dropout_draw")(x, rng.device_key(), _scalar(x, p), _scalar(x, 1 / (1 - p)), y, mask)
        return y, mask
    if type(x) is not np.ndarray or not x.flags.c_contiguous or x.dtype not in (np.float32, np.float64):
        return dropout_forward(x, rng.random(x.shape, x.dtype, like=x), p)
    mask, y = np.empty_like(x), np.empty_like(x)
    flat_mask, flat_x, flat_y = mask.reshape(-1), x.reshape(-1), y.reshape(-1)

    def passes(start: int, stop: int) -> None:
        dropout_forward(flat_x[start:stop], flat_mask[start:stop], p, out=flat_y[start:stop])

    _parallel().random_fill(rng.host, mask, after=passes)
    return y, mask


def _index_type(pieces: int):
    return np.int8 if pieces <= 127 else np.int32


def maxout_forward(z, units: int, pieces: int, bias=None):
    """Maxout's bias and max over pieces, fused: ``(h, winner)`` from ``z + bias``, ``z`` = XW (N, units·pieces).

    Pieces of a unit are adjacent columns (column ``u*pieces + j``). ``h`` (N, units) is the max, ``winner``
    (N, units, int8 for up to 127 pieces) the index of the first maximal piece; a NaN piece makes ``h`` NaN, as
    ``xp.maximum`` does. ``bias`` (units·pieces,), or None for none. NumPy/strict: ``z += bias`` in place, then
    ``Maxout.forward``'s transposing copy and running max, bit-identical (values and winners); CuPy: one kernel
    reading each row's pieces once and adding the bias as it reads (``z`` is left as it was).

    Called by ``minigan/nn/dense.py``'s ``Maxout.forward`` on device arrays.
    """
    n = z.shape[0]
    if z.shape[1] != units * pieces:
        raise ValueError(f"maxout_forward: z has {z.shape[1]} columns, expected units*pieces = {units * pieces}")
    if bias is not None and bias.shape != (units * pieces,):
        raise ValueError(f"maxout_forward: bias has shape {bias.shape}, expected ({units * pieces},)")
    if _is_cupy_array(z):
        cupy = _import_cupy()
        h = cupy.empty((n, units), z.dtype)
        winner = cupy.empty((n, units), _index_type(pieces))
        b = z[0] if bias is None else cupy.ascontiguousarray(bias, z.dtype)  # unread without a bias
        _kernel("maxout_forward")(cupy.ascontiguousarray(z), b, np.bool_(bias is not None), np.int32(pieces),
                                  np.int32(units), h, winner)
        return h, winner
    xp = get_array_module(z)
    if bias is not None:
        z += bias
    z_pieces = xp.empty((pieces, n, units), z.dtype)
    xp.copyto(z_pieces, z.reshape(n, units, pieces).transpose(2, 0, 1))
    h = z_pieces[0].copy()
    index_type = _index_type(pieces)
    winner = xp.zeros((n, units), index_type)
    better = xp.empty((n, units), np.bool_)
    candidate = xp.empty((n, units), index_type)
    for j in range(1, pieces):
        xp.greater(z_pieces[j], h, out=better)
        xp.multiply(better, j, out=candidate)
        xp.maximum(winner, candidate, out=winner)
        xp.maximum(h, z_pieces[j], out=h)
    return h, winner


def maxout_backward(dout, winner, pieces: int):
    """Maxout's gradient into Z, fused: ``dz`` (N, units·pieces) with ``dz[:, u*P + j] = dout[:, u] * [winner == j]``.

    NumPy/strict: ``Maxout.backward``'s masked product per piece, bit-identical (a product, so a negative
    gradient times 0 is -0.0 in both); CuPy: one kernel over dz.

    Called by ``minigan/nn/dense.py``'s ``Maxout.backward`` on device arrays.
    """
    n, units = dout.shape
    if _is_cupy_array(dout):
        cupy = _import_cupy()
        dz = cupy.empty((n, units * pieces), dout.dtype)
        _kernel("maxout_backward")(cupy.ascontiguousarray(dout), cupy.ascontiguousarray(winner),
                                   np.int32(pieces), dz)
        return dz
    xp = get_array_module(dout)
    dz = xp.empty((n, units * pieces), dout.dtype)
    dz_pieces = dz.reshape(n, units, pieces)
    is_winner = xp.empty((n, units), np.bool_)
    for j in range(pieces):
        xp.equal(winner, j, out=is_winner)
        xp.multiply(dout, is_winner, out=dz_pieces[:, :, j])
    return dz


_ones_rows: dict = {}


def column_sum(a, out):
    """``out[j] = sum_i a[i, j]``: a bias gradient, the sum of a 2-D upstream gradient over the batch.

    NumPy/strict: ``a.sum(axis=0, out=out)``, unchanged (NumPy's pairwise sum, the CPU's published bits). CuPy:
    one matrix product ``1ᵀ a`` against a cached row of ones: cuBLAS reads ``a`` once at memory speed, where
    CuPy's reduction over the leading axis took 1.6 ms of an 11.1 ms CGAN iteration at batch 8192 on an H200
    (7 calls; benchmarks/step_profile.py --view kernels). Called by ``Linear.backward``.
    """
    if not _is_cupy_array(a):
        a.sum(axis=0, out=out)
        return out
    cupy = _import_cupy()
    n = a.shape[0]
    key = (a.dtype.str, a.device.id)
    ones = _ones_rows.get(key)
    if ones is None or ones.shape[1] < n:
        ones = _ones_rows[key] = cupy.ones((1, max(n, 1)), a.dtype)
    if out.flags.c_contiguous:
        cupy.matmul(ones[:, :n], a, out=out.reshape(1, -1))  # a view: the product lands in out
    else:
        out[...] = (ones[:, :n] @ a).reshape(out.shape)
    return out


def lane_arrays(work: dict | None, lane: int, like, count: int) -> list:
    """``count`` scratch arrays shaped like ``like`` for one worker ``lane`` of :func:`minigan.parallel.blockwise`.

    ``work`` is a dict the caller keeps between calls (an optimizer's): each lane's buffers are reused while the
    blocks fit them (reallocated for a larger block, another dtype or backend), so a steady update allocates
    nothing. ``None``: fresh arrays.
    """
    xp = get_array_module(like)
    if work is None:
        return [xp.empty_like(like) for _ in range(count)]
    buffers = work.get(lane)
    if (buffers is None or len(buffers) < count or buffers[0].size < like.size or buffers[0].dtype != like.dtype
            or get_array_module(buffers[0]) is not xp):
        buffers = work[lane] = [xp.empty(like.size, like.dtype) for _ in range(count)]
    return [b[:like.size].reshape(like.shape) for b in buffers[:count]]


def _parallel():
    from . import parallel  # parallel imports this module

    return parallel


def _blockwise(fn, *arrays) -> list:
    return _parallel().blockwise(fn, *arrays)


def sgd_momentum_update(p, g, v, lr: float, momentum: float, work: dict | None = None) -> None:
    r"""Classical momentum in place, fused: :math:`v \leftarrow \mu v - \eta g`, :math:`p \leftarrow p + v`.

    NumPy/strict: three passes per cache block (:func:`cache_blocks`), the blocks shared among the block pool's
    workers (:func:`minigan.parallel.blockwise`), with ``work`` holding each worker's scratch
    (:func:`lane_arrays`); CuPy: one kernel writing ``p`` and ``v``. Called by ``SGD._update``.
    """
    if _is_cupy_array(p):
        _kernel("sgd_momentum")(g, _scalar(p, lr), _scalar(p, momentum), p, v)
        return
    xp = get_array_module(p)

    def block(lane, p_, g_, v_):
        lr_g, = lane_arrays(work, lane, p_, 1)
        xp.multiply(g_, lr, out=lr_g)
        v_ *= momentum
        v_ -= lr_g
        p_ += v_

    _blockwise(block, p, g, v)


# Multi-tensor updates (CuPy): one launch updates every tensor of a network. The GPU iteration at small batches
# is bound by the host issuing kernels (~25 µs each on the H200 machine; benchmarks/RESULTS.md), and one kernel
# per parameter tensor was 16 of the CGAN's launches. Block row y of the grid updates tensor y, reading its
# arrays' addresses and size from a table in device memory; each element's arithmetic is the per-tensor
# kernel's, term by term, compiled the same way (no FMA contraction), so the bits are the same.
_MULTI_TENSOR_BODIES = {
    # arrays p, g, v; scalars lr, mu  (the "sgd_momentum" kernel's body)
    "sgd_momentum": (("p", "g", "v"), ("lr", "mu"),
                     "T lr_g = g[j] * lr; T v_ = v[j] * mu; v_ = v_ - lr_g; v[j] = v_; p[j] = p[j] + v_;"),
    # arrays p, g, m, v; scalars b1, c1, b2, c2, lr_t, eps_t  (the "adam" kernel's body)
    "adam": (("p", "g", "m", "v"), ("b1", "c1", "b2", "c2", "lr_t", "eps_t"),
             "T gj = g[j]; T m_ = m[j] * b1; m_ = m_ + gj * c1; T gg = gj * gj; gg = gg * c2; T v_ = v[j] * b2; "
             "v_ = v_ + gg; T a = m_ * lr_t; T b = sqrt(v_); b = b + eps_t; a = a / b; p[j] = p[j] - a; "
             "m[j] = m_; v[j] = v_;"),
}
_multi_tensor_kernels: dict = {}
_multi_tensor_tables: dict = {}


def _multi_tensor_source(name: str, ctype: str) -> str:
    arrays, scalars, body = _MULTI_TENSOR_BODIES[name]
    unpack = "".join(f"    T* {a} = (T*)table[{k} * n + t];\n" for k, a in enumerate(arrays))
    return (f"typedef {ctype} T;\n"
            f'extern "C" __global__ void minigan_{name}_many(const unsigned long long* table, int n, '
            + ", ".join(f"T {x}" for x in scalars) + ") {\n"
            "    const int t = blockIdx.y;\n" + unpack +
            f"    const long long size = (long long)table[{len(arrays)} * n + t];\n"
            "    for (long long j = blockIdx.x * (long long)blockDim.x + threadIdx.x; j < size;\n"
            "         j += (long long)gridDim.x * blockDim.x) {\n"
            f"        {body}\n"
            "    }\n}\n")


def _multi_tensor_update(name: str, arrays: list[list], scalars: tuple) -> None:
    """Launch the ``name`` update once over tensors ``arrays[k][t]`` (array k of tensor t), CuPy only."""
    cupy = _import_cupy()
    dtype = arrays[0][0].dtype
    key = (name, dtype.str)
    if key not in _multi_tensor_kernels:
        source = _multi_tensor_source(name, {"float32": "float", "float64": "double"}[dtype.name])
        _multi_tensor_kernels[key] = cupy.RawKernel(source, f"minigan_{name}_many", options=_KERNEL_OPTIONS)
    n = len(arrays[0])
    addresses = tuple(a.data.ptr for column in arrays for a in column) + tuple(a.size for a in arrays[0])
    table = _multi_tensor_tables.get(addresses)
    if table is None:  # the arrays are persistent (parameters, gradients, optimizer state): built once
        table = _multi_tensor_tables[addresses] = cupy.asarray(np.array(addresses, np.uint64))
    block = 256
    grid = (min(-(-max(addresses[-n:]) // block), 4096), n)
    _multi_tensor_kernels[key](grid, (block,), (table, np.int32(n), *(dtype.type(x) for x in scalars)))


def _multi_tensor_ready(*columns: list) -> bool:
    """True when ``columns`` (lists of arrays, one per tensor) can take one multi-tensor launch: CuPy arrays,
    C-contiguous, of one float dtype."""
    first = columns[0]
    if not first or not _is_cupy_array(first[0]) or first[0].dtype not in (np.float32, np.float64):
        return False
    return all(_is_cupy_array(a) and a.dtype == first[0].dtype and a.flags.c_contiguous
               for column in columns for a in column)


def sgd_momentum_update_many(ps: list, gs: list, vs: list, lr: float, momentum: float,
                             work: dict | None = None) -> None:
    """:func:`sgd_momentum_update` on every ``(ps[i], gs[i], vs[i])``: one kernel for all on CuPy, the same bits
    as one kernel per tensor; elsewhere the per-tensor updates in turn. Called by ``SGD.step``."""
    if _multi_tensor_ready(ps, gs, vs):
        _multi_tensor_update("sgd_momentum", [ps, gs, vs], (lr, momentum))
        return
    for p, g, v in zip(ps, gs, vs):
        sgd_momentum_update(p, g, v, lr, momentum, work)


def adam_update_many(ps: list, gs: list, ms: list, vs: list, beta1: float, beta2: float, lr_t: float, eps_t: float,
                     work: dict | None = None) -> None:
    """:func:`adam_update` on every tensor with one (host) ``lr_t``: one kernel for all on CuPy, the same bits as
    one kernel per tensor; elsewhere the per-tensor updates in turn. Called by ``Adam.step`` without a clip."""
    if _multi_tensor_ready(ps, gs, ms, vs):
        _multi_tensor_update("adam", [ps, gs, ms, vs], (beta1, 1 - beta1, beta2, 1 - beta2, lr_t, eps_t))
        return
    for p, g, m, v in zip(ps, gs, ms, vs):
        adam_update(p, g, m, v, beta1, beta2, lr_t, eps_t, work)


def adam_clip_scale(g, v, beta2: float, bias2: float, eps: float, clip: float, work: dict | None = None):
    r"""StableAdamW's factor :math:`\min(1, c/r)` for one tensor's Adam step, with
    :math:`r = \sqrt{\operatorname{mean}(g^2/\hat u)}` and :math:`\hat u = (\beta_2 v + (1-\beta_2) g^2)/b_2`
    the second moment Adam is about to divide by (``bias2`` = :math:`1-\beta_2^t`), floored at :math:`\epsilon^2`.

    :math:`r` is near 1 while the second moment keeps up with the gradients, and far above 1 when a gradient
    dwarfs the ones before it (up to :math:`1/\sqrt{1-\beta_2}`), which is when Adam's step would spike
    (:class:`minigan.nn.optim.Adam`'s ``update_clip``). Read before :func:`adam_update` changes ``v``.

    NumPy: per cache block on the block pool, the blocks' float64 sums added in block order (the same bits for
    every worker count), a Python float back. Device arrays (CuPy, strict): array expressions, and the factor
    stays a 0-d array of ``g``'s dtype on the device, so the step needs no read-back.
    """
    xp = get_array_module(g)
    floor = eps * eps
    if is_device_array(g):
        u = (v * beta2 + (g * g) * (1 - beta2)) / bias2
        r = xp.sqrt(xp.mean((g * g) / xp.maximum(u, floor), dtype=xp.float64))
        return xp.minimum(1.0, clip / r).astype(g.dtype)

    def block(lane, g_, v_):
        gg, u, t = lane_arrays(work, lane, g_, 3)
        xp.multiply(g_, g_, out=gg)
        xp.multiply(v_, beta2, out=u)
        u += xp.multiply(gg, 1 - beta2, out=t)
        u /= bias2
        xp.maximum(u, floor, out=u)
        gg /= u
        return float(gg.sum(dtype=xp.float64))

    r = math.sqrt(math.fsum(_blockwise(block, g, v)) / max(g.size, 1))
    return 1.0 if r <= clip else clip / r


def adam_update(p, g, m, v, beta1: float, beta2: float, lr_t: float, eps_t: float, work: dict | None = None) -> None:
    r"""Adam in place, fused: :math:`m \leftarrow \beta_1 m + (1-\beta_1)g`, :math:`v \leftarrow \beta_2 v +
    (1-\beta_2)g^2`, :math:`p \leftarrow p - \eta_t m/(\sqrt v + \epsilon_t)`.

    ``lr_t`` and ``eps_t`` carry the bias corrections (``Adam.step`` computes them); ``lr_t`` may be a 0-d device
    array (a clipped step's, :func:`adam_clip_scale`). NumPy/strict: nine passes
    per cache block, the blocks shared among the block pool's workers, ``work`` holding each worker's two scratch
    arrays (:func:`lane_arrays`); CuPy: one kernel writing ``p``, ``m`` and ``v`` (the same operations in the
    same order, no FMA). Called by ``Adam._update``.
    """
    if _is_cupy_array(p):
        s = lambda value: _scalar(p, value)  # noqa: E731
        lr = lr_t.astype(p.dtype) if is_device_array(lr_t) else s(lr_t)  # a 0-d array broadcasts in the kernel
        _kernel("adam")(g, s(beta1), s(1 - beta1), s(beta2), s(1 - beta2), lr, s(eps_t), p, m, v)
        return
    xp = get_array_module(p)

    def block(lane, p_, g_, m_, v_):
        a, b = lane_arrays(work, lane, p_, 2)
        m_ *= beta1
        m_ += xp.multiply(g_, 1 - beta1, out=a)
        v_ *= beta2
        xp.multiply(g_, g_, out=a)
        a *= 1 - beta2
        v_ += a
        xp.multiply(m_, lr_t, out=a)  # lr_t * m
        xp.sqrt(v_, out=b)
        b += eps_t                    # sqrt(v) + eps_t
        a /= b
        p_ -= a

    _blockwise(block, p, g, m, v)
