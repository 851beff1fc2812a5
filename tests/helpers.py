"""Small data makers shared by the test modules (tests never need the network or the real data sets)."""

import gzip
import struct
from pathlib import Path

import numpy as np

IDX_NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def write_idx_dir(directory: Path, n_train: int = 30, n_test: int = 6, seed: int = 0) -> Path:
    """The four standard IDX files (gzipped, uint8) with random pixels and labels; returns ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arrays = dict(zip(IDX_NAMES, (
        rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        rng.integers(0, 10, n_train, dtype=np.uint8),
        rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        rng.integers(0, 10, n_test, dtype=np.uint8),
    )))
    for name, arr in arrays.items():
        header = bytes((0, 0, 0x08, arr.ndim)) + struct.pack(f">{arr.ndim}I", *arr.shape)
        (directory / f"{name}.gz").write_bytes(gzip.compress(header + arr.tobytes(), mtime=0))
    return directory


def tiny_dataset(n_train: int = 20, seed: int = 0):
    """Random images in [0, 1] with labels 0..9: enough to exercise every code path of the trainer."""
    from minigan.data import Dataset, Split

    rng = np.random.default_rng(seed)

    def split(n):
        return Split(rng.random((n, 784), dtype=np.float32), rng.integers(0, 10, n).astype(np.int64))

    return Dataset("mnist", split(n_train), split(4), split(4), "synthetic")


BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_benchmark(name: str):
    """``benchmarks/<name>.py`` as a module (the scripts are not a package; some import their siblings, and
    dataclasses look their module up in ``sys.modules`` while it is being defined)."""
    import importlib.util
    import sys

    sys.path.insert(0, str(BENCHMARKS))
    try:
        spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCHMARKS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCHMARKS))
