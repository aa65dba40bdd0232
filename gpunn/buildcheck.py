r"""The kernel build check: every registered CUDA kernel compiles for real GPUs, without a GPU.

For each :class:`gpunn._registry.KernelSpec` and each target compute capability (sm_80 and sm_90 by default):

1. ``numba.cuda.compile_ptx(kernel, signature, cc=...)`` turns the kernel into PTX (NVVM, no driver needed);
2. nvJitLink (``cuda.bindings.nvjitlink``, ``-arch=sm_XX -verbose``) assembles and links that PTX to SASS, and its
   info log gives the registers, the spill stores/loads and the local memory (stack frame, ``lmem``);
3. the PTX of a float32 kernel (``dtype`` float32, float16 or bfloat16: their math is float32; not
   ``f64_accumulator``) is scanned for float64
   instructions: a stray Python float literal (``x * 0.1``) silently promotes float32 math to float64, which runs
   at 1/64 of the float32 rate on consumer GPUs (1/2 on A100/H100, plus two conversions per value) and is invisible
   in the simulator. Accumulator kernels (``f64_accumulator=True``) are exempt; their float64 opcodes are listed.

A kernel passes when it compiles and links, spills 0 bytes, and (float32 kernels) has no float64 instruction.
Local memory is reported but does not fail a kernel by itself (``cuda.local.array`` legitimately lives there).

The check needs the real CUDA target (``NUMBA_ENABLE_CUDASIM`` unset or 0); ``gpunn kernels`` re-runs itself in a
subprocess with the simulator off when it is on. Kernels are picked up from the registry: every module under
``gpunn`` (activations, losses, optim, app, ...) is imported first, so a new op module is checked with no change here.

Example (prints the table; exit status 1 on any failure)::

    python -m gpunn kernels --cc 80 90
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import multiprocessing
import pkgutil
import re
import time
import traceback
from fnmatch import fnmatchcase

DEFAULT_CCS = ((8, 0), (9, 0))

# Modules register their kernels when imported, so every module of the package is imported (pkgutil): the op
# packages (activations, losses, optim), the machinery (_elementwise, _reduce, _copy) and anything added later
# (gpunn/app/linear.py registers its layer kernels); a new module is checked as soon as it exists.
# Not imported: gpunn.__main__ (it runs the command line).
SKIP_MODULES = ("gpunn.__main__",)


class ToolchainError(RuntimeError):
    """NVVM (compile_ptx) or nvJitLink is missing or unusable: the check cannot run at all."""


@dataclasses.dataclass
class Row:
    """The result for one kernel at one compute capability."""

    name: str
    cc: tuple[int, int]
    registers: int | None = None       # per thread, from nvJitLink's report of the linked SASS
    spill_stores: int | None = None    # bytes, summed over the kernel and any non-inlined device function
    spill_loads: int | None = None     # bytes
    local_bytes: int | None = None     # bytes of local memory per thread (max of ptxas stack frame and linked lmem)
    f64_ok: bool | None = None         # None: not checked (float64 kernel, or a float64 accumulator on purpose)
    f64_instructions: tuple[str, ...] = ()  # float64 opcodes of a float32 kernel, e.g. ("cvt.f64.f32", "mul.f64")
    f64_accumulator: bool = False      # a float32 kernel registered as accumulating in float64 on purpose
    error: str | None = None           # compile/link failure, one line
    seconds: float = 0.0
    traceback: str | None = dataclasses.field(default=None, repr=False)  # of the failure, for --verbose

    @property
    def ok(self) -> bool:
        return self.error is None and self.spill_stores == 0 and self.spill_loads == 0 and self.f64_ok is not False

    @property
    def problems(self) -> list[str]:
        out = []
        if self.error is not None:
            out.append(f"failed: {self.error}")
        if self.spill_stores or self.spill_loads:
            out.append(f"spills {self.spill_stores} B stores / {self.spill_loads} B loads")
        if self.f64_ok is False:
            out.append("float64 in a float32 kernel: " + ", ".join(self.f64_instructions))
        return out

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["cc"] = f"sm_{self.cc[0]}{self.cc[1]}"
        d["f64_instructions"] = list(self.f64_instructions)
        d["ok"] = self.ok
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
        n_fail = len(self.failures)
        parts = [f"{self.kernels} kernels x {len(ccs)} targets "
                 f"({', '.join(f'sm_{a}{b}' for a, b in ccs)}) = {len(self.rows)} builds in {self.seconds:.1f} s"]
        spills = sum(1 for r in self.rows if r.spill_stores or r.spill_loads)
        f64 = sum(1 for r in self.rows if r.f64_ok is False)
        errors = sum(1 for r in self.rows if r.error is not None)
        local = sum(1 for r in self.rows if r.local_bytes)
        parts.append(f"{n_fail} failing: {errors} not compiled, {spills} spilling, {f64} with float64 in float32")
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
    """(specs, import_errors, aliases): the registered kernels, each distinct build once,
    optionally filtered by ``pattern`` (a substring, or a glob when it contains * ? [). ``aliases`` maps the name of
    a registration that is the very same build as an earlier one (same dispatcher, same signature: e.g. a kernel
    registered once per target dtype that does not read the targets) to the name that is checked for it."""
    errors = import_all()
    from ._registry import KERNELS

    specs = list(KERNELS)
    if pattern:
        glob = any(c in pattern for c in "*?[")
        specs = [s for s in specs if (fnmatchcase(s.name, pattern) if glob else pattern in s.name)]
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


def link(ptx: str, cc, options=()) -> str:
    """Assemble and link ``ptx`` to SASS for sm_<cc> with nvJitLink; returns the info log (``-verbose``).
    ``options``: more nvJitLink options, e.g. ``["-maxrregcount=32"]``."""
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
        if not nvjitlink.get_linked_cubin_size(handle):
            raise RuntimeError("nvJitLink produced no cubin")
        return log
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


def parse_log(log: str) -> dict:
    """Registers, spills and local memory from nvJitLink's ``-verbose`` info log.

    The log holds ptxas' report (``Used N registers``, and per function ``S bytes stack frame, A bytes spill stores,
    B bytes spill loads``) and then the linker's report of the final cubin (``used N registers, ..., K stack, ...,
    L bytes lmem``). Registers come from the final cubin when it is reported (ptxas' count otherwise); spills are
    summed over every function (a non-inlined device function spills too); local memory is the largest of the
    stack frames and lmem."""
    spills = _SPILL.findall(log)
    linked = _LINKED.findall(log)
    ptxas_regs = [int(r) for r in _PTXAS_REGS.findall(log)]
    if not spills and not linked:
        raise RuntimeError("no resource report in the nvJitLink log")
    registers = max(int(r) for r, _, _ in linked) if linked else (max(ptxas_regs) if ptxas_regs else None)
    local = [int(s) for s, _, _ in spills] + [int(s) for _, s, _ in linked] + [int(m) for _, _, m in linked]
    return {
        "registers": registers,
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
    single = spec.dtype != "float64"  # float32 math: float32, float16 and bfloat16 kernels
    row = Row(spec.name, tuple(cc), f64_accumulator=spec.f64_accumulator and single)
    start = time.perf_counter()
    try:
        kernel = spec.build()
        ptx = compile_ptx(kernel, spec.signature, cc)
        max_registers = getattr(kernel, "targetoptions", {}).get("max_registers")  # as the driver would apply it
        options = [f"-maxrregcount={max_registers}"] if max_registers else []
        row.__dict__.update(parse_log(link(ptx, cc, options)))
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


_WORK = None  # (specs, ccs) for the worker processes, inherited through fork


def _check_index(index):
    specs, ccs = _WORK
    return [check_spec(specs[index], cc) for cc in ccs]


def _report_progress(progress, rows):
    if progress is not None:
        for row in rows:
            progress(row)


def run(ccs=DEFAULT_CCS, pattern: str | None = None, specs=None, progress=None, jobs: int = 1,
        quick: bool = False) -> Report:
    """Check every registered kernel (or ``specs``) at each compute capability in ``ccs``, in ``jobs`` processes
    (forked; each compiles whole kernels, all targets). Raises :class:`ToolchainError` when NVVM or nvJitLink is
    missing; every other failure is a row of the report."""
    global _WORK
    start = time.perf_counter()
    ccs = [tuple(cc) for cc in ccs]
    check_toolchain(ccs[0])
    errors, aliases = {}, {}
    if specs is None:
        specs, errors, aliases = collect(pattern)
    if quick:
        specs = quick_subset(specs)
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
    return Report(rows, errors, len(specs), time.perf_counter() - start, tuple(ccs), aliases)


# ---- printing ----------------------------------------------------------------------------------------------------
def format_table(report: Report) -> str:
    """The report as a text table. Column f64: ok (float32 kernel, no float64 instruction), F64 (float32 kernel with
    float64 math: failing), acc (a float64 accumulator by design), - (a float64 kernel)."""
    header = ("kernel", "target", "regs", "spill st", "spill ld", "local", "f64", "status")
    lines = []
    for r in report.rows:
        f64 = ("acc" if r.f64_accumulator else "-") if r.f64_ok is None else ("ok" if r.f64_ok else "F64")
        status = "ok" if r.ok else "; ".join(r.problems)
        lines.append((r.name, f"sm_{r.cc[0]}{r.cc[1]}", _n(r.registers), _n(r.spill_stores), _n(r.spill_loads),
                      _n(r.local_bytes), f64, status))
    widths = [max(len(h), *(len(line[i]) for line in lines)) if lines else len(h) for i, h in enumerate(header)]
    fmt = lambda cells: "  ".join(c.ljust(w) if i in (0, 1, 6, 7) else c.rjust(w)  # noqa: E731
                                  for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
    out = [fmt(header), fmt(["-" * w for w in widths])] + [fmt(line) for line in lines]
    for module, error in report.import_errors.items():
        out.append(f"import error: {module}: {error}")
    out.append(report.summary())
    return "\n".join(out)


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
