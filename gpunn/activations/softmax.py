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

* Device, ``inner == 1`` and ``n >= 32`` (last axis, the common case): one block per row (grid-stride over rows),
  threads stride over the row (rows may be 262,144 long) keeping an online ``(max, sum)`` pair -- a new maximum
  rescales the sum by ``exp(old - new)`` -- so ``x`` is read once for the statistics and once for the output; the
  pairs meet in a shared-memory tree (fixed order, deterministic).
* Device otherwise: one thread per ``(outer, inner)`` column looping over ``n`` (coalesced across ``inner``).
* CPU: ``prange`` over rows (or over tiles of columns): a max pass, an exp-and-sum pass, an output pass, all written
  to vectorise (``exp`` is a branch-free polynomial that LLVM vectorises; libm's is a scalar call): float32 uses
  gpunn/activations/_vecmath.py's ``exp_neg`` (within 2 ulp) for ``exp(x - m)`` and its ``exp`` in log_softmax's
  backward, float64 the module's own (under 1 ulp). Row sums are float64 loops compiled with ``reassoc`` (vector
  lanes in an order fixed by the compiled code: the same bits every run, for any thread count).

Sums (``s``, ``sum(dy * y)``, ``sum(dy)``) accumulate in float64 on every path, also for float32 data (the kernels
are registered with ``f64_accumulator=True``); every other operation stays in the data's dtype.
"""

import functools
import math

import numpy as np
from llvmlite import ir
from numba import cuda, float64, from_dtype, int64, njit, prange, types
from numba.extending import intrinsic

from .. import _cpu, _registry
from .._elementwise import typed
from .._args import Args
from .._launch import Kernel, block_size
from . import _vecmath

# The device path uses one block per row when the axis is last and at least this long; shorter rows (fewer elements
# than a warp) go one thread per row, where a block per row would leave most of its threads idle.
ROW_KERNEL_MIN_N = 32
# CPU: rows per parallel work item, columns per tile when the axis is not last.
_CPU_ROWS = 16
_CPU_TILE = 512


# ---- scalar math (one definition, called by the CUDA kernels, and by the CPU loops where it fits) --------------------
@functools.lru_cache(maxsize=None)
def _math(dtype):
    """The shared pieces: the online (max, sum) update and merge, and per op: ``finish(m, s) -> c`` (the row
    constant), ``value(x, m, c) -> y``, ``term(dy, y) -> float64`` (what the backward sums) and
    ``grad(dy, y, g) -> dx``."""
    to = from_dtype(np.dtype(dtype))
    neg_inf, pos_inf, nan = typed(dtype, -math.inf, math.inf, math.nan)

    @njit(inline="always", error_model="numpy")
    def online(m, s, v):
        # (m, s) -> the max and the float64 sum of exp(x - max) with one more element v
        if v > m:
            return v, s * float64(math.exp(m - v)) + 1.0  # rescale the old sum to the new max (exp(-inf) = 0)
        if v == neg_inf:
            return m, s  # exp(-inf - m) = 0, also while m is still -inf
        return m, s + float64(math.exp(v - m))  # NaN propagates through s

    @njit(inline="always", error_model="numpy")
    def merge(m1, s1, m2, s2):
        m = m1 if m1 >= m2 else m2
        if m == neg_inf:
            return m, s1 + s2  # both parts empty so far (0, or NaN which must propagate)
        return m, s1 * float64(math.exp(m1 - m)) + s2 * float64(math.exp(m2 - m))

    @njit(inline="always", error_model="numpy")
    def softmax_finish(m, s):
        # c = 1 / s; NaN for a row of all -inf (s = 0), with +inf (m = inf) or NaN (s = NaN), as PyTorch gives
        if m == pos_inf or not s > 0.0:
            return nan
        return to(1.0 / s)

    @njit(inline="always", error_model="numpy")
    def softmax_value(x, m, c):
        return math.exp(x - m) * c  # y = exp(x - m) / s

    @njit(inline="always", error_model="numpy")
    def log_softmax_finish(m, s):
        # c = log(s), with the same NaN rows as softmax
        if m == pos_inf or not s > 0.0:
            return nan
        return to(math.log(s))

    @njit(inline="always", error_model="numpy")
    def log_softmax_value(x, m, c):
        return (x - m) - c  # y = x - m - log(s)

    @njit(inline="always", error_model="numpy")
    def softmax_term(dy, y):
        return float64(dy) * float64(y)  # summed: g = sum(dy * y)

    @njit(inline="always", error_model="numpy")
    def softmax_grad(dy, y, g):
        return y * (dy - g)  # dx = y * (dy - sum(dy * y))

    @njit(inline="always", error_model="numpy")
    def log_softmax_term(dy, y):
        return float64(dy)  # summed: g = sum(dy)

    @njit(inline="always", error_model="numpy")
    def log_softmax_grad(dy, y, g):
        return dy - math.exp(y) * g  # dx = dy - exp(y) * sum(dy)

    return {
        "online": online, "merge": merge, "to": to, "neg_inf": neg_inf,
        "softmax": (softmax_finish, softmax_value, softmax_term, softmax_grad),
        "log_softmax": (log_softmax_finish, log_softmax_value, log_softmax_term, log_softmax_grad),
    }


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


# ---- CUDA kernels ----------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def _forward_rows_kernel(dtype, block, op):
    """One block per row of a C-contiguous (rows, n) array; online (max, sum) per thread, then a shared tree."""
    mth = _math(dtype)
    online, merge, neg_inf, nbtype = mth["online"], mth["merge"], mth["neg_inf"], mth["to"]
    finish, value = mth[op][:2]

    @cuda.jit
    def _softmax_forward_rows_kernel(x, rows, n, out):
        mbuf = cuda.shared.array(block, nbtype)
        sbuf = cuda.shared.array(block, float64)
        t = cuda.threadIdx.x
        for row in range(int64(cuda.blockIdx.x), rows, int64(cuda.gridDim.x)):
            base = row * n
            m = neg_inf
            s = float64(0.0)
            for j in range(int64(t), n, block):
                m, s = online(m, s, x[base + j])
            mbuf[t] = m
            sbuf[t] = s
            cuda.syncthreads()
            step = block // 2
            while step > 0:
                if t < step:
                    mbuf[t], sbuf[t] = merge(mbuf[t], sbuf[t], mbuf[t + step], sbuf[t + step])
                cuda.syncthreads()
                step //= 2
            m = mbuf[0]
            c = finish(m, sbuf[0])
            cuda.syncthreads()  # every thread has read the row's result before the buffers are reused
            for j in range(int64(t), n, block):
                out[base + j] = value(x[base + j], m, c)

    return _softmax_forward_rows_kernel


@functools.lru_cache(maxsize=None)
def _forward_cols_kernel(dtype, op):
    """One thread per (outer, inner) column of a C-contiguous (outer, n, inner) array, looping over n."""
    mth = _math(dtype)
    online, neg_inf = mth["online"], mth["neg_inf"]
    finish, value = mth[op][:2]

    @cuda.jit
    def _softmax_forward_cols_kernel(x, outer, n, inner, out):
        for col in range(int64(cuda.grid(1)), outer * inner, int64(cuda.gridsize(1))):
            o = col // inner
            base = o * n * inner + (col - o * inner)
            m = neg_inf
            s = float64(0.0)
            for k in range(n):
                m, s = online(m, s, x[base + k * inner])
            c = finish(m, s)
            for k in range(n):
                out[base + k * inner] = value(x[base + k * inner], m, c)

    return _softmax_forward_cols_kernel


@functools.lru_cache(maxsize=None)
def _backward_rows_kernel(dtype, block, op):
    """One block per row: g = sum(term(dy, y)) in float64 through a shared tree, then dx = grad(dy, y, g)."""
    mth = _math(dtype)
    to = mth["to"]
    term, grad = mth[op][2:]

    @cuda.jit
    def _softmax_backward_rows_kernel(dy, y, rows, n, out):
        buf = cuda.shared.array(block, float64)
        t = cuda.threadIdx.x
        for row in range(int64(cuda.blockIdx.x), rows, int64(cuda.gridDim.x)):
            base = row * n
            acc = float64(0.0)
            for j in range(int64(t), n, block):
                acc += term(dy[base + j], y[base + j])
            buf[t] = acc
            cuda.syncthreads()
            step = block // 2
            while step > 0:
                if t < step:
                    buf[t] += buf[t + step]
                cuda.syncthreads()
                step //= 2
            g = to(buf[0])
            cuda.syncthreads()
            for j in range(int64(t), n, block):
                out[base + j] = grad(dy[base + j], y[base + j], g)

    return _softmax_backward_rows_kernel


@functools.lru_cache(maxsize=None)
def _backward_cols_kernel(dtype, op):
    mth = _math(dtype)
    to = mth["to"]
    term, grad = mth[op][2:]

    @cuda.jit
    def _softmax_backward_cols_kernel(dy, y, outer, n, inner, out):
        for col in range(int64(cuda.grid(1)), outer * inner, int64(cuda.gridsize(1))):
            o = col // inner
            base = o * n * inner + (col - o * inner)
            acc = float64(0.0)
            for k in range(n):
                acc += term(dy[base + k * inner], y[base + k * inner])
            g = to(acc)
            for k in range(n):
                out[base + k * inner] = grad(dy[base + k * inner], y[base + k * inner], g)

    return _softmax_backward_cols_kernel


_ROWS_FORWARD_SIG = "void({0}[::1], int64, int64, {0}[::1])"
_COLS_FORWARD_SIG = "void({0}[::1], int64, int64, int64, {0}[::1])"
_ROWS_BACKWARD_SIG = "void({0}[::1], {0}[::1], int64, int64, {0}[::1])"
_COLS_BACKWARD_SIG = "void({0}[::1], {0}[::1], int64, int64, int64, {0}[::1])"


@functools.lru_cache(maxsize=None)
def _kernel(direction, layout, op, dtype, block):
    """The Kernel of softmax/log_softmax (``op``), 'forward'/'backward', 'rows'/'cols' layout."""
    name = np.dtype(dtype).name
    if direction == "forward":
        if layout == "rows":
            return Kernel(_forward_rows_kernel(dtype, block, op), _ROWS_FORWARD_SIG.format(name), f"{op}_forward_rows")
        return Kernel(_forward_cols_kernel(dtype, op), _COLS_FORWARD_SIG.format(name), f"{op}_forward_cols")
    if layout == "rows":
        return Kernel(_backward_rows_kernel(dtype, block, op), _ROWS_BACKWARD_SIG.format(name), f"{op}_backward_rows")
    return Kernel(_backward_cols_kernel(dtype, op), _COLS_BACKWARD_SIG.format(name), f"{op}_backward_cols")


def _launch(direction, op, dtype, stream, arrays, outer, n, inner, out):
    """One block per row for the last axis (rows of at least a warp), else one thread per column."""
    block = block_size()
    if inner == 1 and n >= ROW_KERNEL_MIN_N:
        kernel = _kernel(direction, "rows", op, dtype, block)
        # a block per row, up to one wave of the GPU; grid-stride over the rest
        kernel.over(outer * block, stream, *arrays, np.int64(outer), np.int64(n), out)
    else:
        kernel = _kernel(direction, "cols", op, dtype, None)
        kernel.over(outer * inner, stream, *arrays, np.int64(outer), np.int64(n),
               np.int64(inner), out)


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
    neg_inf = mth["neg_inf"]
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
    to = mth["to"]
    softmax_term, softmax_grad = mth["softmax"][2:]
    log_softmax_term = mth["log_softmax"][2]
    exp = _vecmath.exp if np.dtype(dtype) == np.float32 else _cpu_exp(dtype)  # y may be anything: full range
    _, row_sum, row_dot = _cpu_row_tools(dtype)
    rows_per, tile = _CPU_ROWS, _CPU_TILE

    @njit(error_model="numpy")
    def term(dy, y, log):
        return log_softmax_term(dy, y) if log else softmax_term(dy, y)

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
def _axis_split(name, shape, axis):
    """(outer, n, inner) for ``axis`` of ``shape``; ValueError/TypeError naming ``axis`` if it is not valid.
    A 0-d array is treated as shape (1,), with axis 0 or -1 (as PyTorch does)."""
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
    return outer, shape[axis], inner


def _forward(op, x, axis, out, stream=None):
    args = Args(stream=stream, x=x)
    outer, n, inner = _axis_split("x", x.shape, axis)
    out = args.output("out", out, x.shape)
    if outer * n * inner:
        xf, of = args.flat("x"), args.flat("out")
        if args.device:
            _launch("forward", op, args.dtype, args.stream, (xf,), outer, n, inner, of)
        else:
            shape = (outer, n, inner)
            _cpu.run(_cpu_forward(args.dtype), "rows", xf.size, xf.reshape(shape), op == "log_softmax",
                     of.reshape(shape))
    args.finish()
    return out


def _backward(op, dy, y, axis, out, stream=None):
    args = Args(stream=stream, dy=dy, y=y)
    args.same_shape("dy", "y")
    outer, n, inner = _axis_split("y", y.shape, axis)
    out = args.output("out", out, y.shape)
    if outer * n * inner:
        dyf, yf, of = args.flat("dy"), args.flat("y"), args.flat("out")
        if args.device:
            _launch("backward", op, args.dtype, args.stream, (dyf, yf), outer, n, inner, of)
        else:
            shape = (outer, n, inner)
            _cpu.run(_cpu_backward(args.dtype), "rows", yf.size, dyf.reshape(shape), yf.reshape(shape),
                     op == "log_softmax", of.reshape(shape))
    args.finish()
    return out


def softmax(x, axis=-1, *, out=None, stream=None):
    r"""Softmax along ``axis``.

    .. math:: y_i = \frac{\exp(x_i - \max_j x_j)}{\sum_k \exp(x_k - \max_j x_j)}

    Args:
        x: float32 or float64 array of any shape (NumPy, or a device array: CuPy, PyTorch CUDA, Numba); may be
            non-contiguous.
        axis: the axis to normalise over (negative counts from the end).
        out: optional preallocated result of ``x``'s shape and dtype; may be ``x`` itself (in place).
        stream: CUDA stream for a device call (default: the current stream of the inputs' library).

    Returns:
        ``y``, an array of the same kind, shape and dtype as ``x``. A slice along ``axis`` that is all -inf, or holds
        +inf or NaN, gives NaN (as PyTorch).

    Example:
        >>> import numpy as np, gpunn
        >>> gpunn.softmax(np.array([[0.0, 0.0, 0.0, 0.0], [0.0, 1.0, 2.0, 3.0]], np.float32))
        array([[0.25      , 0.25      , 0.25      , 0.25      ],
               [0.0320586 , 0.08714432, 0.23688284, 0.6439143 ]], dtype=float32)
    """
    return _forward("softmax", x, axis, out, stream)


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


def log_softmax(x, axis=-1, *, out=None, stream=None):
    r"""Log-softmax along ``axis``.

    .. math:: y_i = x_i - \max_j x_j - \log \sum_k \exp(x_k - \max_j x_j)

    Args:
        x: float32 or float64 array of any shape (NumPy, or a device array); may be non-contiguous.
        axis: the axis to normalise over (negative counts from the end).
        out: optional preallocated result of ``x``'s shape and dtype; may be ``x`` itself (in place).
        stream: CUDA stream for a device call (default: the current stream of the inputs' library).

    Returns:
        ``y``, same kind, shape and dtype as ``x``; -inf where ``x`` is -inf in an otherwise finite slice, NaN for a
        slice that is all -inf or holds +inf or NaN (as PyTorch).

    Example:
        >>> import numpy as np, gpunn
        >>> gpunn.log_softmax(np.array([0.0, 0.0], np.float64))
        array([-0.69314718, -0.69314718])
    """
    return _forward("log_softmax", x, axis, out, stream)


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
    block = 256  # the GPU block size (block_size() outside the simulator)
    for op in ("softmax", "log_softmax"):
        _registry.for_dtypes(f"{op}_forward_rows", lambda dt, op=op: _forward_rows_kernel(dt, block, op),
                             _ROWS_FORWARD_SIG.format, f64_accumulator=True)
        _registry.for_dtypes(f"{op}_forward_cols", lambda dt, op=op: _forward_cols_kernel(dt, op),
                             _COLS_FORWARD_SIG.format, f64_accumulator=True)
        _registry.for_dtypes(f"{op}_backward_rows", lambda dt, op=op: _backward_rows_kernel(dt, block, op),
                             _ROWS_BACKWARD_SIG.format, f64_accumulator=True)
        _registry.for_dtypes(f"{op}_backward_cols", lambda dt, op=op: _backward_cols_kernel(dt, op),
                             _COLS_BACKWARD_SIG.format, f64_accumulator=True)


_register()
