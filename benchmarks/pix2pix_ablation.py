"""pix2pix's ablation on our data (Isola et al. 2017, Table 1): L1 only vs cGAN only vs L1 + cGAN.

Trains the three objectives with everything else equal (data, seed, networks, optimiser, length), then scores each
generator on the held-out test split of the task:

* ``l1``: mean absolute error to the target, in [0, 1] pixel units (the paper's point: L1-only wins this one);
* ``accuracy``: the fixed classifier's accuracy on the outputs (the centre 28x28 of the 32x32 images; is the
  garment or digit the right class?), next to its accuracy on the real targets;
* ``fid``: the Fréchet distance between the classifier's features of the outputs and of the real targets, next
  to the distance between two real splits (validation vs test targets) as the floor;
* ``sharpness``: mean Sobel gradient magnitude of the outputs divided by the targets' (1.0: as sharp as the
  data; blur gives less);

and writes ``ablation.json`` and ``side_by_side.png`` (rows: test examples; columns: input | L1 | cGAN |
L1 + cGAN | target) into ``--out``. A run directory that already holds a checkpoint is continued to the asked
length (or left as it is), so the three runs can be made one at a time; ``--objectives`` trains and scores a
subset (for example ``l1,l1+gan`` to continue those two further).

The classifier is minigan's own (``minigan train-classifier --dataset fashion-mnist`` for fashion-edges,
``--dataset mnist`` for mnist-inpaint); without it the classifier metrics are left out, with a note.

Examples::

    python benchmarks/pix2pix_ablation.py --dataset fashion-edges --epochs 5 --batch 64 --out runs/ablation
    python benchmarks/pix2pix_ablation.py --dataset mnist-inpaint --steps 3 --width 4 --n-eval 200 --out /tmp/a
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import minigan  # noqa: E402,F401  (before NumPy, as the command line: how OpenBLAS idles, minigan/__init__.py)
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from seeds import provenance  # noqa: E402  (benchmarks/seeds.py: command, date, machine, commit)

from minigan import backend, io, paired  # noqa: E402
from minigan.config import TrainConfig  # noqa: E402
from minigan.eval import classifier as classifier_module  # noqa: E402
from minigan.eval.metrics import frechet_distance  # noqa: E402
from minigan.families.pix2pix import OBJECTIVES  # noqa: E402
from minigan.runs import CHECKPOINT_NAME, load_model  # noqa: E402
from minigan.train import Trainer  # noqa: E402

ORDER = ("l1", "gan", "l1+gan")  # the paper's columns
SOURCE = {"fashion-edges": "fashion-mnist", "mnist-inpaint": "mnist"}
EVAL_BATCH = 250


def train_one(objective: str, args, log) -> Path:
    run = Path(args.out) / objective.replace("+", "_")
    options = {"objective": objective, "width": args.width}
    if (run / CHECKPOINT_NAME).exists():
        trainer = Trainer.resume(run, log=log, epochs=args.epochs, steps=args.steps)
    else:
        config = TrainConfig(model="pix2pix", dataset=args.dataset, batch=args.batch, epochs=args.epochs,
                             steps=args.steps, seed=args.seed, out=str(run), progress=False, model_options=options)
        trainer = Trainer(config, log=log)
    trainer.run()
    return run


def translate_split(model, a: np.ndarray) -> np.ndarray:
    outs = [np.clip(backend.to_host(model.translate(backend.to_device(a[i:i + EVAL_BATCH]))), 0, 1)
            for i in range(0, len(a), EVAL_BATCH)]
    return np.concatenate(outs).astype(np.float32)


def sharpness(images: np.ndarray) -> float:
    """Mean Sobel gradient magnitude (minigan.paired.sobel_magnitude) over every pixel and channel."""
    return float(paired.sobel_magnitude(images).mean())


def centre_784(images: np.ndarray) -> np.ndarray:
    """(N, 1, 32, 32) -> the centre 28x28 as (N, 784) rows, the classifier's input."""
    return np.ascontiguousarray(images[:, 0, 2:30, 2:30].reshape(len(images), 784), dtype=np.float32)


def score(outputs: np.ndarray, test: paired.PairedSplit, clf, real_features) -> dict:
    result = {"l1": float(np.abs(outputs - test.b).mean()),
              "sharpness": sharpness(outputs) / sharpness(test.b)}
    if clf is not None:
        x = centre_784(outputs)
        result["accuracy"] = float(np.mean(clf.predict(x) == test.y))
        result["fid"] = frechet_distance(clf.features(x), real_features)
    return result


def side_by_side(path: Path, test: paired.PairedSplit, outputs: dict, n: int = 8) -> None:
    """Rows: test examples; columns: input, each objective's output (in the paper's order), target."""
    columns = [test.a[:n], *(outputs[o][:n] for o in ORDER if o in outputs), test.b[:n]]
    tiles = np.stack(columns, axis=1)  # (n, columns, C, H, W)
    k, cols, c, h, w = tiles.shape
    tiles = tiles.reshape(k * cols, c, h, w).transpose(0, 2, 3, 1)
    io.write_png(path, io.image_grid(tiles if c == 3 else tiles[..., 0], k, cols))


def _objectives(text: str) -> tuple[str, ...]:
    """"l1,l1+gan" -> ("l1", "l1+gan"), in the paper's order."""
    asked = {o.strip() for o in text.split(",") if o.strip()}
    unknown = asked - set(ORDER)
    if unknown or not asked:
        raise argparse.ArgumentTypeError(f"objectives must be among {', '.join(ORDER)}, got {text!r}")
    return tuple(o for o in ORDER if o in asked)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", choices=paired.TASKS, default="fashion-edges")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--epochs", type=int, default=None)
    length.add_argument("--steps", type=int, default=None)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--width", type=int, default=64, help="G's and D's base channels (the paper's 64)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-eval", type=int, default=10_000, help="test pairs scored (the first N)")
    p.add_argument("--classifier", default=None, help="classifier weights (default: the cache's for the task)")
    p.add_argument("--objectives", type=_objectives, default=ORDER,
                   help="comma-separated subset of " + ",".join(ORDER) + " (default: all three)")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    if args.epochs is None and args.steps is None:
        args.epochs = 5
    assert set(ORDER) == set(OBJECTIVES)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    def log(msg):
        print(msg, flush=True)

    runs, seconds = {}, {}
    for objective in args.objectives:
        t0 = time.perf_counter()
        runs[objective] = train_one(objective, args, log)
        seconds[objective] = time.perf_counter() - t0

    data = paired.load_paired(args.dataset, log=log)
    test = data.test
    n = min(args.n_eval, len(test))
    test = paired.PairedSplit(test.a[:n], test.b[:n], test.y[:n])
    clf_path = Path(args.classifier) if args.classifier else classifier_module.default_path(SOURCE[args.dataset])
    clf = real_features = None
    reference = {}
    if clf_path.exists():
        clf = classifier_module.load_classifier(clf_path)
        real_features = clf.features(centre_784(test.b))
        valid_b = data.valid.b[:n]
        reference = {"accuracy_real_targets": float(np.mean(clf.predict(centre_784(test.b)) == test.y)),
                     "fid_valid_vs_test_targets": frechet_distance(clf.features(centre_784(valid_b)), real_features)}
    else:
        log(f"note: no classifier at {clf_path}: accuracy and FID left out (make it with: minigan train-classifier "
            f"--dataset {SOURCE[args.dataset]})")

    results, outputs = {}, {}
    for objective in args.objectives:
        model, meta = load_model(runs[objective])
        outputs[objective] = translate_split(model, test.a)
        results[objective] = {**score(outputs[objective], test, clf, real_features),
                              "epochs": meta.get("epoch"), "updates": meta.get("updates"),
                              "train_seconds": meta.get("train_seconds")}
    summary = {**provenance("pix2pix_ablation.py", list(sys.argv[1:] if argv is None else argv), []),
               "threads": next((os.environ[v] for v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
                            if os.environ.get(v)), "default"), "dataset": args.dataset, "n_eval": n, "width": args.width, "batch": args.batch, "seed": args.seed,
               "classifier": str(clf_path) if clf is not None else None, "reference": reference,
               "results": results, "wall_seconds": seconds}
    (out / "ablation.json").write_text(json.dumps(summary, indent=2) + "\n")
    side_by_side(out / "side_by_side.png", test, outputs)

    header = f"{'objective':<10} {'L1':>8} {'sharpness':>10}" + (f" {'accuracy':>9} {'FID':>9}" if clf else "")
    log(header)
    for objective in args.objectives:
        r = results[objective]
        line = f"{objective:<10} {r['l1']:>8.4f} {r['sharpness']:>10.3f}"
        if clf is not None:
            line += f" {r['accuracy']:>9.4f} {r['fid']:>9.3f}"
        log(line)
    if reference:
        log(f"real targets: accuracy {reference['accuracy_real_targets']:.4f}, FID valid vs test "
            f"{reference['fid_valid_vs_test_targets']:.3f}")
    log(f"wrote {out / 'ablation.json'} and {out / 'side_by_side.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
