r"""ReLU.

Forward:  y = max(x, 0)
Backward: dx = dy * (x > 0)            (saved: x; the gradient at x = 0 is 0, and at x = NaN it is dy, as in PyTorch)

NaN propagates: relu(NaN) = NaN, as ``torch.relu`` gives.
"""

import functools

from numba import njit

from .. import _elementwise
from .._elementwise import typed


# ---- scalar math (one definition, called by the CUDA kernel and by the CPU loop) -------------------------------------
@functools.lru_cache(maxsize=None)
def _forward_math(dtype):
    (zero,) = typed(dtype, 0.0)

    @njit(inline="always")
    def f(x, a, b):
        return zero if x <= zero else x  # NaN fails both tests and stays NaN

    return f


@functools.lru_cache(maxsize=None)
def _backward_math(dtype):
    (zero,) = typed(dtype, 0.0)

    @njit(inline="always")
    def f(dy, x, a, b):
        return zero if x <= zero else dy  # dx = dy * (x > 0); x = NaN gives dy, as PyTorch's mask (x <= 0)

    return f


# ---- public functions ------------------------------------------------------------------------------------------------
def relu(x, *, out=None):
    r"""Rectified linear unit.

    .. math:: y = \max(x, 0)

    Args:
        x: float32 or float64 array of any shape (NumPy, or a device array: CuPy, PyTorch CUDA, Numba).
        out: optional preallocated result of ``x``'s shape and dtype; may be ``x`` itself (in place).

    Returns:
        ``y``, an array of the same kind, shape and dtype as ``x``.

    Example:
        >>> import numpy as np, gpunn
        >>> gpunn.relu(np.array([-1.0, 0.0, 2.0], np.float32))
        array([0., 0., 2.], dtype=float32)
    """
    return _elementwise.forward(_forward_math, x, out)


def relu_backward(dy, x, *, out=None):
    r"""Gradient of :func:`relu`.

    .. math:: dx = dy \cdot [x > 0]

    Args:
        dy: upstream gradient, same shape and dtype as ``x``.
        x: the forward input.
        out: optional preallocated ``dx``; may be ``dy`` or ``x``.

    Returns:
        ``dx``, same kind, shape and dtype as ``x``.

    Example:
        >>> import numpy as np, gpunn
        >>> gpunn.relu_backward(np.ones(3, np.float32), np.array([-1.0, 0.0, 2.0], np.float32))
        array([0., 0., 1.], dtype=float32)
    """
    return _elementwise.backward(_backward_math, dy, x, out)


_elementwise.register("relu", _forward_math, _backward_math)
