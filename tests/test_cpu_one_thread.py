"""With numba set to one thread the CPU path runs plain (non-prange) loops (gpunn/_elementwise.py, softmax.py):
the results must be those of the parallel loops, bit for bit, and match float64 references from the formulas."""
import numba
import numpy as np
import pytest

import gpunn
from gpunn import _cpu
from tests.helpers import assert_close


def _one_thread(fn):
    before = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        return fn()
    finally:
        numba.set_num_threads(before)


def _bits(a):
    return a.view(np.int32 if a.dtype == np.float32 else np.int64)


N = _cpu.PARALLEL_MIN["elementwise"] + 3


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ["silu", "sigmoid", "gelu", "relu", "tanh"])
def test_elementwise_one_thread_same_bits(rng, dtype, name):
    x = (rng.standard_normal(N) * 4).astype(dtype)
    x[:6] = [0.0, -0.0, np.inf, -np.inf, np.nan, 30.0]
    dy = rng.standard_normal(N).astype(dtype)
    fwd, bwd = getattr(gpunn, name), getattr(gpunn, name + "_backward")
    saved = fwd(x) if name in ("sigmoid", "tanh") else x
    many = fwd(x), bwd(dy, saved)
    one = _one_thread(lambda: (fwd(x), bwd(dy, saved)))
    for a, b in zip(many, one):
        np.testing.assert_array_equal(_bits(a), _bits(b))


def test_silu_one_thread_reference(rng):
    x = (rng.standard_normal(N) * 4).astype(np.float64)
    dy = rng.standard_normal(N)
    s = 1.0 / (1.0 + np.exp(-x))
    y, dx = _one_thread(lambda: (gpunn.silu(x), gpunn.silu_backward(dy, x)))
    assert_close(y, x * s)
    assert_close(dx, dy * s * (1.0 + x * (1.0 - s)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,axis", [((37, 300), -1), ((5, 70, 3), 1), ((1, 1), 0)])
def test_softmax_one_thread(rng, dtype, shape, axis):
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)

    def run():
        y, ly = gpunn.softmax(x, axis), gpunn.log_softmax(x, axis)
        return y, ly, gpunn.softmax_backward(dy, y, axis), gpunn.log_softmax_backward(dy, ly, axis)

    many, one = run(), _one_thread(run)
    for a, b in zip(many, one):
        np.testing.assert_array_equal(_bits(a), _bits(b))
    # float64 references from the formulas
    x64, dy64 = x.astype(np.float64), dy.astype(np.float64)
    e = np.exp(x64 - x64.max(axis=axis, keepdims=True))
    p = e / e.sum(axis=axis, keepdims=True)
    lp = np.log(p)
    assert_close(one[0], p)
    assert_close(one[1], lp)
    yl = one[1].astype(np.float64)
    assert_close(one[3], dy64 - np.exp(yl) * dy64.sum(axis=axis, keepdims=True))
    y = one[0].astype(np.float64)
    assert_close(one[2], y * (dy64 - (dy64 * y).sum(axis=axis, keepdims=True)))
