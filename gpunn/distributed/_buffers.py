"""The user's flat arrays as MPI buffers: host arrays directly, device arrays staged through host memory.

MPI here is host MPI (the MPICH wheel is not CUDA-aware), so a device array is copied to the host, exchanged, and
copied back. The copies are the array library's own, on its current stream (CuPy: ``get``/``set``; PyTorch:
``cpu``/``copy_``; Numba: ``copy_to_host``/``copy_to_device``), and they wait for the work queued before them on
that stream, so a gradient written by kernels on the caller's stream is complete before it is sent.
"""

from __future__ import annotations

import numpy as np

from .._arrays import FLOAT_DTYPES, HOST_KINDS, dtype_of, empty_like, host_view, kind
from .._arrays import is_c_contiguous as _is_c_contiguous


class Flat:
    """A C-contiguous float32/float64 array seen as 1-D, with host reads and writes for MPI."""

    def __init__(self, x, name):
        k = kind(x)
        if k is None:
            raise TypeError(f"{name} must be an array (NumPy, PyTorch, CuPy or Numba device array), "
                            f"got {type(x).__name__}")
        if k == "cuda_array":
            raise TypeError(f"{name}: a bare __cuda_array_interface__ object is not supported; pass a CuPy array, "
                            f"a PyTorch tensor or a Numba device array")
        if dtype_of(x) not in FLOAT_DTYPES:
            raise TypeError(f"{name} must be float32 or float64, got {dtype_of(x)}")
        if not _is_c_contiguous(x):
            raise ValueError(f"{name} must be C-contiguous (it is exchanged and updated in place)")
        if k in HOST_KINDS and not host_view(x).flags.writeable:
            raise ValueError(f"{name} is read-only")
        self.array = x
        self.name = name
        self.kind = k
        self.device = k not in HOST_KINDS
        self.dtype = np.dtype(dtype_of(x))
        self.size = int(np.prod(tuple(x.shape), dtype=np.int64))
        self.flat = x.reshape(-1) if k != "torch_cpu" and k != "torch_cuda" else x.detach().view(-1)
        self.host = host_view(self.flat) if not self.device else None

    def describe(self):
        """What every rank must agree on: (size, dtype, host or device)."""
        return (self.size, self.dtype.name, "device" if self.device else "host")

    def read(self, lo=0, hi=None):
        """Elements [lo, hi) as a host array: a view of a host array, a copy of a device array."""
        hi = self.size if hi is None else hi
        if not self.device:
            return self.host[lo:hi]
        if hi <= lo:
            return np.empty(0, self.dtype)
        piece = self.flat[lo:hi]
        if self.kind == "cupy":
            return piece.get()
        if self.kind == "torch_cuda":
            return piece.cpu().numpy()
        return piece.copy_to_host()

    def write(self, values, lo=0):
        """Elements [lo, lo + len(values)) = values (host); nothing to do when values is already that view."""
        hi = lo + values.size
        if not self.device:
            if not np.shares_memory(values, self.host[lo:hi]):
                self.host[lo:hi] = values
            return
        copy_to_device(self.flat[lo:hi], values)

    def empty(self, n):
        """A new 1-D array of ``n`` elements of the same kind, dtype and device."""
        return empty_like(self.flat, (n,), self.dtype)


def copy_to_device(dst, values):
    """Host ``values`` into the device array ``dst`` (same size), by its library's copy on its current stream."""
    k = kind(dst)
    if values.size == 0:
        return
    if k == "cupy":
        dst.set(values)
    elif k == "torch_cuda":
        import torch

        dst.copy_(torch.from_numpy(values))
    else:
        dst.copy_to_device(values)
