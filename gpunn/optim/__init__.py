"""Fused optimizer steps: one kernel launch updates many parameters and their state.

``SGD`` (with ``Momentum`` and ``NAG`` as named forms), ``RMSprop``, ``Adam`` and ``AdamW``, in PyTorch's forms.
Each takes ``max_grad_norm`` (clip by the global L2 norm inside the step); ``step(grads, grad_scale=None)`` unscales,
skips the step on inf/NaN, and returns whether it was applied; ``state_dict``/``load_state_dict`` resume bit for bit.
Launches per step on the device: one per 24 separate arrays of a dtype (``MAX_TENSORS_PER_LAUNCH``), so a model of
<= 24 arrays takes one; for ANY number of arrays, ``flat, views = flatten(params)`` makes them views of one buffer
and an optimizer on ``[flat]`` (gradients: views of one ``flat_grad``) takes exactly one launch per step (+1 for the
check pass of ``grad_scale``/``max_grad_norm``). The design (chunk table over a tuple of arrays, owned flat state,
why the cap, the flat-buffer path) and the launch counts are described in :mod:`gpunn.optim._fused`.
"""

from ._flat import flatten
from ._fused import MAX_TENSORS_PER_LAUNCH, Optimizer
from .adam import Adam, AdamW
from .rmsprop import RMSprop
from .sgd import NAG, SGD, Momentum

__all__ = ["SGD", "Momentum", "NAG", "RMSprop", "Adam", "AdamW", "Optimizer", "MAX_TENSORS_PER_LAUNCH", "flatten"]
