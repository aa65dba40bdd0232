"""Device copies gpunn makes itself: a strided array gathered into a C-contiguous one, and a fill.

CuPy and PyTorch make their own contiguous copies; Numba device arrays have no strided copy, so gpunn gathers them
with these kernels (one per rank: Numba indexes an array with a tuple of the array's rank). Both launch on the call's
stream, like every other kernel (a driver memcpy or memset would need its own stream plumbing).
"""

import functools

import numpy as np
from numba import cuda, int64

from . import _registry
from ._launch import Kernel

MAX_NDIM = 4


@functools.lru_cache(maxsize=None)
def _gather_dispatcher(ndim):
    if ndim == 1:
        @cuda.jit
        def _gather1_kernel(x, out):
            n = out.size
            for i in range(int64(cuda.grid(1)), n, int64(cuda.gridsize(1))):
                out[i] = x[i]
        return _gather1_kernel
    if ndim == 2:
        @cuda.jit
        def _gather2_kernel(x, out):
            n1 = x.shape[1]
            for i in range(int64(cuda.grid(1)), out.size, int64(cuda.gridsize(1))):
                out[i] = x[i // n1, i % n1]
        return _gather2_kernel
    if ndim == 3:
        @cuda.jit
        def _gather3_kernel(x, out):
            n1, n2 = x.shape[1], x.shape[2]
            for i in range(int64(cuda.grid(1)), out.size, int64(cuda.gridsize(1))):
                r = i // n2
                out[i] = x[r // n1, r % n1, i % n2]
        return _gather3_kernel

    @cuda.jit
    def _gather4_kernel(x, out):
        n1, n2, n3 = x.shape[1], x.shape[2], x.shape[3]
        for i in range(int64(cuda.grid(1)), out.size, int64(cuda.gridsize(1))):
            r = i // n3
            q = r // n2
            out[i] = x[q // n1, q % n1, r % n2, i % n3]
    return _gather4_kernel


def _signature(ndim, dtype):
    return f"void({dtype}[{', '.join([':'] * ndim)}], {dtype}[::1])"


@functools.lru_cache(maxsize=None)
def _gather(ndim, dtype):
    return Kernel(_gather_dispatcher(ndim), _signature(ndim, dtype), f"gather{ndim}d")


def gather(x, out, stream):
    """out (C-contiguous, same shape) <- x (any strides): DeviceArray descriptors, launched on ``stream``."""
    if x.ndim > MAX_NDIM:
        raise ValueError(f"non-contiguous device arrays of more than {MAX_NDIM} dimensions are not supported; "
                         "pass a contiguous array")
    if out.size == 0:
        return
    if x.ndim == 0:
        x = x.reshape(1)
    x, out = x.storage(), out.storage()  # halves move as their uint16 bits
    kernel = _gather(x.ndim, x.dtype.name)
    kernel.over(out.size, stream, x, out.flat())


@functools.lru_cache(maxsize=None)
def _cast(src, dst):
    return Kernel(_gather_dispatcher(1), f"void({src}[::1], {dst}[::1])", "cast")


def cast(x, out, stream):
    """out <- x converted to out's dtype (both C-contiguous, the same size; DeviceArrays), on ``stream``."""
    if out.size:
        _cast(x.dtype.name, out.dtype.name).over(out.size, stream, x.flat(), out.flat())


@functools.lru_cache(maxsize=None)
def _fill_dispatcher():
    @cuda.jit
    def _fill_kernel(out, value):
        for i in range(int64(cuda.grid(1)), out.size, int64(cuda.gridsize(1))):
            out[i] = value
    return _fill_kernel


@functools.lru_cache(maxsize=None)
def _fill(dtype):
    return Kernel(_fill_dispatcher(), f"void({dtype}[::1], {dtype})", "fill")


def fill(out, value, stream):
    """out[...] = value for a C-contiguous DeviceArray ``out``, on ``stream``."""
    if out.size:
        bits = np.array(value, out.dtype).reshape(1).view(out.storage().dtype)[0]  # a half's uint16 bits
        out = out.storage()
        kernel = _fill(out.dtype.name)
        kernel.over(out.size, stream, out.flat(), bits)


def _register():
    for ndim in range(1, MAX_NDIM + 1):
        _registry.for_dtypes(f"gather{ndim}d", lambda dt, ndim=ndim: _gather_dispatcher(ndim),
                             lambda dt, ndim=ndim: _signature(ndim, dt))
    for src, dst in (("float32", "float64"), ("float64", "float32")):
        _registry.register(f"cast[{src}->{dst}]", lambda: _gather_dispatcher(1), f"void({src}[::1], {dst}[::1])",
                           "float32", f64_accumulator=True)  # a conversion: the one f64 operation is the point
    _registry.for_dtypes("fill", lambda dt: _fill_dispatcher(), lambda dt: f"void({dt}[::1], {dt})")
    for ndim in range(1, MAX_NDIM + 1):  # the uint16 storage of float16/bfloat16
        _registry.register(f"gather{ndim}d[uint16]", lambda ndim=ndim: _gather_dispatcher(ndim),
                           _signature(ndim, "uint16"), "float16")
    _registry.register("fill[uint16]", _fill_dispatcher, "void(uint16[::1], uint16)", "float16")


_register()
