"""Fused optimizer steps: one kernel launch updates every parameter and its state."""

__all__ = []
