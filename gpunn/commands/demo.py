"""``gpunn demo``: a few activations, their gradients, a loss and one optimizer step on a small array."""

import time

import numpy as np

DEMO_ACTIVATIONS = ["relu", "leaky_relu", "sigmoid", "tanh", "gelu", "silu"]


def _row(label, values, width):
    return f"{label:<{width}}" + "".join(f"{v:>9.4f}" for v in values)


def run(args):
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

    logits = np.array([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0]], np.float32)
    target = np.array([0, 1], np.int64)
    if hasattr(gpunn, "cross_entropy_with_grad"):
        la, ta = (gpunn.to_device(logits), gpunn.to_device(target)) if on_device else (logits, target)
        loss, dlogits = gpunn.cross_entropy_with_grad(la, ta)
        print(f"\ncross_entropy(logits={logits.tolist()}, target={target.tolist()}) = "
              f"{float(np.asarray(gpunn.to_host(loss))):.4f}")
        print("d loss / d logits =", np.array2string(np.asarray(gpunn.to_host(dlogits)), precision=4))
    if hasattr(gpunn.optim, "Adam"):
        p = np.array([1.0, -2.0, 3.0], np.float32)
        g = np.array([0.5, -0.5, 0.0], np.float32)
        pa, ga = (gpunn.to_device(p), gpunn.to_device(g)) if on_device else (p, g)
        opt = gpunn.optim.Adam([pa], lr=0.1)
        before = p.copy()
        opt.step([ga])
        print(f"\nAdam(lr=0.1) step: p {before.tolist()} with grad {g.tolist()} -> "
              f"{np.round(np.asarray(gpunn.to_host(pa)), 4).tolist()}")
    print(f"\n({time.perf_counter() - t0:.1f} s, including Numba's compilation of each kernel on first use)")
    return 0


def register(subparsers):
    p = subparsers.add_parser("demo", help="print a few activations, gradients, a loss and an Adam step")
    p.add_argument("--device", action="store_true",
                   help="run on the device (a GPU, or the simulator under NUMBA_ENABLE_CUDASIM=1) instead of NumPy")
    p.add_argument("--activations", nargs="+", metavar="NAME", default=None,
                   help=f"which activations (default: {' '.join(DEMO_ACTIVATIONS)})")
    p.set_defaults(func=run)
