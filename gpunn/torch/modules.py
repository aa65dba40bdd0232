"""``torch.nn`` activation and loss modules computed by gpunn.

Each class subclasses the ``torch.nn`` module of the same name and replaces only its ``forward`` with the call into
:mod:`gpunn.torch.functional`: constructor arguments, defaults, attributes, parameters (PReLU's ``weight``, initialised
as torch does), buffers (the losses' ``weight``), ``repr`` and ``state_dict`` keys are torch's, and
``isinstance(m, torch.nn.ReLU)`` stays true. :func:`gpunn.torch.patch` swaps them into an existing model.
:class:`HingeLoss` is gpunn's own (torch.nn has no binary hinge loss).
"""

from torch import nn

from . import _checks
from . import functional as GF

__all__ = [
    "ReLU", "LeakyReLU", "PReLU", "Sigmoid", "Tanh", "GELU", "SiLU", "ELU", "Softplus", "Softmax", "LogSoftmax",
    "MSELoss", "L1Loss", "HuberLoss", "SmoothL1Loss", "BCEWithLogitsLoss", "CrossEntropyLoss", "MultiMarginLoss",
    "HingeLoss",
]


# ----------------------------------------------------------------------------------------------------------------------
# Activations
# ----------------------------------------------------------------------------------------------------------------------
class ReLU(nn.ReLU):
    """``torch.nn.ReLU(inplace=False)`` by gpunn.

    Example:
        >>> import torch, gpunn.torch as gt
        >>> gt.ReLU()(torch.tensor([-1.0, 2.0]))
        tensor([0., 2.])
    """

    def forward(self, input):
        return GF.relu(input, inplace=self.inplace)


class LeakyReLU(nn.LeakyReLU):
    """``torch.nn.LeakyReLU(negative_slope=0.01, inplace=False)`` by gpunn.

    Example:
        >>> import torch, gpunn.torch as gt
        >>> gt.LeakyReLU(0.1)(torch.tensor([-1.0, 2.0]))
        tensor([-0.1000,  2.0000])
    """

    def forward(self, input):
        return GF.leaky_relu(input, self.negative_slope, self.inplace)


class PReLU(nn.PReLU):
    """``torch.nn.PReLU(num_parameters=1, init=0.25)`` by gpunn: a learnable ``weight`` of 1 or C entries.

    Example:
        >>> import torch, gpunn.torch as gt
        >>> m = gt.PReLU(2)
        >>> m.weight
        Parameter containing:
        tensor([0.2500, 0.2500], requires_grad=True)
        >>> m(torch.tensor([[-4.0, 1.0]])).detach()
        tensor([[-1.,  1.]])
    """

    def forward(self, input):
        return GF.prelu(input, self.weight)


class Sigmoid(nn.Sigmoid):
    """``torch.nn.Sigmoid()`` by gpunn; the backward reads the saved output.

    Example:
        >>> import torch, gpunn.torch as gt
        >>> gt.Sigmoid()(torch.tensor([0.0]))
        tensor([0.5000])
    """

    def forward(self, input):
        return GF.sigmoid(input)


class Tanh(nn.Tanh):
    """``torch.nn.Tanh()`` by gpunn; the backward reads the saved output.

    Example:
        >>> import torch, gpunn.torch as gt
        >>> gt.Tanh()(torch.tensor([0.0]))
        tensor([0.])
    """

    def forward(self, input):
        return GF.tanh(input)


class GELU(nn.GELU):
    """``torch.nn.GELU(approximate='none')`` by gpunn (``approximate='tanh'``: the tanh form).

    Example:
        >>> import torch, gpunn.torch as gt
        >>> gt.GELU(approximate="tanh")(torch.tensor([1.0]))
        tensor([0.8412])
    """

    def forward(self, input):
        return GF.gelu(input, approximate=self.approximate)


class SiLU(nn.SiLU):
    """``torch.nn.SiLU(inplace=False)`` by gpunn.

    Example:
        >>> import torch, gpunn.torch as gt
        >>> gt.SiLU()(torch.tensor([1.0]))
        tensor([0.7311])
    """

    def forward(self, input):
        return GF.silu(input, inplace=self.inplace)


class ELU(nn.ELU):
    """``torch.nn.ELU(alpha=1.0, inplace=False)`` by gpunn.

    Example:
        >>> import torch, gpunn.torch as gt
        >>> gt.ELU()(torch.tensor([-1.0]))
        tensor([-0.6321])
    """

    def forward(self, input):
        return GF.elu(input, self.alpha, self.inplace)


class Softplus(nn.Softplus):
    """``torch.nn.Softplus(beta=1.0, threshold=20.0)`` by gpunn.

    Example:
        >>> import torch, gpunn.torch as gt
        >>> gt.Softplus(beta=2.0)(torch.tensor([0.0]))
        tensor([0.3466])
    """

    def forward(self, input):
        return GF.softplus(input, self.beta, self.threshold)


class Softmax(nn.Softmax):
    """``torch.nn.Softmax(dim=None)`` by gpunn; the backward reads the saved output.

    Example:
        >>> import torch, gpunn.torch as gt
        >>> gt.Softmax(dim=-1)(torch.tensor([0.0, 0.0]))
        tensor([0.5000, 0.5000])
    """

    def forward(self, input):
        return GF.softmax(input, self.dim, _stacklevel=5)


class LogSoftmax(nn.LogSoftmax):
    """``torch.nn.LogSoftmax(dim=None)`` by gpunn; the backward reads the saved output.

    Example:
        >>> import torch, gpunn.torch as gt
        >>> gt.LogSoftmax(dim=-1)(torch.tensor([0.0, 0.0]))
        tensor([-0.6931, -0.6931])
    """

    def forward(self, input):
        return GF.log_softmax(input, self.dim, _stacklevel=5)


# ----------------------------------------------------------------------------------------------------------------------
# Losses
# ----------------------------------------------------------------------------------------------------------------------
class MSELoss(nn.MSELoss):
    """``torch.nn.MSELoss(reduction='mean')`` by gpunn: one fused pass gives the loss and its gradient.

    Example:
        >>> import torch, gpunn.torch as gt
        >>> gt.MSELoss()(torch.tensor([1.0, 2.0]), torch.tensor([0.0, 0.0]))
        tensor(2.5000)
    """

    def forward(self, input, target):
        return GF.mse_loss(input, target, reduction=self.reduction)


class L1Loss(nn.L1Loss):
    """``torch.nn.L1Loss(reduction='mean')`` by gpunn.

    Example:
        >>> import torch, gpunn.torch as gt
        >>> gt.L1Loss(reduction="sum")(torch.tensor([1.0, -2.0]), torch.tensor([0.0, 0.0]))
        tensor(3.)
    """

    def forward(self, input, target):
        return GF.l1_loss(input, target, reduction=self.reduction)


class HuberLoss(nn.HuberLoss):
    """``torch.nn.HuberLoss(reduction='mean', delta=1.0)`` by gpunn.

    Example:
        >>> import torch, gpunn.torch as gt
        >>> gt.HuberLoss(delta=2.0)(torch.tensor([3.0]), torch.tensor([0.0]))
        tensor(4.)
    """

    def forward(self, input, target):
        return GF.huber_loss(input, target, reduction=self.reduction, delta=self.delta)


class SmoothL1Loss(nn.SmoothL1Loss):
    """``torch.nn.SmoothL1Loss(reduction='mean', beta=1.0)`` by gpunn.

    Example:
        >>> import torch, gpunn.torch as gt
        >>> gt.SmoothL1Loss(beta=2.0)(torch.tensor([3.0]), torch.tensor([0.0]))
        tensor(2.)
    """

    def forward(self, input, target):
        return GF.smooth_l1_loss(input, target, reduction=self.reduction, beta=self.beta)


class BCEWithLogitsLoss(nn.BCEWithLogitsLoss):
    """``torch.nn.BCEWithLogitsLoss(weight=None, reduction='mean', pos_weight=None)`` by gpunn.

    Example:
        >>> import torch, gpunn.torch as gt
        >>> gt.BCEWithLogitsLoss(pos_weight=torch.tensor([2.0]))(torch.tensor([0.0]), torch.tensor([1.0]))
        tensor(1.3863)
    """

    def forward(self, input, target):
        return GF.binary_cross_entropy_with_logits(input, target, self.weight, reduction=self.reduction,
                                                   pos_weight=self.pos_weight)


class CrossEntropyLoss(nn.CrossEntropyLoss):
    """``torch.nn.CrossEntropyLoss(weight=None, ignore_index=-100, reduction='mean', label_smoothing=0.0)`` by gpunn:
    class-index or probability targets; the fused forward writes the gradient that the backward scales.

    Example:
        >>> import torch, gpunn.torch as gt
        >>> gt.CrossEntropyLoss(label_smoothing=0.1)(torch.tensor([[2.0, 0.0, 0.0]]), torch.tensor([0]))
        tensor(0.3729)
    """

    def forward(self, input, target):
        return GF.cross_entropy(input, target, weight=self.weight, ignore_index=self.ignore_index,
                                reduction=self.reduction, label_smoothing=self.label_smoothing)


class MultiMarginLoss(nn.MultiMarginLoss):
    """``torch.nn.MultiMarginLoss(p=1, margin=1.0, weight=None, reduction='mean')`` by gpunn.

    Example:
        >>> import torch, gpunn.torch as gt
        >>> gt.MultiMarginLoss()(torch.tensor([[0.1, 0.2, 0.4, 0.8]]), torch.tensor([3]))
        tensor(0.3250)
    """

    def forward(self, input, target):
        return GF.multi_margin_loss(input, target, p=self.p, margin=self.margin, weight=self.weight,
                                    reduction=self.reduction)


class HingeLoss(nn.Module):
    r"""Binary hinge (SVM) loss :math:`\max(0, m - y x)` for labels :math:`y \in \{-1, +1\}`, reduced by
    ``reduction`` ('mean', 'sum' or 'none'); gpunn's own (``torch.nn.HingeEmbeddingLoss`` is another loss).

    Example:
        >>> import torch, gpunn.torch as gt
        >>> gt.HingeLoss()(torch.tensor([0.5, -2.0]), torch.tensor([1.0, -1.0]))
        tensor(0.2500)
    """

    def __init__(self, margin: float = 1.0, reduction: str = "mean") -> None:
        super().__init__()
        self.margin = _checks.real("margin", margin)
        self.reduction = _checks.reduction(None, None, reduction)

    def forward(self, input, target):
        return GF.hinge_loss(input, target, margin=self.margin, reduction=self.reduction)

    def extra_repr(self) -> str:
        return f"margin={self.margin}, reduction={self.reduction}"
