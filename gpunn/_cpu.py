"""The CPU loops: one way to build them, one way to run them.

A CPU loop is a Python function written with ``prange``. :func:`loops` compiles it (lazily, on first call) twice: a
parallel build, whose ``prange`` is split over Numba's threads, and a serial build, where ``prange`` is ``range``.
Both use ``error_model="numpy"``: a division by zero gives inf/NaN as on the GPU, and Python's ZeroDivisionError check
would keep LLVM from vectorising the loop. Loops whose results must not depend on the thread count (sums) cut their
work into fixed chunks, so the two builds give the same bits.

:func:`run` picks the build: serial below the family's threshold of work (waking the thread pool costs more than it
saves there), or when Numba has one thread; parallel otherwise. Numba's ``workqueue`` threading layer (its fallback
where neither OpenMP nor TBB is installed) aborts the process when two Python threads run parallel code at once, so
parallel calls hold a lock until one of them has shown that the layer in use is thread-safe.
"""

from __future__ import annotations

import contextlib
import threading
from typing import NamedTuple

import numba

from . import _cache

# Work (elements) from which each family's parallel build beats its serial build at 2 threads (measured with
# benchmarks/cpu_thresholds.py on the 2-core development machine; below it, the serial build wins or ties).
PARALLEL_MIN = {
    "elementwise": 1 << 16,
    "pointwise_loss": 1 << 16,
    "rows": 1 << 16,
    "optim": 1 << 16,
}


class Loops(NamedTuple):
    """The parallel and the serial build of one loop function."""

    parallel: object
    serial: object


def loops(fn, **options) -> Loops:
    """Both builds of ``fn`` (nothing compiles until a build is first called; each is kept in gpunn's disk cache,
    gpunn/_cache.py, once compiled)."""
    return Loops(_cache.njit(parallel=True, error_model="numpy", **options)(fn),
                 _cache.njit(error_model="numpy", **options)(fn))


_lock = threading.Lock()
_layer_is_thread_safe = False


def run(built: Loops, family: str, work: int, *args):
    """Call the build of ``built`` that suits ``work`` elements of ``family``'s loop; returns its result."""
    if work < PARALLEL_MIN[family] or numba.get_num_threads() == 1:
        return built.serial(*args)
    return run_parallel(built.parallel, *args)


def run_parallel(fn, *args):
    """Call a ``parallel=True`` function, serialised across Python threads unless the threading layer is safe."""
    global _layer_is_thread_safe
    if _layer_is_thread_safe:
        return fn(*args)
    with _lock:
        result = fn(*args)
        _layer_is_thread_safe = numba.threading_layer() != "workqueue"
    return result


@contextlib.contextmanager
def forced(build: str):
    """Within the block, every loop runs its ``build`` ("serial" or "parallel") whatever its size (the parallel build
    still needs more than one Numba thread): for ahead-of-time compiles and for measuring the thresholds."""
    saved = dict(PARALLEL_MIN)
    for family in PARALLEL_MIN:
        PARALLEL_MIN[family] = 0 if build == "parallel" else 1 << 62
    try:
        yield
    finally:
        PARALLEL_MIN.update(saved)
