r"""Containers: layers made of layers. Each forwards and backwards through its children and exposes their
params, grads, buffers and random generators under dotted names (``in.z.0.W``, ``body.0.W``), and
``train``/``eval``, ``set_requires_grad`` and ``astype`` reach every layer inside.

* :class:`Sequential` — :math:`f_n \circ \dots \circ f_1`;
* :class:`Join` — a tuple of inputs, each through its own branch, outputs concatenated along features (the
  CGAN's two-stream input); :class:`Identity` is the branch that passes its input through;
* :class:`Conditioned` — a network whose one-hot condition also sets its conditional layers (class-dependent
  BatchNorm);
* :class:`Residual` — :math:`y = x + f(x)` (a ResNet block, CycleGAN's generator);
* :class:`SkipConcat` — :math:`y = [\,x,\; f(x)\,]` along channels (a U-Net skip connection), and
  :class:`UNetBlock`, the same with the body named ``down``, ``inner``, ``up``.

Gradients: when :math:`x` reaches the output along two paths, :math:`\partial L/\partial x` is the *sum* of
the two paths' gradients (the multivariate chain rule), which is all the joins' ``backward`` does.
"""

from __future__ import annotations

from typing import Callable

from ..backend import get_array_module
from .base import Layer, _describe

__all__ = ["Sequential", "Join", "Conditioned", "Identity", "Residual", "SkipConcat", "UNetBlock"]


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


class Conditioned(_Container):
    r"""A network whose input tuple ends with a one-hot condition :math:`Y` that also sets its conditional layers
    (those with ``takes_condition``, :class:`~minigan.nn.norm.ConditionalBatchNorm`): ``forward((..., y))`` hands
    ``y`` to each of them, then runs the body on the whole tuple (whose first layer, a :class:`Join`, may read
    ``y`` as well).

    Gradient: :math:`Y` reaches the output along the body's own path and through every conditional layer, so
    :math:`\partial L/\partial Y` is the sum of the body's gradient for it and each layer's ``condition_grad``;
    ``backward`` returns the body's input gradients with that sum in the condition's place.
    """

    def __init__(self, body: Layer, name: str | None = None):
        super().__init__({"body": body}, name)
        self.body = body
        self._takers = [layer for layer in body.walk() if getattr(layer, "takes_condition", False)]
        if not self._takers:
            raise ValueError("Conditioned: the body has no conditional layer (e.g. ConditionalBatchNorm)")

    def forward(self, inputs, train: bool | None = None):
        if not isinstance(inputs, (tuple, list)) or len(inputs) < 2:
            raise ValueError(f"Conditioned {self.path}: expected a tuple of inputs ending with the one-hot "
                             f"condition, received {_describe(inputs)}")
        for layer in self._takers:
            layer.condition = inputs[-1]
        return self.body.forward(inputs, self._mode(train))

    def backward(self, dout):
        grads = self.body.backward(dout)
        if grads is None:  # told not to compute d/d(input) (see set_input_grad)
            return None
        d_condition = grads[-1]
        for layer in self._takers:
            d_condition = d_condition + layer.condition_grad
        return (*grads[:-1], d_condition)

    def set_input_grad(self, flag: bool):
        self.input_grad = flag
        self.body.set_input_grad(flag)
        return self


class Identity(Layer):
    r""":math:`y = x`; gradient :math:`\partial L/\partial X = G`. A branch of :class:`Join` that passes its input
    through unchanged (the noise beside a label embedding, the labels beside D's features)."""

    def forward(self, x, train: bool | None = None):
        return x

    def backward(self, dout):
        return dout


class Residual(_Container):
    r""":math:`y = x + f(x)`, with :math:`f` = ``body`` mapping (N, C, H, W) to the same shape.

    Gradient: :math:`\partial L/\partial x = G + f'(x)^\top G`: the identity path passes :math:`G` through,
    the body's ``backward`` gives the other term.
    """

    def __init__(self, body: Layer, name: str | None = None):
        super().__init__({"body": body}, name)
        self.body = body

    def forward(self, x, train: bool | None = None):
        fx = self.body.forward(x, self._mode(train))
        if fx.shape != x.shape:
            raise ValueError(f"Residual {self.path}: the body maps shape {tuple(x.shape)} to {tuple(fx.shape)}; "
                             "a residual block needs the same shape out as in")
        # Not in place: a body may return its input itself or a view of it (Dropout at evaluation, Reshape).
        return fx + x

    def backward(self, dout):
        dx = self.body.backward(dout)
        if dx is None:  # told not to compute d/d(input) (see set_input_grad)
            return None
        return dx + dout  # not in place, for the same reason: dx may be dout itself

    def set_input_grad(self, flag: bool):
        self.input_grad = flag
        self.body.set_input_grad(flag)
        return self


class SkipConcat(_Container):
    r""":math:`y = [\,x,\; f(x)\,]`, concatenated along channels (axis 1): the U-Net skip connection.

    ``f`` is the body (typically down-sample → inner block → up-sample), whose output must have the batch and
    spatial size of :math:`x`; :math:`y` has :math:`C_x + C_f` channels, :math:`x`'s first (pix2pix's order,
    ``torch.cat([x, model(x)], 1)``). A U-Net is these blocks nested, each one's inner block being the next.

    Gradient: :math:`G` splits along channels into :math:`G_x` (the first :math:`C_x`) and :math:`G_f`, so
    :math:`\partial L/\partial x = G_x + f'(x)^\top G_f`.
    """

    def __init__(self, body: Layer, name: str | None = None):
        super().__init__({"body": body}, name)
        self._channels: int | None = None

    def _body_forward(self, x, train: bool):
        return self._children["body"].forward(x, train)

    def _body_backward(self, dout):
        return self._children["body"].backward(dout)

    def forward(self, x, train: bool | None = None):
        fx = self._body_forward(x, self._mode(train))
        if fx.ndim != x.ndim or fx.shape[0] != x.shape[0] or fx.shape[2:] != x.shape[2:]:
            raise ValueError(f"{type(self).__name__} {self.path}: the body maps shape {tuple(x.shape)} to "
                             f"{tuple(fx.shape)}; concatenating along channels needs the same N, H, W")
        self._channels = x.shape[1]
        xp = get_array_module(x)
        return xp.concatenate([x, fx], axis=1)

    def backward(self, dout):
        if self._channels is None:
            raise RuntimeError(f"{type(self).__name__} {self.path}: backward called before forward")
        c = self._channels
        dx = self._body_backward(dout[:, c:])
        if dx is None:
            return None
        return dx + dout[:, :c]  # not in place: dx may be a view of dout (an identity-like body)

    def set_input_grad(self, flag: bool):
        self.input_grad = flag
        self._children["body"].set_input_grad(flag)
        return self

    def _forget(self):
        self._channels = None


class UNetBlock(SkipConcat):
    r"""One level of a U-Net: :math:`y = [\,x,\; \text{up}(\text{inner}(\text{down}(x)))\,]` (pix2pix's
    ``UnetSkipConnectionBlock``), children named ``down``, ``inner`` and ``up``.

    ``inner`` is the next level's :class:`UNetBlock` (or any layer; None for the innermost level, where
    ``up`` follows ``down`` directly). ``down`` typically halves H and W (a stride-2 Conv2d) and ``up``
    doubles them back (a stride-2 ConvTranspose2d taking inner's channels). The gradient is
    :class:`SkipConcat`'s with :math:`f = \text{up} \circ \text{inner} \circ \text{down}`, whose backward is
    the chain rule in reverse order.
    """

    def __init__(self, down: Layer, up: Layer, inner: Layer | None = None, name: str | None = None):
        children = {"down": down} | ({"inner": inner} if inner is not None else {}) | {"up": up}
        _Container.__init__(self, children, name)
        self._channels = None
        self._order = list(children.values())

    def _body_forward(self, x, train: bool):
        for layer in self._order:
            x = layer.forward(x, train)
        return x

    def _body_backward(self, dout):
        for layer in reversed(self._order):
            dout = layer.backward(dout)
            if dout is None:
                return None
        return dout

    def set_input_grad(self, flag: bool):
        """As :meth:`Sequential.set_input_grad <minigan.nn.containers.Sequential.set_input_grad>`, on the chain."""
        self.input_grad = flag
        for layer in self._order:
            layer.set_input_grad(flag)
            if layer.params:
                break
        return self
