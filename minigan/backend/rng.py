"""Random numbers on every backend: :class:`Rng` (a host PCG64 stream; counter-based draws on CuPy) and the
host reference of those draws, :func:`splitmix_uniform`."""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

from . import _parallel, get_array_module, xp
from .kernels import _SPLITMIX_GAMMA, _SPLITMIX_M1, _SPLITMIX_M2, _kernel, _scalar
from .strict import StrictArray, strict_xp




class Rng:
    """A seeded random generator drawing arrays on the backend of the array it is asked to match.

    Parameters
    ----------
    seed : int or numpy.random.SeedSequence
        Seed of the host PCG64 stream. Two Rngs with the same seed draw the same numbers on the CPU.

    Notes
    -----
    The state is the host PCG64 state (:meth:`get_state` / :meth:`set_state`, JSON-serialisable), so a run
    resumed from a checkpoint continues the very same stream. On NumPy and strict arrays the numbers come from
    that stream. On CuPy each draw takes one 64-bit key from it and computes its numbers on the GPU, element
    ``i`` being SplitMix64's ``i``-th output from the key (:func:`splitmix_uniform` is the same on the host):
    no generator state lives on the GPU, so a resumed GPU run continues the uninterrupted run's draws too.
    """

    def __init__(self, seed: int | np.random.SeedSequence = 0):
        self.host = np.random.Generator(np.random.PCG64(seed))

    # -- drawing -------------------------------------------------------------------------------
    def random(self, shape, dtype=np.float32, like: Any = None):
        """U[0, 1) array of ``shape`` and ``dtype``, on the backend of ``like`` (or the active one)."""
        namespace = get_array_module(like) if like is not None else xp()
        dtype = np.dtype(dtype)
        if namespace is np or namespace is strict_xp:
            draw = np.empty(shape, dtype)
            _parallel().random_fill(self.host, draw)  # the same values as self.host.random, on every core
            return StrictArray(draw) if namespace is strict_xp else draw
        u = namespace.empty(shape, dtype)
        self._check_device_dtype(dtype)
        _kernel("uniform")(self.device_key(), u)
        return u

    @staticmethod
    def _check_device_dtype(dtype) -> None:
        if dtype not in (np.float32, np.float64):
            raise TypeError(f"Rng: GPU draws are float32 or float64, got {dtype}")

    def device_key(self) -> np.uint64:
        """The key of the next counter-based draw on the GPU: one 64-bit number from the host stream."""
        return self.host.integers(0, 2**64, dtype=np.uint64)

    def uniform(self, low: float, high: float, shape, dtype=np.float32, like: Any = None):
        """U[low, high) array of ``shape`` and ``dtype`` on the backend of ``like`` (or the active one): the
        :meth:`random` draw times ``high - low`` plus ``low`` (two roundings; on CuPy in the drawing kernel)."""
        namespace = get_array_module(like) if like is not None else xp()
        if namespace is not np and namespace is not strict_xp:
            u = namespace.empty(shape, np.dtype(dtype))
            self._check_device_dtype(u.dtype)
            _kernel("uniform_affine")(self.device_key(), _scalar(u, high - low), _scalar(u, low), u)
            return u
        u = self.random(shape, dtype, like)
        u *= high - low
        u += low
        return u

    def permutation(self, n: int) -> np.ndarray:
        """A host permutation of range(n) (data shuffling happens on the host)."""
        return self.host.permutation(n)

    # -- state -----------------------------------------------------------------------------------
    def get_state(self) -> dict:
        """JSON-serialisable state (PCG64's 128-bit integers as decimal strings)."""
        state = self.host.bit_generator.state
        return {
            "bit_generator": state["bit_generator"],
            "state": {k: str(v) for k, v in state["state"].items()},
            "has_uint32": int(state["has_uint32"]),
            "uinteger": int(state["uinteger"]),
        }

    def set_state(self, state: dict) -> None:
        """Restore a state returned by :meth:`get_state`."""
        if not isinstance(state, dict) or state.get("bit_generator") != "PCG64":
            raise ValueError(f"not a PCG64 generator state: {state!r:.200}")
        self.host.bit_generator.state = {
            "bit_generator": "PCG64",
            "state": {k: int(v) for k, v in state["state"].items()},
            "has_uint32": int(state["has_uint32"]),
            "uinteger": int(state["uinteger"]),
        }


def splitmix_uniform(key: int, shape, dtype=np.float32) -> np.ndarray:
    """On the host, the U[0, 1) numbers that a CuPy draw with ``key`` computes (``Rng.random`` on CuPy).

    Element ``i`` (C order) is SplitMix64's ``i``-th output from state ``key`` (Steele, Lea & Flood 2014:
    ``mix(key + (i+1)·0x9E3779B97F4A7C15)``), scaled from its top 24 bits for float32 or 53 for float64.
    The reference the GPU kernels are tested against.
    """
    dtype = np.dtype(dtype)
    shape = tuple(shape) if isinstance(shape, (tuple, list)) else (int(shape),)
    z = np.uint64(key) + np.arange(1, math.prod(shape) + 1, dtype=np.uint64) * np.uint64(_SPLITMIX_GAMMA)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(_SPLITMIX_M1)  # uint64 arithmetic wraps mod 2**64, as in C
    z = (z ^ (z >> np.uint64(27))) * np.uint64(_SPLITMIX_M2)
    z ^= z >> np.uint64(31)
    if dtype == np.float32:
        u = (z >> np.uint64(40)).astype(np.float32) * np.float32(2.0**-24)
    elif dtype == np.float64:
        u = (z >> np.uint64(11)).astype(np.float64) * 2.0**-53
    else:
        raise TypeError(f"splitmix_uniform: dtype must be float32 or float64, got {dtype}")
    return u.reshape(shape)


def as_seed(seed: Any) -> int | np.random.SeedSequence:
    """Accept an int, a SeedSequence or None (fresh OS entropy) as a seed."""
    if seed is None:
        return np.random.SeedSequence()
    if isinstance(seed, (np.random.SeedSequence, numbers.Integral)):
        return seed
    raise TypeError(f"a seed must be an int, a numpy SeedSequence or None, got {type(seed).__name__}")
