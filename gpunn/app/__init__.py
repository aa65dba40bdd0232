"""The application layer behind ``gpunn train``, ``gpunn plot`` and ``gpunn demo``.

Nothing here re-implements an activation, loss or optimizer: the model calls gpunn's own functions for those and only
brings the linear layers (a matrix product from the array library of the device: NumPy, CuPy, or a small Numba CUDA
kernel in :mod:`gpunn.app.linear`). Importing this package needs NumPy only; scikit-learn, matplotlib and tqdm (the
``app`` extra) are imported where they are used.
"""
