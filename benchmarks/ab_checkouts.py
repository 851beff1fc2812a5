#!/usr/bin/env python
"""Compare two checkouts of minigan on one training iteration, side by side in one process.

On a shared machine the time of one iteration drifts by 10-20% within minutes, so two runs of a benchmark one
after the other cannot tell a 3% change from the drift. This script imports each checkout under its own copy of
the ``minigan`` modules (the first checkout's modules are dropped from ``sys.modules`` before the second's are
imported, so each model keeps running its own code), builds the same model and trainer in each, and times them
alternately: A, B, A, B, ... Both see the same minutes of the machine, the same BLAS library and thread count.
It reports each median and the median of the per-pair ratios B/A; swap the two to check that the order does not
decide the result (the first-built copy can sit differently in memory).

Models: ``cgan`` (``step_time.py``'s bare iteration), ``dcgan`` and ``cdcgan`` (``dcgan_step_time.py``'s
trainer update), ``pix2pix`` (``pix2pix_step_time.py``'s). Each checkout's own benchmark module builds its
contender, so the two sides run the same definition of an iteration as long as those scripts agree.

Usage::

    python benchmarks/ab_checkouts.py OLD_CHECKOUT NEW_CHECKOUT --model dcgan --iters 60 [--threads 2]

``--threads`` sets the BLAS threads (and the block pool) for both sides before NumPy is imported; the default
is the machine's default, all cores.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

MODELS = ("cgan", "dcgan", "cdcgan", "pix2pix")
BENCH_MODULES = ("step_time", "dcgan_step_time", "pix2pix_step_time", "idle_threads")


def _parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("old", help="checkout A (a directory holding minigan/ and benchmarks/)")
    ap.add_argument("new", help="checkout B")
    ap.add_argument("--model", choices=MODELS, default="dcgan")
    ap.add_argument("--iters", type=int, default=40, help="timed pairs (after --warmup iterations of each)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--batch", type=int, default=None, help="default: 100 for cgan, 64 for the others")
    ap.add_argument("--threads", type=int, default=None, help="BLAS threads for both (default: the machine's)")
    ap.add_argument("--json", default=None, help="also write the result, with both checkouts' commits, here")
    args = ap.parse_args(argv)
    for path in (args.old, args.new):
        if not os.path.isfile(os.path.join(path, "minigan", "__init__.py")):
            raise SystemExit(f"ab_checkouts: {path!r} is not a minigan checkout (no minigan/__init__.py)")
    if args.iters < 1 or args.warmup < 0:
        raise SystemExit("ab_checkouts: --iters must be positive and --warmup non-negative")
    return args


def _forget_modules() -> None:
    for name in list(sys.modules):
        if name == "minigan" or name.startswith("minigan.") or name in BENCH_MODULES:
            del sys.modules[name]


def load_step(checkout: str, model: str, batch: int, threads: int | None):
    """Import ``checkout``'s minigan and benchmark scripts afresh and return its iteration as a callable."""
    _forget_modules()
    root = os.path.abspath(checkout)
    sys.path[:0] = [os.path.join(root, "benchmarks"), root]
    try:
        import idle_threads  # minigan before NumPy, idle BLAS threads asleep (as each benchmark does)

        idle_threads.apply()
        import minigan
        from minigan import backend

        if not os.path.abspath(minigan.__file__).startswith(root + os.sep):
            raise SystemExit(f"ab_checkouts: imported minigan from {minigan.__file__}, not from {root}")

        backend.use("numpy")
        if threads:
            from minigan import threads as minigan_threads

            minigan_threads.set_threads(threads)
        flags = ["--batch", str(batch)] + (["--threads", str(threads)] if threads else [])
        if model == "cgan":
            import step_time
            from minigan.families import mlp

            x_pool, labels = step_time.data_pool(batch, 0)
            return step_time.MiniganStep(mlp.cgan(0), batch, x_pool, labels, 0, "alternating")
        if model == "pix2pix":
            import pix2pix_step_time as script
        else:
            import dcgan_step_time as script

            flags += ["--model", model]
        _, step = script.make_minigan(script._parse(flags), tempfile.mkdtemp(prefix="minigan-ab-"))
        return step
    finally:
        del sys.path[:2]


def compare(steps: dict, iters: int, warmup: int) -> dict:
    """Alternate the steps (in dict order) ``iters`` times; medians and the median per-pair ratio."""
    for step in steps.values():
        for _ in range(warmup):
            step()
    samples: dict = {name: [] for name in steps}
    for _ in range(iters):
        for name, step in steps.items():
            t0 = time.perf_counter()
            step()
            samples[name].append(time.perf_counter() - t0)
    (a, sa), (b, sb) = samples.items()
    return {"median_s": {a: statistics.median(sa), b: statistics.median(sb)},
            "pair_ratio_median": statistics.median(y / x for x, y in zip(sa, sb)),
            "pair_ratio_quartiles": statistics.quantiles([y / x for x, y in zip(sa, sb)], n=4)[::2]
            if iters > 1 else None}


def commit_of(checkout: str) -> str | None:
    """The checkout's git commit (with ``+dirty`` when it has uncommitted changes), or None outside git."""
    try:
        head = subprocess.run(["git", "-C", checkout, "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=30)
        dirty = subprocess.run(["git", "-C", checkout, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    if head.returncode != 0:
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def main(argv=None) -> dict:
    args = _parse(argv)
    if args.threads:  # before NumPy is imported, so OpenBLAS starts with this many threads
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = str(args.threads)
    batch = args.batch or (100 if args.model == "cgan" else 64)
    steps = {"A": load_step(args.old, args.model, batch, args.threads),
             "B": load_step(args.new, args.model, batch, args.threads)}
    result = compare(steps, args.iters, args.warmup)
    med = result["median_s"]
    print(f"{args.model}, batch {batch}, threads {args.threads or 'default'}, {args.iters} alternating pairs")
    print(f"  A {args.old}: {med['A'] * 1e3:.1f} ms    B {args.new}: {med['B'] * 1e3:.1f} ms")
    q = result["pair_ratio_quartiles"]
    print(f"  B / A per pair: median {result['pair_ratio_median']:.3f}"
          + (f" (quartiles {q[0]:.3f}-{q[1]:.3f})" if q else ""))
    if args.json:
        record = {"command": "python benchmarks/ab_checkouts.py " + " ".join(sys.argv[1:] if argv is None else argv),
                  "date": datetime.datetime.now().isoformat(timespec="seconds"), "model": args.model, "batch": batch,
                  "threads": args.threads or "default", "iters": args.iters,
                  "A": {"checkout": args.old, "commit": commit_of(args.old)},
                  "B": {"checkout": args.new, "commit": commit_of(args.new)},
                  "machine": {"python": platform.python_version(), "processor": platform.processor() or
                              platform.machine(), "cpus": os.cpu_count()}, **result}
        with open(args.json, "w") as f:
            json.dump(record, f, indent=1)
            f.write("\n")
    return result


if __name__ == "__main__":
    main()
