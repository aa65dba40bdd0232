"""Deterministic sums on the device: block partials, then a fixed-order final pass. No float atomics.

Reductions accumulate in float64 (per thread, across the block tree and in the final pass), whatever the data's
dtype, so that a mean over 10^8 float32 values keeps about 15 digits before its final rounding (never a long float32
chain; docs/definitions.md, "Numerics"). These are the only gpunn kernels with float64 arithmetic on float32 data; the
kernel build check knows them by name (``_sum`` in the name).

How a kernel uses this module (the same grid for the same size, so the same bits every run)::

    block_partial = block_partial_fn(BLOCK)       # BLOCK = block_size(), a compile-time constant

    @cuda.jit
    def _thing_sum_kernel(x, partials):          # partials: float64[n_blocks] (or [rows, n_blocks])
        acc = float64(0.0)
        for i in range(start, n, stride):         # the thread's fixed slice of the grid-stride loop
            acc += value(i)
        block_partial(acc, partials, 0)           # block tree-sum, thread 0 writes partials[row, blockIdx.x]

    finish(partials, scale, out, stream)         # out[row] = scale * sum(partials[row, :]), fixed order
"""

import functools

import numpy as np
from numba import cuda, float32, float64, int64

from . import _half
from ._launch import Kernel, block_size, sm_count, typed_view, workspace
from ._runtime import simulator


@functools.lru_cache(maxsize=None)
def block_sum_fn(block):
    """Device function ``block_sum(acc) -> total``: the sum of ``acc`` over the block's threads, in a fixed tree order
    (shared memory; runs in the simulator, which has no warp shuffles). Every thread of the block must call it (it
    synchronises); every thread gets the total."""

    @cuda.jit(device=True)
    def block_sum(acc):
        buf = cuda.shared.array(block, float64)
        t = cuda.threadIdx.x
        buf[t] = acc
        cuda.syncthreads()
        step = block // 2
        while step > 0:
            if t < step:
                buf[t] += buf[t + step]
            cuda.syncthreads()
            step //= 2
        total = buf[0]
        cuda.syncthreads()  # buf may be reused by the caller's next block_sum
        return total

    return block_sum


@functools.lru_cache(maxsize=None)
def block_partial_fn(block):
    """Device function ``block_partial(acc, partials, row)``: :func:`block_sum_fn` of ``acc``, written by thread 0 to
    ``partials[row, blockIdx.x]``. Every thread of the block must call it."""
    block_sum = block_sum_fn(block)

    # inline="always": a kernel that calls block_partial twice (cross_entropy_rows_sum, optim_grad_sum) otherwise
    # links block_sum's module twice and NVVM rejects it ("Linking globals named '_cudapy_smem_1': symbol multiply
    # defined", ERROR_INVALID_IR) on a real GPU; the simulator does not link, so only `gpunn kernels` shows it.
    @cuda.jit(device=True, inline="always")
    def block_partial(acc, partials, row):
        total = block_sum(acc)
        if cuda.threadIdx.x == 0:
            partials[row, cuda.blockIdx.x] = total

    return block_partial


@functools.lru_cache(maxsize=None)
def _finish_kernel(block, name="float64"):
    block_sum = block_sum_fn(block)
    prec = _half.precision(name)
    single = prec.compute == np.float32
    st = prec.store

    @cuda.jit
    def _finish_sum_kernel(partials, scale, out):
        # one block per row; thread t sums partials[row, t::block] serially, then the block tree: a fixed order
        row = cuda.blockIdx.x
        acc = float64(0.0)
        for j in range(int64(cuda.threadIdx.x), partials.shape[1], block):
            acc += partials[row, j]
        total = block_sum(acc)
        if cuda.threadIdx.x == 0:
            if single:
                out[row] = st(float32(total * scale))  # a half: rounded to float32, then to the half
            else:
                out[row] = total * scale

    return _finish_sum_kernel


def reduce_grid(n):
    """(blocks, threads) for a reduction over ``n`` items: depends on ``n`` and the device only (determinism)."""
    threads = block_size()
    if simulator():
        return (1 if n <= threads else 2), threads
    return max(1, min(-(-max(n, 1) // threads), sm_count() * 4)), threads


def partials(args, rows, blocks, slot="partials"):
    """A float64 (rows, blocks) workspace for block partials of ``args``' call (on its stream)."""
    buf = workspace(args.array(args.first), rows * blocks * 8, args.stream, slot)
    return typed_view(buf, np.float64, (rows, blocks))


@functools.lru_cache(maxsize=None)
def _finish(block, name):
    return Kernel(_finish_kernel(block, name), _finish_signature(name), "reduce_finish_sum")


def _finish_signature(name):
    return f"void(float64[:, ::1], float64, {_half.precision(name).storage.name}[::1])"


def finish(partials, scale, out, stream, dtype=None):
    """``out[r] = scale * sum_j partials[r, j]`` (float64 sum, fixed order); ``out`` a 1-D device array with
    ``partials.shape[0]`` entries, of float dtype ``dtype`` (default ``out.dtype``; a half ``out`` may be given as
    its uint16 storage); ``scale`` a Python float (a kernel argument: no host copy)."""
    block = block_size()
    name = _half.name_of(dtype if dtype is not None else out.dtype)
    _finish(block, name)(partials.shape[0], block, stream, partials, np.float64(scale), out.storage())


def _register():
    from . import _registry

    block = 256  # the GPU block size (block_size() outside the simulator)
    _registry.for_dtypes("reduce_finish_sum", lambda dt: _finish_kernel(block, _half.name_of(dt)), _finish_signature,
                         f64_accumulator=True, dtypes=_registry.WITH_HALF)


_register()
