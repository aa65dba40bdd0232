"""gpunn.torch.optim against the torch.optim optimizer of the same name: 50 steps on a small model for a grid of
options, param groups, parameters without a gradient, closures, LR schedulers, state_dict in torch's format (and
loaded across the two), torch.amp.GradScaler, bad input.

Two copies of one model, one per optimizer, see the same batches; each computes its own gradients, so the comparison
covers the whole loop a user runs. The reference is torch.optim itself.
"""

import copy
import io

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import gpunn.torch as gt  # noqa: E402
from helpers import assert_close  # noqa: E402

STEPS = 50
# float32 rounding, grown over 50 steps of two optimizers that round differently (fused vs torch's single-tensor)
TOL = {torch.float32: dict(atol=1e-5, rtol=1e-5), torch.float64: dict(atol=1e-12, rtol=1e-11)}

GRID = {
    "SGD": [dict(lr=0.05), dict(lr=0.05, momentum=0.9), dict(lr=0.05, momentum=0.9, dampening=0.3),
            dict(lr=0.05, momentum=0.9, nesterov=True), dict(lr=0.05, momentum=0.5, weight_decay=0.01),
            dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01, maximize=True), dict()],
    "RMSprop": [dict(), dict(lr=0.003, alpha=0.9), dict(lr=0.003, centered=True), dict(lr=0.003, momentum=0.5),
                dict(lr=0.003, centered=True, momentum=0.5, weight_decay=0.01),
                dict(lr=0.003, eps=1e-6, maximize=True)],
    "Adam": [dict(), dict(lr=0.01, betas=(0.8, 0.99)), dict(lr=0.01, amsgrad=True), dict(lr=0.01, weight_decay=0.05),
             dict(lr=0.01, weight_decay=0.05, decoupled_weight_decay=True),
             dict(lr=0.01, amsgrad=True, weight_decay=0.01, maximize=True, eps=1e-6)],
    "AdamW": [dict(), dict(lr=0.01, weight_decay=0.1), dict(lr=0.01, amsgrad=True),
              dict(lr=0.01, weight_decay=0.1, maximize=True, betas=(0.5, 0.9))],
}
CASES = [(name, kw) for name, grid in GRID.items() for kw in grid]


def make_model(seed, dtype=torch.float32):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 3)).to(dtype)


def batches(rng, n, dtype=torch.float32):
    return [(torch.from_numpy(rng.standard_normal((8, 5))).to(dtype),
             torch.from_numpy(rng.standard_normal((8, 3))).to(dtype)) for _ in range(n)]


def train_step(model, opt, x, y, closure=False):
    sign = -1.0 if opt.param_groups[0]["maximize"] else 1.0  # maximize the negated loss: the same descent

    def loss_fn():
        opt.zero_grad()
        loss = sign * torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        return loss

    if closure:
        return opt.step(loss_fn)
    loss = loss_fn()
    opt.step()
    return loss


def assert_params_close(model, ref, dtype=torch.float32, what="params"):
    for (name, p), q in zip(model.named_parameters(), ref.parameters()):
        assert_close(p.detach().numpy(), q.detach().double().numpy(), what=f"{what} {name}", **TOL[dtype])


def pair(name, kw, seed, dtype=torch.float32):
    """The same model twice, one with gpunn's optimizer and one with torch's, both built with ``kw``."""
    model, ref = make_model(seed, dtype), make_model(seed, dtype)
    return model, getattr(gt.optim, name)(model.parameters(), **kw), ref, getattr(torch.optim, name)(
        ref.parameters(), **kw)


@pytest.mark.parametrize("name,kw", CASES, ids=[f"{n}-{k}" for n, k in CASES])
def test_fifty_steps_match_torch(name, kw, rng):
    model, opt, ref, ref_opt = pair(name, kw, int(rng.integers(1000)))
    for x, y in batches(rng, STEPS):
        train_step(model, opt, x, y)
        train_step(ref, ref_opt, x, y)
    assert_params_close(model, ref, what=f"{name}{kw}")
    assert isinstance(opt, torch.optim.Optimizer)


@pytest.mark.parametrize("name", GRID)
def test_float64_matches_torch(name, rng):
    kw = GRID[name][-1]
    model, opt, ref, ref_opt = pair(name, kw, 3, torch.float64)
    for x, y in batches(rng, 20, torch.float64):
        train_step(model, opt, x, y)
        train_step(ref, ref_opt, x, y)
    assert_params_close(model, ref, torch.float64)


@pytest.mark.parametrize("name", GRID)
def test_two_dtypes_in_one_group(name, rng):
    """A float64 layer before a float32 one: one gpunn optimizer per dtype, stepped from one param group (the
    float64 gradients carry the float32 layer's rounding, so float32 tolerance)."""
    kw = GRID[name][-1]
    model, opt, ref, ref_opt = pair(name, kw, 3, torch.float64)
    model[2].float(), ref[2].float()
    opt, ref_opt = getattr(gt.optim, name)(model.parameters(), **kw), getattr(torch.optim, name)(ref.parameters(), **kw)
    for x, y in batches(rng, 20, torch.float64):
        for m, o in ((model, opt), (ref, ref_opt)):
            o.zero_grad()
            torch.nn.functional.mse_loss(m[2](m[1](m[0](x)).float()).double(), y).backward()
            o.step()
    for (pname, p), q in zip(model.named_parameters(), ref.parameters()):
        assert p.dtype == q.dtype
        assert_close(p.detach().numpy(), q.detach().double().numpy(), what=pname, **TOL[torch.float32])


@pytest.mark.parametrize("name", GRID)
def test_param_groups_with_their_own_lr_and_weight_decay(name, rng):
    kw = dict(GRID[name][1])
    model, ref = make_model(4), make_model(4)

    def groups(m):
        return [{"params": m[0].parameters(), "lr": 0.02, "weight_decay": 0.1},
                {"params": m[2].parameters(), "weight_decay": 0.0}]

    opt, ref_opt = getattr(gt.optim, name)(groups(model), **kw), getattr(torch.optim, name)(groups(ref), **kw)
    for x, y in batches(rng, 30):
        train_step(model, opt, x, y)
        train_step(ref, ref_opt, x, y)
    assert_params_close(model, ref)


@pytest.mark.parametrize("name,kw", [("SGD", dict(lr=0.05, momentum=0.9)), ("RMSprop", dict(momentum=0.3)),
                                     ("Adam", dict(lr=0.01, amsgrad=True)), ("AdamW", dict(lr=0.01))])
def test_parameters_without_a_gradient_are_skipped_as_torch_does(name, kw, rng):
    """A random subset of parameters gets a gradient each step: torch keeps a step count (and SGD a momentum start)
    per parameter, and so must the result."""
    model, opt, ref, ref_opt = pair(name, kw, 5)
    params, ref_params = list(model.parameters()), list(ref.parameters())
    before = [p.detach().clone() for p in params]
    for t, (x, y) in enumerate(batches(rng, 30)):
        for m, o in ((model, opt), (ref, ref_opt)):
            o.zero_grad()
            torch.nn.functional.mse_loss(m(x), y).backward()
        keep = rng.random(len(params)) < 0.6 if t >= 3 else np.arange(len(params)) == 1  # 3 steps: only params[1]
        for p, q, k in zip(params, ref_params, keep):
            if not k:
                p.grad, q.grad = None, None
        opt.step()
        ref_opt.step()
        if t == 2:  # untouched until a gradient arrives
            for i in (0, 2, 3):
                assert torch.equal(params[i], before[i]) and params[i] not in opt.state
    assert_params_close(model, ref)
    for p, q in zip(params, ref_params):
        assert opt.state[p].keys() == ref_opt.state[q].keys()
        for key in ref_opt.state[q]:
            assert_close(opt.state[p][key].numpy(), ref_opt.state[q][key].double().numpy(), what=key,
                         **TOL[torch.float32])


def test_zero_grad_then_step_changes_nothing(rng):
    model, opt, _, _ = pair("Adam", {}, 6)
    (x, y), = batches(rng, 1)
    train_step(model, opt, x, y)
    params = [p.detach().clone() for p in model.parameters()]
    state = copy.deepcopy(opt.state_dict())
    opt.zero_grad()
    assert all(p.grad is None for p in model.parameters())
    opt.step()
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), params))
    assert float(opt.state_dict()["state"][0]["step"]) == float(state["state"][0]["step"]) == 1.0


@pytest.mark.parametrize("name", GRID)
def test_closure(name, rng):
    kw = GRID[name][1]
    model, opt, ref, ref_opt = pair(name, kw, 7)
    for x, y in batches(rng, 10):
        loss = train_step(model, opt, x, y, closure=True)
        ref_loss = train_step(ref, ref_opt, x, y, closure=True)
        assert_close(loss.detach().numpy(), ref_loss.detach().double().numpy(), what="closure loss",
                     **TOL[torch.float32])
    assert_params_close(model, ref)


SCHEDULERS = {
    "StepLR": lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=7, gamma=0.5),
    "OneCycleLR": lambda o: torch.optim.lr_scheduler.OneCycleLR(o, max_lr=0.05, total_steps=STEPS),
    "CosineAnnealingLR": lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=STEPS),
}


@pytest.mark.parametrize("scheduler", SCHEDULERS)
@pytest.mark.parametrize("name", ["SGD", "AdamW"])
def test_lr_schedulers_work_unchanged(name, scheduler, rng):
    kw = dict(lr=0.02, momentum=0.9) if name == "SGD" else dict(lr=0.02)
    model, opt, ref, ref_opt = pair(name, kw, 8)
    sched, ref_sched = SCHEDULERS[scheduler](opt), SCHEDULERS[scheduler](ref_opt)
    for x, y in batches(rng, STEPS):
        train_step(model, opt, x, y)
        train_step(ref, ref_opt, x, y)
        sched.step()
        ref_sched.step()
        assert opt.param_groups[0]["lr"] == ref_opt.param_groups[0]["lr"]
    assert_params_close(model, ref)


# ---- state_dict ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,kw", [(n, GRID[n][-2]) for n in GRID], ids=list(GRID))
def test_state_dict_has_torchs_format_and_loads_both_ways(name, kw, rng):
    """Ten steps, then the state moves: gpunn -> torch and torch -> gpunn (through torch.save, as a checkpoint);
    ten more steps on each side equal ten more on the optimizer that never stopped."""
    data = batches(rng, 20)
    model, opt, ref, ref_opt = pair(name, kw, 9)
    for x, y in data[:10]:
        train_step(model, opt, x, y)
        train_step(ref, ref_opt, x, y)
    sd, ref_sd = opt.state_dict(), ref_opt.state_dict()
    assert sd["state"].keys() == ref_sd["state"].keys()
    for i in ref_sd["state"]:
        assert sd["state"][i].keys() == ref_sd["state"][i].keys()
        for key, value in ref_sd["state"][i].items():
            assert sd["state"][i][key].dtype == value.dtype and sd["state"][i][key].shape == value.shape, key
    assert set(sd["param_groups"][0]) <= set(ref_sd["param_groups"][0]) | {"decoupled_weight_decay"}

    def saved(state_dict):
        buf = io.BytesIO()
        torch.save(state_dict, buf)
        buf.seek(0)
        return torch.load(buf)

    crossed = [copy.deepcopy(model), copy.deepcopy(ref)]           # gpunn's params under torch's optimizer, and back
    to_torch = getattr(torch.optim, name)(crossed[0].parameters(), **kw)
    to_torch.load_state_dict(saved(sd))
    to_gpunn = getattr(gt.optim, name)(crossed[1].parameters(), **kw)
    to_gpunn.load_state_dict(saved(ref_sd))
    for x, y in data[10:]:
        for m, o in ((model, opt), (ref, ref_opt), (crossed[0], to_torch), (crossed[1], to_gpunn)):
            train_step(m, o, x, y)
    assert_params_close(crossed[0], ref, what="gpunn state loaded into torch")
    assert_params_close(crossed[1], model, what="torch state loaded into gpunn")


@pytest.mark.parametrize("name", GRID)
def test_state_dict_round_trip_gives_the_same_bits(name, rng):
    kw = GRID[name][-1]
    data = batches(rng, 12)
    model, opt, _, _ = pair(name, kw, 10)
    straight, straight_opt, _, _ = pair(name, kw, 10)
    for x, y in data:
        train_step(straight, straight_opt, x, y)
    for x, y in data[:6]:
        train_step(model, opt, x, y)
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buf)
    buf.seek(0)
    ckpt = torch.load(buf)
    resumed = make_model(0)
    resumed.load_state_dict(ckpt["model"])
    resumed_opt = getattr(gt.optim, name)(resumed.parameters(), lr=123.0)   # load restores the hyperparameters
    resumed_opt.load_state_dict(ckpt["opt"])
    for x, y in data[6:]:
        train_step(resumed, resumed_opt, x, y)
    for p, q in zip(resumed.parameters(), straight.parameters()):
        assert torch.equal(p, q)


def test_state_is_updated_in_place_without_copies(rng):
    model, opt, _, _ = pair("Adam", dict(amsgrad=True), 11)
    data = batches(rng, 3)
    train_step(model, opt, *data[0])
    p = next(model.parameters())
    tensors = {k: v for k, v in opt.state[p].items()}
    pointers = {k: v.data_ptr() for k, v in tensors.items()}
    for x, y in data[1:]:
        train_step(model, opt, x, y)
    assert all(opt.state[p][k] is v and v.data_ptr() == pointers[k] for k, v in tensors.items())
    assert float(opt.state[p]["step"]) == 3.0


# ---- mixed precision: torch.amp.GradScaler ---------------------------------------------------------------------------
@pytest.mark.parametrize("unscale_first", [False, True], ids=["scaler.step", "unscale_+clip"])
@pytest.mark.parametrize("name", ["SGD", "Adam"])
def test_grad_scaler_skips_inf_steps_and_unscales(name, unscale_first, rng):
    kw = dict(lr=0.05, momentum=0.9) if name == "SGD" else dict(lr=0.01)
    model, opt, ref, ref_opt = pair(name, kw, 12)
    scaler, ref_scaler = (torch.amp.GradScaler("cpu", init_scale=2.0 ** 10, growth_interval=3) for _ in range(2))
    for t, (x, y) in enumerate(batches(rng, 12)):
        for m, o, s in ((model, opt, scaler), (ref, ref_opt, ref_scaler)):
            o.zero_grad()
            s.scale(torch.nn.functional.mse_loss(m(x), y)).backward()
            if t in (4, 5):
                m[0].weight.grad[0, 0] = float("inf") if t == 4 else float("nan")
            if unscale_first:
                s.unscale_(o)
                torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
            if t in (4, 5):
                before = [p.detach().clone() for p in m.parameters()]
            s.step(o)
            s.update()
            if t in (4, 5):
                assert all(torch.equal(p, q) for p, q in zip(m.parameters(), before)), "a non-finite step was taken"
        assert scaler.get_scale() == ref_scaler.get_scale()
    assert_params_close(model, ref)
    if name == "Adam":
        assert float(opt.state[model[0].weight]["step"]) == float(ref_opt.state[ref[0].weight]["step"]) == 10.0


# ---- bad input -------------------------------------------------------------------------------------------------------
BAD = [
    ("SGD", dict(lr=-0.1), ValueError, "Invalid learning rate"),
    ("SGD", dict(lr=0.1, nesterov=True), ValueError, "Nesterov momentum requires a momentum and zero dampening"),
    ("SGD", dict(lr=0.1, momentum=-1.0), ValueError, "Invalid momentum value"),
    ("RMSprop", dict(alpha=-0.5), ValueError, "Invalid alpha value"),
    ("Adam", dict(betas=(1.0, 0.9)), ValueError, "Invalid beta parameter at index 0"),
    ("AdamW", dict(eps=-1e-8), ValueError, "Invalid epsilon value"),
    ("Adam", dict(weight_decay=-1.0), ValueError, "Invalid weight_decay value"),
]


@pytest.mark.parametrize("name,kw,error,message", BAD)
def test_bad_hyperparameters_raise_as_torch(name, kw, error, message):
    with pytest.raises(error, match=message):
        getattr(gt.optim, name)(make_model(0).parameters(), **kw)


def test_bad_parameters_and_gradients(rng):
    with pytest.raises(TypeError, match="float32 and float64 parameters; param 0 of param group 0 is torch.float16"):
        gt.optim.Adam([torch.zeros(3, dtype=torch.float16, requires_grad=True)])
    opt = gt.optim.SGD(make_model(0).parameters(), lr=0.1)
    with pytest.raises(ValueError, match="Invalid learning rate"):
        opt.add_param_group({"params": [torch.zeros(2, requires_grad=True)], "lr": -1.0})
    assert len(opt.param_groups) == 1                         # nothing added on error
    p = torch.zeros(4, 6).t().requires_grad_(True)             # a non-contiguous parameter
    opt = gt.optim.Adam([torch.zeros(2, requires_grad=True), p])
    p.grad = torch.ones_like(p)
    with pytest.raises(ValueError, match="needs them contiguous; param 1 of param group 0 is not"):
        opt.step()
    assert torch.equal(p, torch.zeros(4, 6).t())
    sparse = torch.zeros(3, requires_grad=True)
    sparse.grad = torch.zeros(3).to_sparse()
    with pytest.raises(RuntimeError, match="does not support sparse gradients"):
        gt.optim.SGD([sparse], lr=0.1).step()


@pytest.mark.parametrize("spoil", ["lr", "eps", "contiguity"])
def test_a_failing_step_changes_nothing(spoil, rng):
    """The second param group is bad at step time: the first group must not have been stepped either."""
    model = make_model(13)
    odd = torch.zeros(4, 3).t().requires_grad_(True)
    opt = gt.optim.Adam([{"params": model.parameters()}, {"params": [torch.zeros(3, requires_grad=True)]}], lr=0.01)
    (x, y), = batches(rng, 1)
    train_step(model, opt, x, y)
    opt.param_groups[1]["params"][0].grad = torch.ones(3)
    if spoil == "lr":
        opt.param_groups[1]["lr"] = -1.0          # as a broken scheduler would
    elif spoil == "eps":
        opt.param_groups[1]["eps"] = 0.0          # torch allows it; gpunn's step needs eps > 0
    else:
        odd.grad = torch.ones_like(odd)
        opt.add_param_group({"params": [odd]})
    params = [p.detach().clone() for p in model.parameters()]
    state = copy.deepcopy(opt.state_dict())
    opt.zero_grad(set_to_none=False)
    for p in model.parameters():
        p.grad.fill_(1.0)
    with pytest.raises(ValueError, match={"lr": "Invalid learning rate", "eps": "eps must be > 0",
                                          "contiguity": "contiguous; param 0 of param group 2"}[spoil]):
        opt.step()
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), params))
    after = opt.state_dict()["state"]
    assert all(torch.equal(after[i][k], v) for i in state["state"] for k, v in state["state"][i].items())
