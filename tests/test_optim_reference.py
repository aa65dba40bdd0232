"""Naive float64 references for gpunn.optim, written from the formulas in docs/definitions.md (PyTorch's forms).

Shared by tests/test_optim*.py. Deliberately plain NumPy on whole float64 arrays, one formula per line, nothing
from gpunn.
"""

import math

import numpy as np

DEFAULTS = {
    "SGD": dict(lr=None, momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0, maximize=False),
    "RMSprop": dict(lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False, maximize=False),
    "Adam": dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False, maximize=False),
    "AdamW": dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False, maximize=False),
}


class Reference:
    """A float64 optimizer over a list of arrays, with the check pass (grad_scale, skip on inf/NaN, clipping)."""

    def __init__(self, name, params, max_grad_norm=None, **hyper):
        self.name = name
        self.h = {**DEFAULTS[name], **hyper}
        self.max_grad_norm = max_grad_norm
        self.p = [np.array(x, dtype=np.float64) for x in params]
        self.t = 0
        self.s = [dict() for _ in self.p]

    def step(self, grads, grad_scale=None):
        g = [np.array(x, dtype=np.float64) for x in grads]
        if grad_scale is not None or self.max_grad_norm is not None:
            if not all(np.isfinite(x).all() for x in g):
                return False
            if grad_scale is not None:
                g = [x / grad_scale for x in g]
            if self.max_grad_norm is not None:
                norm = math.sqrt(sum(float((x * x).sum()) for x in g))
                clip = min(1.0, self.max_grad_norm / (norm + 1e-6))
                g = [x * clip for x in g]
        self.t += 1
        for i in range(len(self.p)):
            getattr(self, "_" + self.name.lower())(i, g[i])
        return True

    def _sgd(self, i, g):
        h, p, s = self.h, self.p[i], self.s[i]
        if h["maximize"]:
            g = -g
        g = g + h["weight_decay"] * p
        if h["momentum"] != 0:
            if "b" not in s:
                s["b"] = g.copy()
            else:
                s["b"] = h["momentum"] * s["b"] + (1 - h["dampening"]) * g
            g = g + h["momentum"] * s["b"] if h["nesterov"] else s["b"]
        self.p[i] = p - h["lr"] * g

    def _rmsprop(self, i, g):
        h, p, s = self.h, self.p[i], self.s[i]
        if h["maximize"]:
            g = -g
        g = g + h["weight_decay"] * p
        a = h["alpha"]
        s["v"] = a * s.get("v", 0.0) + (1 - a) * g * g
        if h["centered"]:
            s["gbar"] = a * s.get("gbar", 0.0) + (1 - a) * g
            avg = np.sqrt(s["v"] - s["gbar"] ** 2) + h["eps"]
        else:
            avg = np.sqrt(s["v"]) + h["eps"]
        if h["momentum"] > 0:
            s["b"] = h["momentum"] * s.get("b", 0.0) + g / avg
            self.p[i] = p - h["lr"] * s["b"]
        else:
            self.p[i] = p - h["lr"] * g / avg

    def _adam(self, i, g, decoupled=False):
        h, p, s, t = self.h, self.p[i], self.s[i], self.t
        b1, b2 = h["betas"]
        if h["maximize"]:
            g = -g
        if decoupled:
            p = p * (1 - h["lr"] * h["weight_decay"])
        else:
            g = g + h["weight_decay"] * p
        s["m"] = b1 * s.get("m", 0.0) + (1 - b1) * g
        s["v"] = b2 * s.get("v", 0.0) + (1 - b2) * g * g
        v = s["v"]
        if h["amsgrad"]:
            s["vmax"] = np.maximum(s.get("vmax", 0.0), s["v"])
            v = s["vmax"]
        denom = np.sqrt(v) / math.sqrt(1 - b2 ** t) + h["eps"]
        self.p[i] = p - h["lr"] / (1 - b1 ** t) * s["m"] / denom

    def _adamw(self, i, g):
        self._adam(i, g, decoupled=True)


# ---- the reference itself, against numbers worked out by hand -----------------------------------------------------
def test_reference_by_hand():
    r = Reference("SGD", [np.array([1.0])], lr=0.1, momentum=0.5)
    r.step([np.array([2.0])])  # b = 2, p = 1 - 0.2
    r.step([np.array([2.0])])  # b = 0.5 * 2 + 2 = 3, p = 0.8 - 0.3
    assert np.allclose(r.p[0], 0.5)
    r = Reference("Adam", [np.array([1.0])], lr=0.1)
    r.step([np.array([3.0])])  # m_hat = 3, v_hat = 9: p = 1 - 0.1 * 3 / (3 + 1e-8)
    assert np.allclose(r.p[0], 0.9, atol=1e-9)
    r = Reference("RMSprop", [np.array([1.0])], lr=0.01)
    r.step([np.array([2.0])])  # v = 0.01 * 4, p = 1 - 0.01 * 2 / 0.2
    assert np.allclose(r.p[0], 0.9, atol=1e-9)
    r = Reference("AdamW", [np.array([1.0])], lr=0.1, weight_decay=0.5)
    r.step([np.array([0.0])])
    assert np.allclose(r.p[0], 0.95)
    r = Reference("SGD", [np.array([1.0, 0.0])], lr=1.0, max_grad_norm=1.0)
    assert r.step([np.array([3.0, 4.0])])  # norm 5 -> g = (0.6, 0.8) (up to the 1e-6)
    assert np.allclose(r.p[0], [0.4, -0.8], atol=1e-6)
    assert not r.step([np.array([np.inf, 0.0])], grad_scale=2.0) and r.t == 1
