"""Exhaustive search: bounded stateless model checking over the choice tree.

Every run replays from scratch, as CHESS and Shuttle's DFS scheduler do: the run's choice source
replays a prefix of an earlier run with one draw answered differently, then takes the first
alternative at every new draw, recording each draw's alternatives and the one taken. After the
run, the other alternatives of every new draw are queued; when the queue is empty, everything
within the bounds has been explored and `next_run()` returns None (the campaign ends with
`exhausted=True`). Every finding's `RunResult.schedule` is the recorded bytes: it replays with
`Machine.run(schedule)` like any other schedule.

Each draw maps to a small set of answers, declared in the draw table (`fuzzer/draws.py`): the
first is free and always there; the others spend a budget (a constructor argument, one per
`draws.BUDGETS`) or are free. Beyond the table's fixed alternatives, three draws are worked out
from the machine's state here:

* event: a plain step; each injectable event kind whose budget lasts and that some CPU can take
  now (`Machine.event_candidates`). Kinds without a budget in the table (single store-buffer
  drains) are not injected; the table says why.
* cpu: CHESS preemption bounding: the CPU stepped last continues while it has protocol work;
  switching away from it then costs one `context_switches`. When it blocked, finished or only
  runs the caller loop (the equivalent of a yield), every runnable CPU is a free pick; the
  default then is the first with protocol work, else round robin. So a run that stops deviating
  finishes the protocol.
* refresh: all fetch units; none (free: the CPU executes the bytes it started fetching); a
  prefix or a suffix of the site's fetch units (`partial_refresh`: a torn fetch needs one).
  Equal outcomes are tried once.

Draws that pick the CPU an injected event lands on try every candidate (free: the event was
paid for). A draw the table does not know stops the search with an error.

Past `max_steps` steps a run takes first answers only. (It keeps answering rather than returning
None: the machine's defaults need not be these first answers.)

Order: "bounded" (default) runs the queued schedules with the fewest budget-spending deviations
first (iterative context bounding, Musuvathi & Qadeer, PLDI 2007): a bug that needs few
deviations shows up early, and a state is first reached with as much budget left as possible,
so later visits are dominated instead of explored again. "dfs" is plain depth-first and keeps
the queue short. Both explore the same states.

Reduction (state caching): at every event draw past the replayed prefix, the source computes a
canonical key of the machine's abstract state (`state_key.py`, over `Machine.state_view()`). It
ends the run (raises `Abandon`, counted as pruned) if that state was already reached with every
remaining budget at least as large, and at least as many steps left before `max_steps`: whatever
can follow has been or is being explored from that visit. This is sound because behaviour only
grows with the budgets: a larger budget adds answers, and the first answer is always there.

The step number reaches the key only as steps left and a preemption's remaining time: it does
reach `Config.max_steps`, whose "hang" finding is a budget artefact, not a verdict. For the same
reason a livelock shows up here as a pruned cycle, not as a finding; lock cycles and stalls are
state properties and are found.
"""

from __future__ import annotations

import heapq

from .. import draws
from ..choices import Abandon
from ..machine import Cpu, Machine, RunResult
from ..ops import RunCode
from .base import Run, Stepwise
from .state_key import Opaque, StateKey, generators_are_readable

BOUNDS = tuple(draws.BUDGETS)  # budget slots, in order
SLOT = {name: i for i, name in enumerate(BOUNDS)}
CS, PARTIAL = SLOT["context_switches"], SLOT["partial_refresh"]
FREE = -1
_EVENT = draws.EVENT.name
DEFAULT_MAX_STEPS = 300


class ExhaustiveStrategy(Stepwise):
    """Bounded exhaustive search (see the module docstring for the bounds and the reduction).

    `stats()`: explored (runs), pruned (runs ended on a state already covered), choice_points
    (draws with more than one answer), max_depth (most draws in one run), states (distinct
    states cached), uncached (state checks skipped because the encoder gave up; 0 normally).
    `done` / `next_run() is None`: every schedule within the bounds has been covered."""

    name = "exhaustive"
    BOUNDS = BOUNDS
    ORDERS = ("bounded", "dfs")

    def __init__(self, seed: int = 0, max_steps: int = DEFAULT_MAX_STEPS, prune: bool = True,
                 order: str = "bounded", verify_replay: bool = False, **options) -> None:
        """`options`: a bound per `draws.BUDGETS` name (its default there); other options
        (meant for other strategies) are ignored. The seed is accepted for the CLI's uniform
        constructor: the search order is fixed."""
        self.budgets = [int(options.get(name, default)) for name, default in draws.BUDGETS.items()]
        if min(self.budgets) < 0:
            raise ValueError("exhaustive bounds must be >= 0")
        if order not in self.ORDERS:
            raise ValueError(f"order must be one of {', '.join(self.ORDERS)}")
        self.max_steps = int(max_steps)
        self.prune = bool(prune)
        self.order = order
        self.verify_replay = bool(verify_replay)
        self.machine: Machine | None = None
        # Untried alternatives: (deviations spent, -sequence, run, draw index, alternative).
        # "bounded" pops the schedules with the fewest budget-spending deviations first
        # (iterative context bounding, Musuvathi & Qadeer PLDI 2007): bugs that need few
        # deviations show up early, and a state is first reached with as much budget left as
        # possible, so later visits are dominated instead of re-explored. "dfs" is plain
        # depth-first (all priorities 0, newest first). The set explored is the same.
        self._work: list[tuple[int, int, _Trail | None, int, int]] = [(0, 0, None, 0, 0)]
        self._seq = 0
        # state key -> budget vectors it was explored with (a Pareto frontier)
        self._seen: dict[bytes, list[tuple[int, ...]]] = {}
        self._regs_ok = False
        self._model_checked = False
        self.explored = 0
        self.pruned = 0
        self.choice_points = 0
        self.max_depth = 0
        self.max_pending = 0
        self.unkeyed = 0

    # ------------------------------------------------------------------ Strategy interface
    def bind(self, machine: Machine) -> None:
        self.machine = machine
        self._regs_ok = _register_abstractable(machine)
        if self.prune and not generators_are_readable():
            raise RuntimeError("exhaustive search: this Python's generator frames cannot be read, so "
                               "states cannot be cached; pass prune=False (exponentially slower)")

    def next_run(self) -> Run | None:
        if not self._work:
            return None
        if self.machine is None:
            raise RuntimeError("bind() the strategy to a machine first")
        spent, _, trail, i, j = heapq.heappop(self._work)
        return Run(b"", _ReplaySource(self, trail, i, j, spent))

    def observe(self, run: Run, result: RunResult) -> None:
        src = run.source
        if not isinstance(src, _ReplaySource):
            return
        self.explored += 1
        if result.abandoned:
            self.pruned += 1
        trail = src.trail
        alts = trail.alts
        self.max_depth = max(self.max_depth, len(alts))
        bounded = self.order == "bounded"
        work = self._work
        # Draws past the replayed prefix are new choice points: queue their other answers.
        # Every new draw took its (free) default, so the deviations before each are `src.spent`.
        for d in range(src.plen, len(alts)):
            a = alts[d]
            if len(a) < 2:
                continue
            self.choice_points += 1
            for j in range(1, len(a)):
                self._seq += 1
                prio = src.spent + (a[j][1] != FREE) if bounded else 0
                heapq.heappush(work, (prio, -self._seq, trail, d, j))
        self.max_pending = max(self.max_pending, len(work))

    def stats(self) -> dict:
        return {"explored": self.explored, "pruned": self.pruned, "choice_points": self.choice_points,
                "max_depth": self.max_depth, "states": len(self._seen), "uncached": self.unkeyed}

    @property
    def done(self) -> bool:
        """Everything within the bounds has been explored."""
        return not self._work

    def bounds(self) -> dict:
        """The bounds this search covers (for reports next to 'all N schedules explored')."""
        return {**dict(zip(self.BOUNDS, self.budgets)), "max_steps": self.max_steps}

    # ------------------------------------------------------------------ state caching
    def _visit(self, key: bytes, budget: tuple[int, ...]) -> bool:
        """Record a state; True if a visit with budgets at least as large already covers it."""
        frontier = self._seen.get(key)
        if frontier is None:
            self._seen[key] = [budget]
            return False
        for old in frontier:
            if all(a >= b for a, b in zip(old, budget)):
                return True
        frontier[:] = [old for old in frontier if not all(b >= a for a, b in zip(old, budget))]
        frontier.append(budget)
        return False


class _Trail:
    """One run's draws: what each was, its alternatives, and the index answered."""

    __slots__ = ("whats", "alts", "chosen")

    def __init__(self) -> None:
        self.whats: list[str] = []
        self.alts: list[list[tuple[int, int]]] = []
        self.chosen = bytearray()


class _ReplaySource:
    """Answers one run's draws: the prefix of an earlier run with draw `i` answered by its
    alternative `j`, then the first alternative everywhere.

    The prefix is replayed from the earlier run's answers (the run is deterministic, so its
    draws are identical), which saves recomputing alternatives; with `verify` they are
    recomputed and compared, as a check of that determinism."""

    __slots__ = ("st", "m", "base", "plen", "last", "spent", "pos", "trail", "left", "frozen", "verify")

    def __init__(self, strategy: ExhaustiveStrategy, base: _Trail | None, i: int, j: int, spent: int):
        self.st = strategy
        self.m = strategy.machine
        self.base = base
        self.plen = i + 1 if base is not None else 0
        self.last = j
        self.spent = spent
        self.pos = 0
        self.trail = _Trail()
        self.left = list(strategy.budgets)
        self.frozen = False
        self.verify = strategy.verify_replay

    def choose(self, what: str, n: int, options: tuple[int, ...] | None) -> int | None:
        pos = self.pos
        if what == _EVENT and not self.frozen and self.m.step > self.st.max_steps:
            # Past the bound: first alternatives only, so what follows does not depend on the
            # budgets left. (Answering None would hand the run to the machine's defaults,
            # which need not be our first alternatives.)
            self.frozen = True
            self.left = [0] * len(self.left)
        if pos < self.plen:
            base = self.base
            alts = base.alts[pos]
            if base.whats[pos] != what or (self.verify and self._alternatives(what, n, options) != alts):
                raise RuntimeError(f"replay diverged at draw {pos} ({what!r}): the run is not "
                                   "deterministic, or the alternatives depend on something unrecorded")
            i = base.chosen[pos] if pos < self.plen - 1 else self.last
        else:
            if what == _EVENT and self.st.prune:
                self._check_state()
            alts = self._alternatives(what, n, options)
            i = 0
        byte, cost = alts[i]
        if cost != FREE:
            self.left[cost] -= 1
        t = self.trail
        t.whats.append(what)
        t.alts.append(alts)
        t.chosen.append(i)
        self.pos = pos + 1
        return byte

    def _alternatives(self, what: str, n: int, options: tuple[int, ...] | None) -> list[tuple[int, int]]:
        """(byte, budget slot it spends or FREE) for each answer worth trying; the first is
        the default."""
        spec = draws.DRAWS.get(what)
        if spec is None:
            # A proof that silently stopped exploring a new kind of decision would be worse
            # than no proof: make the missing mapping impossible to overlook.
            raise ValueError(f"exhaustive search does not know the draw {what!r}; declare it in "
                             "fuzzer/draws.py")
        if spec is draws.EVENT:
            alts = self._event_alts()
        elif spec is draws.CPU:
            alts = self._cpu_alts(options)
        elif spec is draws.REFRESH:
            alts = self._refresh_alts()
        elif spec.per_option == "":
            alts = [(i, FREE) for i in range(n)]
        elif spec.per_option:  # the first option is the free default, the others spend the budget
            slot = SLOT[spec.per_option]
            alts = [(0, FREE)] + ([(i, slot) for i in range(1, n)] if self.left[slot] else [])
        else:
            left = self.left
            alts = [(a.byte, FREE if a.budget is None else SLOT[a.budget])
                    for i, a in enumerate(spec.alternatives)
                    if (a.budget is None or left[SLOT[a.budget]]) and n >= spec.min_options.get(i, 0)]
        return alts[:1] if self.frozen else alts

    # ---- alternatives
    def _event_alts(self) -> list[tuple[int, int]]:
        alts = [(draws.EVENT.default, FREE)]
        left = self.left
        for kind in draws.EVENT_KINDS:
            if kind.budget and left[SLOT[kind.budget]] and self.m.event_candidates(kind.name):
                alts.append((kind.lo, SLOT[kind.budget]))
        return alts

    def _cpu_alts(self, options: tuple[int, ...]) -> list[tuple[int, int]]:
        # `options` is in round-robin order after the CPU stepped last.
        m = self.m
        cpus = m.cpus
        last = m.last_cpu
        busy = [_busy(cpus[idx]) for idx in options]
        if last in options and busy[options.index(last)]:
            # CHESS: the running CPU continues; switching away from it is a preemption
            default = options.index(last)
            costs = [CS] * len(options)
        else:
            # The last CPU blocked, finished its work or only runs the caller loop (the
            # equivalent of a yield). Protocol work goes first, else round robin: a run that
            # stops deviating finishes the protocol. Picking another CPU with protocol work
            # is free (a non-preemptive switch); running caller-loop code while protocol work
            # waits costs a switch, else idle CPUs alone would multiply the schedules.
            default = next((i for i, b in enumerate(busy) if b), 0)
            costs = [FREE if b or not busy[default] else CS for b in busy]
        alts = [(default, FREE)]
        left = self.left[CS]
        alts.extend((i, cost) for i, cost in enumerate(costs) if i != default and (cost == FREE or left))
        return alts

    def _refresh_alts(self) -> list[tuple[int, int]]:
        m = self.m
        cpu = m.cpus[m.last_cpu]
        site = m.site_containing(cpu.frames[-1].pc)
        view = bytes(cpu.views[site.name])
        fresh = m.memory.text_as_seen(cpu, site)
        alts = [(draws.REFRESH_ALL, FREE), (0, FREE)]
        if not self.left[PARTIAL]:
            return alts
        unit = m.arch.fetch_unit
        units = (site.size + unit - 1) // unit
        seen = {fresh, view}
        for j in range(1, units):
            for mask in (sum(1 << (u & 7) for u in range(j)), sum(1 << (u & 7) for u in range(j, units))):
                out = m.views.refreshed(view, fresh, mask)
                if out not in seen:
                    seen.add(out)
                    alts.append((mask, PARTIAL))
        return alts

    # ---- pruning
    def _check_state(self) -> None:
        st = self.st
        m = self.m
        if not st._model_checked:
            unknown = m.unclassified_state()  # on a live machine: its per-run state exists now
            if unknown:
                raise RuntimeError(
                    f"exhaustive search: the machine has state the state key does not classify: "
                    f"{', '.join(unknown)}; add it to its owner's state() or NOT_STATE (pruning on "
                    "unknown state would be unsound)")
            st._model_checked = True
        try:
            key = StateKey(m, st._regs_ok).key()
        except Opaque:
            st.unkeyed += 1
            return
        if st._visit(key, (*self.left, max(0, st.max_steps - m.step))):
            raise Abandon()


def _busy(c: Cpu) -> bool:
    """Has protocol work: a task op, a handler, a pending IPI, stop_machine or a preemption.
    A CPU that only runs the caller loop is not busy."""
    top = c.frames[-1]
    return (type(top.op) is not RunCode or top.kind != "thread" or bool(c.ipis)
            or c.stop_req is not None or c.preempted)


def _register_abstractable(machine: Machine) -> bool:
    """Does the architecture say that, in this image and these site versions, only SP, the IRQ
    flag, the stack and its `state_regs` influence what the code does next?"""
    if machine.image.programs:  # a program CPU keys every register a program can use
        return bool(machine.arch.program_regs)
    blobs = [machine.image.text] + [code for _, code in machine.image.far] + [s.new for s in machine.sites.values()]
    return machine.arch.register_abstractable(blobs)
