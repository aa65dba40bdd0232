"""Figures for ``gpunn plot``: activations with their derivatives, and optimizer paths on classic test surfaces.

Every curve is computed by gpunn itself: an activation's derivative is ``gpunn.<name>_backward(ones, saved)``
(the very kernel training uses), and each optimizer path is a sequence of ``gpunn.optim`` steps on a 2-vector.
Only the test surfaces' own gradients (Rosenbrock, Beale) are written out here: they are the objective, not gpunn.
"""

from __future__ import annotations

import functools
import os

import numpy as np

from . import cpu_threads
from .mlp import ACTIVATIONS, Activation

PRELU_SLOPE = 0.25


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def activation_curves(name: str, x: np.ndarray):
    """(y, dy/dx) of a gpunn activation at ``x`` (float64), both from gpunn: forward and backward with dy = 1."""
    act = Activation(name)
    weight = np.full(1, PRELU_SLOPE, x.dtype) if act.has_weight else None
    y, saved = act.forward(x, weight)
    dx, _ = act.backward(np.ones_like(x), saved, weight)
    return np.asarray(y), np.asarray(dx)


def plot_activations(path: str, names=ACTIVATIONS):
    plt = _plt()
    x = np.linspace(-4.0, 4.0, 801)
    cols = 3
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.3 * rows), dpi=110, squeeze=False)
    for ax, name in zip(axes.flat, names):
        y, dydx = activation_curves(name, x)
        ax.axhline(0, color="0.75", lw=0.8)
        ax.axvline(0, color="0.75", lw=0.8)
        ax.plot(x, y, lw=2.2, color="C0", label="f(x)")
        ax.plot(x, dydx, lw=2.0, color="C3", ls="--", label="f'(x)")
        title = name + (f" (a={PRELU_SLOPE})" if name == "prelu" else "")
        ax.set_title(title, fontsize=13, fontweight="bold")
        ax.set_xlim(-4, 4)
        ax.set_ylim(-1.5, 4.2)
        ax.grid(True, alpha=0.3)
        ax.legend(loc="upper left", fontsize=10)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.suptitle("gpunn activations (solid) and their derivatives from gpunn's backward kernels (dashed)",
                 fontsize=13)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_sigmoid_vs_relu(path: str):
    """Sigmoid's derivative tops out at 0.25 (so gradients shrink through every sigmoid layer); ReLU's is 1."""
    plt = _plt()
    x = np.linspace(-6.0, 6.0, 1201)
    _, ds = activation_curves("sigmoid", x)
    _, dr = activation_curves("relu", x)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=110, sharey=True)
    ax1.plot(x, ds, lw=2.5, color="C1")
    i = int(np.argmax(ds))
    ax1.plot([x[i]], [ds[i]], "o", color="k")
    ax1.annotate(f"max {ds[i]:.2f} at x = {x[i]:.0f}", (x[i], ds[i]), xytext=(1.2, 0.55), fontsize=12,
                 arrowprops=dict(arrowstyle="->", color="k"))
    ax1.axhline(0.25, color="C1", ls=":", lw=1)
    ax1.set_title("sigmoid'(x) = y (1 - y)", fontsize=13)
    ax2.plot(x, dr, lw=2.5, color="C2")
    ax2.set_title("relu'(x) = [x > 0]", fontsize=13)
    ax2.annotate("1 for every x > 0", (3, 1.0), xytext=(0.5, 0.7), fontsize=12,
                 arrowprops=dict(arrowstyle="->", color="k"))
    for ax in (ax1, ax2):
        ax.set_xlabel("x")
        ax.set_ylim(-0.05, 1.15)
        ax.grid(True, alpha=0.3)
    ax1.set_ylabel("derivative (gpunn backward, dy = 1)")
    fig.suptitle("Why deep sigmoid nets train slowly: each layer scales the gradient by at most 0.25", fontsize=13)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


# ---- optimizer paths -------------------------------------------------------------------------------------------------
def rosenbrock(p):
    x, y = p
    return (1 - x) ** 2 + 100 * (y - x * x) ** 2


def rosenbrock_grad(p):
    x, y = p
    return np.array([-2 * (1 - x) - 400 * x * (y - x * x), 200 * (y - x * x)])


def beale(p):
    x, y = p
    return (1.5 - x + x * y) ** 2 + (2.25 - x + x * y * y) ** 2 + (2.625 - x + x * y ** 3) ** 2


def beale_grad(p):
    x, y = p
    a, b, c = 1.5 - x + x * y, 2.25 - x + x * y * y, 2.625 - x + x * y ** 3
    return np.array([2 * a * (y - 1) + 2 * b * (y * y - 1) + 2 * c * (y ** 3 - 1),
                     2 * a * x + 2 * b * 2 * x * y + 2 * c * 3 * x * y * y])


# name -> (f, grad, start, minimum, steps, window (xmin, xmax, ymin, ymax), {optimizer: lr})
SURFACES = {
    "rosenbrock": (rosenbrock, rosenbrock_grad, (-1.2, 1.0), (1.0, 1.0), 500, (-1.6, 1.6, -0.6, 1.6),
                   {"SGD": 2e-3, "Momentum": 1e-3, "NAG": 1e-3, "RMSprop": 1e-2, "Adam": 1e-1}),
    "beale": (beale, beale_grad, (1.0, 1.4), (3.0, 0.5), 500, (0.0, 3.6, -1.3, 1.8),
              {"SGD": 1e-2, "Momentum": 1e-3, "NAG": 1e-3, "RMSprop": 1e-2, "Adam": 1e-1}),
}


def make_2d_optimizer(name, params, lr):
    import gpunn

    o = gpunn.optim
    return {"SGD": lambda: o.SGD(params, lr=lr),
            "Momentum": lambda: o.Momentum(params, lr=lr),
            "NAG": lambda: o.NAG(params, lr=lr),
            "RMSprop": lambda: o.RMSprop(params, lr=lr),
            "Adam": lambda: o.Adam(params, lr=lr)}[name]()


def optimizer_path(surface: str, name: str, lr: float | None = None, steps: int | None = None):
    """The points visited by ``gpunn.optim.<name>`` on ``surface`` from its start, as an (steps + 1, 2) array."""
    return _optimizer_path(surface, name, lr, steps).copy()


@functools.lru_cache(maxsize=64)
def _optimizer_path(surface, name, lr, steps):
    f, grad, start, _, default_steps, _, lrs = SURFACES[surface]
    p = np.array(start, dtype=np.float64)
    opt = make_2d_optimizer(name, [p], lrs[name] if lr is None else lr)
    path = [p.copy()]
    for _ in range(default_steps if steps is None else steps):
        g = grad(p)
        if not np.all(np.isfinite(g)):
            break
        opt.step([g])  # updates p in place
        path.append(p.copy())
    return np.array(path)


def plot_optimizer_paths(surface: str, path: str):
    plt = _plt()
    from matplotlib.colors import LogNorm

    f, _, start, minimum, steps, (x0, x1, y0, y1), lrs = SURFACES[surface]
    gx, gy = np.meshgrid(np.linspace(x0, x1, 400), np.linspace(y0, y1, 400))
    z = f((gx, gy))
    fig, ax = plt.subplots(figsize=(12, 6.5), dpi=110)
    levels = np.logspace(np.log10(max(z.min(), 1e-3)), np.log10(z.max()), 20)
    ax.contourf(gx, gy, z, levels=levels, norm=LogNorm(), cmap="Greys_r", alpha=0.25)
    ax.contour(gx, gy, z, levels=levels, norm=LogNorm(), colors="0.6", linewidths=0.6)
    for i, name in enumerate(lrs):
        pts = optimizer_path(surface, name)
        end = pts[-1]
        ax.plot(pts[:, 0], pts[:, 1], "-", lw=2, color=f"C{i}",
                label=f"{name} (lr {lrs[name]:g})\nf = {f(end):.2g} after {len(pts) - 1} steps")
        ax.plot(end[0], end[1], "o", color=f"C{i}", ms=7, mec="k")
    ax.plot(*start, "k^", ms=11, label=f"start {start}")
    ax.plot(*minimum, "*", color="gold", mec="k", ms=18, label=f"minimum {minimum}")
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_xlabel("x", fontsize=12)
    ax.set_ylabel("y", fontsize=12)
    ax.set_title(f"gpunn.optim on the {surface.capitalize()} function ({steps} steps each, same start)",
                 fontsize=13)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=10, frameon=False)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_all(directory: str) -> list[str]:
    """Every figure of ``gpunn plot``; returns the paths written."""
    os.makedirs(directory, exist_ok=True)
    with cpu_threads(1):  # 2-element parameters and 800-point curves: one thread is fastest
        return _plot_all(directory)


def _plot_all(directory):
    paths = [plot_activations(os.path.join(directory, "activations.png")),
             plot_sigmoid_vs_relu(os.path.join(directory, "sigmoid_vs_relu.png"))]
    for surface in SURFACES:
        paths.append(plot_optimizer_paths(surface, os.path.join(directory, f"optimizers_{surface}.png")))
    return paths
