"""benchmarks/device_check.sh (the one prepared command for a lent GPU) and the goal lines it ends with.

On the CPU: the script's syntax, its dry run (every printed command parses with the real command-line parser), its
time budget (one device command: at most 420 s with the start-up), a CPU smoke run end to end into a temporary
$OUT, and the goals judged from synthetic results.
"""

import fnmatch
import json
import os
import re
import shlex
import subprocess
import sys
import tarfile


from gpunn import cli
from gpunn.bench import core, goals
from gpunn.bench.entries import ENTRIES
from helpers import assert_doctests_pass

SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks", "device_check.sh")
FAMILY_MODULES = ["tests/test_activations.py", "tests/test_losses_pointwise.py", "tests/test_cross_entropy.py",
                  "tests/test_softmax.py", "tests/test_optim.py"]


def device_check(*args, timeout=60, **env):
    return subprocess.run(["bash", SCRIPT, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **env})


def steps(out):
    """[(name, limit, command words)] of a dry run's output."""
    found = re.findall(r"^=== (\S+) \(limit (\d+)s\): (.*)$", out, flags=re.MULTILINE)
    return [(name, int(limit), shlex.split(command)) for name, limit, command in found]


def results_dir(out):
    return out.splitlines()[0].split("results in ")[1].split(" (")[0]


# ---- the script's logic ----------------------------------------------------------------------------------------------
def test_syntax_and_a_bad_argument():
    assert subprocess.run(["bash", "-n", SCRIPT]).returncode == 0
    r = device_check("--bogus")
    assert r.returncode == 2 and "--bogus" in r.stderr


def test_dry_run_benchmarks_first_then_the_fast_test_subset():
    r = device_check("--dry-run")
    assert r.returncode == 0, r.stderr
    assert not os.path.exists(results_dir(r.stdout))  # a dry run creates nothing
    found = steps(r.stdout)
    assert [name for name, _, _ in found] == ["bench-softmax", "bench-cross_entropy", "bench-adam_100m",
                                              "bench-activations", "bench-launch", "tests"]
    for name, _, words in found[:5]:
        assert words[:3] == ["python3", "-m", "gpunn"], words  # python3 unless PYTHON says otherwise
        args = cli.build_parser().parse_args(words[3:])
        assert args.backend == "cuda" and args.output == results_dir(r.stdout), name
        assert core.select(ENTRIES, args.ops), args.ops
        for size in args.sizes or []:
            core.parse_size(size)
    args = {name: cli.build_parser().parse_args(words[3:]) for name, _, words in found[:5]}
    assert {name: a.sizes for name, a in args.items()} == {
        "bench-softmax": ["2^26"], "bench-cross_entropy": ["8192x32768", "4096x131072"], "bench-adam_100m": ["1e8"],
        "bench-activations": ["2^26"], "bench-launch": None}
    selected = {e.name for e in core.select(ENTRIES, args["bench-softmax"].ops + "," + args["bench-activations"].ops)}
    activations = {e.name for e in ENTRIES if e.family == "activations"}
    assert selected == activations  # every activation, the row-wise ones in their own step
    elementwise = {e.name for e in core.select(ENTRIES, args["bench-activations"].ops)}
    assert elementwise == {n for n in activations if any(fnmatch.fnmatchcase(n, p) for p in goals.ELEMENTWISE)}


def test_dry_run_test_step_is_a_float32_device_subset_of_each_family_and_the_gpu_tests():
    _, limit, words = steps(device_check("--dry-run").stdout)[-1]
    assert words[:3] == ["python3", "-m", "pytest"] and "-x" not in words and limit <= 120
    assert set(FAMILY_MODULES) <= set(words)
    root = os.path.dirname(os.path.dirname(SCRIPT))
    listing = [w for w in words[1:] if w != "-v"] + ["--collect-only", "-q"]
    collected = subprocess.run([sys.executable, *listing], cwd=root, capture_output=True, text=True,
                               timeout=300).stdout.splitlines()
    ids = [line for line in collected if "::" in line]
    for module in FAMILY_MODULES:
        assert any(i.startswith(module + "::") for i in ids), module
    assert not any("float64" in i for i in ids)
    # device cases by name, and the gpu-marked test by its marker
    assert [i for i in ids if "device" not in i and "gpu" not in i] == ["tests/test_bench.py::test_cuda_backend_smoke"]


def test_python_overrides_the_interpreter():
    r = device_check("--dry-run", PYTHON="/opt/py/bin/python")
    assert all(words[0] == "/opt/py/bin/python" for _, _, words in steps(r.stdout))


def test_the_limits_fit_one_device_command():
    r = device_check("--dry-run")
    assert r.returncode == 0, r.stderr
    budget = re.search(r"^budget: (\d+)s = start-up (\d+)s \+ step limits \+ (\d+) x (\d+)s summaries", r.stdout,
                       flags=re.MULTILINE)
    total, start, summaries, each = map(int, budget.groups())
    assert start >= 60 and summaries == 5
    assert total == start + sum(limit for _, limit, _ in steps(r.stdout)) + summaries * each
    assert total <= 420


def test_limits_over_the_budget_are_refused():
    r = device_check("--dry-run", ACT_LIMIT="300")
    assert r.returncode == 2 and "over the 420s" in r.stderr and "=== " not in r.stdout


def test_cpu_smoke_dry_run_uses_the_cpu():
    r = device_check("--dry-run", "--cpu-smoke", TEST_LIMIT="7")
    assert r.returncode == 0
    assert "--backend cpu" in r.stdout and "--backend cuda" not in r.stdout and "=== tests (limit 7s)" in r.stdout


def test_cpu_smoke_runs_end_to_end_and_archives_to_out(tmp_path):
    out = tmp_path / "out"
    r = device_check("--cpu-smoke", timeout=900, PYTHON=sys.executable, OUT=str(out),
                     RESULTS_ROOT=str(tmp_path / "results"))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    name = os.path.basename(results_dir(r.stdout))
    assert sorted(os.listdir(out)) == [f"{name}.tar.gz", "summary.md"]
    with tarfile.open(out / f"{name}.tar.gz") as tar:
        archived = {os.path.relpath(m, name) for m in tar.getnames()}
    for stem in ("softmax", "cross_entropy", "adam_100m", "activations", "launch"):
        assert {f"{stem}.json", f"bench-{stem}.log"} <= archived, stem
    assert {"tests.log", "summary.md"} <= archived
    summary = (out / "summary.md").read_text()
    for step in ("bench-softmax", "bench-cross_entropy", "bench-adam_100m", "bench-activations",
                 "bench-launch", "tests"):
        assert re.search(rf"^- {step}: exit 0 after \d+s$", summary, flags=re.MULTILINE), step
    goal_lines = re.findall(r"^- (PASS|FAIL|not measured): ", summary, flags=re.MULTILINE)
    assert goal_lines == ["not measured"] * len(goals.GOALS)  # tiny CPU cases measure no GPU goal
    assert summary in r.stdout  # printed at the end too


def test_a_step_that_runs_out_is_reported_and_the_rest_still_archived(tmp_path):
    out = tmp_path / "out"
    r = device_check("--cpu-smoke", timeout=120, PYTHON=sys.executable, OUT=str(out),
                     RESULTS_ROOT=str(tmp_path / "results"), SOFTMAX_LIMIT="0", CE_LIMIT="0", ADAM_LIMIT="0",
                     ACT_LIMIT="0", LAUNCH_LIMIT="1", TEST_LIMIT="0")
    assert r.returncode == 1
    summary = (out / "summary.md").read_text()
    assert re.search(r"^- bench-launch: exit 124 after \d+s \(ran out of its 1s\)$", summary, flags=re.MULTILINE)
    assert "- bench-activations: skipped" in summary and "- tests: skipped" in summary
    assert "FAILED: bench-launch" in summary and "1 step(s) failed" in r.stdout


# ---- the goal lines --------------------------------------------------------------------------------------------------
GIB = 1 << 30


def result(op, family, size, n, nbytes, of_copy, torch_speedup=None, torch_how=""):
    """A result row as gpunn bench writes it, with gpunn's fraction of the copy and the speedup over PyTorch."""
    copy_gbps = 4000.0
    gpunn = {"median_s": nbytes / (of_copy * copy_gbps * 1e9), "gbps": of_copy * copy_gbps, "spread_pct": 1.0}
    row = {"op": op, "family": family, "size": size, "n": n, "bytes": nbytes, "providers": {"gpunn": gpunn},
           "speedup_vs": {}, "fraction_of_copy": {"gpunn": of_copy},
           "copy": {"median_s": nbytes / (copy_gbps * 1e9), "gbps": copy_gbps}}
    if torch_speedup is not None:
        row["providers"]["torch"] = {"median_s": gpunn["median_s"] * torch_speedup, "how": torch_how,
                                     "gbps": gpunn["gbps"] / torch_speedup, "spread_pct": 1.0}
        row["speedup_vs"]["torch"] = torch_speedup
    return row


def run_of(rows, backend="cuda"):
    return {"device": "NVIDIA H200", "backend": backend, "dtype": "float32", "complete": True, "results": rows,
            "skipped": []}


SYNTHETIC = [run_of([
    result("relu.fwd", "activations", "2^26", 2**26, 2 * 4 * 2**26, 0.95, 1.10),
    result("gelu.bwd", "activations", "2^26", 2**26, 3 * 4 * 2**26, 0.92, 1.30),
    result("silu.fwd", "activations", "2^16", 2**16, 2 * 4 * 2**16, 0.10, 0.20),  # too small to count
    result("softmax.fwd", "activations", "2^26", 2**26, 2 * 4 * 2**26, 0.86, 3.0),
    result("softmax.bwd", "activations", "2^26", 2**26, 3 * 4 * 2**26, 0.84, 3.0),
    result("log_softmax.fwd", "activations", "2^26", 2**26, 2 * 4 * 2**26, 0.50, 0.5),  # in no goal
    result("cross_entropy.grad", "losses", "8192x32768", 2**28, 2 * GIB, 0.90, 2.50),
    result("cross_entropy.grad", "losses", "4096x131072", 2**29, 4 * GIB, 0.88, 1.50),
    result("adam.x200", "optimizers", "1e8", 10**8, 28 * 10**8, 0.93, 1.05, "torch.optim.Adam(foreach=True)"),
]), run_of([result("sgd.x1", "optimizers", "2^26", 2**26, 3 * 4 * 2**26, 0.99, 3.0)], backend="cpu")]

EXPECTED = [
    "PASS: elementwise activations >= 90% of copy: 92% (worst of 2: gelu.bwd @ 2^26)",
    "PASS: elementwise activations >= 1.00x torch: 1.10x (worst of 2: relu.fwd @ 2^26)",
    "PASS: optimizer steps >= 90% of copy: 93% (worst of 1: adam.x200 @ 1e8)",
    "PASS: optimizer steps >= 1.00x torch: 1.05x (worst of 1: adam.x200 @ 1e8)",
    "FAIL: softmax >= 85% of copy: 84% (worst of 2: softmax.bwd @ 2^26)",
    "PASS: cross_entropy with gradient >= 85% of copy: 88% (worst of 2: cross_entropy.grad @ 4096x131072)",
    "FAIL: cross_entropy with gradient vs F.cross_entropy forward + backward >= 2.00x torch: 1.50x "
    "(worst of 2: cross_entropy.grad @ 4096x131072)",
    # PyTorch ran foreach=True here, not the fused Adam the goal names
    "not measured: Adam, 100M parameters in 200 tensors, vs torch.optim.Adam(fused=True) >= 1.00x torch "
    "(no CUDA case of at least 256 MiB measures it)",
]


def test_goal_lines_pass_fail_and_not_measured():
    assert goals.goal_lines(SYNTHETIC) == EXPECTED


def test_adam_goal_needs_the_fused_peer_and_100m_parameters():
    fused = "torch.optim.Adam(fused=True)"
    adam = goals.GOALS[-1]
    assert goals.judge(adam, [result("adam.x200", "optimizers", "1e8", 10**8, 28 * 10**8, 0.9, 0.97, fused)])[:2] \
        == ("FAIL", 0.97)
    assert goals.judge(adam, [result("adam.x200", "optimizers", "2^24", 2**24, 28 * 2**24, 0.9, 1.2, fused)])[0] \
        == "not measured"


def test_summarize_ends_with_the_goals(tmp_path):
    (tmp_path / "run.json").write_text(json.dumps(SYNTHETIC[0]))
    text = core.summarize(str(tmp_path))
    assert "## run.json: NVIDIA H200, cuda, float32" in text
    assert text.rstrip().endswith("\n".join(["## Goals", ""] + [f"- {line}" for line in EXPECTED]))


def test_goal_lines_docstring_example():
    assert_doctests_pass(goals.goal_lines)
