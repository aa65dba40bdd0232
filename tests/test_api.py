"""Every public op and optimizer carries a docstring with a runnable example (the family test files run them)."""

import pytest

import gpunn
import gpunn.optim

UTILITIES = {"info", "mode", "to_device", "to_host", "Optimizer"}  # documented, without an op example
PUBLIC = [(mod, name) for mod in (gpunn, gpunn.optim) for name in mod.__all__
          if name not in UTILITIES and callable(getattr(mod, name)) and not isinstance(getattr(mod, name), type(gpunn))]


@pytest.mark.parametrize("mod, name", PUBLIC, ids=[f"{m.__name__}.{n}" for m, n in PUBLIC])
def test_public_op_has_a_docstring_example(mod, name):
    doc = getattr(mod, name).__doc__
    assert doc, f"{mod.__name__}.{name} has no docstring"
    assert ">>>" in doc, f"{mod.__name__}.{name}'s docstring has no example"


def test_the_list_is_not_empty():
    assert len(PUBLIC) >= 50  # 11 activations + 8 losses, each with backward (and _with_grad), 6 optimizers
