"""A plain NumPy training loop with gpunn's kernels: a 2-64-3 network on three interleaved spirals.

NumPy does the matrix products; gpunn does everything else on the same arrays (its CPU path; pass
``gpunn.to_device`` arrays instead and the same calls launch the CUDA kernels):

    h = gpunn.tanh(x @ W1 + b1)
    loss, dlogits = gpunn.cross_entropy_with_grad(h @ W2 + b2, y)
    ... backward by hand with gpunn.tanh_backward ...
    opt.step(grads)                 # gpunn.optim.Adam updates W1, b1, W2, b2 in place

Run: python examples/numpy_loop.py
"""

import numpy as np

import gpunn


def spirals(n_per_class=100, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    x, y = [], []
    for c in range(classes):
        r = np.linspace(0.05, 1.0, n_per_class)
        t = np.linspace(c * 4.0, (c + 1) * 4.0, n_per_class) + rng.normal(0, 0.2, n_per_class)
        x.append(np.stack([r * np.sin(t), r * np.cos(t)], axis=1))
        y.append(np.full(n_per_class, c))
    return np.concatenate(x).astype(np.float32), np.concatenate(y).astype(np.int64)


def main(steps=400, hidden=64, lr=0.02, seed=0):
    x, y = spirals(seed=seed)
    rng = np.random.default_rng(seed)
    w1 = (rng.uniform(-1, 1, (2, hidden)) / np.sqrt(2)).astype(np.float32)
    b1 = np.zeros(hidden, np.float32)
    w2 = (rng.uniform(-1, 1, (hidden, 3)) / np.sqrt(hidden)).astype(np.float32)
    b2 = np.zeros(3, np.float32)
    params = [w1, b1, w2, b2]
    opt = gpunn.optim.Adam(params, lr=lr)

    losses = []
    for step in range(steps):
        z1 = x @ w1 + b1
        h = gpunn.tanh(z1)                                   # forward: gpunn
        logits = h @ w2 + b2
        loss, dlogits = gpunn.cross_entropy_with_grad(logits, y)  # mean loss and d loss / d logits: gpunn
        losses.append(float(loss))
        dw2, db2 = h.T @ dlogits, dlogits.sum(axis=0)
        dh = dlogits @ w2.T
        dz1 = gpunn.tanh_backward(dh, h)                     # backward from the saved output: gpunn
        dw1, db1 = x.T @ dz1, dz1.sum(axis=0)
        opt.step([dw1, db1, dw2, db2])                       # in place: gpunn
        if step % 100 == 0:
            print(f"step {step:4d}  loss {losses[-1]:.4f}")

    accuracy = float(np.mean(np.argmax(gpunn.tanh(x @ w1 + b1) @ w2 + b2, axis=1) == y))
    print(f"RESULT loss {losses[0]:.4f} -> {losses[-1]:.4f}, training accuracy {accuracy:.3f}")
    return losses, accuracy


if __name__ == "__main__":
    main()
