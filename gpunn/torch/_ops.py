r"""gpunn's kernels as PyTorch custom ops, ``torch.ops.gpunn.<name>``.

Each op is registered with ``torch.library.custom_op`` together with a fake kernel (output shape and dtype, for
``torch.compile`` to trace through the op without a graph break) and an autograd formula (``register_autograd``)
whose backward is itself a gpunn op, so that the backward graph is traced too. An op hands its tensors to gpunn's
public functions as they are: CPU tensors take the CPU loops without a copy, CUDA tensors the CUDA kernels; outputs
are new C-contiguous tensors. Non-contiguous inputs are copied by gpunn only where a kernel needs it.

Activations: ``<name>(x, ...)``, ``<name>_backward(dy, saved, ...)``, and for the ones with ``inplace=`` in
``torch.nn`` a mutating ``<name>_(x, ...)`` used when no gradient is recorded. The backward reads the input ``x``, or
the output ``y`` where that is enough (relu, sigmoid, tanh, softmax, log_softmax).

Losses: ``<name>(input, target, ..., reduction)`` gives the loss, and ``<name>_with_grad`` the loss and
``d loss / d input`` from one fused pass; autograd saves only that gradient and its backward scales it by the upstream
gradient (:math:`\partial L/\partial x = g \cdot \partial \ell/\partial x`, per row or element for ``'none'``).
"""

from typing import NamedTuple

import numpy as np
import torch

import gpunn

NAMESPACE = "gpunn"
_NUMPY_DTYPES = {torch.float32: np.float32, torch.float64: np.float64}


def _define(name, schema, impl, fake, mutates=()):
    op = torch.library.custom_op(f"{NAMESPACE}::{name}", impl, mutates_args=mutates, schema=schema)
    op.register_fake(fake)
    return op


def _empty_like(x, dtype=None):
    """A fake output: ``x``'s shape and device, C-contiguous (as gpunn's outputs are)."""
    return torch.empty(x.shape, dtype=dtype or x.dtype, device=x.device)


def _schema_args(params):
    return "".join(f", {p}" for p in params)


# ----------------------------------------------------------------------------------------------------------------------
# Activations
# ----------------------------------------------------------------------------------------------------------------------
class Activation(NamedTuple):
    forward: object      # (x, *params) -> y
    backward: object     # (dy, saved, *params) -> dx
    inplace: object      # (x, *params) -> None, writes y into x; None where torch.nn has no inplace=
    saves_input: bool    # the backward reads x (else y)


def _activation(name, params, forward, backward, saves, inplace=False, out_dtype=None):
    """Register ``gpunn::<name>`` and ``gpunn::<name>_backward`` (and ``gpunn::<name>_`` with ``inplace``).

    ``params``: schema entries of the scalar arguments after ``x``; ``forward(x, *params)`` and
    ``backward(dy, saved, *params)`` call gpunn; ``saves``: "input" or "output"; ``out_dtype(x, *params)``: the
    output dtype when it is not ``x``'s."""
    args = _schema_args(params)
    dtype_of = out_dtype or (lambda x, *a: x.dtype)
    fwd = _define(name, f"(Tensor x{args}) -> Tensor", forward, lambda x, *a: _empty_like(x, dtype_of(x, *a)))
    bwd = _define(f"{name}_backward", f"(Tensor dy, Tensor saved{args}) -> Tensor", backward,
                  lambda dy, saved, *a: _empty_like(saved))

    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0] if saves == "input" else output)
        ctx.params = inputs[1:]
        ctx.x_dtype = inputs[0].dtype

    def backward_formula(ctx, dy):
        (saved,) = ctx.saved_tensors
        dx = bwd(dy, saved, *ctx.params)
        return (dx.to(ctx.x_dtype), *([None] * len(ctx.params)))  # .to: a no-op unless softmax's dtype= was used

    fwd.register_autograd(backward_formula, setup_context=setup_context)
    mutating = None
    if inplace:
        def forward_inplace(x, *a):
            forward(x, *a, out=x)

        mutating = _define(f"{name}_", f"(Tensor(a!) x{args}) -> ()", forward_inplace, lambda x, *a: None,
                           mutates=("x",))
    return Activation(fwd, bwd, mutating, saves == "input")


def _softmax_forward(core):
    def forward(x, dim, dtype):
        if dtype is None:
            return core(x, dim)
        return core(x, dim, dtype=_NUMPY_DTYPES[dtype])  # computed and returned in dtype

    return forward


def _softmax_dtype(x, dim, dtype):
    return dtype or x.dtype


# relu saves y: y > 0 exactly where x > 0 (NaN gives 0 either way), and an in-place relu then needs no copy of x
RELU = _activation("relu", [], gpunn.relu, gpunn.relu_backward, "output", inplace=True)
LEAKY_RELU = _activation("leaky_relu", ["float negative_slope"], gpunn.leaky_relu, gpunn.leaky_relu_backward,
                         "input", inplace=True)
SIGMOID = _activation("sigmoid", [], gpunn.sigmoid, gpunn.sigmoid_backward, "output")
TANH = _activation("tanh", [], gpunn.tanh, gpunn.tanh_backward, "output")
GELU = _activation("gelu", ["str approximate"], gpunn.gelu, gpunn.gelu_backward, "input")
SILU = _activation("silu", [], gpunn.silu, gpunn.silu_backward, "input", inplace=True)
ELU = _activation("elu", ["float alpha"], gpunn.elu, gpunn.elu_backward, "input", inplace=True)
SOFTPLUS = _activation("softplus", ["float beta", "float threshold"], gpunn.softplus, gpunn.softplus_backward,
                       "input")
SOFTMAX = _activation("softmax", ["int dim", "ScalarType? dtype"], _softmax_forward(gpunn.softmax),
                      lambda dy, y, dim, dtype: gpunn.softmax_backward(dy, y, dim), "output",
                      out_dtype=_softmax_dtype)
LOG_SOFTMAX = _activation("log_softmax", ["int dim", "ScalarType? dtype"], _softmax_forward(gpunn.log_softmax),
                          lambda dy, y, dim, dtype: gpunn.log_softmax_backward(dy, y, dim), "output",
                          out_dtype=_softmax_dtype)


def _prelu():
    fwd = _define("prelu", "(Tensor x, Tensor weight) -> Tensor", gpunn.prelu, lambda x, w: _empty_like(x))
    bwd = _define("prelu_backward", "(Tensor dy, Tensor x, Tensor weight) -> (Tensor, Tensor)",
                  lambda dy, x, w: tuple(gpunn.prelu_backward(dy, x, w)),
                  lambda dy, x, w: (_empty_like(x), _empty_like(w)))

    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs)

    def backward_formula(ctx, dy):
        x, weight = ctx.saved_tensors
        return bwd(dy, x, weight)  # (dx, dweight)

    fwd.register_autograd(backward_formula, setup_context=setup_context)
    return fwd


PRELU = _prelu()


# ----------------------------------------------------------------------------------------------------------------------
# Losses
# ----------------------------------------------------------------------------------------------------------------------
class Loss(NamedTuple):
    forward: object      # (input, target, *params, reduction) -> loss
    with_grad: object    # (input, target, *params, reduction) -> (loss, dinput); differentiable in its loss


def _loss_shape(x, reduction, rows):
    """The loss's shape: () when reduced; else the input's, less the class axis (1, or 0 for one sample) for a
    loss over rows of classes."""
    if reduction != "none":
        return ()
    if not rows:
        return x.shape
    shape = list(x.shape)
    del shape[1 if x.dim() >= 2 else 0]
    return shape


def _loss(name, params, forward, with_grad, rows=False, target_grad=False):
    """Register ``gpunn::<name>`` and ``gpunn::<name>_with_grad`` for a loss ``forward(input, target, *params,
    reduction)``. ``rows``: one loss per row of classes (cross entropy, multi margin), else per element.
    ``target_grad``: the loss depends on ``input - target`` only, so d/d target = -d/d input."""
    schema = f"(Tensor input, Tensor target{_schema_args(params)}, str reduction)"

    def fake_loss(x, t, *a):
        return x.new_empty(_loss_shape(x, a[-1], rows))

    fwd = _define(name, f"{schema} -> Tensor", forward, fake_loss)
    both = _define(f"{name}_with_grad", f"{schema} -> (Tensor, Tensor)",
                   lambda x, t, *a: tuple(with_grad(x, t, *a)),
                   lambda x, t, *a: (fake_loss(x, t, *a), _empty_like(x)))

    def setup_context(ctx, inputs, output):
        ctx.mark_non_differentiable(output[1])
        ctx.save_for_backward(output[1])
        ctx.n_after_target = len(inputs) - 2
        ctx.per_row = rows and inputs[-1] == "none" and inputs[0].dim() >= 2

    def backward_formula(ctx, dloss, _):
        (dinput,) = ctx.saved_tensors
        if ctx.per_row:
            dloss = dloss.unsqueeze(1)    # one upstream value per row, over its classes
        dx = dinput * dloss
        return (dx, -dx if target_grad else None, *([None] * ctx.n_after_target))

    both.register_autograd(backward_formula, setup_context=setup_context)
    return Loss(fwd, both)


MSE = _loss("mse_loss", [], gpunn.mse_loss, gpunn.mse_loss_with_grad, target_grad=True)
L1 = _loss("l1_loss", [], gpunn.l1_loss, gpunn.l1_loss_with_grad, target_grad=True)
HUBER = _loss("huber_loss", ["float delta"], gpunn.huber_loss, gpunn.huber_loss_with_grad, target_grad=True)
SMOOTH_L1 = _loss("smooth_l1_loss", ["float beta"], gpunn.smooth_l1_loss, gpunn.smooth_l1_loss_with_grad,
                  target_grad=True)
BCE_WITH_LOGITS = _loss("binary_cross_entropy_with_logits", ["Tensor? weight", "Tensor? pos_weight"],
                        gpunn.binary_cross_entropy_with_logits, gpunn.binary_cross_entropy_with_logits_with_grad)
HINGE = _loss("hinge_loss", ["float margin"], gpunn.hinge_loss, gpunn.hinge_loss_with_grad)
CROSS_ENTROPY = _loss("cross_entropy", ["Tensor? weight", "int ignore_index", "float label_smoothing"],
                      gpunn.cross_entropy, gpunn.cross_entropy_with_grad, rows=True)
MULTI_MARGIN = _loss("multi_margin_loss", ["int p", "float margin", "Tensor? weight"], gpunn.multi_margin_loss,
                     gpunn.multi_margin_loss_with_grad, rows=True)
