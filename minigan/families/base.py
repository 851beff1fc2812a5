r"""What a model family is: its networks (:class:`GANModel`) and what it does in one update (:class:`Family`).

The shared trainer (:class:`minigan.train.Trainer`) owns everything every family needs: the run directory,
checkpoints and resume, random streams, optimizers and schedules, signals, divergence checks, progress, the
per-epoch grid, model selection and the health monitor. A family module adds a model by defining

* a builder ``build(seed, **options) -> GANModel``: its networks, by name (``G`` and ``D`` here; the trainer
  makes one optimizer per network and checkpoints each network's parameters, buffers and optimizer state
  under its name);
* a :class:`Family` subclass: which presets and update rules it trains under, which data it trains on and how
  it reaches the device (:meth:`Family.check_dataset`, :meth:`Family.load_dataset`,
  :meth:`Family.complete_options`, :meth:`Family.device_data`; MNIST-style images and labels by default), what
  it does with the data before the first update (:meth:`Family.prepare`), one update (:meth:`Family.update`,
  which returns the values the trainer logs, named by :attr:`Family.metric_names`), and its sample grid
  (:meth:`Family.grid`, :meth:`Family.grid_images`, :meth:`Family.grid_picture`).

and registering the subclass in :data:`minigan.families.FAMILIES`. :class:`AdversarialFamily` is the GAN game
of Goodfellow et al. (2014): Algorithm 1's alternating update and the original code's one-pass update, with one
overridable hook for D's step.

Images
------
Every family's data and samples are (N, 784) rows in [0, 1] outside the model. A model whose G draws in another
range (a Tanh output, [-1, 1]) says so in :attr:`GANModel.output_range`; the trainer maps the training images
into that range once (:meth:`GANModel.from_unit`), and :meth:`GANModel.sample` and the grids map G's output
back (:meth:`GANModel.to_unit`), so every tool downstream (PNG grids, ``minigan sample``, ``minigan eval``,
the health monitor) reads every model alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from .. import backend, data, health, io, objective
from ..backend import Rng
from ..nn import Layer
from ..nn.activations import sigmoid
from ..nn.norm import standing_statistics

if TYPE_CHECKING:  # the trainer imports the families, never the other way round
    from ..data import Split
    from ..train import Trainer

__all__ = ["GANModel", "Family", "AdversarialFamily", "N_CLASSES", "IMAGE_SIZE"]

IMAGE_SIZE = 784
N_CLASSES = 10
#: Batches of G's inputs that :meth:`GANModel.standing_statistics` averages over.
STANDING_BATCHES = 50


@dataclass
class GANModel:
    """A generator, a discriminator and what sampling needs: the noise prior, the conditioning, G's range."""

    name: str
    G: Layer
    D: Layer
    noise_dim: int
    noise_low: float
    noise_high: float
    n_classes: int | None  # None: unconditional
    output_range: tuple[float, float] = (0.0, 1.0)  # the range of G's output (and of the images D is shown)
    #: Whether :meth:`sample` draws images from noise (False: a translation model, pix2pix).
    draws_samples = True

    @property
    def conditional(self) -> bool:
        return self.n_classes is not None

    def networks(self) -> dict[str, Layer]:
        """The trained networks by name; the trainer makes one optimizer each and checkpoints them by name."""
        return {"G": self.G, "D": self.D}

    def layers(self):
        return self.networks()

    def sample_noise(self, n: int, rng: Rng, like: Any = None, truncation: float = 1.0):
        r"""``n`` draws from the noise prior U(low, high)^noise_dim on the active backend (or ``like``'s).

        ``truncation`` :math:`\psi \in (0, 1]` draws from the prior truncated to the central box whose half-width
        is :math:`\psi` times the prior's, :math:`U(c - \psi r, c + \psi r)` with :math:`c, r` the prior's centre and
        half-width: a uniform distribution cut to a sub-box is uniform on it. Samples from noise nearer the prior's
        centre are more typical of their class and less varied (the "truncation trick", Brock et al. 2019);
        training always draws from the whole prior (1).
        """
        low, high = self.noise_low, self.noise_high
        if isinstance(truncation, bool) or not isinstance(truncation, (int, float)) or not 0 < truncation <= 1:
            raise ValueError(f"truncation must be a number in (0, 1], got {truncation!r}")
        if truncation != 1:
            centre, half = (low + high) / 2, (high - low) / 2
            low, high = centre - truncation * half, centre + truncation * half
        return rng.uniform(low, high, (n, self.noise_dim), self.dtype, like=like)

    def one_hot(self, labels):
        """One-hot rows (N, n_classes) in the model's dtype on the active backend; checks the label range."""
        labels = np.asarray(labels)
        if labels.ndim != 1 or labels.dtype.kind not in "iu":
            raise ValueError(f"{self.name}: labels must be a 1-D integer array, received shape {labels.shape} "
                             f"dtype {labels.dtype}")
        bad = labels[(labels < 0) | (labels >= self.n_classes)]
        if bad.size:
            raise ValueError(f"{self.name}: label {int(bad[0])} is outside the range 0..{self.n_classes - 1}")
        y = np.zeros((labels.size, self.n_classes), self.dtype)
        y[np.arange(labels.size), labels] = 1
        return backend.to_device(y)

    @property
    def dtype(self):
        return self.G.dtype

    def from_unit(self, x):
        """Images in [0, 1] mapped linearly onto :attr:`output_range` (a fresh array unless it is [0, 1])."""
        low, high = self.output_range
        return x if (low, high) == (0.0, 1.0) else x * (high - low) + low

    def to_unit(self, x):
        """G's output mapped linearly from :attr:`output_range` onto [0, 1] (not clipped)."""
        low, high = self.output_range
        return x if (low, high) == (0.0, 1.0) else (x - low) * (1.0 / (high - low))

    def generate(self, z, y=None):
        """G's output for noise ``z`` (and one-hot ``y``), in evaluation mode, in G's :attr:`output_range`."""
        if self.conditional and y is None:
            raise ValueError(f"{self.name} is conditional: generate() needs one-hot labels y")
        return self.G.forward(z if not self.conditional else (z, y), train=False)

    def standing_statistics(self, batch: int, seed: int = 0, batches: int = STANDING_BATCHES) -> bool:
        """Re-estimate G's BatchNorm running statistics for G's weights as they are now
        (:func:`minigan.nn.norm.standing_statistics`); returns whether G has any BatchNorm.

        G runs in evaluation mode on ``batches`` batches of ``batch`` inputs (the training batch size, so each
        batch is normalised as in training): noise from its own generator ``Rng(seed)``, never the run's streams,
        so the same weights always get the same statistics; for a conditional G the labels cycle through the
        classes. Used when samples come from a moving average of G's weights, whose activations the live
        network's running statistics do not describe.
        """
        rng = Rng(seed)
        with standing_statistics(self.G) as layers:
            if not layers:
                return False
            for b in range(batches):
                z = self.sample_noise(batch, rng)
                y = self.one_hot((np.arange(batch) + b * batch) % self.n_classes) if self.conditional else None
                self.generate(z, y)
        return True

    def sample(self, n: int, rng: Rng, label: int | None = None, truncation: float = 1.0):
        """``n`` generated images (n, 784) in [0, 1] terms on the active backend, and their labels (host int64,
        or None). Values are G's mapped by :meth:`to_unit` (a sigmoid or Tanh output stays inside [0, 1]).

        For a conditional model, ``label=k`` samples class ``k``; ``label=None`` cycles through the classes.
        ``truncation`` < 1 draws the noise from the central part of the prior (:meth:`sample_noise`).
        """
        if not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"sample: n must be a positive integer, got {n!r}")
        if not self.conditional:
            if label is not None:
                raise ValueError(f"{self.name} is unconditional: it cannot sample a given label")
            return self.to_unit(self.generate(self.sample_noise(n, rng, truncation=truncation))), None
        labels = np.arange(n, dtype=np.int64) % self.n_classes if label is None else np.full(n, label, np.int64)
        z = self.sample_noise(n, rng, truncation=truncation)
        return self.to_unit(self.generate(z, self.one_hot(labels))), labels


class Family:
    """What one model family defines for the shared trainer; one instance per run (``trainer.family``).

    The trainer calls, in this order: :meth:`prepare` (fresh and resumed runs alike; a resumed run then
    overwrites the weights from its checkpoint), :meth:`grid` once, then per update :meth:`update`, and per
    epoch :meth:`grid_images`. What a family may use of the trainer, inside :meth:`update`:
    ``config``, ``model``, ``preset`` (the preset's dict), ``noise_rng``, ``x_train`` / ``y_train`` (device,
    ``x`` already in G's range), ``labels_host``, ``n_train``, ``step_in_epoch``, ``updates``,
    :meth:`~minigan.train.Trainer.real_batch` and :meth:`~minigan.train.Trainer.step` (an optimizer step of
    one network, followed by that network's after-step hooks).
    """

    #: ``--model`` name.
    name: ClassVar[str] = ""
    #: Presets (:data:`minigan.config.PRESETS`) this family trains under.
    presets: ClassVar[tuple[str, ...]] = ("paper", "modern")
    #: Update rules (``--update``) it implements.
    update_rules: ClassVar[tuple[str, ...]] = ("alternating", "simultaneous")
    #: The values :meth:`update` returns, in order; their epoch means go into ``metrics.jsonl``.
    metric_names: ClassVar[tuple[str, ...]] = ("loss_D", "loss_G", "D_x", "D_G_z")
    #: Whether model selection by Parzen log-likelihood (``--select-every``) applies to its samples.
    selectable: ClassVar[bool] = True
    #: Whether its models are class-conditional (G(z, y), D(x, y)); what pairs images with labels needs it.
    conditional: ClassVar[bool] = False

    def __init__(self, trainer: "Trainer"):
        self.trainer = trainer
        self.model: GANModel = trainer.model

    @staticmethod
    def build(seed: int | None = 0, **options) -> GANModel:
        """The family's networks, every initial weight and generator seeded from ``seed``."""
        raise NotImplementedError

    # -- data: which datasets, loaded how, and how they reach the device ----------------------------------
    @classmethod
    def check_dataset(cls, name: str) -> None:
        """Raise ValueError if this family cannot train on the dataset called ``name`` (``--dataset``)."""
        if name not in data.DATASET_NAMES:
            raise ValueError(f"unknown dataset {name!r} for the {cls.name} model; choose one of "
                             f"{', '.join(data.DATASET_NAMES)}")

    @classmethod
    def load_dataset(cls, config, options: dict, log):
        """The run's :class:`~minigan.data.Dataset` (``options``: the model options the run is built with)."""
        return data.load_dataset(config.dataset, data_dir=config.data_dir, log=log)

    @classmethod
    def complete_options(cls, options: dict, dataset) -> dict:
        """A fresh run's model options with what the data decides added (stored in checkpoints, so a run's model
        can be rebuilt without its data); the MLP and DCGAN models need nothing from it."""
        return options

    def device_data(self, train: "Split"):
        """(x_train, y_train) on the device: the training images in G's output range and what conditions them
        (one-hot labels, or None); :meth:`~minigan.train.Trainer.real_batch` indexes both by the same rows."""
        m = self.model
        x = np.ascontiguousarray(train.x, dtype=m.dtype)
        x_train = backend.to_device(np.ascontiguousarray(m.from_unit(x), dtype=m.dtype))
        y_train = backend.to_device(data.one_hot(train.y, m.n_classes, m.dtype)) if m.conditional else None
        return x_train, y_train

    def prepare(self, train: "Split") -> None:
        """Data-dependent initialisation before the first update (the host training split ``train``)."""

    def update(self) -> tuple:
        """One update (one global step); returns :attr:`metric_names`' values as 0-d device arrays."""
        raise NotImplementedError

    def grid(self, rng: Rng) -> tuple[np.ndarray, np.ndarray | None]:
        """Host noise and labels of the fixed 10x10 grid drawn every epoch.

        Conditional: row r is label r and column c shares one noise vector across the rows, so the grid shows
        the condition changing with the noise held; unconditional: 100 independent draws, labels None.
        """
        like = np.zeros(1)
        if self.model.conditional:
            cols = backend.to_host(self.model.sample_noise(10, rng, like=like))
            return np.tile(cols, (10, 1)), np.repeat(np.arange(10, dtype=np.int64), 10)
        return backend.to_host(self.model.sample_noise(100, rng, like=like)), None

    def grid_images(self, z: np.ndarray, labels: np.ndarray | None) -> np.ndarray:
        """The grid as host (100, 784) images in [0, 1] terms (eval mode: no random draws, no effect on the run)."""
        m = self.model
        y = m.one_hot(labels) if m.conditional else None
        return backend.to_host(m.to_unit(m.generate(backend.to_device(z), y)))

    def grid_picture(self, images) -> np.ndarray:
        """The uint8 picture of :meth:`grid_images`' result written as ``samples/epoch_XXX.png``: a 10x10 grid."""
        return io.image_grid(images, 10, 10)

    def summary(self) -> str | None:
        """A line about the model that the trainer logs when a run starts (None: nothing)."""
        return None

    def monitor(self, train: "Split") -> health.HealthMonitor | None:
        """The health monitor of :mod:`minigan.health` for this model (None: no health checks)."""
        conditional = self.model.conditional
        return health.HealthMonitor(conditional, health.real_diversity(train.x, train.y if conditional else None),
                                    non_saturating=self.trainer.config.g_loss == "non_saturating")

    @staticmethod
    def format_means(means: dict) -> str:
        """One log line's worth of the epoch means of :attr:`metric_names`."""
        return "  ".join(f"{k} {v:.4f}" for k, v in means.items())


class AdversarialFamily(Family):
    r"""The GAN game: D's loss :math:`\tfrac12[\mathrm{BCE}(1, D(x)) + \mathrm{BCE}(0, D(G(z)))]`, G's loss
    through D (:mod:`minigan.objective`), by the run's update rule.

    ``alternating`` is Algorithm 1 of Goodfellow et al. (2014): ``k`` D steps on successive real batches, each
    against fresh fakes, then one G step on fresh noise through the updated D (the conditional fakes carry the
    real batch's labels). ``simultaneous`` is the original code's one-pass update
    (:func:`minigan.objective.simultaneous_step`). Subclasses change D's step by overriding
    :meth:`discriminator_update`, or say that D sees its real and fake rows as two batches
    (:attr:`separate_batches`).

    A conditional family's D may also get the matching-aware term (``TrainConfig.matching_aware``; Reed et al.
    2016's GAN-CLS, :func:`minigan.objective.matching_aware_step`): other real images paired with wrong labels
    count as fakes, so D is rewarded for reading the label from its first update. ``"step"`` gives D a second
    step per update on them (after each of D's steps, or after the one-pass update); ``"joint"`` puts them into
    D's own step beside the fakes (one D step per update; the one-pass update takes the second step instead).
    ``TrainConfig.matching_aware_every`` = N gives the term on one update in N only (updates 0, N, 2N, ...);
    ``TrainConfig.matching_aware_epochs`` = K only on the updates of the run's first K epochs.
    """

    #: Whether D sees the real and the fake rows of its step as two batches (a D with BatchNorm, whose output on
    #: a row depends on the other rows of its batch; :func:`minigan.objective.discriminator_step`'s ``separate``).
    separate_batches: ClassVar[bool] = False

    def __init__(self, trainer: "Trainer"):
        super().__init__(trainer)
        #: ``"none"``, ``"step"`` or ``"joint"`` (the config checked that only a conditional family gets one).
        self.matching_aware = trainer.config.matching_aware_mode
        #: The term is given on the updates whose number (counted from 0) is a multiple of this.
        self.matching_aware_every = trainer.config.matching_aware_period
        #: The term ends at this update (the first of epoch K + 1 for ``matching_aware_epochs`` = K; None: never).
        first = trainer.config.matching_aware_first_epochs
        self.matching_aware_until = first * trainer.steps_per_epoch if first else None

    def update(self) -> tuple:
        if self.trainer.config.update_rule == "simultaneous":
            return self.simultaneous_update()
        return self.alternating_update()

    def discriminator_update(self, x_real, x_fake, y_real) -> tuple:
        """D's gradient on one real and one fake batch (with the matching-aware rows, ``"joint"``), and D's
        optimizer step, then the matching-aware step (``"step"``); returns (loss, logits) with the real rows'
        logits first and no matching-aware rows."""
        xp = backend.get_array_module(x_real)
        B = x_real.shape[0]
        y_fake = y_real
        mode = self._matching_aware_now()
        if mode == "joint":
            rows, wrong = self._mismatched_pairs(B)
            x_fake, y_fake = xp.concatenate([x_fake, self.trainer.x_train[rows]]), xp.concatenate([y_real, wrong])
        loss, logits, _ = objective.discriminator_step(self.model.D, x_real, x_fake, y_real, y_fake, train=True,
                                                       separate=self.separate_batches)
        self.trainer.step("D")
        if mode == "step":
            self._matching_aware_step(B)
        return loss, logits[:2 * B]

    def alternating_update(self) -> tuple:
        t, m, c = self.trainer, self.model, self.trainer.config
        B = c.batch
        loss_D = dx = dgz = None
        y_real = None
        for j in range(c.k):
            x_real, y_real = t.real_batch(t.step_in_epoch * c.k + j)
            z = m.sample_noise(B, t.noise_rng, like=x_real)
            x_fake = m.G.forward(z if y_real is None else (z, y_real), train=True)
            l_d, logits = self.discriminator_update(x_real, x_fake, y_real)
            probs = sigmoid(logits)
            dx_j, dgz_j = probs[:B].mean(), probs[B:].mean()
            loss_D = l_d if loss_D is None else loss_D + l_d
            dx = dx_j if dx is None else dx + dx_j
            dgz = dgz_j if dgz is None else dgz + dgz_j
        z = m.sample_noise(B, t.noise_rng, like=t.x_train)
        loss_G, _, _, _ = objective.generator_step(m.G, m.D, z, y_real, kind=c.g_loss)
        t.step("G")
        if c.k > 1:
            loss_D, dx, dgz = loss_D / c.k, dx / c.k, dgz / c.k
        return loss_D, loss_G, dx, dgz

    def simultaneous_update(self) -> tuple:
        t, m, c = self.trainer, self.model, self.trainer.config
        B = c.batch
        x_real, y_real = t.real_batch(t.step_in_epoch)
        z = m.sample_noise(B, t.noise_rng, like=x_real)
        loss_D, loss_G, logits, _ = objective.simultaneous_step(m.G, m.D, x_real, z, y_real, kind=c.g_loss)
        t.step("D")
        t.step("G")
        self.after_simultaneous_update(B)
        probs = sigmoid(logits)
        return loss_D, loss_G, probs[:B].mean(), probs[B:].mean()

    def after_simultaneous_update(self, batch: int) -> None:
        """Called after both optimizer steps of a one-pass update: the matching-aware D step, if any (either mode)."""
        if self._matching_aware_now() != "none":
            self._matching_aware_step(batch)

    def _matching_aware_now(self) -> str:
        """The matching-aware mode of this update: the run's, or ``"none"`` between its every-N updates and after
        its first epochs."""
        updates = self.trainer.updates
        if self.matching_aware_until is not None and updates >= self.matching_aware_until:
            return "none"
        return self.matching_aware if updates % self.matching_aware_every == 0 else "none"

    def _mismatched_pairs(self, batch: int):
        """``batch`` random training images (device rows), and one-hot labels that differ from each one's own.

        Drawn from the noise generator's host stream, whose state every checkpoint saves, so a resumed run draws
        them again exactly.
        """
        t, m = self.trainer, self.model
        gen = t.noise_rng.host
        rows = gen.integers(0, t.n_train, batch)
        wrong = (t.labels_host[rows] + gen.integers(1, m.n_classes, batch)) % m.n_classes
        return backend.to_device(rows), m.one_hot(wrong)

    def _matching_aware_step(self, batch: int) -> None:
        """One D update on other real images with their labels (real) and with wrong labels (fake)."""
        t = self.trainer
        rows, wrong = self._mismatched_pairs(batch)
        objective.matching_aware_step(self.model.D, t.x_train[rows], t.y_train[rows], wrong, train=True,
                                      separate=self.separate_batches)
        t.step("D")

    @staticmethod
    def format_means(means: dict) -> str:
        return (f"loss_D {means['loss_D']:.4f}  loss_G {means['loss_G']:.4f}  D(x) {means['D_x']:.3f}  "
                f"D(G(z)) {means['D_G_z']:.3f}")
