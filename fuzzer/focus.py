"""A focused view of a finding's trace: the steps that matter to the violation.

A full trace shows every CPU every step; in a reproducer most of that is round robin stepping
CPUs that take no part in the race. The focused view keeps, for the CPUs involved in the
finding, the events that touch the patch site, protocol variables, locks, traps and handlers,
folds runs of the same kind of event, notes the schedule decisions that deviated from the
defaults, and says how many steps it left out.

Involved CPUs: the CPU that hit the violation, and every CPU that last wrote something it read
(a site it fetched, a variable it loaded or updated atomically, a lock it waited for): the
other side of the race, found by following the data (each event's `reads()` and `writes()`)
rather than trusting a protocol's roles.

It works on the run's structured events (`fuzzer/events/`), so it cannot change a run.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import decisions as dec
from . import draws
from . import events as ev
from .diagram import Row, protocol_steps, rows_of_events
from .machine import Machine, RunResult

# a handler episode that began and ended well: its events fold into one line
_EPISODES = {ev.Trap: ev.TrapReturn, ev.Nmi: ev.NmiReturn, ev.Irq: ev.IrqReturn}


@dataclass
class Shown:
    """One line of the focused trace: a run of events of one CPU (or a note on a step that is
    not shown, cpu -1), over steps first..last."""

    first: int
    last: int
    cpu: int
    ctx: str
    events: list[ev.Event]
    text: str | None = None  # a folded episode's line
    steps: set[int] = field(default_factory=set)  # the steps of the events it stands for
    notes: list[str] = field(default_factory=list)
    sync_done: bool = False  # a sync_cores() whose return is folded in

    @property
    def category(self) -> str:
        return self.events[0].category if self.events else "op"

    def message(self, r: ev.Renderer) -> str:
        if self.text is not None:
            return self.text
        if len(self.events) == 1:
            return self.events[0].text(r) + (" ... done" if self.sync_done else "")
        return "; ".join(e.brief(r) for e in self.events)

    def render(self, r: ev.Renderer) -> str:
        steps = str(self.first) if self.first == self.last else f"{self.first}-{self.last}"
        who = f"cpu{self.cpu}" if self.cpu >= 0 else "     "
        return f"{steps:>7} {who} {self.ctx:<6} {_with_notes(self.message(r), self.notes)}"


def _fold_episodes(kept: list[ev.Event], finding_cpu: int, r: ev.Renderer) -> list[Shown]:
    """One Shown per kept event, except that each trap or NMI episode of a CPU that ended
    before the finding (other than the finding CPU's last) becomes one line."""
    items = [Shown(e.step, e.step, e.cpu, e.ctx, [e], steps={e.step}) for e in kept]
    stacks: dict[int, list[tuple[type, int]]] = {}
    spans: list[tuple[int, int]] = []  # (start, end) indices into kept, completed episodes
    for i, e in enumerate(kept):
        stack = stacks.setdefault(e.cpu, [])
        for begin, end in _EPISODES.items():
            if type(e) is begin:
                stack.append((begin, i))
            elif type(e) is end and stack and stack[-1][0] is begin:
                spans.append((stack.pop()[1], i))
    # an episode of the finding CPU after which it fetched nothing led to the violation
    last_fetch = max((i for i, e in enumerate(kept) if e.cpu == finding_cpu and type(e) is ev.Fetch),
                     default=-1)
    last_own = next((s for s in spans if kept[s[0]].cpu == finding_cpu and s[1] > last_fetch), None)
    gone: set[int] = set()
    for a, b in sorted(spans, key=lambda s: s[0] - s[1]):  # outermost first
        if (a, b) == last_own or a in gone:
            continue
        cpu = kept[a].cpu
        begin = kept[a]
        if a > 0 and kept[a - 1].cpu == cpu and kept[a - 1].step == begin.step \
                and type(kept[a - 1]) is ev.Fetch:
            a -= 1  # the fetch that trapped
        first = kept[a]
        inner = [j for j in range(a, b + 1) if kept[j].cpu == cpu]
        items[a] = Shown(first.step, kept[b].step, cpu, first.ctx, [first],
                         text=f"{begin.text(r)} ... {kept[b].text(r)}", steps={kept[j].step for j in inner})
        gone.update(j for j in inner if j != a)
    return [it for j, it in enumerate(items) if j not in gone]


def involved_cpus(events: list[ev.Event], finding_cpu: int, finding_step: int) -> set[int]:
    """The finding's CPU and, for each thing it read, the CPU that last wrote it before its
    last read: earlier reads are episodes that ended well. A task that migrated to an involved
    CPU brought its past with it: the CPU it left is involved too, and what it read there
    before it left counts as the finding's reads."""
    # CPU -> the last step at which its reads are the finding's (a task left it then)
    until = {finding_cpu: finding_step}
    for e in reversed(events):
        if type(e) is ev.Migrated and e.step <= until.get(e.target, -1) and e.cpu not in until:
            until[e.cpu] = e.step
    last_writer: dict[str, int] = {}
    source: dict[str, int] = {}  # object -> writer seen by the finding's latest read of it
    for e in events:
        if e.step > finding_step:
            break
        if e.step <= until.get(e.cpu, -1):
            for obj in e.reads():
                source[obj] = last_writer.get(obj, -1)
        for obj in e.writes():
            last_writer[obj] = e.cpu
    return set(until) | {w for w in source.values() if w >= 0}


def _deviations(machine: Machine, schedule: bytes, signature: str) -> dict[int, str]:
    """Machine step -> what the schedule made happen there that the defaults would not have
    and the finding needs: an injected event, stores kept in the store buffer, an IPI left
    pending, a partial refresh, a time slice. Which CPU runs is left out (every line names its
    CPU). A decision is needed if the run with that step's answers back at their defaults
    (CPU choices kept) misses the signature; minimized schedules carry unneeded ones, since a
    held store buffer (byte 0) is smaller than the default (255). Step k of the schedule is
    machine step k + 1."""
    steps = dec.steps_of(machine, schedule)
    plan = dec.plan_of(steps)
    out = {}
    for i, s in enumerate(steps):
        a = s.answers()
        if s.kind != "step" and dec.CPU not in a:  # an injected event (its target drawn or default)
            target = a.get(dec.EVENT_TARGET[s.kind])
            out[i + 1] = s.kind + (f" on cpu{target}" if target is not None else "") \
                + (f" for {a[dec.PREEMPT_FOR]}" if dec.PREEMPT_FOR in a else "")
            continue
        notes = [n for d in s.draws if (n := draws.DRAWS[d.what].note(d.value, d.n))]
        if not notes:
            continue
        default = {k: v for k, v in plan[i].items() if k in (dec.EVENT, dec.CPU)}
        f = dec.encode(machine, plan[:i] + [default] + plan[i + 1:])[1].finding
        if f is None or f.signature != signature:
            out[i + 1] = ", ".join(notes)
    return out


def focus_items(machine: Machine, schedule: bytes, result: RunResult | None = None
                ) -> tuple[list[Shown], set[int], RunResult]:
    """The focused trace of a finding's run as lines, the involved CPUs, and the run."""
    if result is None or not result.events:
        result = machine.run(schedule, trace=True)
    r = result.renderer
    events = result.events or []
    f = result.finding
    cpus = involved_cpus(events, f.cpu, f.step)
    last_fetch = max((i for i, e in enumerate(events) if e.cpu == f.cpu and type(e) is ev.Fetch), default=-1)
    pass_fetches = _pass_of(events, last_fetch)
    kept = [e for i, e in enumerate(events)
            if e.cpu in cpus and type(e) is not ev.RunsCode
            and not (type(e) is ev.Fetch and e.plain and i != last_fetch and i not in pass_fetches)]
    notes = _deviations(machine, schedule, f.signature)
    shown: list[Shown] = []
    for item in _fold_episodes(kept, f.cpu, r):
        prev = shown[-1] if shown else None
        single = item.text is None and len(item.events) == 1
        e = item.events[0]
        open_sync = (prev is not None and prev.text is None and len(prev.events) == 1
                     and type(prev.events[0]) is ev.SyncCoresStart and not prev.sync_done)
        if (prev is not None and prev.cpu == item.cpu and prev.ctx == item.ctx and single
                and e.folds and prev.text is None and prev.events[-1].folds):
            prev.events.append(e)
            prev.last = item.last
            prev.steps |= item.steps
        elif open_sync and single and item.cpu == prev.cpu and type(e) is ev.SyncCoresDone:
            # the call and its return are one line when no involved CPU took its IPI in
            # between: an involved CPU's serializing IPI is part of the race, so it keeps its
            # own line and the return its own
            prev.sync_done = True
            prev.last = item.last
            prev.steps |= item.steps
        else:
            shown.append(item)
    noted: set[int] = set()
    for sh in shown:  # a step's decision is noted once, on its first line
        sh.notes = [notes[k] for k in sorted(sh.steps - noted) if k in notes]
        noted |= sh.steps
    # decisions taken in steps the view leaves out still shape the race: one line each
    covered = {k for sh in shown for k in sh.steps}
    for step, note in notes.items():
        if step not in covered:
            shown.append(Shown(step, step, -1, "", [], text="(a step not shown)", steps={step}, notes=[note]))
    shown.sort(key=lambda sh: (sh.first, sh.last))
    return shown, cpus, result


def _pass_of(events: list[ev.Event], last: int) -> set[int]:
    """The fetches of the pass through a site of several instructions that the fetch at index
    `last` ends: the same CPU's fetches of that site back to the one of its first instruction
    (what a task ran there before it was interrupted or parked is part of the race)."""
    if last < 0 or not events[last].off:
        return set()
    end = events[last]
    out: set[int] = set()
    for i in range(last - 1, -1, -1):
        e = events[i]
        if e.cpu != end.cpu or type(e) is not ev.Fetch:
            continue
        if e.site != end.site or e.off >= end.off:
            break
        out.add(i)
        if e.off == 0:
            return out
    return set()


def focus(machine: Machine, schedule: bytes, result: RunResult | None = None) -> list[str]:
    """The focused trace of `schedule`'s run: a few lines, and a last one counting what it
    left out. A clean run has no violation to focus on: its lines are all kept, unfolded."""
    return focus_view(machine, schedule, result)[0]


def focus_view(machine: Machine, schedule: bytes, result: RunResult | None = None
               ) -> tuple[list[str], list[Row], list[int]]:
    """The focused trace as text lines, as the race diagram's rows, and the CPUs it involves
    (the diagram's columns). A clean run is shown whole, on every CPU."""
    if result is None or not result.events:
        result = machine.run(schedule, trace=True)
    r = result.renderer
    if result.finding is None:
        return list(result.trace), rows_of_events(result.events or [], r), list(range(len(machine.cpus)))
    shown, cpus, result = focus_items(machine, schedule, result)
    phase = {id(e): p for e, p in zip(result.events, protocol_steps(result.events))}
    rows = [Row(sh.first, sh.last, sh.cpu, sh.ctx, sh.category, _with_notes(sh.message(r), sh.notes),
                phase.get(id(sh.events[0]), "")) if sh.cpu >= 0
            else Row(sh.first, sh.last, -1, "", "op", f"step {sh.first}: schedule: {', '.join(sh.notes)}")
            for sh in shown]
    out = [sh.render(r) for sh in shown]
    omitted = result.steps - len({k for sh in shown for k in sh.steps} & set(range(1, result.steps + 1)))
    others = sorted(set(range(len(machine.cpus))) - cpus)
    out.append(f"({omitted} of {result.steps} steps not shown: "
               + (f"cpu{',cpu'.join(map(str, others))} not involved; " if others else "")
               + "caller loops, plain fetches; involved: "
               + ",".join(f"cpu{c}" for c in sorted(cpus)) + ")")
    return out, rows, sorted(cpus)


def _with_notes(message: str, notes: list[str]) -> str:
    return message + (f"  [schedule: {', '.join(dict.fromkeys(notes))}]" if notes else "")
