#!/usr/bin/env python
"""Time one CGAN training iteration in minigan against its matrix-product floor and PyTorch eager.

One *iteration* is what the trainer's step does (``minigan.train.Trainer._train_step``, i.e. the family's update with k = 1, metrics
left out): gather a real batch, draw noise, G forward (train mode), D update on real+fake rows
(:func:`minigan.objective.discriminator_step` + SGD), draw noise, G update through D
(:func:`minigan.objective.generator_step` + SGD). SGD lr 0.1 momentum 0.5, dropout active, float32.

The *floor* is the list of matrix products that iteration cannot avoid, run bare as
``xp.matmul(a, b, out=c)`` on preallocated float32 operands laid out as the layers hold them (``x.T`` and
``W.T`` are transposed views, as in a layer's backward). The list is derived from the model's layers by
:func:`products` (printed with ``--list-products``):

* D step, on 2B rows (real and fake in one batch): G forward on B rows (x_fake); D forward; dW = x^T dout for
  every D layer; dx = dout W^T for every D layer except the first layer of each input branch (x and y are data).
* G step, on B rows: G forward; D forward; dx through every D layer down to D's x input (not to its y input),
  and no dW for D; dW for every G layer, dx for every G layer except the first of each input branch (z, y).

``--update simultaneous`` times the paper presets' one-pass update instead
(:func:`minigan.objective.simultaneous_step`, the original pylearn2 code's): G forward on B rows; D forward on
2B rows; dx through D down to its x input on 2B rows (G's loss); dW for every D layer on 2B rows (D's loss);
G backward on B rows. The PyTorch reference implements the alternating iteration only, so it is skipped there.

Contenders are interleaved (minigan, floor, torch, minigan, ...) and each reports the median of its samples, so
the ratios compare the same minutes of a shared, noisy machine.

Usage::

    python benchmarks/step_time.py --model cgan --batch 100 --iters 200 [--device cpu|gpu] [--json]
    python benchmarks/step_time.py --batch 100 --mem-iters 1000     # + RSS growth over 1,000 iterations

With ``--json`` the last line printed is one JSON object (``minigan_s``, ``floor_s``, ``torch_s``, ``batch``,
``device``, ratios, memory).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # run from a checkout without installing


def _parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="cgan", choices=["cgan"])
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--device", default="cpu", choices=["cpu", "gpu"])
    ap.add_argument("--update", default="alternating", choices=["alternating", "simultaneous"],
                    help="the iteration timed: Algorithm 1 (default; the issue's and PyTorch's) or the paper "
                         "presets' one-pass update")
    ap.add_argument("--iters", type=int, default=100, help="timed samples per contender (after warm-up)")
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--inner", type=int, default=None,
                    help="iterations per timed sample (default 1 on cpu, 10 on gpu: one sync per sample)")
    ap.add_argument("--threads", type=int, default=None,
                    help="BLAS / torch threads (default: what numpy's BLAS uses, i.e. the core count)")
    ap.add_argument("--no-torch", action="store_true", help="skip PyTorch even when installed")
    ap.add_argument("--mem-iters", type=int, default=0,
                    help="also measure memory: peak RSS and RSS growth between iteration 100 and this one "
                         "(in a fresh process per contender; 0 = skip)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--list-products", action="store_true", help="print the floor's products and exit")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--_mem", choices=["minigan", "torch"], help=argparse.SUPPRESS)
    return ap.parse_args(argv)


ARGS = _parse()
if ARGS.threads is not None:  # must be set before numpy (OpenBLAS) is imported
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(ARGS.threads)

import numpy as np  # noqa: E402

from minigan import backend, objective  # noqa: E402
from minigan.families import mlp as models  # noqa: E402  (the papers' MLP models)
from minigan.nn import Join, Layer, Linear, Sequential, optim  # noqa: E402

# --------------------------------------------------------------------------------------------------
# The floor: the products one iteration must do
# --------------------------------------------------------------------------------------------------


def linear_layers(layer: Layer, source="data"):
    """``[(linear, source), ...]`` in forward order, and the source of the layer's output.

    ``source`` is the index of the network input a layer reads directly (0 for x or z, 1 for y), or None
    when a parametric layer lies between it and the inputs. Only layers with ``source=None`` need dx
    unconditionally; a first layer needs dx only when its input is differentiated (D's x in the G step).
    """
    if isinstance(layer, Linear):  # Maxout included
        return [(layer, None if source is None else (0 if source == "data" else source))], None
    if isinstance(layer, Sequential):
        found = []
        for child in layer.layers:
            got, source = linear_layers(child, source)
            found += got
        return found, source
    if isinstance(layer, Join):
        found = []
        for i, branch in enumerate(layer.children().values()):
            got, _ = linear_layers(branch, i if source == "data" else None)
            found += got
        return found, None
    if layer.params or layer.children():
        raise TypeError(f"linear_layers: unknown container or parametric layer {layer!r}")
    return [], source  # an activation or dropout: passes its input's source through


def products(model, B: int, update: str = "alternating"):
    """The matrix products of one iteration: ``[(label, (m, k), (k, n), a_transposed, b_transposed), ...]``.

    ``x @ W`` is (rows, in) @ (in, out); ``dW = x.T @ dout`` is (in, rows) @ (rows, out) with x.T a transposed
    view; ``dx = dout @ W.T`` is (rows, out) @ (out, in) with W.T a transposed view.
    """
    G, _ = linear_layers(model.G)
    D, _ = linear_layers(model.D)
    out = []

    def fwd(net, rows, tag):
        for lin, _ in net:
            out.append((f"{tag} fwd {lin.path}", (rows, lin.in_features), (lin.in_features, lin.out_features),
                        False, False))

    def bwd(net, rows, tag, dW, dx_wanted):
        for lin, src in reversed(net):
            if dW:
                out.append((f"{tag} dW {lin.path}", (lin.in_features, rows), (rows, lin.out_features), True, False))
            if dx_wanted(src):
                out.append((f"{tag} dx {lin.path}", (rows, lin.out_features), (lin.out_features, lin.in_features),
                            False, True))

    if update == "simultaneous":
        fwd(G, B, "G")
        fwd(D, 2 * B, "D")
        bwd(D, 2 * B, "D (G's loss)", dW=False, dx_wanted=lambda src: src is None or src == 0)
        bwd(D, 2 * B, "D (D's loss)", dW=True, dx_wanted=lambda src: False)
        bwd(G, B, "G", dW=True, dx_wanted=lambda src: src is None)
        return out
    # D step
    fwd(G, B, "Dstep G")
    fwd(D, 2 * B, "Dstep D")
    bwd(D, 2 * B, "Dstep D", dW=True, dx_wanted=lambda src: src is None)
    # G step
    fwd(G, B, "Gstep G")
    fwd(D, B, "Gstep D")
    bwd(D, B, "Gstep D", dW=False, dx_wanted=lambda src: src is None or src == 0)
    bwd(G, B, "Gstep G", dW=True, dx_wanted=lambda src: src is None)
    return out


class Floor:
    """The products of :func:`products`, bare, on preallocated operands of the active backend."""

    def __init__(self, model, B: int, seed: int = 0, update: str = "alternating"):
        xp = backend.xp()
        rng = np.random.default_rng(seed)
        self.matmul = xp.matmul
        self.ops = []
        self.list = products(model, B, update)
        for _, (m, k), (k2, n), ta, tb in self.list:
            def operand(r, c, transposed):
                host = rng.uniform(-1, 1, (c, r) if transposed else (r, c)).astype(np.float32)
                dev = backend.to_device(host)
                return dev.T if transposed else dev
            a, b = operand(m, k, ta), operand(k2, n, tb)
            c = backend.to_device(np.zeros((m, n), np.float32))
            self.ops.append((a, b, c))
        self.flops = sum(2 * m * k * n for _, (m, k), (_, n), _, _ in self.list)

    def __call__(self):
        mm = self.matmul
        for a, b, c in self.ops:
            mm(a, b, out=c)


# --------------------------------------------------------------------------------------------------
# minigan: the trainer's iteration
# --------------------------------------------------------------------------------------------------


def data_pool(B: int, seed: int = 0):
    """Synthetic MNIST-shaped training data on the host: images in [0, 1) and labels 0..9."""
    n = max(B, 10_000)
    rng = np.random.default_rng(seed + 1)
    return rng.random((n, models.IMAGE_SIZE), dtype=np.float32), rng.integers(0, 10, n)


class MiniganStep:
    """One iteration of ``Trainer._train_step`` (k = 1, SGD as in the paper preset, metrics left out)."""

    def __init__(self, model, B: int, x_pool, labels, seed: int = 0, update: str = "alternating"):
        self.m, self.B, self.update = model, B, update
        self.opt_G = optim.SGD(model.G, lr=0.1, momentum=0.5)
        self.opt_D = optim.SGD(model.D, lr=0.1, momentum=0.5)
        self.x_train = backend.to_device(x_pool)
        self.y_train = model.one_hot(labels)
        self.noise_rng = backend.Rng(seed + 2)
        self.perm_rng = backend.Rng(seed + 3)
        self.n = x_pool.shape[0]
        self._new_epoch()

    def _new_epoch(self):
        self.perm, self.start = self.perm_rng.permutation(self.n), 0

    def __call__(self):
        m, B = self.m, self.B
        if self.start + B > self.n:
            self._new_epoch()
        idx = self.perm[self.start:self.start + B]
        self.start += B
        x_real, y_real = self.x_train[idx], self.y_train[idx]
        z = m.sample_noise(B, self.noise_rng, like=x_real)
        if self.update == "simultaneous":
            loss_D, loss_G, _, _ = objective.simultaneous_step(m.G, m.D, x_real, z, y_real)
            self.opt_D.step()
            self.opt_G.step()
            return loss_D, loss_G
        x_fake = m.G.forward((z, y_real), train=True)
        loss_D, _, _ = objective.discriminator_step(m.D, x_real, x_fake, y_real, y_real, train=True)
        self.opt_D.step()
        z = m.sample_noise(B, self.noise_rng, like=x_real)
        loss_G, _, _, _ = objective.generator_step(m.G, m.D, z, y_real)
        self.opt_G.step()
        return loss_D, loss_G


# --------------------------------------------------------------------------------------------------
# Timing and memory
# --------------------------------------------------------------------------------------------------


def _proc_status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def rss_mib() -> float:
    kib = _proc_status_kib("VmRSS")
    if kib is None:  # not Linux: ru_maxrss is the best we have
        import resource
        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib / 1024


def peak_rss_mib() -> float:
    kib = _proc_status_kib("VmHWM")
    if kib is None:
        import resource
        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib / 1024


def blas_threads() -> int:
    """Threads numpy's BLAS will use (threadpoolctl if installed, else the environment, else the cores)."""
    try:
        from threadpoolctl import threadpool_info
        counts = [p["num_threads"] for p in threadpool_info() if p.get("user_api") == "blas"]
        if counts:
            return int(counts[0])
    except ImportError:
        pass
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def have_torch() -> bool:
    import importlib.util
    return importlib.util.find_spec("torch") is not None


def make_torch_step(mg_model, B, x_pool, labels, device, threads, seed):
    import torch

    sys.path.insert(0, HERE)
    from torch_reference import TorchCGANStep

    torch.set_num_threads(threads)
    step = TorchCGANStep(mg_model, B, x_pool, labels, device=device, seed=seed)
    sync = torch.cuda.synchronize if device == "gpu" else (lambda: None)
    return step, sync


def interleaved(contenders: dict, iters: int, warmup: int, inner: int) -> dict:
    """Median seconds per iteration of each contender, sampled A B C A B C ... (sync before each clock read)."""
    for fn, sync in contenders.values():
        for _ in range(warmup):
            fn()
        sync()
    samples = {name: [] for name in contenders}
    for _ in range(iters):
        for name, (fn, sync) in contenders.items():
            t0 = time.perf_counter()
            for _ in range(inner):
                fn()
            sync()
            samples[name].append((time.perf_counter() - t0) / inner)
    return {name: {"median": statistics.median(s), "q1": float(np.percentile(s, 25)),
                   "q3": float(np.percentile(s, 75))} for name, s in samples.items()}


def memory_run(which: str, args) -> dict:
    """In this (fresh) process: RSS before the model, peak RSS, and RSS at iteration 100 and ``mem_iters``."""
    rss0 = rss_mib()
    x_pool, labels = data_pool(args.batch, args.seed)
    model = models.cgan(args.seed)
    if which == "minigan":
        step, sync = MiniganStep(model, args.batch, x_pool, labels, args.seed, args.update), backend.synchronize
    else:
        step, sync = make_torch_step(model, args.batch, x_pool, labels, args.device,
                                     args.threads or blas_threads(), args.seed)
    pool_mib = x_pool.nbytes / 2**20
    marks = {}
    for i in range(1, args.mem_iters + 1):
        step()
        if i in (100, args.mem_iters):
            sync()
            marks[i] = rss_mib()
    out = {"rss_before_mib": rss0, "peak_rss_mib": peak_rss_mib(), "data_pool_mib": pool_mib,
           "rss_at_100_mib": marks.get(100), f"rss_at_{args.mem_iters}_mib": marks.get(args.mem_iters),
           "growth_mib": (marks[args.mem_iters] - marks[100]) if 100 in marks else None}
    out["peak_minus_before_mib"] = out["peak_rss_mib"] - rss0
    if args.device == "gpu":
        if which == "minigan":
            out["device_pool_mib"] = backend.xp().get_default_memory_pool().total_bytes() / 2**20
        else:
            import torch
            out["device_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def measure_memory(which: str, args) -> dict | None:
    """Run :func:`memory_run` in a child process, so each contender's RSS is its own."""
    cmd = [sys.executable, os.path.abspath(__file__), "--_mem", which, "--batch", str(args.batch),
           "--device", args.device, "--mem-iters", str(args.mem_iters), "--seed", str(args.seed),
           "--update", args.update]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        print(f"memory run for {which} failed:\n{res.stderr}", file=sys.stderr)
        return None
    return json.loads(res.stdout.strip().splitlines()[-1])


def machine() -> dict:
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": model, "cores": cores, "numpy": np.__version__, "python": platform.python_version()}


def main(args) -> dict:
    if args.device == "gpu":
        backend.use("cupy")  # a clear BackendError without CuPy or a GPU
    else:
        backend.use("numpy")
    if args._mem:
        print(json.dumps(memory_run(args._mem, args)))
        return {}
    B = args.batch
    inner = args.inner or (10 if args.device == "gpu" else 1)
    threads = args.threads or blas_threads()
    x_pool, labels = data_pool(B, args.seed)
    model = models.cgan(args.seed)
    floor = Floor(model, B, args.seed, args.update)
    if args.list_products:
        for label, (m, k), (_, n), ta, tb in floor.list:
            print(f"{label:32s} ({m:5d} x {k:5d}{'ᵀ' if ta else ' '}) @ ({k:5d} x {n:5d}{'ᵀ' if tb else ' '})")
        print(f"{len(floor.list)} products, {floor.flops / 1e9:.3f} GFLOP per iteration")
        return {}
    torch_model = models.cgan(args.seed)  # its own copy: minigan's weights move as minigan trains
    contenders = {"minigan": (MiniganStep(model, B, x_pool, labels, args.seed, args.update),
                              backend.synchronize),
                  "floor": (floor, backend.synchronize)}
    use_torch = have_torch() and not args.no_torch and args.update == "alternating"
    if use_torch:
        contenders["torch"] = make_torch_step(torch_model, B, x_pool, labels, args.device, threads, args.seed)
    t = interleaved(contenders, args.iters, args.warmup, inner)
    mg, fl = t["minigan"]["median"], t["floor"]["median"]
    th = t["torch"]["median"] if use_torch else None
    result = {
        "model": args.model, "update": args.update, "batch": B, "device": args.device, "threads": threads,
        "iters": args.iters,
        "inner": inner, "minigan_s": mg, "floor_s": fl, "torch_s": th,
        "minigan_over_floor": mg / fl, "torch_over_floor": th / fl if th else None,
        "torch_over_minigan": th / mg if th else None, "floor_gflops": floor.flops / fl / 1e9,
        "quartiles_s": {k: [v["q1"], v["q3"]] for k, v in t.items()}, "machine": machine(),
    }
    if use_torch:
        import torch
        result["torch_version"] = torch.__version__
    if args.mem_iters:
        result["memory"] = {"minigan": measure_memory("minigan", args)}
        if use_torch:
            result["memory"]["torch"] = measure_memory("torch", args)
    ms = lambda s: f"{1e3 * s:8.2f} ms" if s is not None else "     n/a"  # noqa: E731
    print(f"CGAN iteration ({args.update} update), batch {B}, {args.device}, {threads} threads, "
          f"median of {args.iters} interleaved samples")
    print(f"  minigan {ms(mg)}   floor {ms(fl)} ({result['floor_gflops']:.1f} GFLOP/s)   torch {ms(th)}")
    print(f"  minigan/floor {mg / fl:.3f}" + (f"   torch/floor {th / fl:.3f}   torch/minigan {th / mg:.3f}"
                                               if th else ""))
    if args.mem_iters:
        for who, mem in result["memory"].items():
            if mem:
                print(f"  memory {who}: peak RSS {mem['peak_rss_mib']:.1f} MiB (+{mem['peak_minus_before_mib']:.1f} "
                      f"over start, data pool {mem['data_pool_mib']:.1f}), growth it.100→{args.mem_iters}: "
                      f"{mem['growth_mib']:+.2f} MiB")
    if args.json:
        print(json.dumps(result))
    return result


if __name__ == "__main__":
    main(ARGS)
