"""A run is a pure function of protocol, configuration and schedule bytes."""

import random

import pytest

from fuzzer.machine import Config, Machine
from fuzzer.oracles import ORACLES
from fuzzer.protocols import registry, resolve

CPUS = 4
ALL_VARIANTS = [pytest.param(cls, variant, id=f"{name}:{variant}")
                for name, cls in registry().items() for variant in cls.variants]
# every variant expected clean, plus every variant called "correct" (a correct design may still
# have a race the search finds, but not under the default fair schedule with no events)
CORRECT_VARIANTS = [pytest.param(cls, variant, id=f"{name}:{variant}")
                    for name, cls in registry().items() for variant in cls.variants
                    if cls.expect[variant] is None or variant == "correct"]


def _key(result):
    f = result.finding
    return (result.verdict, f.signature if f else None, f.oracle if f else None,
            tuple(f.consequence) if f else (), result.trace_sha256, result.steps, result.completed,
            result.schedule_used)


@pytest.mark.parametrize(("spec", "count"), [("x86/text_poke_bp:no-final-sync", 300),
                                             ("x86/ftrace_nmi_2008:no-nmi-write", 200)])
def test_replay_is_deterministic(spec, count):
    rng = random.Random(7)
    schedules = [rng.randbytes(rng.randint(0, 300)) for _ in range(count)]
    cls, variant = resolve(spec)
    machine = Machine(cls, variant, Config(cpus=CPUS))

    first = [_key(machine.run(s, trace=True)) for s in schedules]
    # the same machine again, in another order, so every rerun follows other runs
    order = list(range(count // 2, count)) + list(range(count // 2))
    second = {i: _key(machine.run(schedules[i], trace=True)) for i in order}
    other = Machine(cls, variant, Config(cpus=CPUS))
    third = [_key(other.run(s, trace=True)) for s in schedules]

    for i, s in enumerate(schedules):
        assert second[i] == first[i], f"same machine diverged on {s.hex()}"
        assert third[i] == first[i], f"fresh machine diverged on {s.hex()}"

    # the check has teeth: the schedules lead to different runs, some crash, some stay clean
    verdicts = {k[0] for k in first}
    assert verdicts == {"clean", "crash"}, verdicts
    assert len({k[4] for k in first}) > count // 2

    # tracing only records; it must not change what happens
    for i, s in enumerate(schedules):
        r = machine.run(s)
        assert r.trace == []
        k = first[i]
        assert (r.verdict, r.finding.signature if r.finding else None, r.steps, r.completed) == (
            k[0], k[1], k[5], k[6]), f"trace=True changed the run of {s.hex()}"


@pytest.mark.parametrize(("cls", "variant"), CORRECT_VARIANTS)
def test_empty_schedule_completes_clean(cls, variant):
    machine = Machine(cls, variant, Config(cpus=CPUS))
    result = machine.run(b"", trace=True)
    assert result.finding is None, (result.finding.title, result.finding.detail)
    assert result.verdict == "clean"
    assert result.completed is True
    assert result.schedule_used == 0
    assert result.trace, "a traced run records events"


GARBAGE = {
    "ff": b"\xff" * 1000,
    "every-byte": bytes(range(256)) * 4,
    "nmi-storm": b"\xc8" * 1000,
    "foreign-traps": b"\xd8" * 1000,
    "preempt": b"\xe0" * 1000,
    "short-slices": b"\xc0" * 1000,
    "random": random.Random(11).randbytes(3000),
}


@pytest.mark.parametrize(("cls", "variant"), ALL_VARIANTS)
def test_garbage_schedules_never_raise(cls, variant):
    machine = Machine(cls, variant, Config(cpus=CPUS))
    for name, data in GARBAGE.items():
        result = machine.run(data)
        assert result.verdict in ("clean", "crash"), name
        assert 0 <= result.schedule_used <= len(data), name
        assert result.steps <= machine.config.max_steps + 1, name
        if result.finding is not None:
            assert result.finding.oracle in ORACLES, name
            assert result.finding.title, name
