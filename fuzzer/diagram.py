"""The race diagram's model: one column per CPU, time going down, as kernel changelogs draw races.

A diagram is built from rows (`Row`: one CPU's event, or a folded run of them, over steps
first..last), taken from a run's events or from the focused view's lines; it reads no trace
text. `Diagram.lines()` lays the rows out going down: rows at the same steps on different CPUs
share a line, a stretch of steps nothing is shown for becomes a skip marker, and the violation
(with what the CPU executed after it) is the last line. Each row carries the protocol step its
CPU is in (`protocol_steps`: which sync_cores() it is waiting in or was serialized by, which
lock it holds or waits for), so a column says where each CPU stands when the race happens.

`diagram_svg.py` draws it as SVG or HTML, `diagram_text.py` as text for a commit message.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field

from . import events as ev

COLOURS = {  # category -> fill colour, in legend order
    "violation": "#d62728",
    "consequence": "#ff9896",
    "fetch": "#9ecae1",
    "text write": "#fdd0a2",
    "memory": "#e5e5e5",
    "ipi": "#a1d99b",
    "nmi": "#dadaeb",
    "irq": "#bcbddc",
    "trap": "#fbc8e4",
    "lock wait": "#d9b8b0",
    "lock": "#e7e7a6",
    "stop_machine": "#b8e6ee",
    "preemption": "#d0d0d0",
    "op": "#deebf7",
}


@dataclass(frozen=True)
class Row:
    """One box: steps first..last of one CPU (-1: a note on steps not shown), in a context, of
    a category, saying `text`; `phase` is the protocol step the CPU is in there."""

    first: int
    last: int
    cpu: int
    ctx: str
    category: str
    text: str
    phase: str = ""

    @property
    def label(self) -> str:
        """The text as drawn: a handler's rows say which context they run in."""
        text = self.text.removeprefix("*** ")
        return text if self.ctx in ("thread", "") else f"[{self.ctx}] {text}"


def protocol_steps(events: list[ev.Event]) -> list[str]:
    """For each event, the protocol step its CPU is in: waiting in sync_cores() #n (numbered in
    the order they start), after it, serialized by its IPI, holding or waiting for a lock,
    parked in stop_machine, preempted. Derived from the events alone."""
    syncs = 0
    unserialized: dict[int, list[int]] = {}  # cpu -> sync_cores() whose IPI it has not taken
    parts: dict[int, dict[str, str]] = {}  # cpu -> {"sync": ..., "lock": ..., "held": ...}
    out = []
    for e in events:
        p = parts.setdefault(e.cpu, {})
        t = type(e)
        if t is ev.SyncCoresStart:
            syncs += 1
            p["sync"] = f"waiting in sync_cores #{syncs}"
            for target in e.targets:
                unserialized.setdefault(target, []).append(syncs)
        elif t is ev.TakeIpi and unserialized.get(e.cpu):
            p["sync"] = f"serialized by sync_cores #{unserialized.pop(e.cpu)[-1]}"
        elif t is ev.LockWait:
            p["lock"] = f"waiting for {e.lock}"
        elif t is ev.Unlocked:
            p.pop("lock", None)
        elif t is ev.Locked:
            p["lock"] = f"holds {e.lock}"
        elif t is ev.Parked:
            p["held"] = "parked in stop_machine"
        elif t is ev.Preempted:
            p["held"] = "preempted"
        elif t in (ev.Unparked, ev.Resumed):
            p.pop("held", None)
        out.append("; ".join(v for v in p.values() if v))
        if t is ev.SyncCoresDone and p.get("sync", "").startswith("waiting in "):
            p["sync"] = "after " + p["sync"].removeprefix("waiting in ")  # from the next event on
    return out


def rows_of_events(events: list[ev.Event], r: ev.Renderer) -> list[Row]:
    """Every event as a row: the full diagram."""
    return [Row(e.step, e.step, e.cpu, e.ctx, e.category, e.text(r), phase)
            for e, phase in zip(events, protocol_steps(events))]


@dataclass
class Line:
    """One line of the diagram going down: rows of different CPUs over the same steps
    (`cells`, cpu -> row; `phases`, cpu -> the protocol step it enters here), or a marker for
    `skipped` steps nothing is shown for, or a note (`notes`) on such steps."""

    first: int
    last: int
    cells: dict[int, Row] = field(default_factory=dict)
    phases: dict[int, str] = field(default_factory=dict)
    skipped: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def steps(self) -> str:
        return str(self.first) if self.first == self.last else f"{self.first}-{self.last}"


@dataclass
class Diagram:
    """What to draw: a title, the CPUs that get a column (in order), the rows in time order."""

    title: str
    cpus: list[int]
    rows: list[Row]

    def categories(self) -> list[str]:
        """The categories of the rows drawn, in legend order: the legend names nothing else."""
        present = {row.category for row in self._drawn()}
        return [c for c in COLOURS if c in present] + sorted(present - set(COLOURS))

    def _drawn(self) -> list[Row]:
        return [row for row in self.rows if row.cpu in self.cpus]

    def lines(self) -> list[Line]:
        rows = self._drawn()
        violations = [row for row in rows if row.category == "violation"]
        end = violations[-1] if violations else None
        after = [row for row in rows if end is not None and row.category == "consequence"
                 and row.cpu == end.cpu and row.first >= end.first]
        body = [row for row in rows if row is not end and not any(row is a for a in after)]
        notes = [row for row in self.rows if row.cpu < 0]
        out: list[Line] = []
        phase: dict[int, str] = {}
        shown_to = 0  # the last step a line covers so far

        def gap_before(step: int) -> None:
            nonlocal shown_to
            if step > shown_to + 1:
                out.append(Line(shown_to + 1, step - 1, skipped=step - 1 - shown_to,
                                notes=[n.text for n in notes if shown_to < n.first < step]))

        for row in body:
            gap_before(row.first)
            cur = out[-1] if out else None
            if not (cur is not None and not cur.skipped and (cur.first, cur.last) == (row.first, row.last)
                    and row.cpu not in cur.cells):
                cur = Line(row.first, row.last)
                out.append(cur)
            cur.cells[row.cpu] = row
            if row.phase and row.phase != phase.get(row.cpu, ""):
                cur.phases[row.cpu] = row.phase
            phase[row.cpu] = row.phase
            shown_to = max(shown_to, row.last)
        if end is not None:
            gap_before(end.first)
            text = end.text + "".join(f"; then {row.text}" for row in after)
            last = Line(end.first, max([end.last] + [row.last for row in after]))
            last.cells[end.cpu] = Row(end.first, last.last, end.cpu, end.ctx, end.category, text, end.phase)
            if end.phase and end.phase != phase.get(end.cpu, ""):
                last.phases[end.cpu] = end.phase
            out.append(last)
        return out


def wrap(text: str, width: int) -> list[str]:
    """`text` on lines of at most `width` characters, every character kept: broken at spaces
    where it can be, inside a word where it must."""
    return textwrap.wrap(text, max(width, 8), break_on_hyphens=False) or [""]
