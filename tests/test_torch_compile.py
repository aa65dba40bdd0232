"""gpunn.torch under torch.compile(fullgraph=True): no graph breaks, compiled results equal eager ones (CPU).

Compiling is expensive on 2 cores, so the models are tiny and few: one model that runs every gpunn.torch module
through AOTAutograd (backend "aot_eager": the same tracing of forward and backward through the fake kernels, without
code generation), called at two batch sizes; one MLP through the default backend, Inductor; and torch.library's
opcheck of every op's registration (schema, fake kernel, autograd).
"""

import pytest

torch = pytest.importorskip("torch")

import gpunn.torch as gt  # noqa: E402
from gpunn.torch import _ops  # noqa: E402
from helpers import assert_close  # noqa: E402


class EveryModule(torch.nn.Module):
    """Every activation in a chain, then every loss on the result, summed."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(6, 6)
        self.activations = torch.nn.Sequential(
            gt.ReLU(), torch.nn.Linear(6, 6), gt.LeakyReLU(0.2),
            gt.PReLU(6), gt.GELU(approximate="tanh"), gt.SiLU(), gt.ELU(0.5), gt.Softplus(beta=2.0), gt.Tanh(),
            gt.Sigmoid(), gt.GELU(), gt.LogSoftmax(dim=1), gt.Softmax(dim=0))
        self.losses = torch.nn.ModuleList([
            gt.MSELoss(), gt.L1Loss(reduction="sum"), gt.HuberLoss(delta=0.5), gt.SmoothL1Loss(beta=0.3),
            gt.BCEWithLogitsLoss(pos_weight=torch.full((6,), 2.0))])
        self.class_losses = torch.nn.ModuleList([
            gt.CrossEntropyLoss(label_smoothing=0.1), gt.MultiMarginLoss(p=2), gt.CrossEntropyLoss(reduction="none")])
        self.hinge = gt.HingeLoss()

    def forward(self, x, y, labels, signs):
        h = self.activations(self.linear(x))
        total = sum(loss(h, y).sum() for loss in self.losses)
        total = total + sum(loss(h * 5.0, labels).sum() for loss in self.class_losses)
        return total + self.hinge(h, signs)


def inputs(rng, n):
    return (torch.from_numpy(rng.standard_normal((n, 6))).float(), torch.from_numpy(rng.random((n, 6))).float(),
            torch.from_numpy(rng.integers(0, 6, n)), torch.from_numpy(rng.choice([-1.0, 1.0], (n, 6))).float())


def loss_and_grads(model, args):
    model.zero_grad()
    loss = model(*args)
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in model.parameters()]


def assert_same(compiled, eager, atol=1e-6, rtol=1e-5):
    (loss, grads), (ref_loss, ref_grads) = compiled, eager
    assert_close(loss.numpy(), ref_loss.double().numpy(), atol=atol, rtol=rtol, what="loss")
    for k, (g, r) in enumerate(zip(grads, ref_grads)):
        assert_close(g.numpy(), r.double().numpy(), atol=atol, rtol=rtol, what=f"grad {k}")


def test_every_module_traces_whole_forward_and_backward(rng):
    torch.manual_seed(0)
    model = EveryModule()
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    for n in (5, 9):   # a second batch size: a recompile with the same fake kernels
        args = inputs(rng, n)
        assert_same(loss_and_grads(compiled, args), loss_and_grads(model, args), atol=0, rtol=0)


def test_inductor_compiled_mlp_equals_eager(rng):
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), gt.GELU(), torch.nn.Linear(16, 16), gt.ReLU(inplace=True),
                                torch.nn.Linear(16, 4))
    loss_fn = gt.CrossEntropyLoss()

    def step(x, labels):
        return loss_fn(model(x), labels)

    compiled = torch.compile(step, fullgraph=True)
    x, labels = torch.from_numpy(rng.standard_normal((12, 8))).float(), torch.from_numpy(rng.integers(0, 4, 12))
    model.zero_grad()
    loss = compiled(x, labels)
    loss.backward()
    got = loss.detach(), [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    ref_loss = step(x, labels)
    ref_loss.backward()
    # inductor's own matmul and sum kernels round differently from eager's: float32 rounding
    assert_same(got, (ref_loss.detach(), [p.grad.clone() for p in model.parameters()]))


def _op_cases(rng):
    x = torch.from_numpy(rng.standard_normal((3, 4))).requires_grad_(True)
    t = torch.from_numpy(rng.standard_normal((3, 4)))
    labels = torch.from_numpy(rng.integers(0, 4, 3))
    w = torch.from_numpy(rng.uniform(0.5, 2.0, 4))
    signs = torch.from_numpy(rng.choice([-1.0, 1.0], (3, 4)))
    probs = torch.from_numpy(rng.random((3, 4)))
    cases = [(_ops.RELU.forward, (x,)), (_ops.LEAKY_RELU.forward, (x, 0.1)), (_ops.SIGMOID.forward, (x,)),
             (_ops.TANH.forward, (x,)), (_ops.GELU.forward, (x, "tanh")), (_ops.SILU.forward, (x,)),
             (_ops.ELU.forward, (x, 0.5)), (_ops.SOFTPLUS.forward, (x, 2.0, 5.0)),
             (_ops.SOFTMAX.forward, (x, 1, None)), (_ops.LOG_SOFTMAX.forward, (x, 0, None)),
             (_ops.PRELU, (x, w.clone().requires_grad_(True)))]
    for r in ("mean", "none"):
        cases += [(op, (x, t.clone().requires_grad_(True), *a, r)) for op, a in
                  [(_ops.MSE.with_grad, ()), (_ops.L1.with_grad, ()), (_ops.HUBER.with_grad, (0.5,)),
                   (_ops.SMOOTH_L1.with_grad, (0.5,))]]
        cases += [(_ops.BCE_WITH_LOGITS.with_grad, (x, probs, None, w, r)), (_ops.HINGE.with_grad, (x, signs, 1.0, r)),
                  (_ops.CROSS_ENTROPY.with_grad, (x, labels, w, -100, 0.1, r)),
                  (_ops.MULTI_MARGIN.with_grad, (x, labels, 2, 1.0, w, r)), (_ops.MSE.forward, (x, t, r))]
    cases += [(act.inplace, (x.detach().clone(), *a)) for act, a in
              [(_ops.RELU, ()), (_ops.LEAKY_RELU, (0.1,)), (_ops.SILU, ()), (_ops.ELU, (0.5,))]]
    return cases


def test_opcheck_every_op(rng):
    """torch.library.opcheck: the schema holds, the fake kernel gives the real output's metadata, and autograd is
    registered so that it also works under AOTAutograd."""
    tests = ("test_schema", "test_autograd_registration", "test_faketensor")
    for op, args in _op_cases(rng):
        result = torch.library.opcheck(op, args, test_utils=tests)
        assert all(v == "SUCCESS" for v in result.values()), (op, result)
