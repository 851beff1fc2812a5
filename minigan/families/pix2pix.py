r"""pix2pix (Isola et al. 2017): image-to-image translation with a U-Net generator, a PatchGAN discriminator on
(input, output) pairs, and the L1 + conditional-GAN objective. ``--model pix2pix``.

Networks (``width`` w = 64, the paper's; shapes per image, NCHW; H = W = 32 drawn)
-------------------------------------------------------------------------------------
**G, a U-Net** (``UnetGenerator`` of the paper's code). Its depth d is the number of times both image sides can
be halved, at most 8 (256 px: 8 levels down to 1×1, the paper's; 32 px: 5; 28 px: 2); at least 2. Level i has
:math:`c_i = w\cdot\min(2^i, 8)` channels (C64-C128-C256-C512-C512…), every convolution kernel 4, stride 2,
padding 1:

.. code-block:: text

    level 0 (outermost)  Conv(in -> c0)                                          32 -> 16
      level i            [x, up_i(inner_{i+1}(down_i(x)))]   (UNetBlock: the skip concatenation)
        down_i = LeakyReLU 0.2 -> Conv(c_{i-1} -> c_i) -> Norm        (no Norm at the innermost level)
        up_i   = ReLU -> ConvT(2 c_i -> c_{i-1}) -> Norm [-> Dropout 0.5]  (innermost: ConvT(c_i -> c_{i-1}))
    level 0              -> ReLU -> ConvT(2 c0 -> out) -> Tanh                    16 -> 32

Encoder level i is concatenated with the decoder's output at the same size (the skips), so the decoder layer
that restores level i reads :math:`2c_i` channels. Dropout 0.5 follows the up-convolutions of the
``dropout_levels`` innermost levels (default :math:`\min(3, d - 2)`: the paper's three CD512 decoder blocks at
256 px); it is G's only noise, as in the paper (no z). Evaluation (grids, ``minigan translate``) runs in
evaluation mode: no dropout, BatchNorm's running statistics.

**D, a PatchGAN** (``NLayerDiscriminator``) on the channel concatenation [output or target, input]:

.. code-block:: text

    Conv 4/2/1 (-> w) -> LeakyReLU 0.2                                         (no Norm)
    n = 1 .. L-1:  Conv 4/2/1 (-> w·min(2^n, 8)) -> Norm -> LeakyReLU 0.2
    Conv 4/1/1 (-> w·min(2^L, 8)) -> Norm -> LeakyReLU 0.2
    Conv 4/1/1 (-> 1)  -> one logit per patch, as rows (PatchRows)

L = ``d_layers`` (default 3 from 256 px, the paper's 70×70; 2 from 64 px; else 1). Each logit sees a square
receptive field of :func:`receptive_field` pixels: 16×16 for L = 1, 34×34 for L = 2, 70×70 for L = 3
(``Pix2PixModel.summary`` prints it; at 32 px and L = 1, D scores 14×14 overlapping 16×16 patches).

Norm is ``norm="batch"`` (BatchNorm, the paper's) or ``"instance"`` (InstanceNorm2d without affine parameters,
the code's ``--norm instance``). A convolution followed by a Norm has no bias (it would cancel). Weights are
N(0, 0.02), biases 0, as the paper's code initialises them.

Objective
---------
With input :math:`a`, target :math:`b` (both in [-1, 1]) and :math:`\ell = D(\cdot, a)` the patch logits:

* D minimises :math:`\tfrac12[\mathrm{BCE}(1, D(b, a)) + \mathrm{BCE}(0, D(G(a), a))]`, the mean over every
  patch (the paper halves D's loss "to slow down the rate at which D learns"). Real and fake pairs go through D
  as two batches (:func:`minigan.objective.discriminator_step` with ``separate=True``), each normalised by its
  own statistics, as the paper's code does.
* G minimises :math:`\mathrm{BCE}(1, D(G(a), a)) + \lambda\,\mathrm{mean}|G(a) - b|` with :math:`\lambda = 100`
  (:func:`generator_step`): the non-saturating cGAN term through D plus the L1 term
  (:func:`minigan.nn.losses.l1_loss`).

``objective`` selects the paper's ablation (its Table 1): ``"l1+gan"`` (the default), ``"l1"`` (G minimises
:math:`\lambda` L1 only; D is not trained) or ``"gan"`` (the cGAN term only). One update is D's step on
:math:`G(a)` (detached), then G's step through the updated D on the *same* :math:`G(a)` (one G forward, one
dropout mask), as the paper's code does. Adam 2e-4, β1 0.5 (the ``modern`` preset).

Data
----
The trainer's ``x`` is the target and its condition ``y`` the input (:meth:`Pix2Pix.device_data`); see
:mod:`minigan.paired` for the built-in tasks and the pix2pix folder format. ``crop_size`` and ``flip`` (random
crop and horizontal mirror of every training pair, the paper's jitter) draw from the run's noise generator, so
a resumed run draws the same crops.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import backend, objective as adversarial
from ..backend import get_array_module
from ..nn import (DEFAULT_DTYPE, BatchNorm, Conv2d, ConvTranspose2d, Dropout, Identity, InstanceNorm2d, Join, LeakyReLU,
                  PatchRows, ReLU, Sequential, Tanh, UNetBlock)
from ..nn.activations import sigmoid
from ..nn.losses import generator_loss, l1_loss
from .base import Family, GANModel

__all__ = ["Pix2Pix", "Pix2PixModel", "pix2pix", "unet", "patchgan", "unet_depth", "receptive_field",
           "generator_step", "OBJECTIVES", "NORMS", "DIRECTIONS"]

OBJECTIVES = ("l1+gan", "l1", "gan")
NORMS = ("batch", "instance")
DIRECTIONS = ("AtoB", "BtoA")
MAX_DEPTH = 8
#: Examples in the per-epoch grid (input | output | target each), two triplets per row.
GRID_EXAMPLES = 8


def _seeds(seed: int | None, n: int) -> list[int]:
    return [int(s.generate_state(1)[0]) for s in np.random.SeedSequence(seed).spawn(n)]


def _positive(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"pix2pix: {name} must be a positive integer, got {value!r}")
    return int(value)


def unet_depth(height: int, width: int) -> int:
    """Levels of the U-Net for an image of this size: how often both sides halve exactly, at most 8; >= 2."""
    depth = 0
    h, w = int(height), int(width)
    while depth < MAX_DEPTH and h % 2 == 0 and w % 2 == 0:
        h, w, depth = h // 2, w // 2, depth + 1
    if depth < 2:
        raise ValueError(f"pix2pix: image sides must be divisible by 4 for the U-Net (two levels of stride-2 "
                         f"convolutions), got {height}x{width}; resize (load_size) or crop (crop_size) the data")
    return depth


def _norm(kind: str, channels: int, dtype, name: str):
    if kind == "batch":
        return BatchNorm(channels, dtype=dtype, name=name)
    return InstanceNorm2d(channels, affine=False, dtype=dtype, name=name)


def unet(in_channels: int, out_channels: int, depth: int, width: int = 64, norm: str = "batch",
         dropout_levels: int | None = None, init_std: float = 0.02, slope: float = 0.2, seed: int | None = 0,
         dtype=DEFAULT_DTYPE) -> Sequential:
    """The U-Net generator of the module docstring (``depth`` levels, ``width`` channels at the first)."""
    if dropout_levels is None:
        dropout_levels = min(3, depth - 2)
    s = iter(_seeds(seed, 4 * depth + 4))
    conv = dict(init="normal", init_std=init_std, dtype=dtype)
    ch = [width * min(2 ** i, 8) for i in range(depth)]
    block = None
    for i in range(depth - 1, 0, -1):  # innermost level first; each wraps the one inside it
        innermost = i == depth - 1
        down = [LeakyReLU(slope), Conv2d(ch[i - 1], ch[i], 4, 2, 1, bias=innermost, rng=next(s), name="conv", **conv)]
        if not innermost:
            down.append(_norm(norm, ch[i], dtype, "norm"))
        up_in = ch[i] if innermost else 2 * ch[i]
        up = [ReLU(), ConvTranspose2d(up_in, ch[i - 1], 4, 2, 1, bias=False, rng=next(s), name="convT", **conv),
              _norm(norm, ch[i - 1], dtype, "norm")]
        if i >= depth - dropout_levels:
            up.append(Dropout(0.5, seed=next(s), name="dropout"))
        block = UNetBlock(Sequential(*down, name="down"), Sequential(*up, name="up"), inner=block, name=f"level{i}")
    return Sequential(
        Conv2d(in_channels, ch[0], 4, 2, 1, rng=next(s), name="conv0", **conv),
        block,
        ReLU(),
        ConvTranspose2d(2 * ch[0], out_channels, 4, 2, 1, rng=next(s), name="convT0", **conv),
        Tanh(),
        name="G",
    )


def patchgan(in_channels: int, width: int = 64, n_layers: int = 3, norm: str = "batch", init_std: float = 0.02,
             slope: float = 0.2, seed: int | None = 0, dtype=DEFAULT_DTYPE) -> Sequential:
    """The PatchGAN of the module docstring on (x, condition) pairs whose channels add up to ``in_channels``."""
    s = iter(_seeds(seed, n_layers + 2))
    conv = dict(init="normal", init_std=init_std, dtype=dtype)
    layers: list = [Join({"x": Identity(), "y": Identity()}, name="pair"),
                    Conv2d(in_channels, width, 4, 2, 1, rng=next(s), name="conv0", **conv), LeakyReLU(slope)]
    prev = width
    for n in range(1, n_layers + 1):
        out = width * min(2 ** n, 8)
        stride = 2 if n < n_layers else 1
        layers += [Conv2d(prev, out, 4, stride, 1, bias=False, rng=next(s), name=f"conv{n}", **conv),
                   _norm(norm, out, dtype, f"norm{n}"), LeakyReLU(slope)]
        prev = out
    layers += [Conv2d(prev, 1, 4, 1, 1, rng=next(s), name="out", **conv), PatchRows()]
    return Sequential(*layers, name="D")


def receptive_field(network) -> int:
    """The side of the square of input pixels one output of ``network``'s convolution chain sees.

    Backwards from one output pixel: a layer of kernel k and stride s widens a field of r pixels to
    :math:`(r - 1)s + k`.
    """
    convs = [layer for layer in network.walk() if isinstance(layer, Conv2d)]
    r = 1
    for layer in reversed(convs):
        r = (r - 1) * layer.stride[0] + layer.kernel_size[0]
    return r


def default_d_layers(height: int, width: int) -> int:
    side = min(height, width)
    return 3 if side >= 256 else 2 if side >= 64 else 1


@dataclass
class Pix2PixModel(GANModel):
    """G (a U-Net) and D (a PatchGAN) with what translation needs: channels, image size, objective, data options."""

    in_channels: int = 1
    out_channels: int = 1
    image_height: int = 32
    image_width: int = 32
    objective: str = "l1+gan"
    lambda_l1: float = 100.0
    direction: str = "AtoB"
    crop_size: int | None = None
    flip: bool = False
    draws_samples = False

    @property
    def uses_gan(self) -> bool:
        return "gan" in self.objective

    @property
    def uses_l1(self) -> bool:
        return "l1" in self.objective

    @property
    def depth(self) -> int:
        return unet_depth(self.image_height, self.image_width)

    def sample(self, n, rng, label=None):
        raise ValueError("pix2pix translates images and draws no samples: use 'minigan translate RUN IMAGES --out DIR'")

    def generate(self, z, y=None):
        raise ValueError("pix2pix has no noise input: use translate()")

    def standing_statistics(self, batch, seed=0, batches=None) -> bool:
        """Nothing to re-estimate from: G's inputs are images, not draws from a prior, so a moving average of G's
        weights keeps the live network's running statistics. Returns False."""
        return False

    def translate(self, a_unit):
        """G's output in [0, 1] terms for inputs ``a_unit`` (N, in_channels, H, W) in [0, 1] (evaluation mode).

        Any H, W divisible by 2^depth works (G is convolutional); the output has the input's size.
        """
        return self.to_unit(self.G.forward(self.from_unit(a_unit), train=False))

    def summary(self) -> str:
        d_field = receptive_field(self.D)
        h, w = self.image_height, self.image_width
        probe_h, probe_w = h, w
        for layer in self.D.walk():
            if isinstance(layer, Conv2d):
                _, _, probe_h, probe_w = layer.output_shape((1, layer.in_channels, probe_h, probe_w))
        return (f"pix2pix: G U-Net, {self.depth} levels, {self.G.n_params():,} parameters, {self.in_channels} -> "
                f"{self.out_channels} channels at {h}x{w}; D PatchGAN, {self.D.n_params():,} parameters, receptive "
                f"field {d_field}x{d_field} px, {probe_h}x{probe_w} patches per image; objective {self.objective}"
                + (f" (lambda_L1 {self.lambda_l1:g})" if self.uses_l1 else ""))


def pix2pix(seed: int | None = 0, dtype=DEFAULT_DTYPE, in_channels: int = 1, out_channels: int = 1,
            image_height: int = 32, image_width: int = 32, width: int = 64, norm: str = "batch",
            objective: str = "l1+gan", lambda_l1: float = 100.0, d_layers: int | None = None,
            dropout_levels: int | None = None, init_std: float = 0.02, slope: float = 0.2,
            direction: str = "AtoB", load_size: int | None = None, crop_size: int | None = None,
            flip: bool = False) -> Pix2PixModel:
    """The pix2pix networks for ``in_channels`` -> ``out_channels`` images of ``image_height`` x ``image_width``.

    Parameters
    ----------
    width : int
        w: channels of G's first level and D's first layer (the paper's 64).
    norm : {"batch", "instance"}
    objective : {"l1+gan", "l1", "gan"}
    lambda_l1 : float
        Weight of the L1 term (the paper's 100).
    d_layers : int, optional
        L, D's stride-2 layers (default by image size, module docstring).
    dropout_levels : int, optional
        Inner decoder levels with dropout 0.5 (default min(3, depth - 2)).
    direction, load_size, crop_size, flip
        Data options (:mod:`minigan.paired`), kept with the model so a run and ``minigan translate`` read images
        as it was trained: which side of an A|B file is the input, the square size images are resized to on
        loading, the random crop of training pairs (G then works at ``crop_size``) and random mirroring.
    """
    if norm not in NORMS:
        raise ValueError(f"pix2pix: norm must be one of {', '.join(NORMS)}, got {norm!r}")
    if objective not in OBJECTIVES:
        raise ValueError(f"pix2pix: objective must be one of {', '.join(OBJECTIVES)}, got {objective!r}")
    if direction not in DIRECTIONS:
        raise ValueError(f"pix2pix: direction must be AtoB or BtoA, got {direction!r}")
    if isinstance(lambda_l1, bool) or not isinstance(lambda_l1, (int, float)) or not lambda_l1 >= 0:
        raise ValueError(f"pix2pix: lambda_l1 must be a non-negative number, got {lambda_l1!r}")
    if not isinstance(flip, bool):
        raise ValueError(f"pix2pix: flip must be true or false, got {flip!r}")
    for name, value in (("in_channels", in_channels), ("out_channels", out_channels), ("image_height", image_height),
                        ("image_width", image_width), ("width", width)):
        _positive(name, value)
    for name, value in (("load_size", load_size), ("crop_size", crop_size)):
        if value is not None:
            _positive(name, value)
    if crop_size is not None and (crop_size, crop_size) != (image_height, image_width):
        raise ValueError(f"pix2pix: crop_size {crop_size} must equal the image size {image_height}x{image_width}")
    depth = unet_depth(image_height, image_width)
    if dropout_levels is not None and (isinstance(dropout_levels, bool) or not isinstance(dropout_levels, int)
                                       or not 0 <= dropout_levels <= depth - 1):
        raise ValueError(f"pix2pix: dropout_levels must be an integer in 0..{depth - 1}, got {dropout_levels!r}")
    d_layers = default_d_layers(image_height, image_width) if d_layers is None else _positive("d_layers", d_layers)
    if min(image_height, image_width) // 2 ** d_layers < 3:
        raise ValueError(f"pix2pix: d_layers {d_layers} leaves no patch of a {image_height}x{image_width} image")
    g_seed, d_seed = _seeds(seed, 2)
    G = unet(in_channels, out_channels, depth, width, norm, dropout_levels, init_std, slope, g_seed, dtype)
    D = patchgan(in_channels + out_channels, width, d_layers, norm, init_std, slope, d_seed, dtype)
    return Pix2PixModel("pix2pix", G, D, noise_dim=0, noise_low=0.0, noise_high=0.0, n_classes=None,
                        output_range=(-1.0, 1.0), in_channels=in_channels, out_channels=out_channels,
                        image_height=image_height, image_width=image_width, objective=objective,
                        lambda_l1=float(lambda_l1), direction=direction, crop_size=crop_size, flip=flip)


# --------------------------------------------------------------------------------------------------
# The objective
# --------------------------------------------------------------------------------------------------


def discriminator_step(D, b_real, b_fake, a, train: bool = True, backward: bool = True, input_grads: bool = False):
    r"""D's loss :math:`\tfrac12[\mathrm{BCE}(1, D(b, a)) + \mathrm{BCE}(0, D(\tilde b, a))]` on every patch, and
    its gradient into D: :func:`minigan.objective.discriminator_step` on the pairs ``(b, a)``, real and fake as
    two batches. Returns (loss, patch logits with the real pairs' rows first, input gradients or None)."""
    return adversarial.discriminator_step(D, b_real, b_fake, a, a, train=train, backward=backward,
                                          input_grads=input_grads, separate=True)


def generator_step(G, D, a, b, objective: str = "l1+gan", lambda_l1: float = 100.0, fake=None, train: bool = True,
                   backward: bool = True, input_grads: bool = False):
    r"""G's loss and its gradient into G, through D (the cGAN term) and through the L1 term.

    .. math:: L_G = \mathrm{BCE}(1, D(G(a), a)) + \lambda\,\tfrac1M\textstyle\sum|G(a) - b|

    (``objective`` drops either term). With :math:`\tilde b = G(a)`:

    * cGAN term: :func:`~minigan.nn.losses.generator_loss` gives :math:`\partial L/\partial\ell`; D's backward
      (its weights held: ``requires_grad`` off) turns it into the gradients with respect to both of D's inputs,
      :math:`(\partial L/\partial\tilde b,\ \partial L/\partial a)`;
    * L1 term: :math:`\partial/\partial\tilde b = \lambda\operatorname{sign}(\tilde b - b)/M`
      (:func:`~minigan.nn.losses.l1_loss`);
    * the two :math:`\partial L/\partial\tilde b` add (both are functions of the same :math:`\tilde b`), and G's
      backward carries the sum through the U-Net, skips included, into G's parameters;
    * :math:`a` reaches :math:`L_G` twice, through G and as D's condition, so (``input_grads``)
      :math:`\partial L/\partial a = G'(a)^\top \partial L/\partial\tilde b + \partial L/\partial a|_D`.

    ``fake``: G's output already computed on ``a`` in training mode (the update reuses the one D's step saw; G's
    layers still hold that forward's cache). Returns (loss, the L1 term's mean (unweighted), D's logits or None,
    :math:`\partial L/\partial a` or None).
    """
    use_gan, use_l1 = "gan" in objective, "l1" in objective
    G.set_requires_grad(True).set_input_grad(input_grads)
    if fake is None:
        fake = G.forward(a, train)
    loss_l1, d_l1 = l1_loss(fake, b)
    loss, d_fake, da_D, logits = None, None, None, None
    if use_gan:
        D.set_requires_grad(False).set_input_grad(True)
        logits = D.forward((fake, a), train)
        loss, dlogits = generator_loss(logits)
        if backward:
            d_fake, da_D = D.backward(dlogits)
    if use_l1:
        weighted = lambda_l1 * loss_l1
        loss = weighted if loss is None else loss + weighted
        if backward:
            d_l1 *= lambda_l1
            d_fake = d_l1 if d_fake is None else d_fake + d_l1
    da = None
    if backward:
        da = G.backward(d_fake)
        if input_grads and da_D is not None:
            da = da + da_D
    return loss, loss_l1, logits, da


# --------------------------------------------------------------------------------------------------
# The family
# --------------------------------------------------------------------------------------------------


class Pix2Pix(Family):
    """D's step on (target, input) and (G(input), input) pairs, then G's step through the updated D and the L1
    term (module docstring). The trainer's ``x`` is the target side and ``y`` the input side."""

    name = "pix2pix"
    presets = ("modern",)
    update_rules = ("alternating",)
    selectable = False
    build = staticmethod(pix2pix)

    def __init__(self, trainer):
        super().__init__(trainer)
        self.metric_names = (("loss_G", "loss_L1") if not self.model.uses_gan
                             else ("loss_D", "loss_G", "loss_L1", "D_x", "D_G_z"))

    # -- data ----------------------------------------------------------------------------------------------
    @classmethod
    def check_dataset(cls, name: str) -> None:
        from .. import paired

        paired.check_paired_name(name)

    @classmethod
    def load_dataset(cls, config, options: dict, log):
        from .. import paired

        return paired.load_paired(config.dataset, direction=options.get("direction", "AtoB"),
                                  load_size=options.get("load_size"), crop_size=options.get("crop_size"),
                                  data_dir=config.data_dir, log=log)

    @classmethod
    def complete_options(cls, options: dict, dataset) -> dict:
        """The data's channels and G's image size (the crop, else the data's), with D's depth resolved."""
        train = dataset.train
        _, in_c, h, w = train.a.shape
        out_c = train.b.shape[1]
        crop = options.get("crop_size")
        if crop is not None:
            if crop > min(h, w):
                raise ValueError(f"crop_size {crop} is larger than the images ({h}x{w})")
            h = w = crop
        done = {"in_channels": int(in_c), "out_channels": int(out_c), "image_height": int(h), "image_width": int(w),
                **options}
        if done.get("d_layers") is None:
            done["d_layers"] = default_d_layers(done["image_height"], done["image_width"])
        return done

    def prepare(self, train) -> None:
        m = self.model
        if train.a.shape[1] != m.in_channels or train.b.shape[1] != m.out_channels:
            raise ValueError(f"the data has {train.a.shape[1]} -> {train.b.shape[1]} channels, the model "
                             f"{m.in_channels} -> {m.out_channels}")
        h, w = train.a.shape[2:]
        if (m.crop_size is None and (h, w) != (m.image_height, m.image_width)) or min(h, w) < (m.crop_size or 0):
            raise ValueError(f"the data's images are {h}x{w}, the model's {m.image_height}x{m.image_width}")

    def device_data(self, train):
        m = self.model
        b = backend.to_device(np.ascontiguousarray(m.from_unit(train.b.astype(m.dtype)), dtype=m.dtype))
        a = backend.to_device(np.ascontiguousarray(m.from_unit(train.a.astype(m.dtype)), dtype=m.dtype))
        return b, a

    def augment(self, a, b):
        """The paper's jitter on one batch of pairs: a random ``crop_size`` square and a random mirror per pair,
        the same for input and target (drawn from the run's noise generator)."""
        m = self.model
        if m.crop_size is None and not m.flip:
            return a, b
        xp = get_array_module(a)
        rng = self.trainer.noise_rng.host
        n, _, h, w = a.shape
        ch, cw = m.image_height, m.image_width
        tops, lefts = rng.integers(0, h - ch + 1, n), rng.integers(0, w - cw + 1, n)
        flips = rng.random(n) < 0.5 if m.flip else np.zeros(n, bool)
        out_a = xp.empty((n, a.shape[1], ch, cw), a.dtype)
        out_b = xp.empty((n, b.shape[1], ch, cw), b.dtype)
        for i in range(n):
            t, l = int(tops[i]), int(lefts[i])
            sa, sb = a[i, :, t:t + ch, l:l + cw], b[i, :, t:t + ch, l:l + cw]
            if flips[i]:
                sa, sb = sa[:, :, ::-1], sb[:, :, ::-1]
            out_a[i], out_b[i] = sa, sb
        return out_a, out_b

    # -- one update ------------------------------------------------------------------------------------------
    def update(self) -> tuple:
        t, m = self.trainer, self.model
        b, a = t.real_batch(t.step_in_epoch)
        a, b = self.augment(a, b)
        m.G.set_requires_grad(True)
        fake = m.G.forward(a, train=True)
        if m.uses_gan:
            loss_D, logits, _ = discriminator_step(m.D, b, fake, a, train=True)
            t.step("D")
        loss_G, loss_l1, _, _ = generator_step(m.G, m.D, a, b, m.objective, m.lambda_l1, fake=fake)
        t.step("G")
        if not m.uses_gan:
            return loss_G, loss_l1
        probs = sigmoid(logits)
        half = logits.shape[0] // 2
        return loss_D, loss_G, loss_l1, probs[:half].mean(), probs[half:].mean()

    # -- grids and reporting ---------------------------------------------------------------------------------
    def _grid_split(self):
        ds = self.trainer.dataset
        return ds.valid if len(ds.valid) else ds.train

    def grid(self, rng):
        """The first examples of the validation split (of the training split if there is none): host indices."""
        return np.arange(min(GRID_EXAMPLES, len(self._grid_split())), dtype=np.int64), None

    def grid_images(self, z, labels):
        """(k, 3, C, H, W) host images in [0, 1]: input | output | target of the grid's k examples."""
        split, m = self._grid_split(), self.model
        h, w = m.image_height, m.image_width
        a = split.a[z][:, :, :h, :w].astype(m.dtype)
        b = split.b[z][:, :, :h, :w]
        out = np.clip(backend.to_host(m.translate(backend.to_device(a))), 0.0, 1.0)
        return triplets(a, out, b)

    def grid_picture(self, images):
        return triplet_grid(images)

    def monitor(self, train):
        return None  # the health checks are the unconditional/label GANs' (D's win is visible in D_G_z)

    def summary(self) -> str:
        return self.model.summary()

    @staticmethod
    def format_means(means: dict) -> str:
        parts = [f"{k} {means[k]:.4f}" for k in ("loss_D", "loss_G", "loss_L1") if k in means]
        parts += [f"{label} {means[k]:.3f}" for k, label in (("D_x", "D(b,a)"), ("D_G_z", "D(G(a),a)")) if k in means]
        return "  ".join(parts)


def _as_rgb(x: np.ndarray, channels: int) -> np.ndarray:
    """(N, C, H, W) -> (N, channels, H, W): gray repeated into RGB when the other side has colour."""
    return np.repeat(x, 3, axis=1) if x.shape[1] == 1 and channels == 3 else x


def triplets(a, out, b) -> np.ndarray:
    """Stack input, output and target (N, C, H, W each, in [0, 1]) as (N, 3, C', H, W), C' the widest of them."""
    c = max(a.shape[1], out.shape[1], b.shape[1])
    return np.stack([_as_rgb(np.asarray(v, np.float32), c) for v in (a, out, b)], axis=1)


def triplet_grid(images: np.ndarray, per_row: int = 2) -> np.ndarray:
    """A uint8 picture of (k, 3, C, H, W) triplets, ``per_row`` triplets per row: input | output | target."""
    from .. import io

    k, _, c, h, w = images.shape
    rows = -(-k // per_row)
    tiles = np.zeros((rows * per_row * 3, c, h, w), np.float32)
    tiles[:k * 3] = images.reshape(k * 3, c, h, w)
    tiles = tiles.transpose(0, 2, 3, 1)
    return io.image_grid(tiles if c == 3 else tiles[..., 0], rows, per_row * 3)
