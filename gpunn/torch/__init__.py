"""gpunn inside PyTorch: ``torch.nn`` modules and functions with autograd, ``torch.optim`` optimizers, ``patch``.

* Modules named as in ``torch.nn`` (:mod:`gpunn.torch.modules`) and functions as in ``torch.nn.functional``
  (:mod:`gpunn.torch.functional`), computed by gpunn's kernels: CPU tensors take the CPU loops (no copy), CUDA
  tensors the CUDA kernels. Every op is a ``torch.library`` custom op with a fake kernel and an autograd formula, so
  models run under ``torch.compile(model, fullgraph=True)``.
* :mod:`gpunn.torch.optim`: ``SGD``, ``RMSprop``, ``Adam``, ``AdamW`` as ``torch.optim.Optimizer`` subclasses on
  gpunn's fused step (param groups, schedulers, ``state_dict`` in torch's format, ``torch.amp.GradScaler``).
* :func:`patch`: swap gpunn's modules into an existing model.

Needs PyTorch 2.4 or newer (``pip install torch``); ``import gpunn`` alone never imports it.
"""

try:
    import torch as _torch
except ImportError as e:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError("gpunn.torch needs PyTorch: pip install torch") from e

if not hasattr(_torch.library, "custom_op"):
    raise ImportError(f"gpunn.torch needs PyTorch 2.4 or newer (torch.library.custom_op), found {_torch.__version__}: "
                      "pip install --upgrade torch")

from . import functional, optim  # noqa: E402
from ._patch import patch  # noqa: E402
from .modules import *  # noqa: E402,F401,F403
from .modules import __all__ as _modules_all  # noqa: E402

__all__ = [*_modules_all, "functional", "optim", "patch"]
