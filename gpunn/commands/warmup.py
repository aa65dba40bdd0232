"""``gpunn warmup``: compile ahead of time, into the disk cache, what gpunn's ops compile on first use.

Runs every op family on small arrays of each dtype through its serial and parallel CPU loops (and, on a GPU, its CUDA
kernels), so that later processes load them from the cache instead of compiling (gpunn/_warmup.py lists what is
covered). Steps run in --jobs processes that share the cache. ``GPUNN_CACHE_DIR`` moves the cache, ``GPUNN_CACHE=0``
turns it off (then there is nothing to warm).
"""

import argparse
import os
import sys
import time

from ._options import UsageError, positive_int


def task_names(text):
    """'optimizers,prelu' -> ['optimizers', 'prelu'], each a task of gpunn/_warmup.py."""
    from .._warmup import TASKS

    names = [n.strip() for n in text.split(",") if n.strip()]
    known = [t.name for t in TASKS]
    bad = [n for n in names if n not in known]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"must be among {', '.join(known)}; got {text!r}")
    return names


def run(args):
    from .. import _cache, _runtime, _warmup

    if args.clear:
        print(f"removed {_cache.clear()}")
    if not _cache.enabled():
        raise UsageError("GPUNN_CACHE is off: nothing would be kept (unset it, or set GPUNN_CACHE=1)")
    device = _runtime.mode() == "cuda" and not args.no_device
    steps = _warmup.steps(device, tuple(args.dtype), args.only)
    t0 = time.perf_counter()
    totals = {"loaded": 0, "compiled": 0, "saved": 0}
    uncacheable = {}
    for result in _progress(_results(steps, args.jobs), len(steps)):
        for key in totals:
            totals[key] += result[key]
        uncacheable.update(result["uncacheable"])
    print(f"gpunn warmup: {len(steps)} steps in {time.perf_counter() - t0:.1f} s: {totals['compiled']} functions "
          f"compiled ({totals['saved']} saved), {totals['loaded']} loaded from {_cache.directory()} "
          f"({_cache.size_bytes() / 2**20:.1f} MiB)")
    for name, why in sorted(uncacheable.items()):
        print(f"  compiled without the cache (each process compiles it again): {name}: {why}")
    return 0


def _results(steps, jobs):
    """The result of each step, as they finish: in this process (1 job) or in ``jobs`` worker processes."""
    from .. import _warmup

    if jobs == 1:
        for step in steps:
            yield _warmup.run_step(*step)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        for future in as_completed([pool.submit(_warmup.run_step, *step) for step in steps]):
            yield future.result()


def _progress(results, total):
    try:
        from tqdm.auto import tqdm
    except ImportError:  # the app extra is not installed: no bar
        return results
    return tqdm(results, total=total, desc="gpunn warmup", unit="step", file=sys.stderr, dynamic_ncols=True)


def register(subparsers):
    p = subparsers.add_parser(
        "warmup", help="compile every op's CPU loops (and CUDA kernels on a GPU) into the disk cache, ahead of time",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None)
    p.add_argument("--jobs", "-j", type=positive_int, default=os.cpu_count() or 1, metavar="N",
                   help="compile in N processes (default: the number of CPUs)")
    p.add_argument("--dtype", nargs="+", choices=["float32", "float64"], default=["float32", "float64"],
                   help="dtypes to compile for (default: both)")
    p.add_argument("--only", type=task_names, default=None, metavar="TASKS",
                   help="comma-separated tasks: activations, prelu, softmax, pointwise_losses, row_losses, optimizers")
    p.add_argument("--no-device", action="store_true", help="CPU loops only, even on a GPU")
    p.add_argument("--clear", action="store_true", help="delete the whole cache first")
    p.set_defaults(func=run)
