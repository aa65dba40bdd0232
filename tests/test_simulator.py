"""gpunn's workarounds for numba-cuda's CUDA simulator (gpunn/_simulator.py).

The shared-array race: two simulated threads can get different ``cuda.shared.array`` buffers, and a block reduction
then sums the wrong values. The tests run gpunn's reductions with the race window made wide (a slow allocation) and
with natural timing (a tiny switch interval, many calls); the subprocess test checks that the first one fails with
the workaround switched off, so it is a test that can fail.
"""

import os
import subprocess
import sys
import textwrap
import threading
import time
import types

import numpy as np
import pytest

import gpunn
from gpunn import _runtime
from helpers import assert_close

pytestmark = pytest.mark.skipif(not _runtime.simulator(), reason="tests of the CUDA simulator's workarounds")


def _slow(fn):
    def slow(*args, **kwargs):
        time.sleep(1e-3)  # releases the GIL between the simulator's lookup and its insert
        return fn(*args, **kwargs)

    return slow


@pytest.fixture
def wide_race_window(monkeypatch):
    """Every shared-array allocation takes 1 ms, with the workaround in place or not."""
    from numba.cuda.simulator import kernelapi

    from gpunn import _simulator

    fake_np = types.SimpleNamespace(**{k: getattr(np, k) for k in dir(np) if not k.startswith("__")})
    fake_np.empty = _slow(np.empty)
    monkeypatch.setattr(kernelapi, "np", fake_np)
    monkeypatch.setattr(_simulator, "_allocate", _slow(np.empty))
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(old)


def _block_sums_right(calls):
    """How many of ``calls`` simulated block reductions (mse 'sum' over 64 values) give the right sum."""
    x = np.arange(64, dtype=np.float64) / 8.0
    t = np.zeros_like(x)
    xd, td = gpunn.to_device(x), gpunn.to_device(t)
    want = float(np.sum(x * x))
    return sum(abs(float(gpunn.mse_loss(xd, td, reduction="sum")) - want) <= 1e-12 * want for _ in range(calls))


def test_shared_arrays_are_one_per_block_with_a_wide_race_window(wide_race_window):
    assert _block_sums_right(8) == 8


def test_without_the_workaround_the_wide_window_gives_wrong_sums():
    """The test above fails on the simulator as shipped: run it with the workaround off, in a fresh process."""
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        import pytest
        sys.exit(pytest.main(["-q", "-p", "no:cacheprovider", {__file__!r} + "::"
                              "test_shared_arrays_are_one_per_block_with_a_wide_race_window"]))
    """)
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1", GPUNN_SIM_NO_WORKAROUND="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 1 and "1 failed" in out.stdout, out.stdout[-2000:] + out.stderr[-2000:]


def test_reductions_are_right_at_a_tiny_switch_interval(rng):
    """Natural timing: the cross-entropy, multi-margin and mse reductions in many calls, against float64 sums."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for _ in range(12):
            logits = rng.standard_normal((5, 40))
            target = rng.integers(0, 40, 5)
            ref_ce = np.mean(np.log(np.exp(logits).sum(1)) - logits[np.arange(5), target])
            got = gpunn.cross_entropy(gpunn.to_device(logits), gpunn.to_device(target))
            assert_close(float(got), ref_ce, np.float64, what="cross_entropy mean")
            margins = np.maximum(0.0, 1.0 - logits[np.arange(5), target][:, None] + logits)
            margins[np.arange(5), target] = 0.0
            ref_mm = margins.sum() / 40 / 5
            got = gpunn.multi_margin_loss(gpunn.to_device(logits), gpunn.to_device(target))
            assert_close(float(got), ref_mm, np.float64, what="multi_margin_loss mean")
            x = rng.standard_normal(300)
            got = gpunn.mse_loss(gpunn.to_device(x), gpunn.to_device(np.zeros_like(x)), reduction="sum")
            assert_close(float(got), np.sum(x * x), np.float64, what="mse_loss sum")
    finally:
        sys.setswitchinterval(old)


def test_simulated_launches_from_several_threads_wait_for_each_other(rng):
    """The simulator runs one kernel at a time: launches from several Python threads must queue, not fail."""
    x = rng.standard_normal(300)
    xd = gpunn.to_device(x)
    errors, results = [], [None] * 4

    def work(k):
        try:
            results[k] = (gpunn.to_host(gpunn.relu(xd)), float(gpunn.mse_loss(xd, xd)))
        except Exception as exc:  # noqa: BLE001 - any failure is reported below
            errors.append(repr(exc))

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors
    for relu_out, mse in results:
        np.testing.assert_array_equal(relu_out, np.maximum(x, 0))
        assert mse == 0.0
