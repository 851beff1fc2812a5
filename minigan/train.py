r"""Adversarial training: Algorithm 1 of Goodfellow et al. (2014), with the conditions of Mirza & Osindero (2014).

One *update* (global step) is ``k`` discriminator steps followed by one generator step:

.. code-block:: text

    for k steps:
        take the next real minibatch (x, y) of the epoch's shuffled order
        z ~ prior;  x~ = G(z, y)               # cgan: the real batch's labels also condition the fakes
        D ascends  log D(x, y) + log(1 - D(x~, y))
    z ~ prior;  G descends  -log D(G(z, y), y)  # non-saturating loss; y = the last real batch's labels

The gradients themselves come from :mod:`minigan.objective` (the same code the gradient checker verifies);
this module owns everything around them: optimizers and schedules, data order, random streams, counters,
logging, checkpoints, sample grids, signals and divergence.

Presets
-------
``paper``
    SGD with classical momentum, learning rate 0.1 divided by ``factor`` per update (CGAN 1.00004, GAN
    1.000004) down to a floor of 1e-6, momentum ramped linearly 0.5 -> 0.7 over epochs 0..250 (the CGAN
    paper gives no saturation epoch, so the GAN paper's 250 is used for both). Batch 100.
``modern``
    Adam, lr 2e-4, beta1 0.5, beta2 0.999, same architecture and initialisation, batch 100.

Run directory
-------------
``metrics.jsonl``  one JSON object per finished epoch (epoch, updates, loss_D, loss_G, D_x, D_G_z, lr,
                   momentum, seconds);
``samples/epoch_XXX.png``  a 10x10 grid from fixed noise (cgan: row r is label r, column c one noise vector);
``losses.png``     loss curves;
``checkpoint.npz`` everything needed to continue the run bit-identically (see :meth:`Trainer.state`).

Determinism
-----------
Every random stream is seeded from the one run seed and saved in the checkpoint: the model's dropout
generators, the noise generator, and the data-shuffling generator *as it was at the start of the current
epoch* together with the step index within the epoch. Resuming re-draws the epoch's permutation from that
state and skips the steps already done, so on the CPU a resumed run -- from an epoch boundary or from the
middle of an epoch (SIGINT) -- ends with weights equal bit for bit to an uninterrupted run.

Host synchronisation
--------------------
Per-step losses and D(x)/D(G(z)) means are written as 0-d device arrays into a small device buffer; it is
read back (one transfer) every ``log_interval`` updates and at epoch end. That read-back is also where a
non-finite loss is detected, so the failing update is named exactly, even though it is noticed up to
``log_interval`` updates later.

Fault injection
---------------
``MINIGAN_INJECT_NAN_AT_STEP=N`` multiplies the real minibatch of global update ``N`` (counting from 1) by
NaN, which makes that update's D loss NaN. Used by the tests and the fault-injection suite.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from . import backend, data, health, io, models, objective, optim
from .layers import sigmoid

__all__ = [
    "ConfigError",
    "TrainingCollapsed",
    "TrainingDiverged",
    "TrainConfig",
    "RunResult",
    "Trainer",
    "PRESETS",
    "CHECKPOINT_NAME",
    "load_model",
    "sample",
    "write_samples",
    "default_out",
]

CHECKPOINT_NAME = "checkpoint.npz"
BUFFERS_PREFIX = "buffers."  # checkpoint keys of layers' non-trainable state: buffers.G.<name>, buffers.D.<name>
BEST_NAME = "best.npz"
CHECKPOINT_FORMAT = 2  # 2: the model's resolved options are stored ("model_options"); 1 still loads
READABLE_FORMATS = (1, 2)
INJECT_NAN_ENV = "MINIGAN_INJECT_NAN_AT_STEP"
PRESET_NAMES = ("paper", "modern")
DEVICES = ("cpu", "gpu")
DEFAULT_EPOCHS = 5

#: Hyper-parameters of each preset. ``decay`` is the per-update divisor of the learning rate, by model.
PRESETS: dict[str, dict[str, Any]] = {
    "paper": {
        "optimizer": "sgd",
        "lr": 0.1,
        "decay": {"cgan": 1.00004, "gan": 1.000004},
        "lr_floor": 1e-6,
        "momentum": (0.5, 0.7),
        "momentum_saturate": {"cgan": 250, "gan": 250},
        # The original code (pylearn2's AdversaryCost2 under its SGD, goodfeli/adversarial mnist.yaml) takes D's
        # and G's gradients from one forward pass and updates both at once; see objective.simultaneous_step.
        # Measured with everything else equal (GAN, seed 0): alternating updates let D win outright (D(x) 1.000,
        # D(G(z)) 0.000 by epoch 11, every sample a "1", Parzen -336); the one-pass update keeps the game
        # balanced (D(x) 0.74, D(G(z)) 0.26 at epoch 12) with diverse digits.
        "update": "simultaneous",
    },
    "modern": {
        "optimizer": "adam",
        "lr": 2e-4,
        "beta1": 0.5,
        "beta2": 0.999,
        # Zero-mean, unit-variance noise (the GAN paper's U(-sqrt3, sqrt3)) for the CGAN too. With the CGAN
        # paper's U(0, 1), G's output barely depends on z at the papers' initial weights (measured: per-pixel
        # std across z of 0.001 vs 0.18 for real digits) and Adam collapses it to one image per run; with
        # zero-mean noise the samples diversify within the first epoch (0.06 after 600 updates).
        # CGAN, measured over 2500 updates (= the 5-epoch run) with a 98.5% MNIST classifier on the samples:
        # - G at 2e-3 (D was then 4e-4): at 2e-4 for both D wins (D(G(z)) -> 0.02) and G collapses; with the
        #   faster G the game stays balanced (D(x) ~0.8, D(G(z)) ~0.15-0.2) and samples are diverse.
        # - G dropout off: with it, training-mode fakes differ from the eval-mode samples.
        # - G ignored y (label accuracy 0.09, chance 0.10): its label units (one-hot -> 1000 ReLU) all died
        #   (W[y] + b < 0 for every class) before D read labels. Two changes fix it: G's label bias starts at
        #   +0.5 (g_y_bias) so the units live long enough, and D reads labels from the first update: its label
        #   branch starts at embedding scale (d_y_irange U(±sqrt3): a layer on one-hot input is a lookup table)
        #   and it gets the matching-aware term (real images with wrong labels as negatives).
        #   Together: label accuracy 0.40 after 500 updates, 0.93 (worst class 0.81) after 1000.
        "model_options": {"cgan": {"noise": (-3 ** 0.5, 3 ** 0.5), "g_dropout": 0.0, "g_y_bias": 0.5,
                                   "d_y_irange": 3 ** 0.5}},
        # True: the matching-aware term is a second D step per update, on other real images with wrong labels;
        # "joint": those rows join D's own step (one D step per update, GAN-CLS's weighting). With this preset's
        # networks, a joint step on the D step's *own* images with wrong labels collapsed G in epoch 1 on seeds
        # 0, 3, 5 and 11 (one thread); the joint step on other images is measured in docs/RESULTS.md.
        "matching_aware": {"cgan": True},
        "lr_G": {"cgan": 2e-3},
        # - D at 4e-3 (was 4e-4; issue 11): with the slower D, G's label units died before D read the labels on
        #   most seeds (seed 0: G ignored y from epoch 1, label accuracy 9.7% after 5 epochs, D won at epoch 5).
        #   A D ten times faster reads labels within the first epoch, while G's units are still alive, and its
        #   noisier steps do not win the game (D(G(z)) 0.3-0.5). Seed benchmark: docs/RESULTS.md.
        "lr_D": {"cgan": 4e-3},
        "update": "alternating",
    },
}
PRESET_NAMES = tuple(PRESETS)
UPDATE_RULES = ("alternating", "simultaneous")


class ConfigError(ValueError):
    """A run cannot start as asked (bad option, conflicting resume, missing checkpoint...)."""


class TrainingCollapsed(RuntimeError):
    """The health monitor found a failed run and ``stop_on_collapse`` is set; ``findings`` say what failed."""

    def __init__(self, message: str, epoch: int, findings: list[dict]):
        super().__init__(message)
        self.epoch, self.findings = epoch, findings


class TrainingDiverged(RuntimeError):
    """A loss became NaN or infinite; ``update`` is the global update (from 1) where it first did."""

    def __init__(self, message: str, update: int):
        super().__init__(message)
        self.update = update


def default_out(model: str, dataset: str, preset: str) -> str:
    """The default run directory ``runs/<model>-<dataset>-<preset>``."""
    return os.path.join("runs", f"{model}-{dataset}-{preset}")


def _positive(name: str, value: Any, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")


@dataclass
class TrainConfig:
    """Everything that defines a run. Stored in every checkpoint.

    Attributes
    ----------
    model : {"cgan", "gan"}
    dataset : {"mnist", "fashion-mnist"}
    preset : {"paper", "modern"}
    epochs : int or None
        Train until this many epochs are complete (a total, not "more"). Default 5 when ``steps`` is None.
    steps : int or None
        Train until this many updates (global steps) are done; overrides ``epochs``.
    batch : int
        Real examples per D step (and fakes per D and G step).
    k : int
        D steps per G step (Algorithm 1's k).
    device : {"cpu", "gpu"} or None
        Backend to switch to; None keeps the active one (tests use this for the strict backend).
    seed : int
        The one run seed; model init, dropout, noise, data order and grid noise are all derived from it.
    data_dir : str or None
        Directory of IDX files (``--data``); None uses the cache / download sources of :mod:`minigan.data`.
    out : str or None
        Run directory; None gives ``runs/<model>-<dataset>-<preset>``.
    log_interval : int
        Updates between device-to-host read-backs of the running losses (and NaN checks).
    progress : bool or None
        Progress bar: None = automatic (tqdm, else a built-in one), False = off.
    g_loss : {"non_saturating", "minimax"}
    update : {"alternating", "simultaneous"} or None
        ``alternating``: Algorithm 1 (k D steps, then a G step on fresh noise through the updated D);
        ``simultaneous``: the original code's one-pass update (:func:`minigan.objective.simultaneous_step`,
        needs ``k`` = 1). None: the preset's choice.
    model_options : dict
        Extra keyword arguments for :func:`minigan.models.build` (e.g. ``d_irange``).
    select_every : int or None
        Model selection as in the CGAN paper: every this many epochs, score G by the Parzen-window
        log-likelihood of the validation images (σ chosen on the first half of them, at most 1,000, the rest
        scored; 10,000 samples, 1,000 per class for the CGAN) and keep the best model as ``best.npz``.
    lr_G, lr_D : float or None
        Learning rates of G's and D's optimizers in place of the preset's (the initial rate under ``paper``'s
        decay).
    stop_on_collapse : bool
        End the run when the health monitor (:mod:`minigan.health`) reports a failure, without saving the
        failed epoch's state: the checkpoint on disk is the last one without a finding.
    """

    model: str = "cgan"
    dataset: str = "mnist"
    preset: str = "modern"
    epochs: int | None = None
    steps: int | None = None
    batch: int = 100
    k: int = 1
    device: str | None = None
    seed: int = 0
    data_dir: str | None = None
    out: str | None = None
    log_interval: int = 50
    progress: bool | None = None
    g_loss: str = "non_saturating"
    update: str | None = None
    model_options: dict = field(default_factory=dict)
    select_every: int | None = None
    lr_G: float | None = None
    lr_D: float | None = None
    stop_on_collapse: bool = False

    #: Fields that may differ when a run is resumed (they do not change what is computed).
    RESUMABLE_OVERRIDES = ("epochs", "steps", "device", "data_dir", "log_interval", "progress", "select_every",
                           "stop_on_collapse")

    def __post_init__(self):
        self.validate()

    def validate(self) -> "TrainConfig":
        if self.model not in models.MODELS:
            raise ConfigError(f"unknown model {self.model!r}; choose one of {', '.join(models.MODELS)}")
        if self.dataset not in data.DATASET_NAMES:
            raise ConfigError(f"unknown dataset {self.dataset!r}; choose one of {', '.join(data.DATASET_NAMES)}")
        if self.preset not in PRESETS:
            raise ConfigError(f"unknown preset {self.preset!r}; choose one of {', '.join(PRESETS)}")
        if self.device is not None and self.device not in DEVICES:
            raise ConfigError(f"unknown device {self.device!r}; choose one of {', '.join(DEVICES)}")
        for name in ("batch", "k", "log_interval"):
            _positive(name, getattr(self, name))
        _positive("epochs", self.epochs, allow_none=True)
        _positive("steps", self.steps, allow_none=True)
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise ConfigError(f"seed must be a non-negative integer, got {self.seed!r}")
        if self.g_loss not in ("non_saturating", "minimax"):
            raise ConfigError(f"g_loss must be 'non_saturating' or 'minimax', got {self.g_loss!r}")
        if self.update is not None and self.update not in UPDATE_RULES:
            raise ConfigError(f"unknown update rule {self.update!r}; choose one of {', '.join(UPDATE_RULES)}")
        for name in ("lr_G", "lr_D"):
            value = getattr(self, name)
            if value is not None and not (_is_number(value) and math.isfinite(value) and value > 0):
                raise ConfigError(f"{name} must be a positive number, got {value!r}")
        if self.update_rule == "simultaneous" and self.k != 1:
            raise ConfigError(f"the simultaneous update takes one D step per G step; k {self.k} needs "
                              "--update alternating")
        return self

    @property
    def update_rule(self) -> str:
        """The update actually used: ``update``, or the preset's."""
        return self.update or PRESETS[self.preset]["update"]

    @property
    def run_dir(self) -> Path:
        return Path(self.out if self.out is not None else default_out(self.model, self.dataset, self.preset))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ConfigError(f"checkpoint config has unknown fields {sorted(unknown)}")
        return cls(**d)


@dataclass
class RunResult:
    """How :meth:`Trainer.run` ended: ``status`` is "done" or "interrupted" (then ``signal`` is set)."""

    status: str
    epoch: int
    updates: int
    seconds: float
    signal: int | None = None
    last_record: dict | None = None


# --------------------------------------------------------------------------------------------------
# Progress display
# --------------------------------------------------------------------------------------------------


class _Progress:
    """A progress bar with an ETA: tqdm when importable, else a small built-in one on stderr.

    The built-in bar redraws one line with ``\\r`` when stderr is a terminal; otherwise (CI, pipes, no TTY)
    it prints a plain line at most every ``interval`` seconds so logs stay readable.
    """

    def __init__(self, total: int, initial: int, enabled: bool | None, interval: float = 30.0):
        self.total, self.n, self.start_n = total, initial, initial
        self.enabled = enabled is not False
        self.interval = interval
        self.t0 = self.last = time.perf_counter()
        self.postfix = ""
        self._tqdm = None
        self.tty = self.enabled and hasattr(sys.stderr, "isatty") and sys.stderr.isatty()
        if self.enabled:
            try:
                from tqdm import tqdm  # optional: nicer bar when installed
            except ImportError:
                tqdm = None
            if tqdm is not None:
                self._tqdm = tqdm(total=total, initial=initial, unit="upd", file=sys.stderr, dynamic_ncols=True,
                                  leave=False, mininterval=0.5)

    def update(self, postfix: str | None = None) -> None:
        self.n += 1
        if postfix is not None:
            self.postfix = postfix
        if not self.enabled:
            return
        if self._tqdm is not None:
            self._tqdm.update(1)
            if postfix is not None:
                self._tqdm.set_postfix_str(postfix, refresh=False)
            return
        now = time.perf_counter()
        if self.tty and now - self.last >= 0.2:
            self.last = now
            sys.stderr.write("\r\x1b[K" + self._line(now))
            sys.stderr.flush()
        elif not self.tty and now - self.last >= self.interval:
            self.last = now
            sys.stderr.write(self._line(now) + "\n")
            sys.stderr.flush()

    def _line(self, now: float) -> str:
        done = self.n - self.start_n
        rate = done / max(now - self.t0, 1e-9)
        eta = (self.total - self.n) / rate if rate > 0 else float("inf")
        pct = 100.0 * self.n / max(self.total, 1)
        eta_s = _hms(eta) if math.isfinite(eta) else "?"
        return f"{self.n}/{self.total} updates ({pct:.0f}%) {rate:.1f} upd/s ETA {eta_s} {self.postfix}".rstrip()

    def clear(self) -> None:
        """Remove the bar before a log line is printed (the bar is redrawn by the next update)."""
        if self._tqdm is not None:
            self._tqdm.clear()
        elif self.enabled and self.tty:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()

    def close(self) -> None:
        if self._tqdm is not None:
            self._tqdm.close()
            self._tqdm = None
        else:
            self.clear()


def _hms(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


def _print(msg: str) -> None:
    print(msg, flush=True)


# --------------------------------------------------------------------------------------------------
# The trainer
# --------------------------------------------------------------------------------------------------


def _derived_seeds(seed: int) -> dict[str, int]:
    """Independent seeds for each random stream, all from the one run seed (SeedSequence spawning)."""
    names = ("model", "noise", "data", "grid")
    children = np.random.SeedSequence(int(seed)).spawn(len(names))
    return {n: int(c.generate_state(1, np.uint64)[0] >> np.uint64(1)) for n, c in zip(names, children)}


def checkpoint_model_options(meta: dict, config: "TrainConfig") -> dict:
    """The keyword arguments that rebuild a checkpoint's model.

    Format 2 stores them, so a run keeps its network even if a later minigan changes what its preset builds;
    a format-1 checkpoint (written before) gets its preset's current options, which it was trained with
    unless a preset's architecture changed since.
    """
    if meta.get("format", 1) >= 2:
        options = meta.get("model_options")
        if not isinstance(options, dict):
            raise io.CheckpointError("the checkpoint's model_options are missing or not an object")
        # The config's own model options were merged into them when the run began: they must agree.
        given = config.model_options
        if not isinstance(given, dict) or any(k not in options or options[k] != v for k, v in given.items()):
            raise io.CheckpointError(f"the checkpoint's config.model_options {str(given)[:200]} disagree with the "
                                     f"model options it was built with {str(options)[:200]}")
        return dict(options)
    return model_options(config)


def model_options(config: TrainConfig) -> dict:
    """Keyword arguments for :func:`minigan.models.build`: the preset's, updated by ``config.model_options``."""
    return {**PRESETS[config.preset].get("model_options", {}).get(config.model, {}), **config.model_options}


def learning_rates(config: TrainConfig) -> tuple[float, float]:
    """(lr_G, lr_D): the config's, else the preset's per-model rates (``"lr_G": {"cgan": ...}``), else ``lr``."""
    preset = PRESETS[config.preset]
    lr_G = preset.get("lr_G", {}).get(config.model, preset["lr"]) if config.lr_G is None else config.lr_G
    lr_D = preset.get("lr_D", {}).get(config.model, preset["lr"]) if config.lr_D is None else config.lr_D
    return float(lr_G), float(lr_D)


def _make_optimizers(config: TrainConfig, model: models.GANModel):
    preset = PRESETS[config.preset]
    lr_G, lr_D = learning_rates(config)
    if preset["optimizer"] == "sgd":
        return optim.SGD(model.G, lr=lr_G, momentum=preset["momentum"][0]), \
            optim.SGD(model.D, lr=lr_D, momentum=preset["momentum"][0])
    kw = dict(beta1=preset["beta1"], beta2=preset["beta2"])
    return optim.Adam(model.G, lr=lr_G, **kw), optim.Adam(model.D, lr=lr_D, **kw)


class Trainer:
    """Owns a run: model, optimizers, schedules, random streams, counters, and the run directory.

    Parameters
    ----------
    config : TrainConfig
    dataset : minigan.data.Dataset, optional
        Use this instead of loading ``config.dataset`` (tests pass small synthetic datasets).
    log : callable, optional
        Receives each human-readable line (default: print to stdout, flushed).
    checkpoint : (arrays, meta), optional
        A loaded checkpoint to continue from (see :meth:`resume`).

    Attributes
    ----------
    epoch : int
        Completed epochs.
    step_in_epoch : int
        Updates done in the current epoch.
    updates : int
        Global updates (G steps) done; the learning-rate decay counts these.
    """

    def __init__(self, config: TrainConfig, dataset: data.Dataset | None = None, log: Callable[[str], None] = _print,
                 checkpoint: tuple[dict, dict] | None = None):
        config.validate()
        self.config = config
        self.log = log or (lambda msg: None)
        if config.device is not None:
            backend.use("cupy" if config.device == "gpu" else "numpy")
        if checkpoint is None and (config.run_dir / CHECKPOINT_NAME).exists():
            raise ConfigError(f"{config.run_dir} already holds a checkpoint; pass --resume to continue that run, "
                              "or choose another --out")
        self.dataset = dataset if dataset is not None else data.load_dataset(
            config.dataset, data_dir=config.data_dir, log=self.log)
        train = self.dataset.train
        self.n_train = len(train)
        batches = self.n_train // config.batch
        self.steps_per_epoch = batches // config.k
        if self.steps_per_epoch < 1:
            raise ConfigError(f"batch {config.batch} x k {config.k} needs at least {config.batch * config.k} "
                              f"training examples; the dataset has {self.n_train}")

        seeds = _derived_seeds(config.seed)
        try:
            options = (model_options(config) if checkpoint is None
                       else checkpoint_model_options(checkpoint[1], config))
            self.model = models.build(config.model, seeds["model"], **options)  # on the active backend
            self.model_options = options
        except (TypeError, ValueError) as exc:  # options the builder does not take (e.g. a tampered checkpoint)
            if checkpoint is not None:
                raise io.CheckpointError(f"{config.run_dir / CHECKPOINT_NAME}: its model options "
                                         f"{str(checkpoint[1].get('model_options'))[:200]} do not build a "
                                         f"{config.model}: {exc}") from None
            raise ConfigError(f"model options {config.model_options!r} are not valid for {config.model}: {exc}") from None
        # The papers' G starts from the data's pixel marginals (a resumed run overwrites this from its checkpoint).
        models.init_output_bias_from_data(self.model, train.x)
        self.opt_G, self.opt_D = _make_optimizers(config, self.model)
        self._matching_aware = PRESETS[config.preset].get("matching_aware", {}).get(config.model, False)
        self._labels_host = np.asarray(train.y)
        self._best = None  # {"epoch", "valid_ll", "sigma"} of the best model so far (model selection)
        preset = PRESETS[config.preset]
        if preset["optimizer"] == "sgd":
            decay, floor = preset["decay"][config.model], preset["lr_floor"]
            self.lr_schedules = tuple(optim.ExponentialDecay(lr, decay, floor) for lr in learning_rates(config))
            self.momentum_schedule = optim.LinearRamp(*preset["momentum"], preset["momentum_saturate"][config.model])
        else:
            self.lr_schedules = self.momentum_schedule = None
        self.noise_rng = backend.Rng(seeds["noise"])
        self.data_rng = backend.Rng(seeds["data"])  # .host is the numpy Generator that shuffles

        # The training set lives on the device once; per step only a slice of the permutation is indexed.
        self.x_train = backend.to_device(np.ascontiguousarray(train.x, dtype=self.model.dtype))
        self.y_train = (backend.to_device(data.one_hot(train.y, self.model.n_classes, self.model.dtype))
                        if self.model.conditional else None)

        # Fixed grid noise: cgan shares column c's noise across the 10 rows (row r = label r), so the grid
        # shows the condition changing with the noise held; gan uses 100 independent draws.
        grid_rng = backend.Rng(seeds["grid"])
        if self.model.conditional:
            cols = backend.to_host(self.model.sample_noise(10, grid_rng, like=np.zeros(1)))
            self.grid_z = np.tile(cols, (10, 1))
            self.grid_labels = np.repeat(np.arange(10, dtype=np.int64), 10)
        else:
            self.grid_z = backend.to_host(self.model.sample_noise(100, grid_rng, like=np.zeros(1)))
            self.grid_labels = None

        self.epoch = 0
        self.step_in_epoch = 0
        self.updates = 0
        self.train_seconds = 0.0
        self._perm = None  # device permutation of the current epoch, None between epochs
        self._epoch_start_state = self.data_rng.get_state()
        self._epoch_sums = self._zero_sums()
        self._buffer = None
        self._buffer_rows = 0
        self._buffer_first_update = 1
        self._stop_signal: int | None = None
        self._inject_nan_at = _env_int(INJECT_NAN_ENV)
        self.monitor = health.HealthMonitor(self.model.conditional, health.real_diversity(
            train.x, train.y if self.model.conditional else None))
        self._last_record: dict | None = None
        if checkpoint is not None:
            self.load_state(*checkpoint)

    # -- construction from a run directory ---------------------------------------------------------
    @classmethod
    def resume(cls, run_dir: str | os.PathLike, dataset: data.Dataset | str | None = None,
               log: Callable[[str], None] = _print, **overrides) -> "Trainer":
        """Continue the run in ``run_dir`` from its checkpoint.

        ``dataset`` is either the data to continue on (a :class:`~minigan.data.Dataset`; tests pass small
        synthetic ones) or a dataset *name* such as ``"mnist"``, which is checked like the options below.
        ``overrides`` may change only what does not alter the computation (``epochs``, ``steps``, ``device``,
        ``data_dir``, ``log_interval``, ``progress``, ``select_every``); any other given value must equal the
        checkpoint's (``update`` is compared with the rule the run used, its preset's when it was not given),
        else :class:`ConfigError` (continuing with, say, another preset would not be the same run).
        """
        if isinstance(dataset, str):  # the command line passes --dataset's name here
            overrides["dataset"] = dataset
            dataset = None
        path = Path(run_dir) / CHECKPOINT_NAME
        if not path.exists():
            raise ConfigError(f"cannot resume: no checkpoint at {path} (train without --resume first)")
        arrays, meta = io.load_checkpoint(path)
        if meta.get("format") not in READABLE_FORMATS or "config" not in meta:
            raise io.CheckpointError(f"{path} is not a minigan training checkpoint (format {meta.get('format')!r})")
        if not isinstance(meta.get("config"), dict):
            raise io.CheckpointError(f"{path}: the checkpoint's config is not an object")
        config = TrainConfig.from_dict(dict(meta["config"], out=str(run_dir)))
        for key, value in overrides.items():
            if value is None:
                continue
            if key in TrainConfig.RESUMABLE_OVERRIDES:
                setattr(config, key, value)
                continue
            trained_with = config.update_rule if key == "update" else getattr(config, key)
            if trained_with != value:
                raise ConfigError(f"cannot resume with {key}={value!r}: the run in {run_dir} was trained with "
                                  f"{key}={trained_with!r} (drop the option, or start a new --out)")
        if overrides.get("epochs") is not None and overrides.get("steps") is None:
            config.steps = None
        if overrides.get("steps") is not None and overrides.get("epochs") is None:
            config.epochs = None
        config.validate()
        return cls(config, dataset=dataset, log=log, checkpoint=(arrays, meta))

    # -- state ------------------------------------------------------------------------------------------
    def state(self) -> tuple[dict[str, np.ndarray], dict]:
        """(arrays, meta) for a checkpoint: host arrays and JSON metadata.

        Arrays: ``G.<param>``, ``D.<param>``, ``buffers.G.<buffer>``, ``buffers.D.<buffer>`` (non-trainable state
        such as BatchNorm's running statistics; none for the MLP models), ``optim.G.<slot>.<param>``,
        ``optim.D.<slot>.<param>``, ``grid.z``. Meta: the config, the counters, optimizer scalars, every generator state (noise; data at
        the start of the current epoch; each dropout layer's), the running sums of the current epoch.
        """
        arrays: dict[str, np.ndarray] = {}
        for net, layer in (("G", self.model.G), ("D", self.model.D)):
            for name, p in layer.params.items():
                arrays[f"{net}.{name}"] = backend.to_host(p)
            for name, b in layer.buffers.items():
                arrays[f"{BUFFERS_PREFIX}{net}.{name}"] = backend.to_host(b)
        optim_meta = {}
        for net, opt in (("G", self.opt_G), ("D", self.opt_D)):
            opt_arrays, scalars = opt.state_dict()
            for key, a in opt_arrays.items():
                arrays[f"optim.{net}.{key}"] = a
            optim_meta[net] = scalars
        arrays["grid.z"] = self.grid_z
        rngs = {"noise": self.noise_rng.get_state(),
                "data_epoch_start": self._epoch_start_state if self._perm is not None else self.data_rng.get_state()}
        for net, layer in (("G", self.model.G), ("D", self.model.D)):
            for name, rng in layer.rngs().items():
                rngs[f"{net}.{name}"] = rng.get_state()
        meta = {
            "format": CHECKPOINT_FORMAT,
            "model_options": self.model_options,
            "minigan": _version(),
            "config": self.config.to_dict(),
            "model": self.config.model,
            "n_train": self.n_train,
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "updates": self.updates,
            "steps_per_epoch": self.steps_per_epoch,
            "train_seconds": self.train_seconds,
            "optim": optim_meta,
            "rngs": rngs,
            "epoch_sums": self._epoch_sums,
            "last_record": self._last_record,
            "best": self._best,
        }
        return arrays, meta

    def load_state(self, arrays: dict[str, np.ndarray], meta: dict) -> None:
        """Restore everything :meth:`state` saved (raises CheckpointError on a mismatch)."""
        where = self.config.run_dir / CHECKPOINT_NAME
        try:
            if meta["n_train"] != self.n_train:
                raise ConfigError(f"the checkpoint was trained on {meta['n_train']} examples, this dataset has "
                                  f"{self.n_train}: resuming would not continue the same run")
            for net, layer in (("G", self.model.G), ("D", self.model.D)):
                params = layer.params
                stored = {k[len(net) + 1:] for k in arrays if k.startswith(net + ".")}
                if stored != set(params):
                    raise io.CheckpointError(f"{where}: parameters of {net} do not match the {self.config.model} "
                                             f"model (missing {sorted(set(params) - stored)[:3]}, unexpected "
                                             f"{sorted(stored - set(params))[:3]})")
                for name, p in params.items():
                    a = _checked_array(where, f"{net}.{name}", arrays[f"{net}.{name}"], p)
                    p[...] = backend.to_device(a)
                _restore_buffers(where, arrays, net, layer, backend.to_device)
            for net, opt in (("G", self.opt_G), ("D", self.opt_D)):
                prefix = f"optim.{net}."
                params = opt.model.params
                slots = {k[len(prefix):]: a for k, a in arrays.items() if k.startswith(prefix)}
                for key, a in slots.items():
                    name = key.partition(".")[2]
                    if name in params:
                        _checked_array(where, prefix + key, a, params[name])
                # Scalars are set as attributes by the optimizer: admit only the ones it saves itself, as numbers.
                scalars, own = meta["optim"][net], opt.state_dict()[1]
                if not isinstance(scalars, dict):
                    raise io.CheckpointError(f"{where}: optimizer state of {net} is not an object")
                for key, value in scalars.items():
                    if key not in own:
                        raise io.CheckpointError(f"{where}: unknown optimizer field optim.{net}.{key}")
                    ok = (value == own[key] if key == "type" else _is_int(value) and value >= 0 if key == "steps"
                          else _is_number(value) and math.isfinite(value))
                    if not ok:
                        raise io.CheckpointError(f"{where}: optimizer field optim.{net}.{key} has invalid value "
                                                 f"{value!r}")
                opt.load_state_dict(slots, scalars)
            self.grid_z = _checked_array(where, "grid.z", arrays["grid.z"], self.grid_z)
            rngs = meta["rngs"]
            self.noise_rng.set_state(rngs["noise"])
            self.data_rng.set_state(rngs["data_epoch_start"])
            self._epoch_start_state = rngs["data_epoch_start"]
            for net, layer in (("G", self.model.G), ("D", self.model.D)):
                for name, rng in layer.rngs().items():
                    rng.set_state(rngs[f"{net}.{name}"])
            epoch, step, updates = meta["epoch"], meta["step_in_epoch"], meta["updates"]
            # The counters must describe a reachable state: a tampered step index would make the loop spin.
            if not (all(_is_int(v) and v >= 0 for v in (epoch, step, updates)) and step < self.steps_per_epoch
                    and updates == epoch * self.steps_per_epoch + step):
                raise io.CheckpointError(f"{where}: inconsistent counters (epoch {epoch!r}, step_in_epoch {step!r}, "
                                         f"updates {updates!r} with {self.steps_per_epoch} updates per epoch)")
            self.epoch, self.step_in_epoch, self.updates = epoch, step, updates
            self.train_seconds = float(meta["train_seconds"])
            sums = meta["epoch_sums"]
            if not isinstance(sums, dict) or set(sums) != set(self._zero_sums()) or not all(
                    _is_number(v) for v in sums.values()):
                raise io.CheckpointError(f"{where}: epoch_sums is not a valid running-sum record")
            self._epoch_sums = dict(sums)
            self._last_record = meta.get("last_record")
            best = meta.get("best")
            if best is not None and not (isinstance(best, dict) and _is_int(best.get("epoch"))
                                         and _is_number(best.get("valid_ll"))):
                raise io.CheckpointError(f"{where}: the best-model record is not valid: {best!r:.200}")
            self._best = best
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, ConfigError):
                raise
            raise io.CheckpointError(f"{where}: incomplete or inconsistent training state ({type(exc).__name__}: "
                                     f"{exc})") from exc
        self._perm = None  # the epoch's permutation is re-drawn from data_epoch_start by _begin_epoch

    # -- the loop -------------------------------------------------------------------------------------
    def _target_updates(self) -> int:
        if self.config.steps is not None:
            return self.config.steps
        return (self.config.epochs or DEFAULT_EPOCHS) * self.steps_per_epoch

    def request_stop(self, signum: int = signal.SIGINT) -> None:
        """Ask the loop to stop after the current update and write a checkpoint (what the signal handler does)."""
        self._stop_signal = signum

    def _handler(self, signum, frame):
        if self._stop_signal is not None:
            # Second signal: the user insists. The last checkpoint on disk is complete (saves are atomic).
            raise KeyboardInterrupt
        self._stop_signal = signum

    def run(self, handle_signals: bool = True, on_step: Callable[["Trainer"], None] | None = None) -> RunResult:
        """Train until the configured number of epochs or updates is done, or a signal arrives.

        Parameters
        ----------
        handle_signals : bool
            Install SIGINT/SIGTERM handlers for the duration of the run (main thread only): the first signal
            finishes the current update, writes a checkpoint and returns ``status="interrupted"``; a second
            one raises KeyboardInterrupt at once. The previous handlers are restored on return.
        on_step : callable, optional
            Called with the trainer after every update (tests use it to simulate a signal mid-epoch).

        Raises
        ------
        TrainingDiverged
            A loss became non-finite; no checkpoint is written, so the last good one stays on disk.
        """
        previous = {}
        if handle_signals and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, self._handler)
        run_dir = self.config.run_dir
        (run_dir / "samples").mkdir(parents=True, exist_ok=True)
        self._remove_stale_temporaries()
        self._prepare_metrics_file()
        target = self._target_updates()
        self.log(self._describe(target))
        progress = _Progress(target, self.updates, self.config.progress)
        session_t0 = time.perf_counter()
        session_updates0 = self.updates
        try:
            while self.updates < target and self._stop_signal is None:
                if self._perm is None:
                    self._begin_epoch()
                epoch_t0 = time.perf_counter()
                while self.step_in_epoch < self.steps_per_epoch and self.updates < target:
                    self._train_step()
                    progress.update()
                    if on_step is not None:
                        on_step(self)
                    if self._buffer_rows == self.config.log_interval:
                        self._flush()
                        progress.postfix = self._postfix()
                    if self._stop_signal is not None:
                        break
                self._epoch_sums["seconds"] += time.perf_counter() - epoch_t0
                self.train_seconds += time.perf_counter() - epoch_t0
                if self.step_in_epoch == self.steps_per_epoch:
                    progress.clear()
                    self._end_epoch()
            progress.close()
            self._flush()
            if self._stop_signal is not None or self.step_in_epoch != 0:
                # Stopped inside an epoch (signal, or --steps): save the exact mid-epoch state.
                self._save_checkpoint()
            if self._stop_signal is not None:
                name = signal.Signals(self._stop_signal).name
                self.log(f"{name} received: stopped after update {self.updates} (epoch {self.epoch + 1}, step "
                         f"{self.step_in_epoch}/{self.steps_per_epoch}); checkpoint written to "
                         f"{run_dir / CHECKPOINT_NAME}. Resume with: minigan train --out {run_dir} --resume")
                status = "interrupted"
            else:
                status = "done"
                if self.step_in_epoch != 0:
                    self._write_grid(run_dir / "samples" / f"step_{self.updates:06d}.png")
                    s = self._epoch_sums
                    if s["count"]:
                        self.log(f"stopped inside epoch {self.epoch + 1} at update {self.updates}: "
                                 + self._format_means(self._means(s)))
            session_seconds = time.perf_counter() - session_t0
            done = self.updates - session_updates0
            self.log(f"{done} updates in {session_seconds:.1f} s this session "
                     f"({session_seconds / max(done, 1) * 1000:.1f} ms/update); {self.epoch} epochs, "
                     f"{self.updates} updates, {self.train_seconds:.1f} s of training in total")
            return RunResult(status, self.epoch, self.updates, self.train_seconds, self._stop_signal,
                             self._last_record)
        finally:
            progress.close()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _describe(self, target: int) -> str:
        c = self.config
        what = f"{c.steps} updates" if c.steps is not None else f"{c.epochs or DEFAULT_EPOCHS} epochs"
        start = "resuming at" if self.updates else "starting at"
        return (f"minigan train: {c.model} on {c.dataset} ({self.n_train} examples), preset {c.preset}, batch "
                f"{c.batch}, k {c.k}, {c.update_rule} updates, {self.steps_per_epoch} updates/epoch, "
                f"backend {backend.name()}, seed {c.seed}; "
                f"{start} update {self.updates} (epoch {self.epoch + 1}, step {self.step_in_epoch}); "
                f"target {what} ({target} updates); run dir {c.run_dir}")

    def _begin_epoch(self) -> None:
        """Draw the epoch's permutation from the data generator, remembering the state it was drawn from."""
        self._epoch_start_state = self.data_rng.get_state()
        self._perm = backend.to_device(self.data_rng.permutation(self.n_train))
        if self.step_in_epoch == 0:
            self._epoch_sums = self._zero_sums()

    def _apply_schedules(self) -> None:
        if self.lr_schedules is None:
            return
        momentum = self.momentum_schedule(self.epoch)
        for opt, schedule in zip((self.opt_G, self.opt_D), self.lr_schedules):
            opt.lr, opt.momentum = schedule(self.updates), momentum

    def _train_step(self) -> None:
        """One update (one G step), by the run's update rule."""
        if self.config.update_rule == "simultaneous":
            self._simultaneous_step()
        else:
            self._alternating_step()

    def _real_batch(self, index: int):
        """The ``index``-th real batch of this epoch (and its one-hot labels), on the device."""
        B = self.config.batch
        idx = self._perm[index * B:(index + 1) * B]
        x_real = self.x_train[idx]
        if self._inject_nan_at == self.updates + 1:
            x_real = x_real * float("nan")
        return x_real, (self.y_train[idx] if self.model.conditional else None)

    def _simultaneous_step(self) -> None:
        """One update of the original code: D and G stepped at once from one forward pass."""
        c, m = self.config, self.model
        xp = backend.get_array_module(self.x_train)
        B = c.batch
        self._apply_schedules()
        x_real, y_real = self._real_batch(self.step_in_epoch)
        z = m.sample_noise(B, self.noise_rng, like=x_real)
        loss_D, loss_G, logits, _ = objective.simultaneous_step(m.G, m.D, x_real, z, y_real, kind=c.g_loss)
        self.opt_D.step()
        self.opt_G.step()
        if self._matching_aware:
            self._matching_aware_step(B)
        probs = sigmoid(logits)
        self._record(xp, loss_D, loss_G, probs[:B].mean(), probs[B:].mean())
        self.step_in_epoch += 1
        self.updates += 1

    def _alternating_step(self) -> None:
        """One update of Algorithm 1: k D steps on successive real batches, then one G step."""
        c, m = self.config, self.model
        xp = backend.get_array_module(self.x_train)
        B = c.batch
        self._apply_schedules()
        loss_D = dx = dgz = None
        y_real = None
        for j in range(c.k):
            x_real, y_real = self._real_batch(self.step_in_epoch * c.k + j)
            z = m.sample_noise(B, self.noise_rng, like=x_real)
            x_fake = m.G.forward(z if y_real is None else (z, y_real), train=True)
            if self._matching_aware == "joint":
                l_d, logits = self._joint_matching_aware_step(x_real, x_fake, y_real)
            else:
                l_d, logits, _ = objective.discriminator_step(m.D, x_real, x_fake, y_real, y_real, train=True)
            self.opt_D.step()
            if self._matching_aware is True:
                self._matching_aware_step(B)
            probs = sigmoid(logits)
            dx_j, dgz_j = probs[:B].mean(), probs[B:].mean()
            loss_D = l_d if loss_D is None else loss_D + l_d
            dx = dx_j if dx is None else dx + dx_j
            dgz = dgz_j if dgz is None else dgz + dgz_j
        z = m.sample_noise(B, self.noise_rng, like=self.x_train)
        loss_G, _, _, _ = objective.generator_step(m.G, m.D, z, y_real, kind=c.g_loss)
        self.opt_G.step()
        if c.k > 1:
            loss_D, dx, dgz = loss_D / c.k, dx / c.k, dgz / c.k
        self._record(xp, loss_D, loss_G, dx, dgz)
        self.step_in_epoch += 1
        self.updates += 1

    def _mismatched_pairs(self, batch: int):
        """``batch`` random training images (device rows), and one-hot labels that differ from each one's own.

        Drawn from the noise generator's host stream, whose state every checkpoint saves, so a resumed run draws
        them again exactly.
        """
        m, gen = self.model, self.noise_rng.host
        rows = gen.integers(0, self.n_train, batch)
        wrong = (self._labels_host[rows] + gen.integers(1, m.n_classes, batch)) % m.n_classes
        return backend.to_device(rows), m.one_hot(wrong)

    def _joint_matching_aware_step(self, x_real, x_fake, y_real):
        r"""D's step with the matching-aware negatives in the same pass: other real images, with wrong labels.

        The fake half of D's loss then averages over G's samples and the mismatched pairs, GAN-CLS's
        :math:`\tfrac12[\mathrm{BCE}(1, D(x,y)) + \tfrac12(\mathrm{BCE}(0, D(G(z),y)) + \mathrm{BCE}(0, D(x',y')))]`.
        One D step per update, as in Algorithm 1 with k = 1 (a separate step would give D two).
        """
        xp = backend.get_array_module(x_real)
        rows, wrong = self._mismatched_pairs(x_real.shape[0])
        l_d, logits, _ = objective.discriminator_step(
            self.model.D, x_real, xp.concatenate([x_fake, self.x_train[rows]]), y_real,
            xp.concatenate([y_real, wrong]), train=True)
        return l_d, logits[:2 * x_real.shape[0]]

    def _matching_aware_step(self, batch: int) -> None:
        """One D update on other real images with their labels (real) and with wrong labels (fake)."""
        rows, wrong = self._mismatched_pairs(batch)
        objective.matching_aware_step(self.model.D, self.x_train[rows], self.y_train[rows], wrong, train=True)
        self.opt_D.step()

    # -- metrics: device buffer, read back once per interval ----------------------------------------------
    @staticmethod
    def _zero_sums() -> dict:
        return {"loss_D": 0.0, "loss_G": 0.0, "D_x": 0.0, "D_G_z": 0.0, "count": 0, "seconds": 0.0}

    def _record(self, xp, loss_D, loss_G, dx, dgz) -> None:
        if self._buffer is None:
            self._buffer = xp.zeros((self.config.log_interval, 4), dtype=np.float64)
        if self._buffer_rows == 0:
            self._buffer_first_update = self.updates + 1
        self._buffer[self._buffer_rows] = xp.stack([loss_D, loss_G, dx, dgz]).astype(np.float64)
        self._buffer_rows += 1

    def _flush(self) -> None:
        """Read the buffered per-update values back (one transfer), check them, add them to the epoch sums."""
        if self._buffer_rows == 0:
            return
        rows = backend.to_host(self._buffer[:self._buffer_rows])
        n, first = self._buffer_rows, self._buffer_first_update
        self._buffer_rows = 0
        finite = np.isfinite(rows)
        if not finite.all():
            r, col = np.argwhere(~finite)[0]
            update = first + int(r)
            names = ("loss_D", "loss_G", "D(x)", "D(G(z))")
            # The buffer never spans epochs (it is flushed at every epoch end), so the update's position in
            # the current epoch follows from the counters.
            epoch_step = update - (self.updates - self.step_in_epoch)
            where = f"epoch {self.epoch + 1}, step {epoch_step}/{self.steps_per_epoch}"
            ckpt = self.config.run_dir / CHECKPOINT_NAME
            kept = (f"the last good checkpoint {ckpt} was left untouched" if ckpt.exists()
                    else "no checkpoint had been written yet")
            raise TrainingDiverged(
                f"training diverged: {names[col]} is {rows[r, col]} at update {update} ({where}); "
                f"noticed at the read-back after update {first + n - 1} (values are read every "
                f"{self.config.log_interval} updates); {kept}", update)
        s = self._epoch_sums
        for j, key in enumerate(("loss_D", "loss_G", "D_x", "D_G_z")):
            s[key] += float(rows[:, j].sum())
        s["count"] += n

    @staticmethod
    def _means(s: dict) -> dict:
        c = max(s["count"], 1)
        return {k: s[k] / c for k in ("loss_D", "loss_G", "D_x", "D_G_z")}

    @staticmethod
    def _format_means(means: dict) -> str:
        return (f"loss_D {means['loss_D']:.4f}  loss_G {means['loss_G']:.4f}  D(x) {means['D_x']:.3f}  "
                f"D(G(z)) {means['D_G_z']:.3f}")

    def _postfix(self) -> str:
        means = self._means(self._epoch_sums)
        return f"D {means['loss_D']:.3f} G {means['loss_G']:.3f}"

    # -- epoch end: metrics line, grid, checkpoint, plot ----------------------------------------------------
    def _end_epoch(self) -> None:
        self._flush()
        s = self._epoch_sums
        self.epoch += 1
        self.step_in_epoch = 0
        self._perm = None
        record = {"epoch": self.epoch, "updates": self.updates, **self._means(s), "seconds": s["seconds"],
                  "lr": self.opt_G.lr, "lr_D": self.opt_D.lr}
        if self.lr_schedules is not None:
            record["momentum"] = self.opt_G.momentum
        self._last_record = record
        self.log(f"epoch {self.epoch:3d}  {self._format_means(record)}  {s['seconds']:.1f} s/epoch")
        run_dir = self.config.run_dir
        every = self.config.select_every
        if every and self.epoch % every == 0:
            self._select(record)
        grid = self._grid_images()
        findings = self._check_health(record, grid)
        with open(run_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        io.write_png(run_dir / "samples" / f"epoch_{self.epoch:03d}.png", io.image_grid(grid, 10, 10))
        if findings and self.config.stop_on_collapse:
            ckpt = run_dir / CHECKPOINT_NAME
            kept = (f"the last checkpoint without a finding, {ckpt} (epoch {self.epoch - 1}), is kept"
                    if ckpt.exists() else "no checkpoint had been written yet")
            raise TrainingCollapsed(f"training failed the health check at epoch {self.epoch} ("
                                    f"{'; '.join(f['kind'] for f in findings)}) and --stop-on-collapse is set: "
                                    f"stopped without saving this epoch; {kept}", self.epoch, findings)
        self._save_checkpoint()
        io.plot_metrics(self._read_metrics(), run_dir / "losses.png", title=f"{self.config.model} {self.config.dataset}")
        self._epoch_sums = self._zero_sums()

    def _check_health(self, record: dict, grid: np.ndarray) -> list[dict]:
        """Add the monitor's measures (and findings, if any) to the epoch's record; report findings."""
        measures = self.monitor.measure(grid)
        record.update(measures)
        findings = self.monitor.findings(self.epoch, record, measures)
        if findings:
            record["health"] = findings
        for f in findings:
            self.log(f"health WARNING (epoch {f['epoch']}): {f['message']}. Likely cause: {f['cause']}. "
                     f"Try: {f['advice']}.")
        return findings

    def _select(self, record: dict) -> None:
        """Score the model by validation Parzen log-likelihood; if it is the best so far, write best.npz.

        best.npz is written (atomically) before the checkpoint that records it, so a crash in between can only
        leave a best.npz newer than the checkpoint's record, never a record without its file.
        """
        from . import metrics  # lazy: evaluation code is not needed unless selection is asked for

        valid = self.dataset.valid.x
        n_sigma = min(1000, len(valid) // 2)
        samples, _ = metrics.draw_samples(self.model, seed=self.config.seed)
        score = metrics.parzen_evaluate(samples, valid[:n_sigma], valid[n_sigma:], n_valid=n_sigma)
        record["parzen_valid"], record["parzen_sigma"] = score["mean"], score["sigma"]
        improved = self._best is None or score["mean"] > self._best["valid_ll"]
        if improved:
            verdict = "best so far: wrote best.npz"
        else:
            verdict = f"(best {self._best['valid_ll']:.2f}, epoch {self._best['epoch']})"
        self.log(f"          validation Parzen LL {score['mean']:.2f} ± {score['se']:.2f} "
                 f"(sigma {score['sigma']:.3f})  {verdict}")
        if improved:
            self._best = {"epoch": self.epoch, "valid_ll": score["mean"], "sigma": score["sigma"]}
            arrays, meta = self.state()
            io.save_checkpoint(self.config.run_dir / BEST_NAME, arrays, meta)

    def _grid_images(self) -> np.ndarray:
        z = backend.to_device(self.grid_z)
        y = self.model.one_hot(self.grid_labels) if self.model.conditional else None
        return backend.to_host(self.model.generate(z, y))  # eval mode: no dropout draws, no effect on the run

    def _write_grid(self, path: Path) -> None:
        io.write_png(path, io.image_grid(self._grid_images(), 10, 10))

    def _params_finite(self) -> bool:
        xp = backend.get_array_module(self.x_train)
        flags = [xp.isfinite(p).all() for layer in (self.model.G, self.model.D) for p in layer.params.values()]
        return bool(backend.to_host(xp.stack(flags)).all())

    def _save_checkpoint(self) -> None:
        """Write the checkpoint atomically -- never from non-finite weights (the last good one is kept)."""
        path = self.config.run_dir / CHECKPOINT_NAME
        if not self._params_finite():
            raise TrainingDiverged(f"training diverged: a weight became NaN or infinite by update {self.updates}; "
                                   f"not overwriting the last good checkpoint {path}", self.updates)
        arrays, meta = self.state()
        io.save_checkpoint(path, arrays, meta)

    def _remove_stale_temporaries(self) -> None:
        """Delete temporary files of saves that a hard kill (SIGKILL, power loss) interrupted.

        Checkpoints and grids are written to ``.ckpt-*.tmp`` / ``.png-*.tmp`` and renamed into place, so such a
        file is never the only copy of anything: the save it belonged to either completed (and renamed
        another temporary) or left the previous file untouched. Only one trainer may use a run directory.
        """
        run_dir = self.config.run_dir
        stale = [p for d in (run_dir, run_dir / "samples") for pattern in (".ckpt-*.tmp", ".png-*.tmp")
                 for p in d.glob(pattern)]
        for path in stale:
            try:
                path.unlink()
            except OSError:  # already gone, or not ours to delete: harmless either way
                pass
        if stale:
            self.log(f"removed {len(stale)} temporary file(s) left by an interrupted save in {run_dir}")

    def _prepare_metrics_file(self) -> None:
        """Fresh run: empty metrics.jsonl. Resume: keep only epochs the checkpoint includes (a crash between
        the metrics line and the checkpoint would otherwise leave a duplicate epoch)."""
        path = self.config.run_dir / "metrics.jsonl"
        records = [r for r in self._read_metrics() if r.get("epoch", 0) <= self.epoch] if self.updates else []
        with open(path, "w", encoding="utf-8") as f:
            for r in records:
                f.write(json.dumps(r) + "\n")

    def _read_metrics(self) -> list[dict]:
        path = self.config.run_dir / "metrics.jsonl"
        records = []
        if path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    r = json.loads(line)
                except ValueError:
                    continue
                if isinstance(r, dict):
                    records.append(r)
        return records


def _restore_buffers(where, arrays: dict, net: str, layer, convert) -> None:
    """Assign the checkpoint's ``buffers.<net>.<name>`` arrays into ``layer.buffers`` (exactly the same names)."""
    prefix = f"{BUFFERS_PREFIX}{net}."
    buffers = layer.buffers
    stored = {k[len(prefix):] for k in arrays if k.startswith(prefix)}
    if stored != set(buffers):
        raise io.CheckpointError(f"{where}: buffers of {net} do not match the model (missing "
                                 f"{sorted(set(buffers) - stored)[:3]}, unexpected {sorted(stored - set(buffers))[:3]})")
    for name, b in buffers.items():
        b[...] = convert(_checked_array(where, prefix + name, arrays[prefix + name], b))


def _checked_array(where, key: str, a: np.ndarray, like) -> np.ndarray:
    """``a`` if it has exactly the shape and dtype of ``like`` (a model parameter), else CheckpointError.

    Checkpoints are written from the model's own arrays, so anything else (another shape, an integer, complex,
    string or structured dtype, another float width) means the file is not what it claims to be; casting
    would hide that (complex -> float drops the imaginary part, float64 -> float32 rounds silently).
    """
    if not isinstance(a, np.ndarray):
        raise io.CheckpointError(f"{where}: {key} is not an array")
    if tuple(a.shape) != tuple(like.shape):
        raise io.CheckpointError(f"{where}: {key} has shape {tuple(a.shape)}, expected {tuple(like.shape)}")
    if a.dtype != np.dtype(like.dtype):
        raise io.CheckpointError(f"{where}: {key} has dtype {a.dtype}, expected {np.dtype(like.dtype)}")
    return a


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _env_int(name: str) -> int | None:
    value = os.environ.get(name, "").strip()
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"environment variable {name} must be an integer, got {value!r}") from None


def _version() -> str:
    from . import __version__
    return __version__


# --------------------------------------------------------------------------------------------------
# Sampling from a run
# --------------------------------------------------------------------------------------------------


def load_model(run_dir: str | os.PathLike) -> tuple[models.GANModel, dict]:
    """The model saved in ``run_dir/checkpoint.npz`` (or a checkpoint file path), on the active backend."""
    path = Path(run_dir)
    if path.is_dir() or not path.suffix:
        path = path / CHECKPOINT_NAME
    if not path.exists():
        raise ConfigError(f"no checkpoint at {path}: train a model into that run directory first")
    arrays, meta = io.load_checkpoint(path)
    try:
        config = TrainConfig.from_dict(meta["config"])
        if meta.get("format") not in READABLE_FORMATS:
            raise io.CheckpointError(f"{path} is not a minigan training checkpoint (format {meta.get('format')!r})")
        model = models.build(config.model, 0, **checkpoint_model_options(meta, config))
        # Fill the weights on the host, then move the whole model (device arrays refuse host assignment).
        backend.to_host(model.G), backend.to_host(model.D)
        for net, layer in (("G", model.G), ("D", model.D)):
            for name, p in layer.params.items():
                a = _checked_array(path, f"{net}.{name}", arrays[f"{net}.{name}"], p)
                p[...] = a
            _restore_buffers(path, arrays, net, layer, lambda a: a)
    except (KeyError, TypeError, ValueError) as exc:
        raise io.CheckpointError(f"{path}: not a usable minigan checkpoint ({type(exc).__name__}: {exc})") from exc
    backend.to_device(model.G), backend.to_device(model.D)
    return model, meta


def sample(run_dir: str | os.PathLike, n: int, label: int | None = None, seed: int = 0):
    """``n`` samples from the run's generator: host ``x`` (n, 784) float32 in [0, 1] and ``y`` (n,) int64.

    For a conditional model ``label=None`` cycles through the classes (0, 1, ..., 9, 0, ...). For an
    unconditional model ``y`` is all -1 and giving a label is an error.
    """
    _positive("n", n)
    model, _ = load_model(run_dir)
    if label is not None:
        if not model.conditional:
            raise ConfigError(f"the {model.name} model is unconditional: --label cannot be used")
        if isinstance(label, bool) or not isinstance(label, (int, np.integer)) or not 0 <= label < model.n_classes:
            raise ConfigError(f"label {label!r} is out of range: the {model.name} model has labels 0..{model.n_classes - 1}")
    x, y = model.sample(int(n), backend.Rng(seed), label=label)
    x = np.clip(backend.to_host(x).astype(np.float32), 0.0, 1.0)
    y = np.full(int(n), -1, np.int64) if y is None else np.asarray(y, dtype=np.int64)
    return x, y


def write_samples(path: str | os.PathLike, x: np.ndarray, y: np.ndarray) -> None:
    """Write samples as ``.npz`` (keys ``x``, ``y``) or ``.png`` (a grid, 10 per row, blank-padded)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".npz":
        tmp = path.with_name(f".{path.name}.tmp")
        with open(tmp, "wb") as f:
            np.savez(f, x=x, y=y)
        os.replace(tmp, path)
    elif suffix == ".png":
        cols = min(10, len(x))
        rows = -(-len(x) // cols)
        padded = np.zeros((rows * cols, x.shape[1]), np.float32)
        padded[:len(x)] = x
        io.write_png(path, io.image_grid(padded, rows, cols))
    else:
        raise ConfigError(f"--out {path}: unknown output type {suffix or '(none)'!r}; use a .npz or .png file name")
