#!/usr/bin/env python
"""Run ``step_time.py`` over batch sizes and plot time per sample (minigan, floor, PyTorch).

Each batch size runs in its own process (``step_time.py --json``), so every point is an interleaved,
side-by-side measurement; samples per point shrink with the batch on the CPU to keep the sweep short (on the
GPU each sample is 10 iterations, and 20 samples are taken at every batch).

Threads: the default is the machine's default BLAS thread count (normally all cores: what users get), for
minigan, the floor and PyTorch alike; ``--threads 1`` pins all three to one.

A point that fails (a crash, a timeout) is recorded with its exit code and the end of its output, the sweep
goes on, and the script exits 1 at the end.

Usage::

    python benchmarks/sweep.py --batches 100,256,512,1000,2048,4096,8192 [--threads 1] [--device gpu]
    python benchmarks/sweep.py --threads 1 --png benchmarks/sweep_cpu.png --out benchmarks/sweep_cpu.json

Writes the JSON records (default ``$OUT/sweep_<device>.json`` when ``OUT`` is set, else
``benchmarks/out/sweep_<device>.json``), the PNG beside it (matplotlib when installed, else minigan's built-in
rasteriser), and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))


def point_command(batch: int, args) -> list[str]:
    """The ``step_time.py`` command line of one point."""
    if args.iters:
        iters = args.iters
    elif args.device == "gpu":
        iters = 20
    else:
        iters = max(3, min(30, 2000 // batch))
    cmd = [sys.executable, os.path.join(HERE, "step_time.py"), "--batch", str(batch), "--device", args.device,
           "--iters", str(iters), "--warmup", str(2 if batch >= 1000 else 5), "--update", args.update, "--json"]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    if args.no_torch:
        cmd.append("--no-torch")
    if args.sgemm_n is not None:
        cmd += ["--sgemm-n", str(args.sgemm_n)]
    return cmd


def run_point(batch: int, args, run=subprocess.run) -> dict:
    """One point's record; on failure ``{"batch", "error": {"returncode", "tail"}}`` instead of raising."""
    try:
        res = run(point_command(batch, args), capture_output=True, text=True, timeout=args.point_timeout)
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"")
        out = out.decode(errors="replace") if isinstance(out, bytes) else out
        return {"batch": batch, "error": {"returncode": None, "tail": f"timed out after {args.point_timeout} s\n"
                                          + out[-2000:]}}
    if res.returncode == 0:
        try:
            return json.loads(res.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            pass
    return {"batch": batch, "error": {"returncode": res.returncode,
                                      "tail": (res.stdout + res.stderr)[-2000:]}}


def table(records) -> str:
    lines = ["| batch | minigan ms | floor ms | torch ms | minigan/floor | torch/floor | torch/minigan "
             "| minigan / SGEMM rate |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in records:
        if "error" in r:
            lines.append(f"| {r['batch']} | failed (exit {r['error']['returncode']}) | | | | | | |")
            continue
        fmt = lambda v, scale=1.0, nd=2: "n/a" if v is None else f"{scale * v:.{nd}f}"  # noqa: E731
        lines.append(f"| {r['batch']} | {fmt(r['minigan_s'], 1e3, 1)} | {fmt(r['floor_s'], 1e3, 1)} | "
                     f"{fmt(r['torch_s'], 1e3, 1)} | {fmt(r['minigan_over_floor'])} | "
                     f"{fmt(r['torch_over_floor'])} | {fmt(r['torch_over_minigan'])} | "
                     f"{fmt(r.get('minigan_over_sgemm'))} |")
    return "\n".join(lines)


def plot(records, path: str, title: str) -> None:
    """Microseconds per sample against log2(batch)."""
    import numpy as np

    records = [r for r in records if "error" not in r]
    if not records:
        return
    x = np.array([math.log2(r["batch"]) for r in records])
    series = [(name, np.array([np.nan if r[key] is None else 1e6 * r[key] / r["batch"] for r in records]))
              for name, key in (("minigan", "minigan_s"), ("floor", "floor_s"), ("torch", "torch_s"))]
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        from minigan import io
        # minigan's own rasteriser (the fallback behind io.plot_metrics), with log2(batch) on the x axis.
        io.write_png(path, io._plot_fallback("log2(batch)", x, series, title))
        return
    fig = Figure(figsize=(6.4, 4.0), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for name, y in series:
        ax.plot(2 ** x, y, marker="o", label=name)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch")
    ax.set_ylabel("µs per sample")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)


def default_out_dir() -> str:
    return os.environ.get("OUT") or os.path.join(HERE, "out")


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batches", default="100,256,512,1000,2048,4096,8192")
    ap.add_argument("--device", default="cpu", choices=["cpu", "gpu"])
    ap.add_argument("--update", default="alternating", choices=["alternating", "simultaneous"])
    ap.add_argument("--threads", type=int, default=None,
                    help="BLAS / torch threads of every point (default: the machine's default, normally all cores)")
    ap.add_argument("--iters", type=int, default=None, help="samples per point (default: shrinks with batch)")
    ap.add_argument("--sgemm-n", type=int, default=None, help="passed to step_time.py (0 = no SGEMM rate)")
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--point-timeout", type=float, default=None, help="seconds allowed per point")
    ap.add_argument("--png", default=None, help="default: beside --out, .png")
    ap.add_argument("--out", default=None, help="JSON records (default: $OUT or benchmarks/out, sweep_<device>.json)")
    ap.add_argument("--append", action="store_true", help="add to the records already in --out")
    args = ap.parse_args(argv)
    try:
        args.batch_list = [int(s) for s in args.batches.split(",")]
    except ValueError:
        ap.error(f"--batches must be comma-separated integers, got {args.batches!r}")
    if not args.batch_list or min(args.batch_list) < 1:
        ap.error("--batches needs positive batch sizes")
    if args.out is None:
        args.out = os.path.join(default_out_dir(), f"sweep_{args.device}.json")
    if args.png is None:
        args.png = os.path.splitext(args.out)[0] + ".png"
    return args


def main(argv=None, run=subprocess.run) -> int:
    args = parse_args(argv)
    records = []
    if args.append and os.path.exists(args.out):
        with open(args.out) as f:
            records = json.load(f)
    failed = []
    for b in args.batch_list:
        r = run_point(b, args, run)
        records = [old for old in records if old["batch"] != b] + [r]
        if "error" in r:
            failed.append(b)
            print(f"batch {b}: FAILED (exit {r['error']['returncode']})\n{r['error']['tail']}", flush=True)
            continue
        print(f"batch {b}: minigan/floor {r['minigan_over_floor']:.3f}"
              + (f", torch/minigan {r['torch_over_minigan']:.3f}" if r["torch_s"] else ""), flush=True)
    records.sort(key=lambda r: r["batch"])
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(records, f, indent=1)
    good = [r for r in records if "error" not in r]
    if good:
        try:
            plot(good, args.png, f"CGAN step {args.device} {good[0]['threads']} thread us per sample")
        except Exception as exc:  # a plot must not lose the measurements
            print(f"plot failed: {exc}", file=sys.stderr)
    print(table(records))
    if failed:
        print(f"sweep: {len(failed)} point(s) failed: batch {', '.join(map(str, failed))}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
