"""Inverted dropout with its own seeded generator (its state goes into checkpoints)."""

from __future__ import annotations

from typing import Any

from .. import backend
from .base import Layer

__all__ = ["Dropout"]


class Dropout(Layer):
    r"""Inverted dropout: in training, :math:`y = x \odot m` with :math:`m_{ki} = [u_{ki} \ge p]/(1-p)`,
    :math:`u \sim U[0,1)`; at evaluation :math:`y = x`. Scaling by :math:`1/(1-p)` keeps
    :math:`\mathbb{E}[y] = x`, so evaluation needs no rescaling.

    Gradient: :math:`y` is linear in :math:`x` for a fixed mask, so :math:`\partial L/\partial X = G \odot m`
    (and :math:`G` at evaluation).

    Parameters
    ----------
    p : float in [0, 1)
        Probability of *dropping* a unit (pylearn2's ``include_prob`` is ``1 - p``).
    seed : int, SeedSequence or None
        Seed of this layer's own generator.

    Notes
    -----
    :meth:`freeze` keeps the current mask for later training forwards of the same shape (gradient checks
    need the function to stay fixed while they perturb it); :meth:`unfreeze` goes back to fresh masks.
    """

    def __init__(self, p: float = 0.5, seed: Any = None, name: str | None = None):
        super().__init__(name)
        if not (isinstance(p, (int, float)) and 0 <= p < 1):
            raise ValueError(f"Dropout: p (the drop probability) must be in [0, 1), got {p!r}")
        self.p = float(p)
        self.rng = backend.Rng(backend.as_seed(seed))
        self.frozen = False
        self._mask = None
        self._active = False

    def forward(self, x, train: bool | None = None):
        self._active = self._mode(train) and self.p > 0
        if not self._active:
            return x
        if self.frozen and self._mask is not None and self._mask.shape == x.shape:
            return x * self._mask
        # u ~ U[0, 1) becomes the mask [u >= p] / (1 - p) in place (no bool temporary), and y = x * mask: the
        # draw and three passes block by block on every core on the CPU, one kernel on CuPy (backend.dropout_draw).
        y, self._mask = backend.dropout_draw(x, self.rng, self.p)
        return y

    def backward(self, dout):
        return dout * self._mask if self._active else dout

    def freeze(self) -> None:
        self.frozen = True

    def unfreeze(self) -> None:
        self.frozen = False

    def rngs(self):
        return {"rng": self.rng}

    def _forget(self):
        self._mask = None
