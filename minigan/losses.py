r"""Losses on logits and the GAN objectives, each returning ``(loss, dloss/dlogits)``.

Everything works on *logits* :math:`\ell` (the discriminator's pre-sigmoid output), never on probabilities:
:math:`\log\sigma(\ell)` and :math:`\log(1-\sigma(\ell))` computed from :math:`\sigma(\ell)` lose all precision
once :math:`\sigma(\ell)` rounds to 0 or 1 (float32: :math:`|\ell| \gtrsim 17`), while the softplus forms
below are exact for any finite logit.

Notation: :math:`\operatorname{sp}(\ell) = \log(1+e^{\ell}) = \max(\ell,0) + \log(1+e^{-|\ell|})` (stable),
:math:`\operatorname{sp}'(\ell) = \sigma(\ell)`, and :math:`-\log\sigma(\ell) = \operatorname{sp}(-\ell)`,
:math:`-\log(1-\sigma(\ell)) = \operatorname{sp}(\ell)`.

Losses are returned as 0-d arrays on the logits' backend: reading one as a Python float is a device
synchronisation, which the trainer does once per logging interval, not per step.
"""

from __future__ import annotations

from .backend import get_array_module
from .layers import sigmoid


def softplus(x):
    r"""Stable :math:`\log(1+e^x) = \max(x, 0) + \log(1 + e^{-|x|})`."""
    xp = get_array_module(x)
    return xp.maximum(x, 0) + xp.log1p(xp.exp(-xp.abs(x)))


def _check_logits(logits, who: str):
    if not hasattr(logits, "ndim") or logits.ndim != 2 or logits.shape[1] != 1:
        shape = getattr(logits, "shape", type(logits).__name__)
        raise ValueError(f"{who}: expected logits of shape (N, 1), received {shape}")
    if logits.dtype.kind != "f":
        raise ValueError(f"{who}: expected floating-point logits, received dtype {logits.dtype}")


def bce_with_logits(logits, targets):
    r"""Mean binary cross-entropy between targets :math:`t \in [0,1]` and :math:`\sigma(\ell)`.

    .. math:: L = \frac1N \sum_k \big[-t_k \log\sigma(\ell_k) - (1-t_k)\log(1-\sigma(\ell_k))\big]
                = \frac1N \sum_k \big[t_k \operatorname{sp}(-\ell_k) + (1-t_k)\operatorname{sp}(\ell_k)\big].

    Gradient: :math:`\operatorname{sp}'(\ell) = \sigma(\ell)`, so
    :math:`\partial L/\partial \ell_k = [(1-t_k)\sigma(\ell_k) - t_k\sigma(-\ell_k)]/N`, which equals the
    familiar :math:`(\sigma(\ell_k) - t_k)/N`.

    Why this form: both terms are non-negative, so nothing cancels. The equivalent
    :math:`\operatorname{sp}(\ell) - t\ell` subtracts two numbers near :math:`\ell` when the loss is small
    (a confident, correct D), keeping only :math:`\sim\epsilon|\ell|` absolute precision; likewise
    :math:`\sigma(\ell) - 1` rounds to 0 for :math:`\ell \gtrsim 37` in float64, where
    :math:`-\sigma(-\ell)` is exact.

    Parameters
    ----------
    logits : array (N, 1)
    targets : array broadcastable to (N, 1), or a Python float (e.g. 1.0 for "real")

    Returns
    -------
    loss : 0-d array
    dlogits : array (N, 1)
    """
    _check_logits(logits, "bce_with_logits")
    xp = get_array_module(logits)
    n = logits.shape[0]
    loss = xp.mean(targets * softplus(-logits) + (1 - targets) * softplus(logits))
    dlogits = ((1 - targets) * sigmoid(logits) - targets * sigmoid(-logits)) / n
    return loss, dlogits.astype(logits.dtype, copy=False)


def discriminator_loss(logits_real, logits_fake):
    r"""D's loss :math:`\tfrac12[\mathrm{BCE}(1, D(x)) + \mathrm{BCE}(0, D(G(z)))]` (Goodfellow 2014, Alg. 1).

    D ascends :math:`\log D(x) + \log(1 - D(G(z)))`; minimising the negated mean is this loss. Each half is
    :func:`bce_with_logits`, so with batch sizes :math:`N_r, N_f`:
    :math:`\partial L/\partial \ell^{r}_k = \tfrac12(\sigma(\ell^r_k) - 1)/N_r` and
    :math:`\partial L/\partial \ell^{f}_k = \tfrac12\sigma(\ell^f_k)/N_f`.

    Returns
    -------
    loss : 0-d array
    (dlogits_real, dlogits_fake) : tuple of arrays
    """
    loss_real, d_real = bce_with_logits(logits_real, 1.0)
    loss_fake, d_fake = bce_with_logits(logits_fake, 0.0)
    return 0.5 * (loss_real + loss_fake), (0.5 * d_real, 0.5 * d_fake)


def generator_loss(logits_fake, kind: str = "non_saturating"):
    r"""G's loss on D's logits for generated samples.

    ``"non_saturating"`` (Goodfellow 2014, §3, used in practice): G maximises :math:`\log D(G(z))`, i.e.
    minimises :math:`L = \mathrm{BCE}(1, D(G(z))) = \frac1N\sum_k \operatorname{sp}(-\ell_k)`, with
    :math:`\partial L/\partial \ell_k = (\sigma(\ell_k) - 1)/N`. Its gradient stays large while D confidently
    rejects samples (:math:`\ell \to -\infty`), which is why it trains.

    ``"minimax"`` (the value function itself): G minimises
    :math:`L = \frac1N\sum_k \log(1-\sigma(\ell_k)) = -\frac1N\sum_k\operatorname{sp}(\ell_k)`, with
    :math:`\partial L/\partial \ell_k = -\sigma(\ell_k)/N`, which vanishes as :math:`\ell \to -\infty`
    (the saturation the paper warns about).

    Returns
    -------
    loss : 0-d array
    dlogits : array (N, 1)
    """
    if kind in ("non_saturating", "nonsaturating", "ns"):
        return bce_with_logits(logits_fake, 1.0)
    if kind == "minimax":
        loss, d = bce_with_logits(logits_fake, 0.0)
        return -loss, -d
    raise ValueError(f"generator_loss: kind must be 'non_saturating' or 'minimax', got {kind!r}")
