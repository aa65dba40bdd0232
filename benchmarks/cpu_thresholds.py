"""Where each family's parallel CPU build starts to beat its serial build: the data behind gpunn._cpu.PARALLEL_MIN.

For each family's representative ops and each size (2^8 .. 2^22 elements), time gpunn's whole call with every loop
forced to its serial build and to its parallel build (gpunn._cpu.forced), samples interleaved, at Numba's default
thread count. The family's threshold is the smallest size from which the parallel build is faster for every
representative op at that size and every larger one; below it the serial build wins or ties.

Inputs stay hot in the cache (as a training loop's activations are at these sizes): the question is what waking the
thread pool costs against the work it splits, not memory bandwidth. On a shared machine a busy core makes the
parallel build slower (its threads wait for each other), so the load average is recorded with the results.

    PYTHONPATH=. python benchmarks/cpu_thresholds.py [--quick] [--output benchmarks/results]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time

import numba
import numpy as np

import gpunn
from gpunn import _cpu

SIZES = [1 << k for k in range(8, 23)]
QUICK_SIZES = [1 << k for k in range(8, 23, 2)]


def _rows(n, cols):
    return max(1, n // cols), cols


def _cases(rng):
    """family -> [(op name, setup(n) -> call)]; ``n`` is the work (elements) the call passes to _cpu.run."""
    def vec(n):
        return rng.standard_normal(n).astype(np.float32)

    def adam(n):
        p, g = [vec(n)], [vec(n)]
        opt = gpunn.optim.Adam(p, lr=1e-3)
        return lambda: opt.step(g)

    def sgd(n):
        p, g = [vec(n)], [vec(n)]
        opt = gpunn.optim.SGD(p, lr=1e-3, momentum=0.9)
        return lambda: opt.step(g)

    def softmax(n):
        x = rng.standard_normal(_rows(n, 128)).astype(np.float32)
        return lambda: gpunn.softmax(x)

    def cross_entropy(n):
        x = rng.standard_normal(_rows(n, 10)).astype(np.float32)
        t = rng.integers(0, 10, x.shape[0])
        return lambda: gpunn.cross_entropy_with_grad(x, t)

    def multi_margin(n):
        x = rng.standard_normal(_rows(n, 10)).astype(np.float32)
        t = rng.integers(0, 10, x.shape[0])
        return lambda: gpunn.multi_margin_loss_with_grad(x, t)

    def unary(fn):
        return lambda n: (lambda x: lambda: fn(x))(vec(n))

    def binary(fn):
        return lambda n: (lambda a, b: lambda: fn(a, b))(vec(n), vec(n))

    return {
        "elementwise": [("relu", unary(gpunn.relu)), ("relu_backward", binary(gpunn.relu_backward)),
                        ("gelu", unary(gpunn.gelu)), ("silu_backward", binary(gpunn.silu_backward))],
        "pointwise_loss": [("mse_loss_with_grad", binary(gpunn.mse_loss_with_grad)),
                           ("bce_with_logits_with_grad", binary(gpunn.binary_cross_entropy_with_logits_with_grad))],
        "rows": [("softmax (rows of 128)", softmax), ("cross_entropy_with_grad (rows of 10)", cross_entropy),
                 ("multi_margin_loss_with_grad (rows of 10)", multi_margin)],
        "optim": [("Adam.step", adam), ("SGD(momentum).step", sgd)],
    }


def _sample(call, target_s=0.005):
    """Seconds per call: one sample of enough calls to last ``target_s``."""
    t0 = time.perf_counter()
    call()
    once = max(time.perf_counter() - t0, 1e-7)
    reps = max(1, int(target_s / once))
    t0 = time.perf_counter()
    for _ in range(reps):
        call()
    return (time.perf_counter() - t0) / reps


def _time_builds(call, samples):
    """(serial, parallel) median seconds per call, the two builds' samples interleaved."""
    times = {"serial": [], "parallel": []}
    for build in times:  # warm-up: compile (or load) both builds
        with _cpu.forced(build):
            call()
    for _ in range(samples):
        for build in times:
            with _cpu.forced(build):
                times[build].append(_sample(call))
    return statistics.median(times["serial"]), statistics.median(times["parallel"])


def threshold(rows):
    """The smallest size from which the parallel build wins at that size and every larger one (None: never)."""
    sizes = sorted({r["n"] for r in rows})
    wins = {n: all(r["parallel_us"] < r["serial_us"] for r in rows if r["n"] == n) for n in sizes}
    found = None
    for n in reversed(sizes):
        if not wins[n]:
            break
        found = n
    return found


def measure(sizes, samples):
    rng = np.random.default_rng(0)
    results = {}
    for family, ops in _cases(rng).items():
        rows = []
        for name, setup in ops:
            for n in sizes:
                serial, parallel = _time_builds(setup(n), samples)
                rows.append({"op": name, "n": n, "serial_us": serial * 1e6, "parallel_us": parallel * 1e6})
                print(f"{family:<15} {name:<42} {n:>9} serial {serial * 1e6:10.1f} us  parallel "
                      f"{parallel * 1e6:10.1f} us  {parallel / serial:5.2f}x", file=sys.stderr, flush=True)
        results[family] = {"rows": rows, "threshold": threshold(rows)}
    return results


def markdown(report) -> str:
    lines = [f"# CPU parallel thresholds, {report['date']}", "",
             f"{report['machine']}; Numba {report['numba']} ({report['threading_layer']} layer, "
             f"{report['threads']} threads); load average {report['load_start']} at the start, "
             f"{report['load_end']} at the end.", "",
             "Time per call of gpunn's whole call, the serial build against the parallel build (median of "
             f"{report['samples']} interleaved samples). Threshold: the smallest size from which the parallel build is "
             "faster for every op of the family, at that size and every larger one.", ""]
    for family, data in report["families"].items():
        lines += [f"## {family}: threshold {data['threshold']}", "", "| op | elements | serial µs | parallel µs | "
                  "parallel / serial |", "|---|---|---|---|---|"]
        for r in data["rows"]:
            lines.append(f"| {r['op']} | {r['n']} | {r['serial_us']:.1f} | {r['parallel_us']:.1f} | "
                         f"{r['parallel_us'] / r['serial_us']:.2f} |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="every other size, 3 samples")
    parser.add_argument("--samples", type=int, default=7)
    parser.add_argument("--output", default="benchmarks/results")
    args = parser.parse_args(argv)
    load_start = os.getloadavg()
    samples = 3 if args.quick else args.samples
    families = measure(QUICK_SIZES if args.quick else SIZES, samples)
    report = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
              "machine": f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}",
              "numba": numba.__version__, "threading_layer": numba.threading_layer(),
              "threads": numba.get_num_threads(), "samples": samples,
              "load_start": [round(v, 2) for v in load_start], "load_end": [round(v, 2) for v in os.getloadavg()],
              "families": families}
    os.makedirs(args.output, exist_ok=True)
    stem = os.path.join(args.output, f"cpu-thresholds-{report['date'].replace('-', '')}")
    with open(stem + ".json", "w") as f:
        json.dump(report, f, indent=2)
    with open(stem + ".md", "w") as f:
        f.write(markdown(report))
    print(json.dumps({family: data["threshold"] for family, data in families.items()}))
    print(f"wrote {stem}.json and .md")


if __name__ == "__main__":
    main()
