"""Layers by family. The convolutional family lives here (one module per concept); the dense layers,
activations and :class:`~minigan.layers.Sequential` are still in :mod:`minigan.layers` and are re-exported so
that a model can import everything it needs from ``minigan.nn``.

* :mod:`minigan.nn.conv` — im2col/col2im, :class:`Conv2d`, :class:`ConvTranspose2d`;
* :mod:`minigan.nn.norm` — :class:`BatchNorm`, :class:`InstanceNorm2d`;
* :mod:`minigan.nn.shape` — :class:`ReflectionPad2d`, :class:`Flatten`, :class:`Reshape`, :class:`Upsample`;
* :mod:`minigan.nn.containers` — :class:`Residual`, :class:`SkipConcat`, :class:`UNetBlock`.
"""

from ..layers import (Dropout, Join, Layer, LeakyReLU, Linear, Maxout, ReLU, Sequential, Sigmoid, Tanh)
from .containers import Residual, SkipConcat, UNetBlock
from .conv import Conv2d, ConvTranspose2d, col2im, conv_output_size, im2col
from .norm import BatchNorm, InstanceNorm2d
from .shape import Flatten, ReflectionPad2d, Reshape, Upsample

__all__ = [
    "Layer", "Linear", "Maxout", "ReLU", "LeakyReLU", "Sigmoid", "Tanh", "Dropout", "Sequential", "Join",
    "Conv2d", "ConvTranspose2d", "im2col", "col2im", "conv_output_size",
    "BatchNorm", "InstanceNorm2d",
    "ReflectionPad2d", "Flatten", "Reshape", "Upsample",
    "Residual", "SkipConcat", "UNetBlock",
]
