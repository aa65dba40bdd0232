r"""Shared pieces of the losses: reduction, 0-d results, the upstream gradient, and the pointwise loss engine.

Reductions (PyTorch's): ``"none"`` returns the per-element losses; ``"sum"`` their sum; ``"mean"`` their sum divided
by the number of elements. The 'mean' of an EMPTY input is NaN, as in PyTorch (0/0), and its gradient is an empty
array.

Reduced losses are 0-d arrays of the input's kind and dtype: a 0-d NumPy array for NumPy inputs; for device inputs a
0-d device array that stays on the device (nothing is copied back, so a training loop does not synchronise). Numba
device arrays have no ``__float__``, so gpunn returns them as a ``DeviceScalar``: a subclass of the Numba device
array class whose ``float()`` and ``.item()`` copy the one value back (it is a Numba device array for everything
else). CuPy and PyTorch 0-d arrays support ``float()`` themselves.

Sums are deterministic: on the device, block partials in float64 then one fixed-order pass (gpunn/_reduce.py's block
tree, and :func:`finish_scalar` here, which takes the mean/sum scale as a kernel argument so that no host-to-device
copy, hence no implicit synchronisation, happens per call); on the CPU, fixed chunks of ``CPU_CHUNK`` elements summed
in float64 (in parallel for large inputs), then the chunk sums in order. The same input gives the same bits every run.

The upstream gradient ``grad`` of a ``*_backward``/``*_with_grad`` call is, with ``s`` = 1/numel for 'mean' and 1
for 'sum'/'none':

* ``None``: 1 (the gradient of the loss itself);
* a Python/NumPy real: ``g`` (for 'none' it multiplies every element);
* for 'mean'/'sum': a one-element array (0-d or shape (1,)): a host array (NumPy, PyTorch CPU) is read as a
  number; a device array must have the call's kind and dtype (e.g. the gradient a framework holds on the device for
  a 0-d loss) and is read by the kernel, never copied to the host;
* for 'none': an array of the input's shape.

Pointwise losses (mse, l1, huber, smooth_l1, bce, hinge) share one engine: a loss module writes its scalar math once
as ``f(x, t, p, a, b) -> (loss, dloss/dx)`` (``p``: a broadcast per-element parameter, BCE's pos_weight, else 1;
``a``, ``b``: scalar parameters such as delta or margin), and this module builds from it the CUDA kernels

* ``_forward_kernel``           out[i] = w l(x[i], t[i])                          (reduction 'none')
* ``_forward_sum_kernel``       partials[blk] = sum w l                           ('mean'/'sum', float64)
* ``_backward_kernel``          dx[i] = up(i) w dl(x[i], t[i])
* ``_with_grad_kernel``         out[i] = w l and dx[i] = up(i) w dl, one pass      ('none')
* ``_with_grad_sum_kernel``     partials[blk] = sum w l and dx[i] = up(i) w dl, one pass ('mean'/'sum')

and one fused CPU loop doing the same (parallel over fixed chunks for large inputs; each chunk in vectorisable
stages, its sum in ``_LANES`` float64 lanes added in a fixed order), so ``f`` should be branch-free for the CPU's
sake: selects between values computed on both sides, and in float32 no libm call (gpunn/activations/_vecmath.py).
``w`` is an optional broadcast weight (BCE's ``weight``).

float16 and bfloat16 inputs (gpunn/_half.py): the kernels index uint16 storage, load every operand to float32, run
the float32 ``f``, and round each output to the input's dtype as it is stored; sums accumulate in float64 and a
reduced loss is rounded once, at the end (to float32, then to the half). The loss comes back in the input's dtype,
as PyTorch's does.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import numpy as np
from numba import cuda, float64, int64, njit, prange

from .. import _cpu, _half, _registry
from .._elementwise import typed
from .._args import Args
from .._arrays import HOST_KINDS, device_array, empty_like, host_view, kind
from .._launch import Kernel, block_size, current_device_id
from .._reduce import block_partial_fn, finish, partials, reduce_grid
from .._runtime import simulator

__all__ = ["REDUCTIONS", "CPU_CHUNK", "Upstream", "check_reduction", "reduction_scale",
           "scalar_result", "upstream_grad", "broadcast_operand", "pointwise"]

REDUCTIONS = ("none", "mean", "sum")
CPU_CHUNK = 4096  # elements per CPU partial sum: fixed, so the sum order does not depend on the build or thread count


# ----------------------------------------------------------------------------------------------------------------------
# Reduction, 0-d results, upstream gradient
# ----------------------------------------------------------------------------------------------------------------------
def check_reduction(reduction) -> str:
    """``reduction`` if it is one of 'none', 'mean', 'sum', else ValueError naming ``reduction``."""
    if not isinstance(reduction, str) or reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of 'none', 'mean', 'sum', got {reduction!r}")
    return reduction


def reduction_scale(reduction: str, n: int) -> float:
    """The factor applied to the sum of the element losses: 1/n for 'mean' (NaN when n == 0, as PyTorch), else 1."""
    if reduction == "mean":
        return 1.0 / n if n else math.nan
    return 1.0


@functools.lru_cache(maxsize=None)
def _scalar_class(base):
    """A subclass of the Numba device-array class ``base`` whose ``float()`` copies its single value to the host."""

    def __float__(self):
        return float(item(self))

    def item(self):
        from .. import _errors

        _errors.check()  # a read synchronises anyway: report what the kernels found (gpunn.synchronize)
        return self.copy_to_host().reshape(-1)[0].item()

    return type("DeviceScalar", (base,), {"__float__": __float__, "item": item,
                                          "__doc__": "A 0-d Numba device array that float() can read."})


def scalar_result(args: Args, like_name: str):
    """A new 0-d array (the reduced loss) of the kind of ``args``' array ``like_name`` and of the call's dtype.

    Returns ``(user_result, flat)``: ``user_result`` goes back to the user (a 0-d NumPy array, a 0-d CuPy/PyTorch
    array, or a 0-d Numba device array that ``float()`` reads); ``flat`` is a 1-element 1-D view of the same memory
    to write the value into (a NumPy array on the host, a DeviceArray on the device).
    """
    result = empty_like(args.array(like_name), (), args.dtype)
    if not args.device:
        return result, _half.storage_view(host_view(result).reshape(1))
    if kind(result) == "numba" and not hasattr(type(result), "__float__"):
        result.__class__ = _scalar_class(type(result))
    return result, device_array(result).reshape(1).storage()


class Upstream(NamedTuple):
    """How a kernel reads the upstream gradient at element i: ``up(i) = g`` (mode 0), ``dy[0] * g`` (mode 1) or
    ``dy[i] * g`` (mode 2). ``g`` (a Python float, cast to the dtype at launch) already includes the mean/sum scale.
    ``dy`` is a 1-D array for the kernel (a placeholder of the right type in mode 0)."""

    dy: object
    mode: int
    g: float


def upstream_grad(grad, reduction: str, args: Args, shape, placeholder: str = "input") -> Upstream:
    """Parse ``grad`` (see the module docstring) for a loss over ``shape`` reduced by ``reduction``.

    An array ``grad`` is added to ``args`` as ``"grad"`` (so its kind and dtype are checked against the other arrays,
    TypeError naming grad); a wrong shape or a non-finite scalar is a ValueError naming grad. ``placeholder`` names an
    array of ``args`` handed to the kernel as ``dy`` when ``grad`` is a scalar (it is not read)."""
    n = int(np.prod(shape, dtype=np.int64))
    scale = reduction_scale(reduction, n)
    if grad is None:
        return Upstream(args.flat(placeholder), 0, scale)
    if isinstance(grad, (int, float, np.integer, np.floating)) and not isinstance(grad, bool):
        g = float(grad)
        if not math.isfinite(g):
            raise ValueError(f"grad must be finite, got {g}")
        return Upstream(args.flat(placeholder), 0, g * scale)
    if kind(grad) is None:
        raise TypeError(f"grad must be a real number or an array, got {type(grad).__name__}")
    if reduction != "none" and kind(grad) in HOST_KINDS and int(np.prod(grad.shape, dtype=np.int64)) == 1:
        return upstream_grad(float(np.asarray(host_view(grad)).reshape(-1)[0]), reduction, args, shape, placeholder)
    args.add("grad", grad)
    gshape = tuple(int(s) for s in grad.shape)
    if reduction == "none":
        if gshape != tuple(shape):
            raise ValueError(f"grad must have the input's shape {tuple(shape)} for reduction='none', got {gshape}")
        return Upstream(args.flat("grad"), 2, 1.0)
    if int(np.prod(gshape, dtype=np.int64)) != 1:
        raise ValueError(f"grad must be a scalar or a one-element array for reduction={reduction!r}, "
                         f"got shape {gshape}")
    return Upstream(args.flat("grad"), 1, scale)


@functools.lru_cache(maxsize=32)
def _device_ones(n, dtype, device_id):
    return device_array(cuda.to_device(np.ones(n, dtype)))


def default_weight(n, dtype, device: bool):
    """All-ones class weights of length ``n`` for a call without ``weight``: a NumPy array on the host; on the device a
    cached device array per (n, dtype, GPU), so that a call copies nothing from the host for it (read-only: the
    kernels never write their weight)."""
    if not device:
        return np.ones(n, dtype)
    return _device_ones(int(n), np.dtype(dtype).str, 0 if simulator() else current_device_id())


# ----------------------------------------------------------------------------------------------------------------------
# Broadcast operands (BCE's weight and pos_weight)
# ----------------------------------------------------------------------------------------------------------------------
def broadcast_operand(name: str, shape, x_shape):
    """How an operand of ``shape`` broadcasts against an input of ``x_shape``, as an index rule for a kernel:
    element i of the (flat, C-order) input uses operand element ``(i // inner) % size``.

    Supported: any shape whose non-1 axes, once left-padded to the input's rank, form one contiguous run of axes
    equal to the input's (a scalar, the full shape, (C,) for the last axis, (N, 1), ...). Returns ``inner`` (the
    product of the input's axes after that run; 1 for a trailing run). Anything else is a ValueError naming ``name``."""
    shape, x_shape = tuple(int(s) for s in shape), tuple(int(s) for s in x_shape)
    if len(shape) > len(x_shape):
        raise ValueError(f"{name} of shape {shape} has more axes than the input {x_shape}")
    padded = (1,) * (len(x_shape) - len(shape)) + shape
    for s, d in zip(padded, x_shape):
        if s != 1 and s != d:
            raise ValueError(f"{name} of shape {shape} does not broadcast to the input's shape {x_shape}")
    varying = [k for k, s in enumerate(padded) if s != 1]
    if not varying:
        return 1
    lo, hi = varying[0], varying[-1]
    if any(padded[k] != x_shape[k] for k in range(lo, hi + 1)):
        raise ValueError(f"{name} of shape {shape} broadcasts to {x_shape} in a pattern gpunn does not support: its "
                         "non-1 axes must be one contiguous run of the input's axes (e.g. the full shape, or (C,) "
                         "for the last axis); expand it to the input's shape first")
    return int(np.prod(x_shape[hi + 1:], dtype=np.int64))


# ----------------------------------------------------------------------------------------------------------------------
# The pointwise loss engine: kernels and CPU loop from one scalar function f(x, t, p, a, b) -> (loss, dloss)
# ----------------------------------------------------------------------------------------------------------------------
@njit(inline="always")
def _index(inner, size, i):
    # operand element for input element i (see broadcast_operand)
    return (i // inner) % size


@functools.lru_cache(maxsize=None)
def _device_kernels(f, dtype, block):
    # Simulator note: njit helpers cannot take (simulated) device arrays, so array reads stay in the kernels.
    # Broadcast operand: w[_index(winner, w.size, i)], or 1 when winner == 0 (no operand).
    # Upstream gradient (Upstream modes): dmode 2: dy[i] * g; 1: dy[0] * g; 0: g.
    # ld/st: storage <-> compute (gpunn/_half.py; the identity for float32/float64).
    prec = _half.precision(dtype)
    ld, st = _half.kernel_load(prec), prec.store
    (one,) = typed(prec.compute, 1.0)
    block_partial = block_partial_fn(block)

    @cuda.jit
    def _forward_kernel(x, t, w, winner, p, pinner, a, b, out):
        for i in range(int64(cuda.grid(1)), x.size, int64(cuda.gridsize(1))):
            pi = ld(p[_index(pinner, p.size, i)]) if pinner else one
            wi = ld(w[_index(winner, w.size, i)]) if winner else one
            loss, dloss = f(ld(x[i]), ld(t[i]), pi, a, b)
            out[i] = st(loss * wi)  # l = w l(x, t)

    @cuda.jit
    def _forward_sum_kernel(x, t, w, winner, p, pinner, a, b, partials):
        acc = float64(0.0)
        for i in range(int64(cuda.grid(1)), x.size, int64(cuda.gridsize(1))):
            pi = ld(p[_index(pinner, p.size, i)]) if pinner else one
            wi = ld(w[_index(winner, w.size, i)]) if winner else one
            loss, dloss = f(ld(x[i]), ld(t[i]), pi, a, b)
            acc += float64(loss * wi)
        block_partial(acc, partials, 0)

    @cuda.jit
    def _backward_kernel(x, t, w, winner, p, pinner, a, b, dy, dmode, g, dx):
        for i in range(int64(cuda.grid(1)), x.size, int64(cuda.gridsize(1))):
            pi = ld(p[_index(pinner, p.size, i)]) if pinner else one
            wi = ld(w[_index(winner, w.size, i)]) if winner else one
            up = ld(dy[i] if dmode == 2 else dy[0]) * g if dmode else g
            loss, dloss = f(ld(x[i]), ld(t[i]), pi, a, b)
            dx[i] = st(up * (wi * dloss))  # dx = up * w * dl/dx

    @cuda.jit
    def _with_grad_kernel(x, t, w, winner, p, pinner, a, b, dy, dmode, g, out, dx):
        for i in range(int64(cuda.grid(1)), x.size, int64(cuda.gridsize(1))):
            pi = ld(p[_index(pinner, p.size, i)]) if pinner else one
            wi = ld(w[_index(winner, w.size, i)]) if winner else one
            up = ld(dy[i] if dmode == 2 else dy[0]) * g if dmode else g  # read before the writes: out/dx may alias
            loss, dloss = f(ld(x[i]), ld(t[i]), pi, a, b)
            out[i] = st(loss * wi)
            dx[i] = st(up * (wi * dloss))

    @cuda.jit
    def _with_grad_sum_kernel(x, t, w, winner, p, pinner, a, b, dy, dmode, g, partials, dx):
        acc = float64(0.0)
        for i in range(int64(cuda.grid(1)), x.size, int64(cuda.gridsize(1))):
            pi = ld(p[_index(pinner, p.size, i)]) if pinner else one
            wi = ld(w[_index(winner, w.size, i)]) if winner else one
            up = ld(dy[i] if dmode == 2 else dy[0]) * g if dmode else g
            loss, dloss = f(ld(x[i]), ld(t[i]), pi, a, b)
            acc += float64(loss * wi)
            dx[i] = st(up * (wi * dloss))
        block_partial(acc, partials, 0)

    return {"forward": _forward_kernel, "forward_sum": _forward_sum_kernel, "backward": _backward_kernel,
            "with_grad": _with_grad_kernel, "with_grad_sum": _with_grad_sum_kernel}


_LANES = 16  # independent float64 accumulators of a CPU chunk sum (added in a fixed order: deterministic)


@functools.lru_cache(maxsize=None)
def _cpu_loop(f, dtype):
    # Per chunk, in stages that LLVM vectorises (loops over contiguous slices from index 0, no runtime flag inside a
    # loop, the loss functions branch-free): the broadcast operands gathered into buffers, then f over the chunk into
    # loss/gradient buffers, then the weight, the sum (_LANES float64 lanes) and the writes. Every input element of the
    # chunk is read before any output of it is written, so out/dx may alias x, t or dy.
    prec = _half.precision(dtype)
    ld, st, compute = prec.load, prec.store, prec.compute.type  # storage <-> compute (gpunn/_half.py)
    (one,) = typed(prec.compute, 1.0)
    lanes_n = _LANES

    def loop(x, t, w, winner, p, pinner, a, b, dy, dmode, g, out, dx, write_loss, want_sum, write_grad, chunk):
        # one fused pass; returns the float64 sum of the losses (fixed chunks, then the chunk sums in order)
        n = x.size
        nchunks = (n + chunk - 1) // chunk
        sums = np.zeros(nchunks, np.float64)
        for c in prange(nchunks):
            lo = c * chunk
            hi = min(n, lo + chunk)
            m = hi - lo
            xs, ts = x[lo:hi], t[lo:hi]
            lb = np.empty(m, compute)
            db = np.empty(m, compute)
            if pinner:
                pb = np.empty(m, compute)
                for i in range(m):
                    pb[i] = ld(p[_index(pinner, p.size, lo + i)])
                for i in range(m):
                    lb[i], db[i] = f(ld(xs[i]), ld(ts[i]), pb[i], a, b)
            else:
                for i in range(m):
                    lb[i], db[i] = f(ld(xs[i]), ld(ts[i]), one, a, b)
            if winner:
                wb = np.empty(m, compute)
                for i in range(m):
                    wb[i] = ld(w[_index(winner, w.size, lo + i)])
                for i in range(m):
                    lb[i] = lb[i] * wb[i]  # l = w l(x, t)
                    db[i] = wb[i] * db[i]
            if want_sum:
                lanes = np.zeros(lanes_n, np.float64)
                for j0 in range(0, m - lanes_n + 1, lanes_n):
                    for q in range(lanes_n):
                        lanes[q] += np.float64(lb[j0 + q])
                acc = 0.0
                for q in range(lanes_n):
                    acc += lanes[q]
                for j in range(m - m % lanes_n, m):
                    acc += np.float64(lb[j])
                sums[c] = acc
            if write_loss:
                outs = out[lo:hi]
                for i in range(m):
                    outs[i] = st(lb[i])
            if write_grad:
                dxs = dx[lo:hi]
                if dmode == 2:
                    dys = dy[lo:hi]
                    for i in range(m):
                        dxs[i] = st((ld(dys[i]) * g) * db[i])  # dx = up * w * dl/dx, up = dy[i] g
                else:
                    up = ld(dy[0]) * g if dmode else g
                    for i in range(m):
                        dxs[i] = st(up * db[i])
        total = 0.0
        for c in range(nchunks):
            total += sums[c]
        return total

    return _cpu.loops(loop)


class _Operands:
    """The checked, flattened operands of one pointwise loss call."""

    def __init__(self, args, x_name, t_name, w_name=None, p_name=None):
        self.args = args
        self.x = args.flat(x_name)
        self.t = args.flat(t_name)
        self.n = int(self.x.size)
        self.shape = args.shape(x_name)
        self.x_name = x_name
        self.w, self.winner = self._operand(w_name)
        self.p, self.pinner = self._operand(p_name)

    def _operand(self, name):
        if name is None:
            return self.x, 0
        inner = broadcast_operand(name, self.args.shape(name), self.shape)
        return self.args.flat(name), inner


def pointwise(f_for_dtype, what, input, target, reduction, grad=None, out=None, a=0.0, b=0.0,
              weight=None, pos_weight=None, extra_check=None, stream=None):
    """Run a pointwise loss. ``what``: 'forward', 'backward' or 'with_grad'. Returns the loss, dx, or (loss, dx).

    ``f_for_dtype(dtype)`` gives the loss's scalar njit function ``f(x, t, p, a, b) -> (loss, dloss)``. ``out``: a
    preallocated per-element loss ('forward' with reduction 'none') or dx ('backward'). ``extra_check(args, ops)``
    runs after the array checks, before any output is allocated or written (hinge's label check)."""
    reduction = check_reduction(reduction)
    args = Args(stream=stream, half=True, input=input, target=target, weight=weight, pos_weight=pos_weight)
    args.same_shape("target", "input")
    if out is not None and what == "forward" and reduction != "none":
        raise ValueError("out is only accepted with reduction='none' (a reduced loss is a new 0-d array)")
    ops = _Operands(args, "input", "target", "weight" if weight is not None else None,
                    "pos_weight" if pos_weight is not None else None)
    if extra_check is not None:
        extra_check(args, ops)
    dt = args.dtype
    compute = args.precision.compute
    ta, tb = compute.type(a), compute.type(b)
    f = f_for_dtype(compute)
    shape, n = ops.shape, ops.n

    upstream = upstream_grad(grad, reduction, args, shape) if what != "forward" else None
    dx = loss = loss_flat = None
    if what != "forward":
        dx = args.output("dx" if what == "with_grad" else "out", out if what == "backward" else None, shape)
    if what != "backward":
        if reduction == "none":
            loss = args.output("loss" if what == "with_grad" else "out", out if what == "forward" else None, shape)
            loss_flat = args.flat("loss" if what == "with_grad" else "out")
        else:
            loss, loss_flat = scalar_result(args, "input")
    dx_flat = args.flat("dx" if what == "with_grad" else "out") if dx is not None else None
    common = (ops.x, ops.t, ops.w, np.int64(ops.winner), ops.p, np.int64(ops.pinner), ta, tb)
    reduce = what != "backward" and reduction != "none"

    if args.device:
        block = block_size()
        k = _kernels(f, dt, block)
        up = (upstream.dy, np.int64(upstream.mode), compute.type(upstream.g)) if upstream else ()
        if reduce:
            blocks, _ = reduce_grid(n)
            part = partials(args, 1, blocks)
            if what == "forward":
                k["forward_sum"](blocks, block, args.stream, *common, part)
            else:
                k["with_grad_sum"](blocks, block, args.stream, *common, *up, part, dx_flat)
            finish(part, reduction_scale(reduction, n), loss_flat, args.stream, dt)
        elif n:
            key = {"forward": "forward", "backward": "backward", "with_grad": "with_grad"}[what]
            outputs = {"forward": (loss_flat,), "backward": (dx_flat,), "with_grad": (loss_flat, dx_flat)}[what]
            kernel = k[key]
            kernel.over(n, args.stream, *common, *up, *outputs)
    else:
        if upstream is None:
            upstream = Upstream(ops.x, 0, 0.0)  # forward: no gradient is written
        up = (upstream.dy, np.int64(upstream.mode), compute.type(upstream.g))
        unused = np.empty(0, args.precision.storage)  # a writable stand-in for an output the call does not write
        total = _cpu.run(_cpu_loop(f, dt), "pointwise_loss", n, *common, *up,
                         loss_flat if reduction == "none" and loss_flat is not None else unused,
                         dx_flat if dx_flat is not None else unused,
                     what != "backward" and reduction == "none", reduce, what != "forward", np.int64(CPU_CHUNK))
        if reduce:
            host_view(loss)[...] = total * reduction_scale(reduction, n)  # rounded once, to the loss's dtype
    args.finish()
    if what == "forward":
        return loss
    if what == "backward":
        return dx
    return loss, dx


# {a}: the arrays' storage dtype, {s}: the scalars' compute dtype (gpunn/_half.py)
_BASE = "{a}[::1], {a}[::1], {a}[::1], int64, {a}[::1], int64, {s}, {s}"
_UP = "{a}[::1], int64, {s}"
SIGNATURES = {
    "forward": f"void({_BASE}, {{a}}[::1])",
    "forward_sum": f"void({_BASE}, float64[:, ::1])",
    "backward": f"void({_BASE}, {_UP}, {{a}}[::1])",
    "with_grad": f"void({_BASE}, {_UP}, {{a}}[::1], {{a}}[::1])",
    "with_grad_sum": f"void({_BASE}, {_UP}, float64[:, ::1], {{a}}[::1])",
}


@functools.lru_cache(maxsize=None)
def _kernels(f, dtype, block):
    """``f``: the loss's math for the compute dtype of ``dtype`` (the arrays' dtype)."""
    dispatchers = _device_kernels(f, dtype, block)
    names = _half.signature_names(dtype)
    return {key: Kernel(dispatchers[key], sig.format(**names), f"pointwise_{key}[{f.__name__}]")
            for key, sig in SIGNATURES.items()}


def register_pointwise(name, f_for_dtype, extra=()):
    """Register the five kernels of a pointwise loss (every float dtype) with the kernel build check.
    ``extra``: more (name, build_for_dtype, signature_for_dtype) triples of the loss module."""
    block = 256  # the GPU block size (block_size() outside the simulator)
    for key, sig in SIGNATURES.items():
        _registry.for_dtypes(f"{name}_{key}",
                             (lambda dt, key=key: _device_kernels(f_for_dtype(_half.precision(dt).compute), dt,
                                                                  block)[key]),
                             (lambda dt, sig=sig: sig.format(**_half.signature_names(dt))),
                             f64_accumulator=key.endswith("_sum"), dtypes=_registry.WITH_HALF)
    for extra_name, build, sig in extra:
        _registry.for_dtypes(extra_name, build, sig, dtypes=_registry.WITH_HALF)
