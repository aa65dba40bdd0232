"""The three ways to run: array kinds, movement, errors for mixed or unsupported arrays, info."""

import subprocess
import sys

import numpy as np
import pytest

import gpunn
from gpunn import _arrays, _runtime
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
    assert (_arrays.kind(d) == "numpy") == (mode == "cpu")
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


@pytest.mark.parametrize("bad", [np.arange(4), np.arange(4, dtype=np.int8), np.ones(3, bool)])
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


# ---- launches: what runs is what the kernel build check compiles ----------------------------------------------------
def _every_family_on_the_device(rng):
    """One call of every op family and option that picks another kernel, on device arrays."""
    d = gpunn.to_device
    x = rng.standard_normal((6, 40))
    x32 = x.astype(np.float32)
    t = rng.integers(0, 40, 6)
    sign = np.where(rng.standard_normal(x.shape) > 0, 1.0, -1.0)
    for a in (x, x32):
        gpunn.relu(d(a)), gpunn.gelu_backward(d(a), d(a)), gpunn.softplus(d(a))
        gpunn.prelu_backward(d(a), d(a), d(np.full(40, 0.2, a.dtype)))
        gpunn.softmax(d(a)), gpunn.log_softmax_backward(d(a), d(a), axis=0), gpunn.softmax(d(a[:, :5]))
        for reduction in ("none", "mean"):
            gpunn.mse_loss_with_grad(d(a), d(a), reduction=reduction)
            gpunn.binary_cross_entropy_with_logits_backward(d(a), d(np.abs(a) / 4), reduction=reduction,
                                                            pos_weight=d(np.ones(40, a.dtype)))
            gpunn.hinge_loss(d(a), d(sign.astype(a.dtype)), reduction=reduction)
            gpunn.cross_entropy_with_grad(d(a), d(t), reduction=reduction, grad=d(np.ones(6, a.dtype))
                                          if reduction == "none" else None)
            gpunn.cross_entropy_with_grad(d(a), d(t.astype(np.int32)), reduction=reduction)
            gpunn.cross_entropy_with_grad(d(a), d(np.full_like(a, 1 / 40)), reduction=reduction)
            gpunn.multi_margin_loss_with_grad(d(a), d(t), reduction=reduction)
        p = d(a.reshape(-1).copy())
        for opt in (gpunn.optim.SGD([p], lr=0.1, momentum=0.9), gpunn.optim.Adam([p], max_grad_norm=1.0)):
            opt.step([d(a.reshape(-1))], grad_scale=2.0)
        gpunn.optim.flatten([d(a[:, ::2]), d(a[0])])


def test_every_launch_is_a_registered_kernel_and_signature(rng):
    """Every kernel gpunn launches (recorded in the simulator, where each launch's arguments are also checked against
    its signature) is one that `gpunn kernels` compiles, with the same signature: the registry cannot drift from
    what runs."""
    if not _runtime.simulator():
        pytest.skip("the launches are recorded and checked in the simulator")
    from numba.core import sigutils

    from gpunn import _launch, _registry

    with _launch.record() as launched:
        _every_family_on_the_device(rng)
    registered = {}
    for spec in _registry.KERNELS:
        registered.setdefault(spec.build().py_func.__name__, set()).add(
            sigutils.normalize_signature(spec.signature)[0])
    assert len({k.name for k in launched}) >= 20
    for kernel in launched:
        name = kernel.dispatcher.py_func.__name__
        sig = sigutils.normalize_signature(kernel.signature)[0]
        assert sig in registered.get(name, set()), f"{kernel} is not registered for the kernel build check"


def test_a_launch_with_the_wrong_array_type_is_rejected_in_the_simulator():
    if not _runtime.simulator():
        pytest.skip("the simulator checks each launch's arguments")
    from gpunn import _arrays, _elementwise

    kernel = _elementwise._kernel(gpunn.relu.__globals__["_forward_math"](np.dtype(np.float32)), 1, np.float32)
    x = _arrays.device_array(gpunn.to_device(np.zeros(4, np.float64)))
    with pytest.raises(TypeError, match="signature"):
        kernel(1, 32, 0, x, np.float32(0), np.float32(0), x)
