r"""One summation order for gradients, whatever the number of processes: a fixed pairwise tree.

The sum of leaves :math:`g_0, \dots, g_{M-1}` is defined as

.. math::
    S[a, b) = S[a, a + p) + S[a + p, b),\qquad p = 2^{\lfloor \log_2 (b - a - 1) \rfloor}\ \text{(the largest power
    of two below } b - a),\qquad S[a, a + 1) = g_a

For :math:`M = 2^k` this is the balanced binary tree. Any block of :math:`2^j` consecutive leaves starting at a
multiple of :math:`2^j` is one subtree, so when each of N ranks holds :math:`M / N = 2^j` consecutive leaves (any N),
a rank can sum its own leaves first and the ranks' sums then meet in the top of the very same tree: N processes and
one process add the same numbers in the same order and get the same bits. Floating-point addition is commutative,
so only the grouping matters.
"""

from __future__ import annotations

from .._arrays import kind

_ADDABLE = ("numpy", "torch_cpu", "torch_cuda", "cupy")   # kinds whose library adds in place (on its stream)


def _copy(x):
    k = kind(x)
    if k in ("torch_cpu", "torch_cuda"):
        return x.detach().clone()
    if k in ("numpy", "cupy"):
        return x.copy()
    return x.copy_to_host()            # Numba device arrays: summed on the host (no add kernel in their library)


def _add_into(acc, x):
    """acc += x, acc owned by the tree (``x`` may be a Numba device array: then acc is its host copy)."""
    if kind(x) in _ADDABLE:
        acc += x
    else:
        acc += x.copy_to_host()


class TreeSum:
    r"""Accumulate arrays one by one and sum them in the fixed pairwise order of :mod:`gpunn.distributed.tree`.

    .. math:: \mathrm{result} = S[0, M) \text{ over the } M \text{ arrays added, in the order added}

    ``add`` copies what it keeps (the caller may overwrite its array, e.g. the model's gradient buffer, at once);
    at most :math:`\lfloor \log_2 M \rfloor + 1` buffers are alive. Arrays: NumPy, PyTorch (CPU or CUDA), CuPy
    (added by their own library, on its current stream) or Numba device arrays (summed on the host; ``result(out=)``
    copies the sum back to the device).

    Example:
        >>> import numpy as np
        >>> from gpunn.distributed import TreeSum
        >>> t = TreeSum()
        >>> for g in ([1.0, 2.0], [3.0, 4.0], [5.0, 6.0]):
        ...     t.add(np.array(g))
        >>> t.result()                                    # (g0 + g1) + g2
        array([ 9., 12.])
    """

    def __init__(self):
        self._stack = []       # (leaf count, owned array): complete subtrees, leftmost first
        self.count = 0

    def add(self, x):
        """Add the next leaf (same shape and dtype as the others)."""
        if self._stack and self._stack[-1][0] == 1:
            _add_into(self._stack[-1][1], x)
            self._stack[-1] = (2, self._stack[-1][1])
        else:
            self._stack.append((1, _copy(x)))
        while len(self._stack) > 1 and self._stack[-2][0] == self._stack[-1][0]:
            n, right = self._stack.pop()
            left_n, left = self._stack[-1]
            left += right                              # S[a, a+2p) = S[a, a+p) + S[a+p, a+2p)
            self._stack[-1] = (left_n + n, left)
        self.count += 1

    def result(self, out=None):
        """The sum (an array the tree owns, or ``out`` filled with it); the tree is then empty."""
        if not self._stack:
            raise ValueError("TreeSum.result: nothing was added")
        _, right = self._stack.pop()
        while self._stack:                             # unequal subtrees: join from the right
            _, left = self._stack.pop()
            left += right
            right = left
        self.count = 0
        if out is None:
            return right
        if kind(out) == "numba" and kind(right) == "numpy":
            out.copy_to_device(right)
        else:
            out[...] = right
        return out


def sum_rows(rows):
    """Sum the rows of a 2-D array in the tree order, in place (rows are overwritten); returns ``rows[0]``.

    Row i is leaf i: the same order as :class:`TreeSum` over the rows, bottom-up (pairs, then pairs of pairs).
    """
    n = rows.shape[0]
    step = 1
    while step < n:
        for i in range(0, n - step, 2 * step):
            rows[i] += rows[i + step]
        step *= 2
    return rows[0]


def micro_ranges(batch, micro):
    """``micro`` fixed slices ``[k B / M, (k + 1) B / M)`` of a batch of ``batch`` samples (some may be empty)."""
    return [(k * batch // micro, (k + 1) * batch // micro) for k in range(micro)]


def keeps_order(micro, ranks):
    """Whether ``micro`` leaves split over ``ranks`` ranks sum in the one-process order (``micro / ranks`` is a
    power of two)."""
    if micro % ranks:
        return False
    per = micro // ranks
    return per & (per - 1) == 0
