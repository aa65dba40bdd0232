"""Copy a non-contiguous Numba device array into a C-contiguous one, on the device.

CuPy and PyTorch make their own contiguous copies; Numba device arrays have no strided copy, so gpunn gathers them
with these kernels (one per rank: Numba indexes an array with a tuple of the array's rank).
"""

import functools

from numba import cuda, int64

from ._runtime import launch_config

MAX_NDIM = 4


@functools.lru_cache(maxsize=None)
def _gather_kernel(ndim):
    if ndim == 1:
        @cuda.jit
        def kernel(x, out):
            n = out.size
            for i in range(int64(cuda.grid(1)), n, int64(cuda.gridsize(1))):
                out[i] = x[i]
    elif ndim == 2:
        @cuda.jit
        def kernel(x, out):
            n1 = x.shape[1]
            for i in range(int64(cuda.grid(1)), out.size, int64(cuda.gridsize(1))):
                out[i] = x[i // n1, i % n1]
    elif ndim == 3:
        @cuda.jit
        def kernel(x, out):
            n1, n2 = x.shape[1], x.shape[2]
            for i in range(int64(cuda.grid(1)), out.size, int64(cuda.gridsize(1))):
                r = i // n2
                out[i] = x[r // n1, r % n1, i % n2]
    else:
        @cuda.jit
        def kernel(x, out):
            n1, n2, n3 = x.shape[1], x.shape[2], x.shape[3]
            for i in range(int64(cuda.grid(1)), out.size, int64(cuda.gridsize(1))):
                r = i // n3
                q = r // n2
                out[i] = x[q // n1, q % n1, r % n2, i % n3]
    return kernel


def gather(x, out):
    """out (C-contiguous, same shape) <- x (any strides). Both Numba device arrays."""
    if x.ndim > MAX_NDIM:
        raise ValueError(f"non-contiguous device arrays of more than {MAX_NDIM} dimensions are not supported; "
                         "pass a contiguous array")
    if out.size == 0:
        return
    blocks, threads = launch_config(out.size)
    _gather_kernel(max(1, x.ndim))[blocks, threads](x if x.ndim else x.reshape(1), out.reshape(-1))
