r"""Cross entropy over logits, with the softmax fused in (``torch.nn.functional.cross_entropy``).

Forward, row n of the logits x (N, C), class weights w (C,) (all 1 by default), label smoothing eps, with
m_n = max_c x_nc, ls_n = log sum_c exp(x_nc - m_n) and lse_n = m_n + ls_n:

* class-index target y (N,):
      l_n = (1 - eps) w[y_n] (lse_n - x_n,y_n) + (eps / C) sum_c w_c (lse_n - x_nc),   l_n = 0 where y_n == ignore_index
      'mean' = sum_n l_n / sum_{n not ignored} w[y_n]
  The ignored class still sits in the softmax denominator of the other rows (it is a class like any other).
* probability target t (N, C), smoothed as t' = (1 - eps) t + eps / C:
      l_n = sum_c w_c t'_nc (lse_n - x_nc)    (a term with w_c t'_nc = 0 is 0, also where x_nc = -inf: 0 log 0 = 0)
      'mean' = sum_n l_n / N

Gradient with respect to x_nc (before the upstream gradient and the 'mean' scale), p = softmax(x_n), W = sum_c w_c:

* class:  dx_nc = (1 - eps) w[y_n] (p_nc - [c == y_n]) + (eps / C) (p_nc W - w_c)      (0 for an ignored row)
* probs:  dx_nc = p_nc sum_k w_k t'_nk - w_c t'_nc

Documented differences from PyTorch: a 'mean' whose denominator is 0 although there are rows (every row ignored, or
every target class has weight 0) is 0 with a zero gradient (PyTorch: NaN; pytorch issues 70348, 116349); an empty
batch's 'mean' is NaN as in PyTorch and the other gpunn losses. A probability target of 0 against a -inf logit
contributes 0 (PyTorch: 0 * -inf = NaN). A row whose logits are all -inf is an input error (ValueError naming logits),
except in an ignored row, which is never read for the loss. A -inf logit elsewhere is fine: it gets probability 0 and a
zero gradient (the loss is +inf only when the target class itself, or a smoothed class, sits at -inf, as in PyTorch).

How it runs on the device (kernels 1 and 2 always; 3 for a reduced loss or a gradient; 4 for a gradient):

1. ``_cross_entropy_stats_kernel``: each row is cut into chunks (one chunk of a group of threads for C <= block, so a
   block holds several short rows; chunks of ``block * 16`` elements for long rows, so a row of 262,144 classes
   spreads over 64 blocks). A group reads its chunk once and keeps an online max and rescaled sum of exponentials,
   plus ``a = sum_c coef_c (m - x_c)`` and ``W = sum_c coef_c`` (coef = w_c for smoothing, w_c t'_c for probability
   targets), shifted when the max grows, then merges its threads in a fixed tree order into one partial per chunk.
2. ``_cross_entropy_rows_sum_kernel``: per row, merges the chunk partials in chunk order, checks the target and the row
   (flags in a small int64 array, written with atomic min so the first bad row is named), writes the row loss and the
   row statistics, and leaves float64 block partials of the loss and of the 'mean' denominator (gpunn/_reduce.py).
   The host then reads the flags and raises before any gradient is written, so ``out=`` may be the logits buffer.
3. ``_cross_entropy_total_sum_kernel`` (one block): sums the partials in a fixed order into the 0-d loss and the
   gradient's scale (1/denominator for 'mean'), both left on the device.
4. ``_cross_entropy_backward_kernel``: reads the logits a second time and writes the gradient once, over the same
   (row, chunk) items as the statistics (a group of threads per item: no index division per element).

The CPU path is one ``prange`` over rows, all of a row's passes on a cache-resident row: max; exp(x - m) written into
the gradient buffer (float32: gpunn's vectorisable polynomial exp) with its float64 sum; the scaled gradient. Targets
are checked on the host first; the all -inf row check runs first alone when the gradient overwrites the logits.
"""

from __future__ import annotations

import functools
import math

import numba
import numpy as np
from numba import cuda, float64, from_dtype, int64, njit, prange

from .. import _cpu, _registry
from .._elementwise import typed
from ..activations import _vecmath
from .. import _errors
from .._args import Args, check_real
from .._arrays import dtype_of, kind, numba_array
from .._launch import Kernel, block_size, current_device_id, placeholder, scratch, sm_count
from .._reduce import block_partial_fn, block_sum_fn, reduce_grid
from .._runtime import simulator
from . import _common

__all__ = ["cross_entropy", "cross_entropy_backward", "cross_entropy_with_grad"]

INDEX_DTYPES = (np.dtype(np.int32), np.dtype(np.int64))
GPU_PER_THREAD = 16  # elements per thread in one chunk of a long row on a GPU (a chunk is block * 16 = 4096)
SIM_PER_THREAD = 2   # in the simulator (block 32): chunks of 64, so small tests exercise several chunks per row


# ----------------------------------------------------------------------------------------------------------------------
# Row layout: how a row of C values is cut into chunks, and how many threads read one chunk
# ----------------------------------------------------------------------------------------------------------------------
def row_layout(n_cols: int, block: int, per_thread: int | None = None):
    """``(group, chunk, n_chunks)`` for rows of ``n_cols`` values and blocks of ``block`` threads.

    Short rows (``n_cols <= block``): one chunk per row, read by a group of ``group`` threads (the power of two at or
    above ``n_cols``), so one block holds ``block // group`` rows. Long rows: chunks of ``block * per_thread`` values,
    each read by a whole block. Depends on the sizes and the device only, so the summation order is fixed."""
    if per_thread is None:
        per_thread = SIM_PER_THREAD if simulator() else GPU_PER_THREAD
    if n_cols <= block:
        group = 1
        while group < n_cols:
            group *= 2
        return group, max(n_cols, 1), 1
    chunk = block * per_thread
    return block, chunk, -(-n_cols // chunk)


def chunk_grid(n_items: int, group: int, block: int) -> int:
    """Blocks for a loop over ``n_items`` (row, chunk) items, ``block // group`` items per block pass: enough to
    fill the GPU at 8 blocks per SM, never more than needed (two in the simulator)."""
    per_block = block // group
    needed = max(1, -(-n_items // per_block))
    if simulator():
        return min(needed, 2)
    return min(needed, sm_count() * 8)


# ----------------------------------------------------------------------------------------------------------------------
# Scalar math (one definition, called by the CUDA kernels and by the CPU loops; scalars only: in the simulator njit
# helpers cannot take device arrays, so every array read stays in the kernels)
# ----------------------------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def _math(dtype):
    zero, one, ninf, inf = typed(dtype, 0.0, 1.0, -math.inf, math.inf)

    @njit(inline="always")
    def push(m, s, a, wa, x, coef):
        """Add value ``x`` with coefficient ``coef`` to the running (max m, sum s = sum exp(x - m),
        a = sum coef (m - x), wa = sum coef). NaN is never the max and makes s NaN."""
        if x > m:
            if m > ninf and wa != zero:
                a = a + wa * (x - m)  # every earlier (m - x_k) grows by the max's increase
            s = s * math.exp(m - x) + one  # s is 0 while m is -inf, and exp(-inf) = 0
            m = x
        elif x != ninf:
            s = s + math.exp(x - m)  # x <= m (or NaN, which propagates)
        if coef != zero:
            if x == ninf:
                a = a + coef * inf  # -coef log p = +inf; never 0 * inf
            else:
                a = a + coef * (m - x)
            wa = wa + coef
        return m, s, a, wa

    @njit(inline="always")
    def merge(m1, s1, a1, w1, m2, s2, a2, w2):
        """Merge two (m, s, a, wa) partials (the online softmax merge, with the shift of a)."""
        m = max(m1, m2)
        if m == ninf:
            return m, s1 + s2, a1 + a2, w1 + w2
        if m1 < m:
            s1 = s1 * math.exp(m1 - m)
            if m1 > ninf and w1 != zero:
                a1 = a1 + w1 * (m - m1)
        if m2 < m:
            s2 = s2 * math.exp(m2 - m)
            if m2 > ninf and w2 != zero:
                a2 = a2 + w2 * (m - m2)
        return m, s1 + s2, a1 + a2, w1 + w2

    @njit(inline="always")
    def class_loss(m, ls, a, wa, xy, wy, omeps, eps_c):
        # (1 - eps) w_y (lse - x_y) + (eps / C) sum_c w_c (lse - x_c), with lse - x = (m - x) + ls
        loss = zero
        if omeps != zero:
            loss = omeps * wy * ((m - xy) + ls)
        if eps_c != zero:
            loss = loss + eps_c * (wa * ls + a)
        return loss

    @njit(inline="always")
    def class_grad(x, m, ls, is_y, wc, wy, wa, omeps, eps_c, gn):
        p = math.exp((x - m) - ls)  # softmax; 0 at x = -inf
        d = omeps * wy * ((p - one) if is_y else p)  # (1 - eps) w_y (p - onehot)
        if eps_c != zero:
            d = d + eps_c * (p * wa - wc)  # (eps / C) (p W - w_c)
        return gn * d

    @njit(inline="always")
    def prob_grad(x, m, ls, coef, wa, gn):
        p = math.exp((x - m) - ls)
        return gn * (p * wa - coef)  # p sum_k w_k t'_k - w_c t'_c

    return push, merge, class_loss, class_grad, prob_grad


# ----------------------------------------------------------------------------------------------------------------------
# CUDA kernels
# ----------------------------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def _device_kernels(dtype, block, prob):
    """The four kernels for logits of ``dtype``, ``prob``: probability targets (else class indices)."""
    push, merge, class_loss, class_grad, prob_grad = _math(dtype)
    zero, one, ninf, nan = typed(dtype, 0.0, 1.0, -math.inf, math.nan)
    nbt = from_dtype(dtype)
    block_partial = block_partial_fn(block)
    block_sum = block_sum_fn(block)

    @cuda.jit
    def _cross_entropy_stats_kernel(x, tp, w, k1, k2, group, chunk, n_chunks, pm, ps, pa, pw):
        # item = (row, chunk); a group of `group` threads reads one item; coef_c = w_c k2 (class targets: k2 = 1 with
        # smoothing, else 0) or w_c (t_c k1 + k2) (probability targets: k1 = 1 - eps, k2 = eps / C)
        n_rows = x.shape[0]
        n_cols = x.shape[1]
        sm = cuda.shared.array(block, nbt)
        ss = cuda.shared.array(block, nbt)
        sa = cuda.shared.array(block, nbt)
        sw = cuda.shared.array(block, nbt)
        tid = cuda.threadIdx.x
        lane = tid % group
        per_block = block // group
        n_items = n_rows * n_chunks
        base = int64(cuda.blockIdx.x) * per_block
        while base < n_items:  # the same trip count for every thread of the block (they all sync)
            item = base + tid // group
            m, s, a, wa = ninf, zero, zero, zero
            if item < n_items:
                row = item // n_chunks
                lo = (item - row * n_chunks) * chunk
                hi = min(lo + chunk, n_cols)
                for c in range(lo + lane, hi, group):
                    if prob:
                        coef = w[c] * (tp[row, c] * k1 + k2)
                    else:
                        coef = w[c] * k2
                    m, s, a, wa = push(m, s, a, wa, x[row, c], coef)
            sm[tid] = m
            ss[tid] = s
            sa[tid] = a
            sw[tid] = wa
            cuda.syncthreads()
            half = group // 2
            while half > 0:  # fixed tree inside each group
                if lane < half:
                    m, s, a, wa = merge(sm[tid], ss[tid], sa[tid], sw[tid],
                                        sm[tid + half], ss[tid + half], sa[tid + half], sw[tid + half])
                    sm[tid] = m
                    ss[tid] = s
                    sa[tid] = a
                    sw[tid] = wa
                cuda.syncthreads()
                half //= 2
            if lane == 0 and item < n_items:
                pm[item] = sm[tid]
                ps[item] = ss[tid]
                pa[item] = sa[tid]
                pw[item] = sw[tid]
            cuda.syncthreads()
            base += int64(cuda.gridDim.x) * per_block

    @cuda.jit
    def _cross_entropy_rows_sum_kernel(x, t, w, ignore, omeps, eps_c, n_chunks, pm, ps, pa, pw,
                                       m_rows, ls_rows, wa_rows, loss_rows, flags, slot, partials):
        # per row: merge the chunk partials in order, check, row loss and 'mean' weight; float64 block partials.
        # A bad row (flags[slot] = min(2 row + kind), kind 0: a bad target, 1: all -inf) gets NaN loss and ls.
        n_rows = x.shape[0]
        n_cols = x.shape[1]
        acc_loss = float64(0.0)
        acc_den = float64(0.0)
        for row in range(int64(cuda.grid(1)), n_rows, int64(cuda.gridsize(1))):
            j = row * n_chunks
            m, s, a, wa = pm[j], ps[j], pa[j], pw[j]
            for k in range(1, n_chunks):
                m, s, a, wa = merge(m, s, a, wa, pm[j + k], ps[j + k], pa[j + k], pw[j + k])
            ls = math.log(s) if s != zero else ninf  # s = 0 only for a row of -inf (flagged below)
            loss = zero
            den = zero
            if prob:
                if m == ninf and s == zero:  # all -inf (a NaN row has s = NaN and gives NaN, as PyTorch)
                    cuda.atomic.min(flags, slot, 2 * row + 1)
                    loss = ls = nan
                else:
                    loss = wa * ls + a  # sum_c coef_c ((m - x_c) + ls)
                    den = one
            else:
                y = t[row]
                if y != ignore:
                    if y < 0 or y >= n_cols:
                        cuda.atomic.min(flags, slot, 2 * row)  # never read x[row, y] out of bounds
                        loss = ls = nan
                    elif m == ninf and s == zero:
                        cuda.atomic.min(flags, slot, 2 * row + 1)
                        loss = ls = nan
                    else:
                        wy = w[y]
                        loss = class_loss(m, ls, a, wa, x[row, y], wy, omeps, eps_c)
                        den = wy
            m_rows[row] = m
            ls_rows[row] = ls
            wa_rows[row] = wa
            loss_rows[row] = loss
            acc_loss += float64(loss)
            acc_den += float64(den)
        block_partial(acc_loss, partials, 0)
        block_partial(acc_den, partials, 1)

    @cuda.jit
    def _cross_entropy_total_sum_kernel(partials, mean, n_rows, out, scale):
        # one block: the loss sum and the denominator in a fixed order; out[0] = loss, scale[0] = gradient scale
        tid = cuda.threadIdx.x
        acc_loss = float64(0.0)
        acc_den = float64(0.0)
        for j in range(int64(tid), partials.shape[1], block):
            acc_loss += partials[0, j]
            acc_den += partials[1, j]
        loss = block_sum(acc_loss)
        den = block_sum(acc_den)
        if tid == 0:
            if mean == 0:
                out[0] = loss
                scale[0] = one
            elif den != 0.0:
                out[0] = loss / den
                scale[0] = 1.0 / den
            else:  # no weight at all: 0 with a zero gradient (PyTorch: NaN), NaN for an empty batch
                out[0] = nan if n_rows == 0 else zero
                scale[0] = zero

    @cuda.jit
    def _cross_entropy_backward_kernel(x, t, tp, w, ignore, omeps, eps_c, m_rows, ls_rows, wa_rows,
                                       dy, dmode, g, scale, group, chunk, n_chunks, out):
        # dx = up(row) * scale * d l_row / d x over (row, chunk) items, one group of threads per item (no division
        # per element; the row's scalars read once); reads x and tp at the index it writes (out may be x or tp)
        n_cols = x.shape[1]
        n_items = x.shape[0] * n_chunks
        per_block = block // group
        lane = cuda.threadIdx.x % group
        item = int64(cuda.blockIdx.x) * per_block + cuda.threadIdx.x // group
        sc = scale[0]
        while item < n_items:
            row = item // n_chunks
            lo = (item - row * n_chunks) * chunk
            hi = min(lo + chunk, n_cols)
            gn = ((dy[row] if dmode == 2 else dy[0]) * g if dmode else g) * sc
            m = m_rows[row]
            ls = ls_rows[row]
            wa = wa_rows[row]
            if prob:
                for c in range(lo + lane, hi, group):
                    coef = w[c] * (tp[row, c] * omeps + eps_c)
                    out[row, c] = prob_grad(x[row, c], m, ls, coef, wa, gn)
            else:
                y = t[row]
                if y == ignore:
                    for c in range(lo + lane, hi, group):
                        out[row, c] = zero
                elif y < 0 or y >= n_cols:  # a bad target (reported by the rows kernel): NaN, never w[y]
                    for c in range(lo + lane, hi, group):
                        out[row, c] = nan
                else:
                    wy = w[y]
                    for c in range(lo + lane, hi, group):
                        out[row, c] = class_grad(x[row, c], m, ls, c == y, w[c], wy, wa, omeps, eps_c, gn)
            item += int64(cuda.gridDim.x) * per_block

    return {"stats": _cross_entropy_stats_kernel, "rows_sum": _cross_entropy_rows_sum_kernel,
            "total_sum": _cross_entropy_total_sum_kernel, "backward": _cross_entropy_backward_kernel}


@functools.lru_cache(maxsize=None)
def _kernels(dtype, block, prob, index_dtype):
    dispatchers = _device_kernels(dtype, block, prob)
    sigs = _signatures(np.dtype(dtype).name, np.dtype(index_dtype).name)
    return {key: Kernel(d, sigs[key], f"cross_entropy_{key}") for key, d in dispatchers.items()}


def _device_run(c, reduce, want_grad, loss_rows_out, loss_flat, upstream, dx, validate):
    """Launch the kernels for the checked call ``c`` on its stream. Bad rows are reported through gpunn._errors
    (with ``validate``: at once, before any gradient is written)."""
    dt = c.dtype
    args = c.args
    stream = args.stream
    n_rows, n_cols = c.shape
    block = block_size()
    k = _kernels(dt, block, c.prob, c.t_index.dtype)
    group, chunk, n_chunks = row_layout(n_cols, block)
    n_items = n_rows * n_chunks
    blocks, _ = reduce_grid(n_rows)
    ws = scratch(args.array("logits"), stream, "cross_entropy", *[(dt, (max(n_items, 1),))] * 4,
                 *[(dt, (max(n_rows, 1),))] * 4, (dt, (2,)), (np.float64, (2, blocks)))
    pm, ps, pa, pw, m_rows, ls_rows, wa_rows, rows_tmp, total_scale, partials = ws
    if loss_rows_out is None:
        loss_rows_out = rows_tmp
    t, tp = c.t_index, c.t_prob
    flags, slot = _errors.slot(0 if simulator() else current_device_id(), stream, _describe(c))
    k1, k2 = (dt.type(1.0 - c.eps), dt.type(c.eps / n_cols)) if c.prob else (dt.type(0.0), dt.type(c.eps > 0))
    omeps, eps_c = dt.type(1.0 - c.eps), dt.type(c.eps / n_cols)
    if n_rows:
        k["stats"](chunk_grid(n_items, group, block), block, stream, c.x, tp, c.w, k1, k2, np.int64(group),
                   np.int64(chunk), np.int64(n_chunks), pm, ps, pa, pw)
    k["rows_sum"](blocks, block, stream, c.x, t, c.w, np.int64(c.ignore), omeps, eps_c, np.int64(n_chunks), pm, ps,
                  pa, pw, m_rows, ls_rows, wa_rows, loss_rows_out, flags, np.int64(slot), partials)
    if validate:
        _errors.check()
    if reduce or want_grad:
        total = loss_flat if loss_flat is not None else total_scale.rows(0, 1)
        scale = total_scale.rows(1, 2)
        k["total_sum"](1, block, stream, partials, np.int64(c.reduction == "mean"), np.int64(n_rows), total, scale)
        if want_grad and n_rows:
            dy, dmode, g = upstream
            k["backward"](chunk_grid(n_items, group, block), block, stream, c.x, t, tp, c.w, np.int64(c.ignore),
                          omeps, eps_c, m_rows, ls_rows, wa_rows, dy, np.int64(dmode), dt.type(g), scale,
                          np.int64(group), np.int64(chunk), np.int64(n_chunks), dx)


def _describe(c):
    """The message for a bad row found on the device: flags hold 2 row + kind (0: target, 1: all -inf)."""
    t = c.t_index

    def describe(code):
        row, what = divmod(code, 2)
        if what == 0:
            value = int(numba_array(t)[row:row + 1].copy_to_host()[0])
            return (f"target[{row}] = {value} is not a class index in [0, {c.shape[1]}) nor ignore_index "
                    f"({c.ignore})")
        return f"logits row {row} is all -inf: its softmax is undefined"

    return describe


def _raise_bad(c, bad, target_at):
    n_rows, n_cols = c.shape
    if bad[0] < n_rows:
        row = int(bad[0])
        raise ValueError(f"target[{row}] = {target_at(row)} is not a class index in [0, {n_cols}) "
                         f"nor ignore_index ({c.ignore})")
    if bad[1] < n_rows:
        raise ValueError(f"logits row {int(bad[1])} is all -inf: its softmax is undefined")


# ----------------------------------------------------------------------------------------------------------------------
# CPU path: one prange over rows, every pass of a row on the cache-resident row
# ----------------------------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def _cpu_loops(dtype):
    # Written so that LLVM vectorises the long loops: 1-D row views, a branch-free exp map (gpunn's polynomial float32
    # exp from activations/_vecmath: Numba has no vector expf without Intel SVML), sums with four float64 accumulators.
    zero, one, ninf, inf, nan = typed(dtype, 0.0, 1.0, -math.inf, math.inf, math.nan)
    to_dt = np.dtype(dtype).type
    exp = _vecmath.for_dtype(dtype)[0]

    @njit(inline="always")
    def row_max(xr):
        m0 = m1 = m2 = m3 = ninf
        n_cols = xr.size
        c = 0
        while c + 4 <= n_cols:
            m0 = xr[c] if xr[c] > m0 else m0
            m1 = xr[c + 1] if xr[c + 1] > m1 else m1
            m2 = xr[c + 2] if xr[c + 2] > m2 else m2
            m3 = xr[c + 3] if xr[c + 3] > m3 else m3
            c += 4
        while c < n_cols:
            m0 = xr[c] if xr[c] > m0 else m0
            c += 1
        m0 = m1 if m1 > m0 else m0
        m2 = m3 if m3 > m2 else m2
        return m2 if m2 > m0 else m0

    @njit(inline="always")
    def nan_row(xr):
        for c in range(xr.size):
            if xr[c] != xr[c]:
                return True
        return False

    @njit(inline="always")
    def exp_row(xr, m, er):
        # er = exp(x - m) (er may be xr itself); returns the float64 sum, four accumulators in a fixed order
        n_cols = xr.size
        for c in range(n_cols):
            er[c] = exp(xr[c] - m)
        s0 = s1 = s2 = s3 = 0.0
        c = 0
        while c + 4 <= n_cols:
            s0 += er[c]
            s1 += er[c + 1]
            s2 += er[c + 2]
            s3 += er[c + 3]
            c += 4
        while c < n_cols:
            s0 += er[c]
            c += 1
        return (s0 + s1) + (s2 + s3)

    def class_rows(x, t, w, ignore, omeps, eps_c, wsum, dy, dmode, g, loss_rows, dx, want_grad, bad):
        # loss_rows: float64 (N,); dx (N, C) written when want_grad (may be x itself); bad[n] = 1: all -inf row
        n_rows, n_cols = x.shape
        # forward only: exp(x - m) goes to a per-thread scratch row (no allocation per row)
        scratch = np.empty((1 if want_grad else numba.get_num_threads(), n_cols), x.dtype)
        for n in prange(n_rows):
            xr = x[n]
            y = t[n]
            loss_rows[n] = 0.0
            if y == ignore:
                if want_grad:
                    dr = dx[n]
                    for c in range(n_cols):
                        dr[c] = zero
                continue
            m = row_max(xr)
            if m == ninf:  # all -inf (an input error) or NaN (NaN loss and gradient, as PyTorch)
                if nan_row(xr):
                    loss_rows[n] = np.nan
                    if want_grad:
                        dx[n, :] = nan
                else:
                    bad[n] = 1
                continue
            xy = xr[y]
            a = 0.0  # float64 sum_c w_c (m - x_c), for smoothing; read before the row is overwritten
            if eps_c != zero:
                for c in range(n_cols):
                    if w[c] != zero:
                        a += np.float64(w[c]) * (inf if xr[c] == ninf else np.float64(m - xr[c]))
            er = dx[n] if want_grad else scratch[numba.get_thread_id()]
            s = exp_row(xr, m, er)  # exp(x - m), scaled into the gradient below
            ls = math.log(s)
            wy = w[y]
            loss = 0.0
            if omeps != zero:
                loss = np.float64(omeps) * np.float64(wy) * (np.float64(m - xy) + ls)
            if eps_c != zero:
                loss += np.float64(eps_c) * (np.float64(wsum) * ls + a)
            loss_rows[n] = loss
            if want_grad:
                gn = ((dy[n] if dmode == 2 else dy[0]) * g if dmode else g)
                inv = to_dt(1.0 / s)
                cy = gn * (omeps * wy)
                if eps_c != zero:
                    cp = cy + gn * (eps_c * wsum)
                    ce = gn * eps_c
                    for c in range(n_cols):
                        er[c] = (er[c] * inv) * cp - ce * w[c]  # p ((1-eps) w_y + (eps/C) W) - (eps/C) w_c
                else:
                    for c in range(n_cols):
                        er[c] = (er[c] * inv) * cy  # (1 - eps) w_y p
                er[y] -= cy  # - (1 - eps) w_y onehot

    def prob_rows(x, t, w, omeps, eps_c, dy, dmode, g, loss_rows, dx, want_grad, bad):
        # coef_c = w_c (t_c (1 - eps) + eps / C); dx may alias x or t: every element is read before it is written
        n_rows, n_cols = x.shape
        for n in prange(n_rows):
            xr = x[n]
            tr = t[n]
            loss_rows[n] = 0.0
            m = row_max(xr)
            if m == ninf:
                if nan_row(xr):
                    loss_rows[n] = np.nan
                    if want_grad:
                        dx[n, :] = nan
                else:
                    bad[n] = 1
                continue
            a = 0.0
            wa = 0.0
            for c in range(n_cols):
                coef = w[c] * (tr[c] * omeps + eps_c)
                if coef != zero:
                    a += np.float64(coef) * (inf if xr[c] == ninf else np.float64(m - xr[c]))
                    wa += coef
            s = 0.0
            for c in range(n_cols):
                s += math.exp(xr[c] - m)
            ls = math.log(s)
            loss_rows[n] = wa * ls + a
            if want_grad:
                gn = ((dy[n] if dmode == 2 else dy[0]) * g if dmode else g)
                lsd = to_dt(ls)
                wad = gn * to_dt(wa)
                dr = dx[n]
                for c in range(n_cols):
                    coef = w[c] * (tr[c] * omeps + eps_c)
                    dr[c] = exp((xr[c] - m) - lsd) * wad - gn * coef  # p sum_k w_k t'_k - w_c t'_c

    def neginf_rows(x, t, ignore, prob, bad):
        # the all -inf row check alone (run first when the gradient overwrites the logits)
        n_rows = x.shape[0]
        for n in prange(n_rows):
            if prob or t[n] != ignore:
                if row_max(x[n]) == ninf and not nan_row(x[n]):
                    bad[n] = 1

    return _cpu.loops(class_rows), _cpu.loops(prob_rows), _cpu.loops(neginf_rows)


def _cpu_run(c, reduce, want_grad, loss_rows_out, loss_flat, upstream, dx):
    dt = c.dtype
    n_rows, n_cols = c.shape
    class_rows, prob_rows, neginf_rows = _cpu_loops(dt)
    x = c.x
    bad = np.zeros(n_rows, np.int8)
    if not c.prob:
        t = c.t_index
        off = (t != c.ignore) & ((t < 0) | (t >= n_cols))
        if off.any():
            row = int(np.argmax(off))
            _raise_bad(c, (row, n_rows), lambda r: int(t[r]))
    if want_grad and (np.may_share_memory(dx, x) or (c.prob and np.may_share_memory(dx, c.t_prob))):
        _cpu.run(neginf_rows, "rows", x.size, x, c.t_index, np.int64(c.ignore), c.prob, bad)
        _raise_bad(c, (n_rows, int(np.argmax(bad)) if bad.any() else n_rows), None)
    rows = np.empty(n_rows, np.float64)
    omeps, eps_c = dt.type(1.0 - c.eps), dt.type(c.eps / max(n_cols, 1))
    if want_grad:
        dy, dmode, g = upstream
    else:
        dy, dmode, g = np.zeros(1, dt), 0, 0.0
    gx = dx if want_grad else np.empty((0, n_cols), dt)
    # the 'mean' denominator, known before the gradient is written
    if c.prob:
        den = float(n_rows)
    else:
        valid = c.t_index[c.t_index != c.ignore]
        den = float(np.sum(c.w[valid], dtype=np.float64)) if n_cols else 0.0
    scale = 1.0
    if c.reduction == "mean":
        scale = 1.0 / den if den != 0 else 0.0
    if n_rows:
        if c.prob:
            _cpu.run(prob_rows, "rows", x.size, x, c.t_prob, c.w, omeps, eps_c, dy, np.int64(dmode),
                     dt.type(g * scale), rows, gx, want_grad, bad)
        else:
            wsum = dt.type(np.sum(c.w, dtype=np.float64))
            _cpu.run(class_rows, "rows", x.size, x, c.t_index, c.w, np.int64(c.ignore), omeps, eps_c, wsum, dy,
                     np.int64(dmode), dt.type(g * scale), rows, gx, want_grad, bad)
    if bad.any():
        _raise_bad(c, (n_rows, int(np.argmax(bad))), None)
    if loss_rows_out is not None:
        loss_rows_out[...] = rows
    if reduce:
        total = float(np.sum(rows))  # float64, fixed (pairwise) order
        if c.reduction == "mean":
            total = total / den if den != 0 else (math.nan if n_rows == 0 else 0.0)
        loss_flat[0] = total


# ----------------------------------------------------------------------------------------------------------------------
# Argument checks and the public functions
# ----------------------------------------------------------------------------------------------------------------------
class _Call:
    """The checked arguments of one call (views ready for the kernels or the CPU loops)."""


def _check(logits, target, weight, ignore_index, label_smoothing, reduction, stream=None):
    c = _Call()
    c.reduction = _common.check_reduction(reduction)
    args = Args(stream=stream, logits=logits)
    shape = tuple(int(s) for s in logits.shape)
    if len(shape) != 2:
        raise ValueError(f"logits must have shape (N, C), got {shape}")
    if shape[1] == 0:
        raise ValueError("logits must have at least one class (C >= 1)")
    if kind(target) is None:
        raise TypeError(f"target must be an array, got {type(target).__name__}")
    tdt = dtype_of(target)
    tshape = tuple(int(s) for s in target.shape)
    c.prob = tdt.kind == "f"
    if c.prob:
        args.add("target", target)  # same float dtype as the logits (TypeError naming target)
        if tshape != shape:
            raise ValueError(f"target of probabilities must have the logits' shape {shape}, got {tshape}")
    else:
        if tdt not in INDEX_DTYPES:
            raise TypeError(f"target must be int32 or int64 class indices or {args.dtype} probabilities, got {tdt}")
        args.add("target", target, dtype=tdt)
        if tshape != shape[:1]:
            raise ValueError(f"target of class indices must have shape ({shape[0]},), got {tshape}")
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, (int, np.integer)):
        raise TypeError(f"ignore_index must be an integer, got {type(ignore_index).__name__}")
    c.ignore = int(ignore_index)
    if not -2**63 <= c.ignore < 2**63:
        raise ValueError(f"ignore_index must fit in int64, got {c.ignore}")
    if c.prob and c.ignore != -100:
        raise ValueError("ignore_index is not supported with probability targets (leave it at -100)")
    c.eps = check_real("label_smoothing", label_smoothing, low=0.0, high=1.0)
    if weight is not None:
        args.add("weight", weight)
        if tuple(int(s) for s in weight.shape) != shape[1:]:
            raise ValueError(f"weight must have shape ({shape[1]},) (one per class), got {tuple(weight.shape)}")
    c.args, c.shape, c.dtype = args, shape, args.dtype
    return c


def _views(c, weight):
    args = c.args
    c.x = args.nd("logits")
    if c.prob:
        c.t_prob = args.nd("target")
        c.t_index = placeholder(np.int64) if args.device else np.zeros(1, np.int64)  # not read
    else:
        c.t_index = args.flat("target")
        if not args.device:
            c.t_index = c.t_index.astype(np.int64, copy=False)  # one CPU compilation for both index dtypes
        c.t_prob = placeholder(c.dtype, 2) if args.device else c.x[:1, :1]  # not read
    if weight is not None:
        c.w = args.flat("weight")
    else:
        c.w = _common.default_weight(c.shape[1], c.dtype, args.device)


def _run(what, logits, target, weight, ignore_index, label_smoothing, reduction, grad=None, out=None, stream=None,
         validate=False):
    c = _check(logits, target, weight, ignore_index, label_smoothing, reduction, stream)
    args = c.args
    n_rows = c.shape[0]
    if out is not None and what == "forward" and c.reduction != "none":
        raise ValueError("out is only accepted with reduction='none' (a reduced loss is a new 0-d array)")
    upstream = None
    if what != "forward":
        # the 'mean' scale (1 / sum of weights) is applied by the kernels: parse grad as for 'sum'
        try:
            up = _common.upstream_grad(grad, "sum" if c.reduction == "mean" else c.reduction, args, (n_rows,),
                                       placeholder="logits")
        except ValueError as exc:  # name the user's reduction in the message
            raise ValueError(str(exc).replace("reduction='sum'", f"reduction={c.reduction!r}")) from None
        upstream = (up.dy, up.mode, up.g)
    dx = None
    if what != "forward":
        dx = args.output("out", out if what != "forward" else None, c.shape)
    loss = loss_rows = loss_flat = None
    reduce = what != "backward" and c.reduction != "none"
    if what != "backward":
        if c.reduction == "none":
            name = "out" if what == "forward" else "loss"
            loss = args.output(name, out if what == "forward" else None, (n_rows,))
            loss_rows = args.flat(name)
        else:
            loss, loss_flat = _common.scalar_result(args, "logits")
    _views(c, weight)
    if args.device:
        _device_run(c, reduce, dx is not None, loss_rows, loss_flat, upstream,
                    args.nd("out") if dx is not None else None, validate)
    else:
        _cpu_run(c, reduce, dx is not None, loss_rows, loss_flat, upstream,
                 args.nd("out") if dx is not None else None)
    args.finish()
    if what == "forward":
        return loss
    if what == "backward":
        return dx
    return loss, dx


_DOC_ARGS = """
    Args:
        logits: float32 or float64 array of shape (N, C) (NumPy, or a device array: CuPy, PyTorch CUDA, Numba).
        target: class indices, int32 or int64 of shape (N,), each in [0, C) or ``ignore_index``; or probabilities,
            the logits' dtype and shape (N, C).
        weight: optional (C,) class weights, the logits' dtype.
        ignore_index: rows whose target equals it count for nothing (class-index targets only).
        label_smoothing: eps in [0, 1].
        reduction: ``"mean"`` (divided by the summed weight of the non-ignored rows; by N for probability targets),
            ``"sum"`` or ``"none"`` (the (N,) row losses).
        stream: CUDA stream for a device call (default: the current stream of the inputs' library).
        validate: device calls only: wait for the target check and raise at once, before any gradient is written
            (default: a bad row's loss and gradient are NaN and ``gpunn.synchronize()`` raises the error)."""


def cross_entropy(logits, target, weight=None, ignore_index=-100, label_smoothing=0.0, reduction="mean", *,
                  out=None, stream=None, validate=False):
    r"""Cross entropy of softmax(logits) against class indices or probabilities (``F.cross_entropy``).

    .. math:: \ell_n = (1 - \varepsilon)\, w_{y_n} (\operatorname{lse}(x_n) - x_{n y_n})
              + \frac{\varepsilon}{C} \sum_c w_c (\operatorname{lse}(x_n) - x_{nc})

    {args}
        out: optional preallocated (N,) row losses (reduction ``"none"`` only).

    Returns:
        ``"none"``: (N,) array like ``logits``; ``"mean"``/``"sum"``: a 0-d array of the logits' kind and dtype (it
        stays on the device for device inputs; ``float(loss)`` reads it).

    Raises:
        ValueError: a target outside [0, C) that is not ``ignore_index``, or a row of all -inf logits (on the device:
            at ``gpunn.synchronize()``, or at once with ``validate=True``).

    Example:
        >>> import numpy as np, gpunn
        >>> x = np.array([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
        >>> round(float(gpunn.cross_entropy(x, np.array([0, 2]))), 6)
        0.669079
    """
    return _run("forward", logits, target, weight, ignore_index, label_smoothing, reduction, out=out, stream=stream,
                validate=validate)


def cross_entropy_backward(logits, target, weight=None, ignore_index=-100, label_smoothing=0.0, reduction="mean",
                           grad=None, *, out=None, stream=None, validate=False):
    r"""Gradient of :func:`cross_entropy` with respect to the logits.

    .. math:: \frac{\partial \ell}{\partial x_{nc}} = g_n s \left[(1 - \varepsilon) w_{y_n} (p_{nc} - [c = y_n])
              + \frac{\varepsilon}{C} (p_{nc} W - w_c)\right]

    with p = softmax(x_n), W = sum_c w_c, s = 1 / (summed weight) for ``"mean"``, else 1, and ``g`` the upstream
    gradient ``grad``: ``None`` (1), a scalar or one-element array for ``"mean"``/``"sum"``, an (N,) array (or a
    scalar) for ``"none"``. Probability targets: ``g_n s (p_{nc} \sum_k w_k t'_{nk} - w_c t'_{nc})``.

    {args}
        grad: the upstream gradient (see above).
        out: optional preallocated (N, C) gradient; may be ``logits`` itself (in place: nothing is written when the
            input is bad).

    Returns:
        ``dlogits``, an (N, C) array like ``logits``.

    Example:
        >>> import numpy as np, gpunn
        >>> gpunn.cross_entropy_backward(np.zeros((1, 2)), np.array([1]))
        array([[ 0.5, -0.5]])
    """
    return _run("backward", logits, target, weight, ignore_index, label_smoothing, reduction, grad=grad, out=out,
                stream=stream, validate=validate)


# the arguments the three cross-entropy functions share, written once (a docstring must be a plain literal, so the
# shared part is filled in after the definitions)
for _fn in (cross_entropy, cross_entropy_backward):
    _fn.__doc__ = _fn.__doc__.replace("{args}", _DOC_ARGS.strip(), 1)
del _fn

def cross_entropy_with_grad(logits, target, weight=None, ignore_index=-100, label_smoothing=0.0, reduction="mean",
                            grad=None, *, out=None, stream=None, validate=False):
    r"""``(cross_entropy(...), cross_entropy_backward(...))`` from one read of the logits for the row statistics and
    one more to write the gradient. ``out``: the gradient's buffer, may be ``logits`` itself.

    Example:
        >>> import numpy as np, gpunn
        >>> loss, dx = gpunn.cross_entropy_with_grad(np.zeros((1, 2)), np.array([1]))
        >>> round(float(loss), 6), dx
        (0.693147, array([[ 0.5, -0.5]]))
    """
    return _run("with_grad", logits, target, weight, ignore_index, label_smoothing, reduction, grad=grad, out=out,
                stream=stream, validate=validate)


# ----------------------------------------------------------------------------------------------------------------------
# Kernel build check
# ----------------------------------------------------------------------------------------------------------------------
def _signatures(dt, idx):
    """The launch signatures of the four kernels for logits of dtype ``dt`` and class indices of dtype ``idx``."""
    stats = f"void({dt}[:, ::1], {dt}[:, ::1], {dt}[::1], {dt}, {dt}, int64, int64, int64, " \
            f"{dt}[::1], {dt}[::1], {dt}[::1], {dt}[::1])"
    rows = f"void({dt}[:, ::1], {idx}[::1], {dt}[::1], int64, {dt}, {dt}, int64, " \
           f"{dt}[::1], {dt}[::1], {dt}[::1], {dt}[::1], {dt}[::1], {dt}[::1], {dt}[::1], {dt}[::1], " \
           f"int64[::1], int64, float64[:, ::1])"
    total = f"void(float64[:, ::1], int64, int64, {dt}[::1], {dt}[::1])"
    back = f"void({dt}[:, ::1], {idx}[::1], {dt}[:, ::1], {dt}[::1], int64, {dt}, {dt}, " \
           f"{dt}[::1], {dt}[::1], {dt}[::1], {dt}[::1], int64, {dt}, {dt}[::1], int64, int64, int64, " \
           f"{dt}[:, ::1])"
    return {"stats": stats, "rows_sum": rows, "total_sum": total, "backward": back}


def _register():
    block = 256  # the GPU block size (block_size() outside the simulator)
    variants = [("int32", False), ("int64", False), ("probs", True)]
    for tname, prob in variants:
        idx = "int64" if prob else tname
        for key in ("stats", "rows_sum", "total_sum", "backward"):
            if (key == "total_sum" and tname != "probs") or (key == "stats" and tname == "int64"):
                continue  # total_sum: one kernel for every target kind; stats: class targets are not read
            name = {"total_sum": "cross_entropy_total_sum",
                    "stats": f"cross_entropy_stats[{'probs' if prob else 'index'}]"}
            _registry.for_dtypes(
                name.get(key, f"cross_entropy_{key}[{tname}]"),
                (lambda dt, key=key, prob=prob: _device_kernels(dt, block, prob)[key]),
                (lambda dt, key=key, idx=idx: _signatures(dt, idx)[key]), f64_accumulator=key.endswith("_sum"))


_register()
