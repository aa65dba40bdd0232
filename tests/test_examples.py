"""The scripts in examples/ run from the shell, learn, and (for PyTorch) match the same loop on pure PyTorch.

Each runs as its own process, as a user would run it, and prints a ``RESULT`` line that is checked here. Without a
GPU they run on gpunn's CPU path (NumPy arrays, PyTorch CPU tensors); cupy_loop.py must say it skips.
"""

import importlib.util
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "examples")


def run_example(name, timeout=300):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, os.path.join(EXAMPLES, name)], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env=env)
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout}\n{proc.stderr}"
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.stdout


def result_numbers(stdout):
    line = [l for l in stdout.splitlines() if l.startswith("RESULT")]
    assert line, f"no RESULT line in:\n{stdout}"
    return line[-1], [float(v) for v in re.findall(r"-?\d+\.\d+(?:e[-+]\d+)?", line[-1])]


def test_numpy_loop_learns_the_spirals():
    line, (first, last, accuracy) = result_numbers(run_example("numpy_loop.py"))
    assert last < first / 20, line      # cross-entropy from ~ln 3 down to a few hundredths
    assert accuracy >= 0.95, line      # three interleaved spirals: not linearly separable


def test_torch_model_trains_with_gpunn_torch_as_with_pure_torch():
    pytest.importorskip("torch")
    line, (first, last, torch_last, accuracy, gap) = result_numbers(run_example("torch_model.py"))
    assert last < first / 3 and accuracy >= 0.9, line
    # gpunn.torch's GELU, SiLU, CrossEntropyLoss and AdamW against torch.nn's and torch.optim's, from the same start,
    # 200 float32 steps with a cosine schedule: the final losses agree to float32 rounding grown over the steps
    assert abs(last - torch_last) <= 1e-3 * torch_last and gap <= 1e-3, line


def test_cupy_loop_runs_or_says_it_skips():
    stdout = run_example("cupy_loop.py")
    has_cupy = importlib.util.find_spec("cupy") is not None
    if not has_cupy:
        assert stdout.startswith("SKIP cupy_loop.py: CuPy is not installed"), stdout
        return
    if "SKIP" in stdout:
        assert "no CUDA GPU" in stdout, stdout
        return
    line, (first, last, accuracy) = result_numbers(stdout)
    assert last < first / 5 and accuracy >= 0.9, line
