"""The CUDA side of the fused passes: the ElementwiseKernel sources, their shared preamble (SplitMix64) and
compilation. Only CuPy ever compiles them; :mod:`minigan.backend.fused`, :mod:`minigan.backend.updates` and
:mod:`minigan.backend.rng` call them on CuPy arrays and run the same passes as NumPy code elsewhere."""

from __future__ import annotations

from . import _import_cupy


#
# Each function below does one elementwise step of a training iteration that the layers, losses and
# optimizers now do as several passes. On NumPy and on the strict backend it runs exactly those passes, in
# the same order, so its result is bit-identical to the code it is meant to replace (tests/test_fused.py
# checks that against the layers, losses and optimizers themselves). On CuPy it is one ElementwiseKernel: one
# launch instead of several, and no temporaries. The kernels are compiled with --fmad=false, so no
# multiply-add is contracted into an FMA and each step rounds as the separate passes do; the GPU check runs
# the same tests on CuPy against the unfused CuPy passes.
#
# Called: sgd_momentum_update and adam_update by the optimizers (on the CPU their blocks run on the block
# pool), bce_logits by the BCE loss, dropout_forward by Dropout, sigmoid and relu_forward by the activations,
# uniform and uniform_affine by Rng.random and Rng.uniform, dropout_draw by Dropout, maxout_forward/backward by Maxout on device
# arrays (CuPy, strict; on NumPy the layer runs the same passes in row blocks on the block pool, into reused
# buffers).

_KERNEL_OPTIONS = ("--fmad=false",)
_kernels: dict = {}


def _kernel(name: str):
    """The CuPy ElementwiseKernel ``name`` (compiled on first use; CuPy caches the binary on disk)."""
    if name not in _kernels:
        cupy = _import_cupy()
        in_params, out_params, body = _KERNEL_SOURCES[name]
        _kernels[name] = cupy.ElementwiseKernel(in_params, out_params, body, f"minigan_{name}",
                                                options=_KERNEL_OPTIONS, preamble=_PREAMBLE)
    return _kernels[name]


# Counter-based random numbers (CuPy): element i of a draw with key k is the i-th output of SplitMix64 started
# at k (Steele, Lea & Flood 2014), i.e. the mix of k + (i+1)·gamma, so a draw needs no generator state on the
# GPU and is reproduced from its key alone; U[0, 1) from the top 24 (float32) or 53 (float64) bits, as NumPy's.
_SPLITMIX_GAMMA, _SPLITMIX_M1, _SPLITMIX_M2 = 0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB
_PREAMBLE = f"""
__device__ unsigned long long minigan_splitmix64(unsigned long long key, unsigned long long i) {{
    unsigned long long z = key + (i + 1ULL) * {_SPLITMIX_GAMMA:#x}ULL;
    z = (z ^ (z >> 30)) * {_SPLITMIX_M1:#x}ULL;
    z = (z ^ (z >> 27)) * {_SPLITMIX_M2:#x}ULL;
    return z ^ (z >> 31);
}}
template <typename F> __device__ F minigan_unit_uniform(unsigned long long key, unsigned long long i) {{
    unsigned long long z = minigan_splitmix64(key, i);
    return sizeof(F) == 4 ? (F)((float)(z >> 40) * 5.9604644775390625e-08f)
                          : (F)((double)(z >> 11) * 1.1102230246251565e-16);
}}
"""
_SIGMOID = "(T)1 / ((T)1 + exp(-{x}))"
_SOFTPLUS = "(({x} > (T)0 || isnan({x})) ? {x} : (T)0) + log1p(exp(-fabs({x})))"

_KERNEL_SOURCES = {
    # terms = t sp(-l) + (1-t) sp(l);  dlogits = scale * (((1-t) sigma(l) - t sigma(-l)) / divisor)
    "bce_logits": (
        "T l, T t, T one_minus_t, T divisor, T scale", "T terms, T dlogits",
        "T sp_neg = " + _SOFTPLUS.format(x="(-l)") + ";\n"
        "T sp_pos = " + _SOFTPLUS.format(x="l") + ";\n"
        "terms = t * sp_neg + one_minus_t * sp_pos;\n"
        "T d = one_minus_t * (" + _SIGMOID.format(x="l") + ") - t * (" + _SIGMOID.format(x="(-l)") + ");\n"
        "d = d / divisor;\n"
        "dlogits = scale * d;"),
    # u = the i-th U[0, 1) number of the draw with this key (Rng.random on CuPy)
    "uniform": ("uint64 key", "T u", "u = minigan_unit_uniform<T>(key, i);"),
    # the "dropout" kernel below on the key's draw, computed in place of reading it: one launch, no u array
    "dropout_draw": (
        "T x, uint64 key, T p, T scale", "T y, T mask",
        "T m = (T)(minigan_unit_uniform<T>(key, i) >= p) * scale;\nmask = m;\ny = x * m;"),
    # mask (in place over the uniform draw u) = [u >= p] * scale;  y = x * mask
    "dropout": (
        "T x, T p, T scale", "T y, T mask",
        "T m = (T)(mask >= p) * scale;\nmask = m;\ny = x * m;"),
    # h[r, u] = max_j z[r, u*P + j]; winner = the first maximal piece (NaN propagates into h, as xp.maximum)
    # z holds XW without the bias b, which is added here when there is one (one rounding, as the unfused
    # z += b): the pass over z that adding it apart would cost is gone.
    "maxout_forward": (
        "raw T z, raw T b, bool has_bias, int32 pieces, int32 units", "T h, W winner",
        "const T* row = &z[i * pieces];\n"
        "const T* bias = &b[has_bias ? (i % units) * pieces : 0];\n"
        "T best = has_bias ? row[0] + bias[0] : row[0];\nW w = 0;\n"
        "for (int j = 1; j < pieces; ++j) {\n"
        "    T v = has_bias ? row[j] + bias[j] : row[j];\n"
        "    bool better = v > best;\n"
        "    if (better) w = (W)j;\n"
        "    if (better || isnan(v)) best = v;\n"
        "}\n"
        "h = best;\nwinner = w;"),
    # dz[r, u*P + j] = dout[r, u] * [winner[r, u] == j]  (a product, as the unfused pass: -0.0 and NaN alike)
    "maxout_backward": (
        "raw T dout, raw W winner, int32 pieces", "T dz",
        "const long k = i / pieces;\nconst int j = (int)(i % pieces);\n"
        "dz = dout[k] * (T)(winner[k] == j);"),
    # y = 1 / (1 + exp(-x))  (overflow of exp gives exactly 0, as the unfused passes)
    "sigmoid": ("T x", "T y", "y = " + _SIGMOID.format(x="x") + ";"),
    # positive = [x > 0];  y = max(x, 0), NaN kept (xp.maximum's), -0.0 becomes +0.0 (as xp.maximum(-0.0, 0))
    "relu_forward": ("T x", "T y, bool positive",
                     "positive = x > (T)0;\ny = (positive || isnan(x)) ? x : (T)0;"),
    # u = U[0, 1) draw of the key * (high - low) + low (two roundings, as the unfused passes)
    "uniform_affine": ("uint64 key, T scale, T shift", "T u",
                       "T v = minigan_unit_uniform<T>(key, i) * scale;\nu = v + shift;"),
    # v = v mu - g lr;  p = p + v
    "sgd_momentum": (
        "T g, T lr, T mu", "T p, T v",
        "T lr_g = g * lr;\nT v_ = v * mu;\nv_ = v_ - lr_g;\nv = v_;\np = p + v_;"),
    # m = m b1 + g (1-b1);  v = v b2 + g g (1-b2);  p = p - (m lr_t) / (sqrt(v) + eps_t)
    "adam": (
        "T g, T b1, T c1, T b2, T c2, T lr_t, T eps_t", "T p, T m, T v",
        "T m_ = m * b1;\nm_ = m_ + g * c1;\n"
        "T gg = g * g;\ngg = gg * c2;\nT v_ = v * b2;\nv_ = v_ + gg;\n"
        "T a = m_ * lr_t;\nT b = sqrt(v_);\nb = b + eps_t;\na = a / b;\n"
        "p = p - a;\nm = m_;\nv = v_;"),
}


def _scalar(like, value):
    """``value`` as a scalar of ``like``'s dtype: what NumPy does to a Python float in ``array * value``."""
    return like.dtype.type(value)
