"""Ops captured in a CUDA graph: relu and cross-entropy with gradient on PyTorch's capture stream, replayed, give the
numbers eager execution gives. Capture fails on any synchronisation, host copy or allocation outside PyTorch's graph
pool, and on a launch to another stream, so this checks the device path's rules on a real GPU. (Needs a GPU: the
simulator has no graphs.) An optimizer step is not capturable yet: its step count is double-buffered by a parity the
host passes at launch, which a replay would freeze (README, Known limits)."""

import numpy as np
import pytest

import gpunn

torch = pytest.importorskip("torch")

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(gpunn.mode() != "cuda" or not torch.cuda.is_available(),
                                 reason="needs a real CUDA GPU and a CUDA build of PyTorch")]


def _step(x, t, h, dx):
    """h = relu(x); loss, dh = cross_entropy_with_grad(h, t)."""
    gpunn.relu(x, out=h)
    loss, _ = gpunn.cross_entropy_with_grad(h, t, out=dx)
    return loss


def test_graph_replay_matches_eager(rng):
    n, c = 64, 33
    x = torch.tensor(rng.standard_normal((n, c)), dtype=torch.float32, device="cuda")
    t = torch.tensor(rng.integers(0, c, n), device="cuda")
    results = {}
    for how in ("eager", "graph"):
        h, dx = torch.empty_like(x), torch.empty_like(x)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm up (compiles, fills workspaces) before capture, as PyTorch advises
            loss = _step(x, t, h, dx)
        torch.cuda.current_stream().wait_stream(side)
        if how == "graph":
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                loss = _step(x, t, h, dx)
            for _ in range(3):
                graph.replay()
        else:
            for _ in range(3):
                loss = _step(x, t, h, dx)
        torch.cuda.synchronize()
        results[how] = (float(loss), h.cpu().numpy(), dx.cpu().numpy())
    assert np.isfinite(results["eager"][0])
    assert results["graph"][0] == results["eager"][0]
    assert np.array_equal(results["graph"][1], results["eager"][1])
    assert np.array_equal(results["graph"][2], results["eager"][2])
