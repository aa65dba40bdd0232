"""Elementwise ops from one scalar function: a vectorised grid-stride CUDA kernel and a parallel CPU loop.

An op module writes its scalar math once, as ``numba.njit`` functions built per dtype (so constants are typed
``float32(1.0)``, never a float64 literal), and this module turns each into

* ``_map1``: ``out[i] = f(x[i], a, b)`` (forward ops), and
* ``_map2``: ``out[i] = f(dy[i], x[i], a, b)`` (backward ops),

each as a CUDA kernel and a CPU loop (``prange`` over the elements, one fused pass; gpunn/_cpu.py builds and runs
it). ``a`` and ``b`` are the op's scalar parameters (negative_slope, alpha, beta, ...), cast to the compute dtype on
the host and passed as kernel arguments, so a new value does not recompile.

float16 and bfloat16 (gpunn/_half.py): the scalar math is the float32 one, wrapped to load each half, compute in
float32 and store the result rounded to the input's dtype; the kernels index uint16 storage.

The CUDA kernel moves data in 128-bit vectors (gpunn/_vector.py: 8 halves, 4 float32 or 2 float64 per access) and loads
``UNROLL`` vectors of every input before its first store, so that each thread keeps several 16-byte loads in flight.
A call is cut into a scalar head up to the first 16-byte boundary (computed on the host; it must be the same for every
array of the call, else every element takes the scalar path), the aligned body and a scalar tail. Indices are 64-bit
and every loop is grid-stride, so any grid is correct.
"""

import functools

import numpy as np
from numba import cuda, int64, njit, prange

from . import _cpu, _half, _registry, _vector
from ._args import Args
from ._launch import Kernel

UNROLL = 4  # vectors per input that a thread loads before it stores


def _lanes(f, arity, dtype):
    """``apply(vectors..., a, b)``: ``f`` on each lane of one vector of each input, as a tuple."""
    w = _vector.width(dtype)
    if w == 8:
        if arity == 1:
            return njit(inline="always")(
                lambda v, a, b: (f(v[0], a, b), f(v[1], a, b), f(v[2], a, b), f(v[3], a, b),
                                 f(v[4], a, b), f(v[5], a, b), f(v[6], a, b), f(v[7], a, b)))
        return njit(inline="always")(
            lambda d, v, a, b: (f(d[0], v[0], a, b), f(d[1], v[1], a, b), f(d[2], v[2], a, b), f(d[3], v[3], a, b),
                                f(d[4], v[4], a, b), f(d[5], v[5], a, b), f(d[6], v[6], a, b), f(d[7], v[7], a, b)))
    if w == 4:
        if arity == 1:
            return njit(inline="always")(
                lambda v, a, b: (f(v[0], a, b), f(v[1], a, b), f(v[2], a, b), f(v[3], a, b)))
        return njit(inline="always")(
            lambda d, v, a, b: (f(d[0], v[0], a, b), f(d[1], v[1], a, b), f(d[2], v[2], a, b), f(d[3], v[3], a, b)))
    if arity == 1:
        return njit(inline="always")(lambda v, a, b: (f(v[0], a, b), f(v[1], a, b)))
    return njit(inline="always")(lambda d, v, a, b: (f(d[0], v[0], a, b), f(d[1], v[1], a, b)))


@functools.lru_cache(maxsize=None)
def _map1(f, dtype):
    load, store, _ = _vector.ops()
    w = _vector.width(dtype)
    apply = _lanes(f, 1, dtype)

    @cuda.jit
    def _map1_kernel(x, a, b, out, head):
        n = x.size
        tid = int64(cuda.grid(1))
        stride = int64(cuda.gridsize(1))
        for i in range(tid, head, stride):  # scalar head: up to the first aligned element
            out[i] = f(x[i], a, b)
        nvec = (n - head) // w
        step = stride * w
        for v in range(tid, nvec, UNROLL * stride):
            i0 = head + v * w
            if v + (UNROLL - 1) * stride < nvec:  # four vectors: every load issued before the first store
                x0, x1, x2, x3 = load(x, i0), load(x, i0 + step), load(x, i0 + 2 * step), load(x, i0 + 3 * step)
                store(out, i0, apply(x0, a, b))
                store(out, i0 + step, apply(x1, a, b))
                store(out, i0 + 2 * step, apply(x2, a, b))
                store(out, i0 + 3 * step, apply(x3, a, b))
            else:
                for k in range(UNROLL):
                    if v + k * stride < nvec:
                        store(out, i0 + k * step, apply(load(x, i0 + k * step), a, b))
        for i in range(head + nvec * w + tid, n, stride):  # scalar tail
            out[i] = f(x[i], a, b)

    def cpu(x, a, b, out):
        for i in prange(x.size):
            out[i] = f(x[i], a, b)

    return _map1_kernel, _cpu.loops(cpu)


@functools.lru_cache(maxsize=None)
def _map2(f, dtype):
    load, store, _ = _vector.ops()
    w = _vector.width(dtype)
    apply = _lanes(f, 2, dtype)

    @cuda.jit
    def _map2_kernel(dy, x, a, b, out, head):
        n = x.size
        tid = int64(cuda.grid(1))
        stride = int64(cuda.gridsize(1))
        for i in range(tid, head, stride):
            out[i] = f(dy[i], x[i], a, b)
        nvec = (n - head) // w
        step = stride * w
        for v in range(tid, nvec, UNROLL * stride):
            i0 = head + v * w
            if v + (UNROLL - 1) * stride < nvec:  # eight 128-bit loads in flight before the first store
                d0, d1, d2, d3 = load(dy, i0), load(dy, i0 + step), load(dy, i0 + 2 * step), load(dy, i0 + 3 * step)
                x0, x1, x2, x3 = load(x, i0), load(x, i0 + step), load(x, i0 + 2 * step), load(x, i0 + 3 * step)
                store(out, i0, apply(d0, x0, a, b))
                store(out, i0 + step, apply(d1, x1, a, b))
                store(out, i0 + 2 * step, apply(d2, x2, a, b))
                store(out, i0 + 3 * step, apply(d3, x3, a, b))
            else:
                for k in range(UNROLL):
                    if v + k * stride < nvec:
                        j = i0 + k * step
                        store(out, j, apply(load(dy, j), load(x, j), a, b))
        for i in range(head + nvec * w + tid, n, stride):
            out[i] = f(dy[i], x[i], a, b)

    def cpu(dy, x, a, b, out):
        for i in prange(x.size):
            out[i] = f(dy[i], x[i], a, b)

    return _map2_kernel, _cpu.loops(cpu)


# {a}: the arrays' storage dtype, {s}: the scalars' compute dtype (gpunn/_half.py)
SIGNATURES = {1: "void({a}[::1], {s}, {s}, {a}[::1], int64)", 2: "void({a}[::1], {a}[::1], {s}, {s}, {a}[::1], int64)"}


def _storage_math(f_for_dtype, arity, dtype):
    """The op's scalar function on storage values of ``dtype`` (the float32 math wrapped for a half dtype)."""
    p = _half.precision(dtype)
    wrap = _half.wrap1 if arity == 1 else _half.wrap2
    return wrap(f_for_dtype(p.compute), p.name)


@functools.lru_cache(maxsize=None)
def _kernel(f, arity, dtype):
    """``f``: the op's function on storage values of ``dtype``."""
    build = _map1 if arity == 1 else _map2
    storage = _half.precision(dtype).storage
    return Kernel(build(f, storage)[0], SIGNATURES[arity].format(**_half.signature_names(dtype)),
                  f"map{arity}[{f.__name__}]")


def work_items(n, head, dtype) -> int:
    """Threads a vectorised launch over ``n`` elements can use: one per ``UNROLL`` vectors of the body, or per
    element of the scalar head and tail."""
    w = _vector.width(dtype)
    nvec = (n - head) // w
    return max(head, -(-nvec // UNROLL), n - head - nvec * w, 1)


def _run(f_for_dtype, arity, args, names, params, cpu_loops=None):
    arrays = [args.flat(n) for n in names]
    n = arrays[-1].size
    if n:
        p = args.precision
        f = _storage_math(f_for_dtype, arity, p.dtype)
        scalars = [p.compute.type(v) for v in params]
        call = arrays[:-1] + scalars + arrays[-1:]
        if args.device:
            head = _vector.common_head(arrays, n)
            _kernel(f, arity, p.dtype).over(work_items(n, head, p.storage), args.stream, *call, np.int64(head))
        else:
            build = _map1 if arity == 1 else _map2
            loops = cpu_loops(p.dtype) if cpu_loops is not None and not p.half else build(f, p.storage)[1]
            _cpu.run(loops, "elementwise", n, *call)
    args.finish()


_NO_PARAM = 0.0  # the default of a and b: an op without parameters (its typed zeros are made once)


def forward(f_for_dtype, x, out, a=_NO_PARAM, b=_NO_PARAM, stream=None):
    """``out = f(x)`` elementwise; ``f_for_dtype(dtype)`` gives the op's scalar njit function for a compute dtype
    (float32 or float64; half arrays use the float32 one)."""
    if _plain_host(x, x, out):
        return _run_host(f_for_dtype, 1, None, (x,), out, a, b)
    args = Args(stream=stream, half=True, x=x)
    out = args.output("out", out, x.shape)
    _run(f_for_dtype, 1, args, ["x", "out"], (a, b))
    return out


def backward(f_for_dtype, dy, x, out, a=_NO_PARAM, b=_NO_PARAM, x_name="x", cpu_loops=None, stream=None):
    """``out = f(dy, x)`` elementwise (``x`` is the saved value: the input, or the output for sigmoid/tanh).
    ``cpu_loops(dtype)``, if given, supplies the op's own CPU loops (``_cpu.Loops``) for float32/float64, same
    arguments as ``_map2``'s (for an op whose generic loop LLVM compiles poorly); the CUDA kernel is always the
    generic one."""
    if _plain_host(x, dy, out):
        return _run_host(f_for_dtype, 2, cpu_loops, (dy, x), out, a, b)
    args = Args(stream=stream, half=True, dy=dy, **{x_name: x})
    args.same_shape("dy", x_name)
    out = args.output("out", out, x.shape)
    _run(f_for_dtype, 2, args, ["dy", x_name, "out"], (a, b), cpu_loops)
    return out


# ---- the host fast path: NumPy arrays that need no view, copy or check beyond these ---------------------------------
_F32, _F64 = np.dtype(np.float32), np.dtype(np.float64)


def _plain_host(x, other, out):
    """True when ``x`` and ``other`` are C-contiguous NumPy arrays of one shape and float dtype, and ``out`` is None or
    a writable C-contiguous NumPy array like them that provably overlaps none of them or is exactly one of them: arrays
    that own their memory (``base`` None) share none. Anything else takes the general path (``Args``), which checks
    it in full and names what is wrong."""
    if type(x) is not np.ndarray or type(other) is not np.ndarray:
        return False
    dtype = x.dtype
    if (dtype is not _F32 and dtype is not _F64) or other.dtype is not dtype or other.shape != x.shape:
        return False
    if not (x.flags.c_contiguous and other.flags.c_contiguous):
        return False
    if out is None:
        return True
    if type(out) is not np.ndarray or out.dtype is not dtype or out.shape != x.shape:
        return False
    flags = out.flags
    if not (flags.c_contiguous and flags.writeable):
        return False
    owners = x.base is None and other.base is None
    return (x is other or owners) and (out is x or out is other or (owners and out.base is None))


_host_loops = {}  # (f_for_dtype, arity, cpu_loops, dtype) -> _cpu.Loops
_NO_PARAMS = {dt: (dt.type(0.0), dt.type(0.0)) for dt in (_F32, _F64)}


def _run_host(f_for_dtype, arity, cpu_loops, inputs, out, a, b):
    """``_run`` for arrays that passed :func:`_plain_host`: the same loops, without building ``Args``."""
    dtype = inputs[-1].dtype
    key = (f_for_dtype, arity, cpu_loops, dtype)
    loops = _host_loops.get(key)
    if loops is None:
        build = _map1 if arity == 1 else _map2
        loops = _host_loops[key] = cpu_loops(dtype) if cpu_loops is not None else build(f_for_dtype(dtype), dtype)[1]
    scalars = _NO_PARAMS[dtype] if a is _NO_PARAM and b is _NO_PARAM else (dtype.type(a), dtype.type(b))
    if out is None:
        out = np.empty(inputs[-1].shape, dtype)
    n = out.size
    if n:
        flat = out if out.ndim == 1 else out.reshape(-1)
        _cpu.run(loops, "elementwise", n, *[v if v.ndim == 1 else v.reshape(-1) for v in inputs], *scalars, flat)
    return out


def typed(dtype, *values):
    """The given Python numbers as scalars of ``dtype`` (closure constants that keep float32 math in float32)."""
    t = np.dtype(dtype).type
    return tuple(t(v) for v in values)


def register(name, forward_math, backward_math):
    """Register an elementwise op's forward and backward kernels (every float dtype) with the kernel build check."""
    def build(math, arity):
        def for_dtype(dt):
            return (_map1 if arity == 1 else _map2)(_storage_math(math, arity, dt), _half.precision(dt).storage)[0]

        return for_dtype

    for arity, suffix, math in ((1, "forward", forward_math), (2, "backward", backward_math)):
        _registry.for_dtypes(f"{name}_{suffix}", build(math, arity),
                             lambda dt, arity=arity: SIGNATURES[arity].format(**_half.signature_names(dt)),
                             vector_loads=True, dtypes=_registry.WITH_HALF)
