"""Argument checks: the arrays of one call, checked together, and scalar options. Every error names the argument.

``Args(x=x, dy=dy)`` checks each array once (kind, side, float dtype) and keeps what a kernel needs: a NumPy view on
the host, a :class:`~gpunn._arrays.DeviceArray` on the device, and the stream to launch on. ``output`` checks a
user's ``out`` (or allocates one of the inputs' kind); ``flat``/``nd`` give the views the kernels take.

The dtype policy (gpunn/_half.py): float32 and float64 always; float16 and bfloat16 when the op passes
``half=True`` (its kernels then take uint16 storage views, ``args.precision`` says how to load and store them). All
float arrays of a call share one dtype: a float16 ``dy`` with a bfloat16 ``x`` is a TypeError naming ``dy``.
"""

from __future__ import annotations

import math

import numpy as np

from . import _half
from ._arrays import (HOST_KINDS, DeviceArray, contiguous, device_array, dtype_of, empty_like,
                      host_view, is_read_only, kind, overlap, shape_of)
from ._launch import stream_of
from ._runtime import require_device


class Args:
    """The arrays of one call: all host or all device, one float dtype, one stream (device calls).

    A TypeError names the argument that is not an array, not a float dtype the op takes (or the ``dtype`` it must
    have), or on the other side (host vs device) from the first one. ``stream`` (device calls): a stream or handle to
    launch on; default: the current stream of the first device array's library. ``half``: the op takes float16 and
    bfloat16 too."""

    def __init__(self, stream=None, half=False, **arrays):
        self._arrays = {}
        self._views = {}
        self._outputs = set()
        self._pending = []
        self.first = None
        self.device = False
        self.dtype = None
        self._stream_arg = stream
        self._stream = None
        self._half = half
        self.precision = None
        for name, x in arrays.items():
            if x is not None:
                self.add(name, x)

    @property
    def stream(self) -> int:
        """The stream handle this call launches on (device calls)."""
        if self._stream is None:
            self._stream = stream_of(self._stream_arg, self._arrays[self.first])
        return self._stream

    def add(self, name, x, dtype=None):
        """Check ``x`` and record it. ``dtype``: an exact dtype it must have; default: the call's float dtype."""
        k = kind(x)
        if k is None:
            raise TypeError(f"{name} must be an array (NumPy, CuPy, PyTorch or Numba device array), got "
                            f"{type(x).__name__}")
        on_device = k not in HOST_KINDS
        if self.first is None:
            self.first, self.device = name, on_device
            if on_device:
                require_device(f"{name} (a device array)")
        elif on_device != self.device:
            where = "a device array" if on_device else "a host array"
            other = "a device array" if self.device else "a host array"
            raise TypeError(f"{name} is {where} but {self.first} is {other}: move both with gpunn.to_device/to_host")
        dt = dtype_of(x)
        if dtype is not None:
            if dt != np.dtype(dtype):
                raise TypeError(f"{name} must have dtype {np.dtype(dtype)}, got {dt}")
        elif self.dtype is None:
            if not _half.is_float(dt) or (_half.is_half(dt) and not self._half):
                raise TypeError(self.bad_dtype(name, dt))
            self.dtype = dt
            self.precision = _half.precision(dt)
        elif dt != self.dtype:
            raise TypeError(f"{name} has dtype {dt} but {self._first_float()} has {self.dtype}: dtypes must match")
        self._arrays[name] = x
        self._views[name] = device_array(x) if on_device else host_view(x)
        return x

    def bad_dtype(self, name, dt) -> str:
        """The TypeError message for an array whose dtype this call does not take."""
        if self._half:
            return f"{name} must be float32 or float64 (or float16/bfloat16), got {dt}"
        if _half.is_half(dt):
            return f"{name} must be float32 or float64, got {dt}: float16/bfloat16 are not supported by this op yet"
        return f"{name} must be float32 or float64, got {dt}"

    def _first_float(self):
        for name, x in self._arrays.items():
            if dtype_of(x) == self.dtype:
                return name
        return self.first

    def array(self, name):
        """The user's array ``name`` as given."""
        return self._arrays[name]

    def shape(self, name) -> tuple:
        return shape_of(self._arrays[name])

    def same_shape(self, name, other):
        a, b = self.shape(name), self.shape(other)
        if a != b:
            raise ValueError(f"{name} has shape {a} but {other} has shape {b}")

    def output(self, name, out, shape, dtype=None, like=None):
        """Check a user-given ``out`` (kind, shape, dtype, writable, no partial overlap with an input, no sharing
        with another result) or allocate one like ``like`` (default: the first array)."""
        dtype = np.dtype(dtype or self.dtype)
        shape = tuple(int(s) for s in shape)
        if out is None:
            out = empty_like(self._arrays[like or self.first], shape, dtype)
            self._arrays[name] = out
            self._views[name] = device_array(out) if self.device else host_view(out)
            self._outputs.add(name)
            return out
        self.add(name, out, dtype=dtype)
        if shape_of(out) != shape:
            raise ValueError(f"{name} must have shape {shape}, got {shape_of(out)}")
        if is_read_only(out):
            raise ValueError(f"{name} is read-only")
        view = self._views[name]
        for other, v in self._views.items():
            if other == name:
                continue
            relation = overlap(view, v)
            if other in self._outputs and relation is not None:
                raise ValueError(f"{name} and {other} share memory: the results need separate arrays")
            if relation == "partial":
                raise ValueError(f"{name} overlaps {other} without being the same array (same memory, shape and "
                                 f"strides): pass a separate {name}, or {other} itself to work in place")
        self._outputs.add(name)
        contiguous_out = view.contiguous if self.device else view.flags.c_contiguous
        if not contiguous_out:
            if self.device:
                raise ValueError(f"{name} must be C-contiguous for a device call")
            self._pending.append((view, name))
            self._views[name] = np.empty(shape, dtype)
        return out

    def flat(self, name):
        """1-D C-contiguous view (a NumPy array, or a DeviceArray) for a kernel; half arrays as uint16 storage."""
        v = self.nd(name)
        return v.flat() if self.device else v.reshape(-1)

    def nd(self, name):
        """C-contiguous view of the original shape (a NumPy array, or a DeviceArray; non-contiguous device inputs are
        gathered into a contiguous copy on the device); half arrays as uint16 storage."""
        v = self._views[name]
        if self.device:
            if not v.contiguous:
                v = self._views[name] = device_array(contiguous(self._arrays[name], stream=self.stream))
            return v.storage()
        if not v.flags.c_contiguous:
            v = self._views[name] = np.ascontiguousarray(v)
        return _half.storage_view(v)

    def finish(self):
        """Copy results computed into temporaries back into non-contiguous host outputs."""
        for target, name in self._pending:
            target[...] = self._views[name]
        self._pending.clear()


def check_choice(name, value, allowed):
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}, got {value!r}")
    return value


def check_real(name, value, *, low=None, high=None, low_open=False, high_open=False):
    """A finite Python/NumPy real number inside the given bounds, else ValueError/TypeError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if low is not None and (value < low or (low_open and value == low)):
        raise ValueError(f"{name} must be {'>' if low_open else '>='} {low}, got {value}")
    if high is not None and (value > high or (high_open and value == high)):
        raise ValueError(f"{name} must be {'<' if high_open else '<='} {high}, got {value}")
    return value


__all__ = ["Args", "DeviceArray", "check_choice", "check_real"]
