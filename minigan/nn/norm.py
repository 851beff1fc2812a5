r"""Normalisation layers: :class:`BatchNorm` (over the batch, per channel) and :class:`InstanceNorm2d` (per
sample and channel). PyTorch's conventions: eps 1e-5, momentum 0.1, running variance from the *unbiased*
batch variance, parameters ``gamma`` (PyTorch's ``weight``, starting at 1) and ``beta`` (``bias``, at 0).

The shared derivation
---------------------
Both normalise each group of :math:`M` values :math:`x_1..x_M` (BatchNorm: one channel over the batch and
the spatial axes, :math:`M = N H W`; InstanceNorm: one channel of one sample, :math:`M = H W`):

.. math:: \mu = \tfrac1M \textstyle\sum_m x_m,\quad \sigma^2 = \tfrac1M \sum_m (x_m - \mu)^2,\quad
          \hat x_m = (x_m - \mu)/\sqrt{\sigma^2 + \epsilon},\quad y_m = \gamma \hat x_m + \beta,

with :math:`\gamma, \beta` per channel. Write :math:`g_m = \partial L/\partial y_m` and
:math:`r = 1/\sqrt{\sigma^2+\epsilon}`. Then :math:`\partial L/\partial\beta = \sum g_m` and
:math:`\partial L/\partial\gamma = \sum g_m \hat x_m` (summed over every group of the channel), and with
:math:`d_m = \gamma g_m = \partial L/\partial \hat x_m`:

* :math:`\partial \hat x_k / \partial x_m = r\,(\delta_{km} - \tfrac1M) - \hat x_k\, r\,\tfrac1M \hat x_m`,
  because :math:`\partial\mu/\partial x_m = 1/M` and
  :math:`\partial r/\partial x_m = -r^3 \tfrac1M (x_m - \mu) = -\tfrac{r^2}{M}\hat x_m`
  (the :math:`\mu`-term of :math:`\partial\sigma^2/\partial x_m` sums to zero);
* so :math:`\partial L/\partial x_m = \sum_k d_k\,\partial \hat x_k/\partial x_m
  = r\,\big(d_m - \overline{d} - \hat x_m\, \overline{d\hat x}\big)`, bars being means over the group:

.. math:: \frac{\partial L}{\partial x} = \frac{\gamma}{\sigma}\Big(g - \operatorname{mean}(g)
          - \hat x \operatorname{mean}(g \hat x)\Big), \qquad \sigma = \sqrt{\sigma^2 + \epsilon}.

In evaluation mode BatchNorm uses the running statistics, constants, so it is the per-channel affine map
:math:`y = \gamma (x - \mu_R) r_R + \beta` and :math:`\partial L/\partial x = \gamma r_R\, g`.

Standing statistics
-------------------
The running statistics describe the weights that were *trained*, a few steps at a time. A network whose
weights are replaced (by a moving average of them, :class:`~minigan.nn.optim.WeightAverage`) produces other
pre-normalisation activations, and its running statistics no longer match them. :func:`standing_statistics`
re-estimates them for the weights in place: inside it every BatchNorm normalises with the batch's own
statistics (as in training) while the rest of the network stays in evaluation mode (dropout off, as when
sampling), and on exit its running mean and variance are the plain means, over the :math:`B` batches seen, of
the batch means and of the unbiased batch variances,

.. math:: \mu_R = \tfrac1B \textstyle\sum_b \mu_b, \qquad \sigma^2_R = \tfrac1B \sum_b \tfrac{M}{M-1}\sigma^2_b,

the quantities that training's exponential averages estimate, with equal weight on every batch (BigGAN's
"standing statistics", Brock et al. 2019). The variance is the within-batch one, the scale each batch was
normalised by in training, not the spread over all batches together.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Iterator

import numpy as np

from .. import backend
from ..backend import get_array_module
from .base import DEFAULT_DTYPE, Layer
from ._checks import check_batch, positive_int

__all__ = ["BatchNorm", "ConditionalBatchNorm", "InstanceNorm2d", "standing_statistics"]


class _Normalization(Layer):
    """What both share: the per-channel affine map and the backward pass through batch statistics."""

    def __init__(self, num_features: int, eps: float, affine: bool, dtype, name: str | None):
        super().__init__(name)
        kind = type(self).__name__
        self.num_features = positive_int(num_features, "num_features", kind)
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps > 0:
            raise ValueError(f"{kind}: eps must be a positive number, got {eps!r}")
        self.eps = float(eps)
        self.affine = bool(affine)
        if self.affine:
            params = {"gamma": np.ones(self.num_features, dtype), "beta": np.zeros(self.num_features, dtype)}
            self._params = backend.to_device(params)
            self._grads = backend.to_device({k: np.zeros_like(v) for k, v in params.items()})
        self._cache: dict[str, Any] | None = None

    def _per_channel(self, v, ndim: int):
        """A (C,) vector shaped (1, C, 1, ...) to broadcast against an ``ndim``-dimensional batch."""
        return v.reshape((1, self.num_features) + (1,) * (ndim - 2))

    def _centred(self, x, mean):
        """x - mean, into a scratch array that becomes x_hat (kept until the next forward of this shape)."""
        xp = get_array_module(x)
        return xp.subtract(x, mean, out=self._buffer("x_hat", x.shape, x.dtype, x))

    @staticmethod
    def _sum(x, axes):
        """The sum over ``axes``, kept as size-1 axes.

        Over the spatial axes of an NCHW batch (and the batch axis too, for BatchNorm) it is one matrix-vector
        product of the (N·C, H·W) rows with ones, then a sum over n: NumPy's reduction over the non-adjacent axes
        (0, 2, 3) walks the array in short strided runs, about 5x slower (measured on (64, 128, 7, 7): 0.26 ms
        against 0.05 ms at one thread).
        """
        if x.ndim == 4 and axes in ((0, 2, 3), (2, 3)):
            xp = get_array_module(x)
            n, c = x.shape[:2]
            rows = xp.matmul(x.reshape(n, c, -1), xp.ones(x.shape[2] * x.shape[3], x.dtype))  # (N, C)
            if axes == (2, 3):
                return rows.reshape(n, c, 1, 1)
            return rows.sum(axis=0).reshape(1, c, 1, 1)
        return x.sum(axis=axes, keepdims=True)

    @staticmethod
    def _sum_of_products(a, b, axes):
        r""":math:`\sum a b` over ``axes`` (kept as size-1 axes) without writing the product out."""
        xp = get_array_module(a)
        if a.ndim == 4 and axes in ((0, 2, 3), (2, 3)):
            n, c = a.shape[:2]
            a3, b3 = a.reshape(n, c, -1), b.reshape(n, c, -1)
            if axes == (2, 3):
                return xp.einsum("nck,nck->nc", a3, b3).reshape(n, c, 1, 1)
            return xp.einsum("nck,nck->c", a3, b3).reshape(1, c, 1, 1)
        return xp.multiply(a, b).sum(axis=axes, keepdims=True)

    def _statistics(self, x, axes):
        """(mean, biased variance, x - mean) over ``axes``, kept as size-1 axes; the variance by two passes."""
        count = math.prod(x.shape[a] for a in axes)
        mean = self._sum(x, axes) / count
        centred = self._centred(x, mean)
        return mean, self._sum_of_products(centred, centred, axes) / count, centred

    def _affine_output(self, x_hat, inv_std):
        """Scale x - mean in place to x_hat, and return y = gamma x_hat + beta (a fresh array)."""
        x_hat *= inv_std
        if not self.affine:
            return x_hat.copy()
        y = x_hat * self._per_channel(self._params["gamma"], x_hat.ndim)
        y += self._per_channel(self._params["beta"], x_hat.ndim)
        return y

    @staticmethod
    def _inverse_std(var, eps: float):
        """1 / sqrt(var + eps) as a new array (``var`` may be a running-statistics buffer: never written)."""
        xp = get_array_module(var)
        r = var + eps
        return xp.reciprocal(xp.sqrt(r, out=r), out=r)

    def _write_param_grads(self, sum_g, sum_g_x_hat) -> None:
        """dL/dbeta = sum g, dL/dgamma = sum g x_hat; the sums may still have a batch axis to add up."""
        if self.affine and self.requires_grad:
            self._grads["beta"][...] = sum_g.sum(axis=0).reshape(-1)
            self._grads["gamma"][...] = sum_g_x_hat.sum(axis=0).reshape(-1)

    def _backward_through_statistics(self, dout, x_hat, inv_std, axes, count: int):
        """dL/dx = (gamma r / M) (M g - sum(g) - x_hat sum(g x_hat)), the sums over ``axes`` (one group)."""
        sum_g = self._sum(dout, axes)
        sum_g_x_hat = self._sum_of_products(dout, x_hat, axes)
        self._write_param_grads(sum_g, sum_g_x_hat)
        if not self.input_grad:
            return None
        scale = inv_std * (1.0 / count)
        if self.affine:
            scale = scale * self._per_channel(self._params["gamma"], dout.ndim)
        return self._through_statistics(dout * count, x_hat, sum_g, sum_g_x_hat, scale)

    def _through_statistics(self, dx, x_hat, sum_d, sum_d_x_hat, scale):
        """The derivation's last step, in place on ``dx`` = M d: scale (M d - sum(d) - x_hat sum(d x_hat)), with
        d = dL/dx_hat up to the factor that ``scale`` carries; returns ``dx``."""
        xp = get_array_module(dx)
        dx -= sum_d
        dx -= xp.multiply(x_hat, sum_d_x_hat, out=self._buffer("scratch", dx.shape, dx.dtype, dx))
        dx *= scale
        return dx

    def _require_forward(self):
        if self._cache is None:
            raise RuntimeError(f"{type(self).__name__} {self.path}: backward called before forward")
        return self._cache

    def _forget(self):
        self._cache = None


class BatchNorm(_Normalization):
    r"""Batch normalisation (Ioffe & Szegedy 2015) of (N, C) or (N, C, H, W) batches (PyTorch's
    BatchNorm1d / BatchNorm2d in one class): statistics per channel over every axis but axis 1.

    Training mode normalises with the batch's mean and biased variance (:math:`M = N\cdot H\cdot W` values per
    channel) and updates the running statistics in place,

    .. math:: \mu_R \leftarrow (1 - m)\,\mu_R + m\,\mu, \qquad
              \sigma^2_R \leftarrow (1 - m)\,\sigma^2_R + m\,\tfrac{M}{M-1}\sigma^2

    (the *unbiased* variance, as PyTorch does); evaluation mode normalises with :math:`\mu_R, \sigma^2_R`.
    Gradients: the module docstring's derivation, the means taken over (N, H, W). In evaluation mode the
    layer is affine and :math:`\partial L/\partial x = \gamma g/\sqrt{\sigma^2_R + \epsilon}`,
    :math:`\partial L/\partial\gamma = \sum g\hat x`, :math:`\partial L/\partial\beta = \sum g`.

    Parameters
    ----------
    num_features : int
        C, the size of axis 1.
    eps : float, default 1e-5
    momentum : float in [0, 1], default 0.1
    affine : bool, default True
        Learn ``gamma`` (starting at 1) and ``beta`` (starting at 0).
    dtype : numpy dtype, default float32

    Attributes
    ----------
    buffers : dict
        ``running_mean`` (starting at 0) and ``running_var`` (starting at 1), shape (C,): non-trainable state
        (:attr:`~minigan.nn.base.Layer.buffers`), saved in checkpoints.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1, affine: bool = True,
                 dtype=DEFAULT_DTYPE, name: str | None = None):
        super().__init__(num_features, eps, affine, dtype, name)
        if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) or not 0 <= momentum <= 1:
            raise ValueError(f"BatchNorm: momentum must be in [0, 1], got {momentum!r}")
        self.momentum = float(momentum)
        self._buffers = backend.to_device({"running_mean": np.zeros(self.num_features, dtype),
                                           "running_var": np.ones(self.num_features, dtype)})
        self._standing: dict[str, Any] | None = None  # sums while inside standing_statistics()

    def forward(self, x, train: bool | None = None):
        check_batch(self, x, self.num_features, ndims=(2, 3, 4), layout="(N, C) or (N, C, H, W)")
        axes = (0,) + tuple(range(2, x.ndim))
        count = x.size // self.num_features
        training = self._mode(train)
        if training or self._standing is not None:
            if count < 2:
                raise ValueError(f"BatchNorm {self.path}: batch statistics need more than one value per channel, "
                                 f"got input shape {tuple(x.shape)}")
            mean, var, x_hat = self._statistics(x, axes)
            if training:
                self._update_running(mean.reshape(-1), var.reshape(-1), count)
            else:
                self._accumulate_standing(mean.reshape(-1), var.reshape(-1), count)
        else:
            mean = self._per_channel(self._buffers["running_mean"], x.ndim)
            var = self._per_channel(self._buffers["running_var"], x.ndim)
            x_hat = self._centred(x, mean)
        inv_std = self._inverse_std(var, self.eps)
        y = self._affine_output(x_hat, inv_std)
        self._cache = {"x_hat": x_hat, "inv_std": inv_std, "axes": axes, "count": count, "training": training}
        return y

    def _update_running(self, mean, var, count: int) -> None:
        m = self.momentum
        running_mean, running_var = self._buffers["running_mean"], self._buffers["running_var"]
        running_mean *= 1 - m
        running_mean += m * mean
        running_var *= 1 - m
        running_var += (m * count / (count - 1)) * var

    def _accumulate_standing(self, mean, var, count: int) -> None:
        sums = self._standing
        sums["mean"] += mean
        sums["var"] += var * (count / (count - 1))
        sums["batches"] += 1

    def backward(self, dout):
        c = self._require_forward()
        if self._standing is not None and not c["training"]:
            raise RuntimeError(f"BatchNorm {self.path}: no backward pass while standing statistics are measured")
        if c["training"]:
            return self._backward_through_statistics(dout, c["x_hat"], c["inv_std"], c["axes"], c["count"])
        # Evaluation: a per-channel affine map with constant statistics.
        if self.affine and self.requires_grad:
            self._write_param_grads(self._sum(dout, c["axes"]), self._sum_of_products(dout, c["x_hat"], c["axes"]))
        if not self.input_grad:
            return None
        scale = c["inv_std"]
        if self.affine:
            scale = scale * self._per_channel(self._params["gamma"], dout.ndim)
        return dout * scale


class ConditionalBatchNorm(BatchNorm):
    r"""Batch normalisation whose scale and shift depend on each row's class (conditional batch normalisation,
    de Vries et al. 2017; the generator of Miyato & Koyama 2018's projection cGAN):

    .. math:: y_{n c \dots} = (\gamma_c + \Gamma_{k_n c})\, \hat x_{n c \dots} + (\beta_c + B_{k_n c}),

    :math:`\hat x` normalised as :class:`BatchNorm` does (the batch's statistics in training, the running ones in
    evaluation), :math:`k_n` the class of row :math:`n`. The classes come as one-hot rows :math:`Y` (N, K) in
    :attr:`condition`, set before every forward pass (:class:`~minigan.nn.containers.Conditioned` does it).
    ``class_gamma`` :math:`\Gamma` and ``class_beta`` :math:`B` (K, C) start at zero, where the layer is
    :class:`BatchNorm`. Why: a label that joins the noise at G's input reaches the later layers only through
    what the first layers make of it; here it sets every channel's gain and offset of its layer directly.

    Gradients. Write :math:`\gamma_n = \gamma + Y_n\Gamma` and :math:`\beta_n = \beta + Y_n B` (rows of (N, C)),
    and, per row and channel, :math:`S_g = \sum g` and :math:`S_{g\hat x} = \sum g \hat x` over the spatial axes
    (for an (N, C) batch, the entries themselves). Then

    * :math:`\partial L/\partial\beta = \sum_n S_g`, :math:`\partial L/\partial\gamma = \sum_n S_{g\hat x}`,
      :math:`\partial L/\partial B = Y^\top S_g` and :math:`\partial L/\partial \Gamma = Y^\top S_{g\hat x}`
      (row :math:`k` gathers the rows of class :math:`k`);
    * :math:`\partial L/\partial Y = S_{g\hat x}\Gamma^\top + S_g B^\top` (left in :attr:`condition_grad`:
      the condition is not the layer's input, so its container collects it);
    * :math:`\partial L/\partial \hat x = \gamma_n g =: d`, and the module docstring's derivation with
      :math:`d` in place of :math:`\gamma g`: :math:`\partial L/\partial x = r\,(d - \operatorname{mean}(d) -
      \hat x \operatorname{mean}(d\hat x))`, the means over the channel's :math:`M` values, where
      :math:`\sum d = \sum_n \gamma_n S_g` and :math:`\sum d\hat x = \sum_n \gamma_n S_{g\hat x}`. In evaluation
      mode, :math:`\partial L/\partial x = r_R\, d`.

    Parameters
    ----------
    num_features : int
        C, the size of axis 1.
    n_classes : int
        K, the width of the one-hot condition.
    eps, momentum, dtype, name
        As for :class:`BatchNorm` (always affine).
    """

    takes_condition = True  # Conditioned hands it the network's one-hot condition

    def __init__(self, num_features: int, n_classes: int, eps: float = 1e-5, momentum: float = 0.1,
                 dtype=DEFAULT_DTYPE, name: str | None = None):
        super().__init__(num_features, eps, momentum, affine=True, dtype=dtype, name=name)
        self.n_classes = positive_int(n_classes, "n_classes", "ConditionalBatchNorm")
        table = np.zeros((self.n_classes, self.num_features), dtype)
        for key in ("class_gamma", "class_beta"):
            self._params[key] = backend.to_device(table.copy())
            self._grads[key] = backend.to_device(table.copy())
        self.condition = None
        self.condition_grad = None
        self._rows = None

    def _per_row(self, v, ndim: int):
        """An (N, C) table shaped (N, C, 1, ...) to broadcast against an ``ndim``-dimensional batch."""
        return v.reshape(v.shape + (1,) * (ndim - 2))

    def forward(self, x, train: bool | None = None):
        y1 = self.condition
        if y1 is None:
            raise ValueError(f"ConditionalBatchNorm {self.path}: no condition set; give one-hot rows (N, "
                             f"{self.n_classes}) in .condition (Conditioned does) before forward")
        if y1.ndim != 2 or y1.shape[1] != self.n_classes or y1.shape[0] != x.shape[0]:
            raise ValueError(f"ConditionalBatchNorm {self.path}: condition of shape {tuple(y1.shape)} for a batch of "
                             f"{x.shape[0]}; expected ({x.shape[0]}, {self.n_classes}) one-hot rows")
        gamma_n = y1 @ self._params["class_gamma"]
        gamma_n += self._params["gamma"]
        beta_n = y1 @ self._params["class_beta"]
        beta_n += self._params["beta"]
        self._rows = (gamma_n, beta_n)  # read by _affine_output, inside BatchNorm.forward
        out = super().forward(x, train)
        self._cache.update(condition=y1, gamma_n=gamma_n)
        return out

    def _affine_output(self, x_hat, inv_std):
        """y = gamma_n x_hat + beta_n, with each row's class-dependent gamma_n and beta_n."""
        x_hat *= inv_std
        gamma_n, beta_n = self._rows
        y = x_hat * self._per_row(gamma_n, x_hat.ndim)
        y += self._per_row(beta_n, x_hat.ndim)
        return y

    def backward(self, dout):
        c = self._require_forward()
        if self._standing is not None and not c["training"]:
            raise RuntimeError(f"ConditionalBatchNorm {self.path}: no backward pass while standing statistics are "
                               "measured")
        y1, x_hat, n = c["condition"], c["x_hat"], dout.shape[0]
        spatial = tuple(range(2, dout.ndim))
        if spatial:
            s_g = self._sum(dout, spatial).reshape(n, -1)
            s_gx = self._sum_of_products(dout, x_hat, spatial).reshape(n, -1)
        else:
            s_g, s_gx = dout, dout * x_hat
        if self.requires_grad:
            xp = get_array_module(dout)
            s_g.sum(axis=0, out=self._grads["beta"])
            s_gx.sum(axis=0, out=self._grads["gamma"])
            xp.matmul(y1.T, s_g, out=self._grads["class_beta"])
            xp.matmul(y1.T, s_gx, out=self._grads["class_gamma"])
        self.condition_grad = s_gx @ self._params["class_gamma"].T + s_g @ self._params["class_beta"].T
        if not self.input_grad:
            return None
        gamma_n = c["gamma_n"]
        dx = dout * self._per_row(gamma_n, dout.ndim)  # d = dL/dx_hat
        if not c["training"]:
            dx *= c["inv_std"]
            return dx
        count = c["count"]
        sum_d = self._per_channel((gamma_n * s_g).sum(axis=0), dout.ndim)
        sum_d_x_hat = self._per_channel((gamma_n * s_gx).sum(axis=0), dout.ndim)
        dx *= count
        return self._through_statistics(dx, x_hat, sum_d, sum_d_x_hat, c["inv_std"] * (1.0 / count))

    def _forget(self):
        super()._forget()
        self.condition_grad = self._rows = None


class InstanceNorm2d(_Normalization):
    r"""Instance normalisation (Ulyanov et al. 2016) of (N, C, H, W) batches: each (n, c) plane normalised over
    its own H·W values, in training and evaluation alike (PyTorch's default, ``track_running_stats=False``).

    Gradients: the module docstring's derivation with the means over (H, W) of each plane;
    :math:`\partial L/\partial\gamma` and :math:`\partial L/\partial\beta` sum over (N, H, W).

    Parameters
    ----------
    num_features : int
        C.
    eps : float, default 1e-5
    affine : bool, default False
        Learn a per-channel ``gamma`` and ``beta`` (PyTorch's default is without; CycleGAN's code uses
        ``affine=False`` too).
    dtype : numpy dtype, default float32
        Of ``gamma`` and ``beta`` (then also the required input dtype); without ``affine`` the layer has no
        arrays and takes any floating-point input.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, affine: bool = False, dtype=DEFAULT_DTYPE,
                 name: str | None = None):
        super().__init__(num_features, eps, affine, dtype, name)

    def forward(self, x, train: bool | None = None):
        check_batch(self, x, self.num_features)
        mean, var, x_hat = self._statistics(x, (2, 3))
        inv_std = self._inverse_std(var, self.eps)
        y = self._affine_output(x_hat, inv_std)
        self._cache = {"x_hat": x_hat, "inv_std": inv_std, "count": x.shape[2] * x.shape[3]}
        return y

    def backward(self, dout):
        c = self._require_forward()
        return self._backward_through_statistics(dout, c["x_hat"], c["inv_std"], (2, 3), c["count"])


@contextlib.contextmanager
def standing_statistics(network: Layer) -> Iterator[list[BatchNorm]]:
    """Re-estimate the running statistics of every :class:`BatchNorm` in ``network`` for its current weights.

    Inside the ``with`` block, run the network forward in evaluation mode on the batches the statistics should
    describe (the batch size of training, so each batch is normalised as in training); each BatchNorm then
    normalises with its batch's statistics and sums them. On a normal exit its ``running_mean`` and
    ``running_var`` become the means over those batches (the module docstring); on an exception, or if no
    batch went through, they are left as they were. Yields the BatchNorm layers (empty: nothing to do).
    """
    layers = [layer for layer in network.walk() if isinstance(layer, BatchNorm)]
    if any(layer._standing is not None for layer in layers):
        raise RuntimeError(f"{network.path}: standing statistics are already being measured")
    for layer in layers:
        xp = get_array_module(layer.buffers["running_mean"])
        layer._standing = {"mean": xp.zeros(layer.num_features, np.float64),
                           "var": xp.zeros(layer.num_features, np.float64), "batches": 0}
    try:
        yield layers
        unused = [layer.path for layer in layers if layer._standing["batches"] == 0]
        if unused:
            raise ValueError(f"BatchNorm {unused[0]}: no batch went through it inside standing_statistics()")
        for layer in layers:
            sums = layer._standing
            for name, key in (("running_mean", "mean"), ("running_var", "var")):
                layer.buffers[name][...] = sums[key] / sums["batches"]
    finally:
        for layer in layers:
            layer._standing = None
