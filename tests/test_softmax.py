"""softmax, log_softmax and their backward along any axis: against naive float64 references written from the formulas
below, on both paths (CPU, and the CUDA kernels in the simulator), and against PyTorch.

    softmax      y = exp(x - max) / sum(exp(x - max))        dx = y * (dy - sum(dy * y))
    log_softmax  y = x - max - log(sum(exp(x - max)))         dx = dy - exp(y) * sum(dy)

The device cases cover both kernels: a block per row (last axis with n >= 32; the simulator's block is 32 threads, so
n = 33 and 1027 leave partial blocks and rows longer than a block) and a thread per column (axis not last, or n < 32).
"""

import doctest
import sys

import numpy as np
import pytest

import gpunn
from helpers import TOL, assert_close, get, poisoned, put

OPS = ["softmax", "log_softmax"]
DTYPES = [np.float32, np.float64]
INF = np.inf


# ---- naive float64 references ----------------------------------------------------------------------------------------
def ref_softmax(x, axis):
    x = np.asarray(x, np.float64)
    if x.size == 0:
        return x.copy()
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        m = np.max(x, axis=axis, keepdims=True)
        e = np.exp(x - m)
        return e / np.sum(e, axis=axis, keepdims=True)


def ref_log_softmax(x, axis):
    x = np.asarray(x, np.float64)
    if x.size == 0:
        return x.copy()
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        m = np.max(x, axis=axis, keepdims=True)
        return x - m - np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True))


def ref_softmax_backward(dy, y, axis):
    dy, y = np.asarray(dy, np.float64), np.asarray(y, np.float64)
    return y * (dy - np.sum(dy * y, axis=axis, keepdims=True))


def ref_log_softmax_backward(dy, y, axis):
    dy, y = np.asarray(dy, np.float64), np.asarray(y, np.float64)
    return dy - np.exp(y) * np.sum(dy, axis=axis, keepdims=True)


REF = {"softmax": ref_softmax, "log_softmax": ref_log_softmax}
REF_BACKWARD = {"softmax": ref_softmax_backward, "log_softmax": ref_log_softmax_backward}


def forward(op):
    return getattr(gpunn, op)


def backward(op):
    return getattr(gpunn, op + "_backward")


# (shape, axis): 1-D/2-D/3-D, every axis, sizes 0 and 1, odd sizes, rows shorter and longer than a block. The
# simulator pays for every barrier of the block-per-row kernel (7 per row), so device cases keep few such rows.
CASES = [
    ((0,), 0), ((1,), 0), ((1,), -1), ((31,), -1), ((1027,), 0),
    ((3, 33), -1), ((7, 33), 0), ((7, 33), -2), ((40, 5), -1), ((1, 1), 0), ((0, 5), 1), ((5, 0), 1), ((5, 0), 0),
    ((3, 5, 17), 0), ((3, 5, 17), 1), ((3, 5, 17), 2), ((3, 5, 17), -2), ((2, 1, 3), 1), ((2, 3, 0), 1),
    ((0,) * 3, -1),
]
# 0-d arrays: CPU only (gpunn.to_device makes a 0-d array 1-d); many, long or wide rows: too slow for the simulator
CPU_ONLY_CASES = [((), 0), ((), -1), ((7, 33), -1), ((9, 40), 1), ((2, 3, 35), -1), ((2, 1027), -1),
                  ((1, 262144), -1), ((3, 1000, 7), 1), ((2, 600, 530), 0), ((5, 4097), 1), ((8193, 3), 0)]


def cases_for(mode):
    return CASES + (CPU_ONLY_CASES if mode == "cpu" else [])


def logits(rng, shape, dtype, scale=3.0):
    return np.asarray(scale * rng.standard_normal(shape), dtype=dtype)  # an array also for shape ()


# ---- forward and backward against the references ---------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", OPS)
def test_forward_matches_reference(op, dtype, mode, rng):
    for shape, axis in cases_for(mode):
        x = logits(rng, shape, dtype)
        out = poisoned(shape, dtype, mode)
        y = forward(op)(put(x, mode), axis, out=out)
        assert y is out
        assert_close(get(y), REF[op](x, axis), dtype, what=f"{op} {shape} axis={axis}")
        if axis == -1:  # default out, default axis
            assert_close(get(forward(op)(put(x, mode))), REF[op](x, -1), dtype, what=f"{op} {shape} default axis")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", OPS)
def test_backward_matches_reference(op, dtype, mode, rng):
    for shape, axis in cases_for(mode):
        y = np.asarray(REF[op](logits(rng, shape, dtype), axis), dtype)  # a genuine forward output
        dy = np.asarray(rng.standard_normal(shape), dtype=dtype)
        out = poisoned(shape, dtype, mode)
        dx = backward(op)(put(dy, mode), put(y, mode), axis, out=out)
        assert dx is out
        assert_close(get(dx), REF_BACKWARD[op](dy, y, axis), dtype, what=f"{op}_backward {shape} axis={axis}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", OPS)
def test_output_keeps_array_kind_and_sums_to_one(op, dtype, mode, rng):
    x = logits(rng, (3, 45), dtype)
    y = forward(op)(put(x, mode), 1)
    assert (type(y) is np.ndarray) == (mode == "cpu")
    p = get(y).astype(np.float64)
    if op == "log_softmax":
        p = np.exp(p)
    assert_close(p.sum(axis=1), np.ones(3), atol=64 * TOL[dtype][1], rtol=0)  # 45 terms, each rounded once


# ---- numerics: extreme logits, -inf, +inf, NaN -----------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", OPS)
def test_extreme_logits_stay_finite(op, dtype, mode, rng):
    for shape, axis in [((3, 37), -1), ((5, 37), 0), ((4, 9), 1)]:
        x = (rng.choice([-1e4, 0.0, 1e4], size=shape) + rng.standard_normal(shape)).astype(dtype)
        y = get(forward(op)(put(x, mode), axis))
        assert np.isfinite(y).all(), f"{op} of +-1e4 logits is not finite"
        assert_close(y, REF[op](x, axis), dtype, what=f"{op} +-1e4 {shape} axis={axis}")
    # a single huge value dominates exactly
    x = np.array([[1e4, -1e4, 0.0]], dtype)
    y = get(forward(op)(put(x, mode)))
    expected = [[1.0, 0.0, 0.0]] if op == "softmax" else [[0.0, -2e4, -1e4]]
    assert_close(y, expected, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", OPS)
def test_every_row_maximum_position_and_order(op, dtype, mode, rng):
    """The online (max, sum) pair rescales each time a thread meets a new maximum: ascending rows rescale at every
    element, descending rows never; the max sits first, last, or in the tail of a partial block."""
    n = 70
    base = np.sort(logits(rng, n, dtype, scale=10.0))
    rows = [base, base[::-1], np.roll(base, 5), np.roll(base, 40), rng.permutation(base)]
    x = np.stack(rows).astype(dtype)
    for axis, arr in ((-1, x), (0, np.ascontiguousarray(x.T))):
        assert_close(get(forward(op)(put(arr, mode), axis)), REF[op](arr, axis), dtype, what=f"{op} axis={axis}")


@pytest.mark.parametrize("dtype", DTYPES)
def test_exp_over_its_whole_range(dtype, mode):
    """Rows [0, d] for d from -110 to 0 (through float32's denormals and underflow): y[1] = exp(d) / (1 + exp(d)).
    And exp(y) in log_softmax_backward for any y (up to float32's overflow): with one element per row and dy = 1,
    dx = 1 - exp(y)."""
    d = np.linspace(-110.0, 0.0, 1500 if mode == "cpu" else 300)
    x = np.stack([np.zeros_like(d), d], axis=1).astype(dtype)
    for op in OPS:
        assert_close(get(forward(op)(put(x, mode))), REF[op](x, -1), dtype, what=f"{op} [0, d]")
    top = 88.0 if dtype == np.float32 else 709.0
    y = np.concatenate([np.linspace(-110.0, top, 1500 if mode == "cpu" else 300), [-800.0, top]])[:, None].astype(dtype)
    dx = get(gpunn.log_softmax_backward(put(np.ones_like(y), mode), put(y, mode)))
    assert_close(dx, 1.0 - np.exp(y.astype(np.float64)), dtype, what="1 - exp(y)")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", OPS)
def test_special_values_match_torch(op, dtype, mode):
    """A row of all -inf gives NaN (PyTorch does); -inf entries give 0 (softmax) and -inf (log_softmax) in an
    otherwise finite row; +inf or NaN anywhere in a row makes the row NaN."""
    torch = pytest.importorskip("torch")
    nan = np.nan
    short = [[-INF, -INF, -INF], [1.0, -INF, 2.0], [1.0, INF, 2.0], [nan, 1.0, 2.0], [INF, -INF, 0.0],
             [-INF, -INF, 3.0], [-INF, nan, -INF], [INF, INF, 1.0], [-1e30, -INF, -1e30]]
    for rows in (short, [np.resize(np.array(r), 40) for r in short]):  # n = 3: thread per row; n = 40: block per row
        x = np.array(rows, dtype)
        expected = getattr(torch, op)(torch.from_numpy(x), -1).numpy()
        for axis, arr, want in ((-1, x, expected), (0, np.ascontiguousarray(x.T), expected.T)):
            y = get(forward(op)(put(arr, mode), axis))
            assert np.array_equal(np.isnan(y), np.isnan(want)), f"{op}: NaN pattern {np.isnan(y)} != torch {np.isnan(want)}"
            assert_close(y, want, dtype, atol=4 * TOL[dtype][0], rtol=4 * TOL[dtype][1],  # torch rounds in its own order
                         what=f"{op} special values axis={axis}")
            assert_close(y, REF[op](arr, axis), dtype, what=f"{op} special values vs reference axis={axis}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", OPS)
def test_backward_through_masked_entries(op, dtype, mode, rng):
    """A -inf logit has softmax 0 / log_softmax -inf: its gradient is 0 (softmax) or dy (log_softmax), never NaN."""
    x = logits(rng, (3, 36), dtype)
    x[:, ::3] = -INF
    y = REF[op](x, -1).astype(dtype)
    dy = rng.standard_normal(x.shape).astype(dtype)
    dx = get(backward(op)(put(dy, mode), put(y, mode)))
    assert np.isfinite(dx).all()
    assert_close(dx, REF_BACKWARD[op](dy, y, -1), dtype)
    assert_close(dx[:, ::3], 0 * dy[:, ::3] if op == "softmax" else dy[:, ::3], dtype)


# ---- out=, aliasing, non-contiguous arrays ---------------------------------------------------------------------------
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("shape,axis", [((3, 40), -1), ((6, 40), 0), ((3, 4, 5), 1)])
def test_out_may_alias_the_input(op, shape, axis, mode, rng):
    dtype = np.float32
    x = logits(rng, shape, dtype)
    xd = put(x.copy(), mode)
    y = forward(op)(xd, axis, out=xd)
    assert y is xd
    assert_close(get(xd), REF[op](x, axis), dtype, what="forward in place")
    y = get(y)
    for alias in ("dy", "y"):
        dy = rng.standard_normal(shape).astype(dtype)
        dyd, yd = put(dy.copy(), mode), put(y.copy(), mode)  # on the CPU put() hands over the array itself
        target = dyd if alias == "dy" else yd
        dx = backward(op)(dyd, yd, axis, out=target)
        assert dx is target
        assert_close(get(dx), REF_BACKWARD[op](dy, y, axis), dtype, what=f"backward out={alias}")


@pytest.mark.parametrize("op", OPS)
def test_noncontiguous_inputs(op, mode, rng):
    dtype = np.float64
    big = logits(rng, (3, 4, 70), dtype)
    views = [(lambda a: a[:, ::2, 1::2], -1), (lambda a: a[::2, :, ::7], 1), (lambda a: a[1].T, -1),
             (lambda a: a[:, 3, ::2], 0)]
    for view, axis in views:
        x = view(big)
        assert not x.flags.c_contiguous
        assert_close(get(forward(op)(view(put(big, mode)), axis)), REF[op](x, axis), dtype, what=f"{op} view")
        dy_big = rng.standard_normal(big.shape)
        y = REF[op](x, axis)
        y_big = np.zeros_like(big)
        view(y_big)[...] = y
        dx = backward(op)(view(put(dy_big, mode)), view(put(y_big, mode)), axis)
        dy = view(dy_big)
        assert_close(get(dx), REF_BACKWARD[op](dy, y, axis), dtype, what=f"{op}_backward view")


@pytest.mark.parametrize("op", OPS)
def test_noncontiguous_host_out_is_filled(op, rng):
    x = logits(rng, (5, 9), np.float32)
    holder = np.full((5, 18), np.nan, np.float32)
    out = holder[:, ::2]
    y = forward(op)(x, 1, out=out)
    assert y is out
    assert_close(holder[:, ::2], REF[op](x, 1), np.float32)
    assert np.isnan(holder[:, 1::2]).all(), "wrote outside the out view"
    dx = backward(op)(x, x, 0, out=out)  # any y will do for the write check
    assert_close(dx, REF_BACKWARD[op](x, x, 0), np.float32, atol=1e-5)  # exp(y) up to ~e^10 scales the rounding


# ---- bad input --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("op", OPS)
def test_bad_arguments_are_named(op, mode):
    x = put(np.zeros((2, 3), np.float32), mode)
    f, b = forward(op), backward(op)
    for axis in (2, -3, 7):
        with pytest.raises(ValueError, match=r"axis .*out of range"):
            f(x, axis)
        with pytest.raises(ValueError, match=r"axis .*out of range"):
            b(x, x, axis)
    with pytest.raises(ValueError, match="axis"):
        f(put(np.ones((), np.float32), mode), 1)
    for axis in (1.0, None, True, "1"):
        with pytest.raises(TypeError, match="axis"):
            f(x, axis)
    with pytest.raises(TypeError, match="x must be float32 or float64"):
        f(put(np.zeros((2, 3), np.int32), mode))
    with pytest.raises(TypeError, match="x must be an array"):
        f([[1.0, 2.0]])
    with pytest.raises(ValueError, match="dy has shape"):
        b(put(np.zeros((3, 2), np.float32), mode), x)
    with pytest.raises(TypeError, match="y has dtype float64"):
        b(x, put(np.zeros((2, 3), np.float64), mode))
    with pytest.raises(ValueError, match="out must have shape"):
        f(x, out=put(np.zeros((3, 2), np.float32), mode))
    with pytest.raises(TypeError, match="out must have dtype float32"):
        f(x, out=put(np.zeros((2, 3), np.float64), mode))


def test_host_and_device_do_not_mix():
    if gpunn.mode() == "cpu":
        pytest.skip("no device")
    x = np.zeros((2, 3), np.float32)
    with pytest.raises(TypeError, match="y is a device array"):
        gpunn.softmax_backward(x, gpunn.to_device(x))
    with pytest.raises(TypeError, match="out is a device array"):
        gpunn.log_softmax(x, out=gpunn.to_device(x))


# ---- PyTorch parity ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", OPS)
def test_matches_torch_forward_and_autograd(op, dtype, mode, rng):
    """torch.softmax / torch.log_softmax and their autograd gradient, computed in float64 on the same inputs."""
    torch = pytest.importorskip("torch")
    tf = getattr(torch, op)
    for shape, axis in [((3, 50), -1), ((8, 50), 0), ((3, 4, 6), 1), ((11,), 0), ((2, 3, 4, 5), 2)]:
        x = logits(rng, shape, dtype)
        dy = rng.standard_normal(shape).astype(dtype)
        t = torch.tensor(x, dtype=torch.float64, requires_grad=True)
        ty = tf(t, axis)
        ty.backward(torch.from_numpy(dy.astype(np.float64)))
        y = forward(op)(put(x, mode), axis)
        assert_close(get(y), ty.detach().numpy(), dtype, what=f"{op} vs torch {shape} axis={axis}")
        dx = backward(op)(put(dy, mode), y, axis)
        # dx is computed from our rounded y; the float32 y rounding (1 ulp) moves dx by about |dy| * 1 ulp
        assert_close(get(dx), t.grad.numpy(), dtype, atol=4 * TOL[dtype][0], what=f"{op} grad vs torch {shape}")


@pytest.mark.parametrize("op", OPS)
def test_torch_cpu_tensors_in_and_out(op, rng):
    torch = pytest.importorskip("torch")
    x = torch.from_numpy(logits(rng, (4, 7), np.float32))
    y = forward(op)(x, 0)
    assert isinstance(y, torch.Tensor) and y.dtype == torch.float32
    assert_close(y.numpy(), getattr(torch, op)(x.double(), 0).numpy(), np.float32)


# ---- determinism and documentation -------------------------------------------------------------------------------------
def test_device_results_are_bitwise_repeatable(rng):
    if gpunn.mode() == "cpu":
        pytest.skip("no device")
    x = gpunn.to_device(logits(rng, (3, 200), np.float32))
    dy = gpunn.to_device(rng.standard_normal((3, 200)).astype(np.float32))
    for op in OPS:
        a = get(forward(op)(x))
        assert np.array_equal(a, get(forward(op)(x)))
        y = forward(op)(x)
        assert np.array_equal(get(backward(op)(dy, y)), get(backward(op)(dy, y)))


def test_docstring_examples_run():
    module = sys.modules["gpunn.activations.softmax"]
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 4 and result.failed == 0


def test_every_kernel_is_registered_for_both_dtypes():
    from gpunn import _registry

    names = {k.name: k for k in _registry.KERNELS if "softmax" in k.name}
    for op in OPS:
        for direction in ("", "_backward"):
            for part in ("rows[warp]", "rows[block]", "chunk_stats", "chunk_emit", "columns"):
                for dt in ("float32", "float64"):
                    spec = names[f"{op}{direction}_{part}[{dt}]"]
                    assert spec.signature.startswith(f"void({dt}[::1], ")
