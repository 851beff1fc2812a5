r"""Layers with hand-written forward and backward passes.

The contract (one rule per line)
--------------------------------
* ``forward(x, train=None)`` returns the output and keeps what ``backward`` needs. ``train=None`` means "the
  layer's own mode", set with :meth:`Layer.train` / :meth:`Layer.eval`.
* ``backward(dout)`` takes :math:`\partial L/\partial\,\text{output}` and returns
  :math:`\partial L/\partial\,\text{input}`; it *writes* (overwrites, never accumulates)
  :math:`\partial L/\partial\theta` into ``grads`` under the same keys as ``params``.
* ``backward`` never updates weights: optimizers do that, from ``params`` and ``grads``.
* Containers (:class:`Sequential`, :class:`Join`) expose their children's params/grads under dotted names.
* Non-trainable state (running statistics) lives in ``buffers``, also under dotted names; checkpoints save it.

Every gradient is derived in its class's docstring, in the notation: batch of :math:`N` rows, upstream
gradient :math:`G = \partial L/\partial Y` of the output's shape, :math:`\odot` the elementwise product.
All array code is written once against ``xp = get_array_module(x)``, so it runs on NumPy, CuPy and the
strict test backend unchanged.

Two switches serve speed without changing any value that is computed:

* ``requires_grad = False`` makes ``backward`` skip parameter gradients (D's weights during G's update);
* ``input_grad = False`` makes a parametric layer skip :math:`\partial L/\partial X` (the first layer of a
  network whose input is data), saving a matrix product.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator

import numpy as np

from .. import backend
from ..backend import get_array_module
from .init import DEFAULT_DTYPE

__all__ = ["DEFAULT_DTYPE", "Layer", "checking_finite_inputs"]

_check_finite = False


@contextlib.contextmanager
def checking_finite_inputs(enabled: bool = True) -> Iterator[None]:
    """Within this context, parametric layers reject inputs holding NaN or Inf with a ValueError.

    Off by default because the check reads a flag back from the device: a synchronisation per layer.
    """
    global _check_finite
    previous, _check_finite = _check_finite, enabled
    try:
        yield
    finally:
        _check_finite = previous


def _describe(x: Any) -> str:
    if hasattr(x, "shape") and hasattr(x, "dtype"):
        return f"an array of shape {tuple(x.shape)} and dtype {x.dtype}"
    return f"a {type(x).__name__}"



#: Shapes of one scratch buffer a layer keeps (see :meth:`Layer._buffer`): D's two batch sizes, plus one.
_BUFFER_SHAPES = 3


class Layer:
    """Base class: parameters and their gradients in dicts, a training mode, a dotted path for messages."""

    def __init__(self, name: str | None = None):
        self.name = name
        self.path = name or type(self).__name__
        self.training = False
        self.requires_grad = True
        self.input_grad = True
        self._params: dict[str, Any] = {}
        self._grads: dict[str, Any] = {}
        self._buffers: dict[str, Any] = {}

    # -- the contract ----------------------------------------------------------------------------
    def forward(self, x, train: bool | None = None):
        raise NotImplementedError

    def backward(self, dout):
        raise NotImplementedError

    def __call__(self, x, train: bool | None = None):
        return self.forward(x, train)

    @property
    def params(self) -> dict[str, Any]:
        """Parameter arrays by name. Optimizers update these arrays in place."""
        return self._params

    @property
    def grads(self) -> dict[str, Any]:
        """Gradient arrays by name, the same keys as :attr:`params`, written by :meth:`backward`."""
        return self._grads

    @property
    def buffers(self) -> dict[str, Any]:
        """Non-trainable state arrays by name (BatchNorm's running statistics), saved in checkpoints.

        The layer updates them in place (in training-mode ``forward``); optimizers never see them. Restore one
        by assigning into it, ``layer.buffers[name][...] = value``, as for :attr:`params`. (Not to be confused
        with the scratch arrays of :meth:`_buffer`, which hold nothing between calls that matters.)
        """
        return self._buffers

    # -- tree helpers -----------------------------------------------------------------------------
    def children(self) -> dict[str, "Layer"]:
        """Direct sub-layers by name (none for a leaf)."""
        return {}

    def walk(self) -> Iterator["Layer"]:
        """This layer and every layer below it, depth first."""
        yield self
        for child in self.children().values():
            yield from child.walk()

    def _set_path(self, path: str) -> None:
        self.path = path
        for key, child in self.children().items():
            child._set_path(f"{path}.{key}")

    def _mode(self, train: bool | None) -> bool:
        return self.training if train is None else bool(train)

    # -- modes and switches -------------------------------------------------------------------------
    def train(self, mode: bool = True) -> "Layer":
        """Training mode (dropout active) for this layer and all below it."""
        for layer in self.walk():
            layer.training = mode
        return self

    def eval(self) -> "Layer":
        """Evaluation mode (dropout is the identity)."""
        return self.train(False)

    def set_requires_grad(self, flag: bool) -> "Layer":
        """Whether ``backward`` computes parameter gradients (False: only input gradients flow)."""
        for layer in self.walk():
            layer.requires_grad = flag
        return self

    def set_input_grad(self, flag: bool) -> "Layer":
        """Whether the layers that see this layer's input compute the gradient with respect to it."""
        self.input_grad = flag
        return self

    def zero_grad(self) -> None:
        """Set every gradient to zero."""
        for g in self.grads.values():
            g[...] = 0

    def _buffer(self, key: str, shape: tuple, dtype, like):
        """A scratch array of ``shape`` and ``dtype`` on ``like``'s backend, kept and reused across calls.

        Only for arrays that never leave the layer (intermediate products, winners, masks): what ``forward``
        and ``backward`` *return* is always a fresh array, so callers may keep it. Reuse saves an allocation
        (and, for large arrays, the page faults of touching fresh memory) per call.
        """
        # Kept per (shape, dtype), the most recently used few: D sees 2B rows in its own step and B rows in
        # G's, so with a single buffer per key each ~1 MB buffer was reallocated twice per iteration.
        slots = self.__dict__.setdefault("_work", {}).setdefault(key, {})
        xp = get_array_module(like)
        ident = (tuple(shape), np.dtype(dtype))
        buf = slots.pop(ident, None)
        if buf is None or get_array_module(buf) is not xp:
            buf = xp.empty(shape, dtype)
        slots[ident] = buf  # dicts keep insertion order: the least recently used shape comes first
        while len(slots) > _BUFFER_SHAPES:
            del slots[next(iter(slots))]
        return buf

    # -- arrays -----------------------------------------------------------------------------------------
    def map_arrays(self, convert: Callable[[Any], Any]) -> "Layer":
        """Replace every parameter, gradient and buffer array by ``convert(array)`` (moving devices, casting)."""
        for layer in self.walk():
            for store in (layer._params, layer._grads, layer._buffers):
                for key in store:
                    store[key] = convert(store[key])
            layer.__dict__.pop("_work", None)  # scratch buffers of the old backend / dtype
            layer._forget()
        return self

    def _forget(self) -> None:
        """Drop what forward cached for backward (called when arrays move or change dtype)."""

    def astype(self, dtype) -> "Layer":
        """Cast all parameters, gradients and buffers (float64 for gradient checks, float32 to train)."""
        dtype = np.dtype(dtype)
        if dtype.kind != "f":
            raise ValueError(f"{self.path}: a model's dtype must be floating point, got {dtype}")
        return self.map_arrays(lambda a: a.astype(dtype))

    @property
    def dtype(self):
        """dtype of the parameters, else of the buffers (None for a layer without either)."""
        for p in (*self.params.values(), *self.buffers.values()):
            return p.dtype
        return None

    def rngs(self) -> dict[str, backend.Rng]:
        """Random generators by dotted name (their states go into checkpoints)."""
        return {}

    def activation_pattern(self):
        """The discrete choice made in the last forward (ReLU signs, maxout winners), or None.

        A finite-difference step that changes it crossed a kink, where the derivative does not exist.
        """
        return None

    def n_params(self) -> int:
        return int(sum(p.size for p in self.params.values()))

    def __repr__(self):
        return f"{type(self).__name__}({self.path})"


def _check_input(layer: Layer, x: Any, features: int) -> None:
    """Raise a ValueError naming the layer, what it expected and what it received."""
    kind = type(layer).__name__
    if not (hasattr(x, "ndim") and hasattr(x, "shape") and hasattr(x, "dtype")):
        raise ValueError(f"{kind} {layer.path}: expected an array of shape (N, {features}), received {_describe(x)}")
    if x.ndim != 2:
        raise ValueError(
            f"{kind} {layer.path}: expected a 2-D batch of shape (N, {features}), received {_describe(x)}"
        )
    if x.shape[1] != features:
        raise ValueError(
            f"{kind} {layer.path}: expected {features} features per row (shape (N, {features})), "
            f"received shape {tuple(x.shape)}"
        )
    if x.dtype.kind != "f":
        raise ValueError(
            f"{kind} {layer.path}: expected a floating-point input of dtype {layer.dtype}, received dtype {x.dtype}"
        )
    if x.dtype != layer.dtype:
        raise ValueError(
            f"{kind} {layer.path}: expected dtype {layer.dtype} (the model's), received dtype {x.dtype}; "
            "cast the input, or the model with .astype()"
        )
    if _check_finite:
        xp = get_array_module(x)
        if not bool(backend.to_host(xp.isfinite(x).all())):
            raise ValueError(f"{kind} {layer.path}: input holds NaN or Inf values")
