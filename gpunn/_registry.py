"""A list of every CUDA kernel gpunn launches, with the signatures it is launched with.

The kernel build check (``python -m gpunn kernels``) compiles each entry to PTX for sm_80 and sm_90 and links it to
SASS, without a GPU. Op modules add their kernels at import time; registering compiles nothing.
"""

from dataclasses import dataclass
from typing import Callable

F32_1D = "float32[::1]"
F64_1D = "float64[::1]"


@dataclass(frozen=True)
class KernelSpec:
    name: str                  # e.g. "relu_forward[float32]"
    build: Callable[[], object]  # returns the cuda.jit dispatcher (calls the op's factory; compiles nothing)
    signature: str             # e.g. "void(float32[::1], float32, float32, float32[::1])"
    dtype: str                 # "float16", "bfloat16", "float32" or "float64": the data (only float64 may do f64 math)
    f64_accumulator: bool = False  # True for reductions that accumulate in float64 on purpose (_reduce.py)
    vector_loads: bool = False     # True for kernels designed around 128-bit loads (its float32 SASS must have them)


KERNELS: list[KernelSpec] = []


def register(name, build, signature, dtype, f64_accumulator=False, vector_loads=False):
    KERNELS.append(KernelSpec(name, build, signature, dtype, f64_accumulator, vector_loads))


FULL = ("float32", "float64")
WITH_HALF = ("float16", "bfloat16", "float32", "float64")


def for_dtypes(name, build_for_dtype, signature_for_dtype, f64_accumulator=False, vector_loads=False, dtypes=FULL):
    """Register one kernel for each of ``dtypes`` (default float32 and float64; ``WITH_HALF`` adds the halves).
    ``signature_for_dtype("float32")`` gives the signature; ``build_for_dtype(np.dtype)`` gives the dispatcher."""
    from ._half import dtype_named

    for dt in dtypes:
        register(f"{name}[{dt}]", (lambda d=dt: build_for_dtype(dtype_named(d))), signature_for_dtype(dt), dt,
                 f64_accumulator, vector_loads)
