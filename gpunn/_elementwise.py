"""Elementwise ops from one scalar function: a grid-stride CUDA kernel and a parallel CPU loop.

An op module writes its scalar math once, as ``numba.njit`` functions built per dtype (so constants are typed
``float32(1.0)``, never a float64 literal), and this module turns each into

* ``_map1``: ``out[i] = f(x[i], a, b)`` (forward ops), and
* ``_map2``: ``out[i] = f(dy[i], x[i], a, b)`` (backward ops),

each as a CUDA kernel (64-bit grid-stride loop) and a CPU loop (``prange`` over the elements, one fused pass;
gpunn/_cpu.py builds and runs it).
``a`` and ``b`` are the op's scalar parameters (negative_slope, alpha, beta, ...), cast to the array dtype on the
host and passed as kernel arguments, so a new value does not recompile.
"""

import functools

import numpy as np
from numba import cuda, int64, prange

from . import _cpu
from ._args import Args
from ._launch import Kernel, block_size


@functools.lru_cache(maxsize=None)
def _map1(f):
    @cuda.jit
    def kernel(x, a, b, out):
        for i in range(int64(cuda.grid(1)), x.size, int64(cuda.gridsize(1))):
            out[i] = f(x[i], a, b)

    def cpu(x, a, b, out):
        for i in prange(x.size):
            out[i] = f(x[i], a, b)

    return kernel, _cpu.loops(cpu)


@functools.lru_cache(maxsize=None)
def _map2(f):
    @cuda.jit
    def kernel(dy, x, a, b, out):
        for i in range(int64(cuda.grid(1)), x.size, int64(cuda.gridsize(1))):
            out[i] = f(dy[i], x[i], a, b)

    def cpu(dy, x, a, b, out):
        for i in prange(x.size):
            out[i] = f(dy[i], x[i], a, b)

    return kernel, _cpu.loops(cpu)


SIGNATURES = {1: "void({0}[::1], {0}, {0}, {0}[::1])", 2: "void({0}[::1], {0}[::1], {0}, {0}, {0}[::1])"}


@functools.lru_cache(maxsize=None)
def _kernel(f, arity, dtype):
    build = _map1 if arity == 1 else _map2
    return Kernel(build(f)[0], SIGNATURES[arity].format(np.dtype(dtype).name), f"map{arity}[{f.__name__}]")


def _run(f, arity, args, names, params, cpu_loops=None):
    arrays = [args.flat(n) for n in names]
    n = arrays[-1].size
    if n:
        scalars = [args.dtype.type(p) for p in params]
        call = arrays[:-1] + scalars + arrays[-1:]
        if args.device:
            kernel = _kernel(f, arity, args.dtype)
            block_size()
            kernel.over(n, args.stream, *call)
        else:
            build = _map1 if arity == 1 else _map2
            loops = cpu_loops(args.dtype) if cpu_loops is not None else build(f)[1]
            _cpu.run(loops, "elementwise", n, *call)
    args.finish()


def forward(f_for_dtype, x, out, a=0.0, b=0.0, stream=None):
    """``out = f(x)`` elementwise; ``f_for_dtype(dtype)`` gives the op's scalar njit function for that dtype."""
    args = Args(stream=stream, x=x)
    out = args.output("out", out, x.shape)
    _run(f_for_dtype(args.dtype), 1, args, ["x", "out"], (a, b))
    return out


def backward(f_for_dtype, dy, x, out, a=0.0, b=0.0, x_name="x", cpu_loops=None, stream=None):
    """``out = f(dy, x)`` elementwise (``x`` is the saved value: the input, or the output for sigmoid/tanh).
    ``cpu_loops(dtype)``, if given, supplies the op's own CPU loops (``_cpu.Loops``), same arguments as ``_map2``'s
    (for an op whose generic loop LLVM compiles poorly); the CUDA kernel is always the generic one."""
    args = Args(stream=stream, dy=dy, **{x_name: x})
    args.same_shape("dy", x_name)
    out = args.output("out", out, x.shape)
    _run(f_for_dtype(args.dtype), 2, args, ["dy", x_name, "out"], (a, b), cpu_loops)
    return out


def typed(dtype, *values):
    """The given Python numbers as scalars of ``dtype`` (closure constants that keep float32 math in float32)."""
    t = np.dtype(dtype).type
    return tuple(t(v) for v in values)


def register(name, forward_math, backward_math):
    """Register an elementwise op's forward and backward kernels with the kernel build check."""
    from . import _registry

    _registry.for_dtypes(f"{name}_forward", lambda dt: _map1(forward_math(dt))[0], SIGNATURES[1].format)
    _registry.for_dtypes(f"{name}_backward", lambda dt: _map2(backward_math(dt))[0], SIGNATURES[2].format)
