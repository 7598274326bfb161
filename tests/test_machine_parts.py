"""The machine's parts own their data, and the protocol API is ISA-neutral."""

from fuzzer import ops
from fuzzer.arch.x86_64 import NOP5
from fuzzer.machine import Config, Machine
from fuzzer.machine.state import Cpu
from fuzzer.protocol import Call, Protocol, Site
from fuzzer.protocols import resolve
from fuzzer.protocols.x86.text_poke_bp import TextPokeBP

NO_FINAL_SYNC = bytes.fromhex("0000000200000001000300030000030000000000000000000000000003000300"
                              "000300000300000300000000000000000000000000020000000003000002")


def test_plain_is_derived_by_the_cpu_from_the_fields_it_depends_on():
    cpu = Cpu(0, None, {})
    assert cpu.plain
    cpu.set_online(False)
    assert not cpu.plain
    cpu.set_online(True)
    assert cpu.plain
    sync = ops.SyncCores()
    cpu.add_ipi(sync)
    assert not cpu.plain and cpu.ipis == [sync]
    assert cpu.take_ipis() == [sync] and cpu.plain and cpu.ipis == []
    cpu.set_stop_req(object())
    assert not cpu.plain
    cpu.set_stop_req(None)
    cpu.set_preempted(True)
    assert not cpu.plain
    cpu.set_preempted(False)
    assert cpu.plain


def test_only_the_cpu_writes_the_fields_plain_depends_on():
    # the derived flag stays right only if nobody else assigns its inputs
    import re
    from pathlib import Path

    import fuzzer

    writes = re.compile(r"\.(online|stop_req|preempted|roaming|ipis|plain)\s*=[^=]|\.ipis\.(append|clear|remove|pop)\(")
    root = Path(fuzzer.__file__).parent
    bad = [f"{p.relative_to(root)}: {ln.strip()}" for p in root.rglob("*.py") if p.name != "state.py"
           for ln in p.read_text().splitlines() if writes.search(ln)]
    assert not bad, bad


class NeutralTextPokeBP(Protocol):
    """text_poke_bp with its handler under the ISA-neutral name only."""

    name = "test/neutral_handler"
    sites, params, variants, expect = TextPokeBP.sites, TextPokeBP.params, TextPokeBP.variants, TextPokeBP.expect
    patcher, poke_bp, _publish = TextPokeBP.patcher, TextPokeBP.poke_bp, TextPokeBP._publish
    trap_handler = TextPokeBP.int3_handler


class BothNames(TextPokeBP):
    """Both names: the ISA-neutral one is the handler."""

    name = "test/both_names"

    def trap_handler(self, k, ip):
        return k.NOT_MINE
        yield  # pragma: no cover


def test_the_trap_handler_has_an_isa_neutral_name():
    cls, variant = resolve("x86/text_poke_bp:no-final-sync")
    old = Machine(cls, variant, Config(cpus=4)).run(NO_FINAL_SYNC, trace=True)
    new = Machine(NeutralTextPokeBP, "no-final-sync", Config(cpus=4)).run(NO_FINAL_SYNC, trace=True)
    assert old.finding.oracle == new.finding.oracle == "unhandled-trap"
    assert old.trace == new.trace
    correct = Machine(NeutralTextPokeBP, "correct", Config(cpus=4))
    assert all(correct.run(bytes([i, 0, 1, 2] * 30)).finding is None for i in range(6))
    both = Machine(BothNames, "correct", Config(cpus=4)).run(NO_FINAL_SYNC)
    assert both.finding is not None and both.finding.oracle == "unhandled-trap"


class StopMachineOnly(Protocol):
    name = "test/stop_machine_ops"
    sites = {"fentry": Site(old=NOP5, new=Call("ftrace_caller"))}
    variants = {"v": {}}
    expect = {"v": None}

    def patcher(self, k):
        yield from k.stop_machine(self._write)

    def _write(self, k):
        yield k.poke("fentry", k.site("fentry").new)


def test_stop_machine_is_ops_not_calls_into_the_machine():
    m = Machine(StopMachineOnly, "v", Config(cpus=2))
    gen = m.cpus[0].k.stop_machine(lambda k: iter([ops.Fence("mb")]))
    yielded = list(gen)
    assert [type(o) for o in yielded] == [ops.StopMachineEnter, ops.Fence, ops.StopMachineExit]
    assert yielded[2].enter is yielded[0]
    r = m.run(b"", trace=True)
    assert r.finding is None and r.completed
    text = "\n".join(r.trace)
    assert "enters stop_machine" in text and "stop_machine: release" in text
