"""Bad data found by a kernel, reported without a hidden synchronisation.

Some input errors can only be seen in the data: a class index outside [0, C), a hinge label other than +-1, a row of
all -inf logits. On the CPU path gpunn raises them at once. On the device, reading a flag back after the kernel would
stall the host on every call, so a checking kernel instead records the first bad index in a slot of a device array
(``atomic.min``), the call registers what that slot means, and the error is raised (a ``ValueError`` naming the
argument and the first bad index) at the next of:

* :func:`gpunn.synchronize` (or :func:`check`), which waits for the pending calls' streams;
* ``float(loss)`` / ``loss.item()`` of a loss that gpunn returned as a Numba device scalar (that read synchronises);
* the call itself, when it was made with ``validate=True`` (then it synchronises, and raises before any output is
  written, as on the CPU).

The bad rows' results hold NaN (their loss and their gradient), so nothing the user owns is silently wrong.
A process that makes more than :data:`SLOTS` checked calls without checking once checks then (one synchronisation).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable

import numpy as np

SLOTS = 1 << 16
NONE = np.iinfo(np.int64).max  # a slot's value while nothing bad was seen

_lock = threading.RLock()
_flags = {}    # device id -> (Numba device array of SLOTS int64, its DeviceArray)
_pending = []  # _Pending entries, in call order
_next = {}     # device id -> next free slot


@dataclass
class _Pending:
    device: int
    slot: int
    stream: int
    describe: Callable[[int], str]  # bad index -> the error message


def slot(device: int, stream: int, describe: Callable[[int], str]):
    """(flags DeviceArray, slot) for one checked call on ``device``/``stream``; ``describe(index)`` builds the
    message if the kernel records a bad index in the slot."""
    with _lock:
        if device not in _flags:
            from numba import cuda

            from ._arrays import device_array

            flags = cuda.to_device(np.full(SLOTS, NONE, np.int64))
            _flags[device] = (flags, device_array(flags))
            _next[device] = 0
        if _next[device] == SLOTS:
            check()
        k = _next[device]
        _next[device] = k + 1
        _pending.append(_Pending(device, k, stream, describe))
        return _flags[device][1], k


def check():
    """Wait for the pending checked calls and raise the first error they found (ValueError); clears them all."""
    with _lock:
        if not _pending:
            return
        pending, first = list(_pending), None
        _pending.clear()
        from ._launch import synchronize_stream

        for stream in {(p.device, p.stream) for p in pending}:
            synchronize_stream(stream[1])
        for device, (flags, _) in _flags.items():
            used = _next[device]
            if not used:
                continue
            values = flags[:used].copy_to_host()
            for p in pending:
                if p.device == device and values[p.slot] != NONE and first is None:
                    first = p.describe(int(values[p.slot]))
            flags[:used].copy_to_device(np.full(used, NONE, np.int64))
            _next[device] = 0
        if first is not None:
            raise ValueError(first)


def pending() -> int:
    """How many checked calls wait for :func:`check`."""
    return len(_pending)


def discard():
    """Forget the pending checks without reading them (the test suite isolates its tests with it)."""
    with _lock:
        _pending.clear()
        for device, (flags, _) in _flags.items():
            if _next[device]:
                flags[:_next[device]].copy_to_device(np.full(_next[device], NONE, np.int64))
                _next[device] = 0
