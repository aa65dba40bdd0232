r"""Huber loss and smooth L1 loss (PyTorch's forms), with d = x - t.

Huber (delta > 0):
    l = 0.5 d^2                      if |d| < delta
        delta (|d| - 0.5 delta)      otherwise
    dl/dx = d if |d| < delta else delta sign(d)

Smooth L1 (beta >= 0) = huber(delta=beta) / beta:
    l = 0.5 d^2 / beta               if |d| < beta
        |d| - 0.5 beta               otherwise
    dl/dx = d / beta if |d| < beta else sign(d)
    beta = 0 is exactly the L1 loss (PyTorch routes it to l1_loss), and so is a beta that rounds to 0 in the data's
    dtype of the math (0 < beta < 7e-46 in float32, float16 and bfloat16); beta < 0 is an error.

Reductions 'none' | 'mean' (sum / numel; NaN for an empty input) | 'sum'; the gradient is times the upstream gradient
and 1/numel for 'mean'. NaN propagates into loss and gradient.
"""

import functools

from numba import njit

from .._elementwise import typed
from .._args import check_real
from .. import _half
from .._arrays import dtype_of, kind
from . import _common
from . import l1 as _l1


# ---- scalar math (one definition, called by the CUDA kernels and by the CPU loop) ------------------------------------
@functools.lru_cache(maxsize=None)
def _huber_math(dtype):
    (half,) = typed(dtype, 0.5)

    @njit(inline="always")
    def f(x, t, p, delta, half_delta):
        # both sides computed, then selected: no branch, so the CPU loop vectorises (random data mispredicts ~half
        # the branches of an if/else form)
        d = x - t
        z = abs(d)
        small = z < delta
        linear = delta * (z - half_delta)  # l = delta (|d| - delta / 2) where |d| >= delta
        side = delta if d > delta else (-delta if d < -delta else d)  # dl/dx = delta sign(d); d at |d| == delta, NaN
        return (half * d * d if small else linear), (d if small else side)  # l = d^2 / 2, dl/dx = d where |d| < delta

    return f


@functools.lru_cache(maxsize=None)
def _smooth_l1_math(dtype):
    zero, one, half = typed(dtype, 0.0, 1.0, 0.5)

    @njit(inline="always")
    def f(x, t, p, beta, half_beta):
        # branch-free, as huber's
        d = x - t
        z = abs(d)
        small = z < beta
        quad = half * d * d / beta  # l = d^2 / (2 beta) where |d| < beta
        linear = z - half_beta  # l = |d| - beta / 2 elsewhere
        side = one if d > zero else (-one if d < zero else d)  # dl/dx = sign(d); NaN propagates (d == 0 with beta
        return (quad if small else linear), (d / beta if small else side)  # == 0 is routed to l1)

    return f


def _check_delta(delta):
    return check_real("delta", delta, low=0.0, low_open=True)


def _check_beta(beta, input):
    """beta as a float; 0.0 also when it rounds to 0 in the input's dtype (then the loss is exactly l1)."""
    beta = check_real("beta", beta, low=0.0)
    if kind(input) is not None and _half.is_float(dtype_of(input)) \
            and _half.precision(dtype_of(input)).compute.type(beta) == 0:
        return 0.0
    return beta


# ---- public functions ------------------------------------------------------------------------------------------------
def huber_loss(input, target, delta=1.0, reduction="mean", *, out=None, stream=None):
    r"""Huber loss (``torch.nn.functional.huber_loss``).

    .. math:: \ell_i = \begin{cases} \tfrac12 d_i^2 & |d_i| < \delta \\
              \delta\,(|d_i| - \tfrac12\delta) & \text{otherwise} \end{cases}, \quad d_i = x_i - t_i

    Args:
        input: float16/bfloat16/float32/float64 array of any shape (NumPy, or a device array: CuPy, PyTorch CUDA, Numba).
        target: same shape, kind and dtype as ``input``.
        delta: the threshold, a finite number > 0 (else ValueError naming delta).
        reduction: ``"mean"`` (sum / numel; NaN for an empty input, as PyTorch), ``"sum"`` or ``"none"``.
        out: optional preallocated per-element result (reduction ``"none"`` only); may alias ``input``.
        stream: CUDA stream for a device call (default: the current stream of the inputs' library).

    Returns:
        ``"none"``: an array like ``input``; ``"mean"``/``"sum"``: a 0-d array of ``input``'s kind and dtype.

    Example:
        >>> import numpy as np, gpunn
        >>> gpunn.huber_loss(np.array([0.5, 3.0]), np.zeros(2), reduction="none")
        array([0.125, 2.5  ])
    """
    delta = _check_delta(delta)
    return _common.pointwise(_huber_math, "forward", input, target, reduction, out=out, a=delta, b=0.5 * delta, stream=stream)


def huber_loss_backward(input, target, delta=1.0, reduction="mean", grad=None, *, out=None, stream=None):
    r"""Gradient of :func:`huber_loss` with respect to ``input``.

    .. math:: \frac{\partial \ell}{\partial x_i} = g_i\, s \begin{cases} d_i & |d_i| < \delta \\
              \delta \operatorname{sign}(d_i) & \text{otherwise} \end{cases}

    with ``s = 1/numel`` for ``"mean"``, else 1, and ``g`` the upstream gradient ``grad`` (as in
    :func:`mse_loss_backward`).

    Example:
        >>> import numpy as np, gpunn
        >>> gpunn.huber_loss_backward(np.array([0.5, 3.0]), np.zeros(2), reduction="sum")
        array([0.5, 1. ])
    """
    delta = _check_delta(delta)
    return _common.pointwise(_huber_math, "backward", input, target, reduction, grad=grad, out=out,
                             a=delta, b=0.5 * delta, stream=stream)


def huber_loss_with_grad(input, target, delta=1.0, reduction="mean", grad=None, *, stream=None):
    r"""``(huber_loss(...), huber_loss_backward(...))`` from one pass over the data (one kernel writes both).

    Example:
        >>> import numpy as np, gpunn
        >>> loss, dx = gpunn.huber_loss_with_grad(np.array([0.5, 3.0]), np.zeros(2), reduction="sum")
        >>> float(loss), dx
        (2.625, array([0.5, 1. ]))
    """
    delta = _check_delta(delta)
    return _common.pointwise(_huber_math, "with_grad", input, target, reduction, grad=grad, a=delta, b=0.5 * delta, stream=stream)


def smooth_l1_loss(input, target, beta=1.0, reduction="mean", *, out=None, stream=None):
    r"""Smooth L1 loss (``torch.nn.functional.smooth_l1_loss``): ``huber_loss(delta=beta) / beta``.

    .. math:: \ell_i = \begin{cases} \tfrac12 d_i^2 / \beta & |d_i| < \beta \\
              |d_i| - \tfrac12\beta & \text{otherwise} \end{cases}, \quad d_i = x_i - t_i

    Args:
        input: float16/bfloat16/float32/float64 array of any shape (NumPy, or a device array: CuPy, PyTorch CUDA, Numba).
        target: same shape, kind and dtype as ``input``.
        beta: the threshold, a finite number >= 0 (else ValueError naming beta); ``beta = 0`` is exactly
            :func:`l1_loss`.
        reduction: ``"mean"`` (sum / numel; NaN for an empty input, as PyTorch), ``"sum"`` or ``"none"``.
        out: optional preallocated per-element result (reduction ``"none"`` only); may alias ``input``.
        stream: CUDA stream for a device call (default: the current stream of the inputs' library).

    Returns:
        ``"none"``: an array like ``input``; ``"mean"``/``"sum"``: a 0-d array of ``input``'s kind and dtype.

    Example:
        >>> import numpy as np, gpunn
        >>> gpunn.smooth_l1_loss(np.array([0.5, 3.0]), np.zeros(2), beta=2.0, reduction="none")
        array([0.0625, 2.    ])
    """
    beta = _check_beta(beta, input)
    if beta == 0.0:
        return _common.pointwise(_l1._math, "forward", input, target, reduction, out=out, stream=stream)
    return _common.pointwise(_smooth_l1_math, "forward", input, target, reduction, out=out, a=beta, b=0.5 * beta, stream=stream)


def smooth_l1_loss_backward(input, target, beta=1.0, reduction="mean", grad=None, *, out=None, stream=None):
    r"""Gradient of :func:`smooth_l1_loss` with respect to ``input``.

    .. math:: \frac{\partial \ell}{\partial x_i} = g_i\, s \begin{cases} d_i / \beta & |d_i| < \beta \\
              \operatorname{sign}(d_i) & \text{otherwise} \end{cases}

    with ``s = 1/numel`` for ``"mean"``, else 1, and ``g`` the upstream gradient ``grad`` (as in
    :func:`mse_loss_backward`).

    Example:
        >>> import numpy as np, gpunn
        >>> gpunn.smooth_l1_loss_backward(np.array([0.5, 3.0]), np.zeros(2), beta=2.0, reduction="sum")
        array([0.25, 1.  ])
    """
    beta = _check_beta(beta, input)
    if beta == 0.0:
        return _common.pointwise(_l1._math, "backward", input, target, reduction, grad=grad, out=out, stream=stream)
    return _common.pointwise(_smooth_l1_math, "backward", input, target, reduction, grad=grad, out=out,
                             a=beta, b=0.5 * beta, stream=stream)


def smooth_l1_loss_with_grad(input, target, beta=1.0, reduction="mean", grad=None, *, stream=None):
    r"""``(smooth_l1_loss(...), smooth_l1_loss_backward(...))`` from one pass over the data (one kernel writes both).

    Example:
        >>> import numpy as np, gpunn
        >>> loss, dx = gpunn.smooth_l1_loss_with_grad(np.array([0.5, 3.0]), np.zeros(2), beta=2.0, reduction="sum")
        >>> float(loss), dx
        (2.0625, array([0.25, 1.  ]))
    """
    beta = _check_beta(beta, input)
    if beta == 0.0:
        return _common.pointwise(_l1._math, "with_grad", input, target, reduction, grad=grad, stream=stream)
    return _common.pointwise(_smooth_l1_math, "with_grad", input, target, reduction, grad=grad, a=beta, b=0.5 * beta, stream=stream)


_common.register_pointwise("huber_loss", _huber_math)
_common.register_pointwise("smooth_l1_loss", _smooth_l1_math)
