r"""Adam and AdamW: PyTorch's ``torch.optim.Adam`` / ``torch.optim.AdamW`` (non-fused forms).

Per element at step t (t counts applied steps, from 1), with g the gradient (after unscaling/clipping):

    g = -g                                  if maximize
    decay:      Adam:  g = g + weight_decay * p         (L2, coupled)
                AdamW: p = p * (1 - lr * weight_decay)  (decoupled, before the moments)
    moments:    m = beta1 * m + (1 - beta1) * g
                v = beta2 * v + (1 - beta2) * g^2
                vmax = max(vmax, v)          (amsgrad: the raw v, before bias correction)
    correction: denom = sqrt(v or vmax) / sqrt(1 - beta2^t) + eps
    update:     p = p - lr / (1 - beta1^t) * m / denom

The options specialise the compiled step (AMSGrad, maximize, decoupled or L2 decay: no run-time branch per element).
The step-dependent scalars lr / (1 - beta1^t) and sqrt(1 - beta2^t) are computed once per thread in float64 from the
applied-step count t (on the device it lives on the device, so a skipped step costs no read-back) and cast to the
parameter dtype, as PyTorch's Python-float scalars are. State: ``exp_avg``, ``exp_avg_sq``, ``max_exp_avg_sq``
(amsgrad), all starting at zero.
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
def _adam_math(dtype, flags):
    """``(prepare, update)`` for ``flags = (amsgrad, maximize, decoupled, l2)``."""
    amsgrad, maximize, decoupled, l2 = flags
    to = np.dtype(dtype).type

    @_cache.njit(inline="always")  # also called from the host (CPU steps): cached on disk like a loop
    def prepare(host, t, gscale, flag):
        lr, beta1, beta2, eps, wd = host
        step_size = lr / (1.0 - beta1 ** t)          # lr / (1 - b1^t)
        inv_bc2_sqrt = 1.0 / math.sqrt(1.0 - beta2 ** t)  # 1 / sqrt(1 - b2^t): a product per element, not a quotient
        decay = 1.0 - lr * wd                        # AdamW: p (1 - lr wd)
        return (to(gscale), to(step_size), to(beta1), to(1.0 - beta1), to(beta2), to(1.0 - beta2), to(inv_bc2_sqrt),
                to(eps), to(wd), to(decay))

    @njit(inline="always")
    def update(p, g, m, v, vmax, k):
        gscale, step_size, beta1, one_minus_beta1, beta2, one_minus_beta2, inv_bc2_sqrt, eps, wd, decay = k
        g = g * gscale                      # unscale / clip
        if maximize:
            g = -g
        if l2:
            g = g + wd * p                  # Adam: L2 decay
        if decoupled:
            p = p * decay                   # AdamW: decoupled decay, before the moments
        m = beta1 * m + one_minus_beta1 * g            # m = b1 m + (1 - b1) g
        v = beta2 * v + one_minus_beta2 * (g * g)      # v = b2 v + (1 - b2) g^2
        if amsgrad:
            if v > vmax:
                vmax = v                    # vmax = max(vmax, v)
            denom = math.sqrt(vmax) * inv_bc2_sqrt + eps
        else:
            denom = math.sqrt(v) * inv_bc2_sqrt + eps  # sqrt(v / (1 - b2^t)) + eps
        p = p - step_size * (m / denom)     # p -= lr / (1 - b1^t) * m / denom
        return p, m, v, vmax

    return prepare, update


# ---- public classes --------------------------------------------------------------------------------------------------
class Adam(_base.Optimizer):
    r"""Adam (Kingma & Ba) with optional L2 decay, AMSGrad and maximize.

    .. math::
        m_t = \beta_1 m_{t-1} + (1 - \beta_1) g_t,\quad v_t = \beta_2 v_{t-1} + (1 - \beta_2) g_t^2,\quad
        p_t = p_{t-1} - \frac{\eta}{1 - \beta_1^t} \frac{m_t}{\sqrt{v_t / (1 - \beta_2^t)} + \epsilon}

    Args:
        params: list of float32/float64 arrays, all NumPy (CPU path) or all device arrays (CUDA path), each
            C-contiguous; updated in place.
        lr (>= 0), betas (each in [0, 1)), eps (> 0), weight_decay (>= 0), amsgrad, maximize: as in
            ``torch.optim.Adam``.
        max_grad_norm: clip the gradients' global L2 norm to this value inside the step (None: no clipping).

    Example:
        >>> import numpy as np, gpunn
        >>> p = np.array([1.0, 1.0], np.float32)
        >>> opt = gpunn.optim.Adam([p], lr=0.1)
        >>> opt.step([np.array([3.0, -0.5], np.float32)])  # the first step moves each element by about lr
        True
        >>> p
        array([0.9, 1.1], dtype=float32)
    """

    NAME = "Adam"
    DECOUPLED = False
    HYPER = {"lr": "real", "betas": "pair", "eps": "real", "weight_decay": "real", "amsgrad": "bool",
             "maximize": "bool", "max_grad_norm": "opt_real"}
    STATE = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False,
                 maximize=False, max_grad_norm=None):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                                      maximize=maximize, max_grad_norm=max_grad_norm))

    def _validate(self, hp):
        for k in range(2):
            check_real(f"betas[{k}]", hp["betas"][k], low=0.0, high=1.0, high_open=True)
        check_real("eps", hp["eps"], low=0.0, low_open=True)
        check_real("weight_decay", hp["weight_decay"], low=0.0)

    MATH = staticmethod(_adam_math)

    def _flags(self, hp):
        l2 = not self.DECOUPLED and hp["weight_decay"] != 0
        return (bool(hp["amsgrad"]), bool(hp["maximize"]), self.DECOUPLED, l2)

    def _uses(self, hp):
        return (True, True, bool(hp["amsgrad"]))

    def _host(self, hp):
        beta1, beta2 = hp["betas"]
        return (hp["lr"], beta1, beta2, hp["eps"], hp["weight_decay"])


class AdamW(Adam):
    r"""Adam with decoupled weight decay (Loshchilov & Hutter), weight_decay 1e-2 by default.

    .. math:: p \leftarrow p (1 - \eta \lambda), \text{ then the Adam update}

    Example:
        >>> import numpy as np, gpunn
        >>> p = np.array([1.0], np.float64)
        >>> opt = gpunn.optim.AdamW([p], lr=0.1, weight_decay=0.5)
        >>> opt.step([np.array([0.0])])  # zero gradient: only the decay acts
        True
        >>> p
        array([0.95])
    """

    NAME = "AdamW"
    DECOUPLED = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False,
                 maximize=False, max_grad_norm=None):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize, max_grad_norm)


_base.register_step("adam", _adam_math, 5, [((False, False, False, False), (True, True, False)),
                                            ((True, True, False, True), (True, True, True)),
                                            ((True, True, True, False), (True, True, True))])
