"""``gpunn demo``: a few activations and their gradients on a small array (``--full``: a loss and an Adam step)."""

import time

import numpy as np

from ..app.mlp import ACTIVATIONS
from ._options import UsageError

DEMO_ACTIVATIONS = ["relu", "sigmoid", "tanh"]


def _row(label, values, width):
    return f"{label:<{width}}" + "".join(f"{v:>9.4f}" for v in values)


def run(args):
    import gpunn

    from ..app import cpu_threads

    if args.device and gpunn.mode() == "cpu":
        raise UsageError("--device needs a CUDA GPU, or the CUDA simulator (NUMBA_ENABLE_CUDASIM=1)")

    with cpu_threads(1):  # a 7-element array: no thread pool
        return _run(args)


def _run(args):
    import gpunn

    from ..app.mlp import Activation

    t0 = time.perf_counter()
    names = args.activations or DEMO_ACTIVATIONS
    x = np.array([-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0], np.float32)
    on_device = args.device
    xa = gpunn.to_device(x) if on_device else x
    where = f"{gpunn.mode()} kernels" if on_device else "CPU path (NumPy arrays)"
    print(f"gpunn {gpunn.__version__} demo on the {where}")
    width = 22
    print(_row("x", x, width))
    for name in names:
        act = Activation(name)
        weight = np.full(1, 0.25, np.float32) if act.has_weight else None
        if on_device and weight is not None:
            weight = gpunn.to_device(weight)
        y, saved = act.forward(xa, weight)
        dx, _ = act.backward(gpunn.to_device(np.ones_like(x)) if on_device else np.ones_like(x), saved, weight)
        print(_row(f"{name}(x)", gpunn.to_host(y), width))
        print(_row(f"d{name}/dx", gpunn.to_host(dx), width))

    if not args.full:
        print(f"\n({time.perf_counter() - t0:.1f} s, mostly Numba compiling each kernel on first use; "
              "--full adds a cross-entropy loss and an Adam step)")
        return 0
    logits = np.array([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0]], np.float32)
    target = np.array([0, 1], np.int64)
    la, ta = (gpunn.to_device(logits), gpunn.to_device(target)) if on_device else (logits, target)
    loss, dlogits = gpunn.cross_entropy_with_grad(la, ta)
    print(f"\ncross_entropy(logits={logits.astype(np.float64).round(4).tolist()}, target={target.tolist()}) = "
          f"{float(np.asarray(gpunn.to_host(loss))):.4f}")
    print("d loss / d logits =", np.array2string(np.asarray(gpunn.to_host(dlogits)), precision=4))
    p = np.array([1.0, -2.0, 3.0], np.float32)
    g = np.array([0.5, -0.5, 0.0], np.float32)
    pa, ga = (gpunn.to_device(p), gpunn.to_device(g)) if on_device else (p, g)
    opt = gpunn.optim.Adam([pa], lr=0.1)
    before = p.copy()
    opt.step([ga])
    after = np.asarray(gpunn.to_host(pa), np.float64).round(4)
    print(f"\nAdam(lr=0.1) step: p {before.tolist()} with grad {g.tolist()} -> {after.tolist()}")
    print(f"\n({time.perf_counter() - t0:.1f} s, mostly Numba compiling each kernel on first use)")
    return 0


def register(subparsers):
    p = subparsers.add_parser("demo", help="print a few activations and their gradients on a small array")
    p.add_argument("--device", action="store_true",
                   help="run on the device (a GPU, or the simulator under NUMBA_ENABLE_CUDASIM=1) instead of NumPy")
    p.add_argument("--full", action="store_true", help="also a cross-entropy loss with its gradient and an Adam step")
    p.add_argument("--activations", nargs="+", metavar="NAME", default=None, choices=ACTIVATIONS,
                   help=f"which activations, among {', '.join(ACTIVATIONS)} (default: {' '.join(DEMO_ACTIVATIONS)})")
    p.set_defaults(func=run)
