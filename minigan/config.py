r"""What defines a run: :class:`TrainConfig`, the presets, and the model options and learning rates they resolve to.

Presets
-------
``paper``
    SGD with classical momentum, learning rate 0.1 divided by ``factor`` per update (CGAN 1.00004, GAN
    1.000004) down to a floor of 1e-6, momentum ramped linearly 0.5 -> 0.7 over epochs 0..250 (the CGAN
    paper gives no saturation epoch, so the GAN paper's 250 is used for both). Batch 100. The papers' MLP
    models only.
``modern``
    Adam, lr 2e-4, beta1 0.5, beta2 0.999, batch 100 (DCGAN: Radford et al.'s own settings, batch 64 is usual);
    the CGAN's own rates, decay, weight average and the clip of D's Adam steps, and the conditional DCGAN's G rate
    (4e-4) and weight average, and the unconditional DCGAN's G rate (4e-4) and D without BatchNorm, are in the
    preset's per-model entries.

A preset's per-model entries (``"lr_G": {"cgan": ...}``) are keyed by ``--model``, or by ``model/dataset`` for a
dataset that needs its own value (``"cgan/fashion-mnist"``, which wins over ``"cgan"``); a model without an entry
gets the preset's general value. Which presets and update rules a model can train under is its family's
business (:attr:`minigan.families.base.Family.presets`).

This module imports no training code, so the run-directory helpers (:mod:`minigan.runs`) and the evaluation
code (:mod:`minigan.eval`) can read a checkpoint's config without importing the trainer.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import families
from .io import CheckpointError

__all__ = ["ConfigError", "TrainConfig", "PRESETS", "PRESET_NAMES", "UPDATE_RULES", "MATCHING_AWARE_MODES", "DEVICES",
           "DEFAULT_EPOCHS", "default_out", "model_options", "preset_model_options", "options_text", "learning_rates",
           "trained_lr_decay", "trained_matching_aware", "checkpoint_model_options"]

DEVICES = ("cpu", "gpu")
DEFAULT_EPOCHS = 5

#: Hyper-parameters of each preset. ``decay`` is the per-update divisor of the learning rate, by model.
PRESETS: dict[str, dict[str, Any]] = {
    "paper": {
        "optimizer": "sgd",
        "lr": 0.1,
        "decay": {"cgan": 1.00004, "gan": 1.000004},
        "lr_floor": 1e-6,
        "momentum": (0.5, 0.7),
        "momentum_saturate": {"cgan": 250, "gan": 250},
        # The original code (pylearn2's AdversaryCost2 under its SGD, goodfeli/adversarial mnist.yaml) takes D's
        # and G's gradients from one forward pass and updates both at once; see objective.simultaneous_step.
        # Measured with everything else equal (GAN, seed 0): alternating updates let D win outright (D(x) 1.000,
        # D(G(z)) 0.000 by epoch 11, every sample a "1", Parzen -336); the one-pass update keeps the game
        # balanced (D(x) 0.74, D(G(z)) 0.26 at epoch 12) with diverse digits.
        "update": "simultaneous",
    },
    "modern": {
        "optimizer": "adam",
        "lr": 2e-4,
        "beta1": 0.5,
        "beta2": 0.999,
        # Zero-mean, unit-variance noise (the GAN paper's U(-sqrt3, sqrt3)) for the CGAN too. With the CGAN
        # paper's U(0, 1), G's output barely depends on z at the papers' initial weights (measured: per-pixel
        # std across z of 0.001 vs 0.18 for real digits) and Adam collapses it to one image per run; with
        # zero-mean noise the samples diversify within the first epoch (0.06 after 600 updates).
        # CGAN, measured over 2500 updates (= the 5-epoch run) with a 98.5% MNIST classifier on the samples:
        # - G at 2e-3 (D was then 4e-4): at 2e-4 for both D wins (D(G(z)) -> 0.02) and G collapses; with the
        #   faster G the game stays balanced (D(x) ~0.8, D(G(z)) ~0.15-0.2) and samples are diverse.
        # - G dropout off: with it, training-mode fakes differ from the eval-mode samples.
        # - G ignored y (label accuracy 0.09, chance 0.10): its label units (one-hot -> 1000 ReLU) all died
        #   (W[y] + b < 0 for every class) before D read labels. Two changes fix it: G's label bias starts at
        #   +0.5 (g_y_bias) so the units live long enough, and D reads labels from the first update: its label
        #   branch starts at embedding scale (d_y_irange U(±sqrt3): a layer on one-hot input is a lookup table)
        #   and it gets the matching-aware term (real images with wrong labels as negatives).
        #   Together: label accuracy 0.40 after 500 updates, 0.93 (worst class 0.81) after 1000.
        "model_options": {"cgan": {"noise": (-3 ** 0.5, 3 ** 0.5), "g_dropout": 0.0, "g_y_bias": 0.5,
                                   "d_y_irange": 3 ** 0.5},
                          # D without the BatchNorm after its second convolution (issue 12's digit balance),
                          # with G at 4e-4 (lr_G below): why and the seeds, at lr_G. The conditional DCGAN's too,
                          # with the matching-aware term (below).
                          "dcgan": {"d_norm": None}, "cdcgan": {"d_norm": None}},
        # "step": the matching-aware term is a second D step per update, on other real images with wrong labels;
        # "joint": those rows join D's own step (one D step per update, GAN-CLS's weighting). With this preset's
        # networks, a joint step on the D step's *own* images with wrong labels collapsed G in epoch 1 on seeds
        # 0, 3, 5 and 11 (one thread); the joint step on other images was only screened (1 of 6 runs died with D's
        # rate doubled; docs/RESULTS.md).
        # The conditional DCGAN (issue 12): D without its BatchNorm (model_options above) scored images more evenly (FID
        # 1.43-1.47x real on seeds 21-22 against 2.32-2.41x) but read the labels worse (97.7-98.0%, worst class
        # 95.0-95.8%, against 99.1-99.2%); the matching-aware step gives that D the label pressure back. 10 epochs,
        # one thread unless said (docs/RESULTS.md): seed 21 (screened) 99.9%, worst class 99.6%, FID 1.94x, Parzen
        # 222.1; untuned seeds 23 99.9%, 99.7%, 1.87x, 223.1 and 24 (this default, default threads) 99.9%, 99.5%,
        # 1.77x, 219.4; Fashion-MNIST seeds 0-1 96.9% and 97.4%
        # (issue 12 asks 95%; 89.6-90.1% before).
        "matching_aware": {"cgan": "step", "cdcgan": "step"},
        # The conditional DCGAN on MNIST gets the term in its first 7 epochs only (issue 12): the term throughout
        # narrows each class (within-class spread 0.866-0.878 of the test set's) and holds the FID at 1.77-1.93x
        # real; taken away after epoch 7, G widens its classes again (0.905-0.917) while D still reads the labels.
        # 10 epochs (docs/RESULTS.md): seeds 21 and 28 (screened) and 31-33 (untuned) at one thread, 34-36 (untuned)
        # at the default threads from a fresh venv: FID 1.30-1.45x real and label accuracy >= 99% with every
        # class >= 97% on all eight (99.5-99.6%, worst class 97.6-99.1%); 5 epochs met both on 3 of 4, the term
        # throughout the labels on 5 of 5 at FID 1.77-1.93x (--matching-aware-epochs 0 trains that default).
        # Fashion-MNIST keeps the term throughout: its label target was met with it (96.9-97.4%), and on seed 0
        # the term in the first 7 epochs only read 91.8% at the same FID (8.87x against 8.88x).
        "matching_aware_epochs": {"cdcgan/mnist": 7},
        # The conditional DCGAN's G at twice D's rate (issue 12), sampled from the 0.999 average (below). Five untuned
        # seeds (16-20, 10 epochs, one thread; docs/RESULTS.md): label targets (>= 99%, every class >= 97%) met on 4
        # of 5, as the old default (G at 2e-4, the 0.99 average) did on its seeds 6-10, at FID 2.26-2.56x real
        # against its 2.66-3.28x. Two more untuned seeds through the CLI: 21 missed, 22 (default threads) met them: 5
        # of 7 against the old default's 7 of 8, a difference within the draw of the samples, where every new
        # run's FID is below every old one's. Parzen 201.9-202.0 from the average on seeds 21-22 (the old rate's
        # last weights 176-185). On Fashion-MNIST (seeds 0-1) label accuracy level and +0.6 points at a 27-37%
        # lower FID.
        # The unconditional DCGAN's G at 4e-4 too, with D without its BatchNorm (model_options above): with
        # BatchNorm D normalises each batch of fakes by its own statistics, so it cannot see which digits a batch
        # has too many of, and on seven runs (seeds 0-3, G at 2e-4, 4e-4 or 8e-4) 1-4 digits fell outside issue
        # 12's 7-13%.
        # Without it, with G at 4e-4, seven untuned seeds (1, 4-9; 10 epochs; seed 9 as this default at the default
        # threads; docs/RESULTS.md) drew every digit at 7-13% on six of seven from 10,000 samples and on six of
        # seven from 100,000 (five of seven on both), each miss within 0.3 points of the band (seed 1's "9"s 13.2%
        # from 100,000, seed 7's "4"s 6.9% from 10,000), at FID 12.7-15.6x real, every one below BatchNorm's
        # 15.8-18.2x at Radford et al.'s 2e-4.
        # Keyed by model, so Fashion-MNIST gets it too, unmeasured there (no target asks the unconditional model).
        "lr_G": {"cgan": 2e-3, "cdcgan": 4e-4, "dcgan": 4e-4},
        # - D at 4e-3 (was 4e-4; issue 11): with the slower D, G's label units died before D read the labels on
        #   most seeds (seed 0: G ignored y from epoch 1, label accuracy 9.7% after 5 epochs, D won at epoch 5).
        #   A D ten times faster reads labels within the first epoch, while G's units are still alive, and its
        #   noisier steps do not win the game (D(G(z)) 0.3-0.5). Seed benchmark: docs/RESULTS.md.
        # - On Fashion-MNIST D at 4e-3 wins: seeds 0-2 (5 epochs, one thread) collapsed by epoch 2, label accuracy
        #   10-20%; at 4e-4 G learns the labels on seeds 0-5 (label accuracy 98.6-99.0%, worst class 93.8-97.4%,
        #   D(G(z)) 0.60 at epoch 5); benchmarks/results/seeds/fashion-*, docs/RESULTS.md. There G's label units
        #   survive the slower D, which they did not on MNIST.
        "lr_D": {"cgan": 4e-3, "cgan/fashion-mnist": 4e-4},
        # Samples come from a moving average of G's weights, decay 0.99 per update (half-life 69 updates), not
        # from G's last step (issue 11): at these learning rates G's weights at any one update carry the noise of
        # its last few steps. Measured on the seeds that failed the benchmark's FID or worst-class bar with G's
        # last weights (5 epochs, default threads; FID as a multiple of real data's, worst class):
        # seed 28 8.05x, 84.4% -> 5.20x, 95.9%; seed 29 8.73x -> 7.01x; seed 21 8.58x -> 6.81x. Longer averages
        # lag behind a G that still improves: 0.995 gave 5.76x, 7.14x, 7.64x and 0.999 8.6x, 10.8x, 24.8x.
        # The conditional DCGAN on MNIST samples from its average too (issue 12): on the untuned seeds 6-10 (10
        # epochs, one thread; docs/RESULTS.md) the average met the label targets (>= 99%, every class >= 97%) on 4
        # of 5 seeds, the last weights on 3, and its FID was lower on all five (2.66-3.28x real against
        # 2.75-3.31x). Its BatchNorm statistics are re-estimated for the averaged weights. On Fashion-MNIST (seeds
        # 0-2, 10 epochs, one thread) the average read the labels 0.2-0.3 points better on all three (88.9-89.6%
        # against 88.7-89.2%) and its FID was 2-7% lower, so it samples from the average there too.
        # With G at 4e-4 (lr_G above) a longer average, 0.999 (half-life 693 updates, under an epoch at batch 64),
        # had the higher overall label accuracy on all 5 untuned seeds (targets met on 4 against 3) at an FID at most
        # 7% higher; on Fashion-MNIST seeds 0-1, 0.6-1.0 points better.
        "ema": {"cgan": 0.99, "cdcgan": 0.999},
        # Both learning rates divided by 1.00015 per update (x0.69 after the 5-epoch run's 2,500 updates, x0.32
        # after 15 epochs; issue 11): the end of a run takes smaller steps, so the averaged G settles on every
        # class. Seed screen (11 seeds, 5 epochs, default threads; docs/RESULTS.md), worst class / FID x real:
        # constant rates 89.9-99.0% / worst 6.7x, 1 of 11 failing (seed 57's worst class); x1.0003 per update
        # 96.9-99.8% but seed 50 still catching up at epoch 5 (FID 8.8x); x1.00015 96.8-99.6% / worst 6.4x,
        # 11 of 11 passing.
        "decay": {"cgan": 1.00015},
        "lr_floor": 1e-6,  # reached after ~50,000 updates (100 epochs at batch 100)
        # The first updates (issue 11). About one run in thirty lost its game to D within the first epoch or two
        # (docs/RESULTS.md, "How the rare early loss happens"), in one of two ways, both traced update by update:
        # - a spike: D met an unusual batch, its Adam step spiked (a gradient far above its running second moment
        #   gives up to 16x the usual step), its logits jumped to |650|, G's gradient through it 100-fold, and G's
        #   own step saturated its sigmoid output, from which no gradient returns. StableAdamW's update clipping of
        #   D's steps (minigan.nn.optim.Adam, update_clip=1) bounds that step: with D's rate doubled, where the
        #   spike kills most seeds, 4 of 6 died without the clip and 0 of 6 with it. Clipping G as well slowed G
        #   in ordinary runs (FID 7.9x real on the one seed trained so), so only D is clipped.
        # - a lead: in updates 50-150 of every run D leads (D(G(z)) 0.05-0.13) while G's samples hardly depend on z
        #   yet; on an unlucky path G's output logits then drift to saturation with no spike at all (seed 98 with
        #   the clip alone). D's rate therefore starts at G's and rises linearly to its own over the first 500
        #   updates (one epoch; optim.LinearWarmup). Screened on 8 seeds at update 500 (spread of the samples over
        #   z higher on 8 of 8, D(G(z)) median 0.32 against 0.21), then benchmarked with the clip: 10 of 10 seeds at
        #   one thread and 20 of 20 at the default count (docs/RESULTS.md).
        # Fashion-MNIST trains D at 4e-4 and has no seed benchmark with either, so it keeps neither.
        "d_update_clip": {"cgan": 1.0, "cgan/fashion-mnist": 0.0},
        "d_warmup": {"cgan": 500, "cgan/fashion-mnist": 0},
        "update": "alternating",
    },
}
PRESET_NAMES = tuple(PRESETS)
UPDATE_RULES = ("alternating", "simultaneous")
#: D's matching-aware term (``--matching-aware``): off, a second D step per update, or rows of D's own step.
MATCHING_AWARE_MODES = ("none", "step", "joint")


class ConfigError(ValueError):
    """A run cannot start as asked (bad option, conflicting resume, missing checkpoint...)."""



def default_out(model: str, dataset: str, preset: str) -> str:
    """The default run directory ``runs/<model>-<dataset>-<preset>`` (a folder dataset by its last name)."""
    name = Path(str(dataset).rstrip("/\\")).name or "data"
    return os.path.join("runs", f"{model}-{name}-{preset}")


def _positive(name: str, value: Any, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")


@dataclass
class TrainConfig:
    """Everything that defines a run. Stored in every checkpoint.

    Attributes
    ----------
    model : str
        A name of :data:`minigan.families.MODELS`: ``cgan``, ``gan``, ``dcgan``, ``cdcgan``, ``pix2pix``.
    dataset : str
        ``"mnist"`` or ``"fashion-mnist"``; pix2pix: ``"fashion-edges"``, ``"mnist-inpaint"`` or a folder in the
        pix2pix layout (:mod:`minigan.paired`).
    preset : {"paper", "modern"}
    epochs : int or None
        Train until this many epochs are complete (a total, not "more"). Default 5 when ``steps`` is None.
    steps : int or None
        Train until this many updates (global steps) are done; overrides ``epochs``.
    batch : int
        Real examples per D step (and fakes per D and G step).
    k : int
        D steps per G step (Algorithm 1's k).
    device : {"cpu", "gpu"} or None
        Backend to switch to; None keeps the active one (tests use this for the strict backend).
    seed : int
        The one run seed; model init, dropout, noise, data order and grid noise are all derived from it.
    data_dir : str or None
        Directory of IDX files (``--data``); None uses the cache / download sources of :mod:`minigan.data`.
    out : str or None
        Run directory; None gives ``runs/<model>-<dataset>-<preset>``.
    log_interval : int
        Updates between device-to-host read-backs of the running losses (and NaN checks).
    progress : bool or None
        Progress bar: None = automatic (tqdm, else a built-in one), False = off.
    g_loss : {"non_saturating", "minimax"}
    update : {"alternating", "simultaneous"} or None
        ``alternating``: Algorithm 1 (k D steps, then a G step on fresh noise through the updated D);
        ``simultaneous``: the original code's one-pass update (:func:`minigan.objective.simultaneous_step`,
        needs ``k`` = 1). None: the preset's choice.
    model_options : dict
        Extra keyword arguments for :func:`minigan.families.build` (e.g. ``d_irange``).
    select_every : int or None
        Model selection as in the CGAN paper: every this many epochs, score G by the Parzen-window
        log-likelihood of the validation images (σ chosen on the first half of them, at most 1,000, the rest
        scored; 10,000 samples, 1,000 per class for the CGAN) and keep the best model as ``best.npz``.
    lr_G, lr_D : float or None
        Learning rates of G's and D's optimizers in place of the preset's (the initial rate when they decay). A run
        writes the rates it resolved into its checkpoint.
    lr_decay : float or None
        The per-update divisor of the learning rates in place of the preset's: ``paper`` decays SGD's rates
        (the CGAN paper states 1.00004; the original GAN code uses 1.000004); ``modern`` decays Adam's for the
        CGAN (1.00015) and keeps the other models' constant. 1 keeps the rate constant. None: the preset's. A
        run writes the value it resolved into its checkpoint (:func:`trained_lr_decay`).
    ema : float or None
        Decay :math:`\beta` of the moving average of G's weights (:class:`minigan.nn.optim.WeightAverage`) that
        grids, the health monitor, model selection, ``sample`` and ``eval`` use; training steps the live G.
        0 turns it off; None takes the preset's value. Resolved when a run starts and stored in its checkpoint.
    d_update_clip : float or None
        StableAdamW's clip of each of D's weight tensors' Adam steps (:class:`minigan.nn.optim.Adam`'s
        ``update_clip``); 0 turns it off; None takes the preset's (modern CGAN on MNIST: 1). Resolved when a run
        starts and stored in its checkpoint; a checkpoint from before the option resumes without it.
    d_warmup : int or None
        Updates over which D's learning rate rises linearly from G's to its own
        (:class:`minigan.nn.optim.LinearWarmup`), so D cannot outpace a G that has not yet learned to draw; 0 turns
        it off; None takes the preset's (modern CGAN on MNIST: 500). Resolved when a run starts and stored in its
        checkpoint; a checkpoint from before the option resumes without it.
    matching_aware : {"none", "step", "joint"} or None
        D's matching-aware term for conditional models (:func:`minigan.objective.matching_aware_step`: other real
        images paired with wrong labels, scored as fakes): ``"step"`` as a second D step per update, ``"joint"`` as
        rows of D's own step, ``"none"`` off; None takes the preset's (modern CGAN and conditional DCGAN:
        ``"step"``). Resolved when a run starts and stored in its checkpoint; a checkpoint from before the option
        resumes with what its preset gave then (:func:`trained_matching_aware`).
    matching_aware_every : int or None
        Give D the matching-aware term on one update in this many (updates 0, N, 2N, ...; 1: every update), a
        weaker term; needs a term. None takes the preset's (1). Resolved when a run starts and stored in its
        checkpoint; a checkpoint from before the option trained with 1.
    matching_aware_epochs : int or None
        Give D the matching-aware term in the first K epochs of the run only (updates below K x updates per
        epoch), and none after: the term teaches D to read the label early, and is then taken away, since at its
        optimum it pulls G towards images whose label a classifier is surest of (their within-class spread
        narrows). 0: every epoch; needs a term when K > 0. None takes the preset's (modern conditional DCGAN on MNIST:
        7; otherwise 0, and 0 when the term is off). Resolved when a run starts and stored in its checkpoint; a
        checkpoint from before the option trained with 0.
    stop_on_collapse : bool
        End the run when the health monitor (:mod:`minigan.health`) reports a failure, without saving the
        failed epoch's state: the checkpoint on disk is the last one without a finding.
    """

    model: str = "cgan"
    dataset: str = "mnist"
    preset: str = "modern"
    epochs: int | None = None
    steps: int | None = None
    batch: int = 100
    k: int = 1
    device: str | None = None
    seed: int = 0
    data_dir: str | None = None
    out: str | None = None
    log_interval: int = 50
    progress: bool | None = None
    g_loss: str = "non_saturating"
    update: str | None = None
    model_options: dict = field(default_factory=dict)
    select_every: int | None = None
    lr_G: float | None = None
    lr_D: float | None = None
    lr_decay: float | None = None
    stop_on_collapse: bool = False
    ema: float | None = None
    d_update_clip: float | None = None
    d_warmup: int | None = None
    matching_aware: str | None = None
    matching_aware_every: int | None = None
    matching_aware_epochs: int | None = None

    #: Fields that may differ when a run is resumed (they do not change what is computed).
    RESUMABLE_OVERRIDES = ("epochs", "steps", "device", "data_dir", "log_interval", "progress", "select_every",
                           "stop_on_collapse")

    def __post_init__(self):
        self.validate()

    def validate(self) -> "TrainConfig":
        if self.model not in families.MODELS:
            raise ConfigError(f"unknown model {self.model!r}; choose one of {', '.join(families.MODELS)}")
        if not isinstance(self.dataset, str):
            raise ConfigError(f"dataset must be a name, got {self.dataset!r}")
        try:
            families.get(self.model).check_dataset(self.dataset)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if self.preset not in PRESETS:
            raise ConfigError(f"unknown preset {self.preset!r}; choose one of {', '.join(PRESETS)}")
        if self.device is not None and self.device not in DEVICES:
            raise ConfigError(f"unknown device {self.device!r}; choose one of {', '.join(DEVICES)}")
        for name in ("batch", "k", "log_interval"):
            _positive(name, getattr(self, name))
        _positive("epochs", self.epochs, allow_none=True)
        _positive("steps", self.steps, allow_none=True)
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise ConfigError(f"seed must be a non-negative integer, got {self.seed!r}")
        if self.g_loss not in ("non_saturating", "minimax"):
            raise ConfigError(f"g_loss must be 'non_saturating' or 'minimax', got {self.g_loss!r}")
        if self.update is not None and self.update not in UPDATE_RULES:
            raise ConfigError(f"unknown update rule {self.update!r}; choose one of {', '.join(UPDATE_RULES)}")
        for name in ("lr_G", "lr_D"):
            value = getattr(self, name)
            if value is not None and not (_is_number(value) and math.isfinite(value) and value > 0):
                raise ConfigError(f"{name} must be a positive number, got {value!r}")
        if self.lr_decay is not None:
            if not (_is_number(self.lr_decay) and math.isfinite(self.lr_decay) and self.lr_decay >= 1):
                raise ConfigError(f"lr_decay must be a number >= 1 (the per-update divisor of the learning rate), "
                                  f"got {self.lr_decay!r}")
        if self.ema is not None and not (_is_number(self.ema) and 0 <= self.ema < 1):
            raise ConfigError(f"ema must be a number in [0, 1) (0 turns the average off), got {self.ema!r}")
        clip = self.d_update_clip
        if clip is not None:
            if not (_is_number(clip) and math.isfinite(clip) and clip >= 0):
                raise ConfigError(f"d_update_clip must be a number >= 0 (0 turns the clip off), got {clip!r}")
            if clip and PRESETS.get(self.preset, {}).get("optimizer") != "adam":
                raise ConfigError(f"d_update_clip clips Adam's steps; the {self.preset} preset trains with "
                                  f"{PRESETS[self.preset]['optimizer'].upper()} (drop --d-update-clip)")
        if self.d_warmup is not None and not (_is_int(self.d_warmup) and self.d_warmup >= 0):
            raise ConfigError(f"d_warmup must be a whole number of updates >= 0 (0 turns it off), got "
                              f"{self.d_warmup!r}")
        family = families.get(self.model)
        if self.matching_aware is not None and self.matching_aware not in MATCHING_AWARE_MODES:
            raise ConfigError(f"matching_aware must be one of {', '.join(MATCHING_AWARE_MODES)}, got "
                              f"{self.matching_aware!r}")
        if self.matching_aware_mode != "none" and not family.conditional:
            raise ConfigError(f"the matching-aware D term pairs images with wrong labels; the {self.model} model "
                              "has no labels (drop --matching-aware)")
        every = self.matching_aware_every
        if every is not None and not (_is_int(every) and every >= 1):
            raise ConfigError(f"matching_aware_every must be a whole number of updates >= 1, got {every!r}")
        if self.matching_aware_period != 1 and self.matching_aware_mode == "none":
            raise ConfigError(f"matching_aware_every={self.matching_aware_period} spaces out D's matching-aware term, "
                              f"and the {self.model} model trains without one here (give --matching-aware step or "
                              "joint)")
        first = self.matching_aware_epochs
        if first is not None and not (_is_int(first) and first >= 0):
            raise ConfigError(f"matching_aware_epochs must be a whole number of epochs >= 0 (0: every epoch), got "
                              f"{first!r}")
        if self.matching_aware_first_epochs and self.matching_aware_mode == "none":
            raise ConfigError(f"matching_aware_epochs={self.matching_aware_first_epochs} limits D's matching-aware "
                              f"term to the first epochs, and the {self.model} model trains without one here (give "
                              "--matching-aware step or joint)")
        if self.preset not in family.presets:
            raise ConfigError(f"the {self.model} model trains under the preset(s) {', '.join(family.presets)}, not "
                              f"{self.preset!r}")
        if self.update_rule not in family.update_rules:
            raise ConfigError(f"the {self.model} model trains with the {' or '.join(family.update_rules)} update, not "
                              f"{self.update_rule!r}")
        if self.select_every is not None and not family.selectable:
            raise ConfigError(f"the {self.model} model has no Parzen model selection: drop --select-every")
        if not isinstance(self.model_options, dict):
            raise ConfigError(f"model_options must be an object, got {self.model_options!r}")
        if self.update_rule == "simultaneous" and self.k != 1:
            raise ConfigError(f"the simultaneous update takes one D step per G step; k {self.k} needs "
                              "--update alternating")
        return self

    @property
    def update_rule(self) -> str:
        """The update actually used: ``update``, or the preset's."""
        return self.update or PRESETS[self.preset]["update"]

    @property
    def lr_divisor(self) -> float | None:
        """The per-update learning-rate divisor: ``lr_decay``, or the preset's (None: no schedule)."""
        if self.lr_decay is not None:
            return float(self.lr_decay)
        decay = PRESETS[self.preset].get("decay", {}).get(self.model)
        return None if decay is None else float(decay)

    @property
    def ema_beta(self) -> float:
        """The decay of G's weight average this config asks for: ``ema``, or the preset's for the model on this
        dataset (0: none)."""
        return float(preset_entry(self, "ema", 0.0) if self.ema is None else self.ema)

    @property
    def d_clip(self) -> float:
        """The clip of D's Adam steps this config asks for: ``d_update_clip``, or the preset's (0: none)."""
        if self.d_update_clip is not None:
            return float(self.d_update_clip)
        return float(preset_entry(self, "d_update_clip", 0.0))

    @property
    def d_warmup_updates(self) -> int:
        """The updates of D's learning-rate warm-up this config asks for: ``d_warmup``, or the preset's (0: none)."""
        return int(preset_entry(self, "d_warmup", 0) if self.d_warmup is None else self.d_warmup)

    @property
    def matching_aware_mode(self) -> str:
        """D's matching-aware term this config asks for: ``matching_aware``, or the preset's (``"none"``: off)."""
        return str(preset_entry(self, "matching_aware", "none") if self.matching_aware is None else self.matching_aware)

    @property
    def matching_aware_period(self) -> int:
        """One update in how many gets the matching-aware term: ``matching_aware_every``, or the preset's (1)."""
        return int(preset_entry(self, "matching_aware_every", 1) if self.matching_aware_every is None
                   else self.matching_aware_every)

    @property
    def matching_aware_first_epochs(self) -> int:
        """The epochs at the start of the run that get the matching-aware term: ``matching_aware_epochs``, or the
        preset's (0: every epoch)."""
        if self.matching_aware_epochs is not None:
            return int(self.matching_aware_epochs)
        # The preset's count limits the preset's term; a run that turns the term off has no epochs of it.
        return 0 if self.matching_aware_mode == "none" else int(preset_entry(self, "matching_aware_epochs", 0))

    @property
    def run_dir(self) -> Path:
        return Path(self.out if self.out is not None else default_out(self.model, self.dataset, self.preset))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ConfigError(f"checkpoint config has unknown fields {sorted(unknown)}")
        return cls(**d)



def checkpoint_model_options(meta: dict, config: "TrainConfig") -> dict:
    """The keyword arguments that rebuild a checkpoint's model.

    Format 2 stores them, so a run keeps its network even if a later minigan changes what its preset builds;
    a format-1 checkpoint (written before) gets its preset's current options, which it was trained with
    unless a preset's architecture changed since.
    """
    if meta.get("format", 1) >= 2:
        options = meta.get("model_options")
        if not isinstance(options, dict):
            raise CheckpointError("the checkpoint's model_options are missing or not an object")
        # The config's own model options were merged into them when the run began: they must agree.
        given = config.model_options
        if not resolved_options_agree(given, options):
            raise CheckpointError(f"the checkpoint's config.model_options {str(given)[:200]} disagree with the "
                                     f"model options it was built with {str(options)[:200]}")
        return dict(options)
    return model_options(config)


def model_options(config: TrainConfig) -> dict:
    """Keyword arguments for :func:`minigan.families.build`: the preset's, updated by ``config.model_options``."""
    return {**preset_model_options(config.preset, config.model), **config.model_options}


def preset_model_options(preset: str, model: str) -> dict:
    """The model options a preset builds ``model`` with (``{}``: the builder's defaults)."""
    return dict(PRESETS[preset].get("model_options", {}).get(model, {}))


def options_text(options: dict, separator: str = " ") -> str:
    """Model options as ``--option`` spells them, ``key=value`` joined by ``separator``."""
    return separator.join(f"{k}={option_text(v)}" for k, v in options.items())


def option_text(value) -> str:
    """A model option's value as ``--option`` spells it: none, numbers in short form, lists comma-separated."""
    if value is None:
        return "none"
    if isinstance(value, (list, tuple)):
        return ",".join(map(option_text, value))
    return f"{value:g}" if isinstance(value, float) else str(value)


def resolved_options_agree(given: dict, resolved: dict) -> bool:
    """Whether every option ``given`` (a config's, or ``--option`` on resume) is one the model was built with."""
    return isinstance(given, dict) and all(k in resolved and resolved[k] == v for k, v in given.items())


def trained_lr_decay(config: TrainConfig) -> float:
    """The learning-rate divisor a checkpoint's run was trained with (1.0: constant rates).

    Runs write it into their config since the modern CGAN's rates decay (issue 11), so a preset changed later
    does not change a run on resume. A checkpoint from before (``lr_decay`` None) ran with its preset's schedule
    of that time: the paper preset's decay, unchanged since, and constant rates under ``modern``.
    """
    if config.lr_decay is not None:
        return float(config.lr_decay)
    return (config.lr_divisor or 1.0) if config.preset == "paper" else 1.0


def trained_matching_aware(config: TrainConfig) -> str:
    """The matching-aware mode a checkpoint's run trained with.

    Runs write it into their config since ``--matching-aware`` came (issue 12); a checkpoint from before trained
    with its preset's of that time, which gave the term to the ``modern`` CGAN alone (a second D step).
    """
    if config.matching_aware is not None:
        return str(config.matching_aware)
    return "step" if (config.preset, config.model) == ("modern", "cgan") else "none"


def learning_rates(config: TrainConfig) -> tuple[float, float]:
    """(lr_G, lr_D): the config's, else the preset's rate for the model on this dataset
    (``"lr_D": {"cgan/fashion-mnist": ...}``), else for the model (``"lr_D": {"cgan": ...}``), else ``lr``."""
    general = PRESETS[config.preset]["lr"]
    lr_G = preset_entry(config, "lr_G", general) if config.lr_G is None else config.lr_G
    lr_D = preset_entry(config, "lr_D", general) if config.lr_D is None else config.lr_D
    return float(lr_G), float(lr_D)


def preset_entry(config: TrainConfig, name: str, default):
    """The config's preset's per-model entry ``name``: the one for the model on this dataset
    (``"cgan/fashion-mnist"``), else the model's (``"cgan"``), else ``default``."""
    table = PRESETS[config.preset].get(name, {})
    return table.get(f"{config.model}/{config.dataset}", table.get(config.model, default))



def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)

