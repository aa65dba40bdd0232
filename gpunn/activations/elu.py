r"""ELU.

Forward:  y = x if x > 0 else alpha * (exp(x) - 1)    (expm1: accurate for small |x|)
Backward: dx = dy if x > 0 else dy * alpha * exp(x)   (saved: x)

The backward follows PyTorch's mask exactly: it tests ``x <= 0``, so at x = NaN dx = dy (what
``torch.nn.functional.elu`` gives); the forward gives NaN there. elu(-inf) = -alpha, elu(+inf) = +inf.
"""

import functools

from numba import njit

from .. import _elementwise
from .._elementwise import typed
from . import _vecmath
from .._args import check_real


# ---- scalar math (one definition, called by the CUDA kernel and by the CPU loop) -------------------------------------
@functools.lru_cache(maxsize=None)
def _forward_math(dtype):
    (zero,) = typed(dtype, 0.0)
    expm1 = _vecmath.for_dtype(dtype).expm1

    @njit(inline="always")
    def f(x, alpha, b):
        return x if x > zero else alpha * expm1(x)  # NaN: expm1(NaN) = NaN

    return f


@functools.lru_cache(maxsize=None)
def _backward_math(dtype):
    (zero,) = typed(dtype, 0.0)
    exp = _vecmath.for_dtype(dtype).exp

    @njit(inline="always")
    def f(dy, x, alpha, b):
        return dy * alpha * exp(x) if x <= zero else dy  # dx = dy * (alpha e^x if x <= 0 else 1)

    return f


# ---- public functions ------------------------------------------------------------------------------------------------
def elu(x, alpha=1.0, *, out=None, stream=None):
    r"""Exponential linear unit.

    .. math:: y = \begin{cases} x & x > 0 \\ \alpha\,(e^{x} - 1) & x \le 0 \end{cases}

    Args:
        x: float16/bfloat16/float32/float64 array of any shape (NumPy, or a device array: CuPy, PyTorch CUDA, Numba).
        alpha: a finite real number (any sign, as in PyTorch).
        out: optional preallocated result of ``x``'s shape and dtype; may be ``x`` itself (in place).
        stream: CUDA stream for a device call (default: the current stream of the inputs' library).

    Returns:
        ``y``, an array of the same kind, shape and dtype as ``x``.

    Example:
        >>> import numpy as np, gpunn
        >>> gpunn.elu(np.array([-1.0, 0.0, 2.0]))
        array([-0.63212056,  0.        ,  2.        ])
    """
    alpha = check_real("alpha", alpha)
    return _elementwise.forward(_forward_math, x, out, alpha, stream=stream)


def elu_backward(dy, x, alpha=1.0, *, out=None, stream=None):
    r"""Gradient of :func:`elu`.

    .. math:: dx = dy \cdot \begin{cases} 1 & x > 0 \\ \alpha\,e^{x} & x \le 0 \end{cases}

    Args:
        dy: upstream gradient, same shape and dtype as ``x``.
        x: the forward input.
        alpha: the ``alpha`` of the forward call.
        out: optional preallocated ``dx``; may be ``dy`` or ``x``.
        stream: CUDA stream for a device call (default: the current stream of the inputs' library).

    Returns:
        ``dx``, same kind, shape and dtype as ``x``.

    Example:
        >>> import numpy as np, gpunn
        >>> gpunn.elu_backward(np.ones(3), np.array([-1.0, 0.0, 2.0]))
        array([0.36787944, 1.        , 1.        ])
    """
    alpha = check_real("alpha", alpha)
    return _elementwise.backward(_backward_math, dy, x, out, alpha, stream=stream)


_elementwise.register("elu", _forward_math, _backward_math)
