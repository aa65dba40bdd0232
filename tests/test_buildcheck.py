"""The kernel build check (gpunn/buildcheck.py, ``gpunn kernels``).

Every registered kernel must compile to PTX for sm_80 and sm_90, link to SASS with nvJitLink, spill 0 bytes, (the
float32 kernels) contain no float64 instruction, and meet the SASS rules (128-bit loads in the vectorised float32
kernels, 50% occupancy on sm_90) unless listed in KNOWN_OFFENDERS, where every entry must still fail its rule. Then
the checker itself: it must flag a float32 kernel with a float64 literal, report local memory and spills, find the
128-bit loads of real kernels in their SASS, flag a vectorised kernel without them, tell known offenders from new
and stale ones, write cubins and SASS with --output, ignore register names that merely look like ``f64``, and exit 2
with one line when the toolchain is missing. (tests/test_sass.py tests the SASS reader on hand-written SASS.)

The compiles need the real CUDA target, which the simulator replaces (tests/conftest.py switches it on), so they run
in child processes with ``NUMBA_ENABLE_CUDASIM=0``; they compile, nothing is launched, no GPU is needed. The parser
tests run in-process.
"""

import functools
import json
import os
import subprocess
import sys
import tempfile
import textwrap

import pytest

from gpunn import _registry, buildcheck

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGETS = ["sm_80", "sm_90"]


def _start(argv):
    """Start ``python argv...`` from the repository root with the simulator off."""
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="0", PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen([sys.executable, *argv], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _finish(process, timeout=3600):  # every registered kernel (about 355, half kernels included) for two targets:
    # 20-40 minutes on 2 busy cores
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def _child(argv, timeout=300):
    return _finish(_start(argv), timeout)


@functools.lru_cache(maxsize=None)
def _compile_children():
    """The two compile-heavy children, started together on first use so that they overlap (they are independent)."""
    script = os.path.join(tempfile.mkdtemp(prefix="gpunn-buildcheck-"), "bad_kernels.py")
    with open(script, "w") as f:
        f.write(BAD_KERNELS)
    argv = ["-m", "gpunn", "kernels", "--json", "--cc", "80", "90", "--jobs", "2"] + (["--half-sample"] if FULL
                                                                                     else ["--quick"])
    output = os.path.join(os.path.dirname(script), "output")
    return {"registered": _start(argv), "bad": _start([script, output]), "output": output}


FULL = os.environ.get("GPUNN_BUILDCHECK_QUICK", "") in ("", "0")


def _skip_if_no_toolchain(result):
    if result.returncode == 2 and "toolchain missing" in result.stderr:
        pytest.skip("NVVM/nvJitLink not installed: " + result.stderr.strip().splitlines()[-1])


# ---- the registered kernels ----------------------------------------------------------------------------------------
# By default every registered kernel (~175 kernels x 2 targets, about 55 s of CPU in 2 processes): the simulator never
# compiles for real hardware, so this is the only check that each kernel builds. GPUNN_BUILDCHECK_QUICK=1 checks one
# kernel per op module (its float32 kernel, both targets: ``gpunn kernels --quick``, about 11 s of CPU).
# ``python -m gpunn kernels`` is the full check outside pytest.
@pytest.fixture(scope="module")
def full_report():
    result = _finish(_compile_children()["registered"])
    _skip_if_no_toolchain(result)
    assert result.returncode in (0, 1), f"gpunn kernels crashed (rc {result.returncode}):\n{result.stderr[-3000:]}"
    report = json.loads(result.stdout)
    report["returncode"] = result.returncode
    return report


def _fmt(rows):
    return "\n".join(f"  {r['name']} {r['cc']}: regs {r['registers']}, "
                     f"spills {r['spill_stores']}/{r['spill_loads']} B, local {r['local_bytes']} B, "
                     f"f64 {r['f64_instructions']}, error {r['error']}" for r in rows[:20])


def test_every_op_module_imports(full_report):
    assert full_report["import_errors"] == {}, f"modules that register nothing: {full_report['import_errors']}"


def test_the_registered_kernels_are_the_ones_checked_at_both_targets(full_report):
    # the registry as this process sees it (importing every op module registers; nothing compiles, even here in the
    # simulator); the child must have checked exactly these kernels, each at both targets
    specs, errors, aliases = buildcheck.collect()
    assert not errors, errors
    registered = {spec.name for spec in _registry.KERNELS}
    assert {"relu_forward[float32]", "relu_backward[float64]", "reduce_finish_sum[float32]"} <= registered
    assert registered - set(aliases) <= {s.name for s in specs}  # every registration is checked, or is an alias
    expected = buildcheck.half_sample(specs) if FULL else buildcheck.quick_subset(specs)
    assert {s.dtype for s in expected} >= {"float16", "bfloat16", "float32", "float64"}
    checked = [(r["name"], r["cc"]) for r in full_report["rows"]]
    assert sorted(checked) == sorted((s.name, cc) for s in expected for cc in TARGETS)
    assert full_report["aliases"] == aliases
    # every op module is reached, the device copies included
    modules = {buildcheck.home_module(s.build()) for s in specs}
    assert {"gpunn.activations.relu", "gpunn._reduce", "gpunn._copy"} <= modules
    assert modules == {buildcheck.home_module(s.build()) for s in expected}
    assert full_report["targets"] == TARGETS
    assert len(full_report["rows"]) == 2 * full_report["kernels"]


def test_every_kernel_compiles_and_links(full_report):
    failed = [r for r in full_report["rows"] if r["error"] is not None]
    assert not failed, f"{len(failed)} builds failed:\n{_fmt(failed)}"
    assert all(r["registers"] and r["registers"] > 0 for r in full_report["rows"])


def test_no_kernel_spills(full_report):
    spilling = [r for r in full_report["rows"] if r["spill_stores"] or r["spill_loads"]]
    assert not spilling, f"{len(spilling)} builds spill registers:\n{_fmt(spilling)}"


def test_float32_kernels_have_no_float64_math(full_report):
    bad = [r for r in full_report["rows"] if r["f64_ok"] is False]
    assert not bad, f"{len(bad)} float32 builds compute in float64 (a Python float/int literal?):\n{_fmt(bad)}"
    # and the check did run on the float32 kernels: they are the rows with f64_ok set
    assert any(r["f64_ok"] is True for r in full_report["rows"])


def _verdicts(full_report, kind):
    return [(r["name"], r["cc"], r["rules"][kind]) for r in full_report["rows"] if r["rules"][kind]]


def test_sass_rules_hold_but_for_known_offenders(full_report):
    new = _verdicts(full_report, "new")
    assert not new, (f"{len(new)} builds break a SASS rule (gpunn/buildcheck.py; fix the kernel, or list it in "
                     "KNOWN_OFFENDERS with why):\n" + "\n".join(map(str, new[:20])))
    # the rules did run: vectorised float32 kernels were checked for 128-bit loads, and float32 occupancy at sm_90
    checked = [r for r in full_report["rows"] if r["dtype"] == "float32" and r["vector_loads"]]
    assert checked and all(r["sass"]["loads"].get("128") for r in checked)
    assert any(r["occupancy"] is not None and r["cc"] == "sm_90" for r in full_report["rows"])


def test_known_offenders_still_offend(full_report):
    stale = _verdicts(full_report, "stale")
    assert not stale, "KNOWN_OFFENDERS entries to delete or fix:\n" + "\n".join(map(str, stale[:20]))
    if FULL:  # every entry names kernels that exist, and each still breaks its rule somewhere
        for offender in buildcheck.KNOWN_OFFENDERS:
            known = [r for r in full_report["rows"] if buildcheck.name_matches(offender.pattern, r["name"])
                     and offender.rule in r["rules"]["known"]]
            assert known, f"KNOWN_OFFENDERS entry {offender.pattern!r} ({offender.rule}) matches no offending build"


def test_check_passes_overall(full_report):
    assert full_report["ok"] and full_report["returncode"] == 0, full_report["summary"]


# ---- the checker can fail ------------------------------------------------------------------------------------------
BAD_KERNELS = textwrap.dedent('''
    import dataclasses, json, sys
    from numba import cuda, float32, int64
    from gpunn import _registry, buildcheck
    from gpunn._registry import KernelSpec

    @cuda.jit
    def literal_kernel(x, out):                  # x[i] * 0.1: float32 promoted to float64 by the literal
        for i in range(int64(cuda.grid(1)), x.size, int64(cuda.gridsize(1))):
            out[i] = x[i] * 0.1

    @cuda.jit
    def local_kernel(x, out):                    # a 16 KiB per-thread array lives in local memory
        buf = cuda.local.array(4096, float32)
        n = x.size
        for j in range(4096):
            buf[j] = x[(j * 7919) % n]
        acc = float32(0)
        for j in range(4096):
            acc += buf[(j * int64(x[j % n])) % 4096]
        out[0] = acc

    @cuda.jit(max_registers=16)
    def hungry_kernel(x, out):                   # 24 live values, 16 registers at most: must spill
        i = cuda.grid(1)
        v0 = x[i]; v1 = x[i + 1]; v2 = x[i + 2]; v3 = x[i + 3]; v4 = x[i + 4]; v5 = x[i + 5]
        v6 = x[i + 6]; v7 = x[i + 7]; v8 = x[i + 8]; v9 = x[i + 9]; v10 = x[i + 10]; v11 = x[i + 11]
        v12 = x[i + 12]; v13 = x[i + 13]; v14 = x[i + 14]; v15 = x[i + 15]; v16 = x[i + 16]; v17 = x[i + 17]
        v18 = x[i + 18]; v19 = x[i + 19]; v20 = x[i + 20]; v21 = x[i + 21]; v22 = x[i + 22]; v23 = x[i + 23]
        s = v0 * v23
        s = s * v1 + v22
        s = s * v2 + v21
        s = s * v3 + v20
        s = s * v4 + v19
        s = s * v5 + v18
        s = s * v6 + v17
        s = s * v7 + v16
        s = s * v8 + v15
        s = s * v9 + v14
        s = s * v10 + v13
        s = s * v11 + v12
        out[i] = s + v0 * v1 * v2 * v3 * v4 * v5 * v6 * v7 * v8 * v9 * v10 * v11 + v12 + v13 + v14 + v15 + v16 + v17 \\
            + v18 + v19 + v20 + v21 + v22 + v23

    hungry_free = cuda.jit(hungry_kernel.py_func)  # the same code with no register limit

    @cuda.jit
    def scalar_copy_kernel(x, out):              # 32-bit loads only
        for i in range(int64(cuda.grid(1)), x.size, int64(cuda.gridsize(1))):
            out[i] = x[i]

    sig32 = "void(float32[::1], float32[::1])"
    real = {s.name: s for s in buildcheck.collect()[0]}
    specs = [
        KernelSpec("literal[float32]", lambda: literal_kernel, sig32, "float32"),
        KernelSpec("literal[float64]", lambda: literal_kernel, "void(float64[::1], float64[::1])", "float64"),
        KernelSpec("literal_acc[float32]", lambda: literal_kernel, sig32, "float32", f64_accumulator=True),
        KernelSpec("local[float32]", lambda: local_kernel, sig32, "float32"),
        KernelSpec("hungry[float32]", lambda: hungry_kernel, sig32, "float32"),
        KernelSpec("hungry_free[float32]", lambda: hungry_free, sig32, "float32"),
        KernelSpec("wrong_signature[float32]", lambda: literal_kernel, "void(float32[::1])", "float32"),
        KernelSpec("scalar_copy[float32]", lambda: scalar_copy_kernel, sig32, "float32", vector_loads=True),
        real["relu_forward[float32]"], real["sgd_step[1,1,1,1][float32]"],
    ]
    # the optimizer step (every option on: 80 registers) is a known offender; relu, listed too, meets the rule: stale
    offenders = (buildcheck.KnownOffender("sgd_step[1,1,1,1][float32]", "occupancy", 0.375, "test"),
                 buildcheck.KnownOffender("relu_forward[float32]", "occupancy", 0.5, "test: stale"))
    try:
        report = buildcheck.run(((8, 0), (9, 0)), specs=specs, offenders=offenders)
    except buildcheck.ToolchainError as exc:
        print(f"toolchain missing: {exc}", file=sys.stderr)
        sys.exit(2)
    sgd = next(r for r in report.rows if r.name == "sgd_step[1,1,1,1][float32]" and r.cc == (9, 0))
    sgd_unlisted = dataclasses.replace(sgd, offenders=()).problems  # the same build, not listed

    # the same through the command: register one bad kernel, the CLI must exit 1
    from gpunn import cli
    _registry.register("zz_test_literal[float32]", lambda: literal_kernel, sig32, "float32")
    sys.stdout.flush()
    rc = cli.main(["kernels", "--filter", "zz_test_literal", "--cc", "90", "--output", sys.argv[1]])
    print("\\n@@" + json.dumps({"report": report.as_dict(), "cli_rc": rc, "sgd_unlisted": sgd_unlisted}))
''')


@pytest.fixture(scope="module")
def bad_report():
    result = _finish(_compile_children()["bad"])
    _skip_if_no_toolchain(result)
    assert result.returncode == 0, result.stderr[-3000:]
    table, payload = result.stdout.rsplit("\n@@", 1)
    data = json.loads(payload)
    data["table"] = table
    data["output"] = _compile_children()["output"]
    data["rows"] = {(r["name"], r["cc"]): r for r in data["report"]["rows"]}
    return data


@pytest.mark.parametrize("cc", TARGETS)
def test_float64_literal_in_float32_kernel_is_flagged(bad_report, cc):
    row = bad_report["rows"][("literal[float32]", cc)]
    assert row["f64_ok"] is False and not row["ok"]
    assert "mul.f64" in row["f64_instructions"] and "cvt.f64.f32" in row["f64_instructions"]
    assert row["error"] is None and row["spill_stores"] == 0  # flagged for the float64, nothing else
    # the same code is fine as a float64 kernel, or as a declared float64 accumulator
    assert bad_report["rows"][("literal[float64]", cc)]["ok"]
    assert bad_report["rows"][("literal[float64]", cc)]["f64_ok"] is None
    acc = bad_report["rows"][("literal_acc[float32]", cc)]
    assert acc["ok"] and acc["f64_ok"] is None and "mul.f64" in acc["f64_instructions"]  # allowed, still listed


@pytest.mark.parametrize("cc", TARGETS)
def test_local_array_shows_local_memory(bad_report, cc):
    row = bad_report["rows"][("local[float32]", cc)]
    assert row["error"] is None
    assert row["local_bytes"] >= 4096 * 4, row
    assert row["f64_ok"] is True  # float32(0) and an int64 index: no float64


@pytest.mark.parametrize("cc", TARGETS)
def test_register_limit_shows_spills(bad_report, cc):
    row = bad_report["rows"][("hungry[float32]", cc)]
    assert row["error"] is None
    # max_registers=16 of the dispatcher reached nvJitLink (ptxas raises a limit that low to its minimum, 24 here)
    assert row["registers"] <= 24, row
    assert row["spill_stores"] > 0 and row["spill_loads"] > 0 and row["local_bytes"] > 0, row
    assert not row["ok"] and row["f64_ok"] is True  # failing for the spills alone
    free = bad_report["rows"][("hungry_free[float32]", cc)]  # without the limit: more registers, no spill
    assert free["ok"] and free["spill_stores"] == 0 and free["registers"] > row["registers"], free


@pytest.mark.parametrize("cc", TARGETS)
def test_a_kernel_that_does_not_compile_is_a_failing_row(bad_report, cc):
    row = bad_report["rows"][("wrong_signature[float32]", cc)]  # launched with one argument too few
    assert row["error"] and not row["ok"] and row["registers"] is None, row
    assert "not compiled" in bad_report["report"]["summary"]


@pytest.mark.parametrize("cc", TARGETS)
def test_real_kernels_load_128_bits_at_a_time(bad_report, cc):
    for name in ("relu_forward[float32]", "sgd_step[1,1,1,1][float32]"):
        row = bad_report["rows"][(name, cc)]
        assert row["error"] is None and row["sass"]["loads"].get("128", 0) >= 1, (name, row["sass"])
        loop = row["sass"]["main_loop"]
        assert loop["loads"].get("128", 0) >= 1 and loop["instructions"] > 0, (name, loop)
        if name.startswith("relu"):
            assert row["sass"]["f64"] == 0  # the optimizer accumulates in float64 on purpose
        assert row["blocks_per_sm"] >= 1 and 0 < row["occupancy"] <= 1 and row["shared_bytes"] is not None


@pytest.mark.parametrize("cc", TARGETS)
def test_vectorised_kernel_without_128_bit_loads_fails(bad_report, cc):
    row = bad_report["rows"][("scalar_copy[float32]", cc)]
    assert row["sass"]["loads"].get("128", 0) == 0 and row["sass"]["loads"]["32"] >= 1
    assert not row["ok"] and row["problems"] == ["no 128-bit global load (LDG.E.128)"]
    assert "2 without 128-bit loads" in bad_report["report"]["summary"]


def test_known_offender_new_and_stale(bad_report):
    sgd = bad_report["rows"][("sgd_step[1,1,1,1][float32]", "sm_90")]
    assert sgd["occupancy"] < 0.5 and sgd["ok"], sgd  # listed: KNOWN, not failing
    assert sgd["known"] and sgd["known"][0].startswith("occupancy") and "occupancy" in sgd["rules"]["known"]
    assert any("occupancy" in p and "< 50%" in p for p in bad_report["sgd_unlisted"])  # not listed: failing
    assert bad_report["rows"][("sgd_step[1,1,1,1][float32]", "sm_80")]["ok"]  # the occupancy rule is sm_90's
    relu = bad_report["rows"][("relu_forward[float32]", "sm_90")]  # listed, but meets the rule: the entry is stale
    assert not relu["ok"] and "delete KNOWN_OFFENDERS entry" in relu["problems"][0]
    assert "1 against a stale KNOWN_OFFENDERS entry" in bad_report["report"]["summary"]
    assert "1 known offenders (KNOWN)" in bad_report["report"]["summary"]
    assert bad_report["rows"][("relu_forward[float32]", "sm_80")]["ok"]


def test_output_writes_cubin_and_sass(bad_report):
    output = bad_report["output"]
    stem = os.path.join(output, "zz_test_literal.float32.sm_90")
    with open(stem + ".cubin", "rb") as f:
        assert f.read(4) == b"\x7fELF"
    with open(stem + ".sass") as f:
        sass = f.read()
    assert "Function : " in sass and "LDG.E" in sass and "STG.E" in sass
    with open(os.path.join(output, "report.json")) as f:
        assert [r["name"] for r in json.load(f)["rows"]] == ["zz_test_literal[float32]"]


def test_report_fails_and_cli_exits_1(bad_report):
    report = bad_report["report"]
    assert not report["ok"] and "FAILED" in report["summary"]
    assert bad_report["cli_rc"] == 1
    assert "zz_test_literal[float32]" in bad_report["table"] and "float64 in a float32 kernel" in bad_report["table"]


# numba-cuda imports the bindings itself, so each library is made to fail where it is used: at the first call
BREAK_NVJITLINK = ("from cuda.bindings import nvjitlink\n"
                   "def create(*args): raise RuntimeError('libnvJitLink.so.13 not found')\n"
                   "nvjitlink.create = create\n")
BREAK_NVDISASM = ("from gpunn import _sass\n"
                  "def tool(name='nvdisasm'): raise _sass.ToolMissing('nvdisasm not found')\n"
                  "_sass.tool = tool\n")
BREAK_NVVM = ("from numba import cuda\n"
              "from numba.cuda.cudadrv.error import NvvmSupportError\n"
              "def compile_ptx(*args, **kwargs): raise NvvmSupportError('libNVVM cannot be found')\n"
              "cuda.compile_ptx = compile_ptx\n")


@pytest.mark.parametrize("patch, word", [(BREAK_NVJITLINK, "nvJitLink"), (BREAK_NVVM, "NVVM"),
                                         (BREAK_NVDISASM, "nvdisasm")], ids=["nvjitlink", "nvvm", "nvdisasm"])
def test_missing_toolchain_exits_2_with_one_line(patch, word):
    code = "import sys\n" + patch + "from gpunn import cli; sys.exit(cli.main(['kernels']))"
    result = _child(["-c", code], timeout=120)
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "toolchain missing" in lines[0] and word in lines[0], lines
    assert result.stdout == ""


# ---- the parsers, in-process ----------------------------------------------------------------------------------------
PTX = """
\t.reg .f32 \t%f<70>;
\t.reg .f64 \t%fd<3>;          // declared, never used: not an instruction
\tadd.f32 \t%f64, %f63, %f1;   // register %f64 is float32 register number 64
\tld.param.f64 \t%fd1, [p];     // loading a float64 argument is data movement
\tcvt.rn.f32.f64 \t%f2, %fd1;   // narrowing it is data movement too
\tmov.b64 \t%rd1, %fd1;
\t// mul.f64 in a comment
$L__BB0_2:
\t@%p1 bra \t$L__BB0_2;
"""


def test_f64_scan_reads_opcodes_not_names():
    assert buildcheck.f64_instructions(PTX) == []
    flagged = PTX + ("\tcvt.f64.f32 \t%fd2, %f2;\n\t@%p2 fma.rn.f64 \t%fd2, %fd2, %fd1, %fd1;\n"
                     "\tsetp.gt.f64 \t%p3, %fd2, 0d0;\n")
    assert buildcheck.f64_instructions(flagged) == ["cvt.f64.f32", "fma.rn.f64", "setp.gt.f64"]


LOG = """ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function 'k' for 'sm_80'
ptxas info    : Function properties for helper
ptxas         .     8 bytes stack frame, 4 bytes spill stores, 4 bytes spill loads
ptxas info    : Function properties for k
ptxas         .     24 bytes stack frame, 16 bytes spill stores, 12 bytes spill loads
ptxas info    : Used 16 registers, used 0 barriers, 24 bytes cumulative stack size, 1024 bytes smem
info    : Function properties for 'k':
info    : used 18 registers, used 1 barriers, 32 stack, 2048 bytes smem, 360 bytes cmem[0], 24 bytes lmem
"""


def test_log_parser_sums_spills_and_takes_the_linked_registers():
    assert buildcheck.parse_log(LOG) == {"registers": 18, "shared_bytes": 2048, "spill_stores": 20, "spill_loads": 16,
                                         "local_bytes": 32}
    ptxas_only = LOG.split("\ninfo    :")[0]
    assert buildcheck.parse_log(ptxas_only)["registers"] == 16
    assert buildcheck.parse_log(ptxas_only)["shared_bytes"] == 1024
    with pytest.raises(RuntimeError, match="no resource report"):
        buildcheck.parse_log("info : nothing here")


@pytest.mark.parametrize("text, cc", [("80", (8, 0)), ("sm_90", (9, 0)), ("8.6", (8, 6)), ("100", (10, 0))])
def test_parse_cc(text, cc):
    assert buildcheck.parse_cc(text) == cc


@pytest.mark.parametrize("text", ["8", "sm_x", ""])
def test_parse_cc_rejects(text):
    with pytest.raises(ValueError, match="cc must look like"):
        buildcheck.parse_cc(text)
