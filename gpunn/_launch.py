"""The one place where gpunn launches a kernel: streams, grid sizes, prepared launchers, workspaces.

A :class:`Kernel` is a ``cuda.jit`` dispatcher and the signature it is launched with. On a GPU the first launch
compiles that overload, looks up its CUDA function and its occupancy, and records how each argument is packed;
every launch after that packs the arguments straight from :class:`~gpunn._arrays.DeviceArray` descriptors and calls
``cuda.core.launch``, the call Numba itself makes, without Numba's per-call typing, overload lookup and array
wrapping. In the simulator the same kernel runs through Numba's simulated launch on views of the simulated memory.

Streams: every launch goes to the caller's stream (a handle). :func:`stream_of` resolves a ``stream=`` argument
(a Numba, CuPy or PyTorch stream, anything with ``__cuda_stream__``, or a raw handle) or, by default, the current
stream of the library that owns the inputs (PyTorch's and CuPy's current stream; Numba arrays: Numba's default).
"""

from __future__ import annotations

import ctypes
import functools
import sys
import threading

import numpy as np

from . import _cache, _simulator
from ._arrays import DeviceArray, kind
from ._runtime import simulator

# The CUDA calls a launch makes, looked up here at call time (gpunn.bench.host replaces them to measure host time)
_core_launch = None
_core_config = None
_core_stream_from_handle = None


def block_size() -> int:
    """Threads per block for gpunn's kernels: 256 on a GPU, 32 in the simulator (each thread is a Python thread)."""
    return 32 if simulator() else 256


@functools.lru_cache(maxsize=None)
def _device_props(device_id: int):
    from numba import cuda

    dev = cuda.get_current_device()
    return int(dev.MULTIPROCESSOR_COUNT)


def sm_count() -> int:
    if simulator():
        return 1
    return _device_props(current_device_id())


_devices = None  # numba.cuda.cudadrv.devices, imported on first use (not under the simulator)


def current_device_id() -> int:
    """Numba's current device: where gpunn's kernels are loaded and launched."""
    global _devices
    if _devices is None:
        from numba.cuda.cudadrv import devices

        _devices = devices
    return _devices.get_context().device.id


# ---- streams ---------------------------------------------------------------------------------------------------------
def stream_handle(stream) -> int:
    """The raw handle of ``stream``: an int, a Numba/CuPy/PyTorch stream, or anything with ``__cuda_stream__``."""
    if isinstance(stream, (int, np.integer)) and not isinstance(stream, bool):
        return int(stream)
    proto = getattr(stream, "__cuda_stream__", None)
    if proto is not None:
        return int((proto() if callable(proto) else proto)[1])
    for attr in ("cuda_stream", "ptr"):  # PyTorch, CuPy
        value = getattr(stream, attr, None)
        if isinstance(value, int):
            return value
    handle = getattr(stream, "handle", None)  # Numba
    if handle is not None:
        value = getattr(handle, "value", handle)
        return int(value or 0)
    raise TypeError(f"stream must be a CUDA stream (Numba, CuPy, PyTorch, __cuda_stream__) or a handle, got "
                    f"{type(stream).__name__}")


def current_stream(x) -> int:
    """The stream work on device array ``x`` is ordered on by default: its library's current stream."""
    k = kind(x)
    if k == "torch_cuda":
        torch = sys.modules["torch"]
        return torch.cuda.current_stream(x.device).cuda_stream
    if k == "cupy":
        return sys.modules["cupy"].cuda.get_current_stream().ptr
    return _numba_default_stream()


@functools.lru_cache(maxsize=None)
def _numba_default_stream() -> int:
    if simulator():
        return 0
    from numba.cuda import config

    return 2 if config.CUDA_PER_THREAD_DEFAULT_STREAM else 0  # CU_STREAM_PER_THREAD, or the legacy stream


def stream_of(stream, first_device_array) -> int:
    """The handle to launch on: ``stream`` when given, else the current stream of the inputs' library."""
    if stream is not None:
        return stream_handle(stream)
    return current_stream(first_device_array)


# ---- kernels ---------------------------------------------------------------------------------------------------------
class Kernel:
    """A ``cuda.jit`` dispatcher with the signature it is launched with; prepared once per device, then launched
    from :class:`DeviceArray` descriptors and scalars."""

    def __init__(self, dispatcher, signature: str, name: str = ""):
        self.dispatcher = dispatcher
        self.signature = signature
        self.name = name or getattr(dispatcher, "__name__", "kernel")
        self._prepared = {}  # device id -> (CUDA function, packers, blocks per SM at block_size())

    def __repr__(self):
        return f"Kernel({self.name}, {self.signature})"

    def __call__(self, grid, block, stream, *args):
        """Launch on ``grid`` blocks of ``block`` threads on stream handle ``stream``."""
        if simulator():
            self._record(grid, block, args)
            self._check_types(args)
            with _simulator.launch_lock:
                self.dispatcher[grid, block](*[_sim_arg(a) for a in args])
            return
        self._launch(self._prepare(), grid, block, stream, args)

    def over(self, n: int, stream, *args, block: int | None = None):
        """Launch a grid-stride loop over ``n`` items (one per thread per pass): :meth:`grid` blocks of ``block``
        (default :func:`block_size`) threads."""
        block = block or block_size()
        if simulator():
            self(1 if n <= block else 2, block, stream, *args)
            return
        prepared = self._prepare()
        grid = max(1, min(-(-n // block), prepared[3] * prepared[2](block)))
        self._launch(prepared, grid, block, stream, args)

    def _record(self, grid, block, args):
        for rec in _recorders:
            rec.launched.append((self, grid, block, args) if rec.arguments else self)

    def _launch(self, prepared, grid, block, stream, args):
        if _recorders:
            self._record(grid, block, args)
        function, packers = prepared[0], prepared[1]
        params = []
        for pack, a in zip(packers, args):
            pack(a, params)
        _core_launch(_stream(stream), _config(grid, block), function, *params)

    def _check_types(self, args):
        """Simulator only: each array argument has the dtype, rank and layout of the signature (on a GPU the
        arguments are packed by the signature, so a mismatch there would be a wrong launch, not an error)."""
        from numba.core import sigutils
        from numba.cuda import types

        if not hasattr(self, "_argtypes"):
            self._argtypes = sigutils.normalize_signature(self.signature)[0]
        if len(args) != len(self._argtypes):
            raise TypeError(f"{self.name}: {len(args)} arguments for signature {self.signature}")

        def check(ty, a, where):
            if isinstance(ty, types.Array):
                if not isinstance(a, DeviceArray):
                    raise TypeError(f"{self.name}: argument {where} must be a device array, got {type(a).__name__}")
                if (np.dtype(str(ty.dtype)) != a.dtype or ty.ndim != a.ndim
                        or (ty.layout == "C" and not a.is_c_contiguous())):
                    raise TypeError(f"{self.name}: argument {where} is {a.dtype}[{a.ndim}d] "
                                    f"(contiguous: {a.is_c_contiguous()}), the signature says {ty}")
            elif isinstance(ty, types.BaseTuple):
                if not isinstance(a, tuple) or len(a) != len(ty):
                    raise TypeError(f"{self.name}: argument {where} must be a tuple of {len(ty)}")
                for k, (t, v) in enumerate(zip(ty, a)):
                    check(t, v, f"{where}[{k}]")
            elif isinstance(a, DeviceArray):
                raise TypeError(f"{self.name}: argument {where} is an array, the signature says {ty}")

        for k, (ty, a) in enumerate(zip(self._argtypes, args)):
            check(ty, a, k)

    def blocks_per_sm(self, block: int) -> int:
        """Blocks of ``block`` threads that fit on one SM at once for this kernel (its registers and shared memory);
        1 in the simulator."""
        if simulator():
            return 1
        return self._prepare()[2](block)

    def grid(self, work_items: int, block: int) -> int:
        """Blocks for a grid-stride loop over ``work_items`` items of one thread each: one full wave of the GPU
        (every SM filled to this kernel's occupancy), never more than the work needs. Two small blocks in the
        simulator (grid-stride loops keep any grid correct)."""
        if simulator():
            return 1 if work_items <= block else 2
        waves = sm_count() * self.blocks_per_sm(block)
        return max(1, min(-(-work_items // block), waves))

    def _prepare(self):
        device = current_device_id()
        prepared = self._prepared.get(device)
        if prepared is None:
            prepared = self._prepared[device] = self._build()
        return prepared

    def _build(self):
        _bind_core()
        _cache.attach(self.dispatcher, "cuda")
        overload = self.dispatcher.compile(self.signature)
        cufunc = overload._codelibrary.get_cufunc()
        packers = [_packer(t) for t in overload.argument_types]
        cache = {}

        def occupancy(block):
            if block not in cache:
                from numba.cuda.cudadrv import devices

                cache[block] = max(1, int(devices.get_context().get_active_blocks_per_multiprocessor(
                    cufunc, block, 0)))
            return cache[block]

        return cufunc.kernel, packers, occupancy, sm_count()


def _sim_arg(a):
    if isinstance(a, DeviceArray):
        from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray

        return FakeCUDAArray(a.sim)
    if isinstance(a, tuple):
        return tuple(_sim_arg(v) for v in a)
    return a


def _packer(ty):
    """A function ``pack(value, params)`` appending ``value`` as Numba's ABI lays out an argument of type ``ty``
    (the same flattening as numba-cuda's ``_Kernel._prepare_args``)."""
    from numba.cuda import types

    if isinstance(ty, types.Array):
        def pack_array(d, params):
            # meminfo, parent, nitems, itemsize, data, shape..., strides...
            params += (0, 0, d.size, d.dtype.itemsize, d.ptr, *d.shape, *d.strides)

        return pack_array
    if isinstance(ty, types.BaseTuple):
        inner = [_packer(t) for t in ty]

        def pack_tuple(values, params):
            for p, v in zip(inner, values):
                p(v, params)

        return pack_tuple
    if isinstance(ty, types.Boolean):
        return lambda v, params: params.append(bool(v))
    if isinstance(ty, types.Integer):
        ctype = getattr(ctypes, f"c_{ty}")
        return lambda v, params: params.append(ctype(v))
    if ty == types.float32:
        return lambda v, params: params.append(ctypes.c_float(v))
    if ty == types.float64:
        return lambda v, params: params.append(ctypes.c_double(v))
    raise NotImplementedError(f"gpunn cannot launch with an argument of type {ty}")


_configs = {}
_streams = {}
_recorders = []


class record:
    """``with record() as launched:`` collects every :class:`Kernel` launched in the block, in order (with
    ``arguments=True``: ``(kernel, grid, block, args)`` tuples)."""

    def __init__(self, arguments=False):
        self.arguments = arguments
        self.launched = []

    def __enter__(self):
        _recorders.append(self)
        return self.launched

    def __exit__(self, *exc):
        _recorders.remove(self)


def _config(grid, block):
    key = (grid, block)
    config = _configs.get(key)
    if config is None:
        if len(_configs) > 4096:
            _configs.clear()
        config = _configs[key] = _core_config(grid=grid, block=block, shmem_size=0)
    return config


def _stream(handle):
    s = _streams.get(handle)
    if s is None:
        s = _streams[handle] = _core_stream_from_handle(handle)
    return s


def _bind_core():
    """Look up cuda.core's launch, LaunchConfig and Stream.from_handle (once; the host-time instrument replaces
    them before)."""
    global _core_launch, _core_config, _core_stream_from_handle
    if _core_launch is None:
        from cuda.core import LaunchConfig, Stream, launch

        _core_launch, _core_config, _core_stream_from_handle = launch, LaunchConfig, Stream.from_handle


# ---- workspaces ------------------------------------------------------------------------------------------------------
_local = threading.local()


def workspace(like, nbytes: int, stream: int, slot: str) -> DeviceArray:
    """A device scratch buffer of at least ``nbytes`` bytes for one call, float64-aligned, as a 1-D uint8 array.

    PyTorch and CuPy inputs take it from their library's allocator (stream-ordered, in the user's memory accounting);
    Numba inputs from a cache per thread, device, stream and ``slot`` that grows as needed: kernels on one stream run
    in order, so the next call on that stream may reuse it."""
    from ._arrays import device_array, empty_like

    k = kind(like)
    if k in ("torch_cuda", "cupy"):
        return device_array(empty_like(like, (max(nbytes, 8),), np.uint8))
    cache = getattr(_local, "workspaces", None)
    if cache is None:
        cache = _local.workspaces = {}
    key = (0 if simulator() else current_device_id(), stream, slot)
    buf = cache.get(key)
    if buf is None or buf.size < nbytes:
        from numba import cuda

        buf = cache[key] = device_array(cuda.device_array(max(nbytes, 8, 2 * (buf.size if buf else 0)), np.uint8))
    return buf


def typed_view(buf: DeviceArray, dtype, shape, offset_bytes: int = 0) -> DeviceArray:
    """A view of part of workspace ``buf`` as a C-contiguous array of ``dtype`` and ``shape``."""
    from ._arrays import c_strides

    dtype = np.dtype(dtype)
    sim = None
    if buf.sim is not None:
        n = int(np.prod(shape, dtype=np.int64))
        sim = buf.sim[offset_bytes:offset_bytes + n * dtype.itemsize].view(dtype).reshape(shape)
    return DeviceArray(buf.ptr + offset_bytes, tuple(shape), c_strides(shape, dtype.itemsize), dtype, buf.owner,
                       sim)


def synchronize_stream(handle: int) -> None:
    """Block the host until the work queued on stream ``handle`` is done (no-op in the simulator, whose launches are
    synchronous)."""
    if simulator():
        return
    _stream(handle).sync()


def scratch(like, stream, slot, *pieces):
    """Views (DeviceArray) of one workspace for one call: ``pieces`` are ``(dtype, shape)`` pairs, each placed at a
    256-byte aligned offset (see :func:`workspace`)."""
    offsets, total = [], 0
    for dtype, shape in pieces:
        offsets.append(total)
        nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        total += -(-max(nbytes, 1) // 256) * 256
    buf = workspace(like, total, stream, slot)
    return [typed_view(buf, dtype, shape, off) for (dtype, shape), off in zip(pieces, offsets)]


@functools.lru_cache(maxsize=64)
def _placeholder(device: int, dtype: str, ndim: int) -> DeviceArray:
    from numba import cuda

    from ._arrays import device_array

    return device_array(cuda.device_array((1,) * ndim, dtype))


def placeholder(dtype, ndim: int = 1) -> DeviceArray:
    """A one-element device array of ``dtype`` and rank ``ndim`` for a kernel argument that a call does not read
    (allocated once per device)."""
    return _placeholder(0 if simulator() else current_device_id(), np.dtype(dtype).str, ndim)
