"""Programs: threads of real code whose loads, stores, barriers and code writes go through the
machine's memory and instruction-fetch models (Protocol.programs, k.run_program).

The protocols here are written against the public protocol API only, as a protocol author
would; the litmus runner is one user of the same capability (tests/test_litmus_run.py)."""

from __future__ import annotations

import pytest

from fuzzer.machine import Config, Machine
from fuzzer.protocol import Addr, Protocol
from fuzzer.strategies.exhaustive import ExhaustiveStrategy

BOUNDS = {"context_switches": 20, "store_delays": 4, "store_reorders": 4, "stale_fetches": 4}


def exhaust(proto, variant: str, **bounds):
    """Every schedule within the bounds: (the first finding or None, runs, exhausted)."""
    m = Machine(proto, variant, Config(cpus=2, max_steps=400))
    search = ExhaustiveStrategy(max_steps=200, **{**BOUNDS, **bounds})
    search.bind(m)
    runs = 0
    while (run := search.next_run()) is not None:
        result = m.run(run.schedule, source=run.source)
        runs += 1
        assert result.error is None, result.error
        search.observe(run, result)
        if result.finding is not None and not result.abandoned:
            return result.finding, runs, False
    return None, runs, True


class MessagePassing(Protocol):
    """The writer stores data then a flag, the reader loads the flag then data, both in real
    code; with `DMB ST` between the stores the reader cannot see the flag without the data."""

    name = "test/mp-code"
    arch = "arm64"
    data = ("x", "y")
    caller_loops = False
    complete_when_done = False
    oracles = ("protocol-assert",)
    tasks = {"writer": 0, "reader": 1}
    variants = {"plain": {"barrier": "NOP"}, "dmb-st": {"barrier": "DMB ST"}}
    expect = {"plain": "protocol-assert", "dmb-st": None}

    @property
    def programs(self):
        return {"W": ("STR W1,[X0]", self.v.barrier, "STR W1,[X2]"),
                "R": ("LDR W3,[X2]", "LDR W4,[X0]")}

    def writer(self, k):
        yield k.run_program("W", {"X0": k.symbol("x"), "X1": 1, "X2": k.symbol("y")})

    def reader(self, k):
        regs = yield k.run_program("R", {"X0": k.symbol("x"), "X2": k.symbol("y")})
        if regs["X3"] == 1 and regs["X4"] == 0:
            yield k.bug("the flag without the data")


def test_program_stores_reach_other_cpus_through_the_weak_store_buffer():
    found, _, _ = exhaust(MessagePassing, "plain")
    assert found is not None and found.oracle == "protocol-assert"


def test_a_store_barrier_in_the_program_orders_its_stores():
    found, runs, exhausted = exhaust(MessagePassing, "dmb-st")
    assert found is None and exhausted and runs > 10


def test_every_instruction_is_a_scheduling_point():
    """Without a step per instruction the reader could not load between the writer's two
    stores: with store reordering off, the flag-without-data outcome needs nothing else."""
    m = Machine(MessagePassing, "plain", Config(cpus=2))
    r = m.run(b"", trace=True)
    fetches = [line for line in r.trace if " fetch " in line]
    assert len(fetches) == 5  # W: 3 instructions, R: 2, each fetched at a step of its own
    steps = {int(line.split()[0]) for line in fetches}
    assert len(steps) == 5


class Shared(Protocol):
    """A program's store is the variable `k.load` reads, and `initial_memory` may hold a
    symbol's address (`Addr`)."""

    name = "test/shared-code"
    arch = "arm64"
    data = ("x", "p")
    caller_loops = False
    complete_when_done = False
    oracles = ("protocol-assert",)
    tasks = {"t": 0}
    variants = {"v": {}}
    expect = {"v": None}
    programs = {"P": ("LDR X5,[X1]", "MOV W2,#7", "STR W2,[X0]", "ADD X6,X0,#0")}

    def initial_memory(self):
        return {"p": Addr("P:end"), "x": 3}

    def t(self, k):
        regs = yield k.run_program("P", {"X0": k.symbol("x"), "X1": k.symbol("p")})
        self.seen = (regs["X5"], regs["X6"], (yield k.load("x")), k.symbol("P:end"), k.symbol("x"))


def test_programs_and_protocol_ops_share_variables_and_registers_come_back():
    Shared.programs = {"P": (*Shared.programs["P"], "end:")}
    m = Machine(Shared, "v", Config(cpus=2))
    r = m.run(b"")
    assert r.finding is None and r.completed
    loaded_p, x_addr_reg, x_value, end, x_addr = m.proto.seen
    assert loaded_p == end  # the data read of p gave the label's address (Addr resolved)
    assert x_addr_reg == x_addr and x_value == 7


class SelfWrite(Protocol):
    """A program writes a NOP over its own next-but-one instruction, then runs it."""

    name = "test/self-write"
    arch = "arm64"
    caller_loops = False
    complete_when_done = False
    oracles = ("protocol-assert",)
    tasks = {"t": 0}
    variants = {"v": {}}
    expect = {"v": None}
    programs = {"P": ("STR W0,[X1]", "NOP", "L0: B L1", "MOV W9,#1", "L1:")}

    def t(self, k):
        regs = yield k.run_program("P", {"X0": 0xD503201F, "X1": k.symbol("P:L0"), "X9": 0})
        self.x9 = regs["X9"]


def test_a_program_store_to_code_is_a_text_store_not_an_emulator_write():
    m = Machine(SelfWrite, "v", Config(cpus=2))
    r = m.run(b"", trace=True)
    assert r.finding is None
    site = m.sites["P:L0"]
    assert bytes(site.truth) == bytes.fromhex("1f2003d5")  # memory has the NOP
    assert any("poke P:L0" in line for line in r.trace)
    # the emulator's copy of the text is what the CPU fetched, though the emulator ran the store
    assert m.cpus[0].hw.read(site.addr, 4) == bytes(m.cpus[0].views["P:L0"])
    # and both outcomes happen: the new NOP fetched, or (the store still buffered, or a stale
    # fetch: no maintenance, no ISB) the old branch, which the emulator alone would never run
    seen = set()
    search = ExhaustiveStrategy(max_steps=100, **BOUNDS)
    search.bind(m)
    while (run := search.next_run()) is not None:
        result = m.run(run.schedule, source=run.source)
        search.observe(run, result)
        if result.completed:
            seen.add(m.proto.x9)
    assert seen == {0, 1}


def test_a_machine_of_tasks_only_ends_when_they_return_not_in_a_deadlock():
    m = Machine(SelfWrite, "v", Config(cpus=3))
    r = m.run(b"")
    assert r.verdict == "clean" and r.completed


def test_program_mistakes_are_clear_errors():
    class BadReg(SelfWrite):
        def t(self, k):
            yield k.run_program("P", {"Q7": 1})

    class NoProgram(SelfWrite):
        def t(self, k):
            yield k.run_program("nope")

    class BadOracle(SelfWrite):
        oracles = ("no-such-oracle",)

    with pytest.raises(ValueError, match="no register 'Q7'"):
        Machine(BadReg, "v", Config(cpus=2)).run(b"")
    r = Machine(NoProgram, "v", Config(cpus=2)).run(b"")
    assert r.error is not None and "no program 'nope'" in r.error.what
    with pytest.raises(ValueError, match="no oracle 'no-such-oracle'"):
        Machine(BadOracle, "v", Config(cpus=2))


def test_an_oracle_left_out_does_not_judge():
    class Faulting(SelfWrite):
        programs = {"P": ("UDF #0",)}
        oracles = ("protocol-assert",)

        def t(self, k):
            yield k.run_program("P", {})

    r = Machine(Faulting, "v", Config(cpus=2, max_steps=50)).run(b"")
    assert r.finding is None or r.finding.oracle != "guest-fault"
    Faulting.oracles = ("protocol-assert", "guest-fault")
    r = Machine(Faulting, "v", Config(cpus=2, max_steps=50)).run(b"")
    assert r.finding is not None and r.finding.oracle == "guest-fault"
