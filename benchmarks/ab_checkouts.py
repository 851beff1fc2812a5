#!/usr/bin/env python
"""Compare two checkouts of minigan on one training iteration, side by side in one process.

On a shared machine the time of one iteration drifts by 10-20% within minutes, so two runs of a benchmark one
after the other cannot tell a 3% change from the drift. This script imports each checkout under its own copy of
the ``minigan`` modules (the first checkout's modules are dropped from ``sys.modules`` before the second's are
imported, so each model keeps running its own code), builds the same model and trainer in each, and times them
alternately: A B, B A, A B, ... Both see the same minutes of the machine, the same BLAS library and thread
count. minigan imports some modules lazily on the timed path, so before each timed call the side's own modules
are put back under their names in ``sys.modules``; after loading, every module of a side must come from its
checkout (a missing benchmark script is an error, not a silent fallback to the other side's).
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
BENCH_MODULES = ("step_time", "dcgan_step_time", "pix2pix_step_time", "idle_threads", "seeds")


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


class Side:
    """One checkout's iteration and the modules it was imported with (``sys.modules`` entries by name)."""

    def __init__(self, root: str, step, modules: dict):
        self.root, self.step, self.modules = root, step, modules

    def __call__(self):
        # minigan imports some of its modules lazily, inside functions on the timed path (the block pool, for
        # one): put this side's modules back under their names first, so those imports find this side's code.
        sys.modules.update(self.modules)
        return self.step


def _ours(module, roots: tuple[str, ...]) -> bool:
    """Whether a loaded module is minigan's or a benchmark script's (of any checkout)."""
    name = getattr(module, "__name__", "")
    path = os.path.abspath(getattr(module, "__file__", None) or "")
    return name == "minigan" or name.startswith("minigan.") or name in BENCH_MODULES or any(
        path.startswith(os.path.join(root, folder) + os.sep) for root in roots for folder in ("minigan", "benchmarks"))


def load_side(checkout: str, model: str, batch: int, threads: int | None, run_dir: str,
              roots: tuple[str, ...]) -> Side:
    """Import ``checkout``'s minigan and benchmark scripts afresh; its iteration and its modules."""
    for name, module in list(sys.modules.items()):
        if _ours(module, roots):
            del sys.modules[name]
    root = os.path.abspath(checkout)
    saved_path = sys.path[:]
    sys.path[:0] = [os.path.join(root, "benchmarks"), root]
    try:
        import idle_threads  # minigan before NumPy, idle BLAS threads asleep (as each benchmark does)

        idle_threads.apply()
        from minigan import backend

        backend.use("numpy")
        if threads:
            from minigan import threads as minigan_threads

            minigan_threads.set_threads(threads)
        flags = ["--batch", str(batch)] + (["--threads", str(threads)] if threads else [])
        if model == "cgan":
            import step_time
            from minigan.families import mlp

            x_pool, labels = step_time.data_pool(batch, 0)
            step = step_time.MiniganStep(mlp.cgan(0), batch, x_pool, labels, 0, "alternating")
        else:
            if model == "pix2pix":
                import pix2pix_step_time as script
            else:
                import dcgan_step_time as script

                flags += ["--model", model]
            _, step = script.make_minigan(script._parse(flags), run_dir)
    finally:
        sys.path[:] = saved_path
    modules = {name: module for name, module in sys.modules.items() if _ours(module, roots)}
    strays = sorted(name for name, module in modules.items() if getattr(module, "__file__", None)
                    and not os.path.abspath(module.__file__).startswith(root + os.sep))
    if strays:
        raise SystemExit(f"ab_checkouts: {checkout} imported {', '.join(strays[:5])} from outside it "
                         f"({modules[strays[0]].__file__}): a script or module it lacks?")
    return Side(root, step, modules)


def compare(sides: dict, iters: int, warmup: int) -> dict:
    """Time the two sides in pairs, A B then B A alternately (an order effect falls on both), ``iters`` pairs
    after ``warmup`` iterations of each; their medians and the median per-pair ratio B / A."""
    for side in sides.values():
        step = side()
        for _ in range(warmup):
            step()
    names = list(sides)
    samples: dict = {name: [] for name in names}
    for i in range(iters):
        for name in (names if i % 2 == 0 else names[::-1]):
            step = sides[name]()
            t0 = time.perf_counter()
            step()
            samples[name].append(time.perf_counter() - t0)
    (a, sa), (b, sb) = samples.items()
    ratios = [y / x for x, y in zip(sa, sb)]
    return {"median_s": {a: statistics.median(sa), b: statistics.median(sb)},
            "pair_ratio_median": statistics.median(ratios),
            "pair_ratio_quartiles": statistics.quantiles(ratios, n=4)[::2] if iters > 1 else None}


def commit_of(checkout: str) -> str | None:
    """The checkout's git commit (``+dirty`` when its code, minigan/ or the benchmark scripts, has uncommitted
    changes), or None when the directory is not itself a git checkout."""
    def git(*command):
        return subprocess.run(["git", "-C", checkout, *command], capture_output=True, text=True, timeout=30)

    try:  # dirty: the code differs from the commit (results being written beside it do not count)
        top, head, dirty = git("rev-parse", "--show-toplevel"), git("rev-parse", "--short", "HEAD"), git(
            "status", "--porcelain", "--", "minigan", "benchmarks", ":!benchmarks/results", ":!benchmarks/out")
    except (OSError, subprocess.SubprocessError):
        return None
    if head.returncode != 0 or os.path.realpath(top.stdout.strip()) != os.path.realpath(checkout):
        return None  # not a git checkout itself (a copy inside another repository's tree, say)
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def main(argv=None) -> dict:
    args = _parse(argv)
    if args.threads:  # before NumPy is imported, so OpenBLAS starts with this many threads
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = str(args.threads)
    batch = args.batch or (100 if args.model == "cgan" else 64)
    roots = (os.path.abspath(args.old), os.path.abspath(args.new))
    with tempfile.TemporaryDirectory(prefix="minigan-ab-") as tmp:
        sides = {"A": load_side(args.old, args.model, batch, args.threads, os.path.join(tmp, "A"), roots),
                 "B": load_side(args.new, args.model, batch, args.threads, os.path.join(tmp, "B"), roots)}
        result = compare(sides, args.iters, args.warmup)
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
