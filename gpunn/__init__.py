"""gpunn: GPU kernels for training neural networks, written with Numba CUDA.

Activations, losses and fused optimizer steps that run three ways: ``@cuda.jit`` kernels on a GPU (CuPy arrays,
PyTorch CUDA tensors and Numba device arrays, taken without a copy), the same kernels in Numba's CUDA simulator
(``NUMBA_ENABLE_CUDASIM=1``), and a CPU fallback for NumPy arrays. Nothing compiles at import time.
"""

from ._arrays import to_device, to_host
from ._runtime import info, mode, simulator as _simulator_on

if _simulator_on():
    from . import _simulator

    _simulator.apply()

from . import optim  # noqa: E402
from ._errors import check as _check_errors  # noqa: E402
from .activations import *  # noqa: E402,F401,F403
from .activations import __all__ as _activations_all  # noqa: E402
from .losses import *  # noqa: E402,F401,F403
from .losses import __all__ as _losses_all  # noqa: E402

__version__ = "0.1.0"
__all__ = ["info", "mode", "synchronize", "to_device", "to_host", "optim", *_activations_all, *_losses_all]


def synchronize():
    """Wait for gpunn's pending device work and raise the first input error its kernels found.

    Kernels that check data (class indices, hinge labels, all -inf rows) record a bad index on the device instead of
    stopping the host; this reads those records (it waits for every stream such a call used) and raises a
    ``ValueError`` naming the argument and the first bad index. Call it where your loop synchronises anyway (when
    it logs the loss, say). ``float(loss)`` of a gpunn device scalar calls it too. Nothing to do on the CPU path,
    which raises at once.

    Example:
        >>> import gpunn
        >>> gpunn.synchronize()  # nothing pending
    """
    _check_errors()
