"""Fused optimizer steps: one kernel launch updates every parameter of a dtype and its state.

``SGD`` (with ``Momentum`` and ``NAG`` as named forms), ``RMSprop``, ``Adam`` and ``AdamW``, in PyTorch's forms.
Each takes ``max_grad_norm`` (clip by the global L2 norm inside the step); ``step(grads, grad_scale=None)`` unscales,
skips the step on inf/NaN, and says whether it was applied (on the device lazily: nothing is read back);
``state_dict``/``load_state_dict`` resume bit for bit. Launches per step on the device: one per parameter dtype, for
any number of arrays (a table of their addresses), plus one for the check pass of ``grad_scale``/``max_grad_norm``.
``flatten(params)`` makes many arrays views of one buffer (one contiguous stream, and one collective for
gpunn.distributed). The design is described in :mod:`gpunn.optim._kernels`.
"""

from ._base import Optimizer, StepResult
from ._flat import flatten
from .adam import Adam, AdamW
from .rmsprop import RMSprop
from .sgd import NAG, SGD, Momentum

__all__ = ["SGD", "Momentum", "NAG", "RMSprop", "Adam", "AdamW", "Optimizer", "StepResult", "flatten"]
