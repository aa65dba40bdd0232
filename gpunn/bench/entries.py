"""The benchmark entries: one per op, each with its napkin math (the bytes it must move).

Byte counts: ``s`` is the item size (4 for float32), ``n`` the element count, ``N x C`` a row-wise shape. Every input
is read once and every output written once; scalars (a reduced loss) count their ``s`` bytes, int64 targets 8 bytes.

Providers per entry: ``gpunn``; ``torch`` (the kernels PyTorch itself runs: ``aten.*_backward`` for activation
gradients, autograd fwd+bwd for losses, ``torch.optim`` with ``fused=True`` where it exists); ``xp``: naive array
expressions run by NumPy on the CPU and by CuPy on the GPU (the "what you would write by hand" baseline).
"""

from __future__ import annotations

import math

import numpy as np

from .core import Entry, Size, accepts, call_with, gpunn_attr, rows_cols

SQRT2 = math.sqrt(2.0)
GELU_K = math.sqrt(2.0 / math.pi)


RANDOM_BLOCK = 1 << 22


def _randn(rng, shape, dtype):
    """Standard normal data; beyond 2^22 elements a random block is tiled (drawing 2^26 or 2^29 fresh numbers per
    input set would take longer than timing the op; a bandwidth-bound op does not care)."""
    n = int(np.prod(shape, dtype=np.int64))
    if n <= RANDOM_BLOCK:
        return rng.standard_normal(shape, dtype=dtype)
    block = rng.standard_normal(RANDOM_BLOCK - int(rng.integers(0, 1024)), dtype=dtype)  # not a power-of-2 period
    return np.resize(block, n).reshape(shape)


def _g(name):
    return gpunn_attr(name)


def _erf(ctx):
    if ctx.backend == "cpu":
        from scipy.special import erf
    else:
        from cupyx.scipy.special import erf
    return erf


# ----------------------------------------------------------------------------------------------------------------------
# Activations: forward and backward
# ----------------------------------------------------------------------------------------------------------------------
def _A():
    import torch

    return torch.ops.aten


class Act:
    """One activation: gpunn names, parameters, what the backward saves, the torch kernels, the naive formulas."""

    def __init__(self, name, saved, torch_fwd, torch_bwd, xp_fwd, xp_bwd, params=None, rowwise=False):
        self.name, self.saved, self.params, self.rowwise = name, saved, params or {}, rowwise
        self.torch_fwd, self.torch_bwd, self.xp_fwd, self.xp_bwd = torch_fwd, torch_bwd, xp_fwd, xp_bwd


def _np_sigmoid(x):
    with np.errstate(over="ignore"):
        return 1 / (1 + np.exp(-x))


def _np_softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _np_log_softmax(x):
    z = x - x.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


SAVED_Y = {"sigmoid": _np_sigmoid, "tanh": np.tanh, "softmax": _np_softmax, "log_softmax": _np_log_softmax}


def _gelu_none_bwd(xp, ctx, dy, x, out):
    cdf = 0.5 * (1 + _erf(ctx)(x / SQRT2))
    pdf = xp.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)
    out[...] = dy * (cdf + x * pdf)


def _gelu_tanh_fwd(xp, ctx, x, out):
    out[...] = 0.5 * x * (1 + xp.tanh(GELU_K * (x + 0.044715 * x * x * x)))


def _gelu_tanh_bwd(xp, ctx, dy, x, out):
    t = xp.tanh(GELU_K * (x + 0.044715 * x * x * x))
    du = GELU_K * (1 + 3 * 0.044715 * x * x)
    out[...] = dy * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * du)


def _sig(xp, x):
    return 1 / (1 + xp.exp(-x))


ACTIVATIONS = [
    Act("relu", "x",
        lambda T, x, y: T.clamp_min(x, 0, out=y),
        lambda T, dy, x, dx: _A().threshold_backward.grad_input(dy, x, 0, grad_input=dx),
        lambda xp, c, x, y: xp.maximum(x, 0, out=y),
        lambda xp, c, dy, x, dx: xp.multiply(dy, x > 0, out=dx)),
    Act("leaky_relu", "x",
        lambda T, x, y: T._C._nn.leaky_relu(x, 0.01, out=y),
        lambda T, dy, x, dx: _A().leaky_relu_backward.grad_input(dy, x, 0.01, False, grad_input=dx),
        lambda xp, c, x, y: y.__setitem__(Ellipsis, xp.where(x > 0, x, x * 0.01)),
        lambda xp, c, dy, x, dx: dx.__setitem__(Ellipsis, xp.where(x > 0, dy, dy * 0.01)),
        params={"negative_slope": 0.01}),
    Act("sigmoid", "y",
        lambda T, x, y: T.sigmoid(x, out=y),
        lambda T, dy, y, dx: _A().sigmoid_backward.grad_input(dy, y, grad_input=dx),
        lambda xp, c, x, y: y.__setitem__(Ellipsis, _sig(xp, x)),
        lambda xp, c, dy, y, dx: dx.__setitem__(Ellipsis, dy * y * (1 - y))),
    Act("tanh", "y",
        lambda T, x, y: T.tanh(x, out=y),
        lambda T, dy, y, dx: _A().tanh_backward.grad_input(dy, y, grad_input=dx),
        lambda xp, c, x, y: xp.tanh(x, out=y),
        lambda xp, c, dy, y, dx: dx.__setitem__(Ellipsis, dy * (1 - y * y))),
    Act("gelu", "x",
        lambda T, x, y: T._C._nn.gelu(x, approximate="none", out=y),
        lambda T, dy, x, dx: _A().gelu_backward.grad_input(dy, x, approximate="none", grad_input=dx),
        lambda xp, c, x, y: y.__setitem__(Ellipsis, 0.5 * x * (1 + _erf(c)(x / SQRT2))),
        lambda xp, c, dy, x, dx: _gelu_none_bwd(xp, c, dy, x, dx),
        params={"approximate": "none"}),
    Act("gelu_tanh", "x",
        lambda T, x, y: T._C._nn.gelu(x, approximate="tanh", out=y),
        lambda T, dy, x, dx: _A().gelu_backward.grad_input(dy, x, approximate="tanh", grad_input=dx),
        lambda xp, c, x, y: _gelu_tanh_fwd(xp, c, x, y),
        lambda xp, c, dy, x, dx: _gelu_tanh_bwd(xp, c, dy, x, dx),
        params={"approximate": "tanh"}),
    Act("silu", "x",
        lambda T, x, y: T._C._nn.silu(x, out=y),
        lambda T, dy, x, dx: _A().silu_backward.grad_input(dy, x, grad_input=dx),
        lambda xp, c, x, y: y.__setitem__(Ellipsis, x * _sig(xp, x)),
        lambda xp, c, dy, x, dx: dx.__setitem__(Ellipsis, dy * _sig(xp, x) * (1 + x * (1 - _sig(xp, x))))),
    Act("elu", "x",
        lambda T, x, y: T._C._nn.elu(x, 1.0, 1, 1, out=y),
        lambda T, dy, x, dx: _A().elu_backward.grad_input(dy, 1.0, 1, 1, False, x, grad_input=dx),
        lambda xp, c, x, y: y.__setitem__(Ellipsis, xp.where(x > 0, x, xp.exp(x) - 1)),
        lambda xp, c, dy, x, dx: dx.__setitem__(Ellipsis, xp.where(x > 0, dy, dy * xp.exp(x))),
        params={"alpha": 1.0}),
    Act("softplus", "x",
        lambda T, x, y: T._C._nn.softplus(x, 1, 20, out=y),
        lambda T, dy, x, dx: _A().softplus_backward.grad_input(dy, x, 1, 20, grad_input=dx),
        lambda xp, c, x, y: y.__setitem__(Ellipsis, xp.where(x > 20, x, xp.log1p(xp.exp(x)))),
        lambda xp, c, dy, x, dx: dx.__setitem__(Ellipsis, xp.where(x > 20, dy, dy * _sig(xp, x))),
        params={"beta": 1.0, "threshold": 20.0}),
    Act("softmax", "y",
        lambda T, x, y: _A()._softmax.out(x, -1, False, out=y),
        lambda T, dy, y, dx: _A()._softmax_backward_data.out(dy, y, -1, y.dtype, grad_input=dx),
        lambda xp, c, x, y: _xp_softmax(xp, x, y),
        lambda xp, c, dy, y, dx: dx.__setitem__(Ellipsis, y * (dy - (dy * y).sum(axis=-1, keepdims=True))),
        rowwise=True),
    Act("log_softmax", "y",
        lambda T, x, y: _A()._log_softmax.out(x, -1, False, out=y),
        lambda T, dy, y, dx: _A()._log_softmax_backward_data.out(dy, y, -1, y.dtype, out=dx),
        lambda xp, c, x, y: _xp_log_softmax(xp, x, y),
        lambda xp, c, dy, y, dx: dx.__setitem__(Ellipsis, dy - xp.exp(y) * dy.sum(axis=-1, keepdims=True)),
        rowwise=True),
]


def _xp_softmax(xp, x, y):
    e = xp.exp(x - x.max(axis=-1, keepdims=True))
    y[...] = e / e.sum(axis=-1, keepdims=True)


def _xp_log_softmax(xp, x, y):
    z = x - x.max(axis=-1, keepdims=True)
    y[...] = z - xp.log(xp.exp(z).sum(axis=-1, keepdims=True))


def _gpunn_name(act):
    return "gelu" if act.name == "gelu_tanh" else act.name


def _gpunn_kwargs(act, fn):
    kw = dict(act.params)
    if act.rowwise:  # softmax over the last axis, whatever the argument is called
        kw.update(axis=-1) if accepts(fn, "axis") else (kw.update(dim=-1) if accepts(fn, "dim") else None)
    return kw


def _n(shape) -> int:
    return int(np.prod(shape, dtype=np.int64))


def _act_shape(act, size: Size):
    return rows_cols(size) if act.rowwise else (size.n,)


def _act_fwd_entry(act):
    gname = _gpunn_name(act)

    def make(size, dtype, rng):
        shape = _act_shape(act, size)
        return {"x": _randn(rng, shape, dtype), "out": np.empty(shape, dtype)}

    def gpunn_impl(a, ctx):
        fn = _g(gname)
        kw = _gpunn_kwargs(act, fn)
        return lambda: call_with(fn, a["x"], out=a["out"], **kw)

    def torch_impl(a, ctx):
        T = ctx.torch
        return lambda: act.torch_fwd(T, a["x"], a["out"])

    def xp_impl(a, ctx):
        return lambda: act.xp_fwd(ctx.xp, ctx, a["x"], a["out"])

    return Entry(f"{act.name}.fwd", "activations", "read x, write y: 2*n*s bytes",
                 lambda size, dt: 2 * _n(_act_shape(act, size)) * dt.itemsize, make,
                 {"gpunn": gpunn_impl, "torch": torch_impl, "xp": xp_impl}, requires=(gname,),
                 shape=lambda size: _act_shape(act, size),
                 notes={"torch": f"torch {act.name} forward kernel with out="})


def _act_bwd_entry(act):
    gname = _gpunn_name(act)
    saved = "y" if act.saved == "y" else "x"

    def make(size, dtype, rng):
        shape = _act_shape(act, size)
        x = _randn(rng, shape, dtype)
        s = SAVED_Y[act.name](x).astype(dtype) if saved == "y" else x
        return {"dy": _randn(rng, shape, dtype), "s": s, "out": np.empty(shape, dtype)}

    def gpunn_impl(a, ctx):
        fn = _g(gname + "_backward")
        kw = _gpunn_kwargs(act, fn)
        return lambda: call_with(fn, a["dy"], a["s"], out=a["out"], **kw)

    def torch_impl(a, ctx):
        T = ctx.torch
        return lambda: act.torch_bwd(T, a["dy"], a["s"], a["out"])

    def xp_impl(a, ctx):
        return lambda: act.xp_bwd(ctx.xp, ctx, a["dy"], a["s"], a["out"])

    return Entry(f"{act.name}.bwd", "activations", f"read dy and {saved}, write dx: 3*n*s bytes",
                 lambda size, dt: 3 * _n(_act_shape(act, size)) * dt.itemsize, make,
                 {"gpunn": gpunn_impl, "torch": torch_impl, "xp": xp_impl}, requires=(gname + "_backward",),
                 shape=lambda size: _act_shape(act, size),
                 notes={"torch": f"aten {act.name} backward kernel (what autograd runs) with out="})


# PReLU has a weight per channel (axis 1) and its backward also reduces dweight: its own entries.
PRELU_C = 256


def _prelu_shape(size):
    if len(size.shape) == 2:
        return size.shape
    c = min(PRELU_C, size.n)
    return (max(1, size.n // c), c)


def _torch_prelu_bwd(dy, x, w):
    dx, dw = _A()._prelu_kernel_backward(dy, x, w)  # dw per element; autograd then sums it to the weight's shape
    return dx, dw.sum(dim=0)


def _prelu_entries():
    def make_fwd(size, dtype, rng):
        shape = _prelu_shape(size)
        return {"x": _randn(rng, shape, dtype), "w": np.full(shape[1], 0.25, dtype),
                "out": np.empty(shape, dtype)}

    def make_bwd(size, dtype, rng):
        d = make_fwd(size, dtype, rng)
        d.update(dy=_randn(rng, d["x"].shape, dtype), dw=np.empty(d["w"].shape, dtype))
        return d

    def xp_fwd(a, ctx):
        xp = ctx.xp
        return lambda: a["out"].__setitem__(Ellipsis, xp.where(a["x"] > 0, a["x"], a["w"] * a["x"]))

    def xp_bwd(a, ctx):
        xp = ctx.xp

        def f():
            x, dy = a["x"], a["dy"]
            a["out"][...] = xp.where(x > 0, dy, a["w"] * dy)
            a["dw"][...] = ((x <= 0) * x * dy).sum(axis=0)
        return f

    fwd = Entry("prelu.fwd", "activations", "read x and weight (C), write y: 2*n*s + C*s bytes",
                lambda size, dt: (2 * _n(_prelu_shape(size)) + _prelu_shape(size)[1]) * dt.itemsize, make_fwd,
                {"gpunn": lambda a, c: (lambda: _g("prelu")(a["x"], a["w"], out=a["out"])),
                 "torch": lambda a, c: (lambda: _A()._prelu_kernel(a["x"], a["w"])),
                 "xp": xp_fwd},
                requires=("prelu",), shape=_prelu_shape,
                notes={"torch": "aten._prelu_kernel (no out= variant: allocates y)"})
    bwd = Entry("prelu.bwd", "activations", "read dy, x and weight (C), write dx and dweight (C): 3*n*s + 2*C*s bytes",
                lambda size, dt: (3 * _n(_prelu_shape(size)) + 2 * _prelu_shape(size)[1]) * dt.itemsize, make_bwd,
                {"gpunn": lambda a, c: (lambda: _g("prelu_backward")(a["dy"], a["x"], a["w"], out=(a["out"], a["dw"]))),
                 "torch": lambda a, c: (lambda: _torch_prelu_bwd(a["dy"], a["x"], a["w"])),
                 "xp": xp_bwd},
                requires=("prelu_backward",), shape=_prelu_shape,
                notes={"torch": "aten._prelu_kernel_backward, then dweight summed over the batch axis (as autograd)"})
    return [fwd, bwd]


# ----------------------------------------------------------------------------------------------------------------------
# Losses with gradient (reduction "mean")
# ----------------------------------------------------------------------------------------------------------------------
class Loss:
    def __init__(self, name, gnames, torch_loss, xp_loss_grad, target="normal", params=None, rowwise=False,
                 torch_note=None):
        self.name, self.gnames, self.params, self.rowwise, self.target = name, gnames, params or {}, rowwise, target
        self.torch_note = torch_note
        self.torch_loss, self.xp_loss_grad = torch_loss, xp_loss_grad


def _xp_mse(xp, x, t):
    d = x - t
    return (d * d).mean(), d * (2 / x.size)


def _xp_l1(xp, x, t):
    d = x - t
    return xp.abs(d).mean(), xp.sign(d) / x.size


def _xp_huber(delta):
    def f(xp, x, t):
        d = x - t
        ad = xp.abs(d)
        small = ad < delta
        loss = xp.where(small, 0.5 * d * d, delta * (ad - 0.5 * delta)).mean()
        return loss, xp.where(small, d, delta * xp.sign(d)) / x.size
    return f


def _xp_smooth_l1(beta):
    h = _xp_huber(beta)

    def f(xp, x, t):
        loss, g = h(xp, x, t)
        return loss / beta, g / beta
    return f


def _xp_bce_logits(xp, x, t):
    logsig = xp.minimum(x, 0) - xp.log1p(xp.exp(-xp.abs(x)))
    loss = ((1 - t) * x - logsig).mean()
    return loss, (1 / (1 + xp.exp(-x)) - t) / x.size


def _xp_hinge(xp, x, t):
    m = 1 - t * x
    return xp.maximum(m, 0).mean(), xp.where(m > 0, -t, 0) / x.size


def _xp_cross_entropy(xp, x, y):
    n = x.shape[0]
    z = x - x.max(axis=1, keepdims=True)
    e = xp.exp(z)
    s = e.sum(axis=1, keepdims=True)
    rows = xp.arange(n)
    loss = (xp.log(s[:, 0]) - z[rows, y]).mean()
    g = e / s
    g[rows, y] -= 1
    return loss, g / n


def _xp_multi_margin(xp, x, y):
    n, c = x.shape
    rows = xp.arange(n)
    m = 1 - x[rows, y][:, None] + x
    m[rows, y] = 0
    pos = m > 0
    loss = (xp.maximum(m, 0).sum(axis=1) / c).mean()
    g = pos / (c * n)
    g[rows, y] = -pos.sum(axis=1) / (c * n)
    return loss, g.astype(x.dtype)


def _torch_hinge(T, x, t):
    return T.clamp(1 - t * x, min=0).mean()


LOSSES = [
    Loss("mse_loss", ("mse_loss_with_grad",), lambda T, x, t: T.nn.functional.mse_loss(x, t), _xp_mse),
    Loss("l1_loss", ("l1_loss_with_grad",), lambda T, x, t: T.nn.functional.l1_loss(x, t), _xp_l1),
    Loss("huber_loss", ("huber_loss_with_grad",), lambda T, x, t: T.nn.functional.huber_loss(x, t, delta=1.0),
         _xp_huber(1.0), params={"delta": 1.0}),
    Loss("smooth_l1_loss", ("smooth_l1_loss_with_grad",),
         lambda T, x, t: T.nn.functional.smooth_l1_loss(x, t, beta=1.0), _xp_smooth_l1(1.0), params={"beta": 1.0}),
    Loss("binary_cross_entropy_with_logits",
         ("binary_cross_entropy_with_logits_with_grad", "bce_with_logits_with_grad"),
         lambda T, x, t: T.nn.functional.binary_cross_entropy_with_logits(x, t), _xp_bce_logits, target="prob"),
    Loss("hinge_loss", ("hinge_loss_with_grad", "hinge_embedding_loss_with_grad"), _torch_hinge, _xp_hinge,
         target="sign", torch_note="autograd of clamp(1 - t*x, min=0).mean(): PyTorch has no binary hinge loss"),
    Loss("multi_margin_loss", ("multi_margin_loss_with_grad",),
         lambda T, x, y: T.nn.functional.multi_margin_loss(x, y), _xp_multi_margin, target="class", rowwise=True),
    Loss("cross_entropy", ("cross_entropy_with_grad", "cross_entropy_loss_with_grad"),
         lambda T, x, y: T.nn.functional.cross_entropy(x, y), _xp_cross_entropy, target="class", rowwise=True),
]


def _first_attr(names):
    for n in names:
        if _g(n) is not None:
            return n
    return None


def _loss_entry(loss):
    def make(size, dtype, rng):
        if loss.rowwise:
            n, c = rows_cols(size)
            return {"x": _randn(rng, (n, c), dtype), "t": rng.integers(0, c, n, dtype=np.int64)}
        n = size.n
        x = _randn(rng, n, dtype)
        if loss.target == "prob":
            t = rng.random(n, dtype=dtype)
        elif loss.target == "sign":
            t = np.where(rng.random(n) < 0.5, -1, 1).astype(dtype)
        else:
            t = _randn(rng, n, dtype)
        return {"x": x, "t": t}

    def nbytes(size, dt):
        if loss.rowwise:
            n, c = rows_cols(size)
            return 2 * n * c * dt.itemsize + 8 * n + dt.itemsize
        return 3 * size.n * dt.itemsize + dt.itemsize

    def gpunn_impl(a, ctx):
        fn = _g(_first_attr(loss.gnames))
        x = a["x"]
        if accepts(fn, "out"):  # a preallocated gradient where the API takes one (PyTorch has its allocator cache)
            from .._arrays import empty_like

            dx = empty_like(x, x.shape, ctx.dtype)
            return lambda: call_with(fn, x, a["t"], reduction="mean", out=dx, **loss.params)
        return lambda: call_with(fn, x, a["t"], reduction="mean", **loss.params)

    def torch_impl(a, ctx):
        T = ctx.torch
        x = a["x"].detach().requires_grad_(True)

        def f():
            out = loss.torch_loss(T, x, a["t"])
            (dx,) = T.autograd.grad(out, x)
            return out, dx
        return f

    def xp_impl(a, ctx):
        return lambda: loss.xp_loss_grad(ctx.xp, a["x"], a["t"])

    if loss.rowwise:
        napkin = "read logits (N*C*s) and int64 targets (8*N), write dlogits (N*C*s) and the loss (s)"
    else:
        napkin = "read x and target, write dx and the loss: 3*n*s + s bytes"
    return Entry(f"{loss.name}.grad", "losses", napkin, nbytes, make,
                 {"gpunn": gpunn_impl, "torch": torch_impl, "xp": xp_impl},
                 requires=("|".join(loss.gnames),),
                 shape=(lambda size: rows_cols(size)) if loss.rowwise else (lambda size: (size.n,)),
                 notes={"gpunn": "loss and gradient from one call (*_with_grad), reduction mean",
                        "torch": loss.torch_note
                        or "autograd: loss forward + torch.autograd.grad (fwd+bwd as training runs it)"})


# ----------------------------------------------------------------------------------------------------------------------
# Optimizer steps: one array, 200 arrays of mixed sizes, and 200 views of one buffer (the "flat" variant)
# ----------------------------------------------------------------------------------------------------------------------
MULTI = 200


def split_sizes(n: int, k: int = MULTI, seed: int = 1) -> list[int]:
    """``k`` mixed sizes (log-uniform over three decades) summing to ``n``, the same for every run."""
    if n < k:
        raise ValueError(f"{n} elements cannot make {k} tensors")
    w = np.exp(np.random.default_rng(seed).uniform(0, math.log(1000), k))
    sizes = np.floor(w / w.sum() * (n - k)).astype(np.int64) + 1
    sizes[int(np.argmax(sizes))] += n - int(sizes.sum())
    return [int(s) for s in sizes]


class Opt:
    """An optimizer: gpunn class name, hyperparameters, torch constructor kwargs, state arrays, naive step."""

    def __init__(self, name, gname, hyper, torch_cls, torch_kw, state_names, xp_step, nbytes_per_elem, napkin):
        self.name, self.gname, self.hyper, self.torch_cls, self.torch_kw = name, gname, hyper, torch_cls, torch_kw
        self.state_names, self.xp_step, self.per_elem, self.napkin = state_names, xp_step, nbytes_per_elem, napkin


def _xp_sgd_momentum(nesterov):
    def step(xp, p, g, st, t, h):
        b = st["b"]
        if t == 1:
            b[...] = g
        else:
            b *= h["momentum"]
            b += g
        p -= h["lr"] * (g + h["momentum"] * b if nesterov else b)
    return step


def _xp_sgd(xp, p, g, st, t, h):
    p -= h["lr"] * g


def _xp_adam(decoupled):
    def step(xp, p, g, st, t, h):
        b1, b2 = h["betas"]
        if decoupled:
            p *= 1 - h["lr"] * h["weight_decay"]
        m, v = st["m"], st["v"]
        m *= b1
        m += (1 - b1) * g
        v *= b2
        v += (1 - b2) * g * g
        denom = xp.sqrt(v) / math.sqrt(1 - b2 ** t) + h["eps"]
        p -= h["lr"] / (1 - b1 ** t) * m / denom
    return step


def _xp_rmsprop(xp, p, g, st, t, h):
    v = st["v"]
    v *= h["alpha"]
    v += (1 - h["alpha"]) * g * g
    p -= h["lr"] * g / (xp.sqrt(v) + h["eps"])


OPTIMIZERS = [
    Opt("adam", "Adam", {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8}, "Adam", {}, ("m", "v"), _xp_adam(False), 7,
        "read p, g, m, v; write p, m, v: 7*n*s bytes"),
    Opt("adamw", "AdamW", {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 1e-2}, "AdamW", {},
        ("m", "v"), _xp_adam(True), 7, "read p, g, m, v; write p, m, v: 7*n*s bytes"),
    Opt("sgd", "SGD", {"lr": 1e-2}, "SGD", {}, (), _xp_sgd, 3, "read p, g; write p: 3*n*s bytes"),
    Opt("sgd_momentum", "SGD", {"lr": 1e-2, "momentum": 0.9}, "SGD", {}, ("b",), _xp_sgd_momentum(False), 5,
        "read p, g, b; write p, b: 5*n*s bytes"),
    Opt("nag", "SGD", {"lr": 1e-2, "momentum": 0.9, "nesterov": True}, "SGD", {}, ("b",), _xp_sgd_momentum(True), 5,
        "read p, g, b; write p, b: 5*n*s bytes"),
    Opt("rmsprop", "RMSprop", {"lr": 1e-2, "alpha": 0.99, "eps": 1e-8}, "RMSprop", {}, ("v",), _xp_rmsprop, 5,
        "read p, g, v; write p, v: 5*n*s bytes"),
]


def torch_optimizer(T, cls_name, params, hyper):
    """``torch.optim.<cls>(params, fused=True)`` where PyTorch has a fused kernel for this device and dtype, else
    ``foreach=True``; returns (optimizer, how). Each variant is tried on a small probe tensor first (PyTorch may
    check fused support only at the first step), so the real parameters are not stepped here."""
    cls = getattr(T.optim, cls_name)
    for variant in ({"fused": True}, {"foreach": True}, {}):
        probe = T.zeros(4, dtype=params[0].dtype, device=params[0].device)
        probe.grad = T.ones_like(probe)
        try:
            cls([probe], **hyper, **variant).step()
            opt = cls(params, **hyper, **variant)
        except (RuntimeError, TypeError, ValueError):
            continue
        how = f"torch.optim.{cls_name}(" + ", ".join(f"{k}={v}" for k, v in variant.items()) + ")"
        return opt, how
    raise RuntimeError(f"torch.optim.{cls_name} could not be built")


def make_gpunn_step(opt, params, grads, dtype):
    """A zero-argument callable doing one gpunn step of ``opt`` over the lists ``params`` and ``grads``.

    gpunn.optim's optimizer classes take the parameter list and the hyperparameters; ``step(grads)`` updates the
    parameters in place: one launch per dtype for any number of arrays (a table of their addresses)."""
    cls = _g("optim." + opt.gname)
    o = cls(params, **opt.hyper)
    return lambda: o.step(grads)


def flatten_inputs(a):
    """The "flat" variant's setup, the same for every provider: the 200 parameters and the 200 gradients are copied
    into one buffer each (``gpunn.optim.flatten``), and ``a["p"]`` / ``a["g"]`` then hold the 200 views of those
    buffers in place of the separate arrays (so a caller reading ``a["p"]`` sees the stepped parameters, and the
    separate copies are freed). Returns (flat params, flat grads)."""
    flatten = _g("optim.flatten")
    flat_p, views = flatten(a["p"])
    flat_g, gviews = flatten(a["g"])
    a["p"][:] = views
    a["g"][:] = gviews
    return flat_p, flat_g


def _opt_entry(opt, multi: bool, family="optimizers", name=None, default_sizes=None, flat=False):
    """One optimizer step over one array (``multi`` False), 200 separate arrays, or (``flat``) 200 views of one
    buffer, where gpunn steps the buffer itself: one launch instead of ceil(200 / 24) = 9."""
    def sizes_of(size):
        if not multi:
            return [size.n]
        if len(size.shape) == 2:  # "200x64": 200 tensors of 64 elements (the launch-overhead line)
            return [size.shape[1]] * size.shape[0]
        return split_sizes(size.n)

    def make(size, dtype, rng):
        ns = sizes_of(size)
        return {"p": [_randn(rng, k, dtype) for k in ns],
                "g": [_randn(rng, k, dtype) * dtype.type(1e-2) for k in ns]}

    def gpunn_impl(a, ctx):
        if flat:
            flat_p, flat_g = flatten_inputs(a)
            return make_gpunn_step(opt, [flat_p], [flat_g], ctx.dtype)
        return make_gpunn_step(opt, a["p"], a["g"], ctx.dtype)

    def torch_impl(a, ctx):
        T = ctx.torch
        if flat:
            flatten_inputs(a)
        params = []
        for p, g in zip(a["p"], a["g"]):
            p.grad = g
            params.append(p)
        o, how = torch_optimizer(T, opt.torch_cls, params, opt.hyper)
        ctx.note = how + (" over the 200 views" if flat else "")
        return o.step

    def xp_impl(a, ctx):
        xp = ctx.xp
        if flat:
            flatten_inputs(a)
        states = [{k: xp.zeros_like(p) for k in opt.state_names} for p in a["p"]]
        t = [0]

        def f():
            t[0] += 1
            for p, g, st in zip(a["p"], a["g"], states):
                opt.xp_step(xp, p, g, st, t[0], opt.hyper)
        return f

    if not multi:
        gnote = f"gpunn.optim.{opt.gname}: one fused launch"
    elif flat:
        gnote = (f"gpunn.optim.{opt.gname} on the one buffer the 200 tensors view (gpunn.optim.flatten): "
                 "one fused launch")
    else:
        gnote = (f"gpunn.optim.{opt.gname} on 200 separate tensors: fused, ceil(200 / 24) = 9 launches "
                 "(24 tensors per launch)")
    suffix = ".x200flat" if flat else (".x200" if multi else ".x1")
    what = " (over all 200 tensors" + (", views of one buffer)" if flat else ")") if multi else ""
    return Entry(name or f"{opt.name}{suffix}", family, opt.napkin + what,
                 lambda size, dt: opt.per_elem * size.n * dt.itemsize, make,
                 {"gpunn": gpunn_impl, "torch": torch_impl, "xp": xp_impl},
                 requires=("optim." + opt.gname,) + (("optim.flatten",) if flat else ()),
                 max_sets=8, default_sizes=default_sizes,
                 notes={"gpunn": gnote,
                        "xp": "naive per-tensor loop of array expressions" + (" over the 200 views" if flat else "")})


# ----------------------------------------------------------------------------------------------------------------------
ENTRIES: list[Entry] = []
for _act in ACTIVATIONS:
    ENTRIES += [_act_fwd_entry(_act), _act_bwd_entry(_act)]
ENTRIES[4:4] = _prelu_entries()  # after relu and leaky_relu
ENTRIES += [_loss_entry(_loss) for _loss in LOSSES]
for _opt in OPTIMIZERS:
    ENTRIES += [_opt_entry(_opt, False), _opt_entry(_opt, True), _opt_entry(_opt, True, flat=True)]
# Launch overhead: one Adam step over 200 tiny tensors (64 elements each) is all fixed cost: 9 launches for separate
# tensors, 1 for views of one buffer.
ENTRIES.append(_opt_entry(OPTIMIZERS[0], True, family="launch", name="launch.adam.x200", default_sizes=("200x64",)))
ENTRIES.append(_opt_entry(OPTIMIZERS[0], True, family="launch", name="launch.adam.x200flat", default_sizes=("200x64",),
                          flat=True))
