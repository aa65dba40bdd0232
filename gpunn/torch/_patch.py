"""Swapping gpunn's modules into an existing model, as Liger-Kernel's ``apply_liger_kernel_to_*`` functions do."""

import copy

from torch import nn

from . import modules

# torch.nn class -> gpunn class (each gpunn module subclasses the torch.nn module of the same name)
REPLACEMENTS = {cls.__bases__[0]: cls for cls in (getattr(modules, name) for name in modules.__all__)
                if cls.__bases__[0] is not nn.Module}


def patch(model: nn.Module) -> dict:
    """Replace, in place, every ``torch.nn`` activation and loss submodule of ``model`` that gpunn provides by
    gpunn's module of the same name, and return what was replaced.

    A replacement keeps the original's attributes, hooks, parameters (PReLU's ``weight`` is the same ``Parameter``
    object, so an optimizer that holds it keeps working) and buffers. Only modules of exactly a ``torch.nn`` class
    are swapped (a subclass may change ``forward``); a module shared by several parents is replaced by one gpunn
    module everywhere. ``model`` itself is never replaced (nothing holds it to swap); pass its container.

    Args:
        model: any ``torch.nn.Module``.

    Returns:
        ``{qualified name: replaced torch.nn module}`` for every replaced position (empty when nothing matched).

    Example:
        >>> import torch, gpunn.torch as gt
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
        >>> sorted(gt.patch(model).items())
        [('1', ReLU())]
        >>> type(model[1])
        <class 'gpunn.torch.modules.ReLU'>
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    replaced = {}
    swapped = {}  # id(original) -> its replacement, so a shared module gets one
    for parent_name, parent in list(model.named_modules(remove_duplicate=False)):
        for child_name, child in list(parent._modules.items()):
            gpunn_class = REPLACEMENTS.get(type(child))
            if gpunn_class is None:
                continue
            if id(child) not in swapped:
                swapped[id(child)] = _converted(child, gpunn_class)
            setattr(parent, child_name, swapped[id(child)])
            replaced[f"{parent_name}.{child_name}" if parent_name else child_name] = child
    return replaced


def _converted(module, gpunn_class):
    """A ``gpunn_class`` instance holding ``module``'s state: the same attribute values, its own registries (the
    dicts of parameters, buffers, hooks) so that the original stays intact."""
    new = gpunn_class.__new__(gpunn_class)
    new.__dict__.update({k: copy.copy(v) if isinstance(v, dict) else v for k, v in module.__dict__.items()})
    return new
