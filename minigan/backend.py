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

import contextlib
import numbers
import os
import threading
import types
from concurrent.futures import ThreadPoolExecutor
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
    "cores",
    "set_threads",
    "using_threads",
    "threads_info",
    "pool_threads",
    "set_pool_threads",
    "shutdown_pool",
    "map_rows",
    "map_cache_blocks",
    "bce_logits",
    "dropout_forward",
    "maxout_forward",
    "maxout_backward",
    "sgd_momentum_update",
    "adam_update",
    "sgd_update",
    "ema_update",
    "multiply",
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


# --------------------------------------------------------------------------------------------------
# Threads: BLAS and the elementwise pool
# --------------------------------------------------------------------------------------------------
#
# Matrix products run on BLAS's own threads. Everything else in a training step (activations, dropout,
# maxout, optimizer and weight-average updates) is NumPy ufuncs, which release the GIL while they loop, so
# row blocks of one pass can run on several threads at once. The pool below is that: ``pool_threads() - 1``
# persistent worker threads plus the calling thread, each running the *same* passes on its own rows.
#
# Bit-identity: a block runs exactly the ufunc calls the whole array would get, on a slice of it, so every
# element sees the same operations in the same order and rounds the same way. Results therefore do not depend
# on the number of threads nor on where the blocks are cut (tests/test_pool.py checks this for every pass,
# over shapes that do not divide evenly, strided inputs, float32 and float64). Random draws and reductions
# are never split: a dropout mask is still one draw from its generator, a sum is still one NumPy call.
#
# On CuPy the pool is bypassed (one call on the whole array: the GPU parallelises each kernel itself). The
# strict backend uses it like NumPy, so its checks see the blocked code.

#: Smallest number of elements a block of a pass gets: below it a hand-off to a worker thread (tens of
#: microseconds) costs more than the pass saves. Passes over fewer than twice this run on the calling thread.
MIN_BLOCK_ELEMENTS = 32768

_pool_size: int | None = None  # None: not yet decided (MINIGAN_THREADS, else every core)
_executor: ThreadPoolExecutor | None = None
_executor_size = 0
_pool_lock = threading.Lock()
_local = threading.local()  # .inside: this thread is running a block (nested calls run inline)


def cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS tells it, else the machine's count)."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except (AttributeError, OSError):
        return max(os.cpu_count() or 1, 1)


def _check_count(n: Any, what: str) -> int:
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise ValueError(f"{what} must be a positive integer, got {n!r}")
    return int(n)


def pool_threads() -> int:
    """Threads the elementwise passes use (1: all on the calling thread). Default: ``MINIGAN_THREADS``, else every core."""
    global _pool_size
    if _pool_size is None:
        text = os.environ.get("MINIGAN_THREADS", "").strip()
        _pool_size = _check_count(int(text), "MINIGAN_THREADS") if text.isdigit() else cores()
    return _pool_size


def set_pool_threads(n: int) -> int:
    """Set the pool's thread count (1 turns it off); return the previous count. BLAS is left alone."""
    global _pool_size
    n = _check_count(n, "the number of threads")
    previous = pool_threads()
    _pool_size = n
    return previous


def shutdown_pool() -> None:
    """Stop the pool's worker threads (they are started again, lazily, by the next pass that wants them)."""
    global _executor, _executor_size
    with _pool_lock:
        executor, _executor, _executor_size = _executor, None, 0
    if executor is not None:
        executor.shutdown(wait=True)


def _forget_pool_after_fork() -> None:
    # A forked child has the executor object but none of its threads: start a fresh one when needed.
    global _executor, _executor_size
    _executor, _executor_size = None, 0


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool_after_fork)


def _workers(n: int) -> ThreadPoolExecutor:
    """An executor with at least ``n`` worker threads (persistent; grown by replacing it)."""
    global _executor, _executor_size
    with _pool_lock:
        if _executor is None or _executor_size < n:
            old = _executor
            _executor = ThreadPoolExecutor(max_workers=n, thread_name_prefix="minigan-pool")
            _executor_size = n
            if old is not None:
                old.shutdown(wait=False)
        return _executor


def _run_block(fn, start, stop, errors=None):
    # errors: the caller's np.errstate, which is context-local (a worker thread would otherwise use the default)
    _local.inside = True
    try:
        if errors is None:
            return fn(start, stop)
        with np.errstate(**errors):
            return fn(start, stop)
    finally:
        _local.inside = False


def _thread_work(xp, key: str, like, shape=None):
    """A scratch array of this thread (and ``key``) shaped like ``like`` (or ``shape``), reused across calls."""
    store = _local.__dict__.setdefault("work", {})
    shape = like.shape if shape is None else shape
    size = int(np.prod(shape))
    ident = (key, getattr(xp, "__name__", ""), like.dtype)
    buf = store.get(ident)
    if buf is None or buf.size < size:
        buf = store[ident] = xp.empty(max(size, 1), like.dtype)
    return buf[:size].reshape(shape)


def _parallel(fn: Callable[[int, int], Any], n_items: int, min_items: int) -> None:
    """Call ``fn(start, stop)`` over contiguous parts of ``range(n_items)``, at most one per pool thread, each
    at least ``min_items`` long; the calling thread runs the last part. Every part is done when this returns
    (an exception in any part is raised here, after all parts have finished)."""
    parts = min(pool_threads(), n_items // max(min_items, 1))
    if parts < 2 or getattr(_local, "inside", False):
        fn(0, n_items)
        return
    bounds = [n_items * i // parts for i in range(parts + 1)]
    executor = _workers(parts - 1)
    errors = np.geterr()
    futures = [executor.submit(_run_block, fn, bounds[i], bounds[i + 1], errors) for i in range(parts - 1)]
    error = None
    try:
        _run_block(fn, bounds[-2], bounds[-1])
    except BaseException as exc:  # noqa: BLE001 -- re-raised below, once the workers are done with the arrays
        error = exc
    for future in futures:
        try:
            future.result()
        except BaseException as exc:  # noqa: BLE001
            error = error or exc
    if error is not None:
        raise error


def map_rows(fn: Callable[..., Any], *arrays: Any, min_elements: int | None = None) -> None:
    """Run ``fn(*blocks)`` on row blocks of ``arrays`` (all with the same first dimension), on the pool.

    ``fn`` must be elementwise along the first axis: what it writes into row ``i`` of its output blocks may depend
    only on row ``i`` of its input blocks. Then the result is bit-identical to ``fn(*arrays)``, which is what runs
    on CuPy, for small arrays, and with one thread. ``None`` entries are passed through as ``None``.
    """
    first = next(a for a in arrays if a is not None)
    if _is_cupy_array(first) or first.ndim == 0 or pool_threads() < 2:
        fn(*arrays)
        return
    rows = first.shape[0]
    per_row = max(first.size // max(rows, 1), 1)
    min_rows = -(-(MIN_BLOCK_ELEMENTS if min_elements is None else min_elements) // per_row)
    _parallel(lambda a, b: fn(*(None if x is None else x[a:b] for x in arrays)), rows, min_rows)


def map_cache_blocks(fn: Callable[..., Any], *arrays: Any) -> None:
    """Run ``fn(*blocks)`` over :func:`cache_blocks` of ``arrays``, the blocks shared out among the pool's threads.

    Each thread takes a contiguous run of blocks; ``fn`` must be elementwise (an in-place update), so the result
    is bit-identical to ``for blocks in cache_blocks(*arrays): fn(*blocks)`` at any thread count.
    """
    first = arrays[0]
    if (_is_cupy_array(first) or first.size <= CPU_BLOCK_ELEMENTS or pool_threads() < 2
            or not all(a.flags.c_contiguous for a in arrays)):
        for blocks in cache_blocks(*arrays):
            fn(*blocks)
        return
    views = [a.reshape(-1) for a in arrays]
    size = first.size
    n_blocks = -(-size // CPU_BLOCK_ELEMENTS)

    def run(a, b):
        for i in range(a, b):
            start = i * CPU_BLOCK_ELEMENTS
            fn(*(v[start:start + CPU_BLOCK_ELEMENTS] for v in views))

    _parallel(run, n_blocks, 1)


def _blas_threads() -> int | None:
    """numpy's BLAS thread count as threadpoolctl reads it; None without threadpoolctl."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    counts = [i["num_threads"] for i in threadpool_info() if i.get("user_api") == "blas"]
    return int(max(counts)) if counts else None


_BLAS_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def set_threads(n: int | None = None) -> dict:
    """Use ``n`` threads (None: every core) for both BLAS and the elementwise pool; return :func:`threads_info`.

    BLAS is set through threadpoolctl when it is installed (in this process, at once). Without it the BLAS
    variables are set for child processes, and this process's BLAS keeps the count it read when NumPy loaded
    (``python -m minigan train --threads N`` sets the variables before NumPy loads; ``threads_info()["blas"]``
    is then None: unknown).
    """
    n = cores() if n is None else _check_count(n, "the number of threads")
    set_pool_threads(n)
    for var in _BLAS_VARIABLES:
        os.environ[var] = str(n)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return threads_info()
    threadpool_limits(n, user_api="blas")  # in force until changed again (the object need not be kept)
    return threads_info()


def threads_info() -> dict:
    """``{"pool": elementwise pool threads, "blas": BLAS threads (None: unknown, no threadpoolctl)}``."""
    return {"pool": pool_threads(), "blas": _blas_threads()}


@contextlib.contextmanager
def using_threads(n: int | None = None):
    """:func:`set_threads` for the duration of a ``with`` block; the previous counts (and variables) come back."""
    previous_pool = pool_threads()
    previous_env = {var: os.environ.get(var) for var in _BLAS_VARIABLES}
    previous_blas = _blas_threads()
    try:
        yield set_threads(n)
    finally:
        set_pool_threads(previous_pool)
        for var, value in previous_env.items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value
        if previous_blas is not None:
            from threadpoolctl import threadpool_limits
            threadpool_limits(previous_blas, user_api="blas")


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
# On the CPU the passes run on row blocks (or cache blocks) spread over the thread pool above: the same
# passes on each block, so the result is the same bit for bit at any thread count. Each docstring names the
# call site that uses it.

_KERNEL_OPTIONS = ("--fmad=false",)
_kernels: dict = {}


def _kernel(name: str):
    """The CuPy ElementwiseKernel ``name`` (compiled on first use; CuPy caches the binary on disk)."""
    if name not in _kernels:
        cupy = _import_cupy()
        in_params, out_params, body = _KERNEL_SOURCES[name]
        _kernels[name] = cupy.ElementwiseKernel(in_params, out_params, body, f"minigan_{name}",
                                                options=_KERNEL_OPTIONS)
    return _kernels[name]


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
    # mask (in place over the uniform draw u) = [u >= p] * scale;  y = x * mask
    "dropout": (
        "T x, T p, T scale", "T y, T mask",
        "T m = (T)(mask >= p) * scale;\nmask = m;\ny = x * m;"),
    # h[r, u] = max_j z[r, u*P + j]; winner = the first maximal piece (NaN propagates into h, as xp.maximum)
    "maxout_forward": (
        "raw T z, int32 pieces", "T h, W winner",
        "const T* row = &z[i * pieces];\n"
        "T best = row[0];\nW w = 0;\n"
        "for (int j = 1; j < pieces; ++j) {\n"
        "    T v = row[j];\n"
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
    # minigan.nn.activations.sigmoid's four passes (repeated here: the backend imports no layer code)
    t = xp.negative(x)
    with np.errstate(over="ignore"):
        xp.exp(t, out=t)
    t += 1
    return xp.reciprocal(t, out=t)


def _softplus_passes(xp, x):
    # minigan.losses.softplus
    return xp.maximum(x, 0) + xp.log1p(xp.exp(-xp.abs(x)))


def bce_logits(logits, target: float, n: int | float, scale: float = 1.0):
    r"""Binary cross-entropy on logits, fused: the per-row loss terms and the scaled gradient in one pass.

    ``terms`` = :math:`t\,\mathrm{sp}(-\ell) + (1-t)\,\mathrm{sp}(\ell)` (their mean is the loss) and
    ``dlogits`` = :math:`\text{scale}\cdot[(1-t)\sigma(\ell) - t\sigma(-\ell)]/n`, for a Python float target
    ``t`` (1.0 real, 0.0 fake). With ``n`` = N and ``scale`` = 1 these are
    :func:`minigan.losses.bce_with_logits`'s terms and gradient; ``scale`` = 0.5 gives
    :func:`minigan.losses.discriminator_loss`'s halves. NumPy/strict: bit-identical to those functions.

    Meant for: ``minigan/nn/losses.py``, ``bce_with_logits`` (its two ``softplus`` calls, the two ``sigmoid``
    calls and the arithmetic around them: about 20 elementwise passes on CuPy, 2 here), with
    ``discriminator_loss`` passing ``scale=0.5`` instead of multiplying afterwards.
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
    return terms, (dlogits if scale == 1 else scale * dlogits)


def dropout_forward(x, u, p: float):
    r"""Inverted dropout's training forward, fused: ``u`` (a U[0, 1) draw shaped like ``x``) becomes the mask.

    ``u`` is overwritten in place with :math:`m = [u \ge p]/(1-p)` and :math:`y = x \odot m` is returned with
    it: ``(y, mask)``, ``mask is u``. NumPy/strict: the three passes of ``Dropout.forward``, bit-identical;
    CuPy: one kernel, exactly the same arithmetic (products by 0 and by the float-rounded scale).

    Used by ``minigan/nn/dropout.py``, ``Dropout.forward``, for a fresh mask (the draw stays one call of the layer's
    generator, so the mask does not depend on the thread count); ``Dropout.backward`` is :func:`multiply`.
    """
    scale = 1 / (1 - p)
    if _is_cupy_array(x):
        y = _import_cupy().empty_like(x)
        _kernel("dropout")(x, _scalar(u, p), _scalar(u, scale), y, u)
        return y, u
    xp = get_array_module(x)
    y = xp.empty(x.shape, xp.result_type(x, u))

    def block(x_, u_, y_):
        xp.greater_equal(u_, p, out=u_)  # [u >= p] as 1.0 / 0.0, in place: no bool temporary
        u_ *= scale
        xp.multiply(x_, u_, out=y_)

    map_rows(block, x, u, y)
    return y, u


def multiply(a, b):
    """``a * b`` for two arrays of one shape (a gradient times a mask or a derivative), on the pool's threads."""
    xp = get_array_module(a, b)
    if _is_cupy_array(a) or a.shape != b.shape:
        return a * b
    out = xp.empty(a.shape, xp.result_type(a, b))
    map_rows(lambda a_, b_, o_: xp.multiply(a_, b_, out=o_), a, b, out)
    return out


def _index_type(pieces: int):
    return np.int8 if pieces <= 127 else np.int32


def maxout_forward(z, units: int, pieces: int, buffer: Callable | None = None):
    """Maxout's max over pieces, fused: ``(h, winner)`` from ``z`` = XW + b shaped (N, units·pieces).

    Pieces of a unit are adjacent columns (column ``u*pieces + j``). ``h`` (N, units) is the max, ``winner``
    (N, units, int8 for up to 127 pieces) the index of the first maximal piece; a NaN piece makes ``h`` NaN, as
    ``xp.maximum`` does. NumPy/strict: ``Maxout.forward``'s transposing copy and running max, bit-identical
    (values and winners); CuPy: one kernel reading each row's pieces once.

    ``buffer(key, shape, dtype)``, if given, supplies the work arrays (and ``winner``) instead of fresh ones (the
    layer passes its reused scratch buffers). On the CPU, row blocks run on the thread pool.

    Used by ``minigan/nn/dense.py``, ``Maxout.forward``, after ``z = XW + b``.
    """
    n = z.shape[0]
    if z.shape[1] != units * pieces:
        raise ValueError(f"maxout_forward: z has {z.shape[1]} columns, expected units*pieces = {units * pieces}")
    if _is_cupy_array(z):
        cupy = _import_cupy()
        h = cupy.empty((n, units), z.dtype)
        winner = cupy.empty((n, units), _index_type(pieces))
        _kernel("maxout_forward")(cupy.ascontiguousarray(z), np.int32(pieces), h, winner)
        return h, winner
    # One transposing copy first makes each piece a contiguous (N, units) slice: the running maximum then takes
    # P-1 contiguous passes. The winner is tracked as max(winner, j * [piece j > running max]): a later piece wins
    # only if strictly greater, so ties keep the first maximal piece, and j exceeds every earlier winner.
    xp = get_array_module(z)
    get = (lambda key, shape, dtype: buffer(key, shape, dtype)) if buffer is not None else \
        (lambda key, shape, dtype: xp.empty(shape, dtype))
    index_type = _index_type(pieces)
    z_pieces = get("z_pieces", (pieces, n, units), z.dtype)
    h = xp.empty((n, units), z.dtype)  # returned: always a fresh array
    winner = get("winner", (n, units), index_type)
    better = get("mask", (n, units), np.bool_)
    candidate = get("candidate", (n, units), index_type)

    def block(z_, zp_rows, h_, winner_, better_, candidate_):
        zp = zp_rows.transpose(1, 0, 2)  # this block's rows of z_pieces: (pieces, rows, units)
        xp.copyto(zp, z_.reshape(z_.shape[0], units, pieces).transpose(2, 0, 1))
        xp.copyto(h_, zp[0])
        winner_.fill(0)
        for j in range(1, pieces):
            xp.greater(zp[j], h_, out=better_)
            xp.multiply(better_, j, out=candidate_)
            xp.maximum(winner_, candidate_, out=winner_)
            xp.maximum(h_, zp[j], out=h_)

    map_rows(block, z, z_pieces.transpose(1, 0, 2), h, winner, better, candidate)
    return h, winner


def maxout_backward(dout, winner, pieces: int, buffer: Callable | None = None):
    """Maxout's gradient into Z, fused: ``dz`` (N, units·pieces) with ``dz[:, u*P + j] = dout[:, u] * [winner == j]``.

    NumPy/strict: ``Maxout.backward``'s masked product per piece, bit-identical (a product, so a negative
    gradient times 0 is -0.0 in both); CuPy: one kernel over dz.

    ``buffer`` as in :func:`maxout_forward` (``dz`` itself comes from it too: the layer never returns it).
    Used by ``minigan/nn/dense.py``, ``Maxout.backward``, before ``Linear``'s backward.
    """
    n, units = dout.shape
    if _is_cupy_array(dout):
        cupy = _import_cupy()
        dz = cupy.empty((n, units * pieces), dout.dtype)
        _kernel("maxout_backward")(cupy.ascontiguousarray(dout), cupy.ascontiguousarray(winner),
                                   np.int32(pieces), dz)
        return dz
    xp = get_array_module(dout)
    get = (lambda key, shape, dtype: buffer(key, shape, dtype)) if buffer is not None else \
        (lambda key, shape, dtype: xp.empty(shape, dtype))
    dz = get("dz", (n, units * pieces), dout.dtype)
    is_winner = get("mask", (n, units), np.bool_)

    def block(dout_, winner_, dz_, is_winner_):
        dz_pieces = dz_.reshape(dz_.shape[0], units, pieces)
        for j in range(pieces):
            xp.equal(winner_, j, out=is_winner_)
            xp.multiply(dout_, is_winner_, out=dz_pieces[:, :, j])

    map_rows(block, dout, winner, dz, is_winner)
    return dz


def sgd_momentum_update(p, g, v, lr: float, momentum: float) -> None:
    r"""Classical momentum in place, fused: :math:`v \leftarrow \mu v - \eta g`, :math:`p \leftarrow p + v`.

    NumPy/strict: the passes cache block by cache block (:func:`cache_blocks`), the blocks shared among the pool's
    threads (:func:`map_cache_blocks`), each with its own reused scratch block; CuPy: one kernel writing ``p`` and
    ``v``.

    Used by ``minigan/nn/optim.py``, ``SGD._update`` (momentum > 0).
    """
    if _is_cupy_array(p):
        _kernel("sgd_momentum")(g, _scalar(p, lr), _scalar(p, momentum), p, v)
        return
    xp = get_array_module(p)

    def block(p_, g_, v_):
        lr_g = xp.multiply(g_, lr, out=_thread_work(xp, "a", g_))
        v_ *= momentum
        v_ -= lr_g
        p_ += v_

    map_cache_blocks(block, p, g, v)


def sgd_update(p, g, lr: float) -> None:
    r"""Plain SGD in place: :math:`p \leftarrow p - \eta g` (``SGD._update`` without momentum), blocked as
    :func:`sgd_momentum_update`."""
    xp = get_array_module(p)
    if _is_cupy_array(p):
        p -= xp.multiply(g, lr)
        return
    map_cache_blocks(lambda p_, g_: xp.subtract(p_, xp.multiply(g_, lr, out=_thread_work(xp, "a", g_)), out=p_),
                     p, g)


def ema_update(s, p, beta: float) -> None:
    r"""A moving average in place: :math:`s \leftarrow \beta s + (1-\beta) p` (``WeightAverage.update``),
    blocked as :func:`sgd_momentum_update`; on CuPy the two passes."""
    xp = get_array_module(s)
    if _is_cupy_array(s):
        s *= beta
        s += xp.multiply(p, 1 - beta)
        return

    def block(s_, p_):
        s_ *= beta
        s_ += xp.multiply(p_, 1 - beta, out=_thread_work(xp, "a", p_))

    map_cache_blocks(block, s, p)


def adam_update(p, g, m, v, beta1: float, beta2: float, lr_t: float, eps_t: float) -> None:
    r"""Adam in place, fused: :math:`m \leftarrow \beta_1 m + (1-\beta_1)g`, :math:`v \leftarrow \beta_2 v +
    (1-\beta_2)g^2`, :math:`p \leftarrow p - \eta_t m/(\sqrt v + \epsilon_t)`.

    ``lr_t`` and ``eps_t`` carry the bias corrections (``Adam.step`` computes them). NumPy/strict:
    ``Adam._update``'s nine passes, cache block by cache block, bit-identical; CuPy: one kernel writing ``p``,
    ``m`` and ``v`` (the same operations in the same order, no FMA).

    Used by ``minigan/nn/optim.py``, ``Adam._update``, blocked and threaded as :func:`sgd_momentum_update`.
    """
    if _is_cupy_array(p):
        s = lambda value: _scalar(p, value)  # noqa: E731
        _kernel("adam")(g, s(beta1), s(1 - beta1), s(beta2), s(1 - beta2), s(lr_t), s(eps_t), p, m, v)
        return
    xp = get_array_module(p)

    def block(p_, g_, m_, v_):
        a, b = _thread_work(xp, "a", p_), _thread_work(xp, "b", p_)
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

    map_cache_blocks(block, p, g, m, v)
