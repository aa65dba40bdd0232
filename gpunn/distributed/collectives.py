r"""All-reduce, reduce-scatter, all-gather and broadcast of one flat buffer, in a fixed summation order.

MPI moves the data; gpunn adds it. MPI's own float reductions (``MPI_SUM``) may add in an order that depends on the
number of ranks and the algorithm MPI picks, so none is used. A reduce-scatter is an all-to-all (rank r receives
slice r of every rank's buffer) followed by :func:`gpunn.distributed.tree.sum_rows` over the N slices in rank order;
an all-reduce is that reduce-scatter followed by an all-gather. This moves what a ring all-reduce moves,
:math:`2 (N - 1) / N` of the buffer per rank, and every rank gets the same bits.
"""

from __future__ import annotations

import numpy as np

from ._buffers import Flat
from ._channel import channel, check_timeout
from .tree import sum_rows


def even_bounds(total, ranks):
    """Slice boundaries ``[0, b_1, ..., total]``: rank r owns ``[total r / N, total (r + 1) / N)``."""
    return [total * r // ranks for r in range(ranks + 1)]


def check_agree(ch, what, name, description, timeout):
    """Raise ValueError on every rank unless every rank gives the same ``description`` (e.g. size and dtype)."""
    seen = ch.allgather_obj(description, f"{what} start-up check", timeout)
    odd = [r for r, d in enumerate(seen) if d != seen[0]]
    if odd:
        lines = "; ".join(f"rank {r}: {seen[r]}" for r in [0, *odd])
        raise ValueError(f"{what}: {name} do not match across ranks ({lines}); every rank must pass the same "
                         f"number of elements, dtype and side (host or device)")


def reduce_scatter_host(ch, send, bounds, what, timeout):
    """Rank r's slice ``[bounds[r], bounds[r+1])`` of the tree-ordered sum of every rank's host array ``send``."""
    counts = np.diff(np.asarray(bounds, np.int64))
    mine = int(counts[ch.rank])
    rows = np.empty((ch.size, mine), send.dtype)
    recv_counts = np.full(ch.size, mine, np.int64)
    recv_displs = np.arange(ch.size, dtype=np.int64) * mine
    request = ch.comm.Ialltoallv([send, (counts, np.asarray(bounds[:-1], np.int64))],
                                 [rows, (recv_counts, recv_displs)])
    ch.wait([request], what, timeout)
    return sum_rows(rows)


def allgather_host(ch, full, bounds, what, timeout):
    """Every rank's slice ``full[bounds[r]:bounds[r+1]]`` into every rank's ``full`` (host, in place)."""
    counts = np.diff(np.asarray(bounds, np.int64))
    request = ch.comm.Iallgatherv(ch.MPI.IN_PLACE, [full, (counts, np.asarray(bounds[:-1], np.int64))])
    ch.wait([request], what, timeout)


def _allreduce(flat_grad, comm, timeout, average, what):
    timeout = check_timeout(timeout)
    buf = Flat(flat_grad, "flat_grad")
    ch = channel(comm)
    if ch.size == 1:
        return flat_grad                     # the sum and the mean of one rank's buffer are the buffer
    bounds = even_bounds(buf.size, ch.size)
    full = buf.read() if buf.device else buf.read().copy()   # the user's buffer is written once the sum is known
    mine = reduce_scatter_host(ch, full, bounds, what, timeout)
    if average:
        mine /= mine.dtype.type(ch.size)
    lo, hi = bounds[ch.rank], bounds[ch.rank + 1]
    full[lo:hi] = mine
    allgather_host(ch, full, bounds, what, timeout)
    buf.write(full)
    return flat_grad


def allreduce_sum(flat_grad, comm=None, *, timeout=None):
    r"""Replace ``flat_grad`` on every rank by the sum over ranks, added in a fixed order (in place).

    .. math:: g \leftarrow \textstyle\sum_{r=0}^{N-1} g^{(r)} \quad\text{(pairwise tree over r, see gpunn.distributed.tree)}

    Args:
        flat_grad: a C-contiguous float32/float64 array (NumPy, PyTorch CPU or CUDA, CuPy, Numba device array), of
            the same size and dtype on every rank; read as 1-D. Device arrays are staged through host memory by
            their library's copies on its current stream.
        comm: an mpi4py communicator (default ``MPI.COMM_WORLD``).
        timeout: seconds to wait for the other ranks (default 300); then :class:`CollectiveTimeoutError` names the
            ranks that did not answer.

    Returns:
        ``flat_grad``, with every rank holding the same bits.

    Example (one process: the sum over one rank is the buffer itself):
        >>> import numpy as np
        >>> from gpunn.distributed import allreduce_sum
        >>> allreduce_sum(np.array([1.0, 2.0], np.float32))
        array([1., 2.], dtype=float32)
    """
    return _allreduce(flat_grad, comm, timeout, False, "allreduce_sum")


def allreduce_mean(flat_grad, comm=None, *, timeout=None):
    r"""Replace ``flat_grad`` on every rank by the mean over ranks (in place): the fixed-order sum, divided by N.

    .. math:: g \leftarrow \frac{1}{N} \textstyle\sum_{r=0}^{N-1} g^{(r)}

    Dividing by N is exact when N is a power of two; the sum's order is that of :func:`allreduce_sum`. Arguments,
    staging and errors as :func:`allreduce_sum`.

    Example (one process):
        >>> import numpy as np
        >>> from gpunn.distributed import allreduce_mean
        >>> allreduce_mean(np.array([1.0, 2.0]))
        array([1., 2.])
    """
    return _allreduce(flat_grad, comm, timeout, True, "allreduce_mean")


def broadcast(flat_params, root=0, comm=None, *, timeout=None):
    r"""Copy rank ``root``'s ``flat_params`` into every rank's (in place), after checking that they agree.

    .. math:: p^{(r)} \leftarrow p^{(\mathrm{root})} \quad \text{for every rank } r

    The start of data-parallel training: every rank then steps the same parameters. First every rank's size, dtype
    and side (host/device) are compared: a mismatch (a model built differently on one rank) raises ValueError on
    every rank, naming the ranks and what they hold, before any data moves.

    Args:
        flat_params: C-contiguous float32/float64 array (kinds as :func:`allreduce_sum`).
        root: the rank whose values are kept (0 <= root < N).
        comm, timeout: as :func:`allreduce_sum`.

    Returns:
        ``flat_params``.

    Example (one process):
        >>> import numpy as np
        >>> from gpunn.distributed import broadcast
        >>> broadcast(np.array([0.5, -1.0]))
        array([ 0.5, -1. ])
    """
    timeout = check_timeout(timeout)
    buf = Flat(flat_params, "flat_params")
    ch = channel(comm)
    if isinstance(root, bool) or not isinstance(root, (int, np.integer)) or not 0 <= root < ch.size:
        raise ValueError(f"root must be a rank in [0, {ch.size}), got {root!r}")
    check_agree(ch, "broadcast", "flat_params (size, dtype, side)", buf.describe(), timeout)
    if ch.size == 1:
        return flat_params
    # the root sends from its buffer; the others receive into a new one, written to theirs once complete
    host = buf.read() if ch.rank == root else np.empty(buf.size, buf.dtype)
    ch.wait([ch.comm.Ibcast(host, root=int(root))], "broadcast", timeout)
    if ch.rank != root:
        buf.write(host)
    return flat_params
