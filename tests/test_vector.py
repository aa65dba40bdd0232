"""128-bit vector access and raw-address arrays (gpunn/_vector.py), and the vectorised elementwise kernels.

The intrinsics are LLVM IR; the CUDA kernels use them and the simulator runs Python stand-ins instead, so the IR is
exercised here in CPU ``njit`` functions (the same code generation, minus the address space). The kernels' head /
body / tail split runs in the simulator at every alignment.
"""

import numpy as np
import pytest
from numba import float32, float64, njit

import gpunn
from gpunn import _vector
from helpers import assert_close, get

DTYPES = [np.float32, np.float64]


@pytest.mark.parametrize("dtype", DTYPES)
def test_compiled_vector_load_and_store(dtype, rng):
    load, store, _ = _vector.COMPILED
    w = _vector.width(dtype)

    @njit
    def copy_scaled(a, out, start):
        v = load(a, start)
        store(out, start, (v[0] + v[0],) + v[1:])

    a = rng.standard_normal(3 * w).astype(dtype)
    out = np.zeros_like(a)
    copy_scaled(a, out, w)  # element w of a fresh NumPy array is 16-byte aligned
    expected = np.zeros_like(a)
    expected[w:2 * w] = a[w:2 * w]
    expected[w] *= 2
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("dtype", DTYPES)
def test_compiled_address_array(dtype, rng):
    _, _, address_array = _vector.COMPILED
    like = float32(0) if dtype == np.float32 else float64(0)

    @njit
    def axpy(addresses, n, like):
        x = address_array(addresses[0], n, like)
        y = address_array(addresses[1], n, like)
        for i in range(n):
            y[i] += 2 * x[i]

    x = rng.standard_normal(7).astype(dtype)
    y = rng.standard_normal(7).astype(dtype)
    expected = y + 2 * x
    axpy(np.array([x.ctypes.data, y.ctypes.data], np.int64), 7, like)
    np.testing.assert_array_equal(y, expected)


def test_head():
    assert _vector.head(0x1000, 4, 100) == 0
    assert _vector.head(0x1004, 4, 100) == 3
    assert _vector.head(0x100C, 4, 100) == 1
    assert _vector.head(0x1008, 8, 100) == 1
    assert _vector.head(0x1004, 4, 2) == 2  # fewer elements than the head
    assert _vector.head(0x1002, 4, 50) == 50  # not even element-aligned: all scalar


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("x_offset,out_offset", [(0, 0), (1, 1), (3, 3), (1, 0), (2, 3)])
@pytest.mark.parametrize("n", [1, 5, 67, 600])
def test_elementwise_kernels_at_every_alignment(dtype, x_offset, out_offset, n, rng):
    """x and out start 0..3 elements past a 16-byte boundary (the same offset: head + vector body + tail; different
    offsets: every element scalar), the backward's dy at x's offset."""
    if gpunn.mode() == "cpu":
        pytest.skip("no GPU and the simulator is off")
    base_x = gpunn.to_device(rng.standard_normal(n + 4).astype(dtype))
    base_dy = gpunn.to_device(rng.standard_normal(n + 4).astype(dtype))
    base_out = gpunn.to_device(np.full(n + 4, np.nan, dtype))
    x, dy, out = base_x[x_offset:x_offset + n], base_dy[x_offset:x_offset + n], base_out[out_offset:out_offset + n]
    x64, dy64 = get(x).astype(np.float64), get(dy).astype(np.float64)
    gpunn.relu(x, out=out)
    assert_close(get(out), np.maximum(x64, 0), dtype, what="relu")
    gpunn.leaky_relu_backward(dy, x, 0.25, out=out)
    assert_close(get(out), np.where(x64 > 0, dy64, 0.25 * dy64), dtype, what="leaky_relu_backward")
    untouched = np.delete(get(base_out), np.arange(out_offset, out_offset + n))
    assert np.isnan(untouched).all(), "a kernel wrote outside its array"


def test_compiled_vector_of_16_bit_lanes(rng):
    """The uint16 storage of float16/bfloat16: 8 lanes per 128-bit access (moved as 4 x i32 and split with shifts),
    in memory order."""
    load, store, _ = _vector.COMPILED

    @njit
    def reverse_lanes(a, out, start):
        v = load(a, start)
        store(out, start, (v[7], v[6], v[5], v[4], v[3], v[2], v[1], v[0]))

    a = rng.integers(0, 2**16, 24).astype(np.uint16)
    out = np.zeros_like(a)
    reverse_lanes(a, out, 8)  # element 8 of a fresh NumPy array is 16-byte aligned
    expected = np.zeros_like(a)
    expected[8:16] = a[8:16][::-1]
    np.testing.assert_array_equal(out, expected)
