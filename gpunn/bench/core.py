"""The benchmark harness: sizes, providers, timing, bytes, and the report (table, JSON, PNG).

How one figure is made (Triton's ``gbps``, llm.c's "napkin math"):

* Each entry states the bytes its op must move: every input read once, every output written once
  (``Entry.napkin`` says it in words, ``Entry.nbytes`` counts it). GB/s = those bytes / median time.
* Inputs rotate over enough copies ("sets") that the working set is several times the last-level cache (the GPU's
  L2, the CPU's L3), so a small size is not flattered by data left in the cache by the previous call.
* Timing: warm-up first (every set once: compiles, pages in, fills allocator caches), then ``repeats`` samples of
  ``k`` calls each, ``k`` chosen so a sample lasts at least ``min_sample_s``. On a GPU a sample is bracketed by
  CUDA events on the legacy default stream (which Numba, CuPy and PyTorch all launch on); on the CPU by
  ``time.perf_counter``. Reported: median time per call and the spread (q25, q75, min, max over the samples).
* The same run measures a plain copy that moves the same number of bytes (a device-to-device ``cudaMemcpy`` on the
  GPU, ``np.copyto`` on the CPU), so every figure also reads as a fraction of what the memory system gives.
* ``speedup_vs[peer]`` = peer's median time / gpunn's median time (above 1: gpunn is faster).

Providers: ``gpunn``; ``torch`` (CPU or CUDA, where importable); ``numpy`` (naive expressions, CPU) and ``cupy``
(the same naive expressions run by CuPy, GPU, where importable). No timing in Numba's CUDA simulator: there the
CPU providers run, NumPy arrays in.
"""

from __future__ import annotations

import datetime as _dt
import gc
import importlib
import inspect
import json
import math
import numbers
import os
import platform
import re
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

QUICK_SIZES = ("2^10", "2^16", "2^22")
FULL_SIZES = tuple(f"2^{k}" for k in range(10, 27, 2))


# ----------------------------------------------------------------------------------------------------------------------
# Sizes
# ----------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Size:
    """A problem size as given: ``n`` elements (``2^24``, ``16777216``, ``1e8``) or a 2-D shape (``4096x4096``)."""

    label: str
    shape: tuple  # (n,) or (rows, cols)

    @property
    def n(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


def _parse_int(text: str) -> int:
    text = text.strip()
    m = re.fullmatch(r"(\d+)\^(\d+)", text)
    if m:
        return int(m.group(1)) ** int(m.group(2))
    if re.fullmatch(r"\d+", text):
        return int(text)
    if re.fullmatch(r"\d+(\.\d+)?[eE]\d+", text):
        value = float(text)
        if value == int(value):
            return int(value)
    raise ValueError(f"size must look like 2^24, 16777216, 1e8 or 4096x4096, got {text!r}")


def parse_size(text) -> Size:
    """``"2^24"`` -> 16777216 elements; ``"8192x32768"`` -> a (8192, 32768) shape (rows x classes)."""
    if isinstance(text, Size):
        return text
    text = str(text).strip()
    parts = text.lower().split("x")
    if len(parts) > 2:
        raise ValueError(f"size must be N or ROWSxCOLS, got {text!r}")
    dims = tuple(_parse_int(p) for p in parts)
    if any(d < 1 for d in dims):
        raise ValueError(f"size must be positive, got {text!r}")
    if math.prod(dims) >= 2**62:  # byte counts must fit int64
        raise ValueError(f"size must be below 2^62 elements, got {text!r}")
    return Size(text, dims)


def rows_cols(size: Size, max_cols: int = 4096) -> tuple:
    """The (rows, cols) of a row-wise op (softmax, cross-entropy): the shape if given, else cols = min(n, 4096)."""
    if len(size.shape) == 2:
        return size.shape
    cols = min(size.n, max_cols)
    return (max(1, size.n // cols), cols)


# ----------------------------------------------------------------------------------------------------------------------
# Entries
# ----------------------------------------------------------------------------------------------------------------------
@dataclass
class Entry:
    """One benchmarked op.

    ``make(size, dtype, rng)`` returns the host (NumPy) arrays of one input set: inputs and preallocated outputs,
    by name (a value may be a list of arrays: the 200-tensor optimizer steps). ``impls[provider](arrays, ctx)`` gets
    those arrays converted to the provider's kind and returns a zero-argument callable that runs the op once.
    ``requires`` names the gpunn functions the entry needs (``"relu_backward"``, ``"optim.Adam"``): if one is
    missing, the entry is skipped with a note. ``nbytes(size, dtype)`` is the napkin math, in bytes.
    """

    name: str
    family: str
    napkin: str
    nbytes: Callable
    make: Callable
    impls: dict
    requires: tuple = ()
    max_sets: int = 256
    notes: dict = field(default_factory=dict)  # provider -> how it is run (e.g. "torch.optim.Adam(fused=True)")
    default_sizes: tuple | None = None  # overrides the quick/full sweep (the launch-overhead entry)
    shape: Callable | None = None  # size -> the shape actually run (row-wise ops: rows x cols); default size.shape


def gpunn_attr(path: str):
    """``gpunn.<path>`` (dots allowed: ``optim.Adam``), or None when that op has not landed."""
    obj = importlib.import_module("gpunn")
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def call_with(fn, *args, **kwargs):
    """Call ``fn`` with only those keyword arguments its signature accepts (``out=``, ``axis=`` vs ``dim=``)."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return fn(*args, **kwargs)
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return fn(*args, **kwargs)
    return fn(*args, **{k: v for k, v in kwargs.items() if k in params})


def accepts(fn, name: str) -> bool:
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


# ----------------------------------------------------------------------------------------------------------------------
# Providers and timers
# ----------------------------------------------------------------------------------------------------------------------
class Context:
    """What an entry's implementation needs to know: backend ("cpu" or "cuda"), dtype, and the array module ``xp``
    (NumPy on the CPU, CuPy on the GPU) for the naive provider."""

    def __init__(self, backend, dtype, provider, size):
        self.backend = backend
        self.dtype = np.dtype(dtype)
        self.provider = provider
        self.size = size
        self.xp = np if backend == "cpu" else _module("cupy")
        self.torch = _module("torch")
        self.note = None  # an implementation may record how it ran (e.g. which torch optimizer variant)


def _module(name):
    try:
        return importlib.import_module(name)
    except Exception:  # not installed, or broken on this machine: the provider is simply absent
        return None


def providers_for(backend: str) -> list[str]:
    """The providers available on this backend, gpunn first."""
    out = ["gpunn"]
    torch = _module("torch")
    if torch is not None and (backend == "cpu" or torch.cuda.is_available()):
        out.append("torch")
    if backend == "cpu":
        out.append("numpy")
    elif _module("cupy") is not None:
        out.append("cupy")
    return out


def impl_key(provider: str) -> str:
    """numpy and cupy run the same naive array-module code (``impls["xp"]``)."""
    return "xp" if provider in ("numpy", "cupy") else provider


def convert(value, provider: str, backend: str):
    """Host arrays (or lists of them) -> the provider's array kind on the backend."""
    if isinstance(value, list):
        return [convert(v, provider, backend) for v in value]
    if not isinstance(value, np.ndarray):
        return value
    if backend == "cpu":
        if provider == "torch":
            import torch

            return torch.from_numpy(value)
        return value  # gpunn and numpy take NumPy arrays
    if provider == "torch":
        import torch

        return torch.from_numpy(value).to("cuda")
    if provider == "cupy":
        import cupy

        return cupy.asarray(value)
    from numba import cuda  # gpunn on the GPU: Numba device arrays (its native kind, no interface conversion)

    return cuda.to_device(value)


class CpuTimer:
    name = "time.perf_counter"

    def sync(self):
        pass

    def batch(self, calls, start, k):
        m = len(calls)
        t0 = time.perf_counter()
        for j in range(k):
            calls[(start + j) % m]()
        return time.perf_counter() - t0


class CudaTimer:
    """CUDA events recorded on the legacy default stream, which waits for (and is waited on by) the default streams
    of Numba, CuPy and PyTorch: the interval covers every kernel the calls launched."""

    name = "CUDA events (legacy default stream)"

    def __init__(self):
        from numba import cuda

        self.cuda = cuda
        self.start = cuda.event(timing=True)
        self.end = cuda.event(timing=True)

    def sync(self):
        self.cuda.synchronize()

    def batch(self, calls, start, k):
        m = len(calls)
        self.cuda.synchronize()
        self.start.record()
        for j in range(k):
            calls[(start + j) % m]()
        self.end.record()
        self.end.synchronize()
        return self.cuda.event_elapsed_time(self.start, self.end) / 1e3


def cache_bytes(backend: str) -> int:
    """The last-level cache the rotation must defeat: the GPU's L2, else the CPU's L3 (32 MiB if unknown)."""
    if backend == "cuda":
        try:
            from numba import cuda

            return int(cuda.get_current_device().L2_CACHE_SIZE)
        except Exception:
            return 50 * 2**20
    best = 0
    for path in ("/sys/devices/system/cpu/cpu0/cache/index3/size", "/sys/devices/system/cpu/cpu0/cache/index2/size"):
        try:
            text = open(path).read().strip()
        except OSError:
            continue
        mult = {"K": 2**10, "M": 2**20, "G": 2**30}.get(text[-1:], 1)
        best = max(best, int(text.rstrip("KMG")) * mult)
    return best or 32 * 2**20


def set_count(set_bytes: int, backend: str, max_sets: int) -> int:
    """How many input sets to rotate over: enough for 4x the cache, at most ``max_sets`` (memory)."""
    return int(min(max_sets, max(1, math.ceil(4 * cache_bytes(backend) / max(set_bytes, 1)))))


def _host_bytes(value) -> int:
    """Bytes of the host arrays in ``value`` (an array, or a dict or list of them)."""
    if isinstance(value, dict):
        return sum(_host_bytes(v) for v in value.values())
    if isinstance(value, list):
        return sum(_host_bytes(v) for v in value)
    return value.nbytes if isinstance(value, np.ndarray) else 0


def measure(calls, timer, repeats: int, min_sample_s: float, max_k: int = 1 << 16) -> dict:
    """Median and spread of the time per call, rotating over ``calls`` (one per input set)."""
    m = len(calls)
    for c in calls:  # warm-up: compile, page in, fill allocator caches
        c()
    timer.batch(calls, 0, max(2, min(m, 8)))
    k = 1
    while True:
        t = timer.batch(calls, 0, k)
        if t >= min_sample_s / 4 or k >= max_k:
            break
        k *= 4
    k = int(min(max_k, max(1, math.ceil(k * min_sample_s / max(t, 1e-9)))))
    per_call = []
    start = 0
    for _ in range(repeats):
        per_call.append(timer.batch(calls, start, k) / k)
        start += k
    per_call.sort()
    q = statistics.quantiles(per_call, n=4) if len(per_call) > 1 else [per_call[0]] * 3
    med = statistics.median(per_call)
    return {"median_s": med, "q25_s": q[0], "q75_s": q[2], "min_s": per_call[0], "max_s": per_call[-1],
            "spread_pct": 100.0 * (q[2] - q[0]) / med if med > 0 else 0.0,
            "samples": len(per_call), "calls_per_sample": k, "sets": m}


# ----------------------------------------------------------------------------------------------------------------------
# The run
# ----------------------------------------------------------------------------------------------------------------------
def device_name(backend: str) -> str:
    if backend == "cuda":
        from .. import info

        return str(info().get("device", "cuda"))
    try:
        for line in open("/proc/cpuinfo"):
            if line.lower().startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} CPUs)"
    except OSError:
        pass
    return f"{platform.processor() or platform.machine()} ({os.cpu_count()} CPUs)"


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "device"


def select(entries, ops=None):
    """Entries matching one of the comma-separated patterns: a name (``relu.fwd``), a name's first part (``relu``:
    relu.fwd and relu.bwd, not leaky_relu), a glob (``adam*``) or a family (``losses``)."""
    if not ops:
        return list(entries)
    import fnmatch

    pats = [p.strip() for p in (ops.split(",") if isinstance(ops, str) else ops) if p.strip()]
    return [e for e in entries
            if any(e.name == p or e.name.startswith(p + ".") or fnmatch.fnmatchcase(e.name, p) or e.family == p
                   for p in pats)]


def _free(backend):
    gc.collect()
    if backend != "cuda":
        return
    try:  # Numba defers freeing device memory; flush it so the next case has the whole GPU
        from numba import cuda

        cuda.current_context().deallocations.clear()
    except Exception:
        pass
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()
    cupy = sys.modules.get("cupy")
    if cupy is not None:
        cupy.get_default_memory_pool().free_all_blocks()


class _CopyCache:
    """The copy reference, measured once per byte count in this run."""

    def __init__(self, backend, timer, repeats, min_sample_s, max_sets=256):
        self.backend, self.timer, self.repeats, self.min_sample_s = backend, timer, repeats, min_sample_s
        self.max_sets = max_sets
        self.results = {}

    def __call__(self, nbytes: int) -> dict:
        if nbytes in self.results:
            return self.results[nbytes]
        half = max(1, nbytes // 2)  # a copy of half the bytes reads half and writes half: it moves ``nbytes``
        sets = set_count(2 * half, self.backend, self.max_sets)
        if self.backend == "cpu":
            pairs = [(np.zeros(half, np.uint8), np.ones(half, np.uint8)) for _ in range(sets)]
            calls = [(lambda d=d, s=s: np.copyto(d, s)) for d, s in pairs]
            how = "np.copyto"
        else:
            from numba import cuda

            pairs = [(cuda.device_array(half, np.uint8), cuda.to_device(np.ones(half, np.uint8)))
                     for _ in range(sets)]
            calls = [(lambda d=d, s=s: d.copy_to_device(s)) for d, s in pairs]
            how = "device-to-device cudaMemcpy (numba copy_to_device)"
        r = measure(calls, self.timer, self.repeats, self.min_sample_s)
        del pairs, calls
        _free(self.backend)
        r.update(bytes=2 * half, gbps=2 * half / r["median_s"] / 1e9, how=how)
        self.results[nbytes] = r
        return r


def run(entries=None, *, ops=None, sizes=None, full=False, backend=None, providers=None, dtype="float32",
        repeats=None, min_sample_s=None, output=None, stem="bench", plot=True, log=print, seed=0, max_sets=None, timer=None,
        _simulator_as_cuda=False):
    """Run the benchmark and return the results dict (also written to ``output``/``stem``.json/.md and plots).

    Args:
        entries: the Entry list (default: every entry in :mod:`gpunn.bench.entries`).
        ops: comma-separated filter on entry names and families ("relu", "activations", "adam*").
        sizes: sizes to run (``"2^24"``, ``"4096x4096"``); default: a quick few, or the 2^10..2^26 sweep with ``full``.
        backend: "cpu" or "cuda" (default: cuda when gpunn's mode is cuda, else cpu; never the simulator).
        providers: subset of gpunn, torch, numpy, cupy (default: all available; gpunn always runs).
        output: directory for the JSON, the Markdown table and the PNG plots (None: write nothing).
        max_sets: at most this many rotating input sets (default: each entry's own cap; fewer makes small sizes
            cache-resident, so use it only to make a run quick, never for figures you report).
        timer, _simulator_as_cuda: for the harness's own tests only (drive the device code path through Numba's
            simulator with a wall-clock timer; such figures mean nothing).
    """
    from .. import _runtime
    from .. import info as gpunn_info

    if entries is None:
        from .entries import ENTRIES as entries
    mode = _runtime.mode()
    backend = backend or ("cuda" if mode == "cuda" else "cpu")
    if backend not in ("cpu", "cuda"):
        raise ValueError(f"backend must be 'cpu' or 'cuda', got {backend!r}")
    if backend == "cuda" and mode != "cuda" and not (_simulator_as_cuda and mode == "simulator"):
        raise RuntimeError(f"backend 'cuda' needs a real GPU (gpunn mode is {mode!r}); no timing in the simulator")
    for name, value in (("repeats", repeats), ("max_sets", max_sets)):
        if value is not None and (not isinstance(value, numbers.Integral) or value < 1):
            raise ValueError(f"{name} must be an integer >= 1 (or None for the default), got {value!r}")
    dtype = np.dtype(dtype)
    avail = providers_for(backend)
    if providers:
        wanted = [p.strip() for p in (providers.split(",") if isinstance(providers, str) else providers)]
        bad = [p for p in wanted if p not in ("gpunn", "torch", "numpy", "cupy")]
        if bad:
            raise ValueError(f"providers must be among gpunn, torch, numpy, cupy; got {', '.join(bad)}")
        avail = [p for p in avail if p in wanted or p == "gpunn"]
    repeats = repeats if repeats is not None else (21 if backend == "cuda" else 9)
    min_sample_s = min_sample_s or (0.002 if backend == "cuda" else 0.01)
    timer = timer or (CudaTimer() if backend == "cuda" else CpuTimer())
    copy_ref = _CopyCache(backend, timer, repeats, min_sample_s, max_sets or 256)
    chosen = select(entries, ops)
    if not chosen:
        raise ValueError(f"no benchmark entry matches --ops {ops!r}")
    rng = np.random.default_rng(seed)
    results, skipped = [], []
    started = time.time()
    data = {
        "schema": 1,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "complete": False,
        "device": device_name(backend),
        "backend": backend,
        "dtype": str(dtype),
        "providers": avail,
        "timer": timer.name,
        "repeats": repeats,
        "min_sample_s": min_sample_s,
        "max_sets": max_sets,
        "cache_bytes": cache_bytes(backend),
        "threads": _threads(),
        "loadavg_start": _loadavg(),
        "loadavg_end": None,
        "info": gpunn_info(),
        "command": " ".join(["gpunn"] + sys.argv[1:]),  # not argv[0]: a path on the machine that ran it
        "wall_s": None,
        "results": results,
        "skipped": skipped,
    }
    log(f"gpunn bench: backend {backend} ({data['device']}), {dtype}, providers {', '.join(avail)}, "
        f"timer {timer.name}, {repeats} samples")
    for entry in chosen:
        missing = [r for r in entry.requires if all(gpunn_attr(a) is None for a in r.split("|"))]
        if missing:
            note = f"{entry.name}: skipped, gpunn has no {', '.join(missing)} yet"
            log("  " + note)
            skipped.append(note)
            continue
        entry_sizes = sizes or entry.default_sizes or (FULL_SIZES if full else QUICK_SIZES)
        for size in map(parse_size, entry_sizes):
            row = _run_one(entry, size, backend, dtype, avail, timer, repeats, min_sample_s, rng, copy_ref, log,
                           skipped, max_sets)
            if row is not None:
                results.append(row)
                log(format_row(row))
            _free(backend)
        if output:  # after every entry, so a run cut short by a time limit still leaves its figures
            data.update(wall_s=round(time.time() - started, 1), loadavg_end=_loadavg())
            write(data, output, stem, plot=False, log=lambda *a: None, markdown_too=False)
    data.update(complete=True, wall_s=round(time.time() - started, 1), loadavg_end=_loadavg())
    if output:
        write(data, output, stem, plot=plot, log=log)
    return data


def _loadavg():
    """The 1/5/15-minute load average: a busy machine makes CPU figures slower and noisier."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def _threads() -> dict:
    out = {"cpu_count": os.cpu_count(), "NUMBA_NUM_THREADS": None, "numba": None}
    try:
        import numba

        out["NUMBA_NUM_THREADS"] = numba.config.NUMBA_NUM_THREADS
        out["numba"] = numba.get_num_threads()
    except Exception:
        pass
    torch = sys.modules.get("torch")
    if torch is not None:
        out["torch"] = torch.get_num_threads()
    return out


def _run_one(entry, size, backend, dtype, avail, timer, repeats, min_sample_s, rng, copy_ref, log, skipped,
             max_sets=None):
    try:
        one = entry.make(size, dtype, rng)
    except ValueError as exc:  # a size that does not fit this entry (e.g. too few elements for 200 tensors)
        skipped.append(f"{entry.name} @ {size.label}: {exc}")
        log(f"  {entry.name} @ {size.label}: skipped ({exc})")
        return None
    nbytes = int(entry.nbytes(size, dtype))
    sets = set_count(_host_bytes(one), backend, min(entry.max_sets, max_sets or entry.max_sets))
    host_sets = [one] + [entry.make(size, dtype, rng) for _ in range(sets - 1)]
    shape = tuple(int(d) for d in (entry.shape(size) if entry.shape else size.shape))
    row = {"op": entry.name, "family": entry.family, "size": size.label, "shape": list(shape),
           "n": int(np.prod(shape, dtype=np.int64)), "dtype": str(dtype), "bytes": nbytes, "napkin": entry.napkin,
           "sets": sets,
           "providers": {}, "speedup_vs": {}, "fraction_of_copy": {}}
    for provider in avail:
        impl = entry.impls.get(impl_key(provider))
        if impl is None:
            continue
        ctx = Context(backend, dtype, provider, size)
        try:
            arrays = [{k: convert(v, provider, backend) for k, v in s.items()} for s in host_sets]
            calls = [impl(a, ctx) for a in arrays]
            r = measure(calls, timer, repeats, min_sample_s)
        except Exception as exc:  # a peer that cannot run this case (or a gpunn failure) is reported, not fatal
            if provider == "gpunn":
                raise
            note = f"{entry.name} @ {size.label}: {provider} failed: {type(exc).__name__}: {exc}"
            skipped.append(note)
            log("  " + note)
            continue
        finally:
            arrays = calls = None
            _free(backend)
        r["gbps"] = nbytes / r["median_s"] / 1e9
        how = ctx.note or entry.notes.get(provider) or entry.notes.get(impl_key(provider))
        if how:
            r["how"] = how
        row["providers"][provider] = r
    del host_sets, one
    copy = copy_ref(nbytes)
    row["copy"] = {k: copy[k] for k in ("median_s", "q25_s", "q75_s", "gbps", "bytes", "how")}
    for p, r in row["providers"].items():
        row["fraction_of_copy"][p] = r["gbps"] / copy["gbps"] if copy["gbps"] > 0 else None
    g = row["providers"].get("gpunn")
    if g:
        for p, r in row["providers"].items():
            if p != "gpunn":
                row["speedup_vs"][p] = r["median_s"] / g["median_s"]
    return row


# ----------------------------------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------------------------------
def _fmt_time(s: float) -> str:
    if s < 1e-3:
        return f"{s * 1e6:.1f} us"
    if s < 1:
        return f"{s * 1e3:.2f} ms"
    return f"{s:.2f} s"


def _fmt_bytes(b: int) -> str:
    for unit, div in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if b >= div:
            return f"{b / div:.1f} {unit}"
    return f"{b} B"


HEADER = ("op", "size", "bytes", "provider", "median", "spread", "GB/s", "of copy", "gpunn speedup")


def table_rows(row):
    """One table line per provider of a result row."""
    lines = []
    for p, r in row["providers"].items():
        frac = row["fraction_of_copy"].get(p)
        sp = "" if p == "gpunn" else (f"{row['speedup_vs'][p]:.2f}x" if p in row["speedup_vs"] else "")
        lines.append((row["op"], row["size"], _fmt_bytes(row["bytes"]), p, _fmt_time(r["median_s"]),
                      f"±{r['spread_pct'] / 2:.1f}%", f"{r['gbps']:.1f}", f"{100 * frac:.0f}%" if frac else "", sp))
    c = row.get("copy")
    if c:
        lines.append((row["op"], row["size"], _fmt_bytes(row["bytes"]), "copy", _fmt_time(c["median_s"]), "",
                      f"{c['gbps']:.1f}", "100%", ""))
    return lines


def format_row(row) -> str:
    return "\n".join("  " + "  ".join(f"{v:>{w}}" for v, w in zip(line, (22, 11, 9, 6, 10, 7, 8, 7, 8)))
                     for line in table_rows(row))


def markdown(data) -> str:
    out = [f"# gpunn bench: {data['device']}", "",
           f"backend {data['backend']}, {data['dtype']}, {data['timer']}, {data['repeats']} samples, "
           f"created {data['created']}, load average {data.get('loadavg_start')} -> {data.get('loadavg_end')}; "
           "versions: "
           + ", ".join(f"{k} {v}" for k, v in data["info"].items() if k not in ("mode", "device")), "",
           "Bytes: every input read once, every output written once (the napkin line of each op). "
           "`of copy`: GB/s as a fraction of a copy moving the same bytes in the same run. "
           "`gpunn speedup`: the peer's median time / gpunn's (above 1: gpunn is faster). "
           "Spread: half the interquartile range of the samples.", "",
           "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for row in data["results"]:
        for line in table_rows(row):
            out.append("| " + " | ".join(line) + " |")
    napkins = {}
    for row in data["results"]:
        napkins.setdefault(row["op"], row["napkin"])
    out += ["", "## Napkin math (bytes each op must move)", ""]
    out += [f"- `{op}`: {text}" for op, text in napkins.items()]
    hows = {}
    for row in data["results"]:
        for p, r in row["providers"].items():
            if r.get("how"):
                hows.setdefault((p, r["how"]), []).append(row["op"])
    if hows:
        out += ["", "## How each provider ran", ""]
        out += [f"- {p}: {how} ({', '.join(dict.fromkeys(ops))})" for (p, how), ops in hows.items()]
    out += ["", f"Threads: {data.get('threads')}; rotating input sets per case: see `sets` in the JSON."]
    if data["skipped"]:
        out += ["", "## Skipped", ""] + [f"- {s}" for s in data["skipped"]]
    return "\n".join(out) + "\n"


def plot_results(data, directory: str) -> list[str]:
    """One PNG per op: GB/s against size (elements), a line per provider and the copy reference."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_op = {}
    for row in data["results"]:
        by_op.setdefault(row["op"], []).append(row)
    os.makedirs(directory, exist_ok=True)
    paths = []
    for op, rows in by_op.items():
        rows = sorted(rows, key=lambda r: r["n"])
        fig, ax = plt.subplots(figsize=(6, 4))
        provs = list(dict.fromkeys(p for r in rows for p in r["providers"]))
        for p in provs:
            pts = [(r["n"], r["providers"][p]["gbps"]) for r in rows if p in r["providers"]]
            ax.plot(*zip(*pts), marker="o", label=p)
        pts = [(r["n"], r["copy"]["gbps"]) for r in rows if r.get("copy")]
        if pts:
            ax.plot(*zip(*pts), linestyle="--", color="gray", label="copy (same bytes)")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("elements")
        ax.set_ylabel("GB/s")
        ax.set_title(f"{op} ({data['dtype']}) on {data['device']}", fontsize=9)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = os.path.join(directory, f"{slug(op)}.png")
        fig.savefig(path, dpi=80)
        plt.close(fig)
        paths.append(path)
    return paths


def write(data, output: str, stem: str = "bench", plot=True, log=print, markdown_too=True) -> dict:
    """Write ``stem``.json, ``stem``.md and (with ``plot``) ``stem``-plots/<op>.png under ``output``."""
    os.makedirs(output, exist_ok=True)
    paths = {"json": os.path.join(output, f"{stem}.json"), "md": os.path.join(output, f"{stem}.md")}
    tmp = paths["json"] + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1)
    os.replace(tmp, paths["json"])
    if not markdown_too:
        return paths
    with open(paths["md"], "w") as f:
        f.write(markdown(data))
    if plot and data["results"]:
        try:
            paths["plots"] = plot_results(data, os.path.join(output, f"{stem}-plots"))
        except ImportError:
            log("  plots skipped: matplotlib is not installed")
    log(f"wrote {paths['json']} and {paths['md']}" + (f" and {len(paths['plots'])} plots" if "plots" in paths else ""))
    return paths


def headlines(data) -> list[str]:
    """One line per result: gpunn's time, GB/s and fraction of the copy, and the speedup over each peer."""
    out = []
    for row in data["results"]:
        g = row["providers"].get("gpunn")
        if not g:
            continue
        peers = ", ".join(f"{p} {_fmt_time(row['providers'][p]['median_s'])} (gpunn {x:.2f}x)"
                          for p, x in row["speedup_vs"].items())
        out.append(f"{row['op']} @ {row['size']} [{_fmt_bytes(row['bytes'])}]: gpunn {_fmt_time(g['median_s'])} "
                   f"±{g['spread_pct'] / 2:.1f}%, {g['gbps']:.1f} GB/s = "
                   f"{100 * row['fraction_of_copy']['gpunn']:.0f}% "
                   f"of copy ({row['copy']['gbps']:.1f} GB/s); " + (peers or "no peers"))
    return out


def summarize(directory: str) -> str:
    """The headlines of every benchmark JSON in ``directory``, then the goals judged from them (what
    device_check.sh prints and keeps); empty when ``directory`` holds no benchmark JSON."""
    import glob

    from .goals import goal_lines

    parts, datasets = [], []
    for path in sorted(glob.glob(os.path.join(directory, "*.json"))):
        with open(path) as f:
            try:
                data = json.load(f)
            except ValueError as exc:
                raise ValueError(f"{path} is not valid JSON ({exc})") from None
        if not isinstance(data, dict) or "results" not in data:
            continue
        datasets.append(data)
        state = "" if data.get("complete") else " (INCOMPLETE: cut short)"
        parts.append(f"## {os.path.basename(path)}: {data['device']}, {data['backend']}, {data['dtype']}{state}")
        parts += [f"- {line}" for line in headlines(data)]
        parts += [f"- skipped: {s}" for s in data.get("skipped", [])]
        parts.append("")
    if not datasets:
        return ""
    parts += ["## Goals", ""] + [f"- {line}" for line in goal_lines(datasets)]
    return "\n".join(parts) + "\n"
