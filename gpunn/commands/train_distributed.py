"""``gpunn train --distributed``: one rank of an MPI job; rank 0 prints and writes, an error ends the whole job."""

import sys


def run_distributed(cfg, args, train, summary, write_outputs, error):
    """Train as one rank; on any error report it (naming the rank), tell the other ranks, and abort the job so that
    no rank is left waiting (a stuck rank included)."""
    try:
        from .. import distributed as dist

        rank, size = dist.rank_and_size()
    except ImportError as exc:
        return error(str(exc))
    try:
        with dist.guard():
            result = train(cfg, progress=not args.quiet)
    except ValueError as exc:                  # the same bad option on every rank: a clean exit everywhere
        if rank == 0:
            error(str(exc))
        return 2
    except Exception as exc:  # noqa: BLE001  anything else: report, then end every rank of the job
        print(f"gpunn train: error on rank {rank} of {size}: {type(exc).__name__}: {exc}", file=sys.stderr,
              flush=True)
        from mpi4py import MPI

        MPI.COMM_WORLD.Abort(1)
        return 1
    if rank == 0:
        print(summary(result))
        if args.output:
            for path in write_outputs(result, args.output):
                print(f"wrote {path}")
    return 0
