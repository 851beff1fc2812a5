r"""The shared trainer: everything a run needs whatever the model family.

A run is a sequence of *updates* (global steps). What one update does is the model family's
(:meth:`minigan.families.base.Family.update`; for the GANs, Algorithm 1 of Goodfellow et al. (2014) or the
original code's one-pass update, :mod:`minigan.families.base`):

.. code-block:: text

    for k steps:
        take the next real minibatch (x, y) of the epoch's shuffled order
        z ~ prior;  x~ = G(z, y)               # conditional: the real batch's labels also condition the fakes
        D ascends  log D(x, y) + log(1 - D(x~, y))
    z ~ prior;  G descends  -log D(G(z, y), y)  # non-saturating loss; y = the last real batch's labels

The gradients themselves come from :mod:`minigan.objective` (the same code the gradient checker verifies).
This module owns everything around them, for every family alike: the run directory, optimizers (one per
network) and schedules, data order, random streams, counters, logging and progress, checkpoints and resume,
sample grids, model selection, the health monitor, signals and divergence. Two parts of it live beside it: what a
checkpoint holds of the run and how a run resumes from one (:mod:`minigan.run_state`, whose :class:`RunState`
the trainer is), and the console's progress bar and log lines (:mod:`minigan.progress`). The run's configuration
and the presets are :mod:`minigan.config`; reading a finished run (its model, samples) is :mod:`minigan.runs`.

Extension points
----------------
``Trainer.after_step[net]``
    Callables run after every optimizer step of network ``net`` (``"G"``, ``"D"``), in order, e.g. to update
    a moving average of G's weights.
``Trainer.add_state_part(name, part)``
    Extra state that checkpoints carry and resume restores: ``part.state()`` returns ``(arrays, meta)``, saved
    as arrays ``<name>.<key>`` and metadata ``parts.<name>``; ``part.load_state(arrays, meta)`` gets them back
    (arrays without the prefix). A checkpoint without the part's entries leaves it as it is.

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

import contextlib
import json
import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from . import backend, data, families, io, threads
from .config import (DEFAULT_EPOCHS, PRESETS, ConfigError, TrainConfig, _is_number, checkpoint_model_options,
                     learning_rates, model_options, options_text, trained_lr_decay)
from .nn import optim
from .progress import Progress, print_line
from .run_state import RunState, StatePart, _StateOf
from .runs import BEST_NAME, CHECKPOINT_NAME, EMA_PART

__all__ = ["TrainingCollapsed", "TrainingDiverged", "RunResult", "Trainer", "StatePart"]

INJECT_NAN_ENV = "MINIGAN_INJECT_NAN_AT_STEP"
_DISPLAY_NAMES = {"D_x": "D(x)", "D_G_z": "D(G(z))"}  # how a metric is named in messages


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
# The trainer
# --------------------------------------------------------------------------------------------------


def _derived_seeds(seed: int) -> dict[str, int]:
    """Independent seeds for each random stream, all from the one run seed (SeedSequence spawning)."""
    names = ("model", "noise", "data", "grid")
    children = np.random.SeedSequence(int(seed)).spawn(len(names))
    return {n: int(c.generate_state(1, np.uint64)[0] >> np.uint64(1)) for n, c in zip(names, children)}



def _make_optimizers(config: TrainConfig, networks: dict) -> dict:
    """One optimizer per network, by the preset: ``{"G": ..., "D": ...}`` at :func:`learning_rates`' rates."""
    preset = PRESETS[config.preset]
    rates = dict(zip(("G", "D"), learning_rates(config)))
    if preset["optimizer"] == "sgd":
        return {net: optim.SGD(layer, lr=rates[net], momentum=preset["momentum"][0]) for net, layer in networks.items()}
    kw = dict(beta1=preset["beta1"], beta2=preset["beta2"])
    clip = {"D": float(config.d_update_clip or 0.0) or None}
    return {net: optim.Adam(layer, lr=rates[net], update_clip=clip.get(net), **kw) for net, layer in networks.items()}


class Trainer(RunState):
    """Owns a run: model, optimizers, schedules, random streams, counters, and the run directory.

    What is particular to the model -- its networks, its update, its grid -- is its family's
    (:attr:`family`, a :class:`minigan.families.base.Family` made for this run).

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
    optimizers : dict
        One optimizer per network of the model, by the network's name (``opt_G``, ``opt_D``: G's and D's).
    after_step : dict
        Per network name, callables run after each of its optimizer steps (:meth:`step`).
    """

    def __init__(self, config: TrainConfig, dataset: data.Dataset | None = None, log: Callable[[str], None] = print_line,
                 checkpoint: tuple[dict, dict] | None = None):
        config.validate()
        self.config = config
        self.log = log or (lambda msg: None)
        if config.device is not None:
            backend.use("cupy" if config.device == "gpu" else "numpy")
        if checkpoint is None and (config.run_dir / CHECKPOINT_NAME).exists():
            raise ConfigError(f"{config.run_dir} already holds a checkpoint; pass --resume to continue that run, "
                              "or choose another --out")
        family_class = families.get(config.model)
        options = model_options(config) if checkpoint is None else checkpoint_model_options(checkpoint[1], config)
        self.dataset = dataset if dataset is not None else family_class.load_dataset(config, options, self.log)
        train = self.dataset.train
        self.n_train = len(train)
        batches = self.n_train // config.batch
        self.steps_per_epoch = batches // config.k
        if self.steps_per_epoch < 1:
            raise ConfigError(f"batch {config.batch} x k {config.k} needs at least {config.batch * config.k} "
                              f"training examples; the dataset has {self.n_train}")

        seeds = _derived_seeds(config.seed)
        try:
            if checkpoint is None:  # what the data decides (a paired family's channels and image size)
                options = family_class.complete_options(options, self.dataset)
            self.model = family_class.build(seeds["model"], **options)  # on the active backend
            self.model_options = options
        except (TypeError, ValueError) as exc:  # options the builder does not take (e.g. a tampered checkpoint)
            if checkpoint is not None:
                raise io.CheckpointError(f"{config.run_dir / CHECKPOINT_NAME}: its model options "
                                         f"{str(checkpoint[1].get('model_options'))[:200]} do not build a "
                                         f"{config.model}: {exc}") from None
            raise ConfigError(f"model options {config.model_options!r} are not valid for {config.model}: {exc}") from None
        self.preset = PRESETS[config.preset]
        self.networks = self.model.networks()
        self.family = family_class(self)
        self.family.prepare(train)  # a resumed run then overwrites the weights from its checkpoint
        if checkpoint is None:
            # The rates and their per-update divisor are resolved and written into the config, so the checkpoint
            # records the schedule the run trains with, whatever its preset says later.
            config.lr_G, config.lr_D = learning_rates(config)
            config.d_update_clip = config.d_clip
            config.d_warmup = config.d_warmup_updates
            config.matching_aware = config.matching_aware_mode
            config.matching_aware_every = config.matching_aware_period
            config.matching_aware_epochs = config.matching_aware_first_epochs
        else:  # what the checkpoint trained with; one from before these options trained without them
            stored = checkpoint[1].get("config") or {}
            for name, cast in (("d_update_clip", float), ("d_warmup", int)):
                trained = cast(stored.get(name) or 0)
                if getattr(config, name) is not None and cast(getattr(config, name)) != trained:
                    raise ConfigError(f"cannot resume with {name}={getattr(config, name)!r}: the run in "
                                      f"{config.run_dir} was trained with {name}={trained!r} (drop the option, or "
                                      "start a new --out)")
                setattr(config, name, trained)
        self.optimizers = _make_optimizers(config, self.networks)
        self.after_step: dict[str, list[Callable[[], None]]] = {net: [] for net in self.networks}
        self._state_parts: dict[str, StatePart] = {}
        self.labels_host = np.asarray(train.y)
        self._best = None  # {"epoch", "valid_ll", "sigma"} of the best model so far (model selection)
        preset = self.preset
        self.lr_schedules = self._learning_rate_schedules(checkpoint)
        self.momentum_schedule = (optim.LinearRamp(*preset["momentum"], preset["momentum_saturate"][config.model])
                                  if preset["optimizer"] == "sgd" else None)
        self.noise_rng = backend.Rng(seeds["noise"])
        self.data_rng = backend.Rng(seeds["data"])  # .host is the numpy Generator that shuffles

        # The training set lives on the device once, in G's output range; per step only a slice of the
        # permutation is indexed.
        self.x_train, self.y_train = self.family.device_data(train)

        # Fixed grid noise and labels (the family's layout: for a conditional model row r is label r).
        self.grid_z, self.grid_labels = self.family.grid(backend.Rng(seeds["grid"]))

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
        self.monitor = self.family.monitor(train)
        self._last_record: dict | None = None
        # What add_state_part may still need of the checkpoint: arrays outside the trainer's own prefixes.
        own = {*self.networks, "optim", "buffers", "grid"}
        self._checkpoint = None if checkpoint is None else (
            {k: a for k, a in checkpoint[0].items() if k.partition(".")[0] not in own}, checkpoint[1])
        if checkpoint is not None:
            self.load_state(*checkpoint)
        self.average_G = self._weight_average(checkpoint)

    def _learning_rate_schedules(self, checkpoint) -> tuple | None:
        """(G's, D's) learning rate as a function of the update count, or None for constant rates: the decay of
        :meth:`_learning_rate_schedule`, and D's warm-up from G's rate over ``config.d_warmup`` updates."""
        decay = self._learning_rate_schedule(checkpoint)
        if decay == 1 and not self.config.d_warmup:
            return None
        lr_G, lr_D = (optim.ExponentialDecay(lr, decay, self.preset.get("lr_floor", 0.0))
                      for lr in learning_rates(self.config))
        if self.config.d_warmup:
            lr_D = optim.LinearWarmup(lr_G, lr_D, self.config.d_warmup)
        return lr_G, lr_D

    def _learning_rate_schedule(self, checkpoint) -> float:
        """The per-update divisor of the learning rates (1.0: constant), resolved and written into the config.

        A new run takes ``lr_decay`` or its preset's; a resumed one what its checkpoint trained with
        (:func:`~minigan.config.trained_lr_decay`), and a different ``lr_decay`` asked of it is refused.
        """
        config = self.config
        if checkpoint is None:
            decay = config.lr_divisor or 1.0
        else:
            stored = TrainConfig.from_dict(dict(checkpoint[1]["config"], out=str(config.out)))
            decay = trained_lr_decay(stored)
            if config.lr_decay is not None and float(config.lr_decay) != decay:
                raise ConfigError(f"cannot resume with lr_decay={config.lr_decay!r}: the run in {config.run_dir} was "
                                  f"trained with lr_decay={decay!r} (drop the option, or start a new --out)")
        config.lr_decay = decay
        return decay

    def _weight_average(self, checkpoint) -> optim.WeightAverage | None:
        """G's moving average (``config.ema``), updated after every G step and carried by checkpoints as ``ema.*``.

        The decay is resolved here and written into the config, so a resumed run keeps the average it was
        trained with even if its preset changes later; a checkpoint from before averages (no ``ema`` in its
        config) continues without one.
        """
        config = self.config
        if checkpoint is None:
            beta = config.ema_beta
        else:
            stored = checkpoint[1]["config"].get("ema")
            beta = float(stored) if _is_number(stored) else 0.0
            if config.ema is not None and float(config.ema) != beta:
                raise ConfigError(f"cannot resume with ema={config.ema!r}: the run in {config.run_dir} was trained "
                                  f"with ema={beta!r} (drop the option, or start a new --out)")
        config.ema = beta
        if beta == 0 or "G" not in self.networks:
            return None
        average = optim.WeightAverage(self.networks["G"], beta)
        self.after_step["G"].append(average.update)
        self.add_state_part(EMA_PART, _StateOf(average))
        if checkpoint is not None and EMA_PART not in (checkpoint[1].get("parts") or {}):
            raise io.CheckpointError(f"{config.run_dir / CHECKPOINT_NAME}: the run averages G's weights (ema "
                                     f"{beta}) but the checkpoint holds no average")
        return average

    @contextlib.contextmanager
    def sampling_G(self):
        """A context manager under which G holds the weights samples come from: its moving average when the run
        keeps one, with BatchNorm statistics re-estimated for it (the live weights and statistics come back
        exactly on exit), else the live weights."""
        if self.average_G is None:
            yield self.networks.get("G")
            return
        with self.average_G.swapped_in() as G:
            self.model.standing_statistics(self.config.batch, seed=self.config.seed)
            yield G

    @property
    def opt_G(self):
        return self.optimizers["G"]

    @property
    def opt_D(self):
        return self.optimizers["D"]

    def step(self, net: str) -> None:
        """The optimizer step of network ``net`` (from the gradients its backward wrote), then its hooks."""
        self.optimizers[net].step()
        for hook in self.after_step[net]:
            hook()

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
        summary = self.family.summary()
        if summary:
            self.log(summary)
        progress = Progress(target, self.updates, self.config.progress)
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
        # The rates and options the preset chose are said, so a user sees what a default trains. Constant rates are
        # the optimizers' own (a checkpoint from before runs recorded their rates restores them); a schedule's are
        # its starting rates, the run's.
        lr_G, lr_D = (learning_rates(c) if self.lr_schedules is not None
                      else (self.optimizers["G"].lr, self.optimizers["D"].lr))
        options = options_text(self.model_options)
        return (f"minigan train: {c.model} on {c.dataset} ({self.n_train} examples), preset {c.preset}, batch "
                f"{c.batch}, k {c.k}, {c.update_rule} updates, lr G {lr_G:g} D {lr_D:g}"
                f"{f', model options {options}' if options else ''}"
                f"{self._matching_aware_note()}, "
                f"{self.steps_per_epoch} updates/epoch, "
                f"backend {backend.name()}{self._threads_note()}, seed {c.seed}; "
                f"{start} update {self.updates} (epoch {self.epoch + 1}, step {self.step_in_epoch}); "
                f"target {what} ({target} updates); run dir {c.run_dir}")

    @staticmethod
    def _cpu_threads() -> int | None:
        """The BLAS thread count a CPU run's sums depend on (None on the GPU, or when it cannot be read)."""
        return threads.blas_threads() if backend.computes_on_host() else None

    def _matching_aware_note(self) -> str:
        mode, every = self.config.matching_aware_mode, self.config.matching_aware_period
        first = self.config.matching_aware_first_epochs
        if mode == "none":
            return ""
        note = f", matching-aware D {mode}" + (f" every {every} updates" if every != 1 else "")
        if first:
            note += " in the first epoch" if first == 1 else f" in the first {first} epochs"
        return note

    def _threads_note(self) -> str:
        count = self._cpu_threads()
        return "" if count is None else f" ({count} thread{'s' if count != 1 else ''})"

    def _begin_epoch(self) -> None:
        """Draw the epoch's permutation from the data generator, remembering the state it was drawn from."""
        self._epoch_start_state = self.data_rng.get_state()
        self._perm = backend.to_device(self.data_rng.permutation(self.n_train))
        if self.step_in_epoch == 0:
            self._epoch_sums = self._zero_sums()

    def _apply_schedules(self) -> None:
        if self.lr_schedules is not None:
            for opt, schedule in zip(self.optimizers.values(), self.lr_schedules):
                opt.lr = schedule(self.updates)
        if self.momentum_schedule is not None:
            momentum = self.momentum_schedule(self.epoch)
            for opt in self.optimizers.values():
                opt.momentum = momentum

    def _train_step(self) -> None:
        """One update: the schedules, the family's update, its values into the device buffer, the counters."""
        self._apply_schedules()
        values = self.family.update()
        xp = backend.get_array_module(self.x_train)
        self._record(xp, values)
        self.step_in_epoch += 1
        self.updates += 1

    def real_batch(self, index: int):
        """The ``index``-th real batch of this epoch and its condition (one-hot labels, a paired family's input
        images, or None), on the device."""
        B = self.config.batch
        idx = self._perm[index * B:(index + 1) * B]
        x_real = self.x_train[idx]
        if self._inject_nan_at == self.updates + 1:
            x_real = x_real * float("nan")
        return x_real, (self.y_train[idx] if self.y_train is not None else None)

    # -- metrics: device buffer, read back once per interval ----------------------------------------------
    def _zero_sums(self) -> dict:
        return {**{name: 0.0 for name in self.family.metric_names}, "count": 0, "seconds": 0.0}

    def _record(self, xp, values) -> None:
        if self._buffer is None:
            self._buffer = xp.zeros((self.config.log_interval, len(self.family.metric_names)), dtype=np.float64)
        if self._buffer_rows == 0:
            self._buffer_first_update = self.updates + 1
        self._buffer[self._buffer_rows] = xp.stack(values).astype(np.float64)
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
            names = [_DISPLAY_NAMES.get(name, name) for name in self.family.metric_names]
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
        for j, key in enumerate(self.family.metric_names):
            s[key] += float(rows[:, j].sum())
        s["count"] += n

    def _means(self, s: dict) -> dict:
        c = max(s["count"], 1)
        return {k: s[k] / c for k in self.family.metric_names}

    def _format_means(self, means: dict) -> str:
        return self.family.format_means({k: means[k] for k in self.family.metric_names})

    def _postfix(self) -> str:
        means = self._means(self._epoch_sums)
        if "loss_D" in means and "loss_G" in means:
            return f"D {means['loss_D']:.3f} G {means['loss_G']:.3f}"
        return " ".join(f"{k} {v:.3f}" for k, v in list(means.items())[:2])

    # -- epoch end: metrics line, grid, checkpoint, plot ----------------------------------------------------
    def _end_epoch(self) -> None:
        self._flush()
        s = self._epoch_sums
        self.epoch += 1
        self.step_in_epoch = 0
        self._perm = None
        first, *others = self.optimizers.items()
        record = {"epoch": self.epoch, "updates": self.updates, **self._means(s), "seconds": s["seconds"],
                  "lr": first[1].lr, **{f"lr_{net}": opt.lr for net, opt in others}}
        if self.momentum_schedule is not None:
            record["momentum"] = first[1].momentum
        self._last_record = record
        self.log(f"epoch {self.epoch:3d}  {self._format_means(record)}  {s['seconds']:.1f} s/epoch")
        run_dir = self.config.run_dir
        every = self.config.select_every
        if every and self.epoch % every == 0:
            self._select(record)
        grid = self._grid_images()
        # The monitor judges the game, so it reads the live G (what D plays against). The weight average is
        # less varied early on: at epoch 1 it measured 6-8% of real images' variety on 3 of 20 healthy seeds,
        # under the 10% collapse threshold, while those runs went on to pass every target.
        live = grid if self.average_G is None else self.family.grid_images(self.grid_z, self.grid_labels)
        findings = self._check_health(record, live)
        with open(run_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        io.write_png(run_dir / "samples" / f"epoch_{self.epoch:03d}.png", self.family.grid_picture(grid))
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
        if self.monitor is None:
            return []
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
        from .eval.metrics import draw_samples  # lazy: evaluation code is not needed unless selection is asked for
        from .eval.parzen import parzen_evaluate

        valid = self.dataset.valid.x
        n_sigma = min(1000, len(valid) // 2)
        with self.sampling_G():
            samples, _ = draw_samples(self.model, seed=self.config.seed)
        score = parzen_evaluate(samples, valid[:n_sigma], valid[n_sigma:], n_valid=n_sigma)
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
        with self.sampling_G():
            return self.family.grid_images(self.grid_z, self.grid_labels)  # eval mode: no effect on the run

    def _write_grid(self, path: Path) -> None:
        io.write_png(path, self.family.grid_picture(self._grid_images()))

    def _params_finite(self) -> bool:
        xp = backend.get_array_module(self.x_train)
        flags = [xp.isfinite(p).all() for layer in self.networks.values() for p in layer.params.values()]
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


def _env_int(name: str) -> int | None:
    value = os.environ.get(name, "").strip()
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"environment variable {name} must be an integer, got {value!r}") from None


