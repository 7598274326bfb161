"""The arm64 model's rules, one test each, on the machine: every test here fails if its rule is
taken out of the model (the out-of-order drain, store barriers and releases, the fetch that is
not coherent and its maintenance, context synchronization, the IDC/DIC switches, the CMODX
list). Small protocols written here observe what the rule decides; each runs next to its twin
that the rule forbids or allows."""

from __future__ import annotations

import random

import pytest

from fuzzer.arch import get_arch
from fuzzer.campaign import fuzz
from fuzzer.machine import Config, Machine
from fuzzer.protocol import Protocol, Site
from fuzzer.protocols import resolve
from fuzzer.strategies.exhaustive import ExhaustiveStrategy
from fuzzer.strategies.random import RandomStrategy

ARM = get_arch("arm64")
NOP = ARM.nop()
PROOF_CEILING = 20_000


def _machine(spec_or_cls, variant: str | None = None, cpus: int = 2, opts: tuple[str, ...] = ()) -> Machine:
    if isinstance(spec_or_cls, str):
        cls, variant = resolve(spec_or_cls)
    else:
        cls = spec_or_cls
    return Machine(cls, variant, Config(cpus=cpus, arch_options=opts))


# Keeping two stores buffered across the second store's step takes two store delays.
BOUNDS = dict(store_delays=2, store_reorders=1, stale_fetches=1)


def _proof(machine: Machine, **bounds):
    res = fuzz(machine, ExhaustiveStrategy(seed=1, **{**BOUNDS, **bounds}), schedules=PROOF_CEILING)
    assert res.exhausted, f"not exhausted within {PROOF_CEILING} schedules: {res.stats}"
    return res


def _oracles(res) -> set[str]:
    return {rec.finding.oracle for rec in res.crashes.values()}


# ---- store buffer ------------------------------------------------------------------------------
class MessagePassing(Protocol):
    """MP: CPU 0 stores data then flag; CPU 1 reads flag then data. The invariant says a reader
    that saw the flag saw the data; `order` is what CPU 0 puts between the two stores."""

    name = "test/mp"
    arch = "arm64"
    sites = {"fentry": Site(old=NOP, new=NOP)}
    tasks = {"patcher": 0, "reader": 1}
    params = dict(order="none")
    variants = {v: dict(order=v) for v in ("none", "wmb", "release", "same-var", "relaxed-atomic",
                                           "ordered-atomic")}
    expect = dict.fromkeys(variants)

    def patcher(self, k):
        if self.v.order == "same-var":
            yield k.store("flag", 1)
            yield k.store("flag", 2)
            return
        yield k.store("data", 1)
        if self.v.order == "wmb":
            yield k.wmb()
        if self.v.order == "release":
            yield k.store_release("flag", 1)
        elif self.v.order == "relaxed-atomic":  # atomic_inc(): orders nothing
            yield k.atomic_inc("flag")
        elif self.v.order == "ordered-atomic":  # atomic_inc_return(): fully ordered
            yield k.atomic_inc_return("flag")
        else:
            yield k.store("flag", 1)

    def reader(self, k):
        if self.v.order == "same-var":
            first = yield k.load("flag")
            second = yield k.load("flag")
            if (first, second) == (2, 1):
                yield k.bug("stores to one variable seen out of order")
            return
        flag = yield k.load("flag")
        data = yield k.load("data")
        if flag == 1 and data == 0:
            yield k.bug("flag seen before data")


@pytest.mark.parametrize(("variant", "reordered"), [("none", True), ("wmb", False), ("release", False),
                                                    ("same-var", False), ("relaxed-atomic", True),
                                                    ("ordered-atomic", False)])
def test_stores_to_different_variables_drain_in_any_order_unless_ordered(variant, reordered):
    res = _proof(_machine(MessagePassing, variant))
    assert ("protocol-assert" in _oracles(res)) is reordered, res.crashes


def test_the_x86_fifo_keeps_message_passing_in_order():
    """The same protocol on x86-TSO: never reordered (the FIFO rule is untouched)."""

    class OnX86(MessagePassing):
        arch = "x86_64"
        sites = {"fentry": Site(old=b"\x90" * 5, new=b"\x90" * 5)}

    for variant in ("none", "relaxed-atomic"):  # a locked instruction drains on x86
        res = _proof(_machine(OnX86, variant))
        assert res.crashes == {}, variant


def test_a_cpu_reads_its_own_buffered_stores():
    machine = _machine(MessagePassing, "none")
    cpu = machine.cpus[0]
    machine._reset(b"", False, None, False)
    machine.memory.push(cpu, "x", 7)
    machine.memory.push(cpu, "y", 8)
    assert machine.memory.peek(cpu, "x") == 7 and machine.memory.peek(machine.cpus[1], "x") == 0


def test_drainable_entries_follow_the_rules():
    machine = _machine(MessagePassing, "none")
    machine._reset(b"", False, None, False)
    mem, cpu = machine.memory, machine.cpus[0]
    mem.push(cpu, "a", 1)
    mem.push(cpu, "b", 1)
    mem.push(cpu, "a", 2)  # after the first store to a
    assert mem.drainable(cpu) == [0, 1]
    mem.push(cpu, "c", 1, release=True)  # a release waits to be the oldest
    mem.push(cpu, "d", 1)  # a later plain store may pass it
    assert mem.drainable(cpu) == [0, 1, 4]
    cpu.sb_epoch += 1  # smp_wmb(): nothing later passes what is buffered
    mem.push(cpu, "e", 1)
    assert 5 not in mem.drainable(cpu)


# ---- instruction fetch ---------------------------------------------------------------------
def test_a_fetch_may_return_new_then_old_without_dic_and_not_with_it():
    """coFF: two fetches of one location by one CPU need not be coherent (DIC=0); with DIC=1
    a CPU that fetched the new version never fetches the old one again."""
    for opts, allowed in (((), True), (("dic",), False)):
        machine = _machine("arm64/jump_label:correct", opts=opts)
        machine._reset(b"", False, None, False)
        site = machine.sites["key_a"]
        site.truth[:] = site.new
        machine.views.text_reached(site)  # a new version in memory, nothing synchronized
        cpu = machine.cpus[1]
        frame = cpu.frames[-1]
        seen = []
        for answer in (0, 1):  # newest first, then the older one
            machine.ch.data, machine.ch.n, machine.ch.pos = bytes([answer]), 1, 0
            machine.views.before_fetch(cpu, frame, site, fair=False)
            seen.append(bytes(cpu.views["key_a"]))
        assert seen[0] == site.new
        assert (seen[1] == site.old) is allowed, opts


def test_maintenance_without_a_context_synchronization_leaves_old_fetches_possible():
    """SM.B+dsb.ish-ic.ivau-dsb.ish without the ISB: the old instruction may still be fetched;
    after the ISB it may not."""
    machine = _machine("arm64/jump_label:correct")
    machine._reset(b"", False, None, False)
    site = machine.sites["key_a"]
    site.truth[:] = site.new
    machine.views.text_reached(site)
    cpu = machine.cpus[1]
    views = machine.views
    cpu.maint = [("clean", "key_a", 1)]
    views.barrier(cpu)
    cpu.maint = [("inval", "key_a", views.pou(site))]
    views.barrier(cpu)
    assert views.candidates(cpu, site) == [site.new, site.old]
    views.serialize(cpu)  # ISB
    assert views.candidates(cpu, site) == [site.new]


@pytest.mark.parametrize(("variant", "opts", "found"), [
    ("correct", (), False),
    ("no-kick", (), True),  # no context synchronization on the other CPUs
    ("no-dc", (), True),  # invalidated caches refill the uncleaned old line
    ("no-dc", ("idc",), False),  # IDC: nothing to clean
    ("no-ic", (), True),  # nobody invalidated the old line
    ("no-ic", ("dic",), False),  # DIC: nothing to invalidate
])
def test_jump_label_needs_every_step_the_cache_type_asks_for(variant, opts, found):
    res = _proof(_machine(f"arm64/jump_label:{variant}", opts=opts))
    assert ("stale-after-complete" in _oracles(res)) is found, (variant, opts, res.crashes)
    if not found:
        assert res.crashes == {}


# ---- CMODX ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("spec", "found"), [
    ("arm64/ftrace:correct", False),  # NOP <-> BL: both in the list
    ("arm64/ftrace:halfword-stores", True),  # a half-written word is no instruction of the list
    ("arm64/patch_text:nosync", True),  # ADD <-> BRK without stop_machine
    ("arm64/patch_text:correct", False),  # the same pair, every CPU synchronized
])
def test_cmodx_list(spec, found):
    res = _proof(_machine(spec))
    assert ("cmodx-violation" in _oracles(res)) is found, res.crashes
    if not found:
        assert res.crashes == {}


def test_the_cmodx_title_names_the_site_and_both_instructions():
    machine = _machine("arm64/patch_text:nosync")
    rng = random.Random(3)
    for _ in range(2000):
        f = machine.run(rng.randbytes(200)).finding
        if f is not None and f.oracle == "cmodx-violation":
            assert f.title.startswith("cmodx-violation at probe: ") and "brk" in f.title, f.title
            assert "add" in f.title
            return
    pytest.fail("no cmodx-violation in 2000 random runs of patch_text:nosync")


def test_publish_without_wmb_breaks_on_arm64_and_not_on_x86():
    arm = fuzz(_machine("arm64/publish_brk:no-wmb", cpus=4), RandomStrategy(seed=5), schedules=3000)
    assert "unhandled-trap" in _oracles(arm)
    x86 = fuzz(_machine("x86/text_poke_bp:no-wmb", cpus=4), RandomStrategy(seed=5), schedules=3000)
    assert x86.crashes == {}
