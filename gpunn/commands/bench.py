"""``gpunn bench``: time gpunn's ops against PyTorch, CuPy and naive NumPy; table, JSON and plots."""

import argparse
import os

from ._options import UsageError, file_stem, output_dir, positive_int, thread_count

PROVIDERS = ("gpunn", "torch", "numpy", "cupy")


def size_list(text):
    """'2^10,4096x4096' -> ['2^10', '4096x4096'], each checked by ``bench.parse_size``."""
    from ..bench import parse_size

    sizes = [s.strip() for s in text.split(",") if s.strip()]
    if not sizes:
        raise argparse.ArgumentTypeError(f"no size given in {text!r}")
    for s in sizes:
        try:
            parse_size(s)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return sizes


def provider_list(text):
    """'torch,numpy' -> ['torch', 'numpy'], each one of :data:`PROVIDERS`."""
    wanted = [p.strip() for p in text.split(",")]
    bad = [p for p in wanted if p not in PROVIDERS]
    if bad:
        raise argparse.ArgumentTypeError(f"must be among {', '.join(PROVIDERS)}; got {', '.join(map(repr, bad))}")
    return wanted


def run(args):
    from .. import bench

    if args.scaling:
        from ..distributed.bench import run_scaling

        ranks = tuple(int(r) for r in args.ranks.split(","))
        quick = dict(sizes=(1 << 12, 1 << 16), steps=5, repeats=3, hidden=(32,)) if args.quick_scaling else {}
        run_scaling(ranks=ranks, micro=max(ranks), output=args.output, plot=not args.no_plot, **quick)
        return 0
    if args.summarize is not None:
        return _summarize(args.summarize)
    if args.host:
        from ..bench import host

        return host.run_child(quick=not args.full, only=args.ops,
                              output=args.output if args.output != "gpunn-bench" else None)
    if args.train:
        from ..bench.train import run as run_train

        output_dir(args.output)
        run_train(args.output, repeats=args.repeats or 3, threads=args.threads)
        return 0
    if args.list:
        for e in bench.all_entries():
            print(f"{e.name:<40} {e.family:<12} {e.napkin}")
        return 0
    _check_before_running(args)
    if args.threads is not None:
        _set_threads(args.threads)
    bench.run(ops=args.ops, sizes=args.sizes, full=args.full, backend=args.backend, providers=args.providers,
              dtype=args.dtype, repeats=args.repeats, output=args.output, stem=args.stem, plot=not args.no_plot,
              max_sets=args.max_sets)
    return 0


def _check_before_running(args):
    """What argparse cannot judge alone, checked before the first timing: the GPU, the --ops filter, --output."""
    from .. import _runtime, bench
    from ..bench.core import select

    if args.backend == "cuda" and _runtime.mode() != "cuda":
        raise UsageError(f"--backend cuda needs a CUDA GPU (gpunn's mode is {_runtime.mode()!r}; no timing in the "
                         "simulator); use --backend cpu")
    if args.ops and not select(bench.all_entries(), args.ops):
        raise UsageError(f"--ops {args.ops!r}: no benchmark entry matches (gpunn bench --list shows them)")
    output_dir(args.output)


def _summarize(directory):
    from .. import bench

    if not os.path.isdir(directory):
        raise UsageError(f"--summarize {directory}: not a directory")
    try:
        text = bench.summarize(directory)
    except (OSError, ValueError) as exc:
        raise UsageError(f"--summarize {directory}: {exc}") from None
    if not text.strip():
        raise UsageError(f"--summarize {directory}: holds no benchmark JSON file")
    print(text, end="")
    return 0


def _set_threads(n):
    """The same CPU thread count for gpunn's parallel loops (Numba) and PyTorch; NumPy's ufuncs are single-threaded."""
    import numba

    numba.set_num_threads(n)
    try:
        import torch

        torch.set_num_threads(n)
    except ImportError:
        pass


def register(subparsers):
    p = subparsers.add_parser(
        "bench", help="benchmark gpunn against PyTorch, CuPy and NumPy (GB/s, fraction of a copy)",
        description="Benchmark gpunn's ops. Default: a quick few sizes; --full sweeps 2^10..2^26.")
    p.add_argument("--full", action="store_true", help="sweep sizes 2^10 .. 2^26 (every other power of two)")
    p.add_argument("--ops", default=None, help="comma-separated filter: names, families or globs (relu,losses,adam*)")
    p.add_argument("--sizes", type=size_list, default=None,
                   help="comma-separated sizes: 2^24, 16777216, 1e8, 4096x4096 (rows x cols)")
    p.add_argument("--output", metavar="DIR", default="gpunn-bench",
                   help="directory for the JSON, Markdown and PNG files")
    p.add_argument("--stem", type=file_stem, default="bench", help="file name stem inside --output (default: bench)")
    p.add_argument("--backend", choices=["cpu", "cuda"], default=None, help="default: cuda on a GPU, else cpu")
    p.add_argument("--providers", type=provider_list, default=None,
                   help="subset of gpunn,torch,numpy,cupy (default: all available)")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--repeats", type=positive_int, default=None,
                   help="timed samples per case (default 21 on a GPU, 9 on a CPU)")
    p.add_argument("--threads", type=thread_count, default=None,
                   help="CPU threads for gpunn (Numba) and PyTorch alike (default: their own defaults; --train: 1, "
                        "gpunn train's default)")
    p.add_argument("--max-sets", type=positive_int, default=None,
                   help="cap the rotating input sets (quick smoke runs only: small sizes then sit in the cache)")
    p.add_argument("--no-plot", action="store_true", help="skip the PNG plots")
    p.add_argument("--summarize", metavar="DIR", default=None,
                   help="print the headline figures of every benchmark JSON in DIR, then exit")
    p.add_argument("--list", action="store_true", help="list the entries and their napkin math, then exit")
    p.add_argument("--host", action="store_true",
                   help="host time per call and launches/allocations/copies/syncs per call, with the CUDA driver "
                        "stubbed (no GPU needed); --ops: a substring of the op names; --full: the issue's sizes")
    p.add_argument("--scaling", action="store_true",
                   help="gpunn.distributed on the CPU: training steps/s and all-reduce time at --ranks ranks "
                        "(mpiexec; needs the dist extra); writes scaling.json, .md and .png to --output")
    p.add_argument("--ranks", default="1,2,4", help="rank counts for --scaling (default 1,2,4)")
    p.add_argument("--quick-scaling", action="store_true", help="--scaling with tiny sizes (a smoke test)")
    p.add_argument("--train", action="store_true",
                   help="the main job: gpunn train (20 epochs, warm cache) beside the same MLP loop in PyTorch, "
                        "fresh processes, --repeats runs each (default 3); writes train.json and train.md to --output")
    p.set_defaults(func=run)
