"""A run directory from outside the trainer: its checkpoint's layout, the model in it, samples from it.

``minigan sample``, ``minigan eval`` and model selection read runs through this module; it imports neither the
trainer nor the evaluation code, so neither imports the other through it.

Checkpoint layout (format 2; format 1, which lacks ``model_options``, still loads):

* arrays ``<net>.<param>`` and ``buffers.<net>.<buffer>`` for each of the model's networks (``G``, ``D``),
  ``optim.<net>.<slot>.<param>`` for their optimizers, ``grid.z`` for the fixed grid noise, and whatever the
  trainer's registered state parts add under their own prefixes;
* metadata ``format``, ``model_options``, ``config`` (:class:`~minigan.config.TrainConfig`), the counters, the
  optimizers' scalars, every generator's state and the running sums of the current epoch
  (:meth:`minigan.train.Trainer.state`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from . import backend, families, io
from .config import ConfigError, TrainConfig, _positive, checkpoint_model_options
from .nn.optim import WeightAverage

__all__ = ["CHECKPOINT_NAME", "BEST_NAME", "CHECKPOINT_FORMAT", "READABLE_FORMATS", "load_model", "sample",
           "write_samples"]

CHECKPOINT_NAME = "checkpoint.npz"
BUFFERS_PREFIX = "buffers."  # checkpoint keys of layers' non-trainable state: buffers.G.<name>, buffers.D.<name>
BEST_NAME = "best.npz"
# 2: the model's resolved options are stored ("model_options"); 3: G's weight average (config "ema", part "ema").
# Formats 1 and 2 still load (they have no average).
CHECKPOINT_FORMAT = 3
READABLE_FORMATS = (1, 2, 3)
EMA_PART = "ema"  # checkpoint arrays ema.<G's param> and metadata parts.ema of G's weight average


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


def load_model(run_dir: str | os.PathLike) -> tuple[families.GANModel, dict]:
    """The model saved in ``run_dir/checkpoint.npz`` (or a checkpoint file path), on the active backend.

    When the run kept a moving average of G's weights, G holds the average, with its BatchNorm statistics
    re-estimated for it (:meth:`~minigan.families.base.GANModel.standing_statistics`): the generator that the
    run's grids and model selection used.
    """
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
        model = families.build(config.model, 0, **checkpoint_model_options(meta, config))
        networks = model.networks()
        # Fill the weights on the host, then move the whole model (device arrays refuse host assignment).
        for layer in networks.values():
            backend.to_host(layer)
        for net, layer in networks.items():
            for name, p in layer.params.items():
                a = _checked_array(path, f"{net}.{name}", arrays[f"{net}.{name}"], p)
                p[...] = a
            _restore_buffers(path, arrays, net, layer, lambda a: a)
        averaged = _average_into_G(path, arrays, meta, networks)
    except (KeyError, TypeError, ValueError) as exc:
        raise io.CheckpointError(f"{path}: not a usable minigan checkpoint ({type(exc).__name__}: {exc})") from exc
    for layer in networks.values():
        backend.to_device(layer)
    if averaged:  # on the device, where the trainer measured them
        model.standing_statistics(config.batch, seed=config.seed)
    return model, meta


def _average_into_G(path, arrays: dict, meta: dict, networks: dict) -> bool:
    """Put the checkpoint's average of G's weights (if it has one) into ``networks["G"]``; whether it had one."""
    state = (meta.get("parts") or {}).get(EMA_PART)
    if state is None:
        return False
    G = networks["G"]
    prefix = EMA_PART + "."
    average = WeightAverage(G, state["beta"])
    average.load_state_dict({k[len(prefix):]: _checked_array(path, k, a, G.params.get(k[len(prefix):], a))
                             for k, a in arrays.items() if k.startswith(prefix)}, state)
    for name, a in average.averaged().items():
        G.params[name][...] = a
    return True


def sample(run_dir: str | os.PathLike, n: int, label: int | None = None, seed: int = 0, truncation: float = 1.0):
    """``n`` samples from the run's generator: host ``x`` (n, 784) float32 in [0, 1] and ``y`` (n,) int64.

    Images are in [0, 1] whatever G's output activation (:meth:`~minigan.families.base.GANModel.sample` maps G's
    range onto it; the clip only removes rounding past the ends).

    For a conditional model ``label=None`` cycles through the classes (0, 1, ..., 9, 0, ...). For an
    unconditional model ``y`` is all -1 and giving a label is an error. ``truncation`` < 1 draws the noise from
    the central part of the prior (:meth:`~minigan.families.base.GANModel.sample_noise`).
    """
    _positive("n", n)
    model, _ = load_model(run_dir)
    if not model.draws_samples:
        raise ConfigError(f"{run_dir}: a {model.name} model translates images and draws no samples: use "
                          "'minigan translate RUN IMAGES... --out DIR'")
    if label is not None:
        if not model.conditional:
            raise ConfigError(f"the {model.name} model is unconditional: --label cannot be used")
        if isinstance(label, bool) or not isinstance(label, (int, np.integer)) or not 0 <= label < model.n_classes:
            raise ConfigError(f"label {label!r} is out of range: the {model.name} model has labels 0..{model.n_classes - 1}")
    x, y = model.sample(int(n), backend.Rng(seed), label=label, truncation=truncation)
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


def _translation_inputs(paths) -> list[Path]:
    """The image files named by ``paths``: files as given, folders by their PNG/JPEG files in name order."""
    from .paired import IMAGE_SUFFIXES

    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise ConfigError(f"{p}: the folder holds no PNG or JPEG images")
            files += found
        elif p.is_file():
            files.append(p)
        else:
            raise ConfigError(f"{p}: no such image file or folder")
    return files


def translate(run_dir: str | os.PathLike, paths, out_dir: str | os.PathLike, paired: bool = False) -> list[Path]:
    """Translate image files with a pix2pix run's G; one PNG per input into ``out_dir``; returns the paths written.

    Each output has its input's file name (with the suffix ``.png``) and its size, and the run's output channels.
    An input of another size than the run's images is translated at its own size (G is convolutional), after
    reflection padding up to a multiple of :math:`2^\\text{depth}` that is cropped off again. Grey inputs to a
    colour model are repeated into RGB; colour inputs to a grey model are converted to luminance (ITU-R 601).
    ``paired``: each file is an A|B pair and its input side (the run's ``direction``) is translated.
    """
    from .paired import read_image, split_pair

    model, _ = load_model(run_dir)
    if not hasattr(model, "translate"):
        raise ConfigError(f"{run_dir}: a {model.name} run does not translate images (train --model pix2pix)")
    files = _translation_inputs(paths)
    out = Path(out_dir)
    targets = [out / (f.stem + ".png") for f in files]
    seen: dict[Path, Path] = {}
    for f, t in zip(files, targets):
        if t in seen:
            raise ConfigError(f"{f} and {seen[t]} would both be written to {t}: translate them into separate folders")
        seen[t] = f
    out.mkdir(parents=True, exist_ok=True)
    multiple = 2 ** model.depth
    for f, target in zip(files, targets):
        image = read_image(f)
        if paired:
            a, _ = split_pair(image, model.direction, where=str(f))
        else:
            a = image[None] if image.ndim == 2 else image.transpose(2, 0, 1)
        a = a.astype(np.float32) / 255.0
        if a.shape[0] == 3 and model.in_channels == 1:
            a = np.tensordot(np.array([0.299, 0.587, 0.114], np.float32), a, axes=1)[None]
        elif a.shape[0] == 1 and model.in_channels == 3:
            a = np.repeat(a, 3, axis=0)
        h, w = a.shape[1:]
        ph, pw = -h % multiple, -w % multiple
        padded = np.pad(a, ((0, 0), (0, ph), (0, pw)), mode="reflect" if max(ph, pw) < min(h, w) else "edge")
        x = backend.to_device(np.ascontiguousarray(padded[None], dtype=model.dtype))
        y = np.clip(backend.to_host(model.translate(x))[0, :, :h, :w], 0.0, 1.0)
        io.write_png(target, np.rint(y.transpose(1, 2, 0) * 255.0).astype(np.uint8))
    return targets
