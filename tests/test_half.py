"""float16 and bfloat16 inputs (issue 13 item 1): the elementwise activations and the pointwise losses.

Each case rounds its random inputs to the half dtype first, then compares gpunn's result with a float64 reference
computed from those rounded inputs (the formulas of tests/test_activations.py and tests/test_losses_pointwise.py,
never gpunn's code) and with PyTorch on the same inputs, both within PyTorch's own tolerances for the dtype
(torch.testing.assert_close's defaults). Both paths run: the CPU loops and the device kernels (the simulator without
a GPU). bfloat16 NumPy arrays come from ml_dtypes (skipped without it); PyTorch CPU tensors go in and come out.
"""

import math

import numpy as np
import pytest

import gpunn
from helpers import assert_close, get, put
from test_activations import OPS
from test_losses_pointwise import ref_bce, ref_huber, ref_hinge, ref_l1, ref_mse, ref_smooth_l1

ml_dtypes = pytest.importorskip("ml_dtypes")
BF16 = np.dtype(ml_dtypes.bfloat16)
F16 = np.dtype(np.float16)
HALVES = [F16, BF16]
HALF_IDS = ["float16", "bfloat16"]
# (atol, rtol): torch.testing.assert_close's defaults for the dtype (PyTorch's OpInfo tolerances)
TOL = {F16: (1e-5, 1e-3), BF16: (1e-5, 1.6e-2)}
# CPU: empty, one, odd and not a multiple of a 128-bit vector (8 halves) or a block. The device sizes stay small: the
# simulator runs every thread as Python. 37 = a 16-byte head (when misaligned), four 8-lane vectors and a tail.
SIZES = {"cpu": [0, 1, 1027], "device": [0, 1, 37]}


def _half(values, dtype):
    """``values`` rounded to the half dtype (the inputs every check starts from)."""
    with np.errstate(over="ignore"):
        return np.asarray(values, np.float64).astype(np.float32).astype(dtype)


def _f64(x):
    return np.asarray(get(x)).astype(np.float64)


def _poisoned(shape, dtype, mode):
    """An ``out`` full of NaN, so an element the kernel forgets shows up."""
    return put(np.full(shape, np.nan, np.float32).astype(dtype), mode)


def _check(actual, expected, dtype, what):
    atol, rtol = TOL[dtype]
    got = np.asarray(get(actual))
    assert got.dtype == dtype, f"{what}: dtype {got.dtype} != {dtype}"
    assert_close(got.astype(np.float64), expected, atol=atol, rtol=rtol, what=what)


# ---- activations -----------------------------------------------------------------------------------------------------
ACT_IDS = [repr(op) for op in OPS]


def _saved(op, x64, dtype):
    """The backward's saved operand as the caller has it: x, or the forward output y rounded to ``dtype``."""
    if op.saved == "x":
        return x64
    with np.errstate(all="ignore"):
        return _half(op.ref_forward(x64, **op.params), dtype).astype(np.float64)


@pytest.mark.parametrize("dtype", HALVES, ids=HALF_IDS)
@pytest.mark.parametrize("op", OPS, ids=ACT_IDS)
def test_activation_matches_float64_reference(op, dtype, mode, rng):
    for n in SIZES[mode]:
        x = _half(rng.standard_normal(n) * 3, dtype)
        dy = _half(rng.standard_normal(n), dtype)
        x64 = x.astype(np.float64)
        saved = _half(_saved(op, x64, dtype), dtype)
        out = _poisoned(n, dtype, mode)
        assert op.forward(put(x, mode), **op.params, out=out) is out
        _check(out, op.ref_forward(x64, **op.params), dtype, f"{op!r} forward n={n}")
        dx = _poisoned(n, dtype, mode)
        assert op.backward(put(dy, mode), put(saved, mode), **op.params, out=dx) is dx
        expected = op.ref_backward(dy.astype(np.float64), saved.astype(np.float64), **op.params)
        _check(dx, expected, dtype, f"{op!r} backward n={n}")


def _extremes(dtype):
    """The values where half precision runs out: the largest finite, inf, NaN, subnormals, signed zeros, and the
    tails of exp (float16's range is 65504; bfloat16 shares float32's exponent)."""
    if dtype == F16:
        big = [65504.0, -65504.0, 6e-8, -6e-8, 1e-5, -1e-5, 3e4, -3e4]
    else:
        big = [3e38, -3e38, 1e30, -1e30, 1e-40, -1e-40, 1e4, -1e4]
    return _half(big + [np.inf, -np.inf, np.nan, 0.0, -0.0, 20.0, -20.0, 88.0, -104.0, 1e-3], dtype)


def _torch_forward(op, torch, x):
    return op.torch_forward(torch, torch.nn.functional, x, **op.params)


@pytest.mark.parametrize("dtype", HALVES, ids=HALF_IDS)
@pytest.mark.parametrize("op", OPS, ids=ACT_IDS)
def test_activation_matches_torch(op, dtype, mode, rng):
    """Random values and the extremes, forward and backward, against PyTorch's CPU half kernels (which compute in
    float32 too). NaN must match NaN and inf inf."""
    torch = pytest.importorskip("torch")
    tdt = getattr(torch, dtype.name)
    x = np.concatenate([_extremes(dtype), _half(rng.standard_normal(21) * 4, dtype)])
    dy = _half(rng.standard_normal(x.size), dtype)
    xt = torch.from_numpy(x.astype(np.float32)).to(tdt).requires_grad_()
    yt = _torch_forward(op, torch, xt)
    (dxt,) = torch.autograd.grad(yt, xt, torch.from_numpy(dy.astype(np.float32)).to(tdt))
    y = op.forward(put(x, mode), **op.params)
    saved = x if op.saved == "x" else np.asarray(get(y))
    dx = op.backward(put(dy, mode), put(saved, mode), **op.params)
    atol, rtol = TOL[dtype]
    # The gradient at x = NaN is left out: PyTorch's own CPU half kernels disagree there (elu_backward gives dy for
    # 3 elements, NaN for 39: its vectorised and scalar paths differ); gpunn gives dy as PyTorch's float32 does.
    known = ~np.isnan(x)
    if op.name == "gelu" and op.params.get("approximate") == "tanh":
        # where x * x overflows float32 (bfloat16's extremes) PyTorch's backward is 0 * inf = NaN; gpunn gives the
        # limit, dy or 0
        x32 = x.astype(np.float32)
        huge = np.isfinite(x32) & (np.abs(x32.astype(np.float64)) > math.sqrt(np.finfo(np.float32).max))
        limit = np.where(x32[huge] > 0, dy.astype(np.float32)[huge], 0.0)
        np.testing.assert_array_equal(np.asarray(get(dx)).astype(np.float32)[huge], limit)
        known &= ~huge
    for got, want, keep, what in ((y, yt, slice(None), "forward"), (dx, dxt, known, "backward")):
        got = np.asarray(get(got))
        assert got.dtype == dtype, f"{op!r} {what}: dtype {got.dtype}"
        torch.testing.assert_close(torch.from_numpy(got.astype(np.float32)[keep]), want.detach().float()[keep],
                                   atol=atol, rtol=rtol, equal_nan=True, msg=lambda m: f"{op!r} {what}: {m}")


@pytest.mark.parametrize("dtype", HALVES, ids=HALF_IDS)
def test_torch_cpu_tensors_in_and_out(dtype, rng):
    """A PyTorch float16/bfloat16 CPU tensor in, a tensor of that dtype out (written in place when it is ``out``)."""
    torch = pytest.importorskip("torch")
    tdt = getattr(torch, dtype.name)
    x = torch.from_numpy(rng.standard_normal(101).astype(np.float32)).to(tdt)
    y = gpunn.gelu(x)
    assert isinstance(y, torch.Tensor) and y.dtype == tdt
    torch.testing.assert_close(y, torch.nn.functional.gelu(x))
    out = torch.full_like(x, float("nan"))
    assert gpunn.silu_backward(torch.ones_like(x), x, out=out) is out
    xr = x.detach().clone().requires_grad_()
    (want,) = torch.autograd.grad(torch.nn.functional.silu(xr), xr, torch.ones_like(x))
    torch.testing.assert_close(out, want)
    loss = gpunn.mse_loss(x, torch.zeros_like(x))
    assert isinstance(loss, torch.Tensor) and loss.dtype == tdt and loss.dim() == 0
    torch.testing.assert_close(loss, torch.nn.functional.mse_loss(x, torch.zeros_like(x)))


def test_float16_overflow_in_a_forward_is_inf(mode):
    """A result beyond 65504 rounds to inf, as PyTorch's float16 gives (the math is float32; the store rounds)."""
    x = put(np.array([-40000.0, -65504.0, 1.0], np.float16), mode)
    y = np.asarray(get(gpunn.leaky_relu(x, negative_slope=2.0)))
    assert y.dtype == np.float16 and y.tolist() == [-np.inf, -np.inf, 1.0]
    loss = np.asarray(get(gpunn.mse_loss(x, put(np.array([300.0, 0.0, 1.0], np.float16), mode), reduction="none")))
    assert loss.dtype == np.float16 and np.isinf(loss[:2]).all() and loss[2] == 0


def test_bfloat16_rounds_to_nearest_even(mode):
    """A float32 result is rounded to bfloat16 to nearest, ties to even, as ml_dtypes (and PyTorch) round: x times a
    slope just above 1 lands on and between the ties of every mantissa."""
    x = -(1 + np.arange(128, dtype=np.float32) * np.float32(2**-7))  # every 7-bit mantissa, exact in bfloat16
    xb = put(x.astype(BF16), mode)
    for slope in (1 + 2**-8, 1 + 3 * 2**-8, 1 + 2**-9, 1 + 2**-8 + 2**-20, 1 + 2**-8 - 2**-20):
        y = np.asarray(get(gpunn.leaky_relu(xb, negative_slope=slope)))
        want = (x * np.float32(slope)).astype(BF16)  # the float32 math, then ml_dtypes' rounding
        assert y.view(np.uint16).tolist() == want.view(np.uint16).tolist(), f"slope {slope}"


# ---- pointwise losses ------------------------------------------------------------------------------------------------
LOSSES = [  # gpunn name, reference, options, target kind, PyTorch function (None: no PyTorch counterpart)
    ("mse_loss", ref_mse, {}, "normal", "mse_loss"),
    ("l1_loss", ref_l1, {}, "normal", "l1_loss"),
    ("huber_loss", ref_huber, {"delta": 0.7}, "normal", "huber_loss"),
    ("smooth_l1_loss", ref_smooth_l1, {"beta": 1.0}, "normal", "smooth_l1_loss"),
    ("binary_cross_entropy_with_logits", ref_bce, {}, "prob", "binary_cross_entropy_with_logits"),
    ("hinge_loss", ref_hinge, {"margin": 1.0}, "sign", None),
]
LOSS_IDS = [c[0] for c in LOSSES]


def _loss_inputs(rng, n, dtype, target):
    x = _half(rng.standard_normal(n) * 2, dtype)
    if target == "normal":
        t = rng.standard_normal(n)
    elif target == "prob":
        t = rng.uniform(0, 1, n)
    else:
        t = rng.choice([-1.0, 1.0], n)
    return x, _half(t, dtype)


def _reduce(loss, reduction):
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    return loss.mean() if loss.size else np.nan


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("dtype", HALVES, ids=HALF_IDS)
@pytest.mark.parametrize("case", LOSSES, ids=LOSS_IDS)
def test_loss_matches_float64_reference(case, dtype, reduction, mode, rng):
    name, ref, opts, target, _ = case
    forward, backward, with_grad = (getattr(gpunn, name + s) for s in ("", "_backward", "_with_grad"))
    for n in SIZES[mode]:
        x, t = _loss_inputs(rng, n, dtype, target)
        loss64, dloss64 = ref(x.astype(np.float64), t.astype(np.float64), **opts)
        want_loss = _reduce(loss64, reduction)
        want_dx = dloss64 * ((1.0 / n if n else np.nan) if reduction == "mean" else 1.0)
        xd, td = put(x, mode), put(t, mode)
        what = f"{name} {reduction} n={n}"
        if reduction == "none":
            out = _poisoned(n, dtype, mode)
            assert forward(xd, td, **opts, reduction=reduction, out=out) is out
            _check(out, want_loss, dtype, what + " forward")
        else:
            _check(forward(xd, td, **opts, reduction=reduction), want_loss, dtype, what + " forward")
        dx = _poisoned(n, dtype, mode)
        assert backward(xd, td, **opts, reduction=reduction, out=dx) is dx
        _check(dx, want_dx, dtype, what + " backward")
        loss, dx = with_grad(xd, td, **opts, reduction=reduction)
        _check(loss, want_loss, dtype, what + " with_grad loss")
        _check(dx, want_dx, dtype, what + " with_grad dx")


@pytest.mark.parametrize("dtype", HALVES, ids=HALF_IDS)
def test_loss_upstream_gradient_in_half(dtype, mode, rng):
    """An upstream gradient array in the half dtype: per element for 'none', one element for 'mean'."""
    x, t = _loss_inputs(rng, 37, dtype, "normal")
    dy = _half(rng.standard_normal(37), dtype)
    _, d64 = ref_mse(x.astype(np.float64), t.astype(np.float64))
    dx = gpunn.mse_loss_backward(put(x, mode), put(t, mode), reduction="none", grad=put(dy, mode))
    _check(dx, d64 * dy.astype(np.float64), dtype, "mse none, grad array")
    g = _half([0.5], dtype).reshape(())
    dx = gpunn.mse_loss_backward(put(x, mode), put(t, mode), reduction="mean", grad=put(g, mode))
    _check(dx, d64 * 0.5 / 37, dtype, "mse mean, 0-d grad")


@pytest.mark.parametrize("dtype", HALVES, ids=HALF_IDS)
def test_bce_weights_in_half(dtype, mode, rng):
    x, t = _loss_inputs(rng, (5, 7), dtype, "prob")
    w, pw = _half(rng.uniform(0.5, 2, 7), dtype), _half(rng.uniform(0.5, 2, 7), dtype)
    f64 = [a.astype(np.float64) for a in (x, t, w, pw)]
    loss64, d64 = ref_bce(*f64[:2], weight=f64[2], pos_weight=f64[3])
    got = gpunn.binary_cross_entropy_with_logits_with_grad(put(x, mode), put(t, mode), put(w, mode), put(pw, mode),
                                                          reduction="sum")
    _check(got[0], loss64.sum(), dtype, "bce sum with weights")
    _check(got[1], d64, dtype, "bce dx with weights")


def _as_close_or_closer(got, want, exact, dtype, what):
    """``got`` (gpunn) within PyTorch's tolerances of ``want`` (PyTorch), or, element by element, at least as close
    to the exact float64 value as PyTorch is. PyTorch composes some half losses from half ops ((x - t) rounded to the
    half, then squared and rounded again; BCE's log-sigmoid in steps), so its own error can exceed its tolerance, where
    gpunn computes in float32 and rounds once."""
    atol, rtol = TOL[dtype]
    g = got.detach().double().numpy()
    w = want.detach().double().numpy()
    close = np.abs(g - w) <= atol + rtol * np.abs(w)
    closer = np.abs(g - exact) <= np.abs(w - exact)
    bad = ~(close | closer)
    assert not bad.any(), (f"{what}: {int(bad.sum())} of {bad.size} elements neither within tolerance of PyTorch nor "
                           f"closer to the exact value; first: got {g[bad][:3]}, PyTorch {w[bad][:3]}, "
                           f"exact {np.broadcast_to(exact, g.shape)[bad][:3]}")


@pytest.mark.parametrize("dtype", HALVES, ids=HALF_IDS)
@pytest.mark.parametrize("case", [c for c in LOSSES if c[4]], ids=[c[0] for c in LOSSES if c[4]])
def test_loss_matches_torch(case, dtype, rng):
    """gpunn on PyTorch CPU tensors against PyTorch on the same tensors: the loss (in PyTorch's dtype for the call,
    the input's) and the gradient, for each reduction."""
    torch = pytest.importorskip("torch")
    name, ref, opts, target, torch_name = case
    x, t = _loss_inputs(rng, 1027, dtype, target)
    loss64, dloss64 = ref(x.astype(np.float64), t.astype(np.float64), **opts)
    tdt = getattr(torch, dtype.name)
    xt, tt = (torch.from_numpy(a.astype(np.float32)).to(tdt) for a in (x, t))
    torch_opts = {"beta" if name == "smooth_l1_loss" else "delta": v for v in opts.values()}
    for reduction in ("none", "mean", "sum"):
        xr = xt.clone().requires_grad_()
        want = getattr(torch.nn.functional, torch_name)(xr, tt, **torch_opts, reduction=reduction)
        (want_dx,) = torch.autograd.grad(want, xr, torch.ones_like(want))
        loss, dx = getattr(gpunn, name + "_with_grad")(xt, tt, **opts, reduction=reduction)
        assert isinstance(loss, torch.Tensor) and loss.dtype == want.dtype and loss.shape == want.shape
        assert isinstance(dx, torch.Tensor) and dx.dtype == tdt
        _as_close_or_closer(loss, want, _reduce(loss64, reduction), dtype, f"{name} {reduction} loss")
        scale = 1 / x.size if reduction == "mean" else 1.0
        _as_close_or_closer(dx, want_dx, dloss64 * scale, dtype, f"{name} {reduction} dx")


def test_hinge_labels_are_checked_in_half(mode):
    x = put(np.zeros(3, BF16), mode)
    with pytest.raises(ValueError, match="target must hold only -1 and"):
        gpunn.hinge_loss(x, put(np.array([1, -1, 0.5], BF16), mode), validate=True)
        gpunn.synchronize()


# ---- bad input -------------------------------------------------------------------------------------------------------
def test_a_dtype_mix_is_an_error_naming_the_argument(mode):
    f16, bf16 = put(np.ones(4, F16), mode), put(np.ones(4, BF16), mode)
    with pytest.raises(TypeError, match="x has dtype bfloat16 but dy has float16"):
        gpunn.relu_backward(f16, bf16)
    with pytest.raises(TypeError, match="target has dtype float16 but input has bfloat16"):
        gpunn.mse_loss(bf16, f16)
    with pytest.raises(TypeError, match="out must have dtype float16, got float32"):
        gpunn.relu(f16, out=put(np.ones(4, np.float32), mode))


def test_ops_without_half_say_so(mode):
    """Ops that do not take half yet: a TypeError naming the argument and saying so."""
    from gpunn import optim

    x = put(np.ones((2, 3), F16), mode)
    not_yet = "float16/bfloat16 are not supported by this op yet"
    for call, arg in ((lambda: gpunn.softmax(x), "x"), (lambda: gpunn.log_softmax(x), "x"),
                      (lambda: gpunn.cross_entropy(x, put(np.zeros(2, np.int64), mode)), "logits"),
                      (lambda: gpunn.multi_margin_loss(x, put(np.zeros(2, np.int64), mode)), "logits"),
                      (lambda: gpunn.prelu(x, put(np.ones(1, F16), mode)), "x")):
        with pytest.raises(TypeError, match=f"{arg} must be float32 or float64, got float16: {not_yet}"):
            call()
    with pytest.raises(TypeError, match=r"params\[0\] must be float32 or float64, got bfloat16: .* optimizers yet"):
        optim.Adam([put(np.ones(3, BF16), mode)])


def test_half_kernels_are_registered_with_uint16_storage():
    from gpunn import _registry

    specs = {s.name: s for s in _registry.KERNELS}
    for name in ("relu_forward", "gelu_backward", "mse_loss_with_grad_sum", "hinge_loss_forward"):
        for dt in HALF_IDS:
            spec = specs[f"{name}[{dt}]"]
            assert spec.dtype == dt and "uint16[::1]" in spec.signature and "float64" not in spec.signature.replace(
                "float64[:, ::1]", ""), spec


# ---- the conversions themselves (gpunn/_half.py), over every 16-bit pattern --------------------------------------------
def _convert(fn, values):
    from numba import njit

    @njit
    def run(a, out):
        for i in range(a.size):
            out[i] = fn(a[i])

    out = np.empty(values.size, np.float32 if values.dtype == np.uint16 else np.uint16)
    run(values, out)
    return out


@pytest.mark.parametrize("dtype", HALVES, ids=HALF_IDS)
def test_conversions_match_numpy_and_ml_dtypes(dtype, rng):
    """load: every bit pattern widens exactly (NaN to NaN); store: float32 values (every half and the midpoints
    between neighbours: the ties; random bits; inf, NaN, overflow) round to nearest even as NumPy/ml_dtypes do."""
    from gpunn import _half

    p = _half.precision(dtype)
    bits = np.arange(2**16, dtype=np.uint16)
    wide = _convert(p.load, bits)
    want = bits.view(dtype).astype(np.float32)
    assert np.array_equal(wide, want, equal_nan=True)
    finite = np.sort(want[np.isfinite(want)].astype(np.float64))
    ties = ((finite[:-1] + finite[1:]) / 2).astype(np.float32)  # exact in float32: one more mantissa bit
    noise = rng.integers(0, 2**32, 100_000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    values = np.concatenate([want, ties, noise, np.float32([np.inf, -np.inf, np.nan, 3.4e38, -3.4e38, 65520.0])])
    stored = _convert(p.store, values)
    with np.errstate(over="ignore", invalid="ignore"):
        expected = values.astype(dtype)
    nan = np.isnan(values)
    assert np.isnan(stored.view(dtype)[nan].astype(np.float32)).all()
    assert np.array_equal(stored[~nan], expected.view(np.uint16)[~nan])


@pytest.mark.parametrize("dtype", HALVES, ids=HALF_IDS)
@pytest.mark.parametrize("offset", [0, 1, 7])
def test_device_kernels_at_every_alignment(dtype, offset, rng):
    """x, dy and out start ``offset`` halves past a 16-byte boundary: the kernels' scalar head, 8-lane vectors and
    tail; nothing outside the output is written."""
    if gpunn.mode() == "cpu":
        pytest.skip("no GPU and the simulator is off")
    n = 67
    x = _half(rng.standard_normal(n + 8), dtype)
    dy = _half(rng.standard_normal(n + 8), dtype)
    base_out = put(np.full(n + 8, np.nan, np.float32).astype(dtype), "device")
    xs, dys, out = (a[offset:offset + n] for a in (put(x, "device"), put(dy, "device"), base_out))
    x64, dy64 = x[offset:offset + n].astype(np.float64), dy[offset:offset + n].astype(np.float64)
    gpunn.leaky_relu_backward(dys, xs, 0.25, out=out)
    _check(out, np.where(x64 > 0, dy64, 0.25 * dy64), dtype, "leaky_relu_backward")
    untouched = np.delete(np.asarray(get(base_out)).astype(np.float32), np.arange(offset, offset + n))
    assert np.isnan(untouched).all(), "a kernel wrote outside its array"
