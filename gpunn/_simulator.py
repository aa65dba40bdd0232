"""Workarounds for numba-cuda's CUDA simulator, applied by ``gpunn`` when the simulator is on.

``cuda.shared.array`` in the simulator (``FakeCUDAShared.array``, numba-cuda 0.30.4 and earlier) finds a block's
shared array with an unlocked check-then-insert on a dict keyed by the caller's file and line. Two simulated threads
that reach the allocation together can each make their own buffer, and a block reduction then sums the wrong values
(docs/simulator_shared_race.py reproduces it without gpunn). :func:`apply` replaces the method with the same lookup
under a lock. Set ``GPUNN_SIM_NO_WORKAROUND=1`` to leave the simulator as shipped (for reproducing the race).

The simulator also runs one kernel at a time per process (``concurrent simulated kernel not supported``):
:data:`launch_lock` serialises gpunn's simulated launches, so ops called from several Python threads wait for each
other instead of failing.
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


def apply() -> bool:
    """Install the workarounds (once; a no-op when ``GPUNN_SIM_NO_WORKAROUND`` is set). True if installed."""
    global _applied
    if _applied:
        return True
    if os.environ.get("GPUNN_SIM_NO_WORKAROUND"):
        return False
    from numba.cuda.simulator import kernelapi

    cls = kernelapi.FakeCUDAShared
    if not getattr(cls.array, "gpunn_workaround", False):
        cls.array = _locked_shared_array(cls.array)
    _applied = True
    return True
