"""The optimizer base class: parameters, hyperparameters, the step (CPU or device), its lazy result.

A subclass gives the math and names, as optax composes a transform: ``NAME``; ``HYPER`` (name -> "real" | "bool" |
"pair" | "opt_real", in constructor order); ``STATE`` (names of state tensors 0..2); ``EXTRA`` (a flag kept in the
state_dict, at most one); ``_validate(hp)``; ``_flags(hp)`` (the options that specialise the compiled math);
``_uses(hp)`` (which state tensors exist); ``_host(hp)`` (the step-independent scalars, float64); ``MATH(dtype,
flags)`` -> ``(prepare, update)``, where ``prepare(host, t, gscale, flag)`` gives the step's scalars (bias
corrections from the applied-step count ``t``, the unscale/clip factor) and ``update(p, g, s0, s1, s2, k)`` is the
per-element update. The kernels are in :mod:`gpunn.optim._kernels`, ``state_dict`` in :mod:`gpunn.optim._state`.
"""

from __future__ import annotations

import numpy as np

from .. import _cpu, _half, _vector
from .._args import check_real
from .._arrays import FLOAT_DTYPES, HOST_KINDS, device_array, dtype_of, host_view, is_c_contiguous, kind
from .._launch import Kernel, block_size, sm_count, stream_of
from .._runtime import require_device, simulator
from . import _kernels, _state
from ._kernels import RING, STATUS_COUNT, STATUS_FLAG, STATUS_RING

N_STATE = 3  # state tensors an optimizer may keep per parameter (Adam: m, v, vmax)


def threads_per_block() -> int:
    return _kernels.THREADS_SIM if simulator() else block_size()


def chunk_size() -> int:
    return _kernels.CHUNK_SIM if simulator() else _kernels.CHUNK_GPU


class StepResult:
    """Whether a device step was applied (False: skipped on a non-finite gradient), read when asked.

    ``bool(result)`` waits for the step to finish (a synchronisation) and reads its flag; the flag of one step stays
    readable for the next ``RING`` (64) steps. Compares equal to True or False. A step captured in a CUDA graph
    writes its flag to the captured call's slot on every replay: a replay gives no result of its own (read
    ``step_count``, which counts applied replays).

    >>> w = gpunn.to_device(np.ones(3, np.float32))
    >>> opt = gpunn.optim.SGD([w], lr=0.1)
    >>> opt.step([gpunn.to_device(np.ones(3, np.float32))], grad_scale=1.0) == True
    True
    >>> bad = gpunn.to_device(np.array([1, np.nan, 1], np.float32))
    >>> bool(opt.step([bad], grad_scale=1.0))  # skipped: w is unchanged
    False
    >>> gpunn.to_host(w)
    array([0.9, 0.9, 0.9], dtype=float32)
    """

    def __init__(self, opt, call):
        self._opt, self._call = opt, call

    def __bool__(self):
        if self._opt._calls - self._call > RING:
            raise RuntimeError(f"this step's result was overwritten: read it within {RING} steps")
        return bool(self._opt._read_status()[STATUS_RING + self._call % RING] == 0.0)

    def __eq__(self, other):
        return bool(self) == other

    def __hash__(self):
        return hash(bool(self))

    def __repr__(self):
        return f"StepResult({bool(self)})"


class _Group:
    """The parameters of one dtype: their flat views, the state buffers, and (device) the tables of one launch."""

    def __init__(self, dtype, indices, views, device):
        self.dtype = dtype
        self.indices = indices                   # positions in the user's params list
        self.views = views                       # 1-D views of the params (NumPy arrays or DeviceArrays)
        self.device = device
        w = _vector.width(dtype)
        sizes = [v.size for v in views]
        padded = [-(-n // w) * w for n in sizes]  # each parameter's state starts on a 16-byte boundary
        self.offsets = np.concatenate([[0], np.cumsum(padded)]).astype(np.int64)
        self.sizes = sizes
        self.total = int(self.offsets[-1])
        self.state = [None] * N_STATE            # flat buffers (NumPy, or Numba device arrays), made when first needed
        self.state_views = [None] * N_STATE      # their DeviceArrays (device)
        if device:
            self._device_tables(sizes)

    def _device_tables(self, sizes):
        from numba import cuda

        rows = []
        chunk = chunk_size()
        for slot, n in enumerate(sizes):
            for start in range(0, n, chunk):
                rows.append((slot, start, min(chunk, n - start), int(self.offsets[slot]) + start))
        self.n_chunks = len(rows)
        self.chunks = device_array(cuda.to_device(np.array(rows, np.int64).reshape(-1, 4)))
        self.tensors_host = None                 # the last uploaded tensor table (host copy)
        self.tensors_dev = cuda.device_array((len(sizes), 4), np.int64)
        self.tensors = device_array(self.tensors_dev)
        self.dummy = device_array(cuda.device_array(_vector.width(self.dtype), self.dtype))
        waves = 2 if simulator() else sm_count() * 4
        self.blocks = max(1, min(self.n_chunks, waves))  # fixed per size and device: the check sums deterministic

    def ensure_state(self, s):
        if self.state[s] is None:
            zeros = np.zeros(self.total, self.dtype)
            if self.device:
                from numba import cuda

                self.state[s] = cuda.to_device(zeros)
                self.state_views[s] = device_array(self.state[s])
            else:
                self.state[s] = zeros

    def state_slice(self, s, pos):
        start = int(self.offsets[pos])
        return self.state[s][start:start + self.sizes[pos]]

    def tensor_table(self, grads, stream):
        """Point the device tensor table at ``grads`` (DeviceArrays of this group's parameters): uploaded on ``stream``
        only when an address changed since the last step."""
        rows = []
        for v, g in zip(self.views, grads):  # the state offsets are multiples of the vector width already
            aligned = v.ptr % _vector.ALIGN == 0 and g.ptr % _vector.ALIGN == 0
            rows.append((v.ptr, g.ptr, v.size, int(aligned)))
        table = np.array(rows, np.int64).reshape(-1, 4)
        if self.tensors_host is None or not np.array_equal(table, self.tensors_host):
            _upload(self.tensors_dev, table, stream)
            self.tensors_host = table


def _upload(dst, host, stream):
    """Copy ``host`` into the Numba device array ``dst`` on stream handle ``stream`` (ordered after the work already
    queued there; the driver stages pageable memory, so ``host`` may change once this returns)."""
    if simulator():
        dst.copy_to_device(host)
        return
    from numba import cuda

    dst.copy_to_device(host, stream=cuda.external_stream(stream) if stream else 0)


class Optimizer:
    """Base class of gpunn's optimizers (see the module docstring for what a subclass gives)."""

    NAME = "Optimizer"
    HYPER: dict = {}
    STATE: tuple = ()
    EXTRA: dict = {}

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
        self._shapes = [tuple(int(s) for s in x.shape) for x in params]
        self._dtypes = [dtype_of(x) for x in params]
        by_dtype = {}
        for i, dt in enumerate(self._dtypes):
            by_dtype.setdefault(dt, []).append(i)
        self._groups, self._where = [], {}  # user index -> (group, position in group)
        for dt in sorted(by_dtype, key=lambda d: d.itemsize):
            idx = by_dtype[dt]
            group = _Group(dt, idx, [self._flat(params[i]) for i in idx], self.device)
            for pos, i in enumerate(idx):
                self._where[i] = (group, pos)
            self._groups.append(group)
        for name, value in hyper.items():
            object.__setattr__(self, name, value)
        self._step, self._flag = 0, 0.0  # host copies (the device keeps its own in the status buffer)
        self._calls = 0                   # step calls on the device (the result ring)
        self._checked_hp = None
        self._last_grads = None
        self.last_launches = 0
        if self.device:
            from numba import cuda

            self._status = cuda.to_device(np.zeros(STATUS_RING + RING, np.float64))
            self._status_view = device_array(self._status)
            self._arrivals = cuda.to_device(np.zeros(1, np.int32))  # blocks of the running step kernel that finished
            self._arrivals_view = device_array(self._arrivals)
            blocks = sum(g.blocks for g in self._groups)
            self._partials = device_array(cuda.to_device(np.zeros((2, blocks), np.float64)))

    # ---- hyperparameters -------------------------------------------------------------------------------------------
    def hyperparams(self) -> dict:
        """The current hyperparameters, by name."""
        return {name: getattr(self, name) for name in self.HYPER}

    def set(self, **hyper):
        """Change hyperparameters (an lr schedule, ...): validated together, then applied; nothing recompiles
        unless an option that specialises the math (e.g. ``amsgrad``) changes.

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

    def _valid_hyperparams(self) -> dict:
        """The hyperparameters, checked (once per distinct set of values)."""
        hp = self.hyperparams()
        key = tuple((k, tuple(v) if isinstance(v, (list, np.ndarray)) else v) for k, v in hp.items())
        if key != self._checked_hp:
            self._check_hyper(hp)
            self._checked_hp = key
        return hp

    @property
    def step_count(self) -> int:
        """Steps applied so far (skipped steps do not count). On the device this reads the count back (a sync)."""
        if self.device:
            return int(self._read_status()[STATUS_COUNT])
        return self._step

    @property
    def params(self) -> list:
        return list(self._params)

    # ---- parameters and gradients ----------------------------------------------------------------------------------
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
                    require_device(f"{name} (a device array)")
            elif on_device != device:
                raise TypeError(f"{name} is {'a device' if on_device else 'a host'} array but params[0] is "
                                f"{'a device' if device else 'a host'} array: all parameters must be on one side")
            if dtype_of(x) not in FLOAT_DTYPES:
                raise TypeError(f"{name} must be float32 or float64, got {dtype_of(x)}"
                                + (": float16/bfloat16 are not supported by the optimizers yet"
                                   if _half.is_half(dtype_of(x)) else ""))
            if not is_c_contiguous(x):
                raise ValueError(f"{name} must be C-contiguous (the optimizer updates it in place)")
            if not on_device and not host_view(x).flags.writeable:
                raise ValueError(f"{name} is read-only")
        return device

    def _flat(self, x):
        return device_array(x).flat() if self.device else host_view(x).reshape(-1)

    def _flat_grads(self, grads):
        """Check every gradient against its parameter, then give 1-D views (host or device, as the params). A list of
        the very same Numba or CuPy arrays as last step (their addresses cannot change) is not checked again."""
        if kind(grads) is not None or not isinstance(grads, (list, tuple)):
            raise TypeError(f"grads must be a list of arrays, one per parameter, got {type(grads).__name__}")
        last = self._last_grads
        if last is not None and len(grads) == len(last[0]) and all(a is b for a, b in zip(grads, last[0])):
            return last[1]
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
            if self.device and not is_c_contiguous(g):
                raise ValueError(f"{name} must be C-contiguous on the device")
        if self.device:
            flat = [device_array(g).flat() for g in grads]
            if all(kind(g) in ("numba", "cupy") for g in grads):
                self._last_grads = (list(grads), flat)
            return flat
        return [np.ascontiguousarray(host_view(g)).reshape(-1) for g in grads]

    # ---- the step --------------------------------------------------------------------------------------------------
    def step(self, grads, grad_scale=None, stream=None):
        r"""Update every parameter in place from ``grads`` (one array per parameter, same shape, dtype and side).

        Args:
            grads: list of gradient arrays, in the order of ``params``.
            grad_scale: optional loss scale (mixed precision): gradients are divided by it, and if any gradient
                holds inf or NaN the step is skipped (parameters, state and ``step_count`` unchanged).
            stream: CUDA stream for a device step (default: the current stream of the parameters' library).

        With ``grad_scale`` or ``max_grad_norm`` a check pass runs first (non-finite gradients skip the step;
        clipping scales gradients by :math:`\min(1, c / (\lVert g \rVert_2 + 10^{-6}))` with the global L2 norm of
        the unscaled gradients). Without either, non-finite gradients propagate as in ``torch.optim``.

        Returns:
            On the CPU, True if the step was applied, False if it was skipped. On the device the decision is made
            by the kernels, so nothing is read back: a :class:`StepResult` whose ``bool()`` waits for the step and
            reads it (compare it with ``== True``, not ``is True``).

        A device step can be captured in a CUDA graph (PyTorch's ``torch.cuda.graph``) once an eager step with the
        same gradient arrays has run (it compiles, makes the state and uploads the table of addresses): the step
        count stays on the device, so each replay advances it.
        """
        hp = self._valid_hyperparams()
        if grad_scale is not None:
            grad_scale = check_real("grad_scale", grad_scale, low=0.0, low_open=True)
        flat = self._flat_grads(grads)
        check = grad_scale is not None or hp.get("max_grad_norm") is not None
        inv_scale = 1.0 / grad_scale if grad_scale is not None else 1.0
        return self._apply(flat, hp, check, inv_scale, stream)

    def step_scaled(self, grads, scale, stream=None) -> None:
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
        hp = self._valid_hyperparams()
        scale = check_real("scale", scale, low=0.0, low_open=True)
        self._apply(self._flat_grads(grads), hp, False, scale, stream)

    def _apply(self, flat, hp, check, inv_scale, stream):
        uses = tuple(bool(u) for u in self._uses(hp))
        flags = tuple(self._flags(hp))
        host = tuple(float(v) for v in self._host(hp))
        max_norm = hp.get("max_grad_norm") or 0.0
        for group in self._groups:
            for s in range(N_STATE):
                if uses[s]:
                    group.ensure_state(s)
        if self.device:
            return self._apply_device(flat, flags, uses, host, check, inv_scale, max_norm, stream)
        return self._apply_cpu(flat, flags, uses, host, check, inv_scale, max_norm)

    def _apply_cpu(self, flat, flags, uses, host, check, inv_scale, max_norm):
        sq = bad = 0.0
        if check:
            for g in flat:
                if g.size:
                    s, b = _cpu.run(_kernels.grad_sum_cpu, "optim", g.size, g, _kernels.CHUNK_CPU)
                    sq, bad = sq + s, bad + b
        gscale, skip = _kernels.decision(sq, bad, int(check), inv_scale, float(max_norm))
        self.last_launches = 0
        if skip:
            return False
        for group in self._groups:
            prepare, update = self.MATH(group.dtype, flags)
            cast = group.dtype.type  # a compiled function hands its float32 results back to Python as floats
            k = tuple(cast(v) for v in prepare(host, float(self._step + 1), gscale, self._flag))
            loops = _kernels.step_cpu(update, group.dtype, uses)
            for pos, i in enumerate(group.indices):
                n = group.views[pos].size
                if n:
                    st = [group.state_slice(s, pos) if uses[s] else _EMPTY[group.dtype] for s in range(N_STATE)]
                    _cpu.run(loops, "optim", n, group.views[pos], flat[i], *st, k)
        self._step += 1
        if uses[0]:
            self._flag = 1.0
        return True

    def _apply_device(self, flat, flags, uses, host, check, inv_scale, max_norm, stream):
        stream = stream_of(stream, self._params[0])
        block = threads_per_block()
        launches = 0
        first = 0
        if check:
            for group in self._groups:
                group.tensor_table([flat[i] for i in group.indices], stream)
                kernel = _check_kernel(group.dtype, block)
                kernel(group.blocks, block, stream, group.chunks, group.tensors, self._partials, np.int64(first))
                first += group.blocks
                launches += 1
        for position, group in enumerate(self._groups):
            if not check:
                group.tensor_table([flat[i] for i in group.indices], stream)
            states = [np.int64(group.state_views[s].ptr if uses[s] else 0) for s in range(N_STATE)]
            kernel = _step_kernel(self.MATH(group.dtype, flags), group.dtype, uses, block, len(host))
            last = position == len(self._groups) - 1  # the step's last kernel commits the count
            kernel(group.blocks, block, stream, group.chunks, group.tensors, *states, host, self._partials,
                   np.int64(check), float(inv_scale), float(max_norm), self._status_view, self._arrivals_view,
                   np.int64(last), np.int64(self._calls % RING))
            launches += 1
        self.last_launches = launches
        result = StepResult(self, self._calls)
        self._calls += 1
        return result

    def _read_status(self) -> np.ndarray:
        from .._launch import synchronize_stream

        synchronize_stream(stream_of(None, self._params[0]))
        return self._status.copy_to_host()

    # ---- state -----------------------------------------------------------------------------------------------------
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
        optimizer flags, and ``<state name>.<i>`` for each state tensor of parameter ``i`` (its shape and dtype).
        On the device it waits for the pending steps (it reads the state back)."""
        return _state.state_dict(self)

    def load_state_dict(self, state_dict):
        """Restore hyperparameters, step count and state from :meth:`state_dict` output (or its saved form).

        Everything is checked before anything changes: a dict for another optimizer, another parameter list, with
        unknown or missing keys, or with a state array of the wrong shape or dtype raises ValueError naming it."""
        _state.load_state_dict(self, state_dict)

    def _counters(self):
        """(applied steps, flag), read from the device status on the device."""
        if self.device:
            status = self._read_status()
            return int(status[STATUS_COUNT]), float(status[STATUS_FLAG])
        return self._step, self._flag

    def _set_counters(self, step, flag):
        self._step, self._flag = int(step), float(flag)
        if self.device:
            status = np.zeros(STATUS_RING + RING, np.float64)
            status[STATUS_COUNT:STATUS_COUNT + 2] = step  # both slots alike: slot 0 is read, slot 1 rewritten
            status[STATUS_FLAG:STATUS_FLAG + 2] = flag
            from .._launch import synchronize_stream

            synchronize_stream(stream_of(None, self._params[0]))
            self._status.copy_to_device(status)
            self._arrivals.copy_to_device(np.zeros(1, np.int32))

    def __repr__(self):
        hp = ", ".join(f"{k}={v!r}" for k, v in self.hyperparams().items())
        return f"{type(self).__name__}({len(self._params)} params, {hp})"

    # ---- to be given by subclasses ---------------------------------------------------------------------------------
    def _validate(self, hp):
        raise NotImplementedError

    def _flags(self, hp):
        raise NotImplementedError

    def _uses(self, hp):
        raise NotImplementedError

    def _host(self, hp):
        raise NotImplementedError


_EMPTY = {dt: np.zeros(1, dt) for dt in FLOAT_DTYPES}  # a stand-in for a state tensor a step does not use


def _step_kernel(math_fns, dtype, uses, block, n_host):
    return _launcher("step", math_fns, dtype, uses, block, n_host)


def _check_kernel(dtype, block):
    return _launcher("check", None, dtype, None, block, 0)


_LAUNCHERS = {}


def _launcher(what, math_fns, dtype, uses, block, n_host):
    key = (what, math_fns, np.dtype(dtype).str, uses, block, n_host)
    kernel = _LAUNCHERS.get(key)
    if kernel is None:
        if what == "step":
            kernel = Kernel(_kernels.step_dispatcher(math_fns, dtype, uses, block),
                            _kernels.step_signature(dtype, n_host), "optim_step")
        else:
            kernel = Kernel(_kernels.check_dispatcher(dtype, block), _kernels.check_signature(dtype),
                            "optim_grad_sum")
        _LAUNCHERS[key] = kernel
    return kernel


def _check_disjoint(params):
    """ValueError naming two parameters that share memory (the same array twice would be stepped twice)."""
    spans = []
    for i, x in enumerate(params):
        n = int(np.prod(x.shape, dtype=np.int64))
        if n:
            start = host_view(x).__array_interface__["data"][0] if kind(x) in HOST_KINDS else device_array(x).ptr
            spans.append((start, start + n * dtype_of(x).itemsize, i))
    spans.sort()
    for (_, end, i), (start, _, j) in zip(spans, spans[1:]):
        if start < end:
            i, j = sorted((i, j))
            raise ValueError(f"params[{i}] and params[{j}] share memory: each parameter must be passed once, and "
                             "views of one buffer must not overlap")


def register_step(name, math_for, n_host, variants):
    """Register an optimizer's step kernel with the kernel build check, per dtype, for each ``(flags, uses)`` in
    ``variants`` (the first unsuffixed: say the defaults, then every option on)."""
    from .. import _registry

    for k, (flags, uses) in enumerate(variants):
        suffix = "" if k == 0 else "[" + ",".join(str(int(f)) for f in flags) + "]"
        _registry.for_dtypes(f"{name}_step{suffix}",
                             lambda dt, flags=flags, uses=uses: _kernels.step_dispatcher(
                                 math_for(np.dtype(dt), flags), np.dtype(dt), uses, 256),
                             lambda dt: _kernels.step_signature(dt, n_host), f64_accumulator=True, vector_loads=True)


def _register_check():
    from .. import _registry

    _registry.for_dtypes("optim_grad_sum", lambda dt: _kernels.check_dispatcher(np.dtype(dt), 256),
                         _kernels.check_signature, f64_accumulator=True, vector_loads=True)


_register_check()
__all__ = ["Optimizer", "StepResult"]
