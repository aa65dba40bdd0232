"""Losses with reductions and gradients. One module per loss; definitions in each module's docstring."""

from .mse import mse_loss, mse_loss_backward, mse_loss_with_grad

__all__ = [
    "mse_loss", "mse_loss_backward", "mse_loss_with_grad",
]
