r"""PReLU: leaky ReLU with a learned slope per channel.

Forward:  y = x if x > 0 else a[c] * x
Backward: dx = dy if x > 0 else a[c] * dy
          dweight[c] = sum over every axis but the channel axis of (0 if x > 0 else x * dy)       (saved: x)

``weight`` has 1 entry (one slope shared by every element) or C entries, C = x.shape[1] (the channel axis is axis 1;
an input with ndim < 2 has one channel). The element at flat index i of a C-contiguous x of shape (N, C, *rest) is in
channel c = (i // inner) % C, inner = prod(rest). The backward views x as (outer, C, inner).

dweight is a deterministic sum, accumulated in float64: on the device, per-channel block partials (gpunn._reduce)
then a fixed-order final pass; on the CPU, one float64 partial per (block of rows, channel) of a tiling fixed by the
shape (see the CPU path), then the partials summed by NumPy in float64. The same input gives the same bits every run.
One pass over memory computes dx and the dweight partials together (each element is read before its dx is written,
so that dx may alias dy or x).

Masks follow PyTorch: at x = NaN the test ``x > 0`` fails, so y = a * NaN = NaN, dx = a * dy and dweight[c] is NaN.
"""

import functools

import numpy as np
from numba import cuda, float64, int64, njit, prange

from .. import _copy, _cpu, _reduce
from .._args import Args
from .._arrays import overlap
from .._launch import Kernel, typed_view, workspace
from .._runtime import simulator

_CHUNK = 4096  # elements per CPU task (a row of (outer, C, inner) is split into chunks of this many)


# ---- scalar math (one definition, called by the CUDA kernels and by the CPU loops) ----------------------------------
@functools.lru_cache(maxsize=None)
def _math(dtype):
    zero = np.dtype(dtype).type(0.0)

    @njit(inline="always")
    def forward(x, a):
        return x if x > zero else a * x  # y = x if x > 0 else a x (NaN fails the test: a * NaN = NaN)

    @njit(inline="always")
    def backward(dy, x, a):
        return dy if x > zero else a * dy  # dx = dy if x > 0 else a dy

    return forward, backward


# ---- CUDA kernels ----------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def _prelu_forward_kernel(dtype):
    forward, _ = _math(dtype)

    @cuda.jit
    def _prelu_forward_kernel(x, weight, inner, channels, out):
        for i in range(int64(cuda.grid(1)), x.size, int64(cuda.gridsize(1))):
            c = (i // inner) % channels
            out[i] = forward(x[i], weight[c])

    return _prelu_forward_kernel


@functools.lru_cache(maxsize=None)
def _prelu_backward_kernel(dtype, block):
    _, backward = _math(dtype)
    block_partial = _reduce.block_partial_fn(block)
    zero = np.dtype(dtype).type(0.0)

    @cuda.jit
    def _prelu_backward_sum_kernel(dy, x, weight, outer, channels, inner, dx, partials):
        # grid (bx, by): block row blockIdx.y takes channels c = blockIdx.y, blockIdx.y + by, ...; for each, the bx
        # blocks stride over that channel's outer * inner elements (a fixed slice per thread: deterministic)
        m = outer * inner
        for c in range(int64(cuda.blockIdx.y), channels, int64(cuda.gridDim.y)):
            a = weight[c]
            acc = float64(0.0)
            start = int64(cuda.blockIdx.x) * int64(cuda.blockDim.x) + int64(cuda.threadIdx.x)
            for j in range(start, m, int64(cuda.gridDim.x) * int64(cuda.blockDim.x)):
                i = ((j // inner) * channels + c) * inner + j % inner
                xi = x[i]
                d = dy[i]  # read both before writing dx, which may alias dy or x
                dx[i] = backward(d, xi, a)
                if not xi > zero:
                    acc += float64(xi) * float64(d)  # dweight[c] += x * dy where x <= 0 (or NaN)
            block_partial(acc, partials, c)  # every thread of the block reaches this: the loop bounds are uniform

    return _prelu_backward_sum_kernel


def _backward_grid(channels, m):
    """(bx, by) blocks for the dweight kernel: depends on the sizes and the device only (determinism)."""
    by = min(channels, 2 if simulator() else 65535)
    bx, threads = _reduce.reduce_grid(m)
    if not simulator():
        total, _ = _reduce.reduce_grid(m * channels)
        bx = max(1, min(bx, -(-total // by)))
    return (bx, by), threads


# ---- CPU path --------------------------------------------------------------------------------------------------------
# Tasks tile x seen as (outer, C, inner), by shape only (so the dweight partials, hence the bits, never depend on the
# thread count):
# * inner > _CHUNK: a task is one _CHUNK-long piece of one (row, channel) run;
# * else: a task is a block of `rows` rows by `per_ch` channels (whole inner runs), with one float64 dweight partial
#   per (row block, channel). inner == 1 (an (N, C) input, the Linear case) loops across the channels with the
#   weight as a vector; inner > 1 loops along each inner run with the channel's slope.
# Loops run over contiguous slices from index 0 (LLVM then vectorises them); a task of one element per slice, as a
# per-(row, channel) tiling gives for (N, C) inputs, costs more in slicing than in work (it ran at 2% of copy speed).
_MIN_ROWS = 16  # rows per task at least: the partials stay below 1/16 of the elements


def _cpu_plan(outer, channels, inner):
    """(rows, per_ch, n_row_blocks): the CPU task tiling for inner <= _CHUNK (see above); sizes only."""
    per_ch = min(channels, max(1, _CHUNK // inner))
    rows = min(outer, max(_MIN_ROWS, (4 * _CHUNK) // (per_ch * inner)))
    return rows, per_ch, -(-outer // rows)


@functools.lru_cache(maxsize=None)
def _cpu_kernels(dtype):
    forward, backward = _math(dtype)
    zero = np.dtype(dtype).type(0.0)

    def cpu_forward(x, weight, outer, channels, inner, rows, per_ch, out):
        if inner > _CHUNK:
            n_chunks = (inner + _CHUNK - 1) // _CHUNK
            for t in prange(outer * channels * n_chunks):
                row = t // n_chunks
                a = weight[row % channels]
                start = row * inner + (t % n_chunks) * _CHUNK
                end = min(start + _CHUNK, row * inner + inner)
                xs, ys = x[start:end], out[start:end]
                for i in range(xs.size):
                    ys[i] = forward(xs[i], a)
            return
        n_cb = (channels + per_ch - 1) // per_ch
        n_rb = (outer + rows - 1) // rows
        for t in prange(n_rb * n_cb):
            o0 = (t // n_cb) * rows
            c0 = (t % n_cb) * per_ch
            c1 = min(channels, c0 + per_ch)
            if inner == 1:
                ws = weight[c0:c1]
                for o in range(o0, min(outer, o0 + rows)):
                    xs, ys = x[o * channels + c0:o * channels + c1], out[o * channels + c0:o * channels + c1]
                    for j in range(ws.size):
                        ys[j] = forward(xs[j], ws[j])
            else:
                for o in range(o0, min(outer, o0 + rows)):
                    for c in range(c0, c1):
                        a = weight[c]
                        base = (o * channels + c) * inner
                        xs, ys = x[base:base + inner], out[base:base + inner]
                        for k in range(inner):
                            ys[k] = forward(xs[k], a)

    @njit(inline="always")
    def _contrib(xi, d):
        p = np.float64(xi) * np.float64(d)
        return p if not xi > zero else 0.0  # dweight term: x * dy where x <= 0 (a select: no branch to mispredict)

    def cpu_backward(dy, x, weight, outer, channels, inner, rows, per_ch, dx, partials):
        # partials: (row blocks, channels) float64, zeroed by the caller; dweight = its sum over axis 0.
        # Every element is read (x, dy) before its dx is written, so dx may alias dy or x.
        if inner > _CHUNK:
            n_chunks = (inner + _CHUNK - 1) // _CHUNK
            for t in prange(outer * channels * n_chunks):
                row = t // n_chunks
                c = row % channels
                a = weight[c]
                start = row * inner + (t % n_chunks) * _CHUNK
                end = min(start + _CHUNK, row * inner + inner)
                xs, dys, dxs = x[start:end], dy[start:end], dx[start:end]
                acc = 0.0  # first the dweight partial (dx may alias dy or x), in float64, in index order
                for i in range(xs.size):
                    acc += _contrib(xs[i], dys[i])
                for i in range(xs.size):
                    dxs[i] = backward(dys[i], xs[i], a)
                partials[(row // channels) * n_chunks + t % n_chunks, c] = acc
            return
        n_cb = (channels + per_ch - 1) // per_ch
        n_rb = (outer + rows - 1) // rows
        for t in prange(n_rb * n_cb):
            rb = t // n_cb
            o0 = rb * rows
            c0 = (t % n_cb) * per_ch
            c1 = min(channels, c0 + per_ch)
            acc = partials[rb, c0:c1]  # one float64 accumulator per channel, rows added in order
            if inner == 1:
                ws = weight[c0:c1]
                for o in range(o0, min(outer, o0 + rows)):
                    lo, hi = o * channels + c0, o * channels + c1
                    xs, dys, dxs = x[lo:hi], dy[lo:hi], dx[lo:hi]
                    for j in range(ws.size):
                        xi, d = xs[j], dys[j]
                        acc[j] += _contrib(xi, d)
                        dxs[j] = backward(d, xi, ws[j])
            else:
                for o in range(o0, min(outer, o0 + rows)):
                    for c in range(c0, c1):
                        a = weight[c]
                        base = (o * channels + c) * inner
                        xs, dys, dxs = x[base:base + inner], dy[base:base + inner], dx[base:base + inner]
                        s = 0.0
                        for k in range(inner):
                            s += _contrib(xs[k], dys[k])
                        for k in range(inner):
                            dxs[k] = backward(dys[k], xs[k], a)
                        acc[c - c0] += s

    return _cpu.loops(cpu_forward), _cpu.loops(cpu_backward)


# ---- public functions ------------------------------------------------------------------------------------------------
def _layout(x, weight):
    """(outer, channels, inner) of x as the kernels see it, after checking weight's shape against x."""
    wshape = tuple(weight.shape)
    if len(wshape) > 1:
        raise ValueError(f"weight must be a scalar or 1-D array, got shape {wshape}")
    wsize = int(np.prod(wshape, dtype=np.int64))
    shape = tuple(int(s) for s in x.shape)
    c = shape[1] if len(shape) >= 2 else 1
    if wsize != 1 and wsize != c:
        raise ValueError(f"weight must have 1 entry or C = {c} entries (x.shape[1]"
                         f"{'' if len(shape) >= 2 else ': x has ndim < 2, so one channel'}), got {wsize}")
    n = int(np.prod(shape, dtype=np.int64))
    if wsize == 1 or len(shape) < 2:
        return 1, 1, n
    inner = int(np.prod(shape[2:], dtype=np.int64))
    return shape[0], c, inner


def prelu(x, weight, *, out=None, stream=None):
    r"""Parametric ReLU: a learned negative slope per channel (axis 1) or one shared slope.

    .. math:: y = \begin{cases} x & x > 0 \\ a_c\,x & x \le 0 \end{cases}

    Args:
        x: float32 or float64 array of any shape (NumPy, or a device array: CuPy, PyTorch CUDA, Numba); axis 1 is
            the channel axis (ndim < 2: one channel).
        weight: the slopes ``a``, same dtype and side (host/device) as ``x``, shape (1,), () or (C,).
        out: optional preallocated result of ``x``'s shape and dtype; may be ``x`` itself (in place).
        stream: CUDA stream for a device call (default: the current stream of the inputs' library).

    Returns:
        ``y``, an array of the same kind, shape and dtype as ``x``.

    Example:
        >>> import numpy as np, gpunn
        >>> x = np.array([[-1.0, -1.0], [2.0, -4.0]], np.float32)
        >>> gpunn.prelu(x, np.array([0.25, 0.5], np.float32))
        array([[-0.25, -0.5 ],
               [ 2.  , -2.  ]], dtype=float32)
    """
    args = Args(stream=stream, x=x, weight=weight)
    outer, channels, inner = _layout(x, weight)
    out = args.output("out", out, x.shape)
    x_flat, w_flat, out_flat = args.flat("x"), args.flat("weight"), args.flat("out")
    if x_flat.size:
        if args.device:
            kernel = _forward_kernel(args.dtype)
            kernel.over(x_flat.size, args.stream, x_flat, w_flat, inner, channels, out_flat)
        else:
            rows, per_ch, _ = _cpu_plan(outer, channels, inner)
            _cpu.run(_cpu_kernels(args.dtype)[0], "elementwise", x_flat.size, x_flat, w_flat, outer, channels, inner,
                     rows, per_ch, out_flat)
    args.finish()
    return out


def prelu_backward(dy, x, weight, *, out=None, stream=None):
    r"""Gradient of :func:`prelu` with respect to ``x`` and to ``weight``.

    .. math:: dx = dy \cdot \begin{cases} 1 & x > 0 \\ a_c & x \le 0 \end{cases}, \qquad
              \frac{\partial L}{\partial a_c} = \sum_{\text{all axes but } 1} [x \le 0]\, x\, dy

    Args:
        dy: upstream gradient, same shape and dtype as ``x``.
        x: the forward input.
        weight: the slopes of the forward call.
        out: optional preallocated results: an array (used for ``dx``; ``dweight`` is allocated), or a pair
            ``(dx, dweight)`` where either entry may be None. ``dx`` may be ``dy`` or ``x``; ``dweight`` must have
            ``weight``'s shape and dtype and may be ``weight`` itself.
        stream: CUDA stream for a device call (default: the current stream of the inputs' library).

    Returns:
        ``(dx, dweight)``: ``dx`` like ``x``; ``dweight`` of ``weight``'s kind, shape and dtype, a deterministic sum
        accumulated in float64.

    Example:
        >>> import numpy as np, gpunn
        >>> x = np.array([[-1.0, -1.0], [2.0, -4.0]], np.float32)
        >>> dx, dw = gpunn.prelu_backward(np.ones_like(x), x, np.array([0.25, 0.5], np.float32))
        >>> dx
        array([[0.25, 0.5 ],
               [1.  , 0.5 ]], dtype=float32)
        >>> dw
        array([-1., -5.], dtype=float32)
    """
    if isinstance(out, (tuple, list)):
        if len(out) != 2:
            raise ValueError(f"out must be an array (dx) or a pair (dx, dweight), got a sequence of {len(out)}")
        out_dx, out_dw = out
    else:
        out_dx, out_dw = out, None
    args = Args(stream=stream, dy=dy, x=x, weight=weight)
    args.same_shape("dy", "x")
    outer, channels, inner = _layout(x, weight)
    dx = args.output("dx", out_dx, x.shape)
    dweight = args.output("dweight", out_dw, weight.shape, like="weight")
    dy_flat, x_flat, dx_flat = args.flat("dy"), args.flat("x"), args.flat("dx")
    dw_flat = args.flat("dweight")
    n, wsize = x_flat.size, dw_flat.size
    if args.device:
        w_flat = args.flat("weight")
        if wsize and overlap(w_flat, dw_flat):  # dweight is weight itself: the kernel reads its own copy of the slopes
            w_copy = typed_view(workspace(args.array("x"), wsize * args.dtype.itemsize, args.stream, "prelu_weight"),
                                args.dtype, (wsize,))
            _copy.gather(w_flat, w_copy, args.stream)
            w_flat = w_copy
        if n == 0:
            _copy.fill(dw_flat, 0.0, args.stream)
        else:
            (bx, by), threads = _backward_grid(channels, outer * inner)
            partials = _reduce.partials(args, channels, bx)
            kernel = _backward_kernel(args.dtype, threads)
            kernel((bx, by), threads, args.stream, dy_flat, x_flat, w_flat, outer, channels, inner, dx_flat, partials)
            _reduce.finish(partials, 1.0, dw_flat, args.stream)
    else:
        w_flat = args.flat("weight").copy()
        if n == 0:
            dw_flat[...] = 0
        else:
            rows, per_ch, n_rb = _cpu_plan(outer, channels, inner)
            if inner > _CHUNK:
                n_rb = outer * -(-inner // _CHUNK)
            partials = np.zeros((n_rb, channels), np.float64)
            _cpu.run(_cpu_kernels(args.dtype)[1], "elementwise", x_flat.size, dy_flat, x_flat, w_flat, outer,
                     channels, inner, rows, per_ch, dx_flat, partials)
            # a fixed-order float64 sum over the row blocks (the layout depends on the shape only)
            dw_flat[...] = partials.sum(axis=0).astype(args.dtype)
    args.finish()
    return dx, dweight


_FORWARD_SIG = "void({0}[::1], {0}[::1], int64, int64, {0}[::1])"
_BACKWARD_SIG = "void({0}[::1], {0}[::1], {0}[::1], int64, int64, int64, {0}[::1], float64[:, ::1])"


@functools.lru_cache(maxsize=None)
def _forward_kernel(dtype):
    return Kernel(_prelu_forward_kernel(dtype), _FORWARD_SIG.format(np.dtype(dtype).name), "prelu_forward")


@functools.lru_cache(maxsize=None)
def _backward_kernel(dtype, block):
    return Kernel(_prelu_backward_kernel(dtype, block), _BACKWARD_SIG.format(np.dtype(dtype).name),
                  "prelu_backward_sum")


def _register():
    from .. import _registry

    block = 256  # the GPU block size (block_size() outside the simulator)
    _registry.for_dtypes("prelu_forward", lambda dt: _prelu_forward_kernel(dt), _FORWARD_SIG.format)
    _registry.for_dtypes("prelu_backward_sum", lambda dt: _prelu_backward_kernel(dt, block), _BACKWARD_SIG.format,
                         f64_accumulator=True)


_register()
