"""The protocol API reaches the kernel's code: sites that are calls or jumps to any symbol,
sites per variant, symbol lookup, any number of tasks."""

import pytest

from fuzzer.arch import get_arch
from fuzzer.arch.x86_64 import NOP5, call_to, jmp_to
from fuzzer.machine import Config, Machine
from fuzzer.protocol import Call, Jmp, Protocol, Site
from fuzzer.protocols.x86.text_poke_bp import TextPokeBP
from fuzzer.strategies.random import RandomStrategy


class Retarget(TextPokeBP):
    """ftrace_update_ftrace_func(): the call at the site moves from one tracer to another,
    through text_poke_bp."""

    name = "test/retarget"
    symbols = ("ftrace_regs_caller",)
    variants = {"correct": {}, "no-sync-after-int3": dict(sync_after_int3=False)}
    expect = {"correct": None, "no-sync-after-int3": None}

    @property
    def sites(self):
        # a property: the variant could choose the target
        return {"fentry": Site(old=Call("ftrace_caller"), new=Call("ftrace_regs_caller"))}


def test_a_site_can_be_a_call_to_any_declared_symbol_resolved_per_layout():
    m = Machine(Retarget, "correct", Config(cpus=2))
    site = m.sites["fentry"]
    syms = m.image.symbols
    assert site.old == call_to(site.addr, syms["ftrace_caller"])
    assert site.new == call_to(site.addr, syms["ftrace_regs_caller"])
    assert m.image.text[site.addr - m.image.base:][:5] == site.old  # the image holds the old call
    assert m.cpus[0].k.symbol("ftrace_regs_caller") == syms["ftrace_regs_caller"]
    with pytest.raises(KeyError, match="no_such"):
        m.cpus[0].k.symbol("no_such")
    r = m.run(b"", trace=True)
    assert r.finding is None and r.completed
    fetched = [ln for ln in r.trace if "fetch fentry" in ln]
    assert f"call {syms['ftrace_caller']:#x}" in fetched[0]
    assert f"call {syms['ftrace_regs_caller']:#x}" in fetched[-1]


def test_an_unknown_symbol_is_a_clear_error():
    class Typo(Retarget):
        name = "test/typo"
        symbols = ()

    with pytest.raises(ValueError, match="ftrace_regs_caller"):
        Machine(Typo, "correct", Config(cpus=2))


class PerVariant(Protocol):
    """A static key whose jump target depends on the variant."""

    name = "test/per_variant"
    params = dict(target="ftrace_stub")
    variants = {"stub": {}, "tracer": dict(target="ftrace_caller")}
    expect = {"stub": None, "tracer": None}

    @property
    def sites(self):
        return {"key": Site(old=NOP5, new=Jmp(self.v.target))}

    def patcher(self, k):
        yield k.poke("key", k.site("key").new)


def test_variants_can_change_a_sites_bytes():
    stub = Machine(PerVariant, "stub", Config(cpus=2)).sites["key"]
    tracer = Machine(PerVariant, "tracer", Config(cpus=2)).sites["key"]
    image = get_arch("x86_64").build_image(PerVariant("stub").sites)
    assert stub.new == jmp_to(stub.addr, image.symbols["ftrace_stub"])
    assert tracer.new == jmp_to(tracer.addr, image.symbols["ftrace_caller"])


class ThreeTasks(Protocol):
    """A patcher, a module loader and CPU hotplug, each on its own CPU."""

    name = "test/three_tasks"
    sites = {"fentry": Site(old=NOP5, new=Call("ftrace_caller"))}
    tasks = {"patcher": 0, "loader": 1, "hotplug": -1}
    variants = {"v": {}}
    expect = {"v": None}

    def patcher(self, k):
        yield k.lock("text_mutex")
        yield k.atomic_inc("patched")
        yield k.unlock("text_mutex")

    def loader(self, k):
        yield k.lock("module_mutex")
        yield k.lock("text_mutex")
        yield k.atomic_inc("loaded")
        yield k.unlock("text_mutex")
        yield k.unlock("module_mutex")

    def hotplug(self, k):
        yield k.write_lock("cpu_hotplug_lock")
        yield k.atomic_inc("plugged")
        yield k.write_unlock("cpu_hotplug_lock")


def test_any_number_of_tasks_each_on_its_cpu():
    m = Machine(ThreeTasks, "v", Config(cpus=4))
    r = m.run(b"", trace=True)
    assert r.finding is None and r.completed
    assert m.memory.mem == {"patched": 1, "loaded": 1, "plugged": 1}
    done = {ln.split()[1]: ln.split()[-2] for ln in r.trace if ln.endswith(" finished")}
    assert done == {"cpu0": "patcher", "cpu1": "loader", "cpu3": "hotplug"}
    strat = RandomStrategy(seed=1)
    for _ in range(200):
        res = m.run(strat.next_schedule())
        assert res.finding is None


def test_task_placement_errors_are_clear():
    class Crowded(ThreeTasks):
        name = "test/crowded"
        tasks = {"patcher": 0, "loader": 0}

    with pytest.raises(ValueError, match="share CPU 0"):
        Machine(Crowded, "v", Config(cpus=4))

    class TooFar(ThreeTasks):
        name = "test/too_far"
        tasks = {"patcher": 0, "loader": 5}

    with pytest.raises(ValueError, match="CPU 5"):
        Machine(TooFar, "v", Config(cpus=4))

    class NoMethod(ThreeTasks):
        name = "test/no_method"
        tasks = {"patcher": 0, "unloader": 1}

    with pytest.raises(ValueError, match="unloader"):
        Machine(NoMethod, "v", Config(cpus=4))
