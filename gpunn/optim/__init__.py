"""Fused optimizer steps: one kernel launch updates every parameter and its state (up to 24 arrays per launch).

``SGD`` (with ``Momentum`` and ``NAG`` as named forms), ``RMSprop``, ``Adam`` and ``AdamW``, in PyTorch's forms.
Each takes ``max_grad_norm`` (clip by the global L2 norm inside the step); ``step(grads, grad_scale=None)`` unscales,
skips the step on inf/NaN, and returns whether it was applied; ``state_dict``/``load_state_dict`` resume bit for bit.
The design (chunk table over a tuple of arrays, owned flat state) and the launch counts are described in
:mod:`gpunn.optim._fused`.
"""

from ._fused import MAX_TENSORS_PER_LAUNCH, Optimizer
from .adam import Adam, AdamW
from .rmsprop import RMSprop
from .sgd import NAG, SGD, Momentum

__all__ = ["SGD", "Momentum", "NAG", "RMSprop", "Adam", "AdamW", "Optimizer", "MAX_TENSORS_PER_LAUNCH"]
