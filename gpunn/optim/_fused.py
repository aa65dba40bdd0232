r"""The machinery under every gpunn optimizer: a multi-tensor ("fused") step, an optional gradient check pass, state.

Design (why it looks like this)
-------------------------------
A Numba kernel cannot take a Python list of arrays, and it cannot turn an integer address into an array in a way
that also runs in the CUDA simulator (the simulator runs kernels as Python, where a raw device pointer means
nothing). What Numba *can* take, on a GPU and in the simulator alike, is a **tuple of arrays**: a
``UniTuple(float32[::1], L)`` argument, indexed inside the kernel with a run-time index (Numba lowers ``ps[t]`` to a
switch over the ``L`` members). So one step is, PyTorch/apex ``multi_tensor_apply`` style:

* the user's parameters stay where they are (the optimizer copies none of them); each is seen as a 1-D view;
* the optimizer *owns* its state (``exp_avg``, momentum buffers, ...) as one flat buffer per state tensor and per
  parameter dtype, with parameter ``k`` at a fixed offset;
* a **chunk table** (int64 rows ``(tensor slot, first element, length, state offset)``, built once on the device,
  :data:`CHUNK_GPU` = 16,384 elements per chunk on a GPU, 64 in the simulator) tells each block what to update;
  a block walks chunks in a grid-stride loop and its threads walk the chunk's elements, so any grid is correct;
  indices are 64-bit;
* the step's scalars (lr, bias corrections, the clip/unscale factor, option flags) are computed on the host in
  float64 each step, cast to the parameter dtype, and passed as a tuple argument: a new lr or a schedule never
  recompiles, and a kernel never reads a mutable global.

Kernel launches per step (``Optimizer.last_launches`` counts them; the tests check these numbers):

* **Separate arrays: 1 launch per batch**, a batch being up to :data:`MAX_TENSORS_PER_LAUNCH` (24) parameters of one
  dtype. A model with <= 24 float32 parameter arrays is updated by exactly one launch, whatever their sizes; more
  arrays take ``ceil(n / 24)`` launches per dtype (200 arrays: 9; the last tuple is padded, so there is one
  compilation). The cap exists because every array in a tuple costs 56 bytes of kernel parameters (Numba passes
  meminfo, parent, size, itemsize, pointer, shape, stride), and params + grads of 24 tensors plus the table, state
  and scalars stay under the classic 4 KiB kernel-parameter limit (PyTorch's ``multi_tensor_apply`` splits its
  lists for the same reason, at 36 tensors for Adam).
* **Any number of arrays in 1 launch: the flat-buffer path.** :func:`gpunn.optim.flatten` copies the parameters into
  ONE contiguous buffer and returns views of it shaped like them (and the same for a gradient buffer); the model
  computes with the views, and the optimizer is built on ``[flat]`` with ``step([flat_grad])``. To the machinery
  above that is one parameter, so a step is one launch (its chunk table spans the whole buffer) for 2 or 200,000
  views. This is the design chosen over a device table of pointers: a raw address cannot become an array inside a
  Numba kernel in a way that also runs in the simulator (see above), while a flat buffer needs no new kernel at all,
  runs (and is tested) identically on the CPU, in the simulator and on a GPU, and gives the kernel one contiguous
  stream to read instead of gathering from scattered arrays. What it asks of the user is to keep the views (not the
  original arrays) as the model's parameters and to write gradients into the gradient views (``out=``, or for
  PyTorch ``p.data = view`` / ``p.grad = grad_view``). The optimizer's state and ``state_dict`` are then those of
  the one flat array. The step is elementwise, so the flat path gives bit-identical parameters to the separate
  arrays (only clipping's global norm is summed in another order).
* **+1** launch per batch (so 2 in all on the flat path) when ``grad_scale`` or ``max_grad_norm`` is given: a deterministic reduction pass over the
  gradients (float64 sum of squares and a count of non-finite values: per-block partials in a fixed tree order,
  ``gpunn._reduce.block_partial_fn``), whose few partials are copied to the host and summed there in a fixed order.
  The host then decides (skip the step on inf/NaN; clip factor ``min(1, max_norm / (norm + 1e-6))``) - this read-back
  is the one synchronisation of a step, and it is needed anyway because ``step`` returns whether it was applied.
* The cap is not raised on GPUs that could take more: CUDA >= 12.1 allows 32 KiB of kernel parameters on sm_70+
  (numba-cuda's NVVM emits PTX 9.5 here, and a 280-wide step kernel compiles and links with nvJitLink), which would
  fit ~280 tensors in one launch. But no GPU was available to run such a launch, the simulator does not model the
  parameter limit (it would pass whatever a driver rejects), and a failure would surface only at a user's first step
  on an older driver; with the flat path giving one launch for any count, the tuple width stays at the size every
  driver accepts.

On the CPU (NumPy or PyTorch CPU arrays) the same scalar math runs in a ``numba.njit`` loop, one pass over each
parameter (one call per parameter array), reading and writing the parameter and its state in place: no temporary the
size of a parameter (a non-contiguous *gradient* is copied once to be read in order). Arrays of 2^16 elements or more
take a ``parallel=True`` (``prange``) loop, smaller ones a plain loop (waking threads costs more than the work). The
CPU loop is compiled per set of state tensors in use (so its body has no conditional loads or stores, and LLVM
vectorizes it: 2-3x faster on a 2^24-element Adam step than with run-time flags). The CPU check pass sums fixed
65,536-element chunks in parallel and the chunk sums in order, so its result does not depend on the thread count: a
resumed run is bit-identical to one that never stopped, on both paths.

A parameter's math runs in its own precision (float32 parameters in float32, float64 in float64); only the check
pass accumulates in float64.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping

import numpy as np
from numba import cuda, float64, int64, prange

from .. import _cpu, _registry
from .._reduce import block_partial_fn
from .._args import check_real
from .._arrays import FLOAT_DTYPES, HOST_KINDS, device_array, dtype_of, host_view, kind
from .._arrays import is_c_contiguous as _is_c_contiguous
from .._launch import Kernel, block_size, sm_count, synchronize_stream, stream_of
from .._runtime import require_device as _require_device
from .._runtime import simulator

MAX_TENSORS_PER_LAUNCH = 24
CHUNK_GPU = 1 << 14      # elements per chunk on a GPU: 2^24 params -> 1024 chunks, enough blocks to fill an H100
CHUNK_SIM = 64           # in the simulator: small, so that tests with a few hundred elements cross chunk borders
CHUNK_CPU = 1 << 16      # the CPU check pass's fixed chunk (determinism does not depend on the thread count)
F64_MAX = float(np.finfo(np.float64).max)
N_STATE = 3              # state tensors an optimizer may keep per parameter (Adam: m, v, vmax)


THREADS_SIM = 8          # threads per block in the simulator (each is a Python thread; any block size is correct)


def chunk_size() -> int:
    return CHUNK_SIM if simulator() else CHUNK_GPU


def threads_per_block() -> int:
    return THREADS_SIM if simulator() else block_size()


# ----------------------------------------------------------------------------------------------------------------------
# CUDA kernels (built per scalar-math function; the math is an njit(inline="always") function of one element)
# ----------------------------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def step_kernel(update, dtype):
    """The fused step kernel for one optimizer's scalar math ``update(p, g, s0, s1, s2, h) -> (p, s0, s1, s2)``."""
    (zero,) = _typed(dtype, 0.0)

    @cuda.jit
    def _optim_step_kernel(ps, gs, table, s0, s1, s2, use0, use1, use2, h):
        # ps, gs: tuples of 1-D params and grads; table rows: (tensor slot, first element, length, state offset)
        for c in range(int64(cuda.blockIdx.x), table.shape[0], int64(cuda.gridDim.x)):
            t = table[c, 0]
            start = table[c, 1]
            end = start + table[c, 2]
            shift = table[c, 3] - start  # element i of the tensor is element i + shift of the flat state
            p = ps[t]
            g = gs[t]
            for i in range(start + int64(cuda.threadIdx.x), end, int64(cuda.blockDim.x)):
                j = i + shift
                a = s0[j] if use0 else zero
                b = s1[j] if use1 else zero
                d = s2[j] if use2 else zero
                p[i], a, b, d = update(p[i], g[i], a, b, d, h)
                if use0:
                    s0[j] = a
                if use1:
                    s1[j] = b
                if use2:
                    s2[j] = d

    return _optim_step_kernel


@functools.lru_cache(maxsize=None)
def check_kernel(block):
    """Reduction pass: per-block float64 sum of g^2 over finite g (row 0) and count of non-finite g (row 1)."""
    block_partial = block_partial_fn(block)

    @cuda.jit
    def _optim_grad_sum_kernel(gs, table, partials):
        sq = float64(0.0)
        bad = float64(0.0)
        for c in range(int64(cuda.blockIdx.x), table.shape[0], int64(cuda.gridDim.x)):
            t = table[c, 0]
            start = table[c, 1]
            end = start + table[c, 2]
            g = gs[t]
            for i in range(start + int64(cuda.threadIdx.x), end, int64(cuda.blockDim.x)):
                x = float64(g[i])
                if abs(x) <= float64(F64_MAX):  # finite (false for inf and NaN)
                    sq += x * x
                else:
                    bad += float64(1.0)
        block_partial(sq, partials, 0)
        block_partial(bad, partials, 1)

    return _optim_grad_sum_kernel


# ----------------------------------------------------------------------------------------------------------------------
# CPU path
# ----------------------------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def step_cpu(update, dtype, uses):
    """One pass over one parameter (``_cpu.Loops``): the same scalar math as the kernel, state read and written in
    place. ``uses`` (which state tensors exist) is a compile-time constant here: a conditional load or store in the loop
    body keeps LLVM from vectorizing it (measured: 2-3x slower on 2^24 float32 Adam), so each combination an
    optimizer uses (at most 4) gets its own loop. The GPU kernel takes them as arguments instead."""
    (zero,) = _typed(dtype, 0.0)
    use0, use1, use2 = uses

    def _optim_step_cpu(p, g, s0, s1, s2, h):
        for i in prange(p.size):
            a = s0[i] if use0 else zero
            b = s1[i] if use1 else zero
            d = s2[i] if use2 else zero
            p[i], a, b, d = update(p[i], g[i], a, b, d, h)
            if use0:
                s0[i] = a
            if use1:
                s1[i] = b
            if use2:
                s2[i] = d

    return _cpu.loops(_optim_step_cpu)


def _grad_sum(g, chunk):
    """(sum of g^2 over finite g, number of non-finite g), float64, in fixed chunks summed in order."""
    n = g.size
    nch = (n + chunk - 1) // chunk
    sq = np.zeros(nch)
    bad = np.zeros(nch)
    for c in prange(nch):
        acc = 0.0
        nb = 0.0
        for i in range(c * chunk, min(n, (c + 1) * chunk)):
            x = float64(g[i])
            if abs(x) <= F64_MAX:
                acc += x * x
            else:
                nb += 1.0
        sq[c] = acc
        bad[c] = nb
    total = 0.0
    nbad = 0.0
    for c in range(nch):
        total += sq[c]
        nbad += bad[c]
    return total, nbad


_grad_sum_cpu = _cpu.loops(_grad_sum)


def _typed(dtype, *values):
    t = np.dtype(dtype).type
    return tuple(t(v) for v in values)


# ----------------------------------------------------------------------------------------------------------------------
# Parameter groups (one per dtype) and their device tables
# ----------------------------------------------------------------------------------------------------------------------
class _Batch:
    """Up to MAX_TENSORS_PER_LAUNCH parameters of one dtype: the unit of one launch."""

    def __init__(self, members, offsets, views, chunk):
        self.members = members  # positions in the group (not in the user's list)
        rows = []
        for slot, k in enumerate(members):
            n = views[k].size
            for start in range(0, n, chunk):
                rows.append((slot, start, min(chunk, n - start), offsets[k] + start))
        self.n_chunks = len(rows)
        self.table = cuda.to_device(np.array(rows, np.int64).reshape(-1, 4))
        threads = threads_per_block()
        self.blocks = max(1, min(self.n_chunks, 2 if simulator() else sm_count() * 8))  # 2: grid-stride tested
        self.threads = threads
        self.partials = cuda.device_array((2, self.blocks), np.float64)

    def tuple_of(self, arrays, width):
        chosen = [arrays[k] for k in self.members]
        return tuple(chosen + [chosen[0]] * (width - len(chosen)))  # padding is never indexed by the table


class _Group:
    """The parameters of one dtype: flat views, offsets into the owned state buffers, launch batches."""

    def __init__(self, dtype, indices, views, device):
        self.dtype = dtype
        self.indices = indices          # positions in the user's params list
        self.views = views              # 1-D views of the params (NumPy or Numba device arrays)
        sizes = [v.size for v in views]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.total = int(self.offsets[-1])
        self.device = device
        self.state = [None] * N_STATE   # flat buffers, created (zeros) when an option first needs them
        self.dummy = cuda.to_device(np.zeros(1, dtype)) if device else np.zeros(1, dtype)
        self.batches = []
        if device:
            nonempty = [k for k in range(len(views)) if sizes[k]]
            self.width = MAX_TENSORS_PER_LAUNCH  # one compiled width (the registered one); padding is never read
            for b in range(0, len(nonempty), MAX_TENSORS_PER_LAUNCH):
                self.batches.append(_Batch(nonempty[b:b + MAX_TENSORS_PER_LAUNCH], self.offsets, views,
                                           chunk_size()))

    def ensure_state(self, s):
        if self.state[s] is None:
            zeros = np.zeros(self.total, self.dtype)
            self.state[s] = cuda.to_device(zeros) if self.device else zeros

    def state_slice(self, s, k):
        return self.state[s][self.offsets[k]:self.offsets[k + 1]]


# ----------------------------------------------------------------------------------------------------------------------
# The optimizer base class
# ----------------------------------------------------------------------------------------------------------------------
class Optimizer:
    """Base class: parameters, validation, the check pass, launches, ``state_dict``. Subclasses give the math.

    Subclass contract: ``NAME``; ``HYPER`` (name -> "real" | "bool" | "pair" | "opt_real", in constructor order);
    ``STATE`` (names of state tensors 0..2); ``_validate(hp)`` (raise on bad hyperparameters); ``_uses(hp)`` (which
    state tensors this step reads/writes); ``_scalars(hp, step, gscale)`` (float64 tuple for the math);
    ``_math(dtype)`` (the njit scalar update).
    """

    NAME = "Optimizer"
    HYPER: dict = {}
    STATE: tuple = ()
    EXTRA: dict = {}  # extra state_dict entries: name -> "bool" (e.g. SGD's momentum_initialized)

    def __init__(self, params, hyper: dict):
        if kind(params) is not None:
            raise TypeError(f"params must be a list of arrays, got one {type(params).__name__} of shape "
                            f"{tuple(params.shape)}: pass [params] to step it as one parameter")
        params = list(params)
        if not params:
            raise ValueError("params is empty: give a list of parameter arrays")
        self._check_hyper(hyper)
        self._params = params
        self.device = self._check_params(params)
        _check_disjoint(params)
        shapes, dtypes, groups = [], [], {}
        for i, x in enumerate(params):
            shapes.append(tuple(int(s) for s in x.shape))
            dtypes.append(dtype_of(x))
            groups.setdefault(dtypes[-1], []).append(i)
        self._shapes, self._dtypes = shapes, dtypes
        self._groups = []
        self._where = {}  # user index -> (group, position in group)
        for dt in sorted(groups, key=lambda d: d.itemsize):
            idx = groups[dt]
            views = [self._flat_param(params[i]) for i in idx]
            g = _Group(dt, idx, views, self.device)
            for pos, i in enumerate(idx):
                self._where[i] = (g, pos)
            self._groups.append(g)
        for name, value in hyper.items():
            object.__setattr__(self, name, value)
        self._step = 0
        self._extra = {name: False for name in self.EXTRA}
        self.last_launches = 0

    # ---- hyperparameters ---------------------------------------------------------------------------------------------
    def hyperparams(self) -> dict:
        """The current hyperparameters, by name."""
        return {name: getattr(self, name) for name in self.HYPER}

    def set(self, **hyper):
        """Change hyperparameters (an lr schedule, ...): validated together, then applied; nothing recompiles.

        Example: ``opt.set(lr=opt.lr * 0.5)``. Setting the attribute (``opt.lr = 0.05``) also works; it is
        validated at the next ``step``."""
        for name in hyper:
            if name not in self.HYPER:
                raise ValueError(f"{name} is not a hyperparameter of {self.NAME} (known: {', '.join(self.HYPER)})")
        hp = {**self.hyperparams(), **hyper}
        self._check_hyper(hp)
        for name, value in hyper.items():
            setattr(self, name, value)

    def _check_hyper(self, hp):
        for name, how in self.HYPER.items():
            v = hp[name]
            if how == "real":
                check_real(name, v)
            elif how == "opt_real":
                if v is not None:
                    check_real(name, v, low=0.0, low_open=True)
            elif how == "bool":
                if not isinstance(v, (bool, np.bool_)):
                    raise TypeError(f"{name} must be True or False, got {v!r}")
            elif how == "pair":
                if not isinstance(v, (tuple, list, np.ndarray)) or len(v) != 2:
                    raise TypeError(f"{name} must be a pair of numbers, got {v!r}")
                for k in range(2):
                    check_real(f"{name}[{k}]", v[k])
        check_real("lr", hp["lr"], low=0.0)
        self._validate(hp)

    @property
    def step_count(self) -> int:
        """Steps applied so far (skipped steps do not count)."""
        return self._step

    @property
    def params(self) -> list:
        return list(self._params)

    # ---- parameters and gradients ------------------------------------------------------------------------------------
    def _check_params(self, params):
        device = None
        for i, x in enumerate(params):
            name = f"params[{i}]"
            k = kind(x)
            if k is None:
                raise TypeError(f"{name} must be an array (NumPy, CuPy, PyTorch or Numba device array), "
                                f"got {type(x).__name__}")
            on_device = k not in HOST_KINDS
            if device is None:
                device = on_device
                if device:
                    _require_device(f"{name} (a device array)")
            elif on_device != device:
                raise TypeError(f"{name} is {'a device' if on_device else 'a host'} array but params[0] is "
                                f"{'a device' if device else 'a host'} array: all parameters must be on one side")
            if dtype_of(x) not in FLOAT_DTYPES:
                raise TypeError(f"{name} must be float32 or float64, got {dtype_of(x)}")
            if not _is_c_contiguous(x):
                raise ValueError(f"{name} must be C-contiguous (the optimizer updates it in place)")
            if not on_device and not host_view(x).flags.writeable:
                raise ValueError(f"{name} is read-only")
        return device

    def _flat_param(self, x):
        return device_array(x).reshape(-1) if self.device else host_view(x).reshape(-1)

    def _flat_grads(self, grads):
        """Check every gradient against its parameter, then give 1-D views (host or device, as the params)."""
        if kind(grads) is not None or not isinstance(grads, (list, tuple)):
            raise TypeError(f"grads must be a list of arrays, one per parameter, got {type(grads).__name__}")
        if len(grads) != len(self._params):
            raise ValueError(f"grads has {len(grads)} arrays but the optimizer has {len(self._params)} params")
        for i, g in enumerate(grads):
            name = f"grads[{i}]"
            k = kind(g)
            if k is None:
                raise TypeError(f"{name} must be an array, got {type(g).__name__}")
            if (k not in HOST_KINDS) != self.device:
                raise TypeError(f"{name} is {'a device' if k not in HOST_KINDS else 'a host'} array but params[{i}] "
                                f"is {'a device' if self.device else 'a host'} array")
            if dtype_of(g) != self._dtypes[i]:
                raise TypeError(f"{name} has dtype {dtype_of(g)} but params[{i}] has {self._dtypes[i]}")
            if tuple(g.shape) != self._shapes[i]:
                raise ValueError(f"{name} has shape {tuple(g.shape)} but params[{i}] has shape {self._shapes[i]}")
            if self.device and not _is_c_contiguous(g):
                raise ValueError(f"{name} must be C-contiguous on the device")
        if self.device:
            return [device_array(g).reshape(-1) for g in grads]
        return [np.ascontiguousarray(host_view(g)).reshape(-1) for g in grads]

    # ---- the step ----------------------------------------------------------------------------------------------------
    def step(self, grads, grad_scale=None, stream=None) -> bool:
        r"""Update every parameter in place from ``grads`` (one array per parameter, same shape, dtype and side).

        Args:
            grads: list of gradient arrays, in the order of ``params``.
            grad_scale: optional loss scale (mixed precision): gradients are divided by it, and if any gradient
                holds inf or NaN the step is skipped (parameters, state and ``step_count`` unchanged).

        With ``grad_scale`` or ``max_grad_norm`` a check pass runs first (non-finite gradients skip the step;
        clipping scales gradients by :math:`\min(1, c / (\lVert g \rVert_2 + 10^{-6}))` with the global L2 norm of
        the unscaled gradients). Without either, non-finite gradients propagate as in ``torch.optim``.

        Returns:
            True if the step was applied, False if it was skipped.
        """
        hp = self.hyperparams()
        self._check_hyper(hp)
        if grad_scale is not None:
            grad_scale = check_real("grad_scale", grad_scale, low=0.0, low_open=True)
        flat = self._flat_grads(grads)
        self._stream = stream_of(stream, self._params[0]) if self.device else 0
        launches = 0
        gscale = 1.0
        max_norm = hp.get("max_grad_norm")
        if grad_scale is not None or max_norm is not None:
            sq, bad, launches = self._check_pass(flat)
            if bad:
                self.last_launches = launches
                return False
            inv = 1.0 / grad_scale if grad_scale is not None else 1.0
            gscale = inv
            if max_norm is not None:
                norm = math.sqrt(sq) * inv
                gscale = inv * min(1.0, max_norm / (norm + 1e-6))
        self.last_launches = launches + self._apply(flat, hp, gscale)
        return True

    def step_scaled(self, grads, scale) -> None:
        r"""Apply one step with every gradient multiplied by ``scale``: no check pass, no clipping, no skipping.

        For a caller that decided skip and clip itself, from a norm and a count of non-finite values it computed
        elsewhere (:class:`gpunn.distributed.ShardedOptimizer`: over the shards of every rank). ``max_grad_norm`` is
        not applied here. Arguments are checked as in :meth:`step`; ``scale`` must be finite and > 0.

        Example:
            >>> import numpy as np, gpunn
            >>> p = np.array([1.0, 2.0])
            >>> gpunn.optim.SGD([p], lr=1.0).step_scaled([np.array([4.0, 8.0])], 0.25)   # p -= 1.0 * 0.25 g
            >>> p
            array([0., 0.])
        """
        hp = self.hyperparams()
        self._check_hyper(hp)
        scale = check_real("scale", scale, low=0.0, low_open=True)
        self.last_launches = self._apply(self._flat_grads(grads), hp, scale)

    def _apply(self, flat, hp, gscale):
        """The update proper (gradients times ``gscale``); returns the launches."""
        launches = 0
        step = self._step + 1
        uses = tuple(bool(u) for u in self._uses(hp))
        scalars = self._scalars(hp, step, gscale)
        for group in self._groups:
            for s in range(N_STATE):
                if uses[s]:
                    group.ensure_state(s)
        for group in self._groups:
            launches += self._update_group(group, flat, uses, scalars)
        self._step = step
        self._after_step(hp)
        return launches

    def _check_pass(self, flat):
        sq = 0.0
        bad = 0.0
        launches = 0
        for group in self._groups:
            if self.device:
                kernel = _check_launcher(group.dtype, group.width, threads_per_block())
                gviews = [flat[i] for i in group.indices]
                for batch in group.batches:
                    kernel(batch.blocks, batch.threads, self._stream, batch.tuple_of(gviews, group.width),
                           device_array(batch.table), device_array(batch.partials))
                    launches += 1
                    synchronize_stream(self._stream)
                    part = batch.partials.copy_to_host()
                    sq += float(part[0].sum())
                    bad += float(part[1].sum())
            else:
                for i in group.indices:
                    if flat[i].size:
                        s, b = _cpu.run(_grad_sum_cpu, "optim", flat[i].size, flat[i], CHUNK_CPU)
                        sq += s
                        bad += b
        return sq, bad, launches

    def _update_group(self, group, flat, uses, scalars):
        h = _typed(group.dtype, *scalars)
        states = [group.state[s] if uses[s] else group.dummy for s in range(N_STATE)]
        if self.device:
            kernel = _step_launcher(self._math(group.dtype), group.dtype, group.width, len(h))
            gviews = [flat[i] for i in group.indices]
            states = [device_array(a) for a in states]
            for batch in group.batches:
                kernel(batch.blocks, batch.threads, self._stream, batch.tuple_of(group.views, group.width),
                       batch.tuple_of(gviews, group.width), device_array(batch.table), *states, *uses, h)
            return len(group.batches)
        update = self._math(group.dtype)
        for pos, i in enumerate(group.indices):
            n = group.views[pos].size
            if n:
                st = [group.state_slice(s, pos) if uses[s] else group.dummy for s in range(N_STATE)]
                _cpu.run(step_cpu(update, group.dtype, uses), "optim", n, group.views[pos], flat[i], *st, h)
        return 0

    def _after_step(self, hp):
        pass

    # ---- state_dict --------------------------------------------------------------------------------------------------
    def state_views(self, i) -> dict:
        """Views, without a copy, of parameter ``i``'s state tensors that the current hyperparameters use, by name,
        each shaped like the parameter (NumPy arrays on the host, Numba device arrays on the device). State not made
        yet is created as zeros, as a first step would. Writing into a view writes the optimizer's state; the views
        stay valid until :meth:`load_state_dict`, which replaces the state buffers.

        Example:
            >>> import numpy as np, gpunn
            >>> p = np.ones(2, np.float32)
            >>> opt = gpunn.optim.SGD([p], lr=0.1, momentum=0.9)
            >>> opt.step([np.ones(2, np.float32)])
            True
            >>> opt.state_views(0)
            {'momentum_buffer': array([1., 1.], dtype=float32)}
        """
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or not 0 <= i < len(self._params):
            raise ValueError(f"i must be a parameter index in [0, {len(self._params)}), got {i!r}")
        uses = self._uses(self.hyperparams())
        group, pos = self._where[int(i)]
        views = {}
        for s, name in enumerate(self.STATE):
            if uses[s]:
                for g in self._groups:
                    g.ensure_state(s)
                views[name] = group.state_slice(s, pos).reshape(self._shapes[i])
        return views

    def state_dict(self) -> dict:
        """Everything needed to resume, as a flat dict of NumPy arrays and Python scalars (copies).

        Works with ``np.savez(path, **opt.state_dict())`` / ``dict(np.load(path))`` and with pickle. Keys:
        ``optimizer``, ``step``, ``num_params``, each hyperparameter (``max_grad_norm`` None is saved as NaN),
        optimizer flags, and ``<state name>.<i>`` for each state tensor of parameter ``i`` (its shape and dtype)."""
        sd = {"optimizer": self.NAME, "step": self._step, "num_params": len(self._params)}
        for name, how in self.HYPER.items():
            v = getattr(self, name)
            if how == "opt_real":
                v = float("nan") if v is None else float(v)
            elif how == "pair":
                v = (float(v[0]), float(v[1]))
            elif how == "bool":
                v = bool(v)
            else:
                v = float(v)
            sd[name] = v
        sd.update(self._extra)
        for s, sname in enumerate(self.STATE):
            if self._groups[0].state[s] is None:
                continue
            for i in range(len(self._params)):
                group, pos = self._where[i]
                piece = group.state_slice(s, pos)
                piece = piece.copy_to_host() if self.device else np.array(piece)
                sd[f"{sname}.{i}"] = piece.reshape(self._shapes[i])
        return sd

    def load_state_dict(self, state_dict):
        """Restore hyperparameters, step count and state from :meth:`state_dict` output (or its saved form).

        Everything is checked before anything changes: a dict for another optimizer, another parameter list, with
        unknown or missing keys, or with a state array of the wrong shape or dtype raises ValueError naming it."""
        if not isinstance(state_dict, Mapping) and not hasattr(state_dict, "files"):
            raise TypeError(f"state_dict must be a dict (from state_dict() or np.load), got "
                            f"{type(state_dict).__name__}")
        sd = {k: state_dict[k] for k in (state_dict.files if hasattr(state_dict, "files") else state_dict)}
        name = _scalar(sd.get("optimizer"), str, "optimizer") if "optimizer" in sd else None
        if name != self.NAME:
            raise ValueError(f"state_dict is for optimizer {name!r}, not {self.NAME!r}")
        required = ["step", "num_params", *self.HYPER, *self.EXTRA]
        for key in required:
            if key not in sd:
                raise ValueError(f"state_dict has no {key!r} entry")
        n = _scalar(sd["num_params"], int, "num_params")
        if n != len(self._params):
            raise ValueError(f"state_dict num_params is {n} but the optimizer has {len(self._params)} params")
        step = _scalar(sd["step"], int, "step")
        if step < 0:
            raise ValueError(f"state_dict step must be >= 0, got {step}")
        hp = {}
        for hname, how in self.HYPER.items():
            v = sd[hname]
            if how == "opt_real":
                v = _scalar(v, float, hname)
                v = None if math.isnan(v) else v
            elif how == "pair":
                arr = np.asarray(v, dtype=np.float64)
                if arr.shape != (2,):
                    raise ValueError(f"state_dict {hname!r} must be a pair, got shape {arr.shape}")
                v = (float(arr[0]), float(arr[1]))
            elif how == "bool":
                v = _scalar(v, bool, hname)
            else:
                v = _scalar(v, float, hname)
            hp[hname] = v
        try:
            self._check_hyper(hp)
        except (TypeError, ValueError) as e:
            raise ValueError(f"state_dict hyperparameter: {e}") from None
        extra = {ename: _scalar(sd[ename], bool, ename) for ename in self.EXTRA}
        known = {"optimizer", *required}
        found = {s: [] for s in range(N_STATE)}
        for key in sd:
            if key in known:
                continue
            sname, _, idx = key.rpartition(".")
            if sname not in self.STATE or not idx.isdigit() or int(idx) >= n or idx != str(int(idx)):
                raise ValueError(f"state_dict has an unknown entry {key!r} for {self.NAME} (state entries are "
                                 f"'<name>.<i>' with i in 0..{n - 1} written without leading zeros)")
            s, i = self.STATE.index(sname), int(idx)
            arr = sd[key]
            if kind(arr) is None:
                raise ValueError(f"state_dict {key!r} must be an array, got {type(arr).__name__}")
            arr = np.asarray(host_view(arr)) if kind(arr) in HOST_KINDS else np.asarray(_to_host(arr))
            if arr.shape != self._shapes[i] or arr.dtype != self._dtypes[i]:
                raise ValueError(f"state_dict {key!r} has shape {arr.shape} and dtype {arr.dtype} but params[{i}] "
                                 f"has shape {self._shapes[i]} and dtype {self._dtypes[i]}")
            found[s].append((i, arr))
        for s, items in found.items():
            if items and len(items) != n:
                have = {i for i, _ in items}
                missing = next(i for i in range(n) if i not in have)
                raise ValueError(f"state_dict has no {self.STATE[s]}.{missing!r} entry (it has other "
                                 f"{self.STATE[s]} entries)")
        # everything is valid: write
        for hname, v in hp.items():
            object.__setattr__(self, hname, v)
        self._step = step
        self._extra = extra
        for group in self._groups:
            for s in range(N_STATE):
                if not found[s]:
                    group.state[s] = None
                    continue
                flat = np.empty(group.total, group.dtype)
                for i, arr in found[s]:
                    g, pos = self._where[i]
                    if g is group:
                        flat[group.offsets[pos]:group.offsets[pos + 1]] = arr.reshape(-1)
                group.state[s] = cuda.to_device(flat) if self.device else flat

    def __repr__(self):
        hp = ", ".join(f"{k}={v!r}" for k, v in self.hyperparams().items())
        return f"{type(self).__name__}({len(self._params)} params, {hp})"

    # ---- to be given by subclasses -----------------------------------------------------------------------------------
    def _validate(self, hp):
        raise NotImplementedError

    def _uses(self, hp):
        raise NotImplementedError

    def _scalars(self, hp, step, gscale):
        raise NotImplementedError

    def _math(self, dtype):
        raise NotImplementedError


def _check_disjoint(params):
    """ValueError naming two parameters that share memory (the same array twice would be stepped twice)."""
    spans = []
    for i, x in enumerate(params):
        n = int(np.prod(x.shape, dtype=np.int64))
        if n:
            start = _address(x)
            spans.append((start, start + n * dtype_of(x).itemsize, i))
    spans.sort()
    for (_, end, i), (start, _, j) in zip(spans, spans[1:]):
        if start < end:
            i, j = sorted((i, j))
            raise ValueError(f"params[{i}] and params[{j}] share memory: each parameter must be passed once, and "
                             "views of one buffer must not overlap")


def _address(x):
    """The address of a C-contiguous array's first element (host or device; simulator arrays: their host memory)."""
    if kind(x) in HOST_KINDS:
        return host_view(x).__array_interface__["data"][0]
    return device_array(x).ptr


def _to_host(x):
    from .._arrays import to_host

    return to_host(x)


def _scalar(v, typ, name):
    """A Python scalar from a state_dict value (a Python scalar, or a 0-d array after np.savez/np.load)."""
    if isinstance(v, np.ndarray):
        if v.ndim != 0:
            raise ValueError(f"state_dict {name!r} must be a scalar, got shape {v.shape}")
        v = v.item()
    if typ is str:
        if not isinstance(v, str):
            raise ValueError(f"state_dict {name!r} must be a string, got {v!r}")
        return v
    if typ is bool:
        if not isinstance(v, (bool, np.bool_)):
            raise ValueError(f"state_dict {name!r} must be True or False, got {v!r}")
        return bool(v)
    if typ is int:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise ValueError(f"state_dict {name!r} must be an integer, got {v!r}")
        return int(v)
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise ValueError(f"state_dict {name!r} must be a number, got {v!r}")
    return float(v)


# ----------------------------------------------------------------------------------------------------------------------
# Registry
# ----------------------------------------------------------------------------------------------------------------------
def register_step(name, math_for_dtype, n_scalars):
    """Register an optimizer's fused step kernel (float32 and float64) at the full batch width."""
    w = MAX_TENSORS_PER_LAUNCH

    _registry.for_dtypes(f"{name}_step", lambda dt: step_kernel(math_for_dtype(dt), dt),
                         lambda dt: _step_signature(dt, w, n_scalars))


def _step_signature(dt, width, n_scalars):
    arr = f"{dt}[::1]"
    return (f"void(UniTuple({arr}, {width}), UniTuple({arr}, {width}), int64[:, ::1], {arr}, {arr}, {arr}, "
            f"boolean, boolean, boolean, UniTuple({dt}, {n_scalars}))")


def _check_signature(dt, width):
    return f"void(UniTuple({dt}[::1], {width}), int64[:, ::1], float64[:, ::1])"


@functools.lru_cache(maxsize=None)
def _step_launcher(update, dtype, width, n_scalars):
    return Kernel(step_kernel(update, dtype), _step_signature(np.dtype(dtype).name, width, n_scalars), "optim_step")


@functools.lru_cache(maxsize=None)
def _check_launcher(dtype, width, block):
    return Kernel(check_kernel(block), _check_signature(np.dtype(dtype).name, width), "optim_grad_sum")


def _register():
    w = MAX_TENSORS_PER_LAUNCH
    _registry.for_dtypes("optim_grad_sum", lambda dt: check_kernel(256), lambda dt: _check_signature(dt, w),
                         f64_accumulator=True)


_register()
