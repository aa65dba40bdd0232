r"""SGD, with momentum (heavy ball) and Nesterov momentum: PyTorch's ``torch.optim.SGD``.

Per element, with g the gradient (after unscaling/clipping, see :mod:`gpunn.optim._kernels`):

    g = -g                                  if maximize
    g = g + weight_decay * p                (L2 decay, when weight_decay != 0)
    b = g                                   on the first step with momentum
    b = momentum * b + (1 - dampening) * g  afterwards
    g = g + momentum * b  if nesterov else b    (when momentum != 0)
    p = p - lr * g

PyTorch's lr sits outside the velocity (Sutskever et al. put it inside; the two agree only at a constant lr).
Nesterov needs momentum > 0 and dampening = 0. State: ``momentum_buffer`` (only when momentum != 0).
"""

import functools

import numpy as np
from numba import njit

from .. import _cache
from . import _base
from .._args import check_real


# ---- scalar math (one definition, called by the CUDA kernel and by the CPU loop) -------------------------------------
@functools.lru_cache(maxsize=None)
def _sgd_math(dtype, flags):
    """``(prepare, update)`` for ``flags = (momentum, nesterov, maximize, l2)``."""
    use_momentum, nesterov, maximize, l2 = flags
    to = np.dtype(dtype).type

    @_cache.njit(inline="always")  # also called from the host (CPU steps): cached on disk like a loop
    def prepare(host, t, gscale, initialized):
        lr, mu, dampening, wd = host
        first = 1.0 if initialized == 0.0 else 0.0  # the momentum buffer starts as g at the first momentum step
        return to(gscale), to(lr), to(mu), to(1.0 - dampening), to(wd), to(first)

    @njit(inline="always")
    def update(p, g, b, s1, s2, k):
        gscale, lr, mu, one_minus_damp, wd, first = k
        g = g * gscale                      # unscale / clip (exactly g when gscale = 1)
        if maximize:
            g = -g
        if l2:
            g = g + wd * p                  # L2 decay
        if use_momentum:
            if first != 0:
                b = g                       # b_1 = g
            else:
                b = mu * b + one_minus_damp * g   # b_t = mu b_{t-1} + (1 - dampening) g
            if nesterov:
                g = g + mu * b
            else:
                g = b
        p = p - lr * g                      # p -= lr g
        return p, b, s1, s2

    return prepare, update


# ---- public classes --------------------------------------------------------------------------------------------------
class SGD(_base.Optimizer):
    r"""Stochastic gradient descent with optional momentum, Nesterov momentum, L2 decay and gradient clipping.

    .. math::
        b_t = \mu b_{t-1} + (1 - \tau) g_t,\quad p_t = p_{t-1} - \eta\,(g_t + \mu b_t \text{ if nesterov else } b_t)

    Args:
        params: list of float32/float64 arrays, all NumPy (CPU path) or all device arrays (CUDA path), each
            C-contiguous; updated in place.
        lr: learning rate (>= 0). momentum (>= 0), dampening, nesterov, weight_decay (>= 0), maximize: as in
            ``torch.optim.SGD``.
        max_grad_norm: clip the gradients' global L2 norm to this value inside the step (None: no clipping).

    Hyperparameters are attributes (``opt.lr = 0.01``) or set with :meth:`set`; they are checked at each step.

    Example:
        >>> import numpy as np, gpunn
        >>> p = np.array([1.0, -2.0], np.float32)
        >>> opt = gpunn.optim.SGD([p], lr=0.1)
        >>> opt.step([np.array([1.0, 1.0], np.float32)])
        True
        >>> p
        array([ 0.9, -2.1], dtype=float32)
    """

    NAME = "SGD"
    HYPER = {"lr": "real", "momentum": "real", "dampening": "real", "nesterov": "bool", "weight_decay": "real",
             "maximize": "bool", "max_grad_norm": "opt_real"}
    STATE = ("momentum_buffer",)
    EXTRA = {"momentum_initialized": "bool"}

    def __init__(self, params, lr, momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0, maximize=False,
                 max_grad_norm=None):
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening, nesterov=nesterov,
                                      weight_decay=weight_decay, maximize=maximize, max_grad_norm=max_grad_norm))

    def _validate(self, hp):
        check_real("momentum", hp["momentum"], low=0.0)
        check_real("weight_decay", hp["weight_decay"], low=0.0)
        if hp["nesterov"] and (hp["momentum"] <= 0 or hp["dampening"] != 0):
            raise ValueError(f"nesterov needs momentum > 0 and dampening 0, got momentum={hp['momentum']} and "
                             f"dampening={hp['dampening']}")

    MATH = staticmethod(_sgd_math)

    def _flags(self, hp):
        return (hp["momentum"] != 0, bool(hp["nesterov"]), bool(hp["maximize"]), hp["weight_decay"] != 0)

    def _uses(self, hp):
        return (hp["momentum"] != 0, False, False)

    def _host(self, hp):
        return (hp["lr"], hp["momentum"], hp["dampening"], hp["weight_decay"])


class Momentum(SGD):
    r"""SGD with (heavy-ball) momentum, 0.9 by default: ``SGD(params, lr, momentum=0.9, ...)``.

    .. math:: b_t = \mu b_{t-1} + g_t,\quad p_t = p_{t-1} - \eta b_t

    Example:
        >>> import numpy as np, gpunn
        >>> p = np.zeros(3, np.float32)
        >>> gpunn.optim.Momentum([p], lr=0.1).momentum
        0.9
    """

    def __init__(self, params, lr, momentum=0.9, dampening=0.0, nesterov=False, weight_decay=0.0, maximize=False,
                 max_grad_norm=None):
        super().__init__(params, lr, momentum, dampening, nesterov, weight_decay, maximize, max_grad_norm)


class NAG(SGD):
    r"""Nesterov accelerated gradient, PyTorch's form: ``SGD(params, lr, momentum=0.9, nesterov=True, ...)``.

    .. math:: b_t = \mu b_{t-1} + g_t,\quad p_t = p_{t-1} - \eta (g_t + \mu b_t)

    Example:
        >>> import numpy as np, gpunn
        >>> p = np.zeros(3, np.float32)
        >>> gpunn.optim.NAG([p], lr=0.1).nesterov
        True
    """

    def __init__(self, params, lr, momentum=0.9, weight_decay=0.0, maximize=False, max_grad_norm=None):
        super().__init__(params, lr, momentum, 0.0, True, weight_decay, maximize, max_grad_norm)


_base.register_step("sgd", _sgd_math, 4, [((False, False, False, False), (False, False, False)),
                                          ((True, True, True, True), (True, False, False))])
