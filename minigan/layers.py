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

from . import backend
from .backend import get_array_module

DEFAULT_DTYPE = np.float32

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


def sigmoid(x):
    r"""Logistic function :math:`\sigma(x) = 1/(1+e^{-x})`, accurate to a few ulps for every finite :math:`x`.

    Computed as written, in four in-place passes. For :math:`x \ll 0`, :math:`e^{-x}` overflows to ``inf``
    (below about -88 in float32, -709 in float64) and the result is exactly 0, the correctly rounded limit
    to within the subnormal range; for :math:`x \gg 0`, :math:`e^{-x}` underflows to 0 and the result is 1.
    So nothing becomes NaN and the overflow is expected: its warning is silenced. Elsewhere the relative
    error is that of one ``exp``, one add and one reciprocal. (The two-branch form with :math:`e^{-|x|}` and
    ``where`` gives the same values but costs about nine times as long: measured 1.43 ms against 0.15 ms on
    a (100, 784) float32 batch.)
    """
    xp = get_array_module(x)
    t = xp.negative(x)
    with np.errstate(over="ignore"):
        xp.exp(t, out=t)
    t += 1
    return xp.reciprocal(t, out=t)


# --------------------------------------------------------------------------------------------------
# Initialisers
# --------------------------------------------------------------------------------------------------


def make_generator(rng: Any) -> np.random.Generator:
    """A host NumPy Generator from an int seed, a Generator, or None (fresh entropy)."""
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.Generator(np.random.PCG64(backend.as_seed(rng)))


def init_weights(shape: tuple[int, int], init: Any, rng: Any, dtype=DEFAULT_DTYPE) -> np.ndarray:
    """Initial weights drawn on the host, so every backend starts from the same numbers.

    Parameters
    ----------
    init : float or {"glorot", "zeros"}
        A float ``r`` draws U(-r, r), the papers' ``irange`` (Goodfellow 2014: 0.05 for G, 0.005 for D).
        ``"glorot"`` (the default) draws U(±sqrt(6 / (fan_in + fan_out))), which keeps activations' variance
        roughly constant through depth. ``"zeros"`` gives zeros.
    """
    gen = make_generator(rng)
    fan_in, fan_out = shape
    if init == "zeros":
        return np.zeros(shape, dtype)
    if init == "glorot":
        r = np.sqrt(6.0 / (fan_in + fan_out))
    elif isinstance(init, (int, float)) and not isinstance(init, bool) and init >= 0:
        r = float(init)
    else:
        raise ValueError(f"unknown initialiser {init!r}: give a non-negative irange, 'glorot' or 'zeros'")
    return gen.uniform(-r, r, size=shape).astype(dtype)


# --------------------------------------------------------------------------------------------------
# The base class
# --------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------
# Parametric layers
# --------------------------------------------------------------------------------------------------


class Linear(Layer):
    r"""Affine map :math:`Y = XW + \mathbf{1}b^\top`, with ``W`` shaped (in, out).

    Gradients. :math:`Y_{kj} = \sum_i X_{ki}W_{ij} + b_j`, so

    * :math:`\partial Y_{kj}/\partial W_{ij} = X_{ki}` for every row :math:`k`, hence
      :math:`\partial L/\partial W_{ij} = \sum_k X_{ki} G_{kj}`, i.e. :math:`\partial L/\partial W = X^\top G`;
    * :math:`b_j` is added to every row: :math:`\partial L/\partial b = \sum_k G_{k\cdot}` (column sums);
    * :math:`\partial Y_{kj}/\partial X_{ki} = W_{ij}`, hence :math:`\partial L/\partial X = G W^\top`.

    Parameters
    ----------
    in_features, out_features : int
    init : float or str
        Weight initialiser (see :func:`init_weights`); biases start at zero.
    rng : int, numpy Generator or None
        Seed or host generator for the initial weights.
    dtype : numpy dtype, default float32
    """

    def __init__(self, in_features: int, out_features: int, init: Any = "glorot", rng: Any = None,
                 dtype=DEFAULT_DTYPE, name: str | None = None):
        super().__init__(name)
        for what, value in (("in_features", in_features), ("out_features", out_features)):
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{type(self).__name__}: {what} must be a positive integer, got {value!r}")
        self.in_features, self.out_features = int(in_features), int(out_features)
        W = init_weights((self.in_features, self.out_features), init, rng, dtype)
        self._params = backend.to_device({"W": W, "b": np.zeros(self.out_features, dtype)})
        self._grads = backend.to_device({"W": np.zeros_like(W), "b": np.zeros(self.out_features, dtype)})
        self._x = None

    def forward(self, x, train: bool | None = None):
        _check_input(self, x, self.in_features)
        self._x = x
        y = x @ self._params["W"]
        y += self._params["b"]
        return y

    def backward(self, dout):
        if self._x is None:
            raise RuntimeError(f"{type(self).__name__} {self.path}: backward called before forward")
        xp = get_array_module(dout)
        if self.requires_grad:
            xp.matmul(self._x.T, dout, out=self._grads["W"])
            dout.sum(axis=0, out=self._grads["b"])
        if not self.input_grad:
            return None
        return dout @ self._params["W"].T

    def _forget(self):
        self._x = None


class Maxout(Linear):
    r"""Maxout (Goodfellow et al. 2013): ``units`` outputs, each the max of ``pieces`` affine pieces.

    :math:`Z = XW + b` with ``W`` shaped (in, units·pieces); piece :math:`j` of unit :math:`u` is column
    :math:`u\cdot\text{pieces} + j` (pieces of a unit are adjacent, pylearn2's layout), and
    :math:`h_{ku} = \max_j Z_{k,u,j}`.

    Gradient. Away from ties the max is locally the single winning piece :math:`j^*(k,u)`, so
    :math:`\partial h_{ku}/\partial Z_{k,u,j} = [j = j^*(k,u)]` and
    :math:`\partial L/\partial Z_{k,u,j} = G_{ku}\,[j = j^*(k,u)]`; the rest is :class:`Linear`'s backward.
    Ties (kinks) are measure-zero; the winner is the first maximal piece.
    """

    def __init__(self, in_features: int, units: int, pieces: int, init: Any = "glorot", rng: Any = None,
                 dtype=DEFAULT_DTYPE, name: str | None = None):
        for what, value in (("units", units), ("pieces", pieces)):
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"Maxout: {what} must be a positive integer, got {value!r}")
        super().__init__(in_features, units * pieces, init, rng, dtype, name)
        self.units, self.pieces = int(units), int(pieces)
        self._winner = None

    def forward(self, x, train: bool | None = None):
        # Z = XW + b goes into a reused buffer (it never leaves the layer). Pieces of a unit are adjacent
        # columns, so one transposing copy first makes each piece a contiguous (N, units) slice: the running
        # maximum then takes P-1 contiguous passes (strided ones cost ~6x as much). The winner is tracked as
        # max(winner, j * [piece j > running max]): a later piece wins only if *strictly* greater, so ties keep
        # the first maximal piece, and j exceeds every earlier winner. (A masked assignment, copyto(where=),
        # cost 45x a contiguous pass here.)
        _check_input(self, x, self.in_features)
        self._x = x
        xp = get_array_module(x)
        n, units, pieces = x.shape[0], self.units, self.pieces
        z = self._buffer("z", (n, units * pieces), x.dtype, x)
        xp.matmul(x, self._params["W"], out=z)
        z += self._params["b"]
        z_pieces = self._buffer("z_pieces", (pieces, n, units), x.dtype, x)
        xp.copyto(z_pieces, z.reshape(n, units, pieces).transpose(2, 0, 1))
        h = z_pieces[0].copy()
        index_type = np.int8 if pieces <= 127 else np.int32
        winner = self._buffer("winner", (n, units), index_type, x)
        winner.fill(0)
        better = self._buffer("mask", (n, units), np.bool_, x)
        candidate = self._buffer("candidate", (n, units), index_type, x)
        for j in range(1, pieces):
            xp.greater(z_pieces[j], h, out=better)
            xp.multiply(better, j, out=candidate)
            xp.maximum(winner, candidate, out=winner)
            xp.maximum(h, z_pieces[j], out=h)
        self._winner = winner
        return h

    def backward(self, dout):
        # dL/dZ[:, :, j] = G * [j = j*]: one masked copy of G per piece, into a reused buffer.
        if self._x is None:
            raise RuntimeError(f"{type(self).__name__} {self.path}: backward called before forward")
        xp = get_array_module(dout)
        n = dout.shape[0]
        dz = self._buffer("dz", (n, self.units * self.pieces), dout.dtype, dout)
        dz_pieces = dz.reshape(n, self.units, self.pieces)
        is_winner = self._buffer("mask", (n, self.units), np.bool_, dout)
        for j in range(self.pieces):
            xp.equal(self._winner, j, out=is_winner)
            xp.multiply(dout, is_winner, out=dz_pieces[:, :, j])
        return super().backward(dz)

    def activation_pattern(self):
        return None if self._winner is None else self._winner.copy()

    def _forget(self):
        super()._forget()
        self._winner = None


# --------------------------------------------------------------------------------------------------
# Activations
# --------------------------------------------------------------------------------------------------


class ReLU(Layer):
    r""":math:`y = \max(x, 0)`.

    Gradient: :math:`\partial y/\partial x = [x > 0]` (the kink at 0 gets 0), so
    :math:`\partial L/\partial X = G \odot [X > 0]`.
    """

    def __init__(self, name: str | None = None):
        super().__init__(name)
        self._positive = None

    def forward(self, x, train: bool | None = None):
        xp = get_array_module(x)
        self._positive = x > 0
        return xp.maximum(x, 0)

    def backward(self, dout):
        return dout * self._positive

    def activation_pattern(self):
        return self._positive

    def _forget(self):
        self._positive = None


class LeakyReLU(Layer):
    r""":math:`y = x` for :math:`x > 0`, :math:`y = \alpha x` otherwise.

    Gradient: :math:`\partial L/\partial X = G \odot s` with :math:`s = 1` where :math:`X > 0`, else
    :math:`\alpha`.
    """

    def __init__(self, slope: float = 0.2, name: str | None = None):
        super().__init__(name)
        if not 0 <= slope < 1:
            raise ValueError(f"LeakyReLU: slope must be in [0, 1), got {slope!r}")
        self.slope = float(slope)
        self._positive = None
        self._scale = None

    def forward(self, x, train: bool | None = None):
        self._positive = x > 0
        scale = self._positive.astype(x.dtype)
        scale *= 1 - self.slope
        scale += self.slope
        self._scale = scale
        return x * scale

    def backward(self, dout):
        return dout * self._scale

    def activation_pattern(self):
        return self._positive

    def _forget(self):
        self._positive = self._scale = None


class Sigmoid(Layer):
    r""":math:`y = \sigma(x) = 1/(1+e^{-x})`, computed stably (see :func:`sigmoid`).

    Gradient: :math:`\sigma' = \sigma(1-\sigma)`, so :math:`\partial L/\partial X = G \odot Y \odot (1 - Y)`
    from the saved output :math:`Y`.
    """

    def __init__(self, name: str | None = None):
        super().__init__(name)
        self._y = None

    def forward(self, x, train: bool | None = None):
        self._y = sigmoid(x)
        return self._y

    def backward(self, dout):
        return dout * self._y * (1 - self._y)

    def _forget(self):
        self._y = None


class Tanh(Layer):
    r""":math:`y = \tanh x`.

    Gradient: :math:`\tanh' = 1 - \tanh^2`, so :math:`\partial L/\partial X = G \odot (1 - Y^2)`.
    """

    def __init__(self, name: str | None = None):
        super().__init__(name)
        self._y = None

    def forward(self, x, train: bool | None = None):
        xp = get_array_module(x)
        self._y = xp.tanh(x)
        return self._y

    def backward(self, dout):
        return dout * (1 - self._y * self._y)

    def _forget(self):
        self._y = None


class Dropout(Layer):
    r"""Inverted dropout: in training, :math:`y = x \odot m` with :math:`m_{ki} = [u_{ki} \ge p]/(1-p)`,
    :math:`u \sim U[0,1)`; at evaluation :math:`y = x`. Scaling by :math:`1/(1-p)` keeps
    :math:`\mathbb{E}[y] = x`, so evaluation needs no rescaling.

    Gradient: :math:`y` is linear in :math:`x` for a fixed mask, so :math:`\partial L/\partial X = G \odot m`
    (and :math:`G` at evaluation).

    Parameters
    ----------
    p : float in [0, 1)
        Probability of *dropping* a unit (pylearn2's ``include_prob`` is ``1 - p``).
    seed : int, SeedSequence or None
        Seed of this layer's own generator.

    Notes
    -----
    :meth:`freeze` keeps the current mask for later training forwards of the same shape (gradient checks
    need the function to stay fixed while they perturb it); :meth:`unfreeze` goes back to fresh masks.
    """

    def __init__(self, p: float = 0.5, seed: Any = None, name: str | None = None):
        super().__init__(name)
        if not (isinstance(p, (int, float)) and 0 <= p < 1):
            raise ValueError(f"Dropout: p (the drop probability) must be in [0, 1), got {p!r}")
        self.p = float(p)
        self.rng = backend.Rng(backend.as_seed(seed))
        self.frozen = False
        self._mask = None
        self._active = False

    def forward(self, x, train: bool | None = None):
        self._active = self._mode(train) and self.p > 0
        if not self._active:
            return x
        reuse = self.frozen and self._mask is not None and self._mask.shape == x.shape
        if not reuse:
            xp = get_array_module(x)
            mask = self.rng.random(x.shape, x.dtype, like=x)  # u ~ U[0, 1)
            xp.greater_equal(mask, self.p, out=mask)  # [u >= p] as 1.0 / 0.0, in place: no bool temporary
            mask *= 1 / (1 - self.p)
            self._mask = mask
        return x * self._mask

    def backward(self, dout):
        return dout * self._mask if self._active else dout

    def freeze(self) -> None:
        self.frozen = True

    def unfreeze(self) -> None:
        self.frozen = False

    def rngs(self):
        return {"rng": self.rng}

    def _forget(self):
        self._mask = None


# --------------------------------------------------------------------------------------------------
# Containers
# --------------------------------------------------------------------------------------------------


class _Container(Layer):
    """Shared plumbing: children by name, params/grads/buffers/rngs gathered under dotted names."""

    def __init__(self, children: dict[str, Layer], name: str | None = None):
        super().__init__(name)
        for key, child in children.items():
            if not isinstance(child, Layer):
                raise TypeError(f"{type(self).__name__}: child {key!r} is a {type(child).__name__}, not a Layer")
        self._children = dict(children)
        self._set_path(self.path)

    def children(self):
        return self._children

    def _gather(self, getter: Callable[[Layer], dict]) -> dict:
        gathered = {}
        for key, child in self._children.items():
            for name, value in getter(child).items():
                gathered[f"{key}.{name}"] = value
        return gathered

    @property
    def params(self):
        return self._gather(lambda c: c.params)

    @property
    def grads(self):
        return self._gather(lambda c: c.grads)

    @property
    def buffers(self):
        return self._gather(lambda c: c.buffers)

    def rngs(self):
        return self._gather(lambda c: c.rngs())


class Sequential(_Container):
    r"""Layers applied one after another: :math:`f = f_n \circ \dots \circ f_1`.

    Gradient: the chain rule, in reverse order: :math:`G_{i-1} = f_i'^\top G_i`, each layer's ``backward``.

    Children are named by their ``name`` if given, else by position ("0", "1", ...).
    """

    def __init__(self, *layers: Layer, name: str | None = None):
        if not layers:
            raise ValueError("Sequential needs at least one layer")
        children = {}
        for i, layer in enumerate(layers):
            key = layer.name if isinstance(layer, Layer) and layer.name else str(i)
            if key in children:
                raise ValueError(f"Sequential: two children are named {key!r}")
            children[key] = layer
        super().__init__(children, name)
        self.layers = list(layers)

    def forward(self, x, train: bool | None = None):
        train = self._mode(train)
        for layer in self.layers:
            x = layer.forward(x, train)
        return x

    def backward(self, dout):
        for layer in reversed(self.layers):
            dout = layer.backward(dout)
            if dout is None:  # a layer was told not to compute d/d(input): only parameter-free layers precede it
                return None
        return dout

    def set_input_grad(self, flag: bool):
        """Tell the layers that see this network's input whether d/d(input) is wanted.

        Those are the leading parameter-free layers (dropout or an activation on the input) *and* the first
        layer with parameters after them: without this, ``Dropout -> Maxout`` would still compute the
        Maxout's input gradient (a full matrix product) only to drop it.
        """
        self.input_grad = flag
        for layer in self.layers:
            layer.set_input_grad(flag)
            if layer.params:
                break
        return self


class Join(_Container):
    r"""Feeds each input of a tuple through its own branch and concatenates the outputs along features.

    This is the CGAN's two-stream input: ``Join({"z": ..., "y": ...}).forward((z, y))`` is
    :math:`[\,f_z(z)\;\; f_y(y)\,]`.

    Gradient: the output's columns split into blocks, block :math:`b` being :math:`f_b`'s output, so each
    branch receives its own block :math:`G_b` of :math:`G` and returns :math:`\partial L/\partial x_b`;
    ``backward`` returns the tuple of those.
    """

    def __init__(self, branches: dict[str, Layer], name: str | None = None):
        if not isinstance(branches, dict) or not branches:
            raise ValueError("Join needs a non-empty dict of named branches, e.g. {'x': ..., 'y': ...}")
        super().__init__(branches, name)
        self._widths: list[int] = []

    def forward(self, inputs, train: bool | None = None):
        names = list(self._children)
        if not isinstance(inputs, (tuple, list)) or len(inputs) != len(names):
            raise ValueError(
                f"Join {self.path}: expected a tuple of {len(names)} inputs ({', '.join(names)}), "
                f"received {_describe(inputs) if not isinstance(inputs, (tuple, list)) else f'{len(inputs)} inputs'}"
            )
        train = self._mode(train)
        outputs = [branch.forward(x, train) for branch, x in zip(self._children.values(), inputs)]
        for name_, out in zip(names, outputs):
            if out.shape[0] != outputs[0].shape[0]:
                raise ValueError(
                    f"Join {self.path}: inputs have different batch sizes "
                    f"({', '.join(f'{n}: {o.shape[0]}' for n, o in zip(names, outputs))})"
                )
        self._widths = [out.shape[1] for out in outputs]
        xp = get_array_module(outputs[0])
        return xp.concatenate(outputs, axis=1)

    def backward(self, dout):
        grads_in, start = [], 0
        for branch, width in zip(self._children.values(), self._widths):
            grads_in.append(branch.backward(dout[:, start:start + width]))
            start += width
        return tuple(grads_in)

    def set_input_grad(self, flag: bool):
        self.input_grad = flag
        for branch in self._children.values():
            branch.set_input_grad(flag)
        return self
