"""A64 assembler for the instruction forms of herdtools7's aarch64-ifetch litmus catalogue (and
their near neighbours), spelled as litmus columns spell them. Hand-written for the reason
fuzzer/arch/arm64.py gives (MULTIARCH.md 2.3); every form is checked against capstone in
tests/test_arm64_asm.py, and field names (sf, imm12, option, CRm) are the Arm ARM's. Anything
outside the subset raises AsmError naming the text, never a wrong word: a litmus test that
cannot be assembled must be refused, not run with other code.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence


class AsmError(ValueError):
    """One line: what is wrong with which instruction text."""


class _Unsupported(Exception):
    """The form is outside the subset (the message says which part)."""


class _Invalid(Exception):
    """The form is in the subset but this instance cannot be encoded (range, alignment, label)."""


_COND = {"EQ": 0, "NE": 1, "CS": 2, "HS": 2, "CC": 3, "LO": 3, "MI": 4, "PL": 5, "VS": 6,
         "VC": 7, "HI": 8, "LS": 9, "GE": 10, "LT": 11, "GT": 12, "LE": 13, "AL": 14, "NV": 15}
# DMB/DSB CRm; the other CRm values are other instructions (DSB #0 is SSBB) or reserved
_BARRIER = {"OSHLD": 1, "OSHST": 2, "OSH": 3, "NSHLD": 5, "NSHST": 6, "NSH": 7, "ISHLD": 9,
            "ISHST": 10, "ISH": 11, "LD": 13, "ST": 14, "SY": 15}
# DC/IC, aliases of SYS with CRn 7: name -> (op1, CRm, op2[, whether it takes Xt])
_DC = {"IVAC": (0, 6, 1), "ISW": (0, 6, 2), "CSW": (0, 10, 2), "CISW": (0, 14, 2),
       "ZVA": (3, 4, 1), "CVAC": (3, 10, 1), "CVAU": (3, 11, 1), "CVAP": (3, 12, 1),
       "CIVAC": (3, 14, 1)}
_IC = {"IALLUIS": (0, 1, 0, False), "IALLU": (0, 5, 0, False), "IVAU": (3, 5, 1, True)}
# MSR/MRS system registers by name -> (op0, op1, CRn, CRm, op2); others as S<op0>_<op1>_C<n>_C<m>_<op2>
_SYSREG = {
    "MIDR_EL1": (3, 0, 0, 0, 0), "MPIDR_EL1": (3, 0, 0, 0, 5), "SCTLR_EL1": (3, 0, 1, 0, 0),
    "SPSR_EL1": (3, 0, 4, 0, 0), "ELR_EL1": (3, 0, 4, 0, 1), "SP_EL0": (3, 0, 4, 1, 0),
    "CURRENTEL": (3, 0, 4, 2, 2), "ESR_EL1": (3, 0, 5, 2, 0), "FAR_EL1": (3, 0, 6, 0, 0),
    "VBAR_EL1": (3, 0, 12, 0, 0), "TPIDR_EL1": (3, 0, 13, 0, 4), "CTR_EL0": (3, 3, 0, 0, 1),
    "NZCV": (3, 3, 4, 2, 0), "DAIF": (3, 3, 4, 2, 1), "TPIDR_EL0": (3, 3, 13, 0, 2),
    "CNTVCT_EL0": (3, 3, 14, 0, 2),
}
_PSTATE = {"DAIFSET": 0xD50340DF, "DAIFCLR": 0xD50340FF}  # MSR <pstatefield>, #imm4 (CRm)
_FIXED = {"NOP": 0xD503201F, "YIELD": 0xD503203F, "WFE": 0xD503205F, "WFI": 0xD503207F,
          "SEV": 0xD503209F, "SEVL": 0xD50320BF, "ERET": 0xD69F03E0}
_EXCEPTION = {"SVC": 0xD4000001, "HVC": 0xD4000002, "SMC": 0xD4000003, "BRK": 0xD4200000,
              "HLT": 0xD4400000, "UDF": 0x00000000}
_SHIFT = {"LSL": 0, "LSR": 1, "ASR": 2, "ROR": 3}
_EXTEND = {"UXTB": 0, "UXTH": 1, "UXTW": 2, "UXTX": 3, "SXTB": 4, "SXTH": 5, "SXTW": 6, "SXTX": 7}
_OPERAND_RE = re.compile(r"\[[^\]]*\]!?|[^,]+")
_LABEL_RE = re.compile(r"([A-Za-z_][\w.]*)\s*:(.*)", re.S)
_REG_RE = re.compile(r"([WX])([0-9]|[12][0-9]|30)")
_SP, _ZR = ("SP", "WSP"), ("XZR", "WZR")  # register 31, which of them the field decides


# ---- operands ---------------------------------------------------------------------------------
def _split(ops: str) -> list[str]:
    ops = ops.strip()
    if not ops:
        return []
    parts = [p.strip() for p in _OPERAND_RE.findall(ops)]
    # findall skips empty fields, so ",," or a trailing comma would otherwise pass unnoticed
    if re.sub(r"\s", "", ",".join(parts)) != re.sub(r"\s", "", ops):
        raise _Unsupported(f"cannot split the operands {ops!r}")
    return parts


def _want(ops: list[str], *counts: int) -> None:
    if len(ops) not in counts:
        want = " or ".join(map(str, counts))
        raise _Unsupported(f"takes {want} operand{'' if want == '1' else 's'}, not {len(ops)}")


def _reg(tok: str, *, sp: bool = False, zr: bool = True, sf: int | None = None) -> tuple[int, int]:
    """(number, sf) of a general-purpose register; 31 is SP or ZR as the field says."""
    t = tok.strip().upper()
    if t in _SP:
        if not sp:
            raise _Unsupported(f"{tok} cannot be used here")
        num, width = 31, int(t == "SP")
    elif t in _ZR:
        if not zr:
            raise _Unsupported(f"{tok} cannot be used here")
        num, width = 31, int(t == "XZR")
    elif m := _REG_RE.fullmatch(t):
        num, width = int(m[2]), int(m[1] == "X")
    else:
        raise _Unsupported(f"{tok!r} is not a general-purpose register")
    if sf is not None and width != sf:
        raise _Unsupported(f"{tok} should be {'an X' if sf else 'a W'} register")
    return num, width


def _imm(tok: str) -> int:
    t = tok.strip()
    try:
        return int(t[1:] if t.startswith("#") else t, 0)
    except ValueError:
        raise _Unsupported(f"{tok!r} is not an immediate") from None


def _field(value: int, bits: int, what: str) -> int:
    if not 0 <= value < 1 << bits:
        raise _Invalid(f"{what} {value} is out of range [0, {(1 << bits) - 1}]")
    return value


def _modifier(tok: str) -> tuple[str, int | None]:
    """`LSL #12`, `SXTW`, `SXTW #2` -> (name, amount or None)."""
    m = re.fullmatch(r"([A-Za-z]+)\s*(#.*)?", tok.strip())
    if not m:
        raise _Unsupported(f"{tok.strip()!r} is not a shift or extend")
    return m[1].upper(), (_imm(m[2]) if m[2] else None)


def _target(tok: str, pc: int, labels: Mapping[str, int]) -> int:
    t = tok.strip()
    if m := re.fullmatch(r"\.\s*(?:([+-])\s*(\w+))?", t):
        return pc + (_imm(m[1] + m[2]) if m[1] else 0)
    if t in labels:
        return labels[t]
    if re.fullmatch(r"[A-Za-z_][\w.]*", t):
        raise _Invalid(f"unknown label {t!r}")
    raise _Unsupported(f"branch target {t!r} is neither a label nor .+N/.-N")


def _pcrel(tok: str, pc: int, labels: Mapping[str, int], bits: int, scale: int = 2) -> int:
    """The `bits`-bit two's-complement field of the offset to `tok`, in units of 1 << scale."""
    offset = _target(tok, pc, labels) - pc
    if offset % (1 << scale):
        raise _Invalid(f"target {tok.strip()!r} is {offset:+d} bytes away, not a multiple of "
                       f"{1 << scale}")
    half = 1 << (bits - 1 + scale)
    if not -half <= offset < half:
        raise _Invalid(f"target {tok.strip()!r} is {offset:+#x} bytes away, out of range "
                       f"[-{half:#x}, {half:#x})")
    return (offset >> scale) & ((1 << bits) - 1)


def _bitmask(value: int, width: int) -> tuple[int, int, int] | None:
    """(N, immr, imms) of a logical immediate: a 2..64-bit element of consecutive ones, rotated,
    repeated over the register; None for values that are not one (0 and all-ones never are)."""
    value &= (1 << width) - 1
    if value in (0, (1 << width) - 1):
        return None
    size = width
    while size > 2 and value & ((1 << size // 2) - 1) == value >> size // 2 & ((1 << size // 2) - 1):
        size //= 2
    mask = (1 << size) - 1
    elem, ones = value & mask, bin(value & mask).count("1")
    for r in range(size):
        if ((elem >> r) | (elem << (size - r))) & mask == (1 << ones) - 1:
            return int(size == 64), (size - r) % size, ((~(size - 1) << 1) | (ones - 1)) & 0x3F
    return None


def _mem(tok: str) -> tuple[str, list[str]]:
    """`[Xn]`, `[Xn,#imm]`, `[Xn,Rm{,ext}]` -> (base, rest); write-back forms are refused."""
    t = tok.strip()
    if not (t.startswith("[") and t.endswith("]")):
        raise _Unsupported(f"{t!r} is not a supported memory operand (pre/post-index are not)")
    inner = [p.strip() for p in t[1:-1].split(",")]
    return inner[0], inner[1:]


# ---- encoders: (mnemonic, operands, pc, labels) -> word --------------------------------------
def _enc_branch(m: str, ops: list[str], pc: int, labels: Mapping[str, int]) -> int:
    """Branches, and ADR, the other PC-relative form."""
    if m in ("BR", "BLR", "RET"):
        _want(ops, *((0, 1) if m == "RET" else (1,)))
        rn = _reg(ops[0], sf=1)[0] if ops else 30
        return {"BR": 0xD61F0000, "BLR": 0xD63F0000, "RET": 0xD65F0000}[m] | rn << 5
    if m == "ADR":
        _want(ops, 2)
        imm = _pcrel(ops[1], pc, labels, 21, scale=0)
        return 0x10000000 | (imm & 3) << 29 | (imm >> 2) << 5 | _reg(ops[0], sf=1)[0]
    if m in ("B", "BL") or m.startswith("B."):
        _want(ops, 1)
        if m.startswith("B."):
            return 0x54000000 | _pcrel(ops[0], pc, labels, 19) << 5 | _COND[m[2:]]
        return (0x94000000 if m == "BL" else 0x14000000) | _pcrel(ops[0], pc, labels, 26)
    _want(ops, 3 if m.startswith("TB") else 2)
    rt, sf = _reg(ops[0])
    if m in ("CBZ", "CBNZ"):
        return sf << 31 | 0x34000000 | (m == "CBNZ") << 24 | _pcrel(ops[1], pc, labels, 19) << 5 | rt
    bit = _field(_imm(ops[1]), 6 if sf else 5, "bit number")
    return (bit >> 5) << 31 | 0x36000000 | (m == "TBNZ") << 24 | (bit & 31) << 19 | _pcrel(
        ops[2], pc, labels, 14) << 5 | rt


def _wide(m: str, rd: int, sf: int, imm: int, shift: int) -> int:
    if shift % 16 or not 0 <= shift < (64 if sf else 32):
        raise _Invalid(f"shift {shift} is not LSL #0/#16" + ("/#32/#48" if sf else ""))
    base = {"MOVN": 0x12800000, "MOVZ": 0x52800000, "MOVK": 0x72800000}[m]
    return sf << 31 | base | shift // 16 << 21 | _field(imm, 16, "immediate") << 5 | rd


def _enc_movwide(m: str, ops: list[str], pc: int, labels: Mapping[str, int]) -> int:
    _want(ops, 2, 3)
    rd, sf = _reg(ops[0])
    shift = 0
    if len(ops) == 3:
        name, shift = _modifier(ops[2])
        if name != "LSL" or shift is None:
            raise _Unsupported(f"{ops[2]!r}: only LSL #n may follow the immediate")
    return _wide(m, rd, sf, _imm(ops[1]), shift)


def _enc_mov(m: str, ops: list[str], pc: int, labels: Mapping[str, int]) -> int:
    _want(ops, 2)
    rd, sf = _reg(ops[0], sp=True)
    if not ops[1].startswith("#"):
        rm = _reg(ops[1], sp=True, sf=sf)[0]
        if ops[0].upper() in _SP or ops[1].upper() in _SP:  # ADD Rd, Rn, #0, where 31 is SP, never ZR
            if ops[0].upper() in _ZR or ops[1].upper() in _ZR:
                raise _Unsupported("a move between SP and the zero register")
            return sf << 31 | 0x11000000 | rm << 5 | rd
        return sf << 31 | 0x2A0003E0 | rm << 16 | rd  # ORR Rd, ZR, Rm
    width = 64 if sf else 32
    value = _imm(ops[1])
    if not -(1 << (width - 1)) <= value < 1 << width:
        raise _Invalid(f"immediate {value} does not fit a {width}-bit register")
    value &= (1 << width) - 1
    if ops[0].upper() not in _SP:  # MOVZ/MOVN's Rd 31 is the zero register
        for name, v in (("MOVZ", value), ("MOVN", ~value & ((1 << width) - 1))):
            for shift in range(0, width, 16):
                if v & ~(0xFFFF << shift) == 0:
                    return _wide(name, rd, sf, v >> shift, shift)
    if (enc := _bitmask(value, width)) is not None:  # ORR Rd|SP, ZR, #imm
        n, immr, imms = enc
        return sf << 31 | 0x32000000 | n << 22 | immr << 16 | imms << 10 | 31 << 5 | rd
    raise _Invalid(f"immediate {value:#x} needs more than one instruction")


_ADDSUB = {"ADD": (0, 0), "ADDS": (0, 1), "SUB": (1, 0), "SUBS": (1, 1), "CMN": (0, 1), "CMP": (1, 1)}


def _enc_addsub(m: str, ops: list[str], pc: int, labels: Mapping[str, int]) -> int:
    op, s = _ADDSUB[m]
    if m in ("CMP", "CMN"):  # SUBS/ADDS with the zero register as destination
        _want(ops, 2, 3)
        ops = ["XZR" if _reg(ops[0], sp=True)[1] else "WZR", *ops]
    _want(ops, 3, 4)
    rd, sf = _reg(ops[0], sp=not s)
    rn = _reg(ops[1], sp=True, sf=sf)[0]
    rd_sp, rn_sp = ops[0].upper() in _SP, ops[1].upper() in _SP
    top = sf << 31 | op << 30 | s << 29
    mod, amount = _modifier(ops[3]) if len(ops) == 4 else ("", None)
    if (ops[2].startswith("#") or mod in _EXTEND or rd_sp or rn_sp) and (
            ops[1].upper() in _ZR or (ops[0].upper() in _ZR and not s)):
        raise _Unsupported("register 31 is SP in this form, not the zero register")
    if ops[2].startswith("#"):
        imm, sh = _imm(ops[2]), 0
        if mod:
            if mod != "LSL" or amount not in (0, 12):
                raise _Unsupported(f"{ops[3]!r}: an immediate takes only LSL #0 or LSL #12")
            sh = int(amount == 12)
        return top | 0x11000000 | sh << 22 | _field(imm, 12, "immediate") << 10 | rn << 5 | rd
    if mod in _EXTEND or rd_sp or rn_sp:  # extended register: the only register form with SP
        option = _EXTEND.get(mod, 3 if sf else 2)  # LSL with SP means UXTX (UXTW for W)
        if mod not in _EXTEND and mod not in ("", "LSL"):
            raise _Unsupported(f"{ops[3]!r}: with SP only LSL or an extend may follow")
        rm = _reg(ops[2], sf=int(option & 3 == 3) if sf else 0)[0]
        if not 0 <= (amount or 0) <= 4:
            raise _Invalid(f"extend amount {amount} is not 0..4")
        return top | 0x0B200000 | rm << 16 | option << 13 | (amount or 0) << 10 | rn << 5 | rd
    return top | 0x0B000000 | _shifted(ops[2:], sf, ror=False) | rn << 5 | rd


def _shifted(ops: list[str], sf: int, ror: bool) -> int:
    """The Rm, shift and imm6 fields of a shifted-register operand."""
    rm = _reg(ops[0], sf=sf)[0]
    shift, amount = 0, 0
    if len(ops) == 2:
        name, amt = _modifier(ops[1])
        if name not in _SHIFT or (name == "ROR" and not ror) or amt is None:
            raise _Unsupported(f"{ops[1]!r} is not a shift this instruction takes")
        shift, amount = _SHIFT[name], _field(amt, 6 if sf else 5, "shift amount")
    return shift << 22 | rm << 16 | amount << 10


_LOGICAL = {"AND": (0, 0), "BIC": (0, 1), "ORR": (1, 0), "ORN": (1, 1), "EOR": (2, 0),
            "EON": (2, 1), "ANDS": (3, 0), "BICS": (3, 1), "TST": (3, 0), "MVN": (1, 1)}


def _enc_logical(m: str, ops: list[str], pc: int, labels: Mapping[str, int]) -> int:
    opc, n = _LOGICAL[m]
    if m in ("TST", "MVN"):  # ANDS ZR, Rn, op / ORN Rd, ZR, op
        _want(ops, 2, 3)
        zr = "XZR" if _reg(ops[0])[1] else "WZR"
        ops = [zr, *ops] if m == "TST" else [ops[0], zr, *ops[1:]]
    _want(ops, 3, 4)
    if ops[2].startswith("#"):
        _want(ops, 3)
        rd, sf = _reg(ops[0], sp=opc != 3, zr=opc == 3)
        rn = _reg(ops[1], sf=sf)[0]
        if n or (enc := _bitmask(_imm(ops[2]), 64 if sf else 32)) is None:
            raise _Invalid(f"{ops[2]} is not a logical immediate for {m}")
        bn, immr, imms = enc
        return sf << 31 | opc << 29 | 0x12000000 | bn << 22 | immr << 16 | imms << 10 | rn << 5 | rd
    rd, sf = _reg(ops[0])
    rn = _reg(ops[1], sf=sf)[0]
    return sf << 31 | opc << 29 | 0x0A000000 | n << 21 | _shifted(ops[2:], sf, ror=True) | rn << 5 | rd


_CSEL = {"CSEL": 0x1A800000, "CSINC": 0x1A800400, "CSINV": 0x5A800000, "CSNEG": 0x5A800400}


def _enc_csel(m: str, ops: list[str], pc: int, labels: Mapping[str, int]) -> int:
    if m in ("CSET", "CSETM"):  # CSINC/CSINV Rd, ZR, ZR, invert(cond)
        _want(ops, 2)
        rd, sf = _reg(ops[0])
        cond = _cond(ops[1])
        if cond >= 14:  # inverting AL would give NV, which executes as AL
            raise _Invalid(f"{m} cannot take condition {ops[1].strip()}")
        return sf << 31 | _CSEL["CSINC" if m == "CSET" else "CSINV"] | 31 << 16 | (cond ^ 1) << 12 | 31 << 5 | rd
    _want(ops, 4)
    rd, sf = _reg(ops[0])
    rn, rm = _reg(ops[1], sf=sf)[0], _reg(ops[2], sf=sf)[0]
    return sf << 31 | _CSEL[m] | rm << 16 | _cond(ops[3]) << 12 | rn << 5 | rd


def _cond(tok: str) -> int:
    if tok.strip().upper() not in _COND:
        raise _Unsupported(f"{tok.strip()!r} is not a condition code")
    return _COND[tok.strip().upper()]


# mnemonic -> (size, opc): size 0..3 is B/H/W/X, opc 0 store, 1 load; None: from Rt's width
_LDST = {"STRB": (0, 0), "LDRB": (0, 1), "STRH": (1, 0), "LDRH": (1, 1), "STR": (None, 0),
         "LDR": (None, 1)}


def _enc_ldst(m: str, ops: list[str], pc: int, labels: Mapping[str, int]) -> int:
    _want(ops, 2)
    size, opc = _LDST[m]
    rt, sf = _reg(ops[0], sf=None if size is None else 0)
    size = 2 + sf if size is None else size
    base, rest = _mem(ops[1])
    rn = _reg(base, sp=True, zr=False, sf=1)[0]
    top = size << 30 | opc << 22 | rn << 5 | rt
    if not rest or (len(rest) == 1 and rest[0].startswith("#")):  # unsigned offset, scaled by the size
        off = _imm(rest[0]) if rest else 0
        if off < 0 or off % (1 << size):
            raise _Invalid(f"offset {off} is not a non-negative multiple of {1 << size} "
                           "(LDUR/STUR forms are not supported)")
        return top | 0x39000000 | _field(off >> size, 12, "scaled offset") << 10
    if len(rest) > 2:
        raise _Unsupported(f"{ops[1]!r} has too many parts")
    mod, amount = _modifier(rest[1]) if len(rest) == 2 else ("LSL", None)
    option = {"UXTW": 2, "LSL": 3, "SXTW": 6, "SXTX": 7}.get(mod)
    if option is None:
        raise _Unsupported(f"{rest[1]!r}: the index takes only LSL, UXTW, SXTW or SXTX")
    rm = _reg(rest[0], zr=False, sf=option & 1)[0]
    if amount not in (None, 0, size):
        raise _Invalid(f"index shift #{amount} is neither #0 nor #{size}")
    s = int(amount is not None and (amount == size if size else True))
    return top | 0x38200800 | rm << 16 | option << 13 | s << 12


_ACQREL = {"STLRB": (0, 0x089FFC00), "LDARB": (0, 0x08DFFC00), "STLRH": (1, 0x089FFC00),
           "LDARH": (1, 0x08DFFC00), "STLR": (None, 0x089FFC00), "LDAR": (None, 0x08DFFC00)}


def _enc_acqrel(m: str, ops: list[str], pc: int, labels: Mapping[str, int]) -> int:
    _want(ops, 2)
    size, base = _ACQREL[m]
    rt, sf = _reg(ops[0], sf=None if size is None else 0)
    reg, rest = _mem(ops[1])
    if rest and (len(rest) > 1 or not rest[0].startswith("#") or _imm(rest[0]) != 0):
        raise _Unsupported(f"{ops[1]!r}: {m} takes only [Xn] or [Xn,#0]")
    rn = _reg(reg, sp=True, zr=False, sf=1)[0]
    return (2 + sf if size is None else size) << 30 | base | rn << 5 | rt


def _enc_barrier(m: str, ops: list[str], pc: int, labels: Mapping[str, int]) -> int:
    if m == "ISB":  # SY is the only named option
        _want(ops, 0, 1)
        if ops and ops[0].upper() != "SY":
            raise _Unsupported(f"ISB takes only SY, not {ops[0]!r}")
        return 0xD5033FDF
    _want(ops, 1)
    if ops[0].upper() not in _BARRIER:
        raise _Unsupported(f"{ops[0]!r} is not one of the options {', '.join(_BARRIER)}")
    return (0xD50330BF if m == "DMB" else 0xD503309F) | _BARRIER[ops[0].upper()] << 8


def _enc_cache(m: str, ops: list[str], pc: int, labels: Mapping[str, int]) -> int:
    if not ops:
        raise _Unsupported("takes an operation")
    name = ops[0].upper()
    if m == "DC" and name in _DC:
        (op1, crm, op2), has_rt = _DC[name], True
    elif m == "IC" and name in _IC:
        op1, crm, op2, has_rt = _IC[name]
    else:
        raise _Unsupported(f"{ops[0]!r} is not one of {', '.join(_DC if m == 'DC' else _IC)}")
    _want(ops, 2 if has_rt else 1)
    rt = _reg(ops[1], sf=1)[0] if has_rt else 31
    return 0xD5080000 | op1 << 16 | 7 << 12 | crm << 8 | op2 << 5 | rt


def _enc_simple(m: str, ops: list[str], pc: int, labels: Mapping[str, int]) -> int:
    """No operands, or an exception-generating #imm16."""
    if m in _FIXED:
        _want(ops, 0)
        return _FIXED[m]
    _want(ops, 1)
    return _EXCEPTION[m] | _field(_imm(ops[0]), 16, "immediate") << (0 if m == "UDF" else 5)


def _sysreg(tok: str) -> int:
    t = tok.strip().upper()
    if m := re.fullmatch(r"S([23])_([0-7])_C(\d+)_C(\d+)_([0-7])", t):
        enc = tuple(int(x) for x in m.groups())
        if enc[2] > 15 or enc[3] > 15:
            raise _Invalid(f"{tok.strip()}: CRn and CRm are 0..15")
    elif t in _SYSREG:
        enc = _SYSREG[t]
    else:
        raise _Unsupported(f"system register {tok.strip()!r} is not one of {', '.join(_SYSREG)} "
                           "(S<op0>_<op1>_C<n>_C<m>_<op2> names any)")
    op0, op1, crn, crm, op2 = enc
    return (op0 - 2) << 19 | op1 << 16 | crn << 12 | crm << 8 | op2 << 5


def _enc_sysreg(m: str, ops: list[str], pc: int, labels: Mapping[str, int]) -> int:
    _want(ops, 2)
    if m == "MRS":
        return 0xD5300000 | _sysreg(ops[1]) | _reg(ops[0], sf=1)[0]
    if ops[0].upper() in _PSTATE:
        return _PSTATE[ops[0].upper()] | _field(_imm(ops[1]), 4, "immediate") << 8
    return 0xD5100000 | _sysreg(ops[0]) | _reg(ops[1], sf=1)[0]


_ENCODERS: dict[str, Callable[[str, list[str], int, Mapping[str, int]], int]] = {
    **dict.fromkeys(("B", "BL", "BR", "BLR", "RET", "CBZ", "CBNZ", "TBZ", "TBNZ", "ADR",
                     *(f"B.{c}" for c in _COND)), _enc_branch),
    "MOV": _enc_mov, "MOVZ": _enc_movwide, "MOVN": _enc_movwide, "MOVK": _enc_movwide,
    **dict.fromkeys(_ADDSUB, _enc_addsub), **dict.fromkeys(_LOGICAL, _enc_logical),
    **dict.fromkeys((*_CSEL, "CSET", "CSETM"), _enc_csel), **dict.fromkeys(_LDST, _enc_ldst),
    **dict.fromkeys(_ACQREL, _enc_acqrel), **dict.fromkeys(("DMB", "DSB", "ISB"), _enc_barrier),
    "DC": _enc_cache, "IC": _enc_cache, **dict.fromkeys((*_EXCEPTION, *_FIXED), _enc_simple),
    "MSR": _enc_sysreg, "MRS": _enc_sysreg,
}


# ---- public API -------------------------------------------------------------------------------
def mnemonics() -> tuple[str, ...]:
    """The supported mnemonics (upper case; matching is case-insensitive)."""
    return tuple(sorted(_ENCODERS))


def assemble_one(text: str, pc: int, labels: Mapping[str, int] | None = None) -> int:
    """The 32-bit word of one instruction at address `pc`. Branch targets are labels (looked up
    in `labels`, case-sensitively) or `.+N`/`.-N`, relative to `pc`, as in litmus init values
    like `instr:"B .+12"`."""
    src = text.strip() if isinstance(text, str) else ""
    mnemonic, _, rest = re.sub(r"\s+", " ", src).partition(" ")
    encoder = _ENCODERS.get(mnemonic.upper())
    if encoder is None:
        why = "no instruction" if not src else f"{mnemonic!r} is not a supported mnemonic"
        raise AsmError(f"unsupported instruction {text!r}: {why}")
    try:
        return encoder(mnemonic.upper(), _split(rest), pc, labels or {})
    except _Unsupported as e:
        raise AsmError(f"unsupported instruction {text!r}: {e}") from None
    except _Invalid as e:
        raise AsmError(f"cannot encode {text!r}: {e}") from None
    except (ValueError, KeyError, IndexError, TypeError) as e:  # a form no check above foresaw
        raise AsmError(f"unsupported instruction {text!r}: {type(e).__name__}: {e}") from None


def assemble(lines: Sequence[str], base: int,
             extern: Mapping[str, int] | None = None) -> tuple[bytes, dict[str, int]]:
    """Litmus column lines ("L0:", "L0: B L1", "STR W0,[X1]", "") laid out 4 bytes apiece
    from `base` -> (little-endian code, {label: address}). A label after the last instruction
    gets base + len(code). `extern` gives labels defined elsewhere: herd's fault handler column
    P0.F branches to P0's labels; the column's own labels win."""
    labels: dict[str, int] = {}
    insns: list[tuple[str, int]] = []
    for line in lines:
        if not isinstance(line, str):
            raise AsmError(f"unsupported instruction {line!r}: not text")
        rest = line.strip()
        while m := _LABEL_RE.fullmatch(rest):
            if m[1] in labels:
                raise AsmError(f"cannot encode {line!r}: label {m[1]!r} is defined twice")
            labels[m[1]] = base + 4 * len(insns)
            rest = m[2].strip()
        if rest:
            insns.append((rest, base + 4 * len(insns)))
    known = {**(extern or {}), **labels}
    code = b"".join(assemble_one(t, pc, known).to_bytes(4, "little") for t, pc in insns)
    return code, labels
