r"""Hyperbolic tangent.

Forward:  y = tanh(x)                     (tanh(+-inf) = +-1, no overflow for large |x|; float32: _vecmath.tanh)
Backward: dx = dy * (1 - y^2)             (saved: y, the forward output)
"""

import functools

from numba import njit

from .. import _elementwise
from .._elementwise import typed
from . import _vecmath


# ---- scalar math (one definition, called by the CUDA kernel and by the CPU loop) -------------------------------------
@functools.lru_cache(maxsize=None)
def _forward_math(dtype):
    tanh_ = _vecmath.for_dtype(dtype).tanh

    @njit(inline="always")
    def f(x, a, b):
        return tanh_(x)

    return f


@functools.lru_cache(maxsize=None)
def _backward_math(dtype):
    (one,) = typed(dtype, 1.0)

    @njit(inline="always")
    def f(dy, y, a, b):
        return dy * (one - y * y)  # dx = dy * (1 - y^2)

    return f


# ---- public functions ------------------------------------------------------------------------------------------------
def tanh(x, *, out=None, stream=None):
    r"""Hyperbolic tangent.

    .. math:: y = \tanh x = \frac{e^{x} - e^{-x}}{e^{x} + e^{-x}}

    Args:
        x: float16/bfloat16/float32/float64 array of any shape (NumPy, or a device array: CuPy, PyTorch CUDA, Numba).
        out: optional preallocated result of ``x``'s shape and dtype; may be ``x`` itself (in place).
        stream: CUDA stream for a device call (default: the current stream of the inputs' library).

    Returns:
        ``y``, an array of the same kind, shape and dtype as ``x``.

    Example:
        >>> import numpy as np, gpunn
        >>> gpunn.tanh(np.array([-np.inf, 0.0, 1000.0], np.float32))
        array([-1.,  0.,  1.], dtype=float32)
    """
    return _elementwise.forward(_forward_math, x, out, stream=stream)


def tanh_backward(dy, y, *, out=None, stream=None):
    r"""Gradient of :func:`tanh`, from the forward OUTPUT ``y``.

    .. math:: dx = dy \cdot (1 - y^2)

    Args:
        dy: upstream gradient, same shape and dtype as ``y``.
        y: the forward output ``tanh(x)``.
        out: optional preallocated ``dx``; may be ``dy`` or ``y``.
        stream: CUDA stream for a device call (default: the current stream of the inputs' library).

    Returns:
        ``dx``, same kind, shape and dtype as ``y``.

    Example:
        >>> import numpy as np, gpunn
        >>> gpunn.tanh_backward(np.ones(2, np.float32), np.array([0.0, 0.5], np.float32))
        array([1.  , 0.75], dtype=float32)
    """
    return _elementwise.backward(_backward_math, dy, y, out, x_name="y", stream=stream)


_elementwise.register("tanh", _forward_math, _backward_math)
