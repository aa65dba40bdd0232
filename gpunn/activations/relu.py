r"""ReLU.

Forward:  y = max(x, 0)
Backward: dx = dy * (x > 0)            (saved: x; the gradient at x = 0 is 0, and at x = NaN it is dy, as in PyTorch)

NaN propagates: relu(NaN) = NaN, as ``torch.relu`` gives.

CPU backward: the same select, written on the bits (dx = dy & mask) so that LLVM does not turn it into a masked load
of ``dy`` (what ``zero if x <= 0 else dy`` compiles to, measured 8-10% slower than a plain two-input loop at 2^24
float32, 1 thread). Bit for bit the select's result (NaN payloads, signed zeros, infinities kept).
"""

import functools

import numpy as np
from numba import njit, prange, types
from numba.extending import intrinsic

from .. import _cache, _cpu, _elementwise
from .._elementwise import typed


# ---- scalar math (one definition, called by the CUDA kernel and by the CPU loop) -------------------------------------
@functools.lru_cache(maxsize=None)
def _forward_math(dtype):
    (zero,) = typed(dtype, 0.0)

    @njit(inline="always")
    def f(x, a, b):
        return zero if x <= zero else x  # NaN fails both tests and stays NaN

    return f


@functools.lru_cache(maxsize=None)
def _backward_math(dtype):
    (zero,) = typed(dtype, 0.0)

    @njit(inline="always")
    def f(dy, x, a, b):
        return zero if x <= zero else dy  # dx = dy * (x > 0); x = NaN gives dy, as PyTorch's mask (x <= 0)

    return f


# ---- CPU path --------------------------------------------------------------------------------------------------------
@intrinsic
def _bits(typingctx, v):
    """The bit pattern of a float32 (float64) as an int32 (int64). CPU loops only."""
    if v not in (types.float32, types.float64):
        return None
    ity = types.int32 if v == types.float32 else types.int64

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(ity))

    return ity(v), codegen


@functools.lru_cache(maxsize=None)
def _cpu_backward(dtype):
    """The CPU loops (``_cpu.Loops``) ``out = dy if not x <= 0 else +0`` on flat arrays, as integer ``dy & mask``.

    ``keep`` is 1.0 or 0.0; its bits shifted right by (width - 3) give 1 or 0 (1.0 is 0x3F800000 in float32,
    0x3FF0... in float64), negated: all ones or zero. Going through the float keeps LLVM from seeing a compare-select
    (it rewrites sext(compare) & dy, and every integer form of it, back into the masked load this loop avoids)."""
    dtype = np.dtype(dtype)
    ity = np.int32 if dtype == np.float32 else np.int64
    (zero,) = typed(dtype, 0.0)
    shift = ity(dtype.itemsize * 8 - 3)

    def loop(di, x, oi):
        for i in prange(x.size):
            keep = dtype.type(not (x[i] <= zero))  # dx = dy * (x > 0); x = NaN keeps dy, as PyTorch's mask (x <= 0)
            oi[i] = di[i] & -(_bits(keep) >> shift)

    def on_views(inner):
        # the integer views are taken here, outside the loop (a .view inside a prange function gave wrong results)
        @_cache.njit
        def run(dy, x, a, b, out):
            inner(dy.view(ity), x, out.view(ity))

        return run

    parallel, serial = _cpu.loops(loop)
    return _cpu.Loops(on_views(parallel), on_views(serial))


# ---- public functions ------------------------------------------------------------------------------------------------
def relu(x, *, out=None, stream=None):
    r"""Rectified linear unit.

    .. math:: y = \max(x, 0)

    Args:
        x: float16/bfloat16/float32/float64 array of any shape (NumPy, or a device array: CuPy, PyTorch CUDA, Numba).
        out: optional preallocated result of ``x``'s shape and dtype; may be ``x`` itself (in place).
        stream: CUDA stream for a device call (default: the current stream of the inputs' library).

    Returns:
        ``y``, an array of the same kind, shape and dtype as ``x``.

    Example:
        >>> import numpy as np, gpunn
        >>> gpunn.relu(np.array([-1.0, 0.0, 2.0], np.float32))
        array([0., 0., 2.], dtype=float32)
    """
    return _elementwise.forward(_forward_math, x, out, stream=stream)


def relu_backward(dy, x, *, out=None, stream=None):
    r"""Gradient of :func:`relu`.

    .. math:: dx = dy \cdot [x > 0]

    Args:
        dy: upstream gradient, same shape and dtype as ``x``.
        x: the forward input.
        out: optional preallocated ``dx``; may be ``dy`` or ``x``.
        stream: CUDA stream for a device call (default: the current stream of the inputs' library).

    Returns:
        ``dx``, same kind, shape and dtype as ``x``.

    Example:
        >>> import numpy as np, gpunn
        >>> gpunn.relu_backward(np.ones(3, np.float32), np.array([-1.0, 0.0, 2.0], np.float32))
        array([0., 0., 1.], dtype=float32)
    """
    return _elementwise.backward(_backward_math, dy, x, out, cpu_loops=_cpu_backward, stream=stream)


_elementwise.register("relu", _forward_math, _backward_math)
