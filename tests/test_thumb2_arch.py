"""The Thumb-2 model (fuzzer/arch/thumb2.py): encoders against capstone, the torn b.w/nop.w
fetches, the ARMv7 Thumb CMODX list as a table, semantics, the Unicorn 2.1.4 behaviours the CPU
builds on, the image and the engine's CPU in Thumb state, and the rules (MULTIARCH.md 2.1, 3.2)."""

from __future__ import annotations

import random

import capstone
import pytest
import unicorn
from click.testing import CliRunner
from unicorn import arm_const as A

from fuzzer.arch import get_arch
from fuzzer.arch.base import CpuHooks
from fuzzer.arch.image import resolve
from fuzzer.arch.thumb2 import (
    ADD_R0_1_16,
    ADDW_R0_1,
    BKPT16,
    BX_IP16,
    BX_LR16,
    CPSID_I16,
    CPSIE_I16,
    KPROBE_THUMB16_BREAK,
    KPROBE_THUMB32_BREAK,
    MOV_IP_LR16,
    MOV_LR_R9_16,
    MOV_R9_LR16,
    NOP16,
    NOP_W,
    UDF16,
    WFI16,
    Thumb2,
    addw_imm1,
    arm_gen_branch_thumb2,
    is_thumb32_first,
    thumb2_branch_target,
    thumb16,
    thumb32,
)
from fuzzer.arch.unicorn_cpu import StateBitCpu
from fuzzer.cli import main
from fuzzer.protocol import Jmp, Site

_CS = capstone.Cs(capstone.CS_ARCH_ARM, capstone.CS_MODE_THUMB)
T2 = Thumb2()
PC = 0x0200_0000  # far enough from 0 that every branch of the sample has a positive target
MIB16 = 16 << 20
CPSR_T = 1 << 5


def _decoded(code: bytes, addr: int = PC) -> list[tuple[str, str]]:
    return [(i.mnemonic, i.op_str) for i in _CS.disasm(code, addr)]


def _id(value) -> str:
    return value.hex() if isinstance(value, bytes) else str(value)


# ---- encoders, checked against capstone -------------------------------------------------------
def test_branches_round_trip_through_capstone_over_the_whole_range():
    rng = random.Random(1801)
    # the ends of the range, then a sample of even offsets in both directions
    offsets = [-MIB16, MIB16 - 2, 0, -4, 2] + [2 * rng.randrange(-MIB16 // 2, MIB16 // 2) for _ in range(1500)]
    for offset in offsets:
        pc = PC + 2 * rng.randrange(0x800)
        to = pc + 4 + offset  # the offset counts from pc + 4
        for link, mnemonic in ((False, "b.w"), (True, "bl")):
            word = arm_gen_branch_thumb2(pc, to, link)
            assert _decoded(thumb32(word), pc) == [(mnemonic, f"#{to:#x}")], hex(offset)
            assert thumb2_branch_target(word, pc) == ("call" if link else "jmp", to)


@pytest.mark.parametrize("offset", [-MIB16 - 2, MIB16, MIB16 + 2, 1, -1, 0x401, -MIB16 - 1])
def test_branches_refuse_odd_and_out_of_range_offsets(offset):
    for link in (False, True):
        with pytest.raises(ValueError):
            arm_gen_branch_thumb2(PC, PC + 4 + offset, link)
    with pytest.raises(ValueError):
        T2.encode_call(PC, PC + 4 + offset)


def test_thumb32_puts_the_first_halfword_at_the_lower_address():
    assert thumb32(0xF3AF8000) == bytes.fromhex("aff3" "0080")
    assert thumb32(0x12345678) == bytes.fromhex("3412" "7856")


@pytest.mark.parametrize("code", [thumb32(arm_gen_branch_thumb2(PC, PC + 0x400)),
                                  thumb32(arm_gen_branch_thumb2(PC, PC - 0x400, link=True)),
                                  NOP_W, KPROBE_THUMB32_BREAK, ADDW_R0_1,
                                  thumb32(0xE92D4010)], ids=_id)  # push.w {r4, lr}: the 0b11101 prefix
def test_a_32bit_instruction_begins_with_a_thumb32_first_halfword(code):
    assert is_thumb32_first(int.from_bytes(code[:2], "little"))
    assert T2.insn_lengths(code) == (4,)


@pytest.mark.parametrize("code", [NOP16, BKPT16, WFI16, UDF16, KPROBE_THUMB16_BREAK, BX_LR16, ADD_R0_1_16,
                                  thumb16(0xE7FE), thumb16(0xD0FE), thumb16(0xDF00)], ids=_id)
def test_a_16bit_instruction_does_not(code):
    assert not is_thumb32_first(int.from_bytes(code, "little"))
    assert T2.insn_lengths(code + NOP16) == (2, 2)


def test_public_words_decode_as_named():
    expected = {
        NOP16: ("nop", ""), NOP_W: ("nop.w", ""), KPROBE_THUMB16_BREAK: ("udf", "#0x18"),
        KPROBE_THUMB32_BREAK: ("udf.w", "#0x18"), BKPT16: ("bkpt", "#0"), WFI16: ("wfi", ""),
        UDF16: ("udf", "#0"), BX_LR16: ("bx", "lr"), CPSID_I16: ("cpsid", "i"), CPSIE_I16: ("cpsie", "i"),
        MOV_R9_LR16: ("mov", "sb, lr"), MOV_IP_LR16: ("mov", "ip, lr"), MOV_LR_R9_16: ("mov", "lr, sb"),
        BX_IP16: ("bx", "ip"), ADD_R0_1_16: ("adds", "r0, #1"), ADDW_R0_1: ("add.w", "r0, r0, #1"),
        addw_imm1(10): ("add.w", "sl, sl, #1"),
    }
    for code, decoded in expected.items():
        assert _decoded(code) == [decoded], code.hex()
    assert (T2.nop(), T2.ret(), T2.stop(), T2.filler) == (NOP16, BX_LR16, WFI16, UDF16)
    assert T2.tracer_return() == MOV_IP_LR16 + MOV_LR_R9_16 + BX_IP16
    assert _decoded(T2.counter_inc("work")) == [("add.w", "fp, fp, #1")]
    assert T2.trap_insns == (KPROBE_THUMB16_BREAK, KPROBE_THUMB32_BREAK, BKPT16)


# ---- MULTIARCH 2.1: a torn b.w/nop.w is another valid 32-bit branch ---------------------------
BW_400 = thumb32(arm_gen_branch_thumb2(0x1002, 0x1402))  # b.w .+0x400: position independent


@pytest.mark.parametrize("torn, decoded", [
    (NOP_W[:2] + BW_400[2:], ("b.w", "#0x3b0402")),  # nop.w's first half, b.w's second
    (BW_400[:2] + NOP_W[2:], ("beq.w", "#0x1006")),  # b.w's first half, nop.w's second
], ids=["nop.w-then-b.w", "b.w-then-nop.w"])
def test_a_torn_bw_nopw_fetch_decodes_as_another_32bit_branch(torn, decoded):
    assert (BW_400.hex(), NOP_W.hex()) == ("00f0feb9", "aff30080")
    assert torn.hex() in ("aff3feb9", "00f00080")
    # MULTIARCH's target is the one at a straddling address, 0x1002
    assert _decoded(torn, 0x1002) == [decoded]
    assert T2.insn_lengths(torn) == (4,)


# ---- the ARMv7 Thumb CMODX list (ARMv7 ARM A3.5.4) as a table ----------------------------------
SAFE16 = {"b (T2)": thumb16(0xE7FE), "b (T2, far back)": thumb16(0xE400), "beq (T1)": thumb16(0xD0FE),
          "bne (T1)": thumb16(0xD1FE), "ble (T1, cond 1101)": thumb16(0xDD10), "nop": NOP16,
          "bkpt #0": BKPT16, "bkpt #0xab": thumb16(0xBEAB), "svc #0": thumb16(0xDF00), "svc #5": thumb16(0xDF05)}
OUTSIDE16 = {"adds r0, #1": ADD_R0_1_16, "mov r9, lr": MOV_R9_LR16, "bx lr": BX_LR16,
             "udf #0x18 (T1 cond 1110)": KPROBE_THUMB16_BREAK, "udf #0": UDF16,
             "yield": thumb16(0xBF10), "wfi": WFI16, "cpsid i": CPSID_I16}


def test_the_safe_set_decodes_as_its_names():
    for name, code in SAFE16.items():
        assert _decoded(code)[0][0] == name.split()[0], name


@pytest.mark.parametrize("a", list(SAFE16))
@pytest.mark.parametrize("b", list(SAFE16))
def test_every_16bit_pair_in_the_list_is_old_or_new(a, b):
    words = [SAFE16[a], SAFE16[b]]
    assert T2.cmodx_unsafe(words) is None
    assert T2.cmodx_unsafe(words, [w + NOP16 for w in words], 0) is None


@pytest.mark.parametrize("bad", list(OUTSIDE16))
@pytest.mark.parametrize("good", ["b (T2)", "beq (T1)", "nop", "bkpt #0", "svc #0"])
def test_a_16bit_pair_with_one_outside_the_list_is_reported(good, bad):
    for words in ([SAFE16[good], OUTSIDE16[bad]], [OUTSIDE16[bad], SAFE16[good]]):
        assert T2.cmodx_unsafe(words) == OUTSIDE16[bad]
        # the unit is the second halfword of two 16-bit instructions in every version
        assert T2.cmodx_unsafe(words, [NOP16 + w for w in words], 2) == OUTSIDE16[bad]


def test_a_unit_inside_a_32bit_instruction_of_any_version_is_left_to_the_fetch():
    bw = thumb32(arm_gen_branch_thumb2(PC + 2, PC + 0x402))
    old, new = NOP16 + NOP_W + NOP16, NOP16 + bw + NOP16  # the straddling site's versions
    for off in (2, 4):
        assert T2.cmodx_unsafe([old[off:off + 2], new[off:off + 2]], [old, new], off) is None
    # a 16-bit kprobe over the first half of a 32-bit instruction: 32-bit in one version only
    probed = KPROBE_THUMB16_BREAK + NOP_W[2:]
    assert T2.cmodx_unsafe([NOP_W[:2], KPROBE_THUMB16_BREAK], [NOP_W, probed], 0) is None
    # the units around it are 16-bit in every version: the list applies there
    assert T2.cmodx_unsafe([NOP16, ADD_R0_1_16], [old, ADD_R0_1_16 + NOP_W + NOP16], 0) == ADD_R0_1_16
    assert T2.cmodx_unsafe([NOP16, BX_LR16], [old, NOP16 + NOP_W + BX_LR16], 6) == BX_LR16


# ---- semantics --------------------------------------------------------------------------------
@pytest.mark.parametrize("code, result", [
    (thumb32(arm_gen_branch_thumb2(PC, PC + 0x1234)), ("jmp", PC + 0x1234)),
    (thumb32(arm_gen_branch_thumb2(PC, PC - 0x10000, link=True)), ("call", PC - 0x10000)),
    (NOP_W, ("next", PC + 4)), (NOP16, ("next", PC + 2)), (NOP16 + NOP16, ("next", PC + 4)),
    # a torn b.w/nop.w is a branch neither version takes: semantics follows it, so the torn-fetch
    # check finds no version that does the same and reports where the CPU went
    (NOP_W[:2] + BW_400[2:], ("jmp", PC + 0x3AF400)),
    (BW_400[:2] + NOP_W[2:], ("bad", 0)),  # conditional: flags the model does not follow
    (KPROBE_THUMB16_BREAK, ("bad", 0)), (KPROBE_THUMB32_BREAK, ("bad", 0)), (UDF16, ("bad", 0)),
    (ADDW_R0_1, ("bad", 0)), (NOP_W[:2], ("bad", 0)), (b"", ("bad", 0))], ids=_id)
def test_semantics(code, result):
    assert T2.semantics(code, PC) == result


# ---- Unicorn 2.1.4 in Thumb state (MULTIARCH.md 2.1): a fresh Uc per probe ----------------------
BASE = 0x10_0000


def _probe(code: bytes, start: int = BASE | 1, count: int = 10):
    """Run `code` from `start`: the INTR and INSN_INVALID reports with the PC then, the error, the Uc."""
    uc = unicorn.Uc(unicorn.UC_ARCH_ARM, unicorn.UC_MODE_THUMB)
    uc.mem_map(BASE, 0x1000)
    uc.mem_write(BASE, code)
    seen: list = []

    def on_intr(u, intno, _):
        seen.append(("intr", intno, u.reg_read(A.UC_ARM_REG_PC)))
        u.emu_stop()

    uc.hook_add(unicorn.UC_HOOK_INTR, on_intr)
    uc.hook_add(unicorn.UC_HOOK_INSN_INVALID,
                lambda u, _: seen.append(("invalid", u.reg_read(A.UC_ARM_REG_PC))) and False)
    try:
        uc.emu_start(start, BASE + 0x100, count=count)
    except unicorn.UcError as e:
        return seen, e.errno, uc
    return seen, None, uc


@pytest.mark.parametrize("brk", [KPROBE_THUMB16_BREAK, KPROBE_THUMB32_BREAK], ids=_id)
def test_the_kprobe_breakpoints_are_invalid_instructions_with_the_pc_at_them(brk):
    seen, err, _ = _probe(NOP16 + brk + WFI16)
    assert (seen, err) == ([("invalid", BASE + 2)], unicorn.UC_ERR_INSN_INVALID)


def test_bkpt_is_interrupt_7_with_the_pc_at_it():
    assert _probe(NOP16 + BKPT16 + WFI16)[:2] == ([("intr", 7, BASE + 2)], None)
    assert (T2.trap_intno, T2.trap_pc_after) == (7, 0)


def test_wfi_ends_the_run_silently_with_the_pc_past_it():
    seen, err, uc = _probe(NOP16 + WFI16 + ADD_R0_1_16 + WFI16)
    assert (seen, err) == ([], None)
    assert uc.reg_read(A.UC_ARM_REG_PC) == BASE + 4 and uc.reg_read(A.UC_ARM_REG_R0) == 0


def test_thumb_state_comes_from_the_start_address_not_the_mode():
    seen, _, uc = _probe(NOP16 * 4 + WFI16, start=BASE, count=2)  # even: ARM, 4 bytes a step
    assert uc.reg_read(A.UC_ARM_REG_PC) == BASE + 8 and not uc.reg_read(A.UC_ARM_REG_CPSR) & CPSR_T
    _, _, uc = _probe(NOP16 * 4 + WFI16, count=2)
    # the PC reads even, the T bit is in CPSR
    assert uc.reg_read(A.UC_ARM_REG_PC) == BASE + 4 and uc.reg_read(A.UC_ARM_REG_CPSR) & CPSR_T


@pytest.mark.parametrize("bits, thumb, step", [(0, False, 4), (1, True, 2)])
def test_resuming_with_the_plain_pc_runs_thumb_bytes_as_arm(bits, thumb, step):
    """Why Thumb2.pc_exec_bits is 1 and its CPU a StateBitCpu (unicorn #1729, PR #1801)."""
    _, _, uc = _probe(NOP16 * 8, count=2)
    pc = uc.reg_read(A.UC_ARM_REG_PC)
    assert pc == BASE + 4 and uc.reg_read(A.UC_ARM_REG_CPSR) & CPSR_T
    uc.emu_start(pc | bits, BASE + 0x100, count=1)
    assert bool(uc.reg_read(A.UC_ARM_REG_CPSR) & CPSR_T) is thumb
    assert uc.reg_read(A.UC_ARM_REG_PC) == pc + step
    assert T2.pc_exec_bits == 1


# ---- the image and the engine's CPU -------------------------------------------------------------
SITES = {"aligned": Site(old=NOP_W, new=Jmp("ftrace_stub")),
         "straddling": Site(old=NOP16 + NOP_W + NOP16, new=(NOP16, Jmp("ftrace_stub"), NOP16))}


def test_sites_start_aligned_and_the_straddling_bw_is_two_halfword_stores():
    image = T2.build_image(SITES)
    aligned, straddling = image.sites["aligned"].addr, image.sites["straddling"].addr
    assert aligned % 4 == 0 and straddling % 4 == 0
    # the traced entry (mov r9, lr; nop) keeps the site after it word aligned
    assert image.text[aligned - 4 - T2.text_base:aligned - T2.text_base] == MOV_R9_LR16 + NOP16
    new = resolve(T2, SITES["straddling"].new, straddling, image.symbols)
    bw = new[2:6]
    assert (straddling + 2) % 4 == 2
    assert _decoded(bw, straddling + 2) == [("b.w", f"#{image.symbols['ftrace_stub']:#x}")]
    # __patch_text_real(): (uintaddr & 2) -> two halfword stores, first half first; else one store
    assert T2.store_units(2, bw) == [(2, bw[:2]), (4, bw[2:])]
    assert T2.store_units(0, bw) == [(0, bw)]
    assert T2.store_units(0, NOP16) == [(0, NOP16)]


def test_far_functions_are_in_bl_range_of_all_the_text():
    image = T2.build_image(SITES, symbols=("extra",))
    targets = [addr for addr, _ in image.far]
    assert [image.symbols[n] for n in ("ftrace_caller", "ftrace_stub", "extra")] == targets
    for t in targets:
        for site in (T2.text_base, T2.text_base + T2.text_size - 4):
            assert thumb2_branch_target(arm_gen_branch_thumb2(site, t, link=True), site) == ("call", t)


class _Hooks:
    def __init__(self):
        self.traps, self.faults = [], []
        self.hooks = CpuHooks(on_trap=lambda i, kind, pc: self.traps.append((kind, pc)),
                              on_fault=lambda i, kind, addr, **_: self.faults.append((kind, addr)))


def test_the_cpu_runs_the_caller_loop_in_thumb_state_across_counted_stops():
    image = T2.build_image(SITES)
    rec = _Hooks()
    cpu = get_arch("thumb2").new_cpu(image, 0, rec.hooks)
    assert isinstance(cpu, StateBitCpu)
    cpu.restore(cpu.thread_context)
    work = T2.counter_regs["work"]
    pc, seen = image.thread_entry, []
    for _ in range(3):  # each run resumes at the plain (even) PC the last one stopped at
        assert cpu.run(pc, 150, sites=False) == -1
        pc = cpu.pc()
        seen.append(cpu.uc.reg_read(work))
        assert cpu.uc.reg_read(A.UC_ARM_REG_CPSR) & CPSR_T and pc % 2 == 0
    assert 0 < seen[0] < seen[1] < seen[2] and rec.faults == rec.traps == []


@pytest.mark.parametrize("site, off, brk", [
    ("aligned", 0, KPROBE_THUMB32_BREAK), ("aligned", 0, KPROBE_THUMB16_BREAK + NOP16),
    ("straddling", 2, KPROBE_THUMB32_BREAK), ("straddling", 0, KPROBE_THUMB16_BREAK),
    ("straddling", 0, BKPT16)], ids=["udf.w", "udf", "udf.w-straddling", "udf-16", "bkpt"])
def test_the_cpu_reports_a_breakpoint_at_its_address(site, off, brk):
    image = T2.build_image(SITES)
    rec = _Hooks()
    cpu = T2.new_cpu(image, 0, rec.hooks)
    cpu.restore(cpu.thread_context)
    addr = image.sites[site].addr + off
    cpu.write_text(addr, brk)
    assert cpu.run(image.thread_entry, 300, sites=False) == -1
    assert rec.traps == [("undef", addr)] and rec.faults == []


def test_the_image_and_its_site_versions_are_register_abstractable():
    image = T2.build_image(SITES)
    news = [resolve(T2, s.new, image.sites[n].addr, image.symbols) for n, s in SITES.items()]
    blobs = [image.text, *(body for _, body in image.far), *news, KPROBE_THUMB16_BREAK, KPROBE_THUMB32_BREAK]
    assert T2.register_abstractable(blobs)
    # what would make a CPU's future depend on a register the key leaves out
    for extra in (thumb16(0xD0FE), thumb16(0x4700), thumb16(0x6808), NOP_W[:2]):  # beq, bx r0, ldr, half
        assert not T2.register_abstractable([*blobs, extra]), extra.hex()


# ---- rules --------------------------------------------------------------------------------------
def test_cli_rules_lists_every_rule_with_its_source_and_the_halfword_fetch_unit():
    result = CliRunner().invoke(main, ["rules", "thumb2"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "fetch unit 2 byte(s)" in result.output.splitlines()[0]
    assert (T2.fetch_unit, T2.atomic_store) == (2, 4)
    assert len(T2.RULES) >= 9 and result.output.count("source:") == len(T2.RULES)
    for rule in T2.RULES:
        assert rule.what.strip() and rule.source.strip()
        assert rule.what in result.output and f"source: {rule.source}" in result.output


def test_the_list_applies_to_a_16bit_instruction_capstone_cannot_decode():
    """Instruction boundaries come from the halfwords' top bits (ARMv7 ARM A6.1), not from
    capstone: 0x4781 (an unpredictable blx form capstone refuses) is still a 16-bit instruction
    outside the list."""
    odd = thumb16(0x4781)
    assert Thumb2().cmodx_unsafe([NOP16, odd], [NOP16 + NOP16, odd + NOP16], 0) == odd
