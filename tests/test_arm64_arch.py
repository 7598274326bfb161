"""The arm64 model (fuzzer/arch/arm64.py): encoders against capstone, the CMODX list, the
memory-model facts and options, the far call targets, the image, the rules and the Unicorn
2.1.4 behaviours the engine builds on (MULTIARCH.md 2.1, 2.2)."""

from __future__ import annotations

import ctypes
import random
import struct

import capstone
import pytest
import unicorn
from click.testing import CliRunner
from unicorn import arm64_const as A

from fuzzer.arch import ARCHES, get_arch
from fuzzer.arch.arm64 import (
    AARCH64_BREAK_FAULT,
    AARCH64_INSN_NOP,
    ADD_X0_1,
    BRK,
    BRK64_OPCODE_KPROBES,
    BRK_FAULT,
    DAIFCLR_I,
    DAIFSET_I,
    DC_CVAU_X0,
    DMB_ISH,
    DMB_ISHST,
    DSB_ISH,
    IC_IVAU_X0,
    ISB,
    KPROBES_BRK_IMM,
    MOV_X1_X2,
    NOP,
    RET,
    SZ_128M,
    UDF0,
    WFI,
    Arm64,
    aarch64_insn_gen_branch_imm,
    aarch64_insn_gen_nop,
    add_imm1,
    insn,
)
from fuzzer.arch.base import EXCEPTION_ENTRY, EXCEPTION_RETURN, IPI_TAKEN, SYNC_CORE, CpuHooks
from fuzzer.cli import main
from fuzzer.protocol import Call, Site

_CS = capstone.Cs(capstone.CS_ARCH_ARM64, capstone.CS_MODE_ARM)
CMODX_MNEMONICS = {"b", "bl", "brk", "hvc", "isb", "nop", "smc", "svc"}
SITES = {"fentry": Site(old=NOP, new=Call("ftrace_caller")), "probed": Site(old=ADD_X0_1, new=BRK)}


def _decoded(code: bytes, addr: int = 0x1000) -> list[tuple[str, str]]:
    return [(i.mnemonic, i.op_str) for i in _CS.disasm(code, addr)]


def _mnemonic(word: int) -> str | None:
    found = list(_CS.disasm(insn(word), 0))
    return found[0].mnemonic if found else None


# ---- encoders, checked against capstone -------------------------------------------------------
def test_public_words_decode_as_named():
    assert AARCH64_INSN_NOP == aarch64_insn_gen_nop() == 0xD503201F
    assert KPROBES_BRK_IMM == 0x004 and BRK64_OPCODE_KPROBES == 0xD4200080
    assert AARCH64_BREAK_FAULT == 0xD4202000
    expected = {
        NOP: ("nop", ""), BRK: ("brk", "#4"), BRK_FAULT: ("brk", "#0x100"),
        ADD_X0_1: ("add", "x0, x0, #1"), MOV_X1_X2: ("mov", "x1, x2"), ISB: ("isb", ""),
        DSB_ISH: ("dsb", "ish"), DMB_ISH: ("dmb", "ish"), DMB_ISHST: ("dmb", "ishst"),
        DC_CVAU_X0: ("dc", "cvau, x0"), IC_IVAU_X0: ("ic", "ivau, x0"), RET: ("ret", ""),
        WFI: ("wfi", ""), UDF0: ("udf", "#0"), DAIFSET_I: ("msr", "daifset, #2"),
        DAIFCLR_I: ("msr", "daifclr, #2"), add_imm1(28): ("add", "x28, x28, #1"),
    }
    for code, decoded in expected.items():
        assert _decoded(code) == [decoded], code.hex()
    # the four the brief pins by value
    assert [struct.unpack("<I", c)[0] for c in (DSB_ISH, ISB, DC_CVAU_X0, IC_IVAU_X0)] == [
        0xD5033B9F, 0xD5033FDF, 0xD50B7B20, 0xD50B7520]


def test_image_words_decode():
    arch = Arm64()
    assert _decoded(arch.traced_entry() + arch.tracer_return()) == [
        ("mov", "x9, x30"), ("mov", "x10, x30"), ("mov", "x30, x9"), ("ret", "x10")]
    assert _decoded(arch.counter_inc("work")) == [("add", "x27, x27, #1")]
    assert (arch.stop(), arch.nop(), arch.ret(), arch.filler) == (WFI, NOP, RET, UDF0)


@pytest.mark.parametrize("src, dst", [
    (0x1000, 0x2000), (0x2000, 0x1000), (0x1000, 0x1000), (0x1000, 0x1000 + SZ_128M - 4),
    (0x1000 + SZ_128M, 0x1000), (0x100004, 0x2040404)])
@pytest.mark.parametrize("link", [True, False])
def test_branch_encoder_round_trips(src, dst, link):
    code = insn(aarch64_insn_gen_branch_imm(src, dst, link))
    assert _decoded(code, src) == [("bl" if link else "b", f"#{dst:#x}")]
    assert Arm64().semantics(code, src) == ("call" if link else "jmp", dst)
    assert (Arm64().encode_call if link else Arm64().encode_jmp)(src, dst) == code


@pytest.mark.parametrize("src, dst", [(0x1000, 0x1002), (0x1002, 0x1000),
                                      (0x1000, 0x1000 + SZ_128M), (0x1000 + SZ_128M + 4, 0x1000)])
def test_branch_encoder_refuses_what_the_kernel_refuses(src, dst):
    with pytest.raises(ValueError):
        aarch64_insn_gen_branch_imm(src, dst, True)


def test_semantics_of_other_words():
    arch = Arm64()
    assert arch.semantics(NOP, 0x100) == ("next", 0x104)
    assert arch.semantics(BRK, 0x100) == ("next", 0x104)  # the trap is the CPU's business
    assert arch.semantics(NOP[:2], 0x100) == ("bad", 0)
    assert arch.semantics(insn(0xFFFFFFFF), 0x100) == ("bad", 0)


# ---- the CMODX list ---------------------------------------------------------------------------
CMODX_YES = {
    "b": [0x14000000, 0x17FFFFFF, 0x15555555], "bl": [0x94000000, 0x97FFFFFF, 0x96A0A0A0],
    "brk": [0xD4200000, BRK64_OPCODE_KPROBES, 0xD43FFFE0], "hvc": [0xD4000002, 0xD41FFFE2],
    "smc": [0xD4000003, 0xD40ACE03], "svc": [0xD4000001, 0xD40000A1],
    "isb": [0xD5033FDF, 0xD50330DF, 0xD5033EDF], "nop": [0xD503201F],
}
CMODX_NO = {
    "add": 0x91000400, "mov": 0xAA0203E1, "b.eq": 0x54000040, "cbz": 0xB4000040,
    "cbnz": 0x35000040, "tbz": 0x36000040, "bti": 0xD503245F, "paciasp": 0xD503233F,
    "yield": 0xD503203F, "dsb": 0xD5033B9F, "dmb": 0xD5033BBF, "sb": 0xD50330FF,
    "ret": 0xD65F03C0, "udf": 0x00000000, "dcps1": 0xD4A00001, "wfi": 0xD503207F,
    "pacia1716": 0xD503211F, "hint": 0xD503227F, "blr": 0xD63F0200,
}


def test_cmodx_list_positives_and_negatives():
    arch = Arm64()
    for mnemonic, words in CMODX_YES.items():
        for w in words:
            assert _mnemonic(w) == mnemonic, hex(w)
            assert arch.cmodx_safe(insn(w)), (mnemonic, hex(w))
    for mnemonic, w in CMODX_NO.items():
        assert _mnemonic(w) == mnemonic, hex(w)
        assert not arch.cmodx_safe(insn(w)), (mnemonic, hex(w))
    assert not arch.cmodx_safe(NOP + NOP) and not arch.cmodx_safe(NOP[:2])


def test_cmodx_agrees_with_capstone_on_random_and_nearby_words():
    """Random words and the listed encodings with bits flipped: the bit patterns accept exactly
    the words capstone names B, BL, BRK, HVC, ISB, NOP, SMC or SVC."""
    arch = Arm64()
    rng = random.Random(2020)
    seeds = [ws[0] for ws in CMODX_YES.values()]
    for i in range(20000):
        if i % 2:
            w = rng.getrandbits(32)
        else:
            w = rng.choice(seeds) ^ 1 << rng.randrange(32) ^ rng.getrandbits(32) & rng.choice(
                [0, 0x3FFFFFF, 0x1FFFE0, 0xF00])
        assert arch.cmodx_safe(insn(w)) == (_mnemonic(w) in CMODX_MNEMONICS), hex(w)


# ---- memory model, options, rules --------------------------------------------------------------
def test_memory_model_facts():
    arch = get_arch("arm64")
    assert ARCHES["arm64"] is Arm64 and arch.name == "arm64"
    assert (arch.fetch_unit, arch.atomic_store, arch.store_buffer) == (4, 4, "ooo")
    assert not arch.own_store_visible_to_fetch and not arch.stop_machine_serializes
    assert arch.fetch_model == "maintained"
    assert arch.serializing_events == (EXCEPTION_ENTRY, EXCEPTION_RETURN, IPI_TAKEN, SYNC_CORE)
    assert (arch.trap_insn, arch.trap_intno, arch.trap_pc_after) == (BRK, 7, 0)
    assert arch.link_reg == A.UC_ARM64_REG_X30 and not arch.irq_set_enables


@pytest.mark.parametrize("options, clean, invalidate, coherent", [
    ((), True, True, False), (("idc",), False, True, False), (("dic",), True, False, True),
    (("idc", "dic"), False, False, True)])
def test_options_switch_the_maintenance(options, clean, invalidate, coherent):
    arch = get_arch("arm64", options)
    assert (arch.icache_needs_clean, arch.icache_needs_invalidate, arch.coherent_fetches) == (
        clean, invalidate, coherent)
    assert arch.options == tuple(sorted(options))
    assert Arm64.icache_needs_clean and not Arm64.coherent_fetches  # the class is untouched


def test_unknown_option_is_refused():
    with pytest.raises(ValueError, match="idc"):
        Arm64(("pou",))


def test_every_rule_names_its_source():
    rules = Arm64.RULES
    assert len(rules) >= 10
    for rule in rules:
        assert rule.what.strip() and rule.source.strip(), rule
    text = " ".join(r.what + " " + r.source for r in rules)
    for needle in ("B2.2.5", "SM.B+isb", "coFF", "caches_clean_inval_pou", "isb()",
                   "aarch64_insn_patch_text_cb", "KPROBES_BRK_IMM", "ICC_PMR_EL1", "DMB ISHST",
                   "CTR_EL0", "context synchronization", "IC-ob", "coFF+cachesync",
                   "DC.CVAU; po; dmb.full", "2SM.B+dmb.sy-dsb.ish-ic.vau-dsb.ish+dmb.sy"):
        assert needle in text, needle


def test_cli_rules_lists_every_rule_and_the_options():
    result = CliRunner().invoke(main, ["rules", "arm64"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    for rule in Arm64.RULES:
        assert rule.what in result.output and rule.source in result.output
    for name in Arm64.OPTIONS:
        assert name in result.output
    assert "fetch model maintained" in result.output


# ---- far call targets and the image ------------------------------------------------------------
def test_far_targets_reach_and_differ_in_every_low_byte():
    arch = Arm64()
    targets = [arch.far_base + k * arch.far_stride for k in range(255)]
    pages = {t // arch.far_size for t in targets}
    assert len(pages) == len(targets)
    body = len(arch.counter_inc("tracer") + arch.tracer_return())
    assert all(t % 4 == 0 and t % arch.far_size + body <= arch.far_size for t in targets)
    rng = random.Random(7)
    for site in [arch.text_base, arch.text_base + arch.text_size - 4,
                 *(arch.text_base + 4 * rng.randrange(arch.text_size // 4) for _ in range(20))]:
        words = [aarch64_insn_gen_branch_imm(site, t, True) for t in targets]  # in range
        for i, j in [(0, 1), (0, 254), (1, 2), *((rng.randrange(255), rng.randrange(255)) for _ in range(50))]:
            if i != j:
                diff = words[i] ^ words[j]
                assert all(diff >> (8 * b) & 0xFF for b in range(3)), (hex(site), i, j)


def test_image_builds_and_every_word_decodes():
    arch = Arm64()
    image = arch.build_image(SITES, symbols=("ftrace_regs_caller",))
    assert len(image.text) % 4 == 0
    assert sum(arch.insn_lengths(image.text)) == len(image.text)
    for addr, body in image.far:
        assert sum(arch.insn_lengths(body)) == len(body) and addr >= arch.far_base
    for site in image.sites.values():
        assert site.addr == site.func + 4 and site.addr % 4 == 0
        assert image.text[site.func - image.base:site.addr - image.base] == arch.traced_entry()
    assert image.sites["probed"].old == ADD_X0_1
    call = arch.encode_call(image.sites["fentry"].addr, image.symbols["ftrace_caller"])
    assert arch.semantics(call, image.sites["fentry"].addr) == ("call", image.symbols["ftrace_caller"])
    assert image.stop_pcs == {image.nmi_entry + 12, image.irq_entry + 12}


class _Recorder:
    def __init__(self):
        self.traps, self.faults = [], []
        self.hooks = CpuHooks(on_trap=lambda i, kind, pc: self.traps.append((kind, pc)),
                              on_fault=lambda i, kind, addr, **_: self.faults.append((kind, addr)))


def test_cpu_runs_the_image_and_reports_the_kprobe_brk_at_its_address():
    arch = Arm64()
    image = arch.build_image(SITES)
    rec = _Recorder()
    cpu = arch.new_cpu(image, 0, rec.hooks)
    cpu.restore(cpu.nmi_context)
    assert not cpu.irqs_enabled()
    assert cpu.run(image.nmi_entry, 100, sites=False) == -1
    assert cpu.pc() in image.stop_pcs and rec.traps == rec.faults == []
    assert cpu.uc.reg_read(arch.counter_regs["work"]) == 2
    cpu.restore(cpu.thread_context)
    assert cpu.irqs_enabled()
    site = image.sites["probed"]
    cpu.write_text(site.addr, BRK)
    assert cpu.run(image.thread_entry, 100, sites=False) == -1
    assert rec.traps == [("brk", site.addr)] and rec.faults == []
    target = image.symbols["ftrace_caller"]
    assert cpu.emulate("call", target, site.addr + 4) == target
    assert cpu.uc.reg_read(A.UC_ARM64_REG_X30) == site.addr + 4


# ---- Unicorn 2.1.4 facts the engine relies on (MULTIARCH.md 2.1, 2.2) ------------------------
def _uc() -> unicorn.Uc:
    return unicorn.Uc(unicorn.UC_ARCH_ARM64, unicorn.UC_MODE_ARM)


def test_maintenance_and_barriers_run_at_el1_without_a_trap():
    mrs_x1_currentel = insn(0xD5384241)
    code = mrs_x1_currentel + DC_CVAU_X0 + DSB_ISH + IC_IVAU_X0 + DSB_ISH + ISB + DMB_ISH + DMB_ISHST + WFI
    assert _decoded(mrs_x1_currentel) == [("mrs", "x1, currentel")]
    uc = _uc()
    uc.mem_map(0x10000, 0x1000)
    uc.mem_write(0x10000, code)
    uc.reg_write(A.UC_ARM64_REG_X0, 0x10000)
    seen = []
    uc.hook_add(unicorn.UC_HOOK_INTR, lambda _uc, intno, _: seen.append(intno))
    uc.emu_start(0x10000, 0x10100, count=20)
    assert seen == []
    assert uc.reg_read(A.UC_ARM64_REG_PC) == 0x10000 + len(code)  # past the wfi
    assert uc.reg_read(A.UC_ARM64_REG_X1) >> 2 & 3 == 1  # CurrentEL.EL


def _shared_text():
    """Two Unicorn instances over one host buffer of code: add x0, x0, #1; wfi."""
    buf = (ctypes.c_ubyte * 0x1000)()
    code = ADD_X0_1 + WFI
    ctypes.memmove(buf, code, len(code))
    ucs = []
    for _ in range(2):
        uc = _uc()
        uc.mem_map_ptr(0x10000, 0x1000, unicorn.UC_PROT_ALL, ctypes.addressof(buf))
        uc.mem_map(0x30000, 0x1000)
        ucs.append(uc)
    return buf, ucs


def _count(uc: unicorn.Uc) -> int:
    """Run the shared code (always with a count: FACTS) and return what it added to x0."""
    uc.reg_write(A.UC_ARM64_REG_X0, 0)
    uc.emu_start(0x10000, 0x10100, count=10)
    return uc.reg_read(A.UC_ARM64_REG_X0)


ADD_X0_2 = insn(0x91000800)
ADD_X0_3 = insn(0x91000C00)


def test_another_cpus_store_is_not_seen_until_the_translation_is_removed():
    buf, (a, b) = _shared_text()
    assert _count(a) == 1
    str_w2_x1 = insn(0xB9000022)
    assert _decoded(str_w2_x1) == [("str", "w2, [x1]")]
    b.mem_write(0x30000, str_w2_x1 + WFI)
    b.reg_write(A.UC_ARM64_REG_X1, 0x10000)
    b.reg_write(A.UC_ARM64_REG_X2, struct.unpack("<I", ADD_X0_2)[0])
    b.emu_start(0x30000, 0x30100, count=10)
    assert bytes(buf[:4]) == ADD_X0_2
    assert _count(a) == 1  # stale: A's translation block still holds the old add
    a.ctl_remove_cache(0x10000, 0x10004)
    assert _count(a) == 2


def test_a_host_write_stays_stale_through_the_cpus_own_maintenance():
    buf, (a, _) = _shared_text()
    assert _count(a) == 1
    ctypes.memmove(buf, ADD_X0_3, 4)
    assert _count(a) == 1
    ic_iallu = insn(0xD508751F)
    assert _decoded(ic_iallu) == [("ic", "iallu")]
    a.mem_write(0x30000, IC_IVAU_X0 + ic_iallu + DSB_ISH + ISB + WFI)
    a.reg_write(A.UC_ARM64_REG_X0, 0x10000)
    a.emu_start(0x30000, 0x30100, count=10)
    assert _count(a) == 1  # the emulator's own IC/DSB/ISB drop nothing
    a.ctl_remove_cache(0x10000, 0x10004)
    assert _count(a) == 3
