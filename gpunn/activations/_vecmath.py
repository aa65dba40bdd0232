"""float32 exp, expm1, tanh, log1p and erfc written as plain float32 arithmetic, for the activations' scalar math.

Why: without Intel SVML (not shipped here) Numba's CPU loops call the C library's ``expf``/``tanhf``/``erff`` one
element at a time, and an activation then runs 5 to 25 times slower than PyTorch's vectorised CPU kernels. Written as
polynomials plus one bit-cast (for 2^n), LLVM vectorises them inside the ``prange`` loops of gpunn._elementwise. The
same functions run in the CUDA kernels (all arithmetic; the bit-cast is an LLVM ``bitcast``, valid in NVVM), so the
simulator tests exercise exactly the device code.

Accuracy, measured against float64 over the whole float32 range used (see tests/test_activations.py):
exp and expm1 within 2 ulp, tanh within 3 ulp, log1p on [0, 1] within 3 ulp, erfc's factor ``erfcx`` within 6 ulp
(a least-squares fit, relative error 1e-11 in exact arithmetic, in t = (a - 4) / (a + 4)). float64 ops keep ``math``.

Every constant is a float32 closure constant (a Python float literal would promote to float64), and integers are
cast back to int32 (Numba widens int32 arithmetic to int64).
"""

import math

import numpy as np
from llvmlite import ir
from numba import int32, njit, types
from numba.extending import intrinsic

_f32 = np.float32


@intrinsic
def _int32_bits_as_float32(typingctx, i):
    """The float32 whose IEEE bits are the int32 ``i`` (an LLVM bitcast: free, and vectorisable)."""
    if i != types.int32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(types.int32), codegen


# ---- exp -------------------------------------------------------------------------------------------------------------
# exp(x) = 2^n * exp(r), n = round(x / ln 2), r = x - n ln 2 in [-ln2/2, ln2/2] (ln 2 split in two: n * _LN2_HI is
# exact), exp(r) by Cephes' expf polynomial. 2^n is applied as 2^(n//2) * 2^(n - n//2) so that results down to the
# smallest subnormal (x = -103.97) and up to the largest float (x = 88.72) come out without overflow in between.
_LOG2E, _LN2_HI, _LN2_LO = _f32(1.4426950408889634), _f32(0.693359375), _f32(-2.12194440e-4)
_ROUND = _f32(12582912.0)  # 1.5 * 2^23: (v + _ROUND) - _ROUND rounds v to the nearest integer, |v| < 2^22
_EXP_HI, _EXP_LO = _f32(89.0), _f32(-104.0)
_P0, _P1, _P2 = _f32(1.9875691500e-4), _f32(1.3981999507e-3), _f32(8.3334519073e-3)
_P3, _P4, _P5 = _f32(4.1665795894e-2), _f32(1.6666665459e-1), _f32(5.0000001201e-1)
_ONE, _HALF, _TWO, _ZERO = _f32(1.0), _f32(0.5), _f32(2.0), _f32(0.0)


@njit(inline="always")
def exp(x):
    """e^x for a float32 x: +inf -> inf, -inf -> 0, NaN -> NaN, subnormal results kept."""
    v = x if x < _EXP_HI else _EXP_HI  # NaN takes the bound here and is restored at the end
    v = v if v > _EXP_LO else _EXP_LO
    nf = (v * _LOG2E + _ROUND) - _ROUND  # round(v / ln 2)
    r = (v - nf * _LN2_HI) - nf * _LN2_LO
    p = ((((_P0 * r + _P1) * r + _P2) * r + _P3) * r + _P4) * r + _P5
    er = (p * r) * r + r + _ONE  # exp(r)
    n = int32(nf)
    n1 = int32(n >> 1)
    n2 = int32(n - n1)
    s1 = _int32_bits_as_float32(int32((n1 + 127) << 23))  # 2^n1, a normal float: n1 in [-75, 64]
    s2 = _int32_bits_as_float32(int32((n2 + 127) << 23))
    y = (er * s1) * s2
    return y if x == x else x


# ---- expm1 -----------------------------------------------------------------------------------------------------------
# |x| < 1/2: Taylor series to x^8 (truncation below 1.5e-8 relative); elsewhere exp(x) - 1 (no cancellation there).
_E2, _E3, _E4, _E5 = _f32(1 / 2), _f32(1 / 6), _f32(1 / 24), _f32(1 / 120)
_E6, _E7, _E8 = _f32(1 / 720), _f32(1 / 5040), _f32(1 / 40320)


@njit(inline="always")
def expm1(x):
    """e^x - 1 for a float32 x, accurate near 0."""
    q = (((((_E8 * x + _E7) * x + _E6) * x + _E5) * x + _E4) * x + _E3) * x + _E2
    small = x + (x * x) * q
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
    small = x + x * z * ((((_T0 * z + _T1) * z + _T2) * z + _T3) * z + _T4)
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
    q = ((((((_L15 * w + _L13) * w + _L11) * w + _L9) * w + _L7) * w + _L5) * w + _L3) * w
    return (s + s) + (s + s) * q


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
    q = q * t + _Q1
    q = q * t + _Q2
    q = q * t + _Q3
    q = q * t + _Q4
    q = q * t + _Q5
    q = q * t + _Q6
    q = q * t + _Q7
    q = q * t + _Q8
    q = q * t + _Q9
    q = q * t + _Q10
    q = q * t + _Q11
    q = q * t + _Q12
    return q * t + _Q13


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


def for_dtype(dtype):
    """``(exp, expm1, tanh, log1p_unit)`` for ``dtype``: the float32 forms above, or ``math``'s for float64."""
    if np.dtype(dtype) == np.float32:
        return exp, expm1, tanh, log1p_unit
    return _exp64, _expm1_64, _tanh64, _log1p64
