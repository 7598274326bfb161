"""32-bit ARM, A32 (ARM state, ARMv7-A): the facts of the model, its encoders, and nothing else.

Keystone mis-encodes the branches the kernel patches (MULTIARCH.md 2.3), so every word here is
hand-encoded the way the kernel makes it (arch/arm/kernel/insn.c __arm_gen_branch_arm(),
arch/arm/include/asm/insn.h arm_gen_nop(), arch/arm/include/asm/probes.h and kprobes' breakpoint)
and checked against capstone in tests/test_arm_isa_tables.py. Thumb-2 (T32) is its own model, next to
this one.

ARMv7 ARM section numbers are those of DDI 0406C.d; each rule also names the section's title.
"""

from __future__ import annotations

import struct

import capstone
import unicorn
from unicorn import arm_const as A

from .base import EXCEPTION_ENTRY, EXCEPTION_RETURN, IPI_TAKEN, SYNC_CORE, Arch, Rule


def insn(word: int) -> bytes:
    """An A32 instruction: a 32-bit little-endian word (the kernel's __opcode_to_mem_arm)."""
    return struct.pack("<I", word)


def word_of(code: bytes) -> int:
    return struct.unpack("<I", bytes(code))[0]


# ---- the kernel's encoders ---------------------------------------------------------------------
ARM_NOP = 0xE1A00000  # mov r0, r0: arm_gen_nop() of an ARM (not Thumb-2) kernel
NOP_HINT = 0xE320F000  # the architectural NOP (a hint), which the CMODX list names
KPROBE_ARM_BREAKPOINT_INSTRUCTION = 0x07F001F8  # arch/arm/include/asm/probes.h: an undefined insn
BKPT0 = 0xE1200070
_B, _BL = 0xEA000000, 0xEB000000


def arm_gen_branch(pc: int, addr: int, link: bool = False) -> int:
    """B (or BL) at `pc` to `addr`, as __arm_gen_branch_arm(): the offset is from pc + 8, word
    aligned, within +-32 MiB. Where the kernel warns and returns 0, this raises."""
    offset = addr - (pc + 8)
    if offset & 3 or not -(32 << 20) <= offset < (32 << 20):
        raise ValueError(f"A32 branch out of range or misaligned: {pc:#x} -> {addr:#x}")
    return (_BL if link else _B) | ((offset >> 2) & 0x00FFFFFF)


def branch_target(word: int, pc: int) -> int:
    offset = (word & 0x00FFFFFF) << 2
    offset -= (offset & 1 << 25) << 1
    return (pc + 8 + offset) & 0xFFFFFFFF


# ---- words protocols and the image use --------------------------------------------------------
NOP = insn(ARM_NOP)
NOP_H = insn(NOP_HINT)
KPROBE_BREAK = insn(KPROBE_ARM_BREAKPOINT_INSTRUCTION)
BKPT = insn(BKPT0)
ADD_R0_1 = insn(0xE2800001)  # add r0, r0, #1: an instruction a kprobe replaces
ISB = insn(0xF57FF06F)  # isb sy
DSB_ISH = insn(0xF57FF04B)
DMB_ISH = insn(0xF57FF05B)
WFI = insn(0xE320F003)
UDF = insn(0xE7F000F0)  # udf #0: permanently undefined
BX_LR = insn(0xE12FFF1E)
CPSID_I = insn(0xF10C0080)
CPSIE_I = insn(0xF1080080)
MOV_R9_LR = insn(0xE1A0900E)  # mov r9, lr: the image's traced entry saves the return address
MOV_R12_LR = insn(0xE1A0C00E)  # mov ip, lr
MOV_LR_R9 = insn(0xE1A0E009)  # mov lr, r9
BX_R12 = insn(0xE12FFF1C)  # bx ip
PUSH_LR = insn(0xE52DE004)  # push {lr} (str lr, [sp, #-4]!): what gcc -pg puts before the mcount call
POP_LR = insn(0xE8BD4000)  # pop {lr} (ldm sp!, {lr}): the kernel's ftrace NOP, which undoes it
CPSR_I = 1 << 7
TRACER_REG, WORK_REG = 10, 11  # r10, r11: counters nothing else reads


def add_imm1(reg: int) -> bytes:
    return insn(0xE2800001 | reg << 16 | reg << 12)


# ---- the ARMv7 CMODX list (ARMv7 ARM A3.5.4), ARM state ------------------------------------------
# (mask, value) per instruction class, any condition but 0b1111 (unconditional space) where the
# class has a condition field
_CMODX = (
    (0x0E000000, 0x0A000000),  # B, BL (bit 24: link), any imm24
    (0x0FFFFFFF, 0x0320F000),  # NOP (the hint)
    (0xFFF000F0, 0xE1200070),  # BKPT #imm16 (AL only)
    (0x0F000000, 0x0F000000),  # SVC #imm24
    (0xFFF000F0, 0xE1400070),  # HVC #imm16
    (0x0FFFFFF0, 0x01600070),  # SMC #imm4
)

_SAFE_MNEMONICS = frozenset({"nop", "b", "bl", "wfi", "udf", "bkpt", "isb"})
_SAFE_FORMS = frozenset({("mov", "r0, r0"), ("bx", "lr"), ("cpsid", "i"), ("cpsie", "i"),
                         ("mov", "sb, lr"), ("mov", "ip, lr"), ("mov", "lr, sb"), ("bx", "ip"),
                         ("add", "sl, sl, #1"), ("add", "fp, fp, #1"), ("add", "r0, r0, #1"),
                         ("str", "lr, [sp, #-4]!"), ("ldm", "sp!, {lr}")})


class Arm(Arch):
    name = "arm"
    # each argued in RULES below
    fetch_unit = 4
    atomic_store = 4
    store_buffer = "ooo"
    own_store_visible_to_fetch = False
    stop_machine_serializes = True
    serializing_events = (EXCEPTION_ENTRY, EXCEPTION_RETURN, IPI_TAKEN, SYNC_CORE)
    fetch_model = "maintained"
    cmodx_scope = "the ARMv7 list (B, BL, NOP, BKPT, SVC, HVC, SMC)"
    far_base = 0x0200_0000  # within BL's +-32 MiB of the text
    far_stride = 0x0004_0404
    RULES = (
        Rule(
            "Real A32 code on Unicorn's ARM CPU (Cortex-A15, SVC mode); the patched words are "
            "hand-encoded as the kernel encodes them (a branch's offset from pc + 8; arm_gen_nop() "
            "is mov r0, r0, not the NOP hint) and checked against capstone.",
            "arch/arm/kernel/insn.c __arm_gen_branch_arm(); arch/arm/include/asm/insn.h "
            "arm_gen_nop(); MULTIARCH.md 2.1; tests/test_arm_isa_tables.py.",
        ),
        Rule(
            "Fetch unit and text store are the aligned 32-bit word: an A32 instruction is fetched "
            "whole and written with one aligned 32-bit store (__patch_text_real()'s *(u32 *) "
            "store), single-copy atomic.",
            "ARMv7 ARM A3.5.3 'Atomicity in the ARM architecture' (single-copy atomicity of "
            "aligned word accesses) and A3.5.4 'Concurrent modification and execution of "
            "instructions'; arch/arm/kernel/patch.c __patch_text_real().",
        ),
        Rule(
            "Concurrent modification and execution: when both the old and the new instruction "
            "are B, BL, NOP, BKPT, SVC, HVC or SMC, a racing fetch executes the old or the new "
            "one; any other pair (mov r0, r0, the kernel's NOP, included) is UNPREDICTABLE "
            "(cmodx-violation) and needs the CPUs synchronized: patch_text() always uses "
            "stop_machine.",
            "ARMv7 ARM A3.5.4 'Concurrent modification and execution of instructions'; "
            "arch/arm/kernel/patch.c patch_text() (stop_machine(patch_text_stop_machine)); "
            "arch/arm/probes/kprobes/core.c (why kprobes are synchronized with stop_machine).",
        ),
        Rule(
            "Stores drain from a weak store buffer, as on arm64: to different addresses in any "
            "order, to one address in program order; dmb ish (smp_mb) drains, dmb ishst (smp_wmb) "
            "orders stores; value-returning atomics are fully ordered.",
            "ARMv7 ARM A3.8 'Memory access order' (weakly ordered normal memory) and A8.8.43 DMB; "
            "arch/arm/include/asm/barrier.h.",
        ),
        Rule(
            "Instruction fetch is not coherent with data stores: a write reaches a CPU's fetch "
            "once the writer cleaned the data cache to the PoU (DCCMVAU), invalidated the "
            "instruction cache (ICIMVAU, broadcast with the multiprocessing extensions), a DSB "
            "completed both, and the fetching CPU took a context synchronization event (ISB, an "
            "exception, an exception return).",
            "ARMv7 ARM A3.9.5 'Ordering of cache and branch predictor maintenance operations' and "
            "B2.2.9 'Ordering of cache ... maintenance'; arch/arm/mm/cache-v7.S "
            "v7_coherent_kern_range (dccmvau; dsb; icimvau; dsb; isb), flush_icache_range().",
        ),
        Rule(
            "ASSUMPTION (switchable): CPUs parked in stop_machine leave it by an exception return "
            "(they entered through the stopper's IPI or a preemption), a context synchronization "
            "event; patch_text_stop_machine() has no ISB of its own for them.",
            "arch/arm/kernel/patch.c patch_text_stop_machine(); kernel/stop_machine.c; ARMv7 ARM "
            "B1.8 'Exception handling' (exception return is context synchronizing). Disable with "
            "--no-stop-machine-serializes.",
        ),
        Rule(
            "kprobes' breakpoint is an undefined instruction (0x07f001f8 in ARM state): the "
            "undefined-instruction handler reads the faulting word and claims it (Unicorn 2.1.4 "
            "reports it as an invalid instruction with the PC at it; capstone does not decode "
            "it, so the model does). BKPT (Unicorn: interrupt 7, the PC at it) goes to the trap "
            "handler too.",
            "arch/arm/include/asm/probes.h KPROBE_ARM_BREAKPOINT_INSTRUCTION; arch/arm/probes/"
            "kprobes/core.c kprobe_trap_handler(); MULTIARCH.md 2.1.",
        ),
        Rule(
            "IRQs and IPIs are taken only with CPSR.I clear (cpsid i / cpsie i). ARM has no NMI the "
            "kernel patches around: the NMI frame is a FIQ-like worst case.",
            "ARMv7 ARM B1.3.3 'Program Status Registers' (the I bit); arch/arm/include/asm/"
            "irqflags.h arch_local_irq_disable().",
        ),
    )

    trap_insn = KPROBE_BREAK
    trap_insns = (KPROBE_BREAK, BKPT)
    trap_name = "undef"
    # BKPT is interrupt 7, the PC at it; kprobes' udf an invalid instruction, the PC at it
    trap_intno = 7
    trap_pc_after = 0

    uc_arch = unicorn.UC_ARCH_ARM
    uc_mode = unicorn.UC_MODE_ARM
    cs_arch = capstone.CS_ARCH_ARM
    cs_mode = capstone.CS_MODE_ARM

    reg_pc = A.UC_ARM_REG_PC
    reg_sp = A.UC_ARM_REG_SP
    reg_irq = A.UC_ARM_REG_CPSR
    irq_mask = CPSR_I
    irq_set_enables = False  # CPSR.I set = masked
    link_reg = A.UC_ARM_REG_LR
    word_size = 4
    counter_regs = {"tracer": A.UC_ARM_REG_R10, "work": A.UC_ARM_REG_R11}
    state_regs = (A.UC_ARM_REG_LR, A.UC_ARM_REG_R9, A.UC_ARM_REG_R12)
    filler = UDF

    # ---- instructions ----------------------------------------------------------------------
    def insn_lengths(self, code: bytes) -> tuple[int, ...]:
        # kprobes' breakpoint is an undefined instruction capstone does not decode: it is one
        code = bytes(code)
        out: list[int] = []
        pos = 0
        while pos + 4 <= len(code):
            if code[pos:pos + 4] == KPROBE_BREAK:
                out.append(4)
                pos += 4
                continue
            rest = self._lengths(code[pos:])
            if not rest:
                break
            n = rest[0]
            out.append(n)
            pos += n
        return tuple(out)

    def disasm(self, code: bytes, addr: int) -> str:
        if bytes(code[:4]) == KPROBE_BREAK:
            rest = self.disasm(code[4:], addr + 4) if len(code) > 4 else ""
            return "udf (kprobe)" + (f"; {rest}" if rest else "")
        return super().disasm(code, addr)

    def encode_call(self, site_addr: int, target: int) -> bytes:
        return insn(arm_gen_branch(site_addr, target, link=True))

    def encode_jmp(self, site_addr: int, target: int) -> bytes:
        return insn(arm_gen_branch(site_addr, target))

    def semantics(self, code: bytes, addr: int) -> tuple[str, int]:
        if len(code) != 4:
            return "bad", 0
        word = word_of(code)
        if word & 0x0E000000 == 0x0A000000 and word >> 28 == 0xE:
            return ("call" if word & 1 << 24 else "jmp"), branch_target(word, addr)
        if code != KPROBE_BREAK and self.insn_lengths(code) == (4,) and word >> 28 == 0xE \
                and word & 0x0E000000 != 0x0A000000:
            return "next", addr + 4
        return "bad", 0

    def cmodx_safe(self, code: bytes) -> bool:
        if len(code) != 4:
            return False
        word = word_of(code)
        return word >> 28 != 0xF and any(word & mask == value for mask, value in _CMODX)

    def register_abstractable(self, blobs: list[bytes]) -> bool:
        # kprobes' breakpoint only traps: keyed as the udf it is to the CPU
        return super().register_abstractable([bytes(b).replace(KPROBE_BREAK, UDF) for b in blobs])

    def abstractable_insn(self, mnemonic: str, op_str: str) -> bool:
        return mnemonic in _SAFE_MNEMONICS or (mnemonic, op_str) in _SAFE_FORMS

    # ---- emitters --------------------------------------------------------------------------
    def ret(self) -> bytes:
        return BX_LR

    def nop(self) -> bytes:
        return NOP

    def stop(self) -> bytes:
        return WFI  # Unicorn 2.1.4 ends emu_start at a wfi, silently, the PC past it

    def irqs_off(self) -> bytes:
        return CPSID_I

    def irqs_on(self) -> bytes:
        return CPSIE_I

    def counter_inc(self, which: str) -> bytes:
        return add_imm1({"tracer": TRACER_REG, "work": WORK_REG}[which])

    def traced_entry(self) -> bytes:
        return MOV_R9_LR

    def tracer_return(self) -> bytes:
        # back into the traced function through ip, with its caller's lr restored from r9
        return MOV_R12_LR + MOV_LR_R9 + BX_R12
