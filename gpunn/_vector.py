"""Memory access for gpunn's kernels that Numba does not give directly: 128-bit vector loads and stores, and an array
over a raw device address. Each comes as an LLVM intrinsic for compiled code (CUDA kernels, and CPU loops, where the
tests exercise the same IR) and as a plain Python function for Numba's CUDA simulator, which runs kernels as Python.

* ``load(a, i)`` returns the ``W = 16 // itemsize`` elements ``a[i:i + W]`` as a tuple (float32: 4, float64: 2, the
  uint16 storage of float16/bfloat16: 8) read
  by one 128-bit load (``ld.global.v4.f32`` / ``v2.f64``, SASS ``LDG.E.128``); ``store(a, i, values)`` writes them
  with one 128-bit store. ``a`` must be C-contiguous and ``&a[i]`` 16-byte aligned: the caller peels a scalar head
  (:func:`head`) so that this holds.
* ``address_array(address, n, like)`` is the 1-D C-contiguous array of ``n`` elements of ``like``'s dtype at the
  integer ``address`` (a device pointer in a kernel; in the simulator, where device memory is host memory, a host
  address). It lets one kernel launch reach any number of separate tensors through a table of addresses.

:func:`ops` picks the implementation for the current mode (compiled or simulated) once, when a kernel is built.
"""

from __future__ import annotations

import ctypes
from typing import NamedTuple

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic
from numba.np.arrayobj import populate_array

from ._runtime import simulator

ALIGN = 16  # bytes of one vector access


def width(dtype) -> int:
    """Elements in one 128-bit vector of ``dtype``."""
    return ALIGN // np.dtype(dtype).itemsize


def head(ptr: int, itemsize: int, n: int) -> int:
    """Elements before the first 16-byte aligned one of an array at ``ptr`` (all ``n`` if none is aligned)."""
    misaligned = ptr % ALIGN
    if misaligned % itemsize:
        return n
    return min(n, ((ALIGN - misaligned) % ALIGN) // itemsize)


def common_head(arrays, n: int) -> int:
    """The scalar head shared by ``arrays`` (DeviceArray descriptors of ``n`` elements each); ``n`` (no vector access)
    when they are not aligned alike."""
    heads = {head(a.ptr, a.dtype.itemsize, n) for a in arrays}
    return heads.pop() if len(heads) == 1 else n


# ---- compiled: LLVM intrinsics -----------------------------------------------------------------------------------------
def _element_pointer(context, builder, aryty, ary_value, index):
    ary = context.make_array(aryty)(context, builder, ary_value)
    return builder.gep(ary.data, [index])


def _vector_type(context, dtype):
    return ir.VectorType(context.get_data_type(dtype), ALIGN // context.get_abi_sizeof(context.get_data_type(dtype)))


def _load_lanes(builder, ptr, vec_t):
    """The lanes of the 128-bit vector at ``ptr``. 8 x 16-bit lanes are loaded as 4 x i32 and split with shifts:
    NVPTX turns an 8 x i16 access (or a bitcast of one) into two 64-bit ``v4.u16`` accesses."""
    i32 = ir.IntType(32)
    if vec_t.count != 8:
        vec = builder.load(builder.bitcast(ptr, vec_t.as_pointer()), align=ALIGN)
        return [builder.extract_element(vec, ir.Constant(i32, k)) for k in range(vec_t.count)]
    words = builder.load(builder.bitcast(ptr, ir.VectorType(i32, 4).as_pointer()), align=ALIGN)
    lanes = []
    for k in range(4):
        word = builder.extract_element(words, ir.Constant(i32, k))
        lanes += [builder.trunc(word, vec_t.element), builder.trunc(builder.lshr(word, ir.Constant(i32, 16)),
                                                                    vec_t.element)]  # little endian: low half first
    return lanes


def _store_lanes(builder, ptr, vec_t, lanes):
    """Store ``lanes`` as one 128-bit vector at ``ptr`` (8 x 16-bit lanes packed into 4 x i32, as in _load_lanes)."""
    i32 = ir.IntType(32)
    if vec_t.count != 8:
        vec = ir.Constant(vec_t, ir.Undefined)
        for k, lane in enumerate(lanes):
            vec = builder.insert_element(vec, lane, ir.Constant(i32, k))
        builder.store(vec, builder.bitcast(ptr, vec_t.as_pointer()), align=ALIGN)
        return
    words = ir.Constant(ir.VectorType(i32, 4), ir.Undefined)
    for k in range(4):
        lo, hi = builder.zext(lanes[2 * k], i32), builder.zext(lanes[2 * k + 1], i32)
        words = builder.insert_element(words, builder.or_(lo, builder.shl(hi, ir.Constant(i32, 16))),
                                       ir.Constant(i32, k))
    builder.store(words, builder.bitcast(ptr, ir.VectorType(i32, 4).as_pointer()), align=ALIGN)


def _vector_element(dtype) -> bool:
    """Element types with 128-bit vector access: floats, and the uint16 storage of half floats."""
    return isinstance(dtype, types.Float) or dtype == types.uint16


@intrinsic
def _load(typingctx, a, i):
    if not (isinstance(a, types.Array) and a.layout == "C" and _vector_element(a.dtype)):
        return None
    n = 16 // (a.dtype.bitwidth // 8)
    result = types.UniTuple(a.dtype, n)

    def codegen(context, builder, sig, args):
        ptr = _element_pointer(context, builder, a, args[0], args[1])
        items = _load_lanes(builder, ptr, _vector_type(context, a.dtype))
        return context.make_tuple(builder, result, items)

    return result(a, i), codegen


@intrinsic
def _store(typingctx, a, i, values):
    if not (isinstance(a, types.Array) and a.layout == "C" and _vector_element(a.dtype)
            and isinstance(values, types.UniTuple) and values.dtype == a.dtype
            and values.count == 16 // (a.dtype.bitwidth // 8)):
        return None
    n = values.count

    def codegen(context, builder, sig, args):
        lanes = [builder.extract_value(args[2], k) for k in range(n)]
        ptr = _element_pointer(context, builder, a, args[0], args[1])
        _store_lanes(builder, ptr, _vector_type(context, a.dtype), lanes)
        return context.get_dummy_value()

    return types.void(a, i, values), codegen


@intrinsic
def _address_array(typingctx, address, n, like):
    if not isinstance(like, (types.Float, types.Integer)):
        return None
    aryty = types.Array(like, 1, "C")

    def codegen(context, builder, sig, args):
        ary = context.make_array(aryty)(context, builder)
        element = context.get_data_type(like)
        if _is_cuda(context):
            # a global pointer made generic: NVVM then infers the global space for every access (ld.global, LDG),
            # where a bare inttoptr leaves generic loads (LD)
            data = builder.addrspacecast(builder.inttoptr(args[0], element.as_pointer(1)), element.as_pointer())
        else:
            data = builder.inttoptr(args[0], element.as_pointer())
        itemsize = context.get_constant(types.intp, context.get_abi_sizeof(context.get_data_type(like)))
        populate_array(ary, data=data, shape=[args[1]], strides=[itemsize], itemsize=itemsize, meminfo=None)
        return ary._getvalue()

    return aryty(types.int64, types.int64, like), codegen


def _is_cuda(context) -> bool:
    return type(context).__name__ == "CUDATargetContext"


# ---- simulated: Python ---------------------------------------------------------------------------------------------------
def _sim_load(a, i):
    return tuple(a[i + k] for k in range(ALIGN // a.dtype.itemsize))


def _sim_store(a, i, values):
    for k, v in enumerate(values):
        a[i + k] = v


_CTYPES = {np.dtype(np.float32): ctypes.c_float, np.dtype(np.float64): ctypes.c_double,
           np.dtype(np.uint16): ctypes.c_uint16, np.dtype(np.uint8): ctypes.c_uint8}


def _sim_address_array(address, n, like):
    dtype = np.dtype(type(like)) if not isinstance(like, np.ndarray) else like.dtype
    if n == 0:
        return np.empty(0, dtype)
    return np.ctypeslib.as_array((_CTYPES[dtype] * int(n)).from_address(int(address)))


def _masked(w):
    """``(gather, scatter)``: ``w`` lanes from ``a[i:]``, each read (written) one by one and only where ``i + lane <
    n`` (the lanes past ``n`` read as 0): the unaligned or partial vector of a kernel's tail."""
    if w == 4:
        @njit(inline="always")
        def gather4(a, i, n, zero):
            return (a[i] if i < n else zero, a[i + 1] if i + 1 < n else zero, a[i + 2] if i + 2 < n else zero,
                    a[i + 3] if i + 3 < n else zero)

        @njit(inline="always")
        def scatter4(a, i, n, v):
            if i < n:
                a[i] = v[0]
            if i + 1 < n:
                a[i + 1] = v[1]
            if i + 2 < n:
                a[i + 2] = v[2]
            if i + 3 < n:
                a[i + 3] = v[3]

        return gather4, scatter4

    @njit(inline="always")
    def gather2(a, i, n, zero):
        return a[i] if i < n else zero, a[i + 1] if i + 1 < n else zero

    @njit(inline="always")
    def scatter2(a, i, n, v):
        if i < n:
            a[i] = v[0]
        if i + 1 < n:
            a[i + 1] = v[1]

    return gather2, scatter2


def _sim_gather(a, i, n, zero):
    return tuple(a[i + k] if i + k < n else zero for k in range(ALIGN // a.dtype.itemsize))


def _sim_scatter(a, i, n, values):
    for k, v in enumerate(values):
        if i + k < n:
            a[i + k] = v


def masked(dtype):
    """``(gather, scatter)`` for ``dtype``'s vector width, compiled or simulated (see :func:`_masked`)."""
    if simulator():
        return _sim_gather, _sim_scatter
    return _masked(width(dtype))


class Ops(NamedTuple):
    load: object
    store: object
    address_array: object


def ops() -> Ops:
    """The vector load/store and address-array functions for kernels built now (simulated or compiled)."""
    if simulator():
        return Ops(_sim_load, _sim_store, _sim_address_array)
    return Ops(_load, _store, _address_array)


COMPILED = Ops(_load, _store, _address_array)
