"""relu_backward's own CPU loops (integer mask, gpunn/activations/relu.py): bit-exact against the formula, on both
the serial loop and the parallel one (sizes at and above PARALLEL_MIN, which the common SIZES miss)."""
import numpy as np
import pytest

import gpunn
from gpunn import _cpu

PARALLEL_MIN = _cpu.PARALLEL_MIN["elementwise"]

SPECIAL = [0.0, -0.0, 1.0, -1.0, np.inf, -np.inf, np.nan, -np.nan, 1e-45, -1e-45, 3e38, -3e38, 5e-324, 2.5]


def _reference(dy, x):
    # dx = dy where not (x <= 0) (x > 0 or NaN), else +0 -- written from the formula in float64, cast back
    d64, x64 = dy.astype(np.float64), x.astype(np.float64)
    keep = ~(x64 <= 0)
    return np.where(keep, d64, 0.0).astype(dy.dtype)


def _bits(a):
    return a.view(np.int32 if a.dtype == np.float32 else np.int64)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [0, 1, 31, 1027, PARALLEL_MIN - 1, PARALLEL_MIN,
                               PARALLEL_MIN + 37])
def test_relu_backward_cpu_bit_exact(rng, dtype, n):
    sp = np.array(SPECIAL, dtype)
    x = rng.standard_normal(n).astype(dtype)
    dy = rng.standard_normal(n).astype(dtype)
    if n:  # every (dy, x) pair of special values, at random positions
        xs, ds = (a.ravel() for a in np.meshgrid(sp, sp))
        pos = rng.choice(n, size=min(n, xs.size), replace=False)
        x[pos], dy[pos] = xs[:pos.size], ds[:pos.size]
    expected = _reference(dy, x)
    out = np.full(n, 7.0, dtype)  # poisoned: unwritten elements show
    got = gpunn.relu_backward(dy, x, out=out)
    assert got is out
    np.testing.assert_array_equal(_bits(got), _bits(expected))
    np.testing.assert_array_equal(_bits(gpunn.relu_backward(dy, x)), _bits(expected))
    d2 = dy.copy()
    gpunn.relu_backward(d2, x, out=d2)  # in place over dy
    np.testing.assert_array_equal(_bits(d2), _bits(expected))
    x2 = x.copy()
    gpunn.relu_backward(dy, x2, out=x2)  # in place over x
    np.testing.assert_array_equal(_bits(x2), _bits(expected))


def test_relu_backward_cpu_matches_torch(rng):
    torch = pytest.importorskip("torch")
    n = PARALLEL_MIN + 5
    x = rng.standard_normal(n).astype(np.float32)
    x[::7] = 0.0
    dy = rng.standard_normal(n).astype(np.float32)
    ref = torch.ops.aten.threshold_backward(torch.from_numpy(dy), torch.from_numpy(x), 0).numpy()
    np.testing.assert_array_equal(gpunn.relu_backward(dy, x), ref)
