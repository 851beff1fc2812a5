"""What a checkpoint holds of a training run, and how a run comes back from one.

:class:`RunState` gives :class:`minigan.train.Trainer` its checkpoint side: :meth:`~RunState.state` gathers every
array and counter that continuing the run bit for bit needs, :meth:`~RunState.load_state` puts them back (checking
each against the model the configuration builds, so a tampered or foreign checkpoint is refused with a message
that names it), :meth:`~RunState.resume` makes a trainer from a run directory, and
:meth:`~RunState.add_state_part` lets a family or a hook add its own state (:class:`StatePart`). It works on the
trainer's attributes (``config``, ``networks``, ``optimizers``, the random streams and counters), which
:class:`~minigan.train.Trainer` sets up; the file format itself is :mod:`minigan.io.checkpoint`'s.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Callable, Protocol

import numpy as np

from . import backend, data, io
from .config import (ConfigError, TrainConfig, _is_int, _is_number, checkpoint_model_options,
                     resolved_options_agree, trained_lr_decay, trained_matching_aware)
from .progress import print_line
from .runs import (BUFFERS_PREFIX, CHECKPOINT_FORMAT, CHECKPOINT_NAME, READABLE_FORMATS, _checked_array,
                   _restore_buffers)

__all__ = ["RunState", "StatePart"]


class StatePart(Protocol):
    """Extra state a checkpoint carries (see :meth:`minigan.train.Trainer.add_state_part`)."""

    def state(self) -> tuple[dict[str, np.ndarray], dict]:
        """Host arrays and JSON-serialisable metadata."""

    def load_state(self, arrays: dict[str, np.ndarray], meta: dict) -> None:
        """Restore what :meth:`state` returned (raise ValueError/KeyError/TypeError on a mismatch)."""


class _StateOf:
    """A :class:`StatePart` view of an object with ``state_dict`` / ``load_state_dict`` (optimizer-style)."""

    def __init__(self, obj):
        self.state, self.load_state = obj.state_dict, obj.load_state_dict


def _version() -> str:
    from . import __version__
    return __version__


class RunState:
    """The checkpoint side of :class:`~minigan.train.Trainer` (module docstring); not used on its own."""

    def add_state_part(self, name: str, part: StatePart) -> None:
        """Let checkpoints carry ``part``'s state under ``name`` (the extension points of :mod:`minigan.train`);
        restores it at once if this trainer was made from a checkpoint that holds it."""
        if name in self.networks or name in ("optim", "buffers", "grid", "parts") or "." in name or name in self._state_parts:
            raise ValueError(f"state part name {name!r} is taken or not a plain name")
        self._state_parts[name] = part
        if self._checkpoint is not None:
            self._load_part(name, part, *self._checkpoint)

    def _load_part(self, name: str, part: StatePart, arrays: dict, meta: dict) -> None:
        prefix = name + "."
        stored = {k[len(prefix):]: a for k, a in arrays.items() if k.startswith(prefix)}
        part_meta = (meta.get("parts") or {}).get(name)
        if not stored and part_meta is None:
            return
        try:
            part.load_state(stored, part_meta if isinstance(part_meta, dict) else {})
        except (KeyError, TypeError, ValueError) as exc:
            raise io.CheckpointError(f"{self.config.run_dir / CHECKPOINT_NAME}: the state of {name!r} does not "
                                     f"load ({type(exc).__name__}: {exc})") from exc

    @classmethod
    def resume(cls, run_dir: str | os.PathLike, dataset: data.Dataset | str | None = None,
               log: Callable[[str], None] = print_line, **overrides):
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
        # A checkpoint from before these options stored neither: it trained with its preset's term of that time,
        # on every update.
        config.matching_aware = trained_matching_aware(config)
        config.matching_aware_every = int(config.matching_aware_every or 1)
        config.matching_aware_epochs = int(config.matching_aware_epochs or 0)
        for key, value in overrides.items():
            if value is None:
                continue
            if key in TrainConfig.RESUMABLE_OVERRIDES:
                setattr(config, key, value)
                continue
            if key == "model_options" and resolved_options_agree(value, checkpoint_model_options(meta, config)):
                continue  # options the model was built with, its preset's included (d_norm=none for dcgan)
            trained_with = (config.update_rule if key == "update" else float(config.ema or 0.0) if key == "ema"
                            else float(config.d_update_clip or 0.0) if key == "d_update_clip"
                            else int(config.d_warmup or 0) if key == "d_warmup"
                            else trained_lr_decay(config) if key == "lr_decay" else getattr(config, key))
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

        Arrays, for each network ``<net>`` of the model (``G``, ``D``): ``<net>.<param>``, ``buffers.<net>.<buffer>``
        (non-trainable state such as BatchNorm's running statistics; none for the MLP models),
        ``optim.<net>.<slot>.<param>``; then ``grid.z`` and each state part's ``<part>.<key>``. Meta: the config,
        the counters, optimizer scalars, every generator state (noise; data at the start of the current epoch;
        each dropout layer's), the running sums of the current epoch, and ``parts`` (only if there are any).
        """
        arrays: dict[str, np.ndarray] = {}
        for net, layer in self.networks.items():
            for name, p in layer.params.items():
                arrays[f"{net}.{name}"] = backend.to_host(p)
            for name, b in layer.buffers.items():
                arrays[f"{BUFFERS_PREFIX}{net}.{name}"] = backend.to_host(b)
        optim_meta = {}
        for net, opt in self.optimizers.items():
            opt_arrays, scalars = opt.state_dict()
            for key, a in opt_arrays.items():
                arrays[f"optim.{net}.{key}"] = a
            optim_meta[net] = scalars
        arrays["grid.z"] = self.grid_z
        rngs = {"noise": self.noise_rng.get_state(),
                "data_epoch_start": self._epoch_start_state if self._perm is not None else self.data_rng.get_state()}
        for net, layer in self.networks.items():
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
            "threads": self._cpu_threads(),
        }
        if self._state_parts:
            meta["parts"] = {}
            for name, part in self._state_parts.items():
                part_arrays, meta["parts"][name] = part.state()
                arrays.update({f"{name}.{k}": backend.to_host(a) for k, a in part_arrays.items()})
        return arrays, meta

    def load_state(self, arrays: dict[str, np.ndarray], meta: dict) -> None:
        """Restore everything :meth:`state` saved (raises CheckpointError on a mismatch)."""
        where = self.config.run_dir / CHECKPOINT_NAME
        try:
            if meta["n_train"] != self.n_train:
                raise ConfigError(f"the checkpoint was trained on {meta['n_train']} examples, this dataset has "
                                  f"{self.n_train}: resuming would not continue the same run")
            for net, layer in self.networks.items():
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
            for net, opt in self.optimizers.items():
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
                          else _is_number(value) and math.isfinite(value) and (key != "update_clip" or value > 0))
                    if not ok:
                        raise io.CheckpointError(f"{where}: optimizer field optim.{net}.{key} has invalid value "
                                                 f"{value!r}")
                opt.load_state_dict(slots, scalars)
            self.grid_z = _checked_array(where, "grid.z", arrays["grid.z"], self.grid_z)
            rngs = meta["rngs"]
            self.noise_rng.set_state(rngs["noise"])
            self.data_rng.set_state(rngs["data_epoch_start"])
            self._epoch_start_state = rngs["data_epoch_start"]
            for net, layer in self.networks.items():
                for name, rng in layer.rngs().items():
                    rng.set_state(rngs[f"{net}.{name}"])
            epoch, step, updates = meta["epoch"], meta["step_in_epoch"], meta["updates"]
            # The counters must describe a reachable state: a tampered step index would make the loop spin.
            if not (all(_is_int(v) and v >= 0 for v in (epoch, step, updates)) and step < self.steps_per_epoch
                    and updates == epoch * self.steps_per_epoch + step):
                raise io.CheckpointError(f"{where}: inconsistent counters (epoch {epoch!r}, step_in_epoch {step!r}, "
                                         f"updates {updates!r} with {self.steps_per_epoch} updates per epoch)")
            self.epoch, self.step_in_epoch, self.updates = epoch, step, updates
            made_at, now = meta.get("threads"), self._cpu_threads()
            if _is_int(made_at) and now is not None and made_at != now:
                self.log(f"note: this run was trained at {made_at} BLAS thread(s) and continues at {now}: its sums "
                         f"now round in another order, so it will not match an uninterrupted run bit for bit "
                         f"(--threads {made_at} would)")
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
