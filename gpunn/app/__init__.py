"""The application layer behind ``gpunn train``, ``gpunn plot`` and ``gpunn demo``.

Nothing here re-implements an activation, loss or optimizer: the model calls gpunn's own functions for those and only
brings the linear layers (a matrix product from the array library of the device: NumPy, CuPy, or a small Numba CUDA
kernel in :mod:`gpunn.app.linear`). Importing this package needs NumPy only; scikit-learn, matplotlib and tqdm (the
``app`` extra) are imported where they are used.
"""

import contextlib


@contextlib.contextmanager
def cpu_threads(n: int | None = 1):
    """Run gpunn's CPU loops (Numba ``prange``) on ``n`` threads inside the block (``None``: leave as is).

    The app's arrays are batch-sized (a few thousand elements): waking a thread pool for each call costs more than
    the work itself (measured: 3 epochs of ``gpunn train`` took 7.6 s on 2 threads and 0.23 s on 1 on a shared
    2-core machine), so the app uses one thread unless told otherwise."""
    if n is None:
        yield
        return
    import numba

    before = numba.get_num_threads()
    numba.set_num_threads(max(1, min(int(n), numba.config.NUMBA_NUM_THREADS)))
    try:
        yield
    finally:
        numba.set_num_threads(before)
