r"""The DCGAN family for 28×28 images: ``dcgan`` and its conditional ``cdcgan`` (Radford et al. 2016).

Networks (``width`` w = 64 by default; shapes per image, NCHW):

.. code-block:: text

    G   z (100) [+ one-hot y (10)] -> Linear -> (2w, 7, 7) -> BatchNorm -> ReLU
        -> ConvT 4/2/1 -> (w, 14, 14) -> BatchNorm -> ReLU
        -> ConvT 4/2/1 -> (1, 28, 28) -> Tanh -> flattened (784)
    D   (784) -> (1, 28, 28) -> Conv 4/2/1 -> (w, 14, 14) -> LeakyReLU 0.2
        -> Conv 4/2/1 -> (2w, 7, 7) -> BatchNorm [none: d_norm] -> LeakyReLU 0.2 [-> minibatch std: (2w+1, 7, 7)]
        -> flattened h (2w·49, or (2w+1)·49)
        -> dcgan: Linear -> 1 logit;  cdcgan: projection head  h·w + b + <h, E y>

As in the paper and its code: kernel 4, stride 2, padding 1 (28 -> 14 -> 7); BatchNorm everywhere except D's
first layer and G's output; ReLU in G, LeakyReLU 0.2 in D; a Tanh output, so the images D sees are scaled to
[-1, 1] (:attr:`~minigan.families.base.GANModel.output_range`); every weight N(0, 0.02) and biases 0 (BatchNorm
starts at γ = 1, β = 0); noise U(-1, 1)^100 (``dcgan_code``'s prior); Adam 2e-4, β1 0.5 (the ``modern``
preset, the only one these models take; both its DCGANs train G at 4e-4 with D without the BatchNorm after its
second convolution (``d_norm=None``), and its conditional DCGAN samples from a 0.999 moving average of G's weights
and gives D the matching-aware step (below); measured in docs/RESULTS.md). Layers followed by a BatchNorm have no
bias: it would cancel.

**D sees real and fake images as two batches** (:func:`minigan.objective.discriminator_step` with
``separate=True``), each normalised by its own BatchNorm statistics where D has one (``d_norm="batchnorm"``,
Radford et al.'s D), as the DCGAN code does. One joint batch
would normalise fakes by statistics half made of real images, so D's output on a fake would depend on the real
images beside it; and G's step (fakes alone through D) would see other statistics than D's step did.

The condition (``cdcgan``):

* In G the one-hot label joins z at the input (the concatenation [z, y] into the first Linear is a learned
  per-class embedding added to the projected noise), so every unit G computes sees both. With the option
  ``g_condition="batchnorm"`` it also sets a per-class gain and offset of every channel at both of G's
  BatchNorms (class-conditional BatchNorm, as in Miyato & Koyama's generator).
* In D it enters through a **projection** (Miyato & Koyama 2018, :class:`~minigan.nn.dense.ProjectionHead`):
  the logit gains :math:`\langle h, E_D y\rangle` on D's last features. Why not the label as 10 extra input
  channels: at the first convolution, constant one-hot planes only add a learned per-class bias map to the
  pre-activations (exactly that, up to the zero-padded border), so D can read the label only after learning
  an image-label interaction through its nonlinearities -- and in this project's MLP CGAN, a D that was slow
  to read labels let G's label pathway go unused (docs/RESULTS.md). The projection scores whether an image
  matches its label from the first update, on the features D learns anyway, at the cost of one
  (2w·49)-wide inner product per row instead of 10 more input channels in the first convolution (which would
  make it 11 times as costly).
* D also learns from real images paired with wrong labels, scored as fakes (the matching-aware step, the
  ``modern`` preset's; ``--matching-aware``): the fakes carry the real batch's labels, so nothing else rewards D
  for reading the label. Without its BatchNorm, D read the labels worse until it had this term; with it, the
  labels read 99.8-99.9% on four runs (docs/RESULTS.md).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..nn import (DEFAULT_DTYPE, BatchNorm, Conditioned, ConditionalBatchNorm, Conv2d, ConvTranspose2d, Flatten,
                  Identity, Join, LeakyReLU, Linear, MinibatchStdDev, ProjectionHead, ReLU, Reshape, Sequential, Tanh)
from .base import N_CLASSES, AdversarialFamily, GANModel

__all__ = ["DCGAN", "CDCGAN", "dcgan", "cdcgan", "NOISE_DIM"]

NOISE_DIM = 100
SIDE = 28
#: Where a conditional G reads its label: at its input only, or at every BatchNorm too.
G_CONDITIONS = ("input", "batchnorm")
#: What normalises D's second convolution: BatchNorm (the paper's), or nothing (None; "none" from the command line,
#: which reads it as None; the layer then has a bias).
D_NORMS = ("batchnorm", None)


def _seeds(seed: int | None, n: int) -> list[int]:
    return [int(s.generate_state(1)[0]) for s in np.random.SeedSequence(seed).spawn(n)]


def _check_width(width: Any) -> int:
    if isinstance(width, bool) or not isinstance(width, (int, np.integer)) or width < 1:
        raise ValueError(f"dcgan: width must be a positive integer, got {width!r}")
    return int(width)


def dcgan(seed: int | None = 0, dtype=DEFAULT_DTYPE, width: int = 64, init_std: float = 0.02, slope: float = 0.2,
          conditional: bool = False, g_condition: str = "input", d_minibatch_std: int = 0,
          d_norm: str | None = "batchnorm") -> GANModel:
    """The DCGAN for 28×28 single-channel images (module docstring); ``conditional`` gives :func:`cdcgan`.

    Parameters
    ----------
    seed : int or None
        Seeds every initial weight (one generator per layer, spawned from this seed).
    width : int
        w: G's and D's channels are w and 2w (Radford et al.'s 28×28 setting: 64 and 128).
    init_std : float
        Standard deviation of the N(0, std²) initial weights.
    slope : float
        D's LeakyReLU slope.
    g_condition : {"input", "batchnorm"}
        Conditional models only. ``"input"`` (default): the label joins z at G's input. ``"batchnorm"``: also
        class-conditional BatchNorm at G's two BatchNorms (:class:`~minigan.nn.norm.ConditionalBatchNorm`, a
        per-class gain and offset of every channel, starting at zero; Miyato & Koyama 2018's generator), G then
        being a :class:`~minigan.nn.containers.Conditioned` network. The other weights are drawn as for
        ``"input"``, so one seed starts both from the same G.
    d_minibatch_std : int
        0 (default): off. g >= 2: D's last features gain one channel, the standard deviation of its features over
        groups of g rows of the batch (:class:`~minigan.nn.minibatch.MinibatchStdDev`, Karras et al. 2018), so D
        can score a batch of fakes that varies less than a real one; the batch size must be a multiple of g
        (or smaller than g: one group).
        Every weight but D's output layer's (one channel wider) is drawn as without it.
    d_norm : {"batchnorm", None}
        ``"batchnorm"`` (this builder's default, Radford et al.'s D): D's second convolution is batch-normalised.
        None (the ``modern`` preset's choice for both models, or
        ``"none"``; ``--option d_norm=none``): it is not, and has a bias (starting at 0) instead. D then scores
        each image on its own: with BatchNorm, a batch of fakes is normalised by its own per-channel mean and
        spread, which removes from every fake's features whatever the whole batch shares -- among it, which
        digits the batch has too many of. Every other weight is drawn as with BatchNorm. Measured on the
        unconditional DCGAN (docs/RESULTS.md, seven untuned seeds): D is weaker without it, and with G at 4e-4
        every digit was drawn at 7-13% after 10 epochs on six of seven by each reading (10,000 and 100,000
        samples; five of seven by both; each miss within 0.3 points), which no run with BatchNorm reached. On the
        conditional DCGAN it lowered the FID (1.43-1.47x real against 2.32-2.41x) but read the labels worse, which
        the matching-aware step won back (the ``modern`` preset has both).
    """
    w = _check_width(width)
    spread = d_minibatch_std
    if isinstance(spread, bool) or not isinstance(spread, (int, np.integer)) or spread < 0 or spread == 1:
        raise ValueError(f"dcgan: d_minibatch_std must be a group size >= 2, or 0 for none, got {spread!r}")
    d_norm = None if d_norm == "none" else d_norm
    if d_norm not in D_NORMS:
        raise ValueError(f"dcgan: d_norm must be batchnorm or none, got {d_norm!r}")
    if g_condition not in G_CONDITIONS:
        raise ValueError(f"dcgan: g_condition must be one of {', '.join(G_CONDITIONS)}, got {g_condition!r}")
    if g_condition != "input" and not conditional:
        raise ValueError("dcgan: g_condition applies to the conditional model (cdcgan) only")
    if g_condition == "batchnorm":
        def norm(channels, name):
            return ConditionalBatchNorm(channels, N_CLASSES, dtype=dtype, name=name)
    else:
        def norm(channels, name):
            return BatchNorm(channels, dtype=dtype, name=name)
    s = iter(_seeds(seed, 16))
    normal = ("normal", init_std)
    conv = dict(init="normal", init_std=init_std, dtype=dtype)
    g_in = NOISE_DIM + (N_CLASSES if conditional else 0)
    G = Sequential(
        *([Join({"z": Identity(), "y": Identity()}, name="in")] if conditional else []),
        Linear(g_in, 2 * w * 7 * 7, normal, next(s), dtype, name="project"),
        Reshape(2 * w, 7, 7),
        norm(2 * w, "bn0"),
        ReLU(),
        ConvTranspose2d(2 * w, w, 4, 2, 1, bias=False, rng=next(s), name="up1", **conv),
        norm(w, "bn1"),
        ReLU(),
        ConvTranspose2d(w, 1, 4, 2, 1, rng=next(s), name="out", **conv),
        Tanh(),
        Flatten(),
        name="G" if g_condition == "input" else "net",
    )
    if g_condition == "batchnorm":
        G = Conditioned(G, name="G")
    features = Sequential(
        Reshape(1, SIDE, SIDE),
        Conv2d(1, w, 4, 2, 1, rng=next(s), name="conv1", **conv),
        LeakyReLU(slope),
        Conv2d(w, 2 * w, 4, 2, 1, bias=d_norm is None, rng=next(s), name="conv2", **conv),
        *([BatchNorm(2 * w, dtype=dtype, name="bn2")] if d_norm == "batchnorm" else []),
        LeakyReLU(slope),
        *([MinibatchStdDev(int(spread), name="spread")] if spread else []),
        Flatten(),
        name="features",
    )
    n_features = (2 * w + (1 if spread else 0)) * 7 * 7
    if conditional:
        D = Sequential(
            Join({"x": features, "y": Identity()}, name="in"),
            ProjectionHead(n_features, N_CLASSES, normal, next(s), embed_init=normal, embed_rng=next(s),
                           dtype=dtype, name="out"),
            name="D",
        )
    else:
        D = Sequential(features, Linear(n_features, 1, normal, next(s), dtype, name="out"), name="D")
    return GANModel("cdcgan" if conditional else "dcgan", G, D, noise_dim=NOISE_DIM, noise_low=-1.0,
                    noise_high=1.0, n_classes=N_CLASSES if conditional else None, output_range=(-1.0, 1.0))


def cdcgan(seed: int | None = 0, dtype=DEFAULT_DTYPE, width: int = 64, init_std: float = 0.02,
           slope: float = 0.2, g_condition: str = "input", d_minibatch_std: int = 0,
           d_norm: str | None = "batchnorm") -> GANModel:
    """The conditional DCGAN: the label joins z in G, and D scores it by a projection (module docstring)."""
    return dcgan(seed, dtype, width=width, init_std=init_std, slope=slope, conditional=True,
                 g_condition=g_condition, d_minibatch_std=d_minibatch_std, d_norm=d_norm)



class DCGAN(AdversarialFamily):
    """Algorithm 1 (alternating updates) with D's real and fake batches normalised separately."""

    name = "dcgan"
    presets = ("modern",)
    update_rules = ("alternating",)
    build = staticmethod(dcgan)
    separate_batches = True


class CDCGAN(DCGAN):
    """The conditional DCGAN: the fakes carry the real batch's labels, as for the CGAN. The ``modern`` preset gives
    its D the matching-aware term as a second D step per update (``--matching-aware``;
    :class:`~minigan.families.base.AdversarialFamily`)."""

    name = "cdcgan"
    build = staticmethod(cdcgan)
    conditional = True
