r"""The papers' MLP family: ``cgan`` (Mirza & Osindero 2014, §4.1) and ``gan`` (Goodfellow et al. 2014).

CGAN (MNIST)
    G: :math:`z \in \mathbb{R}^{100} \sim U(0,1)^{100}` → 200 ReLU; :math:`y` (one-hot 10) → 1000 ReLU;
    both → 1200 ReLU → 784 sigmoid. Dropout 0.5 on the combined hidden layer.
    D: :math:`x` → maxout 240 units × 5 pieces; :math:`y` → maxout 50 × 5; both → maxout 240 × 4 → 1
    (the sigmoid lives in the loss, on logits). Dropout 0.2 on D's image input and 0.5 on its hidden layers,
    the convention of the papers' pylearn2 code (``input_include_probs`` 0.8, 0.5 elsewhere).
GAN (MNIST, ``goodfeli/adversarial`` mnist.yaml)
    G: :math:`z \in \mathbb{R}^{100} \sim U(-\sqrt3, \sqrt3)` → 1200 ReLU → 1200 ReLU → 784 sigmoid,
    weights U(±0.05). D: dropout 0.2 on the input → maxout 240×5 → dropout 0.5 → maxout 240×5 →
    dropout 0.5 → 1, weights U(±0.005).

Both use the GAN paper's initial weight ranges (the CGAN paper does not state its own), and G's output bias
starts at the logit of each pixel's mean over the training images (:func:`init_output_bias_from_data`, the
``init_sigmoid_bias_from_marginals`` of the papers' pylearn2 code), so G begins by drawing the mean digit rather
than a uniform grey that D rejects at once. Every layer's initial weights and every dropout generator is seeded
from one model seed, so a seed fixes the model.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .. import backend
from ..nn import (DEFAULT_DTYPE, Dropout, Identity, Join, Layer, LeakyReLU, Linear, Maxout, ProjectionHead, ReLU,
                  Sequential, Sigmoid)
from .base import IMAGE_SIZE, N_CLASSES, AdversarialFamily, GANModel

__all__ = ["GAN", "CGAN", "gan", "cgan", "cgan_projection", "cgan_bn", "marginal_logits",
           "init_output_bias_from_data"]


def marginal_logits(x: np.ndarray, clip: float = 1e-3) -> np.ndarray:
    """Logit of each feature's mean over the rows of ``x`` (host array), means clipped to [clip, 1 - clip].

    The clip keeps always-black border pixels at a finite bias (logit(1e-3) ≈ -6.9) that G can still move.
    """
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[1] != IMAGE_SIZE:
        raise ValueError(f"marginal_logits: expected images of shape (N, {IMAGE_SIZE}), received {x.shape}")
    mean = np.clip(x.mean(axis=0, dtype=np.float64), clip, 1 - clip)
    return np.log(mean / (1 - mean))


def init_output_bias_from_data(model: GANModel, x_train: np.ndarray) -> None:
    """Set G's output-layer bias to :func:`marginal_logits` of the training images (in place)."""
    bias = model.G.params["out.b"]
    bias[...] = backend.to_device(marginal_logits(x_train).astype(bias.dtype))


def _seeds(seed: int | None, n: int) -> list[int]:
    return [int(s.generate_state(1)[0]) for s in np.random.SeedSequence(seed).spawn(n)]


def cgan(seed: int | None = 0, dtype=DEFAULT_DTYPE, g_dropout: float = 0.5, d_dropout: float = 0.5,
         d_input_dropout: float = 0.2, g_irange: Any = 0.05, d_irange: Any = 0.005,
         noise: tuple[float, float] = (0.0, 1.0), g_y_irange: Any = None, d_y_irange: Any = None,
         g_y_bias: float = 0.0, design: str = "paper", embed_dim: int = 100, g_label: str = "relu",
         d_y_dropout: float = 0.0, spectral_norm: bool = False) -> GANModel:
    """The conditional GAN of Mirza & Osindero (2014), §4.1, for 28×28 images and 10 classes.

    ``g_label`` is the activation of G's label branch: ``"relu"`` (the paper's), ``"leaky"`` (LeakyReLU 0.2,
    whose units cannot die) or ``"linear"`` (an embedding). ``spectral_norm`` divides each of D's weight
    matrices by its largest singular value (:class:`~minigan.nn.dense.Linear`). ``d_y_dropout`` drops D's one-hot
    label inputs in training (pylearn2's default include probability 0.5 applies to every input of a composite
    layer unless a config overrides it, so the original code may have done this). ``design="projection"``
    builds :func:`cgan_projection` and ``design="bn"`` :func:`cgan_bn` instead (label embeddings rather than
    branches); they take the options that still apply to them.

    ``noise`` is the range of the uniform noise prior (the paper: the unit hypercube, (0, 1)).
    ``g_y_irange`` / ``d_y_irange`` initialise the first layer of G's / D's label branch (``None``: the same as
    ``g_irange`` / ``d_irange``, the paper's setting). A layer on a one-hot input is an embedding lookup
    (each row of ``W`` is one class's pre-activation vector, constant over a batch): G's label ReLUs can all die
    (``W[y] + b < 0`` for every class, G then ignores ``y`` exactly), which a larger ``g_y_irange`` delays.
    """
    if design == "bn":
        return cgan_bn(seed, dtype, noise=noise, embed_dim=embed_dim if embed_dim != 100 else 10)
    # The other designs have no label branches: g_y_bias, d_y_irange, g_label and d_y_dropout (which a preset
    # may set for the paper design) do not apply to them and are ignored.
    if design == "projection":
        return cgan_projection(seed, dtype, g_dropout=g_dropout, d_dropout=d_dropout,
                               d_input_dropout=d_input_dropout, g_irange=g_irange, d_irange=d_irange, noise=noise,
                               embed_irange=g_y_irange if g_y_irange is not None else 3 ** 0.5, embed_dim=embed_dim,
                               spectral_norm=spectral_norm)
    if design != "paper":
        raise TypeError(f"unknown cgan design {design!r}; choose 'paper' or 'projection'")
    g_y_irange = g_irange if g_y_irange is None else g_y_irange
    d_y_irange = d_irange if d_y_irange is None else d_y_irange
    seeds = _seeds(seed, 16)
    s = iter(seeds)
    G = Sequential(
        Join({
            "z": Sequential(Linear(100, 200, g_irange, next(s), dtype), ReLU()),
            "y": Sequential(Linear(N_CLASSES, 1000, g_y_irange, next(s), dtype),
                            *{"relu": [ReLU()], "leaky": [LeakyReLU(0.2)], "linear": []}[g_label]),
        }, name="in"),
        Linear(1200, 1200, g_irange, next(s), dtype, name="hidden"),
        ReLU(),
        Dropout(g_dropout, next(s)),
        Linear(1200, IMAGE_SIZE, g_irange, next(s), dtype, name="out"),
        Sigmoid(),
        name="G",
    )
    D = Sequential(
        Join({
            "x": Sequential(Dropout(d_input_dropout, next(s)),
                            Maxout(IMAGE_SIZE, 240, 5, d_irange, next(s), dtype, spectral_norm=spectral_norm)),
            "y": Sequential(*([Dropout(d_y_dropout, seeds[-1])] if d_y_dropout else []),
                            Maxout(N_CLASSES, 50, 5, d_y_irange, next(s), dtype, spectral_norm=spectral_norm)),
        }, name="in"),
        Dropout(d_dropout, next(s)),
        Maxout(290, 240, 4, d_irange, next(s), dtype, name="hidden", spectral_norm=spectral_norm),
        Dropout(d_dropout, next(s)),
        Linear(240, 1, d_irange, next(s), dtype, name="out", spectral_norm=spectral_norm),
        name="D",
    )
    G.params["in.y.0.b"][...] = g_y_bias
    low, high = _noise_range(noise, "cgan")
    return GANModel("cgan", G, D, noise_dim=100, noise_low=low, noise_high=high, n_classes=N_CLASSES)


def _noise_range(noise, who: str) -> tuple[float, float]:
    if isinstance(noise, (str, bytes)) or not hasattr(noise, "__len__") or len(noise) != 2:
        raise ValueError(f"{who}: the noise range must be two numbers (low, high), got {noise!r}")
    low, high = (float(v) for v in noise)
    if not low < high:
        raise ValueError(f"{who}: the noise range must have low < high, got {noise!r}")
    return low, high


def cgan_projection(seed: int | None = 0, dtype=DEFAULT_DTYPE, g_dropout: float = 0.0, d_dropout: float = 0.5,
                    d_input_dropout: float = 0.2, g_irange: Any = 0.05, d_irange: Any = 0.005,
                    noise: tuple[float, float] = (-3 ** 0.5, 3 ** 0.5), embed_irange: Any = 3 ** 0.5,
                    embed_dim: int = 100, spectral_norm: bool = False) -> GANModel:
    r"""A conditional GAN whose label path cannot die: a label embedding joined to z in G, a projection
    discriminator (Miyato & Koyama 2018) in D. Measured so far (docs/RESULTS.md): it learns the labels within an
    epoch, but G then ignores z (one image per label), with or without spectral normalisation.

    G: :math:`[\,z \;\; Ey\,]` (noise beside a learned ``embed_dim``-wide embedding of the label, rows drawn
    U(±``embed_irange``), i.e. unit variance like the noise) → 1200 ReLU → 1200 ReLU → 784 sigmoid. Every
    hidden unit sees both z and y, so no unit is a function of the label alone (the paper's y → 1000 ReLU
    branch is exactly that, and it dies: for a unit with :math:`W_{y} + b < 0` on every class the ReLU
    outputs 0 whatever the label, and once all 1000 do, G ignores y exactly).

    D: dropout 0.2 → maxout 240×5 → dropout 0.5 → maxout 240×4 → dropout 0.5 → :math:`h`, then
    :class:`~minigan.nn.dense.ProjectionHead`: :math:`\ell = hw + b + \langle h, E_D y\rangle`. D's score
    depends on whether an image matches its label from the first update, through the features it already
    learns for real-versus-fake.

    The same widths and depth as the paper's networks (2.6 M and 1.2 M multiply-adds per row for G and D,
    against 2.4 M and 1.2 M).
    """
    s = iter(_seeds(seed, 16))
    G = Sequential(
        Join({"z": Identity(), "y": Linear(N_CLASSES, embed_dim, embed_irange, next(s), dtype, name="embed")},
             name="in"),
        Linear(100 + embed_dim, 1200, g_irange, next(s), dtype, name="h0"),
        ReLU(),
        Linear(1200, 1200, g_irange, next(s), dtype, name="h1"),
        ReLU(),
        Dropout(g_dropout, next(s)),
        Linear(1200, IMAGE_SIZE, g_irange, next(s), dtype, name="out"),
        Sigmoid(),
        name="G",
    )
    features = Sequential(
        Dropout(d_input_dropout, next(s)),
        Maxout(IMAGE_SIZE, 240, 5, d_irange, next(s), dtype, name="h0", spectral_norm=spectral_norm),
        Dropout(d_dropout, next(s)),
        Maxout(240, 240, 4, d_irange, next(s), dtype, name="h1", spectral_norm=spectral_norm),
        Dropout(d_dropout, next(s)),
    )
    D = Sequential(
        Join({"x": features, "y": Identity()}, name="in"),
        ProjectionHead(240, N_CLASSES, d_irange, next(s), embed_rng=next(s), dtype=dtype, name="out",
                       spectral_norm=spectral_norm),
        name="D",
    )
    low, high = _noise_range(noise, "cgan")
    return GANModel("cgan", G, D, noise_dim=100, noise_low=low, noise_high=high, n_classes=N_CLASSES)


def cgan_bn(seed: int | None = 0, dtype=DEFAULT_DTYPE, d_dropout: float = 0.4, embed_dim: int = 10,
            noise: tuple[float, float] = (-3 ** 0.5, 3 ** 0.5), slope: float = 0.2,
            g_widths: tuple[int, ...] = (256, 512, 1024), d_widths: tuple[int, ...] = (512, 512, 512)) -> GANModel:
    r"""An MLP conditional GAN in the modern style: label embeddings, BatchNorm in G, LeakyReLU, no maxout.

    G: :math:`[\,z \;\; E_G y\,]` (noise beside a learned ``embed_dim``-wide label embedding) → 256 → 512 →
    1024, each Linear → BatchNorm → LeakyReLU(0.2) (the first without BatchNorm) → 784 sigmoid.
    D: :math:`[\,x \;\; E_D y\,]` → 512 LeakyReLU → 512 dropout LeakyReLU → 512 dropout LeakyReLU → 1.

    Why these choices (each measured, docs/RESULTS.md): a label embedding is linear, so no unit can die on
    it (the paper's y → 1000 ReLU branch does, and G then ignores y exactly); BatchNorm keeps G's
    pre-activations at unit scale across the batch, where Adam otherwise grows G's weights until its sigmoid
    saturates and every noise vector gives the same speckled blob; and D reads the label from its first layer.
    Weights are Glorot-uniform (PyTorch's default scale for these widths).
    """
    from ..nn import BatchNorm

    s = iter(_seeds(seed, 32))
    g_layers: list[Layer] = [Join({"z": Identity(), "y": Linear(N_CLASSES, embed_dim, "glorot", next(s), dtype)},
                                  name="in")]
    width = 100 + embed_dim
    for i, w in enumerate(g_widths):
        g_layers.append(Linear(width, w, "glorot", next(s), dtype, name=f"h{i}"))
        if i:
            g_layers.append(BatchNorm(w, dtype=dtype, name=f"bn{i}"))
        g_layers.append(LeakyReLU(slope))
        width = w
    g_layers += [Linear(width, IMAGE_SIZE, "glorot", next(s), dtype, name="out"), Sigmoid()]
    G = Sequential(*g_layers, name="G")
    d_layers: list[Layer] = [Join({"x": Identity(), "y": Linear(N_CLASSES, embed_dim, "glorot", next(s), dtype)},
                                  name="in")]
    width = IMAGE_SIZE + embed_dim
    for i, w in enumerate(d_widths):
        d_layers.append(Linear(width, w, "glorot", next(s), dtype, name=f"h{i}"))
        if i:
            d_layers.append(Dropout(d_dropout, next(s)))
        d_layers.append(LeakyReLU(slope))
        width = w
    d_layers.append(Linear(width, 1, "glorot", next(s), dtype, name="out"))
    D = Sequential(*d_layers, name="D")
    low, high = _noise_range(noise, "cgan")
    return GANModel("cgan", G, D, noise_dim=100, noise_low=low, noise_high=high, n_classes=N_CLASSES)


def gan(seed: int | None = 0, dtype=DEFAULT_DTYPE, d_dropout: float = 0.5, d_input_dropout: float = 0.2,
        g_irange: float = 0.05, d_irange: float = 0.005) -> GANModel:
    """The GAN of Goodfellow et al. (2014) for MNIST (the paper's mnist.yaml)."""
    s = iter(_seeds(seed, 16))
    G = Sequential(
        Linear(100, 1200, g_irange, next(s), dtype, name="h0"),
        ReLU(),
        Linear(1200, 1200, g_irange, next(s), dtype, name="h1"),
        ReLU(),
        Linear(1200, IMAGE_SIZE, g_irange, next(s), dtype, name="out"),
        Sigmoid(),
        name="G",
    )
    D = Sequential(
        Dropout(d_input_dropout, next(s)),
        Maxout(IMAGE_SIZE, 240, 5, d_irange, next(s), dtype, name="h0"),
        Dropout(d_dropout, next(s)),
        Maxout(240, 240, 5, d_irange, next(s), dtype, name="h1"),
        Dropout(d_dropout, next(s)),
        Linear(240, 1, d_irange, next(s), dtype, name="out"),
        name="D",
    )
    sqrt3 = math.sqrt(3.0)
    return GANModel("gan", G, D, noise_dim=100, noise_low=-sqrt3, noise_high=sqrt3, n_classes=None)


class GAN(AdversarialFamily):
    """The GAN of Goodfellow et al. (2014): :func:`gan`, both update rules, G's output bias from the data."""

    name = "gan"
    build = staticmethod(gan)

    def prepare(self, train) -> None:
        # The papers' G starts from the data's pixel marginals (a resumed run overwrites it from its checkpoint).
        init_output_bias_from_data(self.model, train.x)


class CGAN(GAN):
    """The conditional GAN (Mirza & Osindero 2014): :func:`cgan`. The ``modern`` preset gives its D the
    matching-aware term as a second D step per update (:class:`~minigan.families.base.AdversarialFamily`)."""

    name = "cgan"
    build = staticmethod(cgan)
    conditional = True

