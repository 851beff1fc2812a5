r"""Optimizers (SGD with classical momentum, Adam) and the papers' schedules.

Optimizers read ``model.params`` and ``model.grads`` (written by ``backward``) and update the parameter
arrays *in place*, so the layers keep their arrays and nothing is reallocated per step. Their state
(velocities, moments, step counts, current hyper-parameters) is exposed by :meth:`state_dict` /
:meth:`load_state_dict` as plain arrays and numbers, so a checkpoint restores it exactly.

Schedules are functions of counters the trainer owns: the exponential learning-rate decay is per *update*
(pylearn2's ``ExponentialDecay``), the momentum ramp per *epoch* (pylearn2's ``MomentumAdjustor``).
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

from .. import backend, parallel
from ..backend import get_array_module


class ExponentialDecay:
    r"""Learning rate :math:`\max(\eta_0 / \text{factor}^{t}, \eta_{min})` after :math:`t` updates.

    The CGAN paper: :math:`\eta_0 = 0.1`, factor 1.00004, floor :math:`10^{-6}`; the GAN paper's code:
    factor 1.000004.
    """

    def __init__(self, initial: float, factor: float, floor: float = 0.0):
        if initial <= 0 or factor < 1 or floor < 0:
            raise ValueError(f"ExponentialDecay: need initial > 0, factor >= 1, floor >= 0; got "
                             f"{initial}, {factor}, {floor}")
        self.initial, self.factor, self.floor = float(initial), float(factor), float(floor)

    def __call__(self, updates: int) -> float:
        return max(self.initial / self.factor ** updates, self.floor)

    def __repr__(self):
        return f"ExponentialDecay({self.initial}, factor={self.factor}, floor={self.floor})"


class LinearWarmup:
    r"""A learning rate that moves from schedule ``start`` to schedule ``end`` over the first ``updates`` updates.

    :math:`\eta(t) = a(t) + f\,(b(t) - a(t))` with :math:`f = \min(1, (t + 1) / n)`: update :math:`t` (0-based)
    takes the fraction :math:`(t + 1)/n` of the way, so the first update already moves off ``start`` and update
    :math:`n - 1` is at ``end``, which it then follows exactly. The CGAN trainer warms D's rate up from G's
    (``start`` is G's schedule), so D cannot race ahead of a G that has not yet learned to draw.
    """

    def __init__(self, start: Callable[[int], float], end: Callable[[int], float], updates: int):
        if int(updates) < 1:
            raise ValueError(f"LinearWarmup: updates must be >= 1, got {updates}")
        self.start, self.end, self.updates = start, end, int(updates)

    def __call__(self, updates: int) -> float:
        a, b = self.start(updates), self.end(updates)
        fraction = (updates + 1) / self.updates
        return b if fraction >= 1 else a + fraction * (b - a)

    def __repr__(self):
        return f"LinearWarmup({self.start!r} -> {self.end!r} over {self.updates} updates)"


class LinearRamp:
    r"""A value moving linearly from ``start`` to ``end`` between epochs ``begin`` and ``saturate``.

    :math:`\mu(e) = \mu_0 + (\mu_1 - \mu_0)\,\mathrm{clip}\big((e - e_0)/(e_1 - e_0), 0, 1\big)`.
    The papers ramp momentum 0.5 → 0.7 (GAN: saturating at epoch 250).
    """

    def __init__(self, start: float, end: float, saturate: int, begin: int = 0):
        if saturate <= begin:
            raise ValueError(f"LinearRamp: saturate ({saturate}) must come after begin ({begin})")
        self.start, self.end, self.begin, self.saturate = float(start), float(end), int(begin), int(saturate)

    def __call__(self, epoch: float) -> float:
        fraction = min(max((epoch - self.begin) / (self.saturate - self.begin), 0.0), 1.0)
        return self.start + (self.end - self.start) * fraction

    def __repr__(self):
        return f"LinearRamp({self.start} -> {self.end}, epochs {self.begin}..{self.saturate})"


class Optimizer:
    """Base: holds the model, a step counter, and per-parameter state arrays keyed by parameter name."""

    def __init__(self, model: Any):
        if not hasattr(model, "params") or not hasattr(model, "grads"):
            raise TypeError("an optimizer needs a model with params and grads dicts (a minigan Layer)")
        self.model = model
        self.steps = 0
        self.state: dict[str, dict[str, Any]] = {}

    def _slot(self, slot: str, name: str, like) -> Any:
        """Per-parameter state array (zeros on first use), on the parameter's backend and dtype."""
        store = self.state.setdefault(slot, {})
        if name not in store or store[name].shape != like.shape or store[name].dtype != like.dtype:
            xp = get_array_module(like)
            store[name] = xp.zeros_like(like)
        return store[name]

    def step(self) -> None:
        params, grads = self.model.params, self.model.grads
        for name, p in params.items():
            self._update(name, p, grads[name])
        self.steps += 1

    def _columns(self, *slots: str) -> list[list]:
        """``[parameters, gradients, slot arrays...]``, one list per kind in the parameters' order: the arguments
        of a whole-network update (:func:`minigan.backend.sgd_momentum_update_many`). Slots are made in the order
        given, tensor by tensor within each, as ``_update`` would make them."""
        params, grads = self.model.params, self.model.grads
        return [list(params.values()), [grads[k] for k in params],
                *([self._slot(slot, k, p) for k, p in params.items()] for slot in slots)]

    def _lanes(self) -> dict:
        """Scratch buffers of the update, one set per block-pool worker (:func:`minigan.backend.lane_arrays`), kept
        between steps so an update allocates nothing. Never checkpointed."""
        return self.__dict__.setdefault("_work", {})

    def _update(self, name: str, p, g) -> None:
        raise NotImplementedError

    # -- checkpoints ---------------------------------------------------------------------------------
    def hyperparameters(self) -> dict[str, float]:
        return {}

    def state_dict(self) -> tuple[dict[str, np.ndarray], dict]:
        """(arrays, scalars): host copies of the state arrays by "slot.param", and counters/hyper-params."""
        arrays = {f"{slot}.{name}": backend.to_host(a) for slot, store in self.state.items()
                  for name, a in store.items()}
        return arrays, {"type": type(self).__name__, "steps": self.steps, **self.hyperparameters()}

    def load_state_dict(self, arrays: dict[str, np.ndarray], scalars: dict) -> None:
        """Restore what :meth:`state_dict` returned; shapes must match the model's parameters."""
        if scalars.get("type") != type(self).__name__:
            raise ValueError(f"optimizer state is for {scalars.get('type')!r}, not {type(self).__name__}")
        params = self.model.params
        self.state = {}
        for key, a in arrays.items():
            slot, _, name = key.partition(".")
            if name not in params:
                raise ValueError(f"optimizer state for unknown parameter {name!r}")
            if tuple(a.shape) != tuple(params[name].shape):
                raise ValueError(f"optimizer state {key}: shape {a.shape} != parameter shape {params[name].shape}")
            target = backend.get_array_module(params[name])
            host = np.asarray(a, dtype=params[name].dtype)
            self.state.setdefault(slot, {})[name] = backend.to_device(host) if target is not np else host.copy()
        self.steps = int(scalars["steps"])
        for key, value in scalars.items():
            if key not in ("type", "steps"):
                setattr(self, key, value)


class SGD(Optimizer):
    r"""SGD with classical momentum: :math:`v \leftarrow \mu v - \eta g`, :math:`\theta \leftarrow \theta + v`.

    ``lr`` and ``momentum`` are attributes the trainer sets from the schedules before each step.
    """

    def __init__(self, model: Any, lr: float = 0.1, momentum: float = 0.0):
        super().__init__(model)
        self.lr, self.momentum = float(lr), float(momentum)

    def step(self) -> None:
        if not self.momentum:
            return super().step()
        # Every tensor in one call: one kernel on CuPy (backend.sgd_momentum_update_many), the same updates.
        backend.sgd_momentum_update_many(*self._columns("v"), self.lr, self.momentum, self._lanes())
        self.steps += 1

    def _update(self, name, p, g):
        if self.momentum:
            backend.sgd_momentum_update(p, g, self._slot("v", name, p), self.lr, self.momentum, self._lanes())
            return
        xp, lr, work = get_array_module(p), self.lr, self._lanes()

        def block(lane, p_, g_):
            lr_g, = backend.lane_arrays(work, lane, p_, 1)
            p_ -= xp.multiply(g_, lr, out=lr_g)  # lr * g, without a temporary

        parallel.blockwise(block, p, g)

    def hyperparameters(self):
        return {"lr": self.lr, "momentum": self.momentum}


class Adam(Optimizer):
    r"""Adam (Kingma & Ba 2015) with bias correction, and optionally StableAdamW's update clipping.

    :math:`m \leftarrow \beta_1 m + (1-\beta_1) g`, :math:`v \leftarrow \beta_2 v + (1-\beta_2) g^2`,
    :math:`\theta \leftarrow \theta - \eta\,\hat m/(\sqrt{\hat v} + \epsilon)` with
    :math:`\hat m = m/(1-\beta_1^t)`, :math:`\hat v = v/(1-\beta_2^t)`. The bias corrections are folded into
    one scalar step size so the update costs a few elementwise passes.

    ``update_clip`` :math:`c` (Wortsman et al. 2023, "Stable and low-precision training for large-scale
    vision-language models", StableAdamW; Adafactor's update clipping in another form): each tensor's step size
    becomes :math:`\eta / \max(1, r/c)` with :math:`r = \sqrt{\operatorname{mean}(g^2/\hat v)}` over the tensor
    (:func:`minigan.backend.adam_clip_scale`, :math:`\hat v` this step's, floored at :math:`\epsilon^2`).

    Why: Adam divides by a running average of past squared gradients, so after quiet steps one gradient many
    times larger than the ones before is divided by a second moment that has not caught up, and with
    :math:`\beta_1 = 0.5,\ \beta_2 = 0.999` the step reaches :math:`(1-\beta_1)/\sqrt{1-\beta_2} \approx 16`
    times its usual size in every coordinate at once. :math:`r` measures exactly that lag (it is about 1 while
    :math:`\hat v` keeps up, and up to :math:`1/\sqrt{1-\beta_2}` in a spike), and the clip keeps the step
    at the size the second moment vouches for. In a GAN that spike is how a run dies (measured: issue 11,
    docs/RESULTS.md): D meets an unusual batch, its own step spikes, its logits grow a hundredfold, G's
    gradient through it spikes, and G's step drives its sigmoid output into saturation, where no gradient
    brings it back.
    """

    def __init__(self, model: Any, lr: float = 2e-4, beta1: float = 0.5, beta2: float = 0.999, eps: float = 1e-8,
                 update_clip: float | None = None):
        super().__init__(model)
        if not (0 <= beta1 < 1 and 0 <= beta2 < 1):
            raise ValueError(f"Adam: betas must be in [0, 1), got {beta1}, {beta2}")
        if update_clip is not None and not (isinstance(update_clip, (int, float)) and not isinstance(update_clip, bool)
                                            and update_clip > 0):
            raise ValueError(f"Adam: update_clip must be a positive number or None, got {update_clip!r}")
        self.lr, self.beta1, self.beta2, self.eps = float(lr), float(beta1), float(beta2), float(eps)
        self.update_clip = None if update_clip is None else float(update_clip)

    def _prepare_step(self) -> None:
        t = self.steps + 1
        # lr_t = lr * sqrt(1 - b2^t) / (1 - b1^t), and eps scaled to match, equals the bias-corrected form.
        self._lr_t = self.lr * math.sqrt(1 - self.beta2 ** t) / (1 - self.beta1 ** t)
        self._eps_t = self.eps * math.sqrt(1 - self.beta2 ** t)
        self._bias2 = 1 - self.beta2 ** t

    def step(self) -> None:
        self._prepare_step()
        if self.update_clip is not None:
            return super().step()  # a clip factor per tensor: tensor by tensor
        # Every tensor in one call: one kernel on CuPy (backend.adam_update_many), the same updates. The v slots
        # are made before the m slots, as tensor by tensor: the same order of the state in a checkpoint.
        ps, gs, vs, ms = self._columns("v", "m")
        backend.adam_update_many(ps, gs, ms, vs, self.beta1, self.beta2, self._lr_t, self._eps_t, self._lanes())
        self.steps += 1

    def _update(self, name, p, g):
        v, lr_t = self._slot("v", name, p), self._lr_t
        if self.update_clip is not None:
            lr_t = lr_t * backend.adam_clip_scale(g, v, self.beta2, self._bias2, self.eps, self.update_clip,
                                                  self._lanes())
        # The same arithmetic, term by term, as the formulas above, fused on the GPU, on every core on the CPU.
        backend.adam_update(p, g, self._slot("m", name, p), v, self.beta1, self.beta2, lr_t, self._eps_t,
                            self._lanes())

    def hyperparameters(self):
        clip = {} if self.update_clip is None else {"update_clip": self.update_clip}
        return {"lr": self.lr, "beta1": self.beta1, "beta2": self.beta2, "eps": self.eps, **clip}

    def load_state_dict(self, arrays, scalars) -> None:
        # State saved without update_clip (an unclipped run, or one from before the option) trained without it.
        self.update_clip = None
        super().load_state_dict(arrays, scalars)


class WeightAverage:
    r"""An exponential moving average of a network's parameters (Polyak averaging of G; Yazıcı et al. 2019).

    After each optimizer step of the network, :meth:`update` sets :math:`s \leftarrow \beta s + (1-\beta)\theta`
    for every parameter :math:`\theta`, from :math:`s_0 = 0`. The average is the bias-corrected
    :math:`\bar\theta_t = s_t / (1 - \beta^t)` (as Adam corrects its moments): a weighted mean of
    :math:`\theta_1 \ldots \theta_t` with weights :math:`\propto \beta^{t-i}` that sum to one, so it is exact
    from the first step, without a share of the initial weights.

    Why a GAN wants it: G's weights at any one step carry the noise of the last few adversarial steps (the
    game does not converge to a point, it circles near one); the average over the last :math:`\approx 1/(1-\beta)`
    steps lies closer to the centre. Training never reads the average; sampling does.

    Non-trainable state (BatchNorm's running statistics) is not averaged: they describe the live weights'
    activations, so a user of the average re-estimates them for it
    (:meth:`minigan.families.base.GANModel.standing_statistics`); :meth:`swapped_in` puts the live buffers back
    on exit either way.

    Parameters
    ----------
    model : Layer
        The network whose ``params`` are averaged (in place arrays, read after each step).
    beta : float in (0, 1)
        Decay per update; the half-life is :math:`\ln 2 / -\ln\beta` updates.
    """

    def __init__(self, model: Any, beta: float):
        if not (isinstance(beta, (int, float)) and 0 < beta < 1):
            raise ValueError(f"WeightAverage: beta must be in (0, 1), got {beta!r}")
        self.model, self.beta, self.steps = model, float(beta), 0
        self.shadow = {name: get_array_module(p).zeros_like(p) for name, p in model.params.items()}

    def update(self) -> None:
        """Fold the current parameters into the average (call after each optimizer step)."""
        beta, work = self.beta, self._lanes()

        def block(lane, s_, p_):
            term, = backend.lane_arrays(work, lane, p_, 1)
            s_ *= beta
            s_ += get_array_module(p_).multiply(p_, 1 - beta, out=term)

        for name, p in self.model.params.items():
            parallel.blockwise(block, self.shadow[name], p)
        self.steps += 1

    _lanes = Optimizer._lanes  # reused work buffers: the update allocates nothing

    def averaged(self) -> dict[str, Any]:
        """The bias-corrected averages by parameter name (new arrays); the live parameters if no step yet."""
        if self.steps == 0:
            return {name: p.copy() for name, p in self.model.params.items()}
        correction = 1.0 / (1.0 - self.beta ** self.steps)
        return {name: s * correction for name, s in self.shadow.items()}

    def swapped_in(self):
        """A context manager: inside it the model's parameters hold the averages; on exit the parameters and the
        buffers (which the caller may re-estimate inside) are restored exactly."""
        return _Swapped(self.model, self.averaged())

    # -- checkpoints ---------------------------------------------------------------------------------
    def state_dict(self) -> tuple[dict[str, np.ndarray], dict]:
        """(arrays, scalars): host copies of the running sums ``s`` by parameter name, and beta and the count."""
        return ({name: backend.to_host(s) for name, s in self.shadow.items()},
                {"beta": self.beta, "steps": self.steps})

    def load_state_dict(self, arrays: dict[str, np.ndarray], scalars: dict) -> None:
        params = self.model.params
        if set(arrays) != set(params):
            raise ValueError(f"weight-average state names {sorted(set(arrays) ^ set(params))[:3]} do not match "
                             "the model's parameters")
        for name, a in arrays.items():
            if tuple(a.shape) != tuple(params[name].shape):
                raise ValueError(f"weight-average state {name}: shape {a.shape} != parameter shape "
                                 f"{params[name].shape}")
            host = np.asarray(a, dtype=params[name].dtype)
            self.shadow[name][...] = host if get_array_module(params[name]) is np else backend.to_device(host)
        beta, steps = scalars.get("beta"), scalars.get("steps")
        if beta != self.beta or not (isinstance(steps, int) and not isinstance(steps, bool) and steps >= 0):
            raise ValueError(f"weight-average state has beta {beta!r}, steps {steps!r}; expected beta {self.beta} "
                             "and a non-negative step count")
        self.steps = steps


class _Swapped:
    """Holds ``values`` in ``model.params`` inside a ``with`` block; puts the original parameters and buffers back
    on exit."""

    def __init__(self, model: Any, values: dict[str, Any]):
        self.model, self.values, self.saved, self.saved_buffers = model, values, None, None

    def __enter__(self):
        params = self.model.params
        self.saved = {name: p.copy() for name, p in params.items()}
        self.saved_buffers = {name: b.copy() for name, b in self.model.buffers.items()}
        for name, p in params.items():
            p[...] = self.values[name]
        return self.model

    def __exit__(self, *exc):
        for name, p in self.model.params.items():
            p[...] = self.saved[name]
        for name, b in self.model.buffers.items():
            b[...] = self.saved_buffers[name]
        return False
