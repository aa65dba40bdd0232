"""Ops captured in a CUDA graph: relu and cross-entropy with gradient on PyTorch's capture stream, replayed, give the
numbers eager execution gives. Capture fails on any synchronisation, host copy or allocation outside PyTorch's graph
pool, and on a launch to another stream, so this checks the device path's rules on a real GPU. (Needs a GPU: the
simulator has no graphs.) A training step with an Adam step in it is captured too: the step count lives on the
device and advances on each replay (tests/test_optim_replay.py emulates replays in the simulator)."""

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


def _train_step(opt, x, t, h, dh, dx):
    """h = relu(x); loss, dh = cross_entropy_with_grad(h, t); dx = relu_backward(dh, x); an Adam step on x."""
    gpunn.relu(x, out=h)
    loss, _ = gpunn.cross_entropy_with_grad(h, t, out=dh)
    gpunn.relu_backward(dh, x, out=dx)
    opt.step([dx], grad_scale=1.0)  # with the check pass: its kernel is captured as well
    return loss


def test_graph_replay_of_optimizer_step_matches_eager(rng):
    n, c, steps = 64, 33, 5
    x0 = rng.standard_normal((n, c)).astype(np.float32)
    t = torch.tensor(rng.integers(0, c, n), device="cuda")
    results = {}
    for how in ("eager", "graph"):
        x = torch.tensor(x0, device="cuda")  # the parameter, trained in place
        h, dh, dx = torch.empty_like(x), torch.empty_like(x), torch.empty_like(x)
        opt = gpunn.optim.Adam([x], lr=0.05)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # step 1, eager: compiles, makes the state, uploads the tensor table
            losses = [float(_train_step(opt, x, t, h, dh, dx))]
        torch.cuda.current_stream().wait_stream(side)
        if how == "graph":
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):  # records, runs nothing
                loss = _train_step(opt, x, t, h, dh, dx)
            for _ in range(steps - 1):
                graph.replay()
                losses.append(float(loss))
        else:
            for _ in range(steps - 1):
                losses.append(float(_train_step(opt, x, t, h, dh, dx)))
        torch.cuda.synchronize()
        results[how] = (losses, x.cpu().numpy(), opt.step_count, opt.state_dict())
    eager, graph = results["eager"], results["graph"]
    assert np.all(np.isfinite(eager[0])) and eager[0][-1] < eager[0][0]  # it trains
    assert graph[0] == eager[0]
    assert np.array_equal(graph[1], eager[1])
    assert graph[2] == eager[2] == steps  # each replay advanced the count (Adam's bias correction)
    for key in ("exp_avg.0", "exp_avg_sq.0"):
        assert np.array_equal(graph[3][key], eager[3][key]), key
