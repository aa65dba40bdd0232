"""``gpunn train``, ``gpunn plot`` and ``gpunn demo``: the app's linear kernels, tiny training runs on the CPU and in
the simulator (or on the GPU where there is one), the files they write, seeds, exit codes, figures.

Training runs are tiny (a subset of digits, one or two epochs, a narrow hidden layer) so the file stays fast; the
>= 95% accuracy of the default run is measured separately (see the report / README), not here.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from gpunn import _runtime
from gpunn.app import linear
from gpunn.app.mlp import ACTIVATIONS, OPTIMIZERS
from gpunn.cli import COMMANDS, main
from helpers import TOL, assert_close, assert_doctests_pass, assert_usage_error

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TINY = ["--epochs", "1", "--batch-size", "16", "--hidden", "16", "--quiet"]


def _has_device():
    return _runtime.mode() != "cpu"


def run_cli(argv, capsys):
    """Run ``gpunn <argv>`` in this process; (exit code, stdout, stderr)."""
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse errors
        rc = exc.code
    out = capsys.readouterr()
    return rc, out.out, out.err


def metrics_of(directory):
    with open(os.path.join(directory, "metrics.json")) as f:
        return json.load(f)


def assert_png(path, min_side=300):
    with open(path, "rb") as f:
        assert f.read(8) == PNG_MAGIC, f"{path} is not a PNG"
    import matplotlib.image

    img = matplotlib.image.imread(path)
    assert min(img.shape[:2]) >= min_side, f"{path}: {img.shape} is too small to read"
    assert img[..., :3].std() > 0.05, f"{path} looks blank"


# ---- the app's linear-layer kernels against a naive float64 reference -----------------------------------------------
def naive_matmul(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    out = np.zeros((a.shape[0], b.shape[1]))
    for i in range(a.shape[0]):
        for j in range(b.shape[1]):
            out[i, j] = sum(a[i, k] * b[k, j] for k in range(a.shape[1]))
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("m,k,n", [(0, 3, 2), (1, 1, 1), (5, 7, 3), (33, 9, 31), (17, 0, 4)])
def test_linear_kernels_match_naive_reference(m, k, n, dtype, rng):
    if not _has_device():
        pytest.skip("no GPU and the simulator is off")
    be = linear.backend("sim" if _runtime.simulator() else "cuda")
    if be.library != "numba":
        pytest.skip("CuPy does the products on this machine")
    x = rng.standard_normal((m, k)).astype(dtype)
    w = rng.standard_normal((k, n)).astype(dtype)
    b = rng.standard_normal(n).astype(dtype)
    dz = rng.standard_normal((m, n)).astype(dtype)
    xd, wd, bd, dzd = (be.asarray(a) for a in (x, w, b, dz))
    atol, rtol = TOL[dtype]
    atol *= max(k, m, 1) * 4  # sums of up to 33 products of N(0,1) values, rounded in the data's dtype
    assert_close(be.to_host(be.linear(xd, wd, bd)), naive_matmul(x, w) + b, dtype, atol=atol, rtol=rtol, what="z")
    dx, dw, db = be.linear_backward(dzd, xd, wd)
    assert_close(be.to_host(dx), naive_matmul(dz, w.T), dtype, atol=atol, rtol=rtol, what="dx")
    assert_close(be.to_host(dw), naive_matmul(x.T, dz), dtype, atol=atol, rtol=rtol, what="dw")
    assert_close(be.to_host(db), dz.astype(np.float64).sum(axis=0), dtype, atol=atol, rtol=rtol, what="db")


def test_linear_kernels_are_registered_for_the_build_check():
    from gpunn import _registry

    names = {k.name for k in _registry.KERNELS}
    for dt in ("float32", "float64"):
        assert f"linear_matmul[{dt}]" in names and f"linear_bias_grad_sum[{dt}]" in names


# ---- training runs ---------------------------------------------------------------------------------------------------
def test_train_cpu_learns_and_writes_metrics_and_curves(tmp_path, capsys):
    rc, out, err = run_cli(["train", "--device", "cpu", "--epochs", "2", "--batch-size", "32", "--hidden", "32",
                            "--lr", "0.01", "--quiet", "--output", str(tmp_path)], capsys)
    assert rc == 0, err
    assert "digits: test accuracy" in out and "on cpu" in out
    m = metrics_of(tmp_path)
    assert m["metric"] == "accuracy" and m["device"] == "cpu" and m["library"] == "numpy"
    assert m["history"]["epoch"] == [1, 2]
    assert m["test_metric"] > 0.8, m["test_metric"]  # chance is 0.1; two epochs of Adam reach ~0.9
    assert m["history"]["train_loss"][1] < m["history"]["train_loss"][0]
    assert m["config"]["activation"] == "relu" and m["config"]["optimizer"] == "adam"
    for name in ("loss.png", "accuracy.png"):
        assert_png(tmp_path / name)


def test_train_progress_bar_shows_loss_and_accuracy(capsys):
    rc, out, err = run_cli(["train", "--device", "cpu", "--max-samples", "200", "--epochs", "1",
                            "--batch-size", "32", "--hidden", "8"], capsys)
    assert rc == 0, err
    assert "epoch 1/1" in err and "loss=" in err and "acc=" in err and "test_acc=" in err


def test_same_seed_same_run_other_seed_other_run(tmp_path, capsys):
    hist = {}
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        argv = ["train", "--device", "cpu", "--max-samples", "300", "--epochs", "2", "--batch-size", "16",
                "--hidden", "16", "--seed", str(seed), "--quiet", "--output", str(tmp_path / name)]
        rc, _, err = run_cli(argv, capsys)
        assert rc == 0, err
        hist[name] = metrics_of(tmp_path / name)["history"]
    for key in ("train_loss", "train_accuracy", "test_loss", "test_accuracy"):
        assert hist["a"][key] == hist["b"][key], key
    assert hist["a"]["train_loss"] != hist["c"]["train_loss"]


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_every_activation_trains(activation, tmp_path, capsys):
    rc, _, err = run_cli(["train", "--device", "cpu", "--activation", activation, "--max-samples", "400",
                          "--epochs", "2", "--batch-size", "16", "--hidden", "32", "--lr", "0.01", "--quiet",
                          "--output", str(tmp_path)], capsys)
    assert rc == 0, err
    m = metrics_of(tmp_path)
    assert m["history"]["train_loss"][1] < m["history"]["train_loss"][0]
    assert m["test_metric"] > 0.5, (activation, m["test_metric"])  # chance: 0.1


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_every_optimizer_trains(optimizer, tmp_path, capsys):
    rc, _, err = run_cli(["train", "--device", "cpu", "--optimizer", optimizer, "--max-samples", "400",
                          "--epochs", "2", "--batch-size", "16", "--hidden", "32", "--quiet",
                          "--output", str(tmp_path)], capsys)
    assert rc == 0, err
    m = metrics_of(tmp_path)
    assert m["history"]["train_loss"][1] < m["history"]["train_loss"][0], optimizer
    assert m["test_metric"] > 0.3, (optimizer, m["test_metric"])  # default lr per optimizer; chance: 0.1


@pytest.mark.parametrize("loss", ["mse", "mae", "huber"])
def test_regression_on_diabetes(loss, tmp_path, capsys):
    rc, out, err = run_cli(["train", "--task", "regression", "--loss", loss, "--device", "cpu", "--epochs", "5",
                            "--batch-size", "32", "--hidden", "16", "--lr", "0.01", "--quiet",
                            "--output", str(tmp_path)], capsys)
    assert rc == 0, err
    assert f"diabetes ({loss})" in out and "R^2" in out
    m = metrics_of(tmp_path)
    assert m["metric"] == "r2"
    assert m["test_metric"] > 0.2, m["test_metric"]  # a linear fit gets ~0.45; predicting the mean gets 0
    assert_png(tmp_path / "loss.png")
    assert_png(tmp_path / "r2.png")


DEVICE_RUN = ["--max-samples", "48", "--epochs", "1", "--batch-size", "16", "--hidden", "6", "--dtype", "float64",
              "--activation", "prelu", "--optimizer", "adam", "--quiet"]


def _cpu_run(tmp_path, capsys):
    rc, _, err = run_cli(["train", "--device", "cpu", *DEVICE_RUN, "--output", str(tmp_path / "cpu")], capsys)
    assert rc == 0, err
    return metrics_of(tmp_path / "cpu")


def _assert_same_run(dev, cpu):
    # float64 and the same seed: the same batches, weights and steps; only summation order differs (1e-16 level)
    for key in ("train_loss", "test_loss", "test_accuracy"):
        np.testing.assert_allclose(dev["history"][key], cpu["history"][key], rtol=1e-9, atol=1e-12, err_msg=key)


def test_sim_run_from_a_fresh_process_matches_the_cpu_run(tmp_path, capsys):
    """``gpunn train --device sim`` from a shell (numba.cuda already imported by then, simulator off) re-runs itself
    with the simulator on; its CUDA kernels (the app's linear kernels, PReLU with its weight gradient, cross-entropy,
    Adam) then give the CPU path's training run."""
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    proc = subprocess.run([sys.executable, "-m", "gpunn", "train", "--device", "sim", *DEVICE_RUN,
                           "--output", str(tmp_path / "sim")], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "on sim [numba" in proc.stdout
    sim = metrics_of(tmp_path / "sim")
    assert sim["gpunn"]["mode"] == "simulator" and sim["device"] == "sim"
    _assert_same_run(sim, _cpu_run(tmp_path, capsys))


def test_cuda_run_matches_the_cpu_run(tmp_path, capsys):
    if not _runtime.gpu_available():
        pytest.skip("needs a CUDA GPU (the simulator run is checked above)")
    rc, _, err = run_cli(["train", "--device", "cuda", *DEVICE_RUN, "--output", str(tmp_path / "cuda")], capsys)
    assert rc == 0, err
    _assert_same_run(metrics_of(tmp_path / "cuda"), _cpu_run(tmp_path, capsys))


# ---- bad options -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("argv,words", [
    (["--activation", "swish"], "invalid choice"),
    (["--optimizer", "lion"], "invalid choice"),
    (["--lr", "0"], "--lr"),
    (["--lr", "-0.1"], "--lr"),
    (["--lr", "nan"], "--lr"),
    (["--lr", "fast"], "--lr"),
    (["--epochs", "0"], "--epochs"),
    (["--batch-size", "-3"], "--batch-size"),
    (["--hidden", "12,x"], "--hidden"),
    (["--device", "tpu"], "--device"),
    (["--loss", "mse"], "--loss"),  # a regression loss for classification
])
def test_bad_options_give_one_line_and_exit_code_2(argv, words, capsys):
    rc, out, err = run_cli(["train", *argv], capsys)
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpunn train: error:") and words in lines[0], err
    assert "Traceback" not in err


def test_cuda_without_gpu_is_a_clean_error(capsys):
    if _runtime.gpu_available():
        pytest.skip("there is a GPU here")
    rc, out, err = run_cli(["train", "--device", "cuda"], capsys)
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "needs a CUDA GPU" in lines[0], err


def test_bad_option_from_the_shell_has_no_traceback():
    proc = subprocess.run([sys.executable, "-m", "gpunn", "train", "--activation", "nope"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


# Each bad value of every command: exit 2 and one line naming the option, before any work starts. {file} is an existing
# file; TINY_RUN keeps a run short should a value be accepted. (bench's options are in test_bench.py.)
TINY_RUN = [*TINY, "--max-samples", "40"]
BAD_VALUES = [
    (["train", "--max-samples", "1"], "--max-samples"),   # a split needs one sample to train on and one to test
    (["train", "--seed", "-1"], "--seed"),
    (["train", "--seed", str(2**32)], "--seed"),          # scikit-learn's random_state is below 2^32
    (["train", "--threads", "100000"], "--threads"),      # above NUMBA_NUM_THREADS (was clamped silently)
    (["train", "--output", "{file}"], "--output"),
    (["train", "--output", "{file}/runs"], "--output"),   # cannot be created: its parent is a file
    (["train", "--output", ""], "--output"),              # was taken as "no output"
    (["plot", "--output", "{file}"], "--output"),
    (["plot", "--output", "{file}/figures"], "--output"),
    (["demo", "--activations", "relu", "swish"], "--activations"),
    (["kernels", "--jobs", "0", "--quick", "--filter", "relu"], "--jobs"),
    ([], "command"),
    (["no-such-command"], "invalid choice"),
]


@pytest.mark.parametrize("argv,words", BAD_VALUES, ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_bad_value_gives_one_line_and_exit_code_2(argv, words, tmp_path, capsys):
    path = tmp_path / "a-file"
    path.write_bytes(b"keep")
    argv = [a.replace("{file}", str(path)) for a in argv]
    rc, _, err = run_cli(argv + (TINY_RUN if argv[:1] == ["train"] else []), capsys)
    prog = f"gpunn {argv[0]}" if argv and argv[0] in COMMANDS else "gpunn"
    assert_usage_error(rc, err, prog, words)
    assert path.read_bytes() == b"keep"


def test_output_is_checked_before_training(tmp_path, capsys, monkeypatch):
    from gpunn.app import train as app_train

    def no_training(*args, **kwargs):
        raise AssertionError("training started before --output was checked")

    monkeypatch.setattr(app_train, "train", no_training)
    path = tmp_path / "a-file"
    path.write_bytes(b"")
    rc, _, err = run_cli(["train", "--output", str(path), *TINY_RUN], capsys)
    assert_usage_error(rc, err, "gpunn train", "--output")


@pytest.mark.parametrize("argv,words", [
    (["kernels", "--cc", "abc"], "--cc"),
    (["kernels", "--filter", "no_kernel_has_this_name"], "--filter"),  # as bench --ops: a filter matching nothing
])
def test_kernels_bad_value_gives_one_line_and_exit_code_2(argv, words):
    """In a child process: under the simulator `gpunn kernels` runs itself again with the simulator off."""
    proc = subprocess.run([sys.executable, "-m", "gpunn", *argv], capture_output=True, text=True, timeout=300)
    if "toolchain missing" in proc.stderr:
        pytest.skip("no NVVM / nvJitLink here: the filter is applied after the toolchain check")
    assert_usage_error(proc.returncode, proc.stderr, "gpunn kernels", words)


def test_demo_device_without_a_device_is_a_clean_error():
    if _runtime.gpu_available():
        pytest.skip("there is a GPU here")
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="0")
    proc = subprocess.run([sys.executable, "-m", "gpunn", "demo", "--device"], capture_output=True, text=True,
                          timeout=120, env=env)
    assert_usage_error(proc.returncode, proc.stderr, "gpunn demo", "--device")


def test_too_large_a_network_is_one_line(capsys):
    """Out of memory (the weights alone would take 512 PiB) is one line and exit 1, not a traceback."""
    rc, _, err = run_cli(["train", "--device", "cpu", *TINY_RUN, "--hidden", str(2**50)], capsys)
    lines = err.strip().splitlines()
    assert rc == 1 and len(lines) == 1 and "out of memory" in lines[0], err[-2000:]


@pytest.mark.parametrize("argv,missing", [
    (["train", *TINY_RUN], "sklearn"),
    (["train", *TINY_RUN], "tqdm"),
    (["train", *TINY_RUN, "--output", "{dir}"], "matplotlib"),  # the curves
    (["plot", "--output", "{dir}"], "matplotlib"),
])
def test_missing_app_extra_names_the_install_command(argv, missing, tmp_path):
    """The app extra is hidden from a child process (``sys.modules[name] = None`` makes its import fail), as if it
    were not installed; nothing is uninstalled."""
    argv = [a.replace("{dir}", str(tmp_path / "out")) for a in argv]
    shim = (f"import sys; sys.modules[{missing!r}] = None; from gpunn.cli import main; "
            f"sys.exit(main({argv!r}))")
    proc = subprocess.run([sys.executable, "-c", shim], capture_output=True, text=True, timeout=300)
    assert_usage_error(proc.returncode, proc.stderr, f"gpunn {argv[0]}", 'pip install "gpunn[app]"')
    dist = {"sklearn": "scikit-learn"}.get(missing, missing)
    assert dist in proc.stderr


def test_commands_without_the_app_extra_still_start():
    """Only train and plot need the app extra: `gpunn info` runs with scikit-learn, matplotlib and tqdm hidden."""
    shim = ("import sys; sys.modules.update(sklearn=None, matplotlib=None, tqdm=None); from gpunn.cli import main; "
            "sys.exit(main(['info']))")
    proc = subprocess.run([sys.executable, "-c", shim], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "mode" in proc.stdout, proc.stderr[-2000:]


def test_option_types_examples():
    from gpunn.commands import _options

    assert_doctests_pass(_options, **vars(_options))

@pytest.mark.parametrize("task", ["classification", "regression"])
def test_smallest_subset_trains(task, tmp_path, capsys):
    """--max-samples 2: one sample to train on, one to test; the loss stays finite (one regression target has
    standard deviation 0: it is centred, not divided by 0)."""
    argv = ["train", "--task", task, *TINY, "--max-samples", "2", "--output", str(tmp_path)]
    rc, out, err = run_cli(argv + (["--loss", "mse"] if task == "regression" else []), capsys)
    assert rc == 0, err
    history = metrics_of(tmp_path)["history"]
    losses = history["train_loss"] + history["test_loss"]
    assert all(v is not None and np.isfinite(v) for v in losses), history  # metrics.json writes NaN as null


# ---- plot and demo ---------------------------------------------------------------------------------------------------
def test_plot_writes_readable_pngs(tmp_path, capsys):
    rc, out, err = run_cli(["plot", "--output", str(tmp_path)], capsys)
    assert rc == 0, err
    names = sorted(os.listdir(tmp_path))
    assert names == ["activations.png", "optimizers_beale.png", "optimizers_rosenbrock.png",
                     "sigmoid_vs_relu.png"]
    for name in names:
        assert_png(tmp_path / name)


def naive_forward(name, x):
    """float64 forward formulas, written from docs/definitions.md, to check what the figure shows as f and f'."""
    from math import erf

    sig = 1 / (1 + np.exp(-x))
    return {"relu": np.maximum(x, 0), "leaky_relu": np.where(x > 0, x, 0.01 * x),
            "prelu": np.where(x > 0, x, 0.25 * x), "sigmoid": sig, "tanh": np.tanh(x),
            "gelu": 0.5 * x * (1 + np.vectorize(erf)(x / np.sqrt(2))), "silu": x * sig,
            "elu": np.where(x > 0, x, np.expm1(x)), "softplus": np.log1p(np.exp(x))}[name]


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_plotted_derivative_is_the_slope_of_the_plotted_function(name):
    from gpunn.app.plot import activation_curves

    x = np.array([-3.0, -1.3, -0.4, 0.35, 0.9, 2.7])  # away from the kinks at 0
    y, dydx = activation_curves(name, x)
    assert_close(y, naive_forward(name, x), np.float64, atol=1e-12, rtol=1e-12, what=f"{name} forward")
    h = 1e-6
    slope = (naive_forward(name, x + h) - naive_forward(name, x - h)) / (2 * h)
    assert_close(dydx, slope, np.float64, atol=1e-7, rtol=1e-7, what=f"{name} derivative")


def test_sigmoid_derivative_peaks_at_a_quarter():
    from gpunn.app.plot import activation_curves

    x = np.linspace(-6, 6, 1201)
    _, ds = activation_curves("sigmoid", x)
    assert abs(ds.max() - 0.25) < 1e-12 and abs(x[np.argmax(ds)]) < 1e-9


@pytest.mark.parametrize("surface", ["rosenbrock", "beale"])
@pytest.mark.parametrize("name", ["SGD", "Momentum", "NAG", "RMSprop", "Adam"])
def test_plotted_optimizer_paths_head_for_the_minimum(surface, name):
    from gpunn.app.plot import SURFACES, optimizer_path

    f, _, start, minimum, steps, _, _ = SURFACES[surface]
    path = optimizer_path(surface, name)
    assert len(path) == steps + 1 and np.all(np.isfinite(path))
    assert np.allclose(path[0], start)
    assert f(path[-1]) < 0.1 * f(np.array(start)), (name, path[-1])
    assert np.linalg.norm(path[-1] - minimum) < np.linalg.norm(np.array(start) - minimum)


def test_demo_prints_activations_and_gradients(capsys):
    rc, out, err = run_cli(["demo", "--full"], capsys)
    assert rc == 0, err
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.strip()}
    assert [float(v) for v in rows["relu(x)"]] == [0, 0, 0, 0, 0.5, 1, 2]
    assert [float(v) for v in rows["dsigmoid/dx"]][3] == 0.25
    assert "cross_entropy" in out and "Adam" in out
