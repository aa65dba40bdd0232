r"""Sigmoid (logistic function).

Forward:  y = 1 / (1 + exp(-x)), computed from e = exp(-|x|) <= 1 so that neither tail overflows:
          y = 1 / (1 + e) for x >= 0 and y = e / (1 + e) for x < 0 (never NaN for finite x, never an overflow;
          one division, so one rounding after the exp)
Backward: dx = dy * y * (1 - y)                       (saved: y, the forward output)

sigmoid(+inf) = 1, sigmoid(-inf) = 0, sigmoid(NaN) = NaN.
"""

import functools

from numba import njit

from .. import _elementwise
from .._elementwise import typed
from . import _vecmath


# ---- scalar math (one definition, called by the CUDA kernel and by the CPU loop) -------------------------------------
@functools.lru_cache(maxsize=None)
def _forward_math(dtype):
    zero, one = typed(dtype, 0.0, 1.0)
    exp_neg = _vecmath.for_dtype(dtype).exp_neg

    @njit(inline="always")
    def f(x, a, b):
        e = exp_neg(-abs(x))  # in [0, 1]: no overflow in either tail
        return (one if x >= zero else e) / (one + e)  # one rounding; NaN: e = NaN, so NaN / NaN

    return f


@functools.lru_cache(maxsize=None)
def _backward_math(dtype):
    (one,) = typed(dtype, 1.0)

    @njit(inline="always")
    def f(dy, y, a, b):
        return dy * y * (one - y)  # dx = dy * y * (1 - y)

    return f


# ---- public functions ------------------------------------------------------------------------------------------------
def sigmoid(x, *, out=None, stream=None):
    r"""Logistic sigmoid, stable in both tails.

    .. math:: y = \frac{1}{1 + e^{-x}}

    Args:
        x: float16/bfloat16/float32/float64 array of any shape (NumPy, or a device array: CuPy, PyTorch CUDA, Numba).
        out: optional preallocated result of ``x``'s shape and dtype; may be ``x`` itself (in place).
        stream: CUDA stream for a device call (default: the current stream of the inputs' library).

    Returns:
        ``y``, an array of the same kind, shape and dtype as ``x``.

    Example:
        >>> import numpy as np, gpunn
        >>> gpunn.sigmoid(np.array([-1000.0, 0.0, 1000.0], np.float32))
        array([0. , 0.5, 1. ], dtype=float32)
    """
    return _elementwise.forward(_forward_math, x, out, stream=stream)


def sigmoid_backward(dy, y, *, out=None, stream=None):
    r"""Gradient of :func:`sigmoid`, from the forward OUTPUT ``y``.

    .. math:: dx = dy \cdot y (1 - y)

    Args:
        dy: upstream gradient, same shape and dtype as ``y``.
        y: the forward output ``sigmoid(x)``.
        out: optional preallocated ``dx``; may be ``dy`` or ``y``.
        stream: CUDA stream for a device call (default: the current stream of the inputs' library).

    Returns:
        ``dx``, same kind, shape and dtype as ``y``.

    Example:
        >>> import numpy as np, gpunn
        >>> gpunn.sigmoid_backward(np.ones(2, np.float32), np.array([0.5, 1.0], np.float32))
        array([0.25, 0.  ], dtype=float32)
    """
    return _elementwise.backward(_backward_math, dy, y, out, x_name="y", stream=stream)


_elementwise.register("sigmoid", _forward_math, _backward_math)
