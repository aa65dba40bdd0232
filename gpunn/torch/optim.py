r"""``torch.optim`` optimizers on gpunn's fused step: ``SGD`` (momentum, dampening, Nesterov), ``RMSprop``, ``Adam``,
``AdamW``.

They are ``torch.optim.Optimizer`` subclasses with torch's constructor arguments and defaults: param groups with their
own hyperparameters, ``zero_grad``, closures, ``torch.optim.lr_scheduler``, hooks, and ``state_dict()`` /
``load_state_dict()`` in torch's format (``state[p]`` holds ``step``, ``exp_avg``, ... as torch's optimizers do, and a
state_dict loads into the torch optimizer of the same name and back). Parameters whose ``.grad`` is None are skipped.

How a step runs: the parameters of one param group that have a gradient are split by dtype and device, and each part
is stepped by one :mod:`gpunn.optim` optimizer (built at the first step and kept), which updates the parameters in
place from their ``.grad`` in one fused pass; hyperparameters are read from the param group at every step and passed
to the kernel as arguments, so a scheduler's new ``lr`` never recompiles anything. The tensors in ``state[p]`` are
views of that optimizer's own state buffers, so a step copies no state. When ``state`` was replaced
(``load_state_dict``) or the set of parameters with a gradient changed, the part is rebuilt from ``state`` (one copy,
that step only). Parameters with different step counts (torch keeps one per parameter) are stepped apart.

Mixed precision: the optimizers take part in ``torch.amp.GradScaler``'s protocol (``_step_supports_amp_scaling``):
``scaler.step(opt)`` hands over the scale and the found-inf flag; the step is skipped (parameters, state and step
counts unchanged) when an inf or NaN was found, and the gradients are unscaled inside the fused step otherwise (they
stay scaled in ``.grad``, as with torch's fused optimizers).
"""

import torch

from .. import optim as core

__all__ = ["SGD", "RMSprop", "Adam", "AdamW"]
FLOAT_DTYPES = (torch.float32, torch.float64)


def _step_dtype():
    """The dtype torch's optimizers give ``state['step']``."""
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


def _torch_view(array, like):
    """A tensor sharing ``array``'s memory (a NumPy array, or a Numba device array on ``like``'s CUDA device)."""
    if like.device.type == "cpu":
        return torch.from_numpy(array)
    return torch.as_tensor(array, device=like.device)


class _Part:
    """One gpunn optimizer for some parameters of one param group (one dtype, device and step count), and the tensors
    it put in torch's ``state[p]``: views of its state, and ``step`` as 0-d views of one tensor, one per parameter."""

    def __init__(self, gpunn_opt, params, step_key):
        self.opt = gpunn_opt
        self.params = params
        self.step_key = step_key       # torch's per-parameter step entry, or None (SGD keeps none)
        self.entries = None            # per parameter: {state name: tensor} as put in state[p]; None before a step
        self.names = None
        self.steps = None

    def in_sync(self, state):
        """True when torch's ``state`` holds exactly the tensors this part put there (nothing was loaded since)."""
        if self.entries is None:   # never stepped: in sync while torch holds no state of ours either
            ours = {*self.opt.STATE, self.step_key}
            return not any(ours.intersection(state.get(p, ())) for p in self.params)
        for p, mine in zip(self.params, self.entries):
            st = state.get(p)
            for name, tensor in mine.items():
                if st is None or st.get(name) is not tensor:
                    return False
        return True

    def load(self, state, counters):
        """Take torch's ``state`` for these parameters into the (new) gpunn optimizer: step count or SGD's momentum
        flag from ``counters``, state tensors copied into its buffers (missing ones are zeros)."""
        sd = self.opt.state_dict()     # a new optimizer's holds scalars only
        sd.update(counters)
        self.opt.load_state_dict(sd)
        self._publish(state, copy_from=state)

    def step(self, state, names, grads, grad_scale):
        if not self.opt.step(grads, grad_scale=grad_scale):
            return
        if self.entries is None or names != self.names:
            self._publish(state)
        elif self.steps is not None:
            self.steps.add_(1)

    def _publish(self, state, copy_from=None):
        """Put views of the gpunn optimizer's state into ``state[p]`` (first copying ``copy_from``'s values in)."""
        entries = []
        if self.step_key is not None:
            self.steps = torch.full((len(self.params),), float(self.opt.step_count), dtype=_step_dtype())
        for k, p in enumerate(self.params):
            mine = {name: _torch_view(view, p) for name, view in self.opt.state_views(k).items()}
            if copy_from is not None:
                old = copy_from.get(p, {})
                for name, tensor in mine.items():
                    if old.get(name) is not None:
                        tensor.copy_(old[name])
            if self.step_key is not None:
                mine[self.step_key] = self.steps[k]
            if mine:
                state[p].update(mine)
            entries.append(mine)
        self.entries = entries
        self.names = tuple(sorted(n for n in entries[0] if n != self.step_key)) if entries else ()


class _Fused(torch.optim.Optimizer):
    """The torch.optim.Optimizer machinery shared by the four: parts, their cache, the step, GradScaler."""

    _step_supports_amp_scaling = True   # torch.amp.GradScaler hands over grad_scale and found_inf
    STEP_KEY = "step"

    def __init__(self, params, defaults):
        self._parts = {}
        super().__init__(params, defaults)

    def __setstate__(self, state):
        super().__setstate__(state)
        self.__dict__.setdefault("_parts", {})
        for group in self.param_groups:
            for name, value in self.defaults.items():
                group.setdefault(name, value)

    def add_param_group(self, param_group):
        """As torch's, and the group's parameters and hyperparameters are checked (nothing is added on error)."""
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        try:
            for j, p in enumerate(group["params"]):
                if p.dtype not in FLOAT_DTYPES:
                    raise TypeError(f"{type(self).__name__} updates float32 and float64 parameters; param "
                                    f"{j} of param group {len(self.param_groups) - 1} is {p.dtype}")
                if p.device.type not in ("cpu", "cuda"):
                    raise RuntimeError(f"{type(self).__name__} updates CPU and CUDA tensors; param {j} of param "
                                       f"group {len(self.param_groups) - 1} is on {p.device}")
            self._check_group(group)
        except (TypeError, ValueError, RuntimeError):
            self.param_groups.pop()
            raise

    @torch.no_grad()
    def step(self, closure=None):
        """One optimizer step over every parameter that has a gradient; ``closure`` re-evaluates the model and
        returns the loss (returned here). Under ``torch.amp.GradScaler`` the step is skipped when the scaler found
        an inf or NaN."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        found_inf = getattr(self, "found_inf", None)
        if found_inf is not None and found_inf.item() != 0:   # reads one flag (a device sync for CUDA)
            return loss
        grad_scale = getattr(self, "grad_scale", None)
        grad_scale = None if grad_scale is None else float(grad_scale)
        work = []   # everything is checked before any parameter changes
        for index, group in enumerate(self.param_groups):
            self._check_group(group)
            hyper, names = self._hyper(group), tuple(sorted(self._state_names(group)))
            for params in self._with_grads(index, group):
                work.append((index, group, hyper, names, params))
        parts = []
        for index, group, hyper, names, params in work:
            for part in self._parts_for(index, group, params):
                part.opt.set(**hyper)   # gpunn's own checks of the values, before any step
                parts.append((part, names))
        for part, names in parts:
            grads = [p.grad if p.grad.is_contiguous() or p.grad.device.type == "cpu" else p.grad.contiguous()
                     for p in part.params]
            part.step(self.state, names, grads, grad_scale)
        return loss

    def _with_grads(self, index, group):
        """The group's parameters that have a gradient, by (dtype, device)."""
        by_kind = {}
        for j, p in enumerate(group["params"]):
            if p.grad is None:
                continue
            if p.grad.is_sparse:
                raise RuntimeError(f"{type(self).__name__} does not support sparse gradients")
            if not p.is_contiguous():
                raise ValueError(f"{type(self).__name__} updates parameters in place and needs them contiguous; "
                                 f"param {j} of param group {index} is not")
            by_kind.setdefault((p.dtype, p.device), []).append(p)
        return by_kind.values()

    def _parts_for(self, index, group, params):
        """The cached part for ``params`` when torch's state is still its own; else parts rebuilt from the state,
        one per step count."""
        gpunn_class = self._gpunn_class(group)
        part = self._parts.get(self._key(index, gpunn_class, params))
        if part is not None and part.in_sync(self.state):
            return [part]
        cohorts = {}
        for p in params:
            cohorts.setdefault(self._counter(self.state.get(p, {})), []).append(p)
        return [self._part(index, group, gpunn_class, members, counter) for counter, members in cohorts.items()]

    def _part(self, index, group, gpunn_class, params, counter):
        key = self._key(index, gpunn_class, params)
        part = self._parts.get(key)
        if part is not None and part.in_sync(self.state):
            return part
        members = {id(p) for p in params}
        for other in [k for k in self._parts if k[0] == index and members.intersection(i for i, _ in k[2])]:
            del self._parts[other]   # a parameter belongs to one part; its state lives on in state[p]
        part = _Part(gpunn_class([p.detach() for p in params], **self._hyper(group)), params, self.STEP_KEY)
        if not part.in_sync(self.state):
            part.load(self.state, self._counters(counter))
        self._parts[key] = part
        return part

    @staticmethod
    def _key(index, gpunn_class, params):
        return index, gpunn_class, tuple((id(p), p.data_ptr()) for p in params)

    # ---- what each optimizer gives ----
    def _counter(self, st):
        """What must be equal for parameters stepped together: torch's per-parameter step count."""
        step = st.get("step")
        return 0 if step is None else int(step)

    def _counters(self, counter):
        """The gpunn optimizer's state_dict scalars for parameters at ``counter``."""
        return {"step": counter}


def _check(cond, message):
    if not cond:
        raise ValueError(message)


def _real(group, name):
    value = group[name]
    return float(value) if isinstance(value, torch.Tensor) else value


class SGD(_Fused):
    r"""``torch.optim.SGD`` on gpunn's fused step: momentum, dampening, Nesterov (NAG), L2 weight decay, maximize.

    .. math:: b_t = \mu b_{t-1} + (1 - \tau) g_t \ (b_1 = g_1),\quad
              p_t = p_{t-1} - \eta\,(g_t + \mu b_t \text{ if nesterov else } b_t)

    Example:
        >>> import torch, gpunn.torch as gt
        >>> p = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
        >>> opt = gt.optim.SGD([p], lr=0.1, momentum=0.9)
        >>> p.grad = torch.tensor([1.0, 1.0])
        >>> opt.step()
        >>> p.data
        tensor([ 0.9000, -2.1000])
        >>> opt.state[p]
        {'momentum_buffer': tensor([1., 1.])}
    """

    STEP_KEY = None   # torch's SGD keeps no step count

    def __init__(self, params, lr=1e-3, momentum=0, dampening=0, weight_decay=0, nesterov=False, *,
                 maximize=False):
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                                      nesterov=nesterov, maximize=maximize))

    def _check_group(self, group):
        lr, momentum, dampening = _real(group, "lr"), group["momentum"], group["dampening"]
        _check(lr >= 0, f"Invalid learning rate: {lr}")
        _check(momentum >= 0, f"Invalid momentum value: {momentum}")
        _check(_real(group, "weight_decay") >= 0, f"Invalid weight_decay value: {group['weight_decay']}")
        _check(not group["nesterov"] or (momentum > 0 and dampening == 0),
               "Nesterov momentum requires a momentum and zero dampening")

    def _gpunn_class(self, group):
        return core.SGD

    def _hyper(self, group):
        return dict(lr=_real(group, "lr"), momentum=float(group["momentum"]), dampening=float(group["dampening"]),
                    nesterov=bool(group["nesterov"]), weight_decay=_real(group, "weight_decay"),
                    maximize=bool(group["maximize"]))

    def _state_names(self, group):
        return ("momentum_buffer",) if group["momentum"] != 0 else ()

    def _counter(self, st):
        return st.get("momentum_buffer") is not None   # torch starts a parameter's momentum at its first gradient

    def _counters(self, counter):
        return {"momentum_initialized": counter}


class RMSprop(_Fused):
    r"""``torch.optim.RMSprop`` on gpunn's fused step: centered, momentum, L2 weight decay, maximize (eps outside the
    square root, as torch; ``centered`` clamps :math:`v - \bar g^2` at 0 where torch would take the root of a
    rounding-negative value).

    .. math:: v_t = \alpha v_{t-1} + (1 - \alpha) g_t^2,\quad p_t = p_{t-1} - \eta\, g_t / (\sqrt{v_t} + \epsilon)

    Example:
        >>> import torch, gpunn.torch as gt
        >>> p = torch.nn.Parameter(torch.tensor([1.0], dtype=torch.float64))
        >>> opt = gt.optim.RMSprop([p], lr=0.01)
        >>> p.grad = torch.tensor([2.0], dtype=torch.float64)
        >>> opt.step()
        >>> round(p.item(), 6)  # 1 - 0.01 * 2 / (sqrt(0.01 * 4) + 1e-8)
        0.9
    """

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0, centered=False, *,
                 maximize=False):
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum,
                                      centered=centered, maximize=maximize))

    def _check_group(self, group):
        _check(_real(group, "lr") >= 0, f"Invalid learning rate: {group['lr']}")
        _check(group["eps"] >= 0, f"Invalid epsilon value: {group['eps']}")
        _check(group["momentum"] >= 0, f"Invalid momentum value: {group['momentum']}")
        _check(group["weight_decay"] >= 0, f"Invalid weight_decay value: {group['weight_decay']}")
        _check(group["alpha"] >= 0, f"Invalid alpha value: {group['alpha']}")

    def _gpunn_class(self, group):
        return core.RMSprop

    def _hyper(self, group):
        return dict(lr=_real(group, "lr"), alpha=float(group["alpha"]), eps=float(group["eps"]),
                    weight_decay=float(group["weight_decay"]), momentum=float(group["momentum"]),
                    centered=bool(group["centered"]), maximize=bool(group["maximize"]))

    def _state_names(self, group):
        return tuple(sorted(("square_avg",) + (("momentum_buffer",) if group["momentum"] > 0 else ())
                            + (("grad_avg",) if group["centered"] else ())))


class Adam(_Fused):
    r"""``torch.optim.Adam`` on gpunn's fused step: L2 weight decay (or decoupled, with
    ``decoupled_weight_decay=True``), AMSGrad, maximize.

    .. math:: m_t = \beta_1 m_{t-1} + (1 - \beta_1) g_t,\quad v_t = \beta_2 v_{t-1} + (1 - \beta_2) g_t^2,\quad
              p_t = p_{t-1} - \frac{\eta}{1 - \beta_1^t} \frac{m_t}{\sqrt{v_t / (1 - \beta_2^t)} + \epsilon}

    Example:
        >>> import torch, gpunn.torch as gt
        >>> p = torch.nn.Parameter(torch.tensor([1.0, 1.0]))
        >>> opt = gt.optim.Adam([p], lr=0.1)
        >>> p.grad = torch.tensor([3.0, -0.5])
        >>> opt.step()  # the first step moves each element by about lr
        >>> p.data
        tensor([0.9000, 1.1000])
        >>> sorted(opt.state[p])
        ['exp_avg', 'exp_avg_sq', 'step']
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, amsgrad=False, *,
                 maximize=False, decoupled_weight_decay=False):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                                      maximize=maximize, decoupled_weight_decay=decoupled_weight_decay))

    def _check_group(self, group):
        _check(_real(group, "lr") >= 0, f"Invalid learning rate: {group['lr']}")
        _check(group["eps"] >= 0, f"Invalid epsilon value: {group['eps']}")
        for k in range(2):
            _check(0 <= float(group["betas"][k]) < 1, f"Invalid beta parameter at index {k}: {group['betas'][k]}")
        _check(group["weight_decay"] >= 0, f"Invalid weight_decay value: {group['weight_decay']}")

    def _gpunn_class(self, group):
        return core.AdamW if group.get("decoupled_weight_decay", False) else core.Adam

    def _hyper(self, group):
        return dict(lr=_real(group, "lr"), betas=tuple(float(b) for b in group["betas"]), eps=float(group["eps"]),
                    weight_decay=float(group["weight_decay"]), amsgrad=bool(group["amsgrad"]),
                    maximize=bool(group["maximize"]))

    def _state_names(self, group):
        return ("exp_avg", "exp_avg_sq", "max_exp_avg_sq") if group["amsgrad"] else ("exp_avg", "exp_avg_sq")


class AdamW(Adam):
    r"""``torch.optim.AdamW`` on gpunn's fused step: Adam with decoupled weight decay (1e-2 by default),
    :math:`p \leftarrow p (1 - \eta \lambda)` before the Adam update.

    Example:
        >>> import torch, gpunn.torch as gt
        >>> p = torch.nn.Parameter(torch.tensor([1.0], dtype=torch.float64))
        >>> opt = gt.optim.AdamW([p], lr=0.1, weight_decay=0.5)
        >>> p.grad = torch.zeros(1, dtype=torch.float64)  # zero gradient: only the decay acts
        >>> opt.step()
        >>> p.data
        tensor([0.9500], dtype=torch.float64)
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False, *,
                 maximize=False):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize=maximize,
                         decoupled_weight_decay=True)
