r"""Mean squared error.

Forward:  l_i = (x_i - t_i)^2,  reduced by 'none' | 'mean' (sum / numel; NaN for an empty input) | 'sum'
Gradient: dl_i/dx_i = 2 (x_i - t_i), times the upstream gradient and 1/numel for 'mean'
"""

import functools

from numba import njit

from .._elementwise import typed
from . import _common


# ---- scalar math (one definition, called by the CUDA kernels and by the CPU loop) ------------------------------------
@functools.lru_cache(maxsize=None)
def _math(dtype):
    (two,) = typed(dtype, 2.0)

    @njit(inline="always")
    def f(x, t, p, a, b):
        d = x - t
        return d * d, two * d  # l = d^2, dl/dx = 2 d

    return f


# ---- public functions ------------------------------------------------------------------------------------------------
def mse_loss(input, target, reduction="mean", *, out=None, stream=None):
    r"""Mean squared error (``torch.nn.functional.mse_loss``).

    .. math:: \ell = \operatorname{reduce}_i\, (x_i - t_i)^2

    Args:
        input: float16/bfloat16/float32/float64 array of any shape (NumPy, or a device array: CuPy, PyTorch CUDA, Numba).
        target: same shape, kind and dtype as ``input``.
        reduction: ``"mean"`` (sum / numel; NaN for an empty input, as PyTorch), ``"sum"`` or ``"none"``.
        out: optional preallocated per-element result (reduction ``"none"`` only); may alias ``input``.
        stream: CUDA stream for a device call (default: the current stream of the inputs' library).

    Returns:
        ``"none"``: an array like ``input``; ``"mean"``/``"sum"``: a 0-d array of ``input``'s kind and dtype (on the
        device for device inputs; ``float(loss)`` reads it).

    Example:
        >>> import numpy as np, gpunn
        >>> gpunn.mse_loss(np.array([1.0, 2.0]), np.array([0.0, 0.0]))
        array(2.5)
    """
    return _common.pointwise(_math, "forward", input, target, reduction, out=out, stream=stream)


def mse_loss_backward(input, target, reduction="mean", grad=None, *, out=None, stream=None):
    r"""Gradient of :func:`mse_loss` with respect to ``input``.

    .. math:: \frac{\partial \ell}{\partial x_i} = g_i \cdot s \cdot 2 (x_i - t_i)

    with ``s = 1/numel`` for ``"mean"``, else 1, and ``g`` the upstream gradient ``grad``: ``None`` (1), a scalar or
    a one-element array for ``"mean"``/``"sum"``, an array of ``input``'s shape (or a scalar) for ``"none"``.
        stream: CUDA stream for a device call (default: the current stream of the inputs' library).

    Returns:
        ``dx``, an array like ``input`` (``out`` if given; it may alias ``input``, ``target`` or ``grad``).

    Example:
        >>> import numpy as np, gpunn
        >>> gpunn.mse_loss_backward(np.array([1.0, 2.0]), np.array([0.0, 0.0]))
        array([1., 2.])
    """
    return _common.pointwise(_math, "backward", input, target, reduction, grad=grad, out=out, stream=stream)


def mse_loss_with_grad(input, target, reduction="mean", grad=None, *, stream=None):
    r"""``(mse_loss(...), mse_loss_backward(...))`` from one pass over the data (one kernel writes both).

    Example:
        >>> import numpy as np, gpunn
        >>> loss, dx = gpunn.mse_loss_with_grad(np.array([1.0, 2.0]), np.array([0.0, 0.0]))
        >>> float(loss), dx
        (2.5, array([1., 2.]))
    """
    return _common.pointwise(_math, "with_grad", input, target, reduction, grad=grad, stream=stream)


_common.register_pointwise("mse_loss", _math)
