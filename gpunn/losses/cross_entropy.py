r"""Cross entropy over logits, with the softmax fused in (``torch.nn.functional.cross_entropy``).

Shapes (as PyTorch): logits ``(N, C)``, ``(N, C, d1, ..., dk)`` (the class axis is 1: segmentation) or ``(C,)``
(unbatched); class-index targets ``(N,)``, ``(N, d1, ..., dk)`` or ``()``, or probability targets of the logits'
shape. A *row* is the C logits of one sample (and position): ``N d1 ... dk`` rows, or one.

Forward, row n of the logits x, class weights w (C,) (all 1 by default), label smoothing eps, with
m_n = max_c x_nc, ls_n = log sum_c exp(x_nc - m_n) and lse_n = m_n + ls_n:

* class-index target y:
      l_n = (1 - eps) w[y_n] (lse_n - x_n,y_n) + (eps / C) sum_c w_c (lse_n - x_nc),   l_n = 0 where y_n == ignore_index
      'mean' = sum_n l_n / sum_{n not ignored} w[y_n]
  The ignored class still sits in the softmax denominator of the other rows (it is a class like any other).
* probability target t, smoothed as t' = (1 - eps) t + eps / C:
      l_n = sum_c w_c t'_nc (lse_n - x_nc)    (a term with w_c t'_nc = 0 is 0, also where x_nc = -inf: 0 log 0 = 0)
      'mean' = sum_n l_n / (number of rows)

Gradient with respect to x_nc (before the upstream gradient and the 'mean' scale), p = softmax(x_n), W = sum_c w_c:

* class:  dx_nc = (1 - eps) w[y_n] (p_nc - [c == y_n]) + (eps / C) (p_nc W - w_c)      (0 for an ignored row)
* probs:  dx_nc = p_nc sum_k w_k t'_nk - w_c t'_nc

Documented differences from PyTorch: a 'mean' whose denominator is 0 although there are rows (every row ignored, or
every target class has weight 0) is 0 with a zero gradient (PyTorch: NaN; pytorch issues 70348, 116349); an empty
batch's 'mean' is NaN as in PyTorch and the other gpunn losses. A probability target of 0 against a -inf logit
contributes 0 (PyTorch: 0 * -inf = NaN). A row whose logits are all -inf is an input error (ValueError naming logits),
except in an ignored row. A -inf logit elsewhere is fine: it gets probability 0 and a zero gradient (the loss is +inf
only when the target class itself, or a smoothed class, sits at -inf, as in PyTorch).

One scalar math (:func:`_math`) serves both paths. A row's state is ``(m, s, a, wa)``: the running max, the sum of
``exp(x - m)``, ``a = sum_c coef_c (m - x_c)`` and ``wa = sum_c coef_c`` (coef = w_c with smoothing, w_c t'_c for
probability targets; a is shifted when the max grows). ``finish`` turns it into the row's loss and the gradient's
row constants, ``emit`` writes one gradient element.

* Device (gpunn/_rowwise.py): one kernel reads each row once, into registers, and writes its gradient once (8 bytes
  per float32 element; rows longer than ``_rowwise.MAX_ROW`` are cut into chunks over several blocks and read
  twice); the K-d layout reads its rows with stride ``d1 ... dk`` in place (no transposed copy). A 'mean' gradient
  needs ``1 / sum w[y]`` before the rows are written: two small kernels over the targets find it on the device
  first. Bad targets are flagged on the device (gpunn/_errors.py): their rows' loss and gradient are NaN and the
  error is raised at the next ``gpunn.synchronize()``, or at once with ``validate=True`` (then a loss-only pass runs
  first, so that nothing is written for bad input).
* CPU: one ``prange`` over rows, every pass on a cache-resident row: a vectorised max; exp(x - m) written into the
  gradient row (float32: gpunn's vectorisable polynomial exp) with its float64 sum; ``finish``; ``emit`` over the row.
  Targets are checked on the host first; the all -inf row check runs alone first when the gradient overwrites an
  input.
"""

from __future__ import annotations

import functools
import math

import numba
import numpy as np
from numba import float64, from_dtype, int64, njit, prange

from .. import _cpu, _errors, _rowwise
from .._args import Args, check_real
from .._arrays import dtype_of, kind, numba_array
from .._elementwise import typed
from .._launch import placeholder, scratch
from ..activations import _vecmath
from . import _common

__all__ = ["cross_entropy", "cross_entropy_backward", "cross_entropy_with_grad"]

INDEX_DTYPES = (np.dtype(np.int32), np.dtype(np.int64))


# ----------------------------------------------------------------------------------------------------------------------
# Scalar math (one definition for the CUDA kernels and the CPU loops; scalars only: in the simulator compiled helpers
# cannot take device arrays, so every array read stays in the kernels and loops)
# ----------------------------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def _math(dtype, prob, smooth, cpu):
    """``(push, merge, finish, emit, emit_p)`` for logits of ``dtype``: probability targets (``prob``) or class
    indices with label smoothing (``smooth``) or without; ``cpu``: exp is gpunn's vectorisable one.

    ``k = (1 - eps, eps / C, 0, 0)``; ``pre = (y, w[y], x[y], code)`` (code 0: a class, 1: a bad target, 2: ignored);
    ``emit_p(p, ...)`` is ``emit`` given the element's probability ``p`` (the CPU has it from the sum's pass)."""
    zero, one, ninf, inf, nan = typed(dtype, 0.0, 1.0, -math.inf, math.inf, math.nan)
    exp = _vecmath.for_dtype(dtype)[0] if cpu else math.exp
    track = prob or smooth  # the row needs a and wa
    nothing = (zero, zero, zero, zero, zero)
    poisoned = (nan, nan, nan, nan, nan)

    @njit(inline="always", error_model="numpy")
    def coef_of(b, w, k):
        # the coefficient of -log p_c in the row loss besides the target's own term
        return w * (b * k[0] + k[1]) if prob else w

    @njit(inline="always", error_model="numpy")
    def push(st, x, b, w, c, pre, k):
        m, s, a, wa = st
        if x > m:
            if track and m > ninf and wa != zero:
                a = a + wa * (x - m)  # every earlier (m - x_c) grows by the max's increase
            s = s * exp(m - x) + one  # s is 0 while m is -inf, and exp(-inf) = 0
            m = x
        elif x != ninf:
            s = s + exp(x - m)  # x <= m (or NaN, which propagates)
        if track:
            coef = coef_of(b, w, k)
            if coef != zero:
                a = a + (coef * inf if x == ninf else coef * (m - x))  # -coef log p = +inf at x = -inf; never 0 inf
                wa = wa + coef
        return m, s, a, wa

    @njit(inline="always", error_model="numpy")
    def merge(s1, s2):
        m1, sum1, a1, w1 = s1
        m2, sum2, a2, w2 = s2
        m = m1 if m1 >= m2 else m2
        if m == ninf:
            return m, sum1 + sum2, a1 + a2, w1 + w2
        if m1 < m:
            sum1 = sum1 * exp(m1 - m)
            if track and m1 > ninf and w1 != zero:
                a1 = a1 + w1 * (m - m1)
        if m2 < m:
            sum2 = sum2 * exp(m2 - m)
            if track and m2 > ninf and w2 != zero:
                a2 = a2 + w2 * (m - m2)
        return m, sum1 + sum2, a1 + a2, w1 + w2

    @njit(inline="always", error_model="numpy")
    def finish(st, pre, k, gn):
        # -> (consts, loss, den, bad): consts = (m, 1/s, p's factor, w_c's factor, the target's term) of the gradient
        m, s, a, wa = st
        code = pre[3]
        if not prob and code == 2:
            return nothing, zero, zero, False  # ignored: no loss, no weight, zero gradient
        if code == 1 or (m == ninf and s == zero):
            return poisoned, nan, zero, code != 1  # a bad target, or all -inf (s is NaN when the row has a NaN)
        ls = math.log(s)
        inv = one / s
        if prob:
            return (m, inv, gn * wa, gn, zero), wa * ls + a, one, False
        wy, xy = pre[1], pre[2]
        loss = zero
        if k[0] != zero:
            loss = k[0] * wy * ((m - xy) + ls)  # (1 - eps) w_y (lse - x_y); skipped at eps = 1 (0 inf)
        cy = gn * (k[0] * wy)
        cp = cy
        if smooth:
            loss = loss + k[1] * (wa * ls + a)  # (eps / C) sum_c w_c (lse - x_c), with wa = W
            cp = cy + gn * (k[1] * wa)
        return (m, inv, cp, gn * k[1], cy), loss, wy, False

    @njit(inline="always", error_model="numpy")
    def emit_p(p, b, w, c, pre, consts, k):
        if prob:
            return p * consts[2] - consts[3] * coef_of(b, w, k)  # p sum_k w_k t'_k - w_c t'_c
        d = p * consts[2]  # p ((1 - eps) w_y + (eps / C) W)
        if smooth:
            d = d - consts[3] * w  # - (eps / C) w_c
        if c == pre[0]:
            d = d - consts[4]  # - (1 - eps) w_y at the target
        return d

    @njit(inline="always", error_model="numpy")
    def emit(x, b, w, c, pre, consts, k):
        if not prob and pre[3] == 2:
            return zero  # an ignored row: also where its logits are NaN
        return emit_p(exp(x - consts[0]) * consts[1], b, w, c, pre, consts, k)

    return push, merge, finish, emit, emit_p


@functools.lru_cache(maxsize=None)
def _row_math(dtype, prob, smooth, weighted, emits, loss) -> _rowwise.RowMath:
    """The device kernels' math: ``weighted`` when the element loop reads w_c (smoothing or probability targets with
    a weight), ``emits``: writes the gradient, ``loss``: the row losses."""
    push, merge, finish, emit, _ = _math(np.dtype(dtype), prob, smooth, False)
    zero, ninf = typed(dtype, 0.0, -math.inf)

    @njit(inline="always", error_model="numpy")
    def init(k):
        return ninf, zero, zero, zero

    return _rowwise.RowMath(init, push, merge, finish, emit, two_inputs=prob, weighted=weighted,
                            prelude="none" if prob else "class", emits=emits, loss=loss)


# ----------------------------------------------------------------------------------------------------------------------
# Device path
# ----------------------------------------------------------------------------------------------------------------------
def _device_run(c, loss_rows, loss_flat, upstream, dx, validate):
    """Launch the row kernels for the checked call ``c`` on its stream; bad rows are reported through
    gpunn._errors (with ``validate``: at once, by a loss-only pass before anything is written)."""
    args, dt, lay = c.args, c.dtype, c.layout
    stream, like = args.stream, args.array("logits")
    smooth = c.eps > 0 and not c.prob
    weighted = smooth or (c.prob and c.weighted)
    k = (1.0 - c.eps, c.eps / lay.n, 0.0, 0.0)
    want_loss = loss_rows is not None or loss_flat is not None
    if loss_rows is None and want_loss:
        (loss_rows,) = scratch(like, stream, "cross_entropy", (dt, (max(lay.rows, 1),)))
    inputs = {"a": c.x, "b": c.t_prob if c.prob else None, "w": c.w, "t": None if c.prob else c.t_index,
              "ignore": c.ignore, "k": k, "loss_rows": loss_rows}
    partials = None
    if validate or dx is None:
        partials = _rowwise.run(_row_math(dt, c.prob, smooth, weighted, False, True), "cross_entropy", lay, stream,
                                like, describe=_describe(c), **inputs)
        if validate:
            _errors.check()
    if dx is not None:
        dy, dmode, g = upstream
        scale = None
        if c.reduction == "mean" and c.prob:
            g = g / lay.rows if lay.rows else g  # 'mean' over rows: known here
        elif c.reduction == "mean":  # 1 / sum w[y] over the counted rows, found on the device before the rows
            (scale,) = scratch(like, stream, "cross_entropy_scale", (dt, (1,)))
            _rowwise.class_weight_scale(c.w, c.t_index, lay.n, c.ignore, like, stream, scale)
        math_fns = _row_math(dt, c.prob, smooth, weighted, True, want_loss and partials is None)
        grad_partials = _rowwise.run(math_fns, "cross_entropy_with_grad" if math_fns.loss else
                                     "cross_entropy_backward", lay, stream, like, upstream=(dy, dmode, g),
                                     scale=scale, out=dx, describe=None if validate else _describe(c), **inputs)
        partials = grad_partials if partials is None else partials
    if loss_flat is not None:
        mode = 0 if c.reduction == "sum" else (2 if c.prob else 1)
        _rowwise.total(partials, mode, lay.rows, loss_flat, stream)


def _describe(c):
    """The message of a bad row found on the device: a code 2 row + kind (0: its target, 1: all -inf logits)."""
    t = c.t_index

    def describe(code):
        row, what = divmod(code, 2)
        if what == 0:
            value = int(numba_array(t)[row:row + 1].copy_to_host()[0])
            return _bad_target_message(c, row, value)
        return _neg_inf_message(c, row)

    return describe


def _at(shape, row):
    """``[i, j]``: the index of flat ``row`` in an array of ``shape`` ('' for a 0-d one)."""
    return "[" + ", ".join(str(int(i)) for i in np.unravel_index(row, shape)) + "]" if shape else ""


def _bad_target_message(c, row, value):
    return (f"target{_at(c.row_shape, row)} = {value} is not a class index in [0, {c.layout.n}) nor ignore_index "
            f"({c.ignore})")


def _neg_inf_message(c, row):
    where = ""
    if len(c.shape) > 2:  # name the row's logits: logits[n, :, i, j]
        n, *rest = np.unravel_index(row, c.row_shape)
        where = " (logits[" + ", ".join([str(int(n)), ":"] + [str(int(i)) for i in rest]) + "])"
    return f"logits row {row}{where} is all -inf: its softmax is undefined"


# ----------------------------------------------------------------------------------------------------------------------
# CPU path: one prange over rows, every pass of a row on the cache-resident row, through _math's finish and emit
# ----------------------------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def _cpu_loops(dtype, prob, smooth, strided):
    """``(rows, neginf_rows)`` for logits of ``dtype``; ``strided``: the logits are (N, C, inner) and a row is
    ``x[n, :, i]`` (K-d), else (rows, C) C-contiguous (the long loops then vectorise: 1-D contiguous rows, a
    branch-free exp, sums with four float64 accumulators)."""
    _, _, finish, emit, emit_p = _math(np.dtype(dtype), prob, smooth, True)
    zero, ninf, inf, nan = typed(dtype, 0.0, -math.inf, math.inf, math.nan)
    to_dt = from_dtype(np.dtype(dtype))
    exp = _vecmath.for_dtype(dtype)[0]
    track = prob or smooth

    @njit(inline="always")
    def row(x, r):
        if strided:
            inner = x.shape[2]
            return x[r // inner, :, r % inner]
        return x[r]

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
    def sum4(er):
        # float64 sum in a fixed order: four accumulators, then pairs
        n_cols = er.size
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

    @njit(inline="always")
    def state(xr, tr, w, k, m, er, write_exp):
        # the row's (m, s, a, wa) in the data's dtype (sums in float64 first); er = exp(x - m) when write_exp
        if m == ninf:
            return m, nan if nan_row(xr) else zero, zero, zero  # all -inf (s = 0: bad) or NaN in the row
        a = 0.0
        wa = 0.0
        if track:  # before er is written: er may be the logits' row
            for c in range(xr.size):
                coef = w[c] * (tr[c] * k[0] + k[1]) if prob else w[c]
                if coef != zero:
                    a += float64(coef) * (inf if xr[c] == ninf else float64(m - xr[c]))
                    wa += coef
        if write_exp:
            for c in range(xr.size):
                er[c] = exp(xr[c] - m)
            s = sum4(er)
        else:
            s = 0.0
            for c in range(xr.size):
                s += exp(xr[c] - m)
        return m, to_dt(s), to_dt(a), to_dt(wa)

    def rows(x, t, tp, w, ignore, k, dy, dmode, g, scale, loss_rows, den_rows, dx, want_grad, scratch, bad):
        # dx may be x (or tp): every element of a row is read before it is written
        n_rows = loss_rows.size
        for r in prange(n_rows):
            xr = row(x, r)
            tr = row(tp, r) if prob else xr
            pre = (int64(0), zero, zero, int64(0))
            if not prob:
                y = int64(t[r])
                pre = (y, zero, zero, int64(2)) if y == ignore else (y, w[y], xr[y], int64(0))
            gn = ((dy[r] if dmode == 2 else dy[0]) * g if dmode else g) * scale
            er = row(dx, r) if want_grad else scratch[numba.get_thread_id()]
            st = (ninf, zero, zero, zero)
            if prob or pre[3] != 2:
                # class targets: exp(x - m) into er, scaled into the gradient below (one exp per element)
                st = state(xr, tr, w, k, row_max(xr), er, not prob)
            consts, loss, den, is_bad = finish(st, pre, k, gn)
            loss_rows[r] = loss
            den_rows[r] = den
            if is_bad:
                bad[r] = 1
            elif want_grad and prob:
                for c in range(xr.size):
                    er[c] = emit(xr[c], tr[c], w[c], c, pre, consts, k)
            elif want_grad and pre[3] == 2:
                for c in range(xr.size):
                    er[c] = zero
            elif want_grad:
                for c in range(xr.size):
                    er[c] = emit_p(er[c] * consts[1], zero, w[c], c, pre, consts, k)

    def neginf_rows(x, t, ignore, n_rows, bad):
        # the all -inf row check alone (run first when the gradient overwrites an input)
        for r in prange(n_rows):
            if prob or t[r] != ignore:
                xr = row(x, r)
                if row_max(xr) == ninf and not nan_row(xr):
                    bad[r] = 1

    return _cpu.loops(rows), _cpu.loops(neginf_rows)


def _cpu_run(c, loss_rows_out, loss_flat, upstream, dx):
    dt, lay = c.dtype, c.layout
    n_rows, n_cols = lay.rows, lay.n
    x = _cpu_view(c.x, lay)
    tp = _cpu_view(c.t_prob, lay) if c.prob else x
    strided = lay.inner > 1
    rows_loop, neginf_rows = _cpu_loops(dt, c.prob, c.eps > 0 and not c.prob, strided)
    t = c.t_index
    if not c.prob:
        off = (t != c.ignore) & ((t < 0) | (t >= n_cols))
        if off.any():
            row = int(np.argmax(off))
            raise ValueError(_bad_target_message(c, row, int(t[row])))
    bad = np.zeros(n_rows, np.int8)
    if dx is not None and (np.may_share_memory(dx, c.x) or (c.prob and np.may_share_memory(dx, c.t_prob))):
        _cpu.run(neginf_rows, "rows", c.x.size, x, t, np.int64(c.ignore), np.int64(n_rows), bad)
        _raise_neg_inf(c, bad)
    rows = np.empty(n_rows, dt)
    dens = np.empty(n_rows, dt)
    k = tuple(dt.type(v) for v in (1.0 - c.eps, c.eps / n_cols, 0.0, 0.0))
    dy, dmode, g = upstream if dx is not None else (np.zeros(1, dt), 0, 0.0)
    scale = 1.0
    if dx is not None and c.reduction == "mean":  # the 'mean' denominator, known before the gradient is written
        if c.prob:
            den = float(n_rows)
        else:
            den = float(np.sum(c.w[t[t != c.ignore]], dtype=np.float64))
        scale = 1.0 / den if den != 0 else 0.0
    gx = _cpu_view(dx, lay) if dx is not None else np.empty((0,) * x.ndim, dt)  # not written (x may be read-only)
    scratch = np.empty((numba.config.NUMBA_NUM_THREADS, 0 if dx is not None else n_cols), dt)
    if n_rows:
        # class targets: the serial build at every size (Numba 0.68's parfor array analysis fails on this loop)
        work = c.x.size if c.prob else 0
        _cpu.run(rows_loop, "rows", work, x, t, tp, c.w, np.int64(c.ignore), k, dy, np.int64(dmode),
                 dt.type(g), dt.type(scale), rows, dens, gx, dx is not None, scratch, bad)
    _raise_neg_inf(c, bad)
    if loss_rows_out is not None:
        loss_rows_out[...] = rows.reshape(loss_rows_out.shape)
    if loss_flat is not None:
        total = float(np.sum(rows, dtype=np.float64))  # float64, fixed (pairwise) order
        if c.reduction == "mean":
            den = float(n_rows) if c.prob else float(np.sum(dens, dtype=np.float64))
            total = total / den if den != 0 else (math.nan if n_rows == 0 else 0.0)
        loss_flat[0] = total


def _cpu_view(a, lay):
    """The (rows, C) view of C-contiguous logits-shaped ``a``, or (N, C, inner) for K-d rows."""
    return a.reshape(lay.outer, lay.n) if lay.inner == 1 else a.reshape(tuple(lay))


def _raise_neg_inf(c, bad):
    if bad.any():
        raise ValueError(_neg_inf_message(c, int(np.argmax(bad))))


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
    if not shape:
        raise ValueError("logits must have shape (C,), (N, C) or (N, C, d1, ..., dk), got a 0-d array")
    n_classes = shape[1] if len(shape) >= 2 else shape[0]
    if n_classes == 0:
        raise ValueError(f"logits must have at least one class (C >= 1), got shape {shape}")
    c.layout = _rowwise.layout(shape, 1 if len(shape) >= 2 else 0, "logits")
    c.row_shape = shape[:1] + shape[2:] if len(shape) >= 2 else ()
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
        if tshape != c.row_shape:
            raise ValueError(f"target of class indices must have shape {c.row_shape} (the logits' shape "
                             f"{shape} without the class axis), got {tshape}")
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, (int, np.integer)):
        raise TypeError(f"ignore_index must be an integer, got {type(ignore_index).__name__}")
    c.ignore = int(ignore_index)
    if not -2**63 <= c.ignore < 2**63:
        raise ValueError(f"ignore_index must fit in int64, got {c.ignore}")
    if c.prob and c.ignore != -100:
        raise ValueError("ignore_index is not supported with probability targets (leave it at -100)")
    c.eps = check_real("label_smoothing", label_smoothing, low=0.0, high=1.0)
    c.weighted = weight is not None
    if weight is not None:
        args.add("weight", weight)
        if tuple(int(s) for s in weight.shape) != (n_classes,):
            raise ValueError(f"weight must have shape ({n_classes},) (one per class), got {tuple(weight.shape)}")
    c.args, c.shape, c.dtype = args, shape, args.dtype
    return c


def _views(c, weight):
    """Flat views of every input (the kernels and the CPU loops see the layout, not the shape)."""
    args = c.args
    c.x = args.flat("logits")
    if c.prob:
        c.t_prob = args.flat("target")
        c.t_index = placeholder(np.int64) if args.device else np.zeros(1, np.int64)  # not read
    else:
        c.t_index = args.flat("target")
        if not args.device:
            c.t_index = c.t_index.astype(np.int64, copy=False)  # one CPU compilation for both index dtypes
        c.t_prob = placeholder(c.dtype) if args.device else c.x  # not read
    if weight is not None:
        c.w = args.flat("weight")
    else:
        c.w = _common.default_weight(c.layout.n, c.dtype, args.device)


def _run(what, logits, target, weight, ignore_index, label_smoothing, reduction, grad=None, out=None, stream=None,
         validate=False):
    c = _check(logits, target, weight, ignore_index, label_smoothing, reduction, stream)
    args = c.args
    if out is not None and what == "forward" and c.reduction != "none":
        raise ValueError("out is only accepted with reduction='none' (a reduced loss is a new 0-d array)")
    upstream = None
    if what != "forward":
        # the 'mean' scale (1 / sum of weights) is applied by the kernels: parse grad as for 'sum'
        try:
            up = _common.upstream_grad(grad, "sum" if c.reduction == "mean" else c.reduction, args, c.row_shape,
                                       placeholder="logits")
        except ValueError as exc:  # name the user's reduction in the message
            raise ValueError(str(exc).replace("reduction='sum'", f"reduction={c.reduction!r}")) from None
        upstream = (up.dy, up.mode, up.g)
    dx = None
    if what != "forward":
        dx = args.output("out", out, c.shape)
    loss = loss_rows = loss_flat = None
    if what != "backward":
        if c.reduction == "none":
            name = "out" if what == "forward" else "loss"
            loss = args.output(name, out if what == "forward" else None, c.row_shape)
            loss_rows = args.flat(name)
        else:
            loss, loss_flat = _common.scalar_result(args, "logits")
    _views(c, weight)
    dx_flat = args.flat("out") if dx is not None else None
    if args.device:
        _device_run(c, loss_rows, loss_flat, upstream, dx_flat, validate)
    else:
        _cpu_run(c, loss_rows, loss_flat, upstream, dx_flat)
    args.finish()
    if what == "forward":
        return loss
    if what == "backward":
        return dx
    return loss, dx


_DOC_ARGS = """
    Args:
        logits: float32 or float64 array of shape (N, C), (N, C, d1, ..., dk) (classes on axis 1) or (C,) (NumPy,
            or a device array: CuPy, PyTorch CUDA, Numba).
        target: class indices, int32 or int64 of the logits' shape without the class axis ((N,), (N, d1, ..., dk)
            or ()), each in [0, C) or ``ignore_index``; or probabilities of the logits' dtype and shape.
        weight: optional (C,) class weights, the logits' dtype.
        ignore_index: rows whose target equals it count for nothing (class-index targets only).
        label_smoothing: eps in [0, 1].
        reduction: ``"mean"`` (divided by the summed weight of the non-ignored rows; by the number of rows for
            probability targets), ``"sum"`` or ``"none"`` (the row losses, of the target's shape).
        stream: CUDA stream for a device call (default: the current stream of the inputs' library).
        validate: device calls only: wait for the target check and raise at once, before any gradient is written
            (default: a bad row's loss and gradient are NaN and ``gpunn.synchronize()`` raises the error)."""
def cross_entropy(logits, target, weight=None, ignore_index=-100, label_smoothing=0.0, reduction="mean", *,
                  out=None, stream=None, validate=False):
    r"""Cross entropy of softmax(logits) against class indices or probabilities (``F.cross_entropy``).

    .. math:: \ell_n = (1 - \varepsilon)\, w_{y_n} (\operatorname{lse}(x_n) - x_{n y_n})
              + \frac{\varepsilon}{C} \sum_c w_c (\operatorname{lse}(x_n) - x_{nc})

    {args}
        out: optional preallocated row losses, the target's shape (reduction ``"none"`` only).

    Returns:
        ``"none"``: the row losses, an array like ``logits`` of the class target's shape; ``"mean"``/``"sum"``: a 0-d
        array of the logits' kind and dtype (it stays on the device for device inputs; ``float(loss)`` reads it).

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
    gradient ``grad``: ``None`` (1), a scalar or one-element array for ``"mean"``/``"sum"``, an array of the row
    losses' shape (or a scalar) for ``"none"``. Probability targets:
    ``g_n s (p_{nc} \sum_k w_k t'_{nk} - w_c t'_{nc})``.

    {args}
        grad: the upstream gradient (see above).
        out: optional preallocated gradient, the logits' shape; may be ``logits`` itself (in place: nothing is
            written when the input is bad).

    Returns:
        ``dlogits``, an array like ``logits``.

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
def _register():
    # one kernel set per kind of target and per math variant (the backward alone is the with-grad kernel without its
    # loss); int32 targets: the with-grad kernels, which differ only in the target's load
    for label, prob, smooth, emits, index in (("cross_entropy[int64]", False, False, False, "int64"),
                                              ("cross_entropy_with_grad[int64]", False, False, True, "int64"),
                                              ("cross_entropy_with_grad[int32]", False, False, True, "int32"),
                                              ("cross_entropy_with_grad[int64,smooth]", False, True, True, "int64"),
                                              ("cross_entropy_with_grad[probs]", True, False, True, "int64")):
        _rowwise.register(label, lambda dt, prob=prob, smooth=smooth, emits=emits: _row_math(
            dt, prob, smooth, smooth or prob, emits, True), index=index)
    _rowwise.register_shared()


_register()
