r"""ZeRO stage 1 (Rajbhandari et al.): each rank keeps the optimizer state of 1/N of the parameters.

Every rank holds all the parameters (one flat buffer, the same bits everywhere) but the optimizer state (Adam's two
moments: 8 bytes per float32 parameter, twice the parameters themselves) only for its shard
:math:`[b_r, b_{r+1})`. One step:

.. math::
    \bar g_{[b_r, b_{r+1})} = \tfrac{1}{N} \textstyle\sum_{q} g^{(q)}_{[b_r, b_{r+1})}\ \text{(reduce-scatter, tree order)}
    \;\to\; p_{[b_r, b_{r+1})} \leftarrow \mathrm{step}(p, \bar g, \mathrm{state}_r)
    \;\to\; p \leftarrow \mathrm{allgather}_r\, p_{[b_r, b_{r+1})}

The local step is the gpunn optimizer itself (``opt_cls`` on a view of the shard, fused kernel or CPU loop).

Clipping and skip-on-inf are global. The squared norm and the count of non-finite values are summed over fixed
chunks of ``C`` elements (C from the total size only, :func:`norm_chunk`; shard boundaries are multiples of C), each
chunk sequentially in float64; every rank gathers all chunk sums and adds them with ``math.fsum`` (correctly rounded,
so the order cannot matter). The norm therefore has the same bits for any number of ranks, every rank takes the same
decision (skip, or the factor :math:`\min(1, c / (\lVert g \rVert + 10^{-6}))` as ``gpunn.optim``), and applies it
through :meth:`gpunn.optim.Optimizer.step_scaled`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
from numba import float64

from .. import _cache
from .._args import check_real
from ..optim import Optimizer
from ._buffers import Flat, copy_to_device
from ._channel import channel, check_timeout
from .collectives import allgather_host, check_agree, reduce_scatter_host

F64_MAX = float(np.finfo(np.float64).max)
MIN_CHUNK = 64          # elements; shard boundaries are multiples of the chunk (256 B of float32 at least)
MAX_CHUNKS = 1 << 16    # the chunk grows with the model so that the norm exchange stays <= 1 MiB


def norm_chunk(total):
    """Chunk size for the norm partials and shard boundaries: a power of two >= 64, at most 65,536 chunks."""
    need = -(-total // MAX_CHUNKS)
    return max(MIN_CHUNK, 1 << max(0, (need - 1).bit_length()))


def shard_bounds(total, ranks, chunk):
    """``[b_0 = 0, ..., b_N = total]``: chunks split as evenly as whole chunks allow (the last chunk may be short)."""
    chunks = -(-total // chunk)
    return [min(total, (chunks * r // ranks) * chunk) for r in range(ranks + 1)]


@_cache.njit
def _chunk_partials(g, chunk):
    """(sum of g^2 over finite g, count of non-finite g) per chunk, float64, each chunk in element order."""
    n = g.size
    nch = (n + chunk - 1) // chunk
    out = np.zeros((nch, 2))
    for c in range(nch):
        sq = 0.0
        bad = 0.0
        for i in range(c * chunk, min(n, (c + 1) * chunk)):
            x = float64(g[i])
            if abs(x) <= F64_MAX:
                sq += x * x
            else:
                bad += 1.0
        out[c, 0] = sq
        out[c, 1] = bad
    return out


def state_bytes(optimizer) -> int:
    """Bytes of optimizer state (moments, momentum buffers) held by this process for ``optimizer`` (a gpunn.optim
    optimizer or a :class:`ShardedOptimizer`)."""
    if isinstance(optimizer, ShardedOptimizer):
        optimizer = optimizer.optimizer
    sd = optimizer.state_dict()
    return int(sum(np.asarray(v).nbytes for k, v in sd.items() if k.rpartition(".")[0] in optimizer.STATE))


class ShardedOptimizer:
    r"""A gpunn optimizer over one flat parameter buffer, with its state split across the ranks (ZeRO-1).

    .. math::
        \bar g_r = \mathrm{reducescatter}(g)_r,\quad p_r \leftarrow \mathrm{step}(p_r, \bar g_r),\quad
        p \leftarrow \mathrm{allgather}(p_r)

    Args:
        opt_cls: a ``gpunn.optim`` optimizer class (``gpunn.optim.Adam``, ...).
        flat_params: the model's flat parameter buffer (``gpunn.optim.flatten``), C-contiguous float32/float64,
            NumPy, PyTorch, CuPy or Numba device array, the same size, dtype and values on every rank (start with
            :func:`gpunn.distributed.broadcast`). Updated in place on every rank.
        comm: an mpi4py communicator (``None``: ``MPI.COMM_WORLD``).
        average: the gradient stepped is the mean over ranks (True, as ``allreduce_mean``) or the sum (False: for
            gradients already divided by the global batch size).
        timeout: seconds a rank waits for the others in a collective (default 300).
        **hyper: the optimizer's hyperparameters (``lr``, ``betas``, ...), including ``max_grad_norm``, which clips
            by the global norm over every rank's shard.

    Raises:
        TypeError, ValueError: a bad argument, named; ValueError on every rank when the ranks' ``flat_params`` differ
        in size, dtype or side, or they use different optimizer classes (checked here, at start-up).

    A collective call: every rank constructs it, steps it and checkpoints it together.

    Example (one process: one shard holding everything):
        >>> import numpy as np, gpunn
        >>> from gpunn.distributed import ShardedOptimizer, state_bytes
        >>> p = np.ones(4)
        >>> opt = ShardedOptimizer(gpunn.optim.Adam, p, None, lr=0.1)
        >>> opt.step(np.array([1.0, -1.0, 2.0, 0.0]))
        True
        >>> p
        array([0.9, 1.1, 0.9, 1. ])
        >>> state_bytes(opt)                             # exp_avg and exp_avg_sq: 2 x 4 float64
        64
    """

    def __init__(self, opt_cls, flat_params, comm=None, *, average=True, timeout=None, **hyper):
        if not (isinstance(opt_cls, type) and issubclass(opt_cls, Optimizer)):
            raise TypeError(f"opt_cls must be a gpunn.optim optimizer class (e.g. gpunn.optim.Adam), got {opt_cls!r}")
        if not isinstance(average, (bool, np.bool_)):
            raise TypeError(f"average must be True or False, got {average!r}")
        self.timeout = check_timeout(timeout)
        max_norm = hyper.pop("max_grad_norm", None)
        self.max_grad_norm = None if max_norm is None else check_real("max_grad_norm", max_norm, low=0.0,
                                                                        low_open=True)
        self.params = Flat(flat_params, "flat_params")
        self.average = bool(average)
        self.ch = channel(comm)
        self.chunk = norm_chunk(self.params.size)
        self.bounds = shard_bounds(self.params.size, self.ch.size, self.chunk)
        self.lo, self.hi = self.bounds[self.ch.rank], self.bounds[self.ch.rank + 1]
        self.optimizer = opt_cls([self.params.flat[self.lo:self.hi]], **hyper)
        self._grad = self.params.empty(self.hi - self.lo) if self.params.device else None
        check_agree(self.ch, "ShardedOptimizer", "flat_params and opt_cls (size, dtype, side, class)",
                    (*self.params.describe(), opt_cls.__name__), self.timeout)

    # ---- hyperparameters ---------------------------------------------------------------------------------------------
    def hyperparams(self) -> dict:
        """The current hyperparameters, ``max_grad_norm`` included."""
        return {**self.optimizer.hyperparams(), "max_grad_norm": self.max_grad_norm}

    def set(self, **hyper):
        """Change hyperparameters between steps (an lr schedule); same on every rank. Checked before any change."""
        max_norm = hyper.pop("max_grad_norm", self.max_grad_norm)
        max_norm = None if max_norm is None else check_real("max_grad_norm", max_norm, low=0.0, low_open=True)
        self.optimizer.set(**hyper)
        self.max_grad_norm = max_norm

    @property
    def step_count(self) -> int:
        """Steps applied so far (skipped steps do not count); the same on every rank."""
        return self.optimizer.step_count

    @property
    def shard(self) -> tuple:
        """``(lo, hi)``: the elements of ``flat_params`` whose state this rank keeps."""
        return self.lo, self.hi

    def __repr__(self):
        return (f"ShardedOptimizer({type(self.optimizer).__name__}, rank {self.ch.rank} of {self.ch.size}, "
                f"shard [{self.lo}, {self.hi}) of {self.params.size})")

    # ---- the step ----------------------------------------------------------------------------------------------------
    def step(self, flat_grad, grad_scale=None) -> bool:
        r"""Reduce-scatter ``flat_grad`` (this rank's gradient), step this rank's shard, all-gather the parameters.

        Args:
            flat_grad: this rank's gradient, the same size, dtype and side as ``flat_params``. Only read.
            grad_scale: optional loss scale: gradients are divided by it, and if any rank's gradient holds inf or
                NaN every rank skips the step (parameters, state and ``step_count`` unchanged).

        Returns:
            True if the step was applied, False if it was skipped (the same on every rank).
        """
        grad = Flat(flat_grad, "flat_grad")
        if grad.describe() != self.params.describe():
            size, dtype, side = self.params.describe()
            err = TypeError if grad.dtype != self.params.dtype or grad.device != self.params.device else ValueError
            raise err(f"flat_grad must match flat_params ({size} {dtype} elements on the {side}), got "
                      f"{grad.size} {grad.dtype} elements on the {grad.describe()[2]}")
        if grad_scale is not None:
            grad_scale = check_real("grad_scale", grad_scale, low=0.0, low_open=True)
        self.optimizer._check_hyper(self.optimizer.hyperparams())
        mine = self._reduce_scatter(grad)
        scale = self._scale(mine, grad_scale)
        if scale is None:
            return False
        if self.params.device:
            copy_to_device(self._grad, mine)
            shard_grad = self._grad
        else:
            shard_grad = mine
        self.optimizer.step_scaled([shard_grad], scale)
        self._allgather_params()
        return True

    def _reduce_scatter(self, grad):
        if self.ch.size == 1:
            return grad.read()                              # one rank: its gradient is the sum and the mean
        mine = reduce_scatter_host(self.ch, grad.read(), self.bounds, "ShardedOptimizer.step reduce-scatter",
                                   self.timeout)
        if self.average:
            mine /= mine.dtype.type(self.ch.size)
        return mine

    def _scale(self, mine, grad_scale):
        """The factor the shard's gradient is multiplied by, from global totals; None: skip the step."""
        if grad_scale is None and self.max_grad_norm is None:
            return 1.0
        parts = _chunk_partials(mine, self.chunk)
        if self.ch.size > 1:
            counts = np.diff(np.asarray(self.bounds, np.int64))
            chunk_counts = -(-counts // self.chunk) * 2      # two float64 per chunk
            full = np.empty(int(chunk_counts.sum()), np.float64)
            offset = int(chunk_counts[:self.ch.rank].sum())
            full[offset:offset + parts.size] = parts.reshape(-1)
            bounds = np.concatenate([[0], np.cumsum(chunk_counts)]).tolist()
            allgather_host(self.ch, full, bounds, "ShardedOptimizer.step norm", self.timeout)
            parts = full.reshape(-1, 2)
        if parts[:, 1].sum() > 0:
            return None
        inv = 1.0 / grad_scale if grad_scale is not None else 1.0
        if self.max_grad_norm is None:
            return inv
        norm = math.sqrt(math.fsum(parts[:, 0])) * inv
        return inv * min(1.0, self.max_grad_norm / (norm + 1e-6))

    def _allgather_params(self):
        if self.ch.size == 1:
            return
        what = "ShardedOptimizer.step all-gather"
        if not self.params.device:
            allgather_host(self.ch, self.params.host, self.bounds, what, self.timeout)
            return
        full = np.empty(self.params.size, self.params.dtype)
        full[self.lo:self.hi] = self.params.read(self.lo, self.hi)
        allgather_host(self.ch, full, self.bounds, what, self.timeout)
        self.params.write(full)

    # ---- checkpoints -------------------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """This rank's checkpoint: the shard optimizer's ``state_dict`` (copies) plus ``zero.*`` entries saying which
        shard it is. Save one file per rank (``np.savez(f"opt.{rank}.npz", **sd)``); resume with
        :meth:`load_state_dict` on the same number of ranks, or gather one ordinary state_dict with
        :meth:`gather_state_dict`."""
        sd = self.optimizer.state_dict()
        sd["max_grad_norm"] = float("nan") if self.max_grad_norm is None else float(self.max_grad_norm)
        sd.update({"zero.rank": self.ch.rank, "zero.ranks": self.ch.size, "zero.lo": self.lo, "zero.hi": self.hi,
                   "zero.total": self.params.size})
        return sd

    def load_state_dict(self, state_dict):
        """Resume from this rank's :meth:`state_dict` (bit-identical continuation). Collective.

        Every rank checks its own file (the shard, the optimizer, shapes: ValueError naming the entry); then the ranks
        compare step counts. If any rank fails, every rank keeps its state as it was and raises ValueError naming the
        ranks."""
        sd = _as_dict(state_dict)
        expect = {"zero.rank": self.ch.rank, "zero.ranks": self.ch.size, "zero.lo": self.lo, "zero.hi": self.hi,
                  "zero.total": self.params.size}
        error = None
        for key, want in expect.items():
            if key not in sd:
                error = f"state_dict has no {key!r} entry (not a ShardedOptimizer checkpoint)"
                break
            if _int(sd[key]) != want:
                error = (f"state_dict {key!r} is {_int(sd[key])} but this rank needs {want} (a checkpoint of "
                         f"another rank or another number of ranks: gather it with gather_state_dict and load it "
                         f"with load_full_state_dict)")
                break
        local = {k: v for k, v in sd.items() if not k.startswith("zero.")}
        self._load_everywhere(local, error)

    def gather_state_dict(self, root=0):
        """One ordinary ``state_dict`` for ``opt_cls([flat_params], **hyper)`` on rank ``root`` (None on the others).

        A single process resumes from it with ``opt_cls([flat_params], ...).load_state_dict(sd)``; N ranks with
        :meth:`load_full_state_dict`. Collective."""
        if isinstance(root, bool) or not isinstance(root, (int, np.integer)) or not 0 <= root < self.ch.size:
            raise ValueError(f"root must be a rank in [0, {self.ch.size}), got {root!r}")
        sd = self.state_dict()
        for key in [k for k in sd if k.startswith("zero.")]:
            del sd[key]
        counts = np.diff(np.asarray(self.bounds, np.int64))
        displs = np.asarray(self.bounds[:-1], np.int64)
        shape = tuple(int(s) for s in self.params.array.shape)
        for sname in self.optimizer.STATE:
            key = f"{sname}.0"
            if key not in sd:
                continue
            piece = np.ascontiguousarray(sd[key]).reshape(-1)
            full = np.empty(self.params.size, piece.dtype) if self.ch.rank == root else None
            recv = [full, (counts, displs)] if full is not None else None
            self.ch.wait([self.ch.comm.Igatherv(piece, recv, root=int(root))], "gather_state_dict", self.timeout)
            sd[key] = full.reshape(shape) if full is not None else None
        return sd if self.ch.rank == root else None

    def load_full_state_dict(self, state_dict):
        """Resume from one ordinary ``state_dict`` of ``opt_cls([flat_params])`` (a single process's, or
        :meth:`gather_state_dict`'s) on any number of ranks: each rank takes its shard. Collective; all or nothing as
        :meth:`load_state_dict`."""
        sd = _as_dict(state_dict)
        error = None
        if "num_params" in sd and _int(sd["num_params"]) != 1:
            error = f"state_dict has num_params {_int(sd['num_params'])}: expected 1 (the one flat buffer)"
        local = dict(sd)
        for sname in self.optimizer.STATE:
            key = f"{sname}.0"
            if error is None and key in sd:
                arr = np.asarray(sd[key])
                if arr.size != self.params.size:
                    error = f"state_dict {key!r} has {arr.size} elements but flat_params has {self.params.size}"
                else:
                    local[key] = np.ascontiguousarray(arr).reshape(-1)[self.lo:self.hi]
        self._load_everywhere(local, error)

    def _load_everywhere(self, local, error):
        """Load ``local`` into the shard optimizer on every rank, or on none (see :meth:`load_state_dict`)."""
        before = self.optimizer.state_dict()
        max_norm = self.max_grad_norm
        step = None
        if error is None:
            try:
                mgn = float(np.asarray(local.get("max_grad_norm", float("nan"))))
                max_norm = None if math.isnan(mgn) else check_real("max_grad_norm", mgn, low=0.0, low_open=True)
                self.optimizer.load_state_dict({**local, "max_grad_norm": float("nan")})
                step = self.optimizer.step_count
            except (TypeError, ValueError) as exc:
                error = str(exc)
        seen = self.ch.allgather_obj((error, step), "load_state_dict", self.timeout)
        failed = [(r, e) for r, (e, _) in enumerate(seen) if e is not None]
        steps = {s for _, s in seen}
        if failed or len(steps) > 1:
            if error is None:
                self.optimizer.load_state_dict(before)        # undo: every rank keeps what it had
            why = "; ".join(f"rank {r}: {e}" for r, e in failed) or \
                "the ranks' checkpoints are at different steps (" + \
                ", ".join(f"rank {r}: {s}" for r, (_, s) in enumerate(seen)) + ")"
            raise ValueError(f"load_state_dict: nothing loaded: {why}")
        self.max_grad_norm = max_norm


def _as_dict(state_dict):
    if not isinstance(state_dict, Mapping) and not hasattr(state_dict, "files"):
        raise TypeError(f"state_dict must be a dict (from state_dict() or np.load), got {type(state_dict).__name__}")
    return {k: state_dict[k] for k in (state_dict.files if hasattr(state_dict, "files") else state_dict)}


def _int(v):
    v = np.asarray(v)
    return int(v) if v.ndim == 0 and v.dtype.kind in "iu" else -1
