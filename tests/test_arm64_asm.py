"""The litmus assembler (fuzzer/arch/arm64_asm.py): every supported form against capstone, label
layout and `.+N` targets, the errors, the development catalogue's columns, and a program run
under Unicorn, so that a wrong field shows up both as wrong text and as a wrong result."""

from __future__ import annotations

import random
import re
import struct
from pathlib import Path

import capstone
import pytest
import unicorn
from unicorn import arm64_const as A

from fuzzer.arch.arm64 import (
    ADD_X0_1,
    DAIFCLR_I,
    DAIFSET_I,
    DC_CVAU_X0,
    DMB_ISHST,
    IC_IVAU_X0,
    MOV_LR_X9,
    MOV_X1_X2,
    MOV_X9_LR,
    RET,
    RET_X10,
    UDF0,
    WFI,
    aarch64_insn_gen_branch_imm,
    word_of,
)
from fuzzer.arch.arm64_asm import AsmError, assemble, assemble_one, mnemonics

_CS = capstone.Cs(capstone.CS_ARCH_ARM64, capstone.CS_MODE_ARM)
PC = 0x10000
CATALOGUE = Path("/work/shared/litmus/aarch64-ifetch")


def _norm(text: str) -> str:
    """Lower case, one spelling of separators, immediates in decimal: `MOV W2, #0x10` and
    capstone's `mov w2, #16` compare equal, and nothing else is forgiven."""
    s = re.sub(r"\s+", " ", text.lower()).strip()
    s = re.sub(r"\s*,\s*", ", ", s)
    s = re.sub(r"\[\s*", "[", re.sub(r"\s*\]", "]", s))
    return re.sub(r"#(-?)(0x[0-9a-f]+|\d+)", lambda m: f"#{int(m[1] + m[2], 0)}", s)


def _disasm(word: int, pc: int = PC) -> str:
    found = list(_CS.disasm(struct.pack("<I", word), pc))
    assert len(found) == 1, f"{word:#010x} is not an instruction capstone knows"
    return _norm(f"{found[0].mnemonic} {found[0].op_str}")


# (text, what capstone prints for it at PC, or None: the text itself). First every form the
# aarch64-ifetch catalogue uses, then the neighbouring forms the assembler also takes.
CATALOGUE_FORMS = [
    ("NOP", None), ("ISB", None), ("ERET", None), ("RET", None), ("UDF #0", None),
    ("B .+12", "b #0x1000c"), ("BL .+0x100", "bl #0x10100"), ("B.NE .+8", "b.ne #0x10008"),
    ("B.EQ .-4", "b.eq #0xfffc"), ("BR X1", None), ("BLR X1", None),
    ("CBZ W2,.+8", "cbz w2, #0x10008"), ("CBNZ W2,.+8", "cbnz w2, #0x10008"),
    ("CBNZ X1, .+16", "cbnz x1, #0x10010"), ("ADR X9,.+20", "adr x9, #0x10014"),
    ("MOV W9,#1", None), ("MOV W2, #1", None), ("MOV X9,#1", None), ("MOV X9, #2", None),
    ("MOV W1,W9", None), ("ADD W2,W2,#1", None), ("ADD X1,X1,W4,SXTW", None),
    ("AND W2,W2,W4", None), ("EOR W4,W2,W2", None), ("CMP W2,W0", None), ("CMP X1,X11", None),
    ("CMP W2,#1", None), ("CSET W3,EQ", None), ("CSEL W10,WZR,WZR,EQ", None),
    ("CSEL X1,X14,X24,EQ", None), ("LDR W2,[X1]", None), ("LDR X1,[X3]", None),
    ("LDR W6,[X30]", None), ("LDR W4,[X5,W6,SXTW]", None), ("STR W0,[X1]", None),
    ("STR X1,[X3]", None), ("STR W5,[X4,W1,SXTW]", None), ("STLR X2,[X3]", None),
    ("DMB SY", None), ("DMB ST", None), ("DMB LD", None), ("DMB ISH", None), ("DSB ISH", None),
    ("DSB SY", None), ("DSB LD", None), ("DSB ST", None), ("DC CVAU,X1", None),
    ("IC IVAU,X1", None), ("IC IALLU", None), ("MSR ELR_EL1,X9", None),
]
NEIGHBOUR_FORMS = [
    ("ISB SY", "isb"), ("RET X10", None), ("B .-8", "b #0xfff8"), ("B .", "b #0x10000"),
    ("CBZ X3,.-16", "cbz x3, #0xfff0"), ("TBZ W3,#5,.+8", "tbz w3, #5, #0x10008"),
    ("TBNZ X3,#40,.-8", "tbnz x3, #40, #0xfff8"), ("ADR X0,.-3", "adr x0, #0xfffd"),
    ("B.HS .+4", "b.hs #0x10004"), ("B.LO .+4", "b.lo #0x10004"), ("B.GT .+4", "b.gt #0x10004"),
    ("MOV X0,#0xffff00000000", None), ("MOV W0,#0x10000", None), ("MOV W0,#-1", None),
    ("MOV X0,#-2", None), ("MOV X0,#0x5555555555555555", None), ("MOV W0,#0xff00ff00", "mov w0, #-0xff0100"),
    ("MOV X1,X2", None), ("MOV SP,X1", None), ("MOV X1,SP", None), ("MOV WSP,W3", None),
    ("MOV W0,WZR", None), ("MOVZ X1,#3,LSL #32", "mov x1, #0x300000000"),
    ("MOVK W1,#0xbeef,LSL #16", None), ("MOVK X1,#1,LSL #48", None), ("MOVN X2,#7", "mov x2, #-8"),
    ("ADD X0,X1,#4095", None), ("ADD X0,X1,#1,LSL #12", None), ("ADD SP,SP,#16", None),
    ("SUB X0,X1,X2", None), ("SUB X0,X1,X2,LSL #3", None), ("SUB W0,W1,#3", None),
    ("SUBS W0,W1,W2,ASR #2", None), ("ADDS X0,X1,#2", None), ("ADD X0,SP,X1", None),
    ("ADD X0,X1,W2,UXTW #2", None), ("ADD X0,X1,X2,SXTX", None), ("ADD W0,W1,W2,UXTB", None),
    ("CMP SP,#4", None), ("CMP X1,W2,SXTW", None), ("CMN X3,#1", None),
    ("EOR X1,X1,X2", None), ("ORR X0,X1,X2,LSL #4", None), ("ORR W0,W1,#0xff", None),
    ("AND X0,X1,#0xf0f0f0f0f0f0f0f0", None), ("EOR W0,W1,#0x80000000", None),
    ("AND X0,X1,#0x7ffffffffffffffe", None), ("ORR X0,X1,#0x3", None),
    ("ANDS X0,X1,X2,ROR #3", None), ("TST W1,#1", None), ("TST X1,X2", None),
    ("MVN X0,X1", None), ("BIC W0,W1,W2", None), ("ORN X0,X1,X2,LSR #1", None),
    ("CSET X8,NE", None), ("CSETM W0,LT", None), ("CSINC X0,X1,X2,HS", None),
    ("CSINV W0,W1,W2,MI", None), ("CSNEG X0,X1,X2,VS", None),
    ("STR W2,[X3,#4]", None), ("LDR X2,[X3,#8]", None), ("LDR W2,[SP,#16380]", None),
    ("LDR X4,[X5,X6]", None), ("LDR X4,[X5,X6,LSL #3]", None), ("LDR W4,[X5,W6,UXTW #2]", None),
    ("STR X4,[X5,X6,SXTX]", None), ("LDRB W0,[X1]", None), ("STRB W0,[X1,#7]", None),
    ("LDRB W0,[X1,X2]", None), ("LDRH W0,[X1,#6]", None), ("STRH W0,[X1,X2,LSL #1]", None),
    ("LDAR W0,[X1]", None), ("LDAR X0,[SP]", None), ("STLR W2,[X3,#0]", "stlr w2, [x3]"),
    ("LDARB W0,[X1]", None), ("STLRH W0,[X1]", None),
    ("DMB ISHST", None), ("DMB ISHLD", None), ("DMB NSH", None), ("DMB OSH", None),
    ("DMB OSHST", None), ("DSB ISHST", None), ("DSB NSHLD", None), ("DSB OSHLD", None),
    ("DC CIVAC,X3", None), ("DC CVAC,X0", None), ("DC IVAC,X2", None), ("DC ZVA,X4", None),
    ("DC CVAP,X5", None), ("IC IALLUIS", None), ("SVC #0", None), ("SVC #0x80", None),
    ("HVC #1", None), ("BRK #4", None), ("UDF #65535", None), ("WFI", None), ("WFE", None),
    ("YIELD", None), ("SEV", None), ("MSR SPSR_EL1,X0", None), ("MSR VBAR_EL1,X0", None),
    ("MRS X0,CTR_EL0", None), ("MRS X1,ESR_EL1", None), ("MRS X2,CurrentEL", None),
    ("MRS X0,NZCV", None), ("MSR DAIFSet,#2", None), ("MSR DAIFClr,#2", None),
    ("MSR S3_0_C4_C0_1,X3", "msr elr_el1, x3"), ("MRS X3,S3_3_C14_C0_2", "mrs x3, cntvct_el0"),
]


@pytest.mark.parametrize("text,expected", CATALOGUE_FORMS + NEIGHBOUR_FORMS,
                         ids=[t for t, _ in CATALOGUE_FORMS + NEIGHBOUR_FORMS])
def test_form_disassembles_to_itself(text: str, expected: str | None) -> None:
    assert _disasm(assemble_one(text, PC)) == _norm(expected or text)


def test_every_mnemonic_has_a_checked_form() -> None:
    checked = {t.split()[0].upper() for t, _ in CATALOGUE_FORMS + NEIGHBOUR_FORMS}
    conds = {m for m in mnemonics() if m.startswith("B.")}
    extras = ("SEVL", "SMC #1", "HLT #2", "EON W0,W1,W2", "BICS X0,X1,X2", "STLRB W1,[X2]",
              "LDARH W3,[X4]")
    assert set(mnemonics()) - conds <= checked | {e.split()[0] for e in extras}
    for extra in extras:
        assert _disasm(assemble_one(extra, PC)) == _norm(extra)
    for m in sorted(conds):  # every condition, its number in the Arm ARM's order
        name = {"B.CC": "b.lo", "B.CS": "b.hs"}.get(m, m.lower())  # capstone's names for them
        assert _disasm(assemble_one(f"{m} .+8", PC)) == f"{name} #{PC + 8}"


# Words the Arm ARM (and the brief's list, and the kernel's encoders in arm64.py) give.
KNOWN_WORDS = {
    "NOP": 0xD503201F, "ISB": 0xD5033FDF, "DSB ISH": 0xD5033B9F, "DMB ISH": 0xD5033BBF,
    "DC CVAU,X1": 0xD50B7B21, "IC IVAU,X1": 0xD50B7521, "IC IALLU": 0xD508751F,
    "DMB ISHST": word_of(DMB_ISHST), "DC CVAU,X0": word_of(DC_CVAU_X0),
    "IC IVAU,X0": word_of(IC_IVAU_X0), "RET": word_of(RET), "RET X10": word_of(RET_X10),
    "ADD X0,X0,#1": word_of(ADD_X0_1), "MOV X1,X2": word_of(MOV_X1_X2), "WFI": word_of(WFI),
    "MOV X9,X30": word_of(MOV_X9_LR), "MOV X30,X9": word_of(MOV_LR_X9), "UDF #0": word_of(UDF0),
    "MSR DAIFSet,#2": word_of(DAIFSET_I), "MSR DAIFClr,#2": word_of(DAIFCLR_I),
    "ERET": 0xD69F03E0, "LDAR W0,[X1]": 0x88DFFC20, "MSR ELR_EL1,X9": 0xD5184029,
}


@pytest.mark.parametrize("text", KNOWN_WORDS)
def test_known_words(text: str) -> None:
    assert assemble_one(text, PC) == KNOWN_WORDS[text]


def test_branches_match_the_kernels_encoder() -> None:
    rng = random.Random(1)
    for _ in range(300):
        off = rng.randrange(-(1 << 25), 1 << 25) * 4
        pc = rng.randrange(1 << 30, 1 << 40) * 4
        for mnem, link in (("B", False), ("BL", True)):
            sign = "+" if off >= 0 else "-"
            word = assemble_one(f"{mnem} .{sign}{abs(off)}", pc)
            assert word == aarch64_insn_gen_branch_imm(pc, pc + off, link)
            assert assemble_one(f"{mnem} there", pc, {"there": pc + off}) == word


# Templates for random registers: a field in the wrong place, or two fields swapped, shows
# up as soon as the registers differ.
TEMPLATES = [
    "ADD {x},{x},{w},SXTW", "ADD {w},{w},#{imm12}", "SUB {x},{x},{x},LSL #{sh}", "EOR {w},{w},{w}",
    "AND {x},{x},{x}", "ORR {w},{w},{w}", "CMP {w},{w}", "CMP {x},#{imm12}", "CSET {w},{cond}",
    "CSEL {x},{x},{x},{cond}", "MOV {w},{w}", "MOV {x},#{imm16}", "LDR {w},[{xs}]",
    "LDR {x},[{xs},#{off8}]", "STR {w},[{xs},#{off4}]", "LDR {w},[{xs},{w},SXTW]",
    "STR {x},[{xs},{x}]", "LDAR {x},[{xs}]", "STLR {w},[{xs}]", "LDRB {w},[{xs},#{imm12}]",
    "DC CVAU,{x}", "IC IVAU,{x}", "BR {x}", "BLR {x}", "RET {x}", "MSR ELR_EL1,{x}",
    "CBNZ {w},.+{off4}", "CBZ {x},.-{off4}", "ADR {x},.+{imm12}", "MOVK {x},#{imm16},LSL #32",
]


def _fill(template: str, rng: random.Random) -> str:
    def one(m: re.Match[str]) -> str:
        kind = m[1]
        if kind in ("x", "w"):
            return f"{kind.upper()}{rng.randrange(31)}"
        if kind == "xs":
            return rng.choice(["SP", f"X{rng.randrange(31)}"])
        if kind == "cond":
            return rng.choice(["EQ", "NE", "HS", "LO", "MI", "PL", "VS", "VC", "HI", "LS", "GE",
                               "LT", "GT", "LE"])
        bound = {"imm12": 4096, "imm16": 65536, "sh": 64, "off4": 1024, "off8": 4096}[kind]
        return str(rng.randrange(bound) * (4 if kind == "off4" else 8 if kind == "off8" else 1))
    return re.sub(r"\{(\w+)\}", one, template)


def _absolute(text: str, pc: int) -> str:
    """`CBZ X1,.+8` at pc as capstone prints it: the target's address."""
    return re.sub(r"\.([+-])(\d+)", lambda m: f"#{pc + int(m[1] + m[2])}", text)


def _with_addresses(text: str, labels: dict[str, int]) -> str:
    """`B.NE Lend` as capstone prints it: a label operand (always the last) as its address."""
    return re.sub(r"(?<=[ ,])([A-Za-z_]\w*)$", lambda m: f"#{labels[m[1]]}" if m[1] in labels
                  else m[1], text.strip())


@pytest.mark.parametrize("template", TEMPLATES)
def test_random_registers_disassemble_to_themselves(template: str) -> None:
    rng = random.Random(template)
    for _ in range(60):
        text = _fill(template, rng)
        pc = PC + 4 * rng.randrange(1 << 16)
        expected = "RET" if text == "RET X30" else _absolute(text, pc)  # capstone omits X30
        assert _disasm(assemble_one(text, pc), pc) == _norm(expected), text


def test_labels_and_layout() -> None:
    base = 0x40000
    code, labels = assemble(["L0:", "", "  B L1  ", "MOV W9,#1", "L1:", "L2: l2: CBNZ W2,L0",
                             "b.ne l2", "END:"], base)
    assert labels == {"L0": base, "L1": base + 8, "L2": base + 8, "l2": base + 8,
                      "END": base + 16}
    assert labels["END"] == base + len(code)
    words = struct.unpack("<4I", code)
    assert [_disasm(w, base + 4 * i) for i, w in enumerate(words)] == [
        f"b #{base + 8}", "mov w9, #1", f"cbnz w2, #{base}", f"b.ne #{base + 8}"]
    assert assemble([], base) == (b"", {})
    assert assemble(["X:"], base) == (b"", {"X": base})


def test_case_rules() -> None:
    # mnemonics and registers in any case; labels as written
    assert assemble_one("str w0,[x1]", PC) == assemble_one("STR W0,[X1]", PC)
    assert assemble_one("dC cVaU, x1", PC) == 0xD50B7B21
    code, labels = assemble(["b L0", "l0:", "NOP", "L0:"], PC)
    assert labels == {"l0": PC + 4, "L0": PC + 8}
    assert _disasm(struct.unpack("<I", code[:4])[0]) == f"b #{PC + 8}"
    with pytest.raises(AsmError, match="unknown label 'l1'"):
        assemble(["L1:", "B l1"], PC)


def test_relative_targets() -> None:
    assert assemble_one("B .+12", PC) == 0x14000003
    assert assemble_one('B .+4', 0) == 0x14000001  # the catalogue's instr:"B .+4"
    assert assemble_one("B .", PC) == 0x14000000
    assert assemble_one("B .-4", PC) == 0x17FFFFFF
    assert assemble_one("B . + 8", PC) == 0x14000002
    # the same word wherever it is assembled: .+N is relative
    assert {assemble_one("B .+8", pc) for pc in (0, PC, 1 << 40)} == {0x14000002}
    code, _ = assemble(["B .+8", "MOV W9,#1", "NOP"], PC)
    assert _disasm(struct.unpack("<I", code[:4])[0]) == f"b #{PC + 8}"


def test_coff_column() -> None:
    """MULTIARCH.md 4.1's coFF, P1's column as the litmus front end passes it."""
    lines = ["BL L0", "MOV W1,W9", "BL L0", "MOV W2,W9", "B END", "L0:", "B L1", "MOV W9,#1",
             "RET", "L1:", "MOV W9,#0", "RET", "END:"]
    code, labels = assemble(lines, 0x8000)
    assert labels == {"L0": 0x8014, "L1": 0x8020, "END": 0x8028}
    got = [_disasm(w, 0x8000 + 4 * i) for i, w in enumerate(struct.unpack("<10I", code))]
    assert got == ["bl #32788", "mov w1, w9", "bl #32788", "mov w2, w9", "b #32808", "b #32800",
                   "mov w9, #1", "ret", "mov w9, #0", "ret"]


ERRORS = [
    ("LDXR W0,[X1]", "unsupported instruction 'LDXR W0,[X1]'"),
    ("STXR W0,W1,[X2]", "not a supported mnemonic"),
    ("B L9", "unknown label 'L9'"), ("B", "takes 1 operand, not 0"),
    ("B .+2", "not a multiple of 4"), ("B .+0x8000000", "out of range"),
    ("B .-0x8000004", "out of range"), ("B.NE .+0x100000", "out of range"),
    ("CBZ X0,.-0x100004", "out of range"), ("TBZ W0,#1,.+0x8000", "out of range"),
    ("ADR X0,.+0x100000", "out of range"), ("B #0x100", "neither a label nor"),
    ("MOV W0,#0x12345", "more than one instruction"), ("MOV W0,#0x100000000", "does not fit"),
    ("MOV X0,#-0x8000000000000001", "does not fit"), ("ADD X0,X1,#4096", "out of range"),
    ("ADD X0,X1,#-1", "out of range"), ("ADD XZR,X1,#1", "register 31 is SP"),
    ("ADD X0,X1,#1,LSL #3", "LSL #0 or LSL #12"), ("ADD X0,X1,X2,ROR #1", "not a shift"),
    ("ADD X0,X1,W2,SXTW #5", "not 0..4"), ("ADD X0,X1,W2", "should be an X register"),
    ("MOV W0,X1", "should be a W register"), ("MOV SP,XZR", "zero register"),
    ("SUBS SP,X0,#1", "SP cannot be used here"), ("EOR X0,X1,#0", "not a logical immediate"),
    ("AND W0,W1,#0x12345678", "not a logical immediate"), ("BIC W0,W1,#1", "not a logical"),
    ("ORR W0,W1,W2,LSL #32", "out of range"), ("LDR W0,[X1,#3]", "LDUR/STUR"),
    ("LDR W0,[X1,#-4]", "LDUR/STUR"), ("LDR W0,[X1,#16384]", "out of range"),
    ("LDR W0,[X1],#4", "takes 2 operands, not 3"), ("LDR W0,[X1,#4]!", "pre/post-index"),
    ("LDR W0,[W1]", "should be an X register"), ("LDR W0,[X1,W2]", "should be an X"),
    ("LDR W0,[X1,X2,LSL #3]", "neither #0 nor #2"), ("LDR W0,[X1,X2,ASR #2]", "takes only LSL"),
    ("STR W0,[XZR]", "XZR cannot be used here"), ("LDR X0,X1", "not a supported memory"),
    ("LDRB X0,[X1]", "should be a W register"), ("STLR X0,[X1,#8]", "only [Xn] or [Xn,#0]"),
    ("LDAR X0,[X1,X2]", "only [Xn] or [Xn,#0]"), ("DMB FOO", "not one of the options"),
    ("DSB", "takes 1 operand"), ("DSB #0", "not one of the options"), ("ISB ISH", "only SY"),
    ("DC CVAU", "takes 2 operands"), ("DC FOO,X1", "not one of"), ("DC CVAU,W1", "an X"),
    ("IC IVAU", "takes 2 operands"), ("IC IALLU,X1", "takes 1 operand"),
    ("MSR FOO_EL9,X0", "system register 'FOO_EL9'"), ("MRS X0,S3_0_C16_C0_0", "0..15"),
    ("MSR DAIFSet,#16", "out of range"), ("SVC #65536", "out of range"),
    ("UDF #-1", "out of range"), ("CSET W0,AL", "cannot take condition AL"),
    ("CSEL W0,W1,W2,XX", "not a condition code"), ("TBZ W0,#32,.+8", "bit number 32"),
    ("BR W1", "should be an X register"), ("BLR SP", "SP cannot be used here"),
    ("RET X1,X2", "takes 0 or 1 operands"), ("NOP X0", "takes 0 operands"),
    ("", "no instruction"), ("ADD X0,,X1", "cannot split"), ("ADD X0,X1,", "cannot split"),
    ("MOVZ W0,#1,LSL #32", "not LSL #0/#16"), ("MOVK X0,#1,LSL #8", "#32/#48"),
    ("MOVZ W0,#65536", "out of range"), ("MOV W0,#abc", "not an immediate"),
    ("L0: NOP", "'L0:' is not a supported mnemonic"), ("X31", "not a supported mnemonic"),
    ("ADD X0,X1,X32", "not a general-purpose register"),
]


@pytest.mark.parametrize("text,fragment", ERRORS, ids=[t or "<empty>" for t, _ in ERRORS])
def test_errors_name_the_text(text: str, fragment: str) -> None:
    with pytest.raises(AsmError) as info:
        assemble_one(text, PC)
    message = str(info.value)
    assert "\n" not in message and repr(text) in message and fragment in message


def test_assemble_errors() -> None:
    assert issubclass(AsmError, ValueError)  # litmus_machine refuses a test on ValueError
    with pytest.raises(AsmError, match="label 'L0' is defined twice"):
        assemble(["L0:", "L0: NOP"], PC)
    with pytest.raises(AsmError, match=r"'B L1'.*unknown label 'L1'"):
        assemble(["L0: NOP", "B L1"], PC)
    with pytest.raises(AsmError, match="not text"):
        assemble(["NOP", 5], PC)  # type: ignore[list-item]


def test_only_asmerror_escapes() -> None:
    """Mutated instruction text: either a word capstone decodes, or AsmError, nothing else."""
    rng = random.Random(7)
    words = [*mnemonics(), "CVAU", "IVAU", "ISH", "SY", "ELR_EL1", "L0", ".+4", ".-", "#1", "#-1",
             "#0x10000", "#99999999999999999999", "[X1]", "[SP,#8]", "[X1,W2,SXTW]", "[X1", "]",
             "X0", "W1", "SP", "XZR", "WSP", "LSL #2", "SXTW", "ROR", "EQ", ",", "", "!", "#", "."]
    for _ in range(4000):
        text = rng.choice(words) + " " + ",".join(rng.choice(words) for _ in range(rng.randrange(5)))
        try:
            word = assemble_one(text, PC, {"L0": PC + 64})
        except AsmError:
            continue
        assert 0 <= word < 1 << 32
        assert len(list(_CS.disasm(struct.pack("<I", word), PC))) == 1, text


def _catalogue_files() -> list[Path]:
    return sorted(CATALOGUE.glob("*/*.litmus"))


@pytest.mark.skipif(not CATALOGUE.is_dir(), reason="the development catalogue is not here")
def test_development_catalogue_assembles_and_reads_back() -> None:
    """Every column of every development test assembles, and capstone reads each instruction
    back as written (label operands as the labels' addresses); instruction values too."""
    from fuzzer.litmus import Instr, parse_file

    files = _catalogue_files()
    assert len(files) >= 37
    for path in files:
        test = parse_file(path)
        main: dict[int, dict[str, int]] = {}
        for thread in sorted(test.threads, key=lambda t: t.suffix != ""):  # handlers last
            lines = [s for ln in thread.lines for s in ((f"{ln.label}:",) if ln.label else ()) + (ln.text,)]
            base = 0x100000 * (thread.index + 1) + (0x80000 if thread.suffix else 0)
            code, own = assemble(lines, base, main.get(thread.index))
            main.setdefault(thread.index, own)
            labels = {**main[thread.index], **own}
            texts = [ln.text for ln in thread.lines if ln.text]
            assert len(code) == 4 * len(texts), path
            for i, text in enumerate(texts):
                pc = base + 4 * i
                word = struct.unpack_from("<I", code, 4 * i)[0]
                want = _norm(_with_addresses(text, labels))
                assert _disasm(word, pc) == want, f"{path.name} {thread.name}: {text}"
        for entry in test.init:
            if isinstance(entry.value, Instr):
                assemble_one(entry.value.text, 0x1000)


def _run(lines: list[str], regs: dict[int, int] | None = None, steps: int = 200) -> unicorn.Uc:
    code, labels = assemble(lines, PC)
    uc = unicorn.Uc(unicorn.UC_ARCH_ARM64, unicorn.UC_MODE_ARM)
    uc.mem_map(PC, 0x1000)
    uc.mem_map(0x20000, 0x1000)
    uc.mem_write(PC, code)
    for reg, value in (regs or {}).items():
        uc.reg_write(reg, value)
    uc.emu_start(PC, PC + len(code), count=steps)
    return uc


def test_program_runs_under_unicorn() -> None:
    """Semantics, not just text: data moves, dependencies, flags, every branch kind."""
    uc = _run([
        "MOV W0,#7", "STR W0,[X20]", "LDR W1,[X20]",  # W1 = 7
        "MOV X2,#8", "STR X2,[X20,#8]", "LDR X3,[X20,X2]",  # X3 = 8
        "MOV W4,#16", "STR W4,[X20,W4,SXTW]", "LDR W5,[X20,#16]",  # W5 = 16
        "EOR W6,W1,W1", "ADD X7,X20,W6,SXTW", "LDAR W8,[X7]", "STLR X2,[X7]",  # W8 = 7, [x] = 8
        "CMP W8,#7", "CSET W9,EQ",  # W9 = 1
        "CMP X3,X2", "CSEL X10,X20,X2,NE",  # equal: X10 = X2 = 8
        "AND W11,W9,W8", "CBNZ W11,L1", "MOV W12,#99", "L1:",  # W12 untouched
        "CBZ X6,L2", "MOV W13,#99", "L2:",
        "CMP W1,W5", "B.LT L3", "MOV W14,#99", "L3:",
        "TBNZ W5,#4,L4", "MOV W15,#99", "L4:",
        "ADR X16,Lf", "BLR X16", "BL Lg", "ADR X17,Lbr", "BR X17", "MOV W21,#99",
        "Lbr: B .+8", "MOV W22,#99",
        "DMB ISH", "DSB SY", "ISB", "DC CVAU,X20", "IC IVAU,X20", "IC IALLU", "NOP",
        "SUB X23,X3,#1", "MOVK X23,#0x1234,LSL #16", "B Lend",
        "Lf: MOV W18,#3", "RET", "Lg: MOV W19,#4", "RET", "Lend:",
    ], {A.UC_ARM64_REG_X20: 0x20000})
    r = {n: uc.reg_read(getattr(A, f"UC_ARM64_REG_X{n}")) for n in range(24)}
    assert (r[1], r[3], r[5], r[6], r[7], r[8], r[9], r[10], r[11]) == (7, 8, 16, 0, 0x20000, 7, 1, 8, 1)
    assert r[12] == r[13] == r[14] == r[15] == r[21] == r[22] == 0
    assert (r[18], r[19], r[23]) == (3, 4, 0x12340007)
    assert struct.unpack("<Q", uc.mem_read(0x20000, 8))[0] == 8
