"""riscv64 (RV64GC): the facts of the model, its encoders, and nothing else.

Keystone has no RISC-V at all (MULTIARCH.md 2.3), so every word here is hand-encoded the way the
kernel makes it (arch/riscv/include/asm/ftrace.h to_auipc_t0/to_jalr_t0, arch/riscv/kernel/
jump_label.c RISCV_INSN_JAL, RISCV_INSN_NOP4) and checked against capstone in
tests/test_riscv64_arch.py. Protocols import the public names (NOP4, AUIPC_T0, to_jalr_t0, ...)
instead of spelling opcodes.

The ISA manual's chapters are named with their file in riscv/riscv-isa-manual (src/unpriv/...),
which does not move between releases the way section numbers do.
"""

from __future__ import annotations

import struct

import capstone
import unicorn
from unicorn import riscv_const as R

from .base import SYNC_CORE, Arch, Rule


def insn(word: int) -> bytes:
    """A 32-bit RISC-V instruction, little-endian."""
    return struct.pack("<I", word)


def cinsn(half: int) -> bytes:
    """A 16-bit compressed (RVC) instruction."""
    return struct.pack("<H", half)


def word_of(code: bytes) -> int:
    return struct.unpack("<I", bytes(code))[0]


# ---- registers by ABI name (x-numbers) ---------------------------------------------------------
ZERO, RA, SP, T0, S10, S11 = 0, 1, 2, 5, 26, 27


# ---- the kernel's encoders ------------------------------------------------------------------------
RISCV_INSN_NOP4 = 0x00000013  # addi x0, x0, 0
RISCV_INSN_JAL = 0x0000006F  # jal x0, 0: jump_label's jump (rd = zero)
AUIPC_T0_BASE = 0x00000297  # auipc t0, 0 (arch/riscv/include/asm/ftrace.h AUIPC_T0)
JALR_T0_BASE = 0x000282E7  # jalr t0, 0(t0) (JALR_T0)
JALR_SIGN_MASK = 0x800
JALR_OFFSET_MASK = 0xFFF
AUIPC_OFFSET_MASK = 0xFFFFF000
AUIPC_PAD = 0x1000
JALR_RANGE = JALR_SIGN_MASK - 1


def to_jalr_t0(offset: int) -> int:
    """`jalr t0, lo12(offset)(t0)`: the second half of the ftrace call (to_jalr_t0())."""
    return ((offset & JALR_OFFSET_MASK) << 20) | JALR_T0_BASE


def to_auipc_t0(offset: int) -> int:
    """`auipc t0, hi20(offset)`, rounded up when the JALR's 12 bits are negative (to_auipc_t0())."""
    offset &= 0xFFFFFFFF
    hi = (offset & AUIPC_OFFSET_MASK) + (AUIPC_PAD if offset & JALR_SIGN_MASK else 0)
    return (hi & 0xFFFFFFFF) | AUIPC_T0_BASE


def call_offset(src: int, dst: int) -> int:
    offset = dst - src
    if not -(1 << 31) <= offset < (1 << 31) - 0x800:
        raise ValueError(f"riscv64 AUIPC+JALR out of range: {src:#x} -> {dst:#x}")
    return offset


def riscv_insn_jal(pc: int, addr: int, rd: int = ZERO) -> int:
    """`jal rd, addr` at `pc` (arch_jump_label_transform_queue()'s RISCV_INSN_JAL | offset)."""
    offset = addr - pc
    if offset & 1 or not -(1 << 20) <= offset < (1 << 20):
        raise ValueError(f"riscv64 JAL out of range or odd: {pc:#x} -> {addr:#x}")
    o = offset & 0x1FFFFF
    return (RISCV_INSN_JAL | rd << 7 | (o & 0xFF000) | ((o >> 11) & 1) << 20
            | ((o >> 1) & 0x3FF) << 21 | ((o >> 20) & 1) << 31)


def jal_target(word: int, pc: int) -> int:
    imm = (((word >> 31) & 1) << 20 | ((word >> 12) & 0xFF) << 12 | ((word >> 20) & 1) << 11
           | ((word >> 21) & 0x3FF) << 1)
    imm -= (imm & 1 << 20) << 1
    return (pc + imm) & (2**64 - 1)


def _sext(value: int, bits: int) -> int:
    return value - ((value & 1 << (bits - 1)) << 1)


def addi(rd: int, rs: int, imm: int) -> bytes:
    return insn((imm & 0xFFF) << 20 | rs << 15 | rd << 7 | 0x13)


def caddi(rd: int, imm: int) -> bytes:
    """c.addi rd, imm (a 2-byte instruction; imm in [-32, 31], nonzero)."""
    return cinsn(((imm >> 5) & 1) << 12 | rd << 7 | (imm & 31) << 2 | 1)


def jalr(rd: int, rs: int, imm: int = 0) -> bytes:
    return insn((imm & 0xFFF) << 20 | rs << 15 | rd << 7 | 0x67)


# ---- words protocols and the image use -------------------------------------------------------------
NOP4 = insn(RISCV_INSN_NOP4)
C_NOP = cinsn(0x0001)
EBREAK = insn(0x00100073)  # the breakpoint kprobes and KGDB patch in (arch/riscv/include/asm/bug.h)
C_EBREAK = cinsn(0x9002)
FENCE_I = insn(0x0000100F)
FENCE_RW_RW = insn(0x0330000F)  # smp_mb()
FENCE_W_W = insn(0x0110000F)  # smp_wmb()
FENCE_W_O = insn(0x0140000F)  # flush_icache_all(): the data writes before the IPI's MMIO write
WFI = insn(0x10500073)
UNIMP = insn(0xC0001073)  # csrrw x0, cycle, x0: the canonical 32-bit illegal instruction
RET = jalr(ZERO, RA)  # jalr x0, 0(ra)
JR_T0 = jalr(ZERO, T0)  # ftrace_caller's return to the traced function (mcount-dyn.S: jr t0)
AUIPC_T0 = insn(AUIPC_T0_BASE)  # auipc t0, 0
MSTATUS_MIE = 1 << 3
CSRCI_MSTATUS_MIE = insn(0x300 << 20 | MSTATUS_MIE << 15 | 7 << 12 | 0x73)  # csrci mstatus, 8
CSRSI_MSTATUS_MIE = insn(0x300 << 20 | MSTATUS_MIE << 15 | 6 << 12 | 0x73)  # csrsi mstatus, 8

# What the image's code may execute for exhaustive search to key a CPU by its stack pointer,
# mstatus.MIE, the stack and `state_regs` (ra and t0, where calls leave return addresses): the
# counters s10/s11 and the probed instructions' a0/a1 are written and never read for a decision.
_SAFE_MNEMONICS = frozenset({"nop", "ret", "jal", "j", "wfi", "ebreak", "unimp", "c.nop", "c.ebreak",
                             "c.j", "auipc"})
_SAFE_FORMS = frozenset({("jr", "t0"), ("csrci", "mstatus, 8"), ("csrsi", "mstatus, 8"),
                         ("addi", "s11, s11, 1"), ("addi", "s10, s10, 1"), ("addi", "a0, a0, 1"),
                         ("c.addi", "a0, 1"), ("c.addi", "a1, 1")})


class Riscv64(Arch):
    name = "riscv64"
    # each argued in RULES below
    fetch_unit = 4  # Ziccif: M = 4 on RV64 with ILEN = 32
    atomic_store = 4
    store_buffer = "ooo"
    own_store_visible_to_fetch = False
    stop_machine_serializes = False
    # No trap, interrupt or IPI synchronizes instruction fetch on RISC-V: only FENCE.I
    # (k.fence_i(), k.remote_fence_i()), which the machine applies as cache maintenance. A
    # protocol's k.sync_core() here is the one local serialization there is, FENCE.I's.
    serializing_events = (SYNC_CORE,)
    fetch_model = "maintained"
    icache_needs_clean = False  # no data-side clean: FENCE.I alone makes memory visible to fetch
    OPTIONS = {
        "ziccid": "Ziccid: instruction fetch is coherent with data stores (fetches appear in "
                  "global memory order, in program order) and stores become visible to fetches "
                  "without FENCE.I; FENCE.I still flushes the hart's instruction buffer",
    }
    cmodx_scope = "Ziccif's safe harbor (same instruction boundaries, no instruction across an aligned word)"
    # Call and jump targets below the text, 0x4104 bytes apart: two AUIPC+JALR calls from one
    # site to different targets differ in both words (AUIPC's hi20 by 4 per step, JALR's lo12
    # by 0x104), so a site rewritten under a task that ran one of them can be run as a mix; and
    # every target stays within a JAL's +-1 MiB of every site (jump_label's JAL), 4-aligned and
    # in a page of its own.
    far_base = 0x0001_0000
    far_stride = 0x4104
    RULES = (
        Rule(
            "Real RV64GC code: Unicorn's RISCV64 CPU (M-mode, misa ACDFIMSU) runs it, compressed "
            "instructions included; the patched instructions are hand-encoded as the kernel "
            "encodes them and checked against capstone.",
            "arch/riscv/include/asm/ftrace.h (to_auipc_t0, to_jalr_t0), arch/riscv/kernel/"
            "jump_label.c (RISCV_INSN_JAL, RISCV_INSN_NOP4); MULTIARCH.md 2.1 (Unicorn 2.1.4 "
            "facts); tests/test_riscv64_arch.py.",
        ),
        Rule(
            "Instruction fetch follows Ziccif's operational model with M = 4 (RV64, ILEN 32): an "
            "aligned 4-byte word is fetched atomically, so a naturally aligned instruction is "
            "never torn; a 4-byte instruction at an address that is 2 mod 4 is fetched in two "
            "pieces, each of which may come from a different version.",
            "RISC-V ISA manual, unprivileged, 'Ziccif' (src/unpriv/ziccif.adoc: 'Let M be the "
            "smallest power of 2 such that M >= min(ILEN,XLEN)/8 ...'); Documentation/arch/riscv/"
            "cmodx.rst ('as long as an instruction is naturally aligned, the ISA guarantee an "
            "atomic update').",
        ),
        Rule(
            "Concurrent modification and execution is defined only inside Ziccif's safe harbor: "
            "naturally aligned single-copy-atomic stores, no modified instruction across an "
            "M-byte boundary (unless it is replaced by a shorter unconditional control transfer, "
            "c.j or c.ebreak), and no smaller instructions combined into a larger one (or split). "
            "A fetch unit whose versions have different instruction boundaries, or an "
            "instruction that does not fit in it, is reported (cmodx-violation).",
            "RISC-V ISA manual, 'Ziccif' (the conditions under which concurrent instruction "
            "modification and fetch are defined); arch/riscv/Kconfig "
            "(DYNAMIC_FTRACE: -falign-functions=4 so that patch sites are naturally aligned).",
        ),
        Rule(
            "Stores drain from a weak store buffer (RVWMO): stores to different addresses may "
            "become visible in any order, to one address in program order; a hart reads its own "
            "buffered stores. fence rw,rw (smp_mb) drains; fence w,w (smp_wmb) orders stores "
            "before later stores; value-returning AMOs are fully ordered (.aqrl), void ones "
            "relaxed. A lock release drains the releasing hart's buffer: stronger than RVWMO's "
            "release, which does not order a later MMIO write such as an IPI request (so a missing "
            "`fence w, o` after an unlock is not found).",
            "RISC-V ISA manual, 'RVWMO Memory Consistency Model' (src/unpriv/rvwmo.adoc: "
            "preserved program order, rules 1-13) and 'Memory Ordering Instructions' (FENCE); "
            "arch/riscv/include/asm/barrier.h (__smp_mb = fence rw,rw; __smp_wmb = fence w,w); "
            "arch/riscv/include/asm/atomic.h; Documentation/atomic_t.txt.",
        ),
        Rule(
            "Instruction fetch is not coherent with stores (Zifencei): a hart may fetch any "
            "version of a location written since its last FENCE.I, even after its data reads see "
            "the new one; two fetches of one location need not agree.",
            "RISC-V ISA manual, '\"Zifencei\" Extension for Instruction-Fetch Fence' (src/unpriv/"
            "zifencei.adoc: 'RISC-V does not guarantee that stores to instruction memory will be "
            "made visible to instruction fetches on a RISC-V hart until that hart executes a "
            "FENCE.I instruction').",
        ),
        Rule(
            "FENCE.I is local: after it, the executing hart fetches what memory holds (the stores "
            "visible to it); other harts are unaffected. Other harts need their own FENCE.I, run by "
            "an IPI (flush_icache_all(): local_flush_icache_all() + sbi_remote_fence_i() or "
            "on_each_cpu(ipi_remote_fence_i)), and the ISA requires a data FENCE before the remote "
            "request, which otherwise may overtake the writer's stores.",
            "RISC-V ISA manual, 'Zifencei' ('FENCE.I does not ensure that other RISC-V harts' "
            "instruction fetches will observe the local hart's stores ... the hart should execute "
            "a data FENCE before requesting that all remote RISC-V harts execute a FENCE.I'); "
            "arch/riscv/mm/cacheflush.c flush_icache_all() (RISCV_FENCE(w, o) before the "
            "request).",
        ),
        Rule(
            "No trap, interrupt, exception return or IPI synchronizes instruction fetch: only "
            "FENCE.I does (an IPI handler does when it runs one). stop_machine's release does not "
            "either; patch_text_cb()'s waiters run local_flush_icache_all() themselves.",
            "RISC-V ISA manual, 'Zifencei' (FENCE.I is the only instruction-fetch "
            "synchronization; the privileged spec's trap entry and xRET define none); arch/riscv/"
            "kernel/patch.c patch_text_cb(); arch/riscv/kernel/ftrace.c __ftrace_modify_code() "
            "(6.12 era).",
        ),
        Rule(
            "FENCE.I also makes the hart's own stores still in its store buffer visible to its "
            "own fetch (no other hart sees them before they drain). LIMITATION: load-load "
            "reordering is not modelled (as on arm64): a protocol whose only fault is a missing "
            "read fence is not found.",
            "RISC-V ISA manual, 'Zifencei' ('a subsequent instruction fetch on a RISC-V hart will "
            "see any previous data stores already visible to the same RISC-V hart'); "
            "machine/icache.py maintain('inval_local_sync') and Cpu.iown.",
        ),
        Rule(
            "Option ziccid (--arch-opt ziccid): fetches are coherent and in program order and "
            "stores reach them without FENCE.I; FENCE.I still synchronizes the hart (flushes its "
            "instruction buffer). Off by default: the kernel may not assume it.",
            "RISC-V ISA manual, 'Ziccid' (src/unpriv/ziccid.adoc); Documentation/arch/riscv/"
            "cmodx.rst.",
        ),
        Rule(
            "A call is two instructions, AUIPC + JALR, that no single aligned store changes "
            "together; each is fetched on its own, so a task preempted (or interrupted) between "
            "them while the pair is rewritten runs the old AUIPC with the new JALR: a target "
            "neither version has (wrong-target, 'runs a mix of two versions').",
            "Documentation/arch/riscv/cmodx.rst ('it is impossible to patch 2 instructions and "
            "expect that a concurrent read-side executes them without a race condition ... "
            "Kernel preemption makes things even worse'); commit 8547649981e6 ('riscv: ftrace: "
            "Fixup panic by disabling preemption').",
        ),
        Rule(
            "ebreak and c.ebreak trap to the kernel's breakpoint handler with the PC (sepc) at "
            "the ebreak (Unicorn 2.1.4 reports them as invalid instructions, PC at the ebreak: "
            "the CPU tells them apart by the bytes there); ecall and illegal instructions are "
            "exceptions whose PC Unicorn has already moved 4 bytes on (even for a 2-byte one, "
            "unicorn issue #1990), which the CPU takes back.",
            "RISC-V privileged manual, 'Machine Cause Register' (breakpoint: exception code 3, "
            "epc = the ebreak); arch/riscv/kernel/traps.c do_trap_break(); MULTIARCH.md 2.1; "
            "tests/test_riscv64_arch.py pins both.",
        ),
        Rule(
            "IRQs and IPIs are taken only with the interrupt-enable bit set (the image toggles "
            "mstatus.MIE: Unicorn runs in M-mode; the kernel's sstatus.SIE). RISC-V has no NMI: "
            "the NMI frame models an interrupt the kernel cannot mask (a resumable NMI or a "
            "debug-mode entry) and is a worst case.",
            "RISC-V privileged manual, 'Machine Status Register' (MIE) and 'Resumable NMI' "
            "(Smrnmi); arch/riscv/include/asm/irqflags.h (csr_clear(CSR_STATUS, SR_IE)).",
        ),
    )

    trap_insn = EBREAK
    trap_insns = (EBREAK, C_EBREAK)  # arch_arm_kprobe(): __BUG_INSN_32, or __BUG_INSN_16 over a 2-byte one
    trap_name = "ebreak"
    trap_intno = None  # reported as an invalid instruction, the PC at the ebreak
    trap_pc_after = 0
    intr_pc_after = 4

    uc_arch = unicorn.UC_ARCH_RISCV
    uc_mode = unicorn.UC_MODE_RISCV64
    cs_arch = capstone.CS_ARCH_RISCV
    cs_mode = capstone.CS_MODE_RISCV64 | capstone.CS_MODE_RISCVC

    reg_pc = R.UC_RISCV_REG_PC
    reg_sp = R.UC_RISCV_REG_SP
    reg_irq = R.UC_RISCV_REG_MSTATUS
    irq_mask = MSTATUS_MIE
    irq_set_enables = True
    link_reg = R.UC_RISCV_REG_RA
    word_size = 8
    counter_regs = {"tracer": R.UC_RISCV_REG_S11, "work": R.UC_RISCV_REG_S10}
    # return addresses the image keeps in registers: ra (JAL ra from the caller loop) and t0
    # (the ftrace call's link, which ftrace_caller returns through)
    state_regs = (R.UC_RISCV_REG_RA, R.UC_RISCV_REG_T0)
    filler = UNIMP

    def __init__(self, options: tuple[str, ...] = ()) -> None:
        super().__init__(options)
        ziccid = "ziccid" in options
        self.icache_needs_invalidate = not ziccid
        self.coherent_fetches = ziccid

    # ---- instructions ----------------------------------------------------------------------
    def encode_call(self, site_addr: int, target: int) -> bytes:
        """The ftrace call: `auipc t0, hi; jalr t0, lo(t0)` (8 bytes)."""
        offset = call_offset(site_addr, target)
        return insn(to_auipc_t0(offset)) + insn(to_jalr_t0(offset))

    def encode_jmp(self, site_addr: int, target: int) -> bytes:
        """jump_label's `jal x0, target`."""
        return insn(riscv_insn_jal(site_addr, target))

    def semantics(self, code: bytes, addr: int) -> tuple[str, int]:
        code = bytes(code)
        lens = self.insn_lengths(code)
        if sum(lens) != len(code) or not lens:
            return "bad", 0
        if lens == (4, 4):
            first, second = word_of(code[:4]), word_of(code[4:])
            rd = first >> 7 & 31
            if (first & 0x7F == 0x17 and second & 0x707F == 0x67 and second >> 15 & 31 == rd
                    and rd != ZERO):
                target = addr + _sext(first & 0xFFFFF000, 32) + _sext(second >> 20, 12)
                link = second >> 7 & 31
                return ("jmp" if link == ZERO else "call"), target & ~1 & (2**64 - 1)
        if lens == (4,):
            word = word_of(code)
            if word & 0x7F == 0x6F:  # JAL
                return ("jmp" if word >> 7 & 31 == ZERO else "call"), jal_target(word, addr)
        if all(not self._transfers(code[i:i + n]) for i, n in zip(_offsets(lens), lens)):
            return "next", addr + len(code)
        return "bad", 0

    @staticmethod
    def _transfers(code: bytes) -> bool:
        """Does this one instruction transfer control or trap (what `semantics` cannot follow
        without registers)?"""
        if len(code) == 2:
            half = struct.unpack("<H", code)[0]
            op, funct3 = half & 3, half >> 13
            # c.j, c.beqz, c.bnez (funct3 1 is c.addiw on RV64); c.jr, c.jalr, c.ebreak (rs2 = 0)
            return (op == 1 and funct3 in (5, 6, 7)) or (op == 2 and funct3 == 4 and (half >> 2) & 31 == 0)
        opcode = word_of(code) & 0x7F
        return opcode in (0x6F, 0x67, 0x63, 0x73)  # JAL, JALR, branches, SYSTEM (ebreak, ecall)

    def cmodx_unsafe(self, words: list[bytes], versions: list[bytes] | None = None, off: int = 0) -> bytes | None:
        # Ziccif's safe harbor within one aligned word: every version decodes to the same
        # instruction boundaries and ends at the word's end; the one exception is a version
        # whose first instructions agree and whose last is a 2-byte c.j or c.ebreak standing
        # where another version's instruction runs on past the word
        lens = [self.insn_lengths(w) for w in words]
        first = lens[0]
        for w, ln in zip(words, lens):
            if sum(ln) != len(w) or ln != first:
                if not self._shorter_transfer(words, lens):
                    return w
        return None

    def _shorter_transfer(self, words: list[bytes], lens: list[tuple[int, ...]]) -> bool:
        whole = [(w, ln) for w, ln in zip(words, lens) if sum(ln) == len(w)]
        partial = [(w, ln) for w, ln in zip(words, lens) if sum(ln) != len(w)]
        if not whole or not partial:
            return False
        if len({p for p, _ in partial}) > 1:  # the instruction running past the word changes too
            return False
        for w, ln in whole:
            end = len(w) - ln[-1]
            if ln[-1] != 2 or not (w[end:] == C_EBREAK or _is_c_j(w[end:])):
                return False
            if any(p[:end] != w[:end] or sum(pl) != end for p, pl in partial):
                return False
        return True

    def abstractable_insn(self, mnemonic: str, op_str: str) -> bool:
        if mnemonic == "jalr":  # jalr t0, lo(t0): the ftrace call's second half
            return op_str.startswith("t0, t0")
        return mnemonic in _SAFE_MNEMONICS or (mnemonic, op_str) in _SAFE_FORMS

    # ---- emitters --------------------------------------------------------------------------
    def call(self, src: int, dst: int) -> bytes:
        return insn(riscv_insn_jal(src, dst, rd=RA))  # the image's own calls: jal ra

    def jmp(self, src: int, dst: int) -> bytes:
        return insn(riscv_insn_jal(src, dst))

    def ret(self) -> bytes:
        return RET

    def nop(self) -> bytes:
        return NOP4

    def stop(self) -> bytes:
        return WFI  # Unicorn 2.1.4 ends emu_start at a wfi, silently, the PC past it

    def irqs_off(self) -> bytes:
        return CSRCI_MSTATUS_MIE

    def irqs_on(self) -> bytes:
        return CSRSI_MSTATUS_MIE

    def counter_inc(self, which: str) -> bytes:
        reg = {"tracer": S11, "work": S10}[which]
        return addi(reg, reg, 1)

    def tracer_return(self) -> bytes:
        return JR_T0  # ftrace_caller returns through t0, the ftrace call's link


def _offsets(lens: tuple[int, ...]) -> list[int]:
    out, pos = [], 0
    for n in lens:
        out.append(pos)
        pos += n
    return out


def _is_c_j(half: bytes) -> bool:
    """Is this 2-byte instruction a c.j (any offset)?"""
    return len(half) == 2 and struct.unpack("<H", bytes(half))[0] & 0xE003 == 0xA001
