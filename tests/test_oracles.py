"""Every oracle fires on some protocol, with a stable, address-free title."""

import re
from collections import defaultdict

import pytest

from fuzzer.machine import Config, Machine
from fuzzer.oracles import ORACLES, Finding, signature
from fuzzer.protocols import registry, resolve
from fuzzer.strategies.random import RandomStrategy

from .oracle_protocols import (
    ORACLE_PROTOCOLS,
    GuestFault,
    MidInsnResume,
    ProtocolAssert,
    StaleAfterComplete,
    StaticKey,
    WrongTarget,
)

CPUS = 4
SEED = 0
MAX_SCHEDULES = 1000
HEX = re.compile(r"0x[0-9a-f]+", re.IGNORECASE)
CPU_NUMBER = re.compile(r"cpu\d", re.IGNORECASE)


DEMOS = {
    "torn-fetch": resolve("x86/text_poke_bp:no-sync-after-int3"),
    "unhandled-trap": resolve("x86/text_poke_bp:no-final-sync"),
    "use-after-free": resolve("x86/text_poke_bp:early-free"),
    "deadlock": resolve("x86/text_mutex_hotplug:abba"),
    "stale-after-complete": (StaleAfterComplete, "no-sync"),
    "mid-insn-resume": (MidInsnResume, "nops"),
    "wrong-target": (WrongTarget, "bad-emulation"),
    "guest-fault": (GuestFault, "ud2"),
    "protocol-assert": (ProtocolAssert, "wrong-old"),
    "invariant": (StaticKey, "unlock-early"),
    "cmodx-violation": resolve("arm64/patch_text:nosync"),
}


def _assert_title_is_stable(title):
    assert title
    assert not HEX.search(title), title
    assert not CPU_NUMBER.search(title), title


def test_every_oracle_is_demonstrated():
    assert set(DEMOS) == set(ORACLES)
    for oracle, (cls, variant) in DEMOS.items():
        assert cls.expect[variant] == oracle, (cls.name, variant)


def test_test_protocols_stay_out_of_the_registry():
    names = set(registry())
    for cls in ORACLE_PROTOCOLS:
        assert cls.name.startswith("test/")
        assert cls.name not in names


@pytest.mark.parametrize("oracle", list(ORACLES))
def test_oracle_fires(oracle):
    cls, variant = DEMOS[oracle]
    machine = Machine(cls, variant, Config(cpus=CPUS))
    strategy = RandomStrategy(seed=SEED)
    hit = None
    titles = set()
    for _ in range(MAX_SCHEDULES):
        schedule = strategy.next_schedule()
        result = machine.run(schedule)
        f = result.finding
        if f is None:
            continue
        titles.add(f.title)
        if f.oracle == oracle:
            hit = (schedule, f)
            break
    assert hit is not None, f"{oracle} not found in {MAX_SCHEDULES} schedules of {cls.name}:{variant}"
    for title in titles:
        _assert_title_is_stable(title)

    schedule, finding = hit
    assert finding.protocol == cls.name and finding.variant == variant
    assert finding.detail
    again = Machine(cls, variant, Config(cpus=CPUS)).run(schedule)
    assert again.finding is not None and again.finding.signature == finding.signature


def _first_finding(cls, variant):
    """The first finding of seeded random search within the schedule budget, or None."""
    machine = Machine(cls, variant, Config(cpus=CPUS))
    strategy = RandomStrategy(seed=SEED)
    for _ in range(MAX_SCHEDULES):
        f = machine.run(strategy.next_schedule()).finding
        if f is not None:
            return f
    return None


def test_mid_insn_resume_points_inside_the_site():
    f = _first_finding(MidInsnResume, "nops")
    assert f is not None and f.oracle == "mid-insn-resume"
    m = re.search(r"resumes at fentry_func\+0x([0-9a-f]+)", f.detail)
    assert m, f.detail
    assert 1 <= int(m[1], 16) <= 4


def test_wrong_target_names_the_bad_emulation():
    f = _first_finding(WrongTarget, "bad-emulation")
    assert f is not None and f.oracle == "wrong-target"
    assert "emulated jmp" in f.detail


def test_guest_fault_is_an_invalid_opcode():
    f = Machine(GuestFault, "ud2", Config(cpus=CPUS)).run(b"").finding
    assert f is not None and f.oracle == "guest-fault"
    assert "invalid opcode" in f.title


def test_signature_depends_on_title_not_on_circumstances():
    base = dict(oracle="torn-fetch", title="torn fetch at fentry in thread",
                protocol="x86/text_poke_bp", variant="no-sync-after-int3")
    a = Finding(**base, step=10, cpu=1, detail="executes 0f db ff 00 00")
    b = Finding(**base, step=999, cpu=3, detail="executes 0f 1f ff 00 00", consequence=["x"])
    assert a.signature == b.signature == signature(base["protocol"], base["variant"], base["oracle"],
                                                   base["title"])
    for field, value in [("variant", "no-final-sync"), ("protocol", "x86/stop_machine_naive"),
                         ("oracle", "wrong-target"), ("title", "torn fetch at fentry in NMI")]:
        other = Finding(**{**base, field: value}, step=10, cpu=1, detail=a.detail)
        assert other.signature != a.signature, field
    assert a.to_dict()["signature"] == a.signature


def test_same_bug_on_different_cpus_has_one_signature():
    """Findings from different schedules, CPUs and steps collapse to few titles and signatures."""
    cls, variant = resolve("x86/text_poke_bp:no-sync-after-int3")
    machine = Machine(cls, variant, Config(cpus=CPUS))
    strategy = RandomStrategy(seed=SEED)
    by_title = defaultdict(list)
    for _ in range(300):
        f = machine.run(strategy.next_schedule()).finding
        if f is not None:
            by_title[f.title].append(f)
    shared = [fs for fs in by_title.values() if len({f.cpu for f in fs}) > 1 and len({f.detail for f in fs}) > 1]
    assert shared, {t: len(fs) for t, fs in by_title.items()}
    for fs in by_title.values():
        assert len({f.signature for f in fs}) == 1
    assert len({fs[0].signature for fs in by_title.values()}) == len(by_title)
