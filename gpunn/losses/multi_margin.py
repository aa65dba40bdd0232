r"""Multi-class margin loss (multi-class hinge; ``torch.nn.functional.multi_margin_loss``).

Shapes (as PyTorch): logits (N, C) with class-index targets (N,), or unbatched logits (C,) with a 0-d target.
Forward, row n of the logits x, class-index target y_n in [0, C), class weights w (C,) (all 1 by default),
p in {1, 2}, margin m, with h_ni = (m - x_n,y_n) + x_ni:

    l_n = (1 / C) sum_{i != y_n} w[y_n] max(0, h_ni)^p          (the weight multiplies after the power)
    'mean' = sum_n l_n / N   (NaN for an empty batch, as the other gpunn losses), 'sum' = sum_n l_n

Gradient (before the upstream gradient and the 1/N of 'mean'), with d_ni = [h_ni > 0] (1 if p = 1, 2 h_ni if p = 2):

    dx_ni = (w[y_n] / C) d_ni  for i != y_n,      dx_n,y_n = -(w[y_n] / C) sum_{i != y_n} d_ni

A term with h <= 0 (or NaN, as in PyTorch's kernel) is 0. A target outside [0, C) is a ValueError naming target
(found on the device for device inputs: at ``gpunn.synchronize()``, or at once with ``validate=True``).

Device: the row kernels of gpunn/_rowwise.py, with a row's state ``(S, D, 0, 0)`` (the sums of max(0, h)^p and of
d over i != y) and the target's logit read once per row before anything is written (``out`` may be ``logits``).
CPU: one ``prange`` over rows, the sums in float64.
"""

from __future__ import annotations

import functools

import numpy as np
from numba import njit, prange

from .. import _cpu, _errors, _rowwise
from .._args import Args, check_real
from .._arrays import dtype_of, kind, numba_array
from .._elementwise import typed
from .._launch import scratch
from . import _common
from .cross_entropy import INDEX_DTYPES

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


@functools.lru_cache(maxsize=None)
def _row_math(dtype, emits) -> _rowwise.RowMath:
    """The row kernels' math; ``k = (margin, p, 1 / C, 0)``, ``pre = (y, w[y], x[y], code)``."""
    term = _math(np.dtype(dtype))
    zero, one, nan = typed(dtype, 0.0, 1.0, np.nan)
    poisoned = (nan, nan, nan, nan)

    @njit(inline="always")
    def init(k):
        return zero, zero, zero, zero

    @njit(inline="always")
    def push(st, x, b, w, c, pre, k):
        if c == pre[0]:
            return st
        v, dv = term(x, k[0] - pre[2], k[1])
        return st[0] + v, st[1] + dv, zero, zero

    @njit(inline="always")
    def merge(s1, s2):
        return s1[0] + s2[0], s1[1] + s2[1], zero, zero

    @njit(inline="always")
    def finish(st, pre, k, gn):
        if pre[3] == 1:
            return poisoned, nan, zero, False  # a bad target (flagged by the kernel)
        wy = pre[1] * k[2]
        return (gn * wy, st[1], zero, zero), wy * st[0], one, False

    @njit(inline="always")
    def emit(x, b, w, c, pre, consts, k):
        if c == pre[0]:
            return -(consts[0] * consts[1])
        return consts[0] * term(x, k[0] - pre[2], k[1])[1]

    return _rowwise.RowMath(init, push, merge, finish, emit, prelude="margin", emits=emits, loss=True)


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
# ----------------------------------------------------------------------------------------------------------------------
# Argument checks and the public functions
# ----------------------------------------------------------------------------------------------------------------------
def _run(what, logits, target, p, margin, weight, reduction, grad=None, out=None, stream=None, validate=False):
    reduction = _common.check_reduction(reduction)
    args = Args(stream=stream, logits=logits)
    shape = tuple(int(s) for s in logits.shape)
    if len(shape) not in (1, 2):
        raise ValueError(f"logits must have shape (N, C) or (C,), got {shape}")
    row_shape = shape[:1] if len(shape) == 2 else ()
    n_rows, n_cols = (shape if len(shape) == 2 else (1, shape[0]))
    if n_cols == 0:
        raise ValueError("logits must have at least one class (C >= 1)")
    if kind(target) is None:
        raise TypeError(f"target must be an array, got {type(target).__name__}")
    tdt = dtype_of(target)
    if tdt not in INDEX_DTYPES:
        raise TypeError(f"target must be int32 or int64 class indices, got {tdt}")
    args.add("target", target, dtype=tdt)
    if tuple(int(s) for s in target.shape) != row_shape:
        raise ValueError(f"target must have shape {row_shape}, got {tuple(target.shape)}")
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
    upstream = _common.upstream_grad(grad, reduction, args, row_shape, placeholder="logits") if what != "forward" \
        else None
    dx = args.output("out", out, shape) if what != "forward" else None
    loss = loss_rows = loss_flat = None
    if what != "backward":
        if reduction == "none":
            name = "out" if what == "forward" else "loss"
            loss = args.output(name, out if what == "forward" else None, row_shape)
            loss_rows = args.flat(name)
        else:
            loss, loss_flat = _common.scalar_result(args, "logits")
    x = args.flat("logits")
    t = args.flat("target")
    w = args.flat("weight") if weight is not None else _common.default_weight(n_cols, dt, args.device)
    dxv = args.flat("out") if dx is not None else None
    if args.device:
        _device_run(args, x, t, w, p, margin, n_rows, n_cols, upstream, dxv, loss_rows, loss_flat, reduction,
                    validate)
    else:
        _cpu_run(x, t, w, p, margin, n_rows, n_cols, upstream, dxv, loss_rows, loss_flat, reduction)
    args.finish()
    if what == "forward":
        return loss
    if what == "backward":
        return dx
    return loss, dx


def _device_run(args, x, t, w, p, margin, n_rows, n_cols, upstream, dxv, loss_rows, loss_flat, reduction, validate):
    stream, like = args.stream, args.array("logits")
    lay = _rowwise.Layout(n_rows, n_cols, 1)
    if loss_rows is None:
        (loss_rows,) = scratch(like, stream, "multi_margin", (args.dtype, (max(n_rows, 1),)))

    def describe(code):
        row = code // 2
        return _bad_target_message(row, int(numba_array(t)[row:row + 1].copy_to_host()[0]), n_cols)

    inputs = dict(a=x, w=w, t=t, k=(margin, p, 1.0 / n_cols, 0.0), loss_rows=loss_rows)
    if validate and dxv is not None:  # a loss-only pass finds bad targets before anything is written
        _rowwise.run(_row_math(args.dtype, False), "multi_margin", lay, stream, like, describe=describe, **inputs)
        _errors.check()
    if dxv is None:
        partials = _rowwise.run(_row_math(args.dtype, False), "multi_margin", lay, stream, like,
                                describe=describe, **inputs)
    else:
        partials = _rowwise.run(_row_math(args.dtype, True), "multi_margin_with_grad", lay, stream, like,
                                upstream=upstream, out=dxv, describe=describe, **inputs)
    if validate:
        _errors.check()
    if loss_flat is not None:
        _rowwise.total(partials, 0 if reduction == "sum" else 2, n_rows, loss_flat, stream)


def _cpu_run(x, t, w, p, margin, n_rows, n_cols, upstream, dxv, loss_rows, loss_flat, reduction):
    dt = x.dtype
    t = np.asarray(t).astype(np.int64, copy=False)  # one CPU compilation for both index dtypes
    off = (t < 0) | (t >= n_cols)
    if off.any():
        row = int(np.argmax(off))
        raise ValueError(_bad_target_message(row, int(t[row]), n_cols))
    rows = np.empty(n_rows, np.float64)
    if n_rows:
        dy, dmode, g = (upstream.dy, np.int64(upstream.mode), dt.type(upstream.g)) if upstream else \
            (x, np.int64(0), dt.type(0))
        grad = dxv.reshape(n_rows, n_cols) if dxv is not None else np.empty((0, 0), dt)
        _cpu.run(_cpu_loop(dt), "rows", x.size, x.reshape(n_rows, n_cols), t, w, dt.type(margin), np.int64(p),
                 dt.type(1.0 / n_cols), dy, dmode, g, rows, grad, dxv is not None)
    if loss_rows is not None:
        loss_rows[...] = rows
    if loss_flat is not None:
        loss_flat[0] = float(np.sum(rows)) * _common.reduction_scale(reduction, n_rows)  # float64, pairwise order


def _bad_target_message(row, value, n_cols):
    return f"target[{row}] = {value} is not a class index in [0, {n_cols})"


def multi_margin_loss(logits, target, p=1, margin=1.0, weight=None, reduction="mean", *, out=None, stream=None,
                      validate=False):
    r"""Multi-class margin (hinge) loss (``torch.nn.functional.multi_margin_loss``).

    .. math:: \ell_n = \frac{1}{C} \sum_{i \ne y_n} w_{y_n} \max(0,\ m - x_{n y_n} + x_{ni})^p

    Args:
        logits: float32 or float64 logits of shape (N, C) or (C,) (NumPy, or a device array: CuPy, PyTorch CUDA,
            Numba).
        target: int32 or int64 class indices of shape (N,) (0-d for (C,) logits), each in [0, C).
        p: 1 or 2.
        margin: the margin m (a real number).
        weight: optional (C,) class weights, ``logits``'s dtype; row n is weighted by ``weight[target[n]]``.
        reduction: ``"mean"`` (divided by N), ``"sum"`` or ``"none"`` (the (N,) row losses).
        out: optional preallocated row losses, the target's shape (reduction ``"none"`` only).
        stream: CUDA stream for a device call (default: the current stream of the inputs' library).
        validate: device calls only: wait for the target check and raise at once (default: a bad row's loss and
            gradient are NaN and ``gpunn.synchronize()`` raises the error).

    Returns:
        ``"none"``: the row losses, an array like ``logits`` of the target's shape; ``"mean"``/``"sum"``: a 0-d
        array of ``logits``'s kind and dtype (it stays on the device for device inputs; ``float(loss)`` reads it).

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
def _register():
    _rowwise.register("multi_margin", lambda dt: _row_math(dt, False))
    _rowwise.register("multi_margin_with_grad", lambda dt: _row_math(dt, True))


_register()
