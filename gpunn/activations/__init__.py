"""Activations, forward and backward. One module per op; definitions in each module's docstring."""

from .relu import relu, relu_backward

__all__ = [
    "relu", "relu_backward",
]
