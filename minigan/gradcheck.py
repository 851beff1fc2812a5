r"""Finite-difference checks of every hand-written gradient.

Method
------
For a scalar function :math:`f(\theta)` and a sampled entry :math:`\theta_i`, the numerical derivative is the
central difference of order 4 (the five-point stencil)

.. math:: n_i = \frac{-f(\theta + 2he_i) + 8f(\theta + he_i) - 8f(\theta - he_i) + f(\theta - 2he_i)}{12h},

whose truncation error is :math:`O(h^4)`, so a step of :math:`h = 10^{-3}` keeps both truncation
(:math:`\sim h^4 = 10^{-12}`) and float64 round-off (:math:`\sim \epsilon f/h \approx 10^{-13}`) far below the
tolerance. (``order=2`` selects the plain two-point central difference.) The analytic value :math:`a_i`
comes from ``backward``; the score is the relative error

.. math:: r_i = |a_i - n_i| \,/\, \max(10^{-8}, |a_i| + |n_i|),

and a tensor passes when its largest :math:`r_i` is at most the tolerance (default :math:`10^{-7}`).

Resolution
----------
A finite difference cannot resolve a derivative smaller than its own round-off: each :math:`f` carries an error
of about one unit in the last place, :math:`\epsilon|f|`, so :math:`n_i` is uncertain by about
:math:`\epsilon|f|/h`. We bound it by :math:`\nu = 4\epsilon\max|f|/h` (4 covers the stencil's weights and a
few ulps). When :math:`f` is a sum whose terms cancel, it is rounded at the scale of the terms, not of the
sum, and :math:`|f|` is replaced by that scale :math:`S` where it is larger (:func:`check_layer` passes
:math:`S = \sum|Y \odot R|`): a convolution's bias followed by a normalisation has an exactly zero gradient,
whose finite difference is pure round-off of :math:`S`. Entries with :math:`|a_i| + |n_i| \ge \nu/\text{tol}` are *resolvable* and must meet the relative
tolerance. The rest (gradients near zero, typically below :math:`10^{-5}`) cannot be tested to relative
:math:`10^{-7}` by any float64 finite difference; they must instead agree *absolutely*,
:math:`|a_i - n_i| \le \nu`, and are counted in the report's "tiny" column, never silently dropped. The
split looks at both values, so an analytic gradient that is wrongly large is caught either way. The bound
counts ulps of :math:`f` itself, and a loss computed through a deep network can round at a larger scale than
its value (a logit is a sum of terms larger than it); an entry outside the bound, or a scored entry above the
tolerance, is therefore measured once more at a ten times larger step, whose round-off and bound are ten times
smaller, before it counts as a failure.

Everything is done in float64 (models are cast, inputs converted). Dropout masks are drawn once and frozen
while the check perturbs the parameters, so :math:`f` is one fixed function.

Kinks
-----
ReLU and maxout are not differentiable where a pre-activation is 0 or two maxout pieces tie. Each layer
reports its discrete choice (:meth:`~minigan.nn.base.Layer.activation_pattern`); if any perturbed evaluation
changes a pattern, the stencil straddled a kink, the entry is counted under "kinks" and left out of the
error rather than failing or loosening the tolerance.

What is checked
---------------
* :func:`check_layer`: one layer (or any network) under :math:`f = \sum Y \odot R` with a fixed random
  :math:`R`, which makes every gradient entry order one;
* :func:`check_discriminator`: D's parameters and inputs under D's loss;
* :func:`check_generator`: G's parameters and inputs under G's loss *through* D;
* :func:`check_pix2pix_generator`: pix2pix's G loss (cGAN through D plus λ·L1) into G's parameters and input.
"""

from __future__ import annotations

import contextlib
import itertools
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import numpy as np

from . import backend
from .backend import get_array_module
from .nn import Dropout, Layer
from .nn.losses import bce_with_logits
from .objective import discriminator_step, generator_step, simultaneous_step

DEFAULT_TOLERANCE = 1e-7

# Central stencils as (k, c_k): n = sum_k c_k [f(x + k h) - f(x - k h)] / h. Differencing each symmetric pair
# first makes n exactly 0 when f does not change (summing c_k f / h term by term leaves a rounding residue).
_STENCILS = {
    2: ((1, 1 / 2),),
    4: ((1, 8 / 12), (2, -1 / 12)),
}
_DEFAULT_STEP = {2: 1e-6, 4: 1e-3}


def _row_ok(r: "CheckResult", tolerance: float) -> bool:
    return r.checked + r.tiny > 0 and r.max_rel_error <= tolerance and r.tiny_failures == 0


def relative_error(analytic: float, numeric: float) -> float:
    """|a - n| / max(1e-8, |a| + |n|)."""
    return abs(analytic - numeric) / max(1e-8, abs(analytic) + abs(numeric))


@dataclass
class CheckResult:
    """One tensor's result: the largest relative error over the entries checked."""

    name: str
    shape: tuple
    checked: int = 0
    kinks: int = 0
    tiny: int = 0
    tiny_failures: int = 0
    max_rel_error: float = 0.0
    worst_index: tuple | None = None
    worst_analytic: float = 0.0
    worst_numeric: float = 0.0


@dataclass
class GradCheckReport:
    """All tensors of one check, with a pass/fail verdict and a printable table."""

    title: str
    tolerance: float
    results: list[CheckResult] = field(default_factory=list)

    @property
    def max_rel_error(self) -> float:
        return max((r.max_rel_error for r in self.results), default=0.0)

    @property
    def passed(self) -> bool:
        """Every tensor had at least one entry checked and none exceeded the tolerance."""
        return all(_row_ok(r, self.tolerance) for r in self.results)

    def table(self) -> str:
        width = max([len(r.name) for r in self.results] + [9])
        lines = [
            f"{self.title}",
            f"  {'parameter':<{width}}  {'shape':<14} {'max rel. error':>14} {'checked':>8} {'tiny':>5} "
            f"{'kinks':>6}  ok",
        ]
        for r in self.results:
            ok = "yes" if _row_ok(r, self.tolerance) else "NO"
            lines.append(
                f"  {r.name:<{width}}  {str(r.shape):<14} {r.max_rel_error:>14.3e} {r.checked:>8d} {r.tiny:>5d} "
                f"{r.kinks:>6d}  {ok}"
            )
        verdict = "PASS" if self.passed else "FAIL"
        lines.append(f"  {verdict}: max relative error {self.max_rel_error:.3e} (threshold {self.tolerance:.0e})")
        return "\n".join(lines)

    def __str__(self):
        return self.table()


@contextlib.contextmanager
def frozen_dropout(*models: Layer):
    """Keep every Dropout's mask fixed (after the first training forward draws it) inside the block, and every
    spectral normalisation's power-iteration vectors (a check must see one fixed function)."""
    dropouts = [layer for model in models for layer in model.walk()
                if isinstance(layer, Dropout) or getattr(layer, "spectral_norm", False)]
    previous = [d.frozen for d in dropouts]
    for d in dropouts:
        d.freeze()
    try:
        yield
    finally:
        for d, was in zip(dropouts, previous):
            d.frozen = was


def _patterns(models: Iterable[Layer]) -> list[np.ndarray]:
    return [backend.to_host(p) for m in models for layer in m.walk()
            if (p := layer.activation_pattern()) is not None]


def _scalar(a: Any) -> float:
    return float(backend.to_host(a))


def _sample_indices(shape: tuple, n_samples: int, gen: np.random.Generator, analytic: np.ndarray | None = None
                    ) -> list[tuple]:
    """Entries to check, in the order to try them: all of a small tensor, else ``n_samples`` of each kind.

    Uniformly drawn entries alone can miss every entry that matters: a layer on one-hot labels has non-zero
    gradient only in the rows of the classes in the batch (4 of 10 rows, say), so a uniform sample of G's label
    weights was all exact zeros, "tiny" and never scored. Entries are therefore taken alternately from those
    where the analytic gradient is non-zero and from the whole tensor (which still catches an analytic
    gradient that is wrongly zero: its numerical derivative is then resolvable and fails).
    """
    size = int(np.prod(shape))
    if size <= n_samples:
        return [np.unravel_index(i, shape) for i in range(size)]
    uniform = gen.choice(size, n_samples, replace=False)
    nonzero = np.flatnonzero(analytic) if analytic is not None else np.empty(0, np.int64)
    informative = gen.choice(nonzero, min(n_samples, nonzero.size), replace=False) if nonzero.size else nonzero
    alternating = (int(i) for pair in itertools.zip_longest(informative, uniform) for i in pair if i is not None)
    return [np.unravel_index(i, shape) for i in dict.fromkeys(alternating)]  # first occurrences, in order


def check_function(
    loss_fn: Callable[[], Any],
    grad_fn: Callable[[], dict[str, Any]],
    tensors: dict[str, Any],
    models: Iterable[Layer] = (),
    n_samples: int = 20,
    order: int = 4,
    step: float | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    seed: int = 0,
    title: str = "gradient check",
    f_scale: float = 0.0,
    patterns: Callable[[], list] | None = None,
    refinements: int = 1,
) -> GradCheckReport:
    r"""Compare analytic and numerical derivatives of a scalar function of several tensors.

    Parameters
    ----------
    loss_fn : callable () -> 0-d array
        Evaluates :math:`f` at the current values of ``tensors`` (forward only).
    grad_fn : callable () -> dict
        Evaluates the analytic gradients at the current values, keyed like ``tensors``.
    tensors : dict name -> array
        The arrays to perturb in place (parameters and inputs), float64.
    models : layers whose activation patterns reveal kinks.
    n_samples : int
        Entries scored per tensor (all of them when the tensor is smaller); entries at kinks are replaced by
        further random entries, up to four times this many.
    order : {2, 4}
        Central-difference stencil order.
    step : float, optional
        Finite-difference step (default 1e-3 for order 4, 1e-6 for order 2).
    f_scale : float, optional
        The magnitude at which :math:`f` is rounded when that exceeds :math:`|f|`: for a sum
        :math:`f = \sum_k t_k` with cancellation, :math:`\sum_k |t_k|`. The resolution uses
        :math:`\max(|f|, f_\text{scale})` (see the module docstring).
    patterns : callable () -> list of arrays, optional
        The activation patterns of the last ``loss_fn`` evaluation, in place of ``models``' (for a function that
        runs a network more than once, whose layers keep only the last pass's pattern); called first before any
        perturbation, so it must describe the unperturbed point then.
    refinements : int
        How many times a stencil that straddles a kink is retried at a ten times smaller step (default once).
    """
    if order not in _STENCILS:
        raise ValueError(f"order must be 2 or 4, got {order}")
    h = _DEFAULT_STEP[order] if step is None else float(step)
    models = list(models)
    for name, t in tensors.items():
        if t.dtype != np.float64:
            raise ValueError(f"gradient checks run in float64; tensor {name} is {t.dtype}")
    analytic = {name: backend.to_host(g) for name, g in grad_fn().items()}
    pattern_fn = patterns if patterns is not None else (lambda: _patterns(models))
    base_patterns = pattern_fn()
    gen = np.random.default_rng(seed)
    report = GradCheckReport(title, tolerance)
    for name, tensor in tensors.items():
        shape = tuple(tensor.shape)
        result = CheckResult(name, shape)
        # Draw from a pool four times the budget so that entries lost to kinks are replaced by fresh ones.
        for index in _sample_indices(shape, 4 * n_samples, gen, analytic[name]):
            if result.checked + result.tiny >= n_samples:
                break
            # A stencil that straddles a kink is retried with a ten times smaller step (``refinements`` times), which
            # usually clears it; if it still straddles one, the entry is a kink and is counted, not scored.
            for step_here in (h / 10 ** r for r in range(refinements + 1)):
                numeric, crossed_kink, largest_f = _difference(loss_fn, tensor, index, step_here, order,
                                                               pattern_fn, base_patterns)
                if not crossed_kink:
                    break
            if crossed_kink:
                result.kinks += 1
                continue
            a = float(analytic[name][index])
            resolution = 4 * np.finfo(np.float64).eps * max(largest_f, f_scale) / step_here
            if _fails(a, numeric, resolution, tolerance):
                # A tiny entry outside the round-off bound, or a scored one above the tolerance: measure again at
                # a ten times larger step, where round-off is ten times smaller (and the truncation still
                # negligible), if that stencil stays clear of kinks, and judge that measurement. Its bound is
                # ten times tighter, so this re-measures, it does not loosen anything: a wrong gradient is as
                # wrong at either step. (An entry just above resolution / tolerance is scored relatively while
                # its round-off is still about the tolerance: 1 in 300 DCGAN checks failed so at 1.05e-7.)
                wide, crossed_wide, largest_wide = _difference(loss_fn, tensor, index, 10 * step_here, order,
                                                               pattern_fn, base_patterns)
                if not crossed_wide:
                    numeric, step_here = wide, 10 * step_here
                    resolution = 4 * np.finfo(np.float64).eps * max(largest_wide, f_scale) / step_here
            if abs(a) + abs(numeric) < resolution / tolerance:
                result.tiny += 1
                result.tiny_failures += abs(a - numeric) > resolution
                continue
            err = relative_error(a, numeric)
            result.checked += 1
            if err >= result.max_rel_error:
                result.max_rel_error, result.worst_index = err, tuple(int(i) for i in index)
                result.worst_analytic, result.worst_numeric = a, numeric
        report.results.append(result)
    return report


def _fails(a: float, numeric: float, resolution: float, tolerance: float) -> bool:
    """Whether an entry fails as measured: below resolution / tolerance it is held to the round-off bound,
    above it to the relative tolerance."""
    if abs(a) + abs(numeric) < resolution / tolerance:
        return abs(a - numeric) > resolution
    return relative_error(a, numeric) > tolerance


def _difference(loss_fn, tensor, index, h, order, pattern_fn, base_patterns):
    """Central difference of ``loss_fn`` along one entry of ``tensor``; restores the entry exactly.

    Returns (numerical derivative, whether an activation pattern changed, largest |f| evaluated).
    """
    original = tensor[index].copy()
    numeric, crossed_kink, largest_f = 0.0, False, 0.0
    try:
        for k, weight in _STENCILS[order]:
            values = []
            for offset in (k, -k):
                tensor[index] = original + offset * h
                values.append(_scalar(loss_fn()))
                if not crossed_kink and any(not np.array_equal(a, b)
                                            for a, b in zip(base_patterns, pattern_fn())):
                    crossed_kink = True
            numeric += weight * (values[0] - values[1]) / h
            largest_f = max(largest_f, abs(values[0]), abs(values[1]))
    finally:
        tensor[index] = original  # the saved element itself, not original + h - h
    return numeric, crossed_kink, largest_f


def generic_point(model: Layer, seed: int = 0, scale: float = 0.1) -> Layer:
    """Move every bias off zero (``b``, ``beta``: uniform ±scale) and every scale off one (``gamma``: uniform
    1 ± 0.5), in place; returns the model.

    Zero biases are a special point: a row whose inputs are all dropped out gives every maxout piece the same
    value, an exact tie, so no finite difference of those biases exists. Checks run at a generic point. A
    normalisation's gamma at exactly 1 would hide a backward pass that forgot to multiply by it.
    """
    gen = np.random.default_rng(seed)
    for layer in model.walk():
        for name, (low, high) in (("b", (-scale, scale)), ("beta", (-scale, scale)), ("gamma", (0.5, 1.5))):
            if name in layer.params:
                p = layer.params[name]
                p[...] = backend.to_device(gen.uniform(low, high, p.shape).astype(p.dtype))
    return model


def _float64_input(x: Any) -> Any:
    if isinstance(x, (tuple, list)):
        return type(x)(_float64_input(v) for v in x)
    return backend.to_device(backend.to_host(x).astype(np.float64))


def _name_inputs(prefix: str, x: Any) -> dict[str, Any]:
    if isinstance(x, (tuple, list)):
        return {f"{prefix}[{i}]": v for i, v in enumerate(x)}
    return {prefix: x}


def check_layer(layer: Layer, x: Any, train: bool = True, seed: int = 0, check_inputs: bool = True,
                **options) -> GradCheckReport:
    r"""Check a layer's (or network's) parameter and input gradients under :math:`f = \sum Y \odot R`.

    The layer is cast to float64 in place; ``x`` (an array or a tuple of arrays) is copied to float64 on the
    active backend. ``R`` is a fixed standard-normal array, so :math:`\partial f/\partial Y = R`. The
    resolution of the finite differences is taken at the scale :math:`\sum |Y \odot R|`, the size of the
    terms whose rounding :math:`f` carries.
    """
    layer.astype(np.float64)
    x = _float64_input(x)
    with frozen_dropout(layer):
        y = layer.forward(x, train)
        xp = get_array_module(y)
        r = backend.to_device(np.random.default_rng(seed + 1).standard_normal(y.shape))
        layer.set_input_grad(True)

        def loss_fn():
            return xp.sum(layer.forward(x, train) * r)

        def grad_fn():
            layer.forward(x, train)
            dx = layer.backward(r)
            grads = dict(layer.grads)
            if check_inputs:
                grads.update(_name_inputs("input", dx))
            return grads

        tensors = dict(layer.params)
        if check_inputs:
            tensors.update(_name_inputs("input", x))
        # f sums Y * R, whose terms cancel: f is rounded at the scale of sum |Y * R|, not of |f|.
        options.setdefault("f_scale", _scalar(xp.sum(xp.abs(y * r))))
        return check_function(loss_fn, grad_fn, tensors, models=[layer], seed=seed,
                              title=f"{type(layer).__name__} {layer.path}", **options)


def check_discriminator(D: Layer, x_real: Any, x_fake: Any, y_real: Any = None, y_fake: Any = None,
                        seed: int = 0, separate: bool = False, **options) -> GradCheckReport:
    """Check D's parameters and its inputs under D's loss (dropout on, masks frozen).

    ``separate``: real and fake rows as two batches through D (the DCGAN family's D step, BatchNorm in training
    mode normalising each batch by its own statistics), :func:`minigan.objective.discriminator_step`'s
    ``separate``.
    """
    D.astype(np.float64)
    x_real, x_fake = _float64_input(x_real), _float64_input(x_fake)
    y_real = None if y_real is None else _float64_input(y_real)
    y_fake = None if y_fake is None else _float64_input(y_fake)
    n_real = x_real.shape[0]

    def grad_fn():
        _, _, dinputs = discriminator_step(D, x_real, x_fake, y_real, y_fake, input_grads=True, separate=separate)
        dx = dinputs if y_real is None else dinputs[0]
        return {**{f"D.{k}": g for k, g in D.grads.items()}, "x_real": dx[:n_real], "x_fake": dx[n_real:]}

    if separate:
        # Two passes through D: its layers keep only the fake pass's kink pattern, so the loss is evaluated here
        # pass by pass (as discriminator_step computes it), recording both passes' patterns.
        recorded: list = []

        def loss_fn():
            logits_real = D.forward(x_real if y_real is None else (x_real, y_real), True)
            recorded[:] = _patterns([D])
            logits_fake = D.forward(x_fake if y_fake is None else (x_fake, y_fake), True)
            recorded.extend(_patterns([D]))
            return 0.5 * (bce_with_logits(logits_real, 1.0)[0] + bce_with_logits(logits_fake, 0.0)[0])

        def patterns():
            return list(recorded)
    else:
        patterns = None

        def loss_fn():
            return discriminator_step(D, x_real, x_fake, y_real, y_fake, backward=False, separate=separate)[0]

    with frozen_dropout(D):
        grad_fn()  # draw the dropout masks before the check freezes them in place
        if separate:
            loss_fn()  # the unperturbed point's patterns, both passes
        tensors = {**{f"D.{k}": p for k, p in D.params.items()}, "x_real": x_real, "x_fake": x_fake}
        return check_function(loss_fn, grad_fn, tensors, models=[D], seed=seed, patterns=patterns,
                              title="D's parameters and inputs under D's loss"
                              + (" (real and fake as two batches)" if separate else ""), **options)


def check_generator(G: Layer, D: Layer, z: Any, y: Any = None, kind: str = "non_saturating", seed: int = 0,
                    **options) -> GradCheckReport:
    """Check G's parameters and its noise input under G's loss, backpropagated *through* D."""
    G.astype(np.float64)
    D.astype(np.float64)
    z = _float64_input(z)
    y = None if y is None else _float64_input(y)

    def loss_fn():
        return generator_step(G, D, z, y, kind, backward=False)[0]

    def grad_fn():
        _, _, _, dinputs = generator_step(G, D, z, y, kind, input_grads=True)
        dz = dinputs if y is None else dinputs[0]
        return {**{f"G.{k}": g for k, g in G.grads.items()}, "z": dz}

    with frozen_dropout(G, D):
        grad_fn()
        tensors = {**{f"G.{k}": p for k, p in G.params.items()}, "z": z}
        return check_function(loss_fn, grad_fn, tensors, models=[G, D], seed=seed,
                              title=f"G's parameters and noise under G's {kind} loss, through D", **options)


def check_simultaneous(G: Layer, D: Layer, x_real: Any, z: Any, y: Any = None, kind: str = "non_saturating",
                       seed: int = 0, **options) -> list[GradCheckReport]:
    """Check the one-pass update (:func:`minigan.objective.simultaneous_step`): two reports.

    D's parameters under D's loss, and G's parameters and noise under G's loss through the *same* D pass.
    All dropout masks (G's and D's, over the stacked real+fake batch) are frozen, so each loss is a
    deterministic function of both networks' parameters and the finite differences see what the update uses.
    """
    G.astype(np.float64)
    D.astype(np.float64)
    x_real, z = _float64_input(x_real), _float64_input(z)
    y = None if y is None else _float64_input(y)

    def loss_fn(which):
        return lambda: simultaneous_step(G, D, x_real, z, y, kind, backward=False)[which]

    def grad_fn():
        _, _, _, dinputs = simultaneous_step(G, D, x_real, z, y, kind, input_grads=True)
        dz = dinputs if y is None else dinputs[0]
        return {**{f"D.{k}": g for k, g in D.grads.items()}, **{f"G.{k}": g for k, g in G.grads.items()}, "z": dz}

    def grads_of(prefixes):
        return lambda: {k: g for k, g in grad_fn().items() if k.startswith(prefixes)}

    with frozen_dropout(G, D):
        grad_fn()
        d_tensors = {f"D.{k}": p for k, p in D.params.items()}
        g_tensors = {**{f"G.{k}": p for k, p in G.params.items()}, "z": z}
        return [
            check_function(loss_fn(0), grads_of("D."), d_tensors, models=[G, D], seed=seed,
                           title="one-pass update: D's parameters under D's loss", **options),
            check_function(loss_fn(1), grads_of(("G.", "z")), g_tensors, models=[G, D], seed=seed,
                           title=f"one-pass update: G's parameters and noise under G's {kind} loss, through the same D pass",
                           **options),
        ]


# --------------------------------------------------------------------------------------------------
# The command line tour: `minigan gradcheck`
# --------------------------------------------------------------------------------------------------


def layer_tour(batch: int = 4, seed: int = 0, **options) -> list[GradCheckReport]:
    """One check per layer type and container, on small random inputs (float64)."""
    from .nn import Identity, Join, LeakyReLU, Linear, Maxout, ProjectionHead, ReLU, Sequential, Sigmoid, Tanh

    gen = np.random.default_rng(seed)

    def data(*shape):
        return gen.standard_normal(shape)

    cases = [
        (Linear(7, 5, rng=seed), data(batch, 7)),
        (Maxout(6, 4, 3, rng=seed), data(batch, 6)),
        (ReLU(), data(batch, 9)),
        (LeakyReLU(0.2), data(batch, 9)),
        (Sigmoid(), 4 * data(batch, 9)),
        (Tanh(), data(batch, 9)),
        (Dropout(0.5, seed=seed), data(batch, 9)),
        (Sequential(Linear(6, 8, rng=seed), ReLU(), Dropout(0.3, seed=seed), Linear(8, 3, rng=seed + 1),
                    Sigmoid(), name="net"), data(batch, 6)),
        (Join({"x": Maxout(5, 3, 2, rng=seed), "y": Sequential(Linear(4, 2, rng=seed + 1), Tanh())}, name="join"),
         (data(batch, 5), data(batch, 4))),
        (Identity(), data(batch, 5)),
        # Spectral normalisation: W / sigma(W) with the power-iteration vectors held, as in training.
        (Linear(7, 5, rng=seed, spectral_norm=True, name="sn_linear"), data(batch, 7)),
        (Maxout(6, 4, 3, rng=seed, spectral_norm=True, name="sn_maxout"), data(batch, 6)),
        # The projection output on [h | one-hot y]: every input column is checked, labels included.
        (ProjectionHead(6, 3, rng=seed, embed_rng=seed + 1), np.hstack([data(batch, 6),
                                                                         np.eye(3)[np.arange(batch) % 3]])),
    ]
    return [check_layer(generic_point(layer, seed), x, seed=seed, **options) for layer, x in cases]


def conv_tour(batch: int = 4, seed: int = 0, **options) -> list[GradCheckReport]:
    """One check per convolutional-family layer and container, on small random images (float64).

    Together the cases cover: kernels 1, 3, 4 and 7; strides 1 and 2; paddings 0 to 3; odd, even and
    non-square images; sizes where the stride skips the last rows ((H + 2p - k) % s != 0); ``output_padding``;
    Conv2d by its column matrix (its input gradient scattered in either memory order) and by tap planes;
    ConvTranspose2d with its columns in either order;
    BatchNorm in training mode (on (N, C) and (N, C, H, W)) and in evaluation mode, with gamma and beta off
    their initial values; class-conditional BatchNorm in both modes, with its labels; the minibatch standard
    deviation over groups of two rows (its kink-like case, see its docstring); and the U-Net and ResNet
    joins, with a bias before a normalisation (an exactly zero gradient) inside the residual block.
    """
    from .nn import LeakyReLU, Linear, ReLU, Sequential, Tanh
    from .nn import (BatchNorm, Conditioned, ConditionalBatchNorm, Conv2d, ConvTranspose2d, Flatten, Identity,
                     InstanceNorm2d, Join, MinibatchStdDev, ReflectionPad2d, Reshape, Residual, UNetBlock,
                     Upsample)

    gen = np.random.default_rng(seed)

    def images(c, h, w, n=batch):
        return gen.standard_normal((n, c, h, w))

    def off_start(network, prefix=""):
        """Running statistics away from (0, 1), for evaluation mode (``prefix``: the BatchNorm's dotted path)."""
        for key, values in (("running_mean", gen.standard_normal(3)), ("running_var", gen.uniform(0.5, 2.0, 3))):
            network.buffers[prefix + key][...] = backend.to_device(values.astype(np.float32))
        return network

    bn_eval = off_start(BatchNorm(3, name="bn_eval"))
    resnet_block = Residual(Sequential(ReflectionPad2d(1), Conv2d(2, 2, 3, rng=seed), InstanceNorm2d(2, affine=True),
                                       ReLU(), ReflectionPad2d(1), Conv2d(2, 2, 3, rng=seed + 1), InstanceNorm2d(2)),
                            name="resnet_block")
    unet = UNetBlock(down=Sequential(LeakyReLU(0.2), Conv2d(2, 3, 4, 2, 1, rng=seed)),
                     up=Sequential(ReLU(), ConvTranspose2d(3, 2, 4, 2, 1, bias=False, rng=seed + 1), BatchNorm(2)),
                     name="unet_block")
    # Class-conditional BatchNorm inside a conditioned network: the labels are an input too (their gradient
    # gathers the Join's path and the layer's), in training and in evaluation mode (running statistics off
    # their start).
    def conditioned_bn(name):
        return Conditioned(Join({"x": Sequential(ConditionalBatchNorm(3, 4, name="cbn"), Tanh(), Flatten()),
                                 "y": Identity()}), name=name)
    cbn_eval = off_start(conditioned_bn("conditional_bn_eval"), "body.x.cbn.")
    n_cbn = max(batch, 4)
    labels = np.eye(4)[np.arange(n_cbn) % 4]
    # The two networks normalise the outputs of learned layers, whose spread can be small (0.05, say): then
    # h = 1e-3 is a 2% move in normalised units and the stencil's O(h^4) truncation reaches 1e-7 for some
    # seeds. They are checked at h = 1e-4 (truncation 1e4 times smaller; round-off still far below 1e-7).
    fine = {"step": options.get("step") or 1e-4}
    cases = [  # (layer, input, train, extra options)
        (Conv2d(3, 4, 3, 1, 1, rng=seed, name="k3_s1_p1"), images(3, 5, 6), True, {}),
        (Conv2d(2, 3, 4, 2, 1, rng=seed, name="k4_s2_p1_skips"), images(2, 7, 8), True, {}),  # (7+2-4) % 2 = 1
        (Conv2d(2, 2, 7, 1, 3, rng=seed, name="k7_s1_p3"), images(2, 9, 8), True, {}),
        (Conv2d(3, 2, 1, 2, 0, bias=False, rng=seed, name="k1_s2_p0_nobias"), images(3, 6, 5), True, {}),
        (Conv2d(2, 3, 3, 2, 2, rng=seed, name="k3_s2_p2"), images(2, 6, 7), True, {}),
        # Batch-innermost columns (batch 4 > 3 output columns, 27 column rows >= 8 * 2 outputs).
        (Conv2d(3, 2, 3, 2, 1, rng=seed, name="k3_s2_p1_batch_last"), images(3, 5, 6, n=max(batch, 4)), True, {}),
        # Per-image columns (a one-channel input: 16 column rows < 20 outputs).
        (Conv2d(1, 20, 4, 2, 1, rng=seed, name="k4_s2_p1_batch_first"), images(1, 6, 5), True, {}),
        # By tap planes (a PatchGAN's one-channel output), at stride 1 and at a stride that skips a row.
        (Conv2d(3, 1, 4, 1, 1, rng=seed, name="taps_k4_s1_p1", method="taps"), images(3, 6, 5), True, {}),
        (Conv2d(2, 2, 3, 2, 2, rng=seed, name="taps_k3_s2_p2_skips", method="taps"), images(2, 6, 7), True, {}),
        (ConvTranspose2d(3, 2, 4, 2, 1, rng=seed, name="T_k4_s2_p1"), images(3, 3, 4), True, {}),
        (ConvTranspose2d(2, 3, 3, 2, 1, output_padding=1, rng=seed, name="T_k3_s2_p1_op1"), images(2, 4, 3), True, {}),
        (ConvTranspose2d(2, 2, 7, 1, 3, rng=seed, name="T_k7_s1_p3"), images(2, 3, 5), True, {}),
        # Batch-innermost columns (batch 4 > 3 input columns, 48 column rows >= 4 * 2 inputs).
        (ConvTranspose2d(2, 3, 4, 2, 1, rng=seed, name="T_k4_s2_p1_batch_last"), images(2, 3, 3, n=max(batch, 4)),
         True, {}),
        (ConvTranspose2d(2, 2, 1, 2, 0, output_padding=1, rng=seed, name="T_k1_s2_op1"), images(2, 3, 2), True, {}),
        # Per image (a one-channel output: 4 column rows < 6 input channels).
        (ConvTranspose2d(6, 1, 2, 2, 0, rng=seed, name="T_k2_s2_batch_first"), images(6, 3, 2), True, {}),
        # Two rows would be degenerate: x_hat = +-1 up to O(eps), a derivative no finite difference resolves.
        (BatchNorm(4, name="bn_train_NC"), gen.standard_normal((max(batch, 4), 4)) * 2 + 1, True, {}),
        (BatchNorm(3, name="bn_train_NCHW"), images(3, 3, 5) * 2 - 1, True, {}),
        (bn_eval, images(3, 3, 5), False, {}),
        (conditioned_bn("conditional_bn"), (images(3, 3, 5, n=n_cbn) * 2 - 1, labels), True, {}),
        (cbn_eval, (images(3, 3, 5, n=n_cbn), labels), False, {}),
        (InstanceNorm2d(3, affine=True, name="instance_norm"), images(3, 4, 5), True, {}),
        (MinibatchStdDev(2, name="minibatch_std"), images(3, 2, 3, n=2 * max(batch // 2, 2)), True, {}),
        (ReflectionPad2d((1, 2, 3, 0), name="reflection_pad"), images(2, 5, 4), True, {}),
        (Upsample(2, name="upsample"), images(2, 3, 4), True, {}),
        (Sequential(Linear(5, 2 * 3 * 3, rng=seed), Reshape(2, 3, 3), ConvTranspose2d(2, 2, 4, 2, 1, rng=seed + 1),
                    Tanh(), Conv2d(2, 3, 4, 2, 1, rng=seed + 2), Flatten(), Linear(27, 1, rng=seed + 3), name="dcgan"),
         gen.standard_normal((batch, 5)), True, {}),
        (resnet_block, images(2, 4, 5), True, fine),
        (unet, images(2, 8, 6, n=max(batch, 2)), True, fine),
    ]
    return [check_layer(generic_point(layer, seed), x, train=train, seed=seed, **{**options, **extra})
            for layer, x, train, extra in cases]


def gan_checks(model: str = "cgan", batch: int = 4, seed: int = 0, init: str = "glorot",
               model_options: dict | None = None, **options) -> list[GradCheckReport]:
    """The whole objective for a model: D under D's loss, G under G's loss through D, and both again for the
    one-pass (simultaneous) update. ``model_options`` go to :func:`minigan.families.build` (for the CGAN,
    ``{"design": "projection"}`` checks the default ``modern`` networks, whose D scores with a projection).

    ``init="glorot"`` checks at well-scaled weights; ``"paper"`` at the papers' U(±0.05)/U(±0.005) ranges,
    where most of D's gradients are so small that finite differences can only resolve them absolutely (the
    "tiny" column). The code under test is the same either way.
    """
    from .families import build

    ranges = {"g_irange": "glorot", "d_irange": "glorot"} if init == "glorot" else {}
    m = build(model, seed=seed, **{**(model_options or {}), **ranges})
    generic_point(m.G, seed)
    generic_point(m.D, seed + 1)
    gen = np.random.default_rng(seed)
    x_real, x_fake = gen.random((batch, 784)), gen.random((batch, 784))
    z = gen.uniform(m.noise_low, m.noise_high, (batch, m.noise_dim))
    y = np.eye(10)[gen.integers(0, 10, batch)] if m.conditional else None
    return [
        check_discriminator(m.D, x_real, x_fake, y, y, seed=seed, **options),
        check_generator(m.G, m.D, z, y, seed=seed, **options),
        *check_simultaneous(m.G, m.D, x_real, z, y, seed=seed, **options),
        *([check_matching_aware(m.D, x_real, y, _wrong_labels(y, gen), seed=seed, **options)] if m.conditional
          else []),
    ]


def _wrong_labels(y: np.ndarray, gen: np.random.Generator) -> np.ndarray:
    """One-hot rows whose class differs from ``y``'s in every row."""
    n_classes = y.shape[1]
    return np.eye(n_classes)[(y.argmax(axis=1) + gen.integers(1, n_classes, y.shape[0])) % n_classes]


def check_matching_aware(D: Layer, x: Any, y: Any, y_wrong: Any, seed: int = 0, separate: bool = False,
                         **options) -> GradCheckReport:
    """Check D's parameters and inputs under the matching-aware term (:func:`minigan.objective.matching_aware_step`):
    D's loss with the images and their labels as the real rows and the same images with wrong labels as the fake
    ones (two batches with ``separate``). The two copies of the images are checked as two inputs."""
    report = check_discriminator(D, x, x, y, y_wrong, seed=seed, separate=separate, **options)
    report.title = ("D's parameters and inputs under the matching-aware term (the same real images with wrong "
                    f"labels as fakes{', two batches' if separate else ''})")
    return report


#: The DCGAN family's objectives are checked at weights N(0, DCGAN_CHECK_STD^2): at the training init's 0.02 most
#: of D's gradients fall below what finite differences resolve (the "tiny" column). The code is the same.
DCGAN_CHECK_STD = 0.3


def dcgan_checks(model: str = "dcgan", batch: int = 2, seed: int = 0, width: int = 1,
                 model_options: dict | None = None, **options) -> list[GradCheckReport]:
    """The DCGAN family's objective: D's loss into D (real and fake as two batches, as it trains) and G's loss
    through D into G, every BatchNorm in training mode, at ``width`` channels (G: 2w and w; D: w and 2w).

    Images are uniform in [-1, 1] (the Tanh range D is trained on); for ``cdcgan`` the labels are one-hot and D
    scores them by its projection.
    """
    from .families import build

    m = build(model, seed=seed, **{"width": width, "init_std": DCGAN_CHECK_STD, **(model_options or {})})
    generic_point(m.G, seed)
    generic_point(m.D, seed + 1)
    gen = np.random.default_rng(seed)
    x_real, x_fake = gen.uniform(-1, 1, (batch, 784)), gen.uniform(-1, 1, (batch, 784))
    z = gen.uniform(m.noise_low, m.noise_high, (batch, m.noise_dim))
    y = np.eye(10)[gen.integers(0, 10, batch)] if m.conditional else None
    # Thousands of (Leaky)ReLU units see every parameter through BatchNorm's statistics: at h = 1e-3 some unit
    # almost always crosses its kink. h = 1e-4, retried at 1e-5, 1e-6 and 1e-7, clears them (a one-entry tensor
    # whose every stencil straddles a kink is unscored, and fails: 4 of 300 checks, seeds 1000-1149 of both
    # models, with the retries stopping at 1e-6; none at 1e-7); the resolution test accounts for the smaller step.
    options = {**options, "step": options.get("step") or 1e-4, "refinements": options.get("refinements", 3)}
    checks = [check_discriminator(m.D, x_real, x_fake, y, y, seed=seed, separate=True, **options),
              check_generator(m.G, m.D, z, y, seed=seed, **options)]
    if m.conditional:  # --matching-aware's term, as the family trains it
        checks.append(check_matching_aware(m.D, x_real, y, _wrong_labels(y, gen), seed=seed, separate=True, **options))
    # The table names the options it checked (the preset's d_norm=none, say), as --option spells them.
    from .config import options_text

    named = options_text(model_options or {}, ", ")
    for report in checks:
        report.title = f"{model}{f' ({named})' if named else ''}: {report.title}"
    return checks


def check_pix2pix_generator(G: Layer, D: Layer, a: Any, b: Any, objective: str = "l1+gan", lambda_l1: float = 100.0,
                            seed: int = 0, **options) -> GradCheckReport:
    r"""Check pix2pix's G loss, :math:`\mathrm{BCE}(1, D(G(a), a)) + \lambda\,\mathrm{mean}|G(a) - b|`: G's
    parameters (the U-Net, skips included) and the input :math:`a`, which reaches the loss through G and as D's
    condition (:func:`minigan.families.pix2pix.generator_step`).

    The L1 term has a kink wherever :math:`G(a) = b`: the sign pattern of :math:`G(a) - b` joins the layers'
    activation patterns, so a stencil that flips a sign is a kink, as at a ReLU.
    """
    from .families.pix2pix import generator_step
    from .nn.losses import l1_pattern

    G.astype(np.float64)
    D.astype(np.float64)
    a, b = _float64_input(a), _float64_input(b)
    signs: list = []

    def loss_fn():
        fake = G.forward(a, True)
        signs[:] = [backend.to_host(l1_pattern(fake, b))]
        return generator_step(G, D, a, b, objective, lambda_l1, fake=fake, backward=False)[0]

    def grad_fn():
        _, _, _, da = generator_step(G, D, a, b, objective, lambda_l1, input_grads=True)
        return {**{f"G.{k}": g for k, g in G.grads.items()}, "a": da}

    def patterns():
        return _patterns([G, D]) + list(signs)

    with frozen_dropout(G, D):
        grad_fn()
        loss_fn()
        tensors = {**{f"G.{k}": p for k, p in G.params.items()}, "a": a}
        return check_function(loss_fn, grad_fn, tensors, models=[G, D], seed=seed, patterns=patterns,
                              title=f"G's parameters and input under G's {objective} loss (through D and the L1 term)",
                              **options)


#: pix2pix's objectives are checked at weights N(0, PIX2PIX_CHECK_STD^2), for the reason of DCGAN_CHECK_STD.
PIX2PIX_CHECK_STD = 0.3


def pix2pix_checks(model: str = "pix2pix", batch: int = 2, seed: int = 0, model_options: dict | None = None,
                   **options) -> list[GradCheckReport]:
    """pix2pix's whole objective at a tiny size (8×8 images, 3 U-Net levels with skips and dropout, 1 -> 2
    channels, D's two layers of BatchNorm in training mode): D's loss into D (real and fake pairs as two
    batches), and G's loss (cGAN + λ L1) through D and the L1 term into G, once with BatchNorm and once with
    InstanceNorm. Inputs and targets are uniform in [-1, 1] (the Tanh range)."""
    from .families.pix2pix import pix2pix

    options = {**options, "step": options.get("step") or 1e-4, "refinements": options.get("refinements", 2)}
    reports = []
    for norm in ("batch", "instance"):
        m = pix2pix(seed, in_channels=1, out_channels=2, image_height=8, image_width=8, width=2, norm=norm,
                    d_layers=1, dropout_levels=1, init_std=PIX2PIX_CHECK_STD,
                    **{k: v for k, v in (model_options or {}).items() if k in ("objective", "lambda_l1")})
        generic_point(m.G, seed)
        generic_point(m.D, seed + 1)
        gen = np.random.default_rng(seed)
        a = gen.uniform(-1, 1, (batch, 1, 8, 8))
        b_real, b_fake = gen.uniform(-1, 1, (batch, 2, 8, 8)), gen.uniform(-1, 1, (batch, 2, 8, 8))
        checks = [check_discriminator(m.D, b_real, b_fake, a, a, seed=seed, separate=True, **options),
                  check_pix2pix_generator(m.G, m.D, a, b_real, m.objective, m.lambda_l1, seed=seed, **options)]
        for report in checks:
            report.title = f"{model} ({norm} norm): {report.title}"
        reports += checks
    return reports


#: Objective checks by model; the others are :func:`gan_checks`.
OBJECTIVE_CHECKS = {"dcgan": dcgan_checks, "cdcgan": dcgan_checks, "pix2pix": pix2pix_checks}
#: Model options the tour checks besides each model's preset ones: Radford et al.'s D, with the BatchNorm whose real
#: and fake batches are normalised apart (``--option d_norm=batchnorm``; the presets' DCGANs have none).
OBJECTIVE_VARIANTS = {"cdcgan": ({"d_norm": "batchnorm"},)}


def run_cli(model: str = "cgan", batch: int = 4, samples: int = 10, seed: int = 0,
            tolerance: float = DEFAULT_TOLERANCE, init: str = "glorot", layers: bool = True,
            out=None) -> int:
    """Print the gradient-check tables; return 0 if every check passed, 1 otherwise."""
    import sys

    out = out or sys.stdout
    options = {"n_samples": samples, "tolerance": tolerance}
    print(f"minigan gradcheck: float64, 5-point central differences (h = {_DEFAULT_STEP[4]:g}), "
          f"relative error |a-n|/max(1e-8,|a|+|n|), threshold {tolerance:.0e}; backend {backend.name()}", file=out)
    print("columns: entries scored by relative error; 'tiny' entries below finite-difference resolution, "
          "held to absolute agreement; kinks skipped\n", file=out)
    reports = []
    from .config import preset_model_options

    def preset_options(name: str) -> dict:
        """The networks users train by default: the modern preset's."""
        return preset_model_options("modern", name)

    if layers:
        reports += layer_tour(batch=batch, seed=seed, **options)
        reports += conv_tour(batch=batch, seed=seed, **options)
        # The convolutional models' objectives, at small sizes (the chosen model's own come last, below).
        for name in OBJECTIVE_CHECKS:
            if name != model:
                reports += OBJECTIVE_CHECKS[name](name, seed=seed, model_options=preset_options(name), **options)
            for variant in OBJECTIVE_VARIANTS.get(name, ()):
                reports += OBJECTIVE_CHECKS[name](name, seed=seed, model_options={**preset_options(name), **variant},
                                                  **options)
    if model in OBJECTIVE_CHECKS:
        # Batch 2, width 1 (G: 2 and 1 channels): each of thousands of kinks seen through BatchNorm is one more
        # chance that every stencil of a one-entry tensor straddles one (0 of 120 checks failed so, 30 seeds).
        reports += OBJECTIVE_CHECKS[model](model, seed=seed, model_options=preset_options(model), **options)
    else:
        reports += gan_checks(model, batch=batch, seed=seed, init=init, model_options=preset_options(model),
                              **options)

    for r in reports:
        print(r.table(), file=out)
        print(file=out)
    failed = [r.title for r in reports if not r.passed]
    worst = max(r.max_rel_error for r in reports)
    if failed:
        print(f"FAILED: {len(failed)} of {len(reports)} checks exceed {tolerance:.0e}: {'; '.join(failed)}", file=out)
        return 1
    print(f"all {len(reports)} checks passed: worst relative error {worst:.2e} <= {tolerance:.0e}", file=out)
    return 0
