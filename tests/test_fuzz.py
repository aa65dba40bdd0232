"""Property-based fuzzing (hypothesis) of every public op and optimizer, on the CPU path and, at small sizes, on the
device path (the CUDA simulator here).

The rule, for any generated call: the outcome is either a result equal to the float64 reference within the dtype's
tolerance, or a ``TypeError``/``ValueError`` whose message names one of the call's arguments. Any other exception
fails. On every error the inputs, and an optimizer's parameters and state, are unchanged, byte for byte. The
references are the naive float64 ones of the family test files.

Inputs: random shapes (empty, one element, odd), float32/float64 and wrong dtypes, special values (inf, NaN, signed
zeros, huge) for the elementwise ops, options drawn inside and outside their valid ranges, and ``out`` buffers that
are fresh, the input itself, partly overlapping it, read-only, or of the wrong shape or dtype. ``GPUNN_FUZZ_SCALE=20``
runs 20 times as many examples.
"""

import math
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gpunn
from helpers import TOL, assert_close, get
from test_activations import OPS as ACTIVATION_OPS
from test_cross_entropy import ref_cross_entropy
from test_losses_pointwise import ref_bce, ref_hinge, ref_huber, ref_l1, ref_mse, ref_reduce, ref_scale, ref_smooth_l1
from test_multi_margin import ref_multi_margin
from test_optim_reference import Reference
from test_softmax import REF as SOFTMAX_REF
from test_softmax import REF_BACKWARD as SOFTMAX_REF_BACKWARD

MODES = ["cpu", "device"] if gpunn.mode() != "cpu" else ["cpu"]
SPECIALS = np.array([np.inf, -np.inf, np.nan, 0.0, -0.0, 1e30, -1e30, 80.0, -80.0])
FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
SCALE = float(os.environ.get("GPUNN_FUZZ_SCALE", "1"))  # more examples per family: GPUNN_FUZZ_SCALE=20
BAD_OUT = ("overlap", "read_only", "shape", "dtype")


def fuzz(cpu=60, device=12):
    """Hypothesis settings for one family (examples per mode; no deadline: a first call compiles)."""
    def wrap(test):
        examples = {"cpu": max(1, int(cpu * SCALE)), "device": max(1, int(device * SCALE))}

        @pytest.mark.parametrize("mode", MODES)
        def run(mode):
            settings(max_examples=examples[mode], deadline=None,
                     suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])(
                given(data=st.data())(lambda data: test(mode, data)))()

        run.__name__ = test.__name__
        run.__doc__ = test.__doc__
        return run

    return wrap


class Call:
    """The arrays of one generated call on one side (host or device), with a byte snapshot of them."""

    def __init__(self, mode, data):
        self.mode, self.data = mode, data
        self.rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
        self.arrays = []

    def put(self, a):
        if self.mode == "device" and isinstance(a, np.ndarray) and a.ndim:
            a = gpunn.to_device(a)
        self.arrays.append(a)
        return a

    def values(self, shape, dtype, specials=False, scale=3.0):
        x = self.rng.standard_normal(shape) * scale
        if specials and x.size and self.data.draw(st.booleans(), label="special values"):
            k = int(self.rng.integers(1, x.size + 1))
            x.reshape(-1)[self.rng.choice(x.size, k, replace=False)] = self.rng.choice(SPECIALS, k)
        with np.errstate(invalid="ignore"):  # specials cast to int64 (a wrong dtype, on purpose)
            return x.astype(dtype)

    def input_and_out(self, shape, dtype, specials=False, out_shape=None):
        """(x, out, what): an input of ``shape`` and an ``out`` for a result of ``out_shape`` (default: ``shape``):
        none, fresh (NaN-poisoned), alias (x itself), overlap (a view one element along the same buffer), read_only,
        or of the wrong shape or dtype."""
        out_shape = shape if out_shape is None else out_shape
        what = self.data.draw(st.sampled_from(["none", "none", "fresh", "alias", *BAD_OUT]), label="out")
        n = int(np.prod(shape, dtype=np.int64))
        if what == "overlap" and out_shape == shape and n >= 2:
            base = self.put(self.values((n + 1,), dtype, specials))
            return base[:-1].reshape(shape), base[1:].reshape(shape), what
        x = self.put(self.values(shape, dtype, specials))
        if what == "alias" and out_shape == shape:
            return x, x, what
        if what in ("none", "alias", "overlap") or (what == "read_only" and self.mode == "device"):
            return x, None, "none"
        buf = np.full(out_shape, np.nan if np.dtype(dtype).kind == "f" else 0, dtype)
        if what == "shape":
            buf = np.zeros(tuple(out_shape) + (2,), dtype)
        elif what == "dtype":
            buf = buf.astype(np.float32 if np.dtype(dtype) == np.float64 else np.float64)
        elif what == "read_only":
            buf.flags.writeable = False
        if self.mode == "device" and buf.ndim:
            buf = gpunn.to_device(buf)
        return x, buf, what

    def snapshot(self):
        return [np.array(get(a)).tobytes() for a in self.arrays]

    def outcome(self, fn, names, check):
        """Run ``fn``. A TypeError/ValueError must name one of ``names`` and leave every input as it was; otherwise
        ``check(result)``."""
        before = self.snapshot()
        try:
            result = fn()
        except (TypeError, ValueError) as exc:
            assert any(n in str(exc) for n in names), f"{type(exc).__name__} names none of {names}: {exc}"
            assert self.snapshot() == before, f"an input changed although the call failed: {exc}"
            return
        check(result)


def _dtype(data, half=False):
    """A float32/float64 dtype mostly, sometimes a bad one (float16 only for ops that do not take half yet: the
    half-precision ops are checked in tests/test_half.py)."""
    bad = [np.int64, np.int32] if half else [np.int64, np.float16]
    return np.dtype(data.draw(st.sampled_from([np.float32, np.float64] * 3 + bad), label="dtype"))


def _shape(data, mode, max_dims=3, max_side=40):
    side = 5 if mode == "device" else max_side
    return tuple(data.draw(st.lists(st.integers(0, side), max_size=max_dims), label="shape"))


def _rounded(expected, dtype):
    """The float64 reference rounded to ``dtype``: a value beyond its range is inf there, as the op's result is."""
    with np.errstate(over="ignore"):
        return np.asarray(expected, np.float64).astype(dtype).astype(np.float64)


def _accepted(dtype, out_what):
    assert dtype in FLOATS, f"dtype {dtype} was accepted"
    assert out_what not in BAD_OUT, f"an out that is {out_what} was accepted"


# ---- activations -----------------------------------------------------------------------------------------------------
@fuzz()
def test_elementwise_activations(mode, data):
    op = data.draw(st.sampled_from(ACTIVATION_OPS), label="op")
    backward = data.draw(st.booleans(), label="backward")
    dtype, shape = _dtype(data, half=True), _shape(data, mode)
    call = Call(mode, data)
    # A saved output (tanh, sigmoid: y, in [-1, 1]) gets no huge specials: y = 3e38 is no output of the forward, and
    # the float32 kernel's y * y overflows where the float64 reference's does not (NaN against -0.0)
    x, out, out_what = call.input_and_out(shape, dtype, specials=not (backward and op.saved == "y"))
    dy = call.put(call.values(shape, dtype, specials=True)) if backward else None
    params = dict(op.params)
    if params and data.draw(st.booleans(), label="perturb a parameter"):
        name = data.draw(st.sampled_from(sorted(params)))
        params[name] = data.draw(st.sampled_from([math.nan, math.inf, -2.0, 0.0, 0.5, "tanh", "none", "bad"]))
    x64 = np.array(get(x), np.float64)  # before the call: out may be x
    dy64 = np.array(get(dy), np.float64) if backward else None

    def run():
        return op.backward(dy, x, **params, out=out) if backward else op.forward(x, **params, out=out)

    def check(result):
        _accepted(dtype, out_what)
        assert out is None or result is out
        with np.errstate(all="ignore"):
            expected = op.ref_backward(dy64, x64, **params) if backward else op.ref_forward(x64, **params)
            if backward:  # a slope below dtype's range is 0 in the kernel's math, and an infinite dy times 0 is NaN
                slope = op.ref_backward(np.ones_like(x64), x64, **params)
                expected = np.where(np.isinf(dy64) & (slope != 0) & (_rounded(slope, dtype) == 0), np.nan, expected)
        actual = get(result)
        assert actual.dtype == dtype, f"dtype {actual.dtype} != {dtype}"
        # dx's error is f'(x)'s error times |dy|, so a huge dy scales the absolute tolerance (near a zero of f' the
        # relative error of dx is unbounded while its error in units of dy stays at float32's)
        scale = np.where(np.isfinite(dy64) & (np.abs(dy64) > 1.0), np.abs(dy64), 1.0) if backward else 1.0
        assert_close(np.asarray(actual, np.float64) / scale, _rounded(expected, dtype) / scale,
                     atol=TOL[dtype.type][0], rtol=TOL[dtype.type][1],
                     what=f"{op!r} {'backward' if backward else 'forward'}")

    call.outcome(run, ["x", "dy", "y", "out", *params], check)


@fuzz()
def test_prelu(mode, data):
    dtype, shape = _dtype(data), _shape(data, mode)
    call = Call(mode, data)
    channels = shape[1] if len(shape) >= 2 else 1
    wsize = data.draw(st.sampled_from([1, channels, channels + 1]), label="weight size")
    x, out, out_what = call.input_and_out(shape, dtype, specials=True)
    w = call.put(call.values((wsize,), dtype, scale=0.5))
    backward = data.draw(st.booleans(), label="backward")
    dy = call.put(call.values(shape, dtype)) if backward else None
    x64, w64 = np.array(get(x), np.float64), np.array(get(w), np.float64)
    dy64 = np.array(get(dy), np.float64) if backward else None
    def check(result):
        _accepted(dtype, out_what)
        assert wsize in (1, channels)
        a = w64.reshape((-1,) + (1,) * (len(shape) - 2)) if wsize != 1 and len(shape) >= 2 else w64.reshape(())
        if not backward:
            assert_close(get(result), np.where(x64 > 0, x64, a * x64), dtype, what="prelu")
            return
        dx, dw = result
        assert_close(get(dx), np.where(x64 > 0, dy64, a * dy64), dtype, what="prelu dx")
        contrib = np.where(x64 > 0, 0.0, x64 * dy64)
        axes = tuple(k for k in range(len(shape)) if not (k == 1 and wsize != 1))  # per channel (also C = 0)
        assert_close(get(dw), contrib.sum(axis=axes).reshape(w64.shape), dtype, atol=1e-5 * max(1, x64.size),
                     what="prelu dweight")

    if backward:
        call.outcome(lambda: gpunn.prelu_backward(dy, x, w, out=out), ["x", "dy", "weight", "dx", "out"], check)
    else:
        call.outcome(lambda: gpunn.prelu(x, w, out=out), ["x", "weight", "out"], check)


@fuzz()
def test_softmax_family(mode, data):
    op = data.draw(st.sampled_from(["softmax", "log_softmax"]), label="op")
    backward = data.draw(st.booleans(), label="backward")
    dtype, shape = _dtype(data), _shape(data, mode)
    axis = data.draw(st.integers(-4, 3), label="axis")
    call = Call(mode, data)
    x, out, out_what = call.input_and_out(shape, dtype)
    dy = call.put(call.values(shape, dtype)) if backward else None
    x64 = np.array(get(x), np.float64)
    dy64 = np.array(get(dy), np.float64) if backward else None
    fn = getattr(gpunn, op + ("_backward" if backward else ""))

    def check(result):
        _accepted(dtype, out_what)
        ax = axis if shape else 0
        assert -max(len(shape), 1) <= axis < max(len(shape), 1)
        xs, ds = (x64.reshape(1), dy64.reshape(1) if backward else None) if not shape else (x64, dy64)
        with np.errstate(all="ignore"):
            expected = SOFTMAX_REF_BACKWARD[op](ds, xs, ax) if backward else SOFTMAX_REF[op](xs, ax)
        if not backward:
            assert_close(get(result), expected.reshape(shape), dtype, what=f"{op} axis {axis}")
            return
        got = np.asarray(get(result), np.float64)
        # dx = y (dy - S) or dy - exp(y) S: the dtype's rounding of S and of the subtraction, relative to the
        # magnitudes that meet there (x here is an arbitrary y, so the subtraction may cancel). S's own rounding
        # scales with the sum of its terms' magnitudes, not with |S|: the sum itself may cancel.
        with np.errstate(all="ignore"):
            if op == "softmax":
                s = np.sum(np.abs(ds * xs), axis=ax, keepdims=True)
                scale = np.abs(xs) * (np.abs(ds) + s)
            else:
                s = np.sum(np.abs(ds), axis=ax, keepdims=True)
                scale = np.abs(ds) + np.exp(xs) * s
        bound = 8 * np.finfo(dtype).eps * scale.reshape(shape) + np.finfo(dtype).tiny
        bad = ~(np.abs(got - expected.reshape(shape)) <= bound)  # NaN anywhere is a failure (inputs are finite)
        assert not bad.any(), f"{op} backward axis {axis}: {int(bad.sum())} elements off, first {np.argwhere(bad)[:3]}"

    args = (dy, x) if backward else (x,)
    call.outcome(lambda: fn(*args, axis, out=out), ["x", "y", "dy", "axis", "out"], check)


# ---- losses ----------------------------------------------------------------------------------------------------------
POINTWISE = {  # gpunn name: (reference, option -> values drawn, target kind)
    "mse_loss": (ref_mse, {}, "normal"),
    "l1_loss": (ref_l1, {}, "normal"),
    "huber_loss": (ref_huber, {"delta": [1.0, 0.3, 0.0, -1.0, math.nan]}, "normal"),
    "smooth_l1_loss": (ref_smooth_l1, {"beta": [1.0, 0.0, 2.5, 1e-46, -1.0, math.inf]}, "normal"),
    "binary_cross_entropy_with_logits": (ref_bce, {}, "prob"),
    "hinge_loss": (ref_hinge, {"margin": [1.0, 0.5, math.nan]}, "sign"),
}


@fuzz()
def test_pointwise_losses(mode, data):
    name = data.draw(st.sampled_from(sorted(POINTWISE)), label="loss")
    ref, options, target_kind = POINTWISE[name]
    what = data.draw(st.sampled_from(["", "_backward", "_with_grad"]), label="function")
    reduction = data.draw(st.sampled_from(["mean", "sum", "none", "avg"]), label="reduction")
    dtype, shape = _dtype(data, half=True), _shape(data, mode)
    call = Call(mode, data)
    x, out, out_what = call.input_and_out(shape, dtype)
    if data.draw(st.booleans(), label="target of another shape"):
        t = call.put(call.values(shape + (2,), dtype))
    elif target_kind == "prob":
        t = call.put(call.rng.uniform(0, 1, shape).astype(dtype))
    elif target_kind == "sign":
        labels = [-1.0, 1.0] if data.draw(st.integers(0, 5), label="bad labels") else [-1.0, 0.5]
        t = call.put(call.rng.choice(labels, shape).astype(dtype))
    else:
        t = call.put(call.values(shape, dtype))
    opts = {k: data.draw(st.sampled_from(v), label=k) for k, v in options.items()}
    extra = {}
    if name.startswith("binary") and data.draw(st.booleans(), label="weights"):
        extra = {"weight": call.put(call.rng.uniform(0.5, 2, shape[-1:]).astype(dtype))}
    kw = {"out": out} if what == "_backward" or (what == "" and reduction == "none") else {}
    if name == "hinge_loss" and mode == "device":
        # on a device the label check is deferred to gpunn.synchronize() unless validate=True
        kw["validate"] = data.draw(st.booleans(), label="validate")
    x64, t64 = np.array(get(x), np.float64), np.array(get(t), np.float64)
    deferred_bad_labels = (name == "hinge_loss" and not kw.get("validate", True) and t64.shape == x64.shape
                           and not np.isin(t64, (-1.0, 1.0)).all())
    w64 = {k: np.array(get(v), np.float64) for k, v in extra.items()}
    fn = getattr(gpunn, name + what)

    def check(result):
        _accepted(dtype, out_what if "out" in kw else "none")
        assert reduction in ("mean", "sum", "none") and t64.shape == x64.shape
        assert all(math.isfinite(v) for v in opts.values())
        with np.errstate(all="ignore"):
            loss, grad = ref(x64, t64, **opts, **w64)
        if deferred_bad_labels:  # the call wrote NaN where a label is bad, and the error waits for synchronize()
            with pytest.raises(ValueError, match="target"):
                gpunn.synchronize()
            bad = ~np.isin(t64, (-1.0, 1.0))
            loss, grad = np.where(bad, np.nan, loss), np.where(bad, np.nan, grad)
        loss_ref, grad_ref = ref_reduce(loss, reduction), grad * ref_scale(reduction, x64.size)
        if what == "":
            assert_close(get(result), loss_ref, dtype, what=f"{name} {reduction}")
        elif what == "_backward":
            assert_close(get(result), grad_ref, dtype, what=f"{name} grad")
        else:
            assert_close(get(result[0]), loss_ref, dtype, what=f"{name} {reduction}")
            assert_close(get(result[1]), grad_ref, dtype, what=f"{name} grad")

    call.outcome(lambda: fn(x, t, **opts, **extra, reduction=reduction, **kw),
                 ["input", "target", "reduction", "out", "weight", *opts], check)


@fuzz(cpu=60, device=10)
def test_row_losses(mode, data):
    loss = data.draw(st.sampled_from(["cross_entropy", "multi_margin_loss"]), label="loss")
    what = data.draw(st.sampled_from(["", "_backward", "_with_grad"]), label="function")
    reduction = data.draw(st.sampled_from(["mean", "sum", "none"]), label="reduction")
    dtype = _dtype(data)
    rows = data.draw(st.integers(0, 4 if mode == "device" else 12), label="rows")
    cols = data.draw(st.integers(0, 40), label="classes")
    call = Call(mode, data)
    out_shape = (rows,) if what == "" else (rows, cols)
    x, out, out_what = call.input_and_out((rows, cols), dtype, out_shape=out_shape)
    probs = loss == "cross_entropy" and data.draw(st.booleans(), label="probability targets")
    if probs:
        t = call.put(call.rng.dirichlet(np.ones(max(cols, 1)), rows)[:, :cols].astype(dtype))
    else:
        high = cols + (1 if data.draw(st.integers(0, 6), label="bad class") == 0 else 0)
        t = call.put(call.rng.integers(0, max(high, 1), rows))
    opts = {}
    if loss == "cross_entropy":
        opts["label_smoothing"] = data.draw(st.sampled_from([0.0, 0.0, 0.1, 1.0, 1.5]), label="label_smoothing")
        if not probs and data.draw(st.booleans(), label="ignore some rows"):
            opts["ignore_index"] = 2
    else:
        opts["p"] = data.draw(st.sampled_from([1, 2, 3]), label="p")
        opts["margin"] = data.draw(st.sampled_from([1.0, 0.5, math.nan]), label="margin")
    if data.draw(st.booleans(), label="class weights"):
        opts["weight"] = call.put(call.rng.uniform(0.5, 2, cols).astype(dtype))
    kw = {"out": out} if what != "" or reduction == "none" else {}
    x64, t_host = np.array(get(x), np.float64), np.array(get(t))
    ref_opts = {k: (np.array(get(v), np.float64) if k == "weight" else v) for k, v in opts.items()}
    fn = getattr(gpunn, loss + what)

    def check(result):
        _accepted(dtype, out_what if "out" in kw else "none")
        assert cols >= 1
        if loss == "cross_entropy":
            assert opts["label_smoothing"] <= 1.0
            ref = ref_cross_entropy(x64, t_host.astype(np.float64) if probs else t_host, reduction=reduction,
                                    **ref_opts)
        else:
            assert opts["p"] in (1, 2) and math.isfinite(opts["margin"])
            ref = ref_multi_margin(x64, t_host, reduction=reduction, **ref_opts)
        valid = (t_host >= 0) & (t_host < cols) if not probs else np.ones(rows, bool)
        ignored = t_host == opts.get("ignore_index", -100) if not probs else np.zeros(rows, bool)
        assert (valid | ignored).all(), "an out-of-range class was accepted"
        parts = {"": [ref[0]], "_backward": [ref[1]], "_with_grad": list(ref)}[what]
        got = result if what == "_with_grad" else (result,)
        for g, e in zip(got, parts):
            assert_close(get(g), e, dtype, atol=2e-5 if dtype == np.float32 else None, what=f"{loss}{what}")

    call.outcome(lambda: fn(x, t, **opts, reduction=reduction, **kw),
                 ["logits", "target", "weight", "reduction", "out", *opts], check)


# ---- optimizers ------------------------------------------------------------------------------------------------------
OPTIMIZERS = {
    "SGD": dict(lr=[0.1, 0.0, -1.0], momentum=[0.0, 0.9, -0.5], nesterov=[False, True], weight_decay=[0.0, 0.01]),
    "RMSprop": dict(lr=[0.01], alpha=[0.99, 0.5], centered=[False, True], momentum=[0.0, 0.5], eps=[1e-8, 0.0]),
    "Adam": dict(lr=[1e-3, 0.1, math.nan], betas=[(0.9, 0.999), (0.5, 0.9), (1.0, 0.9)], amsgrad=[False, True],
                 weight_decay=[0.0, 0.1]),
    "AdamW": dict(lr=[1e-3, 0.1], weight_decay=[0.01, -0.1], maximize=[False, True]),
}


@fuzz(cpu=50, device=10)
def test_optimizers(mode, data):
    name = data.draw(st.sampled_from(sorted(OPTIMIZERS)), label="optimizer")
    hyper = {k: data.draw(st.sampled_from(v), label=k) for k, v in OPTIMIZERS[name].items()}
    clip = data.draw(st.sampled_from([None, None, 1.0, 0.0]), label="max_grad_norm")
    dtype = _dtype(data)
    call = Call(mode, data)
    shapes = data.draw(st.lists(st.tuples(st.integers(0, 7), st.integers(1, 3)), min_size=1, max_size=3),
                       label="param shapes")
    params = [call.put(call.values(s, dtype)) for s in shapes]
    p0 = [np.array(get(p), np.float64) for p in params]
    try:
        opt = getattr(gpunn.optim, name)(params, **hyper, max_grad_norm=clip)
    except (TypeError, ValueError) as exc:
        assert any(k in str(exc) for k in [*hyper, "params", "max_grad_norm", "betas", "lr"]), str(exc)
        return
    assert dtype in FLOATS and all(v == v for v in hyper.values() if isinstance(v, float))
    ref = Reference(name, p0, max_grad_norm=clip, **hyper)
    for step in range(data.draw(st.integers(1, 3), label="steps")):
        kind = data.draw(st.sampled_from(["ok"] * 6 + ["nan", "shape", "dtype", "count"]), label="grads")
        grads = [call.values(s, dtype, scale=1.0) for s in shapes]
        if kind == "nan" and grads[0].size:
            grads[0].reshape(-1)[0] = np.nan
        elif kind == "shape":
            grads[0] = call.values(shapes[0] + (1,), dtype)
        elif kind == "dtype":
            grads[-1] = grads[-1].astype(np.float32 if dtype == np.float64 else np.float64)
        elif kind == "count":
            grads = grads[:-1] if len(grads) > 1 else grads + grads
        grads_in = [call.put(g) for g in grads]
        scale = data.draw(st.sampled_from([None, None, 4.0, 0.0, math.inf]), label="grad_scale")
        before = [np.array(get(p)).tobytes() for p in params]
        state_before = {k: np.array(v).tobytes() for k, v in opt.state_dict().items()}
        try:
            applied = opt.step(grads_in, grad_scale=scale)
        except (TypeError, ValueError) as exc:
            assert any(k in str(exc) for k in ("grads", "grad_scale")), str(exc)
            assert [np.array(get(p)).tobytes() for p in params] == before
            assert {k: np.array(v).tobytes() for k, v in opt.state_dict().items()} == state_before
            continue
        assert kind in ("ok", "nan") and (scale is None or 0 < scale < math.inf)
        expected = ref.step([g.astype(np.float64) for g in grads], grad_scale=scale)
        assert bool(applied) == expected
        for i, (p, r) in enumerate(zip(params, ref.p)):
            assert_close(get(p), r, dtype, atol=1e-5 if dtype == np.float32 else None, what=f"{name} params[{i}]")
