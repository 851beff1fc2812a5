"""Render benchmarks/RESULTS.md's tables for the 2026-12-02 AMD EPYC measurements from their committed outputs
(``benchmarks/results/2026-12-02-amd/``, whose README lists the commands). ``python benchmarks/session_tables.py``
prints them; a test checks that RESULTS.md holds them verbatim."""

from __future__ import annotations

import json
import re
import statistics
from pathlib import Path

DEFAULT = Path(__file__).resolve().parent / "results" / "2026-12-02-amd"


def markdown(directory=DEFAULT) -> str:
    """The three tables of benchmarks/RESULTS.md's 2026-12-02 AMD section, from the committed outputs."""
    D = str(directory) + "/"
    printed = []
    print = printed.append  # noqa: A001  (collect the lines instead of printing)
    log = open(D + "before-after.log").read()
    ms = {}
    for m in re.finditer(r"rep \d commit (\w+) (\S+): .*\(([\d.]+) ms/update\)", log):
        ms.setdefault((m.group(2), m.group(1)), []).append(float(m.group(3)))
    upe = {"pix2pix-w32": 781, "cdcgan": 781, "cgan": 500}
    out = ["| run (`minigan train`, default threads) | before, ms / update | after, ms / update | speed-up | epoch after |",
           "|---|---:|---:|---:|---:|"]
    for run in ("pix2pix-w32", "cdcgan", "cgan"):
        b, a = ms[(run, "1284f33")], ms[(run, "e6e510d")]
        mb, ma = statistics.mean(b), statistics.mean(a)
        ep = ma * upe[run] / 1000
        out.append(f"| {run} | {b[0]:.1f}, {b[1]:.1f} | {a[0]:.1f}, {a[1]:.1f} | {mb / ma:.2f}× | "
                   + (f"{ep / 60:.1f} min" if ep > 90 else f"{ep:.0f} s") + " |")
    print("\n".join(out)); print("")
    rows = ["| iteration | threads | minigan ms | floor ms | PyTorch ms | minigan / floor | PyTorch / minigan |",
            "|---|---:|---:|---:|---:|---:|---:|"]
    for name, f in (("pix2pix, width 32, batch 64", "pix2pix-w32"), ("pix2pix, width 64, batch 64", "pix2pix-w64")):
        d = json.load(open(D + f + ".json")); m = d["median_seconds"]
        rows.append(f"| {name} | {d['threads']} | {m['minigan']*1e3:.1f} | - | {m['torch']*1e3:.1f} | - | {d['torch_over_minigan']:.2f} |")
    for name, f in (("DCGAN, batch 64", "dcgan"), ("conditional DCGAN, batch 64", "cdcgan"), ("DCGAN, batch 64", "dcgan-1t")):
        d = json.load(open(D + f + ".json")); m = d["median_seconds"]
        rows.append(f"| {name} | {d['threads']} | {m['minigan']*1e3:.1f} | {m['floor']*1e3:.1f} | {m['torch']*1e3:.1f} | {d['minigan_over_floor']:.2f} | {d['torch_over_minigan']:.2f} |")
    for name, f in (("paper CGAN, batch 100", "cgan-b100"), ("paper CGAN, batch 1000", "cgan-b1000"), ("paper CGAN, batch 100", "cgan-b100-1t")):
        d = json.load(open(D + f + ".json"))
        rows.append(f"| {name} | {d['threads']} | {d['minigan_s']*1e3:.1f} | {d['floor_s']*1e3:.1f} | {d['torch_s']*1e3:.1f} | {d['minigan_over_floor']:.2f} | {d['torch_over_minigan']:.2f} |")
    print("\n".join(rows)); print("")
    c = ["| conv case | threads | minigan ms | floor ms | PyTorch ms | minigan / floor | PyTorch / minigan |", "|---|---:|---:|---:|---:|---:|---:|"]
    for f in ("conv-1t", "conv-2t"):
        d = json.load(open(D + f + ".json"))
        for case, r in d["cases"].items():
            if case == "bn":
                continue
            c.append(f"| {case} | {d['threads']} | {r['minigan_s']*1e3:.2f} | {r['floor_s']*1e3:.2f} | {r['torch_s']*1e3:.2f} | {r['minigan_over_floor']:.2f} | {r['torch_over_minigan']:.2f} |")
    print("\n".join(c))
    return "\n".join(printed)


if __name__ == "__main__":
    import builtins
    builtins.print(markdown())
