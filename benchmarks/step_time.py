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

Threads: every contender and the floor run at the same BLAS thread count, in one process. The default is the
machine's default (normally all cores: what a user gets); ``--threads N`` sets it (minigan.threads, as
``minigan train --threads`` does; else the BLAS variables and one re-execution of this script), and
PyTorch's intra-op threads follow it.

GPU (``--device gpu``): minigan on the CuPy backend, the floor's products on CuPy, PyTorch eager on CUDA (TF32
off, as CuPy's default), the device synchronised (``cudaDeviceSynchronize``) before every clock read, 10
iterations per timed sample. On both devices a square SGEMM (``--sgemm-n``, 8192 on the GPU) is timed after
the contenders: ``minigan_over_sgemm`` is minigan's achieved rate (the iteration's product FLOPs / its time) as
a fraction of that rate. The GPU targets: ``torch_over_minigan`` ≥ 1 at batch 100, ``minigan_over_sgemm`` ≥ 0.6
at batch ≥ 8192.

End to end (``--e2e``): whole updates of :class:`minigan.train.Trainer`, built and run only through the public
``TrainConfig`` / ``Trainer(config).run(on_step=...)``, so data gathering, schedules, the metrics read-back,
logging and epoch ends (sample grid, health check, checkpoint) are all in. One run of ``--e2e-steps`` updates;
the clock covers updates ``--e2e-warmup``+1 .. ``--e2e-steps`` (the on_step callback reads it after updates
100 and 400 by default). That is the same quantity as timing the CLI from outside,
``(T(--steps 400) - T(--steps 100)) / 300``: both runs pay the same start-up (imports, data, model) and the same
end (final checkpoint), which cancel, and leave the 300 updates in between. ``--cli`` measures that too, as the
median of ``--cli-repeats`` pairs of runs (one pair is too noisy: :func:`time_cli_window`), and reports
``trainer_over_cli``, and ``trainer_over_cli_inside`` against the training time the CLI runs print themselves.
The floor (the same products, ``matching_aware`` for the ``modern`` CGAN's extra D step) runs every
``--floor-every`` updates on a paused clock. Data: synthetic IDX files of MNIST's sizes by
default (same shapes and epoch length as MNIST; speed does not depend on the pixels).

Usage::

    python benchmarks/step_time.py --model cgan --batch 100 --iters 200 [--device cpu|gpu] [--json]
    python benchmarks/step_time.py --batch 100 --threads 1                 # one BLAS thread, floor too
    python benchmarks/step_time.py --batch 100 --mem-iters 1000     # + RSS growth over 1,000 iterations
    python benchmarks/step_time.py --e2e --preset paper --batch 100 --cli  # Trainer updates 101..400, + the CLI

With ``--json`` the last line printed is one JSON object (``minigan_s``, ``floor_s``, ``torch_s``, ``batch``,
``device``, ``threads``, ratios, ``sgemm``, memory; in ``--e2e`` mode ``trainer_s``, ``floor_s``,
``trainer_over_floor`` and ``cli``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # run from a checkout without installing

import idle_threads  # noqa: E402  (benchmarks/idle_threads.py: idle threads sleep; minigan before NumPy)

IDLE_THREADS = idle_threads.apply()
import numpy as np  # noqa: E402

from minigan import backend, objective  # noqa: E402
from minigan import threads as minigan_threads  # noqa: E402
from minigan.cli import _positive_int  # noqa: E402  (the command line's own argument type)
from minigan.families import mlp as models  # noqa: E402  (the papers' MLP models)
from minigan.nn import Join, Layer, Linear, Sequential, optim  # noqa: E402



def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="cgan", choices=["cgan"])
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--device", default="cpu", choices=["cpu", "gpu"])
    ap.add_argument("--update", default=None, choices=["alternating", "simultaneous"],
                    help="the iteration timed: Algorithm 1 (the default of the bare step; the issue's and "
                         "PyTorch's) or the paper presets' one-pass update; with --e2e the default is the preset's")
    ap.add_argument("--iters", type=int, default=100, help="timed samples per contender (after warm-up)")
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--inner", type=int, default=None,
                    help="iterations per timed sample (default 1 on cpu, 10 on gpu: one sync per sample)")
    ap.add_argument("--threads", type=int, default=None,
                    help="BLAS / torch threads for every contender and the floor (default: the machine's default "
                         "BLAS thread count, normally all cores, which is what users get)")
    ap.add_argument("--no-torch", action="store_true", help="skip PyTorch even when installed")
    ap.add_argument("--sgemm-n", type=int, default=None,
                    help="size of the square SGEMM whose rate is measured alongside (default 8192 on gpu, 1024 on "
                         "cpu; 0 = skip)")
    ap.add_argument("--mem-iters", type=int, default=0,
                    help="also measure memory: peak RSS and RSS growth between iteration 100 and this one "
                         "(in a fresh process per contender; 0 = skip)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--list-products", action="store_true", help="print the floor's products and exit")
    e2e = ap.add_argument_group("end-to-end mode (--e2e): Trainer updates through the public API")
    e2e.add_argument("--e2e", action="store_true",
                     help="time whole Trainer updates (data gathering, schedules, metrics read-back, logging, "
                          "epoch ends) instead of the bare iteration")
    e2e.add_argument("--preset", default="paper", choices=["paper", "modern"], help="preset of the e2e run")
    e2e.add_argument("--e2e-warmup", type=int, default=100, help="updates before the timed window")
    e2e.add_argument("--e2e-steps", type=int, default=400, help="the run's last update (the window's end)")
    e2e.add_argument("--floor-every", type=int, default=25,
                     help="run the floor once every this many updates inside the window (paused clock)")
    e2e.add_argument("--data", default="synthetic", metavar="synthetic|cache|DIR",
                     help="e2e training data: 'synthetic' IDX files of MNIST's size (default; no download), "
                          "'cache' (minigan's data sources), or a directory of IDX files")
    e2e.add_argument("--cli", action="store_true",
                     help="also time `python -m minigan train` from outside at --e2e-warmup and --e2e-steps "
                          "updates: (T(steps) - T(warmup)) / (steps - warmup), for the agreement check")
    e2e.add_argument("--cli-repeats", type=_positive_int, default=3,
                     help="pairs of CLI runs, the order alternating; the median is reported (default 3)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--_mem", choices=["minigan", "torch"], help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.e2e and args.e2e_steps <= args.e2e_warmup:
        ap.error("--e2e-steps must exceed --e2e-warmup")
    if args.e2e and args._mem:
        ap.error("--e2e does not take --_mem")
    return args


#: Marks a process that re-executed itself with the BLAS variables set (no threadpoolctl): never loop.
_REEXEC_MARK = "MINIGAN_BENCH_THREADS_SET"
BLAS_ENV = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def apply_threads(threads: int | None, argv=None, execv=os.execv) -> int:
    """Put numpy's BLAS and minigan's block pool at ``threads`` for this process (and BLAS in its children);
    return the count in force.

    ``None`` leaves the machine's default (normally all cores: what users get) and returns it. Otherwise
    :func:`minigan.threads.set_threads` sets both in this process, as ``minigan train --threads`` does; where it
    finds no BLAS library to set, the BLAS variables are set and the script re-executes itself once, since
    OpenBLAS reads them only when it loads. The floor runs in this same process, so it is always measured at
    the contender's thread count. Child processes inherit the variables.
    """
    if threads is None:
        return blas_threads()
    for var in BLAS_ENV:
        os.environ[var] = str(threads)
    try:
        minigan_threads.set_threads(threads)
    except RuntimeError:
        if os.environ.get(_REEXEC_MARK) != str(threads):
            os.environ[_REEXEC_MARK] = str(threads)
            argv = sys.argv[1:] if argv is None else list(argv)
            execv(sys.executable, [sys.executable, os.path.abspath(__file__), *argv])
        return threads
    return blas_threads()


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


def products(model, B: int, update: str = "alternating", matching_aware: bool = False):
    """The matrix products of one iteration: ``[(label, (m, k), (k, n), a_transposed, b_transposed), ...]``.

    ``matching_aware`` adds the ``modern`` CGAN's second D step per update (real images with their labels and
    with wrong labels: D forward, dW and D's inner dx on 2B rows), which the end-to-end mode times.

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
        if matching_aware:
            fwd(D, 2 * B, "MA D")
            bwd(D, 2 * B, "MA D", dW=True, dx_wanted=lambda src: src is None)
        return out
    # D step
    fwd(G, B, "Dstep G")
    fwd(D, 2 * B, "Dstep D")
    bwd(D, 2 * B, "Dstep D", dW=True, dx_wanted=lambda src: src is None)
    if matching_aware:
        fwd(D, 2 * B, "MA D")
        bwd(D, 2 * B, "MA D", dW=True, dx_wanted=lambda src: src is None)
    # G step
    fwd(G, B, "Gstep G")
    fwd(D, B, "Gstep D")
    bwd(D, B, "Gstep D", dW=False, dx_wanted=lambda src: src is None or src == 0)
    bwd(G, B, "Gstep G", dW=True, dx_wanted=lambda src: src is None)
    return out


class Floor:
    """The products of :func:`products`, bare, on preallocated operands of the active backend."""

    def __init__(self, model, B: int, seed: int = 0, update: str = "alternating", matching_aware: bool = False):
        xp = backend.xp()
        rng = np.random.default_rng(seed)
        self.matmul = xp.matmul
        self.ops = []
        self.list = products(model, B, update, matching_aware)
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
    """Threads numpy's BLAS will use (read from the library, else the environment, else the cores)."""
    count = minigan_threads.blas_threads()
    if count is not None:
        return count
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
    if device == "gpu":  # full float32 products, as CuPy's default (CUPY_TF32 unset): no TF32 shortcut
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    step = TorchCGANStep(mg_model, B, x_pool, labels, device=device, seed=seed)
    sync = torch.cuda.synchronize if device == "gpu" else (lambda: None)
    return step, sync


def device_sync(device: str):
    """The function to call before reading a clock: waits for *all* queued device work (no-op on the CPU).

    ``cudaDeviceSynchronize`` rather than one stream's synchronize, so work that CuPy or PyTorch queued on any
    stream is finished when the clock is read.
    """
    if device != "gpu":
        return lambda: None
    cupy = backend.xp()  # the active backend is CuPy here (a benchmark may see it; minigan itself may not)
    return cupy.cuda.runtime.deviceSynchronize


def sgemm_rate(n: int, reps: int, device: str, seed: int = 0) -> dict:
    """GFLOP/s of a square float32 ``n x n`` product on the active backend (and PyTorch's, on the GPU).

    The rate the bare products of a layer could reach at best: the GPU target compares minigan's achieved
    rate (the iteration's product FLOPs / its time) with this. Median of ``reps`` products after two warm-ups;
    the device is synchronised around each one.
    """
    rng = np.random.default_rng(seed)
    host = rng.uniform(-1, 1, (2, n, n)).astype(np.float32)
    a, b = backend.to_device(host[0]), backend.to_device(host[1])
    c = backend.to_device(np.zeros((n, n), np.float32))
    mm, sync = backend.xp().matmul, device_sync(device)

    def timed(fn):
        for _ in range(2):
            fn()
        sync()
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            sync()
            times.append(time.perf_counter() - t0)
        return 2.0 * n ** 3 / statistics.median(times) / 1e9

    out = {"n": n, "reps": reps, "gflops": timed(lambda: mm(a, b, out=c))}
    a = b = c = None  # free the device memory before PyTorch's turn
    if device == "gpu":
        out["cupy_tf32"] = os.environ.get("CUPY_TF32", "0")
        if have_torch():
            import torch
            torch.backends.cuda.matmul.allow_tf32 = False
            ta, tb = (torch.from_numpy(h).cuda() for h in host)
            tc = torch.empty_like(ta)
            out["torch_gflops"] = timed(lambda: torch.matmul(ta, tb, out=tc))
            del ta, tb, tc
    return out


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


def machine(device: str = "cpu") -> dict:
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
    out = {"cpu": model, "cores": cores, "numpy": np.__version__, "python": platform.python_version()}
    try:
        out["load_avg_1min"] = os.getloadavg()[0]
    except OSError:
        pass
    if device == "gpu":
        cupy = backend.xp()
        props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
        name = props["name"]
        out.update(gpu=name.decode() if isinstance(name, bytes) else str(name), cupy=cupy.__version__,
                   cuda_runtime=cupy.cuda.runtime.runtimeGetVersion())
    return out


# --------------------------------------------------------------------------------------------------
# End to end: whole Trainer updates through the public API
# --------------------------------------------------------------------------------------------------


def write_synthetic_idx(directory: str, n_train: int = 60_000, n_test: int = 10_000, seed: int = 0) -> str:
    """The four MNIST IDX files (uncompressed, uint8) with random pixels and labels, MNIST's sizes.

    Through ``--data`` they give the trainer MNIST's shapes and epoch length (50,000 training images after the
    validation split) on any machine, without a download; speed does not depend on the pixel values.
    """
    import struct

    os.makedirs(directory, exist_ok=True)
    rng = np.random.default_rng(seed)
    arrays = {"train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
              "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
              "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
              "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8)}
    for name, arr in arrays.items():
        header = bytes((0, 0, 0x08, arr.ndim)) + struct.pack(f">{arr.ndim}I", *arr.shape)
        with open(os.path.join(directory, name), "wb") as f:
            f.write(header + arr.tobytes())
    return directory


class WindowTimer:
    """The ``on_step`` callback of the end-to-end mode.

    The window opens when update ``warmup`` has finished and closes when update ``steps`` has: its length is
    exactly what ``T(steps) - T(warmup)`` measures from outside (both runs pay the same start-up and final
    checkpoint, which cancel). Every ``floor_every`` updates inside the window the clock is paused (after a
    device sync) and the floor runs once, so trainer and floor are sampled in the same minutes; the pauses
    are subtracted.
    """

    def __init__(self, warmup: int, steps: int, floor=None, floor_every: int = 25, sync=lambda: None,
                 clock=time.perf_counter):
        self.warmup, self.steps, self.floor, self.floor_every = warmup, steps, floor, floor_every
        self.sync, self.clock = sync, clock
        self.t_open = self.t_close = None
        self.paused = 0.0
        self.floor_samples: list[float] = []

    def __call__(self, trainer) -> None:
        u = trainer.updates
        if u == self.warmup:
            self.sync()
            self.t_open = self.clock()
        elif u == self.steps:
            self.sync()
            self.t_close = self.clock()
        elif self.t_open is not None and self.floor is not None and (u - self.warmup) % self.floor_every == 0:
            self.sync()
            t0 = self.clock()
            self.floor()
            self.sync()
            t1 = self.clock()
            self.floor_samples.append(t1 - t0)
            self.paused += t1 - t0

    @property
    def per_update_s(self) -> float:
        if self.t_open is None or self.t_close is None:
            raise RuntimeError(f"the window (updates {self.warmup}..{self.steps}) did not complete")
        return (self.t_close - self.t_open - self.paused) / (self.steps - self.warmup)


def _matching_aware(preset: str, model: str) -> bool:
    """Whether the preset adds the separate matching-aware D step (read from the trainer's preset table)."""
    from minigan import train as training

    value = getattr(training, "PRESETS", {}).get(preset, {}).get("matching_aware", {}).get(model, "none")
    # A checkout from before the modes had names wrote the second step as True.
    if value not in (True, False, "step", "none"):
        raise NotImplementedError(f"preset {preset!r}: matching-aware mode {value!r} has no floor model here")
    return value in (True, "step")


def _e2e_data(args, tmp: str):
    if args.data == "synthetic":
        return write_synthetic_idx(os.path.join(tmp, "idx"), seed=args.seed)
    return None if args.data == "cache" else args.data


#: The line `minigan train` ends with: "N updates in X s this session (...)".
_SESSION_LINE = re.compile(r"(\d+) updates in ([0-9.]+) s this session")


def time_cli(args, data_dir, tmp: str, steps: int, threads: int | None) -> tuple[float, float | None]:
    """``python -m minigan train ... --steps N`` as a user runs it (fresh process): (wall seconds from outside,
    the seconds of training the run itself reports, or None if it printed no such line)."""
    out = os.path.join(tmp, f"cli-{steps}")
    shutil.rmtree(out, ignore_errors=True)  # a repeat starts a fresh run, not a refused one
    cmd = [sys.executable, "-m", "minigan", "train", "--model", args.model, "--preset", args.preset,
           "--batch", str(args.batch), "--steps", str(steps), "--seed", str(args.seed), "--out", out,
           "--no-progress", "--device", args.device]
    if args.update:
        cmd += ["--update", args.update]
    if data_dir is not None:
        cmd += ["--data", data_dir]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [os.path.dirname(HERE),
                                                                     os.environ.get("PYTHONPATH")])))
    if threads is not None:
        env.update({var: str(threads) for var in BLAS_ENV})
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env, check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          stdin=subprocess.DEVNULL, text=True)
    wall = time.perf_counter() - t0
    found = _SESSION_LINE.search(done.stdout)
    return wall, (float(found.group(2)) if found and int(found.group(1)) == steps else None)


def time_cli_window(args, data_dir, tmp: str, threads: int | None) -> dict:
    """The CLI's time per update over the window, from ``--cli-repeats`` pairs of runs (``--e2e-warmup`` and
    ``--e2e-steps`` updates), the order alternating from pair to pair; the median over the pairs.

    One pair is not enough: a process's start-up and exit (imports, data, the final checkpoint) vary by up to
    a second from run to run here (measured 0.7-1.6 s), on a difference of ~8 s at batch 100, and the first
    run of a series was the slow one more often: single pairs read 21.4-26.9 ms per update where the trainer
    took 25.7-26.5 (benchmarks/RESULTS.md, 2026-12-06).
    ``inside_per_update_s`` is the same difference of the training times the runs print themselves, without
    their start-up and exit.
    """
    n = args.e2e_steps - args.e2e_warmup
    pairs = []
    for i in range(args.cli_repeats):
        order = (args.e2e_warmup, args.e2e_steps) if i % 2 == 0 else (args.e2e_steps, args.e2e_warmup)
        timed = {steps: time_cli(args, data_dir, tmp, steps, threads) for steps in order}
        (w_warm, s_warm), (w_full, s_full) = timed[args.e2e_warmup], timed[args.e2e_steps]
        pairs.append({"T_warmup_s": w_warm, "T_steps_s": w_full, "session_warmup_s": s_warm,
                      "session_steps_s": s_full, "first": order[0]})
    outside = [(p["T_steps_s"] - p["T_warmup_s"]) / n for p in pairs]
    inside = [(p["session_steps_s"] - p["session_warmup_s"]) / n for p in pairs
              if p["session_steps_s"] is not None and p["session_warmup_s"] is not None]
    return {"pairs": pairs, "per_update_s": statistics.median(outside), "per_update_each_s": outside,
            "inside_per_update_s": statistics.median(inside) if inside else None}


def run_e2e(args, threads: int) -> dict:
    """Time Trainer updates ``e2e_warmup+1 .. e2e_steps`` of one run, through ``TrainConfig`` / ``Trainer``."""
    import tempfile

    from minigan.train import TrainConfig, Trainer

    with tempfile.TemporaryDirectory(prefix="minigan-e2e-") as tmp:
        data_dir = _e2e_data(args, tmp)
        config = TrainConfig(model=args.model, preset=args.preset, batch=args.batch, steps=args.e2e_steps,
                             device=args.device, seed=args.seed, data_dir=data_dir, out=os.path.join(tmp, "run"),
                             progress=False, update=args.update)
        log_lines: list[str] = []
        trainer = Trainer(config, log=log_lines.append)  # the CLI prints these; here they are kept
        update = config.update_rule
        floor = Floor(trainer.model, args.batch, args.seed, update, _matching_aware(args.preset, args.model))
        timer = WindowTimer(args.e2e_warmup, args.e2e_steps, floor, args.floor_every, device_sync(args.device))
        trainer.run(handle_signals=False, on_step=timer)
        per_update, floor_s = timer.per_update_s, statistics.median(timer.floor_samples)
        result = {"mode": "e2e", "model": args.model, "preset": args.preset, "update": update,
                  "batch": args.batch, "device": args.device, "threads": threads, "data": args.data,
                  "window": [args.e2e_warmup, args.e2e_steps], "trainer_s": per_update, "floor_s": floor_s,
                  "floor_samples": len(timer.floor_samples), "trainer_over_floor": per_update / floor_s,
                  "floor_products": len(floor.list), "floor_gflops": floor.flops / floor_s / 1e9,
                  "steps_per_epoch": trainer.steps_per_epoch, "machine": machine(args.device), "idle_threads": IDLE_THREADS}
        if args.cli:
            cli = time_cli_window(args, data_dir, tmp, args.threads)  # threads None: the machine default too
            c = cli["per_update_s"]
            result["cli"] = {**cli, "repeats": args.cli_repeats, "trainer_over_cli": per_update / c,
                             "cli_over_floor": c / floor_s}
            if cli["inside_per_update_s"] is not None:
                result["cli"]["trainer_over_cli_inside"] = per_update / cli["inside_per_update_s"]
    ms = lambda s: f"{1e3 * s:8.2f} ms"  # noqa: E731
    print(f"CGAN Trainer updates ({args.preset} preset, {update} update), batch {args.batch}, {args.device}, "
          f"{threads} threads, updates {args.e2e_warmup + 1}..{args.e2e_steps}")
    print(f"  trainer {ms(per_update)}   floor {ms(floor_s)} ({result['floor_gflops']:.1f} GFLOP/s)   "
          f"trainer/floor {per_update / floor_s:.3f}")
    if args.cli:
        c = result["cli"]
        each = ", ".join(f"{1e3 * t:.2f}" for t in c["per_update_each_s"])
        print(f"  CLI from outside: {ms(c['per_update_s'])} per update, the median of {c['repeats']} pairs "
              f"((T({args.e2e_steps}) - T({args.e2e_warmup})) / {args.e2e_steps - args.e2e_warmup}: {each} ms); "
              f"trainer/CLI {c['trainer_over_cli']:.3f}, CLI/floor {c['cli_over_floor']:.3f}")
        if c["inside_per_update_s"] is not None:
            print(f"  CLI runs' own training time: {ms(c['inside_per_update_s'])} per update; "
                  f"trainer/that {c['trainer_over_cli_inside']:.3f}")
    return result


# --------------------------------------------------------------------------------------------------
# The bare iteration side by side
# --------------------------------------------------------------------------------------------------


def main(argv=None) -> dict:
    args = parse_args(argv)
    threads = apply_threads(args.threads, argv)
    if args.device == "gpu":
        backend.use("cupy")  # a clear BackendError without CuPy or a GPU
    else:
        backend.use("numpy")
    if args.e2e:
        result = run_e2e(args, threads)
        if args.json:
            print(json.dumps(result))
        return result
    args.update = args.update or "alternating"
    if args._mem:
        print(json.dumps(memory_run(args._mem, args)))
        return {}
    B = args.batch
    inner = args.inner or (10 if args.device == "gpu" else 1)
    sync = device_sync(args.device)
    x_pool, labels = data_pool(B, args.seed)
    model = models.cgan(args.seed)
    floor = Floor(model, B, args.seed, args.update)
    if args.list_products:
        for label, (m, k), (_, n), ta, tb in floor.list:
            print(f"{label:32s} ({m:5d} x {k:5d}{'ᵀ' if ta else ' '}) @ ({k:5d} x {n:5d}{'ᵀ' if tb else ' '})")
        print(f"{len(floor.list)} products, {floor.flops / 1e9:.3f} GFLOP per iteration")
        return {}
    torch_model = models.cgan(args.seed)  # its own copy: minigan's weights move as minigan trains
    contenders = {"minigan": (MiniganStep(model, B, x_pool, labels, args.seed, args.update), sync),
                  "floor": (floor, sync)}
    use_torch = have_torch() and not args.no_torch and args.update == "alternating"
    if use_torch:
        step, _ = make_torch_step(torch_model, B, x_pool, labels, args.device, threads, args.seed)
        contenders["torch"] = (step, sync)  # a device-wide sync covers PyTorch's streams too
    t = interleaved(contenders, args.iters, args.warmup, inner)
    mg, fl = t["minigan"]["median"], t["floor"]["median"]
    th = t["torch"]["median"] if use_torch else None
    gflop = floor.flops / 1e9
    result = {
        "mode": "step", "model": args.model, "update": args.update, "batch": B, "device": args.device,
        "threads": threads, "iters": args.iters,
        "inner": inner, "minigan_s": mg, "floor_s": fl, "torch_s": th,
        "minigan_over_floor": mg / fl, "torch_over_floor": th / fl if th else None,
        "torch_over_minigan": th / mg if th else None, "floor_gflops": gflop / fl,
        "minigan_gflops": gflop / mg, "torch_gflops": gflop / th if th else None,
        "quartiles_s": {k: [v["q1"], v["q3"]] for k, v in t.items()}, "machine": machine(args.device),
        "idle_threads": IDLE_THREADS,
    }
    sgemm_n = args.sgemm_n if args.sgemm_n is not None else (8192 if args.device == "gpu" else 1024)
    if sgemm_n:
        sg = sgemm_rate(sgemm_n, 10, args.device, args.seed)
        result["sgemm"] = sg
        result["minigan_over_sgemm"] = result["minigan_gflops"] / sg["gflops"]  # fraction of the SGEMM rate
        result["floor_over_sgemm"] = result["floor_gflops"] / sg["gflops"]
        if th:
            result["torch_over_sgemm"] = result["torch_gflops"] / sg["gflops"]
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
    if sgemm_n:
        print(f"  SGEMM {sgemm_n}^3: {result['sgemm']['gflops']:.1f} GFLOP/s; minigan reaches "
              f"{result['minigan_over_sgemm']:.3f} of it, the floor {result['floor_over_sgemm']:.3f}")
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
    main()
