"""A multilayer perceptron whose activations, loss and optimizer are gpunn's.

Layers: ``Linear(in, h1) -> act -> Linear(h1, h2) -> act -> ... -> Linear(h_last, out)``. The linear layers use the
device's array library (:mod:`gpunn.app.linear`); the activation is ``gpunn.<name>`` / ``gpunn.<name>_backward``
(PReLU's learnable slope is a parameter like the weights), the loss is a ``gpunn.*_with_grad`` function and the
step is a ``gpunn.optim`` optimizer updating the parameters in place.

Every weight, bias and slope is a view of ONE flat buffer (``gpunn.optim.flatten``), and the backward writes the
gradients into views of a second one (``linear_backward(..., out=(dW, db))``; PReLU's one-element slope gradients
are copied in), so the optimizer steps the one buffer: one kernel launch per step however deep the network
(separate arrays would take one launch per 24 arrays). The step is elementwise, so the run is the same as with
separate arrays.

Initialisation follows ``torch.nn.Linear``: W and b uniform in [-1/sqrt(fan_in), 1/sqrt(fan_in)], from a seeded
NumPy generator, so a seed gives the same network on every device.
"""

from __future__ import annotations

import inspect

import numpy as np

import gpunn

ACTIVATIONS = ["relu", "leaky_relu", "prelu", "sigmoid", "tanh", "gelu", "silu", "elu", "softplus"]
OPTIMIZERS = ["sgd", "momentum", "nag", "rmsprop", "adam", "adamw"]
LOSSES = {"mse": "mse_loss_with_grad", "mae": "l1_loss_with_grad", "huber": "huber_loss_with_grad"}
PRELU_INIT = 0.25  # PyTorch's nn.PReLU default


class Activation:
    """``gpunn.<name>`` forward and ``gpunn.<name>_backward``, saving what the backward takes (x, or y for sigmoid
    and tanh: read from the backward's signature so the app follows gpunn's API rather than restating it)."""

    def __init__(self, name: str):
        if name not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {name!r}")
        self.name = name
        self.forward_fn = getattr(gpunn, name)
        self.backward_fn = getattr(gpunn, f"{name}_backward")
        params = list(inspect.signature(self.backward_fn).parameters)
        self.saves_output = params[1] in ("y", "out", "output")
        self.has_weight = name == "prelu"

    def forward(self, x, weight=None):
        """(y, saved)."""
        y = self.forward_fn(x, weight) if self.has_weight else self.forward_fn(x)
        return y, (y if self.saves_output else x)

    def backward(self, dy, saved, weight=None):
        """(dx, dweight); dweight is None unless the activation has a weight (PReLU)."""
        if self.has_weight:
            dx, dweight = self.backward_fn(dy, saved, weight)
            return dx, dweight
        return self.backward_fn(dy, saved), None


def make_optimizer(name: str, params, lr: float):
    """A gpunn.optim optimizer by the CLI's name (Momentum and NAG: SGD with momentum 0.9, Nesterov for NAG)."""
    opt = gpunn.optim
    if name == "sgd":
        return opt.SGD(params, lr=lr)
    if name == "momentum":
        return opt.Momentum(params, lr=lr)
    if name == "nag":
        return opt.NAG(params, lr=lr)
    if name == "rmsprop":
        return opt.RMSprop(params, lr=lr)
    if name == "adam":
        return opt.Adam(params, lr=lr)
    if name == "adamw":
        return opt.AdamW(params, lr=lr)
    raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {name!r}")


class MLP:
    """Parameters live on the backend's device; ``forward`` keeps what ``backward`` needs."""

    def __init__(self, sizes, activation: str, backend, *, seed: int = 0, dtype=np.float32):
        self.backend = backend
        self.act = Activation(activation)
        rng = np.random.default_rng(seed)
        self.weights, self.biases, self.slopes = [], [], []
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
            bound = 1.0 / np.sqrt(fan_in)
            self.weights.append(backend.asarray(rng.uniform(-bound, bound, (fan_in, fan_out)).astype(dtype)))
            self.biases.append(backend.asarray(rng.uniform(-bound, bound, (fan_out,)).astype(dtype)))
        if self.act.has_weight:  # one slope per hidden layer, shared by its units (nn.PReLU() default)
            self.slopes = [backend.asarray(np.full(1, PRELU_INIT, dtype)) for _ in sizes[1:-1]]
        # one buffer for all parameters, one for all gradients; the layers use views of them
        n_layers, arrays = len(self.weights), self.arrays
        self.flat, views = gpunn.optim.flatten(arrays)
        self.weights, self.biases, self.slopes = views[:2 * n_layers:2], views[1:2 * n_layers:2], views[2 * n_layers:]
        zeros = [backend.asarray(np.zeros(tuple(a.shape), dtype)) for a in arrays]
        self.flat_grad, self.grad_views = gpunn.optim.flatten(zeros)
        self._cache = None

    @property
    def arrays(self):
        """Every trainable array, in a fixed order: W1, b1, W2, b2, ..., then the PReLU slopes (views of ``flat``)."""
        return [p for wb in zip(self.weights, self.biases) for p in wb] + self.slopes

    @property
    def params(self):
        """What the optimizer steps: ``[flat]``, the one buffer that :attr:`arrays` view."""
        return [self.flat]

    def forward(self, x):
        cache = []
        h = x
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            z = self.backend.linear(h, w, b)
            if i == last:
                cache.append((h, None))
                h = z
            else:
                y, saved = self.act.forward(z, self.slopes[i] if self.slopes else None)
                cache.append((h, saved))
                h = y
        self._cache = cache
        return h

    def backward(self, dout):
        """``[flat_grad]`` for the loss gradient ``dout`` of the last forward: the gradients of :attr:`arrays`, in
        their order, written into the views ``grad_views`` of the one gradient buffer (matching :attr:`params`)."""
        dws, dbs, dslopes = [None] * len(self.weights), [None] * len(self.weights), [None] * len(self.slopes)
        dz = dout
        for i in range(len(self.weights) - 1, -1, -1):
            h_in, saved = self._cache[i]
            if saved is not None:
                dz, dslope = self.act.backward(dz, saved, self.slopes[i] if self.slopes else None)
                if dslope is not None:
                    dslopes[i] = dslope
            gw, gb = self.grad_views[2 * i], self.grad_views[2 * i + 1]
            dx, dws[i], dbs[i] = self.backend.linear_backward(dz, h_in, self.weights[i], need_dx=i > 0, out=(gw, gb))
            dz = dx
        for view, g in zip(self.grad_views[2 * len(self.weights):], dslopes):
            if hasattr(view, "copy_to_device"):
                view.copy_to_device(g)     # Numba device arrays: a device-to-device copy, not a kernel
            else:
                view[...] = g
        return [self.flat_grad]
