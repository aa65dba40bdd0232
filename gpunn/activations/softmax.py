r"""Softmax and log-softmax along any axis, forward and backward.

Along the axis (``m = max x``, ``s = sum exp(x - m)``):

Forward:  softmax:      y = exp(x - m) / s
          log_softmax:  y = (x - m) - log(s)
Backward: softmax:      dx = y * (dy - sum(dy * y))        (saved: y, the forward output)
          log_softmax:  dx = dy - exp(y) * sum(dy)          (saved: y, the forward output)

Special values follow PyTorch: a row that is all -inf, or holds +inf or NaN, gives NaN everywhere in the row; -inf
entries of an otherwise finite row give softmax 0 and log_softmax -inf; logits of +-1e4 (or any finite size) stay
finite because only ``x - m <= 0`` is exponentiated.

Layout: the input is made C-contiguous and seen as ``(outer, n, inner)``, ``n`` the length of the axis.

* Device: the row kernels of gpunn/_rowwise.py, with the row state ``(max, sum, 0, 0)`` kept online (a new maximum
  rescales the sum by ``exp(old - new)``): a warp per row up to 256 elements, a block per row up to
  ``_rowwise.MAX_ROW``, the row held in registers between its statistics and its output (x read once, y written
  once), longer rows in chunks over several blocks, rows along another axis a thread each (coalesced across
  ``inner``). Sums are in the data's dtype, in a fixed order (the same bits every run).
* CPU: ``prange`` over rows (or over tiles of columns): a max pass, an exp-and-sum pass, an output pass, all written
  to vectorise (``exp`` is a branch-free polynomial that LLVM vectorises; libm's is a scalar call): float32 uses
  gpunn/activations/_vecmath.py's ``exp_neg`` (within 2 ulp) for ``exp(x - m)`` and its ``exp`` in log_softmax's
  backward, float64 the module's own (under 1 ulp). Row sums are float64 loops compiled with ``reassoc`` (vector
  lanes in an order fixed by the compiled code: the same bits every run, for any thread count).

``dtype=`` (softmax and log_softmax, as PyTorch's): the result's dtype, float32 or float64; the input is cast into
the result first and the op runs there in place.
"""

import functools
import math

import numpy as np
from llvmlite import ir
from numba import float64, from_dtype, njit, prange, types
from numba.extending import intrinsic

from .. import _copy, _cpu, _rowwise
from .._args import Args
from .._arrays import dtype_of
from .._elementwise import typed
from . import _vecmath

# CPU: rows per parallel work item, columns per tile when the axis is not last.
_CPU_ROWS = 16
_CPU_TILE = 512


# ---- scalar math (one definition, called by the CUDA kernels, and by the CPU loops where it fits) --------------------
@functools.lru_cache(maxsize=None)
def _math(dtype):
    """Per op: ``finish(m, s) -> c`` (the row constant, from the max and the sum of exp(x - m), of any float type),
    ``value(x, m, c) -> y`` and ``grad(dy, y, g) -> dx`` (``g`` what the backward sums: sum(dy y) or sum(dy))."""
    to = from_dtype(np.dtype(dtype))
    one, pos_inf, nan = typed(dtype, 1.0, math.inf, math.nan)

    @njit(inline="always", error_model="numpy")
    def softmax_finish(m, s):
        # c = 1 / s; NaN for a row of all -inf (s = 0), with +inf (m = inf) or NaN (s = NaN), as PyTorch gives
        if m == pos_inf or not s > 0:
            return nan
        return to(one / s)

    @njit(inline="always", error_model="numpy")
    def softmax_value(x, m, c):
        return math.exp(x - m) * c  # y = exp(x - m) / s

    @njit(inline="always", error_model="numpy")
    def log_softmax_finish(m, s):
        # c = log(s), with the same NaN rows as softmax
        if m == pos_inf or not s > 0:
            return nan
        return to(math.log(s))

    @njit(inline="always", error_model="numpy")
    def log_softmax_value(x, m, c):
        return (x - m) - c  # y = x - m - log(s)

    @njit(inline="always", error_model="numpy")
    def softmax_grad(dy, y, g):
        return y * (dy - g)  # dx = y * (dy - sum(dy * y))

    @njit(inline="always", error_model="numpy")
    def log_softmax_grad(dy, y, g):
        return dy - math.exp(y) * g  # dx = dy - exp(y) * sum(dy)

    return {"to": to, "softmax": (softmax_finish, softmax_value, softmax_grad),
            "log_softmax": (log_softmax_finish, log_softmax_value, log_softmax_grad)}


@functools.lru_cache(maxsize=None)
def _row_math(op, backward, dtype) -> _rowwise.RowMath:
    """The device kernels' math (gpunn/_rowwise.py), all in the data's dtype. Forward: the row state is an online
    ``(max, sum of exp(x - max))`` (a new maximum rescales the sum by ``exp(old - new)``); backward (``a`` = dy,
    ``b`` = y): the sum of ``dy * y`` (softmax) or of ``dy`` (log_softmax)."""
    finish_c, value, grad = _math(dtype)[op]
    zero, one, neg_inf = typed(dtype, 0.0, 1.0, -math.inf)
    log = op == "log_softmax"

    if backward:
        @njit(inline="always", error_model="numpy")
        def init(k):
            return zero, zero, zero, zero

        @njit(inline="always", error_model="numpy")
        def push(st, a, b, w, c, pre, k):
            return st[0] + (a if log else a * b), zero, zero, zero

        @njit(inline="always", error_model="numpy")
        def merge(s1, s2):
            return s1[0] + s2[0], zero, zero, zero

        @njit(inline="always", error_model="numpy")
        def finish(st, pre, k, gn):
            return (st[0], zero), zero, zero, False

        @njit(inline="always", error_model="numpy")
        def emit(a, b, w, c, pre, consts, k):
            return grad(a, b, consts[0])

        return _rowwise.RowMath(init, push, merge, finish, emit, two_inputs=True)

    @njit(inline="always", error_model="numpy")
    def init(k):
        return neg_inf, zero, zero, zero

    @njit(inline="always", error_model="numpy")
    def push(st, a, b, w, c, pre, k):
        m, s = st[0], st[1]
        if a > m:
            return a, s * math.exp(m - a) + one, zero, zero  # rescale the old sum to the new max (exp(-inf) = 0)
        if a == neg_inf:
            return m, s, zero, zero  # exp(-inf - m) = 0, also while m is still -inf
        return m, s + math.exp(a - m), zero, zero  # NaN propagates through s

    @njit(inline="always", error_model="numpy")
    def merge(s1, s2):
        m = s1[0] if s1[0] >= s2[0] else s2[0]
        if m == neg_inf:
            return m, s1[1] + s2[1], zero, zero  # both parts empty so far (0, or NaN which must propagate)
        return m, s1[1] * math.exp(s1[0] - m) + s2[1] * math.exp(s2[0] - m), zero, zero

    @njit(inline="always", error_model="numpy")
    def finish(st, pre, k, gn):
        return (st[0], finish_c(st[0], st[1])), zero, zero, False

    @njit(inline="always", error_model="numpy")
    def emit(a, b, w, c, pre, consts, k):
        return value(a, consts[0], consts[1])

    return _rowwise.RowMath(init, push, merge, finish, emit)


@intrinsic
def _bits_as_float(typingctx, i):
    """The float whose bit pattern is the integer ``i``: float32 for an int32, float64 for an int64 (2**k from its
    exponent field)."""
    if i == types.int32:
        sig, llvm_type = types.float32(types.int32), ir.FloatType()
    elif i == types.int64:
        sig, llvm_type = types.float64(types.int64), ir.DoubleType()
    else:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], llvm_type)

    return sig, codegen


@functools.lru_cache(maxsize=None)
def _cpu_exp(dtype):
    """exp for the CPU loops, branch-free so that LLVM vectorises the loops that call it (libm's exp is a scalar
    call; there is no SVML here). d = k ln2 + r with |r| <= ln2/2 (Cody-Waite), exp(r) by a polynomial, 2**k built
    from exponent bits in two halves (so that 2**k stays normal for every k in range, denormal results included).

    float32: Cephes' expf polynomial; float64: Taylor to degree 13 (truncation < 5e-18 relative). Both measured
    under 1 ulp against a long-double exp on 2.2e6 points over the whole range (denormal results included, to the
    nearest denormal); 0 below the smallest denormal, inf above the largest finite value, NaN in NaN out."""
    dt = np.dtype(dtype)
    if dt == np.float32:
        coeffs = (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1,
                  5.0000001201e-1)
        ln2_hi, ln2_lo, k_min, k_max, low, high = 0.693359375, -2.12194440e-4, -150.0, 128.0, -103.972077, 88.7228391
        itype, bias, shift = np.int32, 127, 23
    else:
        coeffs = tuple(1.0 / math.factorial(i) for i in range(13, 1, -1))  # 1/13! ... 1/2!
        ln2_hi, ln2_lo, k_min, k_max, low, high = (6.93145751953125e-1, 1.42860682030941723212e-6, -1076.0, 1024.0,
                                                   -745.1332191019412, 709.782712893384)
        itype, bias, shift = np.int64, 1023, 52
    (log2e, magic, half, one, zero, inf, ln2_hi, ln2_lo, k_min, k_max, low, high) = typed(
        dt, 1.4426950408889634, 1.5 * 2.0 ** (23 if dt == np.float32 else 52), 0.5, 1.0, 0.0, math.inf, ln2_hi,
        ln2_lo, k_min, k_max, low, high)
    coeffs = typed(dt, *coeffs)
    bias, shift = itype(bias), itype(shift)
    degree = len(coeffs)

    @njit(inline="always", error_model="numpy")
    def poly(r):
        # exp(r) - 1 - r = r^2 (c0 r^(deg-1) + ... + c_last)
        p = coeffs[0]
        for q in range(1, degree):
            p = p * r + coeffs[q]
        return p * r * r + r + one

    @njit(inline="always", error_model="numpy")
    def pow2(k):
        # 2**k for an integral float k inside the normal exponent range (Numba widens int32 arithmetic: cast back)
        return _bits_as_float(itype((itype(k) + bias) << shift))

    @njit(error_model="numpy")
    def exp(d):
        k = (d * log2e + magic) - magic  # round(d / ln 2) without a call (the magic-number trick)
        k = k if k >= k_min else k_min  # also maps NaN to k_min: no undefined float -> int conversion
        k = k if k <= k_max else k_max
        r = (d - k * ln2_hi) - k * ln2_lo  # d = k ln2 + r, |r| <= ln2 / 2 (Cody-Waite)
        k1 = (k * half + magic) - magic  # 2**k = 2**k1 * 2**(k - k1), both halves normal
        e = poly(r) * pow2(k1) * pow2(k - k1)
        e = zero if d < low else e
        e = inf if d > high else e
        return d if d != d else e  # NaN in, NaN out

    return exp


def _cpu_exp_neg(dtype):
    """exp of an argument <= 0 (x - max) for the CPU forward loops: _vecmath.exp_neg in float32 (one scaling, within
    2 ulp, half the work of the full-range exp), _cpu_exp in float64."""
    return _vecmath.exp_neg if np.dtype(dtype) == np.float32 else _cpu_exp(dtype)


# ---- CPU path --------------------------------------------------------------------------------------------------------
# The loops index 2-D (rows, n) views and contiguous 1-D slices with loop counters that start at 0: LLVM then knows
# every index is non-negative, drops Numba's negative-index wraparound and vectorises (flat ``x[base + j]`` indexing
# measured 2.6x slower on rows, ``x3[o, k, i0 + i]`` 2.4x slower on columns).
@functools.lru_cache(maxsize=None)
def _cpu_row_tools(dtype):
    """Vectorisable row max (halves folded), float64 row sum and row dot product, on 1-D rows."""
    neg_inf = typed(dtype, -math.inf)[0]

    @njit(error_model="numpy")
    def row_max(x, buf):
        # max of a 1-D row by folding halves: buf[j] = max(x[j], x[j + h]), then the same on buf, ...: every step is
        # a long elementwise loop that LLVM vectorises (a running max is a reduction it does not; 3x faster than
        # 16 running maxima kept in an array). buf holds >= x.size // 2 elements. A NaN may or may not win here; either
        # way the row's sum is NaN and the row comes out NaN (the finish functions).
        n = x.size
        h = n // 2
        for j in range(h):
            a = x[j]
            b = x[j + h]
            buf[j] = b if b > a else a
        m = neg_inf
        for j in range(2 * h, n):
            v = x[j]
            m = v if v > m else m
        while h > 16:
            k = h // 2
            for j in range(k):
                a = buf[j]
                b = buf[j + k]
                buf[j] = b if b > a else a
            for j in range(2 * k, h):
                v = buf[j]
                m = v if v > m else m
            h = k
        for j in range(h):
            v = buf[j]
            m = v if v > m else m
        return m

    @njit(error_model="numpy", fastmath={"reassoc"})
    def row_sum(x):
        # float64 sum of a 1-D row. reassoc (on this function's adds only: it is called, not inlined at the Numba
        # level) lets LLVM split the sum over vector lanes: an order fixed by the compiled loop, so the same row gives
        # the same bits every run and for any thread count (6x faster than 16 accumulators kept in an array)
        s = 0.0
        for j in range(x.size):
            s += float64(x[j])
        return s

    @njit(error_model="numpy", fastmath={"reassoc"})
    def row_dot(a, b):
        # float64 sum of a * b over 1-D rows (softmax's backward), as row_sum
        s = 0.0
        for j in range(a.size):
            s += float64(a[j]) * float64(b[j])
        return s

    return row_max, row_sum, row_dot


@functools.lru_cache(maxsize=None)
def _cpu_forward(dtype):
    """``forward(x, log, out)``: softmax (``log`` False) or log_softmax of a C-contiguous (outer, n, inner) array
    along axis 1. One compiled function per dtype for both ops and layouts (compiling a parallel function costs
    seconds); the ``log`` test is loop-invariant."""
    mth = _math(dtype)
    softmax_finish, log_softmax_finish = mth["softmax"][0], mth["log_softmax"][0]
    neg_inf = typed(dtype, -math.inf)[0]
    exp = _cpu_exp_neg(dtype)
    row_max, row_sum, _ = _cpu_row_tools(dtype)
    rows_per, tile = _CPU_ROWS, _CPU_TILE

    def forward(x3, log, out3):
        outer, n, inner = x3.shape
        if inner == 1:  # the axis is last: rows of n, a few rows per parallel work item
            x, out = x3.reshape(outer, n), out3.reshape(outer, n)
            for chunk in prange((outer + rows_per - 1) // rows_per):
                buf = np.empty(n // 2 + 1, x.dtype)
                e = np.empty((1, n if log else 0), x.dtype)  # exp(x - m) for log_softmax (out may alias x)
                for r in range(chunk * rows_per, min(outer, (chunk + 1) * rows_per)):
                    m = row_max(x[r], buf)
                    if log:
                        for j in range(n):
                            e[0, j] = exp(x[r, j] - m)
                        c = log_softmax_finish(m, row_sum(e[0]))
                        for j in range(n):
                            out[r, j] = (x[r, j] - m) - c  # y = x - m - log(s)
                    else:
                        for j in range(n):
                            out[r, j] = exp(x[r, j] - m)  # x is read for the last time (out may alias it)
                        c = softmax_finish(m, row_sum(out[r]))
                        for j in range(n):
                            out[r, j] *= c  # y = exp(x - m) / s
            return
        tiles = (inner + tile - 1) // tile  # the axis is not last: tiles of columns, vectorised across them
        for w in prange(outer * tiles):
            o = w // tiles
            i0 = (w - o * tiles) * tile
            i1 = min(inner, i0 + tile)
            width = i1 - i0
            m = np.full(width, neg_inf, x3.dtype)
            s = np.zeros(width, np.float64)
            c = np.empty(width, x3.dtype)
            for k in range(n):
                xk = x3[o, k, i0:i1]  # contiguous slices indexed from 0: no wraparound checks, vector loads
                for i in range(width):
                    v = xk[i]
                    m[i] = v if v > m[i] else m[i]
            for k in range(n):
                xk, outk = x3[o, k, i0:i1], out3[o, k, i0:i1]
                for i in range(width):
                    e = exp(xk[i] - m[i])
                    s[i] += e
                    if not log:
                        outk[i] = e
            for i in range(width):
                c[i] = log_softmax_finish(m[i], s[i]) if log else softmax_finish(m[i], s[i])
            for k in range(n):
                xk, outk = x3[o, k, i0:i1], out3[o, k, i0:i1]
                if log:
                    for i in range(width):
                        outk[i] = (xk[i] - m[i]) - c[i]
                else:
                    for i in range(width):
                        outk[i] *= c[i]

    return _cpu.loops(forward)


@functools.lru_cache(maxsize=None)
def _cpu_backward(dtype):
    """``backward(dy, y, log, out)``: the gradient of softmax (``log`` False) or log_softmax, (outer, n, inner)
    C-contiguous arrays, along axis 1."""
    mth = _math(dtype)
    to, softmax_grad = mth["to"], mth["softmax"][2]
    exp = _vecmath.exp if np.dtype(dtype) == np.float32 else _cpu_exp(dtype)  # y may be anything: full range
    _, row_sum, row_dot = _cpu_row_tools(dtype)
    rows_per, tile = _CPU_ROWS, _CPU_TILE

    @njit(error_model="numpy")
    def term(dy, y, log):
        return float64(dy) if log else float64(dy) * float64(y)  # summed in float64: sum(dy) or sum(dy * y)

    @njit(error_model="numpy")
    def grad(dy, y, g, log):
        if log:
            return dy - exp(y) * g  # dx = dy - exp(y) * sum(dy), with the vectorisable exp
        return softmax_grad(dy, y, g)

    def backward(dy3, y3, log, out3):
        outer, n, inner = y3.shape
        if inner == 1:
            dy, y, out = dy3.reshape(outer, n), y3.reshape(outer, n), out3.reshape(outer, n)
            for chunk in prange((outer + rows_per - 1) // rows_per):
                for r in range(chunk * rows_per, min(outer, (chunk + 1) * rows_per)):
                    # one loop per op (the log test outside the loops): each vectorises
                    total = row_sum(dy[r]) if log else row_dot(dy[r], y[r])
                    g = to(total)  # g = sum(dy) or sum(dy * y), in float64
                    if log:
                        for j in range(n):
                            out[r, j] = dy[r, j] - exp(y[r, j]) * g  # dx = dy - exp(y) * sum(dy)
                    else:
                        for j in range(n):
                            out[r, j] = softmax_grad(dy[r, j], y[r, j], g)
            return
        tiles = (inner + tile - 1) // tile
        for w in prange(outer * tiles):
            o = w // tiles
            i0 = (w - o * tiles) * tile
            i1 = min(inner, i0 + tile)
            width = i1 - i0
            acc = np.zeros(width, np.float64)
            g = np.empty(width, y3.dtype)
            for k in range(n):
                dyk, yk = dy3[o, k, i0:i1], y3[o, k, i0:i1]
                for i in range(width):
                    acc[i] += term(dyk[i], yk[i], log)
            for i in range(width):
                g[i] = to(acc[i])
            for k in range(n):
                dyk, yk, outk = dy3[o, k, i0:i1], y3[o, k, i0:i1], out3[o, k, i0:i1]
                for i in range(width):
                    outk[i] = grad(dyk[i], yk[i], g[i], log)

    return _cpu.loops(backward)


# ---- public functions ------------------------------------------------------------------------------------------------
DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _result_dtype(dtype, x):
    """The dtype of softmax(x, dtype=dtype): ``dtype`` if given (a TypeError naming it if not a float dtype gpunn
    computes in), else x's."""
    if dtype is None:
        return None
    try:
        dt = np.dtype(getattr(dtype, "name", None) if type(dtype).__module__.startswith("torch") else dtype)
    except TypeError:
        raise TypeError(f"dtype must be float32 or float64, got {dtype!r}") from None
    if dt not in DTYPES:
        raise TypeError(f"dtype must be float32 or float64, got {dt}")
    return None if dt == dtype_of(x) else dt


def _forward(op, x, axis, out, stream, dtype):
    args = Args(stream=stream, x=x)
    lay = _rowwise.layout(x.shape, axis, "x")
    cast_to = _result_dtype(dtype, x)
    out = args.output("out", out, x.shape, dtype=cast_to)
    if lay.outer * lay.n * lay.inner:
        src, of = args.flat("x"), args.flat("out")
        if cast_to is not None:  # compute in the requested dtype: convert into out, then work there in place
            if args.device:
                _copy.cast(src, of, args.stream)
            else:
                of[...] = src
            src = of
        if args.device:
            _rowwise.run(_row_math(op, False, of.dtype), op, lay, args.stream, args.array("x"), a=src, out=of)
        else:
            shape = tuple(lay)
            _cpu.run(_cpu_forward(of.dtype), "rows", of.size, src.reshape(shape), op == "log_softmax",
                     of.reshape(shape))
    args.finish()
    return out


def _backward(op, dy, y, axis, out, stream):
    args = Args(stream=stream, dy=dy, y=y)
    args.same_shape("dy", "y")
    lay = _rowwise.layout(y.shape, axis, "y")
    out = args.output("out", out, y.shape)
    if lay.outer * lay.n * lay.inner:
        dyf, yf, of = args.flat("dy"), args.flat("y"), args.flat("out")
        if args.device:
            _rowwise.run(_row_math(op, True, args.dtype), op + "_backward", lay, args.stream, args.array("y"),
                         a=dyf, b=yf, out=of)
        else:
            shape = tuple(lay)
            _cpu.run(_cpu_backward(args.dtype), "rows", yf.size, dyf.reshape(shape), yf.reshape(shape),
                     op == "log_softmax", of.reshape(shape))
    args.finish()
    return out


def softmax(x, axis=-1, *, dtype=None, out=None, stream=None):
    r"""Softmax along ``axis``.

    .. math:: y_i = \frac{\exp(x_i - \max_j x_j)}{\sum_k \exp(x_k - \max_j x_j)}

    Args:
        x: float32 or float64 array of any shape (NumPy, or a device array: CuPy, PyTorch CUDA, Numba); may be
            non-contiguous.
        axis: the axis to normalise over (negative counts from the end).
        dtype: compute and return in this dtype (float32 or float64; ``x`` is converted first, as PyTorch's
            ``dtype=``); default: ``x``'s dtype.
        out: optional preallocated result of ``x``'s shape and the result's dtype; may be ``x`` itself (in place).
        stream: CUDA stream for a device call (default: the current stream of the inputs' library).

    Returns:
        ``y``, an array of the same kind and shape as ``x``, of ``dtype`` (default ``x``'s). A slice along ``axis``
        that is all -inf, or holds +inf or NaN, gives NaN (as PyTorch).

    Example:
        >>> import numpy as np, gpunn
        >>> gpunn.softmax(np.array([[0.0, 0.0, 0.0, 0.0], [0.0, 1.0, 2.0, 3.0]], np.float32))
        array([[0.25      , 0.25      , 0.25      , 0.25      ],
               [0.0320586 , 0.08714432, 0.23688284, 0.6439143 ]], dtype=float32)
    """
    return _forward("softmax", x, axis, out, stream, dtype)


def softmax_backward(dy, y, axis=-1, *, out=None, stream=None):
    r"""Gradient of :func:`softmax`, from the saved output ``y``.

    .. math:: dx_i = y_i \left(dy_i - \sum_k dy_k\, y_k\right)

    Args:
        dy: upstream gradient, same shape and dtype as ``y``.
        y: the forward output ``softmax(x, axis)``.
        axis: the axis the forward normalised over.
        out: optional preallocated ``dx``; may be ``dy`` or ``y``.
        stream: CUDA stream for a device call (default: the current stream of the inputs' library).

    Returns:
        ``dx``, same kind, shape and dtype as ``y``.

    Example:
        >>> import numpy as np, gpunn
        >>> gpunn.softmax_backward(np.array([1.0, 0.0], np.float32), np.array([0.25, 0.75], np.float32))
        array([ 0.1875, -0.1875], dtype=float32)
    """
    return _backward("softmax", dy, y, axis, out, stream)


def log_softmax(x, axis=-1, *, dtype=None, out=None, stream=None):
    r"""Log-softmax along ``axis``.

    .. math:: y_i = x_i - \max_j x_j - \log \sum_k \exp(x_k - \max_j x_j)

    Args:
        x: float32 or float64 array of any shape (NumPy, or a device array); may be non-contiguous.
        axis: the axis to normalise over (negative counts from the end).
        dtype: compute and return in this dtype (float32 or float64; ``x`` is converted first, as PyTorch's
            ``dtype=``); default: ``x``'s dtype.
        out: optional preallocated result of ``x``'s shape and the result's dtype; may be ``x`` itself (in place).
        stream: CUDA stream for a device call (default: the current stream of the inputs' library).

    Returns:
        ``y``, same kind and shape as ``x``, of ``dtype`` (default ``x``'s); -inf where ``x`` is -inf in an otherwise
        finite slice, NaN for a slice that is all -inf or holds +inf or NaN (as PyTorch).

    Example:
        >>> import numpy as np, gpunn
        >>> gpunn.log_softmax(np.array([0.0, 0.0], np.float64))
        array([-0.69314718, -0.69314718])
    """
    return _forward("log_softmax", x, axis, out, stream, dtype)


def log_softmax_backward(dy, y, axis=-1, *, out=None, stream=None):
    r"""Gradient of :func:`log_softmax`, from the saved output ``y``.

    .. math:: dx_i = dy_i - \exp(y_i) \sum_k dy_k

    Args:
        dy: upstream gradient, same shape and dtype as ``y``.
        y: the forward output ``log_softmax(x, axis)``.
        axis: the axis the forward normalised over.
        out: optional preallocated ``dx``; may be ``dy`` or ``y``.
        stream: CUDA stream for a device call (default: the current stream of the inputs' library).

    Returns:
        ``dx``, same kind, shape and dtype as ``y``.

    Example:
        >>> import numpy as np, gpunn
        >>> gpunn.log_softmax_backward(np.array([1.0, 0.0]), np.log(np.array([0.25, 0.75])))
        array([ 0.75, -0.75])
    """
    return _backward("log_softmax", dy, y, axis, out, stream)


def _register():
    for op in ("softmax", "log_softmax"):
        _rowwise.register(op, lambda dt, op=op: _row_math(op, False, dt))
        _rowwise.register(f"{op}_backward", lambda dt, op=op: _row_math(op, True, dt))


_register()
