"""The papers' table: minigan's runs of the GAN and CGAN papers' models, each row with a committed output.

Every row is one ``minigan train`` run (a subprocess, exactly the user's command), scored by ``minigan eval
--parzen --classifier`` on the checkpoint the row names. The papers report their best checkpoint, so a row
trained with ``--select-every N`` is scored on ``best.npz`` (the best by validation Parzen so far) at the end of
each of its stages; a stage resumes the run to more epochs (resuming is bit-identical at a fixed thread count,
so the stages are one uninterrupted run). One JSON file per row, with the command, the date, the machine and
the commit, goes to ``--results``; ``--render`` prints docs/RESULTS.md's table from those files.

Rows (``--rows``; default: all):

``gan-paper``
    The GAN paper's model and schedule, ``--preset paper`` (one-pass updates), 250 epochs, validation Parzen
    every 5; scored after 80 epochs and after 250.
``gan-paper-alternating``
    The same with Algorithm 1's alternating updates, 12 epochs.
``cgan-paper`` / ``cgan-paper-alternating``
    The CGAN paper's model, ``--preset paper``, 10 / 12 epochs.
``cgan-fashion``
    The default ``minigan train`` on Fashion-MNIST (5 epochs).
``real-digits``
    No training: the Parzen estimator on the first 10,000 real training digits, the protocol's ceiling.

Examples::

    OPENBLAS_NUM_THREADS=1 python benchmarks/papers.py --rows cgan-paper,cgan-fashion
    OPENBLAS_NUM_THREADS=1 python benchmarks/papers.py --rows gan-paper --reuse   # continue a stopped run
    python benchmarks/papers.py --render
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from seeds import ROOT, _env, provenance, read_metrics  # noqa: E402  (shared with seeds.py)

RESULTS = ROOT / "benchmarks" / "results" / "papers"


@dataclass(frozen=True)
class Row:
    """One table row: the train options, the epochs at which it is scored, and what it shows."""

    model: str
    source: str  # the table's "preset / source" cell
    options: tuple[str, ...]
    stages: tuple[int, ...]  # epochs after which the run is scored (resuming between them)
    select_every: int | None = None  # score best.npz (the best by validation Parzen) rather than the last weights


ROWS: dict[str, Row] = {
    "gan-paper": Row("GAN", "minigan `paper` (one-pass update)", ("--model", "gan", "--preset", "paper"),
                     (80, 250), select_every=5),
    "gan-paper-alternating": Row("GAN", "minigan `paper`, `--update alternating`",
                                 ("--model", "gan", "--preset", "paper", "--update", "alternating"), (12,)),
    "cgan-paper": Row("CGAN", "minigan `paper` (one-pass update)", ("--model", "cgan", "--preset", "paper"), (10,)),
    "cgan-paper-alternating": Row("CGAN", "minigan `paper`, `--update alternating`",
                                  ("--model", "cgan", "--preset", "paper", "--update", "alternating"), (12,)),
    "cgan-fashion": Row("CGAN, **Fashion-MNIST**", "minigan `modern` (the default run)",
                        ("--model", "cgan", "--dataset", "fashion-mnist"), (5,)),
}
REFERENCE = "real-digits"

#: The papers' own Parzen numbers (Goodfellow et al. 2014, Table 1; Mirza & Osindero 2014, Table 1).
PUBLISHED = (("DBN", "published (Goodfellow et al. 2014)", "138 ± 2"),
             ("Stacked CAE", "published", "121 ± 1.6"),
             ("Deep GSN", "published", "214 ± 1.1"),
             ("GAN", "published", "225 ± 2"),
             ("CGAN", "published (Mirza & Osindero 2014)", "132 ± 1.8"))


def _check(proc: subprocess.CompletedProcess, what: str) -> None:
    if proc.returncode != 0:
        raise RuntimeError(f"{what} exited {proc.returncode}: " + (proc.stderr.strip().splitlines() or ["?"])[-1])


def run_row(name: str, row: Row, seed: int, out: Path, reuse: bool, on_stage=None) -> list[dict]:
    """Train ``row`` and score it after each stage; one result per stage (``on_stage(results so far)`` after
    each, so a long row's finished stages are kept even if a later one is stopped)."""
    run_dir = out / name
    if not (reuse and (run_dir / "checkpoint.npz").exists()):
        shutil.rmtree(run_dir, ignore_errors=True)
    env = _env(None)  # the caller's BLAS threads (OPENBLAS_NUM_THREADS), recorded in the JSON
    results = []
    for epochs in row.stages:
        cmd = [sys.executable, "-m", "minigan", "train", *row.options, "--seed", str(seed), "--epochs", str(epochs),
               "--out", str(run_dir), "--no-progress"]
        if row.select_every:
            cmd += ["--select-every", str(row.select_every)]
        if (run_dir / "checkpoint.npz").exists():
            cmd.append("--resume")
        print(f"{name}: training to epoch {epochs}", flush=True)
        train = subprocess.run(cmd, env=env, capture_output=True, text=True)
        (run_dir / f"train-{epochs}.log").write_text(train.stdout + train.stderr)
        _check(train, f"{name}: train")
        scored = run_dir / f"best-epoch{epochs}.npz" if row.select_every else run_dir
        if row.select_every:  # best.npz moves on in the next stage: score a copy of this stage's
            shutil.copyfile(run_dir / "best.npz", scored)
        ev = subprocess.run([sys.executable, "-m", "minigan", "eval", str(scored), "--parzen", "--classifier"],
                            env=env, capture_output=True, text=True)
        _check(ev, f"{name}: eval")
        results.append(_result(name, row, epochs, run_dir, json.loads((run_dir / "eval.json").read_text())))
        print(f"{name} (to epoch {epochs}): " + _summary(results[-1]), flush=True)
        if on_stage is not None:
            on_stage(results)
    return results


def _result(name: str, row: Row, epochs: int, run_dir: Path, ev: dict) -> dict:
    records = [r for r in read_metrics(run_dir) if r["epoch"] <= epochs]
    scored_epoch = ev["epoch"]
    clf = ev["classifier"]
    samples, real = clf["samples"], clf["real_valid"]
    accuracy = samples.get("label_accuracy")
    last = records[-1]
    return {
        "row": name, "model": row.model, "source": row.source, "trained_epochs": epochs,
        "scored_epoch": scored_epoch, "selected": bool(row.select_every),
        "train_seconds": sum(r["seconds"] for r in records),
        "train_seconds_to_scored": sum(r["seconds"] for r in records if r["epoch"] <= scored_epoch),
        "parzen": ev["parzen"]["mean"], "parzen_se": ev["parzen"]["se"], "parzen_sigma": ev["parzen"]["sigma"],
        "accuracy": accuracy["overall"] if accuracy else None,
        "per_class": accuracy["per_class"] if accuracy else None,
        "fid": samples["fid_test"], "fid_real": real["fid_test"], "fid_ratio": samples["fid_test"] / real["fid_test"],
        "histogram": samples["histogram"], "real_accuracy": (real.get("label_accuracy") or {}).get("overall"),
        "last_epoch": {k: last[k] for k in ("epoch", "D_x", "D_G_z", "loss_D", "loss_G") if k in last},
        "parzen_valid": {r["epoch"]: r["parzen_valid"] for r in records if r.get("parzen_valid") is not None},
        "health": sorted({f["kind"] for r in records for f in r.get("health", [])}),
    }


def reference_row() -> dict:
    """The Parzen protocol on the first 10,000 real training digits (no model): the estimator's ceiling."""
    from minigan import data
    from minigan.eval.parzen import parzen_evaluate

    ds = data.load_dataset("mnist", log=lambda m: None)
    score = parzen_evaluate(ds.train.x[:10000], ds.valid.x, ds.test.x)
    return {"row": REFERENCE, "model": "real training digits (first 10,000)", "source": "estimator's reference",
            "parzen": score["mean"], "parzen_se": score["se"], "parzen_sigma": score["sigma"],
            "valid_mean_ll": score["valid_mean_ll"]}


def _summary(r: dict) -> str:
    acc = "" if r.get("accuracy") is None else f", label accuracy {100 * r['accuracy']:.1f}%"
    return (f"Parzen {r['parzen']:.1f} ± {r['parzen_se']:.1f} (epoch {r['scored_epoch']}){acc}, "
            f"FID {r['fid']:.1f} ({r['fid_ratio']:.1f}× real)")


def _histogram_cell(r: dict) -> str:
    hist = r["histogram"]
    n = sum(hist)
    top = max(range(len(hist)), key=hist.__getitem__)
    if hist[top] >= 0.9 * n:
        return f"{100 * hist[top] / n:.0f}% class {top}: collapsed"
    low = min(range(len(hist)), key=hist.__getitem__)
    return (f"all {len(hist)} classes" if min(hist) > 0 else f"{sum(h > 0 for h in hist)} classes") + \
        f"; smallest {low}: {100 * hist[low] / n:.1f}%, largest {top}: {100 * hist[top] / n:.1f}%"


def markdown(docs: list[dict]) -> str:
    """docs/RESULTS.md's table: the published rows, then one row per scored stage of the committed JSON."""
    lines = ["| model | preset / source | epochs (scored) | training time | Parzen LL | label acc. (worst class) "
             "| FID (× real) | predicted classes |",
             "|---|---|---:|---:|---:|---:|---:|---|"]
    lines += [f"| {m} | {s} | | | {ll} | | | |" for m, s, ll in PUBLISHED]
    for doc in docs:
        for r in doc["results"]:
            if r["row"] == REFERENCE:
                lines.append(f"| {r['model']} | {r['source']} | | | {r['parzen']:.1f} ± {r['parzen_se']:.1f} | | | |")
                continue
            epochs = (f"{r['trained_epochs']} (best: {r['scored_epoch']})" if r["selected"]
                      else str(r["trained_epochs"]))
            acc = ("—" if r["accuracy"] is None else
                   f"{100 * r['accuracy']:.1f}% ({100 * min(r['per_class']):.1f}%)")
            lines.append(f"| {r['model']} | {r['source']} | {epochs} | {r['train_seconds'] / 60:.1f} min | "
                         f"{r['parzen']:.1f} ± {r['parzen_se']:.1f} | {acc} | {r['fid']:.1f} ({r['fid_ratio']:.1f}×) "
                         f"| {_histogram_cell(r)} |")
    return "\n".join(lines)


def load_results(results: Path = RESULTS) -> list[dict]:
    """The committed JSON documents, in the table's order."""
    order = [*ROWS, REFERENCE]
    docs = [json.loads(p.read_text()) for p in sorted(results.glob("*.json"))]
    return sorted(docs, key=lambda d: order.index(d["results"][0]["row"]))


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--rows", default=",".join([*ROWS, REFERENCE]),
                   help=f"comma-separated, of: {', '.join([*ROWS, REFERENCE])}")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "papers"), help="run directories")
    p.add_argument("--results", default=str(RESULTS), help="one JSON per row is written here")
    p.add_argument("--reuse", action="store_true",
                   help="continue a row's run directory that already holds a checkpoint (resume) instead of "
                        "starting it afresh")
    p.add_argument("--render", action="store_true", help="print the Markdown table of the JSON in --results")
    args = p.parse_args(argv)
    if args.render:
        print(markdown(load_results(Path(args.results))))
        return 0
    names = [n.strip() for n in args.rows.split(",") if n.strip()]
    unknown = [n for n in names if n not in ROWS and n != REFERENCE]
    if unknown:
        p.error(f"unknown rows {unknown}; choose from {[*ROWS, REFERENCE]}")
    threads = os.environ.get("OPENBLAS_NUM_THREADS", "default")
    Path(args.results).mkdir(parents=True, exist_ok=True)
    for name in names:
        t0 = time.perf_counter()
        path = Path(args.results) / f"{name}.json"

        def write(results, complete=False):
            doc = {**provenance("papers.py", argv, []), "threads": threads, "seed": args.seed,
                   "wall_seconds": time.perf_counter() - t0, "complete": complete, "results": results}
            path.write_text(json.dumps(doc, indent=1) + "\n")

        results = ([reference_row()] if name == REFERENCE
                   else run_row(name, ROWS[name], args.seed, Path(args.out), args.reuse, on_stage=write))
        write(results, complete=True)
        print(f"wrote {path}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
