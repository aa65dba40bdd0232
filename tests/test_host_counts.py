"""``gpunn bench --host``: what one device call costs the host, counted with the CUDA driver stubbed (no GPU needed).

Per op family, the exact number of kernel launches, device allocations, host<->device copies and synchronisations of
one call (gpunn/bench/host.py). Allocations are only the results the caller asked for (a 0-d loss, a gradient
without ``out=``): workspaces are cached. A hidden sync, copy, allocation or extra launch fails here.
"""

import functools
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# op: (launches, allocations, host-to-device, device-to-host, syncs)
EXPECTED = {
    "relu(x, out=o)": (1, 0, 0, 0, 0),
    "gelu_backward": (1, 1, 0, 0, 0),                          # dx
    "prelu_backward (N, C)": (2, 2, 0, 0, 0),                  # dx, dweight; partials, then their fixed-order sum
    "softmax 1024x4096": (1, 0, 0, 0, 0),                      # a block per row, the row held in registers
    "mse_loss_with_grad mean": (2, 2, 0, 0, 0),                # loss, dx
    "hinge_loss mean": (3, 1, 0, 0, 0),                        # the target check records, never reads back
    "cross_entropy_with_grad 1024x4096, out=": (4, 1, 0, 0, 0),  # 1/sum w[y], the rows, the total; loss
    "multi_margin_loss_with_grad 1024x4096": (2, 2, 0, 0, 0),
    "Adam.step, 1 tensor": (1, 0, 0, 0, 0),
    "Adam.step, 24 tensors": (1, 0, 0, 0, 0),
    "Adam.step, 200 tensors": (1, 0, 0, 0, 0),                 # one launch over a device table of addresses
    "Adam.step flat, max_grad_norm + grad_scale": (2, 0, 0, 0, 0),  # the check pass, then the step; no read-back
}


@functools.lru_cache(maxsize=None)
def _measured(tmp):
    """One ``gpunn bench --host`` run (a child with the simulator off, as the command starts it)."""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-m", "gpunn", "bench", "--host", "--output", tmp], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    assert "| op | µs per call |" in r.stdout
    with open(os.path.join(tmp, "host.json")) as f:
        return {row["op"]: row for row in json.load(f)}


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    return _measured(str(tmp_path_factory.mktemp("host")))


def test_every_case_is_measured(measured):
    assert set(measured) == set(EXPECTED)


@pytest.mark.parametrize("op", list(EXPECTED))
def test_counts_per_call(measured, op):
    row = measured[op]
    got = tuple(row[k] for k in ("launches", "allocations", "h2d", "d2h", "syncs"))
    assert got == EXPECTED[op], f"{op}: {dict(zip(('launches', 'allocations', 'h2d', 'd2h', 'syncs'), got))}"
    assert row["us_per_call"] > 0 and row["bare_numba_us"] > 0
