"""A focused view of a finding's trace: the steps that matter to the violation.

A full trace shows every CPU every step; in a reproducer most of that is round robin stepping
CPUs that take no part in the race. The focused view keeps, for the CPUs involved in the
finding, the lines that touch the patch site, protocol variables, locks, traps and handlers,
folds runs of the same kind of line, notes the schedule decisions that deviated from the
defaults, and says how many steps it left out.

Involved CPUs: the CPU that hit the violation, and every CPU that last wrote something it read
(a site it fetched, a variable it loaded or updated atomically, a lock it waited for): the
other side of the race, found by following the data rather than trusting a protocol's roles.

The view works on the trace lines `Machine.run(trace=True)` already produces, so it needs no
change to the machine and cannot change a run; tests pin the line formats it reads.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from . import decisions as dec
from .machine import Machine, RunResult

_LINE = re.compile(r"^\s*(\d+) cpu(\d+) (\S+)\s+(.*)$")
# what a line writes / reads, by its message (the formats of Machine's trace helpers)
_WRITES = [re.compile(p) for p in (
    r"^poke (\w+)\+", r"^drain: (\w+)\+\d+ = ", r"^drain: (\S+) = ", r"^store (\S+) = ",
    r"^alloc (\S+) = ", r"^free (\S+)$", r"^\w+\((\S+)\): ", r"^(?:read-|write-)?lock (\S+)$",
    r"^unlock (\S+)$")]
_READS = [re.compile(p) for p in (
    r"^fetch (\w+): ", r"^load (\S+) -> ", r"^\w+\((\S+)\): ", r"^read text (\w+): ",
    r"^waited until .*\((\S+) = ", r"^waits for (\S+) ", r"^check (\w+) holds")]
# lines that never matter to a race: a CPU running its caller or task body
_NOISE = re.compile(r"^runs ")
# a fetch that saw whole old or new code is the CPU going about its business, unless it is
# the fetch the violation followed
_PLAIN_FETCH = re.compile(r"^fetch \w+: .* \((old|new)\) ")
_SYNC_START = re.compile(r"^sync_cores\(\): IPI to (.*)$")
# consecutive lines of one CPU with these verbs (its writes reaching its store buffer and
# memory) fold into one
_FOLDED = ("poke", "drain:", "store", "alloc")
# a handler episode that began and ended well: its lines fold into one
_EPISODES = {"int3 at ": "int3 returns", "NMI (serializing)": "NMI handler returns"}


@dataclass
class TraceLine:
    step: int
    cpu: int
    ctx: str
    msg: str

    @property
    def verb(self) -> str:
        return self.msg.split(" ", 1)[0]


@dataclass
class _Shown:
    first: int
    last: int
    cpu: int
    ctx: str
    msgs: list[str]
    steps: set[int] = field(default_factory=set)  # the steps of the trace lines it stands for
    notes: list[str] = field(default_factory=list)

    def render(self) -> str:
        steps = str(self.first) if self.first == self.last else f"{self.first}-{self.last}"
        msg = self.msgs[0] if len(self.msgs) == 1 else _fold(self.msgs)
        note = f"  [schedule: {', '.join(dict.fromkeys(self.notes))}]" if self.notes else ""
        return f"{steps:>7} cpu{self.cpu} {self.ctx:<6} {msg}{note}"


def _fold(msgs: list[str]) -> str:
    """One message for a run of writes: "poke fentry+1 = db; drain: fentry+1 = db; ..." (the
    verb says where the value went: poke and store to the store buffer, drain to memory)."""
    short = [m.removesuffix(" (store buffer)").removesuffix(" reaches memory") for m in msgs]
    return "; ".join(short)


def _fold_episodes(kept: list[TraceLine], finding_cpu: int) -> list[_Shown]:
    """One _Shown per kept line, except that each trap or NMI episode of a CPU that ended
    before the finding (other than the finding CPU's last) becomes one line."""
    items = [_Shown(ln.step, ln.step, ln.cpu, ln.ctx, [ln.msg], {ln.step}) for ln in kept]
    stacks: dict[int, list[tuple[str, int]]] = {}
    spans: list[tuple[int, int]] = []  # (start, end) indices into kept, completed episodes
    for i, ln in enumerate(kept):
        stack = stacks.setdefault(ln.cpu, [])
        for begin, end in _EPISODES.items():
            if ln.msg.startswith(begin):
                stack.append((begin, i))
            elif ln.msg.startswith(end) and stack and stack[-1][0] == begin:
                spans.append((stack.pop()[1], i))
    # an episode of the finding CPU after which it fetched nothing led to the violation
    last_fetch = max((i for i, ln in enumerate(kept) if ln.cpu == finding_cpu and ln.msg.startswith("fetch ")),
                     default=-1)
    last_own = next((s for s in spans if kept[s[0]].cpu == finding_cpu and s[1] > last_fetch), None)
    gone: set[int] = set()
    for a, b in sorted(spans, key=lambda s: s[0] - s[1]):  # outermost first
        if (a, b) == last_own or a in gone:
            continue
        cpu = kept[a].cpu
        if a > 0 and kept[a - 1].cpu == cpu and kept[a - 1].step == kept[a].step \
                and kept[a - 1].msg.startswith("fetch "):
            a -= 1  # the fetch that trapped
        first = kept[a]
        inner = [j for j in range(a, b + 1) if kept[j].cpu == cpu]
        items[a] = _Shown(first.step, kept[b].step, cpu, first.ctx,
                          [f"{kept[a + (first.msg.startswith('fetch '))].msg} ... {kept[b].msg}"],
                          {kept[j].step for j in inner})
        gone.update(j for j in inner if j != a)
    return [it for j, it in enumerate(items) if j not in gone]


def parse(trace: list[str]) -> list[TraceLine]:
    out = []
    for line in trace:
        m = _LINE.match(line)
        if m:
            out.append(TraceLine(int(m[1]), int(m[2]), m[3], m[4]))
    return out


def _objects(patterns: list[re.Pattern], msg: str) -> list[str]:
    return [m[1] for p in patterns if (m := p.match(msg))]


def involved_cpus(lines: list[TraceLine], finding_cpu: int, finding_step: int) -> set[int]:
    """The finding's CPU and, for each thing it read, the CPU that last wrote it before its
    last read: earlier reads are episodes that ended well."""
    last_writer: dict[str, int] = {}
    source: dict[str, int] = {}  # object -> writer seen by the finding CPU's latest read
    for ln in lines:
        if ln.step > finding_step:
            break
        if ln.cpu == finding_cpu:
            for obj in _objects(_READS, ln.msg):
                source[obj] = last_writer.get(obj, -1)
        for obj in _objects(_WRITES, ln.msg):
            last_writer[obj] = ln.cpu
    return {finding_cpu} | {w for w in source.values() if w >= 0}


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
        if s.kind != "step" and "cpu" not in a:  # an injected event (its target drawn or default)
            target = a.get(dec.EVENT_TARGET[s.kind])
            out[i + 1] = s.kind + (f" on cpu{target}" if target is not None else "") \
                + (f" for {a['preempt for']}" if "preempt for" in a else "")
            continue
        notes = []
        for d in s.draws:
            if d.what == "drain" and d.value != 255:
                kept = (d.n - 1) - d.value % d.n
                if kept:
                    notes.append(f"{kept} store{'s' if kept > 1 else ''} left buffered")
            elif d.what == "take ipi" and d.value >= 160:
                notes.append("IPI left pending")
            elif d.what in ("slice", "refresh") and d.value != dec.NEUTRAL[d.what]:
                notes.append(f"{d.what}={d.value}")
        if not notes:
            continue
        default = {k: v for k, v in plan[i].items() if k in ("event", "cpu")}
        f = dec.encode(machine, plan[:i] + [default] + plan[i + 1:])[1].finding
        if f is None or f.signature != signature:
            out[i + 1] = ", ".join(notes)
    return out


def focus(machine: Machine, schedule: bytes, result: RunResult | None = None) -> list[str]:
    """The focused trace of `schedule`'s run: a few lines, and a last one counting what it
    left out. A clean run has no violation to focus on: its lines are all kept, unfolded."""
    if result is None or not result.trace:
        result = machine.run(schedule, trace=True)
    lines = parse(result.trace)
    f = result.finding
    if f is None:
        return list(result.trace)
    cpus = involved_cpus(lines, f.cpu, f.step)
    last_fetch = max((i for i, ln in enumerate(lines) if ln.cpu == f.cpu and ln.msg.startswith("fetch ")),
                     default=-1)
    kept = [ln for i, ln in enumerate(lines)
            if ln.cpu in cpus and not _NOISE.match(ln.msg)
            and not (_PLAIN_FETCH.match(ln.msg) and i != last_fetch)]
    notes = _deviations(machine, schedule, f.signature)
    shown: list[_Shown] = []
    for item in _fold_episodes(kept, f.cpu):
        prev = shown[-1] if shown else None
        verb = item.msgs[0].split(" ", 1)[0]
        open_sync = (prev is not None and len(prev.msgs) == 1 and _SYNC_START.match(prev.msgs[0])
                     and not prev.msgs[0].endswith(" done"))
        if (prev is not None and prev.cpu == item.cpu and prev.ctx == item.ctx and len(item.msgs) == 1
                and verb in _FOLDED and prev.msgs[-1].split(" ", 1)[0] in _FOLDED):
            prev.msgs.append(item.msgs[0])
            prev.last = item.last
            prev.steps |= item.steps
        elif open_sync and (item.msgs[0].startswith("takes IPI")
                            or (item.cpu == prev.cpu and item.msgs[0] == "sync_cores() done")):
            # the call, the IPIs the involved CPUs took for it and its return: one line
            if item.cpu == prev.cpu:
                prev.msgs[0] += " ... done"
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
            shown.append(_Shown(step, step, -1, "", ["(a step not shown)"], {step}, [note]))
    shown.sort(key=lambda sh: (sh.first, sh.last))
    out = [sh.render().replace("cpu-1 ", "      ") for sh in shown]
    omitted = result.steps - len({k for sh in shown for k in sh.steps} & set(range(1, result.steps + 1)))
    others = sorted(set(range(len(machine.cpus))) - cpus)
    out.append(f"({omitted} of {result.steps} steps not shown: "
               + (f"cpu{',cpu'.join(map(str, others))} not involved; " if others else "")
               + "caller loops, plain fetches; involved: "
               + ",".join(f"cpu{c}" for c in sorted(cpus)) + ")")
    return out
