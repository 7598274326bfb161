"""32-bit ARM in Thumb-2 state (T32, ARMv7-A): the facts of the model, its encoders, nothing else.

Thumb-2 mixes 16- and 32-bit instructions; a 32-bit one is two halfwords, first at the lower
address, and may start at any halfword, so it can straddle an aligned word. Every patched
instruction is hand-encoded as the kernel makes it (arch/arm/kernel/insn.c
__arm_gen_branch_thumb2(), arch/arm/include/asm/opcodes.h __opcode_thumb32_first/second,
arch/arm/include/asm/probes.h) and checked against capstone in tests/test_thumb2_arch.py. The
memory model and the maintained fetch are the A32 model's (arm.py); what differs is the fetch
unit, the list of instructions that may be modified while they execute, and the breakpoints.
"""

from __future__ import annotations

import struct

import capstone
import unicorn
from unicorn import arm_const as A

from .arm import Arm
from .base import Rule


def thumb16(half: int) -> bytes:
    return struct.pack("<H", half)


def thumb32(word: int) -> bytes:
    """A 32-bit Thumb instruction as __opcode_thumb32_compose() holds it (first halfword in the
    high half) to memory: the first halfword at the lower address (__opcode_to_mem_thumb32)."""
    return struct.pack("<HH", __opcode_thumb32_first(word), __opcode_thumb32_second(word))


def __opcode_thumb32_first(word: int) -> int:
    return word >> 16


def __opcode_thumb32_second(word: int) -> int:
    return word & 0xFFFF


def is_thumb32_first(half: int) -> bool:
    """Does this halfword begin a 32-bit instruction (its top five bits 0b11101, 0b11110 or
    0b11111; __opcode_is_thumb32())?"""
    return half >> 11 in (0x1D, 0x1E, 0x1F)


def arm_gen_branch_thumb2(pc: int, addr: int, link: bool = False) -> int:
    """b.w (or bl) at `pc` to `addr`, as __arm_gen_branch_thumb2(): offset from pc + 4, within
    -16 MiB..+16 MiB - 2, halfword aligned. Where the kernel warns and returns 0, this raises."""
    offset = addr - (pc + 4)
    if offset & 1 or not -16777216 <= offset <= 16777214:
        raise ValueError(f"T32 branch out of range or odd: {pc:#x} -> {addr:#x}")
    s = (offset >> 24) & 1
    i1 = (offset >> 23) & 1
    i2 = (offset >> 22) & 1
    imm10 = (offset >> 12) & 0x3FF
    imm11 = (offset >> 1) & 0x7FF
    j1 = (1 - i1) ^ s
    j2 = (1 - i2) ^ s
    first = 0xF000 | s << 10 | imm10
    second = 0x9000 | j1 << 13 | j2 << 11 | imm11 | (1 << 14 if link else 0)
    return first << 16 | second


def thumb2_branch_target(word: int, pc: int) -> tuple[str, int] | None:
    """('jmp'|'call', target) of a b.w / bl (T4 / T1 encodings), else None."""
    first, second = word >> 16, word & 0xFFFF
    if first & 0xF800 != 0xF000 or second & 0xD000 not in (0x9000, 0xD000):
        return None
    s = (first >> 10) & 1
    j1, j2 = (second >> 13) & 1, (second >> 11) & 1
    i1, i2 = 1 - (j1 ^ s), 1 - (j2 ^ s)
    offset = s << 24 | i1 << 23 | i2 << 22 | (first & 0x3FF) << 12 | (second & 0x7FF) << 1
    offset -= (offset & 1 << 24) << 1
    return ("call" if second & 0x4000 else "jmp"), (pc + 4 + offset) & 0xFFFFFFFF


# ---- words protocols and the image use --------------------------------------------------------
NOP16 = thumb16(0xBF00)
NOP_W = thumb32(0xF3AF8000)  # arm_gen_nop() of a Thumb-2 kernel
KPROBE_THUMB16_BREAK = thumb16(0xDE18)  # udf #0x18
KPROBE_THUMB32_BREAK = thumb32(0xF7F0A018)  # udf.w #0x18
BKPT16 = thumb16(0xBE00)
WFI16 = thumb16(0xBF30)
UDF16 = thumb16(0xDE00)
BX_LR16 = thumb16(0x4770)
CPSID_I16 = thumb16(0xB672)
CPSIE_I16 = thumb16(0xB662)
MOV_R9_LR16 = thumb16(0x46F1)
MOV_IP_LR16 = thumb16(0x46F4)
MOV_LR_R9_16 = thumb16(0x46CE)
BX_IP16 = thumb16(0x4760)
ADD_R0_1_16 = thumb16(0x3001)  # adds r0, #1: a 16-bit instruction a kprobe replaces
ADDW_R0_1 = thumb32(0xF1000001)  # add.w r0, r0, #1: a 32-bit one


def addw_imm1(reg: int) -> bytes:
    return thumb32((0xF1000000 | reg << 16) | (reg << 8 | 1))


# ---- the ARMv7 CMODX list (ARMv7 ARM A3.5.4), Thumb state: 16-bit B, NOP, BKPT, SVC ----------
_CMODX16 = (
    (0xF800, 0xE000),  # B (T2, unconditional)
    (0xF000, 0xD000),  # B<c> (T1) with a condition (0b1110 is UDF, 0b1111 is SVC: checked below)
    (0xFFFF, 0xBF00),  # NOP
    (0xFF00, 0xBE00),  # BKPT
    (0xFF00, 0xDF00),  # SVC
)

_SAFE_MNEMONICS = frozenset({"nop", "nop.w", "b", "b.w", "bl", "wfi", "udf", "udf.w", "bkpt", "isb"})
_SAFE_FORMS = frozenset({("bx", "lr"), ("cpsid", "i"), ("cpsie", "i"), ("mov", "sb, lr"), ("mov", "ip, lr"),
                         ("mov", "lr, sb"), ("bx", "ip"), ("add.w", "sl, sl, #1"), ("add.w", "fp, fp, #1"),
                         ("adds", "r0, #1"), ("add.w", "r0, r0, #1")})


class Thumb2(Arm):
    name = "thumb2"
    fetch_unit = 2  # the halfword: each half of a 32-bit instruction is fetched on its own
    atomic_store = 4
    cmodx_scope = "the ARMv7 Thumb list (16-bit B, NOP, BKPT, SVC)"
    far_base = 0x0080_0000  # within b.w/bl's +-16 MiB of the text
    far_stride = 0x0004_0404
    pc_exec_bits = 1  # a Thumb CPU resumes with the T bit (MULTIARCH 2.1)
    RULES = (
        Rule(
            "Real T32 code on Unicorn's ARM CPU in Thumb state, 16- and 32-bit instructions mixed; "
            "every run resumes with the T bit set in its PC (resuming with the plain PC would run "
            "Thumb bytes as ARM); the patched instructions are hand-encoded as the kernel encodes "
            "them (b.w/bl from pc + 4, nop.w, udf breakpoints) and checked against capstone.",
            "arch/arm/kernel/insn.c __arm_gen_branch_thumb2(); arch/arm/include/asm/insn.h "
            "arm_gen_nop() (nop.w); MULTIARCH.md 2.1 (unicorn #1729, #391, PR #1801); "
            "tests/test_thumb2_arch.py.",
        ),
        Rule(
            "The fetch unit is the halfword: a 32-bit Thumb-2 instruction is two halfwords that may "
            "come from two different moments, so a concurrently written one can tear into another "
            "valid instruction (a b.w half-written over a nop.w is a different branch), which runs "
            "(torn-fetch, with what it did).",
            "ARMv7 ARM A3.5.4 'Concurrent modification and execution of instructions' (a 32-bit "
            "Thumb instruction is two halfword fetches) and A6.1 'Thumb instruction set "
            "encoding'; MULTIARCH.md 2.1 (b.w <-> nop.w tears to b.w #0x3b0402 and beq.w).",
        ),
        Rule(
            "Text stores: an aligned 32-bit instruction is one 32-bit store; a 32-bit instruction "
            "that straddles an aligned word is two halfword stores, first half first; a 16-bit "
            "one is one halfword store.",
            "arch/arm/kernel/patch.c __patch_text_real() (the thumb2 && (uintaddr & 2) branch: "
            "two separate 16-bit stores).",
        ),
        Rule(
            "Concurrent modification and execution: both old and new a 16-bit B, NOP, BKPT or SVC, "
            "and a racing fetch runs one of them; a 16-bit pair outside that list is a "
            "cmodx-violation. A 32-bit instruction is never on the list; its hazard is the tear "
            "above, judged when it is fetched (LIMITATION: a 32-bit pair outside the list fetched "
            "whole, both halves from one version, is not reported).",
            "ARMv7 ARM A3.5.4; arch/arm/probes/kprobes/core.c ('It is also needed to atomically "
            "set the two half-words of a 32-bit Thumb breakpoint').",
        ),
        *Arm.RULES[3:6],
        Rule(
            "kprobes' breakpoints are undefined instructions, udf #0x18 (16-bit) and udf.w #0x18 "
            "(32-bit), chosen by the size of the instruction they replace; Unicorn 2.1.4 reports "
            "both as invalid instructions with the PC at them. BKPT (interrupt 7, the PC at it) "
            "goes to the trap handler too.",
            "arch/arm/include/asm/probes.h KPROBE_THUMB16/THUMB32_BREAKPOINT_INSTRUCTION; "
            "arch/arm/probes/kprobes/core.c arch_arm_kprobe(); MULTIARCH.md 2.1.",
        ),
        Arm.RULES[7],
    )

    trap_insn = KPROBE_THUMB16_BREAK
    trap_insns = (KPROBE_THUMB16_BREAK, KPROBE_THUMB32_BREAK, BKPT16)
    trap_name = "undef"

    uc_mode = unicorn.UC_MODE_THUMB
    cs_mode = capstone.CS_MODE_THUMB
    counter_regs = {"tracer": A.UC_ARM_REG_R10, "work": A.UC_ARM_REG_R11}
    filler = UDF16

    # ---- instructions ----------------------------------------------------------------------
    def insn_lengths(self, code: bytes) -> tuple[int, ...]:
        return self._lengths(bytes(code))

    def disasm(self, code: bytes, addr: int) -> str:
        return super(Arm, self).disasm(code, addr)

    def register_abstractable(self, blobs: list[bytes]) -> bool:
        return super(Arm, self).register_abstractable(blobs)

    def encode_call(self, site_addr: int, target: int) -> bytes:
        return thumb32(arm_gen_branch_thumb2(site_addr, target, link=True))

    def encode_jmp(self, site_addr: int, target: int) -> bytes:
        return thumb32(arm_gen_branch_thumb2(site_addr, target))

    def semantics(self, code: bytes, addr: int) -> tuple[str, int]:
        code = bytes(code)
        lens = self.insn_lengths(code)
        if lens == (4,):
            first, second = struct.unpack("<HH", code)
            branch = thumb2_branch_target(first << 16 | second, addr)
            if branch is not None:
                return branch
            return ("next", addr + 4) if code == NOP_W else ("bad", 0)
        if lens and sum(lens) == len(code) and all(
                code[i:i + 2] == NOP16 for i in range(0, len(code), 2)) and set(lens) == {2}:
            return "next", addr + len(code)
        return "bad", 0

    def cmodx_safe(self, code: bytes) -> bool:
        if len(code) != 2:
            return False
        half = struct.unpack("<H", bytes(code))[0]
        if half & 0xF000 == 0xD000 and (half >> 8) & 0xF in (0xE, 0xF):
            return half & 0xFF00 == 0xDF00  # SVC; 0xde is UDF
        return any(half & mask == value for mask, value in _CMODX16)

    def cmodx_unsafe(self, words: list[bytes], versions: list[bytes] | None = None, off: int = 0) -> bytes | None:
        # a unit inside a 32-bit instruction of any version is judged as a whole or torn fetch
        if versions is not None and any(self._in_thumb32(v, off) for v in versions):
            return None
        return next((w for w in words if not self.cmodx_safe(w)), None)

    @staticmethod
    def _in_thumb32(version: bytes, off: int) -> bool:
        # the boundaries the architecture defines (a halfword's top five bits give its
        # instruction's length, ARMv7 ARM A6.1), not capstone's, which refuses some encodings
        pos = 0
        while pos + 2 <= len(version):
            n = 4 if is_thumb32_first(struct.unpack("<H", version[pos:pos + 2])[0]) else 2
            if pos <= off < pos + n:
                return n == 4
            pos += n
        return False

    def abstractable_insn(self, mnemonic: str, op_str: str) -> bool:
        return mnemonic in _SAFE_MNEMONICS or (mnemonic, op_str) in _SAFE_FORMS

    # ---- emitters --------------------------------------------------------------------------
    def call(self, src: int, dst: int) -> bytes:
        return self.encode_call(src, dst)

    def jmp(self, src: int, dst: int) -> bytes:
        return self.encode_jmp(src, dst)

    def ret(self) -> bytes:
        return BX_LR16

    def nop(self) -> bytes:
        return NOP16

    def stop(self) -> bytes:
        return WFI16

    def irqs_off(self) -> bytes:
        return CPSID_I16

    def irqs_on(self) -> bytes:
        return CPSIE_I16

    def counter_inc(self, which: str) -> bytes:
        return addw_imm1({"tracer": 10, "work": 11}[which])

    def traced_entry(self) -> bytes:
        # the saved return address, and a 16-bit NOP so that the site starts word aligned (a
        # protocol puts a 16-bit instruction in its site to make a 32-bit one straddle)
        return MOV_R9_LR16 + NOP16

    def tracer_return(self) -> bytes:
        return MOV_IP_LR16 + MOV_LR_R9_16 + BX_IP16
