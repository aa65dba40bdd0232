r"""Data-parallel training over MPI: all-reduce of the flat gradient, broadcast, and a ZeRO-1 sharded optimizer.

Run with ``mpiexec -n N python train.py``; each rank computes gradients on its share of the batch, and::

    from gpunn import distributed as dist
    dist.broadcast(flat_params)                 # once: every rank starts from rank 0's parameters
    ...
    dist.allreduce_mean(flat_grad)              # each step: the mean gradient on every rank
    opt.step([flat_grad])
    # or, ZeRO-1: optimizer state for 1/N of the parameters per rank
    opt = dist.ShardedOptimizer(gpunn.optim.Adam, flat_params, comm, lr=1e-3)
    opt.step(flat_grad)

Design: the same bits for any number of ranks
---------------------------------------------
MPI (mpi4py; the ``dist`` extra installs the MPICH wheel) only moves bytes: all-to-all, all-gather, broadcast. The
additions are gpunn's, in one fixed order, so the result cannot depend on how MPI reduces:

* a batch is cut into M fixed micro-batches (:func:`tree.micro_ranges`); each gives a gradient leaf;
* leaves are summed in the fixed pairwise tree of :mod:`gpunn.distributed.tree`. With :math:`M / N` a power of two,
  rank r's :math:`M / N` consecutive leaves form one subtree: the rank sums them (:class:`TreeSum`), and the
  reduce-scatter sums the N subtree sums in the top of the same tree (:func:`tree.sum_rows`, rank order);
* hence N ranks and one process add the same numbers in the same order: the same gradient bits, then the same step
  (elementwise), in float32 as in float64. Scaling by :math:`1/B` is done on each micro-batch's loss gradient, the
  same on both sides; the mean over ranks divides by N (exact when N is a power of two).

Failures: every wait has a deadline (``timeout``, 300 s by default); a rank that raises inside :func:`guard` tells
the others, which raise :class:`RankFailedError` naming it; a rank that is killed or stuck is named by a
:class:`CollectiveTimeoutError` (see :mod:`gpunn.distributed._channel`). Mismatched parameter counts are found at
start-up by :func:`broadcast` and :class:`ShardedOptimizer`.

Device arrays (CuPy, PyTorch CUDA, Numba) are staged through host memory by their library's copies on its current
stream (:mod:`gpunn.distributed._buffers`). NCCL and CUDA-aware MPI are not used yet (no GPU to test them on).
"""

import contextlib

from ._channel import (DEFAULT_TIMEOUT, CollectiveTimeoutError, DistributedError, RankFailedError, channel,
                       check_timeout)
from .collectives import allreduce_mean, allreduce_sum, broadcast
from .sharded import ShardedOptimizer, state_bytes
from .tree import TreeSum


@contextlib.contextmanager
def guard(comm=None):
    """Inside the block, an exception on this rank is first reported to every other rank, then raised.

    The other ranks, waiting in a collective, raise :class:`RankFailedError` naming this rank at once instead of
    waiting for their timeout. Errors that came from another rank are not reported again.

    Example (one process: nothing to tell):
        >>> from gpunn import distributed as dist
        >>> with dist.guard():
        ...     pass
    """
    ch = channel(comm)
    try:
        yield ch
    except RankFailedError:
        raise
    except BaseException as exc:
        if ch.size > 1 and not isinstance(exc, CollectiveTimeoutError):   # a timeout has told the others already
            ch.notify_failure(f"{type(exc).__name__}: {exc}")
        raise


def rank_and_size(comm=None):
    """``(rank, number of ranks)`` of ``comm`` (default ``MPI.COMM_WORLD``)."""
    ch = channel(comm)
    return ch.rank, ch.size


__all__ = ["allreduce_mean", "allreduce_sum", "broadcast", "ShardedOptimizer", "state_bytes", "TreeSum", "guard",
           "rank_and_size", "DistributedError", "RankFailedError", "CollectiveTimeoutError", "DEFAULT_TIMEOUT",
           "check_timeout"]
