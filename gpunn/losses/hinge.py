r"""Binary hinge loss (the SVM loss).

Targets are labels in {-1, +1}; any other value (0, 0.5, NaN, ...) is an input error (ValueError naming target).
On the device the labels are checked by a kernel that raises a flag in a small device array; the flag is read back and
the error raised BEFORE the loss kernel runs, so no output buffer (nor an ``out`` aliasing the input) is touched.
That read is one small device-to-host copy per call: the only synchronising step of this loss.

Forward:  l = max(0, margin - t x)
Gradient: dl/dx = -t if margin - t x > 0 else 0   (0 at the kink, as the ReLU convention)

Reductions 'none' | 'mean' (sum / numel; NaN for an empty input) | 'sum'; the gradient is times the upstream gradient
and 1/numel for 'mean'.
"""

import functools

import numpy as np
from numba import cuda, int32, int64, njit

from .. import _registry
from .._elementwise import typed
from .._runtime import check_real, launch_config
from . import _common


# ---- scalar math (one definition, called by the CUDA kernels and by the CPU loop) ------------------------------------
@functools.lru_cache(maxsize=None)
def _math(dtype):
    (zero,) = typed(dtype, 0.0)

    @njit(inline="always")
    def f(x, t, p, margin, b):
        z = margin - t * x
        if z > zero:
            return z, -t  # l = margin - t x, dl/dx = -t
        if z <= zero:
            return zero, zero
        return z, z  # NaN propagates

    return f


# ---- CUDA kernels ----------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def _check_kernel(dtype):
    (one,) = typed(dtype, 1.0)

    @cuda.jit
    def _hinge_check_target_kernel(t, flag):
        # flag[0] = 1 if any t[i] is not exactly -1 or +1 (an int store of the same value: no race on the result)
        for i in range(int64(cuda.grid(1)), t.size, int64(cuda.gridsize(1))):
            ti = t[i]
            if not (ti == one or ti == -one):
                flag[0] = int32(1)

    return _hinge_check_target_kernel


def _check_target(args, ops):
    bad = "target must hold only -1 and +1 labels for the binary hinge loss"
    if not args.device:
        t = ops.t
        ok = np.logical_or(t == 1, t == -1)
        if not ok.all():
            raise ValueError(f"{bad}; found {t[~ok][0]!r}")
        return
    if ops.n == 0:
        return
    flag = cuda.to_device(np.zeros(1, np.int32))
    _check_kernel(args.dtype)[launch_config(ops.n)](ops.t, flag)
    if flag.copy_to_host()[0]:
        raise ValueError(f"{bad} (checked on the device; no output was written)")


def _check_margin(margin):
    return check_real("margin", margin)


# ---- public functions ------------------------------------------------------------------------------------------------
def hinge_loss(input, target, margin=1.0, reduction="mean", *, out=None):
    r"""Binary hinge loss.

    .. math:: \ell_i = \max(0,\ m - t_i x_i), \quad t_i \in \{-1, +1\}

    Args:
        input: scores, float32 or float64 array of any shape (NumPy, or a device array: CuPy, PyTorch CUDA, Numba).
        target: labels, exactly -1 or +1, same shape, kind and dtype as ``input`` (else ValueError naming target).
        margin: a finite number (default 1).
        reduction: ``"mean"`` (sum / numel; NaN for an empty input, as PyTorch), ``"sum"`` or ``"none"``.
        out: optional preallocated per-element result (reduction ``"none"`` only); may alias ``input``.

    Returns:
        ``"none"``: an array like ``input``; ``"mean"``/``"sum"``: a 0-d array of ``input``'s kind and dtype.

    Example:
        >>> import numpy as np, gpunn
        >>> gpunn.hinge_loss(np.array([2.0, 0.5, 0.5]), np.array([1.0, 1.0, -1.0]), reduction="none")
        array([0. , 0.5, 1.5])
    """
    margin = _check_margin(margin)
    return _common.pointwise(_math, "forward", input, target, reduction, out=out, a=margin,
                             extra_check=_check_target)


def hinge_loss_backward(input, target, margin=1.0, reduction="mean", grad=None, *, out=None):
    r"""Gradient of :func:`hinge_loss` with respect to ``input``.

    .. math:: \frac{\partial \ell}{\partial x_i} = g_i\, s \cdot (-t_i)\, [m - t_i x_i > 0]

    with ``s = 1/numel`` for ``"mean"``, else 1, and ``g`` the upstream gradient ``grad`` (as in
    :func:`mse_loss_backward`).

    Example:
        >>> import numpy as np, gpunn
        >>> gpunn.hinge_loss_backward(np.array([2.0, 0.5, 0.5]), np.array([1.0, 1.0, -1.0]), reduction="sum")
        array([ 0., -1.,  1.])
    """
    margin = _check_margin(margin)
    return _common.pointwise(_math, "backward", input, target, reduction, grad=grad, out=out, a=margin,
                             extra_check=_check_target)


def hinge_loss_with_grad(input, target, margin=1.0, reduction="mean", grad=None):
    r"""``(hinge_loss(...), hinge_loss_backward(...))`` from one pass over the data (one kernel writes both; the
    label check on the device is one more small kernel before it).

    Example:
        >>> import numpy as np, gpunn
        >>> loss, dx = gpunn.hinge_loss_with_grad(np.array([2.0, 0.5]), np.array([1.0, -1.0]), reduction="sum")
        >>> float(loss), dx
        (1.5, array([0., 1.]))
    """
    margin = _check_margin(margin)
    return _common.pointwise(_math, "with_grad", input, target, reduction, grad=grad, a=margin,
                             extra_check=_check_target)


_common.register_pointwise("hinge_loss", _math)
_registry.for_dtypes("hinge_check_target", _check_kernel, lambda dt: f"void({dt}[::1], int32[::1])")
