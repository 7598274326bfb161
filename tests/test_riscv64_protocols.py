"""The riscv64 protocols: every clean variant proved clean by exhaustive search on 2 CPUs within
the bounds below, every mutant found under the same bounds with its expected oracle, a long
random run on 4 CPUs clean for every clean variant, and the seed's race (a task parked between
the AUIPC and the JALR while stop_machine rewrites the call) told by its race diagram.

The bounds leave NMIs out: RISC-V Linux takes none, and the protocols declare that no NMI calls
a traced function (`nmi_sites`), so an NMI only multiplies the schedules by nothing."""

from __future__ import annotations

import pytest

from fuzzer.campaign import fuzz
from fuzzer.machine import Config, Machine
from fuzzer.protocols import registry
from fuzzer.strategies.random import RandomStrategy

from .isa_proofs import check_exhaustive_verdict, check_long_random_run_clean, clean_only, variants_of

BOUNDS = dict(store_delays=2, store_reorders=1, stale_fetches=1, nmis=0)
CEILING = 40_000
RISCV = {name: cls for name, cls in registry().items() if cls.arch == "riscv64"}
VARIANTS = variants_of("riscv64")


def test_every_riscv64_protocol_is_registered():
    assert set(RISCV) == {"riscv64/ftrace_stop_machine", "riscv64/ftrace_call_ops", "riscv64/patch_text",
                          "riscv64/jump_label"}
    for cls in RISCV.values():
        assert cls.expect.get("correct", "missing") is None, cls.name
        assert sum(e is not None for e in cls.expect.values()) >= 2, f"{cls.name}: fewer than two mutants"
        doc = __import__(cls.__module__, fromlist=["_"]).__doc__
        assert "arch/riscv/" in doc, cls.name  # the kernel code it models


@pytest.mark.parametrize(("cls", "variant"), VARIANTS)
def test_exhaustive_verdict_on_two_cpus(cls, variant):
    check_exhaustive_verdict(cls, variant, BOUNDS, CEILING)


@pytest.mark.parametrize(("cls", "variant"), clean_only(VARIANTS))
def test_clean_variants_stay_clean_under_a_long_random_run(cls, variant):
    check_long_random_run_clean(cls, variant)


def test_the_seed_race_is_a_task_parked_between_auipc_and_jalr():
    """The 2024 CALL_OPS discussion's race, as its diagram tells it: the traced task ran the old
    AUIPC, was parked by stop_machine (kernel preemption let it stop there), the call was
    rewritten, and the task ran the new JALR: a target neither call has. Without kernel
    preemption (the 2022 stopgap) the same search finds nothing (test above)."""
    cls = RISCV["riscv64/ftrace_stop_machine"]
    machine = Machine(cls, "preemptible", Config(cpus=2))
    res = fuzz(machine, RandomStrategy(seed=3), schedules=3000)
    rec = next(r for r in res.crashes.values() if r.finding.oracle == "wrong-target")
    run = machine.run(rec.schedule, trace=True)
    assert run.finding.title == "fentry runs a mix of two versions in thread"
    events = machine.events
    mine = [i for i, e in enumerate(events) if e.cpu == run.finding.cpu]
    # the pass: the last fetch of the JALR, and the fetch of the AUIPC before it
    jalr = next(i for i in reversed(mine) if type(events[i]).__name__ == "Fetch" and events[i].off == 4)
    auipc = next(i for i in reversed(mine) if i < jalr and type(events[i]).__name__ == "Fetch" and events[i].off == 0)
    between = [type(e).__name__ for e in events[auipc:jalr]]
    assert "Parked" in between and "Poke" in between, between  # parked inside, the call rewritten
    assert events[auipc].view[:4] != events[jalr].view[:4]  # the AUIPC it ran is not the one there now
    detail = run.finding.detail
    assert "ran auipc t0" in detail and "now runs jalr t0" in detail and "together they call" in detail
    # the emulated consequence: the task really jumps where neither call goes
    assert run.finding.consequence and "jalr" in run.finding.consequence[0]
    # the focused race diagram tells the same story: the AUIPC's fetch is kept in it
    from fuzzer.focus import focus
    lines = "\n".join(focus(machine, rec.schedule))
    assert "fetch fentry:" in lines and "parked" in lines and "poke fentry" in lines and "fetch fentry+4" in lines
