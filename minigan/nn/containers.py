r"""The two joins that U-Net and ResNet generators need, each around a body network:

* :class:`Residual` — :math:`y = x + f(x)` (a ResNet block, CycleGAN's generator);
* :class:`SkipConcat` — :math:`y = [\,x,\; f(x)\,]` along channels (a U-Net skip connection), and
  :class:`UNetBlock`, the same with the body named ``down``, ``inner``, ``up``.

They are containers like :class:`~minigan.layers.Sequential`: the body's params, grads and buffers appear
under dotted names (``body.0.W``; ``down.0.W``, ``inner.…``, ``up.…``), and ``train``/``eval``,
``set_requires_grad`` and ``astype`` reach every layer inside.

Gradients: when :math:`x` reaches the output along two paths, :math:`\partial L/\partial x` is the *sum* of
the two paths' gradients (the multivariate chain rule), which is all their ``backward`` does.
"""

from __future__ import annotations

from ..backend import get_array_module
from ..layers import Layer, _Container

__all__ = ["Residual", "SkipConcat", "UNetBlock"]


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
        """As :meth:`Sequential.set_input_grad <minigan.layers.Sequential.set_input_grad>`, on the chain."""
        self.input_grad = flag
        for layer in self._order:
            layer.set_input_grad(flag)
            if layer.params:
                break
        return self
