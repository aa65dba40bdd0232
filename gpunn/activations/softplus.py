r"""Softplus.

Forward:  y = (1 / beta) * log(1 + exp(beta x)), and y = x where beta x > threshold (PyTorch's linear regime)
          computed as (max(z, 0) + log1p(exp(-|z|))) / beta with z = beta x, which never overflows
Backward: dx = dy * sigmoid(beta x), and dx = dy where beta x > threshold          (saved: x)
          sigmoid from e = exp(-|z|) <= 1, stable in both tails

With the default threshold (20) the stable forms give what PyTorch's ``log1p(exp(z)) / beta`` gives; they differ
only where PyTorch's overflows (a huge threshold: PyTorch gives inf or NaN, gpunn the finite value).
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
    m = _vecmath.for_dtype(dtype)
    log1p_unit, exp_neg = m.log1p_unit, m.exp_neg

    @njit(inline="always")
    def f(x, beta, threshold):
        z = x * beta
        if z > threshold:
            return x  # linear regime
        return (max(z, zero) + log1p_unit(exp_neg(-abs(z)))) / beta  # y = log(1 + e^z) / beta; NaN stays NaN

    return f


@functools.lru_cache(maxsize=None)
def _backward_math(dtype):
    zero, one = typed(dtype, 0.0, 1.0)
    exp_neg = _vecmath.for_dtype(dtype).exp_neg

    @njit(inline="always")
    def f(dy, x, beta, threshold):
        z = x * beta
        if z > threshold:
            return dy  # linear regime
        e = exp_neg(-abs(z))
        s = (one if z >= zero else e) / (one + e)  # sigmoid(z), stable in both tails
        return dy * s                               # dx = dy * sigmoid(beta x)

    return f


def _params(beta, threshold):
    beta = check_real("beta", beta)
    if beta == 0:
        raise ValueError("beta must be nonzero, got 0.0 (softplus divides by beta)")
    return beta, check_real("threshold", threshold)


# ---- public functions ------------------------------------------------------------------------------------------------
def softplus(x, beta=1.0, threshold=20.0, *, out=None, stream=None):
    r"""Softplus, a smooth ReLU.

    .. math:: y = \begin{cases} \frac{1}{\beta}\log\left(1 + e^{\beta x}\right) & \beta x \le \text{threshold} \\
              x & \beta x > \text{threshold} \end{cases}

    Args:
        x: float16/bfloat16/float32/float64 array of any shape (NumPy, or a device array: CuPy, PyTorch CUDA, Numba).
        beta: a finite, nonzero real number (PyTorch returns inf for beta = 0; gpunn raises ValueError).
        threshold: a finite real number: above it (in beta x) the result is x.
        out: optional preallocated result of ``x``'s shape and dtype; may be ``x`` itself (in place).
        stream: CUDA stream for a device call (default: the current stream of the inputs' library).

    Returns:
        ``y``, an array of the same kind, shape and dtype as ``x``.

    Example:
        >>> import numpy as np, gpunn
        >>> gpunn.softplus(np.array([-1.0, 0.0, 30.0]))
        array([ 0.31326169,  0.69314718, 30.        ])
    """
    beta, threshold = _params(beta, threshold)
    return _elementwise.forward(_forward_math, x, out, beta, threshold, stream=stream)


def softplus_backward(dy, x, beta=1.0, threshold=20.0, *, out=None, stream=None):
    r"""Gradient of :func:`softplus`.

    .. math:: dx = \begin{cases} dy\,\sigma(\beta x) & \beta x \le \text{threshold} \\
              dy & \beta x > \text{threshold} \end{cases}

    Args:
        dy: upstream gradient, same shape and dtype as ``x``.
        x: the forward input.
        beta, threshold: as in the forward call.
        out: optional preallocated ``dx``; may be ``dy`` or ``x``.
        stream: CUDA stream for a device call (default: the current stream of the inputs' library).

    Returns:
        ``dx``, same kind, shape and dtype as ``x``.

    Example:
        >>> import numpy as np, gpunn
        >>> gpunn.softplus_backward(np.ones(3), np.array([-1.0, 0.0, 30.0]))
        array([0.26894142, 0.5       , 1.        ])
    """
    beta, threshold = _params(beta, threshold)
    return _elementwise.backward(_backward_math, dy, x, out, beta, threshold, stream=stream)


_elementwise.register("softplus", _forward_math, _backward_math)
