"""Minimize a finding's schedule: shrink bytes while the same signature reproduces.

Hypothesis-style passes over the choice bytes, kept in shortlex order (shorter first, then
bytewise smaller), repeated until none makes progress:
* cut the tail (the defaults take over where the bytes end);
* delete spans of 8, 4, 2 and 1 bytes;
* lower each byte to 0 (a plain step, no event, the first option), then to smaller values.
Lowering an event byte to 0 drops an NMI, a foreign trap or a preemption. The result is a pure
function of the input, so minimizing twice gives the same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

from .machine import Machine


@dataclass
class Shape:
    """What a schedule does, for before/after reports."""

    bytes: int
    steps: int
    nmis: int
    preemptions: int
    foreign_traps: int

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def shape(machine: Machine, schedule: bytes) -> Shape:
    r = machine.run(schedule, trace=True)
    return Shape(
        bytes=len(schedule), steps=r.steps,
        nmis=sum("NMI (serializing)" in line for line in r.trace),
        preemptions=sum("preempted at" in line for line in r.trace),
        foreign_traps=sum("(foreign: kprobe)" in line for line in r.trace),
    )


class Minimizer:
    def __init__(self, machine: Machine, signature: str, max_runs: int = 20000):
        self.machine = machine
        self.signature = signature
        self.max_runs = max_runs
        self.runs = 0

    def reproduces(self, schedule: bytes) -> bool:
        self.runs += 1
        f = self.machine.run(schedule).finding
        return f is not None and f.signature == self.signature

    def _better(self, cand: bytes, best: bytes) -> bool:
        return (len(cand), cand) < (len(best), best) and self.runs < self.max_runs and self.reproduces(cand)

    def minimize(self, schedule: bytes) -> bytes:
        if not self.reproduces(schedule):
            raise ValueError("the schedule does not reproduce that signature")
        # the bytes a run never drew change nothing: start from what it used
        best = self.machine.run(schedule).schedule
        if not self.reproduces(best):
            best = schedule
        progress = True
        while progress and self.runs < self.max_runs:
            progress = False
            for candidate_pass in (self._cut_tail, self._delete_spans, self._lower_bytes):
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


def minimize(machine: Machine, schedule: bytes, max_runs: int = 20000) -> tuple[bytes, Shape, Shape, int]:
    """(minimized schedule, shape before, shape after, runs used) for the finding `schedule`
    reproduces."""
    f = machine.run(schedule).finding
    if f is None:
        raise ValueError("the schedule runs clean: nothing to minimize")
    m = Minimizer(machine, f.signature, max_runs)
    small = m.minimize(schedule)
    return small, shape(machine, schedule), shape(machine, small), m.runs
