"""Model families, one module each; every ``--model`` name maps to a :class:`~minigan.families.base.Family`.

* :mod:`minigan.families.base` — :class:`GANModel` (networks, noise prior, conditioning, G's output range),
  :class:`Family` (what a family defines for the shared trainer) and :class:`AdversarialFamily` (the GAN game's
  alternating and one-pass updates);
* :mod:`minigan.families.mlp` — the papers' MLPs: ``gan`` (Goodfellow et al. 2014), ``cgan`` (Mirza & Osindero
  2014);
* :mod:`minigan.families.dcgan` — ``dcgan`` and ``cdcgan`` for 28×28 images (Radford et al. 2016);
* :mod:`minigan.families.pix2pix` — ``pix2pix``: image-to-image translation (Isola et al. 2017), a U-Net and a
  PatchGAN on paired images.

Adding a family is one new module (its builder and its :class:`Family` subclass) and one entry in
:data:`FAMILIES` below; the trainer, checkpoints, sampling and evaluation need no edit.
"""

from __future__ import annotations

from . import dcgan, mlp, pix2pix
from .base import IMAGE_SIZE, N_CLASSES, AdversarialFamily, Family, GANModel

__all__ = ["FAMILIES", "MODELS", "get", "build", "Family", "AdversarialFamily", "GANModel", "IMAGE_SIZE",
           "N_CLASSES"]

#: Every model by its ``--model`` name.
FAMILIES: dict[str, type[Family]] = {f.name: f for f in (mlp.CGAN, mlp.GAN, dcgan.DCGAN, dcgan.CDCGAN,
                                                          pix2pix.Pix2Pix)}
MODELS = tuple(FAMILIES)


def get(name: str) -> type[Family]:
    """The family class of model ``name`` (ValueError naming the choices if there is none)."""
    try:
        return FAMILIES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}") from None


def build(name: str, seed: int | None = 0, **options) -> GANModel:
    """Model ``name``'s networks, seeded from ``seed``, with its builder's keyword ``options``."""
    return get(name).build(seed, **options)
