#!/usr/bin/env python
"""Time one pix2pix training iteration against PyTorch CPU eager on the same networks, side by side.

One *iteration* is exactly what the trainer does per update (``Trainer._train_step`` with the pix2pix family's
update): G(a) once (training mode, dropout on); D's step on the real pairs (b, a) and on the fake pairs
(G(a), a) as two passes (BatchNorm statistics per batch), Adam; G's step through the updated D on the same
G(a), the cGAN term plus 100 x L1, Adam. Float32, 32x32 images, built-in task data (random arrays of the task's
shape here: the timing does not depend on the pixels).

PyTorch (optional: skipped without ``torch``): the same networks, built layer by layer from minigan's own model
(:func:`to_torch` walks it: Conv2d, ConvTranspose2d, BatchNorm, InstanceNorm, the U-Net's skip concatenation,
the PatchGAN's pair join) with minigan's initial weights, the same update with ``torch.optim.Adam``, and
``torch.set_num_threads`` equal to NumPy's BLAS threads. Everything a careful eager user would do is done: G's
output is computed once and detached for D's step, and D's parameters stop requiring gradients in G's step.

Contenders are interleaved (minigan, torch, minigan, ...) and each reports the median of its samples. The
default thread count is every core (``os.cpu_count()``), as ``minigan train`` runs.

Usage::

    python benchmarks/pix2pix_step_time.py --width 32 --iters 20 [--threads N] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # run from a checkout without installing
sys.path.insert(0, HERE)


def _parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--width", type=int, default=32, help="base channels (the paper's 64; the ablation's 32)")
    ap.add_argument("--norm", choices=("batch", "instance"), default="batch")
    ap.add_argument("--iters", type=int, default=20, help="timed samples per contender (after warm-up)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count(),
                    help="BLAS / torch threads (default: every core, %(default)s here)")
    ap.add_argument("--no-torch", action="store_true", help="skip PyTorch even when installed")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="JSON results file (default: print only)")
    return ap.parse_args(argv)


ARGS = _parse() if __name__ == "__main__" else None
if ARGS is not None:  # must be set before numpy (OpenBLAS) is imported
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(ARGS.threads)

import idle_threads  # noqa: E402  (benchmarks/idle_threads.py: idle threads sleep; minigan before NumPy)

IDLE_THREADS = idle_threads.apply()
import numpy as np  # noqa: E402

from minigan import backend, nn as mnn  # noqa: E402
from minigan.config import TrainConfig  # noqa: E402
from minigan.data import Dataset  # noqa: E402
from minigan.paired import PairedSplit  # noqa: E402
from minigan.train import Trainer  # noqa: E402

from dcgan_step_time import import_torch, interleaved, trainer_step, write_json  # noqa: E402  (shared parts)
from seeds import provenance  # noqa: E402  (command, date, machine, commit)

SIZE = 32


def synthetic_task(n: int, seed: int) -> Dataset:
    """A paired data set of the built-in tasks' shape (1 -> 1 channels, 32x32, values in [0, 1])."""
    rng = np.random.default_rng(seed)

    def split(k):
        return PairedSplit(rng.random((k, 1, SIZE, SIZE), dtype=np.float32),
                           rng.random((k, 1, SIZE, SIZE), dtype=np.float32), np.zeros(k, np.int64))
    return Dataset("synthetic", split(n), split(16), split(16), source="random arrays")


def make_minigan(args, tmp_dir: str):
    options = {"width": args.width, "norm": args.norm}
    config = TrainConfig(model="pix2pix", dataset="fashion-edges", batch=args.batch, steps=10 ** 9, out=tmp_dir,
                         progress=False, model_options=options, log_interval=10 ** 6, seed=args.seed)
    t = Trainer(config, dataset=synthetic_task(args.batch * 8, args.seed), log=lambda msg: None)
    return t, trainer_step(t)


def to_torch(layer):
    """A ``torch.nn.Module`` computing what the minigan layer (tree) computes, with a copy of its weights."""
    import torch
    from torch import nn

    def copied(module, **tensors):
        with torch.no_grad():
            for name, value in tensors.items():
                getattr(module, name).copy_(torch.from_numpy(np.ascontiguousarray(backend.to_host(value))))
        return module

    class Concat(nn.Module):  # the U-Net skip: [x, body(x)] along channels
        def __init__(self, body):
            super().__init__()
            self.body = body

        def forward(self, x):
            return torch.cat([x, self.body(x)], 1)

    class Pair(nn.Module):  # the PatchGAN's input: [output or target, input] along channels
        def forward(self, pair):
            return torch.cat(pair, 1)

    p = layer.params
    if isinstance(layer, mnn.UNetBlock):
        return Concat(nn.Sequential(*(to_torch(child) for child in layer.children().values())))
    if isinstance(layer, mnn.Sequential):
        return nn.Sequential(*(to_torch(child) for child in layer.children().values()))
    if isinstance(layer, mnn.Join):
        return Pair()
    if isinstance(layer, mnn.Conv2d):
        conv = nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride, layer.padding,
                         bias=layer.bias)
        return copied(conv, weight=p["W"], **({"bias": p["b"]} if layer.bias else {}))
    if isinstance(layer, mnn.ConvTranspose2d):
        conv = nn.ConvTranspose2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride,
                                  layer.padding, layer.output_padding, bias=layer.bias)
        return copied(conv, weight=p["W"], **({"bias": p["b"]} if layer.bias else {}))
    if isinstance(layer, mnn.BatchNorm):
        return copied(nn.BatchNorm2d(layer.num_features, eps=layer.eps, momentum=0.1),
                      weight=p["gamma"], bias=p["beta"])
    if isinstance(layer, mnn.InstanceNorm2d):
        return nn.InstanceNorm2d(layer.num_features, eps=layer.eps, affine=False)
    if isinstance(layer, mnn.LeakyReLU):
        return nn.LeakyReLU(layer.slope)
    if isinstance(layer, mnn.ReLU):
        return nn.ReLU()
    if isinstance(layer, mnn.Tanh):
        return nn.Tanh()
    if isinstance(layer, mnn.Dropout):
        return nn.Dropout(layer.p)
    if isinstance(layer, mnn.PatchRows):
        return nn.Flatten()  # one logit per patch; BCE's mean over patches is the same either way
    raise TypeError(f"to_torch: no PyTorch counterpart written for {type(layer).__name__} {layer.path}")


def make_torch(args, trainer):
    """The same networks and iteration in PyTorch eager, or None without torch."""
    torch = import_torch(args.threads)
    if torch is None:
        return None
    m = trainer.model
    g, d = to_torch(m.G), to_torch(m.D)
    opt_g = torch.optim.Adam(g.parameters(), 2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(d.parameters(), 2e-4, betas=(0.5, 0.999))
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    a_all = torch.from_numpy(backend.to_host(trainer.y_train)).float()
    b_all = torch.from_numpy(backend.to_host(trainer.x_train)).float()
    B, lam = args.batch, m.lambda_l1
    state = {"i": 0}

    def step():
        i = state["i"] % (len(a_all) // B)
        state["i"] += 1
        a, b = a_all[i * B:(i + 1) * B], b_all[i * B:(i + 1) * B]  # already in [-1, 1], as the trainer holds them
        fake = g(a)
        opt_d.zero_grad()
        real_logits, fake_logits = d((b, a)), d((fake.detach(), a))
        loss_d = 0.5 * (bce(real_logits, torch.ones_like(real_logits)) +
                        bce(fake_logits, torch.zeros_like(fake_logits)))
        loss_d.backward()
        opt_d.step()
        opt_g.zero_grad()
        for q in d.parameters():
            q.requires_grad_(False)
        logits = d((fake, a))
        loss_g = bce(logits, torch.ones_like(logits)) + lam * (fake - b).abs().mean()
        loss_g.backward()
        for q in d.parameters():
            q.requires_grad_(True)
        opt_g.step()
    return step


def main(args) -> dict:
    import tempfile

    backend.use("numpy")
    with tempfile.TemporaryDirectory() as tmp:
        trainer, minigan_step = make_minigan(args, tmp)
        contenders = {"minigan": minigan_step}
        torch_step = None if args.no_torch else make_torch(args, trainer)
        if torch_step is not None:
            contenders["torch"] = torch_step
        medians = interleaved(contenders, args.iters, args.warmup)
    per_epoch = {name: s * (50_000 // args.batch) / 60 for name, s in medians.items()}  # the built-in tasks
    result = {**provenance("pix2pix_step_time.py", sys.argv[1:], []), "model": "pix2pix", "batch": args.batch, "width": args.width, "norm": args.norm,
              "threads": args.threads, "idle_threads": IDLE_THREADS, "iters": args.iters, "median_seconds": medians,
              "epoch_minutes_50k": per_epoch,
              "torch_over_minigan": medians["torch"] / medians["minigan"] if "torch" in medians else None,
              "torch": "not installed" if "torch" not in medians and not args.no_torch else None}
    print(f"pix2pix iteration, batch {args.batch}, width {args.width}, {args.norm} norm, {args.threads} thread(s), "
          f"median of {args.iters}:")
    for name, s in medians.items():
        print(f"  {name:8s} {s * 1000:9.1f} ms  ({per_epoch[name]:.2f} min per 50,000-pair epoch)")
    if result["torch_over_minigan"]:
        print(f"  torch / minigan {result['torch_over_minigan']:.2f}")
    else:
        print("  PyTorch skipped (not importable)" if not args.no_torch else "  PyTorch skipped (--no-torch)")
    if args.out:
        write_json(args.out, result)
    return result


if __name__ == "__main__":
    main(ARGS)
