"""multi_margin_loss, multi_margin_loss_backward, multi_margin_loss_with_grad.

Every reduction x p x margin x weights in both modes (NumPy CPU path; device arrays through the CUDA kernels, in the
simulator here), float32 and float64, against a naive float64 reference written below from the formula;
``_with_grad`` against forward + backward (bit-identical); central finite differences in float64; PyTorch parity;
bad targets on both paths with the user's buffers unharmed; bit-identical repeats; rows cut into several chunks.
"""

import importlib

import numpy as np
import pytest

import gpunn
from gpunn import _rowwise
from gpunn.losses.multi_margin import multi_margin_loss, multi_margin_loss_backward, multi_margin_loss_with_grad
from helpers import assert_close, get, poisoned, put, assert_doctests_pass

DTYPES = [np.float32, np.float64]
REDUCTIONS = ["none", "mean", "sum"]
SHAPES = [(1, 1), (1, 4), (31, 3), (7, 33), (3, 45)]



# ---- naive float64 reference, straight from the formula --------------------------------------------------------------
def ref_multi_margin(x, t, p=1, margin=1.0, weight=None, reduction="mean", grad=None):
    """(loss, dx) in float64 by explicit loops: l_n = (1/C) sum_{i != y} w_y max(0, margin - x_y + x_i)^p."""
    x = np.asarray(x, np.float64)
    n_rows, n_cols = x.shape
    w = np.ones(n_cols) if weight is None else np.asarray(weight, np.float64)
    losses = np.zeros(n_rows)
    grads = np.zeros((n_rows, n_cols))
    for n in range(n_rows):
        y = int(t[n])
        for i in range(n_cols):
            if i == y:
                continue
            h = margin - x[n, y] + x[n, i]
            if h > 0:
                losses[n] += w[y] * h**p / n_cols
                d = w[y] * (1.0 if p == 1 else 2.0 * h) / n_cols
                grads[n, i] += d
                grads[n, y] -= d
    if reduction == "none":
        g = np.ones(n_rows) if grad is None else np.asarray(grad, np.float64).reshape(n_rows)
        return losses, grads * g[:, None]
    g = 1.0 if grad is None else float(np.asarray(grad).reshape(-1)[0])
    if reduction == "sum":
        return np.float64(losses.sum()), grads * g
    if n_rows == 0:
        return np.float64(np.nan), grads
    return np.float64(losses.sum() / n_rows), grads * (g / n_rows)


def make_case(rng, shape, dtype, tdtype=np.int64, weighted=False):
    n_rows, n_cols = shape
    x = (rng.standard_normal(shape) * 0.7).astype(dtype)
    t = rng.integers(0, n_cols, n_rows).astype(tdtype)
    w = rng.uniform(0.2, 2.0, n_cols).astype(dtype) if weighted else None
    return x, t, w


def check(mode, x, t, p, margin, w, reduction, grad=None, what="multi_margin"):
    dtype = x.dtype
    wd = put(w, mode) if w is not None else None
    g = put(grad, mode) if isinstance(grad, np.ndarray) else grad
    loss, dx = multi_margin_loss_with_grad(put(x, mode), put(t, mode), p, margin, wd, reduction, grad=g)
    loss_f = multi_margin_loss(put(x, mode), put(t, mode), p, margin, wd, reduction)
    dx_b = multi_margin_loss_backward(put(x, mode), put(t, mode), p, margin, wd, reduction, grad=g)
    ref_loss, ref_dx = ref_multi_margin(x, t, p, margin, w, reduction, grad)
    assert_close(get(loss), ref_loss, dtype, what=f"{what} loss")
    assert_close(get(dx), ref_dx, dtype, what=f"{what} dx")
    assert np.array_equal(get(loss), get(loss_f), equal_nan=True), "with_grad loss != forward"
    assert np.array_equal(get(dx), get(dx_b), equal_nan=True), "with_grad dx != backward"


# ---- values and gradients --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("margin", [1.0, 0.3])
@pytest.mark.parametrize("p", [1, 2])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_matches_reference(mode, reduction, p, margin, weighted, dtype, rng):
    k = REDUCTIONS.index(reduction) + 3 * (p - 1) + 6 * weighted + (margin == 1.0)
    shape = SHAPES[k % len(SHAPES)]
    tdtype = np.int32 if k % 3 == 0 else np.int64
    x, t, w = make_case(rng, shape, dtype, tdtype, weighted)
    check(mode, x, t, p, margin, w, reduction)


@pytest.mark.parametrize("p", [1, 2])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_upstream_gradient(mode, reduction, p, rng):
    x, t, w = make_case(rng, (6, 5), np.float64, weighted=True)
    grad = rng.standard_normal(6) if reduction == "none" else np.array(rng.standard_normal())
    check(mode, x, t, p, 0.8, w, reduction, grad=grad)


@pytest.mark.parametrize("p", [1, 2])
def test_finite_differences(p, rng):
    """gpunn's gradient against central differences of gpunn's loss, float64, away from the hinge's kinks."""
    x, t, w = make_case(rng, (4, 5), np.float64, weighted=True)
    up = rng.standard_normal(4)
    dx = multi_margin_loss_backward(x, t, p, 0.9, w, "none", grad=up)
    h = 1e-6
    fd = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[i] += h
        xm[i] -= h
        fd[i] = np.dot(up, multi_margin_loss(xp, t, p, 0.9, w, "none") - multi_margin_loss(xm, t, p, 0.9, w, "none"))
        fd[i] /= 2 * h
    assert_close(dx, fd, np.float64, atol=1e-7, rtol=1e-6, what="central differences (h = 1e-6)")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("p", [1, 2])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_torch_parity(mode, reduction, p, dtype, rng):
    torch = pytest.importorskip("torch")
    x, t, w = make_case(rng, (9, 6), dtype, weighted=True)
    xt = torch.tensor(x, requires_grad=True)
    ref = torch.nn.functional.multi_margin_loss(xt, torch.tensor(t), p=p, margin=0.6, weight=torch.tensor(w),
                                                reduction=reduction)
    ref.sum().backward()
    loss, dx = multi_margin_loss_with_grad(put(x, mode), put(t, mode), p, 0.6, put(w, mode), reduction)
    assert_close(get(loss), ref.detach().numpy(), dtype, what="loss vs torch")
    assert_close(get(dx), xt.grad.numpy(), dtype, what="dx vs torch")


def test_empty_batch(mode):
    x = np.zeros((0, 3), np.float32)
    t = np.zeros(0, np.int64)
    assert np.isnan(get(multi_margin_loss(put(x, mode), put(t, mode))))
    assert get(multi_margin_loss(put(x, mode), put(t, mode), reduction="sum")) == 0
    assert get(multi_margin_loss_backward(put(x, mode), put(t, mode))).shape == (0, 3)


def test_extreme_and_infinite_logits(mode):
    x = np.array([[1e4, -1e4, 0.5, 1e4], [0.0, -np.inf, 2.0, 1.0], [-np.inf, 0.0, 1.0, 2.0]], np.float32)
    t = np.array([0, 2, 3])
    for p in (1, 2):
        loss, dx = multi_margin_loss_with_grad(put(x, mode), put(t, mode), p, 1.0, None, "none")
        ref_loss, ref_dx = ref_multi_margin(x, t, p, 1.0, None, "none")
        assert np.isfinite(get(loss)).all() and np.isfinite(get(dx)).all()
        assert_close(get(loss), ref_loss, np.float32)
        assert_close(get(dx), ref_dx, np.float32)


# ---- out=, in place, long rows, determinism --------------------------------------------------------------------------
def test_out_and_in_place(mode, rng):
    x, t, w = make_case(rng, (7, 33), np.float32, weighted=True)
    ref_loss, ref_dx = ref_multi_margin(x, t, 2, 0.5, w, "none")
    out = poisoned(7, np.float32, mode)
    assert multi_margin_loss(put(x, mode), put(t, mode), 2, 0.5, put(w, mode), "none", out=out) is out
    assert_close(get(out), ref_loss, np.float32)
    xd = put(x.copy(), mode)
    loss, dx = multi_margin_loss_with_grad(xd, put(t, mode), 2, 0.5, put(w, mode), "none", out=xd)
    assert dx is xd
    assert_close(get(xd), ref_dx, np.float32, what="in-place gradient")
    dout = poisoned((7, 33), np.float32, mode)
    multi_margin_loss_backward(put(x, mode), put(t, mode), 2, 0.5, put(w, mode), "none", out=dout)
    assert_close(get(dout), ref_dx, np.float32)


@pytest.mark.parametrize("dtype", DTYPES)
def test_long_rows_several_chunks(mode, dtype, rng):
    chunk = _rowwise.chunk_length()
    n_cols = 3 * chunk + 5
    x, t, w = make_case(rng, (3, n_cols), dtype, weighted=True)
    x *= 0.02  # most hinge terms active
    t[:] = [n_cols - 1, chunk + 3, 0]
    check(mode, x, t, 1, 1.0, w, "mean", what="long rows p=1")
    check(mode, x, t, 2, 0.5, w, "none", what="long rows p=2")


def test_bit_identical_repeats(mode, rng):
    x, t, w = make_case(rng, (40, 23), np.float32, weighted=True)
    first = [get(a) for a in multi_margin_loss_with_grad(put(x, mode), put(t, mode), 2, 1.0, put(w, mode))]
    again = [get(a) for a in multi_margin_loss_with_grad(put(x, mode), put(t, mode), 2, 1.0, put(w, mode))]
    assert all(np.array_equal(a, b) for a, b in zip(first, again))


# ---- bad input -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad_target", [3, -1])
def test_target_out_of_range(mode, bad_target, rng):
    x = rng.standard_normal((6, 3)).astype(np.float32)
    t = np.array([0, 1, 2, 1, 0, 2])
    t[4] = bad_target
    xd, td = put(x.copy(), mode), put(t.copy(), mode)
    kw = {"validate": True} if mode == "device" else {}
    with pytest.raises(ValueError, match=r"target\[4\] = %d" % bad_target):
        multi_margin_loss_with_grad(xd, td, out=xd, **kw)
    with pytest.raises(ValueError, match="target"):
        multi_margin_loss(xd, td, reduction="none", **kw)
    assert np.array_equal(get(xd), x) and np.array_equal(get(td), t), "input buffers changed"
    if mode == "device":  # without validate: NaN in the bad row, the error at gpunn.synchronize()
        rows, dx = (get(a) for a in multi_margin_loss_with_grad(xd, td, reduction="none"))
        assert np.isnan(rows[4]) and np.isnan(dx[4]).all() and np.isfinite(rows[[0, 1, 2, 3, 5]]).all()
        with pytest.raises(ValueError, match=r"target\[4\] = %d" % bad_target):
            gpunn.synchronize()


def test_bad_arguments_name_the_argument(mode, rng):
    x = put(rng.standard_normal((4, 3)).astype(np.float32), mode)
    t = put(np.array([0, 1, 2, 0]), mode)
    cases = [
        (ValueError, "logits", lambda: multi_margin_loss(put(np.zeros((4, 3, 2), np.float32), mode), t)),
        (ValueError, r"target .*shape \(\)", lambda: multi_margin_loss(put(np.zeros(3, np.float32), mode), t)),
        (ValueError, "target", lambda: multi_margin_loss(x, put(np.array([0, 1]), mode))),
        (TypeError, "target", lambda: multi_margin_loss(x, put(np.zeros(4, np.float32), mode))),
        (ValueError, "p must be 1 or 2", lambda: multi_margin_loss(x, t, p=3)),
        (ValueError, "margin", lambda: multi_margin_loss(x, t, margin=float("nan"))),
        (ValueError, "weight", lambda: multi_margin_loss(x, t, weight=put(np.ones(4, np.float32), mode))),
        (TypeError, "weight", lambda: multi_margin_loss(x, t, weight=put(np.ones(3), mode))),
        (ValueError, "reduction", lambda: multi_margin_loss(x, t, reduction="avg")),
        (ValueError, "out", lambda: multi_margin_loss(x, t, out=put(np.zeros(4, np.float32), mode))),
        (ValueError, "grad", lambda: multi_margin_loss_backward(x, t, reduction="none",
                                                                grad=put(np.ones(3, np.float32), mode))),
    ]
    for exc, name, call in cases:
        with pytest.raises(exc, match=name):
            call()


# ---- documentation ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fn", [multi_margin_loss, multi_margin_loss_backward, multi_margin_loss_with_grad])
def test_docstring_examples_run(fn):
    assert_doctests_pass(fn)


def test_kernels_registered():
    from gpunn import _registry

    names = {k.name for k in _registry.KERNELS}
    for op in ("multi_margin", "multi_margin_with_grad"):
        for part in ("rows[warp]", "rows[block]", "chunk_stats", "chunk_emit", "columns"):
            for dt in ("float32", "float64"):
                assert f"{op}_{part}[{dt}]" in names
    assert "max(0, h)" in importlib.import_module("gpunn.losses.multi_margin").__doc__


def test_nan_terms_count_for_nothing_as_torch(mode):
    """PyTorch's kernel adds a hinge term only where margin - x_y + x_i > 0, so a NaN term counts for nothing."""
    x = np.array([[0.1, np.nan, 0.3], [np.nan, 0.2, 0.3]])
    loss, dx = multi_margin_loss_with_grad(put(x, mode), put(np.array([0, 0]), mode), reduction="none")
    assert_close(get(loss), [0.4, 0.0], np.float64)
    assert_close(get(dx), [[-1 / 3, 0.0, 1 / 3], [0.0, 0.0, 0.0]], np.float64)
