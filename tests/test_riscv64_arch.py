"""The riscv64 model (fuzzer/arch/riscv64.py): encoders against capstone, semantics, Ziccif's
safe harbor, the far call targets, options and rules, register abstraction, and the Unicorn
2.1.4 behaviours the CPU builds on (MULTIARCH.md 2.1, 3.3)."""

from __future__ import annotations

import random

import capstone
import pytest
import unicorn
from click.testing import CliRunner
from unicorn import riscv_const as R

from fuzzer.arch import ARCHES, get_arch
from fuzzer.arch.base import SYNC_CORE, CpuHooks, UnknownOption
from fuzzer.arch.image import resolve
from fuzzer.arch.riscv64 import (
    AUIPC_T0,
    C_EBREAK,
    C_NOP,
    CSRCI_MSTATUS_MIE,
    CSRSI_MSTATUS_MIE,
    EBREAK,
    FENCE_I,
    FENCE_RW_RW,
    FENCE_W_O,
    FENCE_W_W,
    JR_T0,
    NOP4,
    RA,
    RET,
    RISCV_INSN_JAL,
    RISCV_INSN_NOP4,
    S11,
    T0,
    UNIMP,
    WFI,
    ZERO,
    Riscv64,
    addi,
    caddi,
    call_offset,
    cinsn,
    insn,
    jal_target,
    jalr,
    riscv_insn_jal,
    to_auipc_t0,
    to_jalr_t0,
)
from fuzzer.cli import main
from fuzzer.machine import Config, Machine
from fuzzer.protocol import Call, Jmp, Protocol, Site
from fuzzer.protocols import registry
from fuzzer.strategies.exhaustive import _register_abstractable

_CS = capstone.Cs(capstone.CS_ARCH_RISCV, capstone.CS_MODE_RISCV64 | capstone.CS_MODE_RISCVC)
A0, A1 = 10, 11
C_UNIMP = cinsn(0x0000)
C_J = cinsn(0xA001)  # c.j 0
C_JR_T0 = cinsn(0x8282)
C_BEQZ = cinsn(0xC001)  # c.beqz s0, 0: conditional
ECALL = insn(0x00000073)
SITE = 0x0010_0000


def _decoded(code: bytes, addr: int = SITE) -> list[tuple[str, str]]:
    return [(i.mnemonic, i.op_str) for i in _CS.disasm(code, addr)]


def _imm(value: int) -> str:
    """An immediate as capstone prints it: decimal up to 9, hex beyond."""
    return str(value) if -10 < value < 10 else hex(value)


def _id(value) -> str:
    """Readable test ids: code as hex."""
    if isinstance(value, bytes):
        return value.hex() or "empty"
    if isinstance(value, list):
        return "/".join(w.hex() for w in value)
    return ("safe" if value else "unsafe") if isinstance(value, bool) else value[0]


def _sext(value: int, bits: int) -> int:
    return value - (value >> (bits - 1) & 1) * (1 << bits)


# ---- encoders, checked against capstone -------------------------------------------------------
def test_public_words_decode_as_named():
    assert (RISCV_INSN_NOP4, RISCV_INSN_JAL) == (0x00000013, 0x0000006F)
    expected = {
        NOP4: ("nop", ""), C_NOP: ("c.nop", ""), EBREAK: ("ebreak", ""), C_EBREAK: ("c.ebreak", ""),
        FENCE_I: ("fence.i", ""), FENCE_RW_RW: ("fence", "rw, rw"), FENCE_W_W: ("fence", "w, w"),
        FENCE_W_O: ("fence", "w, o"), WFI: ("wfi", ""), UNIMP: ("unimp", ""), RET: ("ret", ""),
        JR_T0: ("jr", "t0"), AUIPC_T0: ("auipc", "t0, 0"),
        CSRCI_MSTATUS_MIE: ("csrci", "mstatus, 8"), CSRSI_MSTATUS_MIE: ("csrsi", "mstatus, 8"),
        caddi(A0, 1): ("c.addi", "a0, 1"), caddi(A1, -32): ("c.addi", "a1, -0x20"),
        addi(S11, S11, 1): ("addi", "s11, s11, 1"), addi(A0, A0, -2048): ("addi", "a0, a0, -0x800"),
        jalr(T0, T0, -4): ("jalr", "t0, t0, -4"),
    }
    for code, decoded in expected.items():
        assert _decoded(code) == [decoded], code.hex()
    arch = Riscv64()
    assert (arch.nop(), arch.ret(), arch.stop(), arch.filler, arch.tracer_return()) == (NOP4, RET, WFI, UNIMP, JR_T0)
    assert (arch.irqs_off(), arch.irqs_on()) == (CSRCI_MSTATUS_MIE, CSRSI_MSTATUS_MIE)
    assert _decoded(arch.counter_inc("work")) == [("addi", "s10, s10, 1")]


@pytest.mark.parametrize("offset, hi20, lo12", [
    (0, 0, 0), (0x7FC, 0, 0x7FC), (0x800, 1, -0x800), (0xFFC, 1, -4), (0x1000, 1, 0), (-4, 0, -4),
    (-0x800, 0, -0x800), (-0x801, 0xFFFFF, 0x7FF), (0x12345678, 0x12345, 0x678),
    (-0x12345678, 0xEDCBB, -0x678), ((1 << 31) - 0x804, 0x7FFFF, 0x7FC), (-(1 << 31), 0x80000, 0)])
def test_ftrace_pair_rounds_auipc_up_when_the_jalr_part_is_negative(offset, hi20, lo12):
    code = insn(to_auipc_t0(offset)) + insn(to_jalr_t0(offset))
    assert _decoded(code) == [("auipc", f"t0, {_imm(hi20)}"), ("jalr", f"t0, t0, {_imm(lo12)}")]


def test_ftrace_pair_reaches_every_offset_of_a_random_sample():
    rng = random.Random(1990)
    for _ in range(2000):
        offset = rng.randrange(-(1 << 31), (1 << 31) - 0x800)
        auipc, jalr_word = to_auipc_t0(offset), to_jalr_t0(offset)
        hi, lo = _sext(auipc & 0xFFFFF000, 32), _sext(jalr_word >> 20, 12)
        assert hi + lo == offset, hex(offset)
        assert _decoded(insn(auipc) + insn(jalr_word)) == [
            ("auipc", f"t0, {_imm((hi >> 12) & 0xFFFFF)}"), ("jalr", f"t0, t0, {_imm(lo)}")]


def test_call_offset_refuses_what_auipc_jalr_cannot_reach():
    # the top 0x800 is lost to the rounding: hi20 would wrap to -2 GiB
    for offset in (-(1 << 31), (1 << 31) - 0x801, 0):
        assert call_offset(SITE, SITE + offset) == offset
    for offset in (-(1 << 31) - 1, (1 << 31) - 0x800, 1 << 32):
        with pytest.raises(ValueError):
            call_offset(SITE, SITE + offset)
        with pytest.raises(ValueError):
            Riscv64().encode_call(SITE, SITE + offset)


@pytest.mark.parametrize("offset", [0, 2, 0x100, -0x100, 0x800, -0x802, (1 << 20) - 2, -(1 << 20), 0x5554A])
@pytest.mark.parametrize("rd", [ZERO, RA])
def test_jal_round_trips(offset, rd):
    word = riscv_insn_jal(SITE, SITE + offset, rd)
    assert _decoded(insn(word)) == [("j" if rd == ZERO else "jal", _imm(offset))]
    assert jal_target(word, SITE) == SITE + offset
    assert Riscv64().semantics(insn(word), SITE) == ("jmp" if rd == ZERO else "call", SITE + offset)


@pytest.mark.parametrize("offset", [1, -3, 1 << 20, -(1 << 20) - 2, 1 << 24])
def test_jal_refuses_odd_and_out_of_range_offsets(offset):
    with pytest.raises(ValueError):
        riscv_insn_jal(SITE, SITE + offset)


@pytest.mark.parametrize("dst", [SITE + 0x40, SITE - 0x10000 + 0x4104, SITE + 0x7FF00, 0x10000])
def test_encode_call_and_jmp_are_the_kernels(dst):
    arch = Riscv64()
    call = arch.encode_call(SITE, dst)
    assert call == insn(to_auipc_t0(dst - SITE)) + insn(to_jalr_t0(dst - SITE))
    assert arch.semantics(call, SITE) == ("call", dst)
    assert arch.encode_jmp(SITE, dst) == insn(riscv_insn_jal(SITE, dst))
    assert arch.semantics(arch.encode_jmp(SITE, dst), SITE) == ("jmp", dst)
    assert arch.semantics(arch.call(SITE, dst), SITE) == ("call", dst)  # the image's own: jal ra


# ---- semantics --------------------------------------------------------------------------------
@pytest.mark.parametrize("code, result", [
    (NOP4 + NOP4, ("next", SITE + 8)), (addi(A0, A0, 1), ("next", SITE + 4)),
    (C_NOP + C_NOP, ("next", SITE + 4)), (FENCE_I, ("next", SITE + 4)),
    (AUIPC_T0 + NOP4, ("next", SITE + 8)),  # the boot state: t0 is a temporary, harmless
    (NOP4 + jalr(T0, T0, 0x100), ("bad", 0)),  # a JALR without its AUIPC: t0 unknown
    (insn(to_auipc_t0(0x900)) + jalr(ZERO, T0, -0x700), ("jmp", SITE + 0x900)),  # no link
    (C_J, ("bad", 0)), (C_JR_T0, ("bad", 0)), (C_NOP + C_J, ("bad", 0)), (C_BEQZ + C_NOP, ("bad", 0)),
    (EBREAK, ("bad", 0)), (NOP4[:2], ("bad", 0)), (b"", ("bad", 0))], ids=_id)
def test_semantics(code, result):
    assert Riscv64().semantics(code, SITE) == result


# ---- Ziccif's safe harbor within one aligned word (versions newest first) ---------------------
JAL = insn(riscv_insn_jal(SITE, SITE + 0x1000))
JALR_T0 = jalr(T0, T0, 0x104)


@pytest.mark.parametrize("words, safe", [
    ([JAL, NOP4], True), ([NOP4, JAL], True), ([EBREAK, NOP4], True), ([EBREAK, addi(A0, A0, 1)], True),
    ([JAL, NOP4, EBREAK], True),
    ([NOP4, C_NOP + C_NOP], False),  # combining two instructions into one
    ([C_NOP + C_NOP, NOP4], False),  # splitting one
    ([EBREAK, caddi(A0, 1) + caddi(A1, 1)], False),
    ([C_NOP + NOP4[:2], C_NOP + JALR_T0[:2]], False),  # a modified instruction runs past the word
    ([C_NOP + C_EBREAK, C_NOP + NOP4[:2]], True),  # ... unless a shorter unconditional transfer
    ([C_NOP + NOP4[:2], C_NOP + C_EBREAK], True),
    ([C_NOP + C_J, C_NOP + NOP4[:2]], True),
    ([C_NOP + C_EBREAK, C_NOP + C_J, C_NOP + NOP4[:2]], True),
    ([C_NOP + C_NOP, C_NOP + NOP4[:2]], False),  # shorter, but runs on into the next word
    ([C_NOP + C_BEQZ, C_NOP + NOP4[:2]], False),  # conditional
    ([caddi(A0, 1) + C_EBREAK, C_NOP + NOP4[:2]], False),  # the instructions before differ
    ([C_EBREAK + C_NOP, C_NOP + NOP4[:2]], False),  # the transfer is not where the long one starts
    # one more fetchable version never makes the others safe: the spanning one still changes
    ([C_NOP + NOP4[:2], C_NOP + C_EBREAK, C_NOP + JALR_T0[:2]], False),
    ([C_NOP + C_EBREAK, C_NOP + JALR_T0[:2], C_NOP + NOP4[:2]], False),
], ids=_id)
def test_cmodx_safe_harbor(words, safe):
    bad = Riscv64().cmodx_unsafe(words)
    assert (bad is None) is safe, [w.hex() for w in words]
    assert bad is None or bad in words


# ---- Unicorn 2.1.4 on RISC-V (MULTIARCH.md 2.1): a fresh Uc per probe ---------------------------
BASE = 0x10000


def _probe(code: bytes) -> tuple[list, int | None, unicorn.Uc]:
    """Run `code` (count 10): the INTR and INSN_INVALID reports with the PC then, the error."""
    uc = unicorn.Uc(unicorn.UC_ARCH_RISCV, unicorn.UC_MODE_RISCV64)
    uc.mem_map(BASE, 0x1000)
    uc.mem_write(BASE, code)
    seen: list = []

    def on_intr(u, intno, _):
        seen.append(("intr", intno, u.reg_read(R.UC_RISCV_REG_PC)))
        u.emu_stop()

    def on_invalid(u, _):
        seen.append(("invalid", u.reg_read(R.UC_RISCV_REG_PC)))
        return False

    uc.hook_add(unicorn.UC_HOOK_INTR, on_intr)
    uc.hook_add(unicorn.UC_HOOK_INSN_INVALID, on_invalid)
    try:
        uc.emu_start(BASE, BASE + 0x100, count=10)
    except unicorn.UcError as e:
        return seen, e.errno, uc
    return seen, None, uc


def test_model_constants_match_what_unicorn_does():
    assert (Riscv64.trap_intno, Riscv64.trap_pc_after, Riscv64.intr_pc_after) == (None, 0, 4)
    assert Riscv64.trap_insn == EBREAK


@pytest.mark.parametrize("lead, brk", [(NOP4, EBREAK), (C_NOP, C_EBREAK)])
def test_ebreak_is_an_invalid_instruction_with_the_pc_at_it(lead, brk):
    seen, err, _ = _probe(lead + brk + WFI)
    assert seen == [("invalid", BASE + len(lead))]
    assert err == unicorn.UC_ERR_INSN_INVALID


def test_ecall_is_interrupt_8_with_the_pc_past_it():
    assert _probe(NOP4 + ECALL + WFI)[:2] == ([("intr", 8, BASE + 8)], None)


def test_a_32_bit_illegal_instruction_is_interrupt_2_with_the_pc_past_it():
    assert _probe(NOP4 + UNIMP + WFI)[:2] == ([("intr", 2, BASE + 8)], None)


def test_a_16_bit_illegal_instruction_moves_the_pc_4_bytes_too():
    # unicorn #1990: the PC lands past the c.addi that follows the 2-byte c.unimp
    seen, err, _ = _probe(C_NOP + C_UNIMP + caddi(A0, 1) + WFI)
    assert (seen, err) == ([("intr", 2, BASE + 2 + Riscv64.intr_pc_after)], None)


def test_wfi_ends_the_run_silently_with_the_pc_past_it():
    seen, err, uc = _probe(NOP4 + WFI + addi(A0, A0, 1) + WFI)
    assert (seen, err) == ([], None)
    assert uc.reg_read(R.UC_RISCV_REG_PC) == BASE + 8 and uc.reg_read(R.UC_RISCV_REG_A0) == 0


def test_csrsi_and_csrci_toggle_mstatus_mie():
    mie = Riscv64.irq_mask
    _, _, uc = _probe(WFI)
    assert uc.reg_read(R.UC_RISCV_REG_MSTATUS) & mie == 0
    _, _, uc = _probe(CSRSI_MSTATUS_MIE + WFI)
    assert uc.reg_read(R.UC_RISCV_REG_MSTATUS) & mie == mie
    _, _, uc = _probe(CSRSI_MSTATUS_MIE + CSRCI_MSTATUS_MIE + WFI)
    assert uc.reg_read(R.UC_RISCV_REG_MSTATUS) & mie == 0


# ---- the image and the engine's CPU through the model ------------------------------------------
def test_far_functions_are_in_jal_range_and_retargeting_changes_both_words():
    arch = Riscv64()
    image = arch.build_image({"s": Site(old=NOP4, new=NOP4)}, symbols=("extra",))
    targets = [addr for addr, _ in image.far]
    assert [image.symbols[n] for n in ("ftrace_caller", "ftrace_stub", "extra")] == targets
    assert len({t // arch.far_size for t in targets}) == len(targets)
    assert all(t % 4 == 0 and t + arch.far_size <= arch.text_base for t in targets)
    caller, stub = image.symbols["ftrace_caller"], image.symbols["ftrace_stub"]
    for site in range(arch.text_base, arch.text_base + arch.text_size, 4):
        for t in targets:
            assert jal_target(riscv_insn_jal(site, t), site) == t
        a, b = arch.encode_call(site, caller), arch.encode_call(site, stub)
        # a task that ran one word of each call must run a target neither has
        assert a[:4] != b[:4] and a[4:] != b[4:], hex(site)


class _Hooks:
    def __init__(self):
        self.traps, self.faults = [], []
        self.hooks = CpuHooks(on_trap=lambda i, kind, pc: self.traps.append((kind, pc)),
                              on_fault=lambda i, kind, addr, **_: self.faults.append((kind, addr)))


@pytest.mark.parametrize("old, traps, faults", [
    (EBREAK, [("ebreak", 0)], []),
    (UNIMP, [], [("exception vector 2", 0)]),
    (C_UNIMP + C_NOP, [], [("exception vector 2", 0)]),  # Unicorn moved the PC 4, not 2
    (ECALL, [], [("exception vector 8", 0)])], ids=["ebreak", "unimp", "c.unimp", "ecall"])
def test_cpu_names_the_instruction_that_trapped_or_faulted(old, traps, faults):
    arch = Riscv64()
    image = arch.build_image({"s": Site(old=old, new=NOP4)})
    site = image.sites["s"].addr
    rec = _Hooks()
    cpu = arch.new_cpu(image, 0, rec.hooks)
    cpu.restore(cpu.thread_context)
    assert cpu.run(image.thread_entry, 100, sites=False) == -1
    assert rec.traps == [(k, site + d) for k, d in traps]
    assert rec.faults == [(k, site + d) for k, d in faults]


class _Poison(Protocol):
    """Patches an illegal instruction in, correctly synchronized: the next caller faults on it."""

    name = "test/rv-poison"
    arch = "riscv64"
    sites = {"s": Site(old=NOP4, new=UNIMP)}
    variants = {"v": {}}
    expect = {"v": "guest-fault"}

    def patcher(self, k):
        yield k.poke("s", k.site("s").new)
        yield k.fence_i()
        yield k.remote_fence_i()


def test_a_guest_fault_names_the_illegal_instruction_not_the_next():
    machine = Machine(_Poison, "v", Config(cpus=2))
    f = machine.run(b"").finding
    assert f is not None and f.oracle == "guest-fault", f
    addr = machine.image.sites["s"].addr
    assert f.detail.startswith(f"exception vector 2 at {machine.sym(addr)} ("), f.detail
    assert machine.sym(addr) != machine.sym(addr + 4)


# ---- memory model, options, rules ------------------------------------------------------------
def test_memory_model_facts():
    arch = get_arch("riscv64")
    assert ARCHES["riscv64"] is Riscv64 and type(arch) is Riscv64
    assert (arch.fetch_unit, arch.atomic_store, arch.store_buffer) == (4, 4, "ooo")
    assert not arch.own_store_visible_to_fetch and not arch.stop_machine_serializes
    assert arch.fetch_model == "maintained" and arch.serializing_events == (SYNC_CORE,)
    assert not arch.icache_needs_clean and arch.link_reg == R.UC_RISCV_REG_RA
    assert arch.state_regs == (R.UC_RISCV_REG_RA, R.UC_RISCV_REG_T0)


def test_ziccid_makes_fetch_coherent_and_needs_no_invalidation():
    base, ziccid = Riscv64(), Riscv64(("ziccid",))
    assert (base.coherent_fetches, base.icache_needs_invalidate) == (False, True)
    assert (ziccid.coherent_fetches, ziccid.icache_needs_invalidate) == (True, False)
    assert ziccid.options == ("ziccid",)
    assert not Riscv64.coherent_fetches  # the class is untouched
    with pytest.raises(UnknownOption, match="ziccid"):
        Riscv64(("svpbmt",))


def test_cli_rules_lists_every_rule_with_its_source_and_the_option():
    result = CliRunner().invoke(main, ["rules", "riscv64"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert len(Riscv64.RULES) >= 10
    assert result.output.count("source:") == len(Riscv64.RULES)
    for rule in Riscv64.RULES:
        assert rule.what.strip() and rule.source.strip()
        assert rule.what in result.output and f"source: {rule.source}" in result.output
    assert "ziccid" in result.output and Riscv64.OPTIONS["ziccid"] in result.output


# ---- register abstraction (exhaustive search keys CPUs by registers) --------------------------
def test_the_image_and_its_site_versions_are_register_abstractable():
    arch = Riscv64()
    sites = {"fentry": Site(old=(AUIPC_T0, NOP4), new=Call("ftrace_caller")),
             "key": Site(old=NOP4, new=Jmp("ftrace_stub")),
             "probe": Site(old=caddi(A0, 1) + caddi(A1, 1), new=EBREAK)}
    image = arch.build_image(sites)
    news = [resolve(arch, s.new, image.sites[n].addr, image.symbols) for n, s in sites.items()]
    blobs = [image.text, *(body for _, body in image.far), *news]
    assert arch.register_abstractable(blobs)
    # what would make a CPU's future depend on a register the key leaves out
    for extra in (addi(A0, A0, 2), jalr(RA, T0), jalr(T0, A0, 0), NOP4[:2], insn(0xFFFFFFFF)):
        assert not arch.register_abstractable([*blobs, extra]), _decoded(extra)


def test_every_shipped_riscv64_protocol_is_register_abstractable():
    shipped = [(cls, v) for cls in registry().values() if cls.arch == "riscv64" for v in cls.variants]
    assert len(shipped) >= 4
    for cls, variant in shipped:
        assert _register_abstractable(Machine(cls, variant, Config(cpus=2))), (cls.name, variant)

