#!/usr/bin/env python
"""Time one training iteration of the 28x28 DCGAN (``--model dcgan``/``cdcgan``) against its matrix-product floor
and PyTorch CPU eager, side by side.

One *iteration* is exactly what the trainer does per update (``minigan.train.Trainer._train_step``: the
family's alternating update): draw noise, G forward (training mode), D's step on the real and the fake batch as
two passes (BatchNorm statistics per batch) and Adam; fresh noise, G's step through D and Adam. Batch 64,
float32, width 64 (G: 128 and 64 channels; D: 64 and 128), Radford et al.'s networks.

The *floor* is the matrix products such an iteration must do, run bare as ``np.matmul(a, b, out=c)`` on
preallocated contiguous float32 operands (per layer: the forward product, and the weight-gradient and
input-gradient products where the update computes them; see :func:`floor_products`). It leaves out everything
that is not a product (im2col/col2im copies, BatchNorm, activations, Adam), so minigan / floor says how much
the rest costs.

PyTorch (optional: skipped without ``torch``): the same networks built from ``torch.nn`` with minigan's initial
weights, the same two-pass D step and G step with ``torch.optim.Adam``, ``torch.set_num_threads`` equal to
NumPy's BLAS threads.

Contenders are interleaved (minigan, floor, torch, minigan, ...) and each reports the median of its samples.

Usage::

    python benchmarks/dcgan_step_time.py --iters 20 --threads 1 [--model cdcgan] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import dataclasses
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
    ap.add_argument("--model", choices=("dcgan", "cdcgan"), default="dcgan")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--iters", type=int, default=20, help="timed samples per contender (after warm-up)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="BLAS / torch threads (default 1)")
    ap.add_argument("--no-torch", action="store_true", help="skip PyTorch even when installed")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="JSON results file (default: print only)")
    return ap.parse_args(argv)


ARGS = _parse() if __name__ == "__main__" else None
if ARGS is not None and ARGS.threads:  # must be set before numpy (OpenBLAS) is imported
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(ARGS.threads)

import idle_threads  # noqa: E402  (benchmarks/idle_threads.py: idle threads sleep; minigan before NumPy)

IDLE_THREADS = idle_threads.apply()
import numpy as np  # noqa: E402

from minigan import backend  # noqa: E402
from minigan.config import TrainConfig  # noqa: E402
from minigan.data import Dataset, Split  # noqa: E402
from minigan.train import Trainer  # noqa: E402


def floor_products(batch: int, width: int, conditional: bool) -> list[tuple[str, int, int, int, int]]:
    """(name, m, k, n, count): the (m x k) @ (k x n) products of one iteration.

    Counts: the D step runs D forward twice (real, fake) with weight gradients and input gradients below the first
    layer; G runs forward twice (fakes for D, then for G's step); G's step runs D forward once and backward for
    input gradients only, then G backward with weight gradients and input gradients above its first layer.
    """
    B, w = batch, width
    z = 100 + (10 if conditional else 0)
    P7, P14 = B * 49, B * 196
    return [
        # G
        ("G.project fwd", B, z, 2 * w * 49, 2), ("G.project dW", z, B, 2 * w * 49, 1),
        ("G.up1 fwd", w * 16, 2 * w, P7, 2), ("G.up1 dW", 2 * w, P7, w * 16, 1), ("G.up1 dX", 2 * w, w * 16, P7, 1),
        ("G.out fwd", 16, w, P14, 2), ("G.out dW", w, P14, 16, 1), ("G.out dX", w, 16, P14, 1),
        # D (conv1's dX only in G's step)
        ("D.conv1 fwd", w, 16, P14, 3), ("D.conv1 dW", w, P14, 16, 2), ("D.conv1 dX", 16, w, P14, 1),
        ("D.conv2 fwd", 2 * w, w * 16, P7, 3), ("D.conv2 dW", 2 * w, P7, w * 16, 2),
        ("D.conv2 dX", w * 16, 2 * w, P7, 3),
        ("D.out fwd", B, 2 * w * 49, 1, 3), ("D.out dW", 2 * w * 49, B, 1, 2), ("D.out dX", B, 1, 2 * w * 49, 3),
    ]


def make_floor(products, seed: int):
    rng = np.random.default_rng(seed)
    ops = [(rng.standard_normal((m, k), dtype=np.float32), rng.standard_normal((k, n), dtype=np.float32),
            np.empty((m, n), np.float32), count) for _, m, k, n, count in products]

    def step():
        for a, b, c, count in ops:
            for _ in range(count):
                np.matmul(a, b, out=c)
    return step


def make_minigan(args, tmp_dir: str):
    rng = np.random.default_rng(args.seed)
    n = args.batch * 8
    x = rng.random((n, 784), dtype=np.float32)
    y = rng.integers(0, 10, n).astype(np.int64)
    ds = Dataset("mnist", Split(x, y), Split(x[:16], y[:16]), Split(x[:16], y[:16]), "synthetic")
    # Radford et al.'s networks, rates and D step, which the PyTorch mirror builds and every earlier result timed:
    # the modern preset's DCGANs have no BatchNorm in D, train G at 4e-4 and give the conditional D the
    # matching-aware step (config.PRESETS), so all three are pinned (the last where the checkout has the option:
    # ab_checkouts.py times older ones too).
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    pinned = {"matching_aware": "none"} if "matching_aware" in fields else {}
    config = TrainConfig(model=args.model, batch=args.batch, steps=10 ** 9, out=tmp_dir, progress=False,
                         model_options={"width": args.width, "d_norm": "batchnorm"}, lr_G=2e-4, lr_D=2e-4,
                         log_interval=10 ** 6, seed=args.seed, **pinned)
    t = Trainer(config, dataset=ds, log=lambda msg: None)
    return t, trainer_step(t)


def trainer_step(t):
    """One of the trainer's updates at a time, epoch after epoch, as ``Trainer.run`` drives them."""
    def step():
        if t._perm is None or t.step_in_epoch == t.steps_per_epoch:
            t.step_in_epoch = 0
            t._begin_epoch()
        t._train_step()
        t._buffer_rows = 0  # the benchmark never reads the losses back
    return step


def import_torch(threads: int):
    """PyTorch with ``threads`` intra-op threads, or None when it is not installed."""
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(max(threads, 1))
    return torch


def make_torch(args, trainer):
    """The same networks and iteration in PyTorch eager, or None without torch."""
    torch = import_torch(args.threads)
    if torch is None:
        return None
    nn = torch.nn
    w, cond = args.width, args.model == "cdcgan"

    class G(nn.Module):
        def __init__(self):
            super().__init__()
            self.project = nn.Linear(100 + 10 * cond, 2 * w * 49)
            self.bn0, self.bn1 = nn.BatchNorm2d(2 * w), nn.BatchNorm2d(w)
            self.up1 = nn.ConvTranspose2d(2 * w, w, 4, 2, 1, bias=False)
            self.out = nn.ConvTranspose2d(w, 1, 4, 2, 1)

        def forward(self, z, y=None):
            h = self.project(z if y is None else torch.cat([z, y], 1)).view(-1, 2 * w, 7, 7)
            h = torch.relu(self.bn0(h))
            h = torch.relu(self.bn1(self.up1(h)))
            return torch.tanh(self.out(h)).view(-1, 784)

    class D(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, w, 4, 2, 1)
            self.conv2 = nn.Conv2d(w, 2 * w, 4, 2, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(2 * w)
            self.out = nn.Linear(2 * w * 49, 1)
            self.embed = nn.Parameter(torch.zeros(10, 2 * w * 49)) if cond else None

        def forward(self, x, y=None):
            h = nn.functional.leaky_relu(self.conv1(x.view(-1, 1, 28, 28)), 0.2)
            h = nn.functional.leaky_relu(self.bn2(self.conv2(h)), 0.2).flatten(1)
            logit = self.out(h)
            if y is not None:
                logit = logit + (h * (y @ self.embed)).sum(1, keepdim=True)
            return logit

    g, d = G(), D()
    opt_g = torch.optim.Adam(g.parameters(), 2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(d.parameters(), 2e-4, betas=(0.5, 0.999))
    bce = nn.functional.binary_cross_entropy_with_logits
    x_all = torch.from_numpy(backend.to_host(trainer.x_train))
    y_all = torch.from_numpy(backend.to_host(trainer.y_train)) if cond else None
    B = args.batch
    ones, zeros = torch.ones(B, 1), torch.zeros(B, 1)
    state = {"i": 0}

    def step():
        i = state["i"] % (len(x_all) // B)
        state["i"] += 1
        xr = x_all[i * B:(i + 1) * B]
        yr = y_all[i * B:(i + 1) * B] if cond else None
        z = torch.rand(B, 100) * 2 - 1
        with torch.no_grad():
            xf = g(z, yr)
        opt_d.zero_grad()
        loss_d = 0.5 * (bce(d(xr, yr), ones) + bce(d(xf, yr), zeros))
        loss_d.backward()
        opt_d.step()
        z = torch.rand(B, 100) * 2 - 1
        opt_g.zero_grad()
        for p in d.parameters():
            p.requires_grad_(False)
        loss_g = bce(d(g(z, yr), yr), ones)
        loss_g.backward()
        for p in d.parameters():
            p.requires_grad_(True)
        opt_g.step()
    return step


def write_json(path: str, result: dict) -> None:
    """``result`` as indented JSON at ``path`` (its folder made if missing)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")


def interleaved(contenders: dict, iters: int, warmup: int) -> dict:
    for step in contenders.values():
        for _ in range(warmup):
            step()
    samples = {name: [] for name in contenders}
    for _ in range(iters):
        for name, step in contenders.items():
            t0 = time.perf_counter()
            step()
            samples[name].append(time.perf_counter() - t0)
    return {name: statistics.median(s) for name, s in samples.items()}


def main(args) -> dict:
    import tempfile

    backend.use("numpy")
    with tempfile.TemporaryDirectory() as tmp:
        trainer, minigan_step = make_minigan(args, tmp)
        contenders = {"minigan": minigan_step,
                      "floor": make_floor(floor_products(args.batch, args.width, args.model == "cdcgan"), args.seed)}
        torch_step = None if args.no_torch else make_torch(args, trainer)
        if torch_step is not None:
            contenders["torch"] = torch_step
        medians = interleaved(contenders, args.iters, args.warmup)
    result = {"model": args.model, "batch": args.batch, "width": args.width, "threads": args.threads,
              "idle_threads": IDLE_THREADS,
              "iters": args.iters, "median_seconds": medians,
              "minigan_over_floor": medians["minigan"] / medians["floor"],
              "torch_over_minigan": medians["torch"] / medians["minigan"] if "torch" in medians else None,
              "torch": "not installed (pip install torch --index-url https://download.pytorch.org/whl/cpu)"
              if "torch" not in medians and not args.no_torch else None,
              "machine": {"python": platform.python_version(), "numpy": np.__version__,
                          "processor": platform.processor() or platform.machine(), "cpus": os.cpu_count()}}
    print(f"{args.model} iteration, batch {args.batch}, width {args.width}, {args.threads} thread(s), median of "
          f"{args.iters}:")
    for name, s in medians.items():
        print(f"  {name:8s} {s * 1000:9.1f} ms")
    print(f"  minigan / floor {result['minigan_over_floor']:.2f}"
          + (f"; torch / minigan {result['torch_over_minigan']:.2f}" if result["torch_over_minigan"] else
             "; PyTorch skipped (not importable)"))
    if args.out:
        write_json(args.out, result)
    return result


if __name__ == "__main__":
    main(ARGS)
