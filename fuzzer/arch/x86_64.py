"""x86-64: the facts of the first architecture model, and nothing else.

Instruction bytes are hand-encoded (keystone mis-encodes some NOPs), decoded with capstone, and
executed by Unicorn through the shared CPU (unicorn_cpu.py) in the image every ISA shares
(image.py). The rules below are what the engine enforces; each names its source.
"""

from __future__ import annotations

import struct

import capstone
import unicorn
from unicorn import x86_const as X

from .base import EXCEPTION_ENTRY, EXCEPTION_RETURN, IPI_TAKEN, SYNC_CORE, Arch, Rule

NOP5 = bytes.fromhex("0f1f440000")  # nopl 0x0(%rax,%rax,1): the kernel's ideal 5-byte NOP
NOP1 = b"\x90"
INT3 = b"\xcc"
HLT = b"\xf4"
RET = b"\xc3"
CLI = b"\xfa"
STI = b"\xfb"
INC_R15 = bytes.fromhex("49ffc7")  # inc r15: the image's tracer-hit counter
INC_R14 = bytes.fromhex("49ffc6")  # inc r14: the traced functions' own work
EFLAGS_IF = 1 << 9
INT3_VECTOR = 3  # #BP, what Unicorn's UC_HOOK_INTR reports for an int3

# What code may execute if exhaustive search is to key a CPU by RSP, EFLAGS.IF and the stack
# alone: none of these reads a general-purpose register other than RSP (call/ret) or an
# arithmetic flag.
_SAFE_MNEMONICS = frozenset({"nop", "ret", "call", "jmp", "cli", "sti", "hlt", "int3"})
_COUNTERS = frozenset({"r14", "r15"})  # `inc` of a register nothing else reads


def rel32(src_next: int, target: int) -> bytes:
    return struct.pack("<i", target - src_next)


def call_to(site_addr: int, target: int) -> bytes:
    return b"\xe8" + rel32(site_addr + 5, target)


def jmp_to(site_addr: int, target: int) -> bytes:
    return b"\xe9" + rel32(site_addr + 5, target)


class X86_64(Arch):
    name = "x86_64"
    # each argued in RULES below, in this order
    fetch_unit = 1
    atomic_store = 1
    serializing_events = (EXCEPTION_ENTRY, EXCEPTION_RETURN, IPI_TAKEN, SYNC_CORE)
    own_store_visible_to_fetch = True
    store_buffer = "fifo"
    stop_machine_serializes = True
    # call targets 32 MB and more above the traced functions, 16 MB apart (base.py says why)
    far_base = 0x0200_0000
    RULES = (
        Rule(
            "Fetch unit is 1 byte: an instruction fetched while another CPU writes it may mix "
            "old and new bytes in any combination (within the window of the next rule).",
            "Intel SDM Vol. 3A 8.1.3 'Handling Self- and Cross-Modifying Code'; the kernel's "
            "text_poke_bp() comment (arch/x86/kernel/alternative.c) relies on exactly this.",
        ),
        Rule(
            "How far a view may lag: the instruction cache is coherent, so a fetch starts from "
            "memory as it is when the CPU reaches the instruction; bytes stored between that "
            "moment and the instruction's execution may or may not be seen, per byte. Only a "
            "serializing event discards an instruction already being fetched.",
            "Intel SDM Vol. 3A 11.6 (code-segment writes invalidate cached/prefetched "
            "instructions) and 8.1.3 (the executing CPU must serialize to be sure to see "
            "cross-modified code).",
        ),
        Rule(
            "Completion: once a protocol declares a patch complete (k.complete), a CPU that "
            "begins to fetch the site must execute the completed version; a fetch that began "
            "before the declaration may still execute what it fetched then (previous rule), so "
            "stale-after-complete judges only fetches that begin after it.",
            "Intel SDM Vol. 3A 8.1.3 (a CPU must serialize to be sure to see cross-modified "
            "code; one that starts fetching later fetches from coherent memory); text_poke_bp()'s "
            "final text_poke_sync() exists for the CPUs that may still hold the int3.",
        ),
        Rule(
            "Only a 1-byte store is atomic for text; a multi-byte poke is a sequence of byte "
            "stores in ascending address order (memcpy).",
            "text_poke_bp() writes the int3 first because 'a single byte write is atomic'; "
            "commit fd4363fff3d9 (x86: Introduce int3-based instruction patching).",
        ),
        Rule(
            "Serializing events refresh a CPU's whole instruction view: exception or NMI entry, "
            "IRET, an IPI taken (its handler does sync_core()), sync_core().",
            "Intel SDM Vol. 3A 8.3 'Serializing Instructions' (IRET, CPUID are serializing); "
            "text_poke_sync() = on_each_cpu(do_sync_core).",
        ),
        Rule(
            "A CPU's own text stores reach its own instruction fetch at once (self-modifying "
            "code is snooped).",
            "Intel SDM Vol. 3A 11.6 'Self-Modifying Code'.",
        ),
        Rule(
            "Stores to protocol variables and to text drain from a FIFO store buffer (x86-TSO): "
            "other CPUs see them in program order; a locked instruction or MFENCE drains it; "
            "smp_wmb()/smp_rmb() are compiler barriers only.",
            "Intel SDM Vol. 3A 8.2.2 'Memory Ordering in P6 and More Recent Processor Families'; "
            "Sewell et al., 'x86-TSO', CACM 2010; arch/x86/include/asm/barrier.h.",
        ),
        Rule(
            "Locks order memory: taking one is a locked read-modify-write, which drains the "
            "store buffer; releasing one makes every earlier store visible before the lock is "
            "seen free (the unlock store follows them in the FIFO), so the next holder sees "
            "the previous holder's stores.",
            "Intel SDM Vol. 3A 8.2.2 ('locked instructions have a total order'; 'writes are not "
            "reordered with older writes'); Documentation/memory-barriers.txt, 'ACQUIRE "
            "operations' and 'RELEASE operations' (every lock implementation on every "
            "architecture).",
        ),
        Rule(
            "IPIs and other maskable interrupts are taken only with EFLAGS.IF set (and not inside "
            "local_irq_save()); NMIs are taken at any instruction boundary, "
            "also with IF clear; a nested NMI is held until the outer NMI handler returns.",
            "Intel SDM Vol. 3A 6.7.1 'Handling Multiple NMIs'; arch/x86/entry/entry_64.S "
            "nested-NMI logic (v3.3+).",
        ),
        Rule(
            "ASSUMPTION (switchable): CPUs released from the stop_machine rendezvous do not run "
            "bytes fetched before it; each leaves through the stopper thread's context switch.",
            "kernel/stop_machine.c multi_cpu_stop(); arm64 states the same explicitly with an "
            "isb() in aarch64_insn_patch_text_cb(). Disable with --no-stop-machine-serializes.",
        ),
    )

    # int3 raises #BP, a trap: Unicorn reports vector 3 with RIP already past the int3.
    trap_insn = INT3
    trap_name = "int3"
    trap_intno = INT3_VECTOR
    trap_pc_after = len(INT3)
    trap_handler_alias = "int3_handler"  # the kernel's name, which the x86 protocols keep

    uc_arch = unicorn.UC_ARCH_X86
    uc_mode = unicorn.UC_MODE_64
    cs_arch = capstone.CS_ARCH_X86
    cs_mode = capstone.CS_MODE_64

    reg_pc = X.UC_X86_REG_RIP
    reg_sp = X.UC_X86_REG_RSP
    reg_irq = X.UC_X86_REG_EFLAGS
    irq_mask = EFLAGS_IF
    irq_set_enables = True
    link_reg = None  # call pushes the return address
    word_size = 8
    counter_regs = {"tracer": X.UC_X86_REG_R15, "work": X.UC_X86_REG_R14}
    filler = INT3  # what the kernel pads functions with

    # ---- instructions ----------------------------------------------------------------------
    def encode_call(self, site_addr: int, target: int) -> bytes:
        return call_to(site_addr, target)

    def encode_jmp(self, site_addr: int, target: int) -> bytes:
        return jmp_to(site_addr, target)

    def semantics(self, insn: bytes, addr: int) -> tuple[str, int]:
        insn = bytes(insn)
        if len(insn) == 5 and insn[0] == 0xE8:
            return "call", (addr + 5 + struct.unpack("<i", insn[1:])[0]) & (2**64 - 1)
        if len(insn) == 5 and insn[0] == 0xE9:
            return "jmp", (addr + 5 + struct.unpack("<i", insn[1:])[0]) & (2**64 - 1)
        lens = self.insn_lengths(insn)
        if lens and sum(lens) == len(insn):
            return "next", addr + len(insn)
        return "bad", 0

    def abstractable_insn(self, mnemonic: str, op_str: str) -> bool:
        return mnemonic in _SAFE_MNEMONICS or (mnemonic == "inc" and op_str in _COUNTERS)

    # ---- emitters --------------------------------------------------------------------------
    def ret(self) -> bytes:
        return RET

    def nop(self) -> bytes:
        return NOP1

    def stop(self) -> bytes:
        return HLT  # Unicorn stops emu_start at a hlt, RIP after it

    def irqs_off(self) -> bytes:
        return CLI

    def irqs_on(self) -> bytes:
        return STI

    def counter_inc(self, which: str) -> bytes:
        return {"tracer": INC_R15, "work": INC_R14}[which]
