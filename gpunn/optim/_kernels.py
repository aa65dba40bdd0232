r"""The fused step's kernels: one launch updates every parameter of one dtype and its state; a check pass before it.

**Device.** The parameters stay where they are. A *tensor table* (int64 rows: parameter address, gradient address,
size, vector flag) and a *chunk table* (rows: tensor row, first element, length, state offset) tell each block what
to update (the state buffers are passed by address too); a block walks chunks in a grid-stride loop and its threads walk a chunk's elements. A kernel reaches any
number of separate arrays through their addresses (gpunn/_vector.py ``address_array``), so one launch serves 1 or
200,000 parameters. The optimizer owns its state as one flat buffer per state tensor, each parameter's part at an
offset rounded up to a 16-byte boundary. Where a parameter, its gradient and its state are 16-byte aligned alike
(the vector flag), a thread moves two 128-bit vectors of each per iteration, every load issued before the first
store; other parameters, and chunk tails, go element by element.

The step's *decision* stays on the device: the check pass (with ``grad_scale`` or ``max_grad_norm``) leaves float64
block partials of the gradients' sum of squares and count of non-finite values; every block of the step kernel sums
them in the same fixed order and derives the same ``gscale`` (unscale and clip) or skip. The applied-step count and
the optimizer's one flag (SGD: momentum initialised) live in a small status buffer, twice: every block reads slot 0,
block 0 writes the next values to slot 1, and the last block of the step's last kernel to finish (an atomic counter
of arrived blocks) copies slot 1 to slot 0. No launch argument changes from step to step but the ring index, so a
step can be captured in a CUDA graph and replayed; a ring of skip flags lets ``step()`` return a lazy result. So a
step reads nothing back: no synchronisation.

**CPU.** The same scalar math in ``numba.njit`` loops, one pass per parameter, the state flags compile-time
constants (a conditional load or store keeps LLVM from vectorising); the check pass sums fixed 65,536-element chunks
in float64 and the chunk sums in order (the same bits for any thread count). The host decides and counts.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from numba import cuda, float64, int64, njit, prange

from .. import _cache, _cpu, _reduce, _vector
from .._runtime import simulator

CHUNK_GPU = 1 << 14      # elements per chunk on a GPU: 2^24 parameters make 1024 chunks, enough to fill an H100
CHUNK_SIM = 64           # in the simulator: tests of a few hundred elements cross chunk borders
CHUNK_CPU = 1 << 16      # the CPU check pass's fixed chunk
THREADS_SIM = 8          # threads per block in the simulator (each is a Python thread)
# registers per thread, the fewest with no spill in any variant (`gpunn kernels`, sm_80 and sm_90): three 256-thread
# blocks per SM for float32, two for float64 (Adam's float64 variants spill at 80)
MAX_REGISTERS = {"float32": 80, "float64": 96}
F64_MAX = float(np.finfo(np.float64).max)

# The status buffer (float64): the applied-step count and the optimizer's flag, each twice (read [0], write [1], the
# step's last block copies [1] to [0]), then RING skip flags (step call k writes [STATUS_RING + k % RING]).
STATUS_COUNT, STATUS_FLAG, STATUS_RING = 0, 2, 4
RING = 64


# ---- the decision, from the check pass's totals (host and device alike) ----------------------------------------------
@_cache.njit(inline="always")  # also called from the host (CPU steps)
def decision(sumsq, nonfinite, check, inv_scale, max_norm):
    """(gscale, skip): skip when a gradient is not finite; else the factor that unscales (``inv_scale`` =
    1 / grad_scale) and clips to the global L2 norm ``max_norm`` (0: no clipping) as ``min(1, c / (norm + 1e-6))``.
    Without a check pass (``check`` 0) the factor is ``inv_scale`` and nothing is skipped."""
    if check == 0:
        return inv_scale, False
    if nonfinite > 0.0:
        return 0.0, True
    if max_norm > 0.0:
        norm = math.sqrt(sumsq) * inv_scale
        return inv_scale * min(1.0, max_norm / (norm + 1e-6)), False
    return inv_scale, False


# ---- device ----------------------------------------------------------------------------------------------------------
def _lanes(update, w, dtype):
    """``apply(pv, gv, av, bv, dv, k)``: ``update`` on each of the ``w`` lanes of one vector per array; returns the
    new (p, s0, s1, s2) vectors."""
    if w == 4:
        @njit(inline="always")
        def apply4(pv, gv, av, bv, dv, k):
            r0 = update(pv[0], gv[0], av[0], bv[0], dv[0], k)
            r1 = update(pv[1], gv[1], av[1], bv[1], dv[1], k)
            r2 = update(pv[2], gv[2], av[2], bv[2], dv[2], k)
            r3 = update(pv[3], gv[3], av[3], bv[3], dv[3], k)
            return ((r0[0], r1[0], r2[0], r3[0]), (r0[1], r1[1], r2[1], r3[1]), (r0[2], r1[2], r2[2], r3[2]),
                    (r0[3], r1[3], r2[3], r3[3]))

        return apply4

    @njit(inline="always")
    def apply2(pv, gv, av, bv, dv, k):
        r0 = update(pv[0], gv[0], av[0], bv[0], dv[0], k)
        r1 = update(pv[1], gv[1], av[1], bv[1], dv[1], k)
        return (r0[0], r1[0]), (r0[1], r1[1]), (r0[2], r1[2]), (r0[3], r1[3])

    return apply2


def _typed_results(fn, dtype):
    """``fn`` returning its results as ``dtype`` scalars. In the simulator a kernel is Python: a compiled helper's
    float32 results come back as Python floats, and the next compiled call would then compute in float64."""
    cast = dtype.type

    def typed_fn(*args):
        return tuple(cast(v) for v in fn(*args))

    return typed_fn


@functools.lru_cache(maxsize=None)
def step_dispatcher(math_fns, dtype, uses, block):
    """The fused step kernel for one optimizer's ``(prepare, update)`` (specialised to its flags), a parameter dtype,
    the state tensors in ``uses`` (compile-time) and the block size."""
    prepare, update = math_fns
    load, store, address_array = _vector.ops()
    dtype = np.dtype(dtype)
    if simulator():
        prepare = _typed_results(prepare, dtype)
    w = _vector.width(dtype)
    gather, scatter = _vector.masked(dtype)
    apply = _lanes(update, w, dtype)
    block_sum = _reduce.block_sum_fn(block)
    like = dtype.type(0.0)
    itemsize = dtype.itemsize
    zeros = (like,) * w
    use0, use1, use2 = uses
    # vectors of every array per iteration: enough for >= 4 loads in flight (p, g and the state read); two vectors
    # of Adam's 4-5 arrays would need more registers than MAX_REGISTERS
    vectors = 2 if 2 + sum(uses) < 4 else 1

    @cuda.jit(device=True, inline="always")
    def finish(status, arrivals, commit):
        """The block arrives; the grid's last block to arrive copies slot 1 (the next count and flag) into slot 0 if
        ``commit`` (the step's last kernel) and re-arms ``arrivals`` for the next kernel. Every block read slot 0
        before it arrived, so the copy races with no reader, and nothing here depends on the host's call count: a
        CUDA graph's replay advances the count."""
        cuda.syncthreads()  # the block's work done
        if cuda.threadIdx.x == 0:
            cuda.threadfence()  # block 0's slot-1 write is visible before it arrives
            arrived = cuda.atomic.add(arrivals, 0, 1)
            if arrived == cuda.gridDim.x - 1:
                cuda.threadfence()  # after every arrival: see what the other blocks wrote before theirs
                if commit:
                    status[STATUS_COUNT] = status[STATUS_COUNT + 1]
                    status[STATUS_FLAG] = status[STATUS_FLAG + 1]
                arrivals[0] = 0

    @cuda.jit(device=True, inline="always")
    def update_chunks(chunks, tensors, s0, s1, s2, k):
        """This block's chunks, updated with the step's scalars ``k`` (in the parameter dtype)."""
        tid = cuda.threadIdx.x
        for c in range(int64(cuda.blockIdx.x), chunks.shape[0], int64(cuda.gridDim.x)):
            t = chunks[c, 0]
            start = chunks[c, 1] * itemsize
            n = chunks[c, 2]
            state = chunks[c, 3] * itemsize
            p = address_array(tensors[t, 0] + start, n, like)  # this chunk of the parameter, its gradient and state
            g = address_array(tensors[t, 1] + start, n, like)
            a = address_array(s0 + state, n if use0 else 0, like)
            b = address_array(s1 + state, n if use1 else 0, like)
            d = address_array(s2 + state, n if use2 else 0, like)
            aligned = tensors[t, 3]
            for i in range(tid * w, n, vectors * block * w):
                j = i + block * w
                two = vectors == 2 and j < n
                if not two:
                    j = i  # no second vector: read the first twice (the compiler drops it), store it once
                if aligned and j + w <= n:  # whole aligned vectors: 128-bit loads, all before the first store
                    p0, g0, p1, g1 = load(p, i), load(g, i), load(p, j), load(g, j)
                    a0 = load(a, i) if use0 else zeros
                    a1 = load(a, j) if use0 else zeros
                    b0 = load(b, i) if use1 else zeros
                    b1 = load(b, j) if use1 else zeros
                    d0 = load(d, i) if use2 else zeros
                    d1 = load(d, j) if use2 else zeros
                else:  # the chunk's tail, or an unaligned tensor: lane by lane
                    p0, g0, p1, g1 = gather(p, i, n, like), gather(g, i, n, like), gather(p, j, n, like), \
                        gather(g, j, n, like)
                    a0 = gather(a, i, n, like) if use0 else zeros
                    a1 = gather(a, j, n, like) if use0 else zeros
                    b0 = gather(b, i, n, like) if use1 else zeros
                    b1 = gather(b, j, n, like) if use1 else zeros
                    d0 = gather(d, i, n, like) if use2 else zeros
                    d1 = gather(d, j, n, like) if use2 else zeros
                r0 = apply(p0, g0, a0, b0, d0, k)
                r1 = apply(p1, g1, a1, b1, d1, k)
                if aligned and j + w <= n:
                    store(p, i, r0[0])
                    if use0:
                        store(a, i, r0[1])
                    if use1:
                        store(b, i, r0[2])
                    if use2:
                        store(d, i, r0[3])
                    if two:
                        store(p, j, r1[0])
                        if use0:
                            store(a, j, r1[1])
                        if use1:
                            store(b, j, r1[2])
                        if use2:
                            store(d, j, r1[3])
                else:
                    scatter(p, i, n, r0[0])
                    if use0:
                        scatter(a, i, n, r0[1])
                    if use1:
                        scatter(b, i, n, r0[2])
                    if use2:
                        scatter(d, i, n, r0[3])
                    if two:
                        scatter(p, j, n, r1[0])
                        if use0:
                            scatter(a, j, n, r1[1])
                        if use1:
                            scatter(b, j, n, r1[2])
                        if use2:
                            scatter(d, j, n, r1[3])

    @cuda.jit(**({} if simulator() else {"max_registers": MAX_REGISTERS[dtype.name]}))
    def _optim_step_kernel(chunks, tensors, s0, s1, s2, host, partials, check, inv_scale, max_norm, status, arrivals,
                           commit, ring):
        tid = cuda.threadIdx.x
        sq = float64(0.0)
        bad = float64(0.0)
        for j in range(tid, partials.shape[1], block):  # every block: the same partials in the same order
            sq += partials[0, j]
            bad += partials[1, j]
        sq = block_sum(sq)
        bad = block_sum(bad)
        gscale, skip = decision(sq, bad, check, inv_scale, max_norm)
        count = status[STATUS_COUNT]  # every block reads slot 0 before it arrives (see finish)
        flag = status[STATUS_FLAG]
        if cuda.blockIdx.x == 0 and tid == 0:
            status[STATUS_COUNT + 1] = count if skip else count + 1.0
            status[STATUS_FLAG + 1] = flag if skip or not use0 else 1.0
            status[STATUS_RING + ring] = 1.0 if skip else 0.0
        if not skip:  # a skipped step still arrives: no return before finish
            update_chunks(chunks, tensors, s0, s1, s2, prepare(host, count + 1.0, gscale, flag))
        finish(status, arrivals, commit)

    return _optim_step_kernel


@functools.lru_cache(maxsize=None)
def check_dispatcher(dtype, block):
    """The check pass: per block, the float64 sum of g^2 over finite g (row 0) and the count of non-finite g (row 1),
    written to ``partials[:, first + blockIdx.x]``."""
    load, _, address_array = _vector.ops()
    dtype = np.dtype(dtype)
    w = _vector.width(dtype)
    block_sum = _reduce.block_sum_fn(block)
    like = dtype.type(0.0)

    @njit(inline="always")
    def add(sq, bad, x):
        v = float64(x)
        if abs(v) <= F64_MAX:  # finite (false for inf and NaN)
            return sq + v * v, bad
        return sq, bad + 1.0

    @cuda.jit
    def _optim_grad_sum_kernel(chunks, tensors, partials, first):
        tid = cuda.threadIdx.x
        sq = float64(0.0)
        bad = float64(0.0)
        for c in range(int64(cuda.blockIdx.x), chunks.shape[0], int64(cuda.gridDim.x)):
            t = chunks[c, 0]
            start = chunks[c, 1]
            end = start + chunks[c, 2]
            g = address_array(tensors[t, 1], tensors[t, 2], like)
            scalar_from = start
            if tensors[t, 3]:
                vec_end = start + (end - start) // w * w
                for i in range(start + tid * w, vec_end, block * w):
                    v = load(g, i)
                    for lane in range(w):
                        sq, bad = add(sq, bad, v[lane])
                scalar_from = vec_end
            for i in range(scalar_from + tid, end, block):
                sq, bad = add(sq, bad, g[i])
        sq = block_sum(sq)
        bad = block_sum(bad)
        if tid == 0:
            partials[0, first + cuda.blockIdx.x] = sq
            partials[1, first + cuda.blockIdx.x] = bad

    return _optim_grad_sum_kernel


def step_signature(dtype, n_host) -> str:
    return (f"void(int64[:, ::1], int64[:, ::1], int64, int64, int64, UniTuple(float64, {n_host}), "
            f"float64[:, ::1], int64, float64, float64, float64[::1], int32[::1], int64, int64)")


def check_signature(dtype) -> str:
    return "void(int64[:, ::1], int64[:, ::1], float64[:, ::1], int64)"


# ---- CPU ---------------------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def step_cpu(update, dtype, uses):
    """One pass over one parameter (``_cpu.Loops``), its state read and written in place; ``uses`` compile-time."""
    zero = np.dtype(dtype).type(0.0)
    use0, use1, use2 = uses

    def _optim_step_cpu(p, g, s0, s1, s2, k):
        for i in prange(p.size):
            a = s0[i] if use0 else zero
            b = s1[i] if use1 else zero
            d = s2[i] if use2 else zero
            p[i], a, b, d = update(p[i], g[i], a, b, d, k)
            if use0:
                s0[i] = a
            if use1:
                s1[i] = b
            if use2:
                s2[i] = d

    return _cpu.loops(_optim_step_cpu)


def _grad_sum(g, chunk):
    """(sum of g^2 over finite g, number of non-finite g), float64, in fixed chunks summed in order."""
    n = g.size
    nch = (n + chunk - 1) // chunk
    sq = np.zeros(nch)
    bad = np.zeros(nch)
    for c in prange(nch):
        acc = 0.0
        nb = 0.0
        for i in range(c * chunk, min(n, (c + 1) * chunk)):
            x = float64(g[i])
            if abs(x) <= F64_MAX:
                acc += x * x
            else:
                nb += 1.0
        sq[c] = acc
        bad[c] = nb
    total = 0.0
    nbad = 0.0
    for c in range(nch):
        total += sq[c]
        nbad += bad[c]
    return total, nbad


grad_sum_cpu = _cpu.loops(_grad_sum)
