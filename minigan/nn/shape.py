r"""Layers that move values without arithmetic: :class:`ReflectionPad2d`, :class:`Flatten`, :class:`Reshape`,
nearest-neighbour :class:`Upsample`, and :class:`PatchRows` (a PatchGAN's logit map as rows).

Each is linear, :math:`y = Px` for a 0/1 matrix :math:`P`, so its backward is :math:`\partial L/\partial x =
P^\top G`: every input entry collects the upstream gradient of each output entry that copies it.
"""

from __future__ import annotations


from ..backend import get_array_module
from .base import Layer
from ._checks import check_batch, pair, positive_int

__all__ = ["ReflectionPad2d", "Flatten", "Reshape", "Upsample", "PatchRows"]


def _add_into(xp, view, values) -> None:
    """view += values, written into ``view`` (a slice of a larger array) on every backend."""
    xp.add(view, values, out=view)


class ReflectionPad2d(Layer):
    r"""Pad (N, C, H, W) by reflecting the image at its border, without repeating the edge (PyTorch's
    ``ReflectionPad2d``): with ``left = 2``, the row ``a b c d`` becomes ``c b a b c d``.

    Forward, one axis at a time (columns first, then rows over the full padded width): the interior is
    :math:`x`; left column :math:`l - k` (k = 1..left) copies column :math:`k`; right column
    :math:`l + W - 1 + k` (k = 1..right) copies column :math:`W - 1 - k`. Each pad must be smaller than the
    size it reflects.

    Gradient: :math:`P^\top G` *folds* the border back: start from the interior of :math:`G`, then add the
    top/bottom pad rows onto the rows they copied (over the padded width), then the left/right pad columns
    onto the columns they copied, the same index maps read backwards. Rows first undoes columns-first.

    Parameters
    ----------
    padding : int or (left, right, top, bottom)
        PyTorch's order.
    """

    def __init__(self, padding, name: str | None = None):
        super().__init__(name)
        items = padding if isinstance(padding, (tuple, list)) else (padding,) * 4
        if len(items) != 4:
            raise ValueError(f"ReflectionPad2d: padding must be an int or (left, right, top, bottom), got {padding!r}")
        left, right = pair(tuple(items[:2]), "padding", "ReflectionPad2d")
        top, bottom = pair(tuple(items[2:]), "padding", "ReflectionPad2d")
        self.padding = (left, right, top, bottom)
        self._x_shape: tuple | None = None

    def forward(self, x, train: bool | None = None):
        check_batch(self, x, None)
        xp = get_array_module(x)
        left, right, top, bottom = self.padding
        n, c, h, w = x.shape
        if max(left, right) >= w or max(top, bottom) >= h:
            raise ValueError(f"ReflectionPad2d {self.path}: padding {self.padding} (left, right, top, bottom) "
                             f"must be smaller than the input's width {w} and height {h}")
        y = xp.empty((n, c, top + h + bottom, left + w + right), x.dtype)
        rows = slice(top, top + h)
        y[:, :, rows, left:left + w] = x
        y[:, :, rows, :left] = x[:, :, :, 1:left + 1][:, :, :, ::-1]  # columns left, ..., 1
        y[:, :, rows, left + w:] = x[:, :, :, w - 1 - right:w - 1][:, :, :, ::-1]  # columns w-2, ..., w-1-right
        y[:, :, :top] = y[:, :, top + 1:2 * top + 1][:, :, ::-1]
        y[:, :, top + h:] = y[:, :, top + h - 1 - bottom:top + h - 1][:, :, ::-1]
        self._x_shape = x.shape
        return y

    def backward(self, dout):
        if self._x_shape is None:
            raise RuntimeError(f"ReflectionPad2d {self.path}: backward called before forward")
        xp = get_array_module(dout)
        left, right, top, bottom = self.padding
        _, _, h, w = self._x_shape
        # Rows: fold the top and bottom pad rows onto the rows they copied (over the padded width) ...
        g = dout[:, :, top:top + h].copy()
        _add_into(xp, g[:, :, 1:top + 1], dout[:, :, :top][:, :, ::-1])
        _add_into(xp, g[:, :, h - 1 - bottom:h - 1], dout[:, :, top + h:][:, :, ::-1])
        # ... then the left and right pad columns onto the columns they copied.
        dx = g[:, :, :, left:left + w].copy()
        _add_into(xp, dx[:, :, :, 1:left + 1], g[:, :, :, :left][:, :, :, ::-1])
        _add_into(xp, dx[:, :, :, w - 1 - right:w - 1], g[:, :, :, left + w:][:, :, :, ::-1])
        return dx

    def _forget(self):
        self._x_shape = None


class Flatten(Layer):
    r"""(N, d1, d2, ...) → (N, d1·d2·...), C order (PyTorch's ``Flatten``). Backward: the reshape back."""

    def __init__(self, name: str | None = None):
        super().__init__(name)
        self._x_shape: tuple | None = None

    def forward(self, x, train: bool | None = None):
        check_batch(self, x, None, ndims=tuple(range(1, 33)), layout="(N, ...)")
        self._x_shape = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, dout):
        if self._x_shape is None:
            raise RuntimeError(f"Flatten {self.path}: backward called before forward")
        return dout.reshape(self._x_shape)

    def _forget(self):
        self._x_shape = None


class Reshape(Layer):
    r"""(N, ...) → (N, \*shape), C order: ``Reshape(128, 7, 7)`` turns a DCGAN generator's (N, 6272) dense
    output into (N, 128, 7, 7). Backward: the reshape back."""

    def __init__(self, *shape: int, name: str | None = None):
        super().__init__(name)
        if not shape:
            raise ValueError("Reshape: give the shape of one sample, e.g. Reshape(128, 7, 7)")
        self.shape = tuple(positive_int(d, "each dimension", "Reshape") for d in shape)
        self._x_shape: tuple | None = None

    def forward(self, x, train: bool | None = None):
        check_batch(self, x, None, ndims=tuple(range(1, 33)), layout="(N, ...)")
        size = 1
        for d in self.shape:
            size *= d
        if x.size != x.shape[0] * size:
            raise ValueError(f"Reshape {self.path}: cannot reshape input of shape {tuple(x.shape)} to "
                             f"(N, {', '.join(map(str, self.shape))})")
        self._x_shape = x.shape
        return x.reshape((x.shape[0],) + self.shape)

    def backward(self, dout):
        if self._x_shape is None:
            raise RuntimeError(f"Reshape {self.path}: backward called before forward")
        return dout.reshape(self._x_shape)

    def _forget(self):
        self._x_shape = None


class Upsample(Layer):
    r"""Nearest-neighbour upsampling of (N, C, H, W) by integer factors:
    :math:`y[n, c, a, b] = x[n, c, \lfloor a/s_h 
floor, \lfloor b/s_w 
floor]` (PyTorch's
    ``Upsample(scale_factor=s, mode="nearest")`` for integer :math:`s`).

    Gradient: each input pixel is copied to the :math:`s_h 	imes s_w` block above it, so it collects the
    block's upstream gradients: :math:`\partial L/\partial x[n,c,h,w] = \sum_{i<s_h, j<s_w} G[n,c,s_h h+i,
    s_w w+j]`, one sum over the two block axes of ``G.reshape(N, C, H, s_h, W, s_w)``.

    Parameters
    ----------
    scale_factor : int or (int, int), default 2
    """

    def __init__(self, scale_factor=2, name: str | None = None):
        super().__init__(name)
        self.scale_factor = pair(scale_factor, "scale_factor", "Upsample", minimum=1)

    def forward(self, x, train: bool | None = None):
        check_batch(self, x, None)
        xp = get_array_module(x)
        n, c, h, w = x.shape
        sh, sw = self.scale_factor
        y = xp.empty((n, c, h, sh, w, sw), x.dtype)
        y[...] = x.reshape(n, c, h, 1, w, 1)
        return y.reshape(n, c, h * sh, w * sw)

    def backward(self, dout):
        n, c, hh, ww = dout.shape
        sh, sw = self.scale_factor
        return dout.reshape(n, c, hh // sh, sh, ww // sw, sw).sum(axis=(3, 5))


class PatchRows(Layer):
    r"""(N, 1, h, w) → (N·h·w, 1): a PatchGAN's map of per-patch logits as one logit per row, sample-major
    (rows :math:`n h w` to :math:`(n+1) h w - 1` are sample :math:`n`'s patches), so the BCE losses of
    :mod:`minigan.nn.losses` average over every patch of every sample, as pix2pix's loss does. Backward: the
    reshape back."""

    def __init__(self, name: str | None = None):
        super().__init__(name)
        self._x_shape: tuple | None = None

    def forward(self, x, train: bool | None = None):
        check_batch(self, x, 1, layout="(N, 1, h, w)")
        self._x_shape = x.shape
        return x.reshape(-1, 1)

    def backward(self, dout):
        if self._x_shape is None:
            raise RuntimeError(f"PatchRows {self.path}: backward called before forward")
        return dout.reshape(self._x_shape)

    def _forget(self):
        self._x_shape = None
