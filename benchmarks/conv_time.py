#!/usr/bin/env python
"""Time minigan's conv layers (forward + backward) at the 28x28 DCGAN's shapes against their matrix-product
floor and PyTorch eager, side by side.

Cases (batch 64, float32, training mode):

* ``D.conv1``  Conv2d 1→64, k4 s2 p1 on 28×28 (output 14×14);
* ``D.conv2``  Conv2d 64→128, k4 s2 p1 on 14×14 (output 7×7);
* ``G.convT1`` ConvTranspose2d 128→64, k4 s2 p1 on 7×7 (output 14×14);
* ``G.convT2`` ConvTranspose2d 64→1, k4 s2 p1 on 14×14 (output 28×28);
* ``bn``       BatchNorm over (64, 128, 7, 7) (training mode: batch statistics, running averages).

One sample is ``forward(x, train=True)`` then ``backward(g)`` with both the parameter and the input gradient
(in a GAN every one of these layers passes a gradient down: G's update goes through D into G's output).

The *floor* of a conv layer is the three matrix products it must do, run bare as ``np.matmul(a, b, out=c)`` on
preallocated float32 operands in the layer's own layouts (a transposed operand is a transposed view, as in the
layer): for Conv2d with K = in·kh·kw and P = N·OH·OW, Y (out×P) = W (out×K) · C (K×P), dW = G (out×P) · Cᵀ,
dC = Wᵀ · G; for ConvTranspose2d the same three with the roles of input and output exchanged. BatchNorm has no
matrix product; its reference line is one elementwise pass over the batch (``np.multiply(x, s, out=y)``, the
memory traffic of reading and writing it once), so its ratio reads as "equivalent passes".

PyTorch: ``torch.nn.functional.conv2d`` / ``conv_transpose2d`` / ``batch_norm`` with the same weights, input
and upstream gradient, forward then ``autograd.backward`` (input and parameters requiring gradients),
``torch.set_num_threads`` equal to numpy's BLAS threads.

Contenders are interleaved (minigan, floor, torch, minigan, ...) and each reports the median of its samples, so
the ratios compare the same seconds of a shared, noisy machine.

Usage::

    python benchmarks/conv_time.py --iters 50 --threads 1 [--out benchmarks/out/conv_time.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # run from a checkout without installing


def _parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--iters", type=int, default=50, help="timed samples per contender (after warm-up)")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1,
                    help="BLAS / torch threads (default 1: these machines are 2 shared cores, see RESULTS.md)")
    ap.add_argument("--cases", default="D.conv1,D.conv2,G.convT1,G.convT2,bn", help="comma-separated subset")
    ap.add_argument("--no-torch", action="store_true", help="skip PyTorch even when installed")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=os.path.join(HERE, "out", "conv_time.json"), help="JSON results file")
    return ap.parse_args(argv)


ARGS = _parse() if __name__ == "__main__" else None
if ARGS is not None and ARGS.threads:  # must be set before numpy (OpenBLAS) is imported
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(ARGS.threads)

import idle_threads  # noqa: E402  (benchmarks/idle_threads.py: idle threads sleep; minigan before NumPy)

IDLE_THREADS = idle_threads.apply()
import numpy as np  # noqa: E402

from minigan import backend  # noqa: E402
from minigan.nn import BatchNorm, Conv2d, ConvTranspose2d  # noqa: E402


def cases(batch: int) -> dict:
    """name -> (layer factory, input shape)."""
    return {
        "D.conv1": (lambda seed: Conv2d(1, 64, 4, 2, 1, init="normal", rng=seed), (batch, 1, 28, 28)),
        "D.conv2": (lambda seed: Conv2d(64, 128, 4, 2, 1, init="normal", rng=seed), (batch, 64, 14, 14)),
        "G.convT1": (lambda seed: ConvTranspose2d(128, 64, 4, 2, 1, init="normal", rng=seed), (batch, 128, 7, 7)),
        "G.convT2": (lambda seed: ConvTranspose2d(64, 1, 4, 2, 1, init="normal", rng=seed), (batch, 64, 14, 14)),
        "bn": (lambda seed: BatchNorm(128), (batch, 128, 7, 7)),
    }


class MiniganStep:
    def __init__(self, layer, x, g):
        self.layer, self.x, self.g = layer.train(), x, g

    def __call__(self):
        self.layer.forward(self.x, True)
        self.layer.backward(self.g)


class GemmFloor:
    """The layer's three matrix products, bare, on preallocated operands in its layouts."""

    def __init__(self, layer, x_shape, gen):
        n, c, h, w = x_shape
        kh, kw = layer.kernel_size
        if isinstance(layer, Conv2d):
            _, o, oh, ow = layer.output_shape(x_shape)
            rows, k, cols = o, c * kh * kw, n * oh * ow  # Y (o x P) = W (o x K) C (K x P)
        else:
            o = layer.out_channels
            rows, k, cols = c, o * kh * kw, n * h * w  # cols (K x P) = W2^T (K x c) X2 (c x P)
        f = np.float32
        self.W = gen.standard_normal((rows, k)).astype(f)
        self.C = gen.standard_normal((k, cols)).astype(f)
        self.G = gen.standard_normal((rows, cols)).astype(f)
        self.Y = np.empty((rows, cols), f)
        self.dW = np.empty((rows, k), f)
        self.dC = np.empty((k, cols), f)
        self.flops = 3 * 2 * rows * k * cols
        self.conv = isinstance(layer, Conv2d)

    def __call__(self):
        if self.conv:  # Y = W C, dW = G C^T, dC = W^T G
            np.matmul(self.W, self.C, out=self.Y)
            np.matmul(self.G, self.C.T, out=self.dW)
            np.matmul(self.W.T, self.G, out=self.dC)
        else:  # cols = W^T X, dX = W dcols, dW = X dcols^T (X: rows x P, cols: K x P)
            np.matmul(self.W.T, self.G, out=self.dC)
            np.matmul(self.W, self.C, out=self.Y)
            np.matmul(self.G, self.C.T, out=self.dW)


class OnePass:
    """One elementwise pass over the batch (read x, write y): BatchNorm's reference line."""

    def __init__(self, x):
        self.x, self.y = x, np.empty_like(x)
        self.s = np.float32(1.5)

    def __call__(self):
        np.multiply(self.x, self.s, out=self.y)


def torch_step(name, layer, x, g, threads):
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    tx = torch.tensor(x, requires_grad=True)
    tg = torch.tensor(g)
    params = {k: torch.tensor(backend.to_host(v), requires_grad=True) for k, v in layer.params.items()}
    if name == "bn":
        rm, rv = torch.zeros(x.shape[1]), torch.ones(x.shape[1])

        def fn():
            y = F.batch_norm(tx, rm, rv, params["gamma"], params["beta"], training=True, momentum=0.1, eps=1e-5)
            torch.autograd.backward(y, tg)
    elif isinstance(layer, Conv2d):
        def fn():
            y = F.conv2d(tx, params["W"], params["b"], layer.stride, layer.padding)
            torch.autograd.backward(y, tg)
    else:
        def fn():
            y = F.conv_transpose2d(tx, params["W"], params["b"], layer.stride, layer.padding, layer.output_padding)
            torch.autograd.backward(y, tg)

    def step():
        fn()
        for t in (tx, *params.values()):  # as an optimizer's zero_grad(set_to_none=True) would
            t.grad = None

    return step


def interleaved(contenders: dict, iters: int, warmup: int) -> dict:
    """Median (and quartiles) of seconds per call of each contender, sampled A B C A B C ..."""
    for fn in contenders.values():
        for _ in range(warmup):
            fn()
    samples = {name: [] for name in contenders}
    for _ in range(iters):
        for name, fn in contenders.items():
            t0 = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - t0)
    return {name: {"median": statistics.median(s), "q1": float(np.percentile(s, 25)),
                   "q3": float(np.percentile(s, 75))} for name, s in samples.items()}


def machine() -> dict:
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {"cpu": model, "cores": cores, "numpy": np.__version__, "python": platform.python_version(),
            "load_average_1min": load}


def main(args) -> dict:
    import importlib.util

    backend.use("numpy")
    use_torch = importlib.util.find_spec("torch") is not None and not args.no_torch
    gen = np.random.default_rng(args.seed)
    table = cases(args.batch)
    results = {}
    for name in args.cases.split(","):
        make, shape = table[name]
        layer = make(args.seed)
        x = gen.standard_normal(shape).astype(np.float32)
        y = layer.forward(x, True)
        g = gen.standard_normal(y.shape).astype(np.float32)
        contenders = {"minigan": MiniganStep(layer, x, g)}
        floor = OnePass(x) if name == "bn" else GemmFloor(layer, shape, gen)
        contenders["floor"] = floor
        if use_torch:
            contenders["torch"] = torch_step(name, layer, x, g, args.threads)
        t = interleaved(contenders, args.iters, args.warmup)
        mg, fl = t["minigan"]["median"], t["floor"]["median"]
        th = t["torch"]["median"] if use_torch else None
        results[name] = {
            "input_shape": list(shape), "output_shape": list(y.shape), "floor": "one elementwise pass" if name == "bn"
            else "3 matrix products", "floor_gflops": None if name == "bn" else floor.flops / fl / 1e9,
            "minigan_s": mg, "floor_s": fl, "torch_s": th, "minigan_over_floor": mg / fl,
            "torch_over_floor": th / fl if th else None, "torch_over_minigan": th / mg if th else None,
            "quartiles_s": {k: [v["q1"], v["q3"]] for k, v in t.items()},
        }
    out = {"batch": args.batch, "threads": args.threads, "iters": args.iters, "warmup": args.warmup,
           "date": time.strftime("%Y-%m-%d %H:%M"), "machine": machine(), "idle_threads": IDLE_THREADS, "cases": results}
    if use_torch:
        import torch
        out["torch_version"] = torch.__version__
    ms = lambda s: f"{1e3 * s:8.3f}" if s is not None else "     n/a"  # noqa: E731
    print(f"conv layers, forward + backward, batch {args.batch}, float32, {args.threads} thread(s), median of "
          f"{args.iters} interleaved samples (ms)")
    print(f"  {'case':9s} {'minigan':>8s} {'floor':>8s} {'torch':>8s}  {'mg/floor':>8s} {'torch/mg':>8s}  floor")
    for name, r in results.items():
        print(f"  {name:9s} {ms(r['minigan_s'])} {ms(r['floor_s'])} {ms(r['torch_s'])}  "
              f"{r['minigan_over_floor']:8.2f} {r['torch_over_minigan'] or float('nan'):8.2f}  {r['floor']}"
              + (f" ({r['floor_gflops']:.1f} GFLOP/s)" if r["floor_gflops"] else ""))
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(out, f, indent=1)
        print(f"wrote {args.out}")
    return out


if __name__ == "__main__":
    main(ARGS)
