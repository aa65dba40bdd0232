"""An optimizer's ``state_dict``: a flat dict of NumPy arrays and Python scalars, checked whole before it is loaded.

Keys: ``optimizer`` (its name), ``step`` (applied steps), ``num_params``, each hyperparameter (``max_grad_norm`` None
is saved as NaN), the optimizer's flag if it has one (SGD: ``momentum_initialized``), and ``<state name>.<i>`` for
each state tensor of parameter ``i``, with the parameter's shape and dtype. It works with
``np.savez(path, **opt.state_dict())`` / ``dict(np.load(path))`` and with pickle.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from .._arrays import HOST_KINDS, host_view, kind, to_host


def state_dict(opt) -> dict:
    step, flag = opt._counters()
    sd = {"optimizer": opt.NAME, "step": step, "num_params": len(opt._params)}
    for name, how in opt.HYPER.items():
        v = getattr(opt, name)
        if how == "opt_real":
            v = float("nan") if v is None else float(v)
        elif how == "pair":
            v = (float(v[0]), float(v[1]))
        elif how == "bool":
            v = bool(v)
        else:
            v = float(v)
        sd[name] = v
    for name in opt.EXTRA:
        sd[name] = bool(flag)
    for s, sname in enumerate(opt.STATE):
        if opt._groups[0].state[s] is None:
            continue
        for i in range(len(opt._params)):
            group, pos = opt._where[i]
            piece = group.state_slice(s, pos)
            piece = piece.copy_to_host() if opt.device else np.array(piece)
            sd[f"{sname}.{i}"] = piece.reshape(opt._shapes[i])
    return sd


def load_state_dict(opt, state_dict):
    if not isinstance(state_dict, Mapping) and not hasattr(state_dict, "files"):
        raise TypeError(f"state_dict must be a dict (from state_dict() or np.load), got {type(state_dict).__name__}")
    sd = {k: state_dict[k] for k in (state_dict.files if hasattr(state_dict, "files") else state_dict)}
    name = _scalar(sd.get("optimizer"), str, "optimizer") if "optimizer" in sd else None
    if name != opt.NAME:
        raise ValueError(f"state_dict is for optimizer {name!r}, not {opt.NAME!r}")
    required = ["step", "num_params", *opt.HYPER, *opt.EXTRA]
    for key in required:
        if key not in sd:
            raise ValueError(f"state_dict has no {key!r} entry")
    n = _scalar(sd["num_params"], int, "num_params")
    if n != len(opt._params):
        raise ValueError(f"state_dict num_params is {n} but the optimizer has {len(opt._params)} params")
    step = _scalar(sd["step"], int, "step")
    if step < 0:
        raise ValueError(f"state_dict step must be >= 0, got {step}")
    hp = _hyperparams(opt, sd)
    flag = any(_scalar(sd[ename], bool, ename) for ename in opt.EXTRA)
    found = _state_arrays(opt, sd, {"optimizer", *required}, n)
    # everything is valid: write
    for hname, v in hp.items():
        object.__setattr__(opt, hname, v)
    opt._checked_hp = None
    opt._set_counters(step, 1.0 if flag else 0.0)
    for group in opt._groups:
        for s, items in found.items():
            if not items:
                group.state[s] = group.state_views[s] = None
                continue
            flat = np.zeros(group.total, group.dtype)
            for i, arr in items:
                g, pos = opt._where[i]
                if g is group:
                    start = int(group.offsets[pos])
                    flat[start:start + group.sizes[pos]] = arr.reshape(-1)
            if opt.device:
                from numba import cuda

                from .._arrays import device_array

                group.state[s] = cuda.to_device(flat)
                group.state_views[s] = device_array(group.state[s])
            else:
                group.state[s] = flat


def _hyperparams(opt, sd) -> dict:
    hp = {}
    for hname, how in opt.HYPER.items():
        v = sd[hname]
        if how == "opt_real":
            v = _scalar(v, float, hname)
            v = None if math.isnan(v) else v
        elif how == "pair":
            arr = np.asarray(v, dtype=np.float64)
            if arr.shape != (2,):
                raise ValueError(f"state_dict {hname!r} must be a pair, got shape {arr.shape}")
            v = (float(arr[0]), float(arr[1]))
        elif how == "bool":
            v = _scalar(v, bool, hname)
        else:
            v = _scalar(v, float, hname)
        hp[hname] = v
    try:
        opt._check_hyper(hp)
    except (TypeError, ValueError) as e:
        raise ValueError(f"state_dict hyperparameter: {e}") from None
    return hp


def _state_arrays(opt, sd, known, n) -> dict:
    """{state index: [(param index, host array)]}, every entry checked; all of a state tensor's entries or none."""
    found = {s: [] for s in range(len(opt.STATE))}
    for key in sd:
        if key in known:
            continue
        sname, _, idx = key.rpartition(".")
        if sname not in opt.STATE or not idx.isdigit() or int(idx) >= n or idx != str(int(idx)):
            raise ValueError(f"state_dict has an unknown entry {key!r} for {opt.NAME} (state entries are "
                             f"'<name>.<i>' with i in 0..{n - 1} written without leading zeros)")
        s, i = opt.STATE.index(sname), int(idx)
        arr = sd[key]
        if kind(arr) is None:
            raise ValueError(f"state_dict {key!r} must be an array, got {type(arr).__name__}")
        arr = np.asarray(host_view(arr)) if kind(arr) in HOST_KINDS else np.asarray(to_host(arr))
        if arr.shape != opt._shapes[i] or arr.dtype != opt._dtypes[i]:
            raise ValueError(f"state_dict {key!r} has shape {arr.shape} and dtype {arr.dtype} but params[{i}] "
                             f"has shape {opt._shapes[i]} and dtype {opt._dtypes[i]}")
        found[s].append((i, arr))
    for s, items in found.items():
        if items and len(items) != n:
            have = {i for i, _ in items}
            missing = next(i for i in range(n) if i not in have)
            raise ValueError(f"state_dict has no {opt.STATE[s]}.{missing!r} entry (it has other "
                             f"{opt.STATE[s]} entries)")
    return found


def _scalar(v, typ, name):
    """A Python scalar from a state_dict value (a Python scalar, or a 0-d array after np.savez/np.load)."""
    if isinstance(v, np.ndarray):
        if v.ndim != 0:
            raise ValueError(f"state_dict {name!r} must be a scalar, got shape {v.shape}")
        v = v.item()
    if typ is str:
        if not isinstance(v, str):
            raise ValueError(f"state_dict {name!r} must be a string, got {v!r}")
        return v
    if typ is bool:
        if not isinstance(v, (bool, np.bool_)):
            raise ValueError(f"state_dict {name!r} must be True or False, got {v!r}")
        return bool(v)
    if typ is int:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise ValueError(f"state_dict {name!r} must be an integer, got {v!r}")
        return int(v)
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise ValueError(f"state_dict {name!r} must be a number, got {v!r}")
    return float(v)
