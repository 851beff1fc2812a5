"""Layers, losses and optimizers, one concept per module. Every gradient of minigan is derived in a docstring here.

* :mod:`minigan.nn.base` — the layer contract and :class:`Layer`;
* :mod:`minigan.nn.init` — initial weights on the host, from seeded generators;
* :mod:`minigan.nn.dense` — :class:`Linear` (optionally spectrally normalised), :class:`Maxout`,
  :class:`ProjectionHead`;
* :mod:`minigan.nn.activations` — :func:`sigmoid`, :class:`ReLU`, :class:`LeakyReLU`, :class:`Sigmoid`,
  :class:`Tanh`;
* :mod:`minigan.nn.dropout` — :class:`Dropout`;
* :mod:`minigan.nn.conv` — im2col/col2im, the tap planes, :class:`Conv2d`, :class:`ConvTranspose2d`;
* :mod:`minigan.nn.norm` — :class:`BatchNorm`, :class:`ConditionalBatchNorm`, :class:`InstanceNorm2d`;
* :mod:`minigan.nn.minibatch` — :class:`MinibatchStdDev` (a D's view of its batch's variety);
* :mod:`minigan.nn.shape` — :class:`ReflectionPad2d`, :class:`Flatten`, :class:`Reshape`, :class:`Upsample`,
  :class:`PatchRows`;
* :mod:`minigan.nn.containers` — :class:`Sequential`, :class:`Join`, :class:`Conditioned`, :class:`Identity`,
  :class:`Residual`, :class:`SkipConcat`, :class:`UNetBlock`;
* :mod:`minigan.nn.losses` — BCE on logits, the GAN losses, softmax cross-entropy, L1;
* :mod:`minigan.nn.optim` — SGD with momentum, Adam, learning-rate and momentum schedules.

Everything a network is built from can be imported from ``minigan.nn`` itself.
"""

from .activations import LeakyReLU, ReLU, Sigmoid, Tanh, sigmoid
from .base import DEFAULT_DTYPE, Layer, checking_finite_inputs
from .containers import Conditioned, Identity, Join, Residual, Sequential, SkipConcat, UNetBlock
from .conv import (CONV_METHODS, Conv2d, ConvTranspose2d, col2im, col2im_batch_last, conv_output_size, im2col,
                   im2col_batch_last, spread_taps, sum_taps)
from .dense import Linear, Maxout, ProjectionHead
from .dropout import Dropout
from .init import init_weights, make_generator
from .minibatch import MinibatchStdDev
from .norm import BatchNorm, ConditionalBatchNorm, InstanceNorm2d
from .shape import Flatten, PatchRows, ReflectionPad2d, Reshape, Upsample

__all__ = [
    "DEFAULT_DTYPE", "Layer", "checking_finite_inputs", "init_weights", "make_generator",
    "Linear", "Maxout", "ProjectionHead",
    "sigmoid", "ReLU", "LeakyReLU", "Sigmoid", "Tanh", "Dropout",
    "Sequential", "Join", "Conditioned", "Identity", "Residual", "SkipConcat", "UNetBlock",
    "Conv2d", "ConvTranspose2d", "CONV_METHODS", "im2col", "col2im", "im2col_batch_last", "col2im_batch_last",
    "sum_taps", "spread_taps", "conv_output_size",
    "BatchNorm", "ConditionalBatchNorm", "InstanceNorm2d", "MinibatchStdDev",
    "ReflectionPad2d", "Flatten", "Reshape", "Upsample", "PatchRows",
]
