r"""``torch.nn.functional``'s activations and losses, computed by gpunn, with autograd and ``torch.compile`` support.

Same names, arguments and defaults as ``torch.nn.functional`` (``inplace=`` included), plus :func:`hinge_loss`.
Inputs are float32 or float64 tensors on the CPU (gpunn's CPU loops, no copy) or on a CUDA device (gpunn's CUDA
kernels); every tensor of a call must be on one device. Arguments are checked before any kernel runs: a wrong type is
a TypeError, a wrong value a ValueError, tensors on two devices PyTorch's RuntimeError, each naming the argument.
The definitions are PyTorch's; the module docstrings of ``gpunn.activations`` and ``gpunn.losses`` give the
formulas and the few documented differences.
"""

import torch

from . import _checks, _ops

__all__ = [
    "relu", "leaky_relu", "prelu", "sigmoid", "tanh", "gelu", "silu", "elu", "softplus", "softmax", "log_softmax",
    "mse_loss", "l1_loss", "huber_loss", "smooth_l1_loss", "binary_cross_entropy_with_logits", "cross_entropy",
    "multi_margin_loss", "hinge_loss",
]


# ----------------------------------------------------------------------------------------------------------------------
# Activations
# ----------------------------------------------------------------------------------------------------------------------
def _activate(act, x, inplace, *params):
    """``act(x, *params)``, or written into ``x`` with ``inplace`` (returning ``x``, as torch does)."""
    _checks.floating("input", x)
    _checks.same_device(input=x)
    if not inplace:
        return act.forward(x, *params)
    _checks.inplace_allowed(x)
    recording = torch.is_grad_enabled() and x.requires_grad
    if not recording and x.is_contiguous():
        act.inplace(x, *params)    # no autograd: the kernel writes x directly
        return x
    # autograd saves what the backward reads: x must survive its own overwrite when that is x
    y = act.forward(x.clone() if recording and act.saves_input else x, *params)
    return x.copy_(y)


def relu(input, inplace=False):
    r""":math:`\max(x, 0)`, like ``torch.nn.functional.relu``.

    Example:
        >>> import torch, gpunn.torch.functional as GF
        >>> GF.relu(torch.tensor([-1.0, 0.5]))
        tensor([0.0000, 0.5000])
    """
    return _activate(_ops.RELU, input, inplace)


def leaky_relu(input, negative_slope=0.01, inplace=False):
    r""":math:`x` for :math:`x > 0`, else :math:`s x`, like ``torch.nn.functional.leaky_relu``.

    Example:
        >>> import torch, gpunn.torch.functional as GF
        >>> GF.leaky_relu(torch.tensor([-1.0, 2.0]), 0.1)
        tensor([-0.1000,  2.0000])
    """
    return _activate(_ops.LEAKY_RELU, input, inplace, _checks.real("negative_slope", negative_slope))


def prelu(input, weight):
    r""":math:`x` for :math:`x > 0`, else :math:`a_c x` with ``weight`` :math:`a` of 1 or C entries (channel axis 1),
    like ``torch.nn.functional.prelu``; differentiable in ``input`` and ``weight``.

    Example:
        >>> import torch, gpunn.torch.functional as GF
        >>> GF.prelu(torch.tensor([[-1.0, -1.0], [2.0, -4.0]]), torch.tensor([0.25, 0.5]))
        tensor([[-0.2500, -0.5000],
                [ 2.0000, -2.0000]])
    """
    _checks.floating("input", input)
    _checks.floating("weight", weight)
    _checks.same_dtype("weight", weight, "input", input)
    _checks.same_device(input=input, weight=weight)
    return _ops.PRELU(input, weight)


def sigmoid(input):
    r""":math:`1 / (1 + e^{-x})`, like ``torch.sigmoid``; the backward reads the output.

    Example:
        >>> import torch, gpunn.torch.functional as GF
        >>> GF.sigmoid(torch.tensor([0.0]))
        tensor([0.5000])
    """
    return _activate(_ops.SIGMOID, input, False)


def tanh(input):
    r""":math:`\tanh x`, like ``torch.tanh``; the backward reads the output.

    Example:
        >>> import torch, gpunn.torch.functional as GF
        >>> GF.tanh(torch.tensor([0.0]))
        tensor([0.])
    """
    return _activate(_ops.TANH, input, False)


def gelu(input, approximate="none"):
    r""":math:`x \Phi(x)`, or its tanh form with ``approximate="tanh"``, like ``torch.nn.functional.gelu``.

    Example:
        >>> import torch, gpunn.torch.functional as GF
        >>> GF.gelu(torch.tensor([0.0, 1.0]))
        tensor([0.0000, 0.8413])
    """
    if approximate not in ("none", "tanh"):
        raise ValueError(f"approximate must be 'none' or 'tanh', got {approximate!r}")
    return _activate(_ops.GELU, input, False, approximate)


def silu(input, inplace=False):
    r""":math:`x \sigma(x)`, like ``torch.nn.functional.silu``.

    Example:
        >>> import torch, gpunn.torch.functional as GF
        >>> GF.silu(torch.tensor([0.0, 1.0]))
        tensor([0.0000, 0.7311])
    """
    return _activate(_ops.SILU, input, inplace)


def elu(input, alpha=1.0, inplace=False):
    r""":math:`x` for :math:`x > 0`, else :math:`\alpha (e^x - 1)`, like ``torch.nn.functional.elu``.

    Example:
        >>> import torch, gpunn.torch.functional as GF
        >>> GF.elu(torch.tensor([-1.0, 1.0]))
        tensor([-0.6321,  1.0000])
    """
    return _activate(_ops.ELU, input, inplace, _checks.real("alpha", alpha))


def softplus(input, beta=1.0, threshold=20.0):
    r""":math:`\frac{1}{\beta} \log(1 + e^{\beta x})`, and :math:`x` where :math:`\beta x` > ``threshold``, like
    ``torch.nn.functional.softplus``.

    Example:
        >>> import torch, gpunn.torch.functional as GF
        >>> GF.softplus(torch.tensor([0.0, 30.0]))
        tensor([ 0.6931, 30.0000])
    """
    return _activate(_ops.SOFTPLUS, input, False, _checks.real("beta", beta), _checks.real("threshold", threshold))


def _softmax_dim(name, dim, ndim, stacklevel):
    if dim is None:  # torch's deprecated implicit choice, with its warning
        import warnings

        warnings.warn(f"Implicit dimension choice for {name} has been deprecated. Change the call to include dim=X "
                      "as an argument.", stacklevel=stacklevel)
        return 0 if ndim in (0, 1, 3) else 1
    return _checks.dim("dim", dim, ndim)


def _normalise(op, name, input, dim, stacklevel, dtype):
    _checks.floating("input", input)
    _checks.same_device(input=input)
    if dtype is not None and dtype not in _checks.FLOAT_DTYPES:
        raise TypeError(f"dtype must be torch.float32 or torch.float64 for gpunn, got {dtype}")
    return op.forward(input, _softmax_dim(name, dim, input.dim(), stacklevel), dtype)


def softmax(input, dim=None, _stacklevel=3, dtype=None):
    r""":math:`e^{x_i} / \sum_j e^{x_j}` along ``dim``, like ``torch.nn.functional.softmax``; ``dtype``: compute
    and return in that dtype. The backward reads the output.

    Example:
        >>> import torch, gpunn.torch.functional as GF
        >>> GF.softmax(torch.tensor([[0.0, 0.0], [0.0, 1.0]]), dim=1)
        tensor([[0.5000, 0.5000],
                [0.2689, 0.7311]])
    """
    return _normalise(_ops.SOFTMAX, "softmax", input, dim, _stacklevel + 1, dtype)


def log_softmax(input, dim=None, _stacklevel=3, dtype=None):
    r""":math:`x_i - \log \sum_j e^{x_j}` along ``dim``, like ``torch.nn.functional.log_softmax``; ``dtype``:
    compute and return in that dtype. The backward reads the output.

    Example:
        >>> import torch, gpunn.torch.functional as GF
        >>> GF.log_softmax(torch.tensor([0.0, 0.0]), dim=0)
        tensor([-0.6931, -0.6931])
    """
    return _normalise(_ops.LOG_SOFTMAX, "log_softmax", input, dim, _stacklevel + 1, dtype)


# ----------------------------------------------------------------------------------------------------------------------
# Losses
# ----------------------------------------------------------------------------------------------------------------------
def _loss(op, name, input, target, *params, target_grad=False, **extra_tensors):
    """The loss through ``op``: with its fused gradient when autograd will ask for one, else the loss alone.
    ``params`` end with the reduction; ``extra_tensors``: the loss's weight tensors (checked, never differentiated).
    """
    _checks.floating("input", input)
    _checks.tensor("target", target)
    _checks.same_device(input=input, target=target, **extra_tensors)
    for wname, w in extra_tensors.items():
        if w is not None:
            _checks.floating(wname, w)
            _checks.same_dtype(wname, w, "input", input)
    _checks.no_grad_wanted(name, **extra_tensors, **({} if target_grad else {"target": target}))
    if torch.is_grad_enabled() and (input.requires_grad or target.requires_grad):
        return op.with_grad(input, target, *params)[0]
    return op.forward(input, target, *params)


def _no_weight(name, weight):
    if weight is not None:
        raise ValueError(f"{name}: gpunn has no per-element weight for this loss; weight must be None")


def mse_loss(input, target, size_average=None, reduce=None, reduction="mean", weight=None):
    r"""Mean squared error :math:`(x - y)^2`, like ``torch.nn.functional.mse_loss`` (``weight`` must be None).

    Example:
        >>> import torch, gpunn.torch.functional as GF
        >>> GF.mse_loss(torch.tensor([1.0, 2.0]), torch.tensor([0.0, 0.0]))
        tensor(2.5000)
    """
    reduction = _checks.reduction(size_average, reduce, reduction)
    _no_weight("mse_loss", weight)
    return _loss(_ops.MSE, "mse_loss", input, target, reduction, target_grad=True)


def l1_loss(input, target, size_average=None, reduce=None, reduction="mean", weight=None):
    r"""Mean absolute error :math:`|x - y|`, like ``torch.nn.functional.l1_loss`` (``weight`` must be None).

    Example:
        >>> import torch, gpunn.torch.functional as GF
        >>> GF.l1_loss(torch.tensor([1.0, -2.0]), torch.tensor([0.0, 0.0]), reduction="sum")
        tensor(3.)
    """
    reduction = _checks.reduction(size_average, reduce, reduction)
    _no_weight("l1_loss", weight)
    return _loss(_ops.L1, "l1_loss", input, target, reduction, target_grad=True)


def huber_loss(input, target, reduction="mean", delta=1.0, weight=None):
    r"""Huber loss: :math:`d^2/2` for :math:`|d| < \delta`, else :math:`\delta (|d| - \delta/2)`, :math:`d = x - y`,
    like ``torch.nn.functional.huber_loss`` (``weight`` must be None).

    Example:
        >>> import torch, gpunn.torch.functional as GF
        >>> GF.huber_loss(torch.tensor([0.5, 3.0]), torch.tensor([0.0, 0.0]), reduction="none")
        tensor([0.1250, 2.5000])
    """
    reduction = _checks.reduction(None, None, reduction)
    _no_weight("huber_loss", weight)
    return _loss(_ops.HUBER, "huber_loss", input, target, _checks.real("delta", delta), reduction, target_grad=True)


def smooth_l1_loss(input, target, size_average=None, reduce=None, reduction="mean", beta=1.0):
    r"""Smooth L1 loss, Huber's divided by ``beta`` (``beta = 0`` is L1), like
    ``torch.nn.functional.smooth_l1_loss``.

    Example:
        >>> import torch, gpunn.torch.functional as GF
        >>> GF.smooth_l1_loss(torch.tensor([0.5, 3.0]), torch.tensor([0.0, 0.0]), reduction="none")
        tensor([0.1250, 2.5000])
    """
    reduction = _checks.reduction(size_average, reduce, reduction)
    beta = _checks.real("beta", beta)
    return _loss(_ops.SMOOTH_L1, "smooth_l1_loss", input, target, beta, reduction, target_grad=True)


def binary_cross_entropy_with_logits(input, target, weight=None, size_average=None, reduce=None, reduction="mean",
                                     pos_weight=None):
    r""":math:`-w [p y \log \sigma(x) + (1 - y) \log(1 - \sigma(x))]`, like
    ``torch.nn.functional.binary_cross_entropy_with_logits``; differentiable in ``input``.

    Example:
        >>> import torch, gpunn.torch.functional as GF
        >>> GF.binary_cross_entropy_with_logits(torch.tensor([0.0]), torch.tensor([1.0]))
        tensor(0.6931)
    """
    reduction = _checks.reduction(size_average, reduce, reduction)
    return _loss(_ops.BCE_WITH_LOGITS, "binary_cross_entropy_with_logits", input, target, weight, pos_weight,
                 reduction, weight=weight, pos_weight=pos_weight)


def cross_entropy(input, target, weight=None, size_average=None, ignore_index=-100, reduce=None, reduction="mean",
                  label_smoothing=0.0):
    r"""Cross entropy of ``softmax(input)`` against class indices (int64 or int32) or class probabilities, with class
    ``weight``, ``ignore_index`` and ``label_smoothing``, like ``torch.nn.functional.cross_entropy``. One fused
    pass gives the loss and the gradient, which autograd keeps for the backward. Differentiable in ``input``.

    Example:
        >>> import torch, gpunn.torch.functional as GF
        >>> GF.cross_entropy(torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]]), torch.tensor([0, 2]))
        tensor(0.6691)
    """
    reduction = _checks.reduction(size_average, reduce, reduction)
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, int):
        raise TypeError(f"ignore_index must be an int, got {type(ignore_index).__name__}")
    label_smoothing = _checks.real("label_smoothing", label_smoothing)
    return _loss(_ops.CROSS_ENTROPY, "cross_entropy", input, target, weight, ignore_index, label_smoothing, reduction,
                 weight=weight)


def multi_margin_loss(input, target, p=1, margin=1.0, weight=None, size_average=None, reduce=None, reduction="mean"):
    r"""Multi-class hinge loss :math:`\frac{1}{C} \sum_{i \ne y} w_y \max(0, m - x_y + x_i)^p`, like
    ``torch.nn.functional.multi_margin_loss``; differentiable in ``input``.

    Example:
        >>> import torch, gpunn.torch.functional as GF
        >>> GF.multi_margin_loss(torch.tensor([[0.1, 0.2, 0.4, 0.8]]), torch.tensor([3]))
        tensor(0.3250)
    """
    reduction = _checks.reduction(size_average, reduce, reduction)
    if p not in (1, 2) or isinstance(p, bool):
        raise ValueError(f"p must be 1 or 2, got {p!r}")
    margin = _checks.real("margin", margin)
    return _loss(_ops.MULTI_MARGIN, "multi_margin_loss", input, target, int(p), margin, weight, reduction, weight=weight)


def hinge_loss(input, target, margin=1.0, reduction="mean"):
    r"""Binary hinge (SVM) loss :math:`\max(0, m - y x)` with labels :math:`y \in \{-1, +1\}` (gpunn's; torch.nn has
    no such loss); differentiable in ``input``.

    Example:
        >>> import torch, gpunn.torch.functional as GF
        >>> GF.hinge_loss(torch.tensor([0.5, -2.0]), torch.tensor([1.0, -1.0]), reduction="none")
        tensor([0.5000, 0.0000])
    """
    reduction = _checks.reduction(None, None, reduction)
    return _loss(_ops.HINGE, "hinge_loss", input, target, _checks.real("margin", margin), reduction)
