"""Which moving average of G's weights to sample from: one training run per seed, several averages scored.

The weight average (``--ema``) never changes training, only which weights samples come from, so one run can
keep several averages at once and score each against the same live G. For each seed this trains ``minigan
train``'s run through the public API (``TrainConfig`` / ``Trainer``, with the run's own average off so the
live weights are what training made), keeps a :class:`minigan.nn.optim.WeightAverage` per decay in ``--betas``
(updated after every G step, exactly as the trainer's), then scores G's last weights and each average with
the fixed classifier, as ``minigan eval --classifier`` does (an average of a G with BatchNorm is scored with
statistics re-estimated for it, as training and ``minigan eval`` do; ``--live-statistics`` adds each with the
live G's statistics): label accuracy overall and for the worst class of
10 x ``--n-per-class`` conditional samples (for an unconditional model, as many samples' class histogram and the
classes outside issue 12's 7-13% band), and the classifier-feature FID as a multiple of the real-data value.

Examples::

    python benchmarks/average_decay.py --seeds 28,29,21                  # default threads, as users run
    OPENBLAS_NUM_THREADS=1 python benchmarks/average_decay.py --seeds 37 --betas 0.98,0.99,0.995
    python benchmarks/average_decay.py --seeds 29 -- --lr-G 0.001        # any train option after --

Prints one line per seed and variant and appends JSON lines to ``--json`` (rows: seed, variant, accuracy,
worst class or the class histogram, FID ratio, the threads it ran at).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from seeds import parse_seeds  # noqa: E402  (benchmarks/seeds.py, beside this file)

from minigan import backend  # noqa: E402
from minigan.cli import _positive_int, build_parser  # noqa: E402  (the command line's own argument types)
from minigan.config import TrainConfig  # noqa: E402
from minigan.eval.classifier import default_path, load_classifier  # noqa: E402
from minigan.eval.metrics import evaluate_run  # noqa: E402
from minigan.nn.optim import WeightAverage  # noqa: E402
from minigan.threads import set_threads  # noqa: E402
from minigan.train import Trainer  # noqa: E402

#: `minigan train` options this script passes on to TrainConfig; ``--option`` becomes the model options and
#: ``--threads`` sets the threads as the command line does. Any other train option is refused: the script
#: defines the seed, epochs, run directory and averages itself, and must not drop an option silently.
PASSED_ON = ("lr_G", "lr_D", "lr_decay", "model", "dataset", "preset", "batch", "k", "update", "d_update_clip",
             "d_warmup", "matching_aware", "matching_aware_every", "matching_aware_epochs")


def train_options(extra: list[str]):
    """``extra`` parsed as `minigan train` options: (TrainConfig keywords, threads or None); SystemExit naming
    any option this script would not honour."""
    parser = build_parser()
    args, defaults = parser.parse_args(["train", *extra]), parser.parse_args(["train"])
    ignored = sorted(name for name, value in vars(args).items()
                     if name not in (*PASSED_ON, "options", "threads") and value != getattr(defaults, name, None))
    if ignored:
        raise SystemExit(f"average_decay.py: cannot pass on {', '.join('--' + n.replace('_', '-') for n in ignored)}"
                         " (the script sets seeds, epochs, run directories and averages with its own flags)")
    given = {name: getattr(args, name) for name in PASSED_ON if getattr(args, name, None) is not None}
    if args.options:
        given["model_options"] = dict(args.options)
    return given, args.threads


def train_config(seed: int, epochs: int, out: Path, extra: list[str]) -> TrainConfig:
    """The default run's config for ``seed``, with ``extra`` `minigan train` options applied."""
    return TrainConfig(seed=seed, epochs=epochs, out=str(out), progress=False, ema=0.0, **train_options(extra)[0])


#: Issue 12's band for each class's share of an unconditional model's samples, by the classifier.
BALANCE_BAND = (0.07, 0.13)


def score(trainer: Trainer, classifier, n_per_class: int = 1000) -> dict:
    """The classifier's reading of 10 x ``n_per_class`` samples: label accuracy (overall, worst class) of a
    conditional G, the class histogram and the classes outside :data:`BALANCE_BAND` of an unconditional one
    (accuracy None), and the FID, also as a multiple of the real validation digits' FID."""
    res = evaluate_run(trainer.model, trainer.dataset, classifier=classifier, n_per_class=n_per_class,
                       log=lambda m: None)
    s, real = res["classifier"]["samples"], res["classifier"]["real_valid"]
    fid = {"fid": s["fid_test"], "fid_ratio": s["fid_test"] / real["fid_test"]}
    if s["label_accuracy"] is not None:
        return {"accuracy": s["label_accuracy"]["overall"], "worst_class": min(s["label_accuracy"]["per_class"]),
                **fid}
    counts = s["histogram"]
    shares = [c / sum(counts) for c in counts]
    low, high = BALANCE_BAND
    return {"accuracy": None, "worst_class": None, "histogram": counts, "min_share": min(shares),
            "max_share": max(shares), "outside_band": [k for k, p in enumerate(shares) if not low <= p <= high],
            **fid}


def row_line(row: dict) -> str:
    """One printed line: accuracy and worst class, or for an unconditional G its smallest and largest class
    shares and the classes outside the band."""
    if row["accuracy"] is not None:
        reading = f"{row['accuracy']:.4f}  {row['worst_class']:.4f}"
    else:
        reading = (f"shares {row['min_share']:.1%}-{row['max_share']:.1%}, outside "
                   f"{','.join(map(str, row['outside_band'])) or 'none'}")
    return f"{row['seed']:>4}  {row['variant']:<22} {reading}  FID x real {row['fid_ratio']:.2f}"


def run_seed(seed: int, args, extra: list[str]) -> list[dict]:
    out = Path(args.out) / f"seed-{seed}"
    shutil.rmtree(out, ignore_errors=True)
    trainer = Trainer(train_config(seed, args.epochs, out, extra), log=lambda m: None)
    averages = {beta: WeightAverage(trainer.networks["G"], beta) for beta in args.betas}
    for average in averages.values():
        trainer.after_step["G"].append(average.update)
    t0 = time.perf_counter()
    trainer.run(handle_signals=False)
    seconds = time.perf_counter() - t0
    classifier = load_classifier(default_path(trainer.config.dataset))
    threads = os.environ.get("OPENBLAS_NUM_THREADS", "default") if args.threads is None else str(args.threads)
    common = {"seed": seed, "epochs": args.epochs, "n_per_class": args.n_per_class, "extra": extra,
              "train_seconds": seconds, "threads": threads, "D_G_z": trainer._last_record["D_G_z"]}

    def scored(variant: str) -> dict:
        return {**common, "variant": variant, **score(trainer, classifier, args.n_per_class)}

    rows = [scored("last weights")]
    for beta, average in averages.items():
        with average.swapped_in():
            if args.live_statistics:
                rows.append(scored(f"ema {beta} live BN"))
            # What the trainer's sampling_G does (a G without BatchNorm has nothing to re-estimate):
            if trainer.model.standing_statistics(trainer.config.batch, seed=seed) or not args.live_statistics:
                rows.append(scored(f"ema {beta}"))
    return rows


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=parse_seeds, required=True)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--betas", type=lambda t: [float(b) for b in t.split(",")], default=[0.99, 0.995, 0.999])
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "average_decay"))
    ap.add_argument("--n-per-class", type=_positive_int, default=1000,
                    help="samples of each class to score (default 1000, as minigan eval). The worst class's reading "
                         "spread over 1.8 points in four draws of 1000 from the same G (docs/RESULTS.md); 10000 "
                         "narrows the spread about threefold (sqrt 10), at ten times the scoring time. It sets the "
                         "FID's sample count too, and the FID falls with more samples: compare rows of one N only")
    ap.add_argument("--json", default=None, help="append one JSON line per seed and variant here")
    ap.add_argument("--live-statistics", action="store_true",
                    help="also score each average with the live G's BatchNorm statistics (variant 'ema B live BN'), "
                         "as sampling did before the statistics were re-estimated for the average")
    args = ap.parse_args(argv)
    args.threads = train_options(extra)[1]  # refuses what it cannot pass on before any training starts
    if args.threads is not None:
        set_threads(args.threads)
    backend.use("numpy")
    print(f"{'seed':>4}  {'variant':<22} accuracy, worst class (conditional) or class shares (unconditional)")
    for seed in args.seeds:
        for row in run_seed(seed, args, extra):
            print(row_line(row), flush=True)
            if args.json:
                with open(args.json, "a", encoding="utf-8") as f:
                    f.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
