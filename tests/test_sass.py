"""The SASS reader (gpunn/_sass.py) on hand-written SASS, and the build check's SASS rules on hand-made rows.

Nothing here compiles or runs nvdisasm: tests/test_buildcheck.py reads the SASS of real kernels.
"""

import struct

import pytest

from gpunn import _sass, buildcheck

# nvdisasm's layout: address comment, optional predicate, opcode, operands, ';' (and encodings in comments after)
GRID_STRIDE = """
        /*0000*/                   LDC R1, c[0x0][0x28] ;                      /* 0x00000a00ff017b82 */
        /*0010*/                   S2R R0, SR_TID.X ;
        /*0020*/                   ISETP.GE.AND P0, PT, R0, UR4, PT ;
        /*0030*/               @P0 BRA 0x120 ;
        /*0040*/                   NOP ;
        /*0050*/                   LDG.E.128 R4, desc[UR6][R2.64] ;
        /*0060*/                   LDG.E.128 R8, desc[UR6][R2.64+0x10] ;
        /*0070*/                   FMNMX R4, RZ, R4, !PT ;
        /*0080*/                   F2F.F64.F32 R12, R4 ;
        /*0090*/                   DMUL R12, R12, R12 ;
        /*00a0*/                   STG.E.128 desc[UR6][R10.64], R4 ;
        /*00b0*/                   IADD3 R0, R0, UR5, RZ ;
        /*00c0*/                   ISETP.GE.AND P0, PT, R0, UR4, PT ;
        /*00d0*/              @!P0 BRA 0x50 ;
        /*00e0*/                   LDG.E R4, desc[UR6][R2.64] ;
        /*00f0*/                   LDG.E R5, desc[UR6][R2.64+0x4] ;
        /*0100*/                   STG.E desc[UR6][R10.64], R4 ;
        /*0110*/              @!P1 BRA 0xe0 ;
        /*0120*/                   EXIT ;
        /*0130*/                   BRA 0x130 ;
"""


def _instructions(text=GRID_STRIDE):
    return _sass.parse(text)


def test_parse_reads_address_predicate_opcode_operands():
    ins = _instructions()
    assert len(ins) == 20
    assert ins[0] == _sass.Instruction(0x0, "", "LDC", "R1, c[0x0][0x28]")  # the encoding comment is not an operand
    assert ins[3] == _sass.Instruction(0x30, "@P0", "BRA", "0x120")
    assert ins[13].predicate == "@!P0" and ins[13].target() == 0x50
    assert ins[5].root == "LDG" and ins[5].opcode == "LDG.E.128" and ins[5].target() is None
    assert _sass.parse("\t\tFunction : k\n\t.headerflags @\"EF_CUDA_SM90\"\n") == []


@pytest.mark.parametrize("opcode, bits", [("LDG.E.128", 128), ("LDG.E.128.CONSTANT", 128), ("STG.E.128", 128),
                                          ("LDG.E.64", 64), ("LDG.E", 32), ("STG.E", 32), ("LDG.E.U8", 8),
                                          ("LDG.E.S16", 16), ("LDG.E.LTC128B.128", 128)])
def test_width(opcode, bits):
    assert _sass.width(opcode) == bits


@pytest.mark.parametrize("opcode", ["DADD", "DMUL", "DFMA", "DSETP.GT.AND", "F2F.F64.F32", "F2F.F32.F64",
                                    "I2F.F64.S64", "F2I.F64.TRUNC", "MUFU.RCP64H", "MUFU.RSQ64H", "DMNMX"])
def test_float64_instructions(opcode):
    assert _sass.is_f64(_sass.Instruction(0, "", opcode, ""))


@pytest.mark.parametrize("opcode", ["FADD", "FFMA", "FMUL.FTZ", "MUFU.RCP", "IMAD.WIDE", "F2F.F16.F32", "DEPBAR.LE",
                                    "LDG.E.64", "I2F.S64"])
def test_not_float64_instructions(opcode):
    assert not _sass.is_f64(_sass.Instruction(0, "", opcode, ""))


def test_counts_by_width_float64_and_nop():
    counts = _sass.count(_instructions())
    assert counts.loads == {128: 2, 32: 2} and counts.stores == {128: 1, 32: 1}
    assert counts.f64 == 2  # F2F.F64.F32 and DMUL
    assert counts.instructions == 19  # the NOP is padding, not work
    assert counts.local == 0 and counts.generic == 0
    spill = _sass.parse("/*0000*/ STL [R1], R4 ;\n/*0010*/ LDL R4, [R1] ;\n/*0020*/ LD.E.128 R4, [R2.64] ;\n")
    assert _sass.count(spill).local == 2 and _sass.count(spill).generic == 1 and _sass.count(spill).loads == {}


def test_loops_are_backward_branches_and_the_idle_branch_is_none():
    # 0x50..0xd0: the vector loop; 0xe0..0x110: the scalar tail; the forward @P0 BRA 0x120 and the BRA to itself
    # after EXIT are no loops
    assert _sass.loops(_instructions()) == [(0x50, 0xD0), (0xE0, 0x110)]


def test_main_loop_is_the_one_with_the_128_bit_loads():
    (start, end), counts = _sass.main_loop(_instructions())
    assert (start, end) == (0x50, 0xD0)
    assert counts.loads == {128: 2} and counts.stores == {128: 1} and counts.f64 == 2
    assert counts.instructions == 9  # 0x50..0xd0: nine instructions, the branch back included


NESTED = """
        /*0000*/                   S2R R0, SR_TID.X ;
        /*0010*/                   LDG.E R2, desc[UR4][R8.64] ;
        /*0020*/                   MOV R3, RZ ;
        /*0030*/                   LDG.E R4, desc[UR4][R10.64] ;
        /*0040*/                   LDG.E R5, desc[UR4][R10.64+0x4] ;
        /*0050*/                   FADD R3, R3, R4 ;
        /*0060*/              @P1 BRA 0x30 ;
        /*0070*/                   STG.E desc[UR4][R12.64], R3 ;
        /*0080*/              @P0 BRA 0x10 ;
        /*0090*/                   EXIT ;
"""


def test_nested_loops_count_their_own_instructions():
    ins = _sass.parse(NESTED)
    found = _sass.loops(ins)
    assert found == [(0x10, 0x80), (0x30, 0x60)]
    outer = _sass.own_instructions(ins, (0x10, 0x80), found)
    assert [i.address for i in outer] == [0x10, 0x20, 0x70, 0x80]  # the inner loop's body is not the outer's
    # the inner loop has more loads (2 against 1): it is the main loop
    (start, end), counts = _sass.main_loop(ins)
    assert (start, end) == (0x30, 0x60) and counts.loads == {32: 2} and counts.instructions == 4


def test_no_main_loop_without_memory_in_a_loop():
    ins = _sass.parse("/*0000*/ FADD R0, R0, R1 ;\n/*0010*/ @P0 BRA 0x0 ;\n/*0020*/ STG.E [R2.64], R0 ;\n"
                      "/*0030*/ EXIT ;\n")
    assert _sass.loops(ins) == [(0x0, 0x10)]
    assert _sass.main_loop(ins) is None
    assert _sass.analyse(ins).as_dict()["main_loop"] is None


def test_several_branches_back_to_one_start_make_one_loop():
    ins = _sass.parse("/*0000*/ LDG.E R0, [R2.64] ;\n/*0010*/ @P0 BRA 0x0 ;\n/*0020*/ STG.E [R2.64], R0 ;\n"
                      "/*0030*/ @P1 BRA 0x0 ;\n/*0040*/ EXIT ;\n")
    assert _sass.loops(ins) == [(0x0, 0x30)]


def test_rebase_takes_one_function_out_of_a_batch():
    # two functions laid end to end (as disassemble() does): the second's branch targets count from its start
    batch = _sass.parse(NESTED.replace("/*00", "/*01").replace("BRA 0x", "BRA 0x1"))
    second = _sass.rebase(batch, 0x100, 0xA0)
    assert second == _sass.parse(NESTED)


def test_analyse_adds_called_functions_to_the_counts_not_to_the_loop():
    helper = _sass.parse("/*0000*/ DADD R0, R0, R2 ;\n/*0010*/ RET.REL.NODEC R20 0x0 ;\n")
    analysis = _sass.analyse(_instructions(), [helper]).as_dict()
    assert analysis["f64"] == 3 and analysis["instructions"] == 21
    assert analysis["main_loop"]["f64"] == 2 and analysis["main_loop"]["start"] == 0x50
    assert analysis["loads"] == {"32": 2, "128": 2}


def _elf(sections):
    """A minimal 64-bit ELF holding ``sections`` ({name: bytes}) and its section-name table."""
    names = b"\0.shstrtab\0" + b"".join(n.encode() + b"\0" for n in sections)
    blobs = [names] + list(sections.values())
    body, offsets = b"", []
    for blob in blobs:
        offsets.append(64 + len(body))
        body += blob
    shoff = 64 + len(body)
    header = b"\x7fELF" + bytes([2, 1, 1]) + bytes(9) + struct.pack("<HHIQQQIHHHHHH", 2, 190, 1, 0, 0, shoff, 0, 64,
                                                                     0, 0, 64, len(blobs) + 1, 1)
    name_at = [1] + [names.index(n.encode() + b"\0") for n in sections]
    table = bytes(64) + b"".join(struct.pack("<IIQQQQIIQQ", at, 1, 0, 0, off, len(blob), 0, 0, 1, 0)
                                 for at, off, blob in zip(name_at, offsets, blobs))
    return header + body + table


def test_functions_reads_the_text_sections_of_a_cubin():
    cubin = _elf({".text.kernel": b"\x01" * 32, ".nv.info": b"\x02" * 8, ".text.helper": b"\x03" * 16})
    assert _sass.functions(cubin) == {"kernel": b"\x01" * 32, "helper": b"\x03" * 16}
    with pytest.raises(ValueError, match="not a 64-bit ELF"):
        _sass.functions(b"PTX")


def test_entry_name():
    assert _sass.entry_name(".visible .entry _Z3fooPf(\n.param .u64 p)") == "_Z3fooPf"


# ---- occupancy ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cc, registers, shared, blocks, fraction, limit", [
    ((9, 0), 32, 0, 8, 1.0, "threads"),          # 8 blocks of 256 fill 2048 threads
    ((9, 0), 39, 0, 6, 0.75, "registers"),       # 40 per thread (units of 256 per warp): 12 warps per sub-partition
    ((9, 0), 64, 0, 4, 0.5, "registers"),
    ((9, 0), 80, 0, 3, 0.375, "registers"),      # the optimizer steps
    ((9, 0), 79, 0, 3, 0.375, "registers"),
    ((9, 0), 88, 0, 2, 0.25, "registers"),
    ((9, 0), 140, 0, 1, 0.125, "registers"),
    ((9, 0), 255, 0, 1, 0.125, "registers"),
    ((9, 0), 32, 48 * 1024, 4, 0.5, "shared"),   # 49 KiB with the reserved 1 KiB: 4 in 228 KiB
    ((8, 0), 32, 48 * 1024, 3, 0.375, "shared"),  # 3 in 164 KiB
    ((8, 0), 32, 100, 8, 1.0, "threads"),
])
def test_occupancy(cc, registers, shared, blocks, fraction, limit):
    assert _sass.occupancy(cc, registers, shared, 256) == _sass.Occupancy(blocks, fraction, limit)


def test_occupancy_of_small_blocks_hits_the_block_limit():
    assert _sass.occupancy((9, 0), 16, 0, 32) == _sass.Occupancy(32, 0.5, "blocks")  # 32 blocks of one warp
    assert _sass.occupancy((12, 0), 16, 0, 256) is None


# ---- the build check's SASS rules, on hand-made rows --------------------------------------------------------------------
def _row(name="k[float32]", cc=(9, 0), registers=40, loads=None, vector_loads=True, dtype="float32", offenders=()):
    row = buildcheck.Row(name, cc, dtype, registers=registers, shared_bytes=0, spill_stores=0, spill_loads=0,
                         local_bytes=0, vector_loads=vector_loads,
                         sass={"loads": loads if loads is not None else {"128": 4}, "main_loop": None})
    buildcheck.add_occupancy(row)
    row.offenders = buildcheck.offenders_of(name, offenders)
    return row


def test_rules_pass_a_vectorised_kernel_at_full_occupancy():
    row = _row()
    assert row.rule_checks() == {"vector_loads": None, "occupancy": None}
    assert row.ok and row.known == []


def test_rule_vector_loads():
    row = _row(loads={"32": 6})
    assert not row.ok and "no 128-bit global load" in row.problems[0]
    assert _row(loads={"32": 6}, vector_loads=False).ok  # not registered as vectorised: no rule
    assert _row(loads={"64": 6}, dtype="float64").ok  # float64 kernels: no SASS rules


def test_rule_occupancy_at_sm_90_only():
    row = _row(registers=80)
    assert row.occupancy == 0.375 and not row.ok
    assert "occupancy 37.5% < 50% on sm_90 (80 registers" in row.problems[0] and "limited by registers" in row.problems[0]
    assert _row(registers=80, cc=(8, 0)).ok


OFFENDERS = (buildcheck.KnownOffender("opt_step*[float32]", "occupancy", 0.375, "test"),)


def test_known_offender_is_reported_not_failed():
    row = _row("opt_step[1,0][float32]", registers=80, offenders=OFFENDERS)
    assert row.ok and row.problems == []
    assert len(row.known) == 1 and row.known[0].startswith("occupancy 37.5%")
    assert buildcheck._status(row).startswith("KNOWN: occupancy 37.5%")
    # the same kernel not listed fails
    assert not _row("opt_step[1,0][float32]", registers=80).ok


def test_known_offender_that_meets_its_rule_fails_the_check():
    row = _row("opt_step[float32]", registers=40, offenders=OFFENDERS)
    assert not row.ok and "delete KNOWN_OFFENDERS entry 'opt_step*[float32]'" in row.problems[0]
    assert row.judged()["stale"] and not row.judged()["known"]
    assert _row("opt_step[float32]", registers=40, cc=(8, 0), offenders=OFFENDERS).ok  # the rule is sm_90's


def test_known_offender_that_got_worse_fails_the_check():
    row = _row("opt_step[float32]", registers=96, offenders=OFFENDERS)  # 25% < the 37.5% listed
    assert not row.ok and "worse than the 37.5% listed" in row.problems[0]


def test_offender_patterns_take_brackets_literally():
    assert buildcheck.name_matches("*_rows[block][float32]", "softmax_rows[block][float32]")
    assert not buildcheck.name_matches("*_rows[block][float32]", "softmax_rows[warp][float32]")
    assert buildcheck.name_matches("*_step*[float32]", "adam_step[1,1,0,1][float32]")
    assert not buildcheck.name_matches("*_step*[float32]", "adam_step[float64]")


def test_every_known_offender_names_a_sass_rule():
    for offender in buildcheck.KNOWN_OFFENDERS:
        assert offender.rule in buildcheck.SASS_RULES and offender.why and 0 <= offender.measured < 1


def test_table_shows_the_sass_columns():
    report = buildcheck.Report([_row(registers=80, loads={"128": 7, "32": 10})], {}, 1, 0.0, ((9, 0),))
    table = buildcheck.format_table(report)
    assert "LDG 128/64/32" in table and "7/0/10" in table and "37.5%" in table
    assert "1 under 50% occupancy on sm_90" in table and table.endswith("FAILED")


def test_file_stem():
    assert buildcheck.file_stem(_row("adam_step[1,1,0,1][float32]")) == "adam_step.1,1,0,1.float32.sm_90"
    assert buildcheck.file_stem(_row("cast[float32->float64]", cc=(8, 0))) == "cast.float32-_float64.sm_80"
