"""gpunn.torch modules and functions against the torch.nn modules of the same name: outputs and gradients in float32
and float64, gradcheck in float64, non-contiguous inputs, inplace=, what autograd saves, bad input.

The reference is PyTorch itself (torch.nn on the same inputs), as issue 12 asks; gpunn's own HingeLoss, which torch.nn
lacks, is checked against a float64 formula. Sizes 0, 1 and odd; fresh random inputs from the ``rng`` fixture.
"""

import doctest

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import gpunn.torch as gt  # noqa: E402
import gpunn.torch.functional as GF  # noqa: E402
from helpers import assert_close  # noqa: E402

DTYPES = [torch.float32, torch.float64]
# gpunn against torch, both in the tested dtype: a few ulp apart (different exp/erf polynomials, sums in float64)
TOL = {torch.float32: dict(atol=2e-6, rtol=1e-5), torch.float64: dict(atol=1e-13, rtol=1e-12)}
SHAPES = [(0,), (1,), (7,), (3, 5, 17)]

# name -> (gpunn module, torch.nn module), built with the same arguments
ACTIVATIONS = {
    "ReLU": lambda m: m.ReLU(),
    "LeakyReLU": lambda m: m.LeakyReLU(0.2),
    "Sigmoid": lambda m: m.Sigmoid(),
    "Tanh": lambda m: m.Tanh(),
    "GELU": lambda m: m.GELU(),
    "GELU-tanh": lambda m: m.GELU(approximate="tanh"),
    "SiLU": lambda m: m.SiLU(),
    "ELU": lambda m: m.ELU(alpha=0.7),
    "Softplus": lambda m: m.Softplus(beta=2.0, threshold=3.0),
    "Softmax": lambda m: m.Softmax(dim=-1),
    "Softmax0": lambda m: m.Softmax(dim=0),
    "LogSoftmax": lambda m: m.LogSoftmax(dim=-1),
    "LogSoftmax0": lambda m: m.LogSoftmax(dim=0),
}


def tensor(rng, shape, dtype, scale=3.0, requires_grad=False):
    x = torch.from_numpy(rng.standard_normal(shape) * scale).to(dtype)
    return x.requires_grad_(requires_grad)


def close(actual, expected, what):
    """gpunn's tensor against torch's: same shape and dtype, values within the dtype's tolerance."""
    assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype} != {expected.dtype}"
    tol = TOL[expected.dtype]
    assert_close(actual.detach().numpy(), expected.detach().double().numpy(), atol=tol["atol"], rtol=tol["rtol"],
                 what=what)


def forward_backward(module, inputs, dy_seed):
    """Output and the gradients of every input that requires grad (and of the module's parameters), for the same
    random upstream gradient."""
    out = module(*inputs)
    dy = torch.from_numpy(np.random.default_rng(dy_seed).standard_normal(out.shape)).to(out.dtype)
    wrt = [x for x in inputs if x.requires_grad] + list(module.parameters())
    grads = torch.autograd.grad(out, wrt, dy, allow_unused=False) if wrt and out.numel() else []
    return out, grads


def assert_same_as_torch(gpunn_module, torch_module, inputs, rng, what):
    seed = int(rng.integers(2**31))
    out, grads = forward_backward(gpunn_module, inputs, seed)
    ref_out, ref_grads = forward_backward(torch_module, [x.detach().clone().requires_grad_(x.requires_grad)
                                                         for x in inputs], seed)
    close(out, ref_out, f"{what} output")
    assert len(grads) == len(ref_grads)
    for k, (g, r) in enumerate(zip(grads, ref_grads)):
        close(g, r, f"{what} gradient {k}")


# ---- activations -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activation_matches_torch(name, dtype, shape, rng):
    if name.endswith("0") and len(shape) < 2:
        shape = (4,) + shape
    build = ACTIVATIONS[name]
    x = tensor(rng, shape, dtype, requires_grad=True)
    assert_same_as_torch(build(gt), build(torch.nn), [x], rng, name)


@pytest.mark.parametrize("num_parameters", [1, 5])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_prelu_matches_torch_and_learns_its_weight(num_parameters, dtype, rng):
    module, ref = gt.PReLU(num_parameters, dtype=dtype), torch.nn.PReLU(num_parameters, dtype=dtype)
    assert torch.equal(module.weight, ref.weight) and module.weight.requires_grad  # torch's init, 0.25
    with torch.no_grad():
        w = torch.from_numpy(rng.uniform(-0.5, 0.5, num_parameters)).to(dtype)
        module.weight.copy_(w)
        ref.weight.copy_(w)
    for shape in [(3, 5), (2, 5, 7), (1, 5, 1, 3)]:
        x = tensor(rng, shape, dtype, requires_grad=True)
        assert_same_as_torch(module, ref, [x], rng, f"PReLU({num_parameters}) {shape}")
    if num_parameters == 1:  # inputs of rank < 2 have one channel
        assert_same_as_torch(module, ref, [tensor(rng, (9,), dtype, requires_grad=True)], rng, "PReLU 1-d")


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activation_gradcheck(name, rng):
    module = ACTIVATIONS[name](gt)
    x = tensor(rng, (3, 4), torch.float64, scale=1.5, requires_grad=True)
    assert torch.autograd.gradcheck(module, (x,))


def test_prelu_gradcheck(rng):
    x = tensor(rng, (3, 4, 2), torch.float64, requires_grad=True)
    weight = torch.from_numpy(rng.uniform(-0.5, 0.5, 4)).requires_grad_(True)
    assert torch.autograd.gradcheck(GF.prelu, (x, weight))


# ---- losses ----------------------------------------------------------------------------------------------------------
def regression_inputs(rng, shape, dtype, target_grad=True):
    return [tensor(rng, shape, dtype, requires_grad=True), tensor(rng, shape, dtype, requires_grad=target_grad)]


def class_targets(rng, n, c, ignore_index=None):
    t = rng.integers(0, c, n)
    if ignore_index is not None and n:
        t[rng.random(n) < 0.3] = ignore_index
        # at least one row counts (every row ignored is a documented difference: gpunn's 0 against torch's NaN)
        t[0] = rng.choice([k for k in range(c) if k != ignore_index])
    return torch.from_numpy(t)


def probability_targets(rng, n, c, dtype):
    p = rng.random((n, c))
    return torch.from_numpy(p / p.sum(axis=1, keepdims=True)).to(dtype)


REDUCTIONS = ["mean", "sum", "none"]
# name -> (module builder, which differentiates the target too)
REGRESSION = {
    "MSELoss": lambda m, r: m.MSELoss(reduction=r),
    "L1Loss": lambda m, r: m.L1Loss(reduction=r),
    "HuberLoss": lambda m, r: m.HuberLoss(reduction=r, delta=0.7),
    "SmoothL1Loss": lambda m, r: m.SmoothL1Loss(reduction=r, beta=1.3),
    "SmoothL1Loss-beta0": lambda m, r: m.SmoothL1Loss(reduction=r, beta=0.0),
}


@pytest.mark.parametrize("shape", [(0,), (1,), (7,), (3, 5, 17)], ids=str)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", REGRESSION)
def test_regression_loss_matches_torch(name, dtype, reduction, shape, rng):
    build = REGRESSION[name]
    assert_same_as_torch(build(gt, reduction), build(torch.nn, reduction), regression_inputs(rng, shape, dtype), rng,
                         name)


@pytest.mark.parametrize("options", ["plain", "weight", "pos_weight", "both"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_bce_with_logits_matches_torch(options, reduction, dtype, rng):
    n, c = 6, 5
    kw = {}
    if options in ("weight", "both"):
        kw["weight"] = torch.from_numpy(rng.uniform(0.5, 2.0, (n, c))).to(dtype)
    if options in ("pos_weight", "both"):
        kw["pos_weight"] = torch.from_numpy(rng.uniform(0.5, 3.0, c)).to(dtype)
    x = tensor(rng, (n, c), dtype, requires_grad=True)
    t = torch.from_numpy(rng.random((n, c))).to(dtype)
    assert_same_as_torch(gt.BCEWithLogitsLoss(reduction=reduction, **kw),
                         torch.nn.BCEWithLogitsLoss(reduction=reduction, **kw), [x, t], rng, f"BCE {options}")


CE_CASES = {
    "plain": {},
    "weight": {"weight": True},
    "ignore_index": {"ignore_index": 2},
    "ignore_index-default": {"ignore_index": -100},
    "label_smoothing": {"label_smoothing": 0.15},
    "all": {"weight": True, "ignore_index": 1, "label_smoothing": 0.2},
    "probabilities": {"probs": True},
    "probabilities-all": {"probs": True, "weight": True, "label_smoothing": 0.1},
}


@pytest.mark.parametrize("rows", [1, 9], ids=lambda n: f"N{n}")
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", CE_CASES)
def test_cross_entropy_matches_torch(case, dtype, reduction, rows, rng):
    opts = dict(CE_CASES[case])
    c = 7
    kw = {}
    if opts.pop("weight", False):
        kw["weight"] = torch.from_numpy(rng.uniform(0.2, 2.0, c)).to(dtype)
    if opts.pop("probs", False):
        target = probability_targets(rng, rows, c, dtype)
    else:
        target = class_targets(rng, rows, c, opts.get("ignore_index"))
    kw.update(opts)
    x = tensor(rng, (rows, c), dtype, requires_grad=True)
    assert_same_as_torch(gt.CrossEntropyLoss(reduction=reduction, **kw),
                         torch.nn.CrossEntropyLoss(reduction=reduction, **kw), [x, target], rng, f"CE {case}")


def test_cross_entropy_int32_targets_match_int64(rng):
    x = tensor(rng, (5, 4), torch.float32, requires_grad=True)
    t = class_targets(rng, 5, 4)
    assert torch.equal(GF.cross_entropy(x, t.to(torch.int32)), GF.cross_entropy(x, t))


@pytest.mark.parametrize("p,margin,weighted", [(1, 1.0, False), (2, 1.0, False), (1, 0.3, True), (2, 2.0, True)])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_multi_margin_matches_torch(p, margin, weighted, reduction, dtype, rng):
    n, c = 9, 6
    kw = dict(p=p, margin=margin, reduction=reduction)
    if weighted:
        kw["weight"] = torch.from_numpy(rng.uniform(0.2, 2.0, c)).to(dtype)
    x = tensor(rng, (n, c), dtype, scale=1.0, requires_grad=True)
    assert_same_as_torch(gt.MultiMarginLoss(**kw), torch.nn.MultiMarginLoss(**kw), [x, class_targets(rng, n, c)],
                         rng, "MultiMarginLoss")


def ref_hinge(x, t, margin, reduction):
    """float64, from the formula: max(0, margin - t x); d/dx = -t where margin - t x > 0."""
    x, t = x.detach().double().numpy(), t.double().numpy()
    active = margin - t * x > 0
    loss = np.maximum(0.0, margin - t * x)
    grad = np.where(active, -t, 0.0)
    if reduction == "none":
        return loss, grad
    scale = (1.0 / x.size if x.size else np.nan) if reduction == "mean" else 1.0  # mean of nothing: NaN
    return np.array(loss.sum() * scale), grad * scale


@pytest.mark.parametrize("shape", [(0,), (1,), (31,), (3, 7)], ids=str)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_hinge_loss_against_its_formula(shape, reduction, dtype, rng):
    margin = 0.8
    x = tensor(rng, shape, dtype, scale=1.0, requires_grad=True)
    t = torch.from_numpy(rng.choice([-1.0, 1.0], shape)).to(dtype)
    loss = gt.HingeLoss(margin=margin, reduction=reduction)(x, t)
    want_loss, want_grad = ref_hinge(x, t, margin, reduction)
    assert_close(loss.detach().numpy(), want_loss, np.dtype(str(dtype).replace("torch.", "")), what="loss")
    if x.numel():
        dy = torch.ones_like(loss)
        (dx,) = torch.autograd.grad(loss, x, dy)
        assert_close(dx.numpy(), want_grad, np.dtype(str(dtype).replace("torch.", "")), what="dx")


LOSS_GRADCHECK = {
    "mse": lambda x, y, r: GF.mse_loss(x, y, reduction=r),
    "l1": lambda x, y, r: GF.l1_loss(x, y, reduction=r),
    "huber": lambda x, y, r: GF.huber_loss(x, y, reduction=r, delta=0.8),
    "smooth_l1": lambda x, y, r: GF.smooth_l1_loss(x, y, reduction=r, beta=0.6),
}


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("name", LOSS_GRADCHECK)
def test_regression_loss_gradcheck_in_input_and_target(name, reduction, rng):
    x, y = regression_inputs(rng, (3, 4), torch.float64)
    assert torch.autograd.gradcheck(lambda a, b: LOSS_GRADCHECK[name](a, b, reduction), (x, y))


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_classification_losses_gradcheck(reduction, rng):
    n, c = 4, 5
    x = tensor(rng, (n, c), torch.float64, scale=1.0, requires_grad=True)
    w = torch.from_numpy(rng.uniform(0.5, 2.0, c))
    t = class_targets(rng, n, c)
    probs = probability_targets(rng, n, c, torch.float64)
    bce_target = torch.from_numpy(rng.random((n, c)))
    signs = torch.from_numpy(rng.choice([-1.0, 1.0], (n, c)))
    checks = {
        "cross_entropy": lambda a: GF.cross_entropy(a, t, weight=w, label_smoothing=0.1, reduction=reduction),
        "cross_entropy-ignore": lambda a: GF.cross_entropy(a, t, ignore_index=int(t[1]), reduction=reduction),
        "cross_entropy-probs": lambda a: GF.cross_entropy(a, probs, weight=w, reduction=reduction),
        "multi_margin-p1": lambda a: GF.multi_margin_loss(a, t, margin=0.5, reduction=reduction),
        "multi_margin-p2": lambda a: GF.multi_margin_loss(a, t, p=2, weight=w, reduction=reduction),
        "bce": lambda a: GF.binary_cross_entropy_with_logits(a, bce_target, pos_weight=w, reduction=reduction),
        "hinge": lambda a: GF.hinge_loss(a, signs, reduction=reduction),
    }
    for name, f in checks.items():
        assert torch.autograd.gradcheck(f, (x,)), name


# ---- non-contiguous inputs -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["ReLU", "GELU", "Softmax", "Softmax0", "LogSoftmax"])
def test_non_contiguous_input_gives_the_contiguous_result(name, rng):
    build = ACTIVATIONS[name]
    base = tensor(rng, (9, 6), torch.float32)
    x = base.t()[:, ::2]                       # transposed and strided
    assert not x.is_contiguous()
    before = base.clone()
    assert_same_as_torch(build(gt), build(torch.nn), [x.clone().requires_grad_(True)], rng, name)
    y = build(gt)(x)
    assert torch.equal(y, build(gt)(x.contiguous()))
    assert torch.equal(base, before)


def test_non_contiguous_loss_inputs(rng):
    x = tensor(rng, (8, 5), torch.float64).t()
    t = tensor(rng, (8, 5), torch.float64).t()
    logits = tensor(rng, (6, 10), torch.float64)[:, ::2]
    labels = torch.from_numpy(rng.integers(0, 5, 12))[::2]
    assert not (x.is_contiguous() or logits.is_contiguous() or labels.is_contiguous())
    close(GF.huber_loss(x, t, reduction="none"), torch.nn.functional.huber_loss(x, t, reduction="none"), "huber")
    close(GF.cross_entropy(logits, labels), torch.nn.functional.cross_entropy(logits, labels), "cross_entropy")


# ---- inplace= --------------------------------------------------------------------------------------------------------
INPLACE = {
    "ReLU": lambda m: m.ReLU(inplace=True),
    "LeakyReLU": lambda m: m.LeakyReLU(0.3, inplace=True),
    "SiLU": lambda m: m.SiLU(inplace=True),
    "ELU": lambda m: m.ELU(0.5, inplace=True),
}


@pytest.mark.parametrize("strided", [False, True], ids=["contiguous", "strided"])
@pytest.mark.parametrize("name", INPLACE)
def test_inplace_without_autograd_writes_the_input(name, strided, rng):
    base = tensor(rng, (6, 8), torch.float32)
    x = base[:, ::2] if strided else base
    want = INPLACE[name](torch.nn)(x.clone())
    untouched = base[:, 1::2].clone()
    with torch.no_grad():
        y = INPLACE[name](gt)(x)
    assert y is x
    close(x, want, name)
    if strided:
        assert torch.equal(base[:, 1::2], untouched)


@pytest.mark.parametrize("name", INPLACE)
def test_inplace_with_autograd_matches_torch(name, rng):
    x = tensor(rng, (5, 7), torch.float64, requires_grad=True)
    ref_x = x.detach().clone().requires_grad_(True)
    z = x * 1.0                                  # a non-leaf, as in a model
    y = INPLACE[name](gt)(z)
    ref_y = INPLACE[name](torch.nn)(ref_x * 1.0)
    assert y is z
    dy = tensor(rng, (5, 7), torch.float64)
    y.backward(dy)
    ref_y.backward(dy)
    close(y, ref_y, f"{name} output")
    close(x.grad, ref_x.grad, f"{name} gradient")


def test_inplace_on_a_leaf_that_requires_grad_raises_like_torch_before_computing(rng):
    x = tensor(rng, (4,), torch.float32, requires_grad=True)
    before = x.detach().clone()
    with pytest.raises(RuntimeError, match="a leaf Variable that requires grad is being used in an in-place"):
        gt.ReLU(inplace=True)(x)
    assert torch.equal(x.detach(), before)


# ---- what the forward saves for the backward -------------------------------------------------------------------------
def saved_by(fn, *inputs):
    """The tensors autograd saves while ``fn(*inputs)`` runs, and its output."""
    saved = []

    def pack(t):
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn(*inputs)
    return saved, out


@pytest.mark.parametrize("name,saves", [("Sigmoid", "output"), ("Tanh", "output"), ("Softmax", "output"),
                                        ("LogSoftmax", "output"), ("ReLU", "output"), ("GELU", "input"),
                                        ("SiLU", "input"), ("ELU", "input")])
def test_activation_saves_one_tensor(name, saves, rng):
    x = tensor(rng, (4, 6), torch.float32, requires_grad=True)
    saved, y = saved_by(ACTIVATIONS[name](gt), x)
    assert len(saved) == 1
    assert saved[0].data_ptr() == (y if saves == "output" else x).data_ptr()


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_saves_only_its_fused_gradient(reduction, rng):
    x = tensor(rng, (5, 7), torch.float32, requires_grad=True)
    t = class_targets(rng, 5, 7)
    saved, loss = saved_by(lambda a: GF.cross_entropy(a, t, reduction=reduction), x)
    assert len(saved) == 1 and saved[0].shape == x.shape and saved[0].data_ptr() != x.data_ptr()
    # it is d loss / d logits for an upstream gradient of 1: the backward only scales it
    want = torch.autograd.grad(torch.nn.functional.cross_entropy(x, t, reduction=reduction).sum(), x)[0]
    close(saved[0], want, "saved gradient")


def test_no_gradient_no_fused_gradient(rng):
    x = tensor(rng, (5, 7), torch.float32)
    saved, loss = saved_by(lambda a: GF.cross_entropy(a, class_targets(rng, 5, 7)), x)
    assert saved == [] and loss.grad_fn is None


# ---- devices and bad input -------------------------------------------------------------------------------------------
def test_tensors_on_two_devices_raise_torchs_error(rng):
    x = tensor(rng, (3, 4), torch.float32)
    with pytest.raises(RuntimeError, match="Expected all tensors to be on the same device.*target"):
        GF.mse_loss(x, torch.empty((3, 4), device="meta"))
    with pytest.raises(RuntimeError, match="Expected all tensors to be on the same device.*weight"):
        GF.cross_entropy(x, class_targets(rng, 3, 4), weight=torch.ones(4, device="meta"))
    with pytest.raises(RuntimeError, match="gpunn runs on CPU and CUDA tensors, but input is on meta"):
        GF.relu(torch.empty(3, device="meta"))


BAD = [
    (lambda x, t: GF.relu(x.to(torch.int64)), TypeError, "input must be float32 or float64"),
    (lambda x, t: GF.gelu(x.half()), TypeError, "input must be float32 or float64"),
    (lambda x, t: GF.relu([1.0, 2.0]), TypeError, "input must be a Tensor"),
    (lambda x, t: GF.gelu(x, approximate="fast"), ValueError, "approximate must be 'none' or 'tanh'"),
    (lambda x, t: GF.elu(x, alpha="1"), TypeError, "alpha must be a real number"),
    (lambda x, t: GF.softmax(x, dim=2), IndexError, "Dimension out of range"),
    (lambda x, t: GF.softmax(x, dim=1, dtype=torch.int32), TypeError, "dtype must be torch.float32"),
    (lambda x, t: GF.prelu(x, torch.ones(3, dtype=torch.float64)), TypeError, "weight has dtype"),
    (lambda x, t: GF.mse_loss(x, t, reduction="avg"), ValueError, "avg is not a valid value for reduction"),
    (lambda x, t: GF.mse_loss(x, t.double()), TypeError, "dtype"),
    (lambda x, t: GF.mse_loss(x, t, weight=torch.ones(4)), ValueError, "weight must be None"),
    (lambda x, t: GF.cross_entropy(x, torch.tensor([0, 1, 9])), ValueError, "target"),
    (lambda x, t: GF.cross_entropy(x, torch.tensor([0, 1, 2]), ignore_index=1.5), TypeError, "ignore_index"),
    (lambda x, t: GF.cross_entropy(x, torch.tensor([0, 1, 2]), weight=torch.ones(4, dtype=torch.float64)),
     TypeError, "weight has dtype"),
    (lambda x, t: GF.cross_entropy(x, t.softmax(1).requires_grad_(True)), RuntimeError,
     "gradient with respect to target"),
    (lambda x, t: GF.multi_margin_loss(x, torch.tensor([0, 1, 2]), p=3), ValueError, "p must be 1 or 2"),
    (lambda x, t: GF.hinge_loss(x, t), ValueError, "target"),
    (lambda x, t: GF.binary_cross_entropy_with_logits(x, t, pos_weight=torch.ones(4, requires_grad=True)),
     RuntimeError, "gradient with respect to pos_weight"),
]


@pytest.mark.parametrize("case", range(len(BAD)))
def test_bad_input_raises_naming_the_argument_and_changes_nothing(case, rng):
    fn, error, message = BAD[case]
    x = tensor(rng, (3, 4), torch.float32, requires_grad=True)
    t = tensor(rng, (3, 4), torch.float32)
    before = x.detach().clone(), t.clone()
    with pytest.raises(error, match=message):
        fn(x, t)
    assert torch.equal(x.detach(), before[0]) and torch.equal(t, before[1])


def test_legacy_size_average_and_reduce_as_torch(rng):
    x, t = regression_inputs(rng, (4, 3), torch.float64, target_grad=False)
    with pytest.warns(UserWarning, match="size_average and reduce args will be deprecated"):
        got = GF.mse_loss(x, t, size_average=False)
    close(got, torch.nn.functional.mse_loss(x, t, reduction="sum"), "size_average=False")
    with pytest.warns(UserWarning, match="Implicit dimension choice for softmax"):
        got = gt.Softmax()(x)
    close(got, torch.softmax(x, 1), "implicit dim")


# ---- K-d and unbatched losses, softmax's dtype= ---------------------------------------------------------------------
@pytest.mark.parametrize("spatial", [(3,), (2, 3)], ids=str)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_k_dimensional(spatial, reduction, rng):
    n, c = 4, 5
    x = tensor(rng, (n, c, *spatial), torch.float64, requires_grad=True)
    t = torch.from_numpy(rng.integers(0, c, (n, *spatial)))
    assert_same_as_torch(gt.CrossEntropyLoss(reduction=reduction, label_smoothing=0.1),
                         torch.nn.CrossEntropyLoss(reduction=reduction, label_smoothing=0.1), [x, t], rng, "K-d CE")


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_unbatched(reduction, rng):
    x = tensor(rng, (6,), torch.float64, requires_grad=True)
    t = torch.tensor(int(rng.integers(0, 6)))
    assert_same_as_torch(gt.CrossEntropyLoss(reduction=reduction), torch.nn.CrossEntropyLoss(reduction=reduction),
                         [x, t], rng, "unbatched CE")


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_multi_margin_unbatched(reduction, rng):
    x = tensor(rng, (6,), torch.float64, requires_grad=True)
    t = torch.tensor(int(rng.integers(0, 6)))
    assert_same_as_torch(gt.MultiMarginLoss(reduction=reduction), torch.nn.MultiMarginLoss(reduction=reduction),
                         [x, t], rng, "unbatched multi margin")


@pytest.mark.parametrize("fn", ["softmax", "log_softmax"])
def test_softmax_dtype_argument(fn, rng):
    x = tensor(rng, (4, 9), torch.float32, requires_grad=True)
    ref_x = x.detach().clone().requires_grad_(True)
    y = getattr(GF, fn)(x, dim=1, dtype=torch.float64)
    ref_y = getattr(torch.nn.functional, fn)(ref_x, dim=1, dtype=torch.float64)
    close(y, ref_y, f"{fn} dtype=float64")
    dy = tensor(rng, (4, 9), torch.float64)
    y.backward(dy)
    ref_y.backward(dy)
    close(x.grad, ref_x.grad, f"{fn} dtype=float64 gradient")


# ---- the docstring examples run --------------------------------------------------------------------------------------
@pytest.mark.parametrize("module", ["gpunn.torch.functional", "gpunn.torch.modules", "gpunn.torch._patch",
                                    "gpunn.torch.optim"])
def test_doc_examples(module):
    import importlib

    mod = importlib.import_module(module)
    result = doctest.testmod(mod, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0, result


def test_every_public_name_has_an_example():
    for name in gt.__all__ + ["patch"]:
        obj = getattr(gt, name)
        if isinstance(obj, type(gt)):
            continue
        assert obj.__doc__ and ">>>" in obj.__doc__, f"gpunn.torch.{name} has no docstring example"
    for name in GF.__all__ + gt.optim.__all__:
        obj = getattr(GF, name, None) or getattr(gt.optim, name)
        assert obj.__doc__ and ">>>" in obj.__doc__, f"{name} has no docstring example"


# ---- import ----------------------------------------------------------------------------------------------------------
def test_import_gpunn_does_not_import_torch_and_gpunn_torch_says_how_to_get_it():
    import subprocess
    import sys

    code = ("import sys, gpunn; assert 'torch' not in sys.modules, 'gpunn imported torch'\n"
            "sys.modules['torch'] = None  # as if torch were not installed\n"
            "try:\n    import gpunn.torch\nexcept ImportError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "pip install torch" in out.stdout
