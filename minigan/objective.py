r"""The adversarial objective as forward/backward passes through G and D.

These two functions are the whole GAN gradient computation; the trainer, the gradient checker and the
benchmark all call them, so what is checked is exactly what is trained and timed.

* :func:`discriminator_step`: D's loss :math:`\tfrac12[\mathrm{BCE}(1, D(x)) + \mathrm{BCE}(0, D(\tilde x))]`
  and its gradient into D's parameters. Real and fake rows go through D as *one* batch: the loss is a sum
  of per-row terms and D treats rows independently (dropout masks are drawn per row), so this equals two
  separate passes with the gradients added, at half the matrix-product launches.
* :func:`generator_step`: G's loss on :math:`D(G(z))` and its gradient through D into G's parameters. D's
  weights are held fixed (``requires_grad`` off: their gradients are not even computed), only the gradient
  with respect to D's input flows back.
* :func:`simultaneous_step`: both losses from *one* forward pass, as the original pylearn2 code trains
  (``AdversaryCost2`` of goodfeli/adversarial): D's loss into D, and G's loss through the same D pass (same
  dropout masks, D's weights before this update) into G, so both networks can then be updated at once.

Conditional models take ``y`` (one-hot labels); G gets ``(z, y)`` and D gets ``(x, y)``.
"""

from __future__ import annotations

from .backend import get_array_module
from .nn.losses import bce_with_logits, discriminator_loss, generator_loss


def _pair(x, y):
    return x if y is None else (x, y)


def discriminator_step(D, x_real, x_fake, y_real=None, y_fake=None, train: bool = True,
                       backward: bool = True, input_grads: bool = False, separate: bool = False):
    """Forward D on real and fake rows (one batch, or two with ``separate``), compute D's loss, and
    backpropagate it into D.

    Parameters
    ----------
    D : Layer
        Discriminator returning logits of shape (N, 1); takes ``x`` or ``(x, y)``.
    x_real, x_fake : arrays (N_r, d), (N_f, d)
    y_real, y_fake : arrays or None
        One-hot conditions of the real and fake rows (conditional models only).
    train : bool
        Dropout active.
    backward : bool
        Also run the backward pass (writing ``D.grads``).
    input_grads : bool
        Also return d(loss)/d(D's inputs) (the gradient checker wants them; training does not).
    separate : bool
        Run the real and the fake rows through D as two batches (:func:`_discriminator_step_separate`): for a
        D with BatchNorm, whose output on a row depends on the other rows of its batch.

    Returns
    -------
    loss : 0-d array
    logits : array (N_r + N_f, 1), real rows first
    dinputs : None, or the gradient with respect to D's stacked input (an array, or a tuple for ``(x, y)``)
    """
    if separate:
        return _discriminator_step_separate(D, x_real, x_fake, y_real, y_fake, train, backward, input_grads)
    xp = get_array_module(x_real)
    n_real = x_real.shape[0]
    x = xp.concatenate([x_real, x_fake], axis=0)
    y = None if y_real is None else xp.concatenate([y_real, y_fake], axis=0)
    D.set_requires_grad(True).set_input_grad(input_grads)
    logits = D.forward(_pair(x, y), train)
    loss, (d_real, d_fake) = discriminator_loss(logits[:n_real], logits[n_real:])
    dinputs = None
    if backward:
        dinputs = D.backward(xp.concatenate([d_real, d_fake], axis=0))
    return loss, logits, dinputs


def _discriminator_step_separate(D, x_real, x_fake, y_real, y_fake, train, backward, input_grads):
    r""":func:`discriminator_step` with the real and the fake rows as two batches through D.

    The loss is the same sum of per-row terms, :math:`L = \tfrac12[\mathrm{BCE}(1, D(x)) + \mathrm{BCE}(0,
    D(\tilde x))] = L_r(\theta) + L_f(\theta)`, but :math:`D(\tilde x)` no longer depends on the real rows (nor
    :math:`D(x)` on the fakes), so each half is a function of its own batch and of the parameters only. Hence
    :math:`\partial L/\partial\theta = \partial L_r/\partial\theta + \partial L_f/\partial\theta`: backward
    through the real pass, keep D's parameter gradients, backward through the fake pass (which overwrites
    them, the layer contract) and add the kept ones back. Each half's logit gradient is the one
    :func:`~minigan.nn.losses.discriminator_loss` gives it (:math:`\tfrac12(\sigma(\ell) - t)/N`).
    The input gradients are the two passes' own, stacked real rows first, as the joint step returns them.
    """
    xp = get_array_module(x_real)
    D.set_requires_grad(True).set_input_grad(input_grads)
    logits_real = D.forward(_pair(x_real, y_real), train)
    d_real = d_inputs_real = None
    if backward:
        loss_real, d_real = bce_with_logits(logits_real, 1.0)
        d_inputs_real = D.backward(0.5 * d_real)
        kept = {k: g.copy() for k, g in D.grads.items()} if D.requires_grad else {}
    else:
        loss_real, _ = bce_with_logits(logits_real, 1.0)
    logits_fake = D.forward(_pair(x_fake, y_fake), train)
    loss_fake, d_fake = bce_with_logits(logits_fake, 0.0)
    loss = 0.5 * (loss_real + loss_fake)
    logits = xp.concatenate([logits_real, logits_fake], axis=0)
    dinputs = None
    if backward:
        d_inputs_fake = D.backward(0.5 * d_fake)
        grads = D.grads
        for k, g in kept.items():
            grads[k] += g
        if input_grads:
            if isinstance(d_inputs_real, tuple):
                dinputs = tuple(xp.concatenate([a, b], axis=0) for a, b in zip(d_inputs_real, d_inputs_fake))
            else:
                dinputs = xp.concatenate([d_inputs_real, d_inputs_fake], axis=0)
    return loss, logits, dinputs


def generator_step(G, D, z, y=None, kind: str = "non_saturating", train: bool = True, backward: bool = True,
                   input_grads: bool = False):
    """Forward G then D, compute G's loss, and backpropagate it through D into G.

    Parameters
    ----------
    G : Layer
        Generator; takes ``z`` or ``(z, y)``.
    D : Layer
        Discriminator; its parameters are not changed and their gradients are not computed.
    z : array (N, noise_dim)
    y : array (N, n_classes) or None
    kind : {"non_saturating", "minimax"}
        Which generator loss (see :func:`minigan.nn.losses.generator_loss`).
    input_grads : bool
        Also return d(loss)/d(G's inputs).

    Returns
    -------
    loss : 0-d array
    x_fake : array (N, d), G's output
    logits : array (N, 1), D's logits on ``x_fake``
    dinputs : None, or the gradient with respect to G's input (an array, or a tuple for ``(z, y)``)
    """
    G.set_requires_grad(True).set_input_grad(input_grads)
    x_fake = G.forward(_pair(z, y), train)
    D.set_requires_grad(False).set_input_grad(True)
    logits = D.forward(_pair(x_fake, y), train)
    loss, dlogits = generator_loss(logits, kind)
    dinputs = None
    if backward:
        d_d_inputs = D.backward(dlogits)
        dx_fake = d_d_inputs if y is None else d_d_inputs[0]
        dinputs = G.backward(dx_fake)
    return loss, x_fake, logits, dinputs


def matching_aware_step(D, x_real, y_real, y_wrong, train: bool = True, backward: bool = True,
                        separate: bool = False):
    r"""D's matching-aware term for conditional models (Reed et al. 2016, "GAN-CLS").

    Real images with their own labels are "real"; the same images with *wrong* labels are "fake":
    :math:`\tfrac12[\mathrm{BCE}(1, D(x, y)) + \mathrm{BCE}(0, D(x, y'))]`. It is :func:`discriminator_step` on
    those rows, so its gradient is the one checked there.

    Why: in Algorithm 1 the fakes carry the real batch's labels, so every class is as frequent among real as
    among fake rows and a label-only feature of D cancels out; D gains from reading ``y`` only through x-y
    interactions, which it learns slowly, and until then G gets no label-dependent gradient. This term rewards
    reading ``y`` from the first update.

    Parameters
    ----------
    x_real : array (N, d)
        Real images (the trainer uses a batch other than the adversarial step's).
    y_real, y_wrong : arrays (N, n_classes), one-hot
        Their labels, and labels that differ from them in every row.
    separate : bool
        The right-label and the wrong-label rows as two batches through D (a D with BatchNorm), as
        :func:`discriminator_step`'s ``separate``.
    """
    loss, _, _ = discriminator_step(D, x_real, x_real, y_real, y_wrong, train=train, backward=backward,
                                    separate=separate)
    return loss


def simultaneous_step(G, D, x_real, z, y=None, kind: str = "non_saturating", train: bool = True,
                      backward: bool = True, input_grads: bool = False):
    r"""One forward pass of G and D; D's loss into D and G's loss through that same pass into G.

    This is the update of the original GAN code (pylearn2's ``AdversaryCost2``, goodfeli/adversarial): G makes
    :math:`\tilde x = G(z)`, D sees real and fake rows as one batch, and from those logits

    * D's gradient is :math:`\nabla_{\theta_D}\,\tfrac12[\mathrm{BCE}(1, D(x)) + \mathrm{BCE}(0, D(\tilde x))]`,
      exactly as in :func:`discriminator_step`;
    * G's gradient is :math:`\nabla_{\theta_G}\,\mathrm{BCE}(1, D(\tilde x))` (or the minimax loss) through the
      *same* D evaluation: same dropout masks, D's parameters before this update.

    An optimizer step on each then updates G and D simultaneously (neither sees the other's new weights),
    where :func:`discriminator_step` then :func:`generator_step` alternate (Goodfellow 2014, Algorithm 1, with
    a fresh noise batch and a D already updated for G's step).

    Backward runs through D twice: once with G's loss gradient on the fake rows (zero on the real rows; D's
    parameter gradients off) for :math:`\partial L_G/\partial \tilde x`, once with D's loss gradient (input
    gradients off) for D's parameters. Both reuse the forward pass's cached activations. The fake-row part of
    a two-block backward is the chain rule with a zero block, so the first pass is exactly
    :math:`J_D(\tilde x)^\top\,\partial L_G/\partial \ell`.

    Parameters
    ----------
    G, D : Layer
        Generator (takes ``z`` or ``(z, y)``) and discriminator (takes ``x`` or ``(x, y)``, returns (N, 1)).
    x_real : array (N, d)
    z : array (N, noise_dim)
    y : array (N, n_classes) or None
        One-hot labels, shared by the real rows and the fakes (conditional models).
    kind : {"non_saturating", "minimax"}
        G's loss.
    input_grads : bool
        Also return d(G's loss)/d(z) (the gradient checker wants it).

    Returns
    -------
    loss_D, loss_G : 0-d arrays
    logits : array (2N, 1), real rows first
    dz : None, or the gradient of G's loss with respect to G's input (an array, or a tuple for ``(z, y)``)
    """
    xp = get_array_module(x_real)
    n = x_real.shape[0]
    G.set_requires_grad(True).set_input_grad(input_grads)
    x_fake = G.forward(_pair(z, y), train)
    x = xp.concatenate([x_real, x_fake], axis=0)
    y2 = None if y is None else xp.concatenate([y, y], axis=0)
    D.set_requires_grad(True).set_input_grad(False)
    logits = D.forward(_pair(x, y2), train)
    loss_D, (d_real, d_fake) = discriminator_loss(logits[:n], logits[n:])
    loss_G, d_gen = generator_loss(logits[n:], kind)
    dz = None
    if backward:
        D.set_requires_grad(False).set_input_grad(True)
        d_inputs = D.backward(xp.concatenate([xp.zeros_like(d_gen), d_gen], axis=0))
        dx = d_inputs if y is None else d_inputs[0]
        dx_fake = dx[n:]
        D.set_requires_grad(True).set_input_grad(False)
        D.backward(xp.concatenate([d_real, d_fake], axis=0))
        dz = G.backward(dx_fake)
    return loss_D, loss_G, logits, dz
