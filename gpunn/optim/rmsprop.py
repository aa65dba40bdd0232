r"""RMSprop: PyTorch's ``torch.optim.RMSprop``.

Per element, with g the gradient (after unscaling/clipping, see :mod:`gpunn.optim._kernels`):

    g = -g                                      if maximize
    g = g + weight_decay * p                    (L2 decay, when weight_decay != 0)
    v = alpha * v + (1 - alpha) * g^2           (square_avg)
    centered:  gbar = alpha * gbar + (1 - alpha) * g;  avg = sqrt(max(v - gbar^2, 0)) + eps
    else:      avg = sqrt(v) + eps              (eps OUTSIDE the square root, as PyTorch; optax puts it inside)
    momentum:  b = momentum * b + g / avg;  p = p - lr * b
    else:      p = p - lr * g / avg

Difference from PyTorch: ``v - gbar^2`` can round below zero (a constant gradient); PyTorch takes the square root
of that and writes NaN, gpunn clamps it at 0. State: ``square_avg``; ``grad_avg`` (centered); ``momentum_buffer``
(momentum > 0). All start at zero.
"""

import functools
import math

import numpy as np
from numba import njit

from .. import _cache
from . import _base
from .._args import check_real


# ---- scalar math (one definition, called by the CUDA kernel and by the CPU loop) -------------------------------------
@functools.lru_cache(maxsize=None)
def _rmsprop_math(dtype, flags):
    """``(prepare, update)`` for ``flags = (centered, momentum, maximize, l2)``."""
    centered, use_momentum, maximize, l2 = flags
    to = np.dtype(dtype).type
    zero = to(0.0)

    @_cache.njit(inline="always")  # also called from the host (CPU steps): cached on disk like a loop
    def prepare(host, t, gscale, flag):
        lr, alpha, eps, wd, mu = host
        return to(gscale), to(lr), to(alpha), to(1.0 - alpha), to(eps), to(wd), to(mu)

    @njit(inline="always")
    def update(p, g, v, gbar, b, k):
        gscale, lr, alpha, one_minus_alpha, eps, wd, mu = k
        g = g * gscale                      # unscale / clip
        if maximize:
            g = -g
        if l2:
            g = g + wd * p                  # L2 decay
        v = alpha * v + one_minus_alpha * (g * g)    # v = alpha v + (1 - alpha) g^2
        if centered:
            gbar = alpha * gbar + one_minus_alpha * g  # gbar = alpha gbar + (1 - alpha) g
            var = v - gbar * gbar
            if var < zero:
                var = zero
            avg = math.sqrt(var) + eps
        else:
            avg = math.sqrt(v) + eps
        if use_momentum:
            b = mu * b + g / avg            # b = mu b + g / avg
            p = p - lr * b
        else:
            p = p - lr * (g / avg)
        return p, v, gbar, b

    return prepare, update


# ---- public class ----------------------------------------------------------------------------------------------------
class RMSprop(_base.Optimizer):
    r"""RMSprop (Hinton's), optionally centered and with momentum.

    .. math:: v_t = \alpha v_{t-1} + (1 - \alpha) g_t^2,\quad p_t = p_{t-1} - \eta\, g_t / (\sqrt{v_t} + \epsilon)

    Args:
        params: list of float32/float64 arrays, all NumPy (CPU path) or all device arrays (CUDA path), each
            C-contiguous; updated in place.
        lr (>= 0), alpha (in [0, 1]), eps (> 0), weight_decay (>= 0), momentum (>= 0), centered, maximize:
            as in ``torch.optim.RMSprop``.
        max_grad_norm: clip the gradients' global L2 norm to this value inside the step (None: no clipping).

    Example:
        >>> import numpy as np, gpunn
        >>> p = np.array([1.0], np.float64)
        >>> opt = gpunn.optim.RMSprop([p], lr=0.01)
        >>> opt.step([np.array([2.0])])
        True
        >>> round(float(p[0]), 6)  # 1 - 0.01 * 2 / (sqrt(0.01 * 4) + 1e-8)
        0.9
    """

    NAME = "RMSprop"
    HYPER = {"lr": "real", "alpha": "real", "eps": "real", "weight_decay": "real", "momentum": "real",
             "centered": "bool", "maximize": "bool", "max_grad_norm": "opt_real"}
    STATE = ("square_avg", "grad_avg", "momentum_buffer")

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False,
                 maximize=False, max_grad_norm=None):
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum,
                                      centered=centered, maximize=maximize, max_grad_norm=max_grad_norm))

    def _validate(self, hp):
        check_real("alpha", hp["alpha"], low=0.0, high=1.0)
        check_real("eps", hp["eps"], low=0.0, low_open=True)
        check_real("weight_decay", hp["weight_decay"], low=0.0)
        check_real("momentum", hp["momentum"], low=0.0)

    MATH = staticmethod(_rmsprop_math)

    def _flags(self, hp):
        return (bool(hp["centered"]), hp["momentum"] > 0, bool(hp["maximize"]), hp["weight_decay"] != 0)

    def _uses(self, hp):
        return (True, bool(hp["centered"]), hp["momentum"] > 0)

    def _host(self, hp):
        return (hp["lr"], hp["alpha"], hp["eps"], hp["weight_decay"], hp["momentum"])


_base.register_step("rmsprop", _rmsprop_math, 5, [((False, False, False, False), (True, False, False)),
                                                  ((True, True, True, True), (True, True, True))])
