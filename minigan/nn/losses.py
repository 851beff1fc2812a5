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

from .. import backend
from ..backend import get_array_module
from .activations import sigmoid


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
    if type(targets) is float:  # real / fake: the same terms fused into one kernel on CuPy (a NumPy scalar
        # target keeps the unfused path, whose dtype promotion it decides)
        terms, dlogits = backend.bce_logits(logits, targets, n)
        return xp.mean(terms), dlogits
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


def softmax_cross_entropy(logits, labels):
    r"""Mean cross-entropy of integer ``labels`` under :math:`\operatorname{softmax}(\ell)`, and its gradient.

    For a row :math:`\ell \in \mathbb{R}^K` with label :math:`y`, :math:`p_j = e^{\ell_j}/\sum_i e^{\ell_i}` and
    the loss is :math:`-\log p_y`; the batch loss is the mean over the :math:`N` rows.

    Stable form. With :math:`m = \max_j \ell_j` and :math:`s_j = \ell_j - m \le 0`,
    :math:`-\log p_y = \log\sum_j e^{s_j} - s_y`. No exponential overflows (:math:`e^{s_j} \le 1`), and both
    terms are non-negative (the sum contains :math:`e^0 = 1`; :math:`s_y \le 0`), so adding them never
    cancels; the first is computed as :math:`\operatorname{log1p}` of the sum without one maximal entry (which is
    exactly 1), so the loss keeps full relative precision even when it is tiny (a confident, correct classifier).

    Gradient. :math:`-\log p_y = \log\sum_i e^{\ell_i} - \ell_y`, and
    :math:`\partial/\partial\ell_j \log\sum_i e^{\ell_i} = e^{\ell_j}/\sum_i e^{\ell_i} = p_j`, so
    :math:`\partial(-\log p_y)/\partial\ell_j = p_j - [j = y]`, and for the mean
    :math:`\partial L/\partial \ell_{kj} = (p_{kj} - [j = y_k])/N`.

    The label's entry :math:`p_y - 1` is computed as :math:`-\sum_{j \ne y} p_j` (equal, since
    :math:`\sum_j p_j = 1`): when :math:`p_y` rounds to 1 the subtraction would give exactly 0, while the
    sum of the other probabilities keeps the true small value (the same care as :func:`bce_with_logits`).

    Parameters
    ----------
    logits : array (N, K), floating point, on any backend
    labels : integer array (N,) with values in 0..K-1 (host or the logits' backend)

    Returns
    -------
    loss : 0-d array (the logits' backend)
    dlogits : array (N, K), the logits' dtype
    """
    if not hasattr(logits, "ndim") or logits.ndim != 2:
        shape = getattr(logits, "shape", type(logits).__name__)
        raise ValueError(f"softmax_cross_entropy: expected logits of shape (N, K), received {shape}")
    if logits.dtype.kind != "f":
        raise ValueError(f"softmax_cross_entropy: expected floating-point logits, received dtype {logits.dtype}")
    xp = get_array_module(logits)
    labels = xp.asarray(labels)  # an explicit host-to-device transfer where the labels are on the host
    n, k = logits.shape
    if labels.ndim != 1 or labels.shape[0] != n or labels.dtype.kind not in "iu":
        raise ValueError(f"softmax_cross_entropy: expected {n} integer labels (shape ({n},)), received shape "
                         f"{tuple(labels.shape)} dtype {labels.dtype}")
    is_label = labels[:, None] == xp.arange(k)
    shifted = logits - logits.max(axis=1, keepdims=True)
    e = xp.exp(shifted)
    # log(sum_j e^{s_j}) = log1p(sum over all but one maximal entry): the maximal entry is exactly e^0 = 1,
    # and log1p keeps a tiny remainder that log(1 + r) would round away.
    is_max = shifted.argmax(axis=1)[:, None] == xp.arange(k)
    rest = xp.where(is_max, 0, e).sum(axis=1, keepdims=True)
    lse = xp.log1p(rest)
    total = 1 + rest
    s_y = (shifted * is_label).sum(axis=1, keepdims=True)
    loss = xp.mean(lse - s_y)
    p = e / total
    others = xp.where(is_label, 0, p).sum(axis=1, keepdims=True)
    dlogits = xp.where(is_label, -others, p) / n
    return loss, dlogits.astype(logits.dtype, copy=False)


def l1_loss(x, target):
    r"""Mean absolute error :math:`L = \frac1M \sum_m |x_m - t_m|` over all :math:`M` entries of ``x``, and
    :math:`\partial L/\partial x`.

    pix2pix's reconstruction term (Isola et al. 2017, eq. 3: :math:`\mathbb{E}\,\lVert y - G(x)\rVert_1`, which
    their code takes as the mean over pixels, channels and the batch).

    Gradient: :math:`|u|` has derivative :math:`\operatorname{sign}(u)` for :math:`u \ne 0`, so
    :math:`\partial L/\partial x_m = \operatorname{sign}(x_m - t_m)/M`. At a tie (:math:`x_m = t_m`) :math:`|u|`
    has a kink; the subgradient 0 is returned there (what ``sign`` gives), as PyTorch does. The gradient checker
    treats a step that changes any sign as a kink (:func:`l1_pattern`), as it does for ReLU.

    Parameters
    ----------
    x, target : arrays of the same shape (any), floating point

    Returns
    -------
    loss : 0-d array
    dx : array of ``x``'s shape and dtype
    """
    if not hasattr(x, "shape") or not hasattr(target, "shape") or tuple(x.shape) != tuple(target.shape):
        raise ValueError(f"l1_loss: x and target must have the same shape, received "
                         f"{getattr(x, 'shape', type(x).__name__)} and {getattr(target, 'shape', type(target).__name__)}")
    if x.dtype.kind != "f":
        raise ValueError(f"l1_loss: expected a floating-point x, received dtype {x.dtype}")
    xp = get_array_module(x)
    diff = x - target
    loss = xp.mean(xp.abs(diff))
    dx = xp.sign(diff)
    dx *= 1.0 / diff.size
    return loss, dx.astype(x.dtype, copy=False)


def l1_pattern(x, target):
    """The sign pattern of ``x - target``: where :func:`l1_loss`'s kinks lie (for the gradient checker)."""
    xp = get_array_module(x)
    return xp.sign(x - target)
