"""Where gpunn runs: array kinds, host/device movement, launch configuration, argument checks.

Three ways to run the same code:

* ``cuda``: a real GPU. Device arrays (Numba device arrays, CuPy arrays, PyTorch CUDA tensors, anything with
  ``__cuda_array_interface__``) are viewed without a copy and launched on with ``@cuda.jit`` kernels.
* ``simulator``: ``NUMBA_ENABLE_CUDASIM=1``. The very same kernels run in Numba's CUDA simulator on
  ``gpunn.to_device`` arrays, with tiny grids (the simulator runs each thread as a Python thread).
* ``cpu``: NumPy arrays (and PyTorch CPU tensors) take the CPU path, whatever the mode.

The path is chosen by the kind of the arrays, never by a global switch: NumPy in, NumPy out; device in, device out
(of the same library). Nothing here compiles at import time.
"""

from __future__ import annotations

import functools
import math
import sys

import numpy as np

__all__ = [
    "FLOAT_DTYPES",
    "Args",
    "block_size",
    "gpu_available",
    "info",
    "launch_config",
    "mode",
    "simulator",
    "to_device",
    "to_host",
]

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
HOST_KINDS = ("numpy", "torch_cpu")


# ----------------------------------------------------------------------------------------------------------------------
# Mode
# ----------------------------------------------------------------------------------------------------------------------
def simulator() -> bool:
    """True when Numba's CUDA simulator is on (``NUMBA_ENABLE_CUDASIM=1`` before Numba was imported)."""
    from numba.cuda import config

    return bool(config.ENABLE_CUDASIM)


@functools.lru_cache(maxsize=None)
def gpu_available() -> bool:
    """True when a real CUDA GPU can be used (never under the simulator)."""
    if simulator():
        return False
    try:
        from numba import cuda

        return bool(cuda.is_available())
    except Exception:  # a broken driver or toolkit means: no GPU
        return False


def mode() -> str:
    """``"cuda"``, ``"simulator"`` or ``"cpu"``: where device arrays live and kernels run."""
    if simulator():
        return "simulator"
    return "cuda" if gpu_available() else "cpu"


def _require_device(what: str) -> None:
    if mode() == "cpu":
        raise RuntimeError(
            f"{what} needs a CUDA GPU or the CUDA simulator (set NUMBA_ENABLE_CUDASIM=1 before importing gpunn); "
            "NumPy arrays run on the CPU path without either"
        )


@functools.lru_cache(maxsize=None)
def _sm_count() -> int:
    if simulator():
        return 1
    from numba import cuda

    return int(cuda.get_current_device().MULTIPROCESSOR_COUNT)


def block_size() -> int:
    """Threads per block for gpunn's kernels: 256 on a GPU, 32 in the simulator (each thread is a Python thread)."""
    return 32 if simulator() else 256


def launch_config(n: int, threads: int | None = None, blocks_per_sm: int = 8) -> tuple[int, int]:
    """(blocks, threads) for a grid-stride loop over ``n`` items: enough blocks to fill the GPU, never more than
    needed. In the simulator the grid is one or two tiny blocks; grid-stride loops keep any grid correct."""
    threads = threads or block_size()
    if simulator():
        return (1 if n <= threads else 2), threads
    blocks = max(1, min(-(-n // threads), _sm_count() * blocks_per_sm))
    return blocks, threads


def info() -> dict:
    """What gpunn runs on: mode, device name and compute capability, and the versions that matter."""
    import platform

    import numba

    out = {"gpunn": _version("gpunn"), "mode": mode(), "python": platform.python_version(),
           "numpy": np.__version__, "numba": numba.__version__, "numba-cuda": _version("numba-cuda")}
    for lib in ("cupy", "torch"):
        if lib in sys.modules or _version(lib) is not None:
            out[lib] = _version(lib) or getattr(sys.modules.get(lib), "__version__", None)
    if mode() == "cuda":
        from numba import cuda

        dev = cuda.get_current_device()
        name = dev.name.decode() if isinstance(dev.name, bytes) else str(dev.name)
        out.update(device=name, compute_capability=".".join(map(str, dev.compute_capability)),
                   multiprocessors=_sm_count())
    elif mode() == "simulator":
        out["device"] = "Numba CUDA simulator"
    else:
        out["device"] = "none (CPU only)"
    return out


def _version(dist: str):
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


# ----------------------------------------------------------------------------------------------------------------------
# Array kinds
# ----------------------------------------------------------------------------------------------------------------------
def _numba_device_array_types() -> tuple:
    from numba import cuda

    if simulator():
        from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray

        return (FakeCUDAArray,)
    return (cuda.devicearray.DeviceNDArray,)


def kind(x) -> str | None:
    """The kind of array ``x`` is: numpy, torch_cpu, torch_cuda, cupy, numba, cuda_array; None if not an array."""
    if isinstance(x, np.ndarray):
        return "numpy"
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(x, torch.Tensor):
        return "torch_cuda" if x.is_cuda else "torch_cpu"
    cupy = sys.modules.get("cupy")
    if cupy is not None and isinstance(x, cupy.ndarray):
        return "cupy"
    if "numba" in sys.modules and isinstance(x, _numba_device_array_types()):
        return "numba"
    if hasattr(x, "__cuda_array_interface__"):
        return "cuda_array"
    return None


def is_device_array(x) -> bool:
    k = kind(x)
    return k is not None and k not in HOST_KINDS


def dtype_of(x) -> np.dtype:
    dt = x.dtype
    if kind(x) in ("torch_cpu", "torch_cuda"):
        return np.dtype(str(dt).replace("torch.", "")) if str(dt) != "torch.bfloat16" else np.dtype("V2")
    return np.dtype(dt)


def to_device(x):
    """Copy a host array (NumPy, or anything ``np.asarray`` takes) to the device; device arrays pass through.

    Returns a Numba device array (a simulator array under ``NUMBA_ENABLE_CUDASIM=1``)."""
    _require_device("to_device")
    if is_device_array(x):
        return x
    from numba import cuda

    # np.asarray(order="C") keeps 0-d arrays 0-d (np.ascontiguousarray would make them 1-d)
    return cuda.to_device(np.asarray(host_view(x) if kind(x) == "torch_cpu" else x, order="C"))


def to_host(x):
    """Copy a device array (Numba, CuPy, PyTorch CUDA, simulator) to a NumPy array; host arrays pass through.
    0-d device results (reduced losses) come back as 0-d NumPy arrays."""
    k = kind(x)
    if k == "numpy":
        return x
    if k == "torch_cpu":
        return host_view(x)
    if k == "torch_cuda":
        return x.detach().cpu().numpy()
    if k == "cupy":
        return x.get()
    if k == "numba":
        return x.copy_to_host()
    if k == "cuda_array":
        from numba import cuda

        return cuda.as_cuda_array(x).copy_to_host()
    return np.asarray(x)


def host_view(x) -> np.ndarray:
    """A NumPy view of a host array (PyTorch CPU tensors without a copy)."""
    if kind(x) == "torch_cpu":
        return x.detach().numpy()
    return x


def device_view(x):
    """A Numba device-array view of a device array, without a copy."""
    k = kind(x)
    if k == "numba":
        return x
    from numba import cuda

    if k == "torch_cuda":
        return cuda.as_cuda_array(x.detach())
    return cuda.as_cuda_array(x)


def _is_c_contiguous(x) -> bool:
    k = kind(x)
    if k in ("numpy",):
        return x.flags.c_contiguous
    if k in ("torch_cpu", "torch_cuda"):
        return x.is_contiguous()
    if k == "cupy":
        return x.flags.c_contiguous
    return device_view(x).is_c_contiguous()


def is_read_only(x) -> bool:
    """True for a NumPy array that is not writeable, or a device array whose interface says read-only."""
    k = kind(x)
    if k in HOST_KINDS:
        return not host_view(x).flags.writeable
    if k in ("numba", "cupy", "torch_cuda"):
        return False
    return bool(x.__cuda_array_interface__["data"][1])


def _host_memory(x):
    """The NumPy array behind a host array or a simulator device array (None for real device memory)."""
    if kind(x) in HOST_KINDS:
        return host_view(x)
    return getattr(x, "_ary", None) if simulator() else None


def _device_extent(x):
    """(start pointer, first byte, end byte, shape, strides) of a device array's memory."""
    cai = device_view(x).__cuda_array_interface__ if kind(x) in ("numba",) else x.__cuda_array_interface__
    ptr = int(cai["data"][0])
    shape = tuple(int(s) for s in cai["shape"])
    itemsize = np.dtype(cai["typestr"]).itemsize
    strides = cai.get("strides") or tuple(int(np.prod(shape[k + 1:], dtype=np.int64)) * itemsize
                                          for k in range(len(shape)))
    lo = ptr + sum(min(0, (n - 1) * st) for n, st in zip(shape, strides))
    hi = ptr + sum(max(0, (n - 1) * st) for n, st in zip(shape, strides)) + itemsize
    return ptr, lo, hi, shape, tuple(strides)


def overlap(a, b) -> str | None:
    """How the memory of arrays ``a`` and ``b`` (same side) relates: "same" (same start, shape and strides: in place),
    "partial" (any other sharing), or None (disjoint; empty arrays never overlap)."""
    if int(np.prod(a.shape, dtype=np.int64)) == 0 or int(np.prod(b.shape, dtype=np.int64)) == 0:
        return None
    ha, hb = _host_memory(a), _host_memory(b)
    if ha is not None and hb is not None:
        if not np.shares_memory(ha, hb):
            return None
        same = (ha.__array_interface__["data"][0] == hb.__array_interface__["data"][0]
                and ha.shape == hb.shape and ha.strides == hb.strides)
        return "same" if same else "partial"
    pa, loa, hia, sha, sta = _device_extent(a)
    pb, lob, hib, shb, stb = _device_extent(b)
    if hia <= lob or hib <= loa:
        return None
    return "same" if (pa, sha, sta) == (pb, shb, stb) else "partial"


def empty_like(x, shape, dtype):
    """A new array of the same kind (library, device) as ``x``."""
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


def contiguous(x):
    """``x`` if C-contiguous, else a C-contiguous copy of the same kind (on the device for device arrays)."""
    if _is_c_contiguous(x):
        return x
    k = kind(x)
    if k == "numpy":
        return np.ascontiguousarray(x)
    if k in ("torch_cpu", "torch_cuda"):
        return x.contiguous()
    if k == "cupy":
        import cupy

        return cupy.ascontiguousarray(x)
    from ._strided import gather

    out = empty_like(x, x.shape, dtype_of(x))
    gather(device_view(x), device_view(out))
    return out


# ----------------------------------------------------------------------------------------------------------------------
# Argument checks
# ----------------------------------------------------------------------------------------------------------------------
class Args:
    """The arrays of one call, checked together: all host or all device, one float dtype.

    ``Args(x=x, dy=dy)`` raises a TypeError naming the argument when an argument is not an array, is not float32 or
    float64, or is on the other side (host vs device) from the first one. ``flat(name)`` gives a 1-D C-contiguous view
    to hand to a kernel; ``output("out", out, shape)`` checks a user's ``out`` or allocates one of the first
    argument's kind; ``finish()`` copies back into a non-contiguous host ``out``.
    """

    def __init__(self, **arrays):
        self._arrays = {}
        self.first = None
        self.device = False
        self.dtype = None
        self._pending = []
        self._outputs = set()
        for name, x in arrays.items():
            if x is None:
                continue
            self.add(name, x)

    def add(self, name, x, dtype=None):
        """Check ``x`` and record it. ``dtype``: an exact dtype it must have; default: the call's float dtype."""
        k = kind(x)
        if k is None:
            raise TypeError(f"{name} must be an array (NumPy, CuPy, PyTorch or Numba device array), got {type(x).__name__}")
        on_device = k not in HOST_KINDS
        if self.first is None:
            self.first, self.device = name, on_device
            if on_device:
                _require_device(f"{name} (a device array)")
        elif on_device != self.device:
            where = "a device array" if on_device else "a host array"
            other = "a device array" if self.device else "a host array"
            raise TypeError(f"{name} is {where} but {self.first} is {other}: move both with gpunn.to_device/to_host")
        dt = dtype_of(x)
        if dtype is not None:
            if dt != np.dtype(dtype):
                raise TypeError(f"{name} must have dtype {np.dtype(dtype)}, got {dt}")
        elif self.dtype is None:
            if dt not in FLOAT_DTYPES:
                raise TypeError(f"{name} must be float32 or float64, got {dt}")
            self.dtype = dt
        elif dt != self.dtype:
            raise TypeError(f"{name} has dtype {dt} but {self._first_float()} has {self.dtype}: dtypes must match")
        self._arrays[name] = x
        return x

    def _first_float(self):
        for name, x in self._arrays.items():
            if dtype_of(x) == self.dtype:
                return name
        return self.first

    def same_shape(self, name, other):
        a, b = self._arrays[name], self._arrays[other]
        if tuple(a.shape) != tuple(b.shape):
            raise ValueError(f"{name} has shape {tuple(a.shape)} but {other} has shape {tuple(b.shape)}")

    def output(self, name, out, shape, dtype=None, like=None):
        """Check a user-given ``out`` (kind, shape, dtype, writable, no partial overlap with an input) or allocate one
        like ``like`` (default: the first array)."""
        dtype = np.dtype(dtype or self.dtype)
        shape = tuple(int(s) for s in shape)
        if out is None:
            out = empty_like(self._arrays[like or self.first], shape, dtype)
            self._arrays[name] = out
            self._outputs.add(name)
            return out
        self.add(name, out, dtype=dtype)
        if tuple(out.shape) != shape:
            raise ValueError(f"{name} must have shape {shape}, got {tuple(out.shape)}")
        if is_read_only(out):
            raise ValueError(f"{name} is read-only")
        for other, x in self._arrays.items():
            if other == name:
                continue
            relation = overlap(out, x)
            if other in self._outputs and relation is not None:
                raise ValueError(f"{name} and {other} share memory: the results need separate arrays")
            if relation == "partial":
                raise ValueError(f"{name} overlaps {other} without being the same array (same memory, shape and "
                                 f"strides): pass a separate {name}, or {other} itself to work in place")
        self._outputs.add(name)
        if not _is_c_contiguous(out):
            if self.device:
                raise ValueError(f"{name} must be C-contiguous for a device call")
            self._pending.append((host_view(out), name))
            self._arrays[name] = np.empty(shape, dtype)
        return out

    def flat(self, name):
        """1-D C-contiguous view (NumPy array on the host, Numba device array on the device) for a kernel."""
        x = self._arrays[name]
        if self.device:
            return device_view(contiguous(x)).reshape(-1)
        return np.ascontiguousarray(host_view(x)).reshape(-1)

    def nd(self, name):
        """C-contiguous view of the original shape (NumPy or Numba device array)."""
        x = self._arrays[name]
        if self.device:
            return device_view(contiguous(x))
        return np.ascontiguousarray(host_view(x))

    def finish(self):
        """Copy results computed into temporaries back into non-contiguous host outputs."""
        for target, name in self._pending:
            target[...] = self._arrays[name]
        self._pending.clear()


def check_choice(name, value, allowed):
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}, got {value!r}")
    return value


def check_real(name, value, *, low=None, high=None, low_open=False, high_open=False):
    """A finite Python/NumPy real number inside the given bounds, else ValueError/TypeError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if low is not None and (value < low or (low_open and value == low)):
        raise ValueError(f"{name} must be {'>' if low_open else '>='} {low}, got {value}")
    if high is not None and (value > high or (high_open and value == high)):
        raise ValueError(f"{name} must be {'<' if high_open else '<='} {high}, got {value}")
    return value
