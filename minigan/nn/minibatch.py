r"""A layer that lets a discriminator see the variety of its batch: :class:`MinibatchStdDev`.

A D that scores one image at a time cannot tell a batch of near-copies from a varied one, so nothing stops G
from drawing few kinds of image. Karras et al. (2018, "Progressive growing of GANs", section 3) give D one more
feature map: the spread of its features over small groups of the batch, averaged to one number per group. Real
batches and G's batches go through D separately here (:mod:`minigan.families.dcgan`), so a G that draws too
few kinds of image shows a smaller spread than the real batch does, and D can score it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..backend import get_array_module
from ._checks import check_batch, positive_int
from .base import Layer

__all__ = ["MinibatchStdDev"]


class MinibatchStdDev(Layer):
    r"""Append one channel holding the mean standard deviation of the features over groups of the batch
    (Karras et al. 2018's minibatch standard deviation).

    The batch of :math:`N` images (C, H, W) is cut into :math:`A = N/g` groups of :math:`g` consecutive rows;
    row :math:`i` of group :math:`a` is :math:`x_{ai}`. Per group, for every feature :math:`j = (c, h, w)`:

    .. math:: \mu_{aj} = \tfrac1g \textstyle\sum_i x_{aij}, \qquad
              s_{aj} = \sqrt{\tfrac1g \textstyle\sum_i (x_{aij} - \mu_{aj})^2 + \epsilon}, \qquad
              m_a = \tfrac1F \textstyle\sum_j s_{aj}, \quad F = C H W,

    and the output is :math:`x_{ai}` with one more channel, :math:`m_a` at every pixel: (N, C + 1, H, W).
    There is nothing to learn, and training and evaluation compute the same thing (the statistic *is* the batch's).

    Gradient. Write :math:`G = \partial L/\partial Y` as :math:`G^x` (its first C channels) and :math:`G^m` (the
    last), and :math:`t_a = \sum_{i,h,w} G^m_{ai}`, the upstream gradient that reaches :math:`m_a` through every
    copy of it. :math:`m_a` depends on group :math:`a`'s rows only, through each :math:`s_{aj}`:

    * :math:`\partial m_a/\partial s_{aj} = 1/F` and :math:`\partial s_{aj}/\partial v_{aj} = 1/(2 s_{aj})`,
      :math:`v_{aj}` being the variance under the root;
    * :math:`\partial v_{aj}/\partial x_{aij} = \tfrac2g (x_{aij} - \mu_{aj})`, because the term through
      :math:`\mu_{aj}` is :math:`-\tfrac2g \sum_k (x_{akj} - \mu_{aj}) \cdot \tfrac1g = 0`;

    so

    .. math:: \frac{\partial L}{\partial x_{aij}} = G^x_{aij} + t_a\,
              \frac{x_{aij} - \mu_{aj}}{g\,F\,s_{aj}}.

    :math:`\epsilon > 0` keeps :math:`s` away from 0, where the root has no derivative: a group of identical
    rows (the collapse this layer is for) has :math:`s = \sqrt\epsilon` and a zero gradient through :math:`m`.

    Why :math:`\epsilon = 10^{-4}` and not Karras et al.'s :math:`10^{-8}`: for a group of two rows,
    :math:`s = \sqrt{d^2/4 + \epsilon}` with :math:`d = x_{a1j} - x_{a2j}` is :math:`|d|/2`, a kink, rounded off
    over :math:`|d| \lesssim 2\sqrt\epsilon`. At :math:`10^{-8}` that is :math:`2\cdot10^{-4}`, the size of a
    finite-difference step, and checks of a whole D (98 features at the checks' width) met it often enough to
    fail (relative errors up to 0.08, 10 of 64 checks of D and G with groups of two). At :math:`10^{-4}` the
    rounding spans :math:`|d| \lesssim 0.02`, smooth at the step's scale (every one of those checks passes), and
    still small beside the spread of the normalised features D feeds it: :math:`\epsilon` changes :math:`s` by a
    factor :math:`1 + \epsilon/(2v)` to first order, :math:`5\cdot10^{-5}` at the order-1 variances of those
    features.

    Parameters
    ----------
    group_size : int >= 2, default 4
        :math:`g` (Karras et al.'s 4); a batch smaller than it forms one group, and a larger one must be a
        multiple of it. (A group of one row has no spread: the channel would be the constant
        :math:`\sqrt\epsilon`.)
    eps : float, default 1e-4
    """

    def __init__(self, group_size: int = 4, eps: float = 1e-4, name: str | None = None):
        super().__init__(name)
        self.group_size = positive_int(group_size, "group_size", "MinibatchStdDev")
        if self.group_size < 2:
            raise ValueError(f"MinibatchStdDev: group_size must be at least 2 (one row has no spread), "
                             f"got {group_size!r}")
        if isinstance(eps, bool) or not isinstance(eps, (int, float, np.floating)) or not 0 < eps < math.inf:
            raise ValueError(f"MinibatchStdDev: eps must be a positive finite number, got {eps!r}")
        self.eps = float(eps)
        self._cache: dict[str, Any] | None = None

    def _group(self, n: int) -> int:
        if n < 1:
            raise ValueError(f"MinibatchStdDev {self.path}: the batch is empty")
        g = min(self.group_size, n)
        if n % g:
            raise ValueError(f"MinibatchStdDev {self.path}: a batch of {n} rows does not split into groups of "
                             f"{g}; use a batch size that is a multiple of {g}, or another group size")
        return g

    def forward(self, x, train: bool | None = None):
        check_batch(self, x, None)
        xp = get_array_module(x)
        n, c, h, w = x.shape
        g = self._group(n)
        rows = x.reshape(n // g, g, c * h * w)
        centred = rows - rows.mean(axis=1, keepdims=True)
        std = xp.sqrt(xp.einsum("aif,aif->af", centred, centred) / g + self.eps)  # (A, F)
        stat = std.mean(axis=1)  # (A,)
        y = xp.empty((n, c + 1, h, w), x.dtype)
        y[:, :c] = x
        y[:, c] = xp.repeat(stat, g).reshape(n, 1, 1)
        self._cache = {"centred": centred, "std": std, "shape": x.shape, "group": g}
        return y

    def backward(self, dout):
        if self._cache is None:
            raise RuntimeError(f"MinibatchStdDev {self.path}: backward called before forward")
        n, c, h, w = self._cache["shape"]
        g, centred, std = self._cache["group"], self._cache["centred"], self._cache["std"]
        t = dout[:, c].reshape(n // g, g * h * w).sum(axis=1)  # (A,): dL/dm_a
        through_stat = centred / std[:, None, :]
        through_stat *= (t / (g * c * h * w))[:, None, None]
        dx = through_stat.reshape(n, c, h, w)
        dx += dout[:, :c]
        return dx

    def _forget(self):
        self._cache = None
