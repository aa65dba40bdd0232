"""Host time per call with the CUDA driver stubbed: what a kernel call costs the host, measured without a GPU.

Only the calls into the CUDA driver are replaced (:func:`stub_driver`): the current device (sm_90, 132 SMs), the
context (``memalloc`` hands out fake addresses and counts them), host<->device copies (counted; a device-to-host
copy fills its buffer with zeros), module loading, stream synchronisation and the launch itself (counted, with its
parameter count and stream). Everything else runs for real: Numba's typing and argument marshalling, gpunn's
argument checks, dispatch, workspaces and prepared launchers. Kernels are compiled for real (to PTX; nothing is
linked or loaded), so the first call of each op takes seconds and is not timed.

For each op, :func:`measure` times gpunn's whole call and, in the same run, a bare Numba launch of each kernel the
op launched (``kernel[grid, block](*args)`` on Numba device arrays with the same arguments): the ratio is the figure
that counts, absolute microseconds on a shared machine are noisy. It also counts, per call: launches, device
allocations, host-to-device and device-to-host copies, and synchronisations (the tests assert these exactly).

Run it as ``gpunn bench --host`` (a child process with the simulator off). The seams follow numba-cuda 0.30
(``numba/cuda/dispatcher.py``, ``cudadrv/devices.py``, ``cudadrv/driver.py``, ``cudadrv/devicearray.py``) and
gpunn/_launch.py's ``_core_launch``, ``_core_config`` and ``_core_stream_from_handle``.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from dataclasses import dataclass, field

import numpy as np

COUNTED = ("launches", "allocations", "h2d", "d2h", "syncs")


@dataclass
class Counts:
    launches: int = 0
    allocations: int = 0
    h2d: int = 0
    d2h: int = 0
    syncs: int = 0
    params: list = field(default_factory=list)   # kernel parameters per launch
    streams: list = field(default_factory=list)  # stream handle per launch

    def snapshot(self) -> dict:
        return {k: getattr(self, k) for k in COUNTED}


class _Device:
    compute_capability = (9, 0)
    MULTIPROCESSOR_COUNT = 132
    id = 0
    name = b"stub sm_90 (no GPU: driver calls are no-ops)"


class _Stream:
    def __init__(self, counts, handle):
        self.counts, self.handle = counts, handle

    def sync(self):
        self.counts.syncs += 1


@contextlib.contextmanager
def stub_driver():
    """Within the block, numba-cuda and gpunn run with every CUDA driver call replaced (see the module docstring).
    Yields the :class:`Counts`. Needs the simulator off (``NUMBA_ENABLE_CUDASIM`` unset)."""
    from numba import cuda
    from numba.cuda import api, dispatcher
    from numba.cuda.codegen import CUDACodeLibrary
    from numba.cuda.cudadrv import devicearray, devices, driver
    from numba.cuda.cudadrv.driver import binding

    from .. import _launch, _runtime

    if _runtime.simulator():
        raise RuntimeError("the driver stub needs the CUDA simulator off (NUMBA_ENABLE_CUDASIM unset)")
    counts = Counts()
    device = _Device()

    class Context:
        def __init__(self):
            self.device = device
            self.next_address = 0x7F00_0000_0000

        def memalloc(self, size):
            counts.allocations += 1
            address = self.next_address
            self.next_address += -(-max(size, 1) // 256) * 256
            return driver.MemoryPointer(self, binding.CUdeviceptr(address), size)

        def get_active_blocks_per_multiprocessor(self, func, blocksize, memsize, flags=None):
            return max(1, min(32, 2048 // blocksize))

        def get_default_stream(self):
            return 0

    class Function:
        kernel = None

        class module:
            initialized = True

    context = Context()

    def device_to_host(dst, src, size, stream=0):
        counts.d2h += 1
        counts.syncs += 1  # a synchronous copy waits for the device
        ctypes_fill(dst, size)

    def launch(stream, config, kernel, *args):
        counts.launches += 1
        counts.params.append(len(args))
        counts.streams.append(getattr(stream, "handle", stream))

    patches = [
        (dispatcher, "get_current_device", lambda: device),
        (cuda, "get_current_device", lambda: device),
        (api, "get_current_device", lambda: device),
        (devices, "get_context", lambda devnum=None: context),
        (api, "current_context", lambda devnum=None: context),
        (devicearray.devices, "get_context", lambda devnum=None: context),
        (devices._runtime, "ensure_context", contextlib.nullcontext),
        (driver, "host_to_device", lambda *a, **k: setattr(counts, "h2d", counts.h2d + 1)),
        (driver, "device_to_host", device_to_host),
        (devicearray._driver, "device_to_device", lambda *a, **k: None),
        (CUDACodeLibrary, "get_cufunc", lambda self: Function()),
        (dispatcher, "launch", launch),
        (dispatcher, "LaunchConfig", lambda **kw: kw),
        (_launch, "_core_launch", launch),
        (_launch, "_core_config", lambda **kw: kw),
        (_launch, "_core_stream_from_handle", lambda handle: _Stream(counts, handle)),
        (_runtime, "gpu_available", lambda: True),
    ]
    saved = [(mod, name, getattr(mod, name)) for mod, name, _ in patches]
    for mod, name, value in patches:
        setattr(mod, name, value)
    _launch._streams.clear()
    _launch._device_props.cache_clear()
    try:
        yield counts
    finally:
        for mod, name, value in saved:
            setattr(mod, name, value)
        _launch._streams.clear()
        _launch._device_props.cache_clear()


def ctypes_fill(dst, size):
    """Zero ``size`` bytes at a host destination as Numba passes it (a NumPy array, or an address)."""
    import ctypes

    if isinstance(dst, np.ndarray):
        dst.reshape(-1).view(np.uint8)[:size] = 0
        return
    address = getattr(dst, "value", None) or (dst if isinstance(dst, int) else ctypes.addressof(dst))
    ctypes.memset(address, 0, size)


# ---- what is measured ------------------------------------------------------------------------------------------------
@dataclass
class Case:
    name: str
    setup: object       # () -> call: a no-argument function that makes one gpunn call
    note: str = ""


def _cases(quick: bool):
    """The ops of the issue's table and one of every other family, on stub-allocated Numba device arrays."""
    import gpunn
    from numba import cuda

    f32 = np.float32

    def arr(*shape, dtype=f32):
        return cuda.device_array(shape, dtype)

    def ints(n):
        return cuda.device_array(n, np.int64)

    n = 1 << 24
    rows, cols = (8192, 32768) if not quick else (1024, 4096)
    cases = [
        Case("relu(x, out=o)", lambda: (lambda x, o: lambda: gpunn.relu(x, out=o))(arr(n), arr(n))),
        Case("gelu_backward", lambda: (lambda d, x: lambda: gpunn.gelu_backward(d, x))(arr(n), arr(n))),
        Case("prelu_backward (N, C)", lambda: (lambda d, x, w: lambda: gpunn.prelu_backward(d, x, w))(
            arr(4096, 256), arr(4096, 256), arr(256))),
        Case(f"softmax {rows}x{cols}", lambda: (lambda x, o: lambda: gpunn.softmax(x, out=o))(
            arr(rows, cols), arr(rows, cols))),
        Case("mse_loss_with_grad mean", lambda: (lambda x, t: lambda: gpunn.mse_loss_with_grad(x, t))(
            arr(n), arr(n))),
        Case("hinge_loss mean", lambda: (lambda x, t: lambda: gpunn.hinge_loss(x, t))(arr(n), arr(n))),
        Case(f"cross_entropy_with_grad {rows}x{cols}, out=", lambda: (
            lambda x, t, o: lambda: gpunn.cross_entropy_with_grad(x, t, out=o))(
            arr(rows, cols), ints(rows), arr(rows, cols))),
        Case(f"multi_margin_loss_with_grad {rows}x{cols}", lambda: (
            lambda x, t: lambda: gpunn.multi_margin_loss_with_grad(x, t))(arr(rows, cols), ints(rows))),
    ]
    for count in (1, 24, 200):
        def adam(count=count):
            size = (100_000_000 if not quick else 1_000_000) // count
            params = [arr(size) for _ in range(count)]
            grads = [arr(size) for _ in range(count)]
            opt = gpunn.optim.Adam(params, lr=1e-3)
            return lambda: opt.step(grads)

        cases.append(Case(f"Adam.step, {count} tensor{'s' if count > 1 else ''}", adam))

    def adam_checked():
        flat, grad = arr(1 << 22), arr(1 << 22)
        opt = gpunn.optim.Adam([flat], lr=1e-3, max_grad_norm=1.0)
        return lambda: opt.step([grad], grad_scale=1024.0)

    cases.append(Case("Adam.step flat, max_grad_norm + grad_scale", adam_checked))
    return cases


def _bare(launches):
    """A function replaying ``launches`` [(Kernel, grid, block, args)] as plain Numba launches."""
    from .._arrays import DeviceArray, numba_array

    def conv(a):
        if isinstance(a, DeviceArray):
            return numba_array(a)
        if isinstance(a, tuple):
            return tuple(conv(v) for v in a)
        return a

    calls = [(kernel.dispatcher[grid, block], [conv(a) for a in args]) for kernel, grid, block, args in launches]

    def replay():
        for configured, args in calls:
            configured(*args)

    return replay


def _time(fn, calls: int, repeats: int) -> float:
    """Median seconds per call of ``fn`` over ``repeats`` samples of ``calls`` calls."""
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        samples.append((time.perf_counter() - t0) / calls)
    return statistics.median(samples)


def measure(quick=False, calls=200, repeats=7, only=None):
    """Time and count every case under the driver stub; returns a list of result dicts."""
    from .. import _launch

    results = []
    with stub_driver() as counts:
        for case in _cases(quick):
            if only and only not in case.name:
                continue
            call = case.setup()
            call()  # compiles
            call()
            before = counts.snapshot()
            with _launch.record(arguments=True) as launched:
                call()
            per_call = {k: v - before[k] for k, v in counts.snapshot().items()}
            bare = _bare(launched)
            bare()
            t_gpunn = _time(call, calls, repeats)
            t_bare = _time(bare, calls, repeats)
            results.append({"op": case.name, "us_per_call": t_gpunn * 1e6, "bare_numba_us": t_bare * 1e6,
                            "ratio": t_gpunn / t_bare if t_bare else float("nan"),
                            "kernels": [k.name for k, *_ in launched], **per_call})
    return results


def table(results) -> str:
    head = ("| op | µs per call | bare Numba launches of its kernels, µs | ratio | launches | allocations | H2D | D2H |"
            " syncs |")
    lines = [head, "|" + "---|" * 9]
    for r in results:
        lines.append(f"| {r['op']} | {r['us_per_call']:.1f} | {r['bare_numba_us']:.1f} | {r['ratio']:.2f}x | "
                     f"{r['launches']} | {r['allocations']} | {r['h2d']} | {r['d2h']} | {r['syncs']} |")
    return "\n".join(lines)


def run_child(quick=False, only=None, output=None) -> int:
    """``gpunn bench --host``: measure in a child process with the simulator off (the stub replaces the real CUDA
    target's driver calls, which the simulator would replace with its own), print the table, and write
    ``host.json``/``host.md`` under ``output`` when given."""
    import os
    import subprocess
    import sys

    argv = [sys.executable, "-m", "gpunn.bench.host"] + (["--quick"] if quick else []) + \
        (["--only", only] if only else []) + (["--output", output] if output else [])
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="0")
    return subprocess.run(argv, env=env).returncode


def main(argv=None) -> int:
    import argparse
    import json
    import os

    p = argparse.ArgumentParser(prog="python -m gpunn.bench.host", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smaller arrays (the counts are the same)")
    p.add_argument("--only", default=None, help="only the ops whose name contains this")
    p.add_argument("--output", default=None, help="directory for host.json and host.md")
    args = p.parse_args(argv)
    results = measure(quick=args.quick, only=args.only)
    text = table(results)
    print(text)
    if args.output:
        os.makedirs(args.output, exist_ok=True)
        with open(os.path.join(args.output, "host.json"), "w") as f:
            json.dump(results, f, indent=1)
        with open(os.path.join(args.output, "host.md"), "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
