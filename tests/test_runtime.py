"""The three ways to run: array kinds, movement, errors for mixed or unsupported arrays, info."""

import subprocess
import sys

import numpy as np
import pytest

import gpunn
from gpunn import _runtime
from helpers import assert_close, get, put


def test_info_names_mode_and_versions():
    info = gpunn.info()
    assert info["mode"] in ("cuda", "simulator", "cpu")
    assert info["mode"] == gpunn.mode()
    for key in ("numpy", "numba", "numba-cuda", "python", "device"):
        assert info[key], key


def test_info_command_runs():
    out = subprocess.run([sys.executable, "-m", "gpunn", "info"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "mode" in out.stdout and gpunn.mode() in out.stdout


def test_import_compiles_nothing():
    code = ("import gpunn, numba.core.registry as r, sys; from numba import cuda; "
            "import gpunn._elementwise as e; print(e._map1.cache_info().currsize + e._map2.cache_info().currsize)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "0"


def test_round_trip(mode, rng):
    x = rng.standard_normal((3, 4)).astype(np.float32)
    d = put(x, mode)
    assert (_runtime.kind(d) == "numpy") == (mode == "cpu")
    back = get(d)
    assert back.dtype == np.float32 and np.array_equal(back, x)


def test_mixed_host_and_device_is_a_type_error(rng):
    if gpunn.mode() == "cpu":
        pytest.skip("no device")
    x = rng.standard_normal(5).astype(np.float32)
    with pytest.raises(TypeError, match="dy"):
        gpunn.relu_backward(x, gpunn.to_device(x))
    with pytest.raises(TypeError, match="out"):
        gpunn.relu(x, out=gpunn.to_device(x))


@pytest.mark.parametrize("bad", [np.arange(4), np.arange(4, dtype=np.float16), np.ones(3, bool)])
def test_unsupported_dtype_is_a_type_error(bad, mode):
    with pytest.raises(TypeError, match="x must be float32 or float64"):
        gpunn.relu(put(bad, mode))


def test_not_an_array_is_a_type_error():
    with pytest.raises(TypeError, match="x must be an array"):
        gpunn.relu([1.0, 2.0])


def test_out_checks(mode):
    x = put(np.ones(4, np.float32), mode)
    with pytest.raises(ValueError, match="out must have shape"):
        gpunn.relu(x, out=put(np.ones(5, np.float32), mode))
    with pytest.raises(TypeError, match="out must have dtype float32"):
        gpunn.relu(x, out=put(np.ones(4, np.float64), mode))


def test_noncontiguous_device_views(rng, mode):
    x = rng.standard_normal((4, 6, 5, 3))
    for view in (lambda a: a[:, ::2], lambda a: a[::2, :, 1:, ::2], lambda a: a[0, :, ::3]):
        expected = np.maximum(view(x), 0)
        assert_close(get(gpunn.relu(view(put(x, mode)))), expected, np.float64)


def test_noncontiguous_host_out_is_filled():
    x = np.linspace(-1, 1, 12).reshape(3, 4)
    buf = np.full((3, 8), np.nan)
    out = buf[:, ::2]
    res = gpunn.relu(x, out=out)
    assert res is out
    assert_close(buf[:, ::2], np.maximum(x, 0), np.float64)
    assert np.isnan(buf[:, 1::2]).all()


def test_torch_cpu_tensors_come_back_as_tensors():
    torch = pytest.importorskip("torch")
    t = torch.linspace(-2, 2, 9)
    y = gpunn.relu(t)
    assert isinstance(y, torch.Tensor) and y.dtype == torch.float32
    assert torch.equal(y, torch.relu(t))
