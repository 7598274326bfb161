"""Exhaustive search: bounded stateless model checking over the choice tree.

Every run replays from scratch, as CHESS and Shuttle's DFS scheduler do: the run's choice source
replays a prefix of an earlier run with one draw answered differently, then takes the first
alternative at every new draw, recording each draw's alternatives and the one taken. After the
run, the other alternatives of every new draw are queued; when the queue is empty, everything
within the bounds has been explored and `next_run()` returns None (the campaign ends with
`exhausted=True`). Every finding's `RunResult.schedule` is the recorded bytes: it replays with
`Machine.run(schedule)` like any other schedule.

Each draw maps to a small set of answers. The first is free and always there; the others spend
a budget (a constructor argument) or are free where noted:

===================  ========================================================================
draw                 answers (first = default)
===================  ========================================================================
event                plain step; an NMI (`nmis`), a foreign int3 (`foreign_traps`), a
                     preemption (`preemptions`), each while its budget lasts and some CPU can
                     take it. Single store-buffer drains are not injected: a CPU drains at its
                     own steps (see "drain"); fences, locked ops and syncs drain anyway.
cpu                  CHESS preemption bounding: the CPU stepped last continues while it has
                     protocol work; switching away from it then costs one `context_switches`.
                     When it blocked, finished or only runs the caller loop (the equivalent of
                     a yield), every runnable CPU is a free pick; the default then is the
                     first with protocol work, else round robin. So a run that stops
                     deviating finishes the protocol.
nmi/trap/preempt cpu every candidate CPU (free: the event was paid for)
preempt for          0 (back as soon as it is scheduled) or 255 steps (free)
drain                all (default); none, or one entry (`store_delays`): a store stays
                     buffered past the CPU's next op (x86-TSO store->load reordering)
take ipi             take it now; defer it this step (`ipi_defers`)
refresh              all fetch units; none (free: the CPU executes the bytes it started
                     fetching); a prefix or a suffix of the site's fetch units
                     (`partial_refresh`: a torn fetch needs one). Equal outcomes are tried once.
slice                run to the next patch site; one instruction (`short_slices`)
===================  ========================================================================

Past `max_steps` steps a run takes first answers only. (It keeps answering rather than returning
None: the machine's defaults need not be these first answers.)

Order: "bounded" (default) runs the queued schedules with the fewest budget-spending deviations
first (iterative context bounding, Musuvathi & Qadeer, PLDI 2007): a bug that needs few
deviations shows up early, and a state is first reached with as much budget left as possible,
so later visits are dominated instead of explored again. "dfs" is plain depth-first and keeps
the queue short. Both explore the same states.

Reduction (state caching): at every event draw past the replayed prefix, the source computes a
canonical key of the machine's abstract state. It ends the run (raises `Abandon`, counted as
pruned) if that state was already reached with every remaining budget at least as large, and at
least as many steps left before `max_steps`: whatever can follow has been or is being explored
from that visit. This is sound because behaviour only grows with the budgets: a larger budget
adds answers, and the first answer is always there. The key covers everything that decides the
future of a run: shared memory, freed variables, locks, site truth bytes and written versions,
per-CPU views, stale sets, store buffers, pending IPIs, NMI/preemption/stop_machine state, the
CPU stepped last (the scheduler and the switch cost depend on it), completion and epilogue, and
per frame its kind, flags, op (with its fields) and the *exact state of its coroutine*: code
position (`f_lasti`) plus every slot of the generator's frame (bound locals, closure cells and
the value stack: for-loop iterators, the sub-generator of a `yield from`), read through
`gc.get_referents`, which walks a frame as the collector does. That is the coroutine's state
itself, not a history that stands in for it, so the engine needs no change to record the
values sent. Objects are numbered in first-visit order, so sharing is part of the key (the same
SyncCores op pending on two CPUs, a lock owner that is a frame). A value the encoder does not
know leaves that state uncached (sound, only slower; counted in `uncached`).

Registers: a code frame's future depends on its PC (kept in `Frame.pc`), the stack pointer, the
IRQ flag and the stack above the stack pointer (return addresses), if the generated image reads
no other register state (its hit counters are write-only, nothing reads arithmetic flags).
`bind()` asks the architecture model to check that claim on the image and the sites' versions
(`Arch.register_abstractable`); where it cannot, states with code in flight are not cached.

Left out of the key on purpose: `Machine.progress` and `Machine.writer` (only coverage features
and traces read them, and this strategy runs without coverage); `Cpu.stop` (reset before every
use); the absolute step number (kept only as steps left and a preemption's remaining time). The
step number does reach `Config.max_steps`, whose "hang" finding is a budget artefact, not a
verdict. For the same reason a livelock shows up here as a pruned cycle, not as a finding;
lock cycles and stalls are state properties and are found. A guard fails loudly if the machine
grows state this key does not classify.
"""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import heapq
import marshal
import types
from collections import deque

from ..choices import Abandon
from ..machine import EV_FOREIGN, EV_NMI, EV_PREEMPT, Cpu, Frame, Lock, Machine, RunResult, SiteState
from ..ops import NotMine, RunCode
from ..protocol import K, Protocol
from .base import Run

# budget slots, in the order of `ExhaustiveStrategy.BOUNDS`
CS, NMI, TRAP, PREEMPT, DELAY, PARTIAL, DEFER, SHORT = range(8)
FREE = -1

DEFAULT_MAX_STEPS = 300
_DRAIN_ALL, _TAKE_IPI_NOW, _DEFER_IPI, _REFRESH_ALL = 255, 0, 160, 0xFF
_SLICE_TO_SITE, _SLICE_ONE = 0, 192
_PREEMPT_SHORT, _PREEMPT_LONG = 0, 255


class _Opaque(Exception):
    """The state holds something the encoder cannot canonicalize: do not cache it."""


class ExhaustiveStrategy:
    """Bounded exhaustive search (see the module docstring for the bounds and the reduction).

    `stats()`: explored (runs), pruned (runs ended on a state already covered), choice_points
    (draws with more than one answer), max_depth (most draws in one run), states (distinct
    states cached), uncached (state checks skipped because the encoder gave up; 0 normally).
    `done` / `next_run() is None`: every schedule within the bounds has been covered."""

    name = "exhaustive"
    wants_coverage = False
    BOUNDS = ("context_switches", "nmis", "foreign_traps", "preemptions", "store_delays",
              "partial_refresh", "ipi_defers", "short_slices")
    ORDERS = ("bounded", "dfs")

    def __init__(self, seed: int = 0, context_switches: int = 3, nmis: int = 1, foreign_traps: int = 0,
                 preemptions: int = 0, store_delays: int = 1, partial_refresh: int | bool = 1,
                 ipi_defers: int = 1, short_slices: int = 0, max_steps: int = DEFAULT_MAX_STEPS,
                 prune: bool = True, order: str = "bounded", verify_replay: bool = False,
                 **_ignored) -> None:
        # The seed is accepted for the CLI's uniform constructor: the search order is fixed.
        self.budgets = [int(context_switches), int(nmis), int(foreign_traps), int(preemptions),
                        int(store_delays), int(partial_refresh), int(ipi_defers), int(short_slices)]
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
        self._regs_ok = machine.arch.register_abstractable(
            [machine.image.text] + [s.new for s in machine.sites.values()])
        if self.prune and not _generators_are_readable():
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
        if what == "event" and not self.frozen and self.m.step > self.st.max_steps:
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
            if what == "event" and self.st.prune:
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
        """(byte, budget it spends) for each answer worth trying; the first is the default."""
        left = self.left
        if what == "event":
            alts = self._event_alts()
        elif what == "cpu":
            alts = self._cpu_alts(options)
        elif what == "drain":
            alts = [(_DRAIN_ALL, FREE)]
            if left[DELAY]:
                alts.append((0, DELAY))
                if n > 2:
                    alts.append((1, DELAY))
        elif what == "take ipi":
            alts = [(_TAKE_IPI_NOW, FREE)]
            if left[DEFER]:
                alts.append((_DEFER_IPI, DEFER))
        elif what == "refresh":
            alts = self._refresh_alts()
        elif what == "slice":
            alts = [(_SLICE_TO_SITE, FREE)]
            if left[SHORT]:
                alts.append((_SLICE_ONE, SHORT))
        elif what in ("nmi cpu", "trap cpu", "preempt cpu", "drain cpu"):
            alts = [(i, FREE) for i in range(n)]
        elif what == "preempt for":
            alts = [(_PREEMPT_SHORT, FREE), (_PREEMPT_LONG, FREE)]
        else:
            # A proof that silently stopped exploring a new kind of decision would be worse
            # than no proof: make the missing mapping impossible to overlook.
            raise ValueError(f"exhaustive search does not know the draw {what!r}; map it in "
                             "fuzzer/strategies/exhaustive.py")
        return alts[:1] if self.frozen else alts

    # ---- alternatives
    def _event_alts(self) -> list[tuple[int, int]]:
        alts = [(0, FREE)]
        left = self.left
        cpus = self.m.cpus
        if left[NMI] and any(c.online and not c.in_nmi for c in cpus):
            alts.append((EV_NMI, NMI))
        if left[TRAP] and any(c.online and c.frames[-1].code_active and not c.preempted for c in cpus):
            alts.append((EV_FOREIGN, TRAP))
        if left[PREEMPT] and any(c.online and self.m._preemptible(c) for c in cpus):
            alts.append((EV_PREEMPT, PREEMPT))
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
        pc = cpu.frames[-1].pc
        site = next(s for lo, hi, s in m._site_ranges if lo <= pc < hi)
        view = bytes(cpu.views[site.name])
        fresh = m._text_as_seen(cpu, site)
        alts = [(_REFRESH_ALL, FREE), (0, FREE)]
        if not self.left[PARTIAL]:
            return alts
        unit = m.arch.fetch_unit
        units = (site.size + unit - 1) // unit
        seen = {fresh, view}
        for j in range(1, units):
            for mask in (sum(1 << (u & 7) for u in range(j)), sum(1 << (u & 7) for u in range(j, units))):
                out = _refreshed(view, fresh, mask, unit)
                if out not in seen:
                    seen.add(out)
                    alts.append((mask, PARTIAL))
        return alts

    # ---- pruning
    def _check_state(self) -> None:
        st = self.st
        m = self.m
        if not st._model_checked:
            _check_model(m)  # on a live machine: its per-run attributes exist only now
            st._model_checked = True
        try:
            key = _StateKey(m, st._regs_ok).key()
        except _Opaque:
            st.unkeyed += 1
            return
        if st._visit(key, (*self.left, max(0, st.max_steps - m.step))):
            raise Abandon()


# Every piece of machine state, classified: in the key, or why it cannot change what follows.
# `_check_model` compares this with the live objects, so new engine state cannot slip by.
_MODEL = {
    "Machine": ({"last_cpu", "completed", "epilogue", "tasks_left", "mem", "freed", "sites", "proto",
                 "cpus", "locks", "step"},
                # configuration and the generated image: fixed for the machine's lifetime
                {"config", "protocol_cls", "variant", "arch", "stop_machine_serializes", "image",
                 "site_by_addr", "_site_ranges", "end_pcs", "ncpus", "_sym_sorted", "_fresh_memo",
                 # this run's bookkeeping: the choice source itself; coverage and trace only;
                 # None/False until the run ends; counted only once a schedule runs out
                 "ch", "cov", "cov_at", "near", "progress", "writer", "trace", "tracing", "finding",
                 "in_aftermath", "fair_steps",
                 # "a lock op was yielded": it matters only while one is on a CPU's stack, and
                 # then it is True in every state
                 "lock_ops"}),
    "Cpu": ({"online", "in_nmi", "preempted", "preempted_until", "skip", "views", "stale", "sb", "ipis",
             "stop_req", "frames", "code_frame", "hw"},
            # identity; `stop` is reset before each slice reads it; `plain` is derived from
            # online, ipis, stop_req and preempted
            {"idx", "k", "stop", "plain"}),
    "Frame": ({"kind", "gen", "op", "irqs_off", "pc", "code_active", "saved_ctx", "poke_pos", "task",
               "at_site", "tags"}, {"k"}),
    "SiteState": ({"truth", "intended"}, {"name", "addr", "size", "end", "old", "new", "func", "_ok"}),
    "Lock": ({"name", "owner", "readers", "waiting_writers"}, set()),
}


def _check_model(machine: Machine) -> None:
    live = {"Machine": set(vars(machine)), "Cpu": set(Cpu.__slots__),
            "Frame": {f.name for f in dataclasses.fields(Frame)},
            "SiteState": set(SiteState.__slots__), "Lock": set(Lock.__slots__)}
    for name, attrs in live.items():
        keyed, ignored = _MODEL[name]
        unknown = attrs - keyed - ignored
        if unknown:
            raise RuntimeError(
                f"exhaustive search: {name} has state the state key does not classify: "
                f"{', '.join(sorted(unknown))}; add it to the key or to the ignored list in "
                "fuzzer/strategies/exhaustive.py (pruning on unknown state would be unsound)")


def _generators_are_readable() -> bool:
    """Does `_StateKey.gen` see a suspended generator's locals and value stack on this Python?"""

    def inner():
        yield 1

    def outer(a):
        for _ in ["p", "q"]:
            yield from inner()

    g = outer(7)
    next(g)
    try:
        enc = repr(_StateKey(None, False).gen(g))
    except _Opaque:
        return False
    return "7" in enc and "_iterator" in enc and "inner" in enc


def _busy(c: Cpu) -> bool:
    """Has protocol work: a task op, a handler, a pending IPI, stop_machine or a preemption.
    A CPU that only runs the caller loop is not busy."""
    top = c.frames[-1]
    return (type(top.op) is not RunCode or top.kind != "thread" or bool(c.ipis)
            or c.stop_req is not None or c.preempted)


def _refreshed(view: bytes, fresh: bytes, mask: int, unit: int) -> bytes:
    """The view `Machine._refresh_units` would leave for `mask`."""
    out = bytearray(view)
    for i in range(0, len(view), unit):
        if mask & (1 << ((i // unit) & 7)):
            out[i:i + unit] = fresh[i:i + unit]
    return bytes(out)


# ====================================================================== canonical state keys
_PRIMITIVE = (int, str, bytes, bool, float, type(None))
_UNSET = object()  # an empty __slots__ entry, distinct from None
# id -> (name, code): holding the code object keeps its id from being reused by another
_code_names: dict[int, tuple[str, types.CodeType]] = {}
_type_slots: dict[type, tuple[str, ...]] = {}


def _code_name(code: types.CodeType) -> str:
    hit = _code_names.get(id(code))
    if hit is None:
        hit = _code_names[id(code)] = (f"{code.co_filename}:{code.co_firstlineno}:{code.co_qualname}", code)
    return hit[0]


def _slots_of(t: type) -> tuple[str, ...]:
    slots = _type_slots.get(t)
    if slots is None:
        names = []
        for klass in reversed(t.__mro__):
            own = getattr(klass, "__slots__", ())
            names.extend([own] if isinstance(own, str) else own)
        slots = _type_slots[t] = tuple(n for n in names if n not in ("__dict__", "__weakref__"))
    return slots


class _StateKey:
    """One canonical encoding of a machine state (see the module docstring for what is in it)."""

    __slots__ = ("m", "regs_ok", "memo")

    def __init__(self, machine: Machine, regs_ok: bool):
        self.m = machine
        self.regs_ok = regs_ok
        self.memo: dict[int, tuple[int, object]] = {}

    def key(self) -> bytes:
        m = self.m
        parts = [
            m.last_cpu, m.completed, m.epilogue, m.tasks_left,
            tuple((k, self.val(v)) for k, v in sorted(m.mem.items())),
            tuple(sorted(m.freed)),
            tuple((bytes(s.truth), tuple(sorted(s.intended))) for s in m.sites.values()),
            self.val(vars(m.proto)),
        ]
        parts.extend(self.cpu(c) for c in m.cpus)
        # locks last: their owners and waiters are frames already numbered above
        parts.append(tuple(self.lock(lk) for name, lk in sorted(m.locks.items())
                           if lk.owner is not None or lk.readers or lk.waiting_writers))
        return hashlib.blake2b(marshal.dumps(tuple(parts), 2), digest_size=16).digest()

    def cpu(self, c: Cpu) -> tuple:
        m = self.m
        regs = None
        if c.code_frame is not None:
            regs = self.registers(c, None)
        return (
            c.online, c.in_nmi, c.preempted,
            max(0, c.preempted_until - m.step) if c.preempted else 0,
            c.skip,
            tuple(bytes(v) for v in c.views.values()),
            tuple(sorted(s.name for s in c.stale)),
            tuple(self.val(e) for e in c.sb),
            tuple(self.val(op) for op in c.ipis),
            self.val(c.stop_req),
            tuple(self.frame(f, c) for f in c.frames),
            next((i for i, f in enumerate(c.frames) if f is c.code_frame), -1),
            regs,
        )

    def frame(self, f: Frame, c: Cpu) -> tuple:
        ref = self._ref(f)
        if ref is not None:
            return ref
        saved = None
        if f.saved_ctx is not None:
            saved = self.registers(c, f.saved_ctx)
        return ("F", len(self.memo) - 1, f.kind, f.task, f.irqs_off, f.code_active,
                f.pc if f.code_active else 0, f.poke_pos,
                f.at_site.name if f.at_site is not None else None,
                tuple((k, self.val(v)) for k, v in sorted(f.tags.items())),
                self.val(f.op), self.gen(f.gen), saved)

    def lock(self, lk: Lock) -> tuple:
        return (lk.name, self.val(lk.owner), tuple(self.val(f) for f in lk.readers),
                tuple(self.val(f) for f in lk.waiting_writers))

    def registers(self, c: Cpu, ctx) -> tuple:
        """The stack pointer, the IRQ flag and the live stack: all the generated image's code
        depends on."""
        if not self.regs_ok:
            raise _Opaque("registers of an image not checked for abstraction")
        regs = c.hw.abstract_registers(ctx)
        if regs is None:
            raise _Opaque("stack pointer outside the known stacks")
        return regs

    def _ref(self, obj) -> tuple | None:
        """('@', n) if `obj` was encoded before; else number it and return None. The memo keeps
        `obj` alive: an id reused by a temporary would otherwise alias two objects."""
        hit = self.memo.get(id(obj))
        if hit is not None:
            return ("@", hit[0])
        self.memo[id(obj)] = (len(self.memo), obj)
        return None

    def gen(self, g) -> tuple:
        """A suspended coroutine's exact state: its code position and every slot of its frame
        (bound locals, closure cells, and the value stack: for-loop iterators, the generator of
        a `yield from`), read with gc.get_referents, which walks the frame as the collector does."""
        if type(g) is not types.GeneratorType:
            raise _Opaque(f"coroutine of type {type(g).__name__}")
        ref = self._ref(g)
        if ref is not None:
            return ref
        fr = g.gi_frame
        if fr is None:
            return ("g", _code_name(g.gi_code), "done")
        # Unbound locals are NULL slots, which the walk skips: the bound names pin the layout.
        bound = tuple(sorted(fr.f_locals))
        items = gc.get_referents(g)
        code = g.gi_code
        # the walk yields code, name, qualname, frame object, [locals dict], function, code,
        # then the frame's slots
        for i in range(len(items) - 1):
            x = items[i]
            if type(x) is types.FunctionType and x.__code__ is code and items[i + 1] is code:
                slots = items[i + 2:]
                break
        else:
            raise _Opaque("unexpected generator layout")
        return ("g", _code_name(code), fr.f_lasti, bound, tuple(self.val(x) for x in slots))

    def val(self, v) -> object:
        """Canonical, marshal-able encoding of a value held in machine or coroutine state.
        Primitives stand for themselves; everything else is a tuple starting with a tag."""
        t = type(v)
        if t in _PRIMITIVE:
            return v
        if t is tuple:
            return ("t", *(self.val(x) for x in v))
        if t is bytearray:
            return ("ba", bytes(v))
        if t is SiteState:
            return ("S", v.name)
        if t is K:
            return ("K", v.cpu)
        if t is Cpu:
            return ("C", v.idx)
        if isinstance(v, Machine):
            return ("M",)
        if isinstance(v, Protocol):
            return ("P",)  # its attributes are part of the key once, at the top
        if t is NotMine:
            return ("NOT_MINE",)
        if v is _UNSET:
            return ("unset",)
        if t is types.GeneratorType:
            return self.gen(v)
        if t is range:
            return ("range", v.start, v.stop, v.step)
        if t is frozenset:
            return ("fs", *sorted((self.val(x) for x in v), key=_order))
        if t is Frame:
            # usually numbered on its CPU's stack already; else encoded here in full
            return self.frame(v, self.m.cpus[v.k.cpu])
        if t is types.CellType:
            ref = self._ref(v)
            if ref is not None:
                return ref
            return ("cell", self.val(v.cell_contents) if _cell_full(v) else ("empty",))
        if t.__name__.endswith("iterator") and t.__module__ == "builtins":
            # a for loop's position: __reduce__ gives (iter, (remaining or whole,)[, index])
            # without advancing the iterator
            ref = self._ref(v)
            if ref is not None:
                return ref
            red = v.__reduce__()
            self._ref(red)  # keep the reduced copies alive while ids are compared
            return ("it", t.__name__, self.val(red[1]), self.val(red[2]) if len(red) > 2 else None)
        if t is types.FunctionType:
            return ("f", _code_name(v.__code__), self.val(v.__closure__), self.val(v.__defaults__),
                    self.val(v.__kwdefaults__))
        if t is types.MethodType:
            return ("bm", _code_name(v.__func__.__code__), self.val(v.__self__))
        # mutable containers and objects: numbered, so sharing is part of the key
        ref = self._ref(v)
        if ref is not None:
            return ref
        n = len(self.memo) - 1
        if t is list or t is deque:
            return ("l", n, *(self.val(x) for x in v))
        if t is set:
            return ("s", n, *sorted((self.val(x) for x in v), key=_order))
        if t is dict:
            return ("d", n, *((self.val(k), self.val(x)) for k, x in v.items()))
        if t is types.SimpleNamespace:
            return ("ns", n, *((k, self.val(x)) for k, x in sorted(vars(v).items())))
        if not t.__module__.startswith("fuzzer."):
            raise _Opaque(f"value of type {t.__module__}.{t.__qualname__}")
        slots = tuple((s, self.val(getattr(v, s, _UNSET))) for s in _slots_of(t))
        attrs = tuple((k, self.val(x)) for k, x in sorted(vars(v).items())) if hasattr(v, "__dict__") else ()
        return ("o", t.__qualname__, n, slots, attrs)


def _cell_full(cell) -> bool:
    try:
        cell.cell_contents  # noqa: B018 - probing an empty closure cell
    except ValueError:
        return False
    return True


def _order(enc) -> bytes:
    return marshal.dumps(enc, 2)
