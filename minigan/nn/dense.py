r"""Dense layers on (N, features) batches: :class:`Linear` (optionally spectrally normalised), :class:`Maxout`
and the projection discriminator's output :class:`ProjectionHead`. Gradients are derived in each class's
docstring in the notation of :mod:`minigan.nn.base`."""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import backend, parallel
from ..backend import get_array_module
from .base import DEFAULT_DTYPE, Layer, _check_input
from .init import init_weights, make_generator

__all__ = ["Linear", "Maxout", "ProjectionHead"]


class Linear(Layer):
    r"""Affine map :math:`Y = XW + \mathbf{1}b^\top`, with ``W`` shaped (in, out).

    Gradients. :math:`Y_{kj} = \sum_i X_{ki}W_{ij} + b_j`, so

    * :math:`\partial Y_{kj}/\partial W_{ij} = X_{ki}` for every row :math:`k`, hence
      :math:`\partial L/\partial W_{ij} = \sum_k X_{ki} G_{kj}`, i.e. :math:`\partial L/\partial W = X^\top G`;
    * :math:`b_j` is added to every row: :math:`\partial L/\partial b = \sum_k G_{k\cdot}` (column sums);
    * :math:`\partial Y_{kj}/\partial X_{ki} = W_{ij}`, hence :math:`\partial L/\partial X = G W^\top`.

    Spectral normalisation (Miyato et al. 2018), ``spectral_norm=True``: the layer computes with
    :math:`\bar W = W/\sigma` in place of :math:`W`, where :math:`\sigma = u^\top W v` estimates the largest
    singular value of :math:`W` by power iteration. ``u`` (in) and ``v`` (out) are buffers (so checkpoints
    keep them and a resumed run continues exactly); each training forward first advances them one step,
    :math:`v \leftarrow W^\top u/\lVert W^\top u\rVert`, :math:`u \leftarrow Wv/\lVert Wv\rVert`, which tracks the top
    singular pair as :math:`W` drifts. Gradient, with :math:`u, v` held (as the paper and every
    implementation do; a gradient check freezes them like dropout masks): the formulas above give
    :math:`\bar G = \partial L/\partial \bar W = X^\top G` and :math:`\partial L/\partial X = G\bar W^\top`; and from
    :math:`d\bar W = dW/\sigma - W\,d\sigma/\sigma^2` with :math:`d\sigma = u^\top dW\,v = \langle uv^\top, dW\rangle`,

    .. math:: \frac{\partial L}{\partial W} = \frac{1}{\sigma}\Big(\bar G - \langle \bar G, \bar W\rangle\, u v^\top\Big).

    Parameters
    ----------
    in_features, out_features : int
    init : float or str
        Weight initialiser (see :func:`init_weights`); biases start at zero.
    rng : int, numpy Generator or None
        Seed or host generator for the initial weights (and, with ``spectral_norm``, the initial ``u``).
    dtype : numpy dtype, default float32
    spectral_norm : bool
        Compute with :math:`W/\sigma(W)` (see above).
    """

    def __init__(self, in_features: int, out_features: int, init: Any = "glorot", rng: Any = None,
                 dtype=DEFAULT_DTYPE, name: str | None = None, spectral_norm: bool = False):
        super().__init__(name)
        for what, value in (("in_features", in_features), ("out_features", out_features)):
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{type(self).__name__}: {what} must be a positive integer, got {value!r}")
        self.in_features, self.out_features = int(in_features), int(out_features)
        gen = make_generator(rng)
        W = init_weights((self.in_features, self.out_features), init, gen, dtype)
        self._params = backend.to_device({"W": W, "b": np.zeros(self.out_features, dtype)})
        self._grads = backend.to_device({"W": np.zeros_like(W), "b": np.zeros(self.out_features, dtype)})
        self._x = None
        self.spectral_norm = bool(spectral_norm)
        self._W = None  # the weight the last forward used: W, or W / sigma
        if self.spectral_norm:
            # Start u, v near the top singular pair (a few power steps from a random u), so that sigma is the
            # top singular value from the first forward, as it is after training steps.
            u, W64 = gen.standard_normal(self.in_features), W.astype(np.float64)
            for _ in range(20):
                v = W64.T @ u
                v /= max(np.linalg.norm(v), 1e-30)
                u = W64 @ v
                u /= max(np.linalg.norm(u), 1e-30)
            self._buffers = backend.to_device({"u": u.astype(dtype), "v": v.astype(dtype)})
            self.frozen = False  # True: training forwards keep u and v (gradient checks)
            self._sigma = None

    def _weight(self, train: bool):
        r"""The weight to compute with: ``W``, or :math:`W/\sigma` after one power-iteration step in training."""
        W = self._params["W"]
        if not self.spectral_norm:
            return W
        xp = get_array_module(W)
        u, v = self._buffers["u"], self._buffers["v"]
        if train and not self.frozen:
            v[...] = W.T @ u
            v /= xp.maximum(xp.linalg.norm(v), 1e-30)
            u[...] = W @ v
            u /= xp.maximum(xp.linalg.norm(u), 1e-30)
        self._sigma = u @ (W @ v)
        W_bar = self._buffer("W_bar", W.shape, W.dtype, W)
        xp.divide(W, self._sigma, out=W_bar)
        return W_bar

    def _weight_grad(self, x, dout):
        r"""Write :math:`\partial L/\partial W` into ``grads["W"]`` from the layer input and upstream gradient."""
        xp = get_array_module(dout)
        gW = self._grads["W"]
        xp.matmul(x.T, dout, out=gW)  # dL/dW, or dL/dW_bar under spectral normalisation
        if self.spectral_norm:
            u, v = self._buffers["u"], self._buffers["v"]
            inner = xp.vdot(gW, self._W)  # <G_bar, W_bar>
            gW -= inner * xp.outer(u, v)
            gW /= self._sigma

    def freeze(self) -> None:
        """Keep ``u`` and ``v`` through training forwards (spectral normalisation; gradient checks)."""
        self.frozen = True

    def unfreeze(self) -> None:
        self.frozen = False

    def forward(self, x, train: bool | None = None):
        _check_input(self, x, self.in_features)
        self._x = x
        self._W = self._weight(self._mode(train))
        y = x @ self._W
        y += self._params["b"]
        return y

    def backward(self, dout):
        if self._x is None:
            raise RuntimeError(f"{type(self).__name__} {self.path}: backward called before forward")
        if self.requires_grad:
            self._weight_grad(self._x, dout)
            backend.column_sum(dout, self._grads["b"])
        if not self.input_grad:
            return None
        return _times_transpose(dout, self._W)

    def _forget(self):
        self._x = self._W = None


def _times_transpose(dout, W):
    r""":math:`G W^\top`, the input gradient of ``x @ W``. With one output column (a discriminator's logit) it is
    the outer product of two vectors, written as a broadcast multiply: the same products to the bit (GEMM with
    k = 1 adds nothing to each), about 10x faster than OpenBLAS's GEMM on it (measured (64, 1) by (1, 6272):
    0.86 -> 0.05 ms at two threads)."""
    if W.shape[1] == 1:
        return dout * W.reshape(1, -1)
    return dout @ W.T


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
                 dtype=DEFAULT_DTYPE, name: str | None = None, spectral_norm: bool = False):
        for what, value in (("units", units), ("pieces", pieces)):
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"Maxout: {what} must be a positive integer, got {value!r}")
        super().__init__(in_features, units * pieces, init, rng, dtype, name, spectral_norm)
        self.units, self.pieces = int(units), int(pieces)
        self._winner = None

    def forward(self, x, train: bool | None = None):
        # Z = XW + b goes into a reused buffer (it never leaves the layer). Pieces of a unit are adjacent
        # columns, so one transposing copy first makes each piece a contiguous (N, units) slice: the running
        # maximum then takes P-1 contiguous passes (strided ones cost ~6x as much). The winner is tracked as
        # max(winner, j * [piece j > running max]): a later piece wins only if *strictly* greater, so ties keep
        # the first maximal piece, and j exceeds every earlier winner. (A masked assignment, copyto(where=),
        # cost 45x a contiguous pass here.) Rows are independent, so blocks of rows run on the block pool.
        _check_input(self, x, self.in_features)
        self._x = x
        xp = get_array_module(x)
        n, units, pieces = x.shape[0], self.units, self.pieces
        z = self._buffer("z", (n, units * pieces), x.dtype, x)
        self._W = self._weight(self._mode(train))
        xp.matmul(x, self._W, out=z)
        if backend.is_device_array(x):
            # On a GPU every pass below is a kernel launch, and the row-block loop ~4·pieces of them per block:
            # one fused kernel instead, which adds the bias as it reads z (the strict backend runs the very
            # passes below, so it tests this path).
            h, self._winner = backend.maxout_forward(z, units, pieces, self._params["b"])
            return h
        z_pieces = self._buffer("z_pieces", (pieces, n, units), x.dtype, x)
        h = xp.empty((n, units), x.dtype)
        index_type = np.int8 if pieces <= 127 else np.int32
        winner = self._buffer("winner", (n, units), index_type, x)
        better = self._buffer("mask", (n, units), np.bool_, x)
        candidate = self._buffer("candidate", (n, units), index_type, x)

        def rows(a: int, b: int) -> None:
            z_rows, h_rows, winner_rows = z[a:b], h[a:b], winner[a:b]
            z_rows += self._params["b"]
            xp.copyto(z_pieces[:, a:b], z_rows.reshape(b - a, units, pieces).transpose(2, 0, 1))
            xp.copyto(h_rows, z_pieces[0, a:b])
            winner_rows.fill(0)
            for j in range(1, pieces):
                xp.greater(z_pieces[j, a:b], h_rows, out=better[a:b])
                # j as an index_type scalar: a Python int makes NumPy multiply in int64 and cast (5x the time)
                xp.multiply(better[a:b], index_type(j), out=candidate[a:b])
                xp.maximum(winner_rows, candidate[a:b], out=winner_rows)
                xp.maximum(h_rows, z_pieces[j, a:b], out=h_rows)
        parallel.split_large(z.size, n, rows, like=z)
        self._winner = winner
        return h

    def backward(self, dout):
        # dL/dZ[:, :, j] = G * [j = j*]: one masked copy of G per piece, into a reused buffer.
        if self._x is None:
            raise RuntimeError(f"{type(self).__name__} {self.path}: backward called before forward")
        if backend.is_device_array(dout):
            return super().backward(backend.maxout_backward(dout, self._winner, self.pieces))  # one kernel
        xp = get_array_module(dout)
        n = dout.shape[0]
        dz = self._buffer("dz", (n, self.units * self.pieces), dout.dtype, dout)
        dz_pieces = dz.reshape(n, self.units, self.pieces)
        is_winner = self._buffer("mask", (n, self.units), np.bool_, dout)

        def rows(a: int, b: int) -> None:
            for j in range(self.pieces):
                xp.equal(self._winner[a:b], j, out=is_winner[a:b])
                xp.multiply(dout[a:b], is_winner[a:b], out=dz_pieces[a:b, :, j])
        parallel.split_large(dz.size, n, rows, like=dz)
        return super().backward(dz)

    def activation_pattern(self):
        return None if self._winner is None else self._winner.copy()

    def _forget(self):
        super()._forget()
        self._winner = None


class ProjectionHead(Linear):
    r"""The output of a projection discriminator (Miyato & Koyama 2018): :math:`\ell = hw + b + \langle h, Ey\rangle`.

    Input: one array :math:`[\,h \;\; y\,]` of width ``features + n_classes``, D's features :math:`h` (N, F)
    beside the one-hot condition :math:`y` (N, C), as :class:`Join` makes it; output (N, 1) logits. ``W``
    (F, 1) and ``b`` are the unconditional score, ``E`` (C, F) holds one embedding row per class, and row
    :math:`k` scores :math:`\ell_k = \sum_i h_{ki} w_i + b + \sum_i h_{ki} e_{ki}` with :math:`e = yE`, the
    embedding of row :math:`k`'s class.

    Why: a D that concatenates :math:`y` with :math:`x` must *learn* an x-y interaction before its score depends
    on whether the image matches its label, and until then G gets no label-dependent gradient (a label feature
    alone cancels out, real and fake rows carrying the same labels). The projection term is that interaction
    from the first update: it is the log-ratio form of an optimal conditional D when :math:`p(y|x)` is a
    log-linear model of :math:`h`.

    Gradients, with upstream :math:`G` (N, 1):

    * :math:`\partial\ell_k/\partial w_i = h_{ki}`, so :math:`\partial L/\partial W = h^\top G`, and
      :math:`\partial L/\partial b = \sum_k G_k`;
    * :math:`e_{ki} = \sum_c y_{kc}E_{ci}`, so :math:`\partial\ell_k/\partial E_{ci} = y_{kc}h_{ki}` and
      :math:`\partial L/\partial E = y^\top (G \odot h)` (row :math:`c` collects the rows of class :math:`c`);
    * :math:`\partial\ell_k/\partial h_{ki} = w_i + e_{ki}`, so :math:`\partial L/\partial h = G(w^\top + e)`
      (broadcast over rows);
    * :math:`\partial\ell_k/\partial y_{kc} = \sum_i h_{ki}E_{ci}`, so :math:`\partial L/\partial y = (G\odot h)E^\top`.

    ``backward`` returns :math:`[\,\partial L/\partial h \;\; \partial L/\partial y\,]`, which :class:`Join`
    splits back into its branches.
    """

    def __init__(self, features: int, n_classes: int, init: Any = "glorot", rng: Any = None,
                 embed_init: Any = None, embed_rng: Any = None, dtype=DEFAULT_DTYPE, name: str | None = None,
                 spectral_norm: bool = False):
        super().__init__(features, 1, init, rng, dtype, name, spectral_norm)
        if not isinstance(n_classes, (int, np.integer)) or n_classes < 1:
            raise ValueError(f"ProjectionHead: n_classes must be a positive integer, got {n_classes!r}")
        self.features, self.n_classes = int(features), int(n_classes)
        # The class embedding E (C, F): by default the same initialiser as W, from its own generator.
        E = init_weights((self.n_classes, self.features), init if embed_init is None else embed_init,
                         embed_rng, dtype)
        self._params["E"] = backend.to_device(E)
        self._grads["E"] = backend.to_device(np.zeros_like(E))
        self._h = self._y = self._e = None

    def forward(self, x, train: bool | None = None):
        _check_input(self, x, self.features + self.n_classes)
        F = self.features
        self._h, self._y = h, y = x[:, :F], x[:, F:]
        self._e = e = y @ self._params["E"]
        self._W = self._weight(self._mode(train))
        out = h @ self._W
        out += self._params["b"]
        out += (h * e).sum(axis=1, keepdims=True)
        return out

    def backward(self, dout):
        if self._h is None:
            raise RuntimeError(f"ProjectionHead {self.path}: backward called before forward")
        xp = get_array_module(dout)
        h, y, e = self._h, self._y, self._e
        g_h = dout * h  # (N, F): G_k h_ki, shared by dE and dy
        if self.requires_grad:
            self._weight_grad(h, dout)
            backend.column_sum(dout, self._grads["b"])
            xp.matmul(y.T, g_h, out=self._grads["E"])
        if not self.input_grad:
            return None
        dx = xp.empty((h.shape[0], self.features + self.n_classes), dout.dtype)
        xp.multiply(dout, self._W.T, out=dx[:, :self.features])
        dx[:, :self.features] += dout * e
        xp.matmul(g_h, self._params["E"].T, out=dx[:, self.features:])
        return dx

    def _forget(self):
        super()._forget()
        self._h = self._y = self._e = None
