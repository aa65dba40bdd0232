"""Concurrent calls from several Python threads (CPU path): right results under every Numba threading layer.

Numba's ``workqueue`` layer (its fallback where OpenMP and TBB are missing) aborts the process when two threads run
parallel code at once; gpunn serialises its parallel loops there (gpunn/_cpu.py). The workqueue case runs in a
subprocess, so that an abort fails the test instead of killing pytest.
"""

import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import threading
    import numba
    import numpy as np
    import gpunn

    rng = np.random.default_rng(0)
    n = 1 << 17                          # above every family's parallel threshold
    x = rng.standard_normal(n).astype(np.float32)
    t = rng.standard_normal(n).astype(np.float32)
    logits = x.reshape(512, 256)
    target = rng.integers(0, 256, 512)
    calls = {
        "relu": lambda: gpunn.relu(x),
        "gelu_backward": lambda: gpunn.gelu_backward(t, x),
        "mse_loss_with_grad": lambda: gpunn.mse_loss_with_grad(x, t)[1],
        "softmax": lambda: gpunn.softmax(logits),
        "cross_entropy_with_grad": lambda: gpunn.cross_entropy_with_grad(logits, target)[1],
        "adam": lambda: _adam(),
    }

    def _adam():
        p = x.copy()
        gpunn.optim.Adam([p], lr=0.1, max_grad_norm=1.0).step([t])
        return p

    expected = {name: np.array(fn()) for name, fn in calls.items()}
    errors = []

    def work(k):
        for _ in range(6):
            for name, fn in calls.items():
                got = np.asarray(fn())
                if not np.array_equal(got, expected[name]):
                    errors.append(f"thread {k}: {name} differs")

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    print("layer", numba.threading_layer(), "errors", errors)
    raise SystemExit(1 if errors else 0)
""")


@pytest.mark.parametrize("layer", ["workqueue", "default"])
def test_concurrent_cpu_calls(layer):
    env = dict(os.environ)
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    env["NUMBA_NUM_THREADS"] = "2"
    if layer != "default":
        env["NUMBA_THREADING_LAYER"] = layer
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, f"exit {out.returncode}: {out.stdout[-1500:]}{out.stderr[-1500:]}"
    if layer != "default":
        assert f"layer {layer}" in out.stdout
