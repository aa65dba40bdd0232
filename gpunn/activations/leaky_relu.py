r"""Leaky ReLU.

Forward:  y = x if x > 0 else s * x                  (s = negative_slope, default 0.01)
Backward: dx = dy if x > 0 else s * dy               (saved: x; the gradient at x = 0 is s, as in PyTorch)

NaN propagates in the forward (s * NaN = NaN). The backward follows PyTorch's mask exactly: at x = NaN the test
``x > 0`` fails, so dx = s * dy (what ``torch.nn.functional.leaky_relu`` gives).
"""

import functools

from numba import njit

from .. import _elementwise
from .._elementwise import typed
from .._args import check_real


# ---- scalar math (one definition, called by the CUDA kernel and by the CPU loop) -------------------------------------
@functools.lru_cache(maxsize=None)
def _forward_math(dtype):
    (zero,) = typed(dtype, 0.0)

    @njit(inline="always")
    def f(x, s, b):
        return x if x > zero else x * s  # NaN fails the test and s * NaN stays NaN

    return f


@functools.lru_cache(maxsize=None)
def _backward_math(dtype):
    (zero,) = typed(dtype, 0.0)

    @njit(inline="always")
    def f(dy, x, s, b):
        return dy if x > zero else dy * s  # dx = dy * (1 if x > 0 else s)

    return f


# ---- public functions ------------------------------------------------------------------------------------------------
def leaky_relu(x, negative_slope=0.01, *, out=None, stream=None):
    r"""Leaky rectified linear unit.

    .. math:: y = \begin{cases} x & x > 0 \\ s\,x & x \le 0 \end{cases}

    Args:
        x: float16/bfloat16/float32/float64 array of any shape (NumPy, or a device array: CuPy, PyTorch CUDA, Numba).
        negative_slope: ``s``, a finite real number (any sign, as in PyTorch).
        out: optional preallocated result of ``x``'s shape and dtype; may be ``x`` itself (in place).
        stream: CUDA stream for a device call (default: the current stream of the inputs' library).

    Returns:
        ``y``, an array of the same kind, shape and dtype as ``x``.

    Example:
        >>> import numpy as np, gpunn
        >>> gpunn.leaky_relu(np.array([-2.0, 0.0, 3.0], np.float32), 0.5)
        array([-1.,  0.,  3.], dtype=float32)
    """
    s = check_real("negative_slope", negative_slope)
    return _elementwise.forward(_forward_math, x, out, s, stream=stream)


def leaky_relu_backward(dy, x, negative_slope=0.01, *, out=None, stream=None):
    r"""Gradient of :func:`leaky_relu`.

    .. math:: dx = dy \cdot \begin{cases} 1 & x > 0 \\ s & x \le 0 \end{cases}

    Args:
        dy: upstream gradient, same shape and dtype as ``x``.
        x: the forward input.
        negative_slope: the ``s`` of the forward call.
        out: optional preallocated ``dx``; may be ``dy`` or ``x``.
        stream: CUDA stream for a device call (default: the current stream of the inputs' library).

    Returns:
        ``dx``, same kind, shape and dtype as ``x``.

    Example:
        >>> import numpy as np, gpunn
        >>> gpunn.leaky_relu_backward(np.ones(3, np.float32), np.array([-2.0, 0.0, 3.0], np.float32), 0.5)
        array([0.5, 0.5, 1. ], dtype=float32)
    """
    s = check_real("negative_slope", negative_slope)
    return _elementwise.backward(_backward_math, dy, x, out, s, stream=stream)


_elementwise.register("leaky_relu", _forward_math, _backward_math)
