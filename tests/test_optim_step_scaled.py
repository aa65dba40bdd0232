"""Optimizer.step_scaled: one step with the gradients times a scale decided by the caller (no check pass, no
clipping, no skipping). Reference: tests/test_optim_reference.py (float64, from the formulas)."""

import numpy as np
import pytest

from gpunn import optim
from gpunn.optim import _base
from helpers import assert_close, assert_doctests_pass, get, put
from test_optim_reference import Reference
from test_optim_state import FULL, FULL_IDS, TOL, assert_unchanged, fresh, grads_for, snapshot

SHAPES = [(3,), (31,), (0,), (5, 17)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name,kw", FULL, ids=FULL_IDS)
def test_matches_reference_with_scaled_gradients(name, kw, dtype, mode, rng):
    p0 = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    params = fresh(p0, mode)
    opt = getattr(optim, name)(params, **kw)
    ref = Reference(name, p0, **kw)
    for _ in range(4):
        scale = float(rng.uniform(0.1, 3.0))
        g = grads_for(rng, SHAPES, dtype)
        opt.step_scaled([put(x, mode) for x in g], scale)
        ref.step([x.astype(np.float64) * scale for x in g])
    atol, rtol = TOL[dtype]
    for i, p in enumerate(params):
        assert_close(get(p), ref.p[i], atol=atol, rtol=rtol, what=f"{name} params[{i}]")
    assert opt.step_count == 4


@pytest.mark.parametrize("name,kw", FULL, ids=FULL_IDS)
def test_scale_one_is_a_plain_step_bit_for_bit(name, kw, mode, rng):
    p0 = [rng.standard_normal(s).astype(np.float32) for s in SHAPES]
    a, b = fresh(p0, mode), fresh(p0, mode)
    opt_a, opt_b = getattr(optim, name)(a, **kw), getattr(optim, name)(b, **kw)
    for _ in range(3):
        g = grads_for(rng, SHAPES)
        opt_a.step([put(x, mode) for x in g])
        opt_b.step_scaled([put(x, mode) for x in g], 1.0)
    for i in range(len(SHAPES)):
        assert np.array_equal(get(a[i]), get(b[i])), f"params[{i}] differ"
    sa, sb = opt_a.state_dict(), opt_b.state_dict()
    for k in sa:
        x, y = np.asarray(sa[k]), np.asarray(sb[k])
        assert np.array_equal(x, y, equal_nan=x.dtype.kind == "f"), k


def test_ignores_max_grad_norm_and_does_not_skip(mode, rng):
    """The caller decided: no clipping (max_grad_norm is for step), and a NaN gradient is applied, not skipped."""
    p0 = [np.ones(4, np.float32)]
    p = fresh(p0, mode)
    opt = optim.SGD(p, lr=1.0, max_grad_norm=1e-3)
    opt.step_scaled([put(np.full(4, 2.0, np.float32), mode)], 0.5)
    assert_close(get(p[0]), np.zeros(4), atol=0, rtol=0, what="p after an unclipped step")
    opt.step_scaled([put(np.array([np.nan, 0, 0, 0], np.float32), mode)], 1.0)
    assert np.isnan(get(p[0])[0]) and opt.step_count == 2


@pytest.mark.parametrize("scale,err", [(0.0, ValueError), (-1.0, ValueError), (float("inf"), ValueError),
                                       (float("nan"), ValueError), ("1", TypeError), (None, TypeError)])
def test_bad_scale_raises_and_changes_nothing(scale, err, mode, rng):
    p = fresh([rng.standard_normal(5).astype(np.float32)], mode)
    opt = optim.Adam(p, lr=0.1)
    opt.step([put(rng.standard_normal(5).astype(np.float32), mode)])
    before = snapshot(p, opt)
    with pytest.raises(err, match="scale"):
        opt.step_scaled([put(rng.standard_normal(5).astype(np.float32), mode)], scale)
    assert_unchanged(before, p, opt)


def test_bad_grads_raise_like_step(mode):
    p = fresh([np.zeros(3, np.float32)], mode)
    opt = optim.SGD(p, lr=0.1)
    with pytest.raises(ValueError, match=r"grads\[0\] has shape"):
        opt.step_scaled([put(np.zeros(4, np.float32), mode)], 1.0)
    with pytest.raises(ValueError, match="grads has 2 arrays"):
        opt.step_scaled([put(np.zeros(3, np.float32), mode)] * 2, 1.0)


def test_doc_example():
    assert_doctests_pass(_base.Optimizer.step_scaled)
