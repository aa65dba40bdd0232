"""Workarounds for numba-cuda's CUDA simulator, applied by ``gpunn`` when the simulator is on.

``cuda.shared.array`` in the simulator (``FakeCUDAShared.array``, numba-cuda 0.30.4 and earlier) finds a block's
shared array with an unlocked check-then-insert on a dict keyed by the caller's file and line. Two simulated threads
that reach the allocation together can each make their own buffer, and a block reduction then sums the wrong values
(docs/simulator_shared_race.py reproduces it without gpunn). :func:`apply` replaces the method with the same lookup
under a lock. Set ``GPUNN_SIM_NO_WORKAROUND=1`` to leave the simulator as shipped (for reproducing the race).

The simulator also runs one kernel at a time per process (an assertion, ``concurrent simulated kernel not
supported``, fails when two Python threads launch at once): :func:`apply` makes kernel launches take
:data:`launch_lock`, so ops called from several Python threads wait for each other instead of failing.
"""

from __future__ import annotations

import os
import sys
import threading

import numpy as np

launch_lock = threading.RLock()
_applied = False
_allocate = np.empty  # the allocation inside the lock (a test slows it down to widen the race window)


def _locked_shared_array(original):
    lock = threading.Lock()

    def array(self, shape, dtype, alignment=None):
        if shape == 0 or alignment is not None:
            return original(self, shape, dtype, alignment)  # dynamic shared memory (no lookup) or its error
        from numba.core import types
        from numba.np import numpy_support

        if isinstance(dtype, types.Type):
            dtype = numpy_support.as_dtype(dtype)
        frame = sys._getframe(1)
        caller = (frame.f_code.co_filename, frame.f_lineno)  # the key the simulator uses: the allocating line
        with lock:
            buf = self._allocations.get(caller)
            if buf is None:
                buf = _allocate(shape, dtype)
                self._allocations[caller] = buf
        return buf

    array.gpunn_workaround = True
    return array


def _serialised_launch(original):
    def __call__(self, *args):
        if self._device:  # a device function called from a kernel, inside a launch that holds the lock
            return original(self, *args)
        with launch_lock:
            return original(self, *args)

    __call__.gpunn_workaround = True
    return __call__


def apply() -> bool:
    """Install the workarounds (once; a no-op when ``GPUNN_SIM_NO_WORKAROUND`` is set). True if installed."""
    global _applied
    if _applied:
        return True
    if os.environ.get("GPUNN_SIM_NO_WORKAROUND"):
        return False
    from numba.cuda.simulator import kernel, kernelapi

    shared, kernel_cls = kernelapi.FakeCUDAShared, kernel.FakeCUDAKernel
    if not getattr(shared.array, "gpunn_workaround", False):
        shared.array = _locked_shared_array(shared.array)
    if not getattr(kernel_cls.__call__, "gpunn_workaround", False):
        kernel_cls.__call__ = _serialised_launch(kernel_cls.__call__)
    _applied = True
    return True
