"""Files: the checkpoint format apart from images and plots. NumPy and the standard library only.

* :mod:`minigan.io.atomic` — atomic replacement, shared by every writer;
* :mod:`minigan.io.checkpoint` — the ``.npz`` checkpoint format, validated before NumPy parses it;
* :mod:`minigan.io.images` — image grids, PNG encoding and decoding;
* :mod:`minigan.io.plot` — loss curves (matplotlib if importable, else a built-in rasteriser).
"""

from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .images import image_grid, read_png, write_png
from .plot import plot_metrics

__all__ = ["CheckpointError", "save_checkpoint", "load_checkpoint", "image_grid", "write_png", "read_png",
           "plot_metrics"]
