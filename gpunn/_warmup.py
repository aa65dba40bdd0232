"""Compile ahead of time what gpunn's ops compile on first use, into the disk cache (gpunn/_cache.py).

Each :data:`TASKS` entry calls one op family on small arrays of one dtype, with the options that select other
compiled code (reductions, class weights, smoothing, probability targets, each optimizer's option sets). Every task
runs twice on the CPU: with the serial loops, then with the parallel ones (when Numba has more than one thread), so
that both builds are cached. On a GPU the tasks run once more on device arrays, which compiles the CUDA kernels. A
call with options outside these lists compiles on its first use, once per machine, as before.

``gpunn warmup`` runs the tasks with a progress bar, in ``--jobs`` processes that share the cache.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np

DTYPES = ("float32", "float64")


class Task(NamedTuple):
    name: str
    run: Callable  # run(put, dtype): calls the ops on arrays made by put(np.ndarray)


def _activations(put, dt):
    import gpunn

    x = put(np.linspace(-3, 3, 64, dtype=dt))
    dy = put(np.ones(64, dt))
    for name in ("relu", "leaky_relu", "sigmoid", "tanh", "silu", "elu", "softplus"):
        getattr(gpunn, name)(x)
        getattr(gpunn, f"{name}_backward")(dy, x)
    for approximate in ("none", "tanh"):
        gpunn.gelu(x, approximate)
        gpunn.gelu_backward(dy, x, approximate)


def _prelu(put, dt):
    import gpunn

    x = put(np.linspace(-3, 3, 48, dtype=dt).reshape(4, 12))
    for channels in (1, 12):
        w = put(np.full(channels, 0.25, dt))
        gpunn.prelu(x, w)
        gpunn.prelu_backward(put(np.ones((4, 12), dt)), x, w)


def _softmax(put, dt):
    import gpunn

    x = put(np.linspace(-3, 3, 48, dtype=dt).reshape(4, 12))
    for axis in (-1, 0):
        for fwd, bwd in ((gpunn.softmax, gpunn.softmax_backward), (gpunn.log_softmax, gpunn.log_softmax_backward)):
            y = fwd(x, axis)
            bwd(put(np.ones((4, 12), dt)), y, axis)


def _pointwise_losses(put, dt):
    import gpunn

    x = put(np.linspace(-2, 2, 64, dtype=dt))
    t = put(np.linspace(1, -1, 64, dtype=dt))
    labels = put(np.where(np.arange(64) % 2, 1.0, -1.0).astype(dt))
    probs = put(np.linspace(0, 1, 64, dtype=dt))
    for reduction in ("mean", "sum", "none"):
        for name in ("mse_loss", "l1_loss", "huber_loss", "smooth_l1_loss"):
            _with_and_without_grad(getattr(gpunn, name), getattr(gpunn, f"{name}_with_grad"), x, t, reduction)
        _with_and_without_grad(gpunn.hinge_loss, gpunn.hinge_loss_with_grad, x, labels, reduction)
        bce, bce_grad = gpunn.binary_cross_entropy_with_logits, gpunn.binary_cross_entropy_with_logits_with_grad
        _with_and_without_grad(bce, bce_grad, x, probs, reduction)
        weight = put(np.full(64, 0.5, dt))
        _with_and_without_grad(bce, bce_grad, x, probs, reduction, weight=weight, pos_weight=weight)


def _with_and_without_grad(loss, loss_with_grad, x, t, reduction, **options):
    loss(x, t, reduction=reduction, **options)
    loss_with_grad(x, t, reduction=reduction, **options)


def _row_losses(put, dt):
    import gpunn

    logits = put(np.linspace(-2, 2, 60, dtype=dt).reshape(6, 10))
    target = put(np.arange(6, dtype=np.int64) % 10)
    probs = put(np.full((6, 10), 0.1, dt))
    weight = put(np.linspace(0.5, 1.5, 10, dtype=dt))
    for reduction in ("mean", "sum", "none"):
        gpunn.cross_entropy(logits, target, reduction=reduction)
        gpunn.cross_entropy_with_grad(logits, target, reduction=reduction)
        gpunn.cross_entropy_with_grad(logits, target, weight=weight, label_smoothing=0.1, reduction=reduction)
        gpunn.cross_entropy_with_grad(logits, probs, reduction=reduction)
        for p in (1, 2):
            gpunn.multi_margin_loss(logits, target, p=p, reduction=reduction)
            gpunn.multi_margin_loss_with_grad(logits, target, p=p, reduction=reduction)
            gpunn.multi_margin_loss_with_grad(logits, target, p=p, weight=weight, reduction=reduction)


# (optimizer class name, options) whose compiled steps differ; each also steps once with grad_scale and clipping
OPTIMIZERS = (
    ("SGD", {"lr": 0.1}), ("SGD", {"lr": 0.1, "momentum": 0.9}), ("NAG", {"lr": 0.1}),
    ("SGD", {"lr": 0.1, "momentum": 0.9, "weight_decay": 0.01}),
    ("RMSprop", {}), ("RMSprop", {"momentum": 0.9}), ("RMSprop", {"centered": True}),
    ("Adam", {}), ("Adam", {"weight_decay": 0.01}), ("Adam", {"amsgrad": True}), ("AdamW", {}),
)


def _optimizers(put, dt):
    import gpunn

    for name, options in OPTIMIZERS:
        params = [put(np.linspace(-1, 1, 64, dtype=dt)), put(np.linspace(1, 2, 33, dtype=dt))]
        grads = [put(np.full(64, 0.1, dt)), put(np.full(33, -0.2, dt))]
        opt = getattr(gpunn.optim, name)(params, **options)
        opt.step(grads)
        clipped = getattr(gpunn.optim, name)(params, max_grad_norm=1.0, **options)
        clipped.step(grads, grad_scale=8.0)


TASKS = (
    Task("activations", _activations), Task("prelu", _prelu), Task("softmax", _softmax),
    Task("pointwise_losses", _pointwise_losses), Task("row_losses", _row_losses), Task("optimizers", _optimizers),
)


def steps(device: bool, dtypes=DTYPES, only=None):
    """The (task index, dtype, path) steps of a warmup; path is "serial", "parallel" or "device". ``only``: task
    names to keep (default: all)."""
    import numba

    paths = ["serial"] + (["parallel"] if numba.get_num_threads() > 1 else []) + (["device"] if device else [])
    chosen = [i for i, task in enumerate(TASKS) if only is None or task.name in only]
    return [(i, dt, path) for path in paths for i in chosen for dt in dtypes]


def run_step(index: int, dtype: str, path: str) -> dict:
    """Run one step in this process; returns what it did to the disk cache: counts ``loaded``, ``compiled``,
    ``saved``, and ``uncacheable`` (function name -> why), as gpunn._cache.stats gives them."""
    import gpunn

    from . import _cache, _cpu

    before = _cache.stats()
    task = TASKS[index]
    if path == "device":
        task.run(gpunn.to_device, np.dtype(dtype))
        gpunn.synchronize()
    else:
        with _cpu.forced(path):
            task.run(lambda a: a, np.dtype(dtype))
    after = _cache.stats()
    return {**{k: after[k] - before[k] for k in ("loaded", "compiled", "saved")}, "uncacheable": after["uncacheable"]}
