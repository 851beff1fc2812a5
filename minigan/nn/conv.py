r"""Convolutions in NCHW: im2col / col2im by strided slices, :class:`Conv2d` and its adjoint
:class:`ConvTranspose2d`. Weight layouts are PyTorch's.

Notation
--------
Input :math:`X` of shape (N, C, H, W); kernel :math:`k_h \times k_w`, stride :math:`s`, zero padding
:math:`p` (each a (height, width) pair; written once for both axes below); :math:`\tilde X` the padded input,
(N, C, H + 2p, W + 2p). The output has :math:`OH = \lfloor (H + 2p - k_h)/s \rfloor + 1` rows (likewise
:math:`OW`). When :math:`(H + 2p - k_h)` is not a multiple of :math:`s`, the last rows of :math:`\tilde X`
are never read (and get zero gradient), as in PyTorch.

The column matrix
-----------------
.. math:: C[(c, i, j), (n, a, b)] = \tilde X[n, c, i + s a, j + s b],

stored as an array of shape (C, kh, kw, N, OH, OW) and used as a (C·kh·kw) × (N·OH·OW) matrix. Its rows are
ordered (c, i, j), which is the order of a Conv2d weight (O, C, kh, kw) flattened to :math:`W_2` of shape
(O, C·kh·kw), so a convolution is *one* matrix product :math:`Y_2 = W_2 C` of shape (O, N·OH·OW), followed by
a transposing copy to (N, O, OH, OW).

:func:`im2col` fills :math:`C` with one strided-slice copy per kernel offset :math:`(i, j)`:
``C[:, i, j] = X̃[:, :, i:i+s*OH:s, j:j+s*OW:s]`` (axes 0 and 1 swapped). As a linear map,
:math:`C = S\tilde X` with :math:`S` a 0/1 selection matrix. Its adjoint :math:`S^\top` is :func:`col2im`:
the same loop with ``X̃[:, :, i:i+s*OH:s, j:j+s*OW:s] += C[:, i, j]``. For a fixed offset the slice visits
each pixel of :math:`\tilde X` at most once, so the in-place add is exact: no scatter-add (``np.add.at``)
and no loop over pixels. Both loops run :math:`k_h k_w` times and are the same code on NumPy and CuPy.

The tap planes
--------------
A layer with few output channels (PatchGAN's one-channel output, say) spends most of its time writing and
reading a column matrix :math:`k_h k_w` times the size of its input for a product with one row. Such a layer
contracts the channels first instead: with :math:`W'` the weight as (O·kh·kw, C) (rows ordered (o, i, j)) and
:math:`\tilde X` as (C, N·(H+2p)·(W+2p)),

.. math:: T = W' \tilde X, \qquad T[(o, i, j), (n, h, w)] = \sum_c W[o, c, i, j]\, \tilde X[n, c, h, w],

one *tap plane* per (o, i, j): the whole padded image weighted by one kernel tap. The output adds the planes
shifted by their offsets, :math:`Y[n, o, a, b] = \sum_{i,j} T[(o, i, j), (n, s a + i, s b + j)]` (a linear map
:math:`Y = R\,T`, :func:`sum_taps`); its adjoint :math:`R^\top` (:func:`spread_taps`) writes each output
gradient back into every plane at that plane's offset. :math:`T` has O·kh·kw·N·(H+2p)·(W+2p) entries against the
column matrix's C·kh·kw·N·OH·OW, so :class:`Conv2d` takes this route when it is the smaller of the two (at
stride 1, roughly when O < C); the arithmetic is the same up to the border.

Scratch arrays (the padded input, the column matrices, the transposed products) are kept per shape on the
layer (:meth:`~minigan.nn.base.Layer._buffer`) and reused by the next step of the same shape; what ``forward``
and ``backward`` return is always a fresh array.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .. import backend, parallel
from ..backend import get_array_module
from .base import DEFAULT_DTYPE, Layer
from .init import make_generator
from ._checks import check_batch, pair, positive_int

__all__ = ["Conv2d", "ConvTranspose2d", "im2col", "col2im", "im2col_batch_last", "col2im_batch_last", "sum_taps",
           "spread_taps", "per_image_product", "conv_output_size", "conv_init", "CONV_METHODS"]

#: How :class:`Conv2d` computes: by the column matrix, by tap planes, or whichever is smaller for the shape.
CONV_METHODS = ("auto", "columns", "taps")


def conv_output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """Output length of a convolution along one axis: ``(size + 2 padding - kernel) // stride + 1``."""
    return (size + 2 * padding - kernel) // stride + 1


def im2col(x_padded, kernel: tuple[int, int], stride: tuple[int, int], out_hw: tuple[int, int], cols):
    """Fill ``cols`` (C, kh, kw, N, OH, OW) with ``cols[c, i, j, n, a, b] = x_padded[n, c, i + sh a, j + sw b]``.

    One strided-slice copy per kernel offset (per block of channels, :mod:`minigan.parallel`); returns ``cols``.
    """
    xp = get_array_module(x_padded)
    (kh, kw), (sh, sw), (oh, ow) = kernel, stride, out_hw

    def channels(c0, c1):
        for i in range(kh):
            for j in range(kw):
                window = x_padded[:, c0:c1, i:i + sh * oh:sh, j:j + sw * ow:sw]
                xp.copyto(cols[c0:c1, i, j], window.transpose(1, 0, 2, 3))
    parallel.split_large(cols.size, cols.shape[0], channels, like=cols)
    return cols


def col2im(cols, kernel: tuple[int, int], stride: tuple[int, int], out_hw: tuple[int, int], x_padded):
    """The adjoint of :func:`im2col`: ``x_padded[n, c, i + sh a, j + sw b] += cols[c, i, j, n, a, b]``.

    Accumulates into ``x_padded`` (zero it first for a plain col2im); returns it. Within one offset no pixel
    repeats, so each in-place add on a strided slice is exact; blocks of channels touch disjoint pixels.
    """
    xp = get_array_module(cols)
    (kh, kw), (sh, sw), (oh, ow) = kernel, stride, out_hw

    def channels(c0, c1):
        for i in range(kh):
            for j in range(kw):
                window = x_padded[:, c0:c1, i:i + sh * oh:sh, j:j + sw * ow:sw]
                xp.add(window, cols[c0:c1, i, j].transpose(1, 0, 2, 3), out=window)
    parallel.split_large(cols.size, cols.shape[0], channels, like=cols)
    return x_padded


def im2col_batch_last(x_padded, kernel: tuple[int, int], stride: tuple[int, int], out_hw: tuple[int, int], cols):
    """:func:`im2col` with the batch axis innermost: ``cols[c, i, j, a, b, n] = x_padded[c, i + sh a, j + sw b, n]``.

    ``x_padded`` is (C, Hp, Wp, N) and ``cols`` (C, kh, kw, OH, OW, N); returns ``cols``.
    """
    xp = get_array_module(x_padded)
    (kh, kw), (sh, sw), (oh, ow) = kernel, stride, out_hw

    def channels(c0, c1):
        for i in range(kh):
            for j in range(kw):
                xp.copyto(cols[c0:c1, i, j], x_padded[c0:c1, i:i + sh * oh:sh, j:j + sw * ow:sw, :])
    parallel.split_large(cols.size, cols.shape[0], channels, like=cols)
    return cols


def col2im_batch_last(cols, kernel: tuple[int, int], stride: tuple[int, int], out_hw: tuple[int, int], x_padded):
    """:func:`col2im` with the batch axis innermost: ``x_padded[c, i + sh a, j + sw b, n] += cols[c, i, j, a, b, n]``.

    ``cols`` is (C, kh, kw, OH, OW, N) and ``x_padded`` (C, Hp, Wp, N). The same sums in the same order per pixel;
    each strided add walks runs of N contiguous values (a whole row of OW·N at stride 1) instead of OW, which
    is what makes col2im slow for small images at a large batch.
    """
    xp = get_array_module(cols)
    (kh, kw), (sh, sw), (oh, ow) = kernel, stride, out_hw

    def channels(c0, c1):
        for i in range(kh):
            for j in range(kw):
                window = x_padded[c0:c1, i:i + sh * oh:sh, j:j + sw * ow:sw, :]
                xp.add(window, cols[c0:c1, i, j], out=window)
    parallel.split_large(cols.size, cols.shape[0], channels, like=cols)
    return x_padded


def sum_taps(taps, stride: tuple[int, int], out_hw: tuple[int, int], y):
    """``y[o, n, a, b] = sum over (i, j) of taps[o, i, j, n, sh a + i, sw b + j]`` (module docstring's :math:`R`).

    ``taps`` is (O, kh, kw, N, Hp, Wp) and ``y`` (O, N, OH, OW), overwritten; returns ``y``. One strided-slice
    add per kernel offset.
    """
    xp = get_array_module(taps)
    _, kh, kw = taps.shape[:3]
    (sh, sw), (oh, ow) = stride, out_hw
    for i in range(kh):
        for j in range(kw):
            window = taps[:, i, j, :, i:i + sh * oh:sh, j:j + sw * ow:sw]
            if i == 0 and j == 0:
                xp.copyto(y, window)
            else:
                xp.add(y, window, out=y)
    return y


def spread_taps(g, stride: tuple[int, int], taps):
    """The adjoint of :func:`sum_taps`: ``taps[o, i, j, n, sh a + i, sw b + j] = g[o, n, a, b]``, zero elsewhere.

    Overwrites ``taps`` (O, kh, kw, N, Hp, Wp) from ``g`` (O, N, OH, OW); returns it. Each (i, j) plane takes one
    window, so a plain assignment is exact.
    """
    _, kh, kw = taps.shape[:3]
    (sh, sw), (oh, ow) = stride, g.shape[2:]
    taps.fill(0)
    for i in range(kh):
        for j in range(kw):
            taps[:, i, j, :, i:i + sh * oh:sh, j:j + sw * ow:sw] = g
    return taps


def per_image_product(a, b, transpose_b: bool = False):
    """``a @ b[n]`` (or ``a[n] @ b[n].T`` with ``transpose_b``, ``a`` then batched too) for every image n: a
    batched product whose blocks of images run on the block pool (:mod:`minigan.parallel`). Each image's product
    is the same whatever the blocks, so the result is bit-identical for any number of workers."""
    xp = get_array_module(b)
    n = b.shape[0]
    if transpose_b:
        out = xp.empty((n, a.shape[1], b.shape[1]), b.dtype)
        block = lambda i, j: xp.matmul(a[i:j], b[i:j].transpose(0, 2, 1), out=out[i:j])  # noqa: E731
    else:
        out = xp.empty((n, a.shape[0], b.shape[2]), b.dtype)
        block = lambda i, j: xp.matmul(a, b[i:j], out=out[i:j])  # noqa: E731
    parallel.split_large(out.size + b.size, n, block, like=out)
    return out


def conv_init(weight_shape: tuple, fan_in: int, n_bias: int, init: Any, init_std: float, rng: Any, dtype):
    """Initial (W, b) on the host, drawn from one seeded generator (W first, then b); b is None if n_bias is 0.

    ``init``:

    * ``"pytorch"`` (default): PyTorch's default for conv layers, ``kaiming_uniform_(a=sqrt(5))``, which is
      W ~ U(±1/sqrt(fan_in)), and b ~ U(±1/sqrt(fan_in));
    * ``"normal"``: W ~ N(0, init_std²) (DCGAN: ``init_std=0.02``), b = 0;
    * ``"zeros"``: W = 0, b = 0.
    """
    gen = make_generator(rng)
    if init == "pytorch":
        bound = 1.0 / math.sqrt(fan_in)
        W = gen.uniform(-bound, bound, weight_shape)
        b = gen.uniform(-bound, bound, n_bias)
    elif init == "normal":
        if isinstance(init_std, bool) or not isinstance(init_std, (int, float)) or not init_std >= 0:
            raise ValueError(f"init_std must be a non-negative number, got {init_std!r}")
        W = gen.normal(0.0, float(init_std), weight_shape)
        b = np.zeros(n_bias)
    elif init == "zeros":
        W, b = np.zeros(weight_shape), np.zeros(n_bias)
    else:
        raise ValueError(f"unknown initialiser {init!r}: give 'pytorch', 'normal' or 'zeros'")
    return W.astype(dtype), (b.astype(dtype) if n_bias else None)


class _ConvBase(Layer):
    """What Conv2d and ConvTranspose2d share: hyper-parameters, parameters, padding and crop helpers."""

    def __init__(self, in_channels, out_channels, kernel_size, stride, padding, bias, init, init_std, rng,
                 dtype, name, weight_shape_of, fan_in_of):
        super().__init__(name)
        kind = type(self).__name__
        self.in_channels = positive_int(in_channels, "in_channels", kind)
        self.out_channels = positive_int(out_channels, "out_channels", kind)
        self.kernel_size = pair(kernel_size, "kernel_size", kind, minimum=1)
        self.stride = pair(stride, "stride", kind, minimum=1)
        self.padding = pair(padding, "padding", kind, minimum=0)
        self.bias = bool(bias)
        shape = weight_shape_of(self.in_channels, self.out_channels, *self.kernel_size)
        fan_in = fan_in_of(self.in_channels, self.out_channels, *self.kernel_size)
        W, b = conv_init(shape, fan_in, self.out_channels if self.bias else 0, init, init_std, rng, dtype)
        params = {"W": W} if b is None else {"W": W, "b": b}
        self._params = backend.to_device(params)
        self._grads = backend.to_device({k: np.zeros_like(v) for k, v in params.items()})
        self._cache: dict[str, Any] | None = None

    def _zeroed(self, key: str, shape: tuple, pad: tuple[int, int], like):
        """A zero array of ``shape``: fresh if ``pad`` is (0, 0) (it will be returned as is), else a reused
        scratch array (only its interior will be copied out)."""
        xp = get_array_module(like)
        if pad == (0, 0):
            return xp.zeros(shape, like.dtype)
        buf = self._buffer(key, shape, like.dtype, like)
        parallel.fill(buf, 0)
        return buf

    def _padded(self, key: str, x, pad: tuple[int, int], layout: str = "nchw"):
        """``x`` (N, C, H, W) zero-padded by ``pad`` into a reused scratch array laid out as ``layout``: "nchw"
        (``x`` itself when there is no padding), "cnhw" (channels first, for the tap planes) or "chwn" (batch
        innermost, for the batch-last columns); the last two are always a scratch copy."""
        if pad == (0, 0) and layout == "nchw":
            return x
        order = {"nchw": (0, 1, 2, 3), "cnhw": (1, 0, 2, 3), "chwn": (1, 2, 3, 0)}[layout]
        x = x.transpose(order)
        rows, cols = order.index(2), order.index(3)  # where H and W went
        shape = list(x.shape)
        shape[rows] += 2 * pad[0]
        shape[cols] += 2 * pad[1]
        out = self._buffer(key, tuple(shape), x.dtype, x)
        interior = [slice(None)] * 4
        for axis, p in ((rows, pad[0]), (cols, pad[1])):
            if p:
                edge = [slice(None)] * 4
                edge[axis] = slice(0, p)
                out[tuple(edge)] = 0
                edge[axis] = slice(p + x.shape[axis], None)
                out[tuple(edge)] = 0
            interior[axis] = slice(p, p + x.shape[axis])
        parallel.copyto(out[tuple(interior)], x)
        return out

    def _scatter_batch_last(self, key: str, cols, size: tuple[int, int]):
        """:func:`col2im_batch_last` of ``cols`` (C, kh, kw, GH, GW, N) into a zeroed scratch (C, Hp, Wp, N), then
        its (h, w) = ``size`` interior as a fresh NCHW array: Conv2d's input gradient and ConvTranspose2d's output
        in the batch-innermost order."""
        (ph, pw), (h, w) = self.padding, size
        c, n = cols.shape[0], cols.shape[-1]
        padded = self._buffer(key, (c, h + 2 * ph, w + 2 * pw, n), cols.dtype, cols)
        parallel.fill(padded, 0)
        col2im_batch_last(cols, self.kernel_size, self.stride, cols.shape[3:5], padded)
        out = get_array_module(cols).empty((n, c, h, w), cols.dtype)
        parallel.copyto(out, padded[:, ph:ph + h, pw:pw + w, :].transpose(3, 0, 1, 2))
        return out

    @staticmethod
    def _crop(a, pad: tuple[int, int], h: int, w: int):
        """The (h, w) interior of ``a`` after ``pad`` rows/columns, as a fresh array (``a`` itself if no pad)."""
        if pad == (0, 0):
            return a
        ph, pw = pad
        out = get_array_module(a).empty(a.shape[:2] + (h, w), a.dtype)
        parallel.copyto(out, a[:, :, ph:ph + h, pw:pw + w])
        return out

    def _forget(self):
        self._cache = None

    def _require_forward(self):
        if self._cache is None:
            raise RuntimeError(f"{type(self).__name__} {self.path}: backward called before forward")
        return self._cache


class Conv2d(_ConvBase):
    r"""2-D convolution (cross-correlation, as in PyTorch) of an NCHW batch, ``W`` shaped (out, in, kh, kw).

    .. math:: Y[n, o, a, b] = b_o + \sum_{c, i, j} W[o, c, i, j]\, \tilde X[n, c, s a + i, s b + j],

    computed as :math:`Y_2 = W_2 C + b\mathbf 1^\top` with :math:`C = S\tilde X` the column matrix (module
    docstring), :math:`W_2` = ``W.reshape(out, in·kh·kw)`` and :math:`Y_2` = :math:`Y` as (out, N·OH·OW).

    Gradients. With :math:`G_2` the upstream gradient laid out like :math:`Y_2`:

    * :math:`Y_2` is linear in :math:`W_2` with :math:`\partial Y_2[o, m]/\partial W_2[o, r] = C[r, m]`, so
      :math:`\partial L/\partial W_2 = G_2 C^\top` (one product), reshaped to (out, in, kh, kw);
    * :math:`b_o` is added at every (n, a, b): :math:`\partial L/\partial b_o = \sum_{n,a,b} G[n, o, a, b]`;
    * :math:`\partial L/\partial C = W_2^\top G_2` (one product), and since :math:`C = S\tilde X` is linear,
      :math:`\partial L/\partial \tilde X = S^\top (W_2^\top G_2)` = col2im (module docstring): each padded
      pixel collects every (offset, output position) that read it;
    * padding is :math:`\tilde X = P X` with :math:`P` the embedding into zeros, whose adjoint is the crop:
      :math:`\partial L/\partial X` is the interior of :math:`\partial L/\partial \tilde X`.

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size, stride, padding : int or (int, int)
        As in ``torch.nn.Conv2d``; padding is zeros on both sides.
    bias : bool, default True
        Without a bias the layer has only ``W`` (for a convolution followed by a normalisation).
    init : {"pytorch", "normal", "zeros"}
        See :func:`conv_init`; the fan-in is in·kh·kw. DCGAN uses ``init="normal"`` with ``init_std=0.02``.
    rng : int, numpy Generator or None
        Seed or host generator of the initial weights (the same numbers on every backend).
    dtype : numpy dtype, default float32
    method : {"auto", "columns", "taps"}
        ``"columns"``: the column matrix above. ``"taps"``: the tap planes (module docstring), for layers with
        few output channels. ``"auto"`` (default) takes whichever intermediate is smaller for the input's shape.
        Both compute the same function; they differ in summation order only.

    Notes
    -----
    By tap planes (:meth:`_forward_taps`), with :math:`T = W'\tilde X` and :math:`Y = RT`: :math:`\partial
    L/\partial T = R^\top G` (:func:`spread_taps`), then :math:`\partial L/\partial W' = (R^\top G)\,\tilde
    X^\top` and :math:`\partial L/\partial \tilde X = W'^\top (R^\top G)`, one product each; the crop and
    the bias are as above.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, bias: bool = True,
                 init: str = "pytorch", init_std: float = 0.02, rng: Any = None, dtype=DEFAULT_DTYPE,
                 name: str | None = None, method: str = "auto"):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, bias, init, init_std, rng, dtype,
                         name, weight_shape_of=lambda i, o, kh, kw: (o, i, kh, kw),
                         fan_in_of=lambda i, o, kh, kw: i * kh * kw)
        if method not in CONV_METHODS:
            raise ValueError(f"Conv2d: method must be one of {', '.join(CONV_METHODS)}, got {method!r}")
        self.method = method

    def uses_taps(self, input_shape: tuple) -> bool:
        """Whether an input of this shape goes by tap planes (smaller than the column matrix, or asked for)."""
        if self.method != "auto":
            return self.method == "taps"
        n, c, h, w = input_shape
        _, o, oh, ow = self.output_shape(input_shape)
        ph, pw = self.padding
        return o * (h + 2 * ph) * (w + 2 * pw) < c * oh * ow

    def output_shape(self, input_shape: tuple) -> tuple:
        """(N, out, OH, OW) for an input of shape (N, in, H, W)."""
        n, _, h, w = input_shape
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        return (n, self.out_channels, conv_output_size(h, kh, sh, ph), conv_output_size(w, kw, sw, pw))

    def forward(self, x, train: bool | None = None):
        check_batch(self, x, self.in_channels)
        n, c, h, w = x.shape
        _, o, oh, ow = self.output_shape(x.shape)
        if oh < 1 or ow < 1:
            raise ValueError(f"Conv2d {self.path}: input of spatial size {h}x{w} is smaller than the kernel "
                             f"{self.kernel_size} with padding {self.padding}")
        if self.uses_taps(x.shape):
            return self._forward_taps(x, oh, ow)
        if self.batch_last(x.shape):
            return self._forward_batch_last(x, oh, ow)
        if self.batch_first(x.shape):
            return self._forward_batch_first(x, oh, ow)
        kh, kw = self.kernel_size
        cols = self._buffer("cols", (c, kh, kw, n, oh, ow), x.dtype, x)
        im2col(self._padded("x_padded", x, self.padding), self.kernel_size, self.stride, (oh, ow), cols)
        self._cache = {"cols": cols.reshape(c * kh * kw, -1), "x_shape": x.shape}
        return self._output(self._cache["cols"], "y2", (o, n, oh, ow), (1, 0, 2, 3))

    def _output(self, cols, key: str, y2_shape: tuple, to_nchw: tuple):
        r""":math:`Y_2 = W_2 C + b\mathbf 1^\top`, then Y as a fresh NCHW array: ``y2_shape`` is the product's
        shape with its columns unfolded ((O, N, OH, OW) or the batch-last (O, OH, OW, N)), ``to_nchw`` the
        transposition that takes it to (N, O, OH, OW)."""
        xp = get_array_module(cols)
        o = self.out_channels
        y2 = self._buffer(key, (o, cols.shape[1]), cols.dtype, cols)
        xp.matmul(self._params["W"].reshape(o, -1), cols, out=y2)
        if self.bias:
            y2 += self._params["b"].reshape(o, 1)
        y2 = y2.reshape(y2_shape).transpose(to_nchw)
        y = xp.empty(y2.shape, cols.dtype)
        parallel.copyto(y, y2)
        return y

    def backward(self, dout):
        cache = self._require_forward()
        if "taps_x" in cache:
            return self._backward_taps(dout, cache)
        if not (self.requires_grad or self.input_grad):
            return None
        if "cols_batch_first" in cache:
            return self._backward_batch_first(dout, cache)
        xp = get_array_module(dout)
        n, c, h, w = cache["x_shape"]
        _, o, oh, ow = dout.shape
        kh, kw = self.kernel_size
        k = c * kh * kw
        # G2 and the column gradient in the columns' order: (n, a, b), or (a, b, n) batch-innermost
        batch_last = "cols_batch_last" in cache
        suffix, order, grid = ("_batch_last", (1, 2, 3, 0), (oh, ow, n)) if batch_last else ("", (1, 0, 2, 3),
                                                                                              (n, oh, ow))
        g2 = self._parameter_grads(dout, cache["cols" + suffix], "g2" + suffix, order)
        if not self.input_grad:
            return None
        dcols = self._buffer("dcols" + suffix, (c, kh, kw, *grid), dout.dtype, dout)
        xp.matmul(self._params["W"].reshape(o, k).T, g2, out=dcols.reshape(k, -1))
        if batch_last:  # the scatter adds runs of N values
            return self._scatter_batch_last("dx_padded_batch_last", dcols, (h, w))
        ph, pw = self.padding
        dx_padded = self._zeroed("dx_padded", (n, c, h + 2 * ph, w + 2 * pw), self.padding, dout)
        col2im(dcols, self.kernel_size, self.stride, (oh, ow), dx_padded)
        return self._crop(dx_padded, self.padding, h, w)

    def _parameter_grads(self, dout, cols, key: str, order: tuple):
        r""":math:`G_2`, the upstream gradient laid out like :math:`Y_2` (``dout`` transposed by ``order``, the
        columns' order), into a scratch array; writes :math:`\partial L/\partial W_2 = G_2 C^\top` and
        :math:`\partial L/\partial b` when the layer's parameters need gradients. Returns :math:`G_2`."""
        xp = get_array_module(dout)
        o = self.out_channels
        g2 = self._buffer(key, (o, cols.shape[1]), dout.dtype, dout)
        parallel.copyto(g2.reshape(dout.transpose(order).shape), dout.transpose(order))
        if self.requires_grad:
            xp.matmul(g2, cols.T, out=self._grads["W"].reshape(o, -1))
            if self.bias:
                g2.sum(axis=1, out=self._grads["b"])
        return g2

    def batch_last(self, input_shape: tuple) -> bool:
        """Whether the column route orders its columns (a, b, n), the batch innermost (:func:`im2col_batch_last`,
        :func:`col2im_batch_last`): when the batch is longer than an output row, so the strided copies move runs
        of N values instead of OW, and the column matrix (C·kh·kw rows) outweighs the transposing copies of the
        input and the output (C and O rows) this order needs. Measured at batch 64 on the DCGAN and pix2pix
        shapes (all with C·kh·kw >= 8·O): for D's 64 -> 128 layer at two threads, im2col 2.25 -> 0.60 ms and the
        whole forward outside the product 2.7 -> 1.3 ms; the input gradient's scatter 1.5-5x faster at one
        thread. A one-channel input (C·kh·kw = 16 against O = 64) is slower this way: the copies dominate."""
        n, c, _, _ = input_shape
        ow = self.output_shape(input_shape)[3]
        return n > ow and c * self.kernel_size[0] * self.kernel_size[1] >= 8 * self.out_channels

    def _forward_batch_last(self, x, oh: int, ow: int):
        """:meth:`forward` with the columns ordered (a, b, n): the input padded as (C, Hp, Wp, N), the same
        product, and one transposing copy of (O, OH, OW, N) back to NCHW."""
        n, c = x.shape[:2]
        kh, kw = self.kernel_size
        cols = self._buffer("cols_batch_last", (c, kh, kw, oh, ow, n), x.dtype, x)
        im2col_batch_last(self._padded("x_padded_batch_last", x, self.padding, layout="chwn"), self.kernel_size,
                          self.stride, (oh, ow), cols)
        self._cache = {"cols_batch_last": cols.reshape(c * kh * kw, -1), "x_shape": x.shape}
        return self._output(self._cache["cols_batch_last"], "y2_batch_last", (self.out_channels, oh, ow, n),
                            (3, 0, 1, 2))

    def batch_first(self, input_shape: tuple) -> bool:
        """Whether the column route keeps one column matrix per image, (N, C·kh·kw, OH·OW), and multiplies image
        by image (a batched product): when the column matrix has fewer rows than the output (C·kh·kw < O, a
        first layer on one-channel images), the product's output in NCHW needs no transposing copy, and that
        copy of the larger side is what such a layer spends its time on. Measured on D's 1 -> 64 layer at batch
        64, two threads: the forward outside im2col 0.66 -> 0.27 ms, the weight gradient 0.47 -> 0.29 ms."""
        return not self.batch_last(input_shape) and input_shape[1] * self.kernel_size[0] * self.kernel_size[1] \
            < self.out_channels

    def _forward_batch_first(self, x, oh: int, ow: int):
        r""":meth:`forward` image by image: :math:`Y_n = W_2 C_n + b\mathbf 1^\top`, with :math:`C_n` image
        :math:`n`'s columns, computed as one batched product straight into NCHW."""
        n, c = x.shape[:2]
        kh, kw = self.kernel_size
        cols = self._buffer("cols_batch_first", (n, c, kh, kw, oh, ow), x.dtype, x)
        # im2col's (C, kh, kw, N, OH, OW) order, as a view of this buffer
        im2col(self._padded("x_padded", x, self.padding), self.kernel_size, self.stride, (oh, ow),
               cols.transpose(1, 2, 3, 0, 4, 5))
        cols = cols.reshape(n, c * kh * kw, oh * ow)
        y = per_image_product(self._params["W"].reshape(self.out_channels, -1), cols)
        if self.bias:
            y += self._params["b"].reshape(1, -1, 1)
        self._cache = {"cols_batch_first": cols, "x_shape": x.shape}
        return y.reshape(n, self.out_channels, oh, ow)

    def _backward_batch_first(self, dout, cache):
        r""":meth:`backward` image by image: :math:`\partial L/\partial W_2 = \sum_n G_n C_n^\top` (a batched product,
        then the sum over images) and :math:`\partial L/\partial C_n = W_2^\top G_n`, both from the NCHW
        upstream gradient as it is."""
        n, c, h, w = cache["x_shape"]
        _, o, oh, ow = dout.shape
        kh, kw = self.kernel_size
        cols, g = cache["cols_batch_first"], dout.reshape(n, o, oh * ow)
        if self.requires_grad:
            per_image_product(g, cols, transpose_b=True).sum(axis=0, out=self._grads["W"].reshape(o, -1))
            if self.bias:
                g.sum(axis=2).sum(axis=0, out=self._grads["b"])
        if not self.input_grad:
            return None
        dcols = per_image_product(self._params["W"].reshape(o, -1).T, g).reshape(n, c, kh, kw, oh, ow)
        ph, pw = self.padding
        dx_padded = self._zeroed("dx_padded", (n, c, h + 2 * ph, w + 2 * pw), self.padding, dout)
        col2im(dcols.transpose(1, 2, 3, 0, 4, 5), self.kernel_size, self.stride, (oh, ow), dx_padded)
        return self._crop(dx_padded, self.padding, h, w)

    def _forward_taps(self, x, oh: int, ow: int):
        """:math:`Y = R(W'\tilde X) + b`: one product into the tap planes, then their shifted sum."""
        xp = get_array_module(x)
        n, c, h, w = x.shape
        o, (kh, kw) = self.out_channels, self.kernel_size
        k = o * kh * kw
        x_t = self._padded("taps_x", x, self.padding, layout="cnhw")  # (C, N, Hp, Wp)
        hp, wp = x_t.shape[2:]
        w_t = self._buffer("taps_w", (o, kh, kw, c), x.dtype, x)
        parallel.copyto(w_t, self._params["W"].transpose(0, 2, 3, 1))
        taps = self._buffer("taps", (o, kh, kw, n, hp, wp), x.dtype, x)
        xp.matmul(w_t.reshape(k, c), x_t.reshape(c, n * hp * wp), out=taps.reshape(k, n * hp * wp))
        y_t = sum_taps(taps, self.stride, (oh, ow), self._buffer("taps_y", (o, n, oh, ow), x.dtype, x))
        if self.bias:
            y_t += self._params["b"].reshape(o, 1, 1, 1)
        y = xp.empty((n, o, oh, ow), x.dtype)
        parallel.copyto(y, y_t.transpose(1, 0, 2, 3))
        self._cache = {"taps_x": x_t, "taps_w": w_t, "x_shape": x.shape}
        return y

    def _backward_taps(self, dout, cache):
        xp = get_array_module(dout)
        n, c, h, w = cache["x_shape"]
        x_t, w_t = cache["taps_x"], cache["taps_w"]
        hp, wp = x_t.shape[2:]
        o, (kh, kw) = self.out_channels, self.kernel_size
        k = o * kh * kw
        dtaps = self._buffer("dtaps", (o, kh, kw, n, hp, wp), dout.dtype, dout)
        spread_taps(dout.transpose(1, 0, 2, 3), self.stride, dtaps)
        dtaps = dtaps.reshape(k, n * hp * wp)
        if self.requires_grad:
            dw_t = self._buffer("taps_dw", (k, c), dout.dtype, dout)
            xp.matmul(dtaps, x_t.reshape(c, n * hp * wp).T, out=dw_t)
            parallel.copyto(self._grads["W"], dw_t.reshape(o, kh, kw, c).transpose(0, 3, 1, 2))
            if self.bias:
                dout.sum(axis=(0, 2, 3), out=self._grads["b"])
        if not self.input_grad:
            return None
        dx_t = self._buffer("taps_dx", (c, n, hp, wp), dout.dtype, dout)
        xp.matmul(w_t.reshape(k, c).T, dtaps, out=dx_t.reshape(c, n * hp * wp))
        ph, pw = self.padding
        dx = xp.empty((n, c, h, w), dout.dtype)
        parallel.copyto(dx, dx_t[:, :, ph:ph + h, pw:pw + w].transpose(1, 0, 2, 3))
        return dx


class ConvTranspose2d(_ConvBase):
    r"""Transposed convolution: the adjoint of :class:`Conv2d` in its input, ``W`` shaped (in, out, kh, kw).

    With :math:`X_2` the input as (in, N·H·W) and :math:`W_2` = ``W.reshape(in, out·kh·kw)``:

    .. math:: \tilde Y = S^\top (W_2^\top X_2), \qquad Y = \text{crop}_p(\tilde Y) + b,

    i.e. :math:`\tilde Y[n, o, s a + i, s b + j] \mathrel{+}= \sum_c X[n, c, a, b]\, W[c, o, i, j]`: each input
    pixel stamps the kernel, scaled, onto the output at stride :math:`s`. :math:`\tilde Y` has
    :math:`(H-1)s + k_h + \text{output\_padding}` rows, of which the last ``output_padding`` receive nothing;
    cropping :math:`p` on each side leaves :math:`OH = (H-1)s - 2p + k_h + \text{output\_padding}`, PyTorch's
    size. (``output_padding`` picks among the input sizes that a stride-:math:`s` Conv2d maps to the same
    output size; it must be smaller than the stride.)

    Gradients. Let :math:`\tilde G = \text{pad}_p(G)`, the adjoint of the crop (zeros outside). Then

    * :math:`\partial L/\partial(W_2^\top X_2) = S \tilde G` = im2col of :math:`\tilde G`, call it :math:`D`
      (out·kh·kw, N·H·W): the adjoint of :math:`S^\top` is :math:`S`;
    * :math:`\partial L/\partial X_2 = W_2 D` (one product): that is, the input gradient is the *convolution*
      of :math:`G` with :math:`W` (stride :math:`s`, padding :math:`p`);
    * :math:`\partial L/\partial W_2 = X_2 D^\top` (one product);
    * :math:`\partial L/\partial b_o = \sum_{n,a,b} G[n, o, a, b]`.

    Parameters
    ----------
    in_channels, out_channels, kernel_size, stride, padding, bias, rng, dtype
        As for :class:`Conv2d` (and ``torch.nn.ConvTranspose2d``).
    output_padding : int or (int, int), default 0
        Extra rows/columns on the bottom/right of the output; smaller than the stride.
    init : {"pytorch", "normal", "zeros"}
        See :func:`conv_init`. The fan-in is PyTorch's for this weight layout, out·kh·kw (the size of
        ``W[0]``), so ``"pytorch"`` draws U(±1/sqrt(out·kh·kw)) as ``torch.nn.ConvTranspose2d`` does.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, output_padding=0,
                 bias: bool = True, init: str = "pytorch", init_std: float = 0.02, rng: Any = None,
                 dtype=DEFAULT_DTYPE, name: str | None = None):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, bias, init, init_std, rng,
                         dtype, name, weight_shape_of=lambda i, o, kh, kw: (i, o, kh, kw),
                         fan_in_of=lambda i, o, kh, kw: o * kh * kw)
        self.output_padding = pair(output_padding, "output_padding", "ConvTranspose2d", minimum=0)
        if any(op >= s for op, s in zip(self.output_padding, self.stride)):
            raise ValueError(f"ConvTranspose2d: output_padding {self.output_padding} must be smaller than the "
                             f"stride {self.stride}")

    def output_shape(self, input_shape: tuple) -> tuple:
        """(N, out, OH, OW) for an input of shape (N, in, H, W): OH = (H - 1) s - 2p + kh + output_padding."""
        n, _, h, w = input_shape
        size = [(d - 1) * s - 2 * p + k + op for d, s, p, k, op in
                zip((h, w), self.stride, self.padding, self.kernel_size, self.output_padding)]
        return (n, self.out_channels, *size)

    def forward(self, x, train: bool | None = None):
        check_batch(self, x, self.in_channels)
        xp = get_array_module(x)
        n, c, h, w = x.shape
        _, o, oh, ow = self.output_shape(x.shape)
        if oh < 1 or ow < 1:
            raise ValueError(f"ConvTranspose2d {self.path}: padding {self.padding} leaves no output for an "
                             f"input of spatial size {h}x{w}")
        if self.batch_last(x.shape):
            return self._forward_batch_last(x, oh, ow)
        kh, kw = self.kernel_size
        k = o * kh * kw
        batch_first = self.batch_first(x.shape)
        if batch_first:  # the input as it is, one (in, H·W) matrix per image, and a batched product
            x2 = x.reshape(n, c, h * w)
            cols = per_image_product(self._params["W"].reshape(c, k).T, x2).reshape(n, o, kh, kw, h, w)
            cols = cols.transpose(1, 2, 3, 0, 4, 5)  # col2im's (out, kh, kw, N, H, W) order, as a view
        else:
            x2 = self._buffer("x2", (c, n * h * w), x.dtype, x)
            parallel.copyto(x2.reshape(c, n, h, w), x.transpose(1, 0, 2, 3))
            cols = self._buffer("cols", (o, kh, kw, n, h, w), x.dtype, x)
            xp.matmul(self._params["W"].reshape(c, k).T, x2, out=cols.reshape(k, n * h * w))
        ph, pw = self.padding
        y_full = self._zeroed("y_full", (n, o, oh + 2 * ph, ow + 2 * pw), self.padding, x)
        col2im(cols, self.kernel_size, self.stride, (h, w), y_full)
        y = self._crop(y_full, self.padding, oh, ow)
        if self.bias:
            y += self._params["b"].reshape(1, o, 1, 1)
        self._cache = {"x2": x2, "x_shape": x.shape, "batch_first": batch_first}
        return y

    def backward(self, dout):
        cache = self._require_forward()
        if "x2_batch_last" in cache:
            return self._backward_batch_last(dout, cache)
        if cache["batch_first"]:
            return self._backward_batch_first(dout, cache)
        xp = get_array_module(dout)
        n, c, h, w = cache["x_shape"]
        o = self.out_channels
        kh, kw = self.kernel_size
        k = o * kh * kw
        dcols = self._buffer("dcols", (o, kh, kw, n, h, w), dout.dtype, dout)
        im2col(self._padded("dout_padded", dout, self.padding), self.kernel_size, self.stride, (h, w), dcols)
        dcols = dcols.reshape(k, n * h * w)
        if self.requires_grad:
            xp.matmul(cache["x2"], dcols.T, out=self._grads["W"].reshape(c, k))
            if self.bias:
                dout.sum(axis=(0, 2, 3), out=self._grads["b"])
        if not self.input_grad:
            return None
        dx2 = self._buffer("dx2", (c, n * h * w), dout.dtype, dout)
        xp.matmul(self._params["W"].reshape(c, k), dcols, out=dx2)
        dx = xp.empty((n, c, h, w), dout.dtype)
        parallel.copyto(dx, dx2.reshape(c, n, h, w).transpose(1, 0, 2, 3))
        return dx

    def _backward_batch_first(self, dout, cache):
        r""":meth:`backward` image by image: :math:`D_n`, the columns of image :math:`n`'s padded upstream gradient
        (N, out·kh·kw, H·W); :math:`\partial L/\partial W_2 = \sum_n X_n D_n^\top` and :math:`\partial L/\partial
        X_n = W_2 D_n`, which is NCHW as it comes."""
        n, c, h, w = cache["x_shape"]
        o, (kh, kw) = self.out_channels, self.kernel_size
        k = o * kh * kw
        dcols = self._buffer("dcols_batch_first", (n, o, kh, kw, h, w), dout.dtype, dout)
        im2col(self._padded("dout_padded", dout, self.padding), self.kernel_size, self.stride, (h, w),
               dcols.transpose(1, 2, 3, 0, 4, 5))  # im2col's (out, kh, kw, N, H, W) order, as a view
        dcols = dcols.reshape(n, k, h * w)
        if self.requires_grad:
            per_image_product(cache["x2"], dcols, transpose_b=True).sum(axis=0, out=self._grads["W"].reshape(c, k))
            if self.bias:
                dout.sum(axis=(0, 2, 3), out=self._grads["b"])
        if not self.input_grad:
            return None
        return per_image_product(self._params["W"].reshape(c, k), dcols).reshape(n, c, h, w)

    def batch_first(self, input_shape: tuple) -> bool:
        """Whether to compute image by image (batched products on the NCHW input and upstream gradient as they
        are): when the column matrix has fewer rows than the input has channels (out·kh·kw < in, a last layer to
        one-channel images), so the transposing copies of the input and of its gradient, the larger side, are
        what the layer would spend its time on (Conv2d.batch_first is the same choice)."""
        return not self.batch_last(input_shape) and self.out_channels * self.kernel_size[0] * self.kernel_size[1] \
            < input_shape[1]

    def batch_last(self, input_shape: tuple) -> bool:
        """Whether to compute with the batch axis innermost (columns ordered (h, w, n); :func:`col2im_batch_last`
        and :func:`im2col_batch_last`): when the batch is longer than an input row and the column matrix
        (out·kh·kw rows) outweighs the transposing copies of the input (in rows) this order needs. Measured at
        one thread on the DCGAN and pix2pix up-convolutions at batch 64 (out·kh·kw >= 4·in): 1.1-3.5x less time
        outside the product in the forward pass; slower for a one-channel output (16 rows against 64)."""
        n, c, _, w = input_shape
        return n > w and self.out_channels * self.kernel_size[0] * self.kernel_size[1] >= 4 * c

    def _forward_batch_last(self, x, oh: int, ow: int):
        """:meth:`forward` with the columns ordered (h, w, n): the same products and sums."""
        xp = get_array_module(x)
        n, c, h, w = x.shape
        o, (kh, kw) = self.out_channels, self.kernel_size
        k = o * kh * kw
        x2 = self._buffer("x2_batch_last", (c, h * w * n), x.dtype, x)
        parallel.copyto(x2.reshape(c, h, w, n), x.transpose(1, 2, 3, 0))
        cols = self._buffer("cols_batch_last", (o, kh, kw, h, w, n), x.dtype, x)
        xp.matmul(self._params["W"].reshape(c, k).T, x2, out=cols.reshape(k, h * w * n))
        y = self._scatter_batch_last("y_full_batch_last", cols, (oh, ow))
        if self.bias:
            y += self._params["b"].reshape(1, o, 1, 1)
        self._cache = {"x2_batch_last": x2, "x_shape": x.shape}
        return y

    def _backward_batch_last(self, dout, cache):
        xp = get_array_module(dout)
        n, c, h, w = cache["x_shape"]
        _, o, oh, ow = dout.shape
        (kh, kw), (ph, pw) = self.kernel_size, self.padding
        k = o * kh * kw
        dout_padded = self._buffer("dout_padded_batch_last", (o, oh + 2 * ph, ow + 2 * pw, n), dout.dtype, dout)
        if ph or pw:
            parallel.fill(dout_padded, 0)
        parallel.copyto(dout_padded[:, ph:ph + oh, pw:pw + ow, :], dout.transpose(1, 2, 3, 0))
        dcols = self._buffer("dcols_batch_last", (o, kh, kw, h, w, n), dout.dtype, dout)
        im2col_batch_last(dout_padded, self.kernel_size, self.stride, (h, w), dcols)
        dcols = dcols.reshape(k, h * w * n)
        if self.requires_grad:
            xp.matmul(cache["x2_batch_last"], dcols.T, out=self._grads["W"].reshape(c, k))
            if self.bias:
                dout.sum(axis=(0, 2, 3), out=self._grads["b"])
        if not self.input_grad:
            return None
        dx2 = self._buffer("dx2_batch_last", (c, h * w * n), dout.dtype, dout)
        xp.matmul(self._params["W"].reshape(c, k), dcols, out=dx2)
        dx = xp.empty((n, c, h, w), dout.dtype)
        parallel.copyto(dx, dx2.reshape(c, h, w, n).transpose(3, 0, 1, 2))
        return dx
