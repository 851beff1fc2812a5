#!/usr/bin/env python
"""Run ``step_time.py`` over batch sizes and plot time per sample (minigan, floor, PyTorch).

Each batch size runs in its own process (``step_time.py --json``), so every point is an interleaved,
side-by-side measurement; samples per point shrink with the batch to keep the sweep short.

Usage::

    python benchmarks/sweep.py --batches 100,256,512,1000,2048,4096,8192 --threads 1 \\
        --png benchmarks/sweep_cpu.png --out benchmarks/sweep_cpu.json

Writes the PNG (matplotlib when installed, else minigan's built-in rasteriser), the JSON records, and prints a
Markdown table.
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


def run_point(batch: int, args) -> dict:
    iters = args.iters or max(3, min(30, 2000 // batch))
    cmd = [sys.executable, os.path.join(HERE, "step_time.py"), "--batch", str(batch), "--device", args.device,
           "--iters", str(iters), "--warmup", str(2 if batch >= 1000 else 5), "--json"]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    if args.no_torch:
        cmd.append("--no-torch")
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def table(records) -> str:
    lines = ["| batch | minigan ms | floor ms | torch ms | minigan/floor | torch/floor | torch/minigan |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    for r in records:
        fmt = lambda v, scale=1.0, nd=2: "n/a" if v is None else f"{scale * v:.{nd}f}"  # noqa: E731
        lines.append(f"| {r['batch']} | {fmt(r['minigan_s'], 1e3, 1)} | {fmt(r['floor_s'], 1e3, 1)} | "
                     f"{fmt(r['torch_s'], 1e3, 1)} | {fmt(r['minigan_over_floor'])} | "
                     f"{fmt(r['torch_over_floor'])} | {fmt(r['torch_over_minigan'])} |")
    return "\n".join(lines)


def plot(records, path: str, title: str) -> None:
    """Microseconds per sample against log2(batch)."""
    import numpy as np

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


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batches", default="100,256,512,1000,2048,4096,8192")
    ap.add_argument("--device", default="cpu", choices=["cpu", "gpu"])
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--iters", type=int, default=None, help="samples per point (default: shrinks with batch)")
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--png", default=os.path.join(HERE, "sweep_cpu.png"))
    ap.add_argument("--out", default=os.path.join(HERE, "sweep_cpu.json"))
    ap.add_argument("--append", action="store_true", help="add to the records already in --out")
    args = ap.parse_args()
    records = []
    if args.append and os.path.exists(args.out):
        with open(args.out) as f:
            records = json.load(f)
    for b in (int(s) for s in args.batches.split(",")):
        r = run_point(b, args)
        records = [old for old in records if old["batch"] != b] + [r]
        print(f"batch {b}: minigan/floor {r['minigan_over_floor']:.3f}"
              + (f", torch/minigan {r['torch_over_minigan']:.3f}" if r["torch_s"] else ""), flush=True)
    records.sort(key=lambda r: r["batch"])
    with open(args.out, "w") as f:
        json.dump(records, f, indent=1)
    threads = records[0]["threads"]
    plot(records, args.png, f"CGAN step {args.device} {threads} thread us per sample")
    print(table(records))


if __name__ == "__main__":
    main()
