r"""The kernel build check: every registered CUDA kernel compiles for real GPUs, without a GPU.

For each :class:`gpunn._registry.KernelSpec` and each target compute capability (sm_80 and sm_90 by default):

1. ``numba.cuda.compile_ptx(kernel, signature, cc=...)`` turns the kernel into PTX (NVVM, no driver needed);
2. nvJitLink (``cuda.bindings.nvjitlink``, ``-arch=sm_XX -verbose``) assembles and links that PTX to a cubin, and its
   info log gives the registers, the static shared memory, the spill stores/loads and the local memory (stack
   frame, ``lmem``); from registers and shared memory at the 256-thread blocks gpunn launches, the theoretical blocks
   per SM and occupancy (gpunn/_sass.py ``occupancy``);
3. the PTX of a float32 kernel (``dtype`` float32, float16 or bfloat16: their math is float32; not
   ``f64_accumulator``) is scanned for float64
   instructions: a stray Python float literal (``x * 0.1``) silently promotes float32 math to float64, which runs
   at 1/64 of the float32 rate on consumer GPUs (1/2 on A100/H100, plus two conversions per value) and is invisible
   in the simulator. Accumulator kernels (``f64_accumulator=True``) are exempt; their float64 opcodes are listed;
4. the SASS of the cubins (the code the GPU runs) is read with nvdisasm, all kernels of a target in one run
   (:func:`add_sass`): global loads and stores by width (LDG/STG .128/.64/32-bit), float64 instructions, and the
   main loop's instruction count (gpunn/_sass.py says how the main loop is found).

A build passes when it compiles and links, spills 0 bytes, (float32 kernels) has no float64 instruction, and meets
the SASS rules that decide speed (for float32 kernels, the precision training runs in):

* ``vector_loads``: a kernel registered ``vector_loads=True`` (the elementwise and optimizer kernels, designed around
  128-bit accesses) has at least one 128-bit global load (``LDG.E.128``) at every target;
* ``occupancy``: at sm_90 at least :data:`MIN_OCCUPANCY` of the SM's warps fit (memory-bound kernels hide memory
  latency with warps in flight).

The kernels that break a SASS rule today are listed in :data:`KNOWN_OFFENDERS`, with what was measured and why. A
listed violation is reported as KNOWN and does not fail the check; a listed kernel that now *passes* its rule does
fail it (the entry must be removed), as does one that got worse than measured: the list can only shrink.

Local memory is reported but does not fail a kernel by itself (``cuda.local.array`` legitimately lives there).

The check needs the real CUDA target (``NUMBA_ENABLE_CUDASIM`` unset or 0); ``gpunn kernels`` re-runs itself in a
subprocess with the simulator off when it is on. Kernels are picked up from the registry: every module under
``gpunn`` (activations, losses, optim, app, ...) is imported first, so a new op module is checked with no change here.

Example (prints the table; exit status 1 on any failure; ``--output DIR`` keeps each build's cubin and SASS)::

    python -m gpunn kernels --cc 80 90
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import importlib
import json
import multiprocessing
import os
import pkgutil
import re
import time
import traceback
from fnmatch import fnmatchcase

from . import _sass

DEFAULT_CCS = ((8, 0), (9, 0))

# Modules register their kernels when imported, so every module of the package is imported (pkgutil): the op
# packages (activations, losses, optim), the machinery (_elementwise, _reduce, _copy) and anything added later
# (gpunn/app/linear.py registers its layer kernels); a new module is checked as soon as it exists.
# Not imported: gpunn.__main__ (it runs the command line).
SKIP_MODULES = ("gpunn.__main__",)

BLOCK = 256            # threads per block of every gpunn kernel on a GPU (gpunn/_launch.py block_size)
OCCUPANCY_CC = (9, 0)  # the target whose occupancy is a rule (H100/H200)
MIN_OCCUPANCY = 0.5    # of a float32 kernel there


@dataclasses.dataclass(frozen=True)
class KnownOffender:
    """Kernels that break a SASS rule today, on purpose or until someone fixes them."""

    pattern: str      # kernel names: ``*`` matches any run of characters, everything else itself (brackets too)
    rule: str         # "occupancy" or "vector_loads"
    measured: float   # occupancy: the lowest measured at sm_90 among the kernels named (a build under it fails);
                      # vector_loads: 0
    why: str


# Why each group offends (the register counts: sm_90, numba-cuda 0.30 with CUDA 13's NVVM and nvJitLink).
_OPTIMIZER = ("fused optimizer step: parameter, gradient and state vectors in flight plus the step's scalars, capped "
              "at 80 registers (gpunn/optim/_kernels.py MAX_REGISTERS, the fewest with no spill in Adam's variants): "
              "72-80 registers, 3 blocks of 256 per SM. Plain SGD had 64 (50%) until the step count's last-block "
              "commit (CUDA-graph capture) kept its status and arrival pointers live: 72 on sm_90")
_BACKWARD = ("elementwise backward (gpunn/_elementwise.py _map2): 8 vectors of dy and x (32 floats) loaded before the "
             "first store, and these derivatives (erf, tanh, exp, log1p) need more temporaries than relu's: 69-74 "
             "registers; the other backward kernels use 39-56")
_ROW_BLOCK = ("row-wise, a 256-thread block per row: up to 4096 float32 elements held in registers (gpunn/_rowwise.py "
              "MAX_K = 16 per thread) between the row's reduction and its writes, so that a row is read once: "
              "72-142 registers, 1-3 blocks per SM")
_ROW_GRAD = ("row-wise with the gradient fused in, elements held in registers (a warp per row: 8 per thread; "
             "strided rows: up to MAX_COLUMN = 16; chunks: 16): 68-96 registers")

# Every entry must still fail its rule: tests/test_buildcheck.py runs every kernel, and ``gpunn kernels`` fails on
# an entry whose kernels now meet the rule, or got worse than ``measured``. Fixing a kernel means deleting (or
# narrowing) its entry here.
KNOWN_OFFENDERS = (
    KnownOffender("adam_step*[float32]", "occupancy", 0.375, _OPTIMIZER),
    KnownOffender("rmsprop_step*[float32]", "occupancy", 0.375, _OPTIMIZER),
    KnownOffender("sgd_step[float32]", "occupancy", 0.375, _OPTIMIZER),
    KnownOffender("sgd_step[1,1,1,1][float32]", "occupancy", 0.375, _OPTIMIZER),
    KnownOffender("gelu*_backward[float32]", "occupancy", 0.375, _BACKWARD),  # gelu and gelu_tanh
    KnownOffender("silu_backward[float32]", "occupancy", 0.375, _BACKWARD),
    KnownOffender("softplus_backward[float32]", "occupancy", 0.375, _BACKWARD),
    KnownOffender("*_rows[block][float32]", "occupancy", 0.125, _ROW_BLOCK),  # every block-per-row kernel
    KnownOffender("cross_entropy_with_grad*_rows[warp][float32]", "occupancy", 0.25, _ROW_GRAD),
    KnownOffender("multi_margin_with_grad_rows[warp][float32]", "occupancy", 0.375, _ROW_GRAD),
    KnownOffender("cross_entropy_with_grad*_columns[float32]", "occupancy", 0.25, _ROW_GRAD),
    KnownOffender("*softmax_backward_columns[float32]", "occupancy", 0.25, _ROW_GRAD),  # softmax and log_softmax
    KnownOffender("multi_margin_with_grad_chunk_emit[float32]", "occupancy", 0.375, _ROW_GRAD),
)
SASS_RULES = ("vector_loads", "occupancy")


def name_matches(pattern: str, name: str) -> bool:
    """``name`` fits ``pattern``, where ``*`` is any run of characters (kernel names hold literal brackets)."""
    return re.fullmatch(".*".join(re.escape(part) for part in pattern.split("*")), name) is not None


def offenders_of(name: str, offenders=KNOWN_OFFENDERS) -> tuple:
    return tuple(o for o in offenders if name_matches(o.pattern, name))


class ToolchainError(RuntimeError):
    """NVVM (compile_ptx), nvJitLink or nvdisasm is missing or unusable: the check cannot run at all."""


@dataclasses.dataclass
class Row:
    """The result for one kernel at one compute capability."""

    name: str
    cc: tuple[int, int]
    dtype: str = "float32"             # the data precision it was registered with
    registers: int | None = None       # per thread, from nvJitLink's report of the linked SASS
    shared_bytes: int | None = None    # static shared memory per block, from the same report
    spill_stores: int | None = None    # bytes, summed over the kernel and any non-inlined device function
    spill_loads: int | None = None     # bytes
    local_bytes: int | None = None     # bytes of local memory per thread (max of ptxas stack frame and linked lmem)
    f64_ok: bool | None = None         # None: not checked (float64 kernel, or a float64 accumulator on purpose)
    f64_instructions: tuple[str, ...] = ()  # float64 opcodes of a float32 kernel, e.g. ("cvt.f64.f32", "mul.f64")
    f64_accumulator: bool = False      # a float32 kernel registered as accumulating in float64 on purpose
    vector_loads: bool = False         # registered as built around 128-bit loads (the vector_loads rule)
    block: int = BLOCK                 # threads per block it is launched with on a GPU
    blocks_per_sm: int | None = None   # theoretical, from its registers and shared memory at ``block`` threads
    occupancy: float | None = None     # resident warps over the SM's maximum
    occupancy_limit: str | None = None  # what stops one more block: registers, shared, threads or blocks
    sass: dict | None = None           # gpunn._sass.Analysis.as_dict(): global loads/stores by width, f64, main loop
    error: str | None = None           # compile/link failure, one line
    seconds: float = 0.0
    traceback: str | None = dataclasses.field(default=None, repr=False)  # of the failure, for --verbose
    offenders: tuple = dataclasses.field(default=(), repr=False)         # KNOWN_OFFENDERS entries naming it
    entry: str | None = dataclasses.field(default=None, repr=False)      # the kernel's name in the cubin
    cubin: bytes | None = dataclasses.field(default=None, repr=False)    # what nvJitLink linked
    sass_text: str | None = dataclasses.field(default=None, repr=False)  # with keep_sass: the disassembly

    def loads(self, bits: int) -> int:
        """Global loads of ``bits`` width in the SASS (0 when it was not read)."""
        return (self.sass or {}).get("loads", {}).get(str(bits), 0)

    def rule_checks(self) -> dict[str, str | None]:
        """The SASS rules that apply to this build: rule -> why it breaks it, or None when it meets it."""
        out = {}
        if self.dtype != "float32":
            return out
        if self.vector_loads and self.sass is not None:
            out["vector_loads"] = None if self.loads(128) else "no 128-bit global load (LDG.E.128)"
        if self.cc == OCCUPANCY_CC and self.occupancy is not None:
            out["occupancy"] = None if self.occupancy >= MIN_OCCUPANCY else (
                f"occupancy {self.occupancy:.1%} < {MIN_OCCUPANCY:.0%} on sm_{self.cc[0]}{self.cc[1]} "
                f"({self.registers} registers, {self.shared_bytes} B shared: {self.blocks_per_sm} blocks of "
                f"{self.block}/SM, limited by {self.occupancy_limit})")
        return out

    def judged(self) -> dict[str, dict[str, str]]:
        """The SASS rules' verdicts against :data:`KNOWN_OFFENDERS` (the entries in ``offenders``):
        {"new": violations not listed, "known": listed ones, "stale": listed rules this build passes, or breaks
        worse than listed}, each {rule: text}."""
        listed = {}
        for offender in self.offenders:
            listed.setdefault(offender.rule, offender)  # the first entry naming it counts
        out = {"new": {}, "known": {}, "stale": {}}
        for rule, violation in self.rule_checks().items():
            offender = listed.get(rule)
            if offender is None:
                if violation:
                    out["new"][rule] = violation
            elif violation is None:
                out["stale"][rule] = (f"meets {rule} now: delete KNOWN_OFFENDERS entry {offender.pattern!r} "
                                      "(gpunn/buildcheck.py)")
            elif rule == "occupancy" and self.occupancy < offender.measured - 1e-9:
                out["stale"][rule] = f"{violation}, worse than the {offender.measured:.1%} listed as known"
            else:
                out["known"][rule] = violation
        return out

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def known(self) -> list[str]:
        """Violations excused by :data:`KNOWN_OFFENDERS` (reported as KNOWN)."""
        return list(self.judged()["known"].values())

    @property
    def problems(self) -> list[str]:
        """Why this build fails the check; empty when it passes."""
        out = []
        if self.error is not None:
            out.append(f"failed: {self.error}")
        if self.spill_stores or self.spill_loads:
            out.append(f"spills {self.spill_stores} B stores / {self.spill_loads} B loads")
        if self.f64_ok is False:
            out.append("float64 in a float32 kernel: " + ", ".join(self.f64_instructions))
        verdicts = self.judged()
        return out + list(verdicts["new"].values()) + list(verdicts["stale"].values())

    def as_dict(self) -> dict:
        private = ("offenders", "entry", "cubin", "sass_text")  # objects and bytes: see --output for the last two
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in private}
        d["cc"] = f"sm_{self.cc[0]}{self.cc[1]}"
        d["f64_instructions"] = list(self.f64_instructions)
        d["ok"] = self.ok
        d["problems"] = self.problems
        d["known"] = self.known
        d["rules"] = self.judged()  # {"new"|"known"|"stale": {rule: text}}
        return d


@dataclasses.dataclass
class Report:
    rows: list[Row]
    import_errors: dict[str, str]  # module -> one-line error: a module that does not import registers nothing
    kernels: int                   # distinct kernels checked (each at every cc)
    seconds: float
    ccs: tuple = DEFAULT_CCS
    aliases: dict = dataclasses.field(default_factory=dict)  # registered name -> identical build checked as

    @property
    def failures(self) -> list[Row]:
        return [r for r in self.rows if not r.ok]

    @property
    def ok(self) -> bool:
        return not self.failures and not self.import_errors

    def summary(self) -> str:
        ccs = self.ccs
        parts = [f"{self.kernels} kernels x {len(ccs)} targets "
                 f"({', '.join(f'sm_{a}{b}' for a, b in ccs)}) = {len(self.rows)} builds in {self.seconds:.1f} s"]
        count = lambda test: sum(1 for r in self.rows if test(r))  # noqa: E731
        verdicts = {id(r): r.judged() for r in self.rows}
        rule = lambda kind, name: count(lambda r: name in verdicts[id(r)][kind])  # noqa: E731
        parts.append(f"{len(self.failures)} failing: {count(lambda r: r.error is not None)} not compiled, "
                     f"{count(lambda r: r.spill_stores or r.spill_loads)} spilling, "
                     f"{count(lambda r: r.f64_ok is False)} with float64 in float32, "
                     f"{rule('new', 'vector_loads')} without 128-bit loads, "
                     f"{rule('new', 'occupancy')} under {MIN_OCCUPANCY:.0%} occupancy on "
                     f"sm_{OCCUPANCY_CC[0]}{OCCUPANCY_CC[1]}, "
                     f"{count(lambda r: verdicts[id(r)]['stale'])} against a stale KNOWN_OFFENDERS entry")
        known = count(lambda r: verdicts[id(r)]["known"])
        if known:
            parts.append(f"{known} known offenders (KNOWN)")
        local = count(lambda r: r.local_bytes)
        if local:
            parts.append(f"{local} with local memory (reported, not a failure)")
        if self.aliases:
            parts.append(f"{len(self.aliases)} registrations identical to a checked build")
        if self.import_errors:
            parts.append(f"{len(self.import_errors)} modules failed to import")
        return "; ".join(parts) + ("; OK" if self.ok else "; FAILED")

    def as_dict(self) -> dict:
        return {"ok": self.ok, "summary": self.summary(), "seconds": self.seconds, "kernels": self.kernels,
                "targets": [f"sm_{a}{b}" for a, b in self.ccs],
                "import_errors": self.import_errors, "aliases": self.aliases, "rows": [r.as_dict() for r in self.rows]}


# ---- collecting the kernels ------------------------------------------------------------------------------------------
def import_all() -> dict[str, str]:
    """Import every module of gpunn (but gpunn.__main__), so that all kernels are registered.
    Returns {module: error} for the modules that failed to import (they are reported, not raised)."""
    errors = {}

    def _import(name):
        try:
            return importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - a half-written op module must not hide the others
            errors[name] = _one_line(exc)
            return None

    package = _import("gpunn")
    if package is not None:
        for info in pkgutil.walk_packages(package.__path__, prefix="gpunn.",
                                          onerror=lambda name: errors.setdefault(name, "package failed to import")):
            if info.name not in SKIP_MODULES:
                _import(info.name)
    return errors


def collect(pattern: str | None = None):
    """(specs, import_errors, aliases): the registered kernels, each distinct build once, optionally filtered by
    ``pattern`` (a substring, such as a whole name ``relu_forward[float32]``, or a glob when it contains * ? [).
    ``aliases`` maps the name of a registration that is the very same build as an earlier one (same dispatcher, same
    signature: e.g. a kernel registered once per target dtype that does not read the targets) to the name that is
    checked for it."""
    errors = import_all()
    from ._registry import KERNELS

    specs = list(KERNELS)
    if pattern:
        glob = any(c in pattern for c in "*?[")
        specs = [s for s in specs if pattern in s.name or (glob and fnmatchcase(s.name, pattern))]
    first, unique, aliases, keep = {}, [], {}, []
    for spec in specs:
        try:
            kernel = spec.build()  # runs a factory only; it compiles nothing
            keep.append(kernel)  # held, so that id() is not reused by a later build
            key = (id(kernel), spec.signature)
        except Exception:  # noqa: BLE001 - reported when the spec is checked
            key = (spec.name, spec.signature)
        if key in first:
            aliases[spec.name] = first[key]
            continue
        first[key] = spec.name
        unique.append(spec)
    return unique, errors, aliases


# ---- compiling ---------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _target_device(cc):
    """Pretend the current device has compute capability ``cc`` while compiling.

    Why: ``compile_ptx(cc=...)`` compiles the kernel itself for ``cc``, but a ``@cuda.jit(device=True)`` function
    that the kernel calls (gpunn._reduce.block_partial_fn) is compiled through its own dispatcher, which asks
    ``get_current_device().compute_capability``; with no GPU (and no driver) that raises CudaSupportError. Here,
    and only for the duration of one compile, ``numba.cuda.dispatcher.get_current_device`` returns an object with the
    target's compute capability; it is restored afterwards. (A device function's compiled overload is cached by
    signature, so at the second target it is reused; its IR is retargeted when the kernel's PTX is generated.)
    """
    from numba.cuda import dispatcher

    class _Device:
        compute_capability = tuple(cc)

    saved = dispatcher.get_current_device
    dispatcher.get_current_device = lambda: _Device()
    try:
        yield
    finally:
        dispatcher.get_current_device = saved


def compile_ptx(kernel, signature, cc) -> str:
    """The PTX of ``kernel`` (a ``cuda.jit`` dispatcher) for ``signature`` at compute capability ``cc``, with the
    dispatcher's own options (fastmath, lineinfo, launch bounds)."""
    from numba import cuda

    if cuda.compile_ptx is None:
        raise ToolchainError("the CUDA simulator is on (NUMBA_ENABLE_CUDASIM=1): the build check needs the real CUDA "
                             "target; run it with NUMBA_ENABLE_CUDASIM=0")
    options = getattr(kernel, "targetoptions", {})
    kwargs = {k: options[k] for k in ("fastmath", "lineinfo", "debug", "opt", "launch_bounds") if k in options}
    py_func = getattr(kernel, "py_func", kernel)
    with _target_device(cc):
        ptx, _ = cuda.compile_ptx(py_func, signature, cc=tuple(cc), **kwargs)
    return ptx


def link(ptx: str, cc, options=()) -> tuple[str, bytes]:
    """Assemble and link ``ptx`` to SASS for sm_<cc> with nvJitLink; returns the info log (``-verbose``) and the
    cubin. ``options``: more nvJitLink options, e.g. ``["-maxrregcount=32"]``."""
    try:
        from cuda.bindings import nvjitlink
    except ImportError as exc:
        raise ToolchainError(f"nvJitLink Python bindings not importable ({_one_line(exc)}); "
                             "install numba-cuda[cu13] (cuda-bindings, nvidia-nvjitlink)") from exc
    options = [f"-arch=sm_{cc[0]}{cc[1]}", "-verbose", *options]
    try:
        handle = nvjitlink.create(len(options), options)
    except nvjitlink.nvJitLinkError:
        raise
    except Exception as exc:  # the shared library is loaded lazily, at the first call
        raise ToolchainError(f"nvJitLink library not usable ({_one_line(exc)}); "
                             "install numba-cuda[cu13] (nvidia-nvjitlink)") from exc
    try:
        data = ptx.encode()
        try:
            nvjitlink.add_data(handle, nvjitlink.InputType.PTX, data, len(data), "kernel.ptx")
            nvjitlink.complete(handle)
        except nvjitlink.nvJitLinkError as exc:
            raise RuntimeError(f"nvJitLink: {exc}: {_log(nvjitlink, handle, 'error').strip()}") from None
        log = _log(nvjitlink, handle, "info")
        cubin = bytearray(nvjitlink.get_linked_cubin_size(handle))
        if not cubin:
            raise RuntimeError("nvJitLink produced no cubin")
        nvjitlink.get_linked_cubin(handle, cubin)
        return log, bytes(cubin)
    finally:
        nvjitlink.destroy(handle)


def _log(nvjitlink, handle, kind):
    size = getattr(nvjitlink, f"get_{kind}_log_size")(handle)
    buf = bytearray(size)
    if size:
        getattr(nvjitlink, f"get_{kind}_log")(handle, buf)
    return bytes(buf).rstrip(b"\0").decode(errors="replace")


# ---- reading the results -----------------------------------------------------------------------------------------
_SPILL = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_PTXAS_REGS = re.compile(r"ptxas info\s*: Used (\d+) registers")
_LINKED = re.compile(r"^info\s*: used (\d+) registers.*?(\d+) stack.*?(\d+) bytes lmem", re.M)
_LINKED_SMEM = re.compile(r"^info\s*: used \d+ registers.*?(\d+) bytes smem", re.M)
_PTXAS_SMEM = re.compile(r"ptxas info\s*: Used \d+ registers.*?(\d+) bytes smem")


def parse_log(log: str) -> dict:
    """Registers, shared memory, spills and local memory from nvJitLink's ``-verbose`` info log.

    The log holds ptxas' report (``Used N registers``, and per function ``S bytes stack frame, A bytes spill stores,
    B bytes spill loads``) and then the linker's report of the final cubin (``used N registers, ..., K stack,
    M bytes smem, ..., L bytes lmem``). Registers and shared memory come from the final cubin when it is reported
    (ptxas' otherwise; ptxas names smem only when there is some); spills are summed over every function (a
    non-inlined device function spills too); local memory is the largest of the stack frames and lmem."""
    spills = _SPILL.findall(log)
    linked = _LINKED.findall(log)
    ptxas_regs = [int(r) for r in _PTXAS_REGS.findall(log)]
    if not spills and not linked:
        raise RuntimeError("no resource report in the nvJitLink log")
    registers = max(int(r) for r, _, _ in linked) if linked else (max(ptxas_regs) if ptxas_regs else None)
    local = [int(s) for s, _, _ in spills] + [int(s) for _, s, _ in linked] + [int(m) for _, _, m in linked]
    shared = [int(b) for b in (_LINKED_SMEM.findall(log) if linked else _PTXAS_SMEM.findall(log))]
    return {
        "registers": registers,
        "shared_bytes": max(shared, default=0),
        "spill_stores": sum(int(st) for _, st, _ in spills),
        "spill_loads": sum(int(ld) for _, _, ld in spills),
        "local_bytes": max(local, default=0),
    }


# Data movement is not arithmetic: a float64 *argument* may be loaded, moved and narrowed (cvt from f64) without the
# kernel computing in float64. Everything else with an f64 type (add/sub/mul/fma/div/sqrt/setp/selp/min/max/neg/abs/
# rcp/atom, and cvt *to* f64: a promotion) is float64 arithmetic.
_MOVES = {"ld", "st", "mov", "ldu", "prefetch"}


def f64_instructions(ptx: str) -> list[str]:
    """The distinct float64 arithmetic opcodes in ``ptx`` (e.g. ``["cvt.f64.f32", "mul.f64"]``).

    Decided by instructions, never by names: only the opcode (the first token after an optional ``@%p`` predicate)
    is read, so registers named ``%f64`` (float32 register number 64) or ``%fd3``, and ``.reg .f64`` declarations
    (directives), do not count."""
    found = set()
    for line in ptx.splitlines():
        code = line.split("//", 1)[0].strip()
        if not code or code.startswith((".", "}", "{", "$")) or code.endswith(":"):
            continue  # directives, braces, labels, comments
        if code.startswith("@"):
            code = code.split(None, 1)[1] if " " in code or "\t" in code else ""
        opcode = code.split(None, 1)[0].rstrip(";") if code else ""
        parts = opcode.split(".")
        if "f64" not in parts[1:]:
            continue
        if parts[0] in _MOVES:
            continue
        if parts[0] == "cvt":
            types = [p for p in parts[1:] if re.fullmatch(r"[fsub]\d+|bf16|f16x2|tf32", p)]
            if types and types[0] != "f64":  # cvt.<dst>.<src>: narrowing an f64 value is data movement
                continue
        found.add(opcode)
    return sorted(found)


def check_spec(spec, cc) -> Row:
    """Compile, link and read the resources of one kernel at ``cc`` (its SASS is read later, in a batch:
    :func:`add_sass`)."""
    single = spec.dtype != "float64"  # float32 math: float32, float16 and bfloat16 kernels
    row = Row(spec.name, tuple(cc), spec.dtype, f64_accumulator=spec.f64_accumulator and single,
              vector_loads=spec.vector_loads)
    start = time.perf_counter()
    try:
        kernel = spec.build()
        ptx = compile_ptx(kernel, spec.signature, cc)
        max_registers = getattr(kernel, "targetoptions", {}).get("max_registers")  # as the driver would apply it
        options = [f"-maxrregcount={max_registers}"] if max_registers else []
        log, row.cubin = link(ptx, cc, options)
        row.__dict__.update(parse_log(log))
        row.entry = _sass.entry_name(ptx)
        add_occupancy(row)
        if single:
            row.f64_instructions = tuple(f64_instructions(ptx))  # listed for accumulators too, for the reader
            row.f64_ok = None if spec.f64_accumulator else not row.f64_instructions
    except ToolchainError:
        raise
    except Exception as exc:  # noqa: BLE001 - one kernel's failure is a row, not the end of the check
        if _is_toolchain_error(exc):
            raise ToolchainError(f"NVVM not usable ({_one_line(exc)}); install numba-cuda[cu13] (nvidia-nvvm)") \
                from exc
        row.error = _one_line(exc)
        row.traceback = traceback.format_exc()
    row.seconds = time.perf_counter() - start
    return row


def add_occupancy(row) -> None:
    """The row's theoretical blocks per SM and occupancy from its registers and shared memory (gpunn/_sass.py)."""
    found = _sass.occupancy(row.cc, row.registers, row.shared_bytes, row.block) if row.registers else None
    if found is not None:
        row.blocks_per_sm, row.occupancy, row.occupancy_limit = found.blocks, found.fraction, found.limit


def _is_toolchain_error(exc) -> bool:
    from numba.cuda.cudadrv.error import NvvmSupportError

    return isinstance(exc, NvvmSupportError)


def check_toolchain(cc=(8, 0)) -> None:
    """Compile and link a trivial kernel; raises :class:`ToolchainError` with one line when that is impossible."""
    from numba import config

    if config.ENABLE_CUDASIM:
        raise ToolchainError("the CUDA simulator is on (NUMBA_ENABLE_CUDASIM=1): the build check needs the real CUDA "
                             "target; run it with NUMBA_ENABLE_CUDASIM=0")
    from numba import cuda

    def _probe(x):
        x[0] = 1.0

    try:
        ptx = compile_ptx(cuda.jit(_probe), "void(float32[::1])", cc)
    except ToolchainError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise ToolchainError(f"NVVM not usable, cannot compile PTX ({_one_line(exc)}); "
                             "install numba-cuda[cu13] (nvidia-nvvm)") from exc
    try:
        link(ptx, cc)
    except ToolchainError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise ToolchainError(f"nvJitLink not usable, cannot link PTX ({_one_line(exc)})") from exc
    try:
        _sass.tool("nvdisasm")
    except _sass.ToolMissing as exc:
        raise ToolchainError(str(exc)) from exc


def home_module(kernel) -> str:
    """The op module a kernel belongs to: its function's module, or, for a kernel made by shared machinery
    (``gpunn._elementwise`` builds every elementwise op's kernel around the op's scalar function), the module of the
    first function it closes over that lives outside the machinery."""
    py_func = getattr(kernel, "py_func", kernel)
    module = getattr(py_func, "__module__", None) or "?"
    if module.rsplit(".", 1)[-1].startswith("_"):
        for cell in getattr(py_func, "__closure__", None) or ():
            try:
                inner = getattr(cell.cell_contents, "py_func", cell.cell_contents)
            except ValueError:  # an empty cell
                continue
            inner_module = getattr(inner, "__module__", None) if callable(inner) else None
            if inner_module and inner_module.startswith("gpunn.") and \
                    not inner_module.rsplit(".", 1)[-1].startswith("_"):
                return inner_module
    return module


def quick_subset(specs):
    """One kernel per op module (its first float32 kernel, else its first): a fast smoke check that still reaches
    every op module, for the test suite and ``gpunn kernels --quick``."""
    chosen = {}
    for spec in specs:
        try:
            module = home_module(spec.build())
        except Exception:  # noqa: BLE001 - a spec that does not build is kept: its failure is the point
            module = spec.name
        best = chosen.get(module)
        if best is None or (best.dtype != "float32" and spec.dtype == "float32"):
            chosen[module] = spec
    keep = {id(s) for s in chosen.values()}
    return [s for s in specs if id(s) in keep]


HALF_DTYPES = ("float16", "bfloat16")


def half_sample(specs):
    """Every float32 and float64 kernel, and of the float16/bfloat16 kernels one per op module and dtype. A half
    kernel is its float32 twin's math between 16-bit loads and stores, and NVVM takes about 4x longer on it (about
    6 s a build on one core), so the test suite's full check builds this sample (``gpunn kernels --half-sample``);
    ``gpunn kernels`` without it builds every half kernel too."""
    seen, out = set(), []
    for spec in specs:
        if spec.dtype in HALF_DTYPES:
            try:
                key = (home_module(spec.build()), spec.dtype)
            except Exception:  # noqa: BLE001 - a spec that does not build is kept: its failure is the point
                key = (spec.name, spec.dtype)
            if key in seen:
                continue
            seen.add(key)
        out.append(spec)
    return out


_WORK = None  # (specs, ccs) for the worker processes, inherited through fork


def _check_index(index):
    specs, ccs = _WORK
    return [check_spec(specs[index], cc) for cc in ccs]


def _report_progress(progress, rows):
    if progress is not None:
        for row in rows:
            progress(row)


def add_sass(rows, keep_text=False) -> None:
    """Read the SASS of every linked row: one nvdisasm run per target for all of its rows (the targets' runs side
    by side), then the counts and the main loop of each (gpunn/_sass.py). With ``keep_text`` each row keeps its
    cubin and its disassembly (``sass_text``) for :func:`write_files`; otherwise the cubin is dropped. Targets
    older than nvdisasm reads (gpunn/_sass.py FIRST_CC) get no SASS counts and no SASS rule."""
    by_cc = {}
    for row in rows:
        if row.cubin is not None and row.cc >= _sass.FIRST_CC:
            by_cc.setdefault(row.cc, []).append(row)
    with concurrent.futures.ThreadPoolExecutor(max(1, len(by_cc))) as pool:
        for future in [pool.submit(_add_sass_at, cc, cc_rows, keep_text) for cc, cc_rows in by_cc.items()]:
            future.result()
    if not keep_text:
        for row in rows:
            row.cubin = None


def _add_sass_at(cc, rows, keep_text):
    codes, layout = [], []  # every row's functions laid end to end; layout: (index of its first, its names)
    for row in rows:
        functions = _sass.functions(row.cubin)
        names = [row.entry] + sorted(set(functions) - {row.entry})  # the kernel, then what it calls
        layout.append((len(codes), names))
        codes += [functions[name] for name in names]
    try:
        disassembled = _sass.disassemble(codes, cc)
    except _sass.ToolMissing as exc:
        raise ToolchainError(str(exc)) from exc
    except (RuntimeError, ValueError) as exc:
        for row in rows:
            row.error = f"SASS not readable: {_one_line(exc)}"
        return
    for row, (first, names) in zip(rows, layout):
        parts = disassembled[first:first + len(names)]
        row.sass = _sass.analyse(parts[0], parts[1:]).as_dict()
        if keep_text:
            row.sass_text = "".join(f"\t\tFunction : {name}\n" + "".join(i.text() + "\n" for i in part)
                                    for name, part in zip(names, parts))


def run(ccs=DEFAULT_CCS, pattern: str | None = None, specs=None, progress=None, jobs: int = 1,
        quick: bool = False, keep_sass: bool = False, offenders=KNOWN_OFFENDERS, half_sample_only: bool = False
        ) -> Report:
    """Check every registered kernel (or ``specs``) at each compute capability in ``ccs``, in ``jobs`` processes
    (forked; each compiles whole kernels, all targets), then read their SASS (:func:`add_sass`; ``keep_sass``: keep
    the cubins and SASS text for :func:`write_files`) and judge the SASS rules against ``offenders``. Raises
    :class:`ToolchainError` when NVVM, nvJitLink or nvdisasm is missing; every other failure is a row of the
    report."""
    global _WORK
    start = time.perf_counter()
    ccs = [tuple(cc) for cc in ccs]
    check_toolchain(ccs[0])
    errors, aliases = {}, {}
    if specs is None:
        specs, errors, aliases = collect(pattern)
    if quick:
        specs = quick_subset(specs)
    elif half_sample_only:
        specs = half_sample(specs)
    rows = []
    _WORK = (specs, ccs)
    try:
        if jobs > 1 and len(specs) > 1 and "fork" in multiprocessing.get_all_start_methods():  # else sequential
            with multiprocessing.get_context("fork").Pool(min(jobs, len(specs))) as pool:
                results = pool.imap(_check_index, range(len(specs)))  # in registry order
                for spec_rows in results:
                    rows += spec_rows
                    _report_progress(progress, spec_rows)
        else:
            for index in range(len(specs)):
                rows += _check_index(index)
                _report_progress(progress, rows[-len(ccs):])
    finally:
        _WORK = None
    add_sass(rows, keep_sass)
    for row in rows:
        row.offenders = offenders_of(row.name, offenders)
    return Report(rows, errors, len(specs), time.perf_counter() - start, tuple(ccs), aliases)


# ---- writing the cubins ------------------------------------------------------------------------------------------
def file_stem(row) -> str:
    """``relu_forward[float32]`` at sm_90 -> ``relu_forward.float32.sm_90``: a file name for the build."""
    stem = row.name.replace("][", ".").replace("[", ".").replace("]", "")
    return re.sub(r"[^A-Za-z0-9_.,-]", "_", stem) + f".sm_{row.cc[0]}{row.cc[1]}"


def write_files(report: Report, directory: str) -> int:
    """Write each build's cubin (``<stem>.cubin``, as nvJitLink linked it) and SASS (``<stem>.sass``, the
    disassembly the counts come from) into ``directory``, and the report as ``report.json``. The report must come
    from ``run(keep_sass=True)``. Returns the number of builds written. Anyone can check a count against the cubin:
    ``nvdisasm -c <stem>.cubin`` or ``cuobjdump -sass <stem>.cubin``."""
    os.makedirs(directory, exist_ok=True)
    written = 0
    for row in report.rows:
        if row.cubin is None:
            continue
        stem = os.path.join(directory, file_stem(row))
        with open(stem + ".cubin", "wb") as f:
            f.write(row.cubin)
        with open(stem + ".sass", "w") as f:
            f.write(row.sass_text or "")
        written += 1
    with open(os.path.join(directory, "report.json"), "w") as f:
        json.dump(report.as_dict(), f, indent=2)
    return written


# ---- printing ----------------------------------------------------------------------------------------------------
TABLE_HEADER = ("kernel", "target", "regs", "smem", "blocks", "occ", "LDG 128/64/32", "STG 128/64/32", "f64",
                "loop", "spill st/ld", "local", "f64 ptx", "status")
LEFT = ("kernel", "target", "f64 ptx", "status")


def format_table(report: Report) -> str:
    """The report as a text table, one line per build:

    regs (per thread), smem (static shared bytes per block), blocks (per SM at 256 threads), occ (theoretical
    occupancy); LDG/STG: global loads and stores in the SASS, 128-, 64- and 32-bit (narrower ones only in --json);
    f64: float64 instructions in the SASS; loop: instructions in the main loop (- when none); spill st/ld and local
    (bytes); f64 ptx: ok (float32 kernel, no float64 instruction), F64 (float32 kernel with float64 math: failing),
    acc (a float64 accumulator by design), - (a float64 kernel); status: ok, KNOWN (a listed known offender, see
    KNOWN_OFFENDERS) or why it fails."""
    lines = [_table_line(r) for r in report.rows]
    widths = [max([len(h)] + [len(line[i]) for line in lines]) for i, h in enumerate(TABLE_HEADER)]
    fmt = lambda cells: "  ".join(c.ljust(w) if h in LEFT else c.rjust(w)  # noqa: E731
                                  for h, c, w in zip(TABLE_HEADER, cells, widths)).rstrip()
    out = [fmt(TABLE_HEADER), fmt(["-" * w for w in widths])] + [fmt(line) for line in lines]
    for module, error in report.import_errors.items():
        out.append(f"import error: {module}: {error}")
    out.append(report.summary())
    return "\n".join(out)


def _table_line(r: Row) -> tuple[str, ...]:
    f64 = ("acc" if r.f64_accumulator else "-") if r.f64_ok is None else ("ok" if r.f64_ok else "F64")
    sass = r.sass or {}
    loop = sass.get("main_loop")
    return (r.name, f"sm_{r.cc[0]}{r.cc[1]}", _n(r.registers), _n(r.shared_bytes), _n(r.blocks_per_sm),
            "-" if r.occupancy is None else f"{r.occupancy:.1%}", _widths(sass.get("loads")),
            _widths(sass.get("stores")), _n(sass.get("f64")), "-" if loop is None else str(loop["instructions"]),
            "-" if r.spill_stores is None else f"{r.spill_stores}/{r.spill_loads}", _n(r.local_bytes), f64,
            _status(r))


def _widths(by_width) -> str:
    if by_width is None:
        return "-"
    return "/".join(str(by_width.get(bits, 0)) for bits in ("128", "64", "32"))


def _status(r: Row) -> str:
    parts = r.problems + (["KNOWN: " + "; ".join(r.known)] if r.known else [])
    return "; ".join(parts) if parts else "ok"


def _n(value):
    return "-" if value is None else str(value)


def _one_line(exc) -> str:
    text = " ".join(str(exc).split())
    text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def parse_cc(text) -> tuple[int, int]:
    """'80', '8.0', 'sm_80', '90' -> (8, 0), (9, 0)."""
    s = str(text).lower().removeprefix("sm_").replace(".", "")
    if not s.isdigit() or len(s) < 2:
        raise ValueError(f"cc must look like 80, 8.0 or sm_80, got {text!r}")
    return int(s[:-1]), int(s[-1])
