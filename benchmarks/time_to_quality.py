"""Time to quality: how long the default ``minigan train`` takes to reach the CGAN paper's Parzen number and
the label-accuracy target, the figure a user feels.

Each seed is trained one epoch at a time, exactly as a user would continue a run (``minigan train ...
--epochs E --resume`` in a subprocess; resuming is bit-identical at a fixed thread count, so the trajectory is
the one of a single uninterrupted run), with ``--select-every 1`` so every epoch ends with the validation
Parzen log-likelihood of the model that ``sample`` and ``eval`` use. After each epoch the run is scored by the
fixed classifier (``minigan eval --classifier``: label accuracy of 10,000 samples, worst class, FID).

Reported per seed, as training time (the sum of the epochs' ``seconds`` in metrics.jsonl: the updates, the
grid and the checkpoint, not the scoring) and as the wall time of the training processes (adds process start,
data loading and the per-epoch Parzen selection):

* the first epoch whose validation Parzen is >= ``--parzen-target`` (132, the CGAN paper's *test-set* figure;
  the selection fits σ on the first 1,000 validation images and scores the other 9,000, so it is a held-out
  score, but not the test set's);
* the first epoch whose label accuracy is >= ``--accuracy-target`` (0.97).

A seed stops once both are reached, or at ``--max-epochs``.

Examples::

    python benchmarks/time_to_quality.py --seeds 0 --max-epochs 15 --json FILE     # default threads, as users run
    python benchmarks/time_to_quality.py --seeds 0,1 --threads 1
    python benchmarks/time_to_quality.py --seeds 0 -- --lr-G 0.001                 # any train options after --
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from seeds import ROOT, _env, parse_seeds, provenance, split_train_options  # noqa: E402  (shared with seeds.py)


def first_reaching(epochs: list[dict], key: str, target: float) -> dict | None:
    """The first epoch record whose ``key`` is >= ``target`` (None if no record reaches it)."""
    return next((e for e in epochs if e.get(key) is not None and e[key] >= target), None)


def run_seed(seed: int, args, extra: list[str]) -> dict:
    """Train one seed epoch by epoch, scoring after each; the seed's row (never raises for a failed run)."""
    run_dir = Path(args.out) / f"seed-{seed}"
    shutil.rmtree(run_dir, ignore_errors=True)
    env = _env(args.threads)
    epochs: list[dict] = []
    row: dict = {"seed": seed, "epochs": epochs}
    process_wall = 0.0
    for epoch in range(1, args.max_epochs + 1):
        cmd = [sys.executable, "-m", "minigan", "train", "--seed", str(seed), "--epochs", str(epoch), "--out",
               str(run_dir), "--select-every", "1", "--no-progress", *extra] + (["--resume"] if epoch > 1 else [])
        t0 = time.perf_counter()
        train = subprocess.run(cmd, env=env, capture_output=True, text=True)
        process_wall += time.perf_counter() - t0
        if train.returncode != 0:
            row["error"] = f"train exit {train.returncode}: " + (train.stderr.strip().splitlines() or ["?"])[-1]
            break
        try:
            entry = _score_epoch(run_dir, epoch, epochs, process_wall, env)
        except (KeyError, IndexError, ValueError, OSError) as exc:  # a run that wrote less than expected
            row["error"] = f"epoch {epoch}: {type(exc).__name__}: {exc}"
            break
        epochs.append(entry)
        print(f"seed {seed} epoch {epoch}: " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                                       for k, v in entry.items() if k != "epoch"), flush=True)
        if first_reaching(epochs, "parzen_valid", args.parzen_target) and \
                first_reaching(epochs, "accuracy", args.accuracy_target):
            break
    for name, key, target in (("parzen", "parzen_valid", args.parzen_target),
                              ("accuracy", "accuracy", args.accuracy_target)):
        hit = first_reaching(epochs, key, target)
        row[f"to_{name}"] = None if hit is None else {k: hit[k] for k in ("epoch", "train_seconds",
                                                                          "process_seconds")}
    return row


def _score_epoch(run_dir: Path, epoch: int, epochs: list[dict], process_wall: float, env: dict) -> dict:
    """The epoch's record from metrics.jsonl, scored by ``minigan eval --classifier``."""
    record = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])
    ev = subprocess.run([sys.executable, "-m", "minigan", "eval", str(run_dir), "--classifier"], env=env,
                        capture_output=True, text=True)
    if ev.returncode != 0:
        raise ValueError("eval: " + (ev.stderr.strip().splitlines() or ["?"])[-1])
    scores = json.loads((run_dir / "eval.json").read_text())["classifier"]
    samples = scores["samples"]
    accuracy = samples.get("label_accuracy")
    return {"epoch": epoch, "epoch_seconds": record["seconds"],
            "train_seconds": sum(e["epoch_seconds"] for e in epochs) + record["seconds"],
            "process_seconds": process_wall, "parzen_valid": record.get("parzen_valid"),
            "accuracy": accuracy["overall"] if accuracy else None,
            "worst_class": min(accuracy["per_class"]) if accuracy else None,
            "fid_ratio": samples["fid_test"] / scores["real_valid"]["fid_test"],
            "health": [f["kind"] for f in record.get("health", [])]}


def _minutes(hit: dict | None) -> str:
    if hit is None:
        return "not reached"
    return f"epoch {hit['epoch']}, {hit['train_seconds'] / 60:.1f} min ({hit['process_seconds'] / 60:.1f} min wall)"


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    argv, extra = split_train_options(argv)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--seeds", type=parse_seeds, default=parse_seeds("0"), help="e.g. 0-2 or 0,3")
    p.add_argument("--max-epochs", type=int, default=20)
    p.add_argument("--threads", type=int, default=None,
                   help="BLAS threads (default: unset, the machine's default, as users run)")
    p.add_argument("--parzen-target", type=float, default=132.0)
    p.add_argument("--accuracy-target", type=float, default=0.97)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "time_to_quality"), help="run directories")
    p.add_argument("--json", default=None, help="write the rows here")
    args = p.parse_args(argv)
    rows = []
    for seed in args.seeds:  # one at a time: the times are the measurement
        rows.append(run_seed(seed, args, extra))
        row = rows[-1]
        print(f"seed {seed}: to Parzen {args.parzen_target:g}: {_minutes(row['to_parzen'])}; to label accuracy "
              f"{args.accuracy_target:g}: {_minutes(row['to_accuracy'])}" + (f"  ({row['error']})" if "error" in row
                                                                              else ""), flush=True)
    if args.json:
        out = {
            **provenance("time_to_quality.py", argv, extra),
            "threads": args.threads or "default",
            "targets": {"parzen_valid": args.parzen_target, "accuracy": args.accuracy_target},
            "rows": rows,
        }
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0 if all(r["to_parzen"] and r["to_accuracy"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
