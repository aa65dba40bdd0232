"""Argument checks for gpunn.torch, in PyTorch's terms: run before any op, so that a bad call raises (naming the
argument) before a kernel runs and leaves its inputs untouched. Everything here is traceable by ``torch.compile``."""

import numbers
import warnings

import torch

FLOAT_DTYPES = (torch.float32, torch.float64)
INDEX_DTYPES = (torch.int64, torch.int32)
DEVICE_TYPES = ("cpu", "cuda")
REDUCTIONS = ("none", "mean", "sum")


def tensor(name, x):
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a Tensor, got {type(x).__name__}")
    return x


def floating(name, x):
    """``x`` is a float32 or float64 tensor (gpunn's kernels take those two)."""
    tensor(name, x)
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float32 or float64 for gpunn, got {x.dtype}")
    return x


def real(name, value):
    """A real number (Python or NumPy) as a Python float, else a TypeError naming it."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    return float(value)


def same_dtype(name, x, other_name, other):
    if x.dtype != other.dtype:
        raise TypeError(f"{name} has dtype {x.dtype} but {other_name} has {other.dtype}: dtypes must match")


def same_device(**named):
    """All given tensors (None skipped) on one CPU or CUDA device; else PyTorch's RuntimeError, naming them."""
    first_name, first = None, None
    for name, x in named.items():
        if x is None:
            continue
        if first is None:
            first_name, first = name, x
            if x.device.type not in DEVICE_TYPES:
                raise RuntimeError(f"gpunn runs on CPU and CUDA tensors, but {name} is on {x.device}")
        elif x.device != first.device:
            raise RuntimeError(f"Expected all tensors to be on the same device, but found at least two devices, "
                               f"{first.device} and {x.device}! ({first_name} is on {first.device}, {name} on "
                               f"{x.device})")


def no_grad_wanted(op, **named):
    """gpunn computes no gradient for these arguments: refuse them when autograd would ask for one."""
    if not torch.is_grad_enabled():
        return
    for name, x in named.items():
        if x is not None and x.requires_grad:
            raise RuntimeError(f"{op}: gpunn does not compute the gradient with respect to {name}, which requires "
                               f"grad (detach it, or use torch.nn.functional.{op})")


def reduction(size_average, reduce, value):
    """The reduction string, from PyTorch's deprecated size_average/reduce when either is given (with its
    warning), else ``value`` checked."""
    if size_average is not None or reduce is not None:
        size_average = True if size_average is None else size_average
        reduce = True if reduce is None else reduce
        value = "mean" if size_average and reduce else "sum" if reduce else "none"
        warnings.warn(f"size_average and reduce args will be deprecated, please use reduction='{value}' instead.",
                      stacklevel=3)
    if value not in REDUCTIONS:
        raise ValueError(f"{value} is not a valid value for reduction")
    return value


def dim(name, value, ndim):
    """A dimension index in [-ndim, ndim) (0-d tensors take -1 and 0), as PyTorch's IndexError says otherwise."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    rank = max(ndim, 1)
    if not -rank <= value < rank:
        raise IndexError(f"Dimension out of range (expected to be in range of [{-rank}, {rank - 1}], but got "
                         f"{value})")
    return value


def inplace_allowed(x):
    """PyTorch refuses an in-place op on a leaf that requires grad; say so before computing anything."""
    if torch.is_grad_enabled() and x.requires_grad and x.is_leaf:
        raise RuntimeError("a leaf Variable that requires grad is being used in an in-place operation.")
