r"""Paired image data for image-to-image translation (pix2pix): the original folder format and two built-in tasks.

Every split is a :class:`PairedSplit`: inputs ``a`` and targets ``b``, each (N, C, H, W) float32 in [0, 1]
(C = 1 grey or 3 RGB), one pair per row, with class labels ``y`` where the task has them (else -1) and the file
names where the pairs came from files. "Input" and "target" are after ``direction``: ``a`` is always what G reads.

The pix2pix folder format
-------------------------
``DIR/train/``, ``DIR/val/`` and ``DIR/test/`` (only ``train/`` is required) hold image files, each one pair:
the A image and the B image side by side, A on the left (facades, maps, edges2shoes… ship so). ``direction``
``"AtoB"`` (default) translates the left half into the right one, ``"BtoA"`` the right into the left. Files are
read in name order; PNG by minigan itself (:func:`minigan.io.read_png`: 8-bit grey, grey+alpha, RGB, RGBA;
alpha is dropped), JPEG through the optional Pillow (``pip install 'minigan[images]'``). If any file has colour,
grey ones are repeated into RGB. Other files (``.txt``, ``.DS_Store``…) are skipped.

Images keep their size: a folder of 64×32 files trains at 32×32. Otherwise, as in the paper (which resizes
256 px pairs to 286 and crops 256 at random):

* ``load_size`` S resizes every half to S×S on loading (bilinear, half-pixel centres);
* ``crop_size`` C: training pairs are cropped to a random C×C square each time they are drawn (the family does
  it, :meth:`minigan.families.pix2pix.Pix2Pix.augment`); validation and test pairs are centre-cropped here;
* ``flip`` (a model option): training pairs are mirrored left-right at random.

Every file of a split must have the same size (unless ``load_size`` resizes them) and an even width; a missing
folder, an empty ``train/``, an odd width, a mismatched size, or an unreadable or corrupt file stops loading
with one :class:`~minigan.data.DataError` naming the file.

Built-in tasks (no download: derived from the MNIST / Fashion-MNIST of :func:`minigan.data.load_dataset`)
------------------------------------------------------------------------------------------------------------
Both keep the source's split (train 50,000 / valid 10,000 / test 10,000, :mod:`minigan.data`) and labels, and
pad the 28×28 images with 2 black pixels on every side to 32×32 (so the U-Net has 5 levels).

``fashion-edges``
    Edges → garment. Input: a binary edge map computed by minigan from the padded Fashion-MNIST image, the
    Sobel gradient magnitude :math:`\sqrt{g_x^2 + g_y^2}` (3×3 Sobel kernels, zero padding, pixels in [0, 1])
    thresholded at :data:`EDGE_THRESHOLD` = 1.0 (about 21% of pixels are edges: outlines and the strongest
    texture lines); target: the padded grey image. The edges are a deterministic function of the target, like
    the HED edges of the paper's edges2shoes, but simpler: it is a *synthetic* pairing, not a drawing task.
``mnist-inpaint``
    Half a digit → the whole digit. Input: the padded MNIST digit with its bottom half (rows 16–31) replaced by
    grey 0.5, which marks the hole (0 is MNIST's background); target: the padded digit. Many digits are ambiguous
    from their top half alone (7 / 9, 3 / 5 …), so this is a task where L1 alone must blur.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from . import data, io
from .data import DataError, Dataset

__all__ = ["PairedSplit", "TASKS", "EDGE_THRESHOLD", "check_paired_name", "load_paired", "load_folder",
           "fashion_edges", "mnist_inpaint", "sobel_magnitude", "pad_to_32", "read_image", "split_pair", "resize",
           "center_crop", "IMAGE_SUFFIXES"]

TASKS = ("fashion-edges", "mnist-inpaint")
SPLITS = ("train", "val", "test")
EDGE_THRESHOLD = 1.0
INPAINT_FILL = 0.5
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
SIDE = 28


@dataclass
class PairedSplit:
    """One split of paired images: inputs ``a`` and targets ``b``, (N, C, H, W) float32 in [0, 1]."""

    a: np.ndarray
    b: np.ndarray
    y: np.ndarray
    names: tuple | None = None

    def __post_init__(self) -> None:
        for what, arr in (("a", self.a), ("b", self.b)):
            if not isinstance(arr, np.ndarray) or arr.ndim != 4:
                raise DataError(f"PairedSplit.{what} must be a 4-D (N, C, H, W) array, got shape "
                                f"{getattr(arr, 'shape', None)}")
        if len(self.a) != len(self.b) or len(self.a) != len(self.y):
            raise DataError(f"PairedSplit has {len(self.a)} inputs, {len(self.b)} targets and {len(self.y)} labels")
        if self.a.shape[2:] != self.b.shape[2:]:
            raise DataError(f"PairedSplit: inputs are {self.a.shape[2:]}, targets {self.b.shape[2:]}")

    def __len__(self) -> int:
        return len(self.y)


def check_paired_name(name: str) -> None:
    """ValueError unless ``name`` is a built-in paired task or can be a folder (an MNIST name is neither)."""
    if name in TASKS:
        return
    if name in data.DATASET_NAMES or not name.strip():
        raise ValueError(f"pix2pix trains on paired images: --dataset {' or '.join(TASKS)}, or a folder DIR in the "
                         f"pix2pix layout (DIR/train, DIR/val, DIR/test of A|B images), not {name!r}")


def load_paired(name: str, direction: str = "AtoB", load_size: int | None = None, crop_size: int | None = None,
                data_dir=None, log: Callable | None = print) -> Dataset:
    """A built-in task by name (its source read from ``data_dir`` if given), else the folder ``name``."""
    log = log or (lambda *_: None)
    t0 = time.perf_counter()
    if name in TASKS:
        source = data.load_dataset("fashion-mnist" if name == "fashion-edges" else "mnist", data_dir=data_dir, log=log)
        make = fashion_edges if name == "fashion-edges" else mnist_inpaint
        ds = Dataset(name, *(make(s) for s in (source.train, source.valid, source.test)),
                     source=f"{name} derived from {source.source}")
        if load_size is not None or crop_size is not None:
            ds = _resized(ds, load_size, crop_size)
    else:
        check_paired_name(name)
        ds = load_folder(name, direction, load_size, crop_size)
    log(f"minigan.paired: {name}: train {len(ds.train)}, valid {len(ds.valid)}, test {len(ds.test)} pairs of "
        f"{ds.train.a.shape[1]} -> {ds.train.b.shape[1]} channels at {ds.train.a.shape[2]}x{ds.train.a.shape[3]} "
        f"({time.perf_counter() - t0:.2f} s)")
    return ds


# ---------------------------------------------------------------------------
# Built-in tasks
# ---------------------------------------------------------------------------


def pad_to_32(x: np.ndarray) -> np.ndarray:
    """(N, 784) images in [0, 1] -> (N, 1, 32, 32), 2 black pixels added on every side."""
    images = np.asarray(x, np.float32).reshape(-1, 1, SIDE, SIDE)
    return np.pad(images, ((0, 0), (0, 0), (2, 2), (2, 2)))


def sobel_magnitude(images: np.ndarray) -> np.ndarray:
    r"""Sobel gradient magnitude :math:`\sqrt{g_x^2 + g_y^2}` of (N, C, H, W) images, zero-padded at the border.

    :math:`g_x` correlates with [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]] and :math:`g_y` with its transpose.
    """
    q = np.pad(np.asarray(images, np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    h, w = images.shape[2:]

    def at(i, j):
        return q[:, :, i:i + h, j:j + w]

    gx = (at(0, 2) + 2 * at(1, 2) + at(2, 2)) - (at(0, 0) + 2 * at(1, 0) + at(2, 0))
    gy = (at(2, 0) + 2 * at(2, 1) + at(2, 2)) - (at(0, 0) + 2 * at(0, 1) + at(0, 2))
    return np.hypot(gx, gy)


def fashion_edges(split: data.Split) -> PairedSplit:
    """The ``fashion-edges`` pairs of one Fashion-MNIST split (module docstring)."""
    b = pad_to_32(split.x)
    a = (sobel_magnitude(b) > EDGE_THRESHOLD).astype(np.float32)
    return PairedSplit(a, b, np.asarray(split.y, np.int64))


def mnist_inpaint(split: data.Split) -> PairedSplit:
    """The ``mnist-inpaint`` pairs of one MNIST split (module docstring)."""
    b = pad_to_32(split.x)
    a = b.copy()
    a[:, :, 16:, :] = INPAINT_FILL
    return PairedSplit(a, b, np.asarray(split.y, np.int64))


# ---------------------------------------------------------------------------
# The folder format
# ---------------------------------------------------------------------------


def read_image(path) -> np.ndarray:
    """An image file as uint8 (H, W) grey or (H, W, 3) RGB (alpha dropped); DataError naming the file if not."""
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if suffix == ".png":
            image = io.read_png(path)
        elif suffix in (".jpg", ".jpeg"):
            image = _read_jpeg(path)
        else:
            raise DataError(f"{path}: not a PNG or JPEG file")
    except ValueError as exc:  # read_png's corrupt-file errors
        raise DataError(str(exc)) from None
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if image.ndim == 3 and image.shape[2] in (2, 4):
        image = image[:, :, :-1]
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    return np.ascontiguousarray(image)


def _read_jpeg(path: Path) -> np.ndarray:
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:
        raise DataError(f"{path}: reading JPEG images needs Pillow, an optional extra: pip install 'minigan[images]' "
                        "(or pip install Pillow), or convert the files to PNG") from None
    try:
        with Image.open(path) as im:
            im = im.convert("L" if im.mode in ("1", "L", "LA", "I", "I;16", "F") else "RGB")
            return np.asarray(im, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise DataError(f"{path}: not a readable JPEG image ({exc})") from None


def split_pair(image: np.ndarray, direction: str = "AtoB", where: str = "image") -> tuple[np.ndarray, np.ndarray]:
    """(input, target) halves of an A|B image (H, W[, 3]), as (C, H, W/2) uint8 arrays, by ``direction``."""
    w = image.shape[1]
    if w % 2:
        raise DataError(f"{where}: width {w} is odd; a pix2pix file holds A and B side by side (width 2 x W)")
    chw = image[None] if image.ndim == 2 else image.transpose(2, 0, 1)
    left, right = chw[:, :, :w // 2], chw[:, :, w // 2:]
    return (left, right) if direction == "AtoB" else (right, left)


def resize(images: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of (N, C, H, W) float images (half-pixel centres, edges clamped), one matrix per axis."""

    def weights(n_in: int, n_out: int) -> np.ndarray:
        centres = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
        centres = np.clip(centres, 0, n_in - 1)
        low = np.floor(centres).astype(np.int64)
        high = np.minimum(low + 1, n_in - 1)
        frac = centres - low
        m = np.zeros((n_out, n_in))
        np.add.at(m, (np.arange(n_out), low), 1 - frac)
        np.add.at(m, (np.arange(n_out), high), frac)
        return m

    rows, cols = weights(images.shape[2], height), weights(images.shape[3], width)
    out = np.einsum("ph,nchw,qw->ncpq", rows, images.astype(np.float64), cols, optimize=True)
    return out.astype(np.float32)


def center_crop(images: np.ndarray, size: int) -> np.ndarray:
    h, w = images.shape[2:]
    top, left = (h - size) // 2, (w - size) // 2
    return np.ascontiguousarray(images[:, :, top:top + size, left:left + size])


def _resized(ds: Dataset, load_size: int | None, crop_size: int | None) -> Dataset:
    """``ds`` with every split resized to ``load_size`` and the held-out splits centre-cropped to ``crop_size``."""

    def fix(split: PairedSplit, crop: bool) -> PairedSplit:
        a, b = split.a, split.b
        if load_size is not None and len(a):
            a, b = resize(a, load_size, load_size), resize(b, load_size, load_size)
        if crop and crop_size is not None and len(a):
            a, b = center_crop(a, crop_size), center_crop(b, crop_size)
        return PairedSplit(a, b, split.y, split.names)

    size = load_size or min(ds.train.a.shape[2:])
    if crop_size is not None and crop_size > size:
        raise DataError(f"crop_size {crop_size} is larger than the images ({size} px)")
    return Dataset(ds.name, fix(ds.train, False), fix(ds.valid, True), fix(ds.test, True), ds.source)


def _image_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def load_folder(path, direction: str = "AtoB", load_size: int | None = None,
                crop_size: int | None = None) -> Dataset:
    """The pix2pix folder ``path`` (module docstring) as a :class:`~minigan.data.Dataset` of :class:`PairedSplit`."""
    root = Path(path).expanduser()
    if direction not in ("AtoB", "BtoA"):
        raise DataError(f"direction must be AtoB or BtoA, got {direction!r}")
    if not root.is_dir():
        raise DataError(f"{root}: no such folder (a pix2pix dataset is a folder with train/, val/ and test/ "
                        "subfolders of A|B images)")
    if not (root / "train").is_dir():
        raise DataError(f"{root}: no train/ subfolder (the pix2pix layout: {root}/train, {root}/val, {root}/test, "
                        "each of images holding A and B side by side)")
    halves: dict[str, list] = {}
    names: dict[str, tuple] = {}
    for split in SPLITS:
        folder = root / split
        files = _image_files(folder) if folder.is_dir() else []
        if split == "train" and not files:
            raise DataError(f"{folder}: no PNG or JPEG images")
        pairs = []
        for f in files:
            pairs.append(split_pair(read_image(f), direction, where=str(f)))
        halves[split], names[split] = pairs, tuple(f.name for f in files)
    everything = [h for pairs in halves.values() for pair in pairs for h in pair]
    channels = 3 if any(h.shape[0] == 3 for h in everything) else 1
    if load_size is None:
        first = halves["train"][0][0].shape[1:]
        for split in SPLITS:
            for name, (a, _) in zip(names[split], halves[split]):
                if a.shape[1:] != first:
                    raise DataError(f"{root / split / name}: its halves are {a.shape[2]}x{a.shape[1]} (W x H), those "
                                    f"of {root / 'train' / names['train'][0]} {first[1]}x{first[0]}; every file must "
                                    "have the same size (or resize them all with the load_size option)")

    def stack(pairs, side):
        images = []
        for pair in pairs:
            x = pair[side].astype(np.float32) / 255.0
            if x.shape[0] != channels:
                x = np.repeat(x, channels, axis=0)
            if load_size is not None:
                x = resize(x[None], load_size, load_size)[0]
            images.append(x)
        if not images:
            size = (load_size, load_size) if load_size else halves["train"][0][0].shape[1:]
            return np.zeros((0, channels) + tuple(size), np.float32)
        return np.stack(images)

    splits = {}
    for split in SPLITS:
        a, b = stack(halves[split], 0), stack(halves[split], 1)
        if crop_size is not None:
            side = min(a.shape[2:])
            if crop_size > side:
                raise DataError(f"crop_size {crop_size} is larger than the images ({a.shape[2]}x{a.shape[3]})")
            if split != "train":
                a, b = center_crop(a, crop_size), center_crop(b, crop_size)
        splits[split] = PairedSplit(a, b, np.full(len(a), -1, np.int64), names[split])
    return Dataset(os.fspath(path), splits["train"], splits["val"], splits["test"],
                   source=f"pix2pix folder {root} ({direction})")
