"""gpunn.torch.patch: torch.nn activations and losses in a model swapped for gpunn's, in place, on an nn.Sequential
and on a model with nested submodules; the patched model computes what the original did (torch.nn as reference)."""

import copy

import pytest

torch = pytest.importorskip("torch")

import gpunn.torch as gt  # noqa: E402
from helpers import assert_close  # noqa: E402

nn = torch.nn


class Block(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.fc = nn.Linear(width, width)
        self.act = nn.GELU(approximate="tanh")
        self.gate = nn.Sequential(nn.Linear(width, width), nn.Sigmoid())

    def forward(self, x):
        return self.act(self.fc(x)) * self.gate(x)


class Net(nn.Module):
    """Nested: blocks in a ModuleList, a shared activation used twice, a PReLU with learned weights, a custom
    subclass of nn.ReLU (not swapped: it may change forward), a loss module."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Linear(4, 8), nn.PReLU(8))
        self.blocks = nn.ModuleList([Block(8), Block(8)])
        self.shared = nn.SiLU()
        self.head = nn.Sequential(nn.Linear(8, 8), self.shared, nn.Linear(8, 3), nn.LogSoftmax(dim=1))
        self.custom = MyReLU()
        self.loss = nn.CrossEntropyLoss(label_smoothing=0.05)

    def forward(self, x, labels):
        h = self.stem(x)
        for block in self.blocks:
            h = self.shared(block(h))
        return self.loss(self.head(self.custom(h)), labels)


class MyReLU(nn.ReLU):
    def forward(self, x):
        return super().forward(x) + 0.0


def test_sequential(rng):
    model = nn.Sequential(nn.Linear(5, 6), nn.ReLU(inplace=True), nn.Linear(6, 6), nn.Tanh(), nn.Linear(6, 2))
    reference = copy.deepcopy(model)
    replaced = gt.patch(model)
    assert list(replaced) == ["1", "3"]
    assert type(replaced["1"]) is nn.ReLU and type(replaced["3"]) is nn.Tanh
    assert type(model[1]) is gt.ReLU and model[1].inplace and type(model[3]) is gt.Tanh
    assert isinstance(model[1], nn.ReLU)                      # still a torch.nn.ReLU to any code that asks
    x = torch.from_numpy(rng.standard_normal((7, 5))).float()
    assert_close(model(x).detach().numpy(), reference(x).detach().double().numpy(), atol=1e-6, rtol=1e-5)
    assert gt.patch(model) == {}                              # nothing left to replace


def test_nested_model_with_shared_and_parametrised_modules(rng):
    torch.manual_seed(0)
    model = Net()
    with torch.no_grad():
        model.stem[1].weight.uniform_(-0.5, 0.5)
    reference = copy.deepcopy(model)
    prelu_weight = model.stem[1].weight
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)   # made before patching: must keep working
    replaced = gt.patch(model)
    assert sorted(replaced) == sorted(["stem.1", "blocks.0.act", "blocks.0.gate.1", "blocks.1.act", "blocks.1.gate.1",
                                       "shared", "head.1", "head.3", "loss"])
    assert model.head[1] is model.shared and type(model.shared) is gt.SiLU      # one replacement, both places
    assert type(model.custom) is MyReLU                                          # a subclass is left alone
    assert type(model.stem[1]) is gt.PReLU and model.stem[1].weight is prelu_weight
    assert model.blocks[0].act.approximate == "tanh" and model.loss.label_smoothing == 0.05
    assert [n for n, _ in model.named_parameters()] == [n for n, _ in reference.named_parameters()]
    assert model.state_dict().keys() == reference.state_dict().keys()

    x = torch.from_numpy(rng.standard_normal((9, 4))).float()
    labels = torch.from_numpy(rng.integers(0, 3, 9))
    for m in (model, reference):
        m.zero_grad()
        m(x, labels).backward()
    for (name, p), q in zip(model.named_parameters(), reference.parameters()):
        assert_close(p.grad.numpy(), q.grad.double().numpy(), atol=1e-6, rtol=1e-5, what=f"grad {name}")
    before = prelu_weight.detach().clone()
    optimizer.step()
    assert not torch.equal(prelu_weight, before)             # the gpunn PReLU's weight is the optimizer's


def test_replaced_modules_are_left_intact():
    relu = nn.ReLU()
    hook_calls = []
    relu.register_forward_hook(lambda *a: hook_calls.append(1))
    model = nn.Sequential(relu)
    replaced = gt.patch(model)
    assert replaced["0"] is relu and type(relu) is nn.ReLU
    model(torch.zeros(2))
    assert hook_calls == [1]                                  # hooks come along to the replacement
    model[0].register_forward_hook(lambda *a: hook_calls.append(2))
    relu(torch.zeros(2))
    assert hook_calls == [1, 1]                               # ...but the original keeps its own registry


def test_bad_model():
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        gt.patch([nn.ReLU()])
