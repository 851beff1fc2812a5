"""The strict backend: a CPU array with device-array manners (see :mod:`minigan.backend`).

:class:`StrictArray` wraps a NumPy array and turns what would fail or synchronise on CuPy (host conversion,
mixing host and device arrays, pulling out a Python scalar) into a :class:`StrictBackendError`, so the test
suite catches CuPy-only faults on machines without a GPU. ``strict_xp`` is its namespace."""

from __future__ import annotations

import types
from typing import Any, Callable

import numpy as np
from numpy.lib.mixins import NDArrayOperatorsMixin


class StrictBackendError(TypeError):
    """Code did something with a (strict) device array that would fail or synchronise on CuPy."""




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
