"""``gpunn train``: train an MLP on scikit-learn's digits (or diabetes, ``--task regression``) with gpunn's
activations, losses and optimizers, on the CPU, a CUDA GPU or the CUDA simulator."""

import argparse
import os
import subprocess
import sys

from ..app import linear as _linear  # noqa: F401  (registers the app's kernels for `gpunn kernels`)
from ..app.mlp import ACTIVATIONS, LOSSES, OPTIMIZERS
from ._options import (at_least, output_dir, positive_float, positive_int, require_app_extra, seed,
                       thread_count)

DEFAULT_LR = {"sgd": 0.1, "momentum": 0.02, "nag": 0.02, "rmsprop": 1e-3, "adam": 1e-3, "adamw": 1e-3}


def hidden_sizes(text):
    """'128' or '128,64' (or '' for no hidden layer)."""
    if text.strip() == "":
        return ()
    try:
        sizes = tuple(int(s) for s in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be comma-separated layer widths like 128,64, got {text!r}") from None
    if any(s <= 0 for s in sizes):
        raise argparse.ArgumentTypeError(f"layer widths must be > 0, got {text!r}")
    return sizes


def default_device():
    from .._runtime import gpu_available

    return "cuda" if gpu_available() else "cpu"


# (dest, flag) of every option, to hand the same command line to the simulator subprocess
_OPTIONS = [("task", "--task"), ("activation", "--activation"), ("optimizer", "--optimizer"), ("lr", "--lr"),
            ("epochs", "--epochs"), ("batch_size", "--batch-size"), ("hidden", "--hidden"), ("loss", "--loss"),
            ("seed", "--seed"), ("dtype", "--dtype"), ("max_samples", "--max-samples"), ("threads", "--threads"),
            ("output", "--output"), ("micro_batches", "--micro-batches")]


def _argv_for(args):
    argv = ["train", "--device", "sim"]
    for dest, flag in _OPTIONS:
        value = getattr(args, dest)
        if value is None:
            continue
        argv += [flag, ",".join(map(str, value)) if dest == "hidden" else repr(value) if dest == "lr" else str(value)]
    if args.quiet:
        argv.append("--quiet")
    return argv


def _error(message):
    print(f"gpunn train: error: {message}", file=sys.stderr)
    return 2


def run(args):
    from .._runtime import gpu_available, simulator

    require_app_extra(["sklearn", "tqdm"] + (["matplotlib"] if args.output is not None else []))
    if args.output is not None:
        output_dir(args.output)  # before training, not after it
    device = args.device or default_device()
    if args.distributed and device == "sim" and not simulator():
        return _error("--distributed --device sim needs the simulator on in every rank: "
                      "mpiexec -genv NUMBA_ENABLE_CUDASIM 1 -n N gpunn train --distributed --device sim ...")
    if device == "sim" and not simulator():
        # The simulator must be on before numba.cuda is first imported, which importing gpunn already did:
        # run the same command in a fresh interpreter with NUMBA_ENABLE_CUDASIM=1.
        env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
        return subprocess.call([sys.executable, "-m", "gpunn", *_argv_for(args)], env=env)
    if device == "cuda" and not gpu_available():
        return _error("--device cuda needs a CUDA GPU and none is available "
                      f"({'the CUDA simulator is on' if simulator() else 'no driver or device found'}); "
                      "use --device cpu, or --device sim for the CUDA simulator")
    from ..app.train import Config, summary, train, write_outputs

    if args.task == "classification" and args.loss is not None:
        return _error("--loss applies to --task regression only (classification uses cross-entropy)")
    cfg = Config(task=args.task, activation=args.activation, optimizer=args.optimizer,
                 lr=args.lr if args.lr is not None else DEFAULT_LR[args.optimizer], epochs=args.epochs,
                 batch_size=args.batch_size, hidden=tuple(args.hidden), loss=args.loss or "mse", device=device,
                 seed=args.seed, dtype=args.dtype, max_samples=args.max_samples, threads=args.threads,
                 micro_batches=args.micro_batches, distributed=args.distributed, zero=args.zero,
                 timeout=args.timeout)
    if args.zero and not args.distributed:
        return _error("--zero needs --distributed (the optimizer state is sharded across the MPI ranks)")
    if args.distributed:
        from .train_distributed import run_distributed

        return run_distributed(cfg, args, train, summary, write_outputs, _error)
    result = train(cfg, progress=not args.quiet)
    print(summary(result))
    if args.output is not None:
        for path in write_outputs(result, args.output):
            print(f"wrote {path}")
    return 0


def register(subparsers):
    p = subparsers.add_parser(
        "train", help="train an MLP on scikit-learn's digits (or diabetes) with gpunn's kernels",
        description="Train a multilayer perceptron on scikit-learn's digits (8x8 images, 10 classes; or the diabetes "
                    "regression data with --task regression). Linear layers use the device's array library; "
                    "activations, loss and optimizer are gpunn's.")
    p.add_argument("--task", choices=["classification", "regression"], default="classification",
                   help="classification: digits, cross-entropy (default); regression: diabetes, --loss")
    p.add_argument("--activation", choices=ACTIVATIONS, default="relu", help="hidden-layer activation (default relu)")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default="adam", help="gpunn.optim optimizer (default adam)")
    p.add_argument("--lr", type=positive_float, default=None,
                   help="learning rate > 0 (default: " + ", ".join(f"{k} {v:g}" for k, v in DEFAULT_LR.items()) + ")")
    p.add_argument("--epochs", type=positive_int, default=20, help="passes over the training split (default 20)")
    p.add_argument("--batch-size", type=positive_int, default=32, help="mini-batch size (default 32)")
    p.add_argument("--hidden", type=hidden_sizes, default=(128,),
                   help="hidden layer widths, comma-separated (default 128)")
    p.add_argument("--loss", choices=list(LOSSES), default=None, help="regression loss (default mse)")
    p.add_argument("--device", choices=["cpu", "cuda", "sim"], default=None,
                   help="cpu (NumPy), cuda (a GPU: CuPy if installed, else Numba arrays) or sim (CUDA kernels in "
                        "Numba's simulator; slow, use tiny settings). Default: cuda when a GPU is present, else cpu")
    p.add_argument("--seed", type=seed, default=0,
                   help="seed of the split, initial weights and batch order, in [0, 2^32) (default 0)")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32", help="parameter and data dtype")
    p.add_argument("--max-samples", type=at_least(2, "one sample to train on and one to test"), default=None,
                   help="use a random subset of this many samples, at least 2 (quick runs, the simulator)")
    p.add_argument("--threads", type=thread_count, default=1,
                   help="threads for gpunn's CPU loops (default 1: on batch-sized arrays a thread pool costs more "
                        "than it saves)")
    p.add_argument("--output", metavar="DIR", default=None,
                   help="write metrics.json and loss/accuracy curves (PNG) to DIR")
    p.add_argument("--quiet", action="store_true", help="no progress bars (the summary line is still printed)")
    p.add_argument("--distributed", action="store_true",
                   help="data-parallel over MPI: run as mpiexec -n N gpunn train --distributed; each batch is split "
                        "across the ranks, rank 0 prints and writes the outputs (needs the dist extra)")
    p.add_argument("--zero", action="store_true",
                   help="with --distributed: ZeRO-1, each rank keeps the optimizer state of 1/N of the parameters")
    p.add_argument("--micro-batches", type=positive_int, default=None,
                   help="fixed micro-batches per batch, summed in a fixed order (default: the number of ranks). "
                        "Runs with the same value give the same parameters on any number of ranks; it must be the "
                        "ranks times a power of two")
    p.add_argument("--timeout", type=positive_float, default=300.0,
                   help="with --distributed: seconds a rank waits for the others before it stops with an error "
                        "naming the missing rank (default 300)")
    p.set_defaults(func=run)
