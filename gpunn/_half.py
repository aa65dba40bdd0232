"""Half precision: which dtypes gpunn takes, and how a kernel reads and writes 16-bit floats.

The dtype policy: every float op takes float32 and float64; the ops that pass ``half=True`` to
:class:`gpunn._args.Args` (the elementwise activations and the pointwise losses, so far) take float16 and bfloat16
too, and the others say in their TypeError that half is not supported yet. A call's :class:`Precision` says how its
kernels see the data:

* ``dtype``: the arrays' dtype, as NumPy names it (``np.float16``, ``ml_dtypes.bfloat16``; PyTorch's
  ``torch.bfloat16`` maps to ``ml_dtypes.bfloat16``);
* ``storage``: the dtype the kernels index: ``uint16`` for both halves (Numba types neither ml_dtypes' bfloat16
  nor, on every path, float16 arrays; one storage type serves the CPU loops, the CUDA kernels and the simulator);
* ``compute``: the dtype of the math: float32 for both halves (``math inside is float32``), else the dtype itself;
* ``load(bits) -> compute`` and ``store(value) -> bits``: njit functions, identity for float32/float64.

How a kernel module adds half support with these pieces (``gpunn/_elementwise.py`` and ``gpunn/losses/_common.py``
are the worked examples):

1. ``Args(..., half=True)``: the call accepts float16/bfloat16 (without it, a TypeError names the argument);
   ``args.precision`` is the call's :class:`Precision`, ``args.flat(name)``/``args.nd(name)`` give storage views.
2. Build the scalar math for ``precision.compute`` (float32), and the kernel (or CPU loop) for
   ``precision.storage``: ``y = store(f(load(x[i])))``. :func:`wrap1`/:func:`wrap2` do that composition for
   elementwise math. Scalar kernel arguments (slopes, margins, the upstream gradient) are ``compute`` scalars.
3. Signatures: arrays ``{storage}[::1]``, scalars ``{compute}`` (:func:`signature_names`); register the kernel for the
   half dtypes too (``gpunn._registry.for_dtypes(..., dtypes=ALL_NAMES)``) so that ``gpunn kernels`` builds them.
4. Sums accumulate in float32 or wider (gpunn's in float64) and are stored once, at the end
   (``gpunn._reduce.finish(..., precision=args.precision)``).
5. 128-bit vectors hold 8 halves (``gpunn._vector.width(precision.storage)``).

The conversions are LLVM IR, the same on the CPU and the GPU: float16 is ``fpext``/``fptrunc`` of LLVM's ``half``
(x86: ``vcvtph2ps``/``vcvtps2ph``, vectorised; PTX: ``cvt.f32.f16``/``cvt.rn.f16.f32``, what ``numba.cuda.fp16``'s
casts emit); bfloat16 is the upper 16 bits of a float32 (load: a 16-bit shift; store: round to nearest even on the
bits, NaN kept quiet), so it needs no bf16 hardware and vectorises on the CPU.

In the simulator (kernels run as Python) a compiled load returns a Python float: :func:`kernel_load` casts it back
to float32 there, so that the math after it stays float32.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

HALF_NAMES = ("float16", "bfloat16")
FULL_NAMES = ("float32", "float64")
ALL_NAMES = HALF_NAMES + FULL_NAMES
STORAGE = np.dtype(np.uint16)


# ---- dtypes ------------------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def bfloat16() -> np.dtype:
    """NumPy's bfloat16 dtype (from ``ml_dtypes``; TypeError naming the package when it is not installed)."""
    try:
        import ml_dtypes
    except ImportError:
        raise TypeError('bfloat16 arrays need the ml_dtypes package: pip install "gpunn[half]"') from None
    return np.dtype(ml_dtypes.bfloat16)


def name_of(dtype) -> str:
    """The dtype's name (``"bfloat16"`` for ml_dtypes' type)."""
    return np.dtype(dtype).name


def is_float(dtype) -> bool:
    """True for the four float dtypes gpunn computes with."""
    return name_of(dtype) in ALL_NAMES


def is_half(dtype) -> bool:
    return name_of(dtype) in HALF_NAMES


def dtype_named(name: str) -> np.dtype:
    """The NumPy dtype of ``name`` in ALL_NAMES."""
    return bfloat16() if name == "bfloat16" else np.dtype(name)


def torch_to_numpy(torch_dtype) -> np.dtype:
    """The NumPy dtype of a PyTorch dtype (bfloat16 as ml_dtypes' bfloat16)."""
    name = str(torch_dtype).replace("torch.", "")
    return bfloat16() if name == "bfloat16" else np.dtype(name)



# ---- conversions (LLVM IR: CPU loops and CUDA kernels alike) -----------------------------------------------------------
@intrinsic
def _f16_to_f32(typingctx, bits):
    if bits != types.uint16:
        return None

    def codegen(context, builder, signature, args):
        return builder.fpext(builder.bitcast(args[0], ir.HalfType()), ir.FloatType())

    return types.float32(types.uint16), codegen


@intrinsic
def _f32_to_f16(typingctx, x):
    if x != types.float32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(builder.fptrunc(args[0], ir.HalfType()), ir.IntType(16))  # round to nearest even

    return types.uint16(types.float32), codegen


@intrinsic
def _bf16_to_f32(typingctx, bits):
    if bits != types.uint16:
        return None

    def codegen(context, builder, signature, args):
        i32 = ir.IntType(32)
        return builder.bitcast(builder.shl(builder.zext(args[0], i32), ir.Constant(i32, 16)), ir.FloatType())

    return types.float32(types.uint16), codegen


def _round_bits(builder, bits, low):
    """(bits + low) >> 16 truncated to 16 bits, NaN kept (and quiet); ``low`` the value added below bit 16."""
    i32 = ir.IntType(32)
    is_nan = builder.icmp_unsigned(">", builder.and_(bits, ir.Constant(i32, 0x7FFFFFFF)), ir.Constant(i32, 0x7F800000))
    rounded = builder.lshr(builder.add(bits, low), ir.Constant(i32, 16))
    nan = builder.or_(builder.lshr(bits, ir.Constant(i32, 16)), ir.Constant(i32, 0x40))
    return builder.trunc(builder.select(is_nan, nan, rounded), ir.IntType(16))


@intrinsic
def _f32_to_bf16(typingctx, x):
    if x != types.float32:
        return None

    def codegen(context, builder, signature, args):
        i32 = ir.IntType(32)
        bits = builder.bitcast(args[0], i32)
        odd = builder.and_(builder.lshr(bits, ir.Constant(i32, 16)), ir.Constant(i32, 1))
        return _round_bits(builder, bits, builder.add(ir.Constant(i32, 0x7FFF), odd))  # to nearest, ties to even

    return types.uint16(types.float32), codegen


@njit(inline="always")
def f16_load(bits):
    return _f16_to_f32(bits)


@njit(inline="always")
def f16_store(x):
    return _f32_to_f16(x)


@njit(inline="always")
def bf16_load(bits):
    return _bf16_to_f32(bits)


@njit(inline="always")
def bf16_store(x):
    return _f32_to_bf16(x)


@njit(inline="always")
def _identity(x):
    return x


# ---- the precision of a call -------------------------------------------------------------------------------------------
class Precision(NamedTuple):
    """How kernels see a call's data (see the module docstring)."""

    name: str
    dtype: np.dtype
    storage: np.dtype
    compute: np.dtype
    load: object
    store: object

    @property
    def half(self) -> bool:
        return self.name in HALF_NAMES


@functools.lru_cache(maxsize=None)
def _precision(name: str) -> Precision:
    if name == "float16":
        return Precision(name, np.dtype(np.float16), STORAGE, np.dtype(np.float32), f16_load, f16_store)
    if name == "bfloat16":
        return Precision(name, bfloat16(), STORAGE, np.dtype(np.float32), bf16_load, bf16_store)
    dt = np.dtype(name)
    return Precision(name, dt, dt, dt, _identity, _identity)


def precision(dtype) -> Precision:
    """The :class:`Precision` of a float dtype (or its name)."""
    return _precision(dtype if isinstance(dtype, str) else name_of(dtype))


def kernel_load(p: Precision):
    """``p.load`` as a CUDA kernel should call it. In the simulator a kernel runs as Python and a compiled load's
    float32 result comes back as a Python float (float64): the math after it would then be typed float64 (and the
    float32-only helpers of gpunn/activations/_vecmath.py would not type at all), so there it is cast back to
    float32; for float32/float64 the simulator gets a plain Python identity (the compiled one would turn a NumPy
    float32 element into a Python float the same way). Compiled kernels get ``p.load`` itself."""
    from ._runtime import simulator

    if not simulator():
        return p.load
    if not p.half:
        return _python_identity
    load, compute = p.load, p.compute.type
    return lambda bits: compute(load(bits))


def _python_identity(x):
    return x


def signature_names(dtype) -> dict:
    """``{"a": storage name, "s": compute name}`` for kernel signature templates (``"void({a}[::1], {s})"``)."""
    p = precision(dtype)
    return {"a": p.storage.name, "s": p.compute.name}


@functools.lru_cache(maxsize=None)
def wrap1(f, name):
    """``g(x_bits, a, b) = store(f(load(x_bits), a, b))``: a forward elementwise function on storage values."""
    p = precision(name)
    if not p.half:
        return f
    load, store = p.load, p.store

    @njit(inline="always")
    def g(x, a, b):
        return store(f(load(x), a, b))

    g.__name__ = f"{getattr(f, '__name__', 'f')}_{name}"
    return g


@functools.lru_cache(maxsize=None)
def wrap2(f, name):
    """``g(dy_bits, x_bits, a, b) = store(f(load(dy_bits), load(x_bits), a, b))``: a backward elementwise function."""
    p = precision(name)
    if not p.half:
        return f
    load, store = p.load, p.store

    @njit(inline="always")
    def g(dy, x, a, b):
        return store(f(load(dy), load(x), a, b))

    g.__name__ = f"{getattr(f, '__name__', 'f')}_{name}"
    return g


def storage_view(x: np.ndarray) -> np.ndarray:
    """A host array as its kernels index it: half arrays as uint16 (a view), others unchanged."""
    return x.view(STORAGE) if is_half(x.dtype) else x
