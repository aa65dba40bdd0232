r"""Linear layers for the training app, on the array library of the device.

Forward:  z = x W + b                      x: (batch, in), W: (in, out), b: (out,)
Backward: dW = x^T dz,  db = sum_rows dz,  dx = dz W^T

Three backends, picked by ``--device``:

* ``cpu``: NumPy (``@``, BLAS).
* ``cuda`` with CuPy installed: CuPy (``@``, cuBLAS).
* ``cuda`` without CuPy, and ``sim`` (Numba's CUDA simulator): Numba device arrays and the two small kernels below:
  a strided matrix product (one thread per output element, a grid-stride loop over them; transposes are strides, so
  one kernel serves all three products) and a column sum for ``db`` that accumulates in float64 in a fixed order
  (deterministic, no atomics). They are plain, not tiled: the layers here are at most a few hundred wide.

Everything that is not a matrix product (activations, loss, optimizer) is gpunn's and runs on the same arrays.
"""

from __future__ import annotations

import functools

import numpy as np
from numba import cuda, float64, int64

from .. import _registry
from .._elementwise import typed
from .._arrays import device_array, to_host
from .._launch import Kernel, current_stream


# ---- CUDA kernels ----------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def _matmul_kernel(dtype):
    (zero,) = typed(dtype, 0.0)

    @cuda.jit
    def _linear_matmul_kernel(a, b, bias, m, n, k, sam, sak, sbk, sbn, use_bias, out):
        # out[r, c] = sum_j A[r, j] B[j, c] (+ bias[c]); A[r, j] = a[r*sam + j*sak], B[j, c] = b[j*sbk + c*sbn]
        for i in range(int64(cuda.grid(1)), m * n, int64(cuda.gridsize(1))):
            r = i // n
            c = i - r * n
            acc = bias[c] if use_bias != 0 else zero
            for j in range(k):
                acc += a[r * sam + j * sak] * b[j * sbk + c * sbn]
            out[i] = acc

    return _linear_matmul_kernel


@functools.lru_cache(maxsize=None)
def _column_sum_kernel(dtype):
    @cuda.jit
    def _linear_bias_grad_sum_kernel(dz, rows, n, out):
        # db[c] = sum_r dz[r, c], accumulated in float64 in row order (one thread per column: deterministic)
        for c in range(int64(cuda.grid(1)), n, int64(cuda.gridsize(1))):
            acc = float64(0.0)
            for r in range(rows):
                acc += dz[r * n + c]
            out[c] = acc

    return _linear_bias_grad_sum_kernel


_MATMUL_SIG = "void({0}[::1], {0}[::1], {0}[::1], int64, int64, int64, int64, int64, int64, int64, int64, {0}[::1])"
_COLUMN_SUM_SIG = "void({0}[::1], int64, int64, {0}[::1])"


@functools.lru_cache(maxsize=None)
def _kernels(dtype):
    name = np.dtype(dtype).name
    return (Kernel(_matmul_kernel(dtype), _MATMUL_SIG.format(name), "linear_matmul"),
            Kernel(_column_sum_kernel(dtype), _COLUMN_SUM_SIG.format(name), "linear_bias_grad_sum"))


def _register():
    _registry.for_dtypes("linear_matmul", _matmul_kernel, _MATMUL_SIG.format)
    _registry.for_dtypes("linear_bias_grad_sum", _column_sum_kernel, _COLUMN_SUM_SIG.format, f64_accumulator=True)


_register()


def _flat(x):
    return device_array(x).reshape(-1)


def matmul(a, b, *, trans_a=False, trans_b=False, bias=None, out=None):
    """``op(a) @ op(b) (+ bias)`` for 2-D C-contiguous Numba device arrays (``op`` transposes when asked), on Numba's
    default stream."""
    m, k = (a.shape[1], a.shape[0]) if trans_a else a.shape
    kb, n = (b.shape[1], b.shape[0]) if trans_b else b.shape
    if k != kb:
        raise ValueError(f"matmul: inner sizes differ ({k} vs {kb})")
    if out is None:
        out = cuda.device_array((m, n), a.dtype)
    sam, sak = (1, a.shape[1]) if trans_a else (a.shape[1], 1)
    sbk, sbn = (1, b.shape[1]) if trans_b else (b.shape[1], 1)
    if m * n:
        kernel = _kernels(np.dtype(a.dtype))[0]
        flat_out = _flat(out)
        ints = [np.int64(v) for v in (m, n, k, sam, sak, sbk, sbn, 0 if bias is None else 1)]
        kernel.over(m * n, current_stream(a), _flat(a), _flat(b),
               flat_out if bias is None else _flat(bias), *ints, flat_out)
    return out


def column_sum(dz, out=None):
    """``dz.sum(axis=0)`` for a 2-D C-contiguous Numba device array, in float64 and a fixed order."""
    rows, n = dz.shape
    if out is None:
        out = cuda.device_array((n,), dz.dtype)
    if n:
        kernel = _kernels(np.dtype(dz.dtype))[1]
        kernel.over(n, current_stream(dz), _flat(dz), np.int64(rows), np.int64(n), _flat(out))
    return out


# ---- backends --------------------------------------------------------------------------------------------------------
class NumpyBackend:
    """Host arrays; gpunn takes its CPU path."""

    name = "cpu"
    library = "numpy"

    def asarray(self, x):
        return np.ascontiguousarray(x)

    def to_host(self, x):
        return to_host(x)

    def linear(self, x, w, b):
        return x @ w + b

    def linear_backward(self, dz, x, w, need_dx=True, out=None):
        """(dx, dW, db); ``out=(dW, db)``: arrays to write dW and db into (views of the MLP's gradient buffer)."""
        dw_out, db_out = out or (None, None)
        dw = np.matmul(x.T, dz, out=dw_out)
        db = dz.sum(axis=0, out=db_out)
        dx = dz @ w.T if need_dx else None
        return dx, np.ascontiguousarray(dw), db


class CupyBackend(NumpyBackend):
    """CuPy arrays on a real GPU; gpunn launches its CUDA kernels on them without a copy."""

    name = "cuda"
    library = "cupy"

    def __init__(self):
        import cupy

        self.cp = cupy

    def asarray(self, x):
        return self.cp.ascontiguousarray(self.cp.asarray(x))


    def linear_backward(self, dz, x, w, need_dx=True, out=None):
        dw_out, db_out = out or (None, None)
        dx = dz @ w.T if need_dx else None
        return dx, self.cp.ascontiguousarray(self.cp.matmul(x.T, dz, out=dw_out)), dz.sum(axis=0, out=db_out)


class NumbaBackend:
    """Numba device arrays (real GPU or simulator) with the kernels of this module for the matrix products."""

    library = "numba"

    def __init__(self, name):
        self.name = name

    def asarray(self, x):
        return cuda.to_device(np.ascontiguousarray(x))

    def to_host(self, x):
        return to_host(x)

    def linear(self, x, w, b):
        return matmul(x, w, bias=b)

    def linear_backward(self, dz, x, w, need_dx=True, out=None):
        dw_out, db_out = out or (None, None)
        dw = matmul(x, dz, trans_a=True, out=dw_out)
        db = column_sum(dz, out=db_out)
        dx = matmul(dz, w, trans_b=True) if need_dx else None
        return dx, dw, db


def backend(device: str):
    """The backend for ``device`` in {"cpu", "cuda", "sim"}: NumPy; CuPy if importable else Numba; Numba."""
    if device == "cpu":
        return NumpyBackend()
    if device == "cuda":
        try:
            return CupyBackend()
        except ImportError:
            return NumbaBackend("cuda")
    if device == "sim":
        return NumbaBackend("sim")
    raise ValueError(f"device must be 'cpu', 'cuda' or 'sim', got {device!r}")
