"""gpunn.optim step machinery: grad_scale, skip on inf/NaN, clipping, schedules, resume (file, new process),
bad input, failing calls that must change nothing, and launch counts. Reference: tests/test_optim_reference.py."""

import os
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from gpunn import optim
from gpunn.optim import _kernels
from helpers import applied, assert_close, get, put
from test_optim_reference import Reference

SHAPES = [(3,), (31,), (0,), (5, 17)]
TOL = {np.float32: (2e-5, 1e-4), np.float64: (1e-12, 1e-10)}  # a few steps of rounding (see test_optim.TRAJ_TOL)

# One configuration per optimizer that keeps every state tensor it has.
FULL = [
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01)),
    ("RMSprop", dict(lr=0.01, centered=True, momentum=0.5, weight_decay=0.01)),
    ("Adam", dict(lr=0.01, amsgrad=True, weight_decay=0.01)),
    ("AdamW", dict(lr=0.01, amsgrad=True, weight_decay=0.1)),
]
FULL_IDS = [name for name, _ in FULL]


def setup(name, kw, mode, rng, dtype=np.float32, shapes=SHAPES):
    p0 = [rng.standard_normal(s).astype(dtype) for s in shapes]
    params = fresh(p0, mode)
    return p0, params, getattr(optim, name)(params, **kw)


def fresh(p0, mode):
    """New parameter arrays holding p0's values (put() alone gives p0 itself on the CPU)."""
    return [put(p.copy(), mode) for p in p0]


def grads_for(rng, shapes, dtype=np.float32):
    return [rng.standard_normal(s).astype(dtype) for s in shapes]


def snapshot(params, opt):
    """Host copies of every parameter and of the whole state_dict."""
    return [get(p).copy() for p in params], opt.state_dict(), opt.step_count


def assert_unchanged(before, params, opt):
    ps, sd, step = before
    for i, (a, p) in enumerate(zip(ps, params)):
        assert np.array_equal(a, get(p)), f"params[{i}] changed"
    now = opt.state_dict()
    assert now.keys() == sd.keys(), f"state_dict keys changed: {sorted(now.keys() ^ sd.keys())}"
    for k in sd:
        a, b = np.asarray(now[k]), np.asarray(sd[k])
        assert np.array_equal(a, b, equal_nan=a.dtype.kind == "f"), f"state_dict[{k!r}] changed"
    assert opt.step_count == step


# ---- grad_scale, skipping, clipping ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name,kw", FULL, ids=FULL_IDS)
def test_grad_scale_power_of_two_is_exact(name, kw, mode, rng):
    """Gradients scaled by 2^k and unscaled in the step give the very same bits as the unscaled gradients."""
    p0, params_a, a = setup(name, kw, mode, rng)
    params_b = fresh(p0, mode)
    b = getattr(optim, name)(params_b, **kw)
    for _ in range(4):
        g = grads_for(rng, SHAPES)
        assert a.step([put(x, mode) for x in g])
        assert b.step([put(x * np.float32(2.0 ** 12), mode) for x in g], grad_scale=2.0 ** 12)
    for i, (pa, pb) in enumerate(zip(params_a, params_b)):
        assert np.array_equal(get(pa), get(pb)), f"params[{i}]"


@pytest.mark.parametrize("how,bad", [("grad_scale", np.inf), ("grad_scale", np.nan), ("max_grad_norm", -np.inf)])
@pytest.mark.parametrize("name,kw", FULL, ids=FULL_IDS)
def test_nonfinite_gradient_skips_the_step(name, kw, how, bad, mode, rng):
    kw = dict(kw, max_grad_norm=1e6) if how == "max_grad_norm" else kw
    scale = 64.0 if how == "grad_scale" else None
    p0, params, opt = setup(name, kw, mode, rng)
    ref = Reference(name, p0, **kw)
    for _ in range(2):
        g = grads_for(rng, SHAPES)
        assert opt.step([put(x * np.float32(scale or 1), mode) for x in g], grad_scale=scale)
        ref.step([x * np.float32(scale or 1) for x in g], grad_scale=scale)
    before = snapshot(params, opt)
    g = grads_for(rng, SHAPES)
    g[3][4, 16] = bad  # the last element of the last array
    assert not applied(opt.step([put(x, mode) for x in g], grad_scale=scale), mode)
    assert not ref.step(g, grad_scale=scale)
    assert_unchanged(before, params, opt)
    if mode == "device":
        assert opt.last_launches == 2  # the check pass, and the step, which sees the skip on the device
    g = grads_for(rng, SHAPES)
    assert applied(opt.step([put(x, mode) for x in g], grad_scale=scale), mode)
    ref.step(g, grad_scale=scale)
    assert opt.step_count == ref.t == 3  # the skipped step did not count (bias corrections use t = 3)
    for i, (p, r) in enumerate(zip(params, ref.p)):
        assert_close(get(p), r, np.float32, *TOL[np.float32], what=f"params[{i}]")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_clipping(dtype, mode, rng):
    # active: the global norm of [3, 4] and [12] is 13 -> clipped to 1.3, so g = [0.3, 0.4], [1.2] (up to 1e-6)
    params = [put(np.zeros(2, dtype), mode), put(np.zeros(1, dtype), mode)]
    opt = optim.SGD(params, lr=1.0, max_grad_norm=1.3)
    assert opt.step([put(np.array([3.0, 4.0], dtype), mode), put(np.array([12.0], dtype), mode)])
    c = 1.3 / (13.0 + 1e-6)
    assert_close(get(params[0]), [-3 * c, -4 * c], dtype)
    assert_close(get(params[1]), [-12 * c], dtype)
    # inactive (norm below the limit): the same bits as no clipping at all
    p0 = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    pa, pb = fresh(p0, mode), fresh(p0, mode)
    a, b = optim.Adam(pa, lr=0.01), optim.Adam(pb, lr=0.01, max_grad_norm=1e9)
    for _ in range(3):
        g = grads_for(rng, SHAPES, dtype)
        a.step([put(x, mode) for x in g])
        b.step([put(x, mode) for x in g])
    for i in range(len(SHAPES)):
        assert np.array_equal(get(pa[i]), get(pb[i])), f"params[{i}]"


# ---- hyperparameters change between steps (schedules), without recompiling ------------------------------------------
@pytest.mark.parametrize("name,kw", FULL, ids=FULL_IDS)
def test_schedule(name, kw, mode, rng):
    p0, params, opt = setup(name, kw, mode, rng, np.float64)
    ref = Reference(name, p0, **kw)
    for t in range(6):
        lr = kw["lr"] * 0.7 ** t
        if t % 2:
            opt.set(lr=lr)
        else:
            opt.lr = lr
        ref.h["lr"] = lr
        if name in ("Adam", "AdamW"):
            opt.betas = ref.h["betas"] = (0.9 - 0.05 * t, 0.999)
        g = grads_for(rng, SHAPES, np.float64)
        opt.step([put(x, mode) for x in g])
        ref.step(g)
    for i, (p, r) in enumerate(zip(params, ref.p)):
        assert_close(get(p), r, np.float64, *TOL[np.float64], what=f"params[{i}]")
    if mode == "cpu":  # a new lr is a kernel argument: one compiled specialization only
        hp = opt.hyperparams()
        uses = tuple(bool(u) for u in opt._uses(hp))
        _, update = opt.MATH(np.dtype(np.float64), tuple(opt._flags(hp)))
        fn = _kernels.step_cpu(update, np.dtype(np.float64), uses).serial
        assert len(fn.signatures) == 1


def test_momentum_switched_on_later(mode, rng):
    """SGD without momentum for 3 steps, then with: the buffer starts as the gradient (PyTorch's first step)."""
    p0, params, opt = setup("SGD", dict(lr=0.1), mode, rng, np.float64)
    ref = Reference("SGD", p0, lr=0.1)
    for t in range(6):
        if t == 3:
            opt.momentum = ref.h["momentum"] = 0.9
        g = grads_for(rng, SHAPES, np.float64)
        opt.step([put(x, mode) for x in g])
        ref.step(g)
    for i, (p, r) in enumerate(zip(params, ref.p)):
        assert_close(get(p), r, np.float64, *TOL[np.float64], what=f"params[{i}]")


# ---- resume ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["npz", "pickle"])
@pytest.mark.parametrize("name,kw", FULL, ids=FULL_IDS)
def test_resume_from_file_is_bit_identical(name, kw, fmt, mode, rng, tmp_path):
    kw = dict(kw, max_grad_norm=2.0)
    p0, params, opt = setup(name, kw, mode, rng)
    half = 4 if mode == "cpu" else 2  # the simulator is slow
    grads = [grads_for(rng, SHAPES) for _ in range(2 * half)]
    straight = fresh(p0, mode)
    ref_opt = getattr(optim, name)(straight, **kw)
    for t, g in enumerate(grads):
        ref_opt.lr = kw["lr"] * 0.9 ** t
        ref_opt.step([put(x, mode) for x in g], grad_scale=8.0)
    for t, g in enumerate(grads[:half]):
        opt.lr = kw["lr"] * 0.9 ** t
        opt.step([put(x, mode) for x in g], grad_scale=8.0)
    path = tmp_path / f"ckpt.{fmt}"
    saved_params = [get(p) for p in params]
    if fmt == "npz":
        np.savez(path, **opt.state_dict())
        np.savez(tmp_path / "params.npz", *saved_params)
        loaded = dict(np.load(path))
        with np.load(tmp_path / "params.npz") as f:
            restored = [f[f"arr_{i}"] for i in range(len(SHAPES))]
    else:
        path.write_bytes(pickle.dumps((opt.state_dict(), saved_params)))
        loaded, restored = pickle.loads(path.read_bytes())
    del opt, params
    params = fresh(restored, mode)
    resumed = getattr(optim, name)(params, lr=123.0)  # other hyperparameters: load_state_dict restores them
    resumed.load_state_dict(loaded)
    assert resumed.step_count == half and resumed.max_grad_norm == 2.0
    for t, g in enumerate(grads[half:], start=half):
        resumed.lr = kw["lr"] * 0.9 ** t
        resumed.step([put(x, mode) for x in g], grad_scale=8.0)
    for i, (p, q) in enumerate(zip(params, straight)):
        assert np.array_equal(get(p), get(q)), f"params[{i}] differ after resuming"


def test_resume_in_a_new_process(rng, tmp_path):
    """Save after 5 steps, continue 5 steps in a new Python process: the same bits as 10 steps in one run."""
    shapes = [(70000,)]  # large enough for the parallel CPU loop and check pass (PARALLEL_MIN)
    p0 = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    grads = [[rng.standard_normal(s).astype(np.float32) for s in shapes] for _ in range(10)]
    kw = dict(lr=0.01, amsgrad=True, weight_decay=0.01, max_grad_norm=50.0)
    straight = [p.copy() for p in p0]
    a = optim.AdamW(straight, **kw)
    for g in grads:
        a.step(g, grad_scale=4.0)
    b = optim.AdamW(p0, **kw)
    for g in grads[:5]:
        b.step(g, grad_scale=4.0)
    np.savez(tmp_path / "state.npz", **b.state_dict())
    np.savez(tmp_path / "rest.npz", *p0, *[x for g in grads[5:] for x in g])
    script = textwrap.dedent(f"""
        import numpy as np
        from gpunn import optim
        rest = np.load({str(tmp_path / 'rest.npz')!r})
        arrays = [rest[f"arr_{{i}}"] for i in range(len(rest.files))]
        params, grads = arrays[:1], arrays[1:]
        opt = optim.AdamW(params)
        opt.load_state_dict(np.load({str(tmp_path / 'state.npz')!r}))
        for k in range(5):
            assert opt.step(grads[k:k + 1], grad_scale=4.0)
        np.savez({str(tmp_path / 'out.npz')!r}, *params)
    """)
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="0")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    with np.load(tmp_path / "out.npz") as out:
        assert np.array_equal(out["arr_0"], straight[0]), "params differ after resuming in a new process"


# ---- bad input; failing calls change nothing -------------------------------------------------------------------------
def test_failing_step_changes_nothing(mode, rng):
    p0, params, opt = setup("Adam", dict(lr=0.01, amsgrad=True, max_grad_norm=5.0), mode, rng)
    for _ in range(2):
        opt.step([put(x, mode) for x in grads_for(rng, SHAPES)])
    before = snapshot(params, opt)
    good = [put(x, mode) for x in grads_for(rng, SHAPES)]
    wrong_shape = good[:3] + [put(np.ones((17, 5), np.float32), mode)]
    wrong_dtype = good[:1] + [put(np.ones(31, np.float64), mode)] + good[2:]
    with pytest.raises(ValueError, match=r"grads\[3\] has shape"):
        opt.step(wrong_shape)
    with pytest.raises(TypeError, match=r"grads\[1\] has dtype float64"):
        opt.step(wrong_dtype)
    with pytest.raises(ValueError, match="grads has 3 arrays"):
        opt.step(good[:3])
    if mode == "device":
        with pytest.raises(TypeError, match=r"grads\[2\] is a host array"):
            opt.step(good[:2] + [np.zeros(0, np.float32)] + good[3:])
    with pytest.raises(ValueError, match="grad_scale"):
        opt.step(good, grad_scale=0.0)
    opt.lr = -1.0
    with pytest.raises(ValueError, match="lr"):
        opt.step(good)
    opt.lr = 0.01
    opt.betas = (0.9, 1.0)
    with pytest.raises(ValueError, match=r"betas\[1\]"):
        opt.step(good)
    opt.betas = (0.9, 0.999)
    with pytest.raises(ValueError, match="eps"):
        opt.set(lr=0.5, eps=0.0)  # validated together: lr is not applied either
    assert opt.lr == 0.01
    assert_unchanged(before, params, opt)
    assert opt.step(good)  # and the optimizer still works


def test_failing_load_changes_nothing(mode, rng):
    p0, params, opt = setup("RMSprop", dict(lr=0.01, centered=True, momentum=0.9), mode, rng)
    for _ in range(2):
        opt.step([put(x, mode) for x in grads_for(rng, SHAPES)])
    before = snapshot(params, opt)
    sd = opt.state_dict()
    cases = [
        (dict(sd, lr=0.5, **{"grad_avg.3": np.zeros((17, 5), np.float32)}), ValueError, r"'grad_avg.3' has shape"),
        (dict(sd, lr=0.5, **{"square_avg.2": np.zeros(0, np.float64)}), ValueError, "'square_avg.2'.*dtype"),
        (dict(sd, lr=0.5, bogus=1), ValueError, "unknown entry 'bogus'"),
        (dict(sd, lr=0.5, **{"exp_avg.0": np.zeros(3, np.float32)}), ValueError, "unknown entry 'exp_avg.0'"),
        ({k: v for k, v in sd.items() if k != "grad_avg.1"}, ValueError, "no grad_avg.1"),
        ({k: v for k, v in sd.items() if k != "alpha"}, ValueError, "no 'alpha'"),
        (dict(sd, optimizer="Adam"), ValueError, "for optimizer 'Adam'"),
        (dict(sd, num_params=3), ValueError, "num_params is 3"),
        (dict(sd, lr=0.5, eps=-1.0), ValueError, "eps"),
        ([1, 2], TypeError, "state_dict must be a dict"),
    ]
    for bad, exc, match in cases:
        with pytest.raises(exc, match=match):
            opt.load_state_dict(bad)
    with pytest.raises(ValueError, match="for optimizer 'RMSprop', not 'Adam'"):
        optim.Adam(fresh(p0, mode)).load_state_dict(sd)
    assert opt.lr == 0.01
    assert_unchanged(before, params, opt)


def _p(mode, *shape, dtype=np.float32):
    return put(np.zeros(shape, dtype), mode)


BAD_CONSTRUCTORS = [
    (lambda m: optim.SGD([], lr=0.1), ValueError, "params is empty"),
    (lambda m: optim.SGD([_p(m, 3)], lr=-0.1), ValueError, "lr must be >= 0"),
    (lambda m: optim.SGD([_p(m, 3)], lr=0.1, nesterov=True), ValueError, "nesterov needs momentum > 0"),
    (lambda m: optim.SGD([_p(m, 3)], lr=0.1, momentum=0.9, dampening=0.1, nesterov=True), ValueError,
     "nesterov needs.*dampening 0"),
    (lambda m: optim.SGD([_p(m, 3)], lr=0.1, momentum=-0.5), ValueError, "momentum must be >= 0"),
    (lambda m: optim.SGD([_p(m, 3)], lr="0.1"), TypeError, "lr must be a real number"),
    (lambda m: optim.SGD([_p(m, 3)], lr=0.1, nesterov=1), TypeError, "nesterov must be True or False"),
    (lambda m: optim.Adam([_p(m, 3)], betas=(1.0, 0.999)), ValueError, r"betas\[0\] must be < 1"),
    (lambda m: optim.Adam([_p(m, 3)], betas=(0.9, -0.1)), ValueError, r"betas\[1\] must be >= 0"),
    (lambda m: optim.Adam([_p(m, 3)], betas=0.9), TypeError, "betas must be a pair"),
    (lambda m: optim.Adam([_p(m, 3)], eps=0.0), ValueError, "eps must be > 0"),
    (lambda m: optim.AdamW([_p(m, 3)], weight_decay=-1.0), ValueError, "weight_decay must be >= 0"),
    (lambda m: optim.Adam([_p(m, 3)], max_grad_norm=0.0), ValueError, "max_grad_norm must be > 0"),
    (lambda m: optim.RMSprop([_p(m, 3)], alpha=1.5), ValueError, "alpha must be <= 1"),
    (lambda m: optim.RMSprop([_p(m, 3)], eps=-1e-8), ValueError, "eps must be > 0"),
    (lambda m: optim.RMSprop([_p(m, 3)], lr=np.nan), ValueError, "lr must be finite"),
    (lambda m: optim.Adam([_p(m, 3), _p(m, 3, dtype=np.int32)]), TypeError, r"params\[1\] must be float32 or float64"),
    (lambda m: optim.Adam([_p(m, 3), [1.0, 2.0]]), TypeError, r"params\[1\] must be an array"),
    (lambda m: optim.Adam([np.zeros((4, 4), np.float32)[:, ::2]]), ValueError, r"params\[0\] must be C-contiguous"),
]


@pytest.mark.parametrize("case", range(len(BAD_CONSTRUCTORS)))
def test_bad_constructor_arguments(case, mode):
    build, exc, match = BAD_CONSTRUCTORS[case]
    with pytest.raises(exc, match=match):
        build(mode)


def test_host_and_device_params_do_not_mix():
    pytest.importorskip("numba")
    from gpunn import _runtime

    if _runtime.mode() == "cpu":
        pytest.skip("no GPU and the simulator is off")
    with pytest.raises(TypeError, match=r"params\[1\] is a device array but params\[0\] is a host array"):
        optim.Adam([np.zeros(3, np.float32), put(np.zeros(3, np.float32), "device")])


def test_bad_step_arguments(mode):
    opt = optim.SGD([_p(mode, 3)], lr=0.1)
    with pytest.raises(TypeError, match="grads must be a list"):
        opt.step(_p(mode, 3))
    with pytest.raises(TypeError, match=r"grads\[0\] must be an array"):
        opt.step([[1.0, 2.0, 3.0]])
    with pytest.raises(ValueError, match="foo is not a hyperparameter of SGD"):
        opt.set(foo=1)


# ---- state_dict contents ---------------------------------------------------------------------------------------------
def test_state_dict_contents(rng):
    params = [np.zeros(3, np.float32), np.zeros((2, 2), np.float64)]
    opt = optim.Adam(params, lr=0.01, amsgrad=True)
    sd = opt.state_dict()
    assert sd["optimizer"] == "Adam" and sd["step"] == 0 and "exp_avg.0" not in sd  # state is made at the 1st step
    opt.step([np.ones(3, np.float32), np.full((2, 2), 2.0)])
    sd = opt.state_dict()
    assert sd["step"] == 1 and sd["betas"] == (0.9, 0.999) and np.isnan(sd["max_grad_norm"])
    assert sd["exp_avg.1"].shape == (2, 2) and sd["exp_avg.1"].dtype == np.float64
    assert_close(sd["exp_avg.1"], np.full((2, 2), 0.2), np.float64)                    # (1 - 0.9) * 2
    assert_close(sd["max_exp_avg_sq.0"], np.full(3, 0.001), np.float32)                # (1 - 0.999) * 1
    sd["exp_avg.0"][:] = 5.0  # a copy: changing it does not touch the optimizer
    assert opt.state_dict()["exp_avg.0"][0] != 5.0


# ---- launches --------------------------------------------------------------------------------------------------------
def test_one_launch_per_step(rng):
    from gpunn import _runtime

    if _runtime.mode() == "cpu":
        pytest.skip("no GPU and the simulator is off")
    params = [put(rng.standard_normal(s).astype(np.float32), "device") for s in [(3,), (200,), (0,), (5, 7)]]
    opt = optim.Adam(params, amsgrad=True)
    g = [put(np.ones(p.shape, np.float32), "device") for p in params]
    opt.step(g)
    assert opt.last_launches == 1                     # every parameter and its state in one kernel launch
    opt.step(g, grad_scale=2.0)
    assert opt.last_launches == 2                     # + the check pass
    many = [put(np.zeros(2, np.float32), "device") for _ in range(49)]
    many += [put(np.zeros(2, np.float64), "device")]
    opt = optim.SGD(many, lr=0.1)
    opt.step([put(np.ones(2, dtype=p.dtype), "device") for p in many])
    assert opt.last_launches == 1 + 1                 # 49 float32 arrays: one launch; the float64 one: another
    for p in many:
        assert_close(get(p), [-0.1, -0.1], p.dtype)


# ---- state views -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,kw", FULL, ids=FULL_IDS)
def test_state_views_are_the_state(name, kw, mode, rng):
    """Views show what state_dict copies, and writing into them acts as loading those values would."""
    p0, params, opt = setup(name, kw, mode, rng)
    opt.step([put(x, mode) for x in grads_for(rng, SHAPES)])
    sd = opt.state_dict()
    for i, shape in enumerate(SHAPES):
        views = opt.state_views(i)
        assert sorted(views) == sorted(s for s in opt.STATE if f"{s}.{i}" in sd)
        for sname, view in views.items():
            assert tuple(view.shape) == shape
            assert np.array_equal(get(view), sd[f"{sname}.{i}"]), f"{sname}.{i}"
            new = rng.uniform(0.5, 2.0, shape).astype(np.float32)  # positive: a valid (exp_avg_)sq
            sd[f"{sname}.{i}"] = new
            view[...] = put(new, mode) if mode == "device" else new
    twin_params = fresh([get(p) for p in params], mode)
    twin = getattr(optim, name)(twin_params, **kw)
    twin.load_state_dict(sd)
    g = grads_for(rng, SHAPES)
    opt.step([put(x, mode) for x in g])
    twin.step([put(x, mode) for x in g])
    for i, (p, q) in enumerate(zip(params, twin_params)):
        assert np.array_equal(get(p), get(q)), f"params[{i}]"


@pytest.mark.parametrize("name,kw,names", [
    ("SGD", dict(lr=0.1), []),
    ("SGD", dict(lr=0.1, momentum=0.9), ["momentum_buffer"]),
    ("RMSprop", dict(), ["square_avg"]),
    ("RMSprop", dict(centered=True, momentum=0.5), ["square_avg", "grad_avg", "momentum_buffer"]),
    ("Adam", dict(), ["exp_avg", "exp_avg_sq"]),
    ("Adam", dict(amsgrad=True), ["exp_avg", "exp_avg_sq", "max_exp_avg_sq"]),
])
def test_state_views_before_a_step_are_zeros_the_options_use(name, kw, names, mode, rng):
    p0, params, opt = setup(name, kw, mode, rng)
    twin_params = fresh(p0, mode)
    twin = getattr(optim, name)(twin_params, **kw)
    views = opt.state_views(1)
    assert sorted(views) == sorted(names)
    for view in views.values():
        assert np.array_equal(get(view), np.zeros(SHAPES[1], np.float32))
    g = grads_for(rng, SHAPES)
    opt.step([put(x, mode) for x in g])      # state made early behaves as state made by the first step
    twin.step([put(x, mode) for x in g])
    for i, (p, q) in enumerate(zip(params, twin_params)):
        assert np.array_equal(get(p), get(q)), f"params[{i}]"


@pytest.mark.parametrize("i", [-1, 4, 1.0, True, "0"])
def test_state_views_bad_index(i):
    opt = optim.Adam([np.zeros(3, np.float32) for _ in range(4)])  # four arrays: the same one four times is refused
    with pytest.raises(ValueError, match="i must be a parameter index in \\[0, 4\\)"):
        opt.state_views(i)


def test_state_views_doc_example():
    from helpers import assert_doctests_pass
    import gpunn

    assert_doctests_pass(optim.Optimizer.state_views, gpunn=gpunn, np=np)
