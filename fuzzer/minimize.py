"""Minimize a finding's schedule: shrink bytes while the same signature reproduces.

Hypothesis-style passes, every accepted candidate smaller in the chosen order (see below:
fewest steps, or shortlex on the bytes), repeated until none makes progress. Two granularities:

Decisions (see fuzzer.decisions): a byte means something only given the bytes before it, so
deleting one byte re-targets every later CPU choice. These passes edit the parsed steps, naming
CPUs absolutely, and re-encode, so every other decision keeps its meaning:
* cut to the shortest prefix of whole steps after which the defaults (round robin) reproduce;
* per step, from the last: delete it; turn an injected NMI, foreign trap, preemption or drain
  into a plain step of the CPU it targeted; give its CPU choice back to round robin; delete
  its bytes as they are (the later choices then shift, which sometimes is what reproduces).

Bytes: cut the tail by bisection; delete spans of 8, 4, 2 and 1 bytes; lower each byte to 0
(a plain step, no event, the first option), then to smaller values.

Two orders say what "smaller" means:
* `bytes`: shortlex on the bytes (shorter, then bytewise smaller). The bytes end early and round
  robin plays out the rest of the run, so the trace can be long: no-final-sync keeps 77 steps
  for 17 bytes, the race in its last five.
* `steps`: (scheduling steps of the run, then shortlex on the bytes). A reader follows the
  trace, not the bytes. On top of the passes above, the whole run is made explicit (every
  step's CPU named, the defaults included) and whole steps are deleted from it, so the idle
  CPUs round robin would step are skipped by explicit choices: more bytes, fewer steps.

Every candidate is a pure function of the current best and every accepted one is smaller in a
total order, so minimizing twice gives the same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import decisions as dec
from . import events as ev
from .machine import Machine

ORDERS = ("steps", "bytes")
DEFAULT_ORDER = "steps"


@dataclass
class Shape:
    """What a schedule does, for before/after reports."""

    bytes: int
    steps: int
    nmis: int
    preemptions: int
    foreign_traps: int
    decisions: int = 0  # steps that differ from round robin and the defaults

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def shape(machine: Machine, schedule: bytes) -> Shape:
    r = machine.run(schedule, trace=True)
    return Shape(
        bytes=len(schedule), steps=r.steps,
        nmis=sum(type(e) is ev.Nmi for e in r.events),
        preemptions=sum(type(e) is ev.Preempted for e in r.events),
        foreign_traps=sum(type(e) is ev.Trap and e.foreign for e in r.events),
        decisions=dec.nontrivial(machine, schedule),
    )


class Minimizer:
    def __init__(self, machine: Machine, signature: str, max_runs: int = 20000, decisions: bool = True,
                 order: str = DEFAULT_ORDER):
        if order not in ORDERS:
            raise ValueError(f"order must be one of {', '.join(ORDERS)}, not {order!r}")
        self.machine = machine
        self.decisions = decisions
        self.order = order
        self.signature = signature
        self.max_runs = max_runs
        self.runs = 0
        # passes repeat until none makes progress: a candidate that failed once fails again,
        # and one that reproduced keeps its step count
        self._failed: set[bytes] = set()
        self._steps: dict[bytes, int] = {}
        self._encoded: dict[tuple, bytes] = {}

    def reproduces(self, schedule: bytes) -> bool:
        if schedule in self._failed:
            return False
        if schedule in self._steps:
            return True
        self.runs += 1
        r = self.machine.run(schedule)
        f = r.finding
        ok = f is not None and f.signature == self.signature
        if ok:
            self._steps[schedule] = r.steps
        else:
            self._failed.add(schedule)
        return ok

    def key(self, schedule: bytes) -> tuple:
        """Where a reproducing schedule stands in this minimizer's order (smaller is better)."""
        if self.order == "steps":
            return (self._steps[schedule], len(schedule), schedule)
        return (len(schedule), schedule)

    def _better(self, cand: bytes, best: bytes) -> bool:
        if self.order == "bytes" and (len(cand), cand) >= (len(best), best):
            return False  # no run needed to know it cannot win
        if cand == best or (self.runs >= self.max_runs and cand not in self._steps):
            return False
        return self.reproduces(cand) and self.key(cand) < self.key(best)

    def _better_plan(self, plan: dec.Plan, best: bytes) -> bytes | None:
        """The bytes of `plan` if they are smaller than `best` and reproduce."""
        key = tuple(tuple(sorted(step.items())) for step in plan)
        cand = self._encoded.get(key)
        if cand is None:
            if self.runs >= self.max_runs:
                return None
            self.runs += 1
            cand, r = dec.encode(self.machine, plan)
            self._encoded[key] = cand
            f = r.finding
            # the plan's run is the bytes' run (up to the hang clock): one that misses the
            # signature, or cannot win on steps, spares the bytes' run
            if f is None or f.signature != self.signature or (
                    self.order == "steps" and best in self._steps and r.steps > self._steps[best]):
                self._failed.add(cand)
        return cand if self._better(cand, best) else None

    def minimize(self, schedule: bytes) -> bytes:
        if not self.reproduces(schedule):
            raise ValueError("the schedule does not reproduce that signature")
        # the bytes a run never drew change nothing: start from what it used
        best = self.machine.run(schedule).schedule
        if not self.reproduces(best):
            best = schedule
        step_passes = (self._step_prefix, self._step_blocks, self._step_edits) if self.decisions else ()
        if self.order == "steps":
            step_passes = (*step_passes, self._cpu_blocks, self._explicit_blocks)
        progress = True
        while progress and self.runs < self.max_runs:
            progress = False
            for candidate_pass in (self._cut_tail, *step_passes, self._delete_spans, self._lower_bytes):
                new = candidate_pass(best)
                if new != best:
                    best, progress = new, True
        return best

    def _cut_tail(self, best: bytes) -> bytes:
        lo, hi = 0, len(best)  # smallest prefix that still reproduces, by bisection then a scan
        while lo < hi:
            mid = (lo + hi) // 2
            if self._better(best[:mid], best):
                best = best[:mid]
                hi = len(best)
            else:
                lo = mid + 1
        return best

    def _step_prefix(self, best: bytes) -> bytes:
        """The shortest prefix of whole steps that reproduces with round robin after it: bisection
        in _cut_tail can miss it, since reproducing is not monotonic in the prefix length."""
        for s in dec.steps_of(self.machine, best):
            if self.runs >= self.max_runs:
                break
            if self._better(best[:s.start], best):
                return best[:s.start]
        return best

    def _step_blocks(self, best: bytes) -> bytes:
        """Delete runs of 8, 4 and 2 whole steps (CPUs named absolutely)."""
        for size in (8, 4, 2):
            self.runs += 1
            steps = dec.steps_of(self.machine, best)
            i = len(steps) - size
            while i >= 0 and self.runs < self.max_runs:
                plan = dec.plan_of(steps)
                new = self._better_plan(plan[:i] + plan[i + size:], best)
                if new is not None:
                    best = new
                    self.runs += 1
                    steps = dec.steps_of(self.machine, best)
                    i = min(i, len(steps) - size)
                    continue
                i -= 1
        return best

    def _step_edits(self, best: bytes) -> bytes:
        self.runs += 1
        steps = dec.steps_of(self.machine, best)
        i = len(steps) - 1
        while i >= 0 and self.runs < self.max_runs:
            new = self._edit_step(best, steps, i)
            if new is not None:
                best = new
                self.runs += 1
                steps = dec.steps_of(self.machine, best)
                i = min(i, len(steps)) - 1  # the step now at i may be a new one: look again
                continue
            i -= 1
        return best

    def _edit_step(self, best: bytes, steps: list[dec.Step], i: int) -> bytes | None:
        plan = dec.plan_of(steps)
        step = steps[i]
        candidates: list[dec.Plan] = [plan[:i] + plan[i + 1:]]
        if step.injected:
            target = plan[i][dec.EVENT_TARGET[step.kind]]
            candidates.append(plan[:i] + [{dec.EVENT: 0, dec.CPU: target}] + plan[i + 1:])
        if any(d.what == dec.CPU and d.value for d in step.draws):
            candidates.append(plan[:i] + [{**plan[i], dec.CPU: None}] + plan[i + 1:])
        if i + 1 < len(plan):  # the same decisions in the other order
            candidates.append(plan[:i] + [plan[i + 1], plan[i]] + plan[i + 2:])
        for cand in candidates:
            new = self._better_plan(cand, best)
            if new is not None:
                return new
        raw = best[:step.start] + best[step.end:]
        return raw if self._better(raw, best) else None

    def _explicit_plan(self, best: bytes) -> dec.Plan:
        """Every step of `best`'s run, the ones the defaults played included, CPUs named."""
        self.runs += 2
        return dec.plan_of(dec.split_steps(dec.record_all(self.machine, best)[0]))

    def _explicit_blocks(self, best: bytes) -> bytes:
        """Delete runs of 8, 4, 2 and 1 steps from the explicit run: the step a CPU spent
        idling (a caller loop, a fetch that changes nothing) goes, the others keep their CPUs.
        Costs bytes, since the CPUs after it are no longer round robin's picks."""
        for size in (8, 4, 2, 1):
            plan = self._explicit_plan(best)
            i = len(plan) - size
            while i >= 0 and self.runs < self.max_runs:
                new = self._better_plan(plan[:i] + plan[i + size:], best)
                if new is not None:
                    best = new
                    plan = self._explicit_plan(best)
                    i = min(i, len(plan) - size)
                    continue
                i -= 1
        return best

    def _cpu_blocks(self, best: bytes) -> bytes:
        """Delete runs of 8, 4, 2 and 1 consecutive steps of one CPU from the explicit run.
        A CPU's step does the next thing in its own program, so a detour it took (a caller
        loop, a harmless trap it handled) is a run of its own steps, interleaved with other
        CPUs' steps: deleting those alone lets its later steps happen as they did."""
        for size in (8, 4, 2, 1):
            plan = self._explicit_plan(best)
            for cpu in range(self.machine.ncpus):
                j = len(self._steps_of_cpu(plan, cpu)) - size
                while j >= 0 and self.runs < self.max_runs:
                    mine = self._steps_of_cpu(plan, cpu)
                    gone = set(mine[j:j + size])
                    new = self._better_plan([p for k, p in enumerate(plan) if k not in gone], best)
                    if new is not None:
                        best = new
                        plan = self._explicit_plan(best)
                        j = min(j, len(self._steps_of_cpu(plan, cpu)) - size)
                        continue
                    j -= 1
        return best

    @staticmethod
    def _steps_of_cpu(plan: dec.Plan, cpu: int) -> list[int]:
        return [k for k, step in enumerate(plan) if step.get(dec.CPU) == cpu]

    def _delete_spans(self, best: bytes) -> bytes:
        for size in (8, 4, 2, 1):
            i = 0
            while i < len(best):
                cand = best[:i] + best[i + size:]
                if self._better(cand, best):
                    best = cand
                else:
                    i += 1
        return best

    def _lower_bytes(self, best: bytes) -> bytes:
        for i in range(len(best)):
            for value in (0, best[i] // 2, best[i] - 1):
                if 0 <= value < best[i]:
                    cand = best[:i] + bytes([value]) + best[i + 1:]
                    if self._better(cand, best):
                        best = cand
                        break
        return best


def minimize(machine: Machine, schedule: bytes, max_runs: int = 20000,
             decisions: bool = True, order: str = DEFAULT_ORDER) -> tuple[bytes, Shape, Shape, int]:
    """(minimized schedule, shape before, shape after, runs used) for the finding `schedule`
    reproduces. `decisions=False` keeps to the byte passes (for comparison); `order` is
    "steps" (fewest scheduling steps, then fewest bytes) or "bytes" (shortlex on the bytes)."""
    f = machine.run(schedule).finding
    if f is None:
        raise ValueError("the schedule runs clean: nothing to minimize")
    m = Minimizer(machine, f.signature, max_runs, decisions, order)
    small = m.minimize(schedule)
    return small, shape(machine, schedule), shape(machine, small), m.runs
