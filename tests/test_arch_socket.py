"""The architecture socket takes a second, real ISA: arm64 (fuzzer/arch/arm64.py) runs through the
unchanged machine with the shared image builder and Unicorn CPU. Here it runs on a strong memory
model (`MiniArm64`), so that what is pinned is arm64's alone: its encodings and atomicity.

What it pins: the hand encoders against capstone, the Unicorn 2.1.4 behaviours the model relies
on (MULTIARCH.md 2.1: `wfi` ends emu_start silently with the PC past it, `brk` arrives as
interrupt 7 with the PC at the brk, PSTATE.I masks IRQs), and that a one-site ftrace-like patch
runs on 2 and 4 CPUs: clean when the 4-byte BL is written with one aligned store, caught when it
is written as two halves. The weak store buffer and the maintained instruction fetch have tests
of their own (tests/test_arm64_arch.py and the engine's).
"""

from __future__ import annotations

import random

import capstone
import pytest
import unicorn
from unicorn import arm64_const as A
from unicorn import arm_const as M
from unicorn import riscv_const as R

import fuzzer.arch as arch_registry
from fuzzer.arch.arm64 import (
    BRK,
    DAIFCLR_I,
    DAIFSET_I,
    MOV_LR_X9,
    MOV_X9_LR,
    MOV_X10_LR,
    NOP,
    PSTATE_I,
    RET,
    RET_X10,
    SZ_128M,
    TRACER_REG,
    UDF0,
    WFI,
    Arm64,
    aarch64_insn_gen_branch_imm,
    add_imm1,
    insn,
)
from fuzzer.arch.base import Arch, CpuHooks, Image
from fuzzer.machine import Config, Machine
from fuzzer.protocol import Call, Protocol, Site

_CS = capstone.Cs(capstone.CS_ARCH_ARM64, capstone.CS_MODE_ARM)


class MiniArm64(Arm64):
    """arm64 on a strong model: a FIFO store buffer, a coherent instruction fetch that sees the
    CPU's own stores at once, and a stop_machine that synchronizes. These tests pin arm64's
    encodings, its 4-byte atomicity and the Unicorn facts through the whole machine; on the
    real model a torn or stale fetch would also come from the weak buffer and the missing cache
    maintenance, and the verdicts below would no longer be about encodings alone."""

    store_buffer = "fifo"
    fetch_model = "coherent"
    own_store_visible_to_fetch = True
    stop_machine_serializes = True


class Arm64Ftrace(Protocol):
    """arm64 ftrace's patch, reduced: NOP -> BL ftrace_caller with one aligned 32-bit store,
    then kick every CPU (jump_label's transform_apply). `split` writes the BL as two halfwords."""

    name = "test/arm64_ftrace"
    arch = "arm64"
    sites = {"fentry": Site(old=NOP, new=Call("ftrace_caller"))}
    params = dict(split=False)
    variants = {"atomic": {}, "split": dict(split=True)}
    expect = {"atomic": None, "split": "torn-fetch"}

    def patcher(self, k):
        site = k.site("fentry")
        yield k.expect_text("fentry", site.old)
        if self.v.split:
            yield k.poke("fentry", site.new[:2])
            yield k.poke("fentry", site.new[2:], offset=2)
        else:
            yield k.poke("fentry", site.new)
        yield k.sync_cores()


@pytest.fixture
def arm64(monkeypatch) -> MiniArm64:
    monkeypatch.setitem(arch_registry.ARCHES, "arm64", MiniArm64)
    return arch_registry.get_arch("arm64")


def _decoded(code: bytes, addr: int = 0x1000) -> list[tuple[str, str]]:
    return [(i.mnemonic, i.op_str) for i in _CS.disasm(code, addr)]


# ---- encoders, checked against capstone -------------------------------------------------------
def test_encoders_match_capstone():
    assert _decoded(NOP) == [("nop", "")]
    assert _decoded(RET) == [("ret", "")]
    assert _decoded(WFI) == [("wfi", "")]
    assert _decoded(BRK) == [("brk", "#4")]
    assert _decoded(DAIFSET_I) == [("msr", "daifset, #2")]
    assert _decoded(DAIFCLR_I) == [("msr", "daifclr, #2")]
    assert _decoded(UDF0) == [("udf", "#0")]
    assert _decoded(add_imm1(TRACER_REG)) == [("add", "x28, x28, #1")]
    assert _decoded(MOV_X9_LR + MOV_X10_LR + MOV_LR_X9 + RET_X10) == [
        ("mov", "x9, x30"), ("mov", "x10, x30"), ("mov", "x30, x9"), ("ret", "x10")]
    for src, dst in [(0x1000, 0x2000), (0x2000, 0x1000), (0x1000, 0x1000),
                     (0x1000, 0x1000 + SZ_128M - 4), (0x1000 + SZ_128M, 0x1000)]:
        for link, mnemonic in [(True, "bl"), (False, "b")]:
            code = insn(aarch64_insn_gen_branch_imm(src, dst, link))
            assert _decoded(code, src) == [(mnemonic, f"#{dst:#x}")]
            assert MiniArm64().semantics(code, src) == ("call" if link else "jmp", dst)
    for src, dst in [(0x1000, 0x1002), (0x1000, 0x1000 + SZ_128M)]:
        with pytest.raises(ValueError):
            aarch64_insn_gen_branch_imm(src, dst, True)


# ---- Unicorn 2.1.4 facts the model relies on (MULTIARCH.md 2.1) ---------------------------
def _bare_arm64(code: bytes) -> unicorn.Uc:
    uc = unicorn.Uc(unicorn.UC_ARCH_ARM64, unicorn.UC_MODE_ARM)
    uc.mem_map(0x10000, 0x1000)
    uc.mem_write(0x10000, code)
    return uc


def test_wfi_ends_emu_start_silently_with_the_pc_past_it():
    uc = _bare_arm64(NOP + WFI + NOP + NOP)
    seen = []
    uc.hook_add(unicorn.UC_HOOK_INTR, lambda *a: seen.append(a))
    uc.emu_start(0x10000, 0x10010, count=10)  # would run to the end without the wfi
    assert uc.reg_read(A.UC_ARM64_REG_PC) == 0x10008
    assert seen == []


def test_brk_is_interrupt_7_with_the_pc_at_the_brk():
    uc = _bare_arm64(NOP + BRK + NOP)
    seen = []

    def on_intr(uc, intno, _):
        seen.append((intno, uc.reg_read(A.UC_ARM64_REG_PC)))
        uc.emu_stop()

    uc.hook_add(unicorn.UC_HOOK_INTR, on_intr)
    uc.emu_start(0x10000, 0x1000C, count=10)
    assert seen == [(7, 0x10004)]


def test_daifset_and_daifclr_move_pstate_i():
    uc = _bare_arm64(DAIFCLR_I + DAIFSET_I)
    uc.emu_start(0x10000, 0x10004)
    assert not uc.reg_read(A.UC_ARM64_REG_PSTATE) & PSTATE_I
    uc.emu_start(0x10004, 0x10008)
    assert uc.reg_read(A.UC_ARM64_REG_PSTATE) & PSTATE_I


# ---- the shared image builder and CPU on arm64 ----------------------------------------------
def _image(arch: Arch):
    return arch.build_image(Arm64Ftrace.sites)


def test_image_is_whole_arm64_code(arm64):
    image = _image(arm64)
    assert len(image.text) % 4 == 0
    assert sum(arm64.insn_lengths(image.text)) == len(image.text)  # every word decodes
    site = image.sites["fentry"]
    assert site.addr == site.func + 4 and site.addr % 4 == 0  # after `mov x9, x30`
    nmi_code = image.text[image.nmi_entry - image.base:]
    assert _decoded(nmi_code[:8], image.nmi_entry) == [
        ("bl", f"#{site.func:#x}"), ("wfi", "")]
    assert image.stop_pcs == {image.nmi_entry + 8, image.irq_entry + 8}  # the IRQ handler's too


class _Recorder:
    def __init__(self):
        self.traps, self.faults = [], []
        self.hooks = CpuHooks(on_trap=lambda i, kind, pc: self.traps.append((kind, pc)),
                              on_fault=lambda i, kind, addr, **_: self.faults.append((kind, addr)))


def test_cpu_runs_the_nmi_handler_to_the_stop_with_irqs_masked(arm64):
    image = _image(arm64)
    rec = _Recorder()
    cpu = arm64.new_cpu(image, 0, rec.hooks)
    cpu.restore(cpu.nmi_context)
    assert not cpu.irqs_enabled()
    assert cpu.run(image.nmi_entry, 100, sites=False) == -1
    assert cpu.pc() in image.stop_pcs
    assert cpu.uc.reg_read(arm64.counter_regs["work"]) == 1
    assert rec.traps == rec.faults == []
    cpu.restore(cpu.thread_context)
    assert cpu.irqs_enabled()


def test_cpu_reports_a_brk_at_its_own_address(arm64):
    image = _image(arm64)
    site = image.sites["fentry"]
    rec = _Recorder()
    cpu = arm64.new_cpu(image, 0, rec.hooks)
    cpu.restore(cpu.thread_context)
    cpu.write_text(site.addr, BRK)
    assert cpu.run(image.thread_entry, 100, sites=False) == -1
    assert rec.traps == [("brk", site.addr)]
    assert rec.faults == []


def test_emulated_call_sets_the_link_register(arm64):
    image = _image(arm64)
    site = image.sites["fentry"]
    cpu = arm64.new_cpu(image, 0, _Recorder().hooks)
    cpu.restore(cpu.thread_context)
    target = image.symbols["ftrace_caller"]
    assert cpu.emulate("call", target, site.addr + 4) == target
    assert cpu.pc() == target
    assert cpu.uc.reg_read(A.UC_ARM64_REG_X30) == site.addr + 4


# ---- the unchanged machine on arm64 ----------------------------------------------------------
def _schedules(seed: int, n: int) -> list[bytes]:
    rng = random.Random(seed)
    return [rng.randbytes(rng.randint(0, 300)) for _ in range(n)]


@pytest.mark.parametrize("cpus", [2, 4])
def test_atomic_patch_is_clean_and_the_new_bl_runs(arm64, cpus):
    machine = Machine(Arm64Ftrace, "atomic", Config(cpus=cpus))
    completed = new_fetches = tracer_hits = 0
    for schedule in _schedules(cpus, 400):
        result = machine.run(schedule, trace=True)
        assert result.finding is None, (result.finding.title, result.trace[-20:])
        completed += result.completed
        new_fetches += sum("fetch fentry" in line and "(new)" in line for line in result.trace)
        tracer_hits += sum(c.hw.uc.reg_read(arm64.counter_regs["tracer"]) for c in machine.cpus)
    assert completed > 300
    assert new_fetches > 0, "no CPU ever fetched the BL"
    assert tracer_hits > 0, "the BL never reached ftrace_caller"


@pytest.mark.parametrize("cpus", [2, 4])
def test_split_patch_is_found(arm64, cpus):
    """Another CPU executes the half-written word (new low halfword, old high halfword: an
    `msr` to an implementation-defined register, neither NOP nor BL). The machine files it as
    wrong-target, not torn-fetch: every poke's result is a version the protocol wrote on
    purpose (`site.intended`), and torn-fetch is kept for words no poke produced. With 4-byte
    fetch units and aligned 4-byte stores, nothing else can tear an arm64 site."""
    machine = Machine(Arm64Ftrace, "split", Config(cpus=cpus))
    runs = (machine.run(schedule) for schedule in _schedules(100 + cpus, 50))
    result = next((r for r in runs if r.finding is not None), None)
    assert result is not None, "50 random schedules never caught a CPU fetching half a BL"
    assert result.finding.oracle == "wrong-target", result.finding.title
    site = machine.sites["fentry"]
    half = site.new[:2] + site.old[2:]
    assert f"executes {arm64.disasm(half, site.addr)};" in result.finding.detail


# ---- riscv64 and Thumb quirks the shared CPU takes from Arch data ----------------------------
# Only what differs from x86 and arm64 in how Unicorn reports and resumes; their images and
# protocols are later work, so these CPUs run hand-laid text.
def _hand_image(arch: Arch, code: bytes, stop_at: int) -> Image:
    base = arch.text_base
    return Image(base=base, text=code, symbols={}, sites={}, thread_entry=base, nmi_entry=base,
                 irq_entry=base, foreign_trap=base, stop_pcs=frozenset({base + stop_at}))


class MiniRiscv64(Arch):
    name = "riscv64-quirks"
    trap_insn = insn(0x00100073)  # ebreak
    trap_name = "ebreak"
    trap_intno = None  # Unicorn 2.1.4: UC_HOOK_INSN_INVALID, PC at the ebreak
    uc_arch = unicorn.UC_ARCH_RISCV
    uc_mode = unicorn.UC_MODE_RISCV64
    cs_arch = capstone.CS_ARCH_RISCV
    cs_mode = capstone.CS_MODE_RISCV64
    reg_pc = R.UC_RISCV_REG_PC
    reg_sp = R.UC_RISCV_REG_SP
    reg_irq = R.UC_RISCV_REG_MSTATUS
    irq_mask = 1 << 3  # mstatus.MIE
    link_reg = R.UC_RISCV_REG_RA


RV_NOP, RV_WFI, RV_ILLEGAL = insn(0x00000013), insn(0x10500073), insn(0xFFFFFFFF)


def test_riscv64_ebreak_is_a_trap_at_its_address_and_illegal_is_a_fault():
    arch = MiniRiscv64()
    base = arch.text_base
    rec = _Recorder()
    cpu = arch.new_cpu(_hand_image(arch, RV_NOP + arch.trap_insn + RV_NOP + RV_WFI, 16), 0, rec.hooks)
    cpu.restore(cpu.thread_context)
    assert cpu.irqs_enabled()
    assert cpu.run(base, 10) == -1
    assert rec.traps == [("ebreak", base + 4)] and rec.faults == []
    assert cpu.run(base + 8, 10) == -1  # wfi: the silent stop, the PC past it
    assert cpu.pc() == base + 16 and rec.faults == []
    cpu.write_text(base + 4, RV_ILLEGAL)
    assert cpu.run(base, 10) == -1
    assert rec.traps == [("ebreak", base + 4)] and len(rec.faults) == 1


class MiniThumb2(Arch):
    name = "thumb2-quirks"
    trap_insn = bytes.fromhex("00be")  # bkpt #0
    trap_name = "bkpt"
    trap_intno = 7  # PC at the bkpt
    uc_arch = unicorn.UC_ARCH_ARM
    uc_mode = unicorn.UC_MODE_THUMB
    cs_arch = capstone.CS_ARCH_ARM
    cs_mode = capstone.CS_MODE_THUMB
    reg_pc = M.UC_ARM_REG_PC
    reg_sp = M.UC_ARM_REG_SP
    reg_irq = M.UC_ARM_REG_CPSR
    irq_mask = 1 << 7  # CPSR.I
    irq_set_enables = False
    link_reg = M.UC_ARM_REG_LR
    word_size = 4
    pc_exec_bits = 1


T_NOP, T_WFI = bytes.fromhex("00bf"), bytes.fromhex("30bf")


def test_thumb_resumes_in_thumb_state():
    arch = MiniThumb2()
    base = arch.text_base
    code = T_NOP + T_NOP + T_NOP + T_WFI + T_NOP + arch.trap_insn
    assert _decoded_thumb(code) == ["nop", "nop", "nop", "wfi", "nop", "bkpt"]
    rec = _Recorder()
    cpu = arch.new_cpu(_hand_image(arch, code, 8), 0, rec.hooks)
    cpu.restore(cpu.thread_context)
    assert cpu.run(base, 1) == -1 and cpu.pc() == base + 2
    assert cpu.run(cpu.pc(), 10) == -1  # resumed with the plain PC, the bytes would run as ARM
    assert cpu.pc() == base + 8 and rec.faults == []
    assert cpu.run(base + 8, 10) == -1
    assert rec.traps == [("bkpt", base + 10)]
    assert cpu.emulate("call", base, base + 4) == base
    assert cpu.uc.reg_read(M.UC_ARM_REG_LR) == base + 4 | 1  # a Thumb return address


def test_unicorn_resumes_thumb_as_arm_without_the_state_bit():
    """The fact pc_exec_bits exists for (MULTIARCH.md 2.1)."""
    uc = unicorn.Uc(unicorn.UC_ARCH_ARM, unicorn.UC_MODE_THUMB)
    uc.mem_map(0x10000, 0x1000)
    uc.mem_write(0x10000, T_NOP * 4 + T_WFI)
    uc.emu_start(0x10001, 0x10100, count=1)
    assert uc.reg_read(M.UC_ARM_REG_CPSR) & 1 << 5  # Thumb
    uc.emu_start(0x10002, 0x10100, count=1)
    assert not uc.reg_read(M.UC_ARM_REG_CPSR) & 1 << 5  # ARM now


def _decoded_thumb(code: bytes) -> list[str]:
    cs = capstone.Cs(capstone.CS_ARCH_ARM, capstone.CS_MODE_THUMB)
    return [i.mnemonic for i in cs.disasm(code, 0)]
