"""The converted cache ``<cache>/<name>.npz``: where it lives, reading it back, writing it atomically.

Holds :func:`cache_dir_default` and the cache's reader (every array checked as when it entered the program;
any problem is a :class:`~minigan.data.DataError`, so the caller rebuilds it) and writer (a failure only costs
speed later).  The file is in the checkpoint format of :mod:`minigan.io.checkpoint`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from ..io import checkpoint as checkpoint_io
from .base import DataError, Dataset, Split, _check_images, _check_labels


def cache_dir_default() -> Path:
    """Return the default cache directory.

    Returns
    -------
    Path
        ``$MINIGAN_DATA`` if set and non-empty, else ``~/.cache/minigan``.
    """
    env = os.environ.get("MINIGAN_DATA", "").strip()
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "minigan"


_CACHE_KEYS = ("x_train", "y_train", "x_valid", "y_valid", "x_test", "y_test")


def _read_cache(path: Path, name: str) -> Dataset:
    """Load and validate the cache; any problem raises DataError.

    The cache is a checkpoint-format .npz (:mod:`minigan.io`), so it gets the same checks before anything is
    allocated: every array header against the bytes actually stored, no object arrays, no zip bombs.
    """
    try:
        arrays, meta = checkpoint_io.load_checkpoint(path)
    except checkpoint_io.CheckpointError as e:
        raise DataError(f"cache {path} is corrupt: {e}") from None
    missing = [k for k in _CACHE_KEYS if k not in arrays]
    if missing or meta.get("dataset") != name:
        raise DataError(f"cache {path} is corrupt: missing arrays {missing} or not a {name} cache")
    splits = {}
    for part in ("train", "valid", "test"):
        w = f"cache {path} [{part}]"
        x = _check_images(arrays[f"x_{part}"], w)
        y = _check_labels(arrays[f"y_{part}"], w)
        if len(x) != len(y):
            raise DataError(f"{w}: {len(x)} images but {len(y)} labels")
        if len(y) == 0:
            raise DataError(f"{w}: split is empty")
        splits[part] = Split(x, y)
    return Dataset(name=name, source=f"cache {path} (built from {meta.get('source', 'unknown source')})", **splits)


def _write_cache(path: Path, ds: Dataset, log: Callable) -> None:
    """Write the cache atomically (uncompressed: loading stored float32 beats inflating it); failure only
    costs speed later."""
    arrays = {"x_train": ds.train.x, "y_train": ds.train.y, "x_valid": ds.valid.x, "y_valid": ds.valid.y,
              "x_test": ds.test.x, "y_test": ds.test.y}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        checkpoint_io.save_checkpoint(path, arrays, {"dataset": ds.name, "source": ds.source})
        log(f"minigan.data: wrote cache {path}")
    except (OSError, checkpoint_io.CheckpointError) as e:
        log(f"minigan.data: warning: could not write cache {path} ({e}); "
            f"the next run will convert the data again")
