"""The riscv64 model's rules on the machine, one test each: every test here fails if its rule is
taken out (FENCE.I local, the data fence before a remote FENCE.I, no exception or IPI that
synchronizes fetch, FENCE.I and the hart's own buffered stores, Ziccid's coherent fetch, passes
through a two-instruction call, kernel preemption). Protocol twins run under the same bounds;
the encoders and Unicorn's facts are in test_riscv64_arch.py."""

from __future__ import annotations

import pytest

from fuzzer.arch import get_arch
from fuzzer.arch.riscv64 import C_EBREAK, C_NOP, EBREAK, NOP4, caddi
from fuzzer.campaign import fuzz
from fuzzer.machine import Config, Machine
from fuzzer.protocol import Call, Jmp, Part, Protocol, Site
from fuzzer.protocols import resolve
from fuzzer.strategies.exhaustive import ExhaustiveStrategy

RV = get_arch("riscv64")
BOUNDS = dict(store_delays=2, store_reorders=1, stale_fetches=1, nmis=0)
CEILING = 20_000


def _machine(spec_or_cls, variant: str | None = None, opts: tuple[str, ...] = ()) -> Machine:
    if isinstance(spec_or_cls, str):
        cls, default = resolve(spec_or_cls)
        variant = variant or default
    else:
        cls = spec_or_cls
    return Machine(cls, variant, Config(cpus=2, arch_options=opts))


def _proof(machine: Machine):
    res = fuzz(machine, ExhaustiveStrategy(seed=1, **BOUNDS), schedules=CEILING)
    assert res.exhausted, f"not exhausted within {CEILING} schedules: {res.stats}"
    return {rec.finding.oracle for rec in res.crashes.values()}


class KeyFlip(Protocol):
    """static_branch_enable() reduced to the write and one way of making other harts see it."""

    name = "test/rv-key"
    arch = "riscv64"
    sites = {"key": Site(old=NOP4, new=Jmp("ftrace_stub"))}
    nmi_sites = ()
    params = dict(how="remote")
    variants = {v: dict(how=v) for v in ("remote", "unordered", "local", "ipi")}
    expect = {"remote": None, "unordered": "stale-after-complete", "local": "stale-after-complete",
              "ipi": "stale-after-complete"}

    def patcher(self, k):
        yield k.poke("key", k.site("key").new)
        yield k.fence_i()
        if self.v.how == "remote":
            yield k.remote_fence_i()
        elif self.v.how == "unordered":
            yield k.remote_fence_i(fence=False)
        elif self.v.how == "ipi":  # smp_call_function() of a handler that runs no FENCE.I
            yield k.sync_cores()
        yield k.complete("key")


@pytest.mark.parametrize(("variant", "opts", "stale"), [
    ("remote", (), False),  # flush_icache_all(): every hart runs FENCE.I after the store
    ("local", (), True),  # FENCE.I is local
    ("unordered", (), True),  # the remote request overtakes the buffered store
    ("ipi", (), True),  # taking an IPI synchronizes nothing
    ("ipi", ("ziccid",), True),  # ... not even where fetch is coherent with stores
    ("remote", ("ziccid",), False),
])
def test_other_harts_see_a_write_only_after_their_own_fence_i(variant, opts, stale):
    found = _proof(_machine(KeyFlip, variant, opts))
    assert ("stale-after-complete" in found) is stale, (variant, opts, found)
    if not stale:
        assert found == set()


def test_fence_i_shows_a_hart_its_own_buffered_stores_and_nobody_else():
    """Zifencei: FENCE.I makes the stores visible to the hart visible to its fetch, its own
    still-buffered ones included; no other hart fetches them before they drain."""
    machine = _machine(KeyFlip, "local")
    machine._reset(b"", False, None, False)
    site = machine.sites["key"]
    writer, other = machine.cpus
    machine.memory.begin_text_write(writer, site, 0, site.new)
    machine.memory.text_store(writer, site, 0, site.new)
    views = machine.views
    views.maintain(writer, "inval_local_sync", "")
    views.maintain(other, "inval_local_sync", "")
    views.before_fetch(writer, writer.frames[-1], site, fair=True)
    assert bytes(writer.views["key"]) == site.new
    views.before_fetch(other, other.frames[-1], site, fair=True)
    assert bytes(other.views["key"]) == site.old  # not in memory yet: nothing to fetch
    machine.memory.drain(writer, len(writer.sb))
    assert writer.iown == {}
    assert views.candidates(writer, site) == [site.new]  # never the old one again
    assert views.candidates(other, site) == [site.new, site.old]  # its FENCE.I came before


def test_fetches_are_coherent_only_with_ziccid():
    """Zifencei alone: a hart that fetched the new version may fetch the old one again; Ziccid:
    fetches appear in memory order, so never."""
    for opts, old_again in (((), True), (("ziccid",), False)):
        machine = _machine(KeyFlip, "local", opts)
        machine._reset(b"", False, None, False)
        site = machine.sites["key"]
        site.truth[:] = site.new
        machine.views.text_reached(site)
        cpu = machine.cpus[1]
        seen = []
        for answer in (0, 1):  # newest first, then the older one
            machine.ch.data, machine.ch.n, machine.ch.pos = bytes([answer]), 1, 0
            machine.views.before_fetch(cpu, cpu.frames[-1], site, fair=False)
            seen.append(bytes(cpu.views["key"]))
        assert seen[0] == site.new
        assert (seen[1] == site.old) is old_again, opts


def test_exception_entry_synchronizes_fetch_on_arm64_and_not_on_riscv64():
    """The serializing events are the architecture's: an IRQ taken refreshes an arm64 CPU's
    fetch, a riscv64 hart's not (where fetch needs no invalidation, Ziccid or DIC, the IRQ alone
    would otherwise show the new version)."""
    for spec, opts, refreshed in (("arm64/jump_label:correct", ("idc", "dic"), True),
                                  ("riscv64/jump_label:correct", ("ziccid",), False)):
        machine = _machine(spec, opts=opts)
        machine._reset(b"", False, None, False)
        site = machine.sites["key_a"]
        site.truth[:] = site.new
        machine.views.text_reached(site)
        cpu = machine.cpus[1]
        machine.interrupts.irq(cpu)
        assert (machine.views.candidates(cpu, site) == [site.new]) is refreshed, spec


def test_a_mix_is_reported_only_when_it_does_what_no_version_does():
    """An AUIPC whose t0 nobody reads, then the old NOP4, behaves as the old NOP4; a NOP4 then a
    JALR through t0 goes where neither version goes."""
    machine = _machine("riscv64/ftrace_call_ops:correct")
    fetch = machine.fetch
    site = machine.sites["fentry"]
    auipc, jalr = site.new[:4], site.new[4:]
    assert fetch.consistent(site, auipc + NOP4, auipc + NOP4)
    assert fetch.consistent(site, auipc + jalr, site.new)  # a version itself
    nops = NOP4 + NOP4
    site.old = nops  # a site that was NOP4; NOP4 (the stop_machine era's)
    site.verdicts = {}
    assert not fetch.consistent(site, NOP4 + jalr, site.new)


def test_without_kernel_preemption_no_task_is_scheduled_out_inside_a_site():
    for variant, inside_ok in (("preemptible", True), ("correct", False)):
        machine = _machine("riscv64/ftrace_stop_machine", variant)
        machine._reset(b"", False, None, False)
        frame = machine.cpus[1].frames[0]
        site = machine.sites["fentry"]
        frame.pc = site.addr + 4  # between the AUIPC and the JALR
        assert machine.interrupts.may_schedule_out(frame) is inside_ok
        frame.pc = site.addr  # before the call: a scheduling point either way
        assert machine.interrupts.may_schedule_out(frame)


def test_a_site_may_hold_part_of_a_call():
    """protocol.Part: ftrace_init_nop()'s AUIPC of a call, encoded for the site's address."""
    image = RV.build_image({"f": Site(old=(Part(Call("ftrace_caller"), 0, 4), NOP4), new=Call("ftrace_caller"))})
    layout = image.sites["f"]
    call = RV.encode_call(layout.addr, image.symbols["ftrace_caller"])
    assert layout.old == call[:4] + NOP4
    assert RV.semantics(call, layout.addr) == ("call", image.symbols["ftrace_caller"])


class OwnBreakpoint(Protocol):
    """The protocol's own ebreak over a NOP4, or c.ebreak over a 2-byte c.addi (what
    arch_arm_kprobe() writes over a compressed instruction), claimed by its trap handler (as
    text_poke_bp's int3 handler claims its int3), or not."""

    name = "test/rv-ebreak"
    arch = "riscv64"
    nmi_sites = ()
    params = dict(claim=True, compressed=False)
    variants = {"claimed": {}, "unclaimed": dict(claim=False), "claimed-c": dict(compressed=True),
                "unclaimed-c": dict(claim=False, compressed=True)}
    expect = {"claimed": None, "unclaimed": "unhandled-trap", "claimed-c": None, "unclaimed-c": "unhandled-trap"}
    complete_when_done = False

    @property
    def sites(self):
        if self.v.compressed:
            return {"s": Site(old=caddi(10, 1) + C_NOP, new=C_EBREAK + C_NOP)}
        return {"s": Site(old=NOP4, new=EBREAK)}

    def patcher(self, k):
        site = k.site("s")
        yield k.poke("s", site.new)
        yield k.remote_fence_i()
        yield k.poke("s", site.old)
        yield k.remote_fence_i()

    def trap_handler(self, k, ip):
        site = k.site("s")
        if self.v.claim and ip == site.addr:
            return k.emulate(ip, site.old[:2] if self.v.compressed else site.old)
        return k.NOT_MINE


def test_an_ebreak_goes_to_the_protocols_trap_handler():
    """Unicorn reports ebreak as an invalid instruction; the CPU tells it from a real one by the
    bytes at the PC and the machine runs the protocol's handler with the ebreak's address."""
    for suffix in ("", "-c"):  # ebreak, and c.ebreak (a 2-byte breakpoint: resumed 2 bytes on)
        assert _proof(_machine(OwnBreakpoint, "claimed" + suffix)) == set()
        found = _proof(_machine(OwnBreakpoint, "unclaimed" + suffix))
        assert found == {"unhandled-trap"}, found
    # someone else's ebreak (a kprobe the schedule makes code hit) is passed on, not claimed
    machine = _machine(OwnBreakpoint, "claimed")
    foreign = 0
    for i in range(200):
        run = machine.run(bytes((i * 37 + j * 101) % 256 for j in range(200)), trace=True)
        assert run.finding is None, run.finding.title
        foreign += sum(1 for e in machine.events if type(e).__name__ == "Trap" and e.foreign)
    assert foreign > 0


def test_irqs_are_taken_only_with_mstatus_mie_set():
    """The image masks IRQs with csrci mstatus, 8 (M-mode: Unicorn runs there); the machine reads
    the same bit, so no IRQ or IPI reaches code between the image's csrci and csrsi."""
    from unicorn import riscv_const as R

    machine = _machine(KeyFlip, "remote")
    machine._reset(b"", False, None, False)
    cpu = machine.cpus[1]
    hw = cpu.hw
    assert hw.irqs_enabled() and machine.interrupts.irqs_on(cpu)
    mstatus = hw.read_regs((R.UC_RISCV_REG_MSTATUS,))[0]
    hw.write_regs([(R.UC_RISCV_REG_MSTATUS, mstatus & ~8)])
    assert not hw.irqs_enabled()
    assert RV.irqs_off() in machine.image.text and RV.irqs_on() in machine.image.text
