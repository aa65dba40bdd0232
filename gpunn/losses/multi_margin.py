r"""Multi-class margin loss (multi-class hinge; ``torch.nn.functional.multi_margin_loss``).

Forward, row n of the logits x (N, C), class-index target y_n in [0, C), class weights w (C,) (all 1 by default),
p in {1, 2}, margin m, with h_ni = (m - x_n,y_n) + x_ni:

    l_n = (1 / C) sum_{i != y_n} w[y_n] max(0, h_ni)^p          (the weight multiplies after the power)
    'mean' = sum_n l_n / N   (NaN for an empty batch, as the other gpunn losses), 'sum' = sum_n l_n

Gradient (before the upstream gradient and the 1/N of 'mean'), with d_ni = [h_ni > 0] (1 if p = 1, 2 h_ni if p = 2):

    dx_ni = (w[y_n] / C) d_ni  for i != y_n,      dx_n,y_n = -(w[y_n] / C) sum_{i != y_n} d_ni

A term with h <= 0 (or NaN, as in PyTorch's kernel) is 0. A target outside [0, C) is a ValueError naming target
(found on the device for device inputs, raised before any gradient is written).

How it runs on the device: the row layout of gpunn.losses.cross_entropy (short rows share a block, long rows are cut
into chunks over several blocks): ``_multi_margin_stats_kernel`` reads each chunk once and leaves the partial sums of
max(0, h)^p and of d; ``_multi_margin_rows_sum_kernel`` adds a row's chunks in order, writes the row loss and the
row's sum of d, and leaves float64 block partials of the loss (gpunn/_reduce.py; finished in a fixed order by
gpunn.losses._common.finish_scalar); ``_multi_margin_backward_kernel`` writes the gradient over the same (row, chunk)
items and ``_multi_margin_target_kernel`` the target column after it (the other columns read x[n, y], which may be
overwritten in place).
The CPU path is one ``prange`` over rows.
"""

from __future__ import annotations

import functools

import numpy as np
from numba import cuda, float64, from_dtype, int64, njit, prange

from .. import _cpu, _registry
from .._elementwise import typed
from .. import _errors
from .._args import Args, check_real
from .._arrays import dtype_of, kind, numba_array
from .._launch import Kernel, block_size, current_device_id, scratch
from .._reduce import block_partial_fn, finish, reduce_grid
from .._runtime import simulator
from . import _common
from .cross_entropy import INDEX_DTYPES, chunk_grid, row_layout

__all__ = ["multi_margin_loss", "multi_margin_loss_backward", "multi_margin_loss_with_grad"]


# ----------------------------------------------------------------------------------------------------------------------
# Scalar math (one definition, called by the CUDA kernels and by the CPU loops)
# ----------------------------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def _math(dtype):
    zero, one, two = typed(dtype, 0.0, 1.0, 2.0)

    @njit(inline="always")
    def term(xi, base, p):
        """(max(0, h)^p, d) for h = base + x_i with base = margin - x_y; d = dh^p/dh where h > 0, else 0."""
        h = base + xi
        if h > zero:  # NaN fails and counts for nothing, as in PyTorch
            if p == 1:
                return h, one
            return h * h, two * h
        return zero, zero

    return term


# ----------------------------------------------------------------------------------------------------------------------
# CUDA kernels
# ----------------------------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def _device_kernels(dtype, block):
    term = _math(dtype)
    zero, nan = typed(dtype, 0.0, np.nan)
    nbt = from_dtype(dtype)
    block_partial = block_partial_fn(block)

    @cuda.jit
    def _multi_margin_stats_kernel(x, t, margin, p, group, chunk, n_chunks, ps, pd, flags, slot):
        # item = (row, chunk), read by a group of threads: partial sums of max(0, h)^p and of d over i != y
        n_rows = x.shape[0]
        n_cols = x.shape[1]
        ss = cuda.shared.array(block, nbt)
        sd = cuda.shared.array(block, nbt)
        tid = cuda.threadIdx.x
        lane = tid % group
        per_block = block // group
        n_items = n_rows * n_chunks
        base = int64(cuda.blockIdx.x) * per_block
        while base < n_items:  # the same trip count for every thread of the block (they all sync)
            item = base + tid // group
            s = zero
            d = zero
            if item < n_items:
                row = item // n_chunks
                y = t[row]
                if y < 0 or y >= n_cols:
                    cuda.atomic.min(flags, slot, row)  # never read x[row, y] out of bounds
                else:
                    lo = (item - row * n_chunks) * chunk
                    hi = min(lo + chunk, n_cols)
                    xb = margin - x[row, y]
                    for c in range(lo + lane, hi, group):
                        if c != y:
                            v, dv = term(x[row, c], xb, p)
                            s += v
                            d += dv
            ss[tid] = s
            sd[tid] = d
            cuda.syncthreads()
            half = group // 2
            while half > 0:  # fixed tree inside each group
                if lane < half:
                    ss[tid] += ss[tid + half]
                    sd[tid] += sd[tid + half]
                cuda.syncthreads()
                half //= 2
            if lane == 0 and item < n_items:
                ps[item] = ss[tid]
                pd[item] = sd[tid]
            cuda.syncthreads()
            base += int64(cuda.gridDim.x) * per_block

    @cuda.jit
    def _multi_margin_rows_sum_kernel(t, w, inv_c, n_chunks, ps, pd, d_rows, loss_rows, partials):
        # per row: add the chunk partials in order; l = w_y S / C; float64 block partials of l
        n_rows = t.size
        acc = float64(0.0)
        for row in range(int64(cuda.grid(1)), n_rows, int64(cuda.gridsize(1))):
            j = row * n_chunks
            s = ps[j]
            d = pd[j]
            for k in range(1, n_chunks):
                s += ps[j + k]
                d += pd[j + k]
            y = t[row]
            loss = nan  # a bad target (flagged by the stats kernel): NaN
            if y >= 0 and y < w.size:
                loss = (w[y] * s) * inv_c
            d_rows[row] = d
            loss_rows[row] = loss
            acc += float64(loss)
        block_partial(acc, partials, 0)

    @cuda.jit
    def _multi_margin_backward_kernel(x, t, w, margin, p, inv_c, d_rows, dy, dmode, g, group, chunk, n_chunks, out):
        # dx_i = up(row) (w_y / C) d_i for i != y, over (row, chunk) items, one group of threads per item; reads x at
        # the index it writes (out may be x) and x[row, y], so the target column is written by the next kernel
        n_cols = x.shape[1]
        n_items = x.shape[0] * n_chunks
        per_block = block // group
        lane = cuda.threadIdx.x % group
        item = int64(cuda.blockIdx.x) * per_block + cuda.threadIdx.x // group
        while item < n_items:
            row = item // n_chunks
            lo = (item - row * n_chunks) * chunk
            hi = min(lo + chunk, n_cols)
            y = t[row]
            if y < 0 or y >= n_cols:  # a bad target: NaN, never x[row, y]
                for c in range(lo + lane, hi, group):
                    out[row, c] = nan
            else:
                k = ((dy[row] if dmode == 2 else dy[0]) * g if dmode else g) * (w[y] * inv_c)
                xb = margin - x[row, y]
                for c in range(lo + lane, hi, group):
                    if c != y:
                        v, dv = term(x[row, c], xb, p)
                        out[row, c] = k * dv
            item += int64(cuda.gridDim.x) * per_block

    @cuda.jit
    def _multi_margin_target_kernel(t, w, inv_c, d_rows, dy, dmode, g, out):
        # the target column: dx_y = -up(row) (w_y / C) sum_{i != y} d_i (after every other element read x[row, y])
        for row in range(int64(cuda.grid(1)), t.size, int64(cuda.gridsize(1))):
            y = t[row]
            if y >= 0 and y < w.size:
                k = ((dy[row] if dmode == 2 else dy[0]) * g if dmode else g) * (w[y] * inv_c)
                out[row, y] = -(k * d_rows[row])

    return {"stats": _multi_margin_stats_kernel, "rows_sum": _multi_margin_rows_sum_kernel,
            "backward": _multi_margin_backward_kernel, "target": _multi_margin_target_kernel}


# ----------------------------------------------------------------------------------------------------------------------
# CPU path: one prange over rows
# ----------------------------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def _cpu_loop(dtype):
    term = _math(dtype)
    to_dt = np.dtype(dtype).type

    def rows_loop(x, t, w, margin, p, inv_c, dy, dmode, g, loss_rows, dx, want_grad):
        # loss_rows float64 (N,); dx (N, C) may be x itself: x[n, y] is read first, dx[n, y] written last
        n_rows, n_cols = x.shape
        for n in prange(n_rows):
            y = t[n]
            xb = margin - x[n, y]
            s = 0.0
            d = 0.0  # float64, as s: a row of 2^18 classes in one float32 chain lost ~4e-6 relative in dx[n, y]
            for c in range(n_cols):
                if c != y:
                    v, dv = term(x[n, c], xb, p)
                    s += v
                    d += dv
            wy = w[y]
            loss_rows[n] = np.float64(wy) * s * np.float64(inv_c)
            if want_grad:
                k = ((dy[n] if dmode == 2 else dy[0]) * g if dmode else g) * (wy * inv_c)
                for c in range(n_cols):
                    if c != y:
                        v, dv = term(x[n, c], xb, p)
                        dx[n, c] = k * dv
                dx[n, y] = -(k * to_dt(d))

    return _cpu.loops(rows_loop)


# ----------------------------------------------------------------------------------------------------------------------
# Argument checks and the public functions
# ----------------------------------------------------------------------------------------------------------------------
def _run(what, logits, target, p, margin, weight, reduction, grad=None, out=None, stream=None, validate=False):
    reduction = _common.check_reduction(reduction)
    args = Args(stream=stream, logits=logits)
    shape = tuple(int(s) for s in logits.shape)
    if len(shape) != 2:
        raise ValueError(f"logits must have shape (N, C), got {shape}")
    n_rows, n_cols = shape
    if n_cols == 0:
        raise ValueError("logits must have at least one class (C >= 1)")
    if kind(target) is None:
        raise TypeError(f"target must be an array, got {type(target).__name__}")
    tdt = dtype_of(target)
    if tdt not in INDEX_DTYPES:
        raise TypeError(f"target must be int32 or int64 class indices, got {tdt}")
    args.add("target", target, dtype=tdt)
    if tuple(int(s) for s in target.shape) != (n_rows,):
        raise ValueError(f"target must have shape ({n_rows},), got {tuple(target.shape)}")
    if isinstance(p, bool) or p not in (1, 2):
        raise ValueError(f"p must be 1 or 2, got {p!r}")
    margin = check_real("margin", margin)
    if weight is not None:
        args.add("weight", weight)
        if tuple(int(s) for s in weight.shape) != (n_cols,):
            raise ValueError(f"weight must have shape ({n_cols},) (one per class), got {tuple(weight.shape)}")
    if out is not None and what == "forward" and reduction != "none":
        raise ValueError("out is only accepted with reduction='none' (a reduced loss is a new 0-d array)")
    dt = args.dtype
    upstream = _common.upstream_grad(grad, reduction, args, (n_rows,), placeholder="logits") if what != "forward" \
        else None
    dx = args.output("out", out, shape) if what != "forward" else None
    loss = loss_rows = loss_flat = None
    reduce = what != "backward" and reduction != "none"
    if what != "backward":
        if reduction == "none":
            name = "out" if what == "forward" else "loss"
            loss = args.output(name, out if what == "forward" else None, (n_rows,))
            loss_rows = args.flat(name)
        else:
            loss, loss_flat = _common.scalar_result(args, "logits")
    x = args.nd("logits")
    t = args.flat("target")
    if weight is not None:
        w = args.flat("weight")
    else:
        w = _common.default_weight(n_cols, dt, args.device)
    dxv = args.nd("out") if dx is not None else None
    tm, tp, inv_c = dt.type(margin), np.int64(p), dt.type(1.0 / n_cols)
    up = (upstream.dy, np.int64(upstream.mode), dt.type(upstream.g)) if upstream else None
    scale = _common.reduction_scale(reduction, n_rows)

    if args.device:
        stream = args.stream
        block = block_size()
        k = _kernels(dt, block, t.dtype)
        group, chunk, n_chunks = row_layout(n_cols, block)
        n_items = n_rows * n_chunks
        blocks, _ = reduce_grid(n_rows)
        ps, pd, d_rows, rows_tmp, partials = scratch(args.array("logits"), stream, "multi_margin",
                                                     (dt, (max(n_items, 1),)), (dt, (max(n_items, 1),)),
                                                     (dt, (max(n_rows, 1),)), (dt, (max(n_rows, 1),)),
                                                     (np.float64, (1, blocks)))
        if loss_rows is None:
            loss_rows = rows_tmp
        if n_rows:
            def describe(row):
                return _bad_target_message(row, int(numba_array(t)[row:row + 1].copy_to_host()[0]), n_cols)

            flags, slot = _errors.slot(0 if simulator() else current_device_id(), stream, describe)
            k["stats"](chunk_grid(n_items, group, block), block, stream, x, t, tm, tp, np.int64(group),
                       np.int64(chunk), np.int64(n_chunks), ps, pd, flags, np.int64(slot))
            if validate:
                _errors.check()
        k["rows_sum"](blocks, block, stream, t, w, inv_c, np.int64(n_chunks), ps, pd, d_rows, loss_rows, partials)
        if reduce:
            finish(partials, scale, loss_flat, stream)
        if dx is not None and n_rows:
            k["backward"](chunk_grid(n_items, group, block), block, stream, x, t, w, tm, tp, inv_c, d_rows, *up,
                          np.int64(group), np.int64(chunk), np.int64(n_chunks), dxv)
            target = k["target"]
            target(target.grid(n_rows, block), block, stream, t, w, inv_c, d_rows, *up, dxv)
    else:
        t = tv = np.asarray(t).astype(np.int64, copy=False)  # one CPU compilation for both index dtypes
        off = (tv < 0) | (tv >= n_cols)
        if off.any():
            row = int(np.argmax(off))
            raise ValueError(_bad_target_message(row, int(tv[row]), n_cols))
        rows = np.empty(n_rows, np.float64)
        if n_rows:
            dy, dmode, g = up if up else (x.reshape(-1), np.int64(0), dt.type(0))
            _cpu.run(_cpu_loop(dt), "rows", x.size, x, t, w, tm, tp, inv_c, dy, dmode, g, rows,
                     dxv if dx is not None else np.empty((0, 0), dt), dx is not None)
        if what != "backward":
            if reduction == "none":
                loss_rows[...] = rows
            else:
                loss_flat[0] = float(np.sum(rows)) * scale  # float64, fixed (pairwise) order
    args.finish()
    if what == "forward":
        return loss
    if what == "backward":
        return dx
    return loss, dx


def _bad_target_message(row, value, n_cols):
    return f"target[{row}] = {value} is not a class index in [0, {n_cols})"


def multi_margin_loss(logits, target, p=1, margin=1.0, weight=None, reduction="mean", *, out=None, stream=None,
                      validate=False):
    r"""Multi-class margin (hinge) loss (``torch.nn.functional.multi_margin_loss``).

    .. math:: \ell_n = \frac{1}{C} \sum_{i \ne y_n} w_{y_n} \max(0,\ m - x_{n y_n} + x_{ni})^p

    Args:
        logits: float32 or float64 logits of shape (N, C) (NumPy, or a device array: CuPy, PyTorch CUDA, Numba).
        target: int32 or int64 class indices of shape (N,), each in [0, C).
        p: 1 or 2.
        margin: the margin m (a real number).
        weight: optional (C,) class weights, ``logits``'s dtype; row n is weighted by ``weight[target[n]]``.
        reduction: ``"mean"`` (divided by N), ``"sum"`` or ``"none"`` (the (N,) row losses).
        out: optional preallocated (N,) row losses (reduction ``"none"`` only).
        stream: CUDA stream for a device call (default: the current stream of the inputs' library).
        validate: device calls only: wait for the target check and raise at once (default: a bad row's loss and
            gradient are NaN and ``gpunn.synchronize()`` raises the error).

    Returns:
        ``"none"``: (N,) array like ``logits``; ``"mean"``/``"sum"``: a 0-d array of ``logits``'s kind and dtype (it
        stays on the device for device inputs; ``float(loss)`` reads it).

    Raises:
        ValueError: a target outside [0, C) (on the device: at ``gpunn.synchronize()``, or at once with
            ``validate=True``).

    Example:
        >>> import numpy as np, gpunn
        >>> float(gpunn.multi_margin_loss(np.array([[0.1, 0.2, 0.4, 0.8]]), np.array([3])))
        0.32499999999999996
    """
    return _run("forward", logits, target, p, margin, weight, reduction, out=out, stream=stream, validate=validate)


def multi_margin_loss_backward(logits, target, p=1, margin=1.0, weight=None, reduction="mean", grad=None, *,
                               out=None, stream=None, validate=False):
    r"""Gradient of :func:`multi_margin_loss` with respect to ``logits``.

    .. math:: \frac{\partial \ell}{\partial x_{ni}} = g_n s \frac{w_{y_n}}{C} d_{ni}\ (i \ne y_n), \qquad
              \frac{\partial \ell}{\partial x_{n y_n}} = -g_n s \frac{w_{y_n}}{C} \sum_{i \ne y_n} d_{ni}

    with d = [h > 0] (p = 1) or 2 max(0, h) (p = 2), s = 1/N for ``"mean"``, else 1, and ``g`` the upstream gradient
    ``grad``: ``None`` (1), a scalar or one-element array for ``"mean"``/``"sum"``, an (N,) array for ``"none"``.
    ``out``: optional preallocated (N, C) gradient; may be ``logits`` itself.

    Example:
        >>> import numpy as np, gpunn
        >>> gpunn.multi_margin_loss_backward(np.array([[0.1, 0.2, 0.4, 0.8]]), np.array([3]))
        array([[ 0.25,  0.25,  0.25, -0.75]])
    """
    return _run("backward", logits, target, p, margin, weight, reduction, grad=grad, out=out, stream=stream,
                validate=validate)


def multi_margin_loss_with_grad(logits, target, p=1, margin=1.0, weight=None, reduction="mean", grad=None, *,
                                out=None, stream=None, validate=False):
    r"""``(multi_margin_loss(...), multi_margin_loss_backward(...))`` from one statistics pass and one gradient pass.
    ``out``: the gradient's buffer, may be ``logits`` itself.

    Example:
        >>> import numpy as np, gpunn
        >>> loss, dx = gpunn.multi_margin_loss_with_grad(np.array([[0.1, 0.2, 0.4, 0.8]]), np.array([3]))
        >>> round(float(loss), 6), dx
        (0.325, array([[ 0.25,  0.25,  0.25, -0.75]]))
    """
    return _run("with_grad", logits, target, p, margin, weight, reduction, grad=grad, out=out, stream=stream,
                validate=validate)


# ----------------------------------------------------------------------------------------------------------------------
# Kernel build check
# ----------------------------------------------------------------------------------------------------------------------
def _signatures(dt, idx):
    return {
        "stats": f"void({dt}[:, ::1], {idx}[::1], {dt}, int64, int64, int64, int64, {dt}[::1], {dt}[::1], "
                 f"int64[::1], int64)",
        "rows_sum": f"void({idx}[::1], {dt}[::1], {dt}, int64, {dt}[::1], {dt}[::1], {dt}[::1], {dt}[::1], "
                    f"float64[:, ::1])",
        "backward": f"void({dt}[:, ::1], {idx}[::1], {dt}[::1], {dt}, int64, {dt}, {dt}[::1], {dt}[::1], "
                    f"int64, {dt}, int64, int64, int64, {dt}[:, ::1])",
        "target": f"void({idx}[::1], {dt}[::1], {dt}, {dt}[::1], {dt}[::1], int64, {dt}, {dt}[:, ::1])",
    }


@functools.lru_cache(maxsize=None)
def _kernels(dtype, block, index_dtype):
    sigs = _signatures(np.dtype(dtype).name, np.dtype(index_dtype).name)
    return {key: Kernel(d, sigs[key], f"multi_margin_{key}") for key, d in _device_kernels(dtype, block).items()}


def _register():
    block = 256  # the GPU block size (block_size() outside the simulator)
    for idx in ("int32", "int64"):
        for key in ("stats", "rows_sum", "backward", "target"):
            _registry.for_dtypes(f"multi_margin_{key}[{idx}]", (lambda dt, key=key: _device_kernels(dt, block)[key]),
                                 (lambda dt, key=key, idx=idx: _signatures(dt, idx)[key]),
                                 f64_accumulator=key == "rows_sum")


_register()
