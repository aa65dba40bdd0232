"""gpunn.optim.flatten and the flat-buffer path: any number of parameters updated by ONE launch per step.

References are independent: the flat buffer against np.concatenate of the inputs, the flat path against the same
optimizer stepping the separate arrays (bit-identical: the step is elementwise and the same kernel runs), launch
counts against the documented numbers (ceil(n / 24) for separate arrays, 1 for a flat buffer).
"""

import math

import numpy as np
import pytest

from gpunn import _arrays, _runtime, optim
from helpers import assert_close, get, put

SHAPES = [(), (0,), (1,), (31,), (7, 33), (3, 5, 17), (2, 0, 3)]


def ravel_all(arrays):
    return np.concatenate([np.asarray(a, dtype=np.float64).reshape(-1) for a in arrays])


def write(x, values, mode):
    """Write host ``values`` into the array ``x`` in place (a view stays a view)."""
    if mode == "cpu":
        x[...] = values
    elif x.size:  # the simulator's copy_to_device rejects empty arrays of other strides
        x.copy_to_device(np.ascontiguousarray(values, dtype=x.dtype))


# ---- flatten ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_flatten_copies_into_one_buffer_of_views(dtype, mode, rng):
    host = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    flat, views = optim.flatten([put(a, mode) for a in host])
    assert _arrays.kind(flat) == ("numpy" if mode == "cpu" else "numba")
    assert flat.shape == (sum(a.size for a in host),) and flat.dtype == np.dtype(dtype)
    assert np.array_equal(get(flat), ravel_all(host).astype(dtype))            # concatenation, row-major, no gaps
    assert len(views) == len(host)
    for i, (v, a) in enumerate(zip(views, host)):
        assert _arrays.kind(v) == _arrays.kind(flat) and v.dtype == np.dtype(dtype)
        assert tuple(v.shape) == a.shape, f"views[{i}]"
        assert np.array_equal(get(v), a), f"views[{i}]"
        assert _arrays.is_c_contiguous(v)


def test_flatten_views_alias_the_buffer(mode, rng):
    shapes = [(3,), (2, 4), (5,)]
    flat, views = optim.flatten([put(rng.standard_normal(s), mode) for s in shapes])
    new = rng.standard_normal(flat.shape[0])
    write(flat, new, mode)                                   # the buffer -> every view
    offsets = np.cumsum([0] + [math.prod(s) for s in shapes])
    for i, v in enumerate(views):
        assert np.array_equal(get(v).reshape(-1), new[offsets[i]:offsets[i + 1]]), f"views[{i}]"
    write(views[1], np.full((2, 4), 7.0), mode)              # a view -> the buffer (and no neighbour)
    expect = new.copy()
    expect[3:11] = 7.0
    assert np.array_equal(get(flat), expect)


def test_flatten_reads_non_contiguous_inputs(mode, rng):
    a = rng.standard_normal((6, 5))
    b = rng.standard_normal(9)
    if mode == "cpu":
        inputs = [a.T, b[::2]]
    else:
        inputs = [put(b, mode)[::2], put(a, mode)[:, 1:4]]
        a, b = b, a  # the expected order below: b[::2] then a[:, 1:4]
    flat, views = optim.flatten(inputs)
    expect = [a.T, b[::2]] if mode == "cpu" else [a[::2], b[:, 1:4]]
    assert np.array_equal(get(flat), ravel_all(expect))
    for v, e in zip(views, expect):
        assert np.array_equal(get(v), e)


def test_flatten_bad_input(mode):
    a = put(np.zeros(3, np.float32), mode)
    with pytest.raises(TypeError, match="arrays must be a list"):
        optim.flatten(a)                                     # one array, not a list of them
    with pytest.raises(ValueError, match="arrays is empty"):
        optim.flatten([])
    with pytest.raises(TypeError, match=r"arrays\[1\]"):
        optim.flatten([a, [1.0, 2.0]])
    with pytest.raises(TypeError, match=r"arrays\[2\] has dtype float64"):
        optim.flatten([a, a, put(np.zeros(3), mode)])
    other = put(np.zeros(3, np.float32), "cpu" if mode == "device" else "device") if _runtime.mode() != "cpu" else None
    if other is not None:
        with pytest.raises(TypeError, match=r"arrays\[1\] is a .* array but arrays\[0\]"):
            optim.flatten([a, other])


def test_flatten_torch_kinds_and_mixing(rng):
    torch = pytest.importorskip("torch")
    ts = [torch.tensor(rng.standard_normal(s).astype(np.float32)) for s in [(2, 3), (4,), ()]]
    flat, views = optim.flatten(ts)
    assert isinstance(flat, torch.Tensor) and flat.shape == (11,) and flat.dtype == torch.float32
    assert np.array_equal(flat.numpy(), ravel_all([t.numpy() for t in ts]))
    for v, t in zip(views, ts):
        assert v.shape == t.shape and v._base is flat          # a view of the one buffer
    views[1][2] = 9.0
    assert flat[6 + 2].item() == 9.0                           # views[1] starts at element 6
    with pytest.raises(TypeError, match=r"arrays\[1\] is a numpy array but arrays\[0\] is a torch_cpu"):
        optim.flatten([ts[0], np.zeros(3, np.float32)])
    with pytest.raises(TypeError, match=r"arrays\[1\] has dtype torch.float64"):
        optim.flatten([ts[0], torch.zeros(3, dtype=torch.float64)])


# ---- the flat path: one launch for any number of views, the same numbers as separate arrays ---------------------------
def test_one_launch_for_200_arrays_separate_or_flat(rng):
    if _runtime.mode() == "cpu":
        pytest.skip("no GPU and the simulator is off")
    shapes = [(int(rng.integers(1, 4)),) for _ in range(200)]
    p0 = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    separate = [put(p, "device") for p in p0]
    flat, views = optim.flatten([put(p, "device") for p in p0])
    gflat, gviews = optim.flatten([put(np.zeros(s, np.float32), "device") for s in shapes])
    grads = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    for gv, g in zip(gviews, grads):
        gv.copy_to_device(g)
    opt_sep = optim.Adam(separate, lr=0.01)
    opt_sep.step([put(g, "device") for g in grads])
    assert opt_sep.last_launches == 1                      # 200 separate arrays: one launch (a table of addresses)
    opt = optim.Adam([flat], lr=0.01)
    opt.step([gflat])
    assert opt.last_launches == 1                          # all 200 views and their state: one launch
    for i, (v, p) in enumerate(zip(views, separate)):      # ... with the same numbers as the separate arrays
        assert np.array_equal(get(v), get(p)), f"views[{i}]"
    opt.step([gflat], grad_scale=4.0)
    assert opt.last_launches == 2                          # + the check pass
    opt.set(max_grad_norm=1.0)
    opt.step([gflat])
    assert opt.last_launches == 2
    assert opt.step_count == 3


CASES = [
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01)),
    ("Adam", dict(lr=0.01, amsgrad=True, weight_decay=0.01)),
    ("AdamW", dict(lr=0.01, betas=(0.8, 0.95))),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name,kw", CASES, ids=[c[0] for c in CASES])
def test_training_through_views_equals_separate_arrays(name, kw, dtype, mode, rng):
    """Bit-identical parameters and state after several steps; the views still alias the buffer afterwards."""
    n_arrays = 30 if mode == "cpu" else 26                 # > 24: the separate arrays take 2 launches on the device
    shapes = [tuple(int(d) for d in rng.integers(0, 5, size=int(rng.integers(1, 3)))) for _ in range(n_arrays)]
    p0 = [rng.standard_normal(s).astype(dtype) for s in shapes]
    separate = [put(p, mode) for p in p0]
    flat, views = optim.flatten([put(p, mode) for p in p0])
    gflat, gviews = optim.flatten([put(np.zeros(s, dtype), mode) for s in shapes])
    opt_sep = getattr(optim, name)(separate, **kw)
    opt_flat = getattr(optim, name)([flat], **kw)
    for _ in range(4):
        grads = [rng.standard_normal(s).astype(dtype) for s in shapes]
        for gv, g in zip(gviews, grads):
            write(gv, g, mode)                             # gradients written into the views
        assert opt_sep.step([put(g, mode) for g in grads])
        assert opt_flat.step([gflat])
    for i, (v, p) in enumerate(zip(views, separate)):
        assert np.array_equal(get(v), get(p)), f"views[{i}] differs from the separately trained params[{i}]"
    assert np.array_equal(get(flat), ravel_all([get(p) for p in separate]).astype(dtype))
    sd_sep, sd_flat = opt_sep.state_dict(), opt_flat.state_dict()
    for sname in optim.__dict__[name].STATE:
        if f"{sname}.0" in sd_sep:
            assert np.array_equal(sd_flat[f"{sname}.0"], ravel_all([sd_sep[f"{sname}.{i}"]
                                                                   for i in range(n_arrays)]).astype(dtype)), sname
    # after the steps the views are still views of the buffer the optimizer updates
    new = rng.standard_normal(flat.shape[0]).astype(dtype)
    write(flat, new, mode)
    assert np.array_equal(ravel_all([get(v) for v in views]).astype(dtype), new)
    if mode == "cpu":
        assert all(np.shares_memory(v, flat) for v in views if v.size)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_flat_path_with_clipping_and_loss_scale(dtype, mode, rng):
    """With max_grad_norm the global norm is summed in another order: equal to the separate arrays to rounding."""
    shapes = [(5,), (3, 4), (1,), (40,)]
    p0 = [rng.standard_normal(s).astype(dtype) for s in shapes]
    separate = [put(p, mode) for p in p0]
    flat, views = optim.flatten([put(p, mode) for p in p0])
    gflat, gviews = optim.flatten([put(np.zeros(s, dtype), mode) for s in shapes])
    kw = dict(lr=0.01, max_grad_norm=1.5)
    opt_sep, opt_flat = optim.Adam(separate, **kw), optim.Adam([flat], **kw)
    for step in range(3):
        grads = [(rng.standard_normal(s) * 64).astype(dtype) for s in shapes]
        if step == 1:
            grads[2][0] = np.inf                           # a skipped step on both paths
        for gv, g in zip(gviews, grads):
            write(gv, g, mode)
        applied = opt_flat.step([gflat], grad_scale=64.0)
        assert applied == opt_sep.step([put(g, mode) for g in grads], grad_scale=64.0) == (step != 1)
    assert opt_flat.step_count == 2
    for i, (v, p) in enumerate(zip(views, separate)):
        assert_close(get(v), get(p).astype(np.float64), dtype, what=f"views[{i}]")


def test_torch_module_trained_through_flat_views(rng):
    """The documented PyTorch recipe: p.data = view, p.grad = grad view (backward accumulates into it in place);
    gpunn.optim on the flat buffers gives exactly the parameters of gpunn.optim on the separate tensors."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(int(rng.integers(1 << 31)))
    a = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 2))
    b = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 2))
    b.load_state_dict(a.state_dict())
    flat, views = optim.flatten([p.detach() for p in a.parameters()])
    gflat, gviews = optim.flatten([torch.zeros_like(p) for p in a.parameters()])
    for p, v, g in zip(a.parameters(), views, gviews):
        p.data = v
        p.grad = g
    opt_a = optim.Adam([flat], lr=0.01)
    opt_b = optim.Adam([p.data for p in b.parameters()], lr=0.01)
    for _ in range(3):
        x = torch.tensor(rng.standard_normal((8, 5)).astype(np.float32))
        gflat.zero_()
        a(x).square().mean().backward()
        assert opt_a.step([gflat])
        b.zero_grad()
        b(x).square().mean().backward()
        assert opt_b.step([p.grad for p in b.parameters()])
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        assert pa.data_ptr() >= flat.data_ptr() and pa.data_ptr() < flat.data_ptr() + flat.numel() * 4, name
        assert torch.equal(pa, pb), name


# ---- the benchmark's "flat" variant steps the same parameters as the 200-tensor one -----------------------------------
@pytest.mark.parametrize("opt_name", ["adam", "sgd_momentum"])
def test_bench_flat_entry_matches_the_separate_one(opt_name, rng):
    from gpunn.bench import core
    from gpunn.bench.entries import ENTRIES

    by_name = {e.name: e for e in ENTRIES}
    sep, flat = by_name[f"{opt_name}.x200"], by_name[f"{opt_name}.x200flat"]
    assert "9 launches" in sep.notes["gpunn"] and "one fused launch" in flat.notes["gpunn"]
    host = sep.make(core.parse_size("1000"), np.dtype(np.float64), rng)
    providers = ["gpunn", "numpy"] + (["torch"] if _has_torch() else [])
    results = {}
    for e in (sep, flat):
        for provider in providers:
            a = {k: core.convert([x.copy() for x in v], provider, "cpu") for k, v in host.items()}
            step = e.impls[core.impl_key(provider)](a, core.Context("cpu", np.float64, provider, None))
            step()
            step()
            if e is flat:  # a["p"] now holds the 200 views of one buffer, and they were stepped
                assert len(a["p"]) == 200 and all(tuple(p.shape) == (h.size,) for p, h in zip(a["p"], host["p"]))
            results[e.name, provider] = ravel_all([np.asarray(p) for p in a["p"]])
    assert not np.array_equal(results[sep.name, "gpunn"], ravel_all(host["p"]))          # it did step
    assert np.array_equal(results[flat.name, "gpunn"], results[sep.name, "gpunn"])       # bit-identical
    for provider in providers[1:]:
        np.testing.assert_allclose(results[flat.name, provider], results[sep.name, "gpunn"], rtol=1e-9, atol=1e-12)


def _has_torch():
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


# ---- the training app's MLP: its arrays view one buffer, so a deep network still takes one optimizer launch ----------
def test_app_mlp_steps_one_flat_buffer_in_one_launch(rng):
    if _runtime.mode() == "cpu":
        pytest.skip("no GPU and the simulator is off")
    from gpunn.app import linear
    from gpunn.app.mlp import MLP

    sizes = [5] + [3] * 13 + [2]                             # 14 layers + 13 PReLU slopes: 41 arrays
    x = rng.standard_normal((4, 5)).astype(np.float32)
    dout = rng.standard_normal((4, 2)).astype(np.float32)
    models = {"cpu": MLP(sizes, "prelu", linear.backend("cpu"), seed=3),
              "device": MLP(sizes, "prelu", linear.backend("sim" if _runtime.simulator() else "cuda"), seed=3)}
    for mode, model in models.items():
        assert len(model.arrays) == 41 and len(model.params) == 1
        opt = optim.Adam(model.params, lr=0.01)
        for _ in range(2):
            model.forward(put(x, mode))
            grads = model.backward(put(dout, mode))
            assert len(grads) == 1 and grads[0] is model.flat_grad
            if mode == "cpu":                                # the last layer's gradients, from their formulas
                h_in = model._cache[-1][0]
                assert_close(model.grad_views[26], h_in.astype(np.float64).T @ dout, np.float32)
                assert_close(model.grad_views[27], dout.sum(axis=0, dtype=np.float64), np.float32)
            opt.step(grads)
        if mode == "device":
            assert opt.last_launches == 1                    # 41 separate arrays would take 2
        assert np.array_equal(get(model.flat), ravel_all([get(a) for a in model.arrays]).astype(np.float32))
    # two float32 matrix-product implementations (BLAS vs the app's kernel) through 14 layers and 2 Adam steps (whose
    # m / sqrt(v) amplifies the gradients' rounding): the trajectory tolerance of tests/test_optim.py
    assert_close(get(models["device"].flat), get(models["cpu"].flat).astype(np.float64), np.float32,
                 atol=2e-5, rtol=1e-4, what="simulator vs CPU parameters after 2 steps")
