"""arm64 (AArch64): the facts of the model, its encoders, and nothing else.

No assembler can be trusted with the patched instructions (MULTIARCH.md 2.3: keystone has no
LSE/BTI/PAC and mis-encodes branches), so every word here is hand-encoded the way the kernel
makes it (arch/arm64/lib/insn.c, arch/arm64/include/asm/insn.h, brk-imm.h) and checked against
capstone in tests/test_arm64_arch.py. Protocols import the public names (NOP, BRK, ADD_X0_1,
ISB, aarch64_insn_gen_branch_imm, ...) instead of spelling opcodes.

Arm ARM section numbers move between issues of DDI 0487; each rule names the section's title
too, which does not.
"""

from __future__ import annotations

import struct

import capstone
import unicorn
from unicorn import arm64_const as A

from .base import EXCEPTION_ENTRY, EXCEPTION_RETURN, IPI_TAKEN, SYNC_CORE, Arch, Rule


def insn(word: int) -> bytes:
    """A64 instructions are 32-bit little-endian words (the kernel's cpu_to_le32)."""
    return struct.pack("<I", word)


def word_of(code: bytes) -> int:
    return struct.unpack("<I", bytes(code))[0]


# ---- the kernel's encoders (arch/arm64/lib/insn.c) -------------------------------------------
AARCH64_INSN_NOP = 0xD503201F  # HINT #0
AARCH64_BREAK_MON = 0xD4200000  # BRK #0; the immediate sits in bits [20:5]
KPROBES_BRK_IMM = 0x004  # arch/arm64/include/asm/brk-imm.h
FAULT_BRK_IMM = 0x100
AARCH64_BREAK_FAULT = AARCH64_BREAK_MON | FAULT_BRK_IMM << 5  # what insn.c returns on error
BRK64_OPCODE_KPROBES = AARCH64_BREAK_MON | KPROBES_BRK_IMM << 5  # arch_arm_kprobe() writes it
_B, _BL = 0x14000000, 0x94000000
_IMM26 = 0x03FFFFFF
SZ_128M = 128 << 20


def aarch64_insn_gen_nop() -> int:
    return AARCH64_INSN_NOP


def aarch64_insn_gen_branch_imm(pc: int, addr: int, link: bool) -> int:
    """B (link False) or BL at `pc` to `addr`, as a u32: both ends word aligned, offset in
    [-128M, 128M). Where the kernel returns AARCH64_BREAK_FAULT and logs, this raises, so a
    protocol cannot patch a fault-BRK in by accident."""
    if pc & 3 or addr & 3:
        raise ValueError(f"A64 branch ends must be word aligned: {pc:#x} -> {addr:#x}")
    offset = addr - pc
    if not -SZ_128M <= offset < SZ_128M:
        raise ValueError(f"A64 branch out of range: {pc:#x} -> {addr:#x}")
    return (_BL if link else _B) | ((offset >> 2) & _IMM26)


def branch_target(word: int, pc: int) -> int:
    """Where the B or BL `word` at `pc` goes (imm26:00, sign-extended)."""
    offset = (word & _IMM26) << 2
    offset -= (offset & 1 << 27) << 1
    return (pc + offset) & (2**64 - 1)


# ---- words protocols and the image use ------------------------------------------------------
NOP = insn(AARCH64_INSN_NOP)
BRK = insn(BRK64_OPCODE_KPROBES)  # brk #0x4: the kprobe breakpoint
BRK_FAULT = insn(AARCH64_BREAK_FAULT)  # brk #0x100
# An ordinary instruction a kprobe replaces: outside the CMODX list, so patching it while
# another CPU may fetch it is CONSTRAINED UNPREDICTABLE (rule below).
ADD_X0_1 = insn(0x91000400)  # add x0, x0, #1
MOV_X1_X2 = insn(0xAA0203E1)  # mov x1, x2 (ORR x1, xzr, x2)
ISB = insn(0xD5033FDF)  # isb (sy)
DSB_ISH = insn(0xD5033B9F)
DMB_ISH = insn(0xD5033BBF)  # smp_mb()
DMB_ISHST = insn(0xD5033ABF)  # smp_wmb()
DC_CVAU_X0 = insn(0xD50B7B20)  # clean the data cache line of [x0] to the PoU
IC_IVAU_X0 = insn(0xD50B7520)  # invalidate the instruction cache line of [x0] to the PoU
RET = insn(0xD65F03C0)  # ret (x30)
WFI = insn(0xD503207F)
UDF0 = insn(0x00000000)  # udf #0
# The kernel masks D, A, I and F (daifset #3 with pseudo-NMIs off, arch/arm64/include/asm/
# irqflags.h); the image needs only I, the bit the CPU tests.
DAIFSET_I = insn(0xD50340DF | 2 << 8)  # msr daifset, #2
DAIFCLR_I = insn(0xD50340FF | 2 << 8)  # msr daifclr, #2
MOV_X9_LR = insn(0xAA1E03E9)  # mov x9, x30: ftrace's patch-site pair saves the return address
MOV_X10_LR = insn(0xAA1E03EA)  # mov x10, x30
MOV_LR_X9 = insn(0xAA0903FE)  # mov x30, x9
RET_X10 = insn(0xD65F0140)  # ret x10
PSTATE_I = 1 << 7
TRACER_REG, WORK_REG = 28, 27  # x28, x27: counters nothing else reads


def add_imm1(reg: int) -> bytes:
    """add xN, xN, #1 (ADD immediate, 64-bit)."""
    return insn(0x91000400 | reg << 5 | reg)


# ---- the CMODX list (Arm ARM B2.2.5) ---------------------------------------------------------
# (mask, value) per instruction class: the classes' fixed bits, any immediate.
_CMODX = (
    (0x7C000000, 0x14000000),  # B, BL (bit 31: link), any imm26
    (0xFFE0001F, 0xD4200000),  # BRK #imm16
    (0xFFE0001F, 0xD4000001),  # SVC #imm16
    (0xFFE0001F, 0xD4000002),  # HVC #imm16
    (0xFFE0001F, 0xD4000003),  # SMC #imm16
    # ISB's CRm is its option: SY (0b1111) is the only one named, the others are reserved and
    # execute as ISB SY, so they are still an ISB.
    (0xFFFFF0FF, 0xD50330DF),
    (0xFFFFFFFF, AARCH64_INSN_NOP),  # NOP only: other hints (BTI, PACIASP, YIELD) are not NOP
)


# What the image's code may execute for exhaustive search to key a CPU by its stack pointer,
# PSTATE.I, the stack and `state_regs`: control flow, masking, and the register moves and
# counters below (x27, x28 and x0, the probed `add`, are written and never read for a decision).
_SAFE_MNEMONICS = frozenset({"nop", "ret", "bl", "b", "wfi", "brk", "udf", "isb"})
_SAFE_FORMS = frozenset({("msr", "daifset, #2"), ("msr", "daifclr, #2"), ("mov", "x9, x30"),
                         ("mov", "x10, x30"), ("mov", "x30, x9"), ("ret", "x10"),
                         ("add", "x28, x28, #1"), ("add", "x27, x27, #1"), ("add", "x0, x0, #1")})


# What a program's instruction does to the models beyond its loads and stores (Arch.insn_effect):
# (mask, value, effect); the register operand of DC/IC is bits [4:0].
_DMB_KINDS = {3: "mb", 2: "wmb", 1: "rmb", 0: "mb"}  # CRm[1:0]: full, ST, LD (0b00: reserved, SY)
_EFFECTS = (
    (0xFFFFF0FF, 0xD50330DF, ("sync",)),  # ISB
    (0xFFFFFFE0, 0xD50B7B20, ("maint", "clean", "Rt")),  # DC CVAU, Xt
    (0xFFFFFFE0, 0xD50B7A20, ("maint", "clean", "Rt")),  # DC CVAC, Xt (to the PoC: past the PoU)
    (0xFFFFFFE0, 0xD50B7E20, ("maint", "clean", "Rt")),  # DC CIVAC, Xt
    (0xFFFFFFE0, 0xD50B7520, ("maint", "inval", "Rt")),  # IC IVAU, Xt (broadcast)
    (0xFFFFFFFF, 0xD508711F, ("maint", "inval_all", None)),  # IC IALLUIS (broadcast)
    (0x3FFFFC00, 0x089FFC00, ("release",)),  # STLR, STLRB, STLRH (any size)
    (0xFFFFFFFF, 0xD69F03E0, ("sync",)),  # ERET: exception return is context synchronizing
)
# the registers programs start and end with; W<n> names the same register (its low half)
PROGRAM_REGS = {**{f"X{n}": getattr(A, f"UC_ARM64_REG_X{n}") for n in range(31)},
                "NZCV": A.UC_ARM64_REG_NZCV}


class Arm64(Arch):
    name = "arm64"
    # each argued in RULES below
    fetch_unit = 4
    atomic_store = 4
    store_buffer = "ooo"
    own_store_visible_to_fetch = False
    stop_machine_serializes = False
    serializing_events = (EXCEPTION_ENTRY, EXCEPTION_RETURN, IPI_TAKEN, SYNC_CORE)
    fetch_model = "maintained"
    OPTIONS = {
        "idc": "CTR_EL0.IDC=1: written code needs no clean to the PoU before it can be fetched "
               "(DC CVAU may be left out; a DSB still orders the store before the invalidation)",
        "dic": "CTR_EL0.DIC=1: written code needs no instruction cache invalidation (IC IVAU may "
               "be left out; the fetching CPU still needs a context synchronization event), and "
               "fetches of one location are coherent",
        "fb": "HCR_EL2.FB=1 (a guest under KVM): IC IALLU is broadcast to the Inner Shareable "
              "domain as IC IALLUIS is, instead of invalidating the executing CPU's cache only",
    }
    # Call targets 32 MiB above the text, 0x40404 bytes (257 KiB, 0x10101 words) apart, so that
    # BLs from one site to targets k apart differ by k*0x010101 in imm26: for k < 255 each of
    # the word's three low bytes (imm26[23:0]) differs whatever the site's address is (adding
    # byte k, plus a carry of 0 or 1, never gives the byte back), so both halfwords differ too
    # and a BL written in halves is never either BL. The top byte cannot be made to differ
    # too: imm26[25] is the sign, clear for every forward target, and imm26[24] (the offset's
    # 64 MiB bit) differs only between targets on either side of 64 MiB. The stride is more
    # than a page, so each target has a page of its own, and the first 255 targets (the last
    # at 0x5fbfbf8) fit in their pages and are within BL's +128 MiB of the lowest site (the
    # text starts at 0x100000).
    far_base = 0x0200_0000
    far_stride = 0x0004_0404
    RULES = (
        Rule(
            "Fetch unit and text store are the aligned 32-bit word: an instruction is fetched "
            "whole, and the kernel writes it with one aligned 32-bit store, single-copy atomic; "
            "no fetch mixes halves of two versions of one word.",
            "Arm ARM B2.2.1 'Requirements for single-copy atomicity' (aligned word accesses) and "
            "B2.2.5 'Concurrent modification and execution of instructions'; arch/arm64/kernel/"
            "patching.c aarch64_insn_patch_text_nosync() -> aarch64_insn_write() -> "
            "copy_to_kernel_nofault() of 4 aligned bytes (one u32 store, mm/maccess.c).",
        ),
        Rule(
            "Stores drain from a weak store buffer: stores to different addresses may become "
            "visible to other CPUs in any order, stores to one address in program order; a CPU "
            "reads its own buffered stores.",
            "Arm ARM B2.3 'Definition of the Armv8 memory model' (other-multi-copy atomic; "
            "coherence order; internal visibility); Pulte et al., 'Simplifying ARM concurrency', "
            "POPL 2018.",
        ),
        Rule(
            "Barriers: DMB ISH (smp_mb) drains the store buffer and orders everything; DMB ISHST "
            "(smp_wmb) orders earlier stores before later stores only; DSB ISH also waits for "
            "cache maintenance to complete, and drains.",
            "Arm ARM B2.3 (barrier-ordered-before) and C6.2 DMB, DSB; arch/arm64/include/asm/"
            "barrier.h (__smp_mb = dmb ish, __smp_wmb = dmb ishst).",
        ),
        Rule(
            "Store-release (STLR, smp_store_release) makes every earlier access visible before "
            "it; load-acquire (LDAR, smp_load_acquire) orders every later access after it; "
            "value-returning atomics are fully ordered, the void ones (atomic_inc, atomic_dec) "
            "relaxed: they act on the newest value of their variable and order nothing else; a "
            "lock acquire is an acquire and a release a store-release, so the next holder sees "
            "the previous holder's stores.",
            "Arm ARM B2.3 (Release and Acquire semantics); arch/arm64/include/asm/barrier.h "
            "__smp_store_release/__smp_load_acquire; Documentation/atomic_t.txt (value-returning "
            "RMW ops are fully ordered, the non-value-returning ones unordered; "
            "arch/arm64/include/asm/atomic_ll_sc.h adds dmb ish to the former only); "
            "Documentation/memory-barriers.txt 'ACQUIRE operations', 'RELEASE operations'.",
        ),
        Rule(
            "Instruction fetch is not coherent with data stores: a fetch may return an old "
            "instruction, even after data reads see the new one, until the writer has cleaned "
            "the line to the PoU (DC CVAU), DSB ISH, invalidated it (IC IVAU, broadcast to the "
            "Inner Shareable domain), DSB ISH, AND the fetching CPU has since taken a context "
            "synchronization event. Two fetches of one location need not be coherent.",
            "Arm ARM B2.4.4 'Cache maintenance instructions' and D7.5 'Caches' ('Synchronization "
            "and coherency issues between data and instruction accesses'); Simner et al., "
            "'ARMv8-A system semantics: instruction fetch in relaxed architectures', ESOP 2020: "
            "SM.B+dsb.ish-isb Allowed, MP.RF+dc-dsb-ic-dsb+addr Allowed (no ISB on the reader), "
            "MP.RF+dc-dsb-ic-dsb+ctrlisb Forbidden, SM.B+dsb.ish-ic.ivau-dsb.ish-isb Allowed "
            "(no DC), coFF Allowed; herd/libdir/aarch64.cat (Instr-read-ordered-before, IC-ca).",
        ),
        Rule(
            "A CPU's own text store does not reach its own fetch without that sequence either: "
            "a store then ISB may still run the old instruction.",
            "Simner et al., ESOP 2020: SM.B+isb Allowed. (Unicorn shows the new instruction at "
            "the next translation block: the per-CPU view, not the emulator, decides; "
            "MULTIARCH.md 2.2.)",
        ),
        Rule(
            "The kernel's maintenance is caches_clean_inval_pou(): DC CVAU over the range then "
            "DSB ISH (with IDC: only DSB ISHST), then IC IVAU over the range, DSB ISH and ISB "
            "(with DIC: only ISB). That ISB synchronizes the patching CPU alone; every other CPU "
            "still needs its own context synchronization event.",
            "arch/arm64/mm/cache.S caches_clean_inval_pou_macro; arch/arm64/include/asm/"
            "assembler.h invalidate_icache_by_line (ic ivau loop; dsb ish; isb) and "
            "dcache_by_line_op (dc cvau loop; dsb ish); called from aarch64_insn_patch_text_"
            "nosync().",
        ),
        Rule(
            "Architecture options (OPTIONS, --arch-opt): idc (CTR_EL0.IDC=1) drops the DC CVAU requirement; dic "
            "(CTR_EL0.DIC=1) drops the IC IVAU requirement and makes fetches read memory "
            "(coherent, and in program order: rule below). Neither removes the context synchronization event on the fetching CPU. "
            "Unicorn's CPUs all report IDC=DIC=0, the default.",
            "Arm ARM register description 'CTR_EL0, Cache Type Register' (IDC bit 28, DIC bit "
            "29); herd/libdir/aarch64.cat IC-ca and "
            "Instr-read-ordered-before ('if \"DIC\" then ca'); arch/arm64/kernel/cpufeature.c "
            "ARM64_HAS_CACHE_IDC/ARM64_HAS_CACHE_DIC.",
        ),
        Rule(
            "Context synchronization events refresh a CPU's instruction view (once the "
            "maintenance above has completed): ISB, exception entry (a BRK, an IRQ, an IPI) and "
            "exception return (ERET). Linux keeps SCTLR_EL1.EIS/EOS set, so entry and return "
            "stay context synchronizing with FEAT_ExS.",
            "Arm ARM glossary 'Context synchronization event' and D1 'Exception entry'/'Exception "
            "return'; arch/arm64/include/asm/sysreg.h INIT_SCTLR_EL1_MMU_ON (SCTLR_EL1_EIS | "
            "SCTLR_EL1_EOS); kick_all_cpus_sync() IPIs (arch/arm64/kernel/jump_label.c).",
        ),
        Rule(
            "Concurrent modification and execution: when both the old and the new instruction "
            "are B, BL, BRK, HVC, ISB, NOP, SMC or SVC, a racing fetch executes the old or the "
            "new one; any other pair is CONSTRAINED UNPREDICTABLE (the cmodx-violation oracle). "
            "herdtools7's current list also exempts CBZ, CBNZ, TBZ and TBNZ (its comment B.cond "
            "too), after a later Arm ARM issue; this model keeps the eight, which flags more.",
            "Arm ARM B2.2.5 'Concurrent modification and execution of instructions'; "
            "herd/AArch64Arch_herd.ml is_cmodx_restricted_instruction (Restricted-CMODX) and "
            "aarch64.cat 'violates-CMODX-requirements'.",
        ),
        Rule(
            "ASSUMPTION (switchable): leaving the stop_machine rendezvous does not synchronize a "
            "parked CPU's instruction fetch by itself; the kernel's waiters issue an explicit "
            "isb() after the patcher's final increment.",
            "arch/arm64/kernel/patching.c aarch64_insn_patch_text_cb(); kernel/stop_machine.c "
            "multi_cpu_stop(). Enable with --stop-machine-serializes.",
        ),
        Rule(
            "A BRK traps to the debug exception handler with the PC (ELR) at the BRK itself: "
            "do_debug_exception() -> the break hooks (call_break_hook) match the immediate; "
            "KPROBES_BRK_IMM (0x004) goes to kprobes' handler, which finds the probe by the PC.",
            "arch/arm64/include/asm/brk-imm.h; arch/arm64/kernel/debug-monitors.c; arch/arm64/"
            "kernel/probes/kprobes.c arch_arm_kprobe() (aarch64_insn_patch_text(), i.e. under "
            "stop_machine) and kprobe_breakpoint_handler()/kprobe_brk_handler().",
        ),
        Rule(
            "IRQs and IPIs are taken only with PSTATE.I clear (the image masks them with msr "
            "daifset, #2). arm64 has no NMI: the NMI frame models a GIC pseudo-NMI, an interrupt "
            "of higher priority that is still taken while normal IRQs are masked by priority "
            "(ICC_PMR_EL1 = GIC_PRIO_IRQOFF) and not by PSTATE.I.",
            "arch/arm64/Kconfig ARM64_PSEUDO_NMI; arch/arm64/include/asm/irqflags.h "
            "__pmr_local_irq_disable(); drivers/irqchip/irq-gic-v3.c gic_handle_nmi(); "
            "arch/arm64/kernel/irq.c.",
        ),
        Rule(
            "A cache clean (DC CVAU) of a location is ordered after the same CPU's earlier "
            "stores to that location: the clean drains those stores (and only what must "
            "drain before them), never the CPU's other buffered stores.",
            "Arm ARM D7.5 (data cache maintenance by VA is ordered after earlier stores to the "
            "same location in program order); herd/libdir/aarch64.cat DC-after.",
        ),
        Rule(
            "Instruction fetches happen in program order, each no earlier than the one before it, "
            "and a version is fetched only once it is in memory: after a CPU fetched a version "
            "written at some moment, its later fetches return nothing its instruction cache could "
            "not hold at that moment (nothing older than an invalidation completed by then), and "
            "with DIC nothing older than memory held then. A context synchronization event moves "
            "the CPU's fetch moment to now.",
            "herd/libdir/aarch64.cat IC-ob ([Instr & R]; po; [Instr & R]; IC-after; IC; po; "
            "dsb.full) and Instr-read-ordered-before ('if \"DIC\" then ca'); Simner et al., ESOP "
            "2020 (fetches in program order); catalogue aarch64-ifetch: coFF+cachesync Forbidden, "
            "DIC1.MP.FF+dmb.st+po Forbidden, coFF Allowed.",
        ),
        Rule(
            "A full DMB (ISH, OSH, SY) orders an earlier DC CVAU before every later access: the "
            "clean is performed before a later store is visible. Invalidations (IC) still need a "
            "DSB to complete, and only a full DSB completes maintenance (DSB LD and DSB ST order "
            "loads or stores only: DSB ST waits for the earlier stores to complete, so they drain). "
            "IC IALLU invalidates the executing CPU's instruction cache only; with the option fb "
            "(HCR_EL2.FB=1, a KVM guest) every CPU's, as IC IALLUIS.",
            "herd/libdir/aarch64.cat bob (DC.CVAU; po; dmb.full; po; M) and C_IC (IC; po; "
            "dsb.full); Arm ARM D7.5 (cache maintenance ordering by DMB), C6.2 DSB, and the "
            "system register description of IC IALLU and HCR_EL2.FB; catalogue aarch64-ifetch: "
            "MP.RF+dc.cvau-dmb.ish+dsb.ish-ic.ivau-dsb.ish-isb Forbidden, SB.RF+dmb+dsb.st-"
            "cachesync-isb Forbidden.",
        ),
        Rule(
            "A data read of code (LDR from an instruction's address) reads memory as the CPU "
            "sees it (its own buffered stores included), not what its instruction fetch sees.",
            "Arm ARM B2.2.5 and D7.5 (instruction and data accesses are separate observers); "
            "catalogue aarch64-ifetch: 2SM.B+dmb.sy-dsb.ish-ic.vau-dsb.ish+dmb.sy Allowed.",
        ),
        Rule(
            "LIMITATION of this model: a CPU's loads run in program order and read memory (or "
            "its own buffer) when they execute; weak outcomes come from store reordering "
            "alone. Load-load reordering is not modelled, so a protocol whose only fault is a "
            "missing read barrier (smp_rmb, an acquire) is not found: MP+dmb.st+po, Allowed on "
            "Arm, is never reached here. Every outcome reached is Allowed.",
            "Arm ARM B2.3 (loads may be satisfied out of order); herdtools7 catalogue "
            "aarch64/MP+dmb.st+po (Allowed); tests/test_arm64_model.py pins what is reached.",
        ),
    )

    # brk: Unicorn 2.1.4 reports UC_HOOK_INTR 7 (EXCP_BKPT) with the PC still at the brk.
    trap_insn = BRK
    trap_name = "brk"
    trap_intno = 7
    trap_pc_after = 0

    uc_arch = unicorn.UC_ARCH_ARM64
    uc_mode = unicorn.UC_MODE_ARM
    cs_arch = capstone.CS_ARCH_ARM64
    cs_mode = capstone.CS_MODE_ARM

    reg_pc = A.UC_ARM64_REG_PC
    reg_sp = A.UC_ARM64_REG_SP
    reg_irq = A.UC_ARM64_REG_PSTATE
    irq_mask = PSTATE_I
    irq_set_enables = False  # PSTATE.I set = masked
    link_reg = A.UC_ARM64_REG_X30
    word_size = 8
    counter_regs = {"tracer": A.UC_ARM64_REG_X28, "work": A.UC_ARM64_REG_X27}
    # return addresses the image keeps in registers: the link register, the traced entry's
    # saved copy (mov x9, x30) and the tracer's (mov x10, x30)
    state_regs = (A.UC_ARM64_REG_X30, A.UC_ARM64_REG_X9, A.UC_ARM64_REG_X10)
    filler = UDF0  # a CPU that runs into padding faults
    program_regs = PROGRAM_REGS

    def __init__(self, options: tuple[str, ...] = ()) -> None:
        super().__init__(options)
        self.icache_needs_clean = "idc" not in options
        self.icache_needs_invalidate = "dic" not in options
        self.coherent_fetches = "dic" in options
        self.iallu = "inval_all" if "fb" in options else "inval_local"

    # ---- instructions ----------------------------------------------------------------------
    def encode_call(self, site_addr: int, target: int) -> bytes:
        return insn(aarch64_insn_gen_branch_imm(site_addr, target, link=True))

    def encode_jmp(self, site_addr: int, target: int) -> bytes:
        return insn(aarch64_insn_gen_branch_imm(site_addr, target, link=False))

    def semantics(self, code: bytes, addr: int) -> tuple[str, int]:
        if len(code) != 4:
            return "bad", 0
        word = word_of(code)
        if word & 0x7C000000 == _B:
            return ("call" if word & 1 << 31 else "jmp"), branch_target(word, addr)
        if self.insn_lengths(code) == (4,):
            return "next", addr + 4
        return "bad", 0

    def cmodx_safe(self, code: bytes) -> bool:
        if len(code) != 4:
            return False
        word = word_of(code)
        return any(word & mask == value for mask, value in _CMODX)

    litmus_name = "AArch64"
    sync_core_name = "isb"

    def program_reg(self, name: str) -> tuple[str, int]:
        up = name.upper()
        if up.startswith("W") and f"X{up[1:]}" in PROGRAM_REGS:
            return f"X{up[1:]}", 32
        if up in PROGRAM_REGS:
            return up, 64
        raise KeyError(name)

    def assemble(self, lines: tuple[str, ...], base: int) -> tuple[bytes, dict[str, int]]:
        from .arm64_asm import assemble

        return assemble(lines, base)

    def insn_effect(self, code: bytes) -> tuple | None:
        if len(code) != 4:
            return None
        word = word_of(code)
        if word & 0xFFFFF0FF == 0xD50330BF:  # DMB <option>
            return ("fence", _DMB_KINDS[word >> 8 & 3])
        if word & 0xFFFFF0FF == 0xD503309F:  # DSB <option>: only a full one completes maintenance
            kind = _DMB_KINDS[word >> 8 & 3]
            # DSB ST waits for earlier stores to complete: they drain (DMB ST only orders them)
            return ("fence", {"mb": "dsb", "wmb": "drain"}.get(kind, kind))
        if word == 0xD508751F:  # IC IALLU: local, or broadcast with HCR_EL2.FB
            return ("maint", self.iallu, None)
        for mask, value, effect in _EFFECTS:
            if word & mask == value:
                if effect[-1] == "Rt":  # the address is in register Rt
                    rt = word & 31
                    return (*effect[:-1], PROGRAM_REGS[f"X{rt}"] if rt != 31 else A.UC_ARM64_REG_XZR)
                return effect
        return None

    def abstractable_insn(self, mnemonic: str, op_str: str) -> bool:
        # the image reads no register but the counters it alone writes, the stack pointer,
        # PSTATE.I and the return addresses in `state_regs`
        return mnemonic in _SAFE_MNEMONICS or (mnemonic, op_str) in _SAFE_FORMS

    # ---- emitters --------------------------------------------------------------------------
    def ret(self) -> bytes:
        return RET

    def nop(self) -> bytes:
        return NOP

    def stop(self) -> bytes:
        return WFI  # Unicorn 2.1.4 ends emu_start at a wfi, silently, the PC past it

    def irqs_off(self) -> bytes:
        return DAIFSET_I

    def irqs_on(self) -> bytes:
        return DAIFCLR_I

    def counter_inc(self, which: str) -> bytes:
        return add_imm1({"tracer": TRACER_REG, "work": WORK_REG}[which])

    def traced_entry(self) -> bytes:
        return MOV_X9_LR

    def tracer_return(self) -> bytes:
        # back to the traced function through x10 with the caller's x30 restored from x9, as
        # ftrace_caller does from the registers the patch-site pair saved
        return MOV_X10_LR + MOV_LR_X9 + RET_X10
