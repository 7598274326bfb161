"""The trace is structured: typed events, rendered to text; focus, the race diagram and the
minimizer read the events, never the text."""

import ast
from pathlib import Path

from fuzzer import events as ev
from fuzzer.diagram import Diagram, rows_of_events
from fuzzer.diagram_svg import render_svg
from fuzzer.machine import Config, Machine
from fuzzer.minimize import shape
from fuzzer.protocols import resolve
from fuzzer.strategies.random import RandomStrategy

FUZZER = Path(__file__).resolve().parents[1] / "fuzzer"
NO_FINAL_SYNC = bytes.fromhex("0000000200000001000300030000030000000000000000000000000003000300"
                              "000300000300000300000000000000000000000000020000000003000002")


def _machine(spec="x86/text_poke_bp:no-final-sync", cpus=4):
    cls, variant = resolve(spec)
    return Machine(cls, variant, Config(cpus=cpus))


def test_the_text_trace_is_a_rendering_of_the_events():
    m = _machine()
    r = m.run(NO_FINAL_SYNC, trace=True)
    assert r.finding is not None and len(r.events) == len(r.trace) > 20
    for e, line in zip(r.events, r.trace):
        assert isinstance(e, ev.Event)
        assert line == r.renderer.line(e)
        assert line.split()[0] == str(e.step) and f"cpu{e.cpu}" in line
    kinds = {type(e) for e in r.events}
    assert {ev.Fetch, ev.Poke, ev.TextDrain, ev.SyncCoresStart, ev.TakeIpi, ev.Trap, ev.Violation} <= kinds
    last = r.events[-1]
    assert type(last) is ev.Violation and last.oracle == "unhandled-trap"
    assert last.title == r.finding.title


def test_events_say_what_they_read_and_write():
    m = _machine()
    r = m.run(NO_FINAL_SYNC, trace=True)
    pokes = [e for e in r.events if type(e) is ev.Poke]
    assert pokes and all(e.writes() == ("fentry",) and e.reads() == () for e in pokes)
    fetches = [e for e in r.events if type(e) is ev.Fetch]
    assert fetches and all(e.reads() == ("fentry",) for e in fetches)
    atomics = [e for e in r.events if type(e) is ev.Atomic]
    assert atomics and all(e.reads() == e.writes() == (e.var,) for e in atomics)


def test_untraced_runs_keep_no_events_and_coverage_sees_them_anyway():
    m = _machine()
    plain = m.run(NO_FINAL_SYNC)
    assert plain.events is None and plain.trace == []
    cov = m.run(NO_FINAL_SYNC, coverage=True)
    assert cov.events is None and len(cov.features) > 10
    traced = m.run(NO_FINAL_SYNC, trace=True, coverage=True)
    assert traced.features == cov.features and traced.near == cov.near


def test_timeline_rows_come_from_events_with_their_categories():
    m = _machine()
    r = m.run(NO_FINAL_SYNC, trace=True)
    rows = rows_of_events(r.events, r.renderer)
    cats = {row.category for row in rows}
    assert {"fetch", "text write", "memory", "ipi", "trap", "violation"} <= cats
    svg = render_svg(Diagram("t", [0, 1, 2, 3], rows))
    assert svg.count("<rect") > len(rows) and "unhandled-trap" in svg


def test_minimizer_counts_events_not_text():
    m = _machine("x86/ftrace_nmi_2008:no-wait")
    strat = RandomStrategy(seed=1)
    for _ in range(400):
        s = strat.next_schedule()
        r = m.run(s, trace=True)
        nmis = sum(type(e) is ev.Nmi for e in r.events)
        if r.finding and nmis:
            assert shape(m, s).nmis == nmis == sum("NMI (serializing)" in line for line in r.trace)
            return
    raise AssertionError("no crashing schedule with an NMI in 400")


def test_no_renderer_of_the_trace_parses_text():
    # focus, the race diagram, the minimizer and the events themselves import no regular expressions
    names = [str(p.relative_to(FUZZER)) for p in sorted((FUZZER / "events").glob("*.py"))]
    for name in (*names, "focus.py", "diagram.py", "diagram_svg.py", "diagram_text.py", "minimize.py"):
        tree = ast.parse((FUZZER / name).read_text())
        imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert "re" not in imported, name
