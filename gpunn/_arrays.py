"""Array kinds, views and movement: what an argument is, where its memory lies, and new arrays of its kind.

Host arrays (NumPy, PyTorch CPU tensors) are used as NumPy views. A device array (Numba, CuPy, PyTorch CUDA, any
``__cuda_array_interface__`` object, or a simulator array) is read once per call into a :class:`DeviceArray`: its
address, shape, strides and dtype, plus the array itself (which keeps the memory alive). Kernels are launched on
these descriptors (gpunn/_launch.py), so taking a device array creates no Numba object and never synchronises a
stream (``numba.cuda.as_cuda_array`` does both). Under the simulator the descriptor also holds a NumPy view of the
simulated memory, which is what the simulated kernel receives.

Results are allocated by the library the inputs came from (``torch.empty``, ``cupy.empty``, Numba), so that their
memory shows in the user's own accounting and follows its allocator's stream rules.
"""

from __future__ import annotations

import sys
import numpy as np

from . import _half
from ._runtime import require_device, simulator

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
HOST_KINDS = ("numpy", "torch_cpu")


# ---- kinds -----------------------------------------------------------------------------------------------------------
_KIND_OF_TYPE = {np.ndarray: "numpy"}  # array type -> kind, filled as types are met ("torch": CPU or CUDA per tensor)


def _kind_of_type(x) -> str | None:
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(x, torch.Tensor):
        return "torch"
    cupy = sys.modules.get("cupy")
    if cupy is not None and isinstance(x, cupy.ndarray):
        return "cupy"
    if "numba" in sys.modules:
        if simulator():
            from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray as numba_type
        else:
            from numba.cuda.cudadrv.devicearray import DeviceNDArray as numba_type
        if isinstance(x, numba_type):
            return "numba"
    if isinstance(x, np.ndarray):
        return "numpy"
    if hasattr(x, "__cuda_array_interface__"):
        return "cuda_array"
    return None


def kind(x) -> str | None:
    """The kind of array ``x`` is: numpy, torch_cpu, torch_cuda, cupy, numba, cuda_array; None if not an array."""
    t = type(x)
    k = _KIND_OF_TYPE.get(t)
    if k is None:
        k = _kind_of_type(x)
        if k is None:
            return None
        if k != "cuda_array":  # an object may grow the interface later; classes of the others do not change kind
            _KIND_OF_TYPE[t] = k
    if k == "torch":
        return "torch_cuda" if x.is_cuda else "torch_cpu"
    return k


def is_device_array(x) -> bool:
    k = kind(x)
    return k is not None and k not in HOST_KINDS


_TORCH_DTYPES = {}


def dtype_of(x) -> np.dtype:
    """The NumPy dtype of any array kind (PyTorch's bfloat16 as ``ml_dtypes.bfloat16``)."""
    dt = x.dtype
    if isinstance(dt, np.dtype):
        return dt
    if "torch" in str(type(dt)):
        if dt not in _TORCH_DTYPES:
            _TORCH_DTYPES[dt] = _half.torch_to_numpy(dt)
        return _TORCH_DTYPES[dt]
    return np.dtype(dt)


def shape_of(x) -> tuple:
    return tuple(int(s) for s in x.shape)


# ---- host views ------------------------------------------------------------------------------------------------------
def host_view(x) -> np.ndarray:
    """A NumPy view of a host array (PyTorch CPU tensors without a copy; bfloat16 ones as ml_dtypes' bfloat16)."""
    if kind(x) == "torch_cpu":
        x = x.detach()
        if x.dtype == sys.modules["torch"].bfloat16:
            return x.view(sys.modules["torch"].int16).numpy().view(_half.bfloat16())
        return x.numpy()
    return x


def is_read_only(x) -> bool:
    """True for a host array that is not writeable, or a device array whose interface says read-only."""
    k = kind(x)
    if k in HOST_KINDS:
        return not host_view(x).flags.writeable
    if k == "cuda_array":
        return bool(x.__cuda_array_interface__["data"][1])
    return False


# ---- device arrays as kernels take them --------------------------------------------------------------------------------
class DeviceArray:
    """A device array for a kernel: its memory and layout. ``owner`` keeps the memory alive; ``sim`` is the NumPy view
    of simulated memory (simulator only, else None)."""

    __slots__ = ("ptr", "shape", "strides", "dtype", "owner", "sim", "size", "contiguous")

    def __init__(self, ptr, shape, strides, dtype, owner, sim=None):
        self.ptr, self.shape, self.strides, self.dtype, self.owner, self.sim = ptr, shape, strides, dtype, owner, sim
        size = 1
        for n in shape:
            size *= n
        self.size = size
        expected, contiguous = dtype.itemsize, True
        if size:
            for n, st in zip(reversed(shape), reversed(strides)):
                if n != 1 and st != expected:
                    contiguous = False
                    break
                expected *= n
        self.contiguous = contiguous

    def __repr__(self):
        return f"DeviceArray(ptr={self.ptr:#x}, shape={self.shape}, strides={self.strides}, dtype={self.dtype})"

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def is_c_contiguous(self) -> bool:
        return self.contiguous

    def reshape(self, *shape) -> DeviceArray:
        """A view of a C-contiguous array with another shape (no copy)."""
        shape = tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], tuple) else tuple(shape)
        if -1 in shape:
            known = 1
            for s in shape:
                if s != -1:
                    known *= s
            shape = tuple(self.size // known if s == -1 else s for s in shape)
        strides = c_strides(shape, self.dtype.itemsize)
        sim = None if self.sim is None else self.sim.reshape(shape)
        return DeviceArray(self.ptr, shape, strides, self.dtype, self.owner, sim)

    def storage(self) -> DeviceArray:
        """The array as its kernels index it: float16/bfloat16 as uint16 (the same memory), others unchanged."""
        if not _half.is_half(self.dtype):
            return self
        sim = None if self.sim is None else self.sim.view(_half.STORAGE)
        return DeviceArray(self.ptr, self.shape, self.strides, _half.STORAGE, self.owner, sim)

    def flat(self) -> DeviceArray:
        """The C-contiguous array as 1-D."""
        if len(self.shape) == 1:
            return self
        sim = None if self.sim is None else self.sim.reshape(-1)
        return DeviceArray(self.ptr, (self.size,), (self.dtype.itemsize,), self.dtype, self.owner, sim)

    def rows(self, start, stop) -> DeviceArray:
        """Rows ``start:stop`` along the first axis (a view)."""
        sim = None if self.sim is None else self.sim[start:stop]
        shape = (stop - start,) + self.shape[1:]
        return DeviceArray(self.ptr + start * self.strides[0], shape, self.strides, self.dtype, self.owner, sim)

    def extent(self) -> tuple[int, int]:
        """(first byte, one past the last byte) of the memory the array covers."""
        lo = hi = self.ptr
        for n, st in zip(self.shape, self.strides):
            if st < 0:
                lo += (n - 1) * st
            else:
                hi += (n - 1) * st
        return lo, hi + self.dtype.itemsize


def c_strides(shape, itemsize) -> tuple:
    strides, step = [], itemsize
    for n in reversed(shape):
        strides.append(step)
        step *= n
    return tuple(reversed(strides))


def device_array(x) -> DeviceArray:
    """The :class:`DeviceArray` of any device array, read from its own attributes (no synchronisation). A Numba
    array's address and layout never change, so its descriptor is kept on it."""
    k = kind(x)
    if k == "numba":
        d = x.__dict__.get("_gpunn_device_array")
        if d is None:
            d = x.__dict__["_gpunn_device_array"] = _numba_device_array(x)
        return d
    if k == "torch_cuda":
        dtype = dtype_of(x)
        shape = tuple(x.shape)
        return DeviceArray(x.data_ptr(), shape, tuple(s * dtype.itemsize for s in x.stride()), dtype, x)
    if k == "cupy":
        return DeviceArray(x.data.ptr, x.shape, x.strides, x.dtype, x)
    cai = x.__cuda_array_interface__
    dtype = np.dtype(cai["typestr"])
    shape = tuple(int(s) for s in cai["shape"])
    strides = cai.get("strides")
    strides = tuple(strides) if strides else c_strides(shape, dtype.itemsize)
    return DeviceArray(int(cai["data"][0]), shape, strides, dtype, x)


def _numba_device_array(x) -> DeviceArray:
    if simulator():
        a = x._ary
        return DeviceArray(a.__array_interface__["data"][0], a.shape, a.strides, a.dtype, x, a)
    return DeviceArray(x.device_ctypes_pointer.value or 0, tuple(x.shape), tuple(x.strides), x.dtype, x)


def numba_array(d: DeviceArray):
    """A Numba device array on the memory of ``d`` (for Numba API calls; kernels take ``d`` itself)."""
    from numba import cuda

    if d.sim is not None:
        from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray

        return FakeCUDAArray(d.sim)
    owner = d.owner
    if kind(owner) == "numba" and tuple(owner.shape) == d.shape and tuple(owner.strides) == d.strides \
            and (owner.device_ctypes_pointer.value or 0) == d.ptr:
        return owner
    desc = {"shape": d.shape, "strides": d.strides, "data": (d.ptr, False), "typestr": d.dtype.str, "version": 3}
    return cuda.from_cuda_array_interface(desc, owner=owner, sync=False)


# ---- memory relations ------------------------------------------------------------------------------------------------
def overlap(a, b) -> str | None:
    """How the memory of arrays ``a`` and ``b`` (both host NumPy views, or both :class:`DeviceArray`) relates:
    "same" (same start, shape and strides: in place), "partial" (any other sharing), or None (disjoint; an empty
    array shares nothing)."""
    if isinstance(a, DeviceArray):
        if not a.size or not b.size:
            return None
        (alo, ahi), (blo, bhi) = a.extent(), b.extent()
        if ahi <= blo or bhi <= alo:
            return None
        if a.sim is not None and not np.shares_memory(a.sim, b.sim):
            return None  # interleaved strided views of simulated memory
        return "same" if (a.ptr, a.shape, a.strides) == (b.ptr, b.shape, b.strides) else "partial"
    if not a.size or not b.size or not np.shares_memory(a, b):
        return None
    same = (a.__array_interface__["data"][0] == b.__array_interface__["data"][0]
            and a.shape == b.shape and a.strides == b.strides)
    return "same" if same else "partial"


# ---- new arrays and movement -----------------------------------------------------------------------------------------
def empty_like(x, shape, dtype):
    """A new array of ``x``'s kind (library, device) with ``shape`` and ``dtype``."""
    dtype = np.dtype(dtype)
    k = kind(x)
    if k == "numpy":
        return np.empty(shape, dtype)
    if k in ("torch_cpu", "torch_cuda"):
        import torch

        return torch.empty(tuple(shape), dtype=getattr(torch, dtype.name), device=x.device)
    if k == "cupy":
        import cupy

        with cupy.cuda.Device(x.device.id):
            return cupy.empty(shape, dtype)
    from numba import cuda

    return cuda.device_array(shape, dtype)


def to_device(x):
    """Copy a host array (NumPy, or anything ``np.asarray`` takes) to the device; device arrays pass through.

    Returns a Numba device array (a simulator array under ``NUMBA_ENABLE_CUDASIM=1``)."""
    require_device("to_device")
    if is_device_array(x):
        return x
    from numba import cuda

    # np.asarray(order="C") keeps 0-d arrays 0-d (np.ascontiguousarray would make them 1-d)
    return cuda.to_device(np.asarray(host_view(x) if kind(x) == "torch_cpu" else x, order="C"))


def to_host(x):
    """Copy a device array (Numba, CuPy, PyTorch CUDA, simulator) to a NumPy array; host arrays pass through.
    0-d device results (reduced losses) come back as 0-d NumPy arrays. This waits for the array's producers."""
    k = kind(x)
    if k == "numpy":
        return x
    if k == "torch_cpu":
        return host_view(x)
    if k == "torch_cuda":
        return host_view(x.detach().cpu())
    if k == "cupy":
        return x.get()
    if k == "numba":
        return x.copy_to_host()
    if k == "cuda_array":
        from numba import cuda

        return cuda.as_cuda_array(x).copy_to_host()
    return np.asarray(x)


def is_c_contiguous(x) -> bool:
    k = kind(x)
    if k in ("numpy", "cupy"):
        return x.flags.c_contiguous
    if k in ("torch_cpu", "torch_cuda"):
        return x.is_contiguous()
    return device_array(x).is_c_contiguous()


def contiguous(x, stream=None):
    """``x`` if C-contiguous, else a C-contiguous copy of the same kind (on the device for device arrays; Numba
    arrays are gathered by a gpunn kernel on ``stream``, default: Numba's default stream)."""
    if is_c_contiguous(x):
        return x
    k = kind(x)
    if k == "numpy":
        return np.ascontiguousarray(x)
    if k in ("torch_cpu", "torch_cuda"):
        return x.contiguous()
    if k == "cupy":
        import cupy

        return cupy.ascontiguousarray(x)
    from ._launch import stream_of
    from ._copy import gather

    out = empty_like(x, x.shape, dtype_of(x))
    gather(device_array(x), device_array(out), stream_of(stream, x))
    return out
