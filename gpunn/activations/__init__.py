"""Activations, forward and backward. One module per op; definitions in each module's docstring."""

from .relu import relu, relu_backward
from .softmax import log_softmax, log_softmax_backward, softmax, softmax_backward

__all__ = [
    "relu", "relu_backward",
    "softmax", "softmax_backward", "log_softmax", "log_softmax_backward",
]
