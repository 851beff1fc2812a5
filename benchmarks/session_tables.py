"""Render benchmarks/RESULTS.md's tables for the 2026-12-02 AMD EPYC measurements from their committed outputs
(``benchmarks/results/2026-12-02-amd/``, whose README lists the commands). ``python benchmarks/session_tables.py``
prints them; a test checks that RESULTS.md holds them verbatim."""

from __future__ import annotations

import json
import re
import statistics
from pathlib import Path

DEFAULT = Path(__file__).resolve().parent / "results" / "2026-12-02-amd"
BEFORE, AFTER = "1284f33", "e6e510d"  # the session's first commit and the one measured against it
UPDATES_PER_EPOCH = {"pix2pix-w32": 781, "cdcgan": 781, "cgan": 500}


def _row(*cells) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def cli_table(directory: Path) -> str:
    """``minigan train``'s own ms/update lines, before and after, and the speed-up of the means."""
    log = (directory / "before-after.log").read_text()
    ms: dict[tuple[str, str], list[float]] = {}
    for m in re.finditer(r"rep \d commit (\w+) (\S+): .*\(([\d.]+) ms/update\)", log):
        ms.setdefault((m.group(2), m.group(1)), []).append(float(m.group(3)))
    lines = [_row("run (`minigan train`, default threads)", "before, ms / update", "after, ms / update", "speed-up",
                  "epoch after"), "|---|---:|---:|---:|---:|"]
    for run, updates in UPDATES_PER_EPOCH.items():
        before, after = ms[(run, BEFORE)], ms[(run, AFTER)]
        epoch_s = statistics.mean(after) * updates / 1000
        lines.append(_row(run, ", ".join(f"{v:.1f}" for v in before), ", ".join(f"{v:.1f}" for v in after),
                          f"{statistics.mean(before) / statistics.mean(after):.2f}×",
                          f"{epoch_s / 60:.1f} min" if epoch_s > 90 else f"{epoch_s:.0f} s"))
    return "\n".join(lines)


def iteration_table(directory: Path) -> str:
    """One iteration against the floor (where the script has one) and PyTorch, per script output."""
    lines = [_row("iteration", "threads", "minigan ms", "floor ms", "PyTorch ms", "minigan / floor",
                  "PyTorch / minigan"), "|---|---:|---:|---:|---:|---:|---:|"]

    def load(name):
        return json.loads((directory / f"{name}.json").read_text())
    for label, name in (("pix2pix, width 32, batch 64", "pix2pix-w32"), ("pix2pix, width 64, batch 64", "pix2pix-w64")):
        d = load(name)
        m = d["median_seconds"]
        lines.append(_row(label, d["threads"], f"{m['minigan'] * 1e3:.1f}", "-", f"{m['torch'] * 1e3:.1f}", "-",
                          f"{d['torch_over_minigan']:.2f}"))
    for label, name in (("DCGAN, batch 64", "dcgan"), ("conditional DCGAN, batch 64", "cdcgan"),
                        ("DCGAN, batch 64", "dcgan-1t")):
        d = load(name)
        m = d["median_seconds"]
        lines.append(_row(label, d["threads"], f"{m['minigan'] * 1e3:.1f}", f"{m['floor'] * 1e3:.1f}",
                          f"{m['torch'] * 1e3:.1f}", f"{d['minigan_over_floor']:.2f}",
                          f"{d['torch_over_minigan']:.2f}"))
    for label, name in (("paper CGAN, batch 100", "cgan-b100"), ("paper CGAN, batch 1000", "cgan-b1000"),
                        ("paper CGAN, batch 100", "cgan-b100-1t")):
        d = load(name)
        lines.append(_row(label, d["threads"], f"{d['minigan_s'] * 1e3:.1f}", f"{d['floor_s'] * 1e3:.1f}",
                          f"{d['torch_s'] * 1e3:.1f}", f"{d['minigan_over_floor']:.2f}",
                          f"{d['torch_over_minigan']:.2f}"))
    return "\n".join(lines)


def conv_table(directory: Path) -> str:
    """``conv_time.py``'s conv cases at one and two threads (BatchNorm's line is a pass count, left out)."""
    lines = [_row("conv case", "threads", "minigan ms", "floor ms", "PyTorch ms", "minigan / floor",
                  "PyTorch / minigan"), "|---|---:|---:|---:|---:|---:|---:|"]
    for name in ("conv-1t", "conv-2t"):
        d = json.loads((directory / f"{name}.json").read_text())
        for case, r in d["cases"].items():
            if case != "bn":
                lines.append(_row(case, d["threads"], f"{r['minigan_s'] * 1e3:.2f}", f"{r['floor_s'] * 1e3:.2f}",
                                  f"{r['torch_s'] * 1e3:.2f}", f"{r['minigan_over_floor']:.2f}",
                                  f"{r['torch_over_minigan']:.2f}"))
    return "\n".join(lines)


def markdown(directory: Path = DEFAULT) -> str:
    """The three tables, separated by blank lines."""
    return "\n\n".join(table(Path(directory)) for table in (cli_table, iteration_table, conv_table))


if __name__ == "__main__":
    print(markdown())
