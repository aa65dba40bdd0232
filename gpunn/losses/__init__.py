"""Losses with reductions and gradients. One module per loss; definitions in each module's docstring."""

__all__ = []
