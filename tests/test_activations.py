"""Elementwise activations (forward and backward) and PReLU, against naive float64 references and PyTorch.

Each op has a reference written straight from its formula in float64 NumPy (never gpunn's code). Every case runs in
both modes (CPU path and device kernels, in the simulator without a GPU), in float32 and float64, over SHAPES, with
poisoned outputs so that an element the kernel forgets shows up as NaN.
"""

import doctest
import importlib
import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pytest

import gpunn
from helpers import SHAPES, TOL, assert_close, get, poisoned, put

DTYPES = [np.float32, np.float64]
SQRT1_2 = 1 / math.sqrt(2)
_erfc = np.vectorize(math.erfc, otypes=[np.float64])


# ---- naive float64 references, straight from the formulas (docs/definitions.md) --------------------------------------
def _sig(z):
    with np.errstate(over="ignore"):
        return 1 / (1 + np.exp(-z))


def _phi_cdf(x):
    return 0.5 * _erfc(-x * SQRT1_2)  # = (1 + erf(x / sqrt 2)) / 2, without its cancellation in the left tail


def ref_gelu(x):
    return x * _phi_cdf(x)


def ref_gelu_backward(dy, x):
    cdf = _phi_cdf(x)
    pdf = np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)
    return dy * (cdf + x * pdf)


K_TANH, C_TANH = math.sqrt(2 / math.pi), 0.044715


def ref_gelu_tanh(x):
    return 0.5 * x * (1 + np.tanh(K_TANH * (x + C_TANH * x**3)))


def ref_gelu_tanh_backward(dy, x):
    # (1 + tanh u) / 2 = 1 / (1 + e^-2u) and 1 - tanh^2 u = 1 / cosh^2 u: no cancellation in the tails, where
    # tanh u rounds to -1 and the difference form gives 0 for a tiny non-zero slope
    u = K_TANH * (x + C_TANH * x**3)
    with np.errstate(over="ignore"):
        return dy * (1 / (1 + np.exp(-2 * u)) + 0.5 * x / np.cosh(u) ** 2 * K_TANH * (1 + 3 * C_TANH * x * x))


def ref_softplus(x, beta, threshold):
    with np.errstate(over="ignore"):
        return np.where(beta * x > threshold, x, np.log1p(np.exp(beta * x)) / beta)


def ref_softplus_backward(dy, x, beta, threshold):
    return np.where(beta * x > threshold, dy, dy * _sig(beta * x))


@dataclass
class Op:
    name: str
    forward: Callable          # gpunn forward(x, **params, out=)
    backward: Callable         # gpunn backward(dy, saved, **params, out=)
    ref_forward: Callable      # float64 reference forward(x, **params)
    ref_backward: Callable     # float64 reference backward(dy, x_or_y, **params)
    saved: str = "x"           # what the backward takes: the input "x" or the output "y"
    params: dict = field(default_factory=dict)
    torch_forward: Callable = None  # (torch, F, x_tensor, **params) -> tensor

    def __repr__(self):
        return self.name + ("" if not self.params else str(self.params))


OPS = [
    Op("relu", gpunn.relu, gpunn.relu_backward,
       # the backward tests x <= 0 as PyTorch does (at x = NaN the gradient is dy)
       lambda x: np.maximum(x, 0), lambda dy, x: np.where(x <= 0, 0.0, dy),
       torch_forward=lambda t, F, x: F.relu(x)),
    Op("leaky_relu", gpunn.leaky_relu, gpunn.leaky_relu_backward,
       lambda x, negative_slope=0.01: np.where(x > 0, x, negative_slope * x),
       lambda dy, x, negative_slope=0.01: np.where(x > 0, dy, negative_slope * dy),
       torch_forward=lambda t, F, x, negative_slope=0.01: F.leaky_relu(x, negative_slope)),
    Op("leaky_relu", gpunn.leaky_relu, gpunn.leaky_relu_backward,
       lambda x, negative_slope: np.where(x > 0, x, negative_slope * x),
       lambda dy, x, negative_slope: np.where(x > 0, dy, negative_slope * dy), params={"negative_slope": -0.3},
       torch_forward=lambda t, F, x, negative_slope: F.leaky_relu(x, negative_slope)),
    Op("sigmoid", gpunn.sigmoid, gpunn.sigmoid_backward,
       _sig, lambda dy, y: dy * y * (1 - y), saved="y",
       torch_forward=lambda t, F, x: t.sigmoid(x)),
    Op("tanh", gpunn.tanh, gpunn.tanh_backward,
       np.tanh, lambda dy, y: dy * (1 - y * y), saved="y",
       torch_forward=lambda t, F, x: t.tanh(x)),
    Op("gelu", gpunn.gelu, gpunn.gelu_backward, ref_gelu, ref_gelu_backward,
       torch_forward=lambda t, F, x: F.gelu(x)),
    Op("gelu", gpunn.gelu, gpunn.gelu_backward,
       lambda x, approximate: ref_gelu_tanh(x), lambda dy, x, approximate: ref_gelu_tanh_backward(dy, x),
       params={"approximate": "tanh"},
       torch_forward=lambda t, F, x, approximate: F.gelu(x, approximate=approximate)),
    Op("silu", gpunn.silu, gpunn.silu_backward,
       lambda x: x * _sig(x), lambda dy, x: dy * _sig(x) * (1 + x * (1 - _sig(x))),
       torch_forward=lambda t, F, x: F.silu(x)),
    # elu's backward tests x <= 0 as PyTorch does (at x = NaN the gradient is dy)
    Op("elu", gpunn.elu, gpunn.elu_backward,
       lambda x, alpha=1.0: np.where(x > 0, x, alpha * np.expm1(x)),
       lambda dy, x, alpha=1.0: np.where(x <= 0, dy * alpha * np.exp(np.minimum(x, 0)), dy),
       torch_forward=lambda t, F, x, alpha=1.0: F.elu(x, alpha)),
    Op("elu", gpunn.elu, gpunn.elu_backward,
       lambda x, alpha: np.where(x > 0, x, alpha * np.expm1(x)),
       lambda dy, x, alpha: np.where(x <= 0, dy * alpha * np.exp(np.minimum(x, 0)), dy), params={"alpha": 0.7},
       torch_forward=lambda t, F, x, alpha: F.elu(x, alpha)),
    Op("softplus", gpunn.softplus, gpunn.softplus_backward,
       lambda x: ref_softplus(x, 1.0, 20.0), lambda dy, x: ref_softplus_backward(dy, x, 1.0, 20.0),
       torch_forward=lambda t, F, x: F.softplus(x)),
    Op("softplus", gpunn.softplus, gpunn.softplus_backward, ref_softplus, ref_softplus_backward,
       params={"beta": 2.5, "threshold": 4.0},
       torch_forward=lambda t, F, x, beta, threshold: F.softplus(x, beta, threshold)),
]
IDS = [repr(op) for op in OPS]
BASE_OPS = [op for op in OPS if not op.params]  # one entry per op (and kernel) for the costlier checks
BASE_IDS = [op.name for op in BASE_OPS]

# Values where the tails, overflow and the linear regimes meet (PyTorch's answers are the expected ones)
EXTREMES = [-np.inf, -1e4, -104.0, -89.0, -88.0, -20.0, -5.0, -1e-3, -1e-30, -0.0, 0.0, 1e-30, 1e-3, 5.0, 20.0,
            88.0, 89.0, 1e4, np.inf, np.nan]


def _random(rng, shape, dtype, scale=3.0):
    return (rng.standard_normal(shape) * scale).astype(dtype)


def _saved(op, x, dtype):
    """The backward's saved operand, from the reference (rounded to dtype): x itself, or the reference output y."""
    if op.saved == "x":
        return x
    with np.errstate(all="ignore"):
        return op.ref_forward(x.astype(np.float64), **op.params).astype(dtype)


def _check(op, x, dy, dtype, mode, what=""):
    """Run forward and backward into poisoned outputs and compare with the references."""
    x64 = x.astype(np.float64)
    out = poisoned(x.shape, dtype, mode)
    y = op.forward(put(x, mode), **op.params, out=out)
    assert y is out
    with np.errstate(all="ignore"):
        assert_close(get(y), op.ref_forward(x64, **op.params), dtype, what=f"{op!r} forward{what}")
    s = _saved(op, x, dtype)
    dx_out = poisoned(x.shape, dtype, mode)
    dx = op.backward(put(dy, mode), put(s, mode), **op.params, out=dx_out)
    assert dx is dx_out
    with np.errstate(all="ignore"):
        assert_close(get(dx), op.ref_backward(dy.astype(np.float64), s.astype(np.float64), **op.params), dtype,
                     what=f"{op!r} backward{what}")


# ---- values over shapes, dtypes and both paths -----------------------------------------------------------------------
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", OPS, ids=IDS)
def test_matches_reference(op, dtype, shape, mode, rng):
    _check(op, _random(rng, shape, dtype), _random(rng, shape, dtype, 1.0), dtype, mode)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", OPS, ids=IDS)
def test_wide_range(op, dtype, mode, rng):
    """Inputs spread over +-40 (every branch and both tails), plus exact zeros."""
    x = np.concatenate([rng.uniform(-40, 40, 400), rng.uniform(-1, 1, 100), np.zeros(3)]).astype(dtype)
    _check(op, x, _random(rng, x.shape, dtype, 1.0), dtype, mode, " (wide range)")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", OPS, ids=IDS)
def test_extreme_values_match_reference(op, dtype, mode):
    x = np.array(EXTREMES, dtype)
    x64 = x.astype(np.float64)
    with np.errstate(all="ignore"):
        expected = op.ref_forward(x64, **op.params)
    if op.name == "gelu" and op.params.get("approximate") == "tanh":
        expected[x64 == -np.inf] = np.nan  # -inf * (1 + tanh(-inf)) = -inf * 0, as PyTorch
    y = get(op.forward(put(x, mode), **op.params))
    assert_close(y, expected, dtype, what=f"{op!r} forward at extremes")
    if op.name == "sigmoid":
        assert not np.isnan(y[np.isfinite(x)]).any()
        assert y[0] == 0.0 and y[-2] == 1.0


def test_sigmoid_is_stable_in_both_tails(mode):
    x = np.array([-1e30, -1e4, -745.0, -104.0, -88.7, 88.7, 1e4, 1e30, -np.inf, np.inf])
    for dtype in DTYPES:
        with np.errstate(all="raise"):  # no overflow warnings from the host side either
            y = get(gpunn.sigmoid(put(x.astype(dtype), mode)))
        assert np.isfinite(y).all() and (y >= 0).all() and (y <= 1).all()
        assert_close(y, _sig(x), dtype)


@pytest.mark.parametrize("op", BASE_OPS, ids=BASE_IDS)
def test_nan_propagates(op, mode):
    x = np.array([np.nan, -1.0, np.nan, 2.0], np.float32)
    y = get(op.forward(put(x, mode)))
    assert np.isnan(y[[0, 2]]).all() and not np.isnan(y[[1, 3]]).any()


@pytest.mark.parametrize("dtype", DTYPES)
def test_noncontiguous_views(dtype, mode, rng):
    base_x, base_dy = _random(rng, (6, 35), dtype), _random(rng, (6, 35), dtype, 1.0)

    def view(a):
        return a[::2, 1::3]

    for op in OPS:
        base_s = _saved(op, base_x, dtype)
        xv, dyv, sv = view(base_x), view(base_dy), view(base_s)
        with np.errstate(all="ignore"):
            y_ref = op.ref_forward(xv.astype(np.float64), **op.params)
            dx_ref = op.ref_backward(dyv.astype(np.float64), sv.astype(np.float64), **op.params)
        y = op.forward(view(put(base_x, mode)), **op.params)
        assert_close(get(y), y_ref, dtype, what=f"{op!r} forward (view)")
        dx = op.backward(view(put(base_dy, mode)), view(put(base_s, mode)), **op.params)
        assert_close(get(dx), dx_ref, dtype, what=f"{op!r} backward (view)")


@pytest.mark.parametrize("op", BASE_OPS, ids=BASE_IDS)
def test_noncontiguous_host_out(op, rng):
    x = _random(rng, (4, 9), np.float64)
    buf = np.full((4, 18), np.nan)
    res = op.forward(x, out=buf[:, ::2])
    assert_close(buf[:, ::2], op.ref_forward(x), np.float64)
    assert np.isnan(buf[:, 1::2]).all() and res.base is buf


@pytest.mark.parametrize("dtype", DTYPES)
def test_default_out_is_new_array_of_same_kind(dtype, mode, rng):
    x = put(_random(rng, (3, 4), dtype), mode)
    for op in BASE_OPS:
        y = op.forward(x)
        dx = op.backward(x, x)
        for r in (y, dx):
            assert r is not x and type(r) is type(x) and r.shape == (3, 4) and np.dtype(r.dtype) == np.dtype(dtype)


@pytest.mark.parametrize("op", OPS, ids=IDS)
def test_out_may_alias_input(op, mode, rng):
    dtype = np.float32
    x, dy = _random(rng, 1027, dtype), _random(rng, 1027, dtype, 1.0)
    x64, dy64 = x.astype(np.float64), dy.astype(np.float64)
    s = _saved(op, x, dtype)
    with np.errstate(all="ignore"):
        y_ref = op.ref_forward(x64, **op.params)
        dx_ref = op.ref_backward(dy64, s.astype(np.float64), **op.params)
    xd = put(x.copy(), mode)
    assert op.forward(xd, **op.params, out=xd) is xd
    assert_close(get(xd), y_ref, dtype, what="forward in place")
    dyd, sd = put(dy.copy(), mode), put(s.copy(), mode)
    op.backward(dyd, sd, **op.params, out=dyd)
    assert_close(get(dyd), dx_ref, dtype, what="backward into dy")
    dyd, sd = put(dy.copy(), mode), put(s.copy(), mode)
    op.backward(dyd, sd, **op.params, out=sd)
    assert_close(get(sd), dx_ref, dtype, what="backward into the saved operand")


# ---- bad input: an error naming the argument, before any kernel runs -------------------------------------------------
@pytest.mark.parametrize("op", BASE_OPS, ids=BASE_IDS)
def test_bad_inputs(op, mode):
    x = put(np.ones(4, np.float32), mode)
    saved = op.saved
    out = poisoned(4, np.float32, mode)
    with pytest.raises(TypeError, match="x must be float32 or float64"):
        op.forward(put(np.arange(4), mode), out=out)
    with pytest.raises(TypeError, match="dy must be float32 or float64"):
        op.backward(put(np.arange(4), mode), x, out=out)
    with pytest.raises(ValueError, match=f"dy has shape .* but {saved} has shape"):
        op.backward(put(np.ones(5, np.float32), mode), x, out=out)
    with pytest.raises(TypeError, match=f"{saved} has dtype float64 but dy has float32"):
        op.backward(x, put(np.ones(4), mode), out=out)
    with pytest.raises(ValueError, match="out must have shape"):
        op.forward(x, out=put(np.ones(5, np.float32), mode))
    with pytest.raises(TypeError, match="out must have dtype float32"):
        op.backward(x, x, out=put(np.ones(4), mode))
    with pytest.raises(TypeError, match="x must be an array"):
        op.forward([1.0, 2.0])
    assert np.isnan(get(out)).all()  # no kernel ran
    if mode == "device":
        with pytest.raises(TypeError, match="device array"):
            op.backward(np.ones(4, np.float32), x)
        with pytest.raises(TypeError, match="out is a host array"):
            op.forward(x, out=np.ones(4, np.float32))


def test_bad_parameters():
    x = np.ones(3, np.float32)
    with pytest.raises(ValueError, match="approximate must be one of 'none', 'tanh'"):
        gpunn.gelu(x, approximate="erf")
    with pytest.raises(ValueError, match="approximate"):
        gpunn.gelu_backward(x, x, approximate=None)
    with pytest.raises(TypeError, match="negative_slope must be a real number"):
        gpunn.leaky_relu(x, "0.1")
    with pytest.raises(ValueError, match="negative_slope must be finite"):
        gpunn.leaky_relu_backward(x, x, float("nan"))
    with pytest.raises(TypeError, match="alpha must be a real number"):
        gpunn.elu(x, None)
    with pytest.raises(ValueError, match="alpha must be finite"):
        gpunn.elu_backward(x, x, float("inf"))
    with pytest.raises(ValueError, match="beta must be nonzero"):
        gpunn.softplus(x, beta=0.0)
    with pytest.raises(ValueError, match="threshold must be finite"):
        gpunn.softplus_backward(x, x, threshold=float("nan"))
    with pytest.raises(TypeError, match="beta must be a real number"):
        gpunn.softplus(x, beta=True)
    # accepted as PyTorch accepts them: a negative slope or alpha, a negative beta
    assert_close(gpunn.leaky_relu(np.array([-2.0]), -0.5), [1.0])
    assert_close(gpunn.elu(np.array([-1.0]), -2.0), [-2.0 * math.expm1(-1.0)])
    assert_close(gpunn.softplus(np.array([1.0]), beta=-1.0), [-math.log1p(math.exp(-1.0))])


# ---- PyTorch parity --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", OPS, ids=IDS)
def test_torch_parity(op, dtype, mode, rng):
    """Same definitions as PyTorch, extremes included. PyTorch runs in float64 on the very same (dtype-rounded) values:
    its float32 CPU kernels lose digits where gpunn does not (gelu "tanh" backward: 1 - tanh^2 cancels, 30% off at
    x = -5; gelu "none": NaN at +inf from its vectorised erf), so float64 is the fair yardstick for both dtypes."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x = np.concatenate([_random(rng, 200, dtype), np.array(EXTREMES, dtype)]).astype(dtype)
    dy = _random(rng, x.shape, dtype, 1.0)
    tx = torch.tensor(x.astype(np.float64), requires_grad=True)
    ty = op.torch_forward(torch, F, tx, **op.params)
    (tdx,) = torch.autograd.grad(ty, tx, torch.tensor(dy.astype(np.float64)))
    ty, tdx = ty.detach().numpy(), tdx.numpy()
    y = op.forward(put(x, mode), **op.params)
    assert_close(get(y), ty, dtype, what=f"{op!r} forward vs torch")
    s = y if op.saved == "y" else put(x, mode)  # sigmoid and tanh: the rounded y moves dx by ~1e-7 at most
    assert_close(get(op.backward(put(dy, mode), s, **op.params)), tdx, dtype, what=f"{op!r} backward vs torch")


def test_torch_float32_agrees_where_it_is_accurate(rng):
    """Against PyTorch's own float32 results, on moderate inputs (|x| < 3) where its float32 formulas are accurate."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x = rng.uniform(-3, 3, 500).astype(np.float32)
    dy = _random(rng, x.shape, np.float32, 1.0)
    for op in OPS:
        tx = torch.tensor(x, requires_grad=True)
        ty = op.torch_forward(torch, F, tx, **op.params)
        (tdx,) = torch.autograd.grad(ty, tx, torch.tensor(dy))
        y = op.forward(x, **op.params)
        assert_close(y, ty.detach().numpy(), np.float32, what=f"{op!r} forward vs torch float32")
        dx = op.backward(dy, y if op.saved == "y" else x, **op.params)
        assert_close(dx, tdx.numpy(), np.float32, what=f"{op!r} backward vs torch float32")


def test_torch_cpu_tensors_in_and_out():
    torch = pytest.importorskip("torch")
    t = torch.linspace(-3, 3, 11, dtype=torch.float64)
    y = gpunn.silu(t)
    assert isinstance(y, torch.Tensor) and y.dtype == torch.float64
    assert_close(y.numpy(), torch.nn.functional.silu(t).numpy(), np.float64)
    dx, dw = gpunn.prelu_backward(torch.ones(2, 3), -torch.ones(2, 3), torch.full((3,), 0.25))
    assert isinstance(dx, torch.Tensor) and isinstance(dw, torch.Tensor) and dw.shape == (3,)
    assert_close(dw.numpy(), [-2.0, -2.0, -2.0], np.float32)


# ---- PReLU -----------------------------------------------------------------------------------------------------------
def ref_prelu(x, w):
    a = _channel_weights(x.shape, w)
    return np.where(x > 0, x, a * x)


def ref_prelu_backward(dy, x, w):
    a = _channel_weights(x.shape, w)
    dx = np.where(x > 0, dy, a * dy)
    contrib = np.where(x > 0, 0.0, x * dy)
    if w.size == 1:
        return dx, np.array([contrib.sum()]).reshape(w.shape)
    axes = tuple(i for i in range(x.ndim) if i != 1)
    return dx, contrib.sum(axis=axes)


def _channel_weights(shape, w):
    """w broadcast over axis 1 (one channel for ndim < 2)."""
    w = np.asarray(w, np.float64).reshape(-1)
    if w.size == 1:
        return w[0]
    return w.reshape((1, -1) + (1,) * (len(shape) - 2))


PRELU_SHAPES = [(0,), (1,), (31,), (4, 0, 3), (13, 6), (3, 5, 17), (2, 3, 4, 5), (1000,)]


# (shape, per_channel): one shared slope for every shape; C slopes where there is a channel axis (ndim >= 2)
PRELU_CASES = [(s, False) for s in PRELU_SHAPES] + [(s, True) for s in PRELU_SHAPES if len(s) >= 2]


@pytest.mark.parametrize("shape, per_channel", PRELU_CASES,
                         ids=[f"{'x'.join(map(str, s))}-{'C' if p else 'shared'}" for s, p in PRELU_CASES])
@pytest.mark.parametrize("dtype", DTYPES)
def test_prelu_matches_reference(dtype, shape, per_channel, mode, rng):
    c = shape[1] if len(shape) >= 2 else 1
    w = rng.uniform(-0.5, 1.0, c if per_channel else 1).astype(dtype)
    x, dy = _random(rng, shape, dtype), _random(rng, shape, dtype, 1.0)
    out = poisoned(shape, dtype, mode)
    assert gpunn.prelu(put(x, mode), put(w, mode), out=out) is out
    assert_close(get(out), ref_prelu(x.astype(np.float64), w), dtype, what="prelu forward")
    dx_out, dw_out = poisoned(shape, dtype, mode), poisoned(w.shape, dtype, mode)
    dx, dw = gpunn.prelu_backward(put(dy, mode), put(x, mode), put(w, mode), out=(dx_out, dw_out))
    assert dx is dx_out and dw is dw_out
    dx_ref, dw_ref = ref_prelu_backward(dy.astype(np.float64), x.astype(np.float64), w)
    assert_close(get(dx), dx_ref, dtype, what="prelu dx")
    # dweight is a sum over up to 1000 terms of size ~3: float32 rounds the float64 total once (rtol covers it)
    assert_close(get(dw), dw_ref, dtype, atol=TOL[dtype][0] * 10, what="prelu dweight")


def test_prelu_dweight_is_deterministic_and_accurate(mode, rng):
    # many terms with cancellation: a float64 accumulation rounds once; the same input gives the same bits
    x = _random(rng, (3, 4, 170), np.float32)
    dy = _random(rng, x.shape, np.float32, 1.0)
    w = np.full(4, 0.25, np.float32)
    results = [get(gpunn.prelu_backward(put(dy, mode), put(x, mode), put(w, mode))[1]) for _ in range(2)]
    assert np.array_equal(results[0].view(np.uint32), results[1].view(np.uint32))
    exact = ref_prelu_backward(dy.astype(np.float64), x.astype(np.float64), w)[1]
    assert np.array_equal(results[0], exact.astype(np.float32))  # correctly rounded float64 sum


# CPU tilings (gpunn/activations/prelu.py, _cpu_plan): several row blocks, several channel blocks (C > 4096), inner
# runs longer than one 4096-element task, short inner runs; sizes too large for the simulator, so CPU only
PRELU_CPU_TILING_SHAPES = [(2000, 20), (40, 5000), (5, 3, 9000), (130, 6, 50), (3, 200, 30)]


@pytest.mark.parametrize("shape", PRELU_CPU_TILING_SHAPES, ids=["x".join(map(str, s)) for s in PRELU_CPU_TILING_SHAPES])
def test_prelu_cpu_tilings(shape, rng):
    import numba

    dtype = np.float32
    w = rng.uniform(-0.5, 1.0, shape[1]).astype(dtype)
    x, dy = _random(rng, shape, dtype), _random(rng, shape, dtype, 1.0)
    x64, dy64 = x.astype(np.float64), dy.astype(np.float64)
    assert_close(gpunn.prelu(x, w, out=poisoned(shape, dtype, "cpu")), ref_prelu(x64, w), dtype, what="prelu forward")
    dx_ref, dw_ref = ref_prelu_backward(dy64, x64, w)
    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        dx1, dw1 = gpunn.prelu_backward(dy, x, w, out=poisoned(shape, dtype, "cpu"))
    finally:
        numba.set_num_threads(threads)
    alias = dy.copy()
    dx, dw = gpunn.prelu_backward(alias, x, w, out=alias)  # dx written over dy
    assert dx is alias
    assert_close(dx, dx_ref, dtype, what="prelu dx")
    assert_close(dw, dw_ref, dtype, atol=TOL[dtype][0] * 10, what="prelu dweight")
    assert np.array_equal(dx1, dx) and np.array_equal(dw1.view(np.uint32), dw.view(np.uint32))  # any thread count


def test_prelu_out_forms(mode, rng):
    x, dy = _random(rng, (5, 3), np.float64), _random(rng, (5, 3), np.float64, 1.0)
    w = np.array([0.1, 0.2, 0.3])
    dx_ref, dw_ref = ref_prelu_backward(dy, x, w)
    # out as dx only
    dx_out = poisoned((5, 3), np.float64, mode)
    dx, dw = gpunn.prelu_backward(put(dy, mode), put(x, mode), put(w, mode), out=dx_out)
    assert dx is dx_out
    assert_close(get(dx), dx_ref)
    assert_close(get(dw), dw_ref)
    # dweight into weight itself, dx into dy: the slopes are read before dweight is written
    wd, dyd = put(w.copy(), mode), put(dy.copy(), mode)
    dx, dw = gpunn.prelu_backward(dyd, put(x, mode), wd, out=(dyd, wd))
    assert dx is dyd and dw is wd
    assert_close(get(dx), dx_ref)
    assert_close(get(dw), dw_ref)
    # forward in place, with a 0-d weight
    xd = put(x.copy(), mode)
    assert gpunn.prelu(xd, put(np.array(0.5), mode), out=xd) is xd
    assert_close(get(xd), np.where(x > 0, x, 0.5 * x))
    # default: new arrays of the inputs' kind, dweight of weight's shape
    dx, dw = gpunn.prelu_backward(put(dy, mode), put(x, mode), put(w[:1], mode))
    assert get(dw).shape == (1,)
    assert_close(get(dw), ref_prelu_backward(dy, x, w[:1])[1])


def test_prelu_nan(mode):
    x = np.array([[np.nan, 1.0], [-2.0, -1.0]])
    w = np.array([0.5, 0.25])
    y = get(gpunn.prelu(put(x, mode), put(w, mode)))
    assert np.isnan(y[0, 0]) and y[1, 0] == -1.0
    dx, dw = (get(r) for r in gpunn.prelu_backward(put(np.ones_like(x), mode), put(x, mode), put(w, mode)))
    assert dx[0, 0] == 0.5 and np.isnan(dw[0]) and dw[1] == -1.0  # PyTorch's mask: x > 0 fails for NaN


def test_prelu_bad_inputs(mode):
    x = put(np.ones((2, 3), np.float32), mode)
    w3 = put(np.ones(3, np.float32), mode)
    with pytest.raises(ValueError, match=r"weight must have 1 entry or C = 3 entries"):
        gpunn.prelu(x, put(np.ones(2, np.float32), mode))
    with pytest.raises(ValueError, match=r"weight must have 1 entry or C = 1 entries"):
        gpunn.prelu(put(np.ones(5, np.float32), mode), put(np.ones(5, np.float32), mode))
    with pytest.raises(ValueError, match="weight must be a scalar or 1-D"):
        gpunn.prelu(x, put(np.ones((1, 3), np.float32), mode))
    with pytest.raises(TypeError, match="weight has dtype float64 but x has float32"):
        gpunn.prelu(x, put(np.ones(3), mode))
    with pytest.raises(TypeError, match="x must be float32 or float64"):
        gpunn.prelu(put(np.ones((2, 3), np.int32), mode), w3)
    with pytest.raises(ValueError, match="dy has shape"):
        gpunn.prelu_backward(put(np.ones((3, 3), np.float32), mode), x, w3)
    with pytest.raises(ValueError, match="out must be an array .* or a pair"):
        gpunn.prelu_backward(x, x, w3, out=(None, None, None))
    with pytest.raises(ValueError, match="dweight must have shape"):
        gpunn.prelu_backward(x, x, w3, out=(None, put(np.ones(1, np.float32), mode)))
    with pytest.raises(TypeError, match="dx must have dtype float32"):
        gpunn.prelu_backward(x, x, w3, out=put(np.ones((2, 3)), mode))
    if mode == "device":
        with pytest.raises(TypeError, match="weight is a host array"):
            gpunn.prelu(x, np.ones(3, np.float32))


@pytest.mark.parametrize("dtype", DTYPES)
def test_prelu_torch_parity(dtype, mode, rng):
    torch = pytest.importorskip("torch")
    for shape, c in [((4, 3, 5), 3), ((4, 3, 5), 1), ((6,), 1), ((2, 7), 7)]:
        x, dy = _random(rng, shape, dtype), _random(rng, shape, dtype, 1.0)
        w = rng.uniform(0, 0.5, c).astype(dtype)
        tx, tw = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
        ty = torch.nn.functional.prelu(tx, tw)
        tdx, tdw = torch.autograd.grad(ty, (tx, tw), torch.tensor(dy))
        assert_close(get(gpunn.prelu(put(x, mode), put(w, mode))), ty.detach().numpy(), dtype)
        dx, dw = gpunn.prelu_backward(put(dy, mode), put(x, mode), put(w, mode))
        assert_close(get(dx), tdx.numpy(), dtype)
        assert_close(get(dw), tdw.numpy(), dtype, atol=1e-5)  # PyTorch sums in float32


# ---- the float32 math of _vecmath ------------------------------------------------------------------------------------
def _ulps(got, ref):
    ref32 = ref.astype(np.float32)
    return np.abs(got.astype(np.float64) - ref) / np.spacing(np.abs(ref32)).astype(np.float64)


def test_vecmath_float32_accuracy(rng):
    """exp, exp_neg, expm1, tanh, log1p on [0, 1] and erfcx within a few ulp over their whole ranges, specials exact."""
    from numba import njit

    vm = importlib.import_module("gpunn.activations._vecmath")

    @njit
    def run(x, out, k):
        for i in range(x.size):
            v = x[i]
            if k == 0:
                out[i] = vm.exp(v)
            elif k == 1:
                out[i] = vm.expm1(v)
            elif k == 2:
                out[i] = vm.tanh(v)
            elif k == 3:
                out[i] = vm.log1p_unit(v)
            elif k == 4:
                out[i] = vm.erfcx_clamped(v)
            else:
                out[i] = vm.exp_neg(v)

    special = np.array([-np.inf, np.inf, np.nan, 0.0, -0.0], np.float32)
    erfcx = np.vectorize(lambda a: math.exp(a * a) * math.erfc(a) if a < 26 else math.nan, otypes=[np.float64])
    cases = [
        (0, np.concatenate([np.linspace(-103.9, 88.7, 50001), rng.uniform(-2, 2, 5000)]), np.exp, 2.0),
        (1, np.concatenate([np.linspace(-30, 30, 20001), rng.uniform(-1, 1, 5000), np.geomspace(1e-30, 1, 500),
                            -np.geomspace(1e-30, 1, 500)]), np.expm1, 3.0),
        (2, np.concatenate([np.linspace(-12, 12, 20001), np.geomspace(1e-30, 1, 500), -np.geomspace(1e-30, 1, 500)]),
         np.tanh, 3.0),
        (3, np.concatenate([np.linspace(0, 1, 20001), np.geomspace(1e-38, 1, 500)]), np.log1p, 3.0),
        (4, np.linspace(0, 11, 20001), erfcx, 8.0),
        (5, np.concatenate([np.linspace(-103.9, 0, 50001), -rng.uniform(0, 2, 5000)]), np.exp, 2.0),
    ]
    for k, x, f, bound in cases:
        x = x.astype(np.float32)
        out = np.empty_like(x)
        run(x, out, k)
        ref = f(x.astype(np.float64))
        normal = np.abs(ref) >= np.finfo(np.float32).tiny
        worst = _ulps(out[normal], ref[normal]).max()
        assert worst <= bound, f"function {k}: {worst:.2f} ulp"
        sub = ~normal & np.isfinite(ref)  # subnormal results: within one subnormal step or so
        assert (np.abs(out[sub] - ref[sub]) <= 2 * 1.5e-45).all()
    out = np.empty_like(special)
    run(special, out, 0)
    assert np.array_equal(out, [0, np.inf, np.nan, 1, 1], equal_nan=True)
    run(special, out, 1)
    assert np.array_equal(out, [-1, np.inf, np.nan, 0, 0], equal_nan=True)
    run(special, out, 2)
    assert np.array_equal(out, [-1, 1, np.nan, 0, 0], equal_nan=True)
    run(special[[0, 2, 3, 4]], out[:4], 5)
    assert np.array_equal(out[:4], [0, np.nan, 1, 1], equal_nan=True)


# ---- docstring examples stay true ------------------------------------------------------------------------------------
@pytest.mark.parametrize("module", ["relu", "leaky_relu", "prelu", "sigmoid", "tanh", "gelu", "silu", "elu",
                                    "softplus"])
def test_docstring_examples(module):
    mod = importlib.import_module(f"gpunn.activations.{module}")
    result = doctest.testmod(mod, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
