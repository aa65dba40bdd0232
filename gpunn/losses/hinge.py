r"""Binary hinge loss (the SVM loss).

Targets are labels in {-1, +1}; any other value (0, 0.5, NaN, ...) is an input error (ValueError naming target),
and its element's loss and gradient are NaN. On the CPU the labels are checked before anything is computed. On the
device a small kernel checks them on the call's stream and records the first bad index for gpunn.synchronize()
(gpunn/_errors.py: no host synchronisation); with ``validate=True`` the call waits for that check and raises before
the loss kernel runs, so no output is written.

Forward:  l = max(0, margin - t x)
Gradient: dl/dx = -t if margin - t x > 0 else 0   (0 at the kink, as the ReLU convention)

Reductions 'none' | 'mean' (sum / numel; NaN for an empty input) | 'sum'; the gradient is times the upstream gradient
and 1/numel for 'mean'.
"""

import functools

import numpy as np
from numba import cuda, int64, njit

from .. import _errors, _half, _registry
from .._args import check_real
from .._arrays import host_view, numba_array
from .._elementwise import typed
from .._launch import Kernel, current_device_id
from .._runtime import simulator
from . import _common


# ---- scalar math (one definition, called by the CUDA kernels and by the CPU loop) ------------------------------------
@functools.lru_cache(maxsize=None)
def _math(dtype):
    zero, one, nan = typed(dtype, 0.0, 1.0, np.nan)

    @njit(inline="always")
    def f(x, t, p, margin, b):
        if not (t == one or t == -one):
            return nan, nan  # not a label: NaN (an error, reported by the label check)
        z = margin - t * x
        if z > zero:
            return z, -t  # l = margin - t x, dl/dx = -t
        if z <= zero:
            return zero, zero
        return z, z  # NaN propagates

    return f


# ---- CUDA kernels ----------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def _check_dispatcher(dtype):
    prec = _half.precision(dtype)
    ld = _half.kernel_load(prec)
    (one,) = typed(prec.compute, 1.0)

    @cuda.jit
    def _hinge_check_target_kernel(t, flags, slot):
        # flags[slot] = the first index whose label is not exactly -1 or +1
        for i in range(int64(cuda.grid(1)), t.size, int64(cuda.gridsize(1))):
            ti = ld(t[i])
            if not (ti == one or ti == -one):
                cuda.atomic.min(flags, slot, i)

    return _hinge_check_target_kernel


_CHECK_SIG = "void({a}[::1], int64[::1], int64)"


def _check_signature(dtype):
    return _CHECK_SIG.format(**_half.signature_names(dtype))


@functools.lru_cache(maxsize=None)
def _check_kernel(dtype):
    return Kernel(_check_dispatcher(dtype), _check_signature(dtype), "hinge_check_target")


_BAD = "target must hold only -1 and +1 labels for the binary hinge loss"


def _check_target(args, ops, validate=False):
    if not args.device:
        t = host_view(args.array("target"))  # the values, not a half's storage bits
        ok = np.logical_or(t == 1, t == -1)
        if not ok.all():
            raise ValueError(f"{_BAD}; found {t[~ok][0]!r}")
        return
    if ops.n == 0:
        return
    t = ops.t

    def describe(i):
        bits = numba_array(t)[i:i + 1].copy_to_host()
        return f"{_BAD}; found target.flat[{i}] = {bits.view(args.dtype)[0]!r}"

    flags, slot = _errors.slot(0 if simulator() else current_device_id(), args.stream, describe)
    kernel = _check_kernel(args.dtype)
    kernel.over(ops.n, args.stream, t, flags, np.int64(slot))
    if validate:
        _errors.check()


def _check_margin(margin):
    return check_real("margin", margin)


# ---- public functions ------------------------------------------------------------------------------------------------
def hinge_loss(input, target, margin=1.0, reduction="mean", *, out=None, stream=None, validate=False):
    r"""Binary hinge loss.

    .. math:: \ell_i = \max(0,\ m - t_i x_i), \quad t_i \in \{-1, +1\}

    Args:
        input: scores, float16/bfloat16/float32/float64 array of any shape (NumPy, or a device array: CuPy, PyTorch CUDA, Numba).
        target: labels, exactly -1 or +1, same shape, kind and dtype as ``input`` (else ValueError naming target).
        margin: a finite number (default 1).
        reduction: ``"mean"`` (sum / numel; NaN for an empty input, as PyTorch), ``"sum"`` or ``"none"``.
        out: optional preallocated per-element result (reduction ``"none"`` only); may alias ``input``.
        stream: CUDA stream for a device call (default: the current stream of the inputs' library).
        validate: device calls only: wait for the label check and raise at once (default: the error is raised by
            ``gpunn.synchronize()``; the bad elements' loss and gradient are NaN).

    Returns:
        ``"none"``: an array like ``input``; ``"mean"``/``"sum"``: a 0-d array of ``input``'s kind and dtype.

    Example:
        >>> import numpy as np, gpunn
        >>> gpunn.hinge_loss(np.array([2.0, 0.5, 0.5]), np.array([1.0, 1.0, -1.0]), reduction="none")
        array([0. , 0.5, 1.5])
    """
    margin = _check_margin(margin)
    return _common.pointwise(_math, "forward", input, target, reduction, out=out, a=margin,
                             extra_check=functools.partial(_check_target, validate=validate),
                             stream=stream)


def hinge_loss_backward(input, target, margin=1.0, reduction="mean", grad=None, *, out=None, stream=None, validate=False):
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
                             extra_check=functools.partial(_check_target, validate=validate),
                             stream=stream)


def hinge_loss_with_grad(input, target, margin=1.0, reduction="mean", grad=None, *, stream=None, validate=False):
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
                             extra_check=functools.partial(_check_target, validate=validate),
                             stream=stream)


_common.register_pointwise("hinge_loss", _math)
_registry.for_dtypes("hinge_check_target", _check_dispatcher, _check_signature, dtypes=_registry.WITH_HALF)
