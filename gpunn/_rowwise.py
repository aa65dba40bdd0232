r"""Row-wise ops on one machinery: softmax and log-softmax (and their gradients), cross-entropy, multi-margin.

An op reduces each *row* (the values along one axis) to a few row constants, then writes one value per element. It
is written as small ``njit`` functions of scalars (:class:`RowMath`), and this module runs them on every layout:

* ``init(k) -> state``, ``push(state, a, b, w, c, pre, k) -> state`` (element ``c`` of the row: ``a`` from the first
  input, ``b`` from the second or 0, ``w`` the class weight ``w[c]`` or 1), ``merge(s1, s2) -> state``
  (associative; used in a fixed order): the row's state, a 4-tuple of the data dtype (an online softmax keeps
  ``(max, sum)``);
* ``finish(state, pre, k, gn) -> (consts, loss, den, bad)``: the row constants, the row's loss (or 0), its weight in
  a 'mean' (or 0) and whether the row is an input error; ``gn`` is the row's gradient factor (upstream gradient
  times scale);
* ``emit(a, b, w, c, pre, consts, k) -> value``: the element's output.

``pre`` is what a row needs before its elements: ``(y, w[y], x[y], code)`` for a class-index target (code 0: fine,
1: not a class index, 2: ignored), zeros otherwise; ``k`` is the op's four scalar parameters. A row is *read once*
and its output *written once* when it fits (up to ``MAX_ROW`` = 4096 float32 elements, 2048 float64): its elements
stay in registers between the two passes, so softmax and cross-entropy with gradient move 8 bytes per float32
element. A block that holds a row has at most 256 threads, so even at 255 registers per thread it can launch.

Layouts (``Layout(outer, n, inner)``: a C-contiguous array seen as ``(outer, n, inner)``, rows along ``n``):

* ``inner == 1`` (the last axis), ``n <= 32 * 8``: a warp per row, eight rows per block, the row reduced by warp
  shuffles; up to ``MAX_ROW``: a block per row, warp shuffles then one more warp over the per-warp results;
* ``inner == 1`` and longer rows: the row is cut into chunks of a block's width, spread over all SMs; a first kernel
  reduces each chunk, a second merges the row's chunks in chunk order (every block of the row the same way) and
  writes its chunk (12 bytes per float32 element);
* ``inner > 1`` (another axis, K-d cross-entropy): a thread per row, the row read with stride ``inner`` (coalesced
  across threads), held in registers up to ``MAX_COLUMN`` elements, else read twice.

Reductions are float32 for float32 data (float64 for float64), in a fixed order: a thread's elements in order, then a
shuffle tree (``shfl_down`` offsets 16, 8, 4, 2, 1), then the warps' results in warp order. The CUDA simulator has no
warp shuffles: there a shuffle is emulated through shared memory with the same tree, so the simulator checks the very
order the GPU runs; the shuffles themselves run only on a GPU (tests marked ``gpu``). A row's loss is summed over
rows in float64 block partials and a fixed-order finish (gpunn/_reduce.py): float64 per row, never per element.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import numpy as np
from numba import cuda, float64, int64

from . import _errors
from ._launch import Kernel, block_size, current_device_id
from ._runtime import simulator

WARP = 32
WARP_ROW = 8 * WARP    # rows up to this long take a warp each
MAX_K = 16             # float32 elements per thread held in registers (float64: 8, as each takes two registers)
MAX_BLOCK = 256        # threads of a block that holds one row: 256 x 255 registers fit an SM, so it always launches
MAX_ROW = MAX_BLOCK * MAX_K  # float32 rows up to this long are read once (longer ones: chunks, read twice)
SIM_MAX_ROW = 2 * WARP * 4   # the simulator's MAX_ROW
MAX_COLUMN = 16        # elements of a strided row (inner > 1) held in registers
FULL_MASK = 0xFFFFFFFF


class Layout(NamedTuple):
    """A C-contiguous array as (outer, n, inner): ``outer * inner`` rows of ``n`` elements, the element ``c`` of row
    ``r = o * inner + i`` at flat index ``o * n * inner + c * inner + i``."""

    outer: int
    n: int
    inner: int

    @property
    def rows(self) -> int:
        return self.outer * self.inner


def layout(shape, axis, name="x") -> Layout:
    """The layout of rows along ``axis`` of an array of ``shape`` (a 0-d array counts as shape (1,)); a TypeError or
    ValueError naming ``axis`` if it is not a valid axis."""
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise TypeError(f"axis must be an int, got {type(axis).__name__}")
    shape = tuple(int(d) for d in shape) or (1,)
    ndim = len(shape)
    if not -ndim <= axis < ndim:
        raise ValueError(f"axis {axis} is out of range for {name} with {ndim} dimension{'s' if ndim > 1 else ''} "
                         f"(expected -{ndim} <= axis < {ndim})")
    axis = int(axis) % ndim
    outer = int(np.prod(shape[:axis], dtype=np.int64))
    inner = int(np.prod(shape[axis + 1:], dtype=np.int64))
    return Layout(outer, shape[axis], inner)


class RowMath(NamedTuple):
    """An op's scalar math (see the module docstring) and what its kernel reads and writes."""

    init: object
    push: object
    merge: object
    finish: object
    emit: object
    two_inputs: bool = False   # a second element input (softmax's backward: y; probability targets)
    weighted: bool = False     # reads the class weight w[c] per element
    prelude: str = "none"      # "none", "class" (cross-entropy targets) or "margin" (multi-margin targets)
    emits: bool = True         # writes an output per element
    loss: bool = False         # writes a loss per row


# ---- fixed-order reductions of a 4-tuple state -----------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def _shuffles(dtype):
    """``(down, broadcast)`` of a 4-tuple state: ``shfl_down_sync`` by ``offset`` / ``shfl_sync`` from lane 0 of each
    value on a GPU; in the simulator the same exchange through shared memory (every thread of the block must call
    them there, as they synchronise)."""
    if not simulator():
        @cuda.jit(device=True, inline="always")
        def down(s, offset):
            return (cuda.shfl_down_sync(FULL_MASK, s[0], offset), cuda.shfl_down_sync(FULL_MASK, s[1], offset),
                    cuda.shfl_down_sync(FULL_MASK, s[2], offset), cuda.shfl_down_sync(FULL_MASK, s[3], offset))

        @cuda.jit(device=True, inline="always")
        def broadcast(s):
            return (cuda.shfl_sync(FULL_MASK, s[0], 0), cuda.shfl_sync(FULL_MASK, s[1], 0),
                    cuda.shfl_sync(FULL_MASK, s[2], 0), cuda.shfl_sync(FULL_MASK, s[3], 0))

        return down, broadcast
    nbt = np.dtype(dtype)

    @cuda.jit(device=True)
    def exchange(s, source):
        # every thread publishes its state, then reads thread `source`'s
        buf = cuda.shared.array((4, 1024), nbt)
        t = cuda.threadIdx.x
        buf[0, t], buf[1, t], buf[2, t], buf[3, t] = s[0], s[1], s[2], s[3]
        cuda.syncthreads()
        r = (buf[0, source], buf[1, source], buf[2, source], buf[3, source])
        cuda.syncthreads()
        return r

    @cuda.jit(device=True)
    def down(s, offset):
        t = cuda.threadIdx.x
        return exchange(s, t + offset if t % WARP + offset < WARP else t)  # past the warp's end: its own value

    @cuda.jit(device=True)
    def broadcast(s):
        t = cuda.threadIdx.x
        return exchange(s, t - t % WARP)

    return down, broadcast


@functools.lru_cache(maxsize=None)
def _warp_reduce(merge, dtype):
    """``reduce(state, k) -> state``: the warp's states merged by a shuffle tree; every lane gets lane 0's result
    (``k`` unused: the signature of the block's reduce)."""
    down, broadcast = _shuffles(dtype)

    @cuda.jit(device=True, inline="always")
    def reduce(s, k):
        s = merge(s, down(s, 16))
        s = merge(s, down(s, 8))
        s = merge(s, down(s, 4))
        s = merge(s, down(s, 2))
        s = merge(s, down(s, 1))
        return broadcast(s)

    return reduce


@functools.lru_cache(maxsize=None)
def _block_reduce(merge, init, dtype, block):
    """``reduce(state, k) -> state`` over a block: each warp's tree, then the warps' results in warp order (a tree
    over ``block // 32`` lanes, the missing lanes the identity ``init(k)``); every thread gets the result."""
    warp_reduce = _warp_reduce(merge, dtype)
    nbt = np.dtype(dtype)
    warps = block // WARP

    @cuda.jit(device=True, inline="always")
    def reduce(s, k):
        buf = cuda.shared.array((4, 32), nbt)
        t = cuda.threadIdx.x
        lane, warp = t % WARP, t // WARP
        s = warp_reduce(s, k)
        if lane == 0:
            buf[0, warp], buf[1, warp], buf[2, warp], buf[3, warp] = s[0], s[1], s[2], s[3]
        cuda.syncthreads()
        z = init(k)
        w = (buf[0, lane], buf[1, lane], buf[2, lane], buf[3, lane]) if lane < warps else z
        w = warp_reduce(w, k)  # every warp reduces the same values: no divergent shuffles
        cuda.syncthreads()  # buf may be reused by the next row
        return w

    return reduce


def _typed_results(fn, dtype):
    """Simulator only: ``fn`` (a compiled helper called from a simulated kernel) with its float results cast back to
    ``dtype`` (they come back to Python as floats, and the next compiled call would compute in float64)."""
    cast = np.dtype(dtype).type

    def cast_all(v):
        if isinstance(v, tuple):
            return tuple(cast_all(e) for e in v)
        return cast(v) if isinstance(v, float) else v

    def typed_fn(*args):
        return cast_all(fn(*args))

    return typed_fn


def _for_mode(math_fns: RowMath, dtype) -> RowMath:
    if not simulator():
        return math_fns
    return math_fns._replace(**{k: _typed_results(getattr(math_fns, k), dtype)
                                for k in ("init", "push", "merge", "finish", "emit")})


# ---- kernels ---------------------------------------------------------------------------------------------------------
# Every kernel takes the same arguments (unused ones get placeholders), so one runner launches them all:
#   a, b            the element inputs (1-D, C-contiguous; b a placeholder when the op reads one)
#   w, t            class weights (C,) and class-index targets (one per row), or placeholders
#   outer, n, inner the layout; ignore: cross-entropy's ignore_index
#   k               the op's four scalar parameters (data dtype)
#   dy, dmode, g    the upstream gradient: up(row) = g (dmode 0), dy[0] g (1), dy[row] g (2)
#   scale, use_scale  a device scalar multiplying up(row) (the 'mean' denominator found on the device) when set
#   out, loss_rows  the element output and the per-row losses
#   partials        float64 (2, blocks): per block, the sum of row losses and of row weights (the 'mean' denominator)
#   flags, slot     gpunn/_errors.py: flags[slot] = min(2 row + kind) over bad rows (kind 0: target, 1: the row)
COMMON = "{0}[::1], {0}[::1], {0}[::1], {1}[::1], int64, int64, int64, int64, UniTuple({0}, 4)"
SIGNATURE = "void(" + COMMON + ", {0}[::1], int64, {0}, {0}[::1], int64, {0}[::1], {0}[::1], float64[:, ::1], " \
    "int64[::1], int64{2})"


def _row_prelude(math_fns, dtype):
    """``prelude(a, w, t, row, base, cstride, n, ignore) -> pre`` as kernel code (array reads stay in kernels: the
    simulator cannot hand device arrays to compiled helpers), for the op's kind of per-row targets."""
    zero = np.dtype(dtype).type(0.0)
    kind = math_fns.prelude

    if kind == "none":
        @cuda.jit(device=True, inline="always")
        def prelude(a, w, t, row, base, cstride, n, ignore):
            return int64(0), zero, zero, int64(0)

        return prelude

    @cuda.jit(device=True, inline="always")
    def prelude(a, w, t, row, base, cstride, n, ignore):
        y = int64(t[row])
        if kind == "class" and y == ignore:
            return y, zero, zero, int64(2)
        if y < 0 or y >= n:
            return y, zero, zero, int64(1)  # never read a[base + y cstride] out of the row
        return y, w[y], a[base + y * cstride], int64(0)

    return prelude


@functools.lru_cache(maxsize=None)
def _upstream(dtype):
    @cuda.jit(device=True, inline="always")
    def upstream(dy, dmode, g, scale, use_scale, row):
        up = (dy[row] if dmode == 2 else dy[0]) * g if dmode else g
        return up * scale[0] if use_scale else up

    return upstream


@functools.lru_cache(maxsize=None)
def rows_kernel(math_fns: RowMath, dtype, block, group, per_thread):
    """A group of ``group`` threads (a warp, or the whole block) per row of up to ``group * per_thread`` elements,
    the row held in registers between the reduction and the writes."""
    m = _for_mode(math_fns, dtype)
    # kernels call the functions through closure names (a NamedTuple attribute would type as a CPU dispatcher)
    init, push, merge, finish, emit = m.init, m.push, m.merge, m.finish, m.emit
    nbt = np.dtype(dtype)
    zero, one = nbt.type(0.0), nbt.type(1.0)
    reduce = _block_reduce(merge, init, dtype, block) if group == block else _warp_reduce(merge, dtype)
    prelude = _row_prelude(math_fns, dtype)
    upstream = _upstream(dtype)
    from ._reduce import block_partial_fn

    block_partial = block_partial_fn(block)
    K, two, weighted, emits, writes_loss = per_thread, m.two_inputs, m.weighted, m.emits, m.loss
    rows_per_block = block // group

    @cuda.jit
    def _rows_kernel(a, b, w, t, outer, n, inner, ignore, k, dy, dmode, g, scale, use_scale, out, loss_rows,
                     partials, flags, slot):
        va = cuda.local.array(K, nbt)
        vb = cuda.local.array(K, nbt)
        tid = cuda.threadIdx.x
        lane = tid % group
        acc_loss = float64(0.0)
        acc_den = float64(0.0)
        rows = outer * inner
        for first in range(int64(cuda.blockIdx.x) * rows_per_block, rows, int64(cuda.gridDim.x) * rows_per_block):
            row = first + tid // group  # the same trip count for every thread: they all shuffle and sync
            live = row < rows
            base = row * n
            pre = prelude(a, w, t, row, base, 1, n, ignore) if live else (int64(0), zero, zero, int64(1))
            s = init(k)
            for j in range(K):
                c = lane + j * group
                if live and c < n and pre[3] != 1:
                    va[j] = a[base + c]
                    vb[j] = b[base + c] if two else zero
                    s = push(s, va[j], vb[j], w[c] if weighted else one, c, pre, k)
            s = reduce(s, k)
            gn = upstream(dy, dmode, g, scale, use_scale, row) if live else zero
            consts, loss, den, bad = finish(s, pre, k, gn)
            if live and lane == 0:
                if pre[3] == 1:
                    cuda.atomic.min(flags, slot, 2 * row)
                elif bad:
                    cuda.atomic.min(flags, slot, 2 * row + 1)
                if writes_loss:
                    loss_rows[row] = loss
                acc_loss += float64(loss)
                acc_den += float64(den)
            if emits and live:
                for j in range(K):
                    c = lane + j * group
                    if c < n:
                        out[base + c] = emit(va[j], vb[j], w[c] if weighted else one, c, pre, consts, k)
        if writes_loss:  # every thread or none: block_partial synchronises
            block_partial(acc_loss, partials, 0)
            block_partial(acc_den, partials, 1)

    return _rows_kernel


@functools.lru_cache(maxsize=None)
def chunk_stats_kernel(math_fns: RowMath, dtype, block, per_thread):
    """Long rows, first pass: the state of each (row, chunk) item (a chunk is ``block * per_thread`` elements),
    written to ``states`` (5, items): the state, then the target's logit. Arguments as the others, with ``states`` in
    ``partials``' place."""
    m = _for_mode(math_fns, dtype)
    init, push, merge = m.init, m.push, m.merge
    nbt = np.dtype(dtype)
    zero, one = nbt.type(0.0), nbt.type(1.0)
    reduce = _block_reduce(merge, init, dtype, block)
    prelude = _row_prelude(math_fns, dtype)
    chunk, two, weighted = block * per_thread, m.two_inputs, m.weighted

    @cuda.jit
    def _chunk_stats_kernel(a, b, w, t, outer, n, inner, ignore, k, states):
        tid = cuda.threadIdx.x
        n_chunks = (n + chunk - 1) // chunk
        for item in range(int64(cuda.blockIdx.x), outer * n_chunks, int64(cuda.gridDim.x)):
            row = item // n_chunks
            base = row * n
            lo = (item - row * n_chunks) * chunk
            pre = prelude(a, w, t, row, base, 1, n, ignore)
            s = init(k)
            if pre[3] != 1:
                for c in range(lo + tid, min(lo + chunk, n), block):
                    s = push(s, a[base + c], b[base + c] if two else zero, w[c] if weighted else one, c, pre, k)
            s = reduce(s, k)
            if tid == 0:
                states[0, item], states[1, item], states[2, item], states[3, item] = s[0], s[1], s[2], s[3]
                states[4, item] = pre[2]  # the target's logit as read before any block writes (out may be a)

    return _chunk_stats_kernel


@functools.lru_cache(maxsize=None)
def chunk_emit_kernel(math_fns: RowMath, dtype, block, per_thread):
    """Long rows, second pass: every (row, chunk) block merges its row's chunk states in chunk order, finishes the
    row and writes its chunk; the row's first chunk writes the loss and flags."""
    m = _for_mode(math_fns, dtype)
    merge, finish, emit = m.merge, m.finish, m.emit
    nbt = np.dtype(dtype)
    zero, one = nbt.type(0.0), nbt.type(1.0)
    prelude = _row_prelude(math_fns, dtype)
    upstream = _upstream(dtype)
    from ._reduce import block_partial_fn

    block_partial = block_partial_fn(block)
    chunk, two, weighted, emits, writes_loss = block * per_thread, m.two_inputs, m.weighted, m.emits, m.loss

    @cuda.jit
    def _chunk_emit_kernel(a, b, w, t, outer, n, inner, ignore, k, dy, dmode, g, scale, use_scale, out, loss_rows,
                           partials, flags, slot, states):
        tid = cuda.threadIdx.x
        n_chunks = (n + chunk - 1) // chunk
        acc_loss = float64(0.0)
        acc_den = float64(0.0)
        for item in range(int64(cuda.blockIdx.x), outer * n_chunks, int64(cuda.gridDim.x)):
            row = item // n_chunks
            base = row * n
            lo = (item - row * n_chunks) * chunk
            j = row * n_chunks
            y, wy, _, code = prelude(a, w, t, row, base, 1, n, ignore)
            pre = (y, wy, states[4, j], code)  # a[base + y] may hold another block's output by now (in place)
            s = (states[0, j], states[1, j], states[2, j], states[3, j])
            for q in range(j + 1, j + n_chunks):  # chunk order: every block of the row merges alike
                s = merge(s, (states[0, q], states[1, q], states[2, q], states[3, q]))
            consts, loss, den, bad = finish(s, pre, k, upstream(dy, dmode, g, scale, use_scale, row))
            if lo == 0 and tid == 0:
                if pre[3] == 1:
                    cuda.atomic.min(flags, slot, 2 * row)
                elif bad:
                    cuda.atomic.min(flags, slot, 2 * row + 1)
                if writes_loss:
                    loss_rows[row] = loss
                acc_loss += float64(loss)
                acc_den += float64(den)
            if emits:
                for c in range(lo + tid, min(lo + chunk, n), block):
                    out[base + c] = emit(a[base + c], b[base + c] if two else zero, w[c] if weighted else one, c,
                                         pre, consts, k)
        if writes_loss:  # every thread or none: block_partial synchronises
            block_partial(acc_loss, partials, 0)
            block_partial(acc_den, partials, 1)

    return _chunk_emit_kernel


@functools.lru_cache(maxsize=None)
def columns_kernel(math_fns: RowMath, dtype, block, held):
    """Rows along a non-last axis (``inner > 1``): a thread per row, elements ``inner`` apart (neighbouring threads
    read neighbouring addresses); rows of up to ``held`` elements stay in registers, longer ones are read twice."""
    m = _for_mode(math_fns, dtype)
    init, push, finish, emit = m.init, m.push, m.finish, m.emit
    nbt = np.dtype(dtype)
    zero, one = nbt.type(0.0), nbt.type(1.0)
    prelude = _row_prelude(math_fns, dtype)
    upstream = _upstream(dtype)
    from ._reduce import block_partial_fn

    block_partial = block_partial_fn(block)
    K, two, weighted, emits, writes_loss = held, m.two_inputs, m.weighted, m.emits, m.loss

    @cuda.jit
    def _columns_kernel(a, b, w, t, outer, n, inner, ignore, k, dy, dmode, g, scale, use_scale, out, loss_rows,
                        partials, flags, slot):
        va = cuda.local.array(K, nbt)
        vb = cuda.local.array(K, nbt)
        acc_loss = float64(0.0)
        acc_den = float64(0.0)
        for row in range(int64(cuda.grid(1)), outer * inner, int64(cuda.gridsize(1))):
            o = row // inner
            base = o * n * inner + (row - o * inner)
            pre = prelude(a, w, t, row, base, inner, n, ignore)
            s = init(k)
            if pre[3] != 1 and n <= K:
                for c in range(K):
                    if c < n:
                        va[c] = a[base + c * inner]
                        vb[c] = b[base + c * inner] if two else zero
                        s = push(s, va[c], vb[c], w[c] if weighted else one, c, pre, k)
            elif pre[3] != 1:
                for c in range(n):
                    s = push(s, a[base + c * inner], b[base + c * inner] if two else zero,
                             w[c] if weighted else one, c, pre, k)
            consts, loss, den, bad = finish(s, pre, k, upstream(dy, dmode, g, scale, use_scale, row))
            if pre[3] == 1:
                cuda.atomic.min(flags, slot, 2 * row)
            elif bad:
                cuda.atomic.min(flags, slot, 2 * row + 1)
            if writes_loss:
                loss_rows[row] = loss
            acc_loss += float64(loss)
            acc_den += float64(den)
            if emits and n <= K:  # the row is in registers (static indices)
                for c in range(K):
                    if c < n:
                        out[base + c * inner] = emit(va[c], vb[c], w[c] if weighted else one, c, pre, consts, k)
            elif emits:  # a longer row: read again
                for c in range(n):
                    out[base + c * inner] = emit(a[base + c * inner], b[base + c * inner] if two else zero,
                                                 w[c] if weighted else one, c, pre, consts, k)
        if writes_loss:  # every thread or none: block_partial synchronises
            block_partial(acc_loss, partials, 0)
            block_partial(acc_den, partials, 1)

    return _columns_kernel


@functools.lru_cache(maxsize=None)
def _total_kernel(block):
    from ._reduce import block_sum_fn

    block_sum = block_sum_fn(block)

    @cuda.jit
    def _rows_total_sum_kernel(partials, mode, count, out):
        """out[0] = the sum of the row losses (mode 0), divided by the summed row weights (1: 0 when they sum to 0
        with rows present, NaN without rows) or by ``count`` (2: NaN when 0); a fixed order."""
        tid = cuda.threadIdx.x
        acc_loss = float64(0.0)
        acc_den = float64(0.0)
        for j in range(int64(tid), partials.shape[1], block):
            acc_loss += partials[0, j]
            acc_den += partials[1, j]
        loss = block_sum(acc_loss)
        den = block_sum(acc_den)
        if tid == 0:
            if mode == 0:
                out[0] = loss
            elif mode == 2:
                out[0] = loss / float64(count) if count else math.nan
            elif den != 0.0:
                out[0] = loss / den
            else:
                out[0] = math.nan if count == 0 else 0.0

    return _rows_total_sum_kernel


@functools.lru_cache(maxsize=None)
def _weight_kernels(block):
    """``(weights, inverse)``: block partials of sum w[t[r]] over the rows whose target is a class (not ignored, in
    range), then ``scale[0] = 1 / that sum`` (0 when it is 0): the 'mean' gradient factor, found before the rows."""
    from ._reduce import block_partial_fn, block_sum_fn

    block_partial = block_partial_fn(block)
    block_sum = block_sum_fn(block)

    @cuda.jit
    def _class_weight_sum_kernel(w, t, n, ignore, partials):
        acc = float64(0.0)
        for r in range(int64(cuda.grid(1)), t.size, int64(cuda.gridsize(1))):
            y = t[r]
            if y != ignore and y >= 0 and y < n:
                acc += float64(w[y])
        block_partial(acc, partials, 0)

    @cuda.jit
    def _inverse_sum_kernel(partials, scale):
        acc = float64(0.0)
        for j in range(int64(cuda.threadIdx.x), partials.shape[1], block):
            acc += partials[0, j]
        total = block_sum(acc)
        if cuda.threadIdx.x == 0:
            scale[0] = 1.0 / total if total != 0.0 else 0.0

    return _class_weight_sum_kernel, _inverse_sum_kernel


# ---- plans and launches ----------------------------------------------------------------------------------------------
class Plan(NamedTuple):
    """How rows of a layout are run: ``kind`` "rows" (a group per row, ``per_thread`` elements each in registers),
    "chunks" (long rows over several blocks) or "columns" (a thread per strided row)."""

    kind: str
    block: int
    group: int = 0
    per_thread: int = 0


def _pow2_at_least(x):
    p = 1
    while p < x:
        p *= 2
    return p


def chunk_length() -> int:
    """Elements per chunk of a long row on this device (rows longer than the longest held row are cut into these)."""
    p = plan(Layout(1, 1 << 40, 1), np.float32)
    return p.block * p.per_thread


def held(dtype) -> int:
    """Elements of a row each thread holds in registers: 64 bytes' worth (16 float32, 8 float64)."""
    return MAX_K * 4 // np.dtype(dtype).itemsize


def plan(lay: Layout, dtype) -> Plan:
    """The plan for ``lay`` on this device. The simulator runs the same kernels on 64-thread blocks (two warps) and
    shorter rows, so that small tests cross every path: two rows per block, a block per row, chunks."""
    if lay.inner > 1:
        return Plan("columns", block_size())
    n = lay.n
    if simulator():
        if n <= 2 * WARP:
            return Plan("rows", 2 * WARP, WARP, _pow2_at_least(-(-n // WARP)))
        if n <= SIM_MAX_ROW:
            return Plan("rows", 2 * WARP, 2 * WARP, _pow2_at_least(-(-n // (2 * WARP))))
        return Plan("chunks", 2 * WARP, 0, 2)
    if n <= WARP_ROW:
        return Plan("rows", 256, WARP, _pow2_at_least(-(-n // WARP)))
    k = held(dtype)
    if n <= MAX_BLOCK * k:
        block = min(MAX_BLOCK, max(64, _pow2_at_least(-(-n // k))))
        return Plan("rows", block, block, _pow2_at_least(-(-n // block)))
    return Plan("chunks", 256, 0, MAX_K)


def signature(kind, dtype, index="int64") -> str:
    """The launch signature of a row kernel ("rows", "columns", "stats" or "emit") for data of ``dtype`` and
    class-index targets of ``index``."""
    dt = np.dtype(dtype).name
    if kind == "stats":
        return "void(" + COMMON.format(dt, index) + f", {dt}[:, ::1])"
    return SIGNATURE.format(dt, index, f", {dt}[:, ::1]" if kind == "emit" else "")


def _dispatcher(kind, math_fns, dtype, p: Plan):
    if kind == "rows":
        return rows_kernel(math_fns, dtype, p.block, p.group, p.per_thread)
    if kind == "columns":
        return columns_kernel(math_fns, dtype, p.block, MAX_COLUMN)
    if kind == "stats":
        return chunk_stats_kernel(math_fns, dtype, p.block, p.per_thread)
    return chunk_emit_kernel(math_fns, dtype, p.block, p.per_thread)


@functools.lru_cache(maxsize=None)
def _kernel(kind, math_fns, dtype, p: Plan, index, name):
    return Kernel(_dispatcher(kind, math_fns, dtype, p), signature(kind, dtype, index), f"{name}_{kind}")


def run(math_fns: RowMath, name, lay: Layout, stream, like, *, a, b=None, w=None, t=None, ignore=0, k=(0, 0, 0, 0),
        upstream=None, scale=None, out=None, loss_rows=None, describe=None):
    """Launch an op's row kernels over every row of ``lay`` on ``stream``; returns the float64 (2, blocks) partials
    of the row losses and row weights for :func:`total` (unwritten by ops without a loss). ``like``: the user's
    array the workspaces follow (gpunn/_launch.py).

    ``a``, ``b``: the element inputs (flat DeviceArrays; ``b`` for ops with two); ``w``, ``t``: class weights and
    one target per row; ``upstream``: ``(dy, dmode, g)``, the row's gradient factor is g, dy[0] g or dy[row] g for
    dmode 0, 1, 2, times ``scale[0]`` when ``scale`` is given; ``out``, ``loss_rows``: what the op writes;
    ``describe(code)``: the message of a bad row (gpunn/_errors.py), for ops that check rows. What a call does not
    use gets a placeholder."""
    from ._launch import placeholder, scratch

    dt = np.dtype(a.dtype)
    p = plan(lay, dt)
    none, no_index = placeholder(dt), placeholder(np.int64)
    t = no_index if t is None else t
    index = np.dtype(t.dtype).name
    if describe is None:
        flags, slot = no_index, 0  # never written: the op has no bad rows
    else:
        flags, slot = _errors.slot(0 if simulator() else current_device_id(), stream, describe)
    dy, dmode, g = upstream if upstream is not None else (none, 0, 1.0)
    common = (a, none if b is None else b, none if w is None else w, t, np.int64(lay.outer), np.int64(lay.n),
              np.int64(lay.inner), np.int64(ignore), tuple(dt.type(v) for v in k))
    rest = (dy, np.int64(dmode), dt.type(g), none if scale is None else scale, np.int64(scale is not None),
            none if out is None else out, none if loss_rows is None else loss_rows)
    if p.kind == "chunks":
        items = lay.outer * -(-lay.n // (p.block * p.per_thread))
        stats = _kernel("stats", math_fns, dt, p, index, name)
        emit = _kernel("emit", math_fns, dt, p, index, name)
        blocks = emit.grid(items * p.block, p.block)
        states, partials = scratch(like, stream, "rowwise", (dt, (5, max(items, 1))), (np.float64, (2, blocks)))
        stats(stats.grid(items * p.block, p.block), p.block, stream, *common, states)
        emit(blocks, p.block, stream, *common, *rest, partials, flags, np.int64(slot), states)
        return partials
    kernel = _kernel(p.kind, math_fns, dt, p, index, name)
    threads = lay.rows if p.kind == "columns" else -(-lay.rows // (p.block // p.group)) * p.block
    blocks = kernel.grid(max(threads, 1), p.block)
    (partials,) = scratch(like, stream, "rowwise", (np.float64, (2, blocks)))
    kernel(blocks, p.block, stream, *common, *rest, partials, flags, np.int64(slot))
    return partials


def register(name, math_for_dtype, index="int64"):
    """Add an op's row kernels to gpunn/_registry.py (what ``gpunn kernels`` compiles and checks): on a GPU's plans,
    a warp per row (up to 256 classes), a block per row (the longest row held), chunks, and strided rows.
    ``math_for_dtype(np.dtype) -> RowMath``."""
    from . import _registry

    plans = {"rows[warp]": ("rows", lambda dt: Plan("rows", 256, WARP, WARP_ROW // WARP)),
             "rows[block]": ("rows", lambda dt: Plan("rows", MAX_BLOCK, MAX_BLOCK, held(dt))),
             "chunk_stats": ("stats", lambda dt: Plan("chunks", 256, 0, MAX_K)),
             "chunk_emit": ("emit", lambda dt: Plan("chunks", 256, 0, MAX_K)),
             "columns": ("columns", lambda dt: Plan("columns", 256))}
    for part, (kind, plan_for) in plans.items():
        _registry.for_dtypes(f"{name}_{part}",
                             lambda dt, kind=kind, plan_for=plan_for: _dispatcher(kind, math_for_dtype(dt), dt,
                                                                                  plan_for(dt)),
                             lambda dt, kind=kind: signature(kind, dt, index), f64_accumulator=True)


def register_shared():
    """Add the kernels every loss shares (the total over rows, the class-weight scale) to gpunn/_registry.py."""
    from . import _registry

    block = 256
    _registry.for_dtypes("rows_total_sum", lambda dt: _total_kernel(block),
                         lambda dt: f"void(float64[:, ::1], int64, int64, {dt}[::1])", f64_accumulator=True)
    for index in ("int32", "int64"):
        _registry.for_dtypes(f"class_weight_sum[{index}]", lambda dt: _weight_kernels(block)[0],
                             lambda dt, index=index: f"void({dt}[::1], {index}[::1], int64, int64, float64[:, ::1])",
                             f64_accumulator=True)
    _registry.for_dtypes("inverse_sum", lambda dt: _weight_kernels(block)[1],
                         lambda dt: f"void(float64[:, ::1], {dt}[::1])", f64_accumulator=True)


def total(partials, mode, count, out, stream):
    """``out[0]``: the rows' loss sum (mode 0), over the summed row weights (1) or over ``count`` (2)."""
    block = block_size()
    kernel = _total(block, np.dtype(out.dtype).name)
    kernel(1, block, stream, partials, np.int64(mode), np.int64(count), out)


@functools.lru_cache(maxsize=None)
def _total(block, dtype):
    return Kernel(_total_kernel(block), f"void(float64[:, ::1], int64, int64, {dtype}[::1])", "rows_total_sum")


def class_weight_scale(w, t, n, ignore, like, stream, scale):
    """``scale[0] = 1 / sum_r w[t[r]]`` over the rows whose target is a class (0 when that sum is 0): the 'mean'
    gradient factor of class-index cross-entropy, on the device, before the rows are read."""
    from ._launch import scratch
    from ._reduce import reduce_grid

    block = block_size()
    blocks, _ = reduce_grid(t.size)
    (partials,) = scratch(like, stream, "rowwise_weights", (np.float64, (1, blocks)))
    sums, inverse = _weight_launchers(block, np.dtype(w.dtype).name, np.dtype(t.dtype).name)
    sums(blocks, block, stream, w, t, np.int64(n), np.int64(ignore), partials)
    inverse(1, block, stream, partials, scale)


@functools.lru_cache(maxsize=None)
def _weight_launchers(block, dtype, index):
    sums, inverse = _weight_kernels(block)
    return (Kernel(sums, f"void({dtype}[::1], {index}[::1], int64, int64, float64[:, ::1])", "class_weight_sum"),
            Kernel(inverse, f"void(float64[:, ::1], {dtype}[::1])", "inverse_sum"))
