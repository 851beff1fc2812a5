"""The fused elementwise passes of the layers and losses (activations, BCE, dropout, maxout, the bias
gradient): one CuPy kernel each on the GPU, and exactly the passes they replace on NumPy and strict arrays
(the rationale is in :mod:`minigan.backend.kernels`)."""

from __future__ import annotations

import math

import numpy as np

from . import _import_cupy, _is_cupy_array, _parallel, get_array_module
from .kernels import _kernel, _scalar
from .rng import Rng


def _sigmoid_passes(xp, x):
    # the four in-place passes derived in minigan.nn.activations.sigmoid (which calls sigmoid below)
    t = xp.negative(x)
    with np.errstate(over="ignore"):
        xp.exp(t, out=t)
    t += 1
    return xp.reciprocal(t, out=t)


def _softplus_passes(xp, x):
    # minigan.losses.softplus
    return xp.maximum(x, 0) + xp.log1p(xp.exp(-xp.abs(x)))


def sigmoid(x):
    r"""The logistic function :math:`1/(1+e^{-x})`, fused: one kernel on CuPy, the four in-place passes of
    :func:`minigan.nn.activations.sigmoid`'s derivation elsewhere (bit-identical to them on NumPy/strict)."""
    if _is_cupy_array(x):
        return _kernel("sigmoid")(x)
    return _sigmoid_passes(get_array_module(x), x)


def relu_forward(x):
    """ReLU's forward, fused: ``(y, positive)`` with ``y = max(x, 0)`` and the mask ``positive = x > 0`` that
    the backward multiplies by. One kernel on CuPy; NumPy/strict: the layer's two passes, bit-identical."""
    if _is_cupy_array(x):
        return _kernel("relu_forward")(x)
    xp = get_array_module(x)
    positive = x > 0
    return xp.maximum(x, 0), positive


def bce_logits(logits, target: float, n: int | float, scale: float = 1.0):
    r"""Binary cross-entropy on logits, fused: the per-row loss terms and the scaled gradient in one pass.

    ``terms`` = :math:`t\,\mathrm{sp}(-\ell) + (1-t)\,\mathrm{sp}(\ell)` (their mean is the loss) and
    ``dlogits`` = :math:`\text{scale}\cdot[(1-t)\sigma(\ell) - t\sigma(-\ell)]/n`, for a Python float target
    ``t`` (1.0 real, 0.0 fake). With ``n`` = N and ``scale`` = 1 these are
    :func:`minigan.losses.bce_with_logits`'s terms and gradient; ``scale`` = 0.5 gives
    :func:`minigan.losses.discriminator_loss`'s halves. NumPy/strict: bit-identical to those functions.

    Called by ``minigan/nn/losses.py``'s ``bce_with_logits`` for a float target, in place of its two ``softplus``
    calls, the two ``sigmoid`` calls and the arithmetic around them (about 20 elementwise passes on CuPy, 2
    here). ``discriminator_loss`` could pass ``scale=0.5`` instead of multiplying afterwards (not done yet).
    """
    xp = get_array_module(logits)
    t = float(target)
    if _is_cupy_array(logits):
        terms, dlogits = _kernel("bce_logits")(logits, _scalar(logits, t), _scalar(logits, 1 - t),
                                               _scalar(logits, n), _scalar(logits, scale))
        return terms, dlogits
    terms = t * _softplus_passes(xp, -logits) + (1 - t) * _softplus_passes(xp, logits)
    dlogits = ((1 - t) * _sigmoid_passes(xp, logits) - t * _sigmoid_passes(xp, -logits)) / n
    dlogits = dlogits.astype(logits.dtype, copy=False)
    return terms, scale * dlogits


def dropout_forward(x, u, p: float, out=None):
    r"""Inverted dropout's training forward, fused: ``u`` (a U[0, 1) draw shaped like ``x``) becomes the mask.

    ``u`` is overwritten in place with :math:`m = [u \ge p]/(1-p)` and :math:`y = x \odot m` is returned with
    it: ``(y, mask)``, ``mask is u``; ``y`` is written into ``out`` when given. NumPy/strict: the three passes of ``Dropout.forward``, bit-identical;
    CuPy: one kernel, exactly the same arithmetic (products by 0 and by the float-rounded scale).

    Called by ``minigan/nn/dropout.py``'s ``Dropout.forward`` for a fresh mask. ``Dropout.backward``
    (``dout * mask``) is one pass already.
    """
    scale = 1 / (1 - p)
    if _is_cupy_array(x):
        y = _import_cupy().empty_like(x) if out is None else out
        _kernel("dropout")(x, _scalar(u, p), _scalar(u, scale), y, u)
        return y, u
    xp = get_array_module(x)
    xp.greater_equal(u, p, out=u)
    u *= scale
    return (x * u if out is None else xp.multiply(x, u, out=out)), u


def dropout_threshold(p: float, dtype) -> int:
    r"""The integer form of dropout's keep test ``u >= p`` on the raw bits of a ``dtype`` draw: ``u >= p`` exactly
    when ``bits >= dropout_threshold(p, dtype)``, for the bits :func:`minigan.parallel.random_bits` hands over.

    ``u = (bits >> s)·2^{-m}`` (:data:`minigan.parallel.UNIFORM_BITS`), and NumPy compares a float32 draw with
    ``p`` rounded to float32 (a Python float meets a float32 array as float32), so with :math:`p'` that
    rounding, :math:`u \ge p' \iff (	ext{bits} \gg s) \ge \lceil p' 2^m
ceil \iff 	ext{bits} \ge
    \lceil p' 2^m
ceil 2^s` (:math:`p' 2^m` is exact in float64). :math:`2^{32}` (:math:`2^{64}` for float64),
    above every word, when :math:`p'` rounds to 1.
    """
    bits, shift = _parallel().UNIFORM_BITS[np.dtype(dtype)]
    rounded = float(np.dtype(dtype).type(p))
    return math.ceil(rounded * 2.0 ** bits) << shift


def dropout_draw(x, rng: Rng, p: float):
    r"""Inverted dropout's training forward with a fresh mask from ``rng``: ``(y, mask)``, the same bits as
    ``dropout_forward(x, rng.random(x.shape, x.dtype, like=x), p)``.

    NumPy (a C-contiguous float array): the mask comes from the draw's raw bits, never made floats
    (:func:`minigan.parallel.random_bits`, compared with :func:`dropout_threshold`), then the same two passes as
    :func:`dropout_forward` (the 0/1 mask times ``1/(1-p)``, and ``x`` times the mask), block by block on the
    block pool, each block's passes reading its bits from the cache. CuPy: one kernel computes the key's draw
    where it uses it (no array of uniforms is written and read back). Elsewhere (strict, other layouts): the
    draw, then :func:`dropout_forward`. Called by ``Dropout.forward``.
    """
    if _is_cupy_array(x) and x.dtype in (np.float32, np.float64):
        cupy = _import_cupy()
        x = cupy.ascontiguousarray(x)  # element i of the draw meets element i of x in C order, as rng.random's
        y, mask = cupy.empty_like(x), cupy.empty_like(x)
        _kernel("dropout_draw")(x, rng.device_key(), _scalar(x, p), _scalar(x, 1 / (1 - p)), y, mask)
        return y, mask
    if type(x) is not np.ndarray or not x.flags.c_contiguous or x.dtype not in (np.float32, np.float64):
        return dropout_forward(x, rng.random(x.shape, x.dtype, like=x), p)
    mask, y = np.empty_like(x), np.empty_like(x)
    flat_mask, flat_x, flat_y = mask.reshape(-1), x.reshape(-1), y.reshape(-1)
    threshold = dropout_threshold(p, x.dtype)
    keeps_none = threshold >= 2 ** (32 if x.dtype == np.float32 else 64)  # p rounds to 1: above every word
    scale = 1 / (1 - p)

    def passes(start: int, stop: int, bits) -> None:
        keep = flat_mask[start:stop]
        if keeps_none:
            keep.fill(0)
        else:
            np.greater_equal(bits, bits.dtype.type(threshold), out=keep)  # [u >= p] as 0.0 / 1.0
        keep *= scale
        np.multiply(flat_x[start:stop], keep, out=flat_y[start:stop])

    _parallel().random_bits(rng.host, x.size, x.dtype, passes)
    return y, mask


def _index_type(pieces: int):
    return np.int8 if pieces <= 127 else np.int32


def maxout_forward(z, units: int, pieces: int, bias=None):
    """Maxout's bias and max over pieces, fused: ``(h, winner)`` from ``z + bias``, ``z`` = XW (N, units·pieces).

    Pieces of a unit are adjacent columns (column ``u*pieces + j``). ``h`` (N, units) is the max, ``winner``
    (N, units, int8 for up to 127 pieces) the index of the first maximal piece; a NaN piece makes ``h`` NaN, as
    ``xp.maximum`` does. ``bias`` (units·pieces,), or None for none. NumPy/strict: ``z += bias`` in place, then
    ``Maxout.forward``'s transposing copy and running max, bit-identical (values and winners); CuPy: one kernel
    reading each row's pieces once and adding the bias as it reads (``z`` is left as it was).

    Called by ``minigan/nn/dense.py``'s ``Maxout.forward`` on device arrays.
    """
    n = z.shape[0]
    if z.shape[1] != units * pieces:
        raise ValueError(f"maxout_forward: z has {z.shape[1]} columns, expected units*pieces = {units * pieces}")
    if bias is not None and bias.shape != (units * pieces,):
        raise ValueError(f"maxout_forward: bias has shape {bias.shape}, expected ({units * pieces},)")
    if _is_cupy_array(z):
        cupy = _import_cupy()
        h = cupy.empty((n, units), z.dtype)
        winner = cupy.empty((n, units), _index_type(pieces))
        b = z if bias is None else cupy.ascontiguousarray(bias, z.dtype)  # unread without a bias
        _kernel("maxout_forward")(cupy.ascontiguousarray(z), b, np.bool_(bias is not None), np.int32(pieces),
                                  np.int32(units), h, winner)
        return h, winner
    xp = get_array_module(z)
    if bias is not None:
        z += bias
    z_pieces = xp.empty((pieces, n, units), z.dtype)
    xp.copyto(z_pieces, z.reshape(n, units, pieces).transpose(2, 0, 1))
    h = z_pieces[0].copy()
    index_type = _index_type(pieces)
    winner = xp.zeros((n, units), index_type)
    better = xp.empty((n, units), np.bool_)
    candidate = xp.empty((n, units), index_type)
    for j in range(1, pieces):
        xp.greater(z_pieces[j], h, out=better)
        xp.multiply(better, j, out=candidate)
        xp.maximum(winner, candidate, out=winner)
        xp.maximum(h, z_pieces[j], out=h)
    return h, winner


def maxout_backward(dout, winner, pieces: int):
    """Maxout's gradient into Z, fused: ``dz`` (N, units·pieces) with ``dz[:, u*P + j] = dout[:, u] * [winner == j]``.

    NumPy/strict: ``Maxout.backward``'s masked product per piece, bit-identical (a product, so a negative
    gradient times 0 is -0.0 in both); CuPy: one kernel over dz.

    Called by ``minigan/nn/dense.py``'s ``Maxout.backward`` on device arrays.
    """
    n, units = dout.shape
    if _is_cupy_array(dout):
        cupy = _import_cupy()
        dz = cupy.empty((n, units * pieces), dout.dtype)
        _kernel("maxout_backward")(cupy.ascontiguousarray(dout), cupy.ascontiguousarray(winner),
                                   np.int32(pieces), dz)
        return dz
    xp = get_array_module(dout)
    dz = xp.empty((n, units * pieces), dout.dtype)
    dz_pieces = dz.reshape(n, units, pieces)
    is_winner = xp.empty((n, units), np.bool_)
    for j in range(pieces):
        xp.equal(winner, j, out=is_winner)
        xp.multiply(dout, is_winner, out=dz_pieces[:, :, j])
    return dz


_ones_rows: dict = {}


def column_sum(a, out):
    """``out[j] = sum_i a[i, j]``: a bias gradient, the sum of a 2-D upstream gradient over the batch.

    NumPy/strict: ``a.sum(axis=0, out=out)``, unchanged (NumPy's pairwise sum, the CPU's published bits). CuPy:
    one matrix product ``1ᵀ a`` against a cached row of ones: cuBLAS reads ``a`` once at memory speed, where
    CuPy's reduction over the leading axis took 1.6 ms of an 11.1 ms CGAN iteration at batch 8192 on an H200
    (7 calls; benchmarks/step_profile.py --view kernels). Called by ``Linear.backward``.
    """
    if not _is_cupy_array(a):
        a.sum(axis=0, out=out)
        return out
    cupy = _import_cupy()
    n = a.shape[0]
    key = (a.dtype.str, a.device.id)
    ones = _ones_rows.get(key)
    if ones is None or ones.shape[1] < n:
        ones = _ones_rows[key] = cupy.ones((1, max(n, 1)), a.dtype)
    if out.flags.c_contiguous:
        cupy.matmul(ones[:, :n], a, out=out.reshape(1, -1))  # a view: the product lands in out
    else:
        out[...] = (ones[:, :n] @ a).reshape(out.shape)
    return out
