"""The ``minigan`` command line: ``minigan train | sample | translate | gradcheck | eval | train-classifier``.

Also ``python -m minigan``.

Exit codes
----------
0    success (and ``--help``)
1    an internal error (a bug: the traceback is printed)
2    bad input, one line on stderr starting ``minigan: error:`` -- an unknown choice, a non-positive size,
     missing or corrupt data, a corrupt or missing checkpoint, a label out of range, no GPU for ``--device gpu``
     -- and an operating-system refusal to read or write a file (read-only directory, full disk, permissions)
3    training diverged (a loss became NaN/inf); the last good checkpoint is left as it was
4    training failed the health check with ``--stop-on-collapse`` (D won, D's verdicts extreme, G ignores its
     label, or the samples collapsed); the last checkpoint without a finding is left as it was
130  interrupted by SIGINT (Ctrl-C), 143 by SIGTERM (128 + the signal number, the shell convention): the
     current update was finished, a checkpoint written, and the message says how to resume

Examples
--------
::

    minigan train --model cgan --dataset mnist --preset modern --epochs 5 --out runs/cgan
    minigan train --out runs/cgan --resume --epochs 10      # continue the same run to 10 epochs
    minigan sample runs/cgan --n 20 --label 3 --out threes.png
    minigan train --model pix2pix --dataset fashion-edges --batch 64 --out runs/p2p   # image-to-image translation
    minigan translate runs/p2p edges/ --out translated/      # one PNG per input image
    minigan train-classifier --dataset mnist                 # the fixed classifier behind label accuracy / FID
    minigan eval runs/cgan --classifier --parzen             # the papers' table for one run
"""

from __future__ import annotations

import argparse
import errno
import math
import os
import signal
import sys
from typing import Callable, Sequence

from . import backend, config, data, families, io, paired, runs, threads
from . import train as training

from .eval.classifier import ClassifierError as _ClassifierError

EXIT_OK, EXIT_INTERNAL, EXIT_USAGE, EXIT_DIVERGED, EXIT_COLLAPSED = 0, 1, 2, 3, 4


class UsageError(Exception):
    """Bad command-line input; reported as one line and exit code 2."""


class _Parser(argparse.ArgumentParser):
    """argparse with errors as one ``minigan: error: ...`` line (and no usage dump) so they are easy to read."""

    def error(self, message):
        raise UsageError(f"{message} (see '{self.prog} --help')")


def _int_at_least(minimum: int, what: str):
    """An argparse type: an integer >= ``minimum``, with an error message saying ``what`` it must be."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a {what} integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be a {what} integer, got {text!r}")
        return value

    return parse


_positive_int = _int_at_least(1, "positive")
_non_negative_int = _int_at_least(0, "non-negative")


def _number_where(accept: Callable[[float], bool], what: str) -> Callable[[str], float]:
    """An argparse type: a float for which ``accept`` holds, else "must be <what>, got ..."."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
        if not (math.isfinite(value) and accept(value)):
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
        return value
    return parse


_positive_float = _number_where(lambda v: v > 0, "a positive number")
_decay_factor = _number_where(lambda v: v >= 1, "a number >= 1 (1: a constant rate)")
_unit_interval = _number_where(lambda v: 0 <= v < 1, "a number in [0, 1)")
_non_negative_float = _number_where(lambda v: v >= 0, "a number >= 0 (0: off)")
_truncation = _number_where(lambda v: 0 < v <= 1, "a number in (0, 1]")
_TRUNCATION_HELP = ("draw the noise from the central part of the prior, this fraction of its width: samples more "
                    "typical of their class and less varied (the truncation trick; 1: the whole prior, as training)")


_DATASET_CHOICES = (*data.DATASET_NAMES, *paired.TASKS)


def _dataset_arg(text: str) -> str:
    """A dataset name, or a folder (pix2pix): anything with a path separator, or an existing directory."""
    if text in _DATASET_CHOICES or (text.strip() == text and text and (
            "/" in text or os.sep in text or os.path.isdir(text))):
        return text
    raise argparse.ArgumentTypeError(f"invalid choice: {text!r} (choose from {', '.join(_DATASET_CHOICES)}, or a "
                                     "folder DIR of A|B images for pix2pix)")


def _option_value(text: str):
    """KEY=VALUE -> (key, value): the value as an int, a float, true/false, none, else the string itself;
    comma-separated numbers give a list (``noise=-1.7320508,1.7320508``)."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"must be KEY=VALUE with KEY a model option name, got {text!r}")
    if "," in raw:
        items = [_scalar_option(key, part) for part in raw.split(",")]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in items):
            raise argparse.ArgumentTypeError(f"{key}: a list value must be comma-separated numbers, got {raw!r}")
        return key, items
    return key, _scalar_option(key, raw)


def _scalar_option(key: str, raw: str):
    lowered = raw.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    for kind in (int, float):
        try:
            value = kind(raw)
        except ValueError:
            continue
        if kind is float and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{key} must be finite, got {raw!r}")
        return value
    return raw


class _DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends ``(default: X)`` to an option's help, unless the help already says its default or it is None.

    Options whose default is resolved later (from the preset, or a checkpoint on ``--resume``) have default None
    and state their effective default in their help text; printing ``(default: None)`` as well would mislead.
    """

    def _get_help_string(self, action):
        if action.default is None or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="minigan", description="A from-scratch GAN engine (Conditional GAN, Mirza & Osindero 2014).")
    sub = parser.add_subparsers(dest="command", metavar="{train,sample,translate,gradcheck,eval,train-classifier}")

    t = sub.add_parser(
        "train", help="train a GAN (Algorithm 1 of Goodfellow et al. 2014)",
        description="Train a model; writes metrics.jsonl, samples/epoch_XXX.png, losses.png and checkpoint.npz into "
                    "the run directory. Ctrl-C (or SIGTERM) finishes the current update, writes a checkpoint and "
                    "exits 130 (143); continue with --resume.",
        formatter_class=_DefaultsHelpFormatter)
    # Options that define the run default to None so --resume can tell "given" from "default".
    t.add_argument("--model", choices=families.MODELS, default=None, help="architecture (default: cgan)")
    t.add_argument("--dataset", type=_dataset_arg, default=None, metavar="{" + ",".join(_DATASET_CHOICES) + "} or DIR",
                   help="training data: mnist, fashion-mnist; pix2pix: fashion-edges, mnist-inpaint or a folder DIR "
                        "in the pix2pix layout (DIR/train, val, test of A|B images) (default: mnist; pix2pix: "
                        "fashion-edges)")
    t.add_argument("--option", dest="options", type=_option_value, action="append", default=None,
                   metavar="KEY=VALUE",
                   help="a model option, repeatable, e.g. pix2pix: --option norm=instance --option objective=l1 "
                        "(width, norm, objective, lambda_l1, d_layers, dropout_levels, direction, load_size, "
                        "crop_size, flip; minigan/families/pix2pix.py); cgan: the builder's keywords in "
                        "minigan/families/mlp.py, e.g. d_y_dropout=0.5, noise=-1.73,1.73 (comma-separated numbers "
                        "make a list); dcgan, cdcgan: width, init_std, slope, d_minibatch_std=4 (D sees its batch's "
                        "spread), d_norm=none (no BatchNorm in D; dcgan's default, d_norm=batchnorm for Radford "
                        "et al.'s D), and for cdcgan g_condition=batchnorm (class-conditional BatchNorm in G; "
                        "minigan/families/dcgan.py); kept in the run and refused if changed on --resume")
    t.add_argument("--preset", choices=config.PRESET_NAMES, default=None,
                   help="paper: SGD+momentum with the papers' schedules; modern: Adam 2e-4, beta1 0.5, with the "
                        "cgan's, dcgan's and cdcgan's own rates (--lr-G, --lr-D) (default: modern)")
    length = t.add_mutually_exclusive_group()
    length.add_argument("--epochs", type=_positive_int, default=None,
                        help=f"train until this many epochs are complete (default: {config.DEFAULT_EPOCHS})")
    length.add_argument("--steps", type=_positive_int, default=None,
                        help="train until this many updates (G steps) are done, instead of --epochs")
    t.add_argument("--batch", type=_positive_int, default=None, help="minibatch size (default: 100)")
    t.add_argument("--k", type=_positive_int, default=None, help="D steps per G step (default: 1)")
    t.add_argument("--update", choices=config.UPDATE_RULES, default=None,
                   help="alternating (Algorithm 1) or simultaneous (the original code's one-pass update) "
                        "(default: the preset's: paper simultaneous, modern alternating)")
    t.add_argument("--device", choices=config.DEVICES, default=None, help="cpu (NumPy) or gpu (CuPy) (default: cpu)")
    t.add_argument("--seed", type=_non_negative_int, default=None, help="run seed (default: 0)")
    t.add_argument("--data", metavar="DIR", default=None,
                   help="directory with the four IDX files; default: the cache (~/.cache/minigan), then download")
    t.add_argument("--out", metavar="RUN_DIR", default=None, help="run directory (default: runs/<model>-<dataset>-<preset>)")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    t.add_argument("--log-interval", type=_positive_int, default=None,
                   help="updates between loss read-backs from the device and NaN checks (default: 50)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.add_argument("--threads", type=_positive_int, default=None, metavar="N",
                   help="CPU threads for the matrix products (BLAS) and minigan's block pool; the count changes "
                        "the sums' order, so a run's path depends on it (default: the environment's "
                        "OPENBLAS_NUM_THREADS / OMP_NUM_THREADS, else every core)")
    t.add_argument("--lr-G", dest="lr_G", type=_positive_float, default=None, metavar="LR",
                   help="G's learning rate (default: the preset's; modern cgan 2e-3, dcgan and cdcgan 4e-4)")
    t.add_argument("--lr-D", dest="lr_D", type=_positive_float, default=None, metavar="LR",
                   help="D's learning rate (default: the preset's; modern cgan 4e-3, 4e-4 on fashion-mnist)")
    t.add_argument("--lr-decay", dest="lr_decay", type=_decay_factor, default=None, metavar="FACTOR",
                   help="divide the learning rates by FACTOR after every update (default: the preset's; paper: cgan "
                        "1.00004 as the CGAN paper states, gan 1.000004 as the original code does; modern: cgan "
                        "1.00015, the other models none)")
    t.add_argument("--ema", type=_unit_interval, default=None, metavar="BETA",
                   help="decay of the moving average of G's weights that grids, sample and eval use; 0 turns it off "
                        "(default: the preset's; modern: cgan 0.99, cdcgan 0.999)")
    t.add_argument("--d-update-clip", dest="d_update_clip", type=_non_negative_float, default=None, metavar="C",
                   help="clip each of D's weight tensors' Adam steps to C times what its running second moment vouches "
                        "for (StableAdamW); 0 turns it off (default: the preset's; modern cgan 1 on mnist, off "
                        "elsewhere)")
    t.add_argument("--d-warmup", dest="d_warmup", type=_non_negative_int, default=None, metavar="N",
                   help="raise D's learning rate linearly from G's to its own over the first N updates; 0 turns it "
                        "off (default: the preset's; modern cgan 500 on mnist, off elsewhere)")
    t.add_argument("--matching-aware", dest="matching_aware", choices=config.MATCHING_AWARE_MODES, default=None,
                   help="conditional models: D also scores other real images paired with wrong labels as fakes, in a "
                        "second D step per update (step) or in D's own step (joint); none: off (default: the "
                        "preset's; modern cgan and cdcgan step)")
    t.add_argument("--matching-aware-every", dest="matching_aware_every", type=_positive_int, default=None,
                   metavar="N", help="give D the matching-aware term on one update in N only, a weaker term "
                                     "(default: the preset's, 1: every update)")
    t.add_argument("--matching-aware-epochs", dest="matching_aware_epochs", type=_non_negative_int, default=None,
                   metavar="K", help="give D the matching-aware term in the run's first K epochs only, then none "
                                     "(0: every epoch; default: the preset's, modern cdcgan on mnist 7, "
                                     "otherwise 0)")
    t.add_argument("--stop-on-collapse", action="store_true", default=None,
                   help="stop with exit code 4 when the health monitor finds a failed run (D won, D's verdicts "
                        "extreme, G ignores its label, collapsed samples), keeping the last checkpoint without a "
                        "finding")
    t.add_argument("--select-every", type=_positive_int, default=None, metavar="N",
                   help="every N epochs, score the model by validation Parzen log-likelihood and keep the best "
                        "as RUN_DIR/best.npz (model selection, as in the CGAN paper; ~10 s per evaluation)")

    s = sub.add_parser("sample", help="generate samples from a trained run",
                       description="Generate samples from RUN_DIR/checkpoint.npz into a .npz (arrays x: (N, 784) "
                                   "float32 in [0, 1], y: (N,) int64; -1 for an unconditional model) or a .png grid.",
                       formatter_class=_DefaultsHelpFormatter)
    s.add_argument("run_dir", metavar="RUN_DIR", help="a run directory (or a checkpoint file)")
    s.add_argument("--n", type=_positive_int, default=100, help="number of samples")
    s.add_argument("--label", type=int, default=None, help="class to generate (conditional models); default: cycle 0..9")
    s.add_argument("--out", metavar="FILE", required=True, help="output file, .npz or .png")
    s.add_argument("--seed", type=_non_negative_int, default=0, help="noise seed")
    s.add_argument("--truncation", type=_truncation, default=1.0, metavar="PSI", help=_TRUNCATION_HELP)
    s.add_argument("--device", choices=config.DEVICES, default="cpu", help="cpu or gpu")

    tr = sub.add_parser("translate", help="apply a trained pix2pix G to images",
                        description="Translate images with the generator of a pix2pix run: one PNG per input image, "
                                    "with the input's file name (suffix .png) and size, into --out DIR. A folder "
                                    "stands for its PNG and JPEG files.", formatter_class=_DefaultsHelpFormatter)
    tr.add_argument("run_dir", metavar="RUN_DIR", help="a pix2pix run directory (or a checkpoint file)")
    tr.add_argument("images", metavar="IMAGE", nargs="+", help="input images (PNG; JPEG with Pillow) or folders")
    tr.add_argument("--out", metavar="DIR", required=True, help="output folder (created if missing)")
    tr.add_argument("--paired", action="store_true",
                    help="the files hold A|B pairs (the pix2pix layout): translate the run's input side")
    tr.add_argument("--device", choices=config.DEVICES, default="cpu", help="cpu or gpu")

    g = sub.add_parser("gradcheck", help="finite-difference check of every gradient",
                       description="Check the hand-written gradients of a model's G and D against float64 finite "
                                   "differences.", formatter_class=_DefaultsHelpFormatter)
    g.add_argument("--model", choices=families.MODELS, default="cgan")
    g.add_argument("--batch", type=_positive_int, default=4)
    g.add_argument("--samples", type=_positive_int, default=20, help="entries checked per parameter")
    g.add_argument("--seed", type=_non_negative_int, default=0)
    g.add_argument("--tolerance", type=_positive_float, default=1e-7, help="largest relative error allowed")

    e = sub.add_parser("eval", help="Parzen log-likelihood, label accuracy, classifier FID of a run",
                       description="Evaluate a run: the papers' Parzen-window log-likelihood (--parzen) and the "
                                   "classifier-based scores (--classifier: label accuracy per class, Frechet distance "
                                   "of classifier features, predicted-class histogram), with the real validation set "
                                   "as the ceiling. Neither flag means both. Writes RUN_DIR/eval.json.",
                       formatter_class=_DefaultsHelpFormatter)
    e.add_argument("run_dir", metavar="RUN_DIR", help="a run directory (or a checkpoint file)")
    e.add_argument("--parzen", action="store_true", help="Parzen-window log-likelihood (Goodfellow et al. protocol)")
    e.add_argument("--classifier", action="store_true", help="classifier-based scores")
    e.add_argument("--n-per-class", type=_positive_int, default=1000, help="samples per class (CGAN)")
    e.add_argument("--seed", type=_non_negative_int, default=0, help="noise seed")
    e.add_argument("--truncation", type=_truncation, default=1.0, metavar="PSI", help=_TRUNCATION_HELP)
    e.add_argument("--device", choices=config.DEVICES, default="cpu", help="cpu or gpu")

    c = sub.add_parser("train-classifier", help="train the fixed classifier used by 'minigan eval'",
                       description="Train the fixed MNIST/Fashion-MNIST classifier (an MLP built from minigan's own "
                                   "layers) that 'minigan eval --classifier' uses; the weights are regenerated by this "
                                   "command, never downloaded.", formatter_class=_DefaultsHelpFormatter)
    c.add_argument("--dataset", choices=data.DATASET_NAMES, default="mnist")
    c.add_argument("--epochs", type=_positive_int, default=None, help="epochs (default: the classifier's own, 10)")
    c.add_argument("--seed", type=_non_negative_int, default=0)
    c.add_argument("--out", metavar="FILE", default=None, help="weights file (default: <cache>/classifier-<dataset>.npz)")
    c.add_argument("--data", metavar="DIR", default=None, help="directory of the four IDX files")
    c.add_argument("--device", choices=config.DEVICES, default="cpu", help="cpu or gpu")
    return parser


def _use_device(device: str | None) -> None:
    backend.use("cupy" if device == "gpu" else "numpy")


def _use_threads(n: int | None) -> None:
    if n is None:
        return
    try:
        in_force = threads.set_threads(n)
    except RuntimeError as exc:
        raise UsageError(f"--threads {n}: {exc}") from None
    if in_force != n:
        print(f"minigan: note: --threads {n}: the BLAS library runs {in_force} thread(s), its maximum; the pool "
              f"uses as many", file=sys.stderr, flush=True)


def _train(args) -> int:
    _use_device(args.device)
    _use_threads(args.threads)
    progress = False if args.no_progress else None
    options = dict(args.options) if args.options else None
    if args.resume:
        out = args.out or config.default_out(args.model or "cgan", args.dataset or "mnist", args.preset or "modern")
        trainer = training.Trainer.resume(
            out, model=args.model, dataset=args.dataset, preset=args.preset, batch=args.batch, k=args.k,
            update=args.update, seed=args.seed, epochs=args.epochs, steps=args.steps, device=args.device, data_dir=args.data,
            log_interval=args.log_interval, progress=progress, select_every=args.select_every,
            lr_G=args.lr_G, lr_D=args.lr_D, lr_decay=args.lr_decay, stop_on_collapse=args.stop_on_collapse,
            ema=args.ema, d_update_clip=args.d_update_clip, d_warmup=args.d_warmup,
            matching_aware=args.matching_aware, matching_aware_every=args.matching_aware_every,
            matching_aware_epochs=args.matching_aware_epochs, model_options=options)
    else:
        if args.dataset is None and args.model == "pix2pix":
            args.dataset = paired.TASKS[0]
        given = {"model": args.model, "dataset": args.dataset, "preset": args.preset, "batch": args.batch,
                 "k": args.k, "update": args.update, "seed": args.seed, "epochs": args.epochs, "steps": args.steps,
                 "device": args.device, "data_dir": args.data, "out": args.out, "log_interval": args.log_interval,
                 "select_every": args.select_every, "lr_G": args.lr_G, "lr_D": args.lr_D,
                 "lr_decay": args.lr_decay, "stop_on_collapse": args.stop_on_collapse, "ema": args.ema,
                 "d_update_clip": args.d_update_clip, "d_warmup": args.d_warmup,
                 "matching_aware": args.matching_aware, "matching_aware_every": args.matching_aware_every,
                 "matching_aware_epochs": args.matching_aware_epochs,
                 "model_options": options}
        run_config = config.TrainConfig(**{k: v for k, v in given.items() if v is not None}, progress=progress)
        if run_config.epochs is None and run_config.steps is None:
            run_config.epochs = config.DEFAULT_EPOCHS
        trainer = training.Trainer(run_config)
    result = trainer.run()
    if result.status == "interrupted":
        return 128 + int(result.signal or signal.SIGINT)
    return EXIT_OK


def _sample(args) -> int:
    _use_device(args.device)
    x, y = runs.sample(args.run_dir, args.n, label=args.label, seed=args.seed, truncation=args.truncation)
    runs.write_samples(args.out, x, y)
    what = f"label {args.label}" if args.label is not None else ("labels 0..9 in turn" if (y >= 0).all() else "no labels")
    print(f"wrote {len(x)} samples ({what}) to {args.out}", flush=True)
    return EXIT_OK


def _translate(args) -> int:
    _use_device(args.device)
    written = runs.translate(args.run_dir, args.images, args.out, paired=args.paired)
    print(f"wrote {len(written)} translated image(s) to {args.out}", flush=True)
    return EXIT_OK


def _gradcheck(args) -> int:
    try:
        from .gradcheck import run_cli  # lazy: the gradient checker is only needed for this verb
    except ImportError:
        raise UsageError("this minigan has no gradcheck command (minigan.gradcheck.run_cli is missing)") from None
    return int(run_cli(model=args.model, batch=args.batch, samples=args.samples, seed=args.seed,
                       tolerance=args.tolerance))


def _eval(args) -> int:
    from .eval import metrics  # lazy: evaluation is not needed to train

    _use_device(args.device)
    metrics.eval_cli(args.run_dir, parzen=args.parzen, classifier=args.classifier, n_per_class=args.n_per_class,
                     seed=args.seed, truncation=args.truncation)
    return EXIT_OK


def _train_classifier(args) -> int:
    from .eval import classifier

    _use_device(args.device)
    return int(classifier.train_classifier_cli(args.dataset, out=args.out, epochs=args.epochs, seed=args.seed,
                                               data_dir=args.data))


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split("\n")).strip() or type(exc).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code (see the module docstring)."""
    parser = build_parser()
    try:
        try:
            args = parser.parse_args(argv)
        except SystemExit as exc:  # --help / --version
            return int(exc.code or 0)
        if args.command is None:
            parser.print_help(sys.stderr)
            return EXIT_USAGE
        handler = {"train": _train, "sample": _sample, "translate": _translate, "gradcheck": _gradcheck, "eval": _eval,
                   "train-classifier": _train_classifier}[args.command]
        return handler(args)
    except (UsageError, config.ConfigError, data.DataError, io.CheckpointError, backend.BackendError,
            _ClassifierError) as exc:
        print(f"minigan: error: {_one_line(exc)}", file=sys.stderr, flush=True)
        return EXIT_USAGE
    except OSError as exc:
        # The environment refused a read or write (read-only or full disk, permissions...): not a bug, so one
        # line. Every file minigan writes is replaced atomically, so the last checkpoint is left as it was.
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        print(f"minigan: error: {where}{_one_line(exc.strerror or exc)} (operating-system error "
              f"{errno.errorcode.get(exc.errno, exc.errno) if exc.errno else type(exc).__name__}); files already "
              "written, including the last checkpoint, are left as they were", file=sys.stderr, flush=True)
        return EXIT_USAGE
    except training.TrainingDiverged as exc:
        print(f"minigan: error: {_one_line(exc)}", file=sys.stderr, flush=True)
        return EXIT_DIVERGED
    except training.TrainingCollapsed as exc:
        print(f"minigan: error: {_one_line(exc)}", file=sys.stderr, flush=True)
        return EXIT_COLLAPSED
    except KeyboardInterrupt:
        print("minigan: interrupted (second signal): stopped without writing a checkpoint; the last one written "
              "is intact", file=sys.stderr, flush=True)
        return 128 + signal.SIGINT


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
