"""Seed robustness of a training command: train it on many seeds, score every run, report a pass rate.

One good seed proves nothing about a GAN: its trajectory can flip on the seed or on the BLAS summation order
(the thread count). This trains ``minigan train`` exactly as a user runs it (a subprocess, the machine's
default thread count unless ``--threads`` is given) on each seed, then scores each run with the fixed
classifier (``minigan eval --classifier``, and ``--parzen`` on request) and its own metrics.jsonl:

* label accuracy of 10,000 conditional samples (1,000 per class), overall and for the worst class;
* the Fréchet distance of the classifier's features of the samples to the test set's, and its ratio to the
  real-data ceiling (validation vs test images, the same features);
* whether D won (mean D(G(z)) below 0.05 over the last epoch) and what the training-health monitor flagged;
* optionally the Parzen log-likelihood of the papers' protocol.

A run passes when it meets every bar set for its dataset (the ``--dataset`` among the train options; MNIST
without one), each overridable: on MNIST label accuracy >= ``--min-accuracy`` (0.97), every class >=
``--min-class`` (0.90), FID <= ``--max-fid-ratio`` (8) times the real-data FID and, with ``--parzen``, Parzen >=
``--min-parzen`` (132). On Fashion-MNIST only label accuracy is judged by default, at 0.95 (issue 12's bar): its
classifier reads real test garments at 88.4% with shirts at 69.4%, so MNIST's per-class bar would fail real data,
and neither the FID multiple nor the papers' Parzen figure transfers (docs/RESULTS.md). A bar given on the command
line applies to either dataset; a run no bar applies to (an unconditional model on Fashion-MNIST) is shown
unjudged ("-"), not passed. Each run is scored with its dataset's fixed classifier (``minigan train-classifier
--dataset NAME``), so only these two datasets can be scored.

Examples::

    python benchmarks/seeds.py --seeds 0-19 --epochs 5                      # the default run, default threads
    python benchmarks/seeds.py --seeds 0-9 --epochs 5 --threads 1 --json benchmarks/seeds_5ep_1thread.json
    python benchmarks/seeds.py --seeds 0-9 --epochs 15 --parzen
    python benchmarks/seeds.py --seeds 0-9 --epochs 15 --parzen --extend    # the 5-epoch runs in --out, continued
    python benchmarks/seeds.py --seeds 0-4 --epochs 2 -- --model cgan --preset paper   # any train options
    python benchmarks/seeds.py --render benchmarks/results/seeds/FILE.json              # docs' Markdown table

Runs go to ``--out`` (default ``benchmarks/out/seeds``, ignored by git); each seed's run directory is removed
first so every run is fresh, unless ``--extend`` continues the run found there. Independent runs are trained
``--jobs`` at a time (default: one per two cores, at least one).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
D_WON_BELOW = 0.05  # mean D(G(z)) over an epoch below this: D rejects practically every sample

#: The bars a run must meet, per dataset (None: not judged); the module docstring says why Fashion's differ.
DEFAULT_CRITERIA = {
    "mnist": {"min_accuracy": 0.97, "min_class": 0.90, "max_fid_ratio": 8.0, "min_parzen": 132.0},
    "fashion-mnist": {"min_accuracy": 0.95, "min_class": None, "max_fid_ratio": None, "min_parzen": None},
}


def _is_dataset_option(option: str) -> bool:
    """``--dataset`` or an abbreviation argparse takes for it (``--datas``: ``--data`` also begins ``--data-dir``)."""
    return len(option) > len("--data") and "--dataset".startswith(option)


def dataset_of(train_options: list[str]) -> str:
    """The ``--dataset`` among ``minigan train``'s options (the last one given, as argparse reads it); mnist."""
    name = "mnist"
    for i, option in enumerate(train_options):
        flag, eq, value = option.partition("=")
        if _is_dataset_option(flag):
            if eq:
                name = value
            elif i + 1 < len(train_options):
                name = train_options[i + 1]
    return name


def apply_default_criteria(args, dataset: str) -> None:
    """Fill every bar left unset on the command line with ``dataset``'s default (None where it has none)."""
    defaults = DEFAULT_CRITERIA[dataset]
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)


def parse_seeds(text: str) -> list[int]:
    """``"0-9"``, ``"0,3,5"`` or ``"0-4,11"`` -> a sorted list of distinct non-negative integers."""
    seeds: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        lo, _, hi = part.partition("-")
        a, b = int(lo), int(hi) if hi else int(lo)
        if a < 0 or b < a:
            raise argparse.ArgumentTypeError(f"bad seed range {part!r}")
        seeds.update(range(a, b + 1))
    if not seeds:
        raise argparse.ArgumentTypeError("no seeds given")
    return sorted(seeds)


def _env(threads: int | None) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    if threads is not None:
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env[var] = str(threads)
    return env


def split_train_options(argv: list[str]) -> tuple[list[str], list[str]]:
    """``[own options] -- [minigan train options]`` -> (own, train); no ``--``: no train options."""
    if "--" not in argv:
        return argv, []
    i = argv.index("--")
    return argv[:i], argv[i + 1:]


def provenance(script: str, argv: list[str], extra: list[str]) -> dict:
    """What a result JSON records of how it was made: the command, the date, the machine and the commit."""
    import shlex

    import numpy

    try:  # no git (or no checkout) must not cost the results this records
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True).stdout.strip() or None
    except OSError:
        commit = None
    return {
        "command": f"python benchmarks/{script} " + shlex.join(argv) + (" -- " + shlex.join(extra) if extra else ""),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "numpy": numpy.__version__},
        "commit": commit,
    }


def train_command(seed: int, run_dir: Path, args, extra: list[str]) -> list[str]:
    """The ``minigan train`` command of one seed: a fresh run, or with ``--extend`` and a checkpoint in
    ``run_dir``, that run resumed to ``--epochs`` (resuming is exact, so this is the longer run itself)."""
    command = [sys.executable, "-m", "minigan", "train", "--seed", str(seed), "--epochs", str(args.epochs),
               "--out", str(run_dir), "--no-progress", *extra]
    if args.extend and (run_dir / "checkpoint.npz").exists():
        return command + ["--resume"]
    shutil.rmtree(run_dir, ignore_errors=True)
    return command


def run_seed(seed: int, args, extra: list[str]) -> dict:
    """Train and score one seed; returns its row (never raises for a failed run: the row says what failed)."""
    run_dir = Path(args.out) / f"seed-{seed}"
    env = _env(args.threads)
    t0 = time.perf_counter()
    train = subprocess.run(train_command(seed, run_dir, args, extra), env=env, capture_output=True, text=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "train.log", "a") as log:  # an extended run's log follows its first part's
        log.write(train.stdout + train.stderr)
    return score_run(seed, run_dir, args, train.returncode, time.perf_counter() - t0, train.stderr)


def read_metrics(run_dir: Path) -> list[dict]:
    """The run's ``metrics.jsonl`` records, one per finished epoch."""
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]


def score_run(seed: int, run_dir: Path, args, train_exit: int = 0, train_seconds: float | None = None,
              stderr: str = "") -> dict:
    """Score a finished run directory: its metrics.jsonl, then ``minigan eval --classifier`` (one row)."""
    env = _env(args.threads)
    row: dict = {"seed": seed, "train_exit": train_exit, "train_seconds": train_seconds}
    records = read_metrics(run_dir) if (run_dir / "metrics.jsonl").exists() else []
    if records:
        last = records[-1]
        row.update(epochs=last["epoch"], D_x=last["D_x"], D_G_z=last["D_G_z"], loss_G=last["loss_G"],
                   epoch_seconds=[r["seconds"] for r in records])
        row["d_won"] = last["D_G_z"] < D_WON_BELOW
        row["health"] = sorted({flag["kind"] for r in records for flag in r.get("health", [])})
        row["health_first_epoch"] = next((r["epoch"] for r in records if r.get("health")), None)
    if train_exit != 0 and not records:
        row["error"] = (stderr.strip().splitlines() or ["?"])[-1]
        return row
    cmd = [sys.executable, "-m", "minigan", "eval", str(run_dir), "--classifier"] + (["--parzen"] if args.parzen else [])
    ev = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if ev.returncode != 0:
        row["error"] = "eval: " + (ev.stderr.strip().splitlines() or ["?"])[-1]
        return row
    res = json.loads((run_dir / "eval.json").read_text())
    s, r = res["classifier"]["samples"], res["classifier"]["real_valid"]
    if s.get("label_accuracy"):
        row["accuracy"] = s["label_accuracy"]["overall"]
        row["worst_class"] = min(s["label_accuracy"]["per_class"])
    row["fid"], row["fid_real"] = s["fid_test"], r["fid_test"]
    row["fid_ratio"] = s["fid_test"] / r["fid_test"]
    row["min_share"] = s["histogram_summary"]["min_share"]
    if args.parzen:
        row["parzen"], row["parzen_se"] = res["parzen"]["mean"], res["parzen"]["se"]
    row["passed"] = passes(row, args) if judged(row, args) else None  # None: no bar to meet (table: "-")
    return row


def judged(row: dict, args) -> bool:
    """Whether any bar applies to this row (an unconditional model has no label accuracy to judge)."""
    return (args.max_fid_ratio is not None or (args.parzen and args.min_parzen is not None)
            or ("accuracy" in row and (args.min_accuracy is not None or args.min_class is not None)))


def passes(row: dict, args) -> bool:
    if "error" in row or "fid" not in row:
        return False
    ok = args.max_fid_ratio is None or row["fid_ratio"] <= args.max_fid_ratio
    if "accuracy" in row:
        ok = ok and (args.min_accuracy is None or row["accuracy"] >= args.min_accuracy)
        ok = ok and (args.min_class is None or row["worst_class"] >= args.min_class)
    if args.parzen and args.min_parzen is not None:
        ok = ok and row["parzen"] >= args.min_parzen
    return bool(ok)


def _verdict(row: dict, failed: str) -> str:
    return "-" if "passed" in row and row["passed"] is None and "error" not in row else (
        "yes" if row.get("passed") else failed)


def _fmt(v, spec):
    return "-" if v is None else format(v, spec)


def table(rows: list[dict], parzen: bool) -> str:
    head = f"{'seed':>4}  {'acc':>6}  {'worst':>6}  {'FID':>6}  {'xreal':>5}  {'D(G(z))':>7}  {'D won':>5}  "
    head += (f"{'Parzen':>7}  " if parzen else "") + f"{'s/epoch':>7}  {'health':<24} pass"
    lines = [head]
    for r in rows:
        sec = r.get("epoch_seconds") or []
        line = (f"{r['seed']:>4}  {_fmt(r.get('accuracy'), '.4f'):>6}  {_fmt(r.get('worst_class'), '.4f'):>6}  "
                f"{_fmt(r.get('fid'), '.2f'):>6}  {_fmt(r.get('fid_ratio'), '.1f'):>5}  "
                f"{_fmt(r.get('D_G_z'), '.3f'):>7}  {('yes' if r.get('d_won') else 'no'):>5}  ")
        if parzen:
            line += f"{_fmt(r.get('parzen'), '.1f'):>7}  "
        line += f"{_fmt(sorted(sec)[len(sec) // 2] if sec else None, '.1f'):>7}  "
        line += f"{','.join(r.get('health') or []) or '-':<24} {_verdict(r, 'NO')}"
        if "error" in r:
            line += f"  ({r['error']})"
        lines.append(line)
    return "\n".join(lines)


def markdown(doc: dict) -> str:
    """The Markdown table and summary line docs/RESULTS.md shows for one JSON written by ``--json``."""
    rows, summ = doc["rows"], doc["summary"]
    parzen = summ.get("parzen") is not None  # a --parzen run gets a column and a summary clause
    lines = ["| seed | label accuracy | worst class | FID (× real) | " + ("Parzen LL | " if parzen else "")
             + "D(G(z)), last epoch | monitor | passes |",
             "|---:|---:|---:|---:|" + ("---:|" if parzen else "") + "---:|---|---|"]
    for r in rows:
        fid = f"{r['fid']:.1f} ({r['fid_ratio']:.1f}×)" if "fid" in r else "-"
        acc = f"{100 * r['accuracy']:.1f}%" if "accuracy" in r else "-"
        worst = f"{100 * r['worst_class']:.1f}%" if "worst_class" in r else "-"
        ll = (f"{r['parzen']:.1f} ± {r['parzen_se']:.1f} | " if "parzen" in r else "- | ") if parzen else ""
        flags = ", ".join(r.get("health") or []) or "-"
        if r.get("health_first_epoch"):
            flags += f" (from epoch {r['health_first_epoch']})"
        lines.append(f"| {r['seed']} | {acc} | {worst} | {fid} | {ll}{r.get('D_G_z', float('nan')):.3f} | {flags} | "
                     f"{_verdict(r, 'no')} |")
    a, w, f = summ["accuracy"], summ["worst_class"], summ["fid_ratio"]
    lines.append("")
    judged_runs = summ.get("judged", summ["runs"])
    lines.append(f"{summ['passed']} of {judged_runs} {'judged ' if judged_runs != summ['runs'] else ''}seeds pass; "
                 f"label accuracy median {100 * a['median']:.1f}% "
                 f"(worst seed {100 * a['worst']:.1f}%), worst class median {100 * w['median']:.1f}% (worst seed "
                 f"{100 * w['worst']:.1f}%), FID median {f['median']:.1f}× real (worst seed {f['worst']:.1f}×); "
                 + (f"Parzen LL median {summ['parzen']['median']:.1f} (worst seed {summ['parzen']['worst']:.1f}); "
                    if parzen else "")
                 + f"the monitor flagged {summ['flagged']}, D won in {summ['d_won']}.")
    return "\n".join(lines)


def summary(rows: list[dict]) -> dict:
    def stat(key, worst):
        values = sorted(r[key] for r in rows if r.get(key) is not None)
        if not values:
            return None
        return {"median": values[len(values) // 2] if len(values) % 2 else 0.5 * (values[len(values) // 2 - 1]
                + values[len(values) // 2]), "worst": worst(values)}

    return {
        "passed": sum(bool(r.get("passed")) for r in rows),
        "runs": len(rows),
        "judged": sum(r.get("passed", False) is not None or "error" in r for r in rows),
        "d_won": sum(bool(r.get("d_won")) for r in rows),
        "flagged": sum(bool(r.get("health")) for r in rows),
        "accuracy": stat("accuracy", min),
        "worst_class": stat("worst_class", min),
        "fid": stat("fid", max),
        "fid_ratio": stat("fid_ratio", max),
        "parzen": stat("parzen", min),
    }


class _DefaultsHelp(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, except the bars' None (their help says the dataset's)."""

    def _get_help_string(self, action):
        return action.help if action.default is None else super()._get_help_string(action)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--render"]:  # python benchmarks/seeds.py --render FILE.json: the docs' table, again
        print(markdown(json.loads(Path(argv[1]).read_text())))
        return 0
    argv, extra = split_train_options(argv)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=_DefaultsHelp)
    p.add_argument("--seeds", type=parse_seeds, default=parse_seeds("0-19"), help="e.g. 0-19 or 0,3,11")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--threads", type=int, default=None,
                   help="BLAS threads per run (default: unset, the machine's default, as users run)")
    p.add_argument("--jobs", type=int, default=max(1, (os.cpu_count() or 1) // 2), help="runs at a time")
    p.add_argument("--parzen", action="store_true", help="also score Parzen log-likelihood (slow: ~1 min a run)")
    bars = "default: the dataset's (module docstring)"
    p.add_argument("--min-accuracy", type=float, default=None, help=f"{bars}; MNIST 0.97, Fashion-MNIST 0.95")
    p.add_argument("--min-class", type=float, default=None, help=f"{bars}; MNIST 0.90")
    p.add_argument("--max-fid-ratio", type=float, default=None, help=f"{bars}; MNIST 8")
    p.add_argument("--min-parzen", type=float, default=None, help=f"{bars}; MNIST 132")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "seeds"), help="run directories")
    p.add_argument("--json", default=None, help="write the rows and summary here")
    p.add_argument("--extend", action="store_true",
                   help="continue each seed's run already in --out (same seeds, threads and options) to --epochs "
                        "with 'minigan train --resume', instead of training it afresh")
    args = p.parse_args(argv)
    dataset = dataset_of(extra)
    if dataset not in DEFAULT_CRITERIA:
        print(f"seeds.py: runs are scored by a fixed classifier, which minigan trains for "
              f"{' and '.join(DEFAULT_CRITERIA)} only; --dataset {dataset} has none", file=sys.stderr)
        return 2
    apply_default_criteria(args, dataset)

    cache = Path(os.environ.get("MINIGAN_DATA") or Path.home() / ".cache" / "minigan")
    classifier = cache / f"classifier-{dataset}.npz"
    if not classifier.exists():
        print(f"seeds.py: the fixed classifier {classifier} is missing; train it first with "
              f"'minigan train-classifier --dataset {dataset}'", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    print(f"training {len(args.seeds)} seeds x {args.epochs} epochs, {args.jobs} at a time, threads "
          f"{args.threads or 'default'}; extra train options: {' '.join(extra) or '(none)'}", flush=True)
    rows = []
    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        futures = {pool.submit(run_seed, seed, args, extra): seed for seed in args.seeds}
        for fut in concurrent.futures.as_completed(futures):
            row = fut.result()
            rows.append(row)
            print(f"seed {row['seed']}: " + ", ".join(f"{k} {row[k]:.4g}" if isinstance(row[k], float) else
                                                       f"{k} {row[k]}" for k in ("accuracy", "worst_class", "fid",
                                                                                 "D_G_z", "passed", "error")
                                                       if k in row), flush=True)
    rows.sort(key=lambda r: r["seed"])
    summ = summary(rows)
    print(table(rows, args.parzen))
    print(f"pass rate: {summ['passed']}/{summ['judged']} judged of {summ['runs']}; D won in {summ['d_won']}; the monitor flagged "
          f"{summ['flagged']}; wall {time.perf_counter() - t0:.0f} s")
    if args.json:
        out = {
            **provenance("seeds.py", argv, extra),
            "threads": args.threads or "default",
            "epochs": args.epochs,
            "dataset": dataset,
            "criteria": {"min_accuracy": args.min_accuracy, "min_class": args.min_class,
                         "max_fid_ratio": args.max_fid_ratio, "min_parzen": args.min_parzen if args.parzen else None},
            "summary": summ,
            "rows": rows,
        }
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0 if summ["passed"] == summ["judged"] else 1


if __name__ == "__main__":
    sys.exit(main())
