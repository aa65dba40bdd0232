"""The main job against PyTorch: ``gpunn train`` beside the same MLP loop written in PyTorch.

Both run gpunn train's default job: digits, an MLP 64-128-10 with ReLU, cross-entropy (the batch mean), Adam at
lr 1e-3, batch 32, 20 epochs, seed 0, the test split evaluated after each epoch, the loss read and the accuracy
counted after every batch. The PyTorch loop takes the same split, the same initial weights (gpunn's, copied into
``torch.nn.Linear``) and the same batch order, so both do the same arithmetic; its final test accuracy is reported
beside gpunn's as a check.

Each run is a fresh process: ``python -m gpunn train`` itself, and a PyTorch child that imports what it needs before
its clock starts (as ``gpunn train`` has imported gpunn before its clock starts). One untimed ``gpunn train`` run
first fills gpunn's disk cache (gpunn/_cache.py), so every timed run starts warm: its first epoch loads the compiled
loops, as a second run of the command does. Reported per library: the whole training (20 epochs), the first epoch
and a steady epoch (the median of epochs 2 to 20), each the median over the runs, and gpunn's time over PyTorch's.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

EPOCHS = 20
SEED = 0
DEFAULT_THREADS = 1  # gpunn train's default --threads


def torch_loop(epochs=EPOCHS, seed=SEED, threads=None) -> dict:
    """gpunn train's default job written in PyTorch; returns ``{"epochs": [seconds...], "train_seconds",
    "test_accuracy", "threads"}``."""
    import torch

    from ..app import data as data_mod
    from ..app.linear import NumpyBackend
    from ..app.mlp import MLP

    if threads is not None:
        torch.set_num_threads(threads)
    ds = data_mod.load("classification", seed=seed, dtype=np.float32)
    start = MLP([ds.n_features, 128, ds.n_outputs], "relu", NumpyBackend(), seed=seed, dtype=np.float32)
    layers = []
    for w, b in zip(start.weights, start.biases):
        layer = torch.nn.Linear(*w.shape)
        with torch.no_grad():
            layer.weight.copy_(torch.from_numpy(np.ascontiguousarray(w.T)))
            layer.bias.copy_(torch.from_numpy(b))
        layers.append(layer)
    model = torch.nn.Sequential(layers[0], torch.nn.ReLU(), layers[1])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    x_test, y_test = torch.from_numpy(ds.x_test), torch.from_numpy(ds.y_test)
    rng = np.random.default_rng([seed, 1])
    n, batch = len(ds.x_train), 32
    seconds = []
    t_train = time.perf_counter()
    for _ in range(epochs):
        t_epoch = time.perf_counter()
        order = rng.permutation(n)
        x_all, y_all = torch.from_numpy(ds.x_train[order]), torch.from_numpy(ds.y_train[order])
        loss_sum, good = 0.0, 0.0
        for lo in range(0, n, batch):
            xb, yb = x_all[lo:lo + batch], y_all[lo:lo + batch]
            opt.zero_grad()
            out = model(xb)
            loss = loss_fn(out, yb)
            loss.backward()
            opt.step()
            loss_sum += loss.item() * len(xb)
            good += float((out.detach().argmax(dim=1) == yb).sum())
        with torch.no_grad():
            test_out = model(x_test)
            loss_fn(test_out, y_test).item()
            accuracy = float((test_out.argmax(dim=1) == y_test).float().mean())
        seconds.append(time.perf_counter() - t_epoch)
    return {"epochs": seconds, "train_seconds": time.perf_counter() - t_train, "test_accuracy": accuracy,
            "threads": torch.get_num_threads()}


def gpunn_run(threads=None, epochs=EPOCHS) -> dict:
    """One ``python -m gpunn train --quiet`` in a fresh process; the same fields as :func:`torch_loop`."""
    with tempfile.TemporaryDirectory() as out:
        argv = [sys.executable, "-m", "gpunn", "train", "--quiet", "--epochs", str(epochs), "--output", out]
        if threads is not None:
            argv += ["--threads", str(threads)]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=900)
        if proc.returncode != 0:
            raise RuntimeError(f"gpunn train failed: {proc.stderr.strip()[-2000:]}")
        with open(os.path.join(out, "metrics.json")) as f:
            metrics = json.load(f)
    return {"epochs": metrics["history"]["seconds"], "train_seconds": metrics["train_seconds"],
            "test_accuracy": metrics["test_metric"], "threads": metrics["config"]["threads"]}


def torch_run(threads=None, epochs=EPOCHS) -> dict:
    """:func:`torch_loop` in a fresh process."""
    code = ("import json; from gpunn.bench.train import torch_loop; "
            f"print(json.dumps(torch_loop(epochs={epochs!r}, threads={threads!r})))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"the PyTorch loop failed: {proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def summary(runs: list[dict]) -> dict:
    """Medians over runs of the whole training, the first epoch and the steady epoch (median of epochs 2..)."""
    return {"train_seconds": statistics.median(r["train_seconds"] for r in runs),
            "first_epoch_seconds": statistics.median(r["epochs"][0] for r in runs),
            "steady_epoch_seconds": statistics.median(statistics.median(r["epochs"][1:]) for r in runs),
            "test_accuracy": runs[-1]["test_accuracy"], "threads": runs[-1]["threads"], "runs": runs}


def compare(gpunn_runs: list[dict], torch_runs: list[dict]) -> dict:
    """``{"gpunn": summary, "torch": summary, "ratio": gpunn's time over PyTorch's per measure}``."""
    result = {"gpunn": summary(gpunn_runs), "torch": summary(torch_runs)}
    result["ratio"] = {key: result["gpunn"][key] / result["torch"][key]
                       for key in ("train_seconds", "first_epoch_seconds", "steady_epoch_seconds")}
    return result


def measure(repeats=3, threads=None) -> dict:
    """Warm gpunn's cache with one untimed run, then ``repeats`` fresh-process runs of each, alternating. Both
    libraries get the same thread count: ``threads``, else gpunn train's default (1; PyTorch's own default would
    take every core, which on a shared machine mostly measures the other jobs)."""
    threads = threads or DEFAULT_THREADS
    gpunn_run(threads)
    runs = {"gpunn": [], "torch": []}
    load_start = os.getloadavg()
    for _ in range(repeats):
        runs["gpunn"].append(gpunn_run(threads))
        runs["torch"].append(torch_run(threads))
    import torch

    from .. import info

    result = compare(runs["gpunn"], runs["torch"])
    result.update(epochs=EPOCHS, repeats=repeats, gpunn_info=info(), torch_version=torch.__version__,
                  cpus=os.cpu_count(), load_start=[round(v, 2) for v in load_start],
                  load_end=[round(v, 2) for v in os.getloadavg()])
    return result


def table(result) -> str:
    head = ["| | whole training (20 epochs) | first epoch | steady epoch | test accuracy | threads |",
            "|---|---|---|---|---|---|"]
    rows = []
    for name in ("gpunn", "torch"):
        r = result[name]
        rows.append(f"| {'gpunn train' if name == 'gpunn' else 'PyTorch loop'} | {r['train_seconds']:.3f} s | "
                    f"{r['first_epoch_seconds'] * 1e3:.1f} ms | {r['steady_epoch_seconds'] * 1e3:.1f} ms | "
                    f"{100 * r['test_accuracy']:.2f}% | {r['threads']} |")
    q = result["ratio"]
    rows.append(f"| gpunn / PyTorch | {q['train_seconds']:.2f}x | {q['first_epoch_seconds']:.2f}x | "
                f"{q['steady_epoch_seconds']:.2f}x | | |")
    return "\n".join(head + rows)


def run(output: str, repeats=3, threads=None) -> dict:
    """Measure, print the table, write ``train.json`` and ``train.md`` into ``output``; returns the result."""
    result = measure(repeats, threads)
    text = table(result)
    print(text)
    os.makedirs(output, exist_ok=True)
    with open(os.path.join(output, "train.json"), "w") as f:
        json.dump(result, f, indent=2)
    with open(os.path.join(output, "train.md"), "w") as f:
        f.write(f"# gpunn train against the same loop in PyTorch\n\n{text}\n\nMedians of {repeats} fresh-process runs "
                f"each (gpunn's disk cache warm); {result['cpus']} CPUs, load average {result['load_start']} at the "
                f"start, {result['load_end']} at the end.\n")
    return result
