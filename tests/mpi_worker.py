"""Run under mpiexec by tests/test_distributed*.py: ``python mpi_worker.py SCENARIO OUTDIR SEED``.

Each rank writes what it computed to OUTDIR (``<scenario>.<rank>.npz`` / ``.json``); the tests compare those files
with float64 references and across rank counts. Gradients come from seeded generators, so every rank (and the test)
can rebuild every leaf of every step.
"""

import json
import os
import sys
import time

import numpy as np
from mpi4py import MPI

import gpunn
from gpunn import distributed as dist
from gpunn.distributed import tree

COMM = MPI.COMM_WORLD
RANK, SIZE = COMM.Get_rank(), COMM.Get_size()
M = 4                  # gradient leaves (micro-batches) per step
N_PARAMS = 1000        # 16 norm chunks of 64: shards of 8, 8, 4 and 4 chunks on 1, 2 and 4 ranks
STEPS = 5

# (name, optimizer, hyperparameters, dtype, ZeRO or all-reduce, step with a grad_scale)
CONFIGS = [
    ("adam_zero_f32", "Adam", dict(lr=0.05), np.float32, True, None),
    ("adam_ddp_f32", "Adam", dict(lr=0.05), np.float32, False, None),
    ("adamw_clip_zero_f64", "AdamW", dict(lr=0.05, amsgrad=True, max_grad_norm=0.5), np.float64, True, None),
    ("adamw_clip_ddp_f64", "AdamW", dict(lr=0.05, amsgrad=True, max_grad_norm=0.5), np.float64, False, None),
    ("sgd_scaled_zero_f32", "SGD", dict(lr=0.1, momentum=0.9, nesterov=True), np.float32, True, 8.0),
    ("rmsprop_clip_zero_f32", "RMSprop", dict(lr=0.01, centered=True, max_grad_norm=1.0), np.float32, True, None),
]
INF_STEP = 2           # at this step the scaled configuration gets an inf in the last leaf: every rank must skip


def leaves(seed, key, step, dtype, n=N_PARAMS):
    """The M gradient leaves of one step (the same on every rank and in the test); ``key`` picks the stream."""
    rng = np.random.default_rng([seed, sum(map(ord, key)), step])
    return [rng.standard_normal(n).astype(dtype) for _ in range(M)]


def leaf_key(opt_name, dtype):
    """Configurations that differ only in ZeRO / all-reduce get the same gradients."""
    return f"{opt_name}_{np.dtype(dtype).name}"


def initial(seed, dtype, n=N_PARAMS):
    return np.random.default_rng([seed, 7]).standard_normal(n).astype(dtype)


def my_leaves(all_leaves):
    assert tree.keeps_order(M, SIZE), f"{SIZE} ranks cannot split {M} leaves in the tree's order"
    per = M // SIZE
    return all_leaves[RANK * per:(RANK + 1) * per]


def local_sum(all_leaves):
    t = dist.TreeSum()
    for g in my_leaves(all_leaves):
        t.add(g)
    return t.result()


def save(outdir, scenario, **arrays):
    np.savez(os.path.join(outdir, f"{scenario}.{RANK}.npz"), **arrays)


def run_config(seed, name, opt_name, kw, dtype, zero, grad_scale):
    flat = initial(seed, dtype)
    cls = getattr(gpunn.optim, opt_name)
    opt = dist.ShardedOptimizer(cls, flat, COMM, average=False, **kw) if zero else cls([flat], **kw)
    applied = []
    for step in range(STEPS):
        ls = leaves(seed, leaf_key(opt_name, dtype), step, dtype)
        if grad_scale is not None:
            ls = [g * dtype(grad_scale) for g in ls]
            if step == INF_STEP:
                ls[-1][3] = np.inf
        g = local_sum(ls)
        if zero:
            applied.append(opt.step(g, grad_scale=grad_scale))
        else:
            dist.allreduce_sum(g, COMM)
            applied.append(opt.step([g], grad_scale=grad_scale))
    out = {"params": flat, "applied": np.array(applied), "state_bytes": np.array(dist.state_bytes(opt))}
    if zero:
        full = opt.gather_state_dict(root=0)
        if RANK == 0:
            for k, v in full.items():
                if isinstance(v, np.ndarray):
                    out[f"state/{k}"] = v
    return out


def scenario_equivalence(outdir, seed):
    result = {}
    for name, opt_name, kw, dtype, zero, grad_scale in CONFIGS:
        for k, v in run_config(seed, name, opt_name, kw, dtype, zero, grad_scale).items():
            result[f"{name}/{k}"] = v
    save(outdir, "equivalence", **result)


def scenario_collectives(outdir, seed):
    """allreduce_sum/mean and broadcast on NumPy, PyTorch CPU and Numba device arrays (the simulator's)."""
    import torch

    result = {}
    for n in (0, 1, 31, 1000):
        for dtype in (np.float32, np.float64):
            x = np.random.default_rng([seed, RANK, n]).standard_normal(n).astype(dtype)
            tag = f"{n}_{np.dtype(dtype).name}"
            a = x.copy()
            assert dist.allreduce_sum(a, COMM) is a
            result[f"sum_numpy_{tag}"] = a
            t = torch.from_numpy(x.copy())
            dist.allreduce_mean(t, COMM)
            result[f"mean_torch_{tag}"] = t.numpy()
            d = gpunn.to_device(x.copy())
            dist.allreduce_sum(d, COMM)
            result[f"sum_device_{tag}"] = gpunn.to_host(d)
            b = x.copy()
            dist.broadcast(b, root=SIZE - 1, comm=COMM)
            result[f"bcast_numpy_{tag}"] = b
            db = gpunn.to_device(x.copy())
            dist.broadcast(db, comm=COMM)
            result[f"bcast_device_{tag}"] = gpunn.to_host(db)
    save(outdir, "collectives", **result)


def scenario_device_zero(outdir, seed):
    """ShardedOptimizer on Numba device arrays (the simulator): the staged path; must equal the host run."""
    result = {}
    name, opt_name, kw, dtype = "adam_dev", "Adam", dict(lr=0.05, max_grad_norm=0.5), np.float32
    for side in ("host", "device"):
        flat = initial(seed, dtype)
        params = gpunn.to_device(flat) if side == "device" else flat
        opt = dist.ShardedOptimizer(getattr(gpunn.optim, opt_name), params, COMM, average=False, **kw)
        for step in range(3):
            g = local_sum(leaves(seed, name, step, dtype))
            opt.step(gpunn.to_device(g) if side == "device" else g)
        result[side] = gpunn.to_host(params)
    save(outdir, "device_zero", **result)


def scenario_checkpoint(outdir, seed):
    """Save each rank's shard state after 3 steps, and the gathered one; resume both ways; 3 more steps."""
    name, dtype = "ckpt", np.float32
    kw = dict(lr=0.05, momentum=0.9)
    flat = initial(seed, dtype)
    opt = dist.ShardedOptimizer(gpunn.optim.SGD, flat, COMM, average=False, **kw)

    def steps(o, params, start):
        for step in range(start, start + 3):
            o.step(local_sum(leaves(seed, name, step, dtype)))
        return params.copy()

    steps(opt, flat, 0)
    mid = flat.copy()
    np.savez(os.path.join(outdir, f"ckpt.{RANK}.npz"), **opt.state_dict())
    full = opt.gather_state_dict(root=0)
    if RANK == 0:
        np.savez(os.path.join(outdir, "ckpt.full.npz"), **full)
    COMM.Barrier()
    straight = steps(opt, flat, 3)

    resumed = mid.copy()
    opt2 = dist.ShardedOptimizer(gpunn.optim.SGD, resumed, COMM, average=False, lr=1.0)
    opt2.load_state_dict(np.load(os.path.join(outdir, f"ckpt.{RANK}.npz")))
    from_shards = steps(opt2, resumed, 3)

    resumed_full = mid.copy()
    opt3 = dist.ShardedOptimizer(gpunn.optim.SGD, resumed_full, COMM, average=False, lr=1.0)
    opt3.load_full_state_dict(np.load(os.path.join(outdir, "ckpt.full.npz")))
    from_full = steps(opt3, resumed_full, 3)

    info = {}
    if SIZE > 1:   # another rank's file: every rank refuses it and keeps its state
        opt4 = dist.ShardedOptimizer(gpunn.optim.SGD, mid.copy(), COMM, average=False, lr=0.5)
        before = opt4.state_dict()
        try:
            opt4.load_state_dict(np.load(os.path.join(outdir, f"ckpt.{(RANK + 1) % SIZE}.npz")))
            info["wrong_file"] = "no error"
        except ValueError as exc:
            info["wrong_file"] = str(exc)
        after = opt4.state_dict()
        info["unchanged"] = all(_same(before[k], after[k]) for k in before) and opt4.optimizer.lr == 0.5
    save(outdir, "checkpoint", mid=mid, straight=straight, from_shards=from_shards, from_full=from_full)
    with open(os.path.join(outdir, f"checkpoint.{RANK}.json"), "w") as f:
        json.dump(info, f)


def _same(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return np.array_equal(a, b, equal_nan=a.dtype.kind == "f")


def scenario_mismatch(outdir, seed):
    """Rank 1 holds one parameter more: broadcast and ShardedOptimizer refuse at start-up, on every rank."""
    n = 10 + (1 if RANK == 1 else 0)
    messages = {}
    try:
        dist.broadcast(np.zeros(n, np.float32), comm=COMM, timeout=60)
        messages["broadcast"] = "no error"
    except ValueError as exc:
        messages["broadcast"] = str(exc)
    try:
        dist.ShardedOptimizer(gpunn.optim.Adam, np.zeros(n, np.float32), COMM, timeout=60)
        messages["sharded"] = "no error"
    except ValueError as exc:
        messages["sharded"] = str(exc)
    with open(os.path.join(outdir, f"mismatch.{RANK}.json"), "w") as f:
        json.dump(messages, f)


def scenario_fault(outdir, seed, how):
    """Rank 1 raises / hangs / exits / is killed before an all-reduce; rank 0 must get an error naming rank 1, in
    time (a killed rank: mpiexec may end the job first, which is fine too)."""
    ch = dist.channel(COMM)
    timeout = 3.0
    start = time.monotonic()
    try:
        with dist.guard(COMM):
            if RANK == 1:
                if how == "raise":
                    raise RuntimeError("rank one broke")
                if how == "hang":
                    time.sleep(120)
                if how == "exit":
                    os._exit(1)            # dies at once: no Python clean-up, no MPI_Finalize
                if how == "kill":
                    os.kill(os.getpid(), 9)
            dist.allreduce_mean(np.ones(100, np.float32), COMM, timeout=timeout if how != "raise" else 120)
        report = {"error": None}
    except dist.DistributedError as exc:
        report = {"error": str(exc), "type": type(exc).__name__, "ranks": list(exc.ranks)}
    except RuntimeError as exc:
        report = {"error": str(exc), "type": type(exc).__name__, "ranks": []}
    report["seconds"] = time.monotonic() - start
    with open(os.path.join(outdir, f"fault_{how}.{RANK}.json"), "w") as f:
        json.dump(report, f)
    if RANK == 0 and how in ("hang", "exit", "kill"):
        ch.comm.Abort(3)       # end the job (a stuck rank too), as gpunn train does after such an error


def main():
    scenario, outdir, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if scenario.startswith("fault_"):
        scenario_fault(outdir, seed, scenario[len("fault_"):])
    else:
        globals()[f"scenario_{scenario}"](outdir, seed)


if __name__ == "__main__":
    main()
