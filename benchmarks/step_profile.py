#!/usr/bin/env python
"""Where one CGAN iteration's time goes, layer by layer, on the CPU or the GPU: the map for speeding it up.

``step_time.py`` says how fast the iteration is; this says where the time is spent. Two views of the very same
iteration (``step_time.MiniganStep``: the alternating update, SGD as in the paper preset):

* **by layer** (``--view layers``): every layer's forward and backward, each optimizer step and the rest
  (noise, losses, batch gathering), timed with a device synchronisation before and after each call, so that
  on the GPU each phase is charged its own kernels. The synchronisations add a little per call; the per-layer
  sum is reported beside the unsynchronised iteration (``step_s``) so the overhead shows.
* **by GPU kernel** (``--view kernels``; with ``both`` on the GPU): PyTorch's profiler records every kernel the
  process launches (CUPTI; CuPy's kernels too), so the GPU's busy time per iteration and its largest kernels
  stand beside the wall time: busy time far below the wall time means the host issuing launches is the limit.
* **by Python function** (``--view calls``): cProfile over whole iterations, no extra synchronisation. At small
  batches on the GPU the iteration is bound by the host issuing kernels, and the functions' own time
  (``tottime``) shows which code issues them. ``--ops`` also counts the array operations one iteration issues
  on the strict backend, by call site: each is about one kernel launch on CuPy (a fused pass, which the strict
  backend runs as its unfused passes, counts once).
* **by matrix product** (``--view products``): each product of the iteration (``step_time.products``, the
  floor's list) timed alone with a synchronisation around it, with its achieved rate and, on the GPU, the
  kernel cuBLAS ran it with: which products fall short of the SGEMM rate.

    python benchmarks/step_profile.py --device gpu --batch 100 --view calls
    python benchmarks/step_profile.py --device gpu --batch 8192 --view kernels
    python benchmarks/step_profile.py --device gpu --batch 8192 --view products
    python benchmarks/step_profile.py --batch 100 --ops          # CPU: strict-backend operation counts

Prints a table; ``--json PATH`` writes the record.
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import json
import os
import pstats
import sys
import time
import traceback
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import step_time  # noqa: E402  (its MiniganStep is the iteration profiled; it sets the idle-thread policy first)

from minigan import backend, parallel  # noqa: E402
from minigan.families import mlp as models  # noqa: E402


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "gpu"])
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--iters", type=int, default=20, help="iterations profiled (after --warmup)")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--view", default="both", choices=["layers", "calls", "kernels", "products", "both"],
                    help="both: layers and calls, and kernels on the GPU")
    ap.add_argument("--top", type=int, default=25, help="functions listed in the calls view")
    ap.add_argument("--ops", action="store_true", help="also count array operations per iteration (strict backend)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, metavar="PATH", help="write the record here")
    return ap.parse_args(argv)


def _new_step(batch: int, seed: int):
    model = backend.to_device(models.cgan(seed))
    x_pool, labels = step_time.data_pool(batch, seed)
    return step_time.MiniganStep(model, batch, x_pool, labels, seed, "alternating")


class PhaseClock:
    """Wraps layers' forward/backward and optimizers' step in place with synchronised timers."""

    def __init__(self, sync):
        self.sync = sync
        self.seconds = collections.defaultdict(float)
        self.calls = collections.Counter()

    def wrap(self, obj, method: str, label: str) -> None:
        original = getattr(obj, method)

        def timed(*args, **kwargs):
            self.sync()
            t0 = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.sync()
                self.seconds[label] += time.perf_counter() - t0
                self.calls[label] += 1

        setattr(obj, method, timed)


def _leaves(net):
    return [layer for layer in net.walk() if not layer.children()]


def _warm_step(args, sync):
    """A fresh iteration of ``--batch``, run ``--warmup`` times and synchronised."""
    step = _new_step(args.batch, args.seed)
    for _ in range(args.warmup):
        step()
    sync()
    return step


def _seconds_per_iteration(step, iters: int, sync) -> float:
    t0 = time.perf_counter()
    for _ in range(iters):
        step()
    sync()
    return (time.perf_counter() - t0) / iters


def layer_view(args, sync) -> dict:
    step = _warm_step(args, sync)
    step_s = _seconds_per_iteration(step, args.iters, sync)  # unsynchronised, as step_time.py measures it

    clock = PhaseClock(sync)
    for net_name in ("G", "D"):
        for layer in _leaves(getattr(step.m, net_name)):
            label = f"{net_name}.{layer.path or type(layer).__name__} ({type(layer).__name__})"
            clock.wrap(layer, "forward", label + " forward")
            clock.wrap(layer, "backward", label + " backward")
    clock.wrap(step.opt_D, "step", "optimizer D step")
    clock.wrap(step.opt_G, "step", "optimizer G step")
    timed_s = _seconds_per_iteration(step, args.iters, sync)
    phases = {k: v / args.iters for k, v in clock.seconds.items()}
    other = timed_s - sum(phases.values())
    rows = sorted(phases.items(), key=lambda kv: -kv[1]) + [("other (noise, losses, batch, sync gaps)", other)]
    return {"step_s": step_s, "step_with_syncs_s": timed_s,
            "phases": [{"phase": k, "s": v, "calls_per_iter": clock.calls.get(k, 0) / args.iters} for k, v in rows]}


def call_view(args, sync) -> dict:
    step = _warm_step(args, sync)
    profile = cProfile.Profile()
    t0 = time.perf_counter()
    profile.enable()
    for _ in range(args.iters):
        step()
    sync()
    profile.disable()
    wall = (time.perf_counter() - t0) / args.iters
    stats = pstats.Stats(profile)
    rows = []
    for (filename, line, func), (cc, nc, tt, ct, _) in stats.stats.items():
        where = filename.split("/minigan/")[-1] if "/minigan/" in filename else os.path.basename(filename)
        rows.append({"function": f"{where}:{line} {func}", "calls_per_iter": nc / args.iters,
                     "own_s": tt / args.iters, "cumulative_s": ct / args.iters})
    rows.sort(key=lambda r: -r["own_s"])
    return {"step_s_under_profiler": wall, "functions": rows[:args.top]}


#: backend functions that are one ElementwiseKernel on CuPy (and several passes on the strict backend)
FUSED = ("bce_logits", "dropout_forward", "dropout_draw", "maxout_forward", "maxout_backward", "sgd_momentum_update",
         "adam_update", "sigmoid", "relu_forward", "sgd_momentum_update_many", "adam_update_many")


def kernel_view(args, sync) -> dict:
    """GPU time by kernel over whole iterations, from PyTorch's profiler (CUPTI records every kernel the
    process launches, CuPy's included). Its sum against the iteration's wall time says whether the GPU or the
    host issuing kernels is the bottleneck."""
    if args.device != "gpu":
        return {"error": "the kernel view profiles GPU kernels: run it with --device gpu"}
    try:
        from torch.profiler import ProfilerActivity, profile
    except ImportError as exc:
        return {"error": f"PyTorch's profiler is needed for the kernel view: {exc}"}
    step = _warm_step(args, sync)
    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "CUDA is not available": the exception below says it
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                for _ in range(args.iters):
                    step()
                sync()
    except (AssertionError, RuntimeError) as exc:  # no CUDA for the profiler (a CPU build of PyTorch)
        return {"error": f"PyTorch's profiler cannot record CUDA kernels here: {exc}"}
    wall = (time.perf_counter() - t0) / args.iters
    rows = []
    for event in prof.key_averages():
        gpu_us = getattr(event, "device_time_total", None)
        if gpu_us is None:
            gpu_us = getattr(event, "cuda_time_total", 0)
        if gpu_us:
            rows.append({"kernel": event.key[:160], "calls_per_iter": event.count / args.iters,
                         "gpu_s": gpu_us / 1e6 / args.iters})
    rows.sort(key=lambda r: -r["gpu_s"])
    return {"step_s_under_profiler": wall, "gpu_busy_s": sum(r["gpu_s"] for r in rows),
            "launches_per_iter": sum(r["calls_per_iter"] for r in rows), "kernels": rows[:args.top]}


def _gpu_kernel_names(fn) -> list[str]:
    """The GPU kernels one call of ``fn`` launches (PyTorch's profiler; empty where it cannot record CUDA)."""
    try:
        from torch.profiler import ProfilerActivity, profile
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                fn()
                backend.synchronize()
    except (ImportError, AssertionError, RuntimeError):
        return []
    return [e.key[:100] for e in prof.key_averages() if getattr(e, "device_time_total", 0)]


def product_view(args, sync) -> dict:
    """Every product of one iteration alone (``step_time.Floor``'s operands): median synchronised seconds."""
    import statistics

    model = backend.to_device(models.cgan(args.seed))
    floor = step_time.Floor(model, args.batch, args.seed)
    xp = backend.xp()
    rows = []
    for (label, (m, k), (_, n), ta, tb), (a, b, c) in zip(floor.list, floor.ops):
        def call():
            xp.matmul(a, b, out=c)
        call()
        sync()
        samples = []
        for _ in range(max(args.iters, 3)):
            t0 = time.perf_counter()
            call()
            sync()
            samples.append(time.perf_counter() - t0)
        row = {"product": label, "m": m, "k": k, "n": n, "a_transposed": ta, "b_transposed": tb,
               "s": statistics.median(samples)}
        row["tflops"] = 2 * m * k * n / row["s"] / 1e12
        if args.device == "gpu":
            row["kernels"] = _gpu_kernel_names(call)
        rows.append(row)
    return {"products": rows, "sum_s": sum(r["s"] for r in rows)}


def count_ops(args) -> dict:
    """Array operations per iteration on the strict backend, by minigan call site: about one CuPy kernel launch
    each (a fused pass, or a random draw, counts once; a slice is a view, no launch, but costs the host as much)."""
    previous, previous_workers = backend.name(), parallel.workers()
    backend.use("strict")
    parallel.set_workers(1)  # every operation on this thread, so that its call site is on the stack
    try:
        sites = collections.Counter()
        array = backend.StrictArray
        namespace = type(backend.strict_xp)
        saved = (array.__array_ufunc__, array.__getitem__, namespace._wrap_function)

        def site() -> str:
            for frame in reversed(traceback.extract_stack()[:-3]):
                if ("/minigan/" in frame.filename and "/minigan/backend/" not in frame.filename
                        and not frame.filename.endswith("parallel.py")) \
                        or frame.filename.endswith("step_time.py"):
                    return f"{frame.filename.split('/minigan/')[-1].split('/')[-1]}:{frame.lineno} {frame.name}"
            return "elsewhere"

        fused_depth = [0]  # inside a fused pass: its unfused strict passes are one CuPy launch, counted once

        def count(what: str) -> None:
            if not fused_depth[0]:
                sites[f"{what} @ {site()}"] += 1

        def ufunc(self, uf, method, *inputs, **kwargs):
            count(uf.__name__)
            return saved[0](self, uf, method, *inputs, **kwargs)

        def getitem(self, key):
            count("slice")
            return saved[1](self, key)

        def wrap_function(self, func, attr):
            inner = saved[2](self, func, attr)

            def counted(*a, **k):
                count(attr)
                return inner(*a, **k)
            return counted

        def fused(owner, attr):
            inner = getattr(owner, attr)

            def counted(*a, **k):
                count(f"{attr} (one kernel on CuPy)")
                fused_depth[0] += 1
                try:
                    return inner(*a, **k)
                finally:
                    fused_depth[0] -= 1
            return inner, counted

        patched = [(backend, name) for name in FUSED] + [(backend.Rng, "random"), (backend.Rng, "uniform")]
        originals = []
        for owner, attr in patched:
            inner, counted = fused(owner, attr)
            originals.append(inner)
            setattr(owner, attr, counted)
        array.__array_ufunc__, array.__getitem__, namespace._wrap_function = ufunc, getitem, wrap_function
        try:
            step = _new_step(args.batch, args.seed)
            for _ in range(2):
                step()
            sites.clear()
            for _ in range(3):
                step()
        finally:
            array.__array_ufunc__, array.__getitem__, namespace._wrap_function = saved
            for (owner, attr), inner in zip(patched, originals):
                setattr(owner, attr, inner)
        per_iter = {k: v / 3 for k, v in sites.most_common()}
        return {"ops_per_iter": sum(per_iter.values()), "by_site": per_iter}
    finally:
        backend.use(previous)
        parallel.set_workers(previous_workers)


def main(argv=None) -> dict:
    args = parse_args(argv)
    backend.use("cupy" if args.device == "gpu" else "numpy")
    sync = step_time.device_sync(args.device)
    record = {"batch": args.batch, "device": args.device, "iters": args.iters,
              "machine": step_time.machine(args.device)}
    if args.view in ("layers", "both"):
        record["layers"] = layer_view(args, sync)
        lv = record["layers"]
        print(f"by layer, batch {args.batch}, {args.device}: iteration {1e3 * lv['step_s']:.3f} ms "
              f"({1e3 * lv['step_with_syncs_s']:.3f} ms with a sync around every phase)")
        for row in lv["phases"]:
            print(f"  {1e3 * row['s']:9.3f} ms  {row['phase']}")
    if args.view in ("calls", "both"):
        record["calls"] = call_view(args, sync)
        cv = record["calls"]
        print(f"by function (cProfile), batch {args.batch}: {1e3 * cv['step_s_under_profiler']:.3f} ms per "
              f"iteration under the profiler")
        print(f"  {'own ms':>9} {'cum ms':>9} {'calls':>7}  function")
        for row in cv["functions"]:
            print(f"  {1e3 * row['own_s']:9.3f} {1e3 * row['cumulative_s']:9.3f} {row['calls_per_iter']:7.1f}  "
                  f"{row['function']}")
    if args.view in ("kernels",) or (args.view == "both" and args.device == "gpu"):
        record["kernels"] = kv = kernel_view(args, sync)
        if "error" in kv:
            print(kv["error"])
        else:
            print(f"by GPU kernel (PyTorch profiler), batch {args.batch}: {1e3 * kv['gpu_busy_s']:.3f} ms of GPU "
                  f"time in {kv['launches_per_iter']:.0f} launches per iteration, against "
                  f"{1e3 * kv['step_s_under_profiler']:.3f} ms of wall time")
            for row in kv["kernels"]:
                print(f"  {1e3 * row['gpu_s']:9.3f} ms {row['calls_per_iter']:6.1f}x  {row['kernel']}")
    if args.view == "products":
        record["products"] = pv = product_view(args, sync)
        print(f"by matrix product, batch {args.batch}, {args.device}: {1e3 * pv['sum_s']:.3f} ms in all (each "
              f"product timed alone, synchronised)")
        print(f"  {'ms':>9} {'TFLOP/s':>7}  product (m, k, n)  kernel")
        for r in pv["products"]:
            kernel = (r.get("kernels") or [""])[0]
            print(f"  {1e3 * r['s']:9.3f} {r['tflops']:7.2f}  {r['product']} ({r['m']}, {r['k']}, {r['n']})  {kernel}")
    if args.ops:
        record["ops"] = count_ops(args)
        print(f"array operations per iteration (strict backend): {record['ops']['ops_per_iter']:.0f}")
        for k, v in list(record["ops"]["by_site"].items())[:args.top]:
            print(f"  {v:7.1f}  {k}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(record, f, indent=1)
    return record


if __name__ == "__main__":
    main()
