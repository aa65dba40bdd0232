"""gpunn.distributed: the summation tree, then real MPI jobs (``mpiexec -n 1/2/3/4`` running tests/mpi_worker.py).

References: the tree order written again here as a plain recursion (``tree_reference``), float64 sums, and the float64
optimizer of tests/test_optim_reference.py. The central property: N ranks give the bits of one process (ZeRO and
all-reduce, float32 and float64, clipping and skip-on-inf included).
"""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import gpunn
from gpunn import distributed as dist
from gpunn.distributed import tree
from helpers import assert_close, assert_doctests_pass, get, put
from test_optim_reference import Reference

import mpi4py  # noqa: F401  (in the test extra with the MPICH wheel: a missing one must fail, not skip)

sys.path.insert(0, str(Path(__file__).parent))
import mpi_worker as W  # noqa: E402

ROOT = Path(gpunn.__file__).resolve().parent.parent
WORKER = Path(__file__).resolve().parent / "mpi_worker.py"
SEED = int(os.environ.get("GPUNN_TEST_SEED") or np.random.SeedSequence().entropy % (2**31))
TOL = {np.float32: (2e-5, 1e-4), np.float64: (1e-12, 1e-10)}


def mpiexec():
    here = Path(sys.executable).parent / "mpiexec"
    return str(here) if here.exists() else "mpiexec"


def mpirun(n, scenario, outdir, *, timeout=300, flags=()):
    """Run the worker on ``n`` ranks; kill the whole process group if it outlives ``timeout``. (rc, output)."""
    os.makedirs(outdir, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [mpiexec(), *flags, "-n", str(n), sys.executable, str(WORKER), scenario, str(outdir), str(SEED)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"{' '.join(cmd)} still running after {timeout} s (seed {SEED}); output:\n{out[-3000:]}")
    return proc.returncode, out


def load(outdir, scenario, rank):
    with np.load(os.path.join(outdir, f"{scenario}.{rank}.npz")) as f:
        return dict(f)


def load_json(outdir, scenario, rank):
    with open(os.path.join(outdir, f"{scenario}.{rank}.json")) as f:
        return json.load(f)


# ---- the tree, without MPI -------------------------------------------------------------------------------------------
def tree_reference(xs):
    """S[a, b) = S[a, a + p) + S[a + p, b), p the largest power of two below b - a (from the module docstring)."""
    if len(xs) == 1:
        return xs[0].copy()
    p = 1
    while p * 2 < len(xs):
        p *= 2
    return tree_reference(xs[:p]) + tree_reference(xs[p:])


@pytest.mark.parametrize("m", [1, 2, 3, 4, 5, 6, 7, 8, 13, 16])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_tree_sum_order(m, dtype, rng):
    xs = [(rng.standard_normal(257) * 10.0 ** rng.integers(-3, 4, 257)).astype(dtype) for _ in range(m)]
    want = tree_reference(xs)
    copies = [x.copy() for x in xs]
    t = dist.TreeSum()
    for x in xs:
        t.add(x)
    got = t.result()
    assert all(np.array_equal(x, c) for x, c in zip(xs, copies)), "TreeSum wrote into an input"
    assert np.array_equal(got, want), f"TreeSum over {m} leaves is not the tree's order"
    assert np.array_equal(tree.sum_rows(np.stack(xs)), want), f"sum_rows over {m} rows is not the tree's order"
    assert_close(got, np.sum(np.stack(xs).astype(np.float64), axis=0), atol=TOL[dtype][0] * 10 * m,
                 rtol=TOL[dtype][1], what="tree sum vs float64")


@pytest.mark.parametrize("m,n", [(8, 1), (8, 2), (8, 4), (8, 8), (6, 3), (12, 3), (4, 4), (2, 2)])
def test_rank_subtrees_meet_in_the_same_tree(m, n, rng):
    """With m/n a power of two, summing each rank's leaves first and then the rank sums gives the one-tree bits."""
    assert tree.keeps_order(m, n)
    xs = [(rng.standard_normal(101) * 10.0 ** rng.integers(-4, 5, 101)).astype(np.float32) for _ in range(m)]
    per = m // n
    parts = [tree_reference(xs[r * per:(r + 1) * per]) for r in range(n)]
    assert np.array_equal(tree.sum_rows(np.stack(parts)), tree_reference(xs))


def test_keeps_order_refuses_other_splits():
    assert not tree.keeps_order(6, 4) and not tree.keeps_order(12, 2) and not tree.keeps_order(3, 2)


def test_tree_sum_keeps_the_callers_buffer_free(mode, rng):
    """add() copies: the caller overwrites one gradient buffer for every micro-batch (the MLP does)."""
    buf = put(np.zeros(33, np.float32), mode)
    xs = [rng.standard_normal(33).astype(np.float32) for _ in range(5)]
    t = dist.TreeSum()
    for x in xs:
        if mode == "device":
            buf.copy_to_device(x)
        else:
            buf[...] = x
        t.add(buf)
    out = put(np.full(33, np.nan, np.float32), mode)
    t.result(out=out)
    assert np.array_equal(get(out), tree_reference(xs))


def test_tree_sum_torch(rng):
    torch = pytest.importorskip("torch")
    xs = [rng.standard_normal(17).astype(np.float32) for _ in range(3)]
    t = dist.TreeSum()
    for x in xs:
        t.add(torch.from_numpy(x))
    assert np.array_equal(t.result().numpy(), tree_reference(xs))


def test_tree_sum_empty_raises():
    with pytest.raises(ValueError, match="nothing was added"):
        dist.TreeSum().result()


def test_micro_ranges_cover_the_batch():
    assert tree.micro_ranges(10, 4) == [(0, 2), (2, 5), (5, 7), (7, 10)]
    assert tree.micro_ranges(2, 4) == [(0, 0), (0, 1), (1, 1), (1, 2)]


def test_norm_chunk_and_shard_bounds():
    from gpunn.distributed.sharded import norm_chunk, shard_bounds

    assert norm_chunk(1000) == 64 and norm_chunk(1 << 22) == 64 and norm_chunk((1 << 22) + 1) == 128
    assert shard_bounds(1000, 2, 64) == [0, 512, 1000]
    assert shard_bounds(1000, 4, 64) == [0, 256, 512, 768, 1000]
    assert shard_bounds(10, 4, 64) == [0, 0, 0, 0, 10]
    for total in (0, 1, 63, 65, 9610, 100_003):
        for n in (1, 2, 3, 4, 7):
            b = shard_bounds(total, n, 64)
            assert b[0] == 0 and b[-1] == total and all(x <= y for x, y in zip(b, b[1:]))
            assert all(x % 64 == 0 for x in b[:-1])


@pytest.mark.parametrize("module", [dist, tree, dist.collectives, dist.sharded])
def test_doc_examples(module):
    assert_doctests_pass(module)


# ---- one process: argument checks (no mpiexec needed: a singleton MPI world) ----------------------------------------
def test_bad_arguments_are_named():
    with pytest.raises(TypeError, match="flat_grad must be an array"):
        dist.allreduce_mean([1.0, 2.0])
    with pytest.raises(TypeError, match="flat_grad must be float32 or float64"):
        dist.allreduce_sum(np.zeros(3, np.int32))
    with pytest.raises(ValueError, match="flat_grad must be C-contiguous"):
        dist.allreduce_sum(np.zeros(6, np.float32)[::2])
    with pytest.raises(ValueError, match="timeout"):
        dist.allreduce_sum(np.zeros(3), timeout=0)
    with pytest.raises(TypeError, match="comm must be an mpi4py communicator"):
        dist.allreduce_sum(np.zeros(3), comm="world")
    with pytest.raises(ValueError, match="root must be a rank"):
        dist.broadcast(np.zeros(3), root=1)
    with pytest.raises(TypeError, match="opt_cls must be a gpunn.optim optimizer class"):
        dist.ShardedOptimizer(object, np.zeros(3), None)
    with pytest.raises(ValueError, match="max_grad_norm"):
        dist.ShardedOptimizer(gpunn.optim.Adam, np.zeros(3), None, max_grad_norm=-1.0)
    with pytest.raises(ValueError, match="lr"):
        dist.ShardedOptimizer(gpunn.optim.Adam, np.zeros(3), None, lr=-1.0)


def test_sharded_step_bad_gradient_changes_nothing(rng):
    p = rng.standard_normal(10).astype(np.float32)
    opt = dist.ShardedOptimizer(gpunn.optim.Adam, p, None, lr=0.1)
    opt.step(rng.standard_normal(10).astype(np.float32))
    before, sd = p.copy(), opt.state_dict()
    for bad, err in [(np.zeros(11, np.float32), ValueError), (np.zeros(10, np.float64), TypeError),
                     ("g", TypeError)]:
        with pytest.raises(err, match="flat_grad"):
            opt.step(bad)
    with pytest.raises(ValueError, match="grad_scale"):
        opt.step(np.zeros(10, np.float32), grad_scale=0.0)
    assert np.array_equal(p, before) and opt.step_count == 1
    assert all(np.array_equal(np.asarray(v), np.asarray(opt.state_dict()[k]), equal_nan=True)
               for k, v in sd.items() if np.asarray(v).dtype.kind == "f")


def test_sharded_one_rank_equals_the_optimizer_and_the_reference(mode, rng):
    """One rank: the ZeRO step is the gpunn step (bits) and follows the float64 reference (clipping on)."""
    p0 = rng.standard_normal(300).astype(np.float32)
    a, b = put(p0.copy(), mode), put(p0.copy(), mode)
    sharded = dist.ShardedOptimizer(gpunn.optim.Adam, a, None, lr=0.05, amsgrad=True)
    plain = gpunn.optim.Adam([b], lr=0.05, amsgrad=True)
    clipped_p = p0.copy()
    clipped = dist.ShardedOptimizer(gpunn.optim.Adam, clipped_p, None, lr=0.05, max_grad_norm=1.0)
    ref = Reference("Adam", [p0], lr=0.05, max_grad_norm=1.0)
    for _ in range(4):
        g = rng.standard_normal(300).astype(np.float32)
        assert sharded.step(put(g, mode)) and plain.step([put(g, mode)])
        clipped.step(g)
        ref.step([g])
    assert np.array_equal(get(a), get(b))
    assert_close(clipped_p, ref.p[0], atol=TOL[np.float32][0], rtol=TOL[np.float32][1], what="clipped ZeRO step")
    assert sharded.hyperparams()["lr"] == 0.05 and clipped.hyperparams()["max_grad_norm"] == 1.0
    sharded.set(lr=0.01, max_grad_norm=2.0)
    assert sharded.hyperparams()["lr"] == 0.01 and sharded.max_grad_norm == 2.0


def test_state_bytes_counts_the_state_tensors():
    p = np.zeros(10, np.float32)
    opt = gpunn.optim.Adam([p], lr=0.1, amsgrad=True)
    opt.step([np.ones(10, np.float32)])
    assert dist.state_bytes(opt) == 3 * 10 * 4
    assert dist.state_bytes(gpunn.optim.SGD([p], lr=0.1)) == 0


# ---- real MPI jobs ----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def equivalence(tmp_path_factory):
    """The worker's configurations on 1, 2 and 4 ranks: {n: [rank 0's arrays, rank 1's, ...]}."""
    out = {}
    for n in (1, 2, 4):
        d = tmp_path_factory.mktemp(f"eq{n}")
        rc, text = mpirun(n, "equivalence", d)
        assert rc == 0, f"mpiexec -n {n} failed (seed {SEED}):\n{text[-3000:]}"
        out[n] = [load(d, "equivalence", r) for r in range(n)]
    return out


@pytest.mark.parametrize("config", [c[0] for c in W.CONFIGS])
def test_same_bits_on_1_2_and_4_ranks(equivalence, config):
    one = equivalence[1][0]
    for n in (2, 4):
        for r in range(n):
            for what in ("params", "applied"):
                key = f"{config}/{what}"
                assert np.array_equal(one[key], equivalence[n][r][key]), \
                    f"{key}: rank {r} of {n} differs from one process (seed {SEED})"
        for key in [k for k in one if k.startswith(f"{config}/state/")]:
            assert np.array_equal(one[key], equivalence[n][0][key]), f"gathered {key} differs on {n} ranks"


@pytest.mark.parametrize("config", W.CONFIGS, ids=[c[0] for c in W.CONFIGS])
def test_against_float64_reference(equivalence, config):
    name, opt_name, kw, dtype, zero, grad_scale = config
    kw = dict(kw)
    ref = Reference(opt_name, [W.initial(SEED, dtype)], max_grad_norm=kw.pop("max_grad_norm", None), **kw)
    applied = []
    for step in range(W.STEPS):
        ls = W.leaves(SEED, W.leaf_key(opt_name, dtype), step, dtype)
        if grad_scale is not None:
            ls = [g * dtype(grad_scale) for g in ls]
            if step == W.INF_STEP:
                ls[-1][3] = np.inf
        applied.append(ref.step([np.sum(np.stack(ls).astype(np.float64), axis=0)], grad_scale=grad_scale))
    got = equivalence[1][0]
    assert got[f"{name}/applied"].tolist() == applied
    atol, rtol = TOL[dtype]
    assert_close(got[f"{name}/params"], ref.p[0], atol=atol, rtol=rtol, what=f"{name} (seed {SEED})")


def test_skip_on_inf_is_global(equivalence):
    for n in (1, 2, 4):
        for r in range(n):
            applied = equivalence[n][r]["sgd_scaled_zero_f32/applied"].tolist()
            assert applied == [s != W.INF_STEP for s in range(W.STEPS)], f"rank {r} of {n}: {applied}"


def test_zero_equals_allreduce_bit_for_bit(equivalence):
    """Without clipping, sharding the optimizer changes nothing (the step is elementwise)."""
    for n in (1, 2, 4):
        for r in range(n):
            e = equivalence[n][r]
            assert np.array_equal(e["adam_zero_f32/params"], e["adam_ddp_f32/params"]), f"rank {r} of {n}"
            assert_close(e["adamw_clip_zero_f64/params"], e["adamw_clip_ddp_f64/params"], atol=1e-13, rtol=1e-12,
                         what="clipped: norms summed in another order")


def test_zero_state_is_split(equivalence):
    """Each rank keeps the state of its shard only: 1/N of the one-process bytes, up to one 64-element chunk."""
    for config in ("adam_zero_f32", "adamw_clip_zero_f64", "sgd_scaled_zero_f32"):
        single = int(equivalence[1][0][f"{config}/state_bytes"])
        per_element = single // W.N_PARAMS
        for n in (2, 4):
            got = [int(equivalence[n][r][f"{config}/state_bytes"]) for r in range(n)]
            assert sum(got) == single, f"{config} on {n} ranks: {got} do not add up to {single}"
            assert all(abs(b - single / n) <= 64 * per_element for b in got), f"{config} on {n} ranks: {got}"
    for n in (2, 4):
        assert all(int(equivalence[n][r]["adam_ddp_f32/state_bytes"]) == 8 * W.N_PARAMS for r in range(n))


def test_collectives_on_three_ranks(tmp_path):
    """An odd rank count: slices smaller than the ranks (sizes 0 and 1), NumPy, PyTorch and device arrays."""
    pytest.importorskip("torch")
    rc, text = mpirun(3, "collectives", tmp_path)
    assert rc == 0, text[-3000:]
    got = [load(tmp_path, "collectives", r) for r in range(3)]
    for n in (0, 1, 31, 1000):
        for dtype in (np.float32, np.float64):
            tag = f"{n}_{np.dtype(dtype).name}"
            xs = [np.random.default_rng([SEED, r, n]).standard_normal(n).astype(dtype) for r in range(3)]
            want = tree_reference(xs)
            exact64 = np.sum(np.stack(xs).astype(np.float64), axis=0)
            for r in range(3):
                assert np.array_equal(got[r][f"sum_numpy_{tag}"], want), f"sum {tag} rank {r}"
                assert np.array_equal(got[r][f"sum_device_{tag}"], want), f"device sum {tag} rank {r}"
                assert np.array_equal(got[r][f"mean_torch_{tag}"], want / dtype(3)), f"mean {tag} rank {r}"
                assert_close(got[r][f"sum_numpy_{tag}"], exact64, atol=TOL[dtype][0], rtol=TOL[dtype][1])
                assert np.array_equal(got[r][f"bcast_numpy_{tag}"], xs[2]), f"broadcast root 2 {tag} rank {r}"
                assert np.array_equal(got[r][f"bcast_device_{tag}"], xs[0]), f"device broadcast {tag} rank {r}"


def test_sharded_device_arrays_match_host(tmp_path):
    rc, text = mpirun(2, "device_zero", tmp_path)
    assert rc == 0, text[-3000:]
    for r in range(2):
        got = load(tmp_path, "device_zero", r)
        assert np.array_equal(got["device"], got["host"]), f"rank {r}: device ZeRO differs from host ZeRO"


def test_checkpoint_resume(tmp_path):
    """Per-rank files resume bit-identically; the gathered file resumes on 2 ranks and in one plain process."""
    rc, text = mpirun(2, "checkpoint", tmp_path)
    assert rc == 0, text[-3000:]
    got = [load(tmp_path, "checkpoint", r) for r in range(2)]
    for r in range(2):
        assert np.array_equal(got[r]["from_shards"], got[r]["straight"]), f"rank {r}: per-rank resume differs"
        assert np.array_equal(got[r]["from_full"], got[r]["straight"]), f"rank {r}: gathered resume differs"
        info = load_json(tmp_path, "checkpoint", r)
        assert "zero.rank" in info["wrong_file"] and "nothing loaded" in info["wrong_file"]
        assert info["unchanged"]
    # one process, the ordinary optimizer, from the gathered file: the same 3 steps give the same bits
    p = got[0]["mid"].copy()
    opt = gpunn.optim.SGD([p], lr=1.0)
    full = np.load(tmp_path / "ckpt.full.npz")
    assert int(full["num_params"]) == 1 and full["momentum_buffer.0"].shape == (W.N_PARAMS,)
    opt.load_state_dict(full)
    for step in range(3, 6):
        opt.step([tree_reference(W.leaves(SEED, "ckpt", step, np.float32))])
    assert np.array_equal(p, got[0]["straight"])


def test_mismatched_parameter_counts_fail_at_start_up(tmp_path):
    rc, text = mpirun(2, "mismatch", tmp_path, timeout=120)
    assert rc == 0, text[-3000:]
    for r in range(2):
        m = load_json(tmp_path, "mismatch", r)
        for what in ("broadcast", "sharded"):
            assert "rank 1: (11," in m[what] and "rank 0: (10," in m[what] and "do not match" in m[what], m[what]


def test_a_rank_that_raises_is_named_at_once(tmp_path):
    rc, text = mpirun(2, "fault_raise", tmp_path, timeout=120)
    report = load_json(tmp_path, "fault_raise", 0)
    assert report["type"] == "RankFailedError" and report["ranks"] == [1], report
    assert "rank 1 of 2 stopped: RuntimeError: rank one broke" in report["error"]
    assert report["seconds"] < 30, "the notice should arrive long before the 120 s timeout"


def test_a_stuck_rank_is_named_after_the_timeout(tmp_path):
    """Rank 1 sleeps outside any collective: rank 0 times out (3 s), names it, and aborts the job."""
    rc, text = mpirun(2, "fault_hang", tmp_path, timeout=60)
    assert rc != 0, "the job must end with an error"
    report = load_json(tmp_path, "fault_hang", 0)
    assert report["type"] == "CollectiveTimeoutError" and report["ranks"] == [1], report
    assert "rank 1 of 2 did not answer" in report["error"] and 3 <= report["seconds"] < 30


def test_a_rank_that_dies_is_named_after_the_timeout(tmp_path):
    """Rank 1 exits at once (os._exit: no clean-up, no MPI_Finalize). mpiexec would end the job itself; with its
    clean-up off, rank 0's own timeout must end the wait and name rank 1."""
    rc, text = mpirun(2, "fault_exit", tmp_path, timeout=60, flags=("-disable-auto-cleanup",))
    report = load_json(tmp_path, "fault_exit", 0)
    assert report["type"] == "CollectiveTimeoutError" and report["ranks"] == [1], report
    assert "rank 1 of 2 did not answer" in report["error"] and 3 <= report["seconds"] < 30


def test_a_killed_rank_does_not_hang_the_job(tmp_path):
    """Rank 1 is killed (SIGKILL): the job ends, by mpiexec's clean-up or by rank 0's timeout naming rank 1."""
    rc, text = mpirun(2, "fault_kill", tmp_path, timeout=60)
    assert rc != 0
    path = tmp_path / "fault_kill.0.json"
    if path.exists():                      # rank 0 got to its timeout before mpiexec ended it
        report = json.loads(path.read_text())
        assert report["type"] == "CollectiveTimeoutError" and report["ranks"] == [1], report


def test_readme_example_runs():
    """The README's gpunn.distributed example, as written, in one process (a world of one rank)."""
    import re

    readme = (ROOT / "README.md").read_text()
    code = next(b for b in re.findall(r"```python\n(.*?)```", readme, flags=re.S) if "ShardedOptimizer" in b)
    namespace = {}
    exec(compile(code, "README.md (distributed example)", "exec"), namespace)
    views, params0 = namespace["views"], namespace["params"]
    assert np.allclose(views[0], params0[0] - 1e-3, atol=1e-6)     # Adam's first step: lr against the gradient's sign
    assert np.array_equal(views[1], params0[1])                    # zero gradient: unchanged
    assert namespace["opt"].step_count == 1
