"""Activations, forward and backward. One module per op; definitions in each module's docstring."""

from .elu import elu, elu_backward
from .gelu import gelu, gelu_backward
from .leaky_relu import leaky_relu, leaky_relu_backward
from .prelu import prelu, prelu_backward
from .relu import relu, relu_backward
from .sigmoid import sigmoid, sigmoid_backward
from .silu import silu, silu_backward
from .softmax import log_softmax, log_softmax_backward, softmax, softmax_backward
from .softplus import softplus, softplus_backward
from .tanh import tanh, tanh_backward

__all__ = [
    "relu", "relu_backward",
    "leaky_relu", "leaky_relu_backward",
    "prelu", "prelu_backward",
    "sigmoid", "sigmoid_backward",
    "tanh", "tanh_backward",
    "gelu", "gelu_backward",
    "silu", "silu_backward",
    "elu", "elu_backward",
    "softplus", "softplus_backward",
    "softmax", "softmax_backward", "log_softmax", "log_softmax_backward",
]
