"""The schedule's vocabulary: every decision a run draws, declared once.

A schedule is one byte string; each decision of a run consumes one byte (`choices.Choices`).
This table says, for each decision: its name (what a `ChoiceSource` is asked), the machine's
default once the bytes run out, the byte that does the same as the default (where bytes must go
on: minimizer, explicit plans), how a byte is decoded, what a non-default answer made happen (the
focused trace notes it), how a mutator redraws it, and the alternatives a systematic search
tries, each with the budget it spends. The machine, `decisions`, the minimizer, the focused
trace and every strategy read it from here, so a new draw added here reaches all of them.

The byte thresholds (an event byte of 200 and up injects an event, a "take ipi" byte of 160 and
up defers the IPI, a "slice" byte of 192 and up runs a few instructions) exist only in this file.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

# ---- the event draw: which kind of step this is ----------------------------------------------


@dataclass(frozen=True)
class EventKind:
    """A range of "event" bytes and what they ask for. `target` is the draw that picks the CPU
    an injected event lands on; `budget` the exhaustive-search bound that pays for injecting it
    (None: systematic search does not inject it, see `why_not_searched`)."""

    name: str
    lo: int
    hi: int
    target: str | None
    budget: str | None
    why_not_searched: str = ""


# The split keeps the default (0) a plain step and gives uniformly random bytes a useful event
# rate (one NMI in 16 steps).
EVENT_KINDS: tuple[EventKind, ...] = (
    EventKind("step", 0, 200, None, None, "the default"),
    EventKind("nmi", 200, 212, "nmi cpu", "nmis"),
    EventKind("irq", 212, 220, "irq cpu", "irqs"),
    EventKind("foreign", 220, 228, "trap cpu", "foreign_traps"),
    EventKind("preempt", 228, 236, "preempt cpu", "preemptions"),
    EventKind("drain", 236, 256, "drain cpu", None,
              "a CPU drains at its own steps (the \"drain\" draw); fences, locked ops and syncs "
              "drain anyway, so single injected drains add no new orders"),
)
KIND = {k.name: k for k in EVENT_KINDS}
EV_NMI, EV_FOREIGN, EV_PREEMPT, EV_DRAIN = (KIND[n].lo for n in ("nmi", "foreign", "preempt", "drain"))
# Representative "event" bytes: the first of each range.
EVENT_BYTE = {k.name: k.lo for k in EVENT_KINDS}
# The byte range [lo, hi) of each injected event kind, in byte order.
EVENT_RANGES = {k.name: (k.lo, k.hi) for k in EVENT_KINDS if k.name != "step"}
EVENT_TARGET = {k.name: k.target for k in EVENT_KINDS if k.target}


def event_kind(byte: int) -> str:
    """What an "event" byte asks for."""
    return KIND_OF_BYTE[byte].name


# byte -> the EventKind it asks for
KIND_OF_BYTE: tuple[EventKind, ...] = tuple(next(k for k in EVENT_KINDS if b < k.hi) for b in range(256))


# Bytes that, read as the "cpu" draw, pick the CPU that ran last again: the runnable CPUs are
# listed round robin from the one after it, so it is last, and these are -1 modulo every
# runnable count that divides 12 (up to 4 CPUs always). Read as an "event" they are plain steps.
STAY_BYTES = tuple(range(11, EV_NMI, 12))

# ---- draws that run a CPU's step ---------------------------------------------------------------
TAKE_IPI_DEFER = 160  # "take ipi": a byte below takes the pending IPI now, from here on defers it
SLICE_SHORT = 192  # "slice": a byte below runs to the next stop, from here on 1.. instructions
RUN_TO_STOP = 1000  # instruction cap of a slice that runs to the next stop
DRAIN_ALL = 255  # "drain": every buffered store reaches memory
REFRESH_ALL = 0xFF  # "refresh": every fetch unit of a stale view is refreshed


def slice_count(byte: int) -> int:
    """Instructions a code slice may run for a "slice" byte."""
    return RUN_TO_STOP if byte < SLICE_SHORT else byte - SLICE_SHORT + 1


def drain_count(byte: int, buffered: int) -> int:
    """Buffered stores that reach memory for a "drain" byte (the draw has buffered + 1 answers)."""
    return buffered if byte == DRAIN_ALL else byte % (buffered + 1)


def takes_ipi(byte: int) -> bool:
    return byte < TAKE_IPI_DEFER


def refreshes(byte: int, unit_index: int) -> bool:
    """Does a "refresh" byte refresh fetch unit `unit_index` of the instruction being fetched?"""
    return bool(byte & (1 << (unit_index & 7)))


def refreshed_units(byte: int, units: int) -> tuple[bool, ...]:
    """`refreshes` for each of `units` fetch units, in order."""
    return tuple(bool(byte & (1 << (u & 7))) for u in range(units))


@dataclass(frozen=True)
class Alt:
    """An answer systematic search tries: the byte, and the budget it spends (None: free)."""

    byte: int
    budget: str | None = None


@dataclass(frozen=True)
class Draw:
    """One decision of a run.

    `default`: the machine's answer once the schedule is used up. `neutral`: the byte that
    answers as the default does. `picks_cpu`: the answer picks one of the draw's `options` (CPU
    indices) modulo their count. `alternatives`: what exhaustive search tries, first the free
    default; `per_option` draws try every option instead (their budget, if any, is what a
    switch costs), and `computed` ones are worked out from the machine's state by the search
    (see `strategies/exhaustive.py`)."""

    name: str
    default: int
    neutral: int
    meaning: str
    picks_cpu: bool = False
    alternatives: tuple[Alt, ...] = ()
    per_option: str | None = None  # the budget a non-default option spends, "" when free
    computed: bool = False
    min_options: dict[int, int] = field(default_factory=dict)  # alternative index -> answers needed

    def note(self, byte: int, n: int) -> str | None:
        """What this answer made happen that the default would not have, for a reader; None
        when it did what the default does."""
        if byte == self.neutral or self.picks_cpu:
            return None
        if self.name == DRAIN.name:
            kept = (n - 1) - byte % n
            return f"{kept} store{'s' if kept > 1 else ''} left buffered" if kept else None
        if self.name == TAKE_IPI.name:
            return None if takes_ipi(byte) else "IPI left pending"
        if self.name in (SLICE.name, REFRESH.name):
            return f"{self.name}={byte}"
        if self.name == DRAIN_PICK.name:
            return "a younger store drains first" if byte % n else None
        if self.name == FETCH_VERSION.name:
            return "an older version is fetched" if byte % n else None
        return None

    def redraw(self, old: int, n: int, rng: random.Random) -> int:
        """Another answer, chosen among the ones that mean something different (a mutator's
        "answer this decision differently")."""
        if self.picks_cpu:
            return (old + 1 + rng.randrange(max(1, n - 1))) % 256 if n > 1 else old
        if self.name == REFRESH.name:  # which fetch units of a stale view are refreshed
            return rng.randrange(256)
        if self.name == DRAIN.name:  # how many buffered stores drain first; DRAIN_ALL is all
            return rng.choice((DRAIN_ALL, rng.randrange(max(1, n))))
        if self.name == TAKE_IPI.name:
            return 0 if not takes_ipi(old) else rng.randrange(TAKE_IPI_DEFER, 256)
        if self.name == SLICE.name:  # to the next stop, or 1..8 instructions
            return 0 if old >= SLICE_SHORT else rng.randrange(SLICE_SHORT, SLICE_SHORT + 8)
        return rng.randrange(256)


EVENT = Draw("event", 0, 0, "a plain step, or an injected event (EVENT_KINDS)",
             computed=True)
CPU = Draw("cpu", -1, 0, "which runnable CPU steps; the default is round robin (the first "
           "runnable CPU after the one that stepped last)", picks_cpu=True,
           per_option="context_switches", computed=True)
NMI_CPU = Draw("nmi cpu", 0, 0, "the CPU an injected NMI lands on", picks_cpu=True, per_option="")
IRQ_CPU = Draw("irq cpu", 0, 0, "the CPU an injected IRQ lands on (one with IRQs on)", picks_cpu=True,
               per_option="")
TRAP_CPU = Draw("trap cpu", 0, 0, "the CPU that hits a foreign breakpoint", picks_cpu=True,
                per_option="")
PREEMPT_CPU = Draw("preempt cpu", 0, 0, "the CPU whose task is preempted", picks_cpu=True,
                   per_option="")
DRAIN_CPU = Draw("drain cpu", 0, 0, "the CPU whose oldest buffered store drains",
                 picks_cpu=True, per_option="")
MIGRATE = Draw("migrate", 0, 0, "whether a task free to migrate stays on its CPU (the first "
               "option, the default) or moves to the idle CPU the answer picks",
               picks_cpu=True, per_option="migrations")
PREEMPT_FOR = Draw("preempt for", 0, 0, "steps a preempted task stays off its CPU (IPIs and "
                   "NMIs are still taken)", alternatives=(Alt(0), Alt(255)))
DRAIN = Draw("drain", DRAIN_ALL, DRAIN_ALL, "how many of the stepping CPU's buffered stores "
             "reach memory first (255: all; else the byte modulo buffered + 1)",
             alternatives=(Alt(DRAIN_ALL), Alt(0, "store_delays"), Alt(1, "store_delays")),
             min_options={2: 3})
TAKE_IPI = Draw("take ipi", 0, 0, f"whether the stepping CPU takes its pending IPI now (a byte "
                f"below {TAKE_IPI_DEFER}) or defers it this step",
                alternatives=(Alt(0), Alt(TAKE_IPI_DEFER, "ipi_defers")))
REFRESH = Draw("refresh", REFRESH_ALL, REFRESH_ALL, "which fetch units of a stale instruction "
               "view are refreshed before it executes (bit i: unit i modulo 8)", computed=True)
DRAIN_PICK = Draw("drain pick", 0, 0, "on a machine whose stores may become visible out of "
                  "order: which of the buffered stores free to drain next does (0: the oldest; "
                  "the answer modulo their count)", per_option="store_reorders")
FETCH_VERSION = Draw("fetch version", 0, 0, "on a machine whose instruction fetch is not coherent "
                     "with data stores: which version of a fetch unit the fetch returns among the "
                     "ones it may still see (0: the newest in memory; the answer modulo their "
                     "count, newest first)", per_option="stale_fetches")
SLICE = Draw("slice", 0, 0, f"how far a CPU's code runs: to the next stop (a byte below "
             f"{SLICE_SHORT}), else byte - {SLICE_SHORT - 1} instructions",
             alternatives=(Alt(0), Alt(SLICE_SHORT, "short_slices")))

DRAWS: dict[str, Draw] = {d.name: d for d in (EVENT, CPU, NMI_CPU, IRQ_CPU, TRAP_CPU, PREEMPT_CPU,
                                              DRAIN_CPU, MIGRATE, PREEMPT_FOR, DRAIN, TAKE_IPI, REFRESH,
                                              DRAIN_PICK, FETCH_VERSION, SLICE)}
# Draws whose answer picks one of `options` (CPU indices): a plan names the CPU itself.
CPU_DRAWS = frozenset(d.name for d in DRAWS.values() if d.picks_cpu)
# The byte that acts as each draw's default where bytes must go on.
NEUTRAL = {d.name: d.neutral for d in DRAWS.values()}

# The budgets of systematic search (exhaustive), each with its default bound, in slot order:
# one per way a run can deviate from the free defaults. `partial_refresh` pays for refreshing
# some fetch units of a stale view but not others (a torn fetch needs one).
BUDGETS: dict[str, int] = {"context_switches": 3, "nmis": 1, "irqs": 0, "foreign_traps": 0,
                           "preemptions": 0, "migrations": 1, "store_delays": 1, "partial_refresh": 1,
                           "ipi_defers": 1, "short_slices": 0, "store_reorders": 1,
                           "stale_fetches": 1}


def _check_budgets() -> None:
    named = {a.budget for d in DRAWS.values() for a in d.alternatives if a.budget}
    named |= {d.per_option for d in DRAWS.values() if d.per_option}
    named |= {k.budget for k in EVENT_KINDS if k.budget}
    named.add("partial_refresh")  # REFRESH's computed alternatives
    if named != set(BUDGETS):
        raise RuntimeError(f"draw table: budgets {sorted(named ^ set(BUDGETS))} are named on one "
                           "side only (a draw's alternatives or BUDGETS)")


_check_budgets()
