"""The optimizers' fused updates (SGD with momentum, Adam and its clip factor): per tensor, in cache blocks on
the CPU's block pool, one kernel per tensor on CuPy, or one kernel for every tensor of a network."""

from __future__ import annotations

import math

import numpy as np

from . import _blockwise, _import_cupy, _is_cupy_array, _parallel, get_array_module, is_device_array
from .kernels import _KERNEL_OPTIONS, _kernel, _scalar


def lane_arrays(work: dict | None, lane: int, like, count: int) -> list:
    """``count`` scratch arrays shaped like ``like`` for one worker ``lane`` of :func:`minigan.parallel.blockwise`.

    ``work`` is a dict the caller keeps between calls (an optimizer's): each lane's buffers are reused while the
    blocks fit them (grown for a larger block or count, remade for another dtype or backend), so a steady update
    allocates nothing. ``None``: fresh arrays.
    """
    xp = get_array_module(like)
    if work is None:
        return [xp.empty_like(like) for _ in range(count)]
    buffers = work.get(lane)
    if (buffers is None or len(buffers) < count or buffers[0].size < like.size or buffers[0].dtype != like.dtype
            or get_array_module(buffers[0]) is not xp):
        # grow to the largest block and count seen (an Adam step's two 256 Ki scratch arrays and its clip's
        # three of 64 Ki share them), so updates that alternate do not reallocate every step
        same_kind = buffers is not None and buffers[0].dtype == like.dtype and get_array_module(buffers[0]) is xp
        size, kept = (max(like.size, buffers[0].size), len(buffers)) if same_kind else (like.size, 0)
        buffers = work[lane] = [xp.empty(size, like.dtype) for _ in range(max(count, kept))]
    return [b[:like.size].reshape(like.shape) for b in buffers[:count]]


def sgd_momentum_update(p, g, v, lr: float, momentum: float, work: dict | None = None) -> None:
    r"""Classical momentum in place, fused: :math:`v \leftarrow \mu v - \eta g`, :math:`p \leftarrow p + v`.

    NumPy/strict: three passes per cache block (:func:`cache_blocks`), the blocks shared among the block pool's
    workers (:func:`minigan.parallel.blockwise`), with ``work`` holding each worker's scratch
    (:func:`lane_arrays`); CuPy: one kernel writing ``p`` and ``v``. Called by ``SGD._update``.
    """
    if _is_cupy_array(p):
        _kernel("sgd_momentum")(g, _scalar(p, lr), _scalar(p, momentum), p, v)
        return
    _blockwise(_sgd_momentum_block(get_array_module(p), lr, momentum, work), p, g, v)


def _sgd_momentum_block(xp, lr: float, momentum: float, work: dict | None):
    def block(lane, p_, g_, v_):
        lr_g, = lane_arrays(work, lane, p_, 1)
        xp.multiply(g_, lr, out=lr_g)
        v_ *= momentum
        v_ -= lr_g
        p_ += v_
    return block


def _host_update_many(block, columns: list[list]) -> bool:
    """Run ``block`` over every tensor's cache blocks in one hand-off to the block pool
    (:func:`minigan.parallel.blockwise_many`) and return True; False (nothing done) unless every array is a
    NumPy array and no two parameters (``columns[0]``) share memory: blocks of different tensors run at once,
    where tensor by tensor a shared parameter is updated twice in turn."""
    if not columns[0] or not all(type(a) is np.ndarray for column in columns for a in column):
        return False
    spans = sorted((p.__array_interface__["data"][0], p.nbytes) for p in columns[0] if p.size)
    if any(start + nbytes > next_start for (start, nbytes), (next_start, _) in zip(spans, spans[1:])):
        return False
    _parallel().blockwise_many(block, list(zip(*columns)))
    return True


# Multi-tensor updates (CuPy): one launch updates every tensor of a network. The GPU iteration at small batches
# is bound by the host issuing kernels (~25 µs each on the H200 machine; benchmarks/RESULTS.md), and one kernel
# per parameter tensor was 16 of the CGAN's launches. Block row y of the grid updates tensor y, reading its
# arrays' addresses and size from a table in device memory; each element's arithmetic is the per-tensor
# kernel's, term by term, compiled the same way (no FMA contraction), so the bits are the same.
_MULTI_TENSOR_BODIES = {
    # arrays p, g, v; scalars lr, mu  (the "sgd_momentum" kernel's body)
    "sgd_momentum": (("p", "g", "v"), ("lr", "mu"),
                     "T lr_g = g[j] * lr; T v_ = v[j] * mu; v_ = v_ - lr_g; v[j] = v_; p[j] = p[j] + v_;"),
    # arrays p, g, m, v; scalars b1, c1, b2, c2, lr_t, eps_t  (the "adam" kernel's body)
    "adam": (("p", "g", "m", "v"), ("b1", "c1", "b2", "c2", "lr_t", "eps_t"),
             "T gj = g[j]; T m_ = m[j] * b1; m_ = m_ + gj * c1; T gg = gj * gj; gg = gg * c2; T v_ = v[j] * b2; "
             "v_ = v_ + gg; T a = m_ * lr_t; T b = sqrt(v_); b = b + eps_t; a = a / b; p[j] = p[j] - a; "
             "m[j] = m_; v[j] = v_;"),
}
_multi_tensor_kernels: dict = {}
# Launch plans by the identity of the arrays they update: (the arrays, kept alive so their ids stay theirs;
# the plan, or None where those arrays need the per-tensor updates). A CuPy array's address, shape, strides and
# dtype never change, so the checks and the address table are built once per set of arrays, not every step
# (this runs on the host-bound path of every small-batch GPU iteration).
_multi_tensor_plans: dict = {}
_MAX_PLANS = 16  # a run has two optimizers; models and optimizers that come and go are dropped in bulk
_MAX_TENSORS = 65535  # a grid's height (one row of blocks per tensor)


def _multi_tensor_source(name: str, ctype: str) -> str:
    arrays, scalars, body = _MULTI_TENSOR_BODIES[name]
    unpack = "".join(f"    T* {a} = (T*)table[{k} * n + t];\n" for k, a in enumerate(arrays))
    return (f"typedef {ctype} T;\n"
            f'extern "C" __global__ void minigan_{name}_many(const unsigned long long* table, int n, '
            + ", ".join(f"T {x}" for x in scalars) + ") {\n"
            "    const int t = blockIdx.y;\n" + unpack +
            f"    const long long size = (long long)table[{len(arrays)} * n + t];\n"
            "    for (long long j = blockIdx.x * (long long)blockDim.x + threadIdx.x; j < size;\n"
            "         j += (long long)gridDim.x * blockDim.x) {\n"
            f"        {body}\n"
            "    }\n}\n")


def _multi_tensor_plan(columns: list[list]):
    """``(table, grid, dtype)`` for one launch over tensors ``columns[k][t]`` (array k of tensor t), or None when
    they need the per-tensor updates (not CuPy arrays, or :func:`_multi_tensor_ready` says no). Cached."""
    if not columns[0] or not _is_cupy_array(columns[0][0]):
        return None
    key = tuple(id(a) for column in columns for a in column)
    cached = _multi_tensor_plans.get(key)
    if cached is not None:
        return cached[1]
    plan = None
    if _multi_tensor_ready(*columns):
        cupy = _import_cupy()
        sizes = tuple(a.size for a in columns[0])
        addresses = tuple(a.data.ptr for column in columns for a in column) + sizes
        with cupy.cuda.Device(columns[0][0].device.id):
            table = cupy.asarray(np.array(addresses, np.uint64))
        block = 256
        grid = (min(-(-max(sizes) // block), 4096), len(sizes))
        plan = (table, grid, columns[0][0].dtype) if max(sizes) else ()  # (): nothing to update
    if len(_multi_tensor_plans) >= _MAX_PLANS:
        _multi_tensor_plans.clear()
    _multi_tensor_plans[key] = ([list(column) for column in columns], plan)
    return plan


def _multi_tensor_update(name: str, plan: tuple, scalars: tuple) -> None:
    """Launch the ``name`` update once, as ``plan`` (:func:`_multi_tensor_plan`) says; CuPy only."""
    if not plan:
        return  # every tensor is empty (and a grid of width 0 is not a launch)
    table, grid, dtype = plan
    key = (name, dtype.str)
    if key not in _multi_tensor_kernels:
        source = _multi_tensor_source(name, {"float32": "float", "float64": "double"}[dtype.name])
        _multi_tensor_kernels[key] = _import_cupy().RawKernel(source, f"minigan_{name}_many",
                                                              options=_KERNEL_OPTIONS)
    _multi_tensor_kernels[key](grid, (256,), (table, np.int32(grid[1]), *(dtype.type(x) for x in scalars)))


def _multi_tensor_ready(*columns: list) -> bool:
    """True when ``columns`` (lists of arrays, one per tensor; the parameters first) can take one multi-tensor
    launch: CuPy arrays, C-contiguous, of one float dtype, each tensor's arrays of one size, no parameter twice
    (one launch would update it twice at once, where tensor by tensor updates it twice in turn), and at most
    :data:`_MAX_TENSORS` tensors. Otherwise the callers update tensor by tensor."""
    first = columns[0]
    if not first or len(first) > _MAX_TENSORS or not _is_cupy_array(first[0]) \
            or first[0].dtype not in (np.float32, np.float64):
        return False
    if not all(_is_cupy_array(a) and a.dtype == first[0].dtype and a.flags.c_contiguous
               for column in columns for a in column):
        return False
    if any(a.size != p.size for column in columns[1:] for a, p in zip(column, first)):
        return False
    return len({p.data.ptr for p in first}) == len(first)


def sgd_momentum_update_many(ps: list, gs: list, vs: list, lr: float, momentum: float,
                             work: dict | None = None) -> None:
    """:func:`sgd_momentum_update` on every ``(ps[i], gs[i], vs[i])``: one kernel for all on CuPy, the same bits
    as one kernel per tensor; on NumPy every tensor's cache blocks in one hand-off to the block pool (the same
    bits as tensor by tensor; :func:`_host_update_many`); elsewhere the per-tensor updates in turn. Called by
    ``SGD.step``."""
    plan = _multi_tensor_plan([ps, gs, vs])
    if plan is not None:
        _multi_tensor_update("sgd_momentum", plan, (lr, momentum))
        return
    if _host_update_many(_sgd_momentum_block(np, lr, momentum, work), [ps, gs, vs]):
        return
    for p, g, v in zip(ps, gs, vs):
        sgd_momentum_update(p, g, v, lr, momentum, work)


def adam_update_many(ps: list, gs: list, ms: list, vs: list, beta1: float, beta2: float, lr_t: float, eps_t: float,
                     work: dict | None = None) -> None:
    """:func:`adam_update` on every tensor with one (host) ``lr_t``: one kernel for all on CuPy, the same bits as
    one kernel per tensor; on NumPy every tensor's cache blocks in one hand-off to the block pool; elsewhere
    the per-tensor updates in turn. Called by ``Adam.step`` without a clip."""
    plan = _multi_tensor_plan([ps, gs, ms, vs])
    if plan is not None:
        _multi_tensor_update("adam", plan, (beta1, 1 - beta1, beta2, 1 - beta2, lr_t, eps_t))
        return
    if _host_update_many(_adam_block(np, beta1, beta2, lr_t, eps_t, work), [ps, gs, ms, vs]):
        return
    for p, g, m, v in zip(ps, gs, ms, vs):
        adam_update(p, g, m, v, beta1, beta2, lr_t, eps_t, work)


#: Elements per partial sum of :func:`adam_clip_scale`: each block's float64 sum rounds where the block ends, so
#: this number is part of the clip factor's bits (and of every run trained with a clip); kept at the 64 Ki the
#: committed runs were trained with when :data:`minigan.backend.CPU_BLOCK_ELEMENTS` grew.
CLIP_SUM_BLOCK = 1 << 16


def adam_clip_scale(g, v, beta2: float, bias2: float, eps: float, clip: float, work: dict | None = None):
    r"""StableAdamW's factor :math:`\min(1, c/r)` for one tensor's Adam step, with
    :math:`r = \sqrt{\operatorname{mean}(g^2/\hat u)}` and :math:`\hat u = (\beta_2 v + (1-\beta_2) g^2)/b_2`
    the second moment Adam is about to divide by (``bias2`` = :math:`1-\beta_2^t`), floored at :math:`\epsilon^2`.

    :math:`r` is near 1 while the second moment keeps up with the gradients, and far above 1 when a gradient
    dwarfs the ones before it (up to :math:`1/\sqrt{1-\beta_2}`), which is when Adam's step would spike
    (:class:`minigan.nn.optim.Adam`'s ``update_clip``). Read before :func:`adam_update` changes ``v``.

    NumPy: per block of :data:`CLIP_SUM_BLOCK` values on the block pool, the blocks' float64 sums added in block
    order (the same bits for every worker count), a Python float back. Device arrays (CuPy, strict): array expressions, and the factor
    stays a 0-d array of ``g``'s dtype on the device, so the step needs no read-back.
    """
    xp = get_array_module(g)
    floor = eps * eps
    if is_device_array(g):
        u = (v * beta2 + (g * g) * (1 - beta2)) / bias2
        r = xp.sqrt(xp.mean((g * g) / xp.maximum(u, floor), dtype=xp.float64))
        return xp.minimum(1.0, clip / r).astype(g.dtype)

    def block(lane, g_, v_):
        gg, u, t = lane_arrays(work, lane, g_, 3)
        xp.multiply(g_, g_, out=gg)
        xp.multiply(v_, beta2, out=u)
        u += xp.multiply(gg, 1 - beta2, out=t)
        u /= bias2
        xp.maximum(u, floor, out=u)
        gg /= u
        return float(gg.sum(dtype=xp.float64))

    r = math.sqrt(math.fsum(_blockwise(block, g, v, block=CLIP_SUM_BLOCK)) / max(g.size, 1))
    return 1.0 if r <= clip else clip / r


def adam_update(p, g, m, v, beta1: float, beta2: float, lr_t: float, eps_t: float, work: dict | None = None) -> None:
    r"""Adam in place, fused: :math:`m \leftarrow \beta_1 m + (1-\beta_1)g`, :math:`v \leftarrow \beta_2 v +
    (1-\beta_2)g^2`, :math:`p \leftarrow p - \eta_t m/(\sqrt v + \epsilon_t)`.

    ``lr_t`` and ``eps_t`` carry the bias corrections (``Adam.step`` computes them); ``lr_t`` may be a 0-d device
    array (a clipped step's, :func:`adam_clip_scale`). NumPy/strict: nine passes
    per cache block, the blocks shared among the block pool's workers, ``work`` holding each worker's two scratch
    arrays (:func:`lane_arrays`); CuPy: one kernel writing ``p``, ``m`` and ``v`` (the same operations in the
    same order, no FMA). Called by ``Adam._update``.
    """
    if _is_cupy_array(p):
        s = lambda value: _scalar(p, value)  # noqa: E731
        lr = lr_t.astype(p.dtype) if is_device_array(lr_t) else s(lr_t)  # a 0-d array broadcasts in the kernel
        _kernel("adam")(g, s(beta1), s(1 - beta1), s(beta2), s(1 - beta2), lr, s(eps_t), p, m, v)
        return
    _blockwise(_adam_block(get_array_module(p), beta1, beta2, lr_t, eps_t, work), p, g, m, v)


def _adam_block(xp, beta1: float, beta2: float, lr_t, eps_t: float, work: dict | None):
    def block(lane, p_, g_, m_, v_):
        a, b = lane_arrays(work, lane, p_, 2)
        m_ *= beta1
        m_ += xp.multiply(g_, 1 - beta1, out=a)
        v_ *= beta2
        xp.multiply(g_, g_, out=a)
        a *= 1 - beta2
        v_ += a
        xp.multiply(m_, lr_t, out=a)  # lr_t * m
        xp.sqrt(v_, out=b)
        b += eps_t                    # sqrt(v) + eps_t
        a /= b
        p_ -= a
    return block
