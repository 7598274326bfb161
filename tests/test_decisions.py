"""The decision-level view of a schedule: parsing replays the same run, plans re-encode to
bytes that replay them, and editing one decision leaves the others' meaning alone."""

from fuzzer import decisions as dec
from fuzzer.draws import EV_NMI
from fuzzer.machine import Config, Machine
from fuzzer.protocols import resolve
from fuzzer.strategies import RandomStrategy


def _machine(spec: str) -> Machine:
    cls, variant = resolve(spec)
    return Machine(cls, variant, Config(cpus=4))


def _schedules(n: int = 20, seed: int = 5) -> list[bytes]:
    rng = RandomStrategy(seed=seed)
    return [rng.next_schedule() for _ in range(n)]


def test_recording_replays_the_same_run_and_splits_it_into_steps():
    m = _machine("x86/text_poke_bp:no-final-sync")
    for s in _schedules():
        plain = m.run(s, trace=True)
        draws, rec = dec.record(m, s, trace=True)
        assert rec.trace_sha256 == plain.trace_sha256 and rec.schedule == plain.schedule
        assert [d.pos for d in draws] == list(range(len(draws)))
        assert bytes(d.value for d in draws) == plain.schedule
        steps = dec.split_steps(draws)
        assert all(st.draws[0].what == "event" for st in steps)
        assert [st.start for st in steps] == sorted(st.start for st in steps)
        assert sum(len(st.draws) for st in steps) == len(draws)
        for st in steps:
            if st.injected:
                assert "cpu" not in st.answers()  # an injected event is a step of its own


def test_a_plan_reencodes_to_bytes_that_replay_it():
    m = _machine("x86/ftrace_nmi_2008:correct")
    for s in _schedules(seed=9):
        plain = m.run(s, trace=True)
        again, r = dec.encode(m, dec.plan_of(dec.steps_of(m, s)), trace=True)
        assert r.trace_sha256 == plain.trace_sha256
        assert m.run(again, trace=True).trace_sha256 == plain.trace_sha256
        assert len(again) <= len(plain.schedule)


def _cpus(steps: list[dec.Step]) -> list[int | None]:
    return [st.answers().get("cpu") for st in steps]


def test_deleting_a_decision_keeps_every_other_cpu_choice_by_name():
    m = _machine("x86/text_poke_bp:correct")
    order = [0, 0, 3, 1, 2, 0, 3, 2, 1, 0]
    plan: dec.Plan = [{"event": 0, "cpu": c} for c in order]
    plan.insert(4, {"event": EV_NMI, "nmi cpu": 2})
    steps = dec.steps_of(m, dec.encode(m, plan)[0])
    assert _cpus(steps)[:len(plan)] == [p.get("cpu") for p in plan]
    assert steps[4].injected and steps[4].kind == "nmi" and steps[4].answers()["nmi cpu"] == 2

    # delete the second step (cpu0 again) and the NMI: the rest still run the CPUs they named
    edited = [p for i, p in enumerate(plan) if i not in (1, 4)]
    again = dec.steps_of(m, dec.encode(m, edited)[0])
    assert _cpus(again)[:len(edited)] == [p["cpu"] for p in edited]
    # the same deletion on the bytes shifts the later choices: they are relative to the last CPU
    raw = dec.encode(m, plan)[0]
    raw = raw[:steps[1].start] + raw[steps[1].end:steps[4].start] + raw[steps[4].end:]
    assert _cpus(dec.steps_of(m, raw))[:len(edited)] != [p["cpu"] for p in edited]


def test_neutral_tail_is_trimmed_and_describe_names_the_events():
    m = _machine("x86/text_poke_bp:correct")
    s = bytes([0, 0, EV_NMI, 1, 0, 0, 0, 0])
    assert dec.trim_neutral(m, s) == bytes([0, 0, EV_NMI, 1])
    assert m.run(s).trace_sha256 == m.run(dec.trim_neutral(m, s)).trace_sha256
    lines = dec.describe(dec.steps_of(m, s))
    assert any("nmi cpu" in line for line in lines)
    assert dec.nontrivial(m, s) == 1 and dec.nontrivial(m, b"") == 0
