"""A training loop on CuPy arrays: CuPy does the matrix products, gpunn's CUDA kernels do the rest, on the same
GPU memory (gpunn reads CuPy arrays through ``__cuda_array_interface__``, without a copy).

Needs CuPy and a GPU; without them it says so and exits 0.
Run: python examples/cupy_loop.py
"""

import sys

import numpy as np


def main(steps=300, hidden=64, lr=0.02, seed=0):
    try:
        import cupy as cp
    except ImportError:
        print("SKIP cupy_loop.py: CuPy is not installed (pip install cupy-cuda12x or cupy-cuda13x)")
        return None
    import gpunn

    if gpunn.mode() != "cuda":
        print(f"SKIP cupy_loop.py: no CUDA GPU (gpunn mode: {gpunn.mode()})")
        return None

    rng = np.random.default_rng(seed)
    x_host = rng.normal(size=(512, 2)).astype(np.float32)
    y_host = ((x_host[:, 0] * x_host[:, 1]) > 0).astype(np.int64)   # XOR of the signs: not linearly separable
    x, y = cp.asarray(x_host), cp.asarray(y_host)
    w1 = cp.asarray((rng.uniform(-1, 1, (2, hidden)) / np.sqrt(2)).astype(np.float32))
    b1 = cp.zeros(hidden, cp.float32)
    w2 = cp.asarray((rng.uniform(-1, 1, (hidden, 2)) / np.sqrt(hidden)).astype(np.float32))
    b2 = cp.zeros(2, cp.float32)
    opt = gpunn.optim.Adam([w1, b1, w2, b2], lr=lr)

    losses = []
    for step in range(steps):
        z1 = x @ w1 + b1
        h = gpunn.relu(z1)                                       # CuPy in, CuPy out
        loss, dlogits = gpunn.cross_entropy_with_grad(h @ w2 + b2, y)
        losses.append(float(gpunn.to_host(loss)))
        dz1 = gpunn.relu_backward(dlogits @ w2.T, z1)
        opt.step([x.T @ dz1, dz1.sum(axis=0), h.T @ dlogits, dlogits.sum(axis=0)])
        if step % 100 == 0:
            print(f"step {step:4d}  loss {losses[-1]:.4f}")
    accuracy = float((cp.argmax(gpunn.relu(x @ w1 + b1) @ w2 + b2, axis=1) == y).mean())
    print(f"RESULT loss {losses[0]:.4f} -> {losses[-1]:.4f}, training accuracy {accuracy:.3f}")
    return losses, accuracy


if __name__ == "__main__":
    main()
    sys.exit(0)
