"""A device optimizer step replayed as a CUDA graph replays it: the same kernels launched again with the very same
arguments must advance the step count (Adam's bias correction) as eager steps do. The simulator has no graphs, so
this records one step's launches (gpunn._launch.record) and launches them again; tests/test_graph_capture.py does it
with a real graph on a GPU. Covers two dtype groups (two step kernels: only the last commits the count), grids of
more than one block (the last block to finish commits), and a skipped step (inf gradient with grad_scale) among the
replays."""

import numpy as np
import pytest

import gpunn
from gpunn import _launch, _runtime, optim
from helpers import assert_close, get, put
from test_optim_reference import Reference

# In the simulator a chunk is 64 elements and a group runs on up to 2 blocks: 70 and 130 elements give 2 blocks each.
SHAPES = [((70,), np.float32), ((3,), np.float32), ((130,), np.float64), ((5,), np.float64)]
KW = dict(lr=0.01, betas=(0.8, 0.9), weight_decay=0.01)
# Adam: the count (bias correction); SGD with momentum: the flag (the first applied step initialises the buffer)
CONFIGS = [("Adam", KW), ("SGD", dict(lr=0.05, momentum=0.9, dampening=0.3))]
SCALE = 4.0
STEPS = 6
SKIPPED = 3  # the step whose float64 gradient holds inf
TOL = {np.float32: (2e-5, 1e-4), np.float64: (1e-12, 1e-10)}


@pytest.fixture(autouse=True)
def _device_only():
    if _runtime.mode() == "cpu":
        pytest.skip("no GPU and the simulator is off")


def gradients(rng):
    """STEPS lists of host gradients, scaled by SCALE; step SKIPPED has an inf."""
    steps = [[(rng.standard_normal(s) * SCALE).astype(dt) for s, dt in SHAPES] for _ in range(STEPS)]
    steps[SKIPPED][2][7] = np.inf
    return steps


def load(buffers, grads):
    """Write this step's gradients into the static gradient buffers (as a graph's inputs are refilled)."""
    for buf, g in zip(buffers, grads):
        buf.copy_to_device(g)


def replay(launches):
    for kernel, grid, block, args in launches:
        kernel(grid, block, 0, *args)


@pytest.mark.parametrize("name,kw", CONFIGS, ids=[name for name, _ in CONFIGS])
def test_replayed_step_matches_eager_steps(name, kw, rng):
    p0 = [rng.standard_normal(s).astype(dt) for s, dt in SHAPES]
    steps = gradients(rng)
    buffers = [gpunn.to_device(np.zeros(s, dt)) for s, dt in SHAPES]
    eager_params = [put(p.copy(), "device") for p in p0]
    eager = getattr(optim, name)(eager_params, **kw)
    graph_params = [put(p.copy(), "device") for p in p0]
    graph = getattr(optim, name)(graph_params, **kw)
    ref = Reference(name, p0, **kw)

    load(buffers, steps[0])
    with _launch.record(arguments=True) as launches:  # the "capture": this call runs step 0 as well
        graph.step(buffers, grad_scale=SCALE)
    names = [kernel.name for kernel, *_ in launches]
    assert names == ["optim_grad_sum", "optim_grad_sum", "optim_step", "optim_step"], names
    assert all(grid > 1 for _, grid, _, _ in launches)
    for k, grads in enumerate(steps):
        load(buffers, grads)
        if k:
            replay(launches)
        assert bool(eager.step(buffers, grad_scale=SCALE)) == (k != SKIPPED)
        assert ref.step(grads, grad_scale=SCALE) == (k != SKIPPED)
        assert graph.step_count == eager.step_count == ref.t, f"after step {k}"

    for i, (g, e, r) in enumerate(zip(graph_params, eager_params, ref.p)):
        assert np.array_equal(get(g), get(e)), f"params[{i}]: replays differ from eager steps"
        atol, rtol = TOL[SHAPES[i][1]]
        assert_close(get(g), r, SHAPES[i][1], atol=atol, rtol=rtol, what=f"params[{i}] after {STEPS} steps")
    graph_sd, eager_sd = graph.state_dict(), eager.state_dict()
    assert graph_sd["step"] == STEPS - 1
    assert graph_sd.keys() == eager_sd.keys()
    for key in eager_sd:
        a, b = np.asarray(graph_sd[key]), np.asarray(eager_sd[key])
        assert np.array_equal(a, b, equal_nan=a.dtype.kind == "f"), key  # max_grad_norm None is saved as NaN


def test_eager_step_after_replays_and_resume(rng):
    """After replays the host's calls resume the count; a state_dict saved after them resumes bit-identically."""
    p0 = [rng.standard_normal(s).astype(dt) for s, dt in SHAPES]
    steps = gradients(rng)
    buffers = [gpunn.to_device(np.zeros(s, dt)) for s, dt in SHAPES]
    params = [put(p.copy(), "device") for p in p0]
    opt = optim.Adam(params, **KW)
    ref = Reference("Adam", p0, **KW)
    load(buffers, steps[0])
    with _launch.record(arguments=True) as launches:
        opt.step(buffers, grad_scale=SCALE)
    ref.step(steps[0], grad_scale=SCALE)
    load(buffers, steps[1])
    replay(launches)
    ref.step(steps[1], grad_scale=SCALE)
    sd = opt.state_dict()
    resumed_params = [put(get(p).copy(), "device") for p in params]
    resumed = optim.Adam(resumed_params, **KW)
    resumed.load_state_dict(sd)
    load(buffers, steps[2])
    assert bool(opt.step(buffers, grad_scale=SCALE)) and bool(resumed.step(buffers, grad_scale=SCALE))
    ref.step(steps[2], grad_scale=SCALE)
    assert opt.step_count == resumed.step_count == ref.t == 3
    for i, (p, q, r) in enumerate(zip(params, resumed_params, ref.p)):
        assert np.array_equal(get(p), get(q)), f"params[{i}]: the resumed optimizer differs"
        atol, rtol = TOL[SHAPES[i][1]]
        assert_close(get(p), r, SHAPES[i][1], atol=atol, rtol=rtol, what=f"params[{i}]")
