"""Test setup: with no GPU, the device path runs in Numba's CUDA simulator.

The simulator must be switched on before Numba's CUDA module is first imported, so this happens here, at the top of
the first file pytest loads. On a machine with a GPU (the lent card's device check) nothing is changed and the same
tests run the real kernels. Set GPUNN_TEST_NO_SIM=1 to keep the simulator off (then device tests skip with no GPU).
"""

import os
import subprocess


def _has_gpu() -> bool:
    try:
        return subprocess.run(["nvidia-smi", "-L"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


if "NUMBA_ENABLE_CUDASIM" not in os.environ and not os.environ.get("GPUNN_TEST_NO_SIM") and not _has_gpu():
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"

# Compiled loops go to a disk cache of this test session's own (gpunn/_cache.py), shared by the child processes that
# tests start: no entry from another checkout or an earlier run is loaded, and the user's cache is not touched.
if "GPUNN_CACHE_DIR" not in os.environ:
    import atexit
    import shutil
    import tempfile

    os.environ["GPUNN_CACHE_DIR"] = tempfile.mkdtemp(prefix="gpunn-test-cache-")
    atexit.register(shutil.rmtree, os.environ["GPUNN_CACHE_DIR"], True)

import sys  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import gpunn  # noqa: E402
from gpunn import _runtime  # noqa: E402

MODES = ["cpu", "device"]

# The simulator's block barriers (syncthreads in the reductions) hand control between 32 Python threads; with CPython's
# default 5 ms switch interval one reduced loss takes ~0.25 s, with 0.1 ms ~0.02 s.
if _runtime.simulator():
    sys.setswitchinterval(1e-4)


@pytest.fixture(autouse=True)
def _no_device_errors_across_tests():
    """Device input errors wait for gpunn.synchronize(); one test's must not surface in the next."""
    yield
    from gpunn import _errors

    _errors.discard()


@pytest.fixture(params=MODES)
def mode(request):
    """'cpu': NumPy arrays take the CPU path. 'device': the same data through gpunn.to_device, so the CUDA kernels run
    (in the simulator on a machine without a GPU)."""
    if request.param == "device" and _runtime.mode() == "cpu":
        pytest.skip("no GPU and the simulator is off")
    return request.param


@pytest.fixture
def rng(request):
    """A fresh generator per test, from a new random seed each run (GPUNN_TEST_SEED=<n> fixes it). A failing test's
    report shows the seed, so the case can be replayed with that variable."""
    fixed = os.environ.get("GPUNN_TEST_SEED")
    seed = int(fixed) if fixed else np.random.SeedSequence().entropy % (2**32)
    request.node.user_properties.append(("seed", seed))
    return np.random.default_rng(seed)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    report = (yield).get_result()
    if report.failed:
        for name, value in item.user_properties:
            if name == "seed":
                report.sections.append(("rng seed", f"replay with GPUNN_TEST_SEED={value}"))


def pytest_report_header(config):
    info = gpunn.info()
    return f"gpunn mode: {info['mode']} ({info.get('device')})"
