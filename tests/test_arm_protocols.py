"""The 32-bit ARM protocols (A32 and Thumb-2): every `correct` variant proved clean by exhaustive
search on 2 CPUs within the bounds below, every mutant found under the same bounds with its
expected oracle, a long random run on 4 CPUs clean for every clean variant, and the straddling
Thumb-2 branch torn into another valid branch, which the finding names."""

from __future__ import annotations

import pytest

from fuzzer.campaign import fuzz
from fuzzer.machine import Config, Machine
from fuzzer.protocols import registry
from fuzzer.strategies.exhaustive import ExhaustiveStrategy
from fuzzer.strategies.random import RandomStrategy

from .isa_proofs import check_exhaustive_verdict, check_long_random_run_clean, clean_only, variants_of

# The default bounds and the weak model's (as arm64's), and a fourth context switch: removing a
# probe while a CPU that trapped on it has not yet read it back takes the patcher's write in the
# middle of that CPU's handler.
BOUNDS = dict(store_delays=2, store_reorders=1, stale_fetches=1, context_switches=4)
CEILING = 40_000
ARM = {name: cls for name, cls in registry().items() if cls.arch in ("arm", "thumb2")}
VARIANTS = variants_of("arm", "thumb2")


def test_every_arm_protocol_is_registered():
    assert set(ARM) == {"arm/ftrace", "arm/jump_label", "arm/jump_label_thumb2", "arm/kprobe"}
    for cls in ARM.values():
        assert cls.expect.get("correct", "missing") is None, cls.name
        assert sum(e is not None for e in cls.expect.values()) >= 2, f"{cls.name}: fewer than two mutants"
        assert "arch/arm/" in __import__(cls.__module__, fromlist=["_"]).__doc__, cls.name


@pytest.mark.parametrize(("cls", "variant"), VARIANTS)
def test_exhaustive_verdict_on_two_cpus(cls, variant):
    check_exhaustive_verdict(cls, variant, BOUNDS, CEILING)


@pytest.mark.parametrize(("cls", "variant"), clean_only(VARIANTS))
def test_clean_variants_stay_clean_under_a_long_random_run(cls, variant):
    check_long_random_run_clean(cls, variant)


def test_leaving_stop_machine_must_synchronize_the_parked_cpus():
    """The model's stated assumption (`patchfuzz rules arm`): the parked CPUs leave stop_machine
    by an exception return. Without it, a parked CPU may fetch the old word next to the new one
    (mov r0, r0 <-> b, outside the list) after patch_text() returned."""
    cls = ARM["arm/jump_label"]
    machine = Machine(cls, "correct", Config(cpus=2, stop_machine_serializes=False))
    res = fuzz(machine, ExhaustiveStrategy(seed=1, **BOUNDS), schedules=CEILING)
    assert "cmodx-violation" in {rec.finding.oracle for rec in res.crashes.values()}


def test_a_straddling_thumb2_branch_tears_into_another_valid_branch():
    """Written as two halfwords without stop_machine, the straddling b.w is fetched half old
    (nop.w) and half new: an instruction neither version holds, which still decodes as a branch;
    the finding says which, and the CPU runs it."""
    cls = ARM["arm/jump_label_thumb2"]
    machine = Machine(cls, "direct", Config(cpus=2))
    res = fuzz(machine, RandomStrategy(seed=2), schedules=2000)
    rec = next(r for r in res.crashes.values() if r.finding.oracle == "torn-fetch")
    run = machine.run(rec.schedule)
    site = machine.sites["straddling"]
    detail = run.finding.detail
    executed = bytes.fromhex(detail.split(" = ")[0].removeprefix("executes ").replace(" ", ""))
    torn = executed[2:6]
    assert torn not in (site.old[2:6], site.new[2:6])
    assert machine.arch.insn_lengths(torn) == (4,)  # a whole valid 32-bit instruction
    assert machine.arch.disasm(torn, site.addr + 2).split()[0] in detail
    assert run.finding.consequence  # and the CPU ran it
