"""How much of a digit's class does mnist-inpaint's input still show? A reference for issue 13's 95%.

pix2pix on ``mnist-inpaint`` sees the top half of a digit (the bottom half grey) and draws the whole digit; the
fixed MNIST classifier then reads the drawn digit. A completion can only be read as the right class as often as
the top half tells the class, so the accuracy of a classifier that sees *only the input* is a reference for what
the completed digits can reach. This script trains minigan's classifier (the same MLP, optimiser, length and
seed as ``minigan train-classifier``) on the masked training digits and reports its accuracy on the masked test
digits, beside the same classifier trained on whole digits. A better model of the top half could read more
than this MLP does, so the figure is a reference, not a bound; ``--conv`` puts strided convolutions (kernel 4,
stride 2, padding 1, ReLU) in front of the MLP, a stronger reader of images.

Examples::

    python benchmarks/inpaint_ceiling.py --json benchmarks/results/pix2pix/inpaint-ceiling.json
    python benchmarks/inpaint_ceiling.py --conv 32,64 --hidden 512 --json inpaint-ceiling-conv.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import minigan  # noqa: E402,F401  (before NumPy, as the command line: how OpenBLAS idles, minigan/__init__.py)
import numpy as np  # noqa: E402

from minigan import data, paired, threads  # noqa: E402
from minigan.eval.classifier import DEFAULT_HIDDEN, Classifier, train_classifier  # noqa: E402


def _widths(text: str) -> tuple[int, ...]:
    """"32,64" -> (32, 64); "" -> ()."""
    try:
        widths = tuple(int(w) for w in text.split(",") if w.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated widths such as 32,64, got {text!r}") from None
    if any(w < 1 for w in widths):
        raise argparse.ArgumentTypeError(f"widths must be positive, got {text!r}")
    return widths


def masked(split: data.Split) -> data.Split:
    """The split as mnist-inpaint's input shows it, at 28x28: the rows under the hole set to the grey fill."""
    pairs = paired.mnist_inpaint(split)
    return data.Split(np.ascontiguousarray(pairs.a[:, 0, 2:30, 2:30].reshape(len(split), -1)), split.y)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--epochs", type=int, default=None, help="classifier epochs (default: train-classifier's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="BLAS threads (default: all cores)")
    parser.add_argument("--conv", type=_widths, default=(),
                        help="channels of convolutions before the MLP, e.g. 32,64 (default: none, the MLP alone)")
    parser.add_argument("--hidden", type=_widths, default=DEFAULT_HIDDEN, help="the MLP's hidden widths")
    parser.add_argument("--json", type=Path, default=None, help="write the result here")
    args = parser.parse_args(argv)
    if args.threads is not None:
        threads.set_threads(args.threads)

    whole = data.load_dataset("mnist")
    top = data.Dataset("mnist", masked(whole.train), masked(whole.valid), masked(whole.test),
                       whole.source + ", bottom half masked as mnist-inpaint's input")
    result = {"command": "python benchmarks/inpaint_ceiling.py " + " ".join(argv or sys.argv[1:]),
              "date": time.strftime("%Y-%m-%d"), "seed": args.seed, "threads": threads.blas_threads(),
              "architecture": Classifier(hidden=args.hidden, conv=args.conv).architecture}
    with tempfile.TemporaryDirectory() as tmp:
        for name, dataset in (("whole_digits", whole), ("input_only", top)):
            fit = train_classifier("mnist", Path(tmp) / f"{name}.npz", args.epochs, args.seed, dataset=dataset,
                                   log=lambda line, name=name: print(f"[{name}] {line}", flush=True),
                                   hidden=args.hidden, conv=args.conv)
            result[name] = {"test_accuracy": fit["test_accuracy"], "valid_accuracy": fit["valid_accuracy"],
                            "epochs": fit["epochs"], "seconds": round(fit["seconds"], 1)}
    print(f"test accuracy from the whole digit {result['whole_digits']['test_accuracy']:.4f}, "
          f"from mnist-inpaint's input (top half) {result['input_only']['test_accuracy']:.4f}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
