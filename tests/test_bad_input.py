"""Bad input and faults across the families: overlapping and read-only outputs, read-only inputs, NaN logits, tiny
smooth-L1 beta, out-of-range ignore_index, state_dict keys, parameter lists. Each case failed on gpunn 0.1."""

import os
import subprocess
import sys

import numpy as np
import pytest

import gpunn
from helpers import assert_close, get, put

ACTIVATIONS = ["relu", "leaky_relu", "sigmoid", "tanh", "gelu", "silu", "elu", "softplus"]


def _forward(name):
    return getattr(gpunn, name)


def _backward(name):
    return getattr(gpunn, name + "_backward")


# ---- out= that partly overlaps an input ------------------------------------------------------------------------------
def _overlapping_calls(a, mode="cpu"):
    """(what, call) pairs that pass an ``out`` sharing part of an input's memory (``a``: 1-D, 13 elements)."""
    x, o = a[:-1], a[1:]
    rows, orows = a[:12].reshape(3, 4), a[1:13].reshape(3, 4)
    t = put(np.arange(3) % 4, mode)
    w = put(np.array([0.25]), mode)
    calls = [(f"{n}", lambda n=n: _forward(n)(x, out=o)) for n in ACTIVATIONS]
    calls += [(f"{n}_backward", lambda n=n: _backward(n)(x, x, out=o)) for n in ACTIVATIONS]
    calls += [
        ("prelu", lambda: gpunn.prelu(x, a[:1], out=o)),
        ("prelu_backward dweight over x", lambda: gpunn.prelu_backward(x, x, w, out=(None, a[:1]))),
        ("softmax", lambda: gpunn.softmax(rows, out=orows)),
        ("log_softmax", lambda: gpunn.log_softmax(rows, out=orows)),
        ("softmax_backward", lambda: gpunn.softmax_backward(rows, rows, out=orows)),
        ("log_softmax_backward", lambda: gpunn.log_softmax_backward(rows, rows, out=orows)),
        ("cross_entropy_backward", lambda: gpunn.cross_entropy_backward(rows, t, out=orows)),
        ("cross_entropy_with_grad", lambda: gpunn.cross_entropy_with_grad(rows, t, out=orows)),
        ("multi_margin_loss_backward", lambda: gpunn.multi_margin_loss_backward(rows, t, out=orows)),
        ("mse_loss none", lambda: gpunn.mse_loss(x, x, reduction="none", out=o)),
        ("mse_loss_backward", lambda: gpunn.mse_loss_backward(x, x, out=o)),
    ]
    return calls


@pytest.mark.parametrize("index", range(len(_overlapping_calls(np.zeros(13)))))
def test_out_partly_overlapping_an_input_is_a_value_error(index, mode, rng):
    a = rng.standard_normal(13)
    if mode == "device":
        a = gpunn.to_device(a)
    what, call = _overlapping_calls(a, mode)[index]
    before = get(a).copy()
    with pytest.raises(ValueError, match="out|dweight"):
        call()
    np.testing.assert_array_equal(get(a), before, err_msg=f"{what} wrote into its inputs before failing")


def test_the_issue_example_no_longer_gives_wrong_numbers():
    a = np.array([-1, 2, -3, 4, -5, 6], np.float32)
    with pytest.raises(ValueError, match="out overlaps x"):
        gpunn.relu(a[:-1], out=a[1:])
    np.testing.assert_array_equal(a, [-1, 2, -3, 4, -5, 6])


def test_exact_aliasing_stays_allowed(mode, rng):
    x = rng.standard_normal(37)
    d = put(x.copy(), mode)
    assert gpunn.relu(d, out=d) is d
    assert_close(get(d), np.maximum(x, 0), np.float64)
    rows = rng.standard_normal((3, 5))
    dr = put(rows.copy(), mode)
    gpunn.softmax(dr, out=dr)
    e = np.exp(rows - rows.max(1, keepdims=True))
    assert_close(get(dr), e / e.sum(1, keepdims=True), np.float64)


def test_non_overlapping_strided_views_are_fine():
    a = np.arange(12, dtype=np.float64) - 6
    gpunn.relu(a[::2], out=a[1::2])  # interleaved, no element shared
    np.testing.assert_array_equal(a[1::2], np.maximum(np.arange(-6, 6, 2), 0))


def test_two_outputs_in_one_buffer_is_a_value_error(rng):
    x = rng.standard_normal((2, 3))
    w = np.full(3, 0.25)
    dx = np.empty((2, 3))
    with pytest.raises(ValueError, match="share memory"):
        gpunn.prelu_backward(x, x, w, out=(dx, dx[0]))


# ---- read-only arrays ------------------------------------------------------------------------------------------------
def _read_only(a):
    a = np.array(a)
    a.flags.writeable = False
    return a


def _all_calls(rng):
    """(name, call(ro)) for every public op family; ``ro`` turns an input read-only or not."""
    x = rng.standard_normal((6, 5))
    t = rng.standard_normal((6, 5))
    y = rng.integers(0, 5, 6)
    sign = np.where(rng.standard_normal((6, 5)) > 0, 1.0, -1.0)
    prob = rng.uniform(0, 1, (6, 5))
    w = rng.uniform(0.5, 1.5, 5)
    calls = {}
    for n in ACTIVATIONS:
        calls[n] = lambda ro, n=n: _forward(n)(ro(x))
        calls[n + "_backward"] = lambda ro, n=n: _backward(n)(ro(t), ro(x))
    calls["prelu"] = lambda ro: gpunn.prelu(ro(x), ro(w))
    calls["prelu_backward"] = lambda ro: gpunn.prelu_backward(ro(t), ro(x), ro(w))
    for n in ("softmax", "log_softmax"):
        calls[n] = lambda ro, n=n: _forward(n)(ro(x))
        calls[n + "_backward"] = lambda ro, n=n: _backward(n)(ro(t), ro(x))
    for n in ("mse_loss", "l1_loss", "huber_loss", "smooth_l1_loss"):
        for suffix in ("", "_backward", "_with_grad"):
            calls[n + suffix] = lambda ro, f=getattr(gpunn, n + suffix): f(ro(x), ro(t))
    for suffix in ("", "_backward", "_with_grad"):
        bce = getattr(gpunn, "binary_cross_entropy_with_logits" + suffix)
        calls["bce" + suffix] = lambda ro, f=bce: f(ro(x), ro(prob), weight=ro(w), pos_weight=ro(w))
        calls["hinge" + suffix] = lambda ro, f=getattr(gpunn, "hinge_loss" + suffix): f(ro(x), ro(sign))
        ce = getattr(gpunn, "cross_entropy" + suffix)
        calls["cross_entropy" + suffix] = lambda ro, f=ce: f(ro(x), ro(y), weight=ro(w))
        calls["cross_entropy_probs" + suffix] = lambda ro, f=ce: f(ro(x), ro(prob))
        mm = getattr(gpunn, "multi_margin_loss" + suffix)
        calls["multi_margin" + suffix] = lambda ro, f=mm: f(ro(x), ro(y), weight=ro(w))
    calls["mse_loss_backward grad"] = lambda ro: gpunn.mse_loss_backward(ro(x), ro(t), reduction="none",
                                                                           grad=ro(t))
    return calls


CALL_NAMES = list(_all_calls(np.random.default_rng(0)))


@pytest.mark.parametrize("name", CALL_NAMES)
def test_read_only_inputs_work(name, rng):
    call = _all_calls(rng)[name]
    expected = call(lambda a: np.array(a))
    got = call(_read_only)
    for e, g in zip(expected if isinstance(expected, tuple) else (expected,),
                    got if isinstance(got, tuple) else (got,)):
        np.testing.assert_array_equal(np.asarray(g), np.asarray(e))


def test_read_only_memory_map_input(tmp_path, rng):
    x = rng.standard_normal(100).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    mm = np.load(tmp_path / "x.npy", mmap_mode="r")
    assert_close(gpunn.mse_loss(mm, np.zeros_like(x)), np.mean(x.astype(np.float64) ** 2), np.float32)


@pytest.mark.parametrize("call", [
    lambda x, out: gpunn.relu(x, out=out),
    lambda x, out: gpunn.gelu_backward(x, x, out=out),
    lambda x, out: gpunn.softmax(x, out=out),
    lambda x, out: gpunn.mse_loss(x, x, reduction="none", out=out),
    lambda x, out: gpunn.mse_loss_backward(x, x, out=out),
    lambda x, out: gpunn.prelu(x, np.ones(1), out=out),
], ids=["relu", "gelu_backward", "softmax", "mse_loss", "mse_loss_backward", "prelu"])
def test_read_only_out_is_a_value_error_naming_out(call, rng):
    x = rng.standard_normal(8)
    out = _read_only(np.zeros(8))
    with pytest.raises(ValueError, match="out is read-only"):
        call(x, out)


def test_read_only_prelu_dweight_names_it(rng):
    x = rng.standard_normal((4, 3))
    dweight = _read_only(np.zeros(3))
    with pytest.raises(ValueError, match=r"dweight is read-only"):
        gpunn.prelu_backward(x, x, np.full(3, 0.25), out=(None, dweight))


def test_read_only_gradients_step_an_optimizer(rng):
    p = rng.standard_normal(10)
    g = _read_only(rng.standard_normal(10))
    opt = gpunn.optim.Adam([p], lr=0.1)
    assert opt.step([g])


# ---- NaN logits give NaN, as PyTorch -----------------------------------------------------------------------------------
@pytest.mark.parametrize("target", ["class", "probs"])
def test_nan_logit_rows_give_nan_not_an_error(target, mode, rng):
    x = rng.standard_normal((4, 6))
    x[1] = np.nan
    x[2, 3] = np.nan
    t = rng.integers(0, 6, 4) if target == "class" else rng.dirichlet(np.ones(6), 4)
    rows = get(gpunn.cross_entropy(put(x, mode), put(t, mode), reduction="none"))
    loss, dx = gpunn.cross_entropy_with_grad(put(x, mode), put(t, mode), reduction="sum")
    dx = get(dx)
    assert np.isnan(rows[1]) and np.isnan(rows[2]) and np.isfinite(rows[[0, 3]]).all()
    assert np.isnan(float(loss))
    assert np.isnan(dx[1]).all() and np.isnan(dx[2]).all() and np.isfinite(dx[[0, 3]]).all()


def test_all_minus_inf_row_is_still_an_error(mode):
    x = np.zeros((2, 3))
    x[1] = -np.inf
    kw = {"validate": True} if mode == "device" else {}
    with pytest.raises(ValueError, match="logits row 1 is all -inf"):
        gpunn.cross_entropy(put(x, mode), put(np.array([0, 1]), mode), **kw)


def test_diverging_training_stops_with_one_line():
    env = dict(os.environ)
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    out = subprocess.run([sys.executable, "-m", "gpunn", "train", "--optimizer", "sgd", "--lr", "10", "--epochs", "3",
                          "--device", "cpu", "--quiet"], capture_output=True, text=True, timeout=600, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Traceback" not in out.stderr
    assert "diverged" in out.stdout


# ---- scalar options ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("beta", [1e-46, 5e-45, 0.0])
@pytest.mark.parametrize("suffix", ["", "_backward", "_with_grad"])
def test_smooth_l1_beta_below_float32_resolution_is_l1(beta, suffix, mode, rng):
    x = rng.standard_normal(9).astype(np.float32)
    t = rng.standard_normal(9).astype(np.float32)
    x[0] = t[0]  # d = 0: sign(0) = 0
    smooth = getattr(gpunn, "smooth_l1_loss" + suffix)(put(x, mode), put(t, mode), beta=beta, reduction="sum")
    l1 = getattr(gpunn, "l1_loss" + suffix)(put(x, mode), put(t, mode), reduction="sum")
    for s, l in zip(smooth if isinstance(smooth, tuple) else (smooth,), l1 if isinstance(l1, tuple) else (l1,)):
        np.testing.assert_array_equal(get(s), get(l))


@pytest.mark.parametrize("ignore_index", [2**70, -2**70, 2**63])
def test_ignore_index_out_of_int64_names_it(ignore_index):
    with pytest.raises(ValueError, match="ignore_index"):
        gpunn.cross_entropy(np.zeros((2, 3)), np.array([0, 1]), ignore_index=ignore_index)


# ---- optimizers: parameter lists and state_dict keys ---------------------------------------------------------------------
@pytest.mark.parametrize("opt", ["SGD", "Momentum", "NAG", "RMSprop", "Adam", "AdamW"])
def test_the_same_array_twice_is_rejected(opt):
    p = np.ones(4)
    with pytest.raises(ValueError, match=r"params\[0\] and params\[2\] share memory"):
        getattr(gpunn.optim, opt)([p, np.ones(3), p], lr=0.1)
    with pytest.raises(ValueError, match=r"params\[0\] and params\[1\] share memory"):
        flat = np.ones(10)
        getattr(gpunn.optim, opt)([flat[:6], flat[4:]], lr=0.1)


def test_a_2d_array_as_params_is_rejected_at_construction():
    with pytest.raises(TypeError, match="params must be a list of arrays"):
        gpunn.optim.Adam(np.ones((3, 4)), lr=0.1)


STATEFUL = {"Momentum": "momentum_buffer", "RMSprop": "square_avg", "Adam": "exp_avg", "AdamW": "exp_avg_sq",
            "NAG": "momentum_buffer"}


@pytest.mark.parametrize("name", list(STATEFUL))
def test_state_dict_keys_must_match_exactly(name, rng):
    params = [rng.standard_normal(3), rng.standard_normal(2)]
    opt = getattr(gpunn.optim, name)(params, lr=0.1)
    opt.step([rng.standard_normal(3), rng.standard_normal(2)])
    sd = opt.state_dict()
    key = STATEFUL[name]
    sd[f"{key}.00"] = sd.pop(f"{key}.0")  # parameter 0's entry under another spelling: the load must fail
    fresh = getattr(gpunn.optim, name)([p.copy() for p in params], lr=0.1)
    before = fresh.state_dict()
    with pytest.raises(ValueError, match=rf"{key}\.00"):
        fresh.load_state_dict(sd)
    after = fresh.state_dict()
    assert before.keys() == after.keys()
    for k in before:
        np.testing.assert_array_equal(np.asarray(after[k]), np.asarray(before[k]))
    sd_missing = opt.state_dict()
    sd_missing[f"{key}.00"] = sd_missing.pop(f"{key}.1")
    with pytest.raises(ValueError, match=key):
        fresh.load_state_dict(sd_missing)
