"""Argument and input validation shared by the nn layers: one clear ValueError naming the layer."""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import backend
from . import base as _base
from ..backend import get_array_module
from .base import Layer, _describe


def pair(value: Any, what: str, owner: str, minimum: int = 0) -> tuple[int, int]:
    """``value`` as a (height, width) pair of ints >= ``minimum``: an int means the same for both."""
    items = value if isinstance(value, (tuple, list)) else (value, value)
    if len(items) != 2 or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= minimum
                                  for v in items):
        raise ValueError(f"{owner}: {what} must be an int >= {minimum} or a pair of them, got {value!r}")
    return int(items[0]), int(items[1])


def positive_int(value: Any, what: str, owner: str) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{owner}: {what} must be a positive integer, got {value!r}")
    return int(value)


def check_batch(layer: Layer, x: Any, channels: int | None, ndims: tuple[int, ...] = (4,),
                layout: str = "(N, C, H, W)") -> None:
    """Raise a ValueError naming the layer, what it expected and what it received.

    ``x`` must be an array with one of ``ndims`` dimensions and ``channels`` entries along axis 1 (None: any);
    a layer with parameters also requires the parameters' floating-point dtype.
    """
    kind = type(layer).__name__
    if not (hasattr(x, "ndim") and hasattr(x, "shape") and hasattr(x, "dtype")):
        raise ValueError(f"{kind} {layer.path}: expected an array of shape {layout}, received {_describe(x)}")
    if x.ndim not in ndims:
        raise ValueError(f"{kind} {layer.path}: expected a batch of shape {layout}, received {_describe(x)}")
    if channels is not None and x.shape[1] != channels:
        raise ValueError(f"{kind} {layer.path}: expected {channels} channels (axis 1 of {layout}), "
                         f"received shape {tuple(x.shape)}")
    if x.dtype.kind != "f":
        raise ValueError(f"{kind} {layer.path}: expected a floating-point input, received dtype {x.dtype}")
    if layer.dtype is not None and x.dtype != layer.dtype:
        raise ValueError(f"{kind} {layer.path}: expected dtype {layer.dtype} (the model's), received dtype "
                         f"{x.dtype}; cast the input, or the model with .astype()")
    if layer.params and _base._check_finite:  # see minigan.nn.base.checking_finite_inputs
        xp = get_array_module(x)
        if not bool(backend.to_host(xp.isfinite(x).all())):
            raise ValueError(f"{kind} {layer.path}: input holds NaN or Inf values")
