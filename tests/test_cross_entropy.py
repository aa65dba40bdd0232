"""cross_entropy, cross_entropy_backward, cross_entropy_with_grad.

Every reduction x option (class weights, ignore_index, label smoothing, class-index int32/int64 or probability
targets) in both modes (NumPy CPU path; device arrays through the CUDA kernels, in the simulator here), float32 and
float64, against a naive float64 reference written below from the formulas; ``_with_grad`` against forward +
backward (bit-identical); central finite differences in float64; PyTorch parity; the all-ignored and empty cases;
extreme and -inf logits; bad input on both paths with the user's buffers unharmed; bit-identical repeats; rows long
enough to be cut into several chunks (several blocks per row on the device).
"""

import importlib
import math

import numpy as np
import pytest

import gpunn
from gpunn import _rowwise
from gpunn.losses.cross_entropy import cross_entropy, cross_entropy_backward, cross_entropy_with_grad
from helpers import assert_close, get, poisoned, put, assert_doctests_pass

DTYPES = [np.float32, np.float64]
REDUCTIONS = ["none", "mean", "sum"]
# (N, C): one row, one class, a warp minus one, odd, more classes than a simulator block (32), a block multiple
SHAPES = [(1, 1), (1, 4), (31, 3), (7, 33), (5, 64), (3, 45)]
DEVICE_SHAPES = [(1, 1), (31, 3), (7, 33), (3, 100)]  # the simulator: a warp per row to 64, a block to 256



# ---- naive float64 reference, straight from the formulas -------------------------------------------------------------
def ref_cross_entropy(x, t, weight=None, ignore_index=-100, label_smoothing=0.0, reduction="mean", grad=None):
    """(loss, dlogits) in float64 by explicit loops over rows and classes. ``grad``: upstream ((N,) for 'none')."""
    x = np.asarray(x, np.float64)
    n_rows, n_cols = x.shape
    w = np.ones(n_cols) if weight is None else np.asarray(weight, np.float64)
    eps = label_smoothing
    prob = np.asarray(t).ndim == 2
    losses = np.zeros(n_rows)
    grads = np.zeros((n_rows, n_cols))
    den = 0.0
    for n in range(n_rows):
        if not prob and int(t[n]) == ignore_index:
            continue  # an ignored row is never read
        row = x[n]
        m = max(row)
        lse = m + math.log(sum(math.exp(v - m) for v in row))
        p = [math.exp(v - lse) for v in row]
        if prob:
            coef = [w[c] * (t[n][c] * (1 - eps) + eps / n_cols) for c in range(n_cols)]
            losses[n] = sum(coef[c] * (lse - row[c]) for c in range(n_cols) if coef[c] != 0)  # 0 log 0 = 0
            total = sum(coef)
            grads[n] = [p[c] * total - coef[c] for c in range(n_cols)]
            den += 1
            continue
        y = int(t[n])
        if y == ignore_index:
            continue
        loss = (1 - eps) * w[y] * (lse - row[y]) if eps < 1 else 0.0
        if eps > 0:
            loss += eps / n_cols * sum(w[c] * (lse - row[c]) for c in range(n_cols) if w[c] != 0)
        losses[n] = loss
        grads[n] = [(1 - eps) * w[y] * (p[c] - (c == y)) + eps / n_cols * (p[c] * sum(w) - w[c])
                    for c in range(n_cols)]
        den += w[y]
    if reduction == "none":
        g = np.ones(n_rows) if grad is None else np.asarray(grad, np.float64).reshape(n_rows)
        return losses, grads * g[:, None]
    g = 1.0 if grad is None else float(np.asarray(grad).reshape(-1)[0])
    if reduction == "sum":
        return np.float64(losses.sum()), grads * g
    if n_rows == 0:
        return np.float64(np.nan), grads
    if den == 0:  # gpunn's documented choice (PyTorch: NaN)
        return np.float64(0.0), grads * 0.0
    return np.float64(losses.sum() / den), grads * (g / den)


# ---- data ------------------------------------------------------------------------------------------------------------
OPTIONS = {  # name: (weight, ignore, label_smoothing)
    "plain": (False, False, 0.0),
    "weight": (True, False, 0.0),
    "ignore": (False, True, 0.0),
    "smooth": (False, False, 0.1),
    "all": (True, True, 0.25),
}


def make_case(rng, shape, dtype, target="int64", option="plain", ignore_index=-100):
    n_rows, n_cols = shape
    use_weight, use_ignore, eps = OPTIONS[option]
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    kw = dict(label_smoothing=eps)
    if use_weight:
        kw["weight"] = rng.uniform(0.2, 2.0, n_cols).astype(dtype)
    if target == "probs":
        t = rng.uniform(0.0, 1.0, shape)
        t[rng.random(shape) < 0.2] = 0.0  # zeros: 0 log 0 = 0
        t = (t / np.maximum(t.sum(axis=1, keepdims=True), 1e-12)).astype(dtype)
    else:
        t = rng.integers(0, n_cols, n_rows).astype(target)
        if use_ignore:
            kw["ignore_index"] = ignore_index
            t[rng.random(n_rows) < 0.3] = ignore_index
    return x, t, kw


def on(mode, kw):
    return {k: (put(v, mode) if isinstance(v, np.ndarray) else v) for k, v in kw.items()}


def run_three(mode, x, t, kw, reduction, grad=None):
    """with_grad, forward and backward through gpunn; host results (loss, dx, loss_forward, dx_backward)."""
    dkw = on(mode, kw)
    g = put(grad, mode) if isinstance(grad, np.ndarray) else grad
    loss, dx = cross_entropy_with_grad(put(x, mode), put(t, mode), reduction=reduction, grad=g, **dkw)
    loss_f = cross_entropy(put(x, mode), put(t, mode), reduction=reduction, **dkw)
    dx_b = cross_entropy_backward(put(x, mode), put(t, mode), reduction=reduction, grad=g, **dkw)
    return get(loss), get(dx), get(loss_f), get(dx_b)


def check_against_reference(mode, x, t, kw, reduction, grad=None, what="cross_entropy"):
    dtype = x.dtype
    loss, dx, loss_f, dx_b = run_three(mode, x, t, kw, reduction, grad)
    ref_loss, ref_dx = ref_cross_entropy(x, t, reduction=reduction, grad=grad, **kw)
    assert loss.shape == (() if reduction != "none" else (x.shape[0],))
    assert_close(loss, ref_loss, dtype, what=f"{what} loss")
    assert_close(dx, ref_dx, dtype, what=f"{what} dlogits")
    # one pass == separate forward + backward, bit for bit
    assert np.array_equal(loss, loss_f, equal_nan=True), f"{what}: with_grad loss != forward"
    assert np.array_equal(dx, dx_b, equal_nan=True), f"{what}: with_grad dx != backward"


# ---- values and gradients --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("target", ["int64", "int32", "probs"])
@pytest.mark.parametrize("option", list(OPTIONS))
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cpu_matches_reference(reduction, option, target, dtype, rng):
    if target == "probs" and OPTIONS[option][1]:
        option = "smooth" if option == "ignore" else "weight"  # ignore_index is not allowed with probabilities
    # every shape meets every reduction and every option (the shape cycles with both indices)
    shape = SHAPES[(REDUCTIONS.index(reduction) + 3 * list(OPTIONS).index(option) + DTYPES.index(dtype)) % len(SHAPES)]
    x, t, kw = make_case(rng, shape, dtype, target, option, ignore_index=int(rng.integers(-3, shape[1] + 2)))
    check_against_reference("cpu", x, t, kw, reduction)


# The simulator runs every thread as a Python thread: every reduction x option x target kind, on a few shapes.
@pytest.mark.parametrize("target", ["int64", "int32", "probs"])
@pytest.mark.parametrize("option", list(OPTIONS))
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_device_matches_reference(reduction, option, target, rng):
    if gpunn.mode() == "cpu":
        pytest.skip("no GPU and the simulator is off")
    if target == "probs" and OPTIONS[option][1]:
        option = "smooth" if option == "ignore" else "weight"
    k = REDUCTIONS.index(reduction) + 3 * list(OPTIONS).index(option)
    shape = DEVICE_SHAPES[k % len(DEVICE_SHAPES)]
    dtype = DTYPES[k % 2]
    x, t, kw = make_case(rng, shape, dtype, target, option, ignore_index=int(rng.integers(-3, shape[1] + 2)))
    check_against_reference("device", x, t, kw, reduction)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("target", ["int64", "probs"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_upstream_gradient(mode, reduction, target, dtype, rng):
    x, t, kw = make_case(rng, (7, 5), dtype, target, "all" if target != "probs" else "weight")
    if reduction == "none":
        grad = rng.standard_normal(7).astype(dtype)
    else:
        grad = np.array(rng.standard_normal(), dtype)  # a 0-d array (a device array in device mode)
    check_against_reference(mode, x, t, kw, reduction, grad=grad)
    if reduction != "none":  # a Python float as well
        dx = get(cross_entropy_backward(put(x, mode), put(t, mode), reduction=reduction, grad=float(grad),
                                        **on(mode, kw)))
        assert_close(dx, ref_cross_entropy(x, t, reduction=reduction, grad=grad, **kw)[1], dtype)


# every option with class targets; probability targets only with the options that set no ignore_index
@pytest.mark.parametrize("option, target", [(option, target) for option in OPTIONS for target in ("int64", "probs")
                                             if not (target == "probs" and OPTIONS[option][1])])
def test_finite_differences(option, target, rng):
    """gpunn's own gradient against central differences of gpunn's own loss, float64 ('none' with a random
    upstream, so every row's scale is exercised; 'mean' for the denominator)."""
    x, t, kw = make_case(rng, (3, 4), np.float64, target, option)
    for reduction in ("none", "mean") if option in ("all", "weight") else ("none",):
        up = rng.standard_normal(3) if reduction == "none" else None
        dx = cross_entropy_backward(x, t, reduction=reduction, grad=up, **kw)
        h = 1e-6
        fd = np.zeros_like(x)
        for i in np.ndindex(x.shape):
            xp, xm = x.copy(), x.copy()
            xp[i] += h
            xm[i] -= h
            lp = cross_entropy(xp, t, reduction=reduction, **kw)
            lm = cross_entropy(xm, t, reduction=reduction, **kw)
            fd[i] = (np.dot(up, lp - lm) if up is not None else float(lp - lm)) / (2 * h)
        assert_close(dx, fd, np.float64, atol=1e-7, rtol=1e-6, what="central differences (h = 1e-6)")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("target", ["int64", "probs"])
@pytest.mark.parametrize("option", ["plain", "all"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_torch_parity(mode, reduction, option, target, dtype, rng):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    if target == "probs" and option == "all":
        option = "weight"
    x, t, kw = make_case(rng, (9, 6), dtype, target, option)
    xt = torch.tensor(x, requires_grad=True)
    tkw = {k: (torch.tensor(v) if isinstance(v, np.ndarray) else v) for k, v in kw.items()}
    ref = F.cross_entropy(xt, torch.tensor(t), reduction=reduction, **tkw)
    ref.sum().backward()
    loss, dx = cross_entropy_with_grad(put(x, mode), put(t, mode), reduction=reduction, **on(mode, kw))
    if get(loss).size and np.isnan(ref.detach().numpy()).all():  # no weight left ('mean'): PyTorch's NaN (see below)
        assert float(get(loss)) == 0.0 and not get(dx).any(), "documented: a 'mean' over zero weight is 0, dx 0"
        return
    assert_close(get(loss), ref.detach().numpy(), dtype, what="loss vs torch")
    assert_close(get(dx), xt.grad.numpy(), dtype, what="dlogits vs torch")


def test_torch_tensors_in_and_out():
    torch = pytest.importorskip("torch")
    x = torch.randn(4, 3, dtype=torch.float64)
    t = torch.tensor([0, 2, 1, 2])
    loss, dx = cross_entropy_with_grad(x, t)
    assert isinstance(loss, torch.Tensor) and isinstance(dx, torch.Tensor) and loss.shape == ()
    assert_close(float(loss), torch.nn.functional.cross_entropy(x, t).item(), np.float64)


# ---- all ignored, empty, extreme values ------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
def test_all_rows_ignored(mode, dtype, rng):
    """'mean' with every row ignored is 0 with a zero gradient (PyTorch gives NaN: a documented difference)."""
    x = rng.standard_normal((5, 4)).astype(dtype)
    t = np.full(5, 2, np.int64)
    for reduction, want in (("mean", 0.0), ("sum", 0.0), ("none", np.zeros(5))):
        loss, dx = cross_entropy_with_grad(put(x, mode), put(t, mode), ignore_index=2, label_smoothing=0.3,
                                           reduction=reduction)
        assert_close(get(loss), want, dtype)
        assert_close(get(dx), np.zeros((5, 4)), dtype)
    # a zero weight on every target class: the same 0 (no weight at all), not NaN
    w = np.array([1.0, 1.0, 0.0, 1.0], dtype)
    loss, dx = cross_entropy_with_grad(put(x, mode), put(t, mode), put(w, mode))
    assert get(loss) == 0 and not get(dx).any()


@pytest.mark.parametrize("target", ["int64", "probs"])
def test_empty_batch(mode, target):
    x = np.zeros((0, 3), np.float32)
    t = np.zeros(0, np.int64) if target == "int64" else np.zeros((0, 3), np.float32)
    for reduction in REDUCTIONS:
        loss, dx = cross_entropy_with_grad(put(x, mode), put(t, mode), reduction=reduction)
        loss = get(loss)
        if reduction == "mean":
            assert np.isnan(loss), "the mean of no rows is NaN, as in PyTorch and the other gpunn losses"
        elif reduction == "sum":
            assert loss == 0
        else:
            assert loss.shape == (0,)
        assert get(dx).shape == (0, 3)


@pytest.mark.parametrize("dtype", DTYPES)
def test_extreme_and_neg_inf_logits(mode, dtype, rng):
    """±1e4 logits; -inf logits (probability 0, gradient exactly 0 there, finite loss); probability targets with
    zeros against -inf logits (0 log 0 = 0)."""
    x = rng.standard_normal((6, 7)).astype(dtype) * 3
    x[0, :] = [1e4, -1e4, 1e4, 0.0, -1e4, 5e3, 1e4]
    x[1, [1, 4, 6]] = -np.inf
    x[2, [0, 2]] = -np.inf
    x[3, :6] = -np.inf  # one finite logit
    t = np.array([0, 2, 3, 6, 1, 5])
    for reduction in REDUCTIONS:
        loss, dx = cross_entropy_with_grad(put(x, mode), put(t, mode), reduction=reduction)
        ref_loss, ref_dx = ref_cross_entropy(x, t, reduction=reduction)
        assert np.isfinite(get(loss)).all() and np.isfinite(get(dx)).all()
        assert_close(get(loss), ref_loss, dtype, what="loss")
        assert_close(get(dx), ref_dx, dtype, what="dlogits")
        assert (get(dx)[np.isneginf(x)] == 0).all()
    probs = np.zeros((6, 7), dtype)
    probs[:, 3] = 0.5
    probs[:, 6] = 0.25
    probs[:, 5] = 0.25
    probs[1, :] = [0.5, 0, 0.5, 0, 0, 0, 0]
    probs[2, :] = [0, 0.5, 0, 0.5, 0, 0, 0]
    probs[3, :] = [0, 0, 0, 0, 0, 0, 1]
    loss, dx = cross_entropy_with_grad(put(x, mode), put(probs, mode), reduction="none")
    assert np.isfinite(get(loss)).all() and np.isfinite(get(dx)).all()
    ref_loss, ref_dx = ref_cross_entropy(x, probs, reduction="none")
    assert_close(get(loss), ref_loss, dtype)
    assert_close(get(dx), ref_dx, dtype)


def test_smoothing_against_neg_inf_is_inf_as_torch(mode):
    """With label smoothing a -inf logit has a nonzero target weight: the loss is +inf (as PyTorch), the gradient
    finite: -(eps / C) w_c there."""
    x = np.array([[0.0, -np.inf, 1.0]])
    loss, dx = cross_entropy_with_grad(put(x, mode), put(np.array([0]), mode), label_smoothing=0.3)
    assert get(loss) == np.inf
    assert_close(get(dx)[0, 1], -0.1, np.float64)


# ---- out=, in place --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("target", ["int64", "probs"])
def test_out_and_in_place(mode, target, rng):
    dtype = np.float32
    x, t, kw = make_case(rng, (7, 33), dtype, target, "all" if target != "probs" else "weight")
    ref_loss, ref_dx = ref_cross_entropy(x, t, reduction="none", **kw)
    out = poisoned(7, dtype, mode)
    assert cross_entropy(put(x, mode), put(t, mode), reduction="none", out=out, **on(mode, kw)) is out
    assert_close(get(out), ref_loss, dtype)
    dout = poisoned((7, 33), dtype, mode)
    assert cross_entropy_backward(put(x, mode), put(t, mode), out=dout, **on(mode, kw)) is dout
    assert_close(get(dout), ref_cross_entropy(x, t, **kw)[1], dtype)
    xd = put(x.copy(), mode)  # the gradient overwrites the logits
    loss, dx = cross_entropy_with_grad(xd, put(t, mode), reduction="none", out=xd, **on(mode, kw))
    assert dx is xd
    assert_close(get(xd), ref_dx, dtype, what="in-place gradient")
    assert_close(get(loss), ref_loss, dtype)
    if target == "probs":  # the gradient may overwrite the probability targets too
        td = put(t.copy(), mode)
        cross_entropy_backward(put(x, mode), td, reduction="none", out=td, **on(mode, kw))
        assert_close(get(td), ref_dx, dtype, what="gradient written over the targets")


def test_non_contiguous_host_out(rng):
    x, t, kw = make_case(rng, (5, 6), np.float64, "int64", "all")
    out = np.full((6, 5), np.nan).T
    cross_entropy_backward(x, t, out=out, **kw)
    assert_close(out, ref_cross_entropy(x, t, **kw)[1], np.float64)


# ---- K-d logits (classes on axis 1) and unbatched logits -------------------------------------------------------------
def ref_rows(x, t, reduction, grad=None, **kw):
    """The reference on logits of any accepted shape: rows x[n, :, i, ...] moved to the last axis (one row for (C,)
    logits), the results moved back."""
    prob = t.dtype.kind == "f"
    if x.ndim == 1:
        xr, tr, row_shape = x[None], (t[None] if prob else t.reshape(1)), ()
    else:
        xr = np.moveaxis(x, 1, -1).reshape(-1, x.shape[1])
        tr = np.moveaxis(t, 1, -1).reshape(-1, x.shape[1]) if prob else t.reshape(-1)
        row_shape = (x.shape[0],) + x.shape[2:]
    g = grad.reshape(-1) if isinstance(grad, np.ndarray) and reduction == "none" else grad
    loss, dx = ref_cross_entropy(xr, tr, reduction=reduction, grad=g, **kw)
    dx = dx.reshape(row_shape + (xr.shape[1],))
    return (loss.reshape(row_shape) if reduction == "none" else loss), (np.moveaxis(dx, -1, 1) if x.ndim > 1 else dx)


KD_CASES = [((2, 5, 3), "int64", "all"), ((3, 4, 2, 5), "probs", "smooth"), ((2, 20, 7), "int32", "weight"),
            ((4, 3, 1), "int64", "ignore"), ((0, 3, 2), "int64", "plain"), ((6,), "int64", "all"),
            ((5,), "probs", "weight"), ((1,), "int32", "plain")]


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape, target, option", KD_CASES, ids=[str(c) for c in KD_CASES])
def test_k_dimensional_and_unbatched_logits(mode, shape, target, option, reduction, rng):
    """(N, C, d1, ..., dk) logits read in place with stride d1...dk (C = 20 is longer than a strided row held in
    registers); (C,) logits with a 0-d class target or (C,) probabilities. Against the row-wise reference."""
    dtype = np.float32 if len(shape) % 2 else np.float64
    n_cols = shape[1] if len(shape) > 1 else shape[0]
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    row_shape = (shape[0],) + shape[2:] if len(shape) > 1 else ()
    use_weight, use_ignore, eps = OPTIONS[option]
    kw = dict(label_smoothing=eps)
    if use_weight:
        kw["weight"] = rng.uniform(0.2, 2.0, n_cols).astype(dtype)
    if target == "probs":
        t = rng.uniform(0.0, 1.0, shape).astype(dtype)
    else:
        t = rng.integers(0, n_cols, row_shape).astype(target)
        if use_ignore:
            kw["ignore_index"] = 1
    grad = rng.standard_normal(row_shape).astype(dtype) if reduction == "none" else None
    ref_loss, ref_dx = ref_rows(x, t, reduction, grad, **kw)
    loss, dx, loss_f, dx_b = run_three(mode, x, t, kw, reduction, grad)
    assert loss.shape == (row_shape if reduction == "none" else ()) and dx.shape == shape
    assert_close(loss, ref_loss, dtype, what=f"{shape} loss")
    assert_close(dx, ref_dx, dtype, what=f"{shape} dlogits")
    assert np.array_equal(loss, loss_f, equal_nan=True) and np.array_equal(dx, dx_b, equal_nan=True)
    xd = put(x.copy(), mode)  # in place: the gradient over its own logits
    g = put(grad, mode) if grad is not None else None
    cross_entropy_backward(xd, put(t, mode), reduction=reduction, grad=g, out=xd, **on(mode, kw))
    assert_close(get(xd), ref_dx, dtype, what=f"{shape} in-place dlogits")


def test_k_dimensional_errors_name_the_position(mode):
    x = np.zeros((2, 3, 4), np.float32)
    t = np.zeros((2, 4), np.int64)
    t[1, 2] = 7
    kw = {"validate": True} if mode == "device" else {}
    with pytest.raises(ValueError, match=r"target\[1, 2\] = 7"):
        cross_entropy(put(x, mode), put(t, mode), **kw)
    t[1, 2] = 0
    x[1, :, 3] = -np.inf
    with pytest.raises(ValueError, match=r"logits row 7 \(logits\[1, :, 3\]\) is all -inf"):
        cross_entropy(put(x, mode), put(t, mode), **kw)


# ---- long rows: several chunks per row -------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
def test_long_rows_several_chunks(mode, dtype, rng):
    """C = 3 chunks + 5 (several blocks per row on the device): the partial max/sum merge, with the row max in the
    last chunk, a first chunk of -inf only, and smoothing/weights (the shifted coefficient sums)."""
    chunk = _rowwise.chunk_length()
    n_cols = 3 * chunk + 5
    assert _rowwise.plan(_rowwise.Layout(3, n_cols, 1), dtype).kind == "chunks"
    x = rng.standard_normal((3, n_cols)).astype(dtype)
    x[0, -1] = 30.0  # the max in the last (partial) chunk
    x[1, :chunk] = -np.inf  # a chunk with nothing in it
    x[2, 5] = 25.0
    t = np.array([n_cols - 1, chunk + 3, 2 * chunk + 1])
    kw = dict(weight=rng.uniform(0.5, 1.5, n_cols).astype(dtype), label_smoothing=0.0)
    check_against_reference(mode, x, t, kw, "mean", what="long rows")
    x[1, :chunk] = rng.standard_normal(chunk)
    kw["label_smoothing"] = 0.2
    check_against_reference(mode, x, t, kw, "none", what="long rows, smoothing")
    probs = rng.uniform(0, 1, x.shape).astype(dtype)
    probs /= probs.sum(axis=1, keepdims=True)
    check_against_reference(mode, x, probs, dict(weight=kw["weight"]), "sum", what="long rows, probabilities")


def test_plans_cover_every_path():
    """The row lengths the tests use reach every kernel: in the simulator a warp per row up to 64 classes, a block
    per row up to 256, chunks beyond; rows along another axis (K-d) take the strided kernel."""
    kinds = {n: _rowwise.plan(_rowwise.Layout(4, n, 1), np.float32) for n in (1, 33, 64, 65, 256, 257)}
    if gpunn._runtime.simulator():
        assert [(p.kind, p.group) for p in kinds.values()] == [("rows", 32), ("rows", 32), ("rows", 32),
                                                               ("rows", 64), ("rows", 64), ("chunks", 0)]
    assert _rowwise.plan(_rowwise.Layout(2, 5, 3), np.float32).kind == "columns"
    assert _rowwise.plan(_rowwise.Layout(1, 10**6, 1), np.float64).kind == "chunks"
    assert _rowwise.layout((2, 5, 3, 4), 1) == (2, 5, 12) and _rowwise.layout((7,), 0) == (1, 7, 1)


# ---- determinism -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_bit_identical_repeats(mode, reduction, rng):
    x, t, kw = make_case(rng, (40, 23), np.float32, "int64", "all")
    first = [get(a) for a in cross_entropy_with_grad(put(x, mode), put(t, mode), reduction=reduction,
                                                     **on(mode, kw))]
    for _ in range(2):
        again = [get(a) for a in cross_entropy_with_grad(put(x, mode), put(t, mode), reduction=reduction,
                                                         **on(mode, kw))]
        assert all(np.array_equal(a, b) for a, b in zip(first, again))


def test_reduced_loss_stays_on_device(rng):
    if gpunn.mode() == "cpu":
        pytest.skip("no GPU and the simulator is off")
    x, t, kw = make_case(rng, (4, 3), np.float32, "int64", "plain")
    loss = cross_entropy(gpunn.to_device(x), gpunn.to_device(t))
    assert gpunn._arrays.is_device_array(loss) and loss.shape == () and loss.dtype == np.float32
    assert_close(np.float32(float(loss)), ref_cross_entropy(x, t)[0], np.float32)


# ---- bad input -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad_target", [3, -1, -100, 7])
@pytest.mark.parametrize("what", ["forward", "with_grad_in_place"])
def test_target_out_of_range(mode, what, bad_target, rng):
    """Found on the host (CPU, at once) or by the kernel (device: with validate=True the call waits for the check and
    raises before writing anything, so a gradient buffer that is the logits stays as it was)."""
    x = rng.standard_normal((6, 3)).astype(np.float32)
    t = np.array([0, 1, 2, 1, 0, 2])
    t[4] = bad_target
    ignore = -5 if bad_target == -100 else -100
    xd, td = put(x.copy(), mode), put(t.copy(), mode)
    kw = {"validate": True} if mode == "device" else {}
    with pytest.raises(ValueError, match=r"target\[4\] = %d" % bad_target):
        if what == "forward":
            cross_entropy(xd, td, ignore_index=ignore, **kw)
        else:
            cross_entropy_with_grad(xd, td, ignore_index=ignore, out=xd, **kw)
    assert np.array_equal(get(xd), x) and np.array_equal(get(td), t), "input buffers changed"


@pytest.mark.parametrize("bad_target", [3, -1])
def test_device_target_error_is_raised_at_synchronize(bad_target, rng):
    """Without validate, a device call does not wait: the bad row's loss and gradient are NaN, the other rows are
    right, and gpunn.synchronize() (or float() of the loss) raises the error naming the row."""
    if gpunn.mode() == "cpu":
        pytest.skip("no GPU and the simulator is off")
    x = rng.standard_normal((6, 3))
    t = np.array([0, 1, 2, 1, 0, 2])
    t[4] = bad_target
    rows, dx = cross_entropy_with_grad(put(x, "device"), put(t, "device"), reduction="none")
    rows, dx = get(rows), get(dx)
    assert np.isnan(rows[4]) and np.isnan(dx[4]).all()
    good = np.arange(6) != 4
    ref_rows, ref_dx = ref_cross_entropy(x[good], t[good], reduction="none")
    assert_close(rows[good], ref_rows, np.float64)
    assert_close(dx[good], ref_dx, np.float64)
    with pytest.raises(ValueError, match=r"target\[4\] = %d" % bad_target):
        gpunn.synchronize()
    gpunn.synchronize()  # reported once
    loss = cross_entropy(put(x, "device"), put(t, "device"))
    with pytest.raises(ValueError, match=r"target\[4\]"):
        float(loss)


@pytest.mark.parametrize("target", ["int64", "probs"])
def test_row_of_all_neg_inf(mode, target, rng):
    x = rng.standard_normal((5, 4))
    x[3] = -np.inf
    t = np.array([0, 1, 2, 3, 0]) if target == "int64" else np.full((5, 4), 0.25)
    xd, td = put(x.copy(), mode), put(t.copy(), mode)
    kw = {"validate": True} if mode == "device" else {}
    with pytest.raises(ValueError, match="logits row 3 is all -inf"):
        cross_entropy_with_grad(xd, td, out=xd, **kw)
    with pytest.raises(ValueError, match="logits row 3"):
        cross_entropy(xd, td, reduction="none", **kw)
    assert np.array_equal(get(xd), x) and np.array_equal(get(td), t), "input buffers changed"
    if mode == "device":
        rows = get(cross_entropy(xd, td, reduction="none"))
        assert np.isnan(rows[3]) and np.isfinite(rows[[0, 1, 2, 4]]).all()
        with pytest.raises(ValueError, match="logits row 3"):
            gpunn.synchronize()
    if target == "int64":  # an ignored row is never read
        t[3] = -100
        loss, dx = cross_entropy_with_grad(put(x, mode), put(t, mode))
        assert_close(get(loss), ref_cross_entropy(x, t)[0], np.float64)
        assert not get(dx)[3].any()


def test_bad_arguments_name_the_argument(mode, rng):
    x = put(rng.standard_normal((4, 3)).astype(np.float32), mode)
    t = put(np.array([0, 1, 2, 0]), mode)
    w = put(np.ones(3, np.float32), mode)
    probs = put(np.full((4, 3), 1 / 3, np.float32), mode)
    cases = [
        (ValueError, "logits", lambda: cross_entropy(put(np.zeros((), np.float32), mode), t)),
        (ValueError, r"target .*shape \(\)", lambda: cross_entropy(put(np.zeros(3, np.float32), mode), t)),
        (ValueError, r"target .*shape \(4, 2\)", lambda: cross_entropy(put(np.zeros((4, 3, 2), np.float32), mode), t)),
        (ValueError, "at least one class", lambda: cross_entropy(put(np.zeros((4, 0), np.float32), mode), t)),
        (ValueError, "target", lambda: cross_entropy(x, put(np.array([0, 1, 2]), mode))),
        (ValueError, "target", lambda: cross_entropy(x, put(np.zeros((4, 2), np.float32), mode))),
        (TypeError, "target", lambda: cross_entropy(x, put(np.zeros(4, np.int16), mode))),
        (TypeError, "target", lambda: cross_entropy(x, put(np.zeros((4, 3)), mode))),
        (TypeError, "target", lambda: cross_entropy(x, [0, 1, 2, 0])),
        (ValueError, "ignore_index", lambda: cross_entropy(x, probs, ignore_index=1)),
        (TypeError, "ignore_index", lambda: cross_entropy(x, t, ignore_index=1.5)),
        (ValueError, "weight", lambda: cross_entropy(x, t, weight=put(np.ones(4, np.float32), mode))),
        (TypeError, "weight", lambda: cross_entropy(x, t, weight=put(np.ones(3), mode))),
        (ValueError, "label_smoothing", lambda: cross_entropy(x, t, label_smoothing=1.5)),
        (ValueError, "label_smoothing", lambda: cross_entropy(x, t, label_smoothing=-0.1)),
        (ValueError, "reduction", lambda: cross_entropy(x, t, reduction="avg")),
        (ValueError, "out", lambda: cross_entropy(x, t, out=put(np.zeros(4, np.float32), mode))),
        (ValueError, "out", lambda: cross_entropy_backward(x, t, out=put(np.zeros((3, 4), np.float32), mode))),
        (TypeError, "out", lambda: cross_entropy_backward(x, t, out=put(np.zeros((4, 3)), mode))),
        (ValueError, "grad", lambda: cross_entropy_backward(x, t, reduction="none",
                                                            grad=put(np.ones(3, np.float32), mode))),
        (ValueError, "grad .*reduction='mean'", lambda: cross_entropy_backward(x, t, grad=put(np.ones(2, np.float32),
                                                                                               mode))),
    ]
    if mode == "device":  # a host weight with device logits
        cases.append((TypeError, "weight", lambda: cross_entropy(x, t, weight=np.ones(3, np.float32))))
    assert get(cross_entropy(x, t, weight=w)).shape == ()  # the good call works
    for exc, name, call in cases:
        with pytest.raises(exc, match=name):
            call()


# ---- documentation ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fn", [cross_entropy, cross_entropy_backward, cross_entropy_with_grad])
def test_docstring_examples_run(fn):
    assert_doctests_pass(fn)


def test_kernels_registered():
    from gpunn import _registry

    names = {k.name for k in _registry.KERNELS}
    for dt in ("float32", "float64"):
        for op in ("cross_entropy[int64]", "cross_entropy_with_grad[int64]", "cross_entropy_with_grad[int64,smooth]",
                   "cross_entropy_with_grad[probs]"):
            for part in ("rows[warp]", "rows[block]", "chunk_stats", "chunk_emit", "columns"):
                assert f"{op}_{part}[{dt}]" in names
        assert f"rows_total_sum[{dt}]" in names and f"class_weight_sum[int32][{dt}]" in names
    assert "lse" in importlib.import_module("gpunn.losses.cross_entropy").__doc__


def test_nan_logit_poisons_its_row_only(mode, rng):
    """A NaN logit makes its row's loss and gradient NaN (as PyTorch), and leaves the other rows alone."""
    x = rng.standard_normal((3, 40))
    x[1, 5] = np.nan
    for t in (np.array([0, 1, 2]), np.full((3, 40), 1 / 40)):
        loss, dx = cross_entropy_with_grad(put(x, mode), put(t, mode), reduction="none")
        loss, dx = get(loss), get(dx)
        assert np.isnan(loss[1]) and np.isnan(dx[1]).all()
        assert_close(loss[[0, 2]], ref_cross_entropy(x[[0, 2]], t[[0, 2]], reduction="none")[0], np.float64)
        assert np.isnan(get(cross_entropy(put(x, mode), put(t, mode))))
