r"""SiLU (swish): x * sigmoid(x).

Forward:  y = x * s,  s = sigmoid(x) = 1 / (1 + exp(-x))
Backward: dx = dy * s * (1 + x (1 - s))                                  (saved: x)

s and 1 - s come from e = exp(-|x|) <= 1 (stable in both tails, no overflow): with r = 1 / (1 + e),
x >= 0: s = r, 1 - s = e r;  x < 0: s = e r, 1 - s = r. Never NaN for finite x; silu(+inf) = +inf,
silu(-inf) = -inf * 0 = NaN and the backward is NaN at +-inf, as in PyTorch.
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
        e = exp_neg(-abs(x))
        return (x if x >= zero else x * e) / (one + e)  # y = x sigmoid(x)

    return f


@functools.lru_cache(maxsize=None)
def _backward_math(dtype):
    zero, one = typed(dtype, 0.0, 1.0)
    exp_neg = _vecmath.for_dtype(dtype).exp_neg

    @njit(inline="always")
    def f(dy, x, a, b):
        e = exp_neg(-abs(x))
        r = one / (one + e)
        nonneg = x >= zero
        s = r if nonneg else e * r             # sigmoid(x)
        oms = e * r if nonneg else r           # 1 - sigmoid(x), without cancellation
        return dy * s * (one + x * oms)        # dx = dy * s * (1 + x (1 - s))

    return f


# ---- public functions ------------------------------------------------------------------------------------------------
def silu(x, *, out=None, stream=None):
    r"""Sigmoid linear unit (swish with beta = 1).

    .. math:: y = x\,\sigma(x) = \frac{x}{1 + e^{-x}}

    Args:
        x: float16/bfloat16/float32/float64 array of any shape (NumPy, or a device array: CuPy, PyTorch CUDA, Numba).
        out: optional preallocated result of ``x``'s shape and dtype; may be ``x`` itself (in place).
        stream: CUDA stream for a device call (default: the current stream of the inputs' library).

    Returns:
        ``y``, an array of the same kind, shape and dtype as ``x``.

    Example:
        >>> import numpy as np, gpunn
        >>> gpunn.silu(np.array([-1.0, 0.0, 1.0]))
        array([-0.26894142,  0.        ,  0.73105858])
    """
    return _elementwise.forward(_forward_math, x, out, stream=stream)


def silu_backward(dy, x, *, out=None, stream=None):
    r"""Gradient of :func:`silu`.

    .. math:: dx = dy \cdot \sigma(x)\left(1 + x (1 - \sigma(x))\right)

    Args:
        dy: upstream gradient, same shape and dtype as ``x``.
        x: the forward input.
        out: optional preallocated ``dx``; may be ``dy`` or ``x``.
        stream: CUDA stream for a device call (default: the current stream of the inputs' library).

    Returns:
        ``dx``, same kind, shape and dtype as ``x``.

    Example:
        >>> import numpy as np, gpunn
        >>> gpunn.silu_backward(np.ones(3), np.array([-1.0, 0.0, 1.0]))
        array([0.07232949, 0.5       , 0.92767051])
    """
    return _elementwise.backward(_backward_math, dy, x, out, stream=stream)


_elementwise.register("silu", _forward_math, _backward_math)
