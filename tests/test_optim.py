"""gpunn.optim: trajectories against the float64 reference, parity with torch.optim, convergence, the doc examples.

Reference: tests/test_optim_reference.py (naive float64 NumPy from the formulas of docs/definitions.md). Checks of the
step machinery (grad_scale, skipping, clipping, resume, bad input, launch counts) are in tests/test_optim_state.py.
"""

import doctest

import numpy as np
import pytest

import gpunn
from gpunn import optim
from helpers import applied, assert_close, get, put
from test_optim_reference import Reference

# Every optimizer and option combination: (class name, constructor arguments).
CONFIGS = [
    ("SGD", dict(lr=0.05)),
    ("SGD", dict(lr=0.05, momentum=0.9)),
    ("SGD", dict(lr=0.05, momentum=0.9, dampening=0.3, weight_decay=0.01)),
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01, max_grad_norm=3.0)),
    ("SGD", dict(lr=0.05, momentum=0.5, maximize=True)),
    ("RMSprop", dict()),
    ("RMSprop", dict(lr=0.01, centered=True)),
    ("RMSprop", dict(lr=0.01, momentum=0.9, weight_decay=0.01)),
    ("RMSprop", dict(lr=0.005, alpha=0.9, centered=True, momentum=0.5, maximize=True, max_grad_norm=2.0)),
    ("Adam", dict(lr=0.01)),
    ("Adam", dict(lr=0.01, amsgrad=True, weight_decay=0.01)),
    ("Adam", dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6, maximize=True, max_grad_norm=3.0)),
    ("AdamW", dict(lr=0.01)),
    ("AdamW", dict(lr=0.01, weight_decay=0.1, amsgrad=True, betas=(0.5, 0.9))),
]
IDS = [f"{name}-{'-'.join(f'{k}={v}' for k, v in kw.items()) or 'defaults'}" for name, kw in CONFIGS]

# Several arrays of odd sizes (with an empty one). In the simulator chunks are 64 elements, so 70 and (2, 45) cross
# chunk borders; on the CPU path each array is one parallel loop.
SHAPES_CPU = [(1,), (31,), (0,), (1027,), (7, 33)]
SHAPES_DEV = [(1,), (31,), (0,), (70,), (2, 45)]

# Trajectory tolerances: the per-dtype helpers.TOL is for one rounding; here 100 steps of float32 rounding of p and
# the state accumulate, and Adam/RMSprop divide by sqrt(v), which amplifies relative errors where v is small.
TRAJ_TOL = {np.float32: (2e-5, 1e-4), np.float64: (1e-12, 1e-10)}


def make(name, params, **kw):
    if name == "SGD" and "lr" not in kw:
        kw["lr"] = 0.05
    return getattr(optim, name)(params, **kw)


def gradients(rng, shapes, steps, dtype):
    return [[rng.standard_normal(s).astype(dtype) for s in shapes] for _ in range(steps)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name,kw", CONFIGS, ids=IDS)
def test_trajectory_against_reference(name, kw, dtype, mode, rng):
    shapes, steps = (SHAPES_CPU, 100) if mode == "cpu" else (SHAPES_DEV, 5)  # the simulator is slow
    p0 = [rng.standard_normal(s).astype(dtype) for s in shapes]
    params = [put(p, mode) for p in p0]
    opt = make(name, params, **kw)
    ref = Reference(name, p0, **kw)
    for grads in gradients(rng, shapes, steps, dtype):
        assert applied(opt.step([put(g, mode) for g in grads]), mode)
        ref.step(grads)
    assert opt.step_count == steps
    atol, rtol = TRAJ_TOL[dtype]
    for i, (p, r) in enumerate(zip(params, ref.p)):
        assert_close(get(p), r, dtype, atol=atol, rtol=rtol, what=f"params[{i}] after {steps} steps")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_mixed_dtypes_and_many_arrays(dtype, mode, rng):
    """27 arrays (more than one launch's 24 on the device) of two dtypes in one optimizer; one global clip norm."""
    other = np.float64 if dtype == np.float32 else np.float32
    shapes = [(int(rng.integers(1, 9)),) for _ in range(27)]
    dts = [dtype if k % 3 else other for k in range(27)]
    p0 = [rng.standard_normal(s).astype(d) for s, d in zip(shapes, dts)]
    params = [put(p, mode) for p in p0]
    kw = dict(lr=0.01, amsgrad=True, max_grad_norm=2.0)
    opt, ref = optim.Adam(params, **kw), Reference("Adam", p0, **kw)
    for _ in range(5):
        grads = [rng.standard_normal(s).astype(d) for s, d in zip(shapes, dts)]
        assert opt.step([put(g, mode) for g in grads])
        ref.step(grads)
    for i, (p, r) in enumerate(zip(params, ref.p)):
        atol, rtol = TRAJ_TOL[dts[i]]
        assert_close(get(p), r, dts[i], atol=atol, rtol=rtol, what=f"params[{i}]")


# ---- parity with torch.optim (fused=False, foreach=False: PyTorch's reference loops) ---------------------------------
TORCH_TOL = {np.float32: (2e-5, 1e-4), np.float64: (1e-12, 1e-10)}


def torch_optimizer(torch, name, params, kw):
    kw = dict(kw)
    kw.pop("max_grad_norm", None)
    if name != "RMSprop":  # torch's RMSprop has no fused form
        kw["fused"] = False
    return getattr(torch.optim, name)(params, foreach=False, **kw)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name,kw", CONFIGS, ids=IDS)
def test_parity_with_torch(name, kw, dtype, mode, rng):
    torch = pytest.importorskip("torch")
    shapes, steps = (SHAPES_CPU, 30) if mode == "cpu" else (SHAPES_DEV[:3], 2)  # the 100-step runs are above
    p0 = [rng.standard_normal(s).astype(dtype) for s in shapes]
    tp = [torch.tensor(p, requires_grad=True) for p in p0]
    topt = torch_optimizer(torch, name, tp, kw)
    scale = 1024.0  # a loss scale: gpunn unscales inside the step, torch's GradScaler does p.grad *= 1 / scale
    if mode == "cpu":
        params = [torch.tensor(p) for p in p0]  # PyTorch CPU tensors are taken as they are (a NumPy view)
    else:
        params = [put(p, mode) for p in p0]
    opt = make(name, params, **kw)
    for grads in gradients(rng, shapes, steps, dtype):
        for t, g in zip(tp, grads):
            t.grad = torch.tensor(g)
        if kw.get("max_grad_norm"):
            torch.nn.utils.clip_grad_norm_(tp, kw["max_grad_norm"])
        topt.step()
        if mode == "cpu":
            scaled = [torch.tensor(g * dtype(scale)) for g in grads]
        else:
            scaled = [put(g * dtype(scale), mode) for g in grads]
        assert opt.step(scaled, grad_scale=scale)
    atol, rtol = TORCH_TOL[dtype]
    for i, (p, t) in enumerate(zip(params, tp)):
        got = p.numpy() if mode == "cpu" else get(p)
        assert_close(got, t.detach().numpy().astype(np.float64), dtype, atol=atol, rtol=rtol,
                     what=f"params[{i}] vs torch.optim.{name}")


# ---- convergence (optax alias_test style): every optimizer on a parabola and on Rosenbrock ---------------------------
def parabola(x):
    a = np.array([1.0, 10.0])
    return 0.5 * float((a * x * x).sum()), a * x


def rosenbrock(x):
    f = (1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2
    g = np.array([-2 * (1 - x[0]) - 400 * x[0] * (x[1] - x[0] ** 2), 200 * (x[1] - x[0] ** 2)])
    return f, g


# name -> (kwargs on the parabola, steps), (kwargs on Rosenbrock, steps)
CONVERGE = {
    "SGD": ((dict(lr=0.05), 300), (dict(lr=1.5e-3), 6000)),
    "Momentum": ((dict(lr=0.01), 300), (dict(lr=5e-4), 3000)),
    "NAG": ((dict(lr=0.01), 300), (dict(lr=5e-4), 3000)),
    "RMSprop": ((dict(lr=0.05), 300), (dict(lr=1e-3, momentum=0.9), 3000)),
    "Adam": ((dict(lr=0.05), 300), (dict(lr=2e-2), 3000)),
    "AdamW": ((dict(lr=0.05, weight_decay=1e-4), 300), (dict(lr=2e-2, weight_decay=0.0), 3000)),
}


@pytest.mark.parametrize("surface", ["parabola", "rosenbrock"])
@pytest.mark.parametrize("name", list(CONVERGE))
def test_convergence(name, surface):
    f, target, start, tol = ((parabola, (0.0, 0.0), (3.0, -2.0), 1e-2) if surface == "parabola"
                             else (rosenbrock, (1.0, 1.0), (-1.2, 1.0), 5e-2))
    kw, steps = CONVERGE[name][surface == "rosenbrock"]
    x = np.array(start)
    opt = getattr(optim, name)([x], **kw)
    f0 = f(x)[0]
    for _ in range(steps):
        opt.step([f(x)[1]])
    assert np.all(np.isfinite(x))
    assert np.abs(x - np.array(target)).max() < tol, f"{name} on {surface} ended at {x} (f {f0:.3g} -> {f(x)[0]:.3g})"


# ---- the docstring examples run (so they cannot rot) -----------------------------------------------------------------
@pytest.mark.parametrize("module", ["sgd", "rmsprop", "adam", "_flat", "_base"])
def test_doc_examples(module):
    import importlib

    mod = importlib.import_module(f"gpunn.optim.{module}")
    result = doctest.testmod(mod, extraglobs={"gpunn": gpunn, "np": np}, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0, result


# ---- the CPU path's parallel loops (arrays of at least PARALLEL_MIN elements; the arrays above take the plain loop)
@pytest.mark.parametrize("name,kw", [
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01, max_grad_norm=100.0)),
    ("RMSprop", dict(lr=0.01, centered=True, momentum=0.5, max_grad_norm=100.0)),
    ("AdamW", dict(lr=0.01, amsgrad=True, max_grad_norm=100.0)),
], ids=["SGD", "RMSprop", "AdamW"])
def test_large_array_parallel_cpu_loop(name, kw, rng):
    from gpunn._cpu import PARALLEL_MIN

    shapes = [(PARALLEL_MIN["optim"] + 7,), (5,)]
    p0 = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    params = [p.copy() for p in p0]
    opt, ref = make(name, params, **kw), Reference(name, p0, **kw)
    for grads in gradients(rng, shapes, 3, np.float32):
        assert opt.step(grads, grad_scale=2.0)
        ref.step(grads, grad_scale=2.0)
    for i, (p, r) in enumerate(zip(params, ref.p)):
        assert_close(p, r, np.float32, *TRAJ_TOL[np.float32], what=f"params[{i}]")
