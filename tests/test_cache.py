"""The disk cache of compiled loops and kernels (gpunn/_cache.py): a second process compiles nothing, a changed key
recompiles, concurrent processes are safe, GPUNN_CACHE_DIR moves it and GPUNN_CACHE=0 turns it off.

Every check runs child processes on a cache directory of its own. A child counts Numba's compilations itself (the
``numba:compile`` event fires for a real compile, not for a load) beside gpunn's own counts, and returns its results,
which the tests compare with float64 references written from the formulas.
"""

import ctypes
import ctypes.util
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import gpunn
from gpunn import _cache

from helpers import assert_close

ROOT = Path(gpunn.__file__).resolve().parents[1]

# A child: counts compilations of gpunn's functions, runs OPS (serial and parallel builds), prints one JSON line.
CHILD = textwrap.dedent("""
    import json, sys
    import numpy as np
    from numba.core import event

    compiled = []

    class Count(event.Listener):
        def on_start(self, ev):
            compiled.append(ev.data["dispatcher"].py_func.__module__ + "." + ev.data["dispatcher"].py_func.__qualname__)

        def on_end(self, ev):
            pass

    event.register("numba:compile", Count())
    import gpunn
    from gpunn import _cache, _cpu

    dtype = np.dtype(sys.argv[1])
    builds = sys.argv[2].split(",")
    rng = np.random.default_rng(int(sys.argv[3]))
    x = rng.standard_normal(1000).astype(dtype)
    t = rng.standard_normal(1000).astype(dtype)
    rows = rng.standard_normal((50, 20)).astype(dtype)
    out = {}
    for build in builds:
        with _cpu.forced(build):
            r = {"relu": gpunn.relu(x), "relu_backward": gpunn.relu_backward(t, x)}
            if "mse" in sys.argv[4:]:
                loss, grad = gpunn.mse_loss_with_grad(x, t)
                r.update(mse=loss, mse_grad=grad, softmax=gpunn.softmax(rows))
                p = x.copy()
                gpunn.optim.Adam([p], lr=0.01).step([t])
                r["adam"] = p
        out[build] = {k: np.asarray(v).tolist() for k, v in r.items()}
    stats = _cache.stats()
    print(json.dumps({"compiled": [c for c in compiled if c.startswith("gpunn.")], "stats": stats,
                      "directory": _cache.directory(), "inputs": [x.tolist(), t.tolist(), rows.tolist()],
                      "results": out}))
""")


def child(cache_dir, dtype="float32", builds="serial", seed=0, more=(), env=None, path=ROOT, code=CHILD, run=True):
    """Run CHILD (or ``code``) with the cache in ``cache_dir``; returns its JSON (or the Popen when ``run`` False)."""
    full_env = {k: v for k, v in os.environ.items() if k != "GPUNN_CACHE"}
    full_env.update(PYTHONPATH=str(path), GPUNN_CACHE_DIR=str(cache_dir), **(env or {}))
    argv = [sys.executable, "-c", code, dtype, builds, str(seed), *more]
    # run in ``path``: ``python -c`` puts the working directory first on sys.path, ahead of PYTHONPATH
    if not run:
        return subprocess.Popen(argv, env=full_env, cwd=path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
    proc = subprocess.run(argv, env=full_env, cwd=path, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def entries(cache_dir):
    return sorted(Path(cache_dir).rglob("*.nbc"))


def check_results(report, dtype="float32"):
    """Every result of a child against float64 references from the formulas."""
    x, t, rows = (np.asarray(v, np.float64) for v in report["inputs"])
    for build, r in report["results"].items():
        assert_close(np.asarray(r["relu"], dtype), np.maximum(x, 0), dtype, what=f"relu ({build})")
        assert_close(np.asarray(r["relu_backward"], dtype), np.where(x > 0, t, 0), dtype, what=f"relu_bwd ({build})")
        if "mse" in r:
            assert_close(np.asarray(r["mse"], dtype), np.mean((x - t) ** 2), dtype, what="mse")
            assert_close(np.asarray(r["mse_grad"], dtype), 2 * (x - t) / x.size, dtype, what="mse grad")
            e = np.exp(rows - rows.max(axis=1, keepdims=True))
            assert_close(np.asarray(r["softmax"], dtype), e / e.sum(axis=1, keepdims=True), dtype, what="softmax")
            m, v = 0.1 * t, 0.001 * t * t  # Adam's first step from zero state: m/(1-b1), v/(1-b2)
            step = 0.01 * (m / 0.1) / (np.sqrt(v / 0.001) + 1e-8)
            assert_close(np.asarray(r["adam"], dtype), x - step, dtype, atol=1e-6, rtol=1e-5, what="adam")


# ---- a second process compiles nothing --------------------------------------------------------------------------------
def test_second_process_loads_everything_and_compiles_nothing(tmp_path):
    first = child(tmp_path, builds="serial,parallel", more=["mse"])
    assert first["compiled"] and first["stats"]["saved"] >= 8 and first["stats"]["uncacheable"] == {}
    assert entries(tmp_path) and Path(first["directory"]).parent == tmp_path
    second = child(tmp_path, builds="serial,parallel", seed=1, more=["mse"])
    assert second["compiled"] == [], second["compiled"]
    # The first process also saved functions it compiled only to type their callers (inlined helpers such as the
    # optimizer's decision); a loaded caller needs no typing, so the second process may load fewer entries.
    assert second["stats"]["compiled"] == 0 and 8 <= second["stats"]["loaded"] <= first["stats"]["saved"]
    check_results(first)
    check_results(second)


def test_loaded_code_gives_the_compiled_code_bits(tmp_path):
    compiled = child(tmp_path, builds="serial,parallel", more=["mse"], env={"GPUNN_CACHE": "0"})
    child(tmp_path, builds="serial,parallel", more=["mse"])
    loaded = child(tmp_path, builds="serial,parallel", more=["mse"])
    assert loaded["compiled"] == [] and compiled["results"] == loaded["results"]


# ---- a changed key recompiles ------------------------------------------------------------------------------------------
def test_another_dtype_compiles_its_own_entry(tmp_path):
    child(tmp_path, "float32")
    f64 = child(tmp_path, "float64")
    assert f64["stats"]["loaded"] == 0 and f64["compiled"], f64["stats"]
    check_results(f64, "float64")
    again = child(tmp_path, "float32")
    assert again["compiled"] == [] and again["stats"]["loaded"] > 0


def test_a_changed_gpunn_source_recompiles(tmp_path):
    copy = tmp_path / "src"
    shutil.copytree(ROOT / "gpunn", copy / "gpunn", ignore=shutil.ignore_patterns("__pycache__"))
    cache = tmp_path / "cache"
    first = child(cache, path=copy)
    assert child(cache, path=copy)["compiled"] == []
    with open(copy / "gpunn" / "_vector.py", "a") as f:  # a file relu's loops never call
        f.write("\n# changed\n")
    changed = child(cache, path=copy)
    assert changed["stats"]["loaded"] == 0 and changed["compiled"], changed["stats"]
    assert changed["directory"] != first["directory"]
    check_results(changed)


def test_another_numba_or_cpu_recompiles(tmp_path):
    child(tmp_path)
    other_cpu = child(tmp_path, env={"NUMBA_CPU_NAME": "generic"})
    assert other_cpu["stats"]["loaded"] == 0 and other_cpu["compiled"]
    check_results(other_cpu)
    other_numba = child(tmp_path, code="import numba; numba.__version__ = '0.0.0+test'\n" + CHILD)
    assert other_numba["stats"]["loaded"] == 0 and other_numba["compiled"]


# ---- several processes at once -------------------------------------------------------------------------------------
def test_concurrent_processes_share_the_cache_safely(tmp_path):
    procs = [child(tmp_path, builds="serial", seed=s, more=["mse"] if s % 2 else [], run=False) for s in range(4)]
    for p in procs:
        stdout, stderr = p.communicate(timeout=900)
        assert p.returncode == 0, stderr[-3000:]
        check_results(json.loads(stdout.strip().splitlines()[-1]))
    assert not list(Path(tmp_path).rglob("*.tmp")), "a temporary entry file was left behind"
    after = child(tmp_path, builds="serial", seed=9, more=["mse"])
    assert after["compiled"] == [] and after["stats"]["loaded"] > 0
    check_results(after)


def test_a_damaged_entry_is_recompiled_and_rewritten(tmp_path):
    child(tmp_path)
    for path in entries(tmp_path):
        path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])   # truncated, as by a full disk
    damaged = child(tmp_path, seed=2)
    assert damaged["compiled"] and damaged["stats"]["saved"] == damaged["stats"]["compiled"]
    check_results(damaged)
    assert child(tmp_path, seed=3)["compiled"] == []


# ---- where it lives -----------------------------------------------------------------------------------------------
def test_gpunn_cache_0_turns_it_off(tmp_path):
    report = child(tmp_path, env={"GPUNN_CACHE": "0"})
    assert report["compiled"] and report["stats"]["saved"] == 0 and not entries(tmp_path)
    check_results(report)


def test_gpunn_cache_dir_moves_it(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    child(a)
    assert entries(a) and not b.exists()
    moved = child(b)
    assert moved["compiled"] and entries(b)


def test_a_cache_dir_that_cannot_be_written_compiles_as_before(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    report = child(blocker / "cache")
    assert report["compiled"] and report["stats"]["saved"] == 0
    check_results(report)


# ---- what a key is made of ----------------------------------------------------------------------------------------------
def _closure(value):
    def f(x):
        return x + value

    return f


def test_describe_tells_closure_values_apart():
    described = {repr(_cache.describe(_closure(v))) for v in (1.0, -0.0, 0.0, np.float32(1.0), np.float64(1.0), 1)}
    assert len(described) == 6


def test_describe_tells_dtypes_apart_that_share_a_str():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    e4m3, int4 = np.dtype(ml_dtypes.float8_e4m3fn), np.dtype(ml_dtypes.int4)
    assert e4m3.str == int4.str == "<V1"  # what a key made of .str alone would confuse (bfloat16 is "<V2")
    assert _cache.describe(e4m3) != _cache.describe(int4)
    assert _cache.describe(np.dtype(ml_dtypes.bfloat16)) != _cache.describe(np.dtype(np.float16))


def test_describe_is_the_same_in_every_process(tmp_path):
    code = ("from gpunn import _cache, _elementwise; import numpy as np, hashlib, sys, importlib\n"
            "m = importlib.import_module('gpunn.activations.gelu')\n"
            "f = m._forward_math(np.dtype('float32'))\n"
            "loops = _elementwise._map1(f, np.dtype('float32'))[1]\n"
            "print(hashlib.sha256(repr(_cache.describe(loops.parallel.py_func)).encode()).hexdigest())")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    digests = {subprocess.run([sys.executable, "-c", code], env={**env, "PYTHONHASHSEED": str(seed)},
                              capture_output=True, text=True, timeout=300, check=True).stdout for seed in (1, 2, 3)}
    assert len(digests) == 1


def test_an_undescribable_closure_compiles_without_the_cache(tmp_path, monkeypatch):
    # a ctypes function: Numba calls it by its address in this process, which no description can pin down
    libm = ctypes.CDLL(ctypes.util.find_library("m"))
    cos = libm.cos
    cos.restype, cos.argtypes = ctypes.c_double, [ctypes.c_double]
    monkeypatch.setenv("GPUNN_CACHE_DIR", str(tmp_path))

    def f(x):
        return cos(x) + 1.0

    fn = _cache.njit(f)
    assert fn(0.0) == 2.0
    assert any("ctypes" in why for why in _cache.stats()["uncacheable"].values())
    assert not entries(tmp_path)


THREAD_ID = textwrap.dedent("""
    import json, numba
    from gpunn import _cache

    @_cache.njit
    def f(x):
        return x + 0 * numba.get_thread_id()

    print(json.dumps({"value": f(41) + 1, "stats": _cache.stats()}))
""")


def test_a_loaded_function_that_calls_numba_thread_functions_runs(tmp_path):
    first = child(tmp_path, code=THREAD_ID)
    second = child(tmp_path, code=THREAD_ID)  # loads it: the symbol must exist before it is linked
    assert first["value"] == second["value"] == 42 and second["stats"]["loaded"] == 1


# ---- CUDA kernels: with the driver stubbed (compiled and linked for real, nothing launched), and on a GPU -----------
CUDA_CHILD = textwrap.dedent("""
    import json
    import numpy as np
    import gpunn
    from numba import cuda
    from numba.cuda.codegen import CUDACodeLibrary
    from gpunn import _cache, _launch
    from gpunn.bench.host import stub_driver

    class Function:
        kernel = None

        class module:
            initialized = True

    def linked(self):  # link the cubin (nvJitLink, no GPU needed); hand back a stand-in function
        self.get_cubin()
        return Function()

    with stub_driver() as counts:
        CUDACodeLibrary.get_cufunc = linked
        x, o = cuda.device_array(1000, np.float32), cuda.device_array(1000, np.float32)
        with _launch.record() as launched:
            gpunn.relu(x, out=o)
        dispatcher = launched[0].dispatcher
        print(json.dumps({"launches": counts.launches, "hits": sum(dispatcher._cache_hits.values()),
                          "misses": sum(dispatcher._cache_misses.values()), "stats": _cache.stats()}))
""")


def test_cuda_kernels_are_cached_with_the_driver_stubbed(tmp_path):
    pytest.importorskip("cuda.bindings.nvjitlink", reason="nvJitLink (numba-cuda's cu13 extra) is not installed")
    env = {"NUMBA_ENABLE_CUDASIM": "0"}
    first = child(tmp_path, code=CUDA_CHILD, env=env)
    second = child(tmp_path, code=CUDA_CHILD, env=env)
    assert first["launches"] == second["launches"] == 1
    assert (first["hits"], first["misses"], first["stats"]["saved"]) == (0, 1, 1)
    assert (second["hits"], second["misses"], second["stats"]["compiled"]) == (1, 0, 0)


GPU_CHILD = textwrap.dedent("""
    import json
    import numpy as np
    import gpunn
    from gpunn import _cache, _launch

    x = np.linspace(-2, 2, 4099, dtype=np.float32)
    with _launch.record() as launched:
        y = gpunn.to_host(gpunn.relu(gpunn.to_device(x)))
    d = launched[0].dispatcher
    print(json.dumps({"y": y.tolist(), "hits": sum(d._cache_hits.values()), "stats": _cache.stats()}))
""")


@pytest.mark.gpu
@pytest.mark.skipif(gpunn.mode() != "cuda", reason="needs a real CUDA GPU")
def test_cuda_kernel_loaded_from_the_cache_on_a_gpu(tmp_path):
    first = child(tmp_path, code=GPU_CHILD)
    second = child(tmp_path, code=GPU_CHILD)
    assert first["stats"]["saved"] >= 1 and second["hits"] == 1
    x = np.linspace(-2, 2, 4099, dtype=np.float32).astype(np.float64)
    assert_close(np.asarray(second["y"], np.float32), np.maximum(x, 0), np.float32)


# ---- gpunn warmup ----------------------------------------------------------------------------------------------------
def test_warmup_fills_the_cache_for_later_processes(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT), GPUNN_CACHE_DIR=str(tmp_path))
    proc = subprocess.run([sys.executable, "-m", "gpunn", "warmup", "--only", "activations", "--dtype", "float32",
                           "--jobs", "2"], env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "compiled" in proc.stdout and entries(tmp_path)
    report = child(tmp_path, builds="serial,parallel")
    assert report["compiled"] == [], report["compiled"]
    check_results(report)


@pytest.mark.parametrize("argv, word", [(["--only", "nope"], "--only"), (["--jobs", "0"], "--jobs"),
                                        (["--dtype", "float16"], "--dtype")])
def test_warmup_bad_options_exit_2_naming_the_option(argv, word):
    proc = subprocess.run([sys.executable, "-m", "gpunn", "warmup", *argv], capture_output=True, text=True,
                          timeout=120, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert proc.returncode == 2 and word in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
