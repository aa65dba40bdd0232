"""The training loop behind ``gpunn train``: an MLP on digits (classification) or diabetes (regression).

One epoch: shuffle the training split with the run's generator, copy it to the device once, then for each
mini-batch: forward (linear layers + gpunn activation), ``loss, dlogits = gpunn.<loss>_with_grad(...)``, backward,
``optimizer.step(grads)``. After each epoch the test split is evaluated. A seed fixes the split, the initial
weights and the batch order; gpunn's kernels and CPU loops are deterministic, so a seed gives the same run twice.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field

import numpy as np

import gpunn

from . import cpu_threads
from . import data as data_mod
from .linear import backend as make_backend
from .mlp import LOSSES, MLP
from .parallel import Stepper, World, check_split


@dataclass
class Config:
    task: str = "classification"
    activation: str = "relu"
    optimizer: str = "adam"
    lr: float = 1e-3
    epochs: int = 20
    batch_size: int = 32
    hidden: tuple = (128,)
    loss: str = "mse"           # regression only; classification always uses cross-entropy
    device: str = "cpu"
    seed: int = 0
    dtype: str = "float32"
    test_size: float = 0.2
    max_samples: int | None = None
    threads: int | None = 1     # threads of gpunn's CPU loops (see gpunn.app.cpu_threads)
    micro_batches: int | None = None   # fixed micro-batches per batch (None: 1, or the number of ranks)
    distributed: bool = False   # one rank of an MPI job (mpiexec): each rank computes its micro-batches
    zero: bool = False          # ZeRO-1: the optimizer state sharded across the ranks
    timeout: float = 300.0      # seconds a rank waits for the others


@dataclass
class Result:
    config: dict
    device: str
    library: str
    metric: str                                     # "accuracy" or "r2"
    history: dict = field(default_factory=dict)     # per-epoch lists
    test_loss: float = float("nan")
    test_metric: float = float("nan")
    train_seconds: float = 0.0
    total_seconds: float = 0.0
    parallel: dict = field(default_factory=dict)    # ranks, micro-batches, samples/s, optimizer state bytes per rank
    params: np.ndarray | None = field(default=None, repr=False)   # the final flat parameters (host copy)


def _scalar(backend, x) -> float:
    return float(np.asarray(backend.to_host(x)).reshape(()))


def _metric(task, out_host, y_host):
    if task == "classification":
        return float(np.mean(np.argmax(out_host, axis=1) == y_host))
    resid = np.sum((out_host - y_host) ** 2)
    total = np.sum((y_host - y_host.mean()) ** 2)
    return float(1.0 - resid / total) if total > 0 else float("nan")


def _loss_fn(cfg):
    if cfg.task == "classification":
        return gpunn.cross_entropy_with_grad
    return getattr(gpunn, LOSSES[cfg.loss])


def evaluate(model, loss_fn, backend, task, x, y, batch_size=512):
    """(mean loss, metric) over a whole split, in batches (loss weighted by batch size)."""
    total, outs = 0.0, []
    for start in range(0, len(x), batch_size):
        xb, yb = x[start:start + batch_size], y[start:start + batch_size]
        out = model.forward(backend.asarray(xb))
        loss, _ = loss_fn(out, backend.asarray(yb))
        total += _scalar(backend, loss) * len(xb)
        outs.append(np.asarray(backend.to_host(out)))
    out = np.concatenate(outs) if outs else np.zeros((0, 1))
    return total / max(len(x), 1), _metric(task, out, y)


def train(cfg: Config, *, progress: bool = True, stream=None) -> Result:
    """Train as ``cfg`` says and return the history and final test numbers."""
    world = World(cfg.distributed, cfg.timeout)
    if cfg.zero and not cfg.distributed:
        raise ValueError("--zero needs --distributed")
    if world.size > 1:
        check_split(cfg.micro_batches or world.size, world.size)
    if cfg.distributed and cfg.device == "cuda":
        world.use_local_gpu()
    with cpu_threads(cfg.threads):
        return _train(cfg, progress and world.rank == 0, stream, world)


def _train(cfg, progress, stream, world):
    t_start = time.perf_counter()
    dtype = np.dtype(cfg.dtype)
    ds = data_mod.load(cfg.task, test_size=cfg.test_size, seed=cfg.seed, dtype=dtype, max_samples=cfg.max_samples)
    backend = make_backend(cfg.device)
    sizes = [ds.n_features, *cfg.hidden, ds.n_outputs]
    model = MLP(sizes, cfg.activation, backend, seed=cfg.seed, dtype=dtype)
    loss_fn = _loss_fn(cfg)
    stepper = Stepper(model, loss_fn, cfg, world)
    metric = "accuracy" if cfg.task == "classification" else "r2"
    rng = np.random.default_rng([cfg.seed, 1])
    hist = {k: [] for k in ("epoch", "train_loss", f"train_{metric}", "test_loss", f"test_{metric}", "seconds")}

    from tqdm.auto import tqdm

    n = len(ds.x_train)
    n_batches = -(-n // cfg.batch_size)
    t_train = time.perf_counter()
    for epoch in range(1, cfg.epochs + 1):
        t_epoch = time.perf_counter()
        order = rng.permutation(n)
        x_dev = backend.asarray(ds.x_train[order])
        y_host = ds.y_train[order]
        y_dev = backend.asarray(y_host)
        loss_sum, good, seen = 0.0, 0.0, 0
        outs = []
        bar = tqdm(range(n_batches), desc=f"epoch {epoch}/{cfg.epochs}", unit="batch", leave=True,
                   disable=not progress, file=stream or sys.stderr, dynamic_ncols=True)
        for b in range(n_batches):
            lo, hi = b * cfg.batch_size, min(n, (b + 1) * cfg.batch_size)
            losses, micro_outs = stepper.step(x_dev[lo:hi], y_dev[lo:hi])
            for micro_loss in losses:                       # in micro-batch order: the same on any rank count
                loss_sum += micro_loss
            seen += hi - lo
            out_host = np.concatenate(micro_outs)
            outs.append(out_host)
            if cfg.task == "classification":
                good += float(np.sum(np.argmax(out_host, axis=1) == y_host[lo:hi]))
            if progress:  # formatting the postfix costs as much as a small batch's math: only for a shown bar
                postfix = {"loss": f"{loss_sum / seen:.4f}"}
                if cfg.task == "classification":
                    postfix["acc"] = f"{good / seen:.3f}"
                bar.set_postfix(postfix, refresh=False)
            bar.update(1)
        train_loss = loss_sum / max(seen, 1)
        train_metric = _metric(cfg.task, np.concatenate(outs), y_host) if outs else float("nan")
        test_loss, test_metric = (evaluate(model, loss_fn, backend, cfg.task, ds.x_test, ds.y_test)
                                  if world.rank == 0 else (float("nan"), float("nan")))   # rank 0 reports
        if progress:
            bar.set_postfix({"loss": f"{train_loss:.4f}", metric[:3]: f"{train_metric:.3f}",
                             "test_loss": f"{test_loss:.4f}", f"test_{metric[:3]}": f"{test_metric:.3f}"},
                            refresh=False)
        bar.close()
        for key, value in zip(hist, (epoch, train_loss, train_metric, test_loss, test_metric,
                                     time.perf_counter() - t_epoch)):
            hist[key].append(value)
        if not np.isfinite(train_loss):
            break  # diverged (too large a learning rate): stop and report it rather than train on NaN
    t_end = time.perf_counter()
    samples = n * len(hist["epoch"])
    parallel = {"ranks": world.size, "micro_batches": stepper.micro, "zero": cfg.zero,
                "samples_per_second": samples / max(t_end - t_train, 1e-12),
                "optimizer_state_bytes_per_rank": stepper.state_bytes_per_rank(),
                "collective_seconds": world.collective_seconds}
    final_loss = hist["test_loss"][-1] if hist["test_loss"] else float("nan")
    final_metric = hist[f"test_{metric}"][-1] if hist["test_loss"] else float("nan")
    cfg_dict = asdict(cfg)
    cfg_dict["hidden"] = list(cfg.hidden)
    return Result(cfg_dict, cfg.device, backend.library, metric, hist, final_loss, final_metric,
                  t_end - t_train, t_end - t_start, parallel, np.array(backend.to_host(model.flat)))


def summary(result: Result) -> str:
    """The final one-line summary."""
    c = result.config
    what = (f"test accuracy {100 * result.test_metric:.2f}%" if result.metric == "accuracy"
            else f"test R^2 {result.test_metric:.3f}")
    data = "digits" if c["task"] == "classification" else f"diabetes ({c['loss']})"
    epochs = len(result.history.get("epoch", []))
    losses = result.history.get("train_loss", [])
    if losses and not np.isfinite(losses[-1]):
        return (f"{data}: diverged at epoch {epochs} (the training loss is {losses[-1]}); stopped. Try a smaller "
                f"--lr than {c['lr']:g} [{c['activation']}, {c['optimizer']}, seed {c['seed']}]")
    ranks = result.parallel.get("ranks", 1)
    where = f"{ranks} ranks{' (ZeRO)' if result.parallel.get('zero') else ''} on " if ranks > 1 else ""
    return (f"{data}: {what}, test loss {result.test_loss:.4f} after {epochs} epochs in "
            f"{result.train_seconds:.1f} s ({result.total_seconds:.1f} s total) on {where}{result.device} "
            f"[{result.library}; {c['activation']}, {c['optimizer']} lr={c['lr']:g}, hidden "
            f"{','.join(map(str, c['hidden'])) or 'none'}, batch {c['batch_size']}, seed {c['seed']}]")


def _nan_to_none(obj):
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_nan_to_none(v) for v in obj]
    return obj


def write_outputs(result: Result, directory: str) -> list[str]:
    """metrics.json, loss.png and accuracy.png (r2.png for regression), params.npy (the final flat parameters) in
    ``directory``; returns the paths."""
    os.makedirs(directory, exist_ok=True)
    metrics = _nan_to_none(asdict(result))
    params = metrics.pop("params")
    metrics["gpunn"] = gpunn.info()
    path_json = os.path.join(directory, "metrics.json")
    with open(path_json, "w") as f:
        json.dump(metrics, f, indent=2)
    extra = []
    if params is not None:
        extra.append(os.path.join(directory, "params.npy"))
        np.save(extra[0], params)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    h, m = result.history, result.metric
    label = "accuracy" if m == "accuracy" else "R$^2$"
    paths = [path_json]
    for name, keys, ylabel in (("loss", ("train_loss", "test_loss"), "loss"),
                               (m, (f"train_{m}", f"test_{m}"), label)):
        fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
        for key, style in zip(keys, ("-o", "-s")):
            what = key.replace("_", " ").replace("r2", "R$^2$")
            if key.startswith("train"):
                what += " (mean over the epoch's batches)"
            ax.plot(h["epoch"], h[key], style, markersize=3, label=what)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(ylabel)
        if name == "loss" and h["train_loss"] and min(h["train_loss"] + h["test_loss"]) > 0:
            ax.set_yscale("log")
        c = result.config
        ax.set_title(f"{'digits' if c['task'] == 'classification' else 'diabetes'} MLP: {c['activation']}, "
                     f"{c['optimizer']} (lr {c['lr']:g}) on {result.device}")
        ax.grid(True, alpha=0.3)
        ax.legend()
        fig.tight_layout()
        path = os.path.join(directory, f"{name}.png")
        fig.savefig(path)
        plt.close(fig)
        paths.append(path)
    return paths + extra
