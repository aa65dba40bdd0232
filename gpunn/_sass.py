"""What a GPU will execute: the SASS of a linked cubin, read without a GPU.

Used by the kernel build check (gpunn/buildcheck.py, ``gpunn kernels``). From each kernel's cubin (nvJitLink's
output):

* :func:`functions` takes the machine code of every function out of the cubin (its ``.text.<name>`` ELF sections);
* :func:`disassemble` turns the code of many kernels into instructions with one ``nvdisasm -b SM<xy>`` run (the
  disassembler's start-up costs about a second, each kernel some 50 milliseconds, so kernels are disassembled in
  batches, not one nvdisasm per cubin);
* :func:`analyse` counts what decides speed: global loads and stores by width, float64 instructions, local-memory
  accesses, and the *main loop*;
* :func:`occupancy` gives the theoretical blocks per SM and occupancy from registers and shared memory.

The main loop. A loop is the address range from a backward branch's target to the branch (``BRA`` whose target is
before it; several branches back to one target make one loop, to the furthest). A loop's *own* instructions
are those in its range and in no loop nested inside it. The main loop is the loop whose own instructions hold the
most 128-bit global loads; if no loop has one, the most global loads of any width; then the most global stores;
ties go to the shorter loop. A kernel whose loops touch no global memory has no main loop. Its instruction count
is its own instructions: one iteration's work (both sides of a branch inside it included; calls not followed). So
the main loop is in effect the innermost loop that moves the data: a loop nested inside another keeps its
instructions to itself, and an outer loop wins only when it loads more than any loop inside it (a grid-stride loop
around a per-row loop, say, is not counted for the row loop's work).

nvdisasm reads SM75 and later (:data:`FIRST_CC`); older targets get no SASS counts.
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
import os
import re
import shutil
import struct
import subprocess
import tempfile


class ToolMissing(RuntimeError):
    """nvdisasm cannot be found."""


INSTALL = "pip install nvidia-cuda-nvdisasm (the test extra has it)"


@functools.lru_cache(maxsize=None)
def tool(name: str = "nvdisasm") -> str:
    """The path of the CUDA binary utility ``name``: NVIDIA's pip wheel first (found by cuda.pathfinder), then the
    PATH."""
    path = None
    try:
        from cuda.pathfinder import find_nvidia_binary_utility

        path = find_nvidia_binary_utility(name)
    except Exception:  # noqa: BLE001 - an old cuda-pathfinder, or none: the PATH still counts
        path = None
    path = path or shutil.which(name)
    if not path:
        raise ToolMissing(f"{name} not found; {INSTALL}")
    return path


def _run(argv) -> str:
    result = subprocess.run(argv, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{os.path.basename(argv[0])} failed: {' '.join(result.stderr.split())[:300]}")
    return result.stdout


# ---- the cubin -------------------------------------------------------------------------------------------------------
def functions(cubin: bytes) -> dict[str, bytes]:
    """{function name: machine code} of every function in ``cubin`` (a 64-bit little-endian ELF)."""
    if cubin[:4] != b"\x7fELF" or cubin[4] != 2:
        raise ValueError("not a 64-bit ELF cubin")
    shoff = struct.unpack_from("<Q", cubin, 0x28)[0]
    entsize, count, names_index = struct.unpack_from("<HHH", cubin, 0x3A)
    headers = [struct.unpack_from("<IIQQQQ", cubin, shoff + i * entsize) for i in range(count)]
    names_offset = headers[names_index][4]
    out = {}
    for name_at, _, _, _, offset, size in headers:
        end = cubin.index(b"\0", names_offset + name_at)
        name = cubin[names_offset + name_at:end].decode()
        if name.startswith(".text."):
            out[name[len(".text."):]] = cubin[offset:offset + size]
    return out


_ENTRY = re.compile(r"\.entry\s+([\w$.]+)\s*\(")


def entry_name(ptx: str) -> str:
    """The kernel's name in ``ptx`` (its ``.entry``)."""
    match = _ENTRY.search(ptx)
    if match is None:
        raise ValueError("no .entry in the PTX")
    return match.group(1)


# ---- instructions ------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Instruction:
    address: int      # bytes from the start of its function
    predicate: str    # "@P0", "@!P1" or ""
    opcode: str       # "LDG.E.128"
    operands: str     # "R4, desc[UR4][R2.64]"

    @property
    def root(self) -> str:
        return self.opcode.split(".", 1)[0]

    def target(self) -> int | None:
        """A branch's target address (``BRA``), else None."""
        if self.root != "BRA":
            return None
        found = re.findall(r"0x([0-9a-f]+)", self.operands)
        return int(found[-1], 16) if found else None

    def text(self) -> str:
        body = f"{self.opcode} {self.operands}" if self.operands else self.opcode
        return f"        /*{self.address:04x}*/ {self.predicate:>18} {body} ;"


_LINE = re.compile(r"^\s*/\*([0-9a-f]+)\*/\s+(@!?U?P[T0-9]+\s+)?([A-Z][A-Z0-9_.]*)\s*(.*?)\s*;")
_CODE_ADDRESS_OPS = {"BRA", "BSSY", "CALL", "JMP", "BRX", "JMX", "SSY", "PBK", "PCNT"}  # operands that are code addresses


def parse(text: str) -> list[Instruction]:
    """Instructions from nvdisasm's (or ``cuobjdump -sass``') text, in order; other lines are skipped."""
    out = []
    for line in text.splitlines():
        match = _LINE.match(line)
        if match is not None:
            out.append(Instruction(int(match.group(1), 16), (match.group(2) or "").strip(), match.group(3),
                                   match.group(4)))
    return out


def rebase(instructions, base: int, size: int) -> list[Instruction]:
    """The instructions in [base, base + size), with their addresses, and the code addresses they name in that
    range, counted from ``base``."""
    end = base + size

    def shift(match):
        value = int(match.group(1), 16)
        return f"0x{value - base:x}" if base <= value < end else match.group(0)

    out = []
    for i in instructions:
        if not base <= i.address < end:
            continue
        operands = re.sub(r"0x([0-9a-f]+)", shift, i.operands) if i.root in _CODE_ADDRESS_OPS else i.operands
        out.append(Instruction(i.address - base, i.predicate, i.opcode, operands))
    return out


FIRST_CC = (7, 5)  # the oldest target nvdisasm 13 disassembles (-b SM75)


def arch(cc) -> str:
    return f"SM{cc[0]}{cc[1]}"


def disassemble(codes: list[bytes], cc) -> list[list[Instruction]]:
    """The instructions of each function's machine code in ``codes``, all disassembled by one nvdisasm run (the
    code laid end to end; every function's code is a whole number of 16-byte instructions)."""
    if not codes:
        return []
    offsets, total = [], 0
    for code in codes:
        if len(code) % 16:
            raise ValueError(f"machine code of {len(code)} bytes is not whole 16-byte instructions")
        offsets.append(total)
        total += len(code)
    with tempfile.TemporaryDirectory(prefix="gpunn-sass-") as tmp:
        path = os.path.join(tmp, "code.bin")
        with open(path, "wb") as f:
            f.write(b"".join(codes))
        # -ndf: no dataflow analysis, which is for branch-stack labels and assumes a whole cubin, not code laid end
        # to end
        text = _run([tool("nvdisasm"), "-ndf", "-b", arch(cc), path])
    instructions = parse(text)
    addresses = [i.address for i in instructions]
    out = []
    for offset, code in zip(offsets, codes):
        first, last = bisect.bisect_left(addresses, offset), bisect.bisect_left(addresses, offset + len(code))
        out.append(rebase(instructions[first:last], offset, len(code)))
    return out


# ---- what decides speed ------------------------------------------------------------------------------------------
F64_ARITHMETIC = {"DADD", "DMUL", "DFMA", "DSETP", "DSET", "DMNMX", "DMMA"}


def width(opcode: str) -> int:
    """Bits per access of a load or store opcode: ``LDG.E.128`` 128, ``LDG.E.64`` 64, ``LDG.E.U8`` 8, ``LDG.E`` 32."""
    parts = opcode.split(".")[1:]
    for part in parts:
        if part in ("64", "128", "256"):
            return int(part)
        if part in ("U8", "S8"):
            return 8
        if part in ("U16", "S16"):
            return 16
    return 32


def is_f64(instruction: Instruction) -> bool:
    """A float64 instruction: D* arithmetic (DADD, DMUL, DFMA, DSETP, ...), a conversion or rounding to or from F64
    (F2F.F64.F32, I2F.F64, F2I.F64, FRND.F64), or a float64 MUFU (RCP64H, RSQ64H)."""
    parts = instruction.opcode.split(".")
    if parts[0] in F64_ARITHMETIC or "F64" in parts[1:]:
        return True
    return parts[0] == "MUFU" and any(p.endswith("64H") for p in parts[1:])


@dataclasses.dataclass
class Counts:
    """Counts over a run of instructions (static: each instruction once, however often it runs)."""

    instructions: int = 0   # NOPs (alignment padding) not counted
    loads: dict = dataclasses.field(default_factory=dict)   # global loads (LDG) by width in bits: {128: 4, 32: 2}
    stores: dict = dataclasses.field(default_factory=dict)  # global stores (STG) by width
    f64: int = 0            # float64 instructions (:func:`is_f64`)
    local: int = 0          # local-memory accesses (LDL, STL): spills or local arrays
    generic: int = 0        # generic-address loads and stores (LD, ST): global memory reached without LDG/STG

    def add(self, instruction: Instruction):
        root = instruction.root
        if root == "NOP":
            return
        self.instructions += 1
        if root in ("LDG", "STG"):
            by_width = self.loads if root == "LDG" else self.stores
            bits = width(instruction.opcode)
            by_width[bits] = by_width.get(bits, 0) + 1
        elif root in ("LDL", "STL"):
            self.local += 1
        elif root in ("LD", "ST"):
            self.generic += 1
        if is_f64(instruction):
            self.f64 += 1

    def as_dict(self) -> dict:
        return {"instructions": self.instructions, "loads": {str(k): v for k, v in sorted(self.loads.items())},
                "stores": {str(k): v for k, v in sorted(self.stores.items())}, "f64": self.f64, "local": self.local,
                "generic": self.generic}


def count(instructions) -> Counts:
    counts = Counts()
    for instruction in instructions:
        counts.add(instruction)
    return counts


def loops(instructions) -> list[tuple[int, int]]:
    """(start, end) address ranges of the loops, by backward branch; several branches back to one start make one
    loop, to the furthest branch. A branch to itself (the idle loop after a function's last ``EXIT``) is no loop."""
    ends = {}
    for instruction in instructions:
        target = instruction.target()
        if target is not None and target < instruction.address:
            ends[target] = max(ends.get(target, -1), instruction.address)
    return sorted(ends.items())


def own_instructions(instructions, loop, all_loops):
    """The instructions of ``loop`` that are in no loop nested inside it."""
    start, end = loop
    inner = [(s, e) for s, e in all_loops if start <= s and e <= end and (s, e) != (start, end)]
    return [i for i in instructions
            if start <= i.address <= end and not any(s <= i.address <= e for s, e in inner)]


def main_loop(instructions):
    """((start, end), Counts of its own instructions) of the main loop (see the module docstring), or None."""
    found = loops(instructions)
    best, best_key = None, None
    for loop in found:
        own = count(own_instructions(instructions, loop, found))
        key = (own.loads.get(128, 0), sum(own.loads.values()), sum(own.stores.values()), -(loop[1] - loop[0]))
        if key[:3] == (0, 0, 0):
            continue
        if best_key is None or key > best_key:
            best, best_key = (loop, own), key
    return best


@dataclasses.dataclass
class Analysis:
    """What one kernel's SASS shows (the kernel and the functions it calls, counted together; the main loop is in
    the kernel itself)."""

    counts: Counts
    loop: tuple | None = None        # (start, end) addresses of the main loop
    loop_counts: Counts | None = None

    def as_dict(self) -> dict:
        return {**self.counts.as_dict(),
                "main_loop": None if self.loop is None else
                {"start": self.loop[0], "end": self.loop[1], **self.loop_counts.as_dict()}}


def analyse(kernel: list[Instruction], called=()) -> Analysis:
    """The counts of ``kernel``'s instructions and of the functions it calls (``called``: their instruction
    lists), and ``kernel``'s main loop."""
    counts = count(kernel)
    for instructions in called:
        for instruction in instructions:
            counts.add(instruction)
    found = main_loop(kernel)
    return Analysis(counts, *(found or (None, None)))


# ---- occupancy -------------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class SM:
    """What one streaming multiprocessor holds (the limits of CUDA's occupancy calculator)."""

    registers: int = 65536
    threads: int = 2048
    blocks: int = 32
    shared: int = 228 * 1024          # bytes, with the largest shared-memory carve-out
    reserved_shared: int = 1024       # bytes the runtime keeps per block (sm_80 and later)
    sub_partitions: int = 4           # registers are allocated per warp inside each of these


REGISTER_UNIT = 256   # registers are allocated to a warp in units of 256 (per thread: multiples of 8)
SHARED_UNIT = 128     # bytes: shared memory is allocated to a block in units of 128

SMS = {(7, 0): SM(shared=96 * 1024, reserved_shared=0),
       (7, 5): SM(threads=1024, blocks=16, shared=64 * 1024, reserved_shared=0),
       (8, 0): SM(shared=164 * 1024),
       (8, 6): SM(threads=1536, blocks=16, shared=100 * 1024),
       (8, 9): SM(threads=1536, blocks=24, shared=100 * 1024),
       (9, 0): SM()}


@dataclasses.dataclass(frozen=True)
class Occupancy:
    blocks: int        # resident blocks per SM
    fraction: float    # resident warps over the SM's maximum
    limit: str         # what stops one more block: "threads", "blocks", "registers" or "shared"


def occupancy(cc, registers: int, shared: int, block: int) -> Occupancy | None:
    """The theoretical occupancy of a kernel using ``registers`` per thread and ``shared`` bytes of static shared
    memory per block, launched with ``block`` threads, on compute capability ``cc``; None for an SM not in
    :data:`SMS`.

    As the occupancy calculator counts: registers go to each warp in units of 256, and a sub-partition (a quarter
    of the register file) holds whole warps; shared memory goes to a block in units of 128 bytes plus the runtime's
    reserved 1 KiB. Blocks per SM are the least that threads, the block limit, registers and shared memory allow."""
    sm = SMS.get(tuple(cc))
    if sm is None:
        return None
    warps = -(-block // 32)
    per_warp = -(-max(registers, 1) * 32 // REGISTER_UNIT) * REGISTER_UNIT
    warps_by_registers = (sm.registers // sm.sub_partitions // per_warp) * sm.sub_partitions
    per_block = -(-shared // SHARED_UNIT) * SHARED_UNIT + sm.reserved_shared
    limits = {"threads": sm.threads // (warps * 32), "blocks": sm.blocks, "registers": warps_by_registers // warps,
              "shared": sm.shared // per_block if per_block else sm.blocks}
    limit = min(limits, key=limits.get)  # the first of equal limits, in this order
    blocks = limits[limit]
    return Occupancy(blocks, blocks * warps * 32 / sm.threads, limit)
