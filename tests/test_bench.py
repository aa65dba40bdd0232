"""The benchmark harness (gpunn.bench): sizes, bytes accounting, timing statistics, the report, the command line.

Runs on the CPU providers with tiny sizes (no timing claims are checked, only the arithmetic and the files). The
like-for-like test runs each provider of an entry once on the same inputs and requires the same results, so that
the peers a figure is compared against compute the same thing as gpunn.
"""

import json
import math
import os

import numpy as np
import pytest

import gpunn
from gpunn import bench
from gpunn.bench import core
from gpunn.bench.core import Entry, parse_size
from gpunn.bench.entries import ENTRIES, split_sizes
from helpers import assert_usage_error

BY_NAME = {e.name: e for e in ENTRIES}
F32 = np.dtype(np.float32)


def entry(name):
    return BY_NAME[name]


def has(path):
    return core.gpunn_attr(path) is not None


# ---- sizes -----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, shape", [("2^24", (2**24,)), ("1024", (1024,)), ("1e8", (100_000_000,)),
                                         ("8192x32768", (8192, 32768)), ("2^12x2^17", (4096, 131072)),
                                         ("200x64", (200, 64))])
def test_parse_size(text, shape):
    s = parse_size(text)
    assert s.shape == shape and s.n == math.prod(shape) and s.label == text


@pytest.mark.parametrize("bad", ["", "abc", "2^", "1x2x3", "0", "1.5e0", "-4", "2^62", "2^31x2^31"])
def test_parse_size_rejects(bad):
    with pytest.raises(ValueError, match="size"):
        parse_size(bad)


def test_rows_cols():
    assert core.rows_cols(parse_size("2^24")) == (4096, 4096)  # the issue's cross-entropy 4096 x 4096 at 2^24
    assert core.rows_cols(parse_size("2^10")) == (1, 1024)
    assert core.rows_cols(parse_size("8192x32768")) == (8192, 32768)
    for name in ("softmax.fwd", "log_softmax.bwd", "cross_entropy.grad", "multi_margin_loss.grad"):
        assert entry(name).shape(parse_size("2^24")) == (4096, 4096), name
    assert entry("relu.fwd").shape(parse_size("2^24")) == (2**24,)
    assert entry("prelu.fwd").shape(parse_size("2^24")) == (2**16, 256)  # 256 channels on axis 1


def test_split_sizes():
    sizes = split_sizes(100_000_000)
    assert len(sizes) == 200 and sum(sizes) == 100_000_000 and min(sizes) >= 1
    assert max(sizes) / min(sizes) > 50  # mixed sizes, not 200 equal tensors
    assert split_sizes(100_000_000) == sizes  # the same split every run
    assert sum(split_sizes(200)) == 200
    with pytest.raises(ValueError, match="200 tensors"):
        split_sizes(199)


# ---- bytes accounting (napkin math), against hand counts -------------------------------------------------------------
def test_bytes_hand_counts():
    # relu forward, 1000 float32: read x (4000 B) + write y (4000 B)
    assert entry("relu.fwd").nbytes(parse_size("1000"), F32) == 8000
    # relu backward: read dy and x, write dx
    assert entry("relu.bwd").nbytes(parse_size("1000"), F32) == 12000
    # cross-entropy 8 x 16 float32: logits 512 B + int64 targets 64 B read, dlogits 512 B + loss 4 B written
    assert entry("cross_entropy.grad").nbytes(parse_size("8x16"), F32) == 512 + 64 + 512 + 4
    # Adam over 4096 float64 params: read p, g, m, v and write p, m, v: 7 arrays of 32768 B
    assert entry("adam.x200").nbytes(parse_size("4096"), np.dtype(np.float64)) == 7 * 4096 * 8
    # PReLU backward on (4, 256): read dy, x (4096 B each), weight (1024 B); write dx (4096 B), dweight (1024 B)
    assert entry("prelu.bwd").nbytes(parse_size("4x256"), F32) == 3 * 4096 + 2 * 1024


@pytest.mark.parametrize("e", [e for e in ENTRIES if e.family == "activations"], ids=lambda e: e.name)
def test_activation_bytes_equal_the_arrays_touched(e, rng):
    """Every array an activation entry allocates is read once or written once: their bytes are the napkin count."""
    for text in ("1000", "7x33", "5000"):
        arrays = e.make(parse_size(text), F32, rng)
        assert e.nbytes(parse_size(text), F32) == sum(a.nbytes for a in arrays.values()), text


@pytest.mark.parametrize("e", [e for e in ENTRIES if e.family == "losses"], ids=lambda e: e.name)
def test_loss_bytes_are_inputs_plus_gradient_plus_scalar(e, rng):
    size = parse_size("6x10")
    arrays = e.make(size, F32, rng)
    assert e.nbytes(size, F32) == sum(a.nbytes for a in arrays.values()) + arrays["x"].nbytes + 4


# ---- timing statistics -----------------------------------------------------------------------------------------------
class FakeTimer:
    """Returns scripted batch times; records how many calls each batch ran."""

    name = "fake"

    def __init__(self, per_call):
        self.per_call = list(per_call)
        self.batches = []

    def sync(self):
        pass

    def batch(self, calls, start, k):
        for j in range(k):
            calls[(start + j) % len(calls)]()
        self.batches.append(k)
        return k * (self.per_call.pop(0) if self.per_call else 1e-3)


def test_measure_statistics_and_rotation():
    seen = []
    calls = [lambda i=i: seen.append(i) for i in range(3)]
    # warm-up batch, calibration batch (1 call of 1 ms >= min_sample_s / 4), then 5 samples
    timer = FakeTimer([1e-3, 1e-3, 5e-3, 1e-3, 3e-3, 2e-3, 4e-3])
    r = core.measure(calls, timer, repeats=5, min_sample_s=1e-3)
    assert r["calls_per_sample"] == 1 and r["samples"] == 5 and r["sets"] == 3
    assert r["median_s"] == pytest.approx(3e-3)
    assert r["min_s"] == pytest.approx(1e-3) and r["max_s"] == pytest.approx(5e-3)
    q = np.percentile([1e-3, 2e-3, 3e-3, 4e-3, 5e-3], [25, 75], method="weibull")
    assert (r["q25_s"], r["q75_s"]) == pytest.approx(tuple(q))
    assert r["spread_pct"] == pytest.approx(100 * (q[1] - q[0]) / 3e-3)
    assert set(seen) == {0, 1, 2}  # every input set is used


def test_measure_calibrates_calls_per_sample():
    timer = FakeTimer([1e-6] * 100)  # 1 us per call, 10 ms wanted per sample
    r = core.measure([lambda: None], timer, repeats=3, min_sample_s=1e-2)
    assert r["calls_per_sample"] >= 10_000 * 0.99
    assert r["median_s"] == pytest.approx(1e-6)


def test_set_count_defeats_the_cache():
    cache = core.cache_bytes("cpu")
    assert cache >= 2**20
    sets = core.set_count(8000, "cpu", 10**9)
    assert sets * 8000 >= 4 * cache and (sets - 1) * 8000 < 4 * cache
    assert core.set_count(8000, "cpu", 16) == 16
    assert core.set_count(10 * cache, "cpu", 256) == 1


def test_rotation_sets_follow_the_bytes_of_one_input_set(monkeypatch):
    """64 float32 in, 64 out = 512 B per set; with a 4 KiB cache the run rotates over 4 * 4096 / 512 = 32 sets."""
    monkeypatch.setattr(core, "cache_bytes", lambda backend: 4096)
    assert core._host_bytes({"x": np.ones(64, np.float32), "p": [np.ones(3), np.ones(5)], "lr": 0.1}) == 256 + 64
    data = bench.run([_tiny_entry("t.fwd")], sizes=["64", "2048"], backend="cpu", repeats=2, min_sample_s=1e-4,
                     providers="numpy", log=lambda *a: None)
    assert [r["sets"] for r in data["results"]] == [32, 1]


# ---- the run and its files -------------------------------------------------------------------------------------------
def test_run_writes_json_markdown_and_plots(tmp_path):
    pytest.importorskip("matplotlib")
    data = bench.run(ops="relu.fwd,relu.bwd", sizes=["2^8", "2^10"], backend="cpu", repeats=3, min_sample_s=1e-3,
                     max_sets=4, output=str(tmp_path), stem="t", log=lambda *a: None)
    saved = json.loads((tmp_path / "t.json").read_text())
    for key in ("device", "backend", "dtype", "info", "providers", "timer", "results", "skipped", "created",
                "loadavg_start", "threads"):
        assert key in saved, key
    assert saved["backend"] == "cpu" and saved["info"]["gpunn"] == gpunn.info()["gpunn"]
    assert [(r["op"], r["size"]) for r in saved["results"]] == [
        ("relu.fwd", "2^8"), ("relu.fwd", "2^10"), ("relu.bwd", "2^8"), ("relu.bwd", "2^10")]
    for r in saved["results"]:
        assert r["bytes"] == (2 if r["op"] == "relu.fwd" else 3) * r["n"] * 4
        assert r["providers"]["gpunn"]["median_s"] > 0 and "numpy" in r["providers"]
        for p, m in r["providers"].items():
            assert m["gbps"] == pytest.approx(r["bytes"] / m["median_s"] / 1e9)
            assert m["q25_s"] <= m["median_s"] <= m["q75_s"]
            assert r["fraction_of_copy"][p] == pytest.approx(m["gbps"] / r["copy"]["gbps"])
            if p != "gpunn":
                assert r["speedup_vs"][p] == pytest.approx(m["median_s"] / r["providers"]["gpunn"]["median_s"])
        assert r["copy"]["bytes"] == r["bytes"] and r["copy"]["how"] == "np.copyto"
    assert saved == json.loads(json.dumps(data)) and saved["complete"] is True
    summary = bench.summarize(str(tmp_path)).splitlines()
    assert summary[0].startswith("## t.json: ") and len([s for s in summary if s.startswith("- relu.")]) == 4
    assert any(s.startswith("- relu.bwd @ 2^10 [12.3 kB]: gpunn ") and "numpy" in s for s in summary)
    md = (tmp_path / "t.md").read_text()
    assert "| relu.bwd | 2^10 | 12.3 kB | gpunn |" in md and "read dy and x, write dx" in md
    pngs = sorted(os.listdir(tmp_path / "t-plots"))
    assert pngs == ["relu-bwd.png", "relu-fwd.png"]
    assert (tmp_path / "t-plots" / "relu-fwd.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _tiny_entry(name, requires=(), torch_raises=False, gpunn_raises=False):
    def make(size, dtype, rng):
        return {"x": np.ones(size.n, dtype), "out": np.empty(size.n, dtype)}

    def boom(a, c):
        raise RuntimeError("no such kernel")

    return Entry(name, "test", "read x, write out", lambda s, dt: 2 * s.n * dt.itemsize, make,
                 {"gpunn": boom if gpunn_raises else (lambda a, c: (lambda: np.copyto(a["out"], a["x"]))),
                  "torch": boom if torch_raises else (lambda a, c: (lambda: a["out"].copy_(a["x"])))},
                 requires=requires)


def test_missing_op_is_skipped_with_a_note():
    lines = []
    data = bench.run([_tiny_entry("ghost.fwd", requires=("no_such_op|nor_this",)), _tiny_entry("real.fwd")],
                     sizes=["64"], backend="cpu", repeats=2, min_sample_s=1e-4, max_sets=2, log=lines.append)
    assert data["skipped"] == ["ghost.fwd: skipped, gpunn has no no_such_op|nor_this yet"]
    assert any("ghost.fwd: skipped" in line for line in lines)
    assert [r["op"] for r in data["results"]] == ["real.fwd"]


def test_a_failing_peer_is_noted_and_a_failing_gpunn_raises():
    pytest.importorskip("torch")
    data = bench.run([_tiny_entry("p.fwd", torch_raises=True)], sizes=["64"], backend="cpu", repeats=2,
                     min_sample_s=1e-4, max_sets=2, log=lambda *a: None)
    assert "torch" not in data["results"][0]["providers"] and "gpunn" in data["results"][0]["providers"]
    assert any("torch failed: RuntimeError: no such kernel" in s for s in data["skipped"])
    with pytest.raises(RuntimeError, match="no such kernel"):
        bench.run([_tiny_entry("g.fwd", gpunn_raises=True)], sizes=["64"], backend="cpu", repeats=2,
                  log=lambda *a: None)


def test_bad_arguments():
    with pytest.raises(ValueError, match="no benchmark entry"):
        bench.run(ops="no-such-op", backend="cpu", log=lambda *a: None)
    with pytest.raises(ValueError, match="providers"):
        bench.run(ops="relu.fwd", backend="cpu", providers="gpunn,jax", log=lambda *a: None)
    with pytest.raises(ValueError, match="backend"):
        bench.run(ops="relu.fwd", backend="tpu", log=lambda *a: None)
    if gpunn.mode() != "cuda":
        with pytest.raises(RuntimeError, match="real GPU"):
            bench.run(ops="relu.fwd", backend="cuda", log=lambda *a: None)
    for name, value in (("repeats", 0), ("repeats", -3), ("max_sets", 0), ("repeats", 2.5)):
        with pytest.raises(ValueError, match=name):
            bench.run(ops="relu.fwd", sizes=["64"], backend="cpu", log=lambda *a: None, **{name: value})


def test_summarize_names_a_file_that_is_not_json(tmp_path):
    (tmp_path / "bench.json").write_text("{ not json")
    with pytest.raises(ValueError, match="bench.json is not valid JSON"):
        bench.summarize(str(tmp_path))


def test_select():
    names = lambda ops: [e.name for e in core.select(ENTRIES, ops)]  # noqa: E731
    assert names("relu.fwd") == ["relu.fwd"]
    assert set(names("losses")) == {e.name for e in ENTRIES if e.family == "losses"}
    assert names("adam.x*") == ["adam.x1", "adam.x200", "adam.x200flat"]
    assert names("relu") == ["relu.fwd", "relu.bwd"]  # a name's first part, not a substring
    assert names("adam") == ["adam.x1", "adam.x200", "adam.x200flat"]
    assert "adamw.x1" in names("adam*") and "launch.adam.x200" in names("launch")


def test_every_family_of_the_issue_has_entries():
    names = {e.name for e in ENTRIES}
    for op in ("relu", "leaky_relu", "prelu", "sigmoid", "tanh", "gelu", "gelu_tanh", "silu", "elu", "softplus",
               "softmax", "log_softmax"):
        assert {f"{op}.fwd", f"{op}.bwd"} <= names, op
    for loss in ("mse_loss", "l1_loss", "huber_loss", "smooth_l1_loss", "binary_cross_entropy_with_logits",
                 "hinge_loss", "multi_margin_loss", "cross_entropy"):
        assert f"{loss}.grad" in names
    for opt in ("adam", "adamw", "sgd", "sgd_momentum", "nag", "rmsprop"):
        assert {f"{opt}.x1", f"{opt}.x200", f"{opt}.x200flat"} <= names
    assert {"launch.adam.x200", "launch.adam.x200flat"} <= names


# ---- like for like: every provider of an entry computes the same thing -----------------------------------------------
def _outputs(e, provider, host):
    ctx = core.Context("cpu", np.float64, provider, None)
    arrays = {k: core.convert([a.copy() for a in v] if isinstance(v, list) else v.copy(), provider, "cpu")
              for k, v in host.items()}
    ret = e.impls[core.impl_key(provider)](arrays, ctx)()
    if e.family == "activations" and ret is not None:  # the result returned (PyTorch's prelu allocates its own)
        return [np.asarray(r) for r in (ret if isinstance(ret, tuple) else (ret,))]
    if e.family == "optimizers":
        return [np.asarray(p) for p in arrays["p"]]
    if e.family == "losses":
        loss, dx = ret
        return [np.asarray(gpunn.to_host(loss) if not hasattr(loss, "detach") else loss.detach()),
                np.asarray(gpunn.to_host(dx) if not hasattr(dx, "detach") else dx.detach())]
    return [np.asarray(arrays[k]) for k in ("out", "dw") if k in arrays]


# One or two of each kind (saved x / saved y / parameters / a reduction in the backward / row-wise / losses / each
# optimizer form); each case compiles gpunn's float64 CPU kernels, so the list is kept short.
LIKE_FOR_LIKE = ["sigmoid.bwd", "gelu_tanh.bwd", "prelu.bwd", "softmax.bwd", "binary_cross_entropy_with_logits.grad",
                 "cross_entropy.grad", "adamw.x1", "nag.x1"]


@pytest.mark.parametrize("name", LIKE_FOR_LIKE)
def test_providers_compute_the_same_thing(name, rng):
    torch = pytest.importorskip("torch")
    pytest.importorskip("scipy")
    torch.set_num_threads(1)
    e = entry(name)
    missing = [r for r in e.requires if not any(has(a) for a in r.split("|"))]
    if missing:
        pytest.skip(f"gpunn has no {missing} yet")
    host = e.make(parse_size("5x37"), np.dtype(np.float64), rng)
    got = {p: _outputs(e, p, host) for p in ("gpunn", "torch", "numpy")}
    for p in ("torch", "numpy"):
        for a, b in zip(got["gpunn"], got[p]):
            np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12, err_msg=f"{name}: gpunn vs {p}")


# ---- the command line ------------------------------------------------------------------------------------------------
def test_cli_bench(tmp_path, capsys):
    from gpunn import cli

    assert cli.main(["bench", "--list"]) == 0
    listing = capsys.readouterr().out
    assert "cross_entropy.grad" in listing and "7*n*s bytes" in listing
    assert cli.main(["bench", "--ops", "relu.fwd", "--sizes", "2^8", "--repeats", "2", "--providers", "numpy",
                     "--backend", "cpu",
                     "--max-sets", "2",
                     "--output", str(tmp_path), "--no-plot"]) == 0
    out = capsys.readouterr().out
    assert "relu.fwd" in out and "gpunn" in out and "numpy" in out
    data = json.loads((tmp_path / "bench.json").read_text())
    assert data["providers"] == ["gpunn", "numpy"] and data["results"][0]["sets"] == 2
    assert not (tmp_path / "bench-plots").exists()


# Each bad value: exit 2 and one line naming the option, before any timing. {file} is an existing file, {dir} an
# empty directory, {bad_json} a directory holding a file that is not JSON. QUICK keeps a run short should a value be
# accepted; the bad option comes after it, so it is the one argparse keeps.
QUICK = ["--ops", "relu.fwd", "--sizes", "64", "--repeats", "2", "--max-sets", "2", "--providers", "numpy",
         "--backend", "cpu", "--no-plot", "--output", "{dir}/out"]
BAD_VALUES = [
    (["--sizes", "abc"], "--sizes"),
    (["--sizes", "2^x"], "--sizes"),
    (["--sizes", "0"], "--sizes"),
    (["--sizes", "2x3x4"], "--sizes"),
    (["--sizes", "2^70"], "--sizes"),          # beyond int64 byte counts
    (["--sizes", ","], "--sizes"),             # no size at all (was: the default sizes)
    (["--providers", "bogus"], "--providers"),
    (["--ops", "nomatch"], "--ops"),
    (["--output", "{file}"], "--output"),
    (["--output", "{file}/out"], "--output"),  # cannot be created: its parent is a file
    (["--output", ""], "--output"),            # was taken as "write nothing"
    (["--stem", "a/b"], "--stem"),
    (["--repeats", "-3"], "--repeats"),        # was an IndexError
    (["--repeats", "0"], "--repeats"),         # was taken as the default
    (["--threads", "0"], "--threads"),         # was taken as the default
    (["--threads", "100000"], "--threads"),    # above NUMBA_NUM_THREADS
    (["--max-sets", "0"], "--max-sets"),       # was taken as the default
    (["--summarize", "{dir}/missing"], "--summarize"),  # printed nothing, exit 0
    (["--summarize", "{dir}"], "--summarize"),          # no benchmark JSON in it
    (["--summarize", "{bad_json}"], "not valid JSON"),
]


@pytest.mark.parametrize("argv,words", BAD_VALUES, ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_cli_bad_value_gives_one_line_and_exit_code_2(argv, words, tmp_path, capsys):
    from gpunn import cli

    paths = {"{file}": tmp_path / "a-file", "{dir}": tmp_path / "empty", "{bad_json}": tmp_path / "bad"}
    paths["{file}"].write_bytes(b"keep")
    paths["{dir}"].mkdir()
    paths["{bad_json}"].mkdir()
    (paths["{bad_json}"] / "bench.json").write_text("{ not json")
    full = ["bench", *QUICK, *argv]
    for key, path in paths.items():
        full = [a.replace(key, str(path)) for a in full]
    try:
        rc = cli.main(full)
    except SystemExit as exc:
        rc = exc.code
    assert_usage_error(rc, capsys.readouterr().err, "gpunn bench", words)
    assert paths["{file}"].read_bytes() == b"keep" and not (paths["{dir}"] / "out").exists()


def test_cli_backend_cuda_without_a_gpu(capsys):
    from gpunn import cli

    if gpunn.mode() == "cuda":
        pytest.skip("there is a GPU here")
    rc = cli.main(["bench", "--backend", "cuda", "--ops", "relu.fwd"])
    assert_usage_error(rc, capsys.readouterr().err, "gpunn bench", "--backend cuda")


def test_cli_error_from_the_shell_has_no_traceback(tmp_path):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "gpunn", "bench", "--summarize", str(tmp_path / "missing")],
                          capture_output=True, text=True, timeout=120)
    assert_usage_error(proc.returncode, proc.stderr, "gpunn bench", "--summarize")


@pytest.mark.skipif(gpunn.mode() != "simulator", reason="drives the device path through the CUDA simulator")
def test_device_path_through_the_simulator():
    """The "cuda" backend's plumbing (Numba device arrays for gpunn, the device copy reference, freeing) run in the
    simulator with a wall-clock timer: no figure means anything, but every device-side call is made."""
    from numba import cuda

    data = bench.run(ops="relu.fwd,cross_entropy.grad,sgd_momentum.x200", sizes=["4x50"], backend="cuda",
                     repeats=2, min_sample_s=1e-4, max_sets=2, timer=core.CpuTimer(), _simulator_as_cuda=True,
                     log=lambda *a: None)
    assert data["device"] == "Numba CUDA simulator" and data["providers"][0] == "gpunn"
    assert [r["op"] for r in data["results"]] == ["relu.fwd", "cross_entropy.grad", "sgd_momentum.x200"]
    for r in data["results"]:
        assert r["providers"]["gpunn"]["median_s"] > 0 and "cudaMemcpy" in r["copy"]["how"]
    assert data["results"][1]["shape"] == [4, 50] and data["results"][2]["bytes"] == 5 * 200 * 4
    arrays = {"x": np.arange(3.0)}
    assert isinstance(core.convert(arrays["x"], "gpunn", "cuda"), type(cuda.to_device(np.zeros(1))))


# ---- on a real GPU (the lent card's device check): the CUDA path of the harness, small -------------------------------
@pytest.mark.gpu
@pytest.mark.skipif(gpunn.mode() != "cuda", reason="needs a real CUDA GPU (no timing in the simulator)")
def test_cuda_backend_smoke(tmp_path):
    data = bench.run(ops="relu.fwd,softmax.bwd,cross_entropy.grad,adam.x200", sizes=["2^14"], backend="cuda",
                     repeats=3, min_sample_s=1e-4, max_sets=2, output=str(tmp_path), stem="gpu", plot=False,
                     log=lambda *a: None)
    assert data["backend"] == "cuda" and data["timer"].startswith("CUDA events") and data["complete"]
    assert [r["op"] for r in data["results"]] == ["relu.fwd", "softmax.bwd", "cross_entropy.grad", "adam.x200"]
    for r in data["results"]:
        assert "cudaMemcpy" in r["copy"]["how"] and r["copy"]["gbps"] > 0
        for p, m in r["providers"].items():
            assert 0 < m["median_s"] < 1, (r["op"], p)
        assert set(r["providers"]) == set(data["providers"]), (r["op"], r["providers"].keys())


# ---- benchmarks/cpu_figures.sh: its CPU-side logic (device_check.sh: tests/test_device_check.py) ----------------
SCRIPTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")


def _bash(*args, env=None):
    import subprocess

    return subprocess.run(["bash", *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})


def _bench_argv(line):
    """The ``gpunn bench`` arguments of a printed command line, parsed by the real command-line parser."""
    import shlex

    from gpunn import cli

    words = shlex.split(line)
    i = words.index("gpunn")
    assert words[i + 1] == "bench", line
    return cli.build_parser().parse_args(words[i + 1:])


def test_cpu_figures_script():
    r = _bash(os.path.join(SCRIPTS, "cpu_figures.sh"), "--dry-run")
    assert r.returncode == 0, r.stderr
    lines = [line for line in r.stdout.splitlines() if "gpunn bench" in line]
    assert len(lines) == 2
    fig = _bench_argv(lines[0])
    assert fig.sizes == ["2^24"] and fig.backend == "cpu" and fig.threads == 1
    names = {e.name for e in core.select(ENTRIES, fig.ops)}
    assert {"relu.fwd", "log_softmax.bwd", "cross_entropy.grad", "hinge_loss.grad", "adam.x1", "adam.x200",
            "sgd_momentum.x1", "rmsprop.x200"} <= names


# ---- gpunn bench --train: gpunn train beside the same loop in PyTorch --------------------------------------------------
def test_the_pytorch_loop_does_gpunn_trains_job():
    """Same data, initial weights, batch order and optimizer: after 3 epochs both reach the same test accuracy (to a
    few test samples: float32 rounding differs between the two libraries' matrix products)."""
    pytest.importorskip("torch")
    from gpunn.bench import train as train_bench

    ours = train_bench.gpunn_run(threads=1, epochs=3)
    theirs = train_bench.torch_run(threads=1, epochs=3)
    assert len(ours["epochs"]) == len(theirs["epochs"]) == 3
    assert 0.8 < ours["test_accuracy"] and abs(ours["test_accuracy"] - theirs["test_accuracy"]) <= 0.01
    result = train_bench.compare([ours], [theirs])
    table = train_bench.table(result)
    assert "gpunn train" in table and "PyTorch loop" in table and f"{result['ratio']['train_seconds']:.2f}x" in table
