r"""``flatten``: many arrays as views of one contiguous buffer.

An optimizer steps any number of separate arrays in one launch (a table of their addresses), but one buffer is still
worth having: the step then reads one contiguous, 16-byte aligned stream (every element through 128-bit vectors,
where separate small arrays leave unaligned heads and tails), the host checks one gradient instead of hundreds, and
gpunn.distributed exchanges one buffer per step. ``flatten`` makes that one array out of many:

.. math::
    \mathrm{flat} = [\,\mathrm{vec}(a_0),\ \mathrm{vec}(a_1),\ \dots,\ \mathrm{vec}(a_{k-1})\,],\qquad
    \mathrm{views}[i] = \mathrm{flat}[o_i : o_i + n_i].\mathrm{reshape}(a_i.\mathrm{shape}),\quad
    o_i = \textstyle\sum_{j<i} n_j

(row-major order, no padding: ``flat`` is exactly the concatenation). ``views[i]`` aliases ``flat``: writing
either changes the other, and an optimizer stepping ``flat`` updates every view in place. The layers of a model
then compute with the views, and the gradients are written into views of a second flat buffer, so that
``opt.step([flat_grad])`` is one launch for the whole model.
"""

from __future__ import annotations

import numpy as np

from .._arrays import device_array, dtype_of, kind
from .._copy import gather
from .._launch import current_stream


def _native_dtype(x):
    """The dtype as the array's library names it (torch.bfloat16 stays distinct from float16)."""
    return x.dtype if kind(x) in ("torch_cpu", "torch_cuda") else np.dtype(x.dtype)


def flatten(arrays):
    r"""Copy ``arrays`` into one new contiguous 1-D buffer and return ``(flat, views)``.

    .. math::
        \mathrm{flat} = \mathrm{concat}_i\,\mathrm{vec}(a_i),\qquad
        \mathrm{views}[i] = \mathrm{flat}[o_i : o_i + n_i].\mathrm{reshape}(a_i.\mathrm{shape})

    Args:
        arrays: a non-empty list (or tuple) of arrays, all of one kind and one dtype: NumPy arrays, PyTorch CPU
            tensors, PyTorch CUDA tensors (on one device), CuPy arrays, or Numba device arrays (including
            ``gpunn.to_device`` arrays in the CUDA simulator; other ``__cuda_array_interface__`` objects give Numba
            device arrays). Any shapes, including 0-d and empty; they need not be contiguous. They are only read.

    Returns:
        ``(flat, views)``: ``flat`` is a new 1-D array of the same kind, dtype and device with
        ``sum(a.size)`` elements, holding the arrays one after the other; ``views[i]`` has the shape of
        ``arrays[i]`` and is a view of ``flat`` (C-contiguous, no copy). Keep using the views (not the originals):
        the originals are not connected to ``flat``.

    Raises:
        TypeError: ``arrays`` is not a list/tuple, or ``arrays[i]`` is not an array, or is of another kind, dtype
            or device than ``arrays[0]``.
        ValueError: ``arrays`` is empty.

    One optimizer launch per step for a whole model:

    * parameters: ``flat, views = flatten(params)``; compute with ``views``. For a PyTorch module, re-point its
      parameters at the views: ``for p, v in zip(model.parameters(), views): p.data = v``.
    * gradients: ``flat_grad, grad_views = flatten([zeros like p for p in params])`` and write each gradient into its
      view (``out=grad_views[i]``, ``grad_views[i][...] = g``, or for PyTorch ``p.grad = grad_views[i]``, into which
      ``backward()`` accumulates in place: zero it with ``flat_grad.zero_()``, not ``zero_grad(set_to_none=True)``).
    * ``opt = gpunn.optim.Adam([flat]); opt.step([flat_grad])``: one kernel launch (two with ``grad_scale`` or
      ``max_grad_norm``), however many views there are. The step is elementwise, so it gives the very same numbers
      as stepping the separate arrays (clipping's global norm may differ in its last bits: it is summed in another
      order). The optimizer's state and ``state_dict`` are then those of the one array ``flat``.

    Example:
        >>> import numpy as np, gpunn
        >>> w, b = np.ones((2, 3), np.float32), np.zeros(2, np.float32)
        >>> flat, (wv, bv) = gpunn.optim.flatten([w, b])
        >>> flat.shape, wv.shape, bv.shape
        ((8,), (2, 3), (2,))
        >>> gflat, (gw, gb) = gpunn.optim.flatten([np.zeros_like(w), np.zeros_like(b)])
        >>> gw[...] = 1.0; gb[...] = 2.0                  # gradients written into the views
        >>> opt = gpunn.optim.SGD([flat], lr=0.5)
        >>> opt.step([gflat]), opt.last_launches          # one step over everything (0 launches: the CPU path)
        (True, 0)
        >>> float(wv[0, 0]), float(bv[1])                 # the views were updated in place
        (0.5, -1.0)
        >>> np.shares_memory(wv, flat)
        True
    """
    if kind(arrays) is not None or not isinstance(arrays, (list, tuple)):
        raise TypeError(f"arrays must be a list of arrays, got {type(arrays).__name__}")
    if not arrays:
        raise ValueError("arrays is empty: give a list of arrays to flatten")
    first = arrays[0]
    k0 = kind(first)
    for i, x in enumerate(arrays):
        k = kind(x)
        if k is None:
            raise TypeError(f"arrays[{i}] must be an array (NumPy, PyTorch, CuPy or Numba device array), "
                            f"got {type(x).__name__}")
        if k != k0:
            raise TypeError(f"arrays[{i}] is a {k} array but arrays[0] is a {k0} array: flatten takes arrays of "
                            f"one kind")
        if _native_dtype(x) != _native_dtype(first):
            raise TypeError(f"arrays[{i}] has dtype {x.dtype} but arrays[0] has {first.dtype}: flatten takes "
                            f"arrays of one dtype")
        if k in ("torch_cuda", "cupy") and x.device != first.device:
            raise TypeError(f"arrays[{i}] is on {x.device} but arrays[0] is on {first.device}")
    shapes = [tuple(int(s) for s in x.shape) for x in arrays]
    sizes = [int(np.prod(s, dtype=np.int64)) for s in shapes]
    offsets = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)]).tolist()
    total = offsets[-1]
    pieces = list(zip(arrays, shapes, sizes, offsets))

    if k0 in ("numpy", "torch_cpu", "torch_cuda", "cupy"):
        if k0 == "numpy":
            flat = np.empty(total, first.dtype)
        elif k0 == "cupy":
            import cupy

            with cupy.cuda.Device(first.device.id):
                flat = cupy.empty(total, first.dtype)
        else:
            import torch

            flat = torch.empty(total, dtype=first.dtype, device=first.device)
        views = []
        for x, shape, n, o in pieces:
            piece = flat[o:o + n]
            if k0 in ("torch_cpu", "torch_cuda"):
                piece.copy_(x.detach().reshape(-1))
                views.append(piece.view(shape))
            else:
                piece[...] = x.reshape(-1)   # NumPy and CuPy reshape copy a non-contiguous array once
                views.append(piece.reshape(shape))
        return flat, views

    # Numba device arrays (and the simulator's): device-to-device copies into slices of one device buffer
    from numba import cuda

    flat = cuda.device_array(total, dtype_of(first))
    views = []
    for x, shape, n, o in pieces:
        piece = flat[o:o + n]
        if n:
            gather(device_array(x), device_array(piece).reshape(shape), current_stream(x))
        views.append(piece.reshape(shape))
    return flat, views

