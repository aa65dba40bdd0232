"""``mpiexec -n 2 gpunn train --distributed [--zero]`` against the single-process run with the same micro-batches.

Accuracy, losses and the final parameters must be identical (the design in gpunn.app.parallel); with ``--zero``
each rank keeps half of the single-process optimizer state. Every launch has a timeout and its process group is
killed if it outlives it.
"""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import gpunn

ROOT = Path(gpunn.__file__).resolve().parent.parent
ARGS = ["--epochs", "2", "--hidden", "32", "--max-samples", "400", "--batch-size", "30", "--lr", "0.01", "--quiet"]


def mpiexec():
    here = Path(sys.executable).parent / "mpiexec"
    return str(here) if here.exists() else "mpiexec"


def run(cmd, timeout=300):
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"{' '.join(cmd)} still running after {timeout} s:\n{out[-3000:]}")
    return proc.returncode, out


def train(tmp, name, *extra, ranks=None):
    out = tmp / name
    cmd = [sys.executable, "-m", "gpunn", "train", *ARGS, *extra, "--output", str(out)]
    if ranks:
        cmd = [mpiexec(), "-n", str(ranks), *cmd, "--distributed"]
    rc, text = run(cmd)
    assert rc == 0, text[-3000:]
    with open(out / "metrics.json") as f:
        return json.load(f), np.load(out / "params.npy"), text


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("train")
    return {"one": train(tmp, "one", "--micro-batches", "2"),
            "two": train(tmp, "two", ranks=2),
            "zero": train(tmp, "zero", "--zero", ranks=2)}


@pytest.mark.parametrize("name", ["two", "zero"])
def test_two_ranks_match_one_process(runs, name):
    one, p_one, _ = runs["one"]
    got, p_got, _ = runs[name]
    assert np.array_equal(p_got, p_one), f"{name}: final parameters differ from the single-process run"
    for key in one["history"]:
        if key != "seconds":
            assert got["history"][key] == one["history"][key], f"{name}: history {key} differs"
    assert got["test_metric"] == one["test_metric"] and one["test_metric"] > 0.75


def test_metrics_record_the_ranks(runs):
    one, two, zero = (runs[k][0]["parallel"] for k in ("one", "two", "zero"))
    assert (one["ranks"], two["ranks"], zero["ranks"]) == (1, 2, 2)
    assert one["micro_batches"] == two["micro_batches"] == 2 and zero["zero"] and not two["zero"]
    for p in (one, two, zero):
        assert p["samples_per_second"] > 0
    single = one["optimizer_state_bytes_per_rank"][0]
    assert single == 2 * 4 * runs["one"][1].size                     # Adam: two float32 moments per parameter
    assert two["optimizer_state_bytes_per_rank"] == [single, single]  # all-reduce: every rank keeps all the state


def test_zero_halves_the_state_per_rank(runs):
    """Half of the single-process bytes on each rank, up to one 64-element chunk of the shard boundary."""
    single = runs["one"][0]["parallel"]["optimizer_state_bytes_per_rank"][0]
    per_rank = runs["zero"][0]["parallel"]["optimizer_state_bytes_per_rank"]
    assert sum(per_rank) == single
    assert all(abs(b - single / 2) <= 64 * 8 for b in per_rank), (per_rank, single)


def test_rank_zero_alone_prints(runs):
    _, _, text = runs["two"]
    assert text.count("digits: test accuracy") == 1 and "2 ranks on cpu" in text


def test_bad_distributed_options_exit_2(tmp_path):
    rc, text = run([sys.executable, "-m", "gpunn", "train", *ARGS, "--zero"])
    assert rc == 2 and "--zero needs --distributed" in text
    rc, text = run([mpiexec(), "-n", "2", sys.executable, "-m", "gpunn", "train", *ARGS, "--distributed",
                    "--micro-batches", "6"])
    assert rc != 0 and "--micro-batches 6 cannot be split over 2 ranks" in text
    assert text.count("cannot be split") == 1, "rank 0 alone reports"


def test_scaling_benchmark_smoke(tmp_path):
    """gpunn bench --scaling at 1 and 2 ranks, tiny sizes: the JSON, table and plot are written and consistent."""
    rc, text = run([sys.executable, "-m", "gpunn", "bench", "--scaling", "--ranks", "1,2", "--quick-scaling",
                    "--output", str(tmp_path)], timeout=400)
    assert rc == 0, text[-3000:]
    with open(tmp_path / "scaling.json") as f:
        report = json.load(f)
    assert [r["ranks"] for r in report["runs"]] == [1, 2]
    for run_ in report["runs"]:
        for mode in ("allreduce", "zero"):
            t = run_["train"][mode]
            assert t["steps_per_second"] > 0 and len(t["optimizer_state_bytes_per_rank"]) == run_["ranks"]
        for n in report["settings"]["sizes"]:
            a = run_["allreduce"][str(n)]
            assert 0 < a["min_ms"] <= a["median_ms"] <= a["max_ms"]
    zero2 = report["runs"][1]["train"]["zero"]["optimizer_state_bytes_per_rank"]
    assert sum(zero2) == report["runs"][0]["train"]["zero"]["optimizer_state_bytes_per_rank"][0]
    assert (tmp_path / "scaling.png").stat().st_size > 0 and "| 2 | zero |" in (tmp_path / "scaling.md").read_text()
