"""Pointwise losses: mse, l1 (mae), huber, smooth_l1, binary_cross_entropy_with_logits, hinge.

Every loss x reduction x option, in both modes (NumPy CPU path; device arrays through the CUDA kernels, in the
simulator here), float32 and float64, against naive float64 references written below from the formulas; the one-pass
``*_with_grad`` against separate forward + backward (bit-identical); central finite differences in float64; PyTorch
parity; bad inputs; bit-identical repeats on the device path; sizes 0, 1, 31 and odd shapes.
"""

from dataclasses import dataclass, field

import numpy as np
import pytest

import gpunn
from gpunn import _arrays, _registry
from helpers import SHAPES, assert_close, get, poisoned, put

DTYPES = [np.float32, np.float64]
REDUCTIONS = ["none", "mean", "sum"]
# The simulator runs each thread as a Python thread: keep device cases small (<= ~1000 elements, SHAPES' small ones).
DEVICE_SHAPES = [(1,), (31,), (7, 33)]  # size 0: test_empty_inputs



# ---- naive float64 references, straight from the formulas (d = x - t) ------------------------------------------------
def ref_mse(x, t, **_):
    d = x - t
    return d * d, 2 * d


def ref_l1(x, t, **_):
    d = x - t
    return np.abs(d), np.sign(d)  # np.sign(0) == 0, as PyTorch's l1 subgradient


def ref_huber(x, t, delta=1.0, **_):
    d = x - t
    small = np.abs(d) < delta
    return (np.where(small, 0.5 * d * d, delta * (np.abs(d) - 0.5 * delta)),
            np.where(small, d, delta * np.sign(d)))


def ref_smooth_l1(x, t, beta=1.0, **_):
    if beta == 0:
        return ref_l1(x, t)
    d = x - t
    small = np.abs(d) < beta
    return np.where(small, 0.5 * d * d / beta, np.abs(d) - 0.5 * beta), np.where(small, d / beta, np.sign(d))


def ref_bce(x, t, weight=None, pos_weight=None, **_):
    # l = -w [pw t log(sigmoid x) + (1 - t) log(1 - sigmoid x)], with -log sigmoid(x) = log(1 + exp(-x)) (logaddexp)
    w = 1.0 if weight is None else np.broadcast_to(weight, x.shape)
    pw = 1.0 if pos_weight is None else np.broadcast_to(pos_weight, x.shape)
    neg_log_sig = np.logaddexp(0.0, -x)        # -log sigmoid(x)
    neg_log_one_minus = np.logaddexp(0.0, x)   # -log(1 - sigmoid(x))
    loss = w * (pw * t * neg_log_sig + (1 - t) * neg_log_one_minus)
    sig = np.exp(-neg_log_sig)
    # d/dx: -w [pw t (1 - sigmoid) - (1 - t) sigmoid]
    grad = -w * (pw * t * (1 - sig) - (1 - t) * sig)
    return loss, grad


def ref_hinge(x, t, margin=1.0, **_):
    z = margin - t * x
    return np.maximum(0.0, z), np.where(z > 0, -t, 0.0)


def ref_reduce(loss, reduction):
    if reduction == "none":
        return loss
    total = loss.astype(np.float64).sum()
    if reduction == "sum":
        return np.float64(total)
    return np.float64(total / loss.size) if loss.size else np.float64(np.nan)  # PyTorch: mean of empty is NaN


def ref_scale(reduction, n):
    return (1.0 / n if n else np.nan) if reduction == "mean" else 1.0


# ---- the cases -------------------------------------------------------------------------------------------------------
@dataclass
class Case:
    name: str              # test id
    fn: str                # gpunn function name
    ref: callable
    opts: dict = field(default_factory=dict)          # scalar options
    arrays: callable = None                           # (rng, shape) -> dict of option arrays (float64)
    target: str = "normal"                            # how targets are drawn: normal | prob | sign

    def draw(self, rng, shape, dtype):
        x = (rng.standard_normal(shape) * 2).astype(dtype)
        if self.target == "normal":
            t = rng.standard_normal(shape).astype(dtype)
        elif self.target == "prob":
            t = rng.uniform(0, 1, shape).astype(dtype)
            if t.size:
                t.reshape(-1)[::3] = rng.integers(0, 2, t.reshape(-1)[::3].shape)  # hard labels too
        else:
            t = rng.choice(np.array([-1.0, 1.0]), shape).astype(dtype)
        extra = {k: v.astype(dtype) for k, v in (self.arrays(rng, shape) if self.arrays else {}).items()}
        return x, t, extra

    def call(self, suffix, x, t, extra, reduction, **kw):
        return getattr(gpunn, self.fn + suffix)(x, t, **self.opts, **extra, reduction=reduction, **kw)

    def reference(self, x, t, extra):
        return self.ref(x.astype(np.float64), t.astype(np.float64), **self.opts,
                        **{k: v.astype(np.float64) for k, v in extra.items()})


def _last_axis(rng, shape):
    return rng.uniform(0.2, 3.0, shape[-1:])


CASES = [
    Case("mse", "mse_loss", ref_mse),
    Case("l1", "l1_loss", ref_l1),
    Case("huber", "huber_loss", ref_huber),
    Case("huber-delta0.3", "huber_loss", ref_huber, {"delta": 0.3}),
    Case("smooth_l1", "smooth_l1_loss", ref_smooth_l1),
    Case("smooth_l1-beta0", "smooth_l1_loss", ref_smooth_l1, {"beta": 0.0}),
    Case("smooth_l1-beta2.5", "smooth_l1_loss", ref_smooth_l1, {"beta": 2.5}),
    Case("bce", "binary_cross_entropy_with_logits", ref_bce, target="prob"),
    Case("bce-weight", "binary_cross_entropy_with_logits", ref_bce, target="prob",
         arrays=lambda rng, shape: {"weight": rng.uniform(0, 2, shape)}),
    Case("bce-pos_weight", "binary_cross_entropy_with_logits", ref_bce, target="prob",
         arrays=lambda rng, shape: {"pos_weight": _last_axis(rng, shape)}),
    Case("bce-both-lastaxis", "binary_cross_entropy_with_logits", ref_bce, target="prob",
         arrays=lambda rng, shape: {"weight": _last_axis(rng, shape), "pos_weight": _last_axis(rng, shape)}),
    Case("hinge", "hinge_loss", ref_hinge, target="sign"),
    Case("hinge-margin0.5", "hinge_loss", ref_hinge, {"margin": 0.5}, target="sign"),
]
CASE_IDS = [c.name for c in CASES]
BY_NAME = {c.name: c for c in CASES}


def _put_all(mode, *arrays):
    return [put(a, mode) for a in arrays]


def _put_extra(extra, mode):
    return {k: put(v, mode) for k, v in extra.items()}


def _upstream(rng, reduction, shape, dtype):
    """A random upstream gradient (host) and its float64 value per element."""
    if reduction == "none":
        g = rng.standard_normal(shape).astype(dtype)
        return g, g.astype(np.float64)
    g = float(rng.uniform(0.5, 2.0))
    return g, g


def _same_bits(a, b, what):
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape, f"{what}: {a.dtype}{a.shape} vs {b.dtype}{b.shape}"
    assert a.tobytes() == b.tobytes(), f"{what}: not bit-identical: {a.reshape(-1)[:4]} vs {b.reshape(-1)[:4]}"


# ---- forward, backward and one-pass against the references -----------------------------------------------------------
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_against_reference(case, dtype, reduction, mode, rng):
    for shape in (SHAPES if mode == "cpu" else DEVICE_SHAPES):
        x, t, extra = case.draw(rng, shape, dtype)
        ref_l, ref_g = case.reference(x, t, extra)
        g_host, g64 = _upstream(rng, reduction, shape, dtype)
        X, T = _put_all(mode, x, t)
        E = _put_extra(extra, mode)
        G = put(g_host, mode) if reduction == "none" else g_host
        n = x.size
        what = f"{case.name} {reduction} {shape}"

        out = poisoned(shape, dtype, mode) if reduction == "none" else None
        loss = case.call("", X, T, E, reduction, **({"out": out} if out is not None else {}))
        if out is not None:
            assert loss is out
        assert_close(get(loss), ref_reduce(ref_l, reduction), dtype, what=f"{what} loss")

        dx_out = poisoned(shape, dtype, mode)
        dx = case.call("_backward", X, T, E, reduction, grad=G, out=dx_out)
        assert dx is dx_out
        assert_close(get(dx), g64 * ref_scale(reduction, n) * ref_g, dtype, what=f"{what} dx")

        loss2, dx2 = case.call("_with_grad", X, T, E, reduction, grad=G)
        _same_bits(get(loss2), get(loss), f"{what}: with_grad loss vs forward")
        _same_bits(get(dx2), get(dx), f"{what}: with_grad dx vs backward")

        # default upstream gradient: 1
        dx1 = get(case.call("_backward", X, T, E, reduction))
        assert_close(dx1, ref_scale(reduction, n) * ref_g, dtype, what=f"{what} dx (grad=None)")


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_reduced_loss_is_a_0d_array_of_the_input_kind(reduction, mode, rng):
    x, t = rng.standard_normal(31), rng.standard_normal(31)
    for dtype in DTYPES:
        loss = gpunn.mse_loss(put(x.astype(dtype), mode), put(t.astype(dtype), mode), reduction=reduction)
        assert tuple(loss.shape) == ()
        assert _arrays.kind(loss) == ("numpy" if mode == "cpu" else "numba")  # stays on the device
        assert np.dtype(loss.dtype) == np.dtype(dtype)
        want = ref_reduce(ref_mse(x.astype(dtype).astype(np.float64), t.astype(dtype).astype(np.float64))[0],
                          reduction)
        assert_close(dtype(float(loss)), want, dtype)  # float() reads a device scalar too
        assert get(loss).shape == ()
    if mode == "device":
        assert loss.item() == float(loss)


def test_empty_inputs(mode):
    e = put(np.zeros(0, np.float32), mode)
    for name in ("mse_loss", "l1_loss", "huber_loss", "smooth_l1_loss", "binary_cross_entropy_with_logits",
                 "hinge_loss"):
        fn = getattr(gpunn, name)
        assert np.isnan(float(fn(e, e, reduction="mean"))), name  # PyTorch: the mean of nothing is NaN
        assert float(fn(e, e, reduction="sum")) == 0.0, name
        assert get(fn(e, e, reduction="none")).shape == (0,), name
        assert get(getattr(gpunn, name + "_backward")(e, e, reduction="none", grad=e)).shape == (0,), name
        loss, dx = getattr(gpunn, name + "_with_grad")(e, e, reduction="mean")
        assert np.isnan(float(loss)) and get(dx).shape == (0,) and get(dx).dtype == np.float32, name


def test_mae_is_l1():
    assert gpunn.mae_loss is gpunn.l1_loss
    assert gpunn.mae_loss_backward is gpunn.l1_loss_backward
    assert gpunn.mae_loss_with_grad is gpunn.l1_loss_with_grad


# ---- upstream gradients ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_scalar_upstream_gradient_forms(reduction, mode, rng):
    dtype = np.float32
    x, t = rng.standard_normal(31).astype(dtype), rng.standard_normal(31).astype(dtype)
    X, T = put(x, mode), put(t, mode)
    want = get(gpunn.mse_loss_backward(X, T, reduction=reduction, grad=1.5))
    assert_close(want, 1.5 * ref_scale(reduction, 31) * 2 * (x.astype(np.float64) - t), dtype)
    forms = [np.float32(1.5), np.array(1.5), np.array([1.5], np.float64), 3 / 2]
    if mode == "device":
        forms += [put(np.array(1.5, dtype), mode), put(np.array([1.5], dtype), mode)]  # read by the kernel
    for g in forms:
        _same_bits(get(gpunn.mse_loss_backward(X, T, reduction=reduction, grad=g)), want, f"grad={g!r}")
    # the result of a reduced loss can itself be the upstream gradient (a 0-d device array stays on the device)
    loss = gpunn.l1_loss(X, T, reduction="sum")
    dx = get(gpunn.mse_loss_backward(X, T, reduction=reduction, grad=loss))
    assert_close(dx, float(loss) * ref_scale(reduction, 31) * 2 * (x.astype(np.float64) - t), dtype, rtol=1e-5)


def test_none_upstream_gradient_forms(mode, rng):
    x, t = rng.standard_normal((3, 5)), rng.standard_normal((3, 5))
    g = rng.standard_normal((3, 5))
    X, T = put(x, mode), put(t, mode)
    assert_close(get(gpunn.mse_loss_backward(X, T, "none", grad=put(g, mode))), g * 2 * (x - t), np.float64)
    assert_close(get(gpunn.mse_loss_backward(X, T, "none", grad=0.5)), 0.5 * 2 * (x - t), np.float64)
    # dx may overwrite the upstream gradient in place
    G = put(g.copy(), mode)
    assert gpunn.mse_loss_backward(X, T, "none", grad=G, out=G) is G
    assert_close(get(G), g * 2 * (x - t), np.float64)


def test_bad_upstream_gradients(mode):
    x = put(np.ones((2, 3), np.float32), mode)
    with pytest.raises(ValueError, match="grad must have the input's shape"):
        gpunn.mse_loss_backward(x, x, "none", grad=put(np.ones(6, np.float32), mode))
    with pytest.raises(ValueError, match="grad must be a scalar or a one-element array"):
        gpunn.mse_loss_backward(x, x, "mean", grad=put(np.ones(2, np.float32), mode))
    with pytest.raises(TypeError, match="grad"):
        gpunn.mse_loss_backward(x, x, "none", grad=put(np.ones((2, 3), np.float64), mode))
    with pytest.raises(TypeError, match="grad"):
        gpunn.mse_loss_with_grad(x, x, "sum", grad="1")
    with pytest.raises(ValueError, match="grad must be finite"):
        gpunn.mse_loss_backward(x, x, "sum", grad=float("inf"))
    if mode == "device":
        with pytest.raises(TypeError, match="grad"):  # a device scalar of another dtype cannot be read as is
            gpunn.mse_loss_backward(x, x, "sum", grad=put(np.array(1.0), mode))


# ---- finite differences (float64) -----------------------------------------------------------------------------------
def _away_from_kinks(case, x, t):
    """Move x away from the points where the loss is not differentiable, so a central difference is valid."""
    d = x - t
    if case.fn in ("l1_loss", "huber_loss", "smooth_l1_loss"):
        k = case.opts.get("delta", case.opts.get("beta", 1.0))
        for kink in {0.0, k, -k}:
            near = np.abs(d - kink) < 0.05
            d = np.where(near, kink + 0.1, d)
        return t + d
    if case.fn == "hinge_loss":
        m = case.opts.get("margin", 1.0)
        z = m - t * x
        return np.where(np.abs(z) < 0.05, x - t * 0.2, x)
    return x


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_finite_differences(case, reduction, mode, rng):
    shape = (3, 5)
    x, t, extra = case.draw(rng, shape, np.float64)
    x = _away_from_kinks(case, x, t)
    g, _ = _upstream(rng, reduction, shape, np.float64)
    T, E = put(t, mode), _put_extra(extra, mode)

    def objective(xv):  # scalar: the loss, or <g, loss> for 'none'
        if mode == "device":  # element losses summed here: the simulator's reduced launches are ~10x slower
            out = get(case.call("", put(xv, mode), T, E, "none"))
            return float(np.sum(g * out)) if reduction == "none" else g * ref_reduce(out, reduction)
        out = get(case.call("", xv, T, E, reduction))
        return float(np.sum(g * out)) if reduction == "none" else g * float(out)

    G = put(g, mode) if reduction == "none" else g
    dx = get(case.call("_backward", put(x, mode), T, E, reduction, grad=G))
    h = 1e-6
    fd = np.empty(shape)
    for i in np.ndindex(shape):
        xp, xm = x.copy(), x.copy()
        xp[i] += h
        xm[i] -= h
        fd[i] = (objective(xp) - objective(xm)) / (2 * h)
    # central differences in float64: truncation O(h^2) and rounding ~1e-16 * |loss| / h, so ~1e-7 relative
    assert_close(dx, fd, np.float64, atol=1e-7, rtol=1e-6, what=f"{case.name} {reduction}: dx vs finite differences")


# ---- PyTorch parity --------------------------------------------------------------------------------------------------
def _torch_loss(torch, case, x, t, extra, reduction):
    F = torch.nn.functional
    if case.fn == "mse_loss":
        return F.mse_loss(x, t, reduction=reduction)
    if case.fn == "l1_loss":
        return F.l1_loss(x, t, reduction=reduction)
    if case.fn == "huber_loss":
        return F.huber_loss(x, t, reduction=reduction, **case.opts)
    if case.fn == "smooth_l1_loss":
        return F.smooth_l1_loss(x, t, reduction=reduction, **case.opts)
    if case.fn == "binary_cross_entropy_with_logits":
        return F.binary_cross_entropy_with_logits(x, t, reduction=reduction, **extra)
    # PyTorch has no binary SVM hinge loss: its formula in torch ops (autograd gives -t where margin - t x > 0)
    loss = torch.clamp(case.opts.get("margin", 1.0) - t * x, min=0)
    return {"none": loss, "sum": loss.sum(), "mean": loss.mean()}[reduction]


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_torch_parity(case, dtype, reduction, mode, rng):
    torch = pytest.importorskip("torch")
    shape = (7, 33)
    x, t, extra = case.draw(rng, shape, dtype)
    if case.fn == "hinge_loss":
        x = _away_from_kinks(case, x.astype(np.float64), t).astype(dtype)  # clamp's gradient at the kink is 1
    g, _ = _upstream(rng, reduction, shape, dtype)
    tx = torch.tensor(x, requires_grad=True)
    tl = _torch_loss(torch, case, tx, torch.tensor(t), {k: torch.tensor(v) for k, v in extra.items()}, reduction)
    tl.backward(torch.tensor(g) if reduction == "none" else torch.tensor(g, dtype=tx.dtype))
    G = put(g, mode) if reduction == "none" else g
    loss, dx = case.call("_with_grad", put(x, mode), put(t, mode), _put_extra(extra, mode), reduction, grad=G)
    # Looser float32 tolerances, on purpose: PyTorch is the less accurate side there. It reduces float32 in float32,
    # and its BCE gradient sigmoid(x) (pw t + 1 - t) - pw t cancels (measured: up to ~2e-6 from the float64 truth,
    # where gpunn stays within 1e-6). gpunn's own accuracy is held to helpers.TOL in test_against_reference.
    atol, rtol = (4e-6, 1e-5) if dtype == np.float32 else (None, None)
    assert_close(get(loss), tl.detach().numpy(), dtype, atol=atol, rtol=rtol, what="loss")
    assert_close(get(dx), tx.grad.numpy(), dtype, atol=atol, rtol=rtol, what="dx")


def test_hinge_matches_sklearn(rng):
    metrics = pytest.importorskip("sklearn.metrics")
    y = rng.choice([-1.0, 1.0], 101)
    s = rng.standard_normal(101)
    assert_close(gpunn.hinge_loss(s, y), metrics.hinge_loss(y, s), np.float64)


def test_torch_tensors_in_torch_tensors_out(rng):
    torch = pytest.importorskip("torch")
    x, t = torch.randn(4, 5, dtype=torch.float64), torch.randn(4, 5, dtype=torch.float64)
    loss, dx = gpunn.huber_loss_with_grad(x, t, reduction="sum")
    assert isinstance(loss, torch.Tensor) and loss.shape == () and isinstance(dx, torch.Tensor)
    assert_close(loss.numpy(), torch.nn.functional.huber_loss(x, t, reduction="sum").numpy(), np.float64)


# ---- BCE: extreme logits, broadcast weights --------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
def test_bce_extreme_logits_are_finite_and_correct(dtype, mode):
    x = np.array([-1e4, -100.0, -100.0, -100.0, -30.0, 0.0, 30.0, 100.0, 100.0, 100.0, 1e4], dtype)
    t = np.array([0.0, 0.0, 0.5, 1.0, 1.0, 0.5, 0.0, 0.0, 0.5, 1.0, 1.0], dtype)
    pw = np.array([2.5], dtype)
    for extra in ({}, {"pos_weight": pw}):
        loss, dx = gpunn.binary_cross_entropy_with_logits_with_grad(
            put(x, mode), put(t, mode), reduction="none", grad=put(np.ones_like(x), mode), **_put_extra(extra, mode))
        loss, dx = get(loss), get(dx)
        assert np.isfinite(loss).all() and np.isfinite(dx).all(), (loss, dx)
        ref_l, ref_g = ref_bce(x.astype(np.float64), t.astype(np.float64),
                               **{k: v.astype(np.float64) for k, v in extra.items()})
        assert_close(loss, ref_l, dtype, what="loss")
        assert_close(dx, ref_g, dtype, what="dx")
    # a confident right answer costs ~0 (not 0 - 0 = NaN or a rounding residue), a confident wrong one ~|x|
    assert loss[7] == pytest.approx(100 * 1.0, rel=1e-6) and loss[-1] == 0.0 and loss[0] == 0.0


@pytest.mark.parametrize("wshape,pshape", [((1,), None), ((7, 1), None), ((3,), (3,)), (None, (1, 3)),
                                           ((5, 7, 3), (3,)), ((7, 3), None)])
def test_bce_broadcast_weights(wshape, pshape, mode, rng):
    shape = (5, 7, 3)
    x, t = rng.standard_normal(shape) * 3, rng.uniform(0, 1, shape)
    extra = {}
    if wshape:
        extra["weight"] = rng.uniform(0, 2, wshape)
    if pshape:
        extra["pos_weight"] = rng.uniform(0.5, 3, pshape)
    ref_l, ref_g = ref_bce(x, t, **extra)
    loss, dx = gpunn.binary_cross_entropy_with_logits_with_grad(put(x, mode), put(t, mode), reduction="sum",
                                                               **_put_extra(extra, mode))
    assert_close(get(loss), ref_l.sum(), np.float64)
    assert_close(get(dx), ref_g, np.float64)


def test_bce_unsupported_or_wrong_weight_shapes(mode):
    x = put(np.zeros((3, 5, 4)), mode)
    with pytest.raises(ValueError, match="pos_weight of shape \\(5,\\) does not broadcast"):
        gpunn.binary_cross_entropy_with_logits(x, x, pos_weight=put(np.ones(5), mode))
    with pytest.raises(ValueError, match="weight of shape \\(3, 1, 4\\) broadcasts .* not support"):
        gpunn.binary_cross_entropy_with_logits(x, x, weight=put(np.ones((3, 1, 4)), mode))
    with pytest.raises(ValueError, match="weight of shape .* more axes"):
        gpunn.binary_cross_entropy_with_logits(x, x, weight=put(np.ones((1, 3, 5, 4)), mode))
    with pytest.raises(TypeError, match="weight has dtype float32"):
        gpunn.binary_cross_entropy_with_logits(x, x, weight=put(np.ones(4, np.float32), mode))


# ---- hinge labels ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [0.0, 0.5, np.nan, 2.0])
@pytest.mark.parametrize("fn", ["hinge_loss", "hinge_loss_backward", "hinge_loss_with_grad"])
def test_hinge_rejects_non_sign_targets_before_writing(fn, bad, mode, rng):
    x = rng.standard_normal(40).astype(np.float32)
    t = rng.choice(np.array([-1.0, 1.0], np.float32), 40)
    t[37] = bad
    X, T = put(x.copy(), mode), put(t, mode)
    kw = {"validate": True} if mode == "device" else {}
    if fn != "hinge_loss_with_grad":
        kw["out"] = X  # an out aliasing the input must not be written before the error
    with pytest.raises(ValueError, match="target must hold only -1 and \\+1"):
        getattr(gpunn, fn)(X, T, reduction="none", **kw)
    _same_bits(get(X), x, "input after a rejected call")
    if mode == "device":  # without validate: NaN at the bad label, the error at gpunn.synchronize()
        loss = get(gpunn.hinge_loss(X, T, reduction="none"))
        assert np.isnan(loss[37]) and np.isfinite(np.delete(loss, 37)).all()
        with pytest.raises(ValueError, match="target.flat\\[37\\]"):
            gpunn.synchronize()


# ---- other bad inputs ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["mse_loss", "l1_loss", "huber_loss", "smooth_l1_loss",
                                  "binary_cross_entropy_with_logits", "hinge_loss"])
def test_bad_arguments_name_the_argument(name, mode):
    x = put(np.ones(4, np.float32), mode)
    for suffix in ("", "_backward", "_with_grad"):
        fn = getattr(gpunn, name + suffix)
        with pytest.raises(ValueError, match="reduction must be one of"):
            fn(x, x, reduction="avg")
        with pytest.raises(ValueError, match="reduction must be one of"):
            fn(x, x, reduction=None)
        with pytest.raises(ValueError, match="target has shape"):
            fn(x, put(np.ones(5, np.float32), mode))
        with pytest.raises(TypeError, match="target has dtype float64"):
            fn(x, put(np.ones(4, np.float64), mode))
        with pytest.raises(TypeError, match="input must be float32 or float64"):
            fn(put(np.ones(4, np.int32), mode), x)
        with pytest.raises(TypeError, match="input must be an array"):
            fn([1.0, 2.0], x)
    with pytest.raises(ValueError, match="out is only accepted with reduction='none'"):
        getattr(gpunn, name)(x, x, reduction="mean", out=put(np.ones(4, np.float32), mode))


def test_bad_thresholds():
    x = np.ones(3)
    for fn in (gpunn.huber_loss, gpunn.huber_loss_backward, gpunn.huber_loss_with_grad):
        for bad in (0.0, -1.0):
            with pytest.raises(ValueError, match="delta must be > 0"):
                fn(x, x, delta=bad)
        with pytest.raises(ValueError, match="delta must be finite"):
            fn(x, x, delta=float("nan"))
    for fn in (gpunn.smooth_l1_loss, gpunn.smooth_l1_loss_backward, gpunn.smooth_l1_loss_with_grad):
        with pytest.raises(ValueError, match="beta must be >= 0"):
            fn(x, x, beta=-0.5)
        with pytest.raises(TypeError, match="beta must be a real number"):
            fn(x, x, beta="1")
    with pytest.raises(ValueError, match="margin must be finite"):
        gpunn.hinge_loss(x, x, margin=float("inf"))


def test_mixed_host_and_device_is_a_type_error():
    if gpunn.mode() == "cpu":
        pytest.skip("no device")
    x = np.ones(4, np.float32)
    with pytest.raises(TypeError, match="target is a device array but input is a host array"):
        gpunn.mse_loss(x, gpunn.to_device(x))
    with pytest.raises(TypeError, match="pos_weight is a host array"):
        gpunn.binary_cross_entropy_with_logits(gpunn.to_device(x), gpunn.to_device(x), pos_weight=x)


# ---- smooth L1 with beta = 0 is exactly L1; out aliasing; NaN --------------------------------------------------------
def test_smooth_l1_beta0_is_exactly_l1(mode, rng):
    x, t = put(rng.standard_normal(31), mode), put(rng.standard_normal(31), mode)
    for reduction in REDUCTIONS:
        _same_bits(get(gpunn.smooth_l1_loss(x, t, beta=0.0, reduction=reduction)),
                   get(gpunn.l1_loss(x, t, reduction=reduction)), reduction)
        _same_bits(get(gpunn.smooth_l1_loss_backward(x, t, beta=0, reduction=reduction)),
                   get(gpunn.l1_loss_backward(x, t, reduction=reduction)), reduction)


@pytest.mark.parametrize("dtype", DTYPES)
def test_kinks_follow_pytorch(dtype, mode):
    """At the points where the losses are not differentiable, gpunn picks PyTorch's subgradients: sign(0) = 0 for
    l1 (and smooth_l1 with beta = 0), delta * sign(d) at |d| = delta for huber, sign(d) at |d| = beta for smooth_l1,
    and 0 for hinge at t x = margin (no gradient unless the margin is violated)."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    t = np.array([0.5, 0.5, 0.5, -1.0, 2.0], dtype)
    x = np.array([0.5, 1.5, -0.5, -1.0, 4.0], dtype)  # d = 0, 1, -1, 0, 2 (exact in both dtypes)
    X, T = put(x, mode), put(t, mode)
    cases = [("l1_loss", {}, lambda a, b: F.l1_loss(a, b, reduction="sum")),
             ("smooth_l1_loss", {"beta": 0.0}, lambda a, b: F.smooth_l1_loss(a, b, beta=0.0, reduction="sum")),
             ("smooth_l1_loss", {"beta": 1.0}, lambda a, b: F.smooth_l1_loss(a, b, beta=1.0, reduction="sum")),
             ("smooth_l1_loss", {"beta": 2.0}, lambda a, b: F.smooth_l1_loss(a, b, beta=2.0, reduction="sum")),
             ("huber_loss", {"delta": 1.0}, lambda a, b: F.huber_loss(a, b, delta=1.0, reduction="sum")),
             ("huber_loss", {"delta": 2.0}, lambda a, b: F.huber_loss(a, b, delta=2.0, reduction="sum"))]
    for name, opts, torch_fn in cases:
        tx = torch.tensor(x, requires_grad=True)
        tl = torch_fn(tx, torch.tensor(t))
        tl.backward()
        loss, dx = getattr(gpunn, name + "_with_grad")(X, T, **opts, reduction="sum")
        assert_close(get(loss), tl.detach().numpy(), dtype, what=f"{name} {opts} loss")
        _same_bits(get(dx), tx.grad.numpy(), f"{name} {opts} dx at the kinks")
    # hinge: t x = margin exactly -> loss 0, gradient 0; just inside the margin -> gradient -t
    xs, ts = np.array([1.0, -1.0, 0.5], dtype), np.array([1.0, -1.0, -1.0], dtype)
    loss, dx = gpunn.hinge_loss_with_grad(put(xs, mode), put(ts, mode), reduction="none")
    _same_bits(get(loss), np.array([0.0, 0.0, 1.5], dtype), "hinge loss at the margin")
    _same_bits(get(dx), np.array([0.0, 0.0, 1.0], dtype), "hinge dx at the margin")


def test_out_may_alias_the_input(mode, rng):
    x, t = rng.standard_normal(31), rng.standard_normal(31)
    X = put(x.copy(), mode)
    assert gpunn.mse_loss(X, put(t, mode), reduction="none", out=X) is X
    assert_close(get(X), (x - t) ** 2, np.float64)
    X = put(x.copy(), mode)
    assert gpunn.huber_loss_backward(X, put(t, mode), reduction="sum", out=X) is X
    assert_close(get(X), ref_huber(x, t)[1], np.float64)


def test_nan_propagates(mode):
    x = np.array([np.nan, 1.0, -1.0])
    t = np.array([0.0, 1.0, -1.0])
    for name in ("mse_loss", "l1_loss", "huber_loss", "smooth_l1_loss", "binary_cross_entropy_with_logits",
                 "hinge_loss"):
        if name == "hinge_loss":
            t = np.array([1.0, 1.0, -1.0])  # labels must be +-1
        loss, dx = getattr(gpunn, name + "_with_grad")(put(x, mode), put(t, mode), reduction="none")
        loss, dx = get(loss), get(dx)
        assert np.isnan(loss[0]) and np.isnan(dx[0]), name
        assert np.isfinite(loss[1:]).all() and np.isfinite(dx[1:]).all(), name
        assert np.isnan(float(getattr(gpunn, name)(put(x, mode), put(t, mode), reduction="sum"))), name


# ---- determinism -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
def test_repeat_is_bit_identical(dtype, mode, rng):
    n = 1027  # more than one block, not a multiple of the block, strided in the simulator's tiny grid
    x, t = (rng.standard_normal(n) * 10).astype(dtype), rng.uniform(0, 1, n).astype(dtype)
    X, T = put(x, mode), put(t, mode)
    for reduction in ("mean", "sum"):
        runs = [gpunn.binary_cross_entropy_with_logits_with_grad(X, T, reduction=reduction) for _ in range(3)]
        runs += [(gpunn.binary_cross_entropy_with_logits(X, T, reduction=reduction), runs[0][1])]
        for loss, dx in runs[1:]:
            _same_bits(get(loss), get(runs[0][0]), f"{reduction} loss")
            _same_bits(get(dx), get(runs[0][1]), f"{reduction} dx")
        assert_close(get(runs[0][0]), ref_reduce(ref_bce(x.astype(np.float64), t.astype(np.float64))[0], reduction),
                     dtype)


def test_float32_sum_accumulates_in_float64(mode):
    # a serial float32 sum of 2^20 copies of 0.1 drifts by ~1e-2 relative; float64 accumulation keeps ~1e-7
    n = 1000 if mode == "device" else 1 << 20
    x = np.full(n, 0.1, np.float32)
    loss = float(gpunn.l1_loss(put(x, mode), put(np.zeros_like(x), mode), reduction="sum"))
    assert loss == pytest.approx(n * float(np.float32(0.1)), rel=1e-7)


def test_cpu_parallel_and_serial_loops_give_the_same_bits(rng, monkeypatch):
    from gpunn import _cpu

    n = 3 * _cpu.PARALLEL_MIN["pointwise_loss"] + 17
    x, t = rng.standard_normal(n).astype(np.float32), rng.standard_normal(n).astype(np.float32)
    parallel = gpunn.l1_loss_with_grad(x, t, reduction="mean")
    monkeypatch.setitem(_cpu.PARALLEL_MIN, "pointwise_loss", n + 1)
    serial = gpunn.l1_loss_with_grad(x, t, reduction="mean")
    _same_bits(parallel[0], serial[0], "loss")
    _same_bits(parallel[1], serial[1], "dx")
    assert_close(parallel[0], np.abs(x.astype(np.float64) - t).mean(), np.float32)


# ---- registry --------------------------------------------------------------------------------------------------------
def test_every_loss_kernel_is_registered():
    names = {spec.name: spec for spec in _registry.KERNELS}
    for loss in ("mse_loss", "l1_loss", "huber_loss", "smooth_l1_loss", "bce_with_logits", "hinge_loss"):
        for kernel in ("forward", "forward_sum", "backward", "with_grad", "with_grad_sum"):
            for dt in ("float32", "float64"):
                spec = names[f"{loss}_{kernel}[{dt}]"]
                assert spec.dtype == dt and spec.f64_accumulator == kernel.endswith("_sum")
                assert spec.signature.startswith(f"void({dt}[::1], {dt}[::1], {dt}[::1], int64, {dt}[::1], int64")
    for dt in ("float32", "float64"):
        assert f"hinge_check_target[{dt}]" in names and f"reduce_finish_sum[{dt}]" in names


def test_docstring_examples_run():
    import doctest

    from gpunn.losses import bce, hinge, huber, l1, mse

    for module in (mse, l1, huber, bce, hinge):
        result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
        assert result.attempted > 0 and result.failed == 0, f"{module.__name__}: {result}"
