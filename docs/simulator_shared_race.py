"""numba-cuda simulator: ``cuda.shared.array`` races between the simulated threads of a block.

Standalone reproducer (needs only numpy and numba-cuda), ready to report upstream:

    python docs/simulator_shared_race.py            # natural timing: ~1% of launches sum wrongly
    python docs/simulator_shared_race.py --widen    # the same race made certain (slower allocation)

``FakeCUDAShared.array`` (numba_cuda/numba/cuda/simulator/kernelapi.py) looks a block's shared array up by the
allocating line, then inserts a new one if it found none, without a lock::

    res = self._allocations.get(caller)
    if res is None:
        res = np.empty(shape, dtype)
        self._allocations[caller] = res

Each simulated thread is a Python thread. When two of them pass the ``get`` before either inserts, they get
different buffers: the block's writes land in two arrays and a tree reduction over "the" shared array misses some of
them. With a small ``sys.setswitchinterval`` this shows in a plain block sum; ``--widen`` makes ``np.empty`` in that
module slow (a sleep that releases the GIL), so the threads, started together, all pass the ``get`` first.
Fix: hold a lock across the lookup and the insert (gpunn/_simulator.py does this for gpunn's own users).
"""

import os
import sys
import time
import types

os.environ["NUMBA_ENABLE_CUDASIM"] = "1"

import numpy as np  # noqa: E402
from numba import cuda  # noqa: E402

BLOCK = 32


@cuda.jit
def block_sum(x, out):
    buf = cuda.shared.array(BLOCK, np.float64)
    t = cuda.threadIdx.x
    buf[t] = x[t]
    cuda.syncthreads()
    step = BLOCK // 2
    while step > 0:
        if t < step:
            buf[t] += buf[t + step]
        cuda.syncthreads()
        step //= 2
    if t == 0:
        out[0] = buf[0]


def widen_race_window():
    """Make the simulator's np.empty sleep first: the window between the lookup and the insert becomes 1 ms."""
    from numba.cuda.simulator import kernelapi

    def slow_empty(*args, **kwargs):
        time.sleep(1e-3)
        return np.empty(*args, **kwargs)

    kernelapi.np = types.SimpleNamespace(**{k: getattr(np, k) for k in dir(np) if not k.startswith("__")})
    kernelapi.np.empty = slow_empty


def count_wrong(launches):
    x = np.arange(BLOCK, dtype=np.float64)
    wrong = 0
    for _ in range(launches):
        out = np.zeros(1)
        block_sum[1, BLOCK](x, out)
        wrong += out[0] != x.sum()
    return wrong


def main():
    widen = "--widen" in sys.argv
    if widen:
        widen_race_window()
    sys.setswitchinterval(1e-6)
    launches = 20 if widen else 400
    wrong = count_wrong(launches)
    print(f"{wrong} of {launches} launches gave a wrong block sum"
          f"{' (race window widened)' if widen else ''}; a correct simulator gives 0")
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
