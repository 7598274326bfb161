"""The 32-bit ARM models' facts: the ARMv7 lists of instructions that may be modified while they
execute, as tables (every pair inside is old-or-new, a pair with one outside is reported), the
kernel's encoders against capstone, and the Unicorn 2.1.4 facts the models rely on."""

from __future__ import annotations

import random
import struct

import capstone
import pytest
import unicorn
from unicorn import arm_const as A

from fuzzer.arch.arm import (
    ARM_NOP,
    KPROBE_BREAK,
    Arm,
    arm_gen_branch,
    branch_target,
    insn,
)
from fuzzer.arch.thumb2 import (
    KPROBE_THUMB16_BREAK,
    KPROBE_THUMB32_BREAK,
    NOP16,
    NOP_W,
    Thumb2,
    arm_gen_branch_thumb2,
    thumb2_branch_target,
    thumb16,
    thumb32,
)
from fuzzer.campaign import fuzz
from fuzzer.machine import Config, Machine
from fuzzer.protocol import Protocol, Site
from fuzzer.strategies.exhaustive import ExhaustiveStrategy
from fuzzer.strategies.random import RandomStrategy

ARM, T2 = Arm(), Thumb2()
CS_ARM = capstone.Cs(capstone.CS_ARCH_ARM, capstone.CS_MODE_ARM)
CS_T32 = capstone.Cs(capstone.CS_ARCH_ARM, capstone.CS_MODE_THUMB)

# ARMv7 ARM A3.5.4, ARM state: B, BL, NOP, BKPT, SVC, HVC, SMC (a few encodings of each)
ARM_SAFE = {"b": insn(0xEA00000F), "b.ne": insn(0x1AFFFFFE), "bl": insn(0xEB000100), "nop": insn(0xE320F000),
            "bkpt": insn(0xE1200070), "bkpt #5": insn(0xE1200075), "svc": insn(0xEF000000),
            "hvc": insn(0xE1400070), "smc": insn(0xE1600070)}
ARM_OUTSIDE = {"mov r0, r0 (arm_gen_nop)": insn(ARM_NOP), "pop {lr} (ftrace's NOP)": insn(0xE8BD4000),
               "add": insn(0xE2800001), "kprobe udf": KPROBE_BREAK, "blx imm (cond 1111)": insn(0xFA000000),
               "ldr": insn(0xE5910000)}
# Thumb state: the 16-bit B (T1 with a condition, T2), NOP, BKPT, SVC
T16_SAFE = {"b": thumb16(0xE7FE), "beq": thumb16(0xD0FE), "bne": thumb16(0xD1FE), "nop": NOP16,
            "bkpt": thumb16(0xBE00), "svc": thumb16(0xDF00)}
T16_OUTSIDE = {"adds": thumb16(0x3001), "mov r9, lr": thumb16(0x46F1), "bx lr": thumb16(0x4770),
               "udf #0x18 (T1 cond 1110)": KPROBE_THUMB16_BREAK, "wfi": thumb16(0xBF30), "yield": thumb16(0xBF10)}


@pytest.mark.parametrize("a", list(ARM_SAFE))
@pytest.mark.parametrize("b", list(ARM_SAFE))
def test_every_arm_pair_in_the_list_is_old_or_new(a, b):
    assert ARM.cmodx_unsafe([ARM_SAFE[a], ARM_SAFE[b]]) is None


@pytest.mark.parametrize("bad", list(ARM_OUTSIDE))
@pytest.mark.parametrize("good", ["b", "bl", "nop", "bkpt"])
def test_an_arm_pair_with_one_outside_the_list_is_reported(good, bad):
    for words in ([ARM_SAFE[good], ARM_OUTSIDE[bad]], [ARM_OUTSIDE[bad], ARM_SAFE[good]]):
        assert ARM.cmodx_unsafe(words) == ARM_OUTSIDE[bad]


@pytest.mark.parametrize("a", list(T16_SAFE))
@pytest.mark.parametrize("b", list(T16_SAFE))
def test_every_thumb16_pair_in_the_list_is_old_or_new(a, b):
    versions = [T16_SAFE[a] + NOP16, T16_SAFE[b] + NOP16]  # the unit is a 16-bit instruction in both
    assert T2.cmodx_unsafe([T16_SAFE[a], T16_SAFE[b]], versions, 0) is None


@pytest.mark.parametrize("bad", list(T16_OUTSIDE))
def test_a_thumb16_pair_with_one_outside_the_list_is_reported(bad):
    words = [T16_SAFE["nop"], T16_OUTSIDE[bad]]
    assert T2.cmodx_unsafe(words, [w + NOP16 for w in words], 0) == T16_OUTSIDE[bad]


def test_a_unit_inside_a_32bit_thumb_instruction_is_judged_as_a_fetch_not_by_the_list():
    """No 32-bit instruction is on the Thumb list; its hazard is the tear (two halfword fetches),
    which torn-fetch reports with what the mix did, so cmodx leaves those units alone."""
    bw = thumb32(arm_gen_branch_thumb2(0x100000, 0x100400))
    for off in (0, 2):
        assert T2.cmodx_unsafe([bw[off:off + 2], NOP_W[off:off + 2]], [bw, NOP_W], off) is None


# ---- encoders -------------------------------------------------------------------------------------
def test_arm_branches_against_capstone():
    rng = random.Random(1)
    for _ in range(500):
        pc = 0x100000 + 4 * rng.randrange(0x1000)
        to = pc + 4 * rng.randrange(-(pc // 4), 1 << 22)  # a kernel address: not below 0
        for link, mnemonic in ((False, "b"), (True, "bl")):
            word = arm_gen_branch(pc, to, link)
            (i,) = CS_ARM.disasm(insn(word), pc)
            assert (i.mnemonic, int(i.op_str.lstrip("#"), 16)) == (mnemonic, to)
            assert branch_target(word, pc) == to
            assert ARM.semantics(insn(word), pc) == ("call" if link else "jmp", to)
    with pytest.raises(ValueError):
        arm_gen_branch(0x100000, 0x100000 + 8 + (32 << 20))  # the offset counts from pc + 8
    with pytest.raises(ValueError):
        arm_gen_branch(0x100000, 0x100002)


def test_thumb2_branches_against_capstone_and_the_torn_branch():
    rng = random.Random(2)
    for _ in range(500):
        pc = 0x100000 + 2 * rng.randrange(0x1000)
        to = pc + 2 * rng.randrange(-(pc // 2), 1 << 22)
        for link, mnemonic in ((False, "b.w"), (True, "bl")):
            word = arm_gen_branch_thumb2(pc, to, link)
            (i,) = CS_T32.disasm(thumb32(word), pc)
            assert (i.mnemonic, int(i.op_str.lstrip("#"), 16)) == (mnemonic, to)
            assert thumb2_branch_target(word, pc) == ("call" if link else "jmp", to)
    with pytest.raises(ValueError):
        arm_gen_branch_thumb2(0x100000, 0x100001)
    # MULTIARCH 2.1: b.w .+0x400 and nop.w tear into two other valid branches
    bw = thumb32(arm_gen_branch_thumb2(0, 0x400))
    assert bw.hex() == "00f0feb9" and NOP_W.hex() == "aff30080"
    assert [i.mnemonic for i in CS_T32.disasm(NOP_W[:2] + bw[2:], 0)] == ["b.w"]
    assert [i.mnemonic for i in CS_T32.disasm(bw[:2] + NOP_W[2:], 0)] == ["beq.w"]


def test_the_breakpoints_are_instructions_of_the_models():
    assert ARM.insn_lengths(KPROBE_BREAK + insn(ARM_NOP)) == (4, 4)  # capstone decodes neither alone
    assert not list(CS_ARM.disasm(KPROBE_BREAK, 0))
    assert ARM.trap_length(KPROBE_BREAK) == 4
    assert T2.trap_length(KPROBE_THUMB16_BREAK + NOP16) == 2 and T2.trap_length(KPROBE_THUMB32_BREAK) == 4
    assert T2.disasm(KPROBE_THUMB32_BREAK, 0) == "udf.w #0x18"


def test_thumb_stores_follow_patch_text_real():
    """An aligned 32-bit instruction is one store; a straddling one two halfword stores."""
    assert T2.store_units(0, NOP_W) == [(0, NOP_W)]
    assert T2.store_units(2, NOP_W) == [(2, NOP_W[:2]), (4, NOP_W[2:])]


# ---- Unicorn 2.1.4 --------------------------------------------------------------------------------
def _probe(code: bytes, thumb: bool):
    uc = unicorn.Uc(unicorn.UC_ARCH_ARM, unicorn.UC_MODE_THUMB if thumb else unicorn.UC_MODE_ARM)
    uc.mem_map(0x100000, 0x10000)
    uc.mem_write(0x100000, code)
    seen = []
    uc.hook_add(unicorn.UC_HOOK_INSN_INVALID, lambda u, _: seen.append(("invalid", u.reg_read(A.UC_ARM_REG_PC))) or False)

    def intr(u, n, _):
        seen.append(("intr", n, u.reg_read(A.UC_ARM_REG_PC)))
        u.emu_stop()

    uc.hook_add(unicorn.UC_HOOK_INTR, intr)
    try:
        uc.emu_start(0x100000 | thumb, 0x100100, count=5)
    except unicorn.UcError:
        pass
    return seen, uc.reg_read(A.UC_ARM_REG_PC)


def test_unicorn_reports_the_kprobe_breakpoints_as_invalid_at_their_address():
    assert _probe(insn(ARM_NOP) + KPROBE_BREAK, False)[0] == [("invalid", 0x100004)]
    assert _probe(NOP16 + KPROBE_THUMB16_BREAK, True)[0] == [("invalid", 0x100002)]
    assert _probe(NOP16 + KPROBE_THUMB32_BREAK, True)[0] == [("invalid", 0x100002)]
    assert ARM.trap_length(KPROBE_BREAK) and T2.trap_length(KPROBE_THUMB32_BREAK)


def test_unicorn_reports_bkpt_as_interrupt_7_at_its_address():
    assert _probe(insn(ARM_NOP) + insn(0xE1200070), False)[0] == [("intr", 7, 0x100004)]
    assert _probe(NOP16 + thumb16(0xBE00), True)[0] == [("intr", 7, 0x100002)]
    assert ARM.trap_intno == 7 and T2.trap_intno == 7 and ARM.trap_pc_after == 0


def test_unicorn_stops_at_wfi_with_the_pc_past_it():
    assert _probe(insn(ARM_NOP) + ARM.stop(), False) == ([], 0x100008)
    assert _probe(NOP16 + T2.stop(), True) == ([], 0x100004)


def test_a_thumb_cpu_resumed_without_the_t_bit_runs_arm():
    """Why Thumb2.pc_exec_bits is 1: after a counted stop, emu_start at the plain PC leaves
    Thumb state (MULTIARCH 2.1, unicorn #1729)."""
    code = NOP16 * 4 + struct.pack("<I", 0) * 4
    for bits, thumb_after in ((0, False), (1, True)):
        uc = unicorn.Uc(unicorn.UC_ARCH_ARM, unicorn.UC_MODE_THUMB)
        uc.mem_map(0x100000, 0x10000)
        uc.mem_write(0x100000, code)
        uc.emu_start(0x100001, 0x100100, count=1)
        pc = uc.reg_read(A.UC_ARM_REG_PC)
        assert pc == 0x100002 and uc.reg_read(A.UC_ARM_REG_CPSR) & 0x20
        uc.emu_start(pc | bits, 0x100100, count=1)
        assert bool(uc.reg_read(A.UC_ARM_REG_CPSR) & 0x20) is thumb_after
    assert T2.pc_exec_bits == 1 and ARM.pc_exec_bits == 0


class OwnBkpt(Protocol):
    """A protocol's own BKPT over a 16-bit Thumb instruction, claimed by its trap handler, or
    not: BKPT reaches the handler as kprobes' udf does."""

    name = "test/thumb-bkpt"
    arch = "thumb2"
    sites = {"s": Site(old=thumb16(0x3001) + NOP16, new=thumb16(0xBE00) + NOP16)}
    nmi_sites = ()
    params = dict(claim=True)
    variants = {"claimed": {}, "unclaimed": dict(claim=False)}
    expect = {"claimed": None, "unclaimed": "unhandled-trap"}
    complete_when_done = False

    def patcher(self, k):
        site = k.site("s")
        yield from k.stop_machine(lambda kk: self.write(kk, site.new))
        yield from k.stop_machine(lambda kk: self.write(kk, site.old))

    def write(self, k, data):
        yield k.poke("s", data[:2])
        yield from k.caches_clean_inval_pou("s")

    def trap_handler(self, k, ip):
        if self.v.claim and ip == k.site("s").addr:
            return k.emulate(ip, thumb16(0x3001))
        return k.NOT_MINE


def test_a_bkpt_goes_to_the_protocols_trap_handler():
    res = fuzz(Machine(OwnBkpt, "claimed", Config(cpus=2)), ExhaustiveStrategy(seed=1), schedules=20_000)
    assert res.exhausted and res.crashes == {}
    # the same search space, unclaimed: the IRQ that runs the site between the two updates traps
    res = fuzz(Machine(OwnBkpt, "unclaimed", Config(cpus=2)), RandomStrategy(seed=1), schedules=2_000)
    assert {r.finding.oracle for r in res.crashes.values()} == {"unhandled-trap"}


@pytest.mark.parametrize("arch", ["arm", "thumb2"])
def test_irqs_follow_cpsr_i(arch):
    """IRQs and IPIs are taken only with CPSR.I clear: the image's cpsid i / cpsie i set and clear
    the bit the machine reads (Unicorn starts in SVC mode with I set)."""
    from fuzzer.protocols import resolve

    cls, variant = resolve("arm/jump_label" if arch == "arm" else "arm/jump_label_thumb2")
    machine = Machine(cls, variant, Config(cpus=2))
    machine._reset(b"", False, None, False)
    hw = machine.cpus[1].hw
    assert hw.irqs_enabled()  # the thread context starts with IRQs on
    cpsr = hw.read_regs((A.UC_ARM_REG_CPSR,))[0]
    hw.write_regs([(A.UC_ARM_REG_CPSR, cpsr | 0x80)])
    assert not hw.irqs_enabled()
    assert machine.arch.irqs_off() in machine.image.text and machine.arch.irqs_on() in machine.image.text
