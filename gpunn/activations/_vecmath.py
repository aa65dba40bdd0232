"""float32 exp, expm1, tanh, log1p and erfc written as plain float32 arithmetic, for the activations' scalar math.

Why: without Intel SVML (not shipped here) Numba's CPU loops call the C library's ``expf``/``tanhf``/``erff`` one
element at a time, and an activation then ran 5 to 25 times slower than PyTorch's vectorised CPU kernels. Written as
FMA polynomials plus an exponent-bits construction for 2^n, LLVM vectorises them (AVX2/AVX-512) inside the ``prange``
loops of gpunn._elementwise. The same functions run in the CUDA kernels (``llvm.fma`` is ``fma.rn.f32``; 2^n is an
int32 add, shift and ``bitcast``, valid in NVVM), so the simulator tests exercise exactly the device code.

Accuracy against float64 over the float32 ranges used (tests/test_activations.py::test_vecmath_float32_accuracy):
exp, exp_neg and expm1 within 2 ulp, tanh within 2 ulp, log1p on [0, 1] within 2 ulp, erfc's factor ``erfcx`` within
6 ulp (a least-squares fit in t = (a - 4) / (a + 4), relative error 1e-11 in exact arithmetic). float64 keeps ``math``.

Every constant is a float32 constant (a Python float literal would promote to float64); integer work happens only
inside the ``_pow2`` intrinsic, in int32 (Numba's own int32 arithmetic widens to int64, which halves the vector width).
"""

import math
from typing import NamedTuple

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

_f32 = np.float32


@intrinsic
def _pow2(typingctx, nf):
    """2^n for a float32 ``nf`` holding an integer n in [-126, 127]: the float whose exponent bits are n + 127
    (fptosi, add, shl and bitcast in int32: no libm call, and LLVM vectorises it)."""
    if nf != types.float32:
        return None

    def codegen(context, builder, signature, args):
        i32 = ir.IntType(32)
        n = builder.fptosi(args[0], i32)
        bits = builder.shl(builder.add(n, ir.Constant(i32, 127)), ir.Constant(i32, 23))
        return builder.bitcast(bits, ir.FloatType())

    return types.float32(types.float32), codegen


@intrinsic
def fma(typingctx, a, b, c):
    """a * b + c with one rounding (llvm.fma: a vfmadd instruction on the CPU, fma.rn.f32 on the GPU). Halves the
    operations and the rounding errors of each polynomial step."""
    if not (a == b == c == types.float32):
        return None

    def codegen(context, builder, signature, args):
        return builder.fma(*args)

    return types.float32(types.float32, types.float32, types.float32), codegen


# ---- exp -------------------------------------------------------------------------------------------------------------
# exp(x) = 2^n * exp(r), n = round(x / ln 2), r = x - n ln 2 in [-ln2/2, ln2/2] (ln 2 split in two: n * _LN2_HI is
# exact), exp(r) by the polynomial below. 2^n is applied as 2^(n//2) * 2^(n - n//2) so that results down to the
# smallest subnormal (x = -103.97) and up to the largest float (x = 88.72) come out without overflow in between.
_LOG2E, _LN2_HI, _LN2_LO = _f32(1.4426950408889634), _f32(0.693359375), _f32(-2.12194440e-4)
_ROUND = _f32(12582912.0)  # 1.5 * 2^23: (v + _ROUND) - _ROUND rounds v to the nearest integer, |v| < 2^22
_EXP_HI, _EXP_LO = _f32(89.0), _f32(-104.0)
# exp(r) = 1 + r + r^2 P(r), P of degree 4 fitted (weighted least squares, near-minimax) on [-ln2/2, ln2/2]: relative
# error 3e-9 in exact arithmetic, well below float32's 6e-8 (Cephes' expf uses one more term)
_P0, _P1, _P2 = _f32(0.0013814608482432245), _f32(0.008368710514083999), _f32(0.04166838747804805)
_P3, _P4 = _f32(0.16666520682965885), _f32(0.4999999345109089)
_ONE, _HALF, _TWO, _ZERO = _f32(1.0), _f32(0.5), _f32(2.0), _f32(0.0)
_SIXTY_FOUR = _f32(64.0)


@njit(inline="always")
def exp(x):
    """e^x for a float32 x: +inf -> inf, -inf -> 0, NaN -> NaN, subnormal results kept."""
    v = x if x < _EXP_HI else _EXP_HI  # NaN takes the bound here and is restored at the end
    v = v if v > _EXP_LO else _EXP_LO
    nf = (v * _LOG2E + _ROUND) - _ROUND  # round(v / ln 2)
    r = fma(nf, -_LN2_LO, v - nf * _LN2_HI)  # v - n ln 2 (the first product is exact)
    p = fma(fma(fma(fma(_P0, r, _P1), r, _P2), r, _P3), r, _P4)
    er = fma(p, r * r, r) + _ONE  # exp(r)
    n1 = (nf * _HALF + _ROUND) - _ROUND  # 2^n = 2^n1 2^(n - n1), both normal floats: |n1|, |n - n1| <= 75
    s1 = _pow2(n1)
    s2 = _pow2(nf - n1)
    y = (er * s1) * s2
    return y if x == x else x


_TWO_M64 = _f32(2.0**-64)


@njit(inline="always")
def exp_neg(x):
    """e^x for a float32 x <= 0 (or NaN), cheaper than :func:`exp`: one scaling, by 2^(n + 64) then 2^-64 (the first
    product is exact, the second rounds once, into the subnormals where it must). -inf -> 0, NaN -> NaN."""
    v = x if x > _EXP_LO else _EXP_LO  # NaN takes the bound here and is restored at the end
    nf = (v * _LOG2E + _ROUND) - _ROUND  # round(v / ln 2), in [-150, 0]
    r = fma(nf, -_LN2_LO, v - nf * _LN2_HI)
    p = fma(fma(fma(fma(_P0, r, _P1), r, _P2), r, _P3), r, _P4)
    er = fma(p, r * r, r) + _ONE
    y = (er * _pow2(nf + _SIXTY_FOUR)) * _TWO_M64
    return y if x == x else x


# ---- expm1 -----------------------------------------------------------------------------------------------------------
# |x| < 1/2: Taylor series to x^8 (truncation below 1.5e-8 relative); elsewhere exp(x) - 1 (no cancellation there).
_E2, _E3, _E4, _E5 = _f32(1 / 2), _f32(1 / 6), _f32(1 / 24), _f32(1 / 120)
_E6, _E7, _E8 = _f32(1 / 720), _f32(1 / 5040), _f32(1 / 40320)


@njit(inline="always")
def expm1(x):
    """e^x - 1 for a float32 x, accurate near 0."""
    q = fma(fma(fma(fma(fma(fma(_E8, x, _E7), x, _E6), x, _E5), x, _E4), x, _E3), x, _E2)
    small = fma(x * x, q, x)
    big = exp(x) - _ONE
    return small if abs(x) < _HALF else big


# ---- tanh ------------------------------------------------------------------------------------------------------------
# |x| < 0.625: Cephes' tanhf odd polynomial; elsewhere 1 - 2 / (e^{2|x|} + 1) with x's sign (e^{2|x|} = inf gives 1).
_T0, _T1, _T2 = _f32(-5.70498872745e-3), _f32(2.06390887954e-2), _f32(-5.37397155531e-2)
_T3, _T4 = _f32(1.33314422036e-1), _f32(-3.33332819422e-1)
_T_CUT = _f32(0.625)


@njit(inline="always")
def tanh(x):
    """tanh(x) for a float32 x: +-inf -> +-1, NaN -> NaN, tanh(-0) = -0."""
    a = abs(x)
    z = x * x
    small = fma(x * z, fma(fma(fma(fma(_T0, z, _T1), z, _T2), z, _T3), z, _T4), x)
    big = _ONE - _TWO / (exp(a + a) + _ONE)
    big = big if x > _ZERO else -big
    return small if a < _T_CUT else big


# ---- log1p on [0, 1] -------------------------------------------------------------------------------------------------
# log(1 + u) = 2 atanh(s), s = u / (2 + u) in [0, 1/3]: the odd series to s^15 (truncation below 1.5e-8 relative).
_L3, _L5, _L7, _L9 = _f32(1 / 3), _f32(1 / 5), _f32(1 / 7), _f32(1 / 9)
_L11, _L13, _L15 = _f32(1 / 11), _f32(1 / 13), _f32(1 / 15)


@njit(inline="always")
def log1p_unit(u):
    """log(1 + u) for a float32 u in [0, 1] (softplus's exp(-|z|)); NaN -> NaN."""
    s = u / (_TWO + u)
    w = s * s
    q = fma(fma(fma(fma(fma(fma(_L15, w, _L13), w, _L11), w, _L9), w, _L7), w, _L5), w, _L3) * w
    return fma(s + s, q, s + s)


# ---- erfc ------------------------------------------------------------------------------------------------------------
# erfc(a) = exp(-a^2) * erfcx(a) for a >= 0; erfcx(a) is a degree-13 polynomial in t = (a - 4) / (a + 4). Callers
# clamp a to [0, 11] (erfc(11) and exp(-121) are 0 in float32) and reuse exp(-a^2) (gelu's backward needs it).
_Q = tuple(_f32(c) for c in (
    -9.415903140181663e-06, -2.7149209105681305e-05, 8.19756243830988e-05, -1.7765220684549943e-05,
    -0.0007990571110931405, 0.004059119788496102, -0.012844126606618753, 0.03129921206015152,
    -0.06310778793871528, 0.10896316700047484, -0.1642578180672774, 0.21871967919952706,
    -0.25906804874432865, 0.13699945762374585))
_Q0, _Q1, _Q2, _Q3, _Q4, _Q5, _Q6, _Q7, _Q8, _Q9, _Q10, _Q11, _Q12, _Q13 = _Q
_FOUR = _f32(4.0)


@njit(inline="always")
def erfcx_clamped(a):
    """exp(a^2) erfc(a) for a float32 a in [0, 11]."""
    t = (a - _FOUR) / (a + _FOUR)
    q = _Q0
    q = fma(q, t, _Q1)
    q = fma(q, t, _Q2)
    q = fma(q, t, _Q3)
    q = fma(q, t, _Q4)
    q = fma(q, t, _Q5)
    q = fma(q, t, _Q6)
    q = fma(q, t, _Q7)
    q = fma(q, t, _Q8)
    q = fma(q, t, _Q9)
    q = fma(q, t, _Q10)
    q = fma(q, t, _Q11)
    q = fma(q, t, _Q12)
    return fma(q, t, _Q13)


# ---- per dtype -------------------------------------------------------------------------------------------------------
@njit(inline="always")
def _exp64(x):
    return math.exp(x)


@njit(inline="always")
def _expm1_64(x):
    return math.expm1(x)


@njit(inline="always")
def _tanh64(x):
    return math.tanh(x)


@njit(inline="always")
def _log1p64(u):
    return math.log1p(u)


class Math(NamedTuple):
    exp: object
    expm1: object
    tanh: object
    log1p_unit: object
    exp_neg: object


_MATH32 = Math(exp, expm1, tanh, log1p_unit, exp_neg)
_MATH64 = Math(_exp64, _expm1_64, _tanh64, _log1p64, _exp64)


def for_dtype(dtype):
    """The scalar functions for ``dtype`` (``.exp``, ``.expm1``, ``.tanh``, ``.log1p_unit``, ``.exp_neg``): the float32
    forms above, or ``math``'s for float64 (where ``exp_neg`` is plain ``exp``)."""
    return _MATH32 if np.dtype(dtype) == np.float32 else _MATH64
