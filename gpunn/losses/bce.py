r"""Binary cross-entropy with logits (PyTorch's ``binary_cross_entropy_with_logits``).

With x the logit, t the target (a probability; not checked, as PyTorch), w the optional ``weight`` and pw the
optional ``pos_weight`` (both broadcast against x):

Forward:  l = w [ (1 - t) x - (1 + (pw - 1) t) logsigmoid(x) ],   logsigmoid(x) = min(x, 0) - log1p(exp(-|x|))
Gradient: dl/dx = w [ (pw t + 1 - t) sigmoid(x) - pw t ]

Both forms are stable: exp only ever sees -|x|, so logits of +-100 (or +-1e30) give finite, correct losses and
gradients, in float32 too. Reductions 'none' | 'mean' (sum / numel, whatever the weights; NaN for an empty input) |
'sum'; the gradient is times the upstream gradient and 1/numel for 'mean'.

Broadcasting: ``weight`` and ``pos_weight`` may have any shape whose non-1 axes are one contiguous run of the input's
axes (the full shape, a scalar, (C,) for the last axis as PyTorch's pos_weight is documented, (N, 1), ...). Other
broadcastable shapes are rejected with a ValueError naming the argument (expand them to the input's shape first).
"""

import functools

from numba import njit

from .._elementwise import typed
from ..activations import _vecmath
from . import _common


# ---- scalar math (one definition, called by the CUDA kernels and by the CPU loop) ------------------------------------
@functools.lru_cache(maxsize=None)
def _math(dtype):
    zero, one = typed(dtype, 0.0, 1.0)
    vm = _vecmath.for_dtype(dtype)  # float32: exp and log1p as polynomials that vectorise; float64: math's
    exp_neg, log1p_unit = vm.exp_neg, vm.log1p_unit

    @njit(inline="always")
    def f(x, t, pw, a, b):
        # Written so that no term cancels another: with e = exp(-|x|) in (0, 1] and sp = log1p(e) = -logsigmoid(|x|),
        #   x >= 0:  l = (1 - t) x + c sp           (logsigmoid(x) = -sp)
        #   x <  0:  l = -pw t x + c sp             (logsigmoid(x) = x - sp; (1 - t - c) x = -pw t x)
        # with c = 1 + (pw - 1) t; both terms are >= 0 for t in [0, 1], pw >= 0.
        # The gradient (pw t + 1 - t) sigmoid(x) - pw t, rewritten (1 - t) sigmoid(x) - pw t sigmoid(-x), with
        # sigmoid(|x|) = 1 / (1 + e) and sigmoid(-|x|) = e / (1 + e). NaN x takes the second side and propagates.
        # Both sides are computed and one selected (no branch: the CPU loop vectorises).
        e = exp_neg(-abs(x))
        sp = log1p_unit(e)
        c = one + (pw - one) * t
        big = one / (one + e)  # sigmoid(|x|)
        small = e / (one + e)  # sigmoid(-|x|)
        pos = x >= zero
        loss = ((one - t) * x if pos else -(pw * t) * x) + c * sp
        grad = (one - t) * big - pw * t * small if pos else (one - t) * small - pw * t * big
        return loss, grad

    return f


# ---- public functions ------------------------------------------------------------------------------------------------
def binary_cross_entropy_with_logits(input, target, weight=None, pos_weight=None, reduction="mean", *, out=None, stream=None):
    r"""Binary cross-entropy on logits (``torch.nn.functional.binary_cross_entropy_with_logits``).

    .. math:: \ell_i = w_i \left[(1 - t_i)\, x_i - \bigl(1 + (p_i - 1)\, t_i\bigr) \log\sigma(x_i)\right]

    Args:
        input: logits, float16/bfloat16/float32/float64 array of any shape (NumPy, or a device array: CuPy, PyTorch CUDA, Numba).
        target: probabilities in [0, 1], same shape, kind and dtype as ``input``.
        weight: optional rescaling weight broadcast against ``input`` (see the module docstring for the shapes).
        pos_weight: optional weight of the positive term, broadcast against ``input``; typically shape (C,) for the
            last axis (one weight per class).
        reduction: ``"mean"`` (sum / numel; NaN for an empty input, as PyTorch), ``"sum"`` or ``"none"``.
        out: optional preallocated per-element result (reduction ``"none"`` only); may alias ``input``.
        stream: CUDA stream for a device call (default: the current stream of the inputs' library).

    Returns:
        ``"none"``: an array like ``input``; ``"mean"``/``"sum"``: a 0-d array of ``input``'s kind and dtype.

    Example:
        >>> import numpy as np, gpunn
        >>> gpunn.binary_cross_entropy_with_logits(np.array([0.0, 100.0]), np.array([1.0, 0.0]), reduction="none")
        array([  0.69314718, 100.        ])
    """
    return _common.pointwise(_math, "forward", input, target, reduction, out=out, weight=weight, pos_weight=pos_weight, stream=stream)


def binary_cross_entropy_with_logits_backward(input, target, weight=None, pos_weight=None, reduction="mean",
                                              grad=None, *, out=None, stream=None):
    r"""Gradient of :func:`binary_cross_entropy_with_logits` with respect to ``input`` (the logits).

    .. math:: \frac{\partial \ell}{\partial x_i}
              = g_i\, s\, w_i \left[(p_i t_i + 1 - t_i)\, \sigma(x_i) - p_i t_i\right]

    with ``s = 1/numel`` for ``"mean"``, else 1, and ``g`` the upstream gradient ``grad`` (as in
    :func:`mse_loss_backward`).

    Example:
        >>> import numpy as np, gpunn
        >>> x, t = np.array([0.0, 100.0]), np.array([1.0, 0.0])
        >>> gpunn.binary_cross_entropy_with_logits_backward(x, t, reduction="sum")
        array([-0.5,  1. ])
    """
    return _common.pointwise(_math, "backward", input, target, reduction, grad=grad, out=out, weight=weight,
                             pos_weight=pos_weight, stream=stream)


def binary_cross_entropy_with_logits_with_grad(input, target, weight=None, pos_weight=None, reduction="mean",
                                               grad=None, *, stream=None):
    r"""``(binary_cross_entropy_with_logits(...), ..._backward(...))`` from one pass over the data (one kernel).

    Example:
        >>> import numpy as np, gpunn
        >>> loss, dx = gpunn.binary_cross_entropy_with_logits_with_grad(np.zeros(2), np.ones(2), reduction="sum")
        >>> round(float(loss), 6), dx
        (1.386294, array([-0.5, -0.5]))
    """
    return _common.pointwise(_math, "with_grad", input, target, reduction, grad=grad, weight=weight,
                             pos_weight=pos_weight, stream=stream)


_common.register_pointwise("bce_with_logits", _math)
