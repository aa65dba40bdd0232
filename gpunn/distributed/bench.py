"""``gpunn bench --scaling``: training steps per second and all-reduce time at 1, 2 and 4 ranks (CPU, MPI).

For each rank count the driver launches ``mpiexec -n N python -m gpunn.distributed.bench worker ...``; the worker
measures, with every rank in step (a barrier before each sample):

* all-reduce: ``allreduce_mean`` of a float32 buffer of each size; a sample is the slowest rank's time; median and
  spread over the samples;
* training: the ``gpunn train`` step (:class:`gpunn.app.parallel.Stepper`: MLP on digits, global batch B, M fixed
  micro-batches, so every rank count does the same arithmetic and gives the same parameters), with all-reduce and
  with ZeRO-1; steps per second over the timed steps, and the time a step spends waiting in collectives.

The driver writes ``scaling.json`` (with the machine and versions), ``scaling.md`` and ``scaling.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


# ---- worker (one rank) -----------------------------------------------------------------------------------------------
def _allreduce_times(ch, sizes, repeats):
    from . import allreduce_mean

    out = {}
    for n in sizes:
        buf = np.random.default_rng(ch.rank).standard_normal(n).astype(np.float32)
        samples = []
        for i in range(repeats + 2):
            ch.comm.Barrier()
            t = time.perf_counter()
            allreduce_mean(buf, ch.comm)
            dt = ch.comm.allreduce(time.perf_counter() - t, op=ch.MPI.MAX)   # the slowest rank's time
            if i >= 2:                                                      # 2 warm-up calls
                samples.append(dt)
        out[str(n)] = _stats(samples)
    return out


def _train_rate(ch, zero, steps, batch, micro, hidden):
    from ..app import cpu_threads
    from ..app import data as data_mod
    from ..app.linear import backend as make_backend
    from ..app.mlp import MLP
    from ..app.parallel import Stepper, World
    from ..app.train import Config, _loss_fn

    cfg = Config(hidden=hidden, micro_batches=micro, distributed=True, zero=zero, batch_size=batch, lr=1e-3)
    ds = data_mod.load(cfg.task, seed=0, dtype=np.float32)
    world = World(True, 300.0)
    backend = make_backend("cpu")
    model = MLP([ds.n_features, *hidden, ds.n_outputs], cfg.activation, backend, seed=0)
    with cpu_threads(1):
        stepper = Stepper(model, _loss_fn(cfg), cfg, world)
        x, y = ds.x_train, ds.y_train
        n = len(x)

        def one(i):
            lo = (i * batch) % (n - batch)
            stepper.step(x[lo:lo + batch], y[lo:lo + batch])

        for i in range(3):
            one(i)                                   # warm-up: compiles
        ch.comm.Barrier()
        waited = world.collective_seconds
        t = time.perf_counter()
        for i in range(steps):
            one(i)
        elapsed = ch.comm.allreduce(time.perf_counter() - t, op=ch.MPI.MAX)
        waited = world.collective_seconds - waited
    return {"steps_per_second": steps / elapsed, "samples_per_second": steps * batch / elapsed,
            "collective_ms_per_step": 1e3 * waited / steps, "params": int(model.flat.size),
            "optimizer_state_bytes_per_rank": stepper.state_bytes_per_rank()}


def _stats(samples):
    q = np.quantile(samples, [0.25, 0.75])
    return {"median_ms": 1e3 * statistics.median(samples), "q25_ms": 1e3 * q[0], "q75_ms": 1e3 * q[1],
            "min_ms": 1e3 * min(samples), "max_ms": 1e3 * max(samples), "samples": len(samples)}


def worker(args):
    from ._channel import channel

    ch = channel()
    result = {"ranks": ch.size, "allreduce": _allreduce_times(ch, args.sizes, args.repeats), "train": {}}
    for zero in (False, True):
        result["train"]["zero" if zero else "allreduce"] = _train_rate(ch, zero, args.steps, args.batch,
                                                                       args.micro, tuple(args.hidden))
    if ch.rank == 0:
        with open(args.json, "w") as f:
            json.dump(result, f)


# ---- driver ----------------------------------------------------------------------------------------------------------
def _mpiexec():
    here = Path(sys.executable).parent / "mpiexec"
    return str(here) if here.exists() else "mpiexec"


def _launch(ranks, worker_args, timeout):
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "r.json")
        cmd = [_mpiexec(), "-n", str(ranks), sys.executable, "-m", "gpunn.distributed.bench", "worker",
               "--json", path, *worker_args]
        root = str(Path(__file__).resolve().parents[2])          # this gpunn, also from a source tree
        env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                                start_new_session=True)
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise RuntimeError(f"{' '.join(cmd)} did not finish in {timeout} s") from None
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{out[-2000:]}")
        with open(path) as f:
            return json.load(f)


def run_scaling(ranks=(1, 2, 4), sizes=(1 << 16, 1 << 20, 1 << 22), steps=40, batch=256, micro=4,
                hidden=(256, 256), repeats=9, output="gpunn-bench", timeout=600, plot=True):
    """Run the worker at each rank count; write scaling.json/.md/.png into ``output``; return the results."""
    if any(micro % r for r in ranks):
        raise ValueError(f"micro-batches {micro} must be a multiple of every rank count {list(ranks)}")
    worker_args = ["--sizes", *map(str, sizes), "--steps", str(steps), "--batch", str(batch), "--micro", str(micro),
                   "--hidden", *map(str, hidden), "--repeats", str(repeats)]
    runs = []
    for r in ranks:
        print(f"scaling: {r} rank{'s' if r > 1 else ''} ...", flush=True)
        runs.append(_launch(r, worker_args, timeout))
    import mpi4py
    from mpi4py import MPI

    report = {"what": "gpunn.distributed scaling on the CPU (MPI through mpi4py)",
              "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                          "python": platform.python_version()},
              "versions": {"mpi4py": mpi4py.__version__, "mpi": MPI.Get_library_version().splitlines()[0].strip()},
              "settings": {"batch": batch, "micro_batches": micro, "hidden": list(hidden), "steps": steps,
                           "repeats": repeats, "sizes": list(sizes)},
              "date": time.strftime("%Y-%m-%d %H:%M"), "runs": runs}
    os.makedirs(output, exist_ok=True)
    with open(os.path.join(output, "scaling.json"), "w") as f:
        json.dump(report, f, indent=2)
    with open(os.path.join(output, "scaling.md"), "w") as f:
        f.write(table(report))
    if plot:
        _plot(report, os.path.join(output, "scaling.png"))
    print(table(report), end="")
    return report


def table(report):
    """The results as two Markdown tables."""
    s = report["settings"]
    lines = [f"Training step (MLP {s['hidden']} on digits, global batch {s['batch']}, {s['micro_batches']} "
             f"micro-batches; {s['steps']} timed steps):", "",
             "| ranks | mode | steps/s | samples/s | collectives ms/step | optimizer state bytes/rank |",
             "|---|---|---|---|---|---|"]
    for run in report["runs"]:
        for mode, t in run["train"].items():
            lines.append(f"| {run['ranks']} | {mode} | {t['steps_per_second']:.1f} | {t['samples_per_second']:.0f} | "
                         f"{t['collective_ms_per_step']:.2f} | {max(t['optimizer_state_bytes_per_rank'])} |")
    lines += ["", f"allreduce_mean of float32 buffers (median ms, slowest rank; q25-q75; {s['repeats']} samples):",
              "", "| ranks | " + " | ".join(f"{n:,} elements" for n in s["sizes"]) + " |",
              "|---|" + "---|" * len(s["sizes"])]
    for run in report["runs"]:
        cells = [f"{a['median_ms']:.3f} ({a['q25_ms']:.3f}-{a['q75_ms']:.3f})"
                 for a in (run["allreduce"][str(n)] for n in s["sizes"])]
        lines.append(f"| {run['ranks']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _plot(report, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = report["runs"]
    ranks = [r["ranks"] for r in runs]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4), dpi=120)
    for mode, style in (("allreduce", "-o"), ("zero", "-s")):
        a.plot(ranks, [r["train"][mode]["steps_per_second"] for r in runs], style, label=mode)
    a.set_xlabel("ranks")
    a.set_ylabel("training steps / s")
    a.set_xticks(ranks)
    a.set_title(f"step rate, global batch {report['settings']['batch']}")
    a.grid(True, alpha=0.3)
    a.legend()
    for n in report["settings"]["sizes"]:
        b.plot(ranks, [r["allreduce"][str(n)]["median_ms"] for r in runs], "-o", label=f"{n:,} float32")
    b.set_xlabel("ranks")
    b.set_ylabel("allreduce_mean, ms (median)")
    b.set_yscale("log")
    b.set_xticks(ranks)
    b.set_title("all-reduce time")
    b.grid(True, alpha=0.3)
    b.legend()
    fig.suptitle(f"gpunn.distributed on {report['machine']['cpus']} CPU cores ({report['versions']['mpi']})",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m gpunn.distributed.bench")
    sub = p.add_subparsers(dest="what", required=True)
    w = sub.add_parser("worker")
    w.add_argument("--json", required=True)
    w.add_argument("--sizes", type=int, nargs="+", required=True)
    w.add_argument("--steps", type=int, required=True)
    w.add_argument("--batch", type=int, required=True)
    w.add_argument("--micro", type=int, required=True)
    w.add_argument("--hidden", type=int, nargs="+", required=True)
    w.add_argument("--repeats", type=int, required=True)
    args = p.parse_args(argv)
    worker(args)


if __name__ == "__main__":
    main()
