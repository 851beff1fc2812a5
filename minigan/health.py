r"""The training-health monitor: a GAN that fails must never fail silently.

A GAN run can end with exit 0 and a useless generator. Four failures account for what we have seen, and
each can be read off numbers the trainer already has at an epoch's end, so the check is nearly free:

``d_won``
    D rejects practically every sample: the epoch's mean :math:`D(G(z))` is below ``d_won_below`` (0.05).
    G's non-saturating gradient then carries little information about *what* to change. The modern CGAN did
    not recover from this state in our measurements (D(G(z)) 0.07 -> 0.001 over the next epochs); the paper
    GAN's one-pass update did, within a few epochs.
``ignores_label``
    A conditional G whose output barely depends on its label. On the epoch's sample grid (row :math:`r`
    is label :math:`r`, columns share a noise vector) the *label share* is the variance across labels with
    the noise held, averaged over columns and pixels, divided by the grid's total variance:

    .. math:: s = \frac{\operatorname{mean}_{c,p}\operatorname{Var}_r X_{rcp}}{\operatorname{mean}_p
              \operatorname{Var}_{r,c} X_{rcp}} \in [0, 1].

    A G that ignores :math:`y` has :math:`s = 0` exactly; one that draws a different digit per row has
    :math:`s` near the share of between-class variance in real digits (about 0.5).
``mode_collapse``
    Samples that hardly vary with the noise: the *diversity* is the variance across the noise with the
    label held (for an unconditional model, across all grid samples), relative to the same variance of real
    images (within a class, resp. overall). Collapse to one image per label gives 0. Not judged at the first
    epoch (``collapse_from_epoch``): a G one epoch old often still varies little on runs that go on to train
    well (measured: four of six healthy Fashion-MNIST runs and the paper GAN, under 10% at epoch 1 only), while
    the failures seen so far were either still collapsed at epoch 2 or flagged ``d_won`` at epoch 1 as well.

``d_extreme``
    D's verdicts on G's samples have become extreme: the epoch's G loss (the non-saturating
    :math:`\operatorname{mean}[-\log D(G(z))]`) is more than ``extreme_ratio`` (5) times
    :math:`-\log \operatorname{mean} D(G(z))`. By Jensen's inequality the ratio is at least 1; it is large when
    D rejects some samples with enormous confidence (logits of -100 and beyond) while others pass, which is
    what D's logits blowing up looks like before either side has won. Measured on the 30 healthy runs of the
    default's seed benchmark (150 epoch records): at most 2.3; on three runs with D's rate x10 under the same
    default, 11.8-15.3 at epoch 1 and 49-88 at epoch 2, though D(G(z)) stayed at 0.14-0.35 (docs/RESULTS.md).
    Judged only for the non-saturating G loss.

Both measures are taken on images averaged over 4×4 blocks (28×28 → 7×7): a G whose sigmoid saturates
draws the same scribble under different salt-and-pepper speckle for every z, whose per-pixel variance is
large although every sample looks alike; block averages keep the strokes and drop the speckle (measured:
relative diversity 2.4 per pixel, against 0.0x pooled, for such a grid).

Each finding is a dict ``{"kind", "epoch", "value", "message", "cause", "advice"}``; the trainer prints it,
stores it in ``metrics.jsonl`` under ``"health"`` and, with ``--stop-on-collapse``, stops the run keeping the
last checkpoint that had no finding. The measures themselves (``label_share``, ``diversity``) go into every
epoch's record, flagged or not, so thresholds can be judged against real runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["HealthMonitor", "Thresholds", "label_share", "diversity", "real_diversity"]


@dataclass(frozen=True)
class Thresholds:
    """Where each measure raises a flag (see the module docstring for what they mean)."""

    d_won_below: float = 0.05
    label_share_below: float = 0.05
    diversity_below: float = 0.10
    collapse_from_epoch: int = 2
    extreme_ratio: float = 5.0


POOL = 4  # block size of the average pooling applied before measuring (28 x 28 images -> 7 x 7)


def pooled(images: np.ndarray) -> np.ndarray:
    """Square images (N, s*s) averaged over POOL x POOL blocks, (N, (s/POOL)^2); other widths unchanged."""
    x = np.asarray(images, dtype=np.float64)
    side = int(round(np.sqrt(x.shape[1]))) if x.ndim == 2 else 0
    if x.ndim != 2 or side * side != x.shape[1] or side % POOL:
        return x
    k = side // POOL
    return x.reshape(len(x), k, POOL, k, POOL).mean(axis=(2, 4)).reshape(len(x), k * k)


def _as_grid(images: np.ndarray, rows: int, cols: int) -> np.ndarray:
    x = np.asarray(images, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] != rows * cols:
        raise ValueError(f"health: expected {rows * cols} grid images of shape (N, D), received {x.shape}")
    return pooled(x).reshape(rows, cols, -1)


def label_share(grid: np.ndarray, rows: int = 10, cols: int = 10) -> float:
    """Variance across labels (noise held) over the total variance of a conditional sample grid; 0 ignores y."""
    x = _as_grid(grid, rows, cols)
    total = x.reshape(rows * cols, -1).var(axis=0).mean()
    if total <= 0:
        return 0.0
    return float(x.var(axis=0).mean() / total)


def diversity(grid: np.ndarray, rows: int = 10, cols: int = 10, conditional: bool = True) -> float:
    """Mean per-pixel variance across the noise: within each row (label) of a conditional grid, else overall."""
    x = _as_grid(grid, rows, cols)
    if conditional:
        return float(x.var(axis=1).mean())
    return float(x.reshape(rows * cols, -1).var(axis=0).mean())


def real_diversity(x: np.ndarray, y: np.ndarray | None, per_class: int = 200) -> float:
    """:func:`diversity` of real images: per-pixel variance within each class (``y`` given), else overall.

    Uses the first ``per_class`` images of each class (deterministic, and cheap for 50,000 training images).
    """
    x = np.asarray(x)
    if y is None:
        return float(pooled(x[:per_class * 10]).var(axis=0).mean())
    y = np.asarray(y)
    values = [pooled(x[np.flatnonzero(y == k)[:per_class]]).var(axis=0).mean() for k in np.unique(y)]
    return float(np.mean(values))


class HealthMonitor:
    """Judges each finished epoch; returns the measures and the findings.

    Parameters
    ----------
    conditional : bool
        Whether the model takes labels (the label-share check applies only then).
    reference_diversity : float
        :func:`real_diversity` of the training images, the scale of the diversity check.
    thresholds : Thresholds, optional
    """

    def __init__(self, conditional: bool, reference_diversity: float, thresholds: Thresholds | None = None,
                 non_saturating: bool = False):
        self.non_saturating = bool(non_saturating)
        self.conditional = bool(conditional)
        self.reference = float(reference_diversity)
        self.thresholds = thresholds or Thresholds()

    def measure(self, grid_images: np.ndarray) -> dict:
        """``label_share`` (conditional models) and ``diversity`` (relative to real images) of an epoch's grid."""
        measures = {"diversity": diversity(grid_images, conditional=self.conditional) / max(self.reference, 1e-12)}
        if self.conditional:
            measures["label_share"] = label_share(grid_images)
        return measures

    def findings(self, epoch: int, record: dict, measures: dict) -> list[dict]:
        """The failures that the epoch's record (its mean D(G(z))) and grid measures show, as dicts."""
        t, found = self.thresholds, []
        d_g_z = record.get("D_G_z")
        if d_g_z is not None and d_g_z < t.d_won_below:
            found.append(_finding(
                "d_won", epoch, d_g_z,
                f"D has won: mean D(G(z)) {d_g_z:.3f} over epoch {epoch} (below {t.d_won_below})",
                "D learns faster than G (its learning rate, extra D steps per G step, or a D that reads the "
                "labels while G cannot yet), and G's gradient no longer says what to change",
                "lower D's learning rate or raise G's (--lr-D / --lr-G), use the modern preset, or resume from "
                "an earlier checkpoint; in our measurements the modern CGAN did not recover from this state, "
                "while the paper GAN's one-pass update did within a few epochs (docs/RESULTS.md)"))
        loss_g = record.get("loss_G")
        if self.non_saturating and d_g_z is not None and loss_g is not None and 0 < d_g_z < 1:
            ratio = loss_g / -np.log(d_g_z)
            if ratio > t.extreme_ratio:
                found.append(_finding(
                    "d_extreme", epoch, ratio,
                    f"D's verdicts on G's samples are extreme: G's loss {loss_g:.1f} is {ratio:.0f} times "
                    f"-log of the mean D(G(z)) ({-np.log(d_g_z):.2f}; above {t.extreme_ratio:g})",
                    "D rejects some samples with enormous confidence while others pass: D's logits are blowing up, "
                    "usually because its learning rate is too high, and G's steps follow them",
                    "lower D's learning rate (--lr-D), or restart from an earlier checkpoint"))
        share = measures.get("label_share")
        if share is not None and share < t.label_share_below:
            found.append(_finding(
                "ignores_label", epoch, share,
                f"G ignores its label: only {share:.1%} of the sample grid's variance comes from the label "
                f"(below {t.label_share_below:.0%}; real digits: about 50%)",
                "G's label path is dead or D does not score whether an image matches its label, so nothing "
                "pushes G to use it",
                "use the modern preset (G's label units start alive, and D scores label matches from the first "
                "update with its faster learning rate and the matching-aware term); the paper CGAN is known to "
                "do this (docs/RESULTS.md)"))
        div = measures.get("diversity")
        if div is not None and div < t.diversity_below and epoch >= t.collapse_from_epoch:
            found.append(_finding(
                "mode_collapse", epoch, div,
                f"samples have collapsed: their variation across the noise is {div:.1%} of real images' "
                f"(below {t.diversity_below:.0%})",
                "G maps most noise vectors to a few images (mode collapse), usually after D won",
                "restart with another --seed or a lower learning rate; a checkpoint from before the collapse "
                "can be resumed"))
        return found


def _finding(kind: str, epoch: int, value: float, message: str, cause: str, advice: str) -> dict:
    return {"kind": kind, "epoch": int(epoch), "value": float(value), "message": message, "cause": cause,
            "advice": advice}
