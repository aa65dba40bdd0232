"""Losses with reductions and gradients. One module per loss; definitions in each module's docstring."""

from .bce import (binary_cross_entropy_with_logits, binary_cross_entropy_with_logits_backward,
                  binary_cross_entropy_with_logits_with_grad)
from .cross_entropy import cross_entropy, cross_entropy_backward, cross_entropy_with_grad
from .hinge import hinge_loss, hinge_loss_backward, hinge_loss_with_grad
from .huber import (huber_loss, huber_loss_backward, huber_loss_with_grad, smooth_l1_loss, smooth_l1_loss_backward,
                    smooth_l1_loss_with_grad)
from .l1 import l1_loss, l1_loss_backward, l1_loss_with_grad, mae_loss, mae_loss_backward, mae_loss_with_grad
from .multi_margin import multi_margin_loss, multi_margin_loss_backward, multi_margin_loss_with_grad
from .mse import mse_loss, mse_loss_backward, mse_loss_with_grad

__all__ = [
    "mse_loss", "mse_loss_backward", "mse_loss_with_grad",
    "l1_loss", "l1_loss_backward", "l1_loss_with_grad", "mae_loss", "mae_loss_backward", "mae_loss_with_grad",
    "huber_loss", "huber_loss_backward", "huber_loss_with_grad",
    "smooth_l1_loss", "smooth_l1_loss_backward", "smooth_l1_loss_with_grad",
    "binary_cross_entropy_with_logits", "binary_cross_entropy_with_logits_backward",
    "binary_cross_entropy_with_logits_with_grad",
    "hinge_loss", "hinge_loss_backward", "hinge_loss_with_grad",
    "cross_entropy", "cross_entropy_backward", "cross_entropy_with_grad",
    "multi_margin_loss", "multi_margin_loss_backward", "multi_margin_loss_with_grad",
]
