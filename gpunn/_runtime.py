"""Where gpunn runs: the mode (a GPU, the CUDA simulator, or the CPU only) and what ``gpunn.info()`` reports.

* ``cuda``: a real GPU. Device arrays (Numba device arrays, CuPy arrays, PyTorch CUDA tensors, anything with
  ``__cuda_array_interface__``) are launched on without a copy.
* ``simulator``: ``NUMBA_ENABLE_CUDASIM=1``. The very same kernels run in Numba's CUDA simulator on
  ``gpunn.to_device`` arrays, with tiny grids (the simulator runs each thread as a Python thread).
* ``cpu``: NumPy arrays (and PyTorch CPU tensors) take the CPU path, whatever the mode.

The path is chosen by the kind of the arrays, never by a global switch: NumPy in, NumPy out; device in, device out
(of the same library). Nothing here compiles at import time. Array kinds live in gpunn/_arrays.py, argument checks
in gpunn/_args.py, launches in gpunn/_launch.py.
"""

from __future__ import annotations

import functools
import sys

import numpy as np


@functools.lru_cache(maxsize=None)
def simulator() -> bool:
    """True when Numba's CUDA simulator is on (``NUMBA_ENABLE_CUDASIM=1`` before Numba was imported; it cannot
    change afterwards)."""
    from numba.cuda import config

    return bool(config.ENABLE_CUDASIM)


@functools.lru_cache(maxsize=None)
def gpu_available() -> bool:
    """True when a real CUDA GPU can be used (never under the simulator)."""
    if simulator():
        return False
    try:
        from numba import cuda

        return bool(cuda.is_available())
    except Exception:  # a broken driver or toolkit means: no GPU
        return False


def mode() -> str:
    """``"cuda"``, ``"simulator"`` or ``"cpu"``: where device arrays live and kernels run."""
    if simulator():
        return "simulator"
    return "cuda" if gpu_available() else "cpu"


def require_device(what: str) -> None:
    if mode() == "cpu":
        raise RuntimeError(
            f"{what} needs a CUDA GPU or the CUDA simulator (set NUMBA_ENABLE_CUDASIM=1 before importing gpunn); "
            "NumPy arrays run on the CPU path without either"
        )


def info() -> dict:
    """What gpunn runs on: mode, device name and compute capability, and the versions that matter."""
    import platform

    import numba

    out = {"gpunn": _version("gpunn"), "mode": mode(), "python": platform.python_version(),
           "numpy": np.__version__, "numba": numba.__version__, "numba-cuda": _version("numba-cuda")}
    for lib in ("cupy", "torch"):
        if lib in sys.modules or _version(lib) is not None:
            out[lib] = _version(lib) or getattr(sys.modules.get(lib), "__version__", None)
    if mode() == "cuda":
        from numba import cuda

        from ._launch import sm_count

        dev = cuda.get_current_device()
        name = dev.name.decode() if isinstance(dev.name, bytes) else str(dev.name)
        out.update(device=name, compute_capability=".".join(map(str, dev.compute_capability)),
                   multiprocessors=sm_count())
    elif mode() == "simulator":
        out["device"] = "Numba CUDA simulator"
    else:
        out["device"] = "none (CPU only)"
    return out


def _version(dist: str):
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None
