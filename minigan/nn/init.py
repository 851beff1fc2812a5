"""Initial weights, drawn on the host from seeded generators so every backend starts from the same numbers."""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import backend

DEFAULT_DTYPE = np.float32


def make_generator(rng: Any) -> np.random.Generator:
    """A host NumPy Generator from an int seed, a Generator, or None (fresh entropy)."""
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.Generator(np.random.PCG64(backend.as_seed(rng)))


def init_weights(shape: tuple[int, int], init: Any, rng: Any, dtype=DEFAULT_DTYPE) -> np.ndarray:
    """Initial weights drawn on the host, so every backend starts from the same numbers.

    Parameters
    ----------
    init : float, {"glorot", "zeros"} or ("normal", std)
        A float ``r`` draws U(-r, r), the papers' ``irange`` (Goodfellow 2014: 0.05 for G, 0.005 for D).
        ``"glorot"`` (the default) draws U(±sqrt(6 / (fan_in + fan_out))), which keeps activations' variance
        roughly constant through depth. ``"zeros"`` gives zeros. ``("normal", std)`` draws N(0, std²) (DCGAN:
        std 0.02, as :func:`minigan.nn.conv.conv_init`'s ``"normal"``).
    """
    gen = make_generator(rng)
    fan_in, fan_out = shape
    if isinstance(init, str) and init == "zeros":
        return np.zeros(shape, dtype)
    if isinstance(init, tuple) and len(init) == 2 and init[0] == "normal":
        std = init[1]
        if isinstance(std, bool) or not isinstance(std, (int, float)) or not std >= 0:
            raise ValueError(f"init ('normal', std): std must be a non-negative number, got {std!r}")
        return gen.normal(0.0, float(std), size=shape).astype(dtype)
    if isinstance(init, str) and init == "glorot":
        r = np.sqrt(6.0 / (fan_in + fan_out))
    elif isinstance(init, (int, float)) and not isinstance(init, bool) and init >= 0:
        r = float(init)
    else:
        raise ValueError(f"unknown initialiser {init!r}: give a non-negative irange, 'glorot' or 'zeros'")
    return gen.uniform(-r, r, size=shape).astype(dtype)
