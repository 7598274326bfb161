"""A decision-level view of a schedule.

A schedule is a flat byte string, one byte per draw, so the byte at position k means something
only given every byte before it: deleting one byte shifts the meaning of all later ones. This
module recovers the structure the machine imposes on the bytes, and rebuilds byte strings from
edited structure, so shrinking and mutation can work on whole decisions.

* `record(machine, schedule)` replays a schedule through a logging `ChoiceSource` and returns
  each draw (position, what, n, options, value). The bytes mean exactly what they mean in a
  plain replay: the source answers with the given bytes and, once they run out, with None
  ("defaults from here on"), as `Choices` does itself.
* `split_steps(draws)` groups the draws into steps: every scheduler iteration starts with an
  "event" draw, then either the injected event's own draws (which CPU takes the NMI, ...) or
  the CPU choice and what that CPU's step draws (drain, take ipi, refresh, slice).
* A `Plan` is the steps in absolute terms: a CPU is named by its index, not by its position in
  the list of runnable CPUs, so deleting or moving a decision keeps every other decision's
  meaning. `PlanSource` replays a plan (a wanted CPU that cannot be chosen, or a draw the plan
  has no answer for, takes the round-robin or default answer) and `encode(machine, plan)`
  returns the bytes that replay it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from . import draws
from .draws import CPU_DRAWS, EVENT_BYTE, EVENT_RANGES, EVENT_TARGET, NEUTRAL, STAY_BYTES, event_kind
from .machine import Machine, RunResult

EVENT, CPU, PREEMPT_FOR = draws.EVENT.name, draws.CPU.name, draws.PREEMPT_FOR.name

__all__ = ["CPU_DRAWS", "EVENT_BYTE", "EVENT_RANGES", "EVENT_TARGET", "NEUTRAL", "STAY_BYTES", "Answer",
           "Plan", "PlanSource", "Recorder", "Step", "describe", "encode", "event_kind", "nontrivial",
           "plan_of", "record", "record_all", "split_steps", "steps_of", "trim_neutral"]


@dataclass(frozen=True)
class Answer:
    """One draw of a recorded run: where its byte is, what was asked, and the byte."""

    pos: int  # index of the byte in the schedule
    what: str
    n: int
    options: tuple[int, ...] | None
    value: int  # the byte

    @property
    def cpu(self) -> int | None:
        """The CPU index this draw picked, for a CPU draw."""
        if self.what in CPU_DRAWS and self.options:
            return self.options[self.value % len(self.options)]
        return None


class Recorder:
    """A ChoiceSource that answers from `data` and logs every draw it answers."""

    def __init__(self, data: bytes) -> None:
        self.data = bytes(data)
        self.draws: list[Answer] = []

    def choose(self, what: str, n: int, options: tuple[int, ...] | None) -> int | None:
        pos = len(self.draws)
        if pos >= len(self.data):
            return None
        v = self.data[pos]
        self.draws.append(Answer(pos, what, n, options, v))
        return v


def record(machine: Machine, schedule: bytes, **run_kw) -> tuple[list[Answer], RunResult]:
    """Every draw a replay of `schedule` answers from its bytes, and the run's result (the same
    run as `machine.run(schedule)`)."""
    rec = Recorder(schedule)
    result = machine.run(b"", source=rec, **run_kw)
    return rec.draws, result


class _ExplicitRecorder(Recorder):
    """A Recorder that, once `data` is used up, answers each draw with its default byte until
    `steps` steps have been drawn: the defaults the machine would have taken, written out."""

    def __init__(self, data: bytes, steps: int) -> None:
        super().__init__(data)
        self.steps_left = steps

    def choose(self, what: str, n: int, options: tuple[int, ...] | None) -> int | None:
        if what == EVENT:
            self.steps_left -= 1
        pos = len(self.draws)
        if pos < len(self.data):
            v = self.data[pos]
        elif self.steps_left >= 0:
            v = NEUTRAL.get(what, 0)
        else:
            return None
        self.draws.append(Answer(pos, what, n, options, v))
        return v


def record_all(machine: Machine, schedule: bytes) -> tuple[list[Answer], RunResult]:
    """Every draw of `schedule`'s run, those its bytes answer and those the defaults answer
    after them (up to the run's last step), and the run's result. Replaying the bytes of these
    draws gives the same run, except that the fair-scheduling hang clock starts later."""
    steps = machine.run(schedule).steps
    rec = _ExplicitRecorder(schedule, steps)
    result = machine.run(b"", source=rec)
    return rec.draws, result


@dataclass(frozen=True)
class Step:
    """One scheduler iteration's draws. `answers` maps each draw to its answer in absolute
    terms: a CPU index for CPU draws, the byte otherwise."""

    start: int  # position of its first byte
    draws: tuple[Answer, ...]

    @property
    def end(self) -> int:
        return self.start + len(self.draws)

    @property
    def kind(self) -> str:
        return event_kind(self.draws[0].value)

    @property
    def injected(self) -> bool:
        """An event that took effect (it drew its target); otherwise the step ran a CPU."""
        return self.kind != "step" and any(d.what == EVENT_TARGET[self.kind] for d in self.draws)

    def answers(self) -> dict[str, int]:
        out = {}
        for d in self.draws:
            c = d.cpu
            out[d.what] = c if c is not None else d.value
        return out


def split_steps(draws: Iterable[Answer]) -> list[Step]:
    steps: list[Step] = []
    cur: list[Answer] = []
    for d in draws:
        if d.what == EVENT and cur:
            steps.append(Step(cur[0].pos, tuple(cur)))
            cur = []
        cur.append(d)
    if cur:
        steps.append(Step(cur[0].pos, tuple(cur)))
    return steps


def steps_of(machine: Machine, schedule: bytes) -> list[Step]:
    return split_steps(record(machine, schedule)[0])


# A plan: one dict per step, draw name -> answer (a CPU index for CPU draws; None there means
# "the round-robin / first option"). A missing draw takes its neutral byte.
Plan = list[dict[str, int | None]]


def plan_of(steps: Iterable[Step]) -> Plan:
    return [s.answers() for s in steps]


class PlanSource:
    """Replays a plan step by step; once the plan is used up, defaults from there on."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.i = -1
        self.cur: dict[str, int | None] = {}
        self.answered: list[tuple[str, int]] = []  # (what, byte) per draw, for trimming

    def choose(self, what: str, n: int, options: tuple[int, ...] | None) -> int | None:
        v = self._answer(what, options)
        if v is not None:
            self.answered.append((what, v))
        return v

    def _answer(self, what: str, options: tuple[int, ...] | None) -> int | None:
        if what == EVENT:
            self.i += 1
            if self.i >= len(self.plan):
                return None
            self.cur = self.plan[self.i]
        v = self.cur.get(what)
        if v is None:
            return NEUTRAL.get(what, 0)
        if what in CPU_DRAWS:
            # an absolute CPU: its position among today's options, or round robin if it has none
            return options.index(v) if options and v in options else 0
        return v


def _neutral_tail(answers: list[tuple[str, int]]) -> int:
    """How many answers remain once trailing ones that equal their draw's default are dropped
    ("cpu" 0 is the round-robin choice, "drain" 255 drains everything, and so on)."""
    end = len(answers)
    while end and answers[end - 1][1] == NEUTRAL.get(answers[end - 1][0], -1):
        end -= 1
    return end


def trim_neutral(machine: Machine, schedule: bytes) -> bytes:
    """`schedule` without its trailing default-valued bytes (the defaults take over where bytes
    end, so the run is the same, except that the fair-scheduling hang clock starts earlier)."""
    draws = record(machine, schedule)[0]
    return schedule[:_neutral_tail([(d.what, d.value) for d in draws])]


def encode(machine: Machine, plan: Plan, **run_kw) -> tuple[bytes, RunResult]:
    """The bytes that replay `plan` (its default-valued tail trimmed), and the plan's run."""
    src = PlanSource(plan)
    r = machine.run(b"", source=src, **run_kw)
    return r.schedule[:_neutral_tail(src.answered)], r


def describe(steps: Iterable[Step]) -> list[str]:
    """One readable line per step: "12 nmi cpu2", "13 step cpu0 slice=3", ..."""
    lines = []
    for i, s in enumerate(steps):
        a = s.answers()
        kind = s.kind
        if kind != "step" and CPU not in a:
            # injected, or the bytes ended before its target was drawn (default target)
            target = a.get(EVENT_TARGET[kind])
            text = kind + (f" cpu{target}" if target is not None else " (default target)")
            if kind == "preempt" and PREEMPT_FOR in a:
                text += f" for {a[PREEMPT_FOR]}"
        else:
            text = f"step cpu{a[CPU]}" if CPU in a else "step"
            extra = [f"{k}={v}" for k, v in a.items() if k not in (EVENT, CPU)
                     and v != NEUTRAL.get(k)]
            if extra:
                text += " " + " ".join(extra)
        lines.append(f"{i:4d} @{s.start:<4d} {text}")
    return lines


def nontrivial(machine: Machine, schedule: bytes) -> int:
    """Decisions a reader must follow: steps whose answers differ from what round robin and
    the defaults would have done at that point."""
    count = 0
    for s in steps_of(machine, schedule):
        if any(d.value != NEUTRAL.get(d.what, -1) for d in s.draws):
            count += 1
    return count
