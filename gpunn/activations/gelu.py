r"""GELU, exact (erf) and tanh-approximated, in PyTorch's definitions.

approximate="none":
    Forward:  y = x * Phi(x),  Phi(x) = 0.5 * (1 + erf(x / sqrt(2))) = 0.5 * erfc(-x / sqrt(2))
    Backward: dx = dy * (Phi(x) + x * phi(x)),  phi(x) = exp(-x^2 / 2) / sqrt(2 pi)         (saved: x)
    Computed from h = 0.5 erfc(a), a = |x| / sqrt(2): Phi = h for x < 0 (no cancellation in the left tail, where
    1 + erf(.) would lose every digit) and 1 - h for x >= 0. float32 writes erfc(a) = exp(-a^2) erfcx(a) with the
    polynomial of _vecmath, and the backward reuses that exp(-a^2) = exp(-x^2 / 2) for phi: one exp per element.
approximate="tanh":
    Forward:  y = 0.5 * x * (1 + tanh(u)),  u = k (x + c x^3),  k = sqrt(2 / pi),  c = 0.044715
    Backward: dx = dy * (0.5 (1 + t) + 0.5 x (1 - t^2) k (1 + 3 c x^2)),  t = tanh(u)        (saved: x)
    Computed with 0.5 (1 + tanh(u)) = s = sigmoid(2u) (one exp): y = x s and
    dx = dy (s + 2 x s (1 - s) k (1 + 3 c x^2)), where 1 - s is taken as e / (1 + e), e = exp(-2u), when s is near 1
    (no cancellation).

Infinities follow the formulas as PyTorch evaluates them: gelu(+inf) = +inf, gelu(-inf) = -inf * 0 = NaN, and the
backward is NaN at +-inf (inf * 0). At a finite x whose x^3 overflows, the tanh form's backward is its limit (1 or 0):
PyTorch's float32 kernel gives NaN there. PyTorch's float32 CPU kernel gives NaN at +inf for "none" (its vectorised erf);
gpunn gives +inf there, as PyTorch does in float64.
"""

import functools
import math

import numpy as np
from numba import njit

from .. import _elementwise
from .._elementwise import typed
from .._args import check_choice
from . import _vecmath

APPROXIMATE = ("none", "tanh")
_SQRT1_2 = 0.7071067811865476        # 1 / sqrt(2)
_INV_SQRT_2PI = 0.3989422804014327   # 1 / sqrt(2 pi)
_K = 0.7978845608028654              # sqrt(2 / pi)
_C = 0.044715
_A_MAX32 = np.float32(11.0)
_X_MAX32 = np.float32(11.0 * math.sqrt(2.0))
_HALF32 = np.float32(0.5)
_ONE32 = np.float32(1.0)


# ---- scalar math (one definition, called by the CUDA kernel and by the CPU loop) -------------------------------------
@njit(inline="always")
def _half_erfc_gauss32(x, sqrt1_2):
    """(0.5 erfc(a), exp(-a^2)) for a = |x| / sqrt(2), float32 (NaN: any finite pair; the caller multiplies by x).

    exp(-a^2) = exp(-x^2 / 2) is taken from x itself: x^2 = x2 + err exactly (err by an FMA), and -x2 / 2 is exact,
    so exp(-x2 / 2) (1 - err / 2) carries no rounding of a. Rounding a = |x| / sqrt(2) first would cost 2 a^2 ulp
    (56 ulp of the backward at x = -4.5); erfcx(a) varies slowly, so a rounded a does no harm there."""
    a = abs(x * sqrt1_2)
    a = a if a < _A_MAX32 else _A_MAX32  # erfc(11) and exp(-121) are 0 in float32; NaN takes the bound too
    xc = x if abs(x) < _X_MAX32 else _X_MAX32
    x2 = xc * xc
    err = _vecmath.fma(xc, xc, -x2)
    e = _vecmath.exp_neg(-_HALF32 * x2) * (_ONE32 - _HALF32 * err)
    return _HALF32 * e * _vecmath.erfcx_clamped(a), e


@njit(inline="always")
def _half_erfc_gauss64(x, sqrt1_2):
    a = abs(x * sqrt1_2)
    return 0.5 * math.erfc(a), math.exp(-(a * a))


@functools.lru_cache(maxsize=None)
def _forward_math(dtype):
    zero, one, sqrt1_2 = typed(dtype, 0.0, 1.0, _SQRT1_2)
    half_erfc_gauss = _half_erfc_gauss32 if dtype == np.float32 else _half_erfc_gauss64

    @njit(inline="always")
    def f(x, a, b):
        h, e = half_erfc_gauss(x, sqrt1_2)  # h = Phi(-|x|)
        cdf = h if x < zero else one - h          # Phi(x)
        return x * cdf                            # y = x Phi(x)

    return f


@functools.lru_cache(maxsize=None)
def _backward_math(dtype):
    zero, one, sqrt1_2, inv_sqrt_2pi = typed(dtype, 0.0, 1.0, _SQRT1_2, _INV_SQRT_2PI)
    half_erfc_gauss = _half_erfc_gauss32 if dtype == np.float32 else _half_erfc_gauss64

    @njit(inline="always")
    def f(dy, x, a, b):
        h, e = half_erfc_gauss(x, sqrt1_2)
        cdf = h if x < zero else one - h       # Phi(x)
        pdf = e * inv_sqrt_2pi                 # phi(x) = exp(-x^2 / 2) / sqrt(2 pi)
        return dy * (cdf + x * pdf)            # dx = dy * (Phi(x) + x phi(x))

    return f


@functools.lru_cache(maxsize=None)
def _tanh_forward_math(dtype):
    one, two_k, c = typed(dtype, 1.0, 2.0 * _K, _C)
    exp = _vecmath.for_dtype(dtype).exp

    @njit(inline="always")
    def f(x, a, b):
        e = exp(-two_k * (x + c * (x * x * x)))  # exp(-2u)
        return x / (one + e)                      # y = x sigmoid(2u) = x/2 (1 + tanh(u))

    return f


@functools.lru_cache(maxsize=None)
def _tanh_backward_math(dtype):
    zero, one, two_k, c3, c = typed(dtype, 0.0, 1.0, 2.0 * _K, 3.0 * _C, _C)
    exp = _vecmath.for_dtype(dtype).exp

    @njit(inline="always")
    def f(dy, x, a, b):
        x2 = x * x
        e = exp(-two_k * (x + c * (x2 * x)))  # exp(-2u)
        s = one / (one + e)                    # sigmoid(2u) = (1 + tanh u) / 2
        oms = e * s if e <= one else one - s   # 1 - s without cancellation
        # dx = dy * (s + x s (1 - s) * 2k (1 + 3c x^2))  (= 0.5 (1 + t) + 0.5 x (1 - t^2) k (1 + 3c x^2)); where
        # s (1 - s) is 0 so is that term, also when x^2 overflows (|x| > 1.8e19 in float32: 0 * inf would be NaN)
        xso = x * s * oms
        return dy * (s + (xso * (two_k * (one + c3 * x2)) if xso != zero else zero))

    return f


def _pick(approximate):
    check_choice("approximate", approximate, APPROXIMATE)
    if approximate == "tanh":
        return _tanh_forward_math, _tanh_backward_math
    return _forward_math, _backward_math


# ---- public functions ------------------------------------------------------------------------------------------------
def gelu(x, approximate="none", *, out=None, stream=None):
    r"""Gaussian error linear unit.

    .. math:: y = x\,\Phi(x) = \tfrac{x}{2}\left(1 + \operatorname{erf}(x/\sqrt{2})\right)
              \quad\text{or, with approximate="tanh",}\quad
              y = \tfrac{x}{2}\left(1 + \tanh\left(\sqrt{2/\pi}\,(x + 0.044715\,x^3)\right)\right)

    Args:
        x: float16/bfloat16/float32/float64 array of any shape (NumPy, or a device array: CuPy, PyTorch CUDA, Numba).
        approximate: ``"none"`` (exact, erf) or ``"tanh"``.
        out: optional preallocated result of ``x``'s shape and dtype; may be ``x`` itself (in place).
        stream: CUDA stream for a device call (default: the current stream of the inputs' library).

    Returns:
        ``y``, an array of the same kind, shape and dtype as ``x``.

    Example:
        >>> import numpy as np, gpunn
        >>> gpunn.gelu(np.array([-1.0, 0.0, 1.0]))
        array([-0.15865525,  0.        ,  0.84134475])
    """
    forward_math, _ = _pick(approximate)
    return _elementwise.forward(forward_math, x, out, stream=stream)


def gelu_backward(dy, x, approximate="none", *, out=None, stream=None):
    r"""Gradient of :func:`gelu`.

    .. math:: dx = dy \cdot \left(\Phi(x) + x\,\varphi(x)\right)
              \quad\text{(or the derivative of the tanh form)}

    Args:
        dy: upstream gradient, same shape and dtype as ``x``.
        x: the forward input.
        approximate: ``"none"`` or ``"tanh"``, as in the forward call.
        out: optional preallocated ``dx``; may be ``dy`` or ``x``.
        stream: CUDA stream for a device call (default: the current stream of the inputs' library).

    Returns:
        ``dx``, same kind, shape and dtype as ``x``.

    Example:
        >>> import numpy as np, gpunn
        >>> gpunn.gelu_backward(np.ones(3), np.array([-1.0, 0.0, 1.0]))
        array([-0.08331547,  0.5       ,  1.08331547])
    """
    _, backward_math = _pick(approximate)
    return _elementwise.backward(backward_math, dy, x, out, stream=stream)


_elementwise.register("gelu", _forward_math, _backward_math)
_elementwise.register("gelu_tanh", _tanh_forward_math, _tanh_backward_math)
