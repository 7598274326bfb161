"""The libFuzzer side of the atheris strategy: one fuzz job per process.

`python -m fuzzer.strategies.atheris_worker --protocol P --variant V --events FILE --corpus DIR
[...] -- [libFuzzer flags]` builds a Machine, lets libFuzzer mutate schedule bytes, and steers
it with interleaving coverage fed through one block of custom counters.

Everything the parent needs is written to the events file as JSON lines, flushed one by one
while fuzzing: libFuzzer's `-max_total_time` ends the process with `exit()`, so no `finally`
or atexit hook of ours runs, and anything not yet on disk would be lost. Line types:

* `start`: corpus files present before libFuzzer loaded them (a resumed campaign has some);
* `loaded`: distinct features once the stored corpus has been replayed;
* `finding`: `Finding.to_dict()` plus the replaying schedule, once per signature;
* `error`: the protocol's own code went wrong (`guard.ProtocolError` fields and the schedule);
  the job stops there with exit status 3;
* `stats`: runs so far, distinct features (and the ones new since the last line), corpus
  files, hits per signature, new near misses (states one step from a violation) so far; at
  most every STATS_PERIOD seconds, plus one at a clean exit.

A finding never stops the job: TestOneInput records it and returns, so libFuzzer keeps going
and the other bugs of the same protocol can still turn up. An exception from the engine is a
real engine bug, so it is left to propagate: libFuzzer reports it and exits non-zero.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import IO

from ..draws import DRAWS, EVENT, EVENT_BYTE, EVENT_RANGES
from ..machine import Config, Machine, RunResult
from ..protocols import resolve
from .swarm import site_hold_run, swarm_schedule

EXIT_PROTOCOL_ERROR = 3  # the job stopped at the protocol's own error (an `error` line says which)
COUNTERS = 1 << 16  # one block for every feature: libFuzzer has only 4096 module slots
STATS_PERIOD = 0.2
TAIL_SHARE = 0.5  # of mutations that keep a prefix and draw a random continuation
DECISION_SHARE = 0.5  # of mutations that edit whole decisions (when the input's steps are known)
SHAPES_KEPT = 1 << 15  # inputs whose decision structure is remembered
POOL_KEPT = 1 << 12  # inputs with new features, for continuations and splicing
# insert an event near another, insert anywhere, move, delete, splice, redraw one answer
OP_WEIGHTS = (2, 1, 1, 1, 1, 4)
NEAR = 4  # steps either side of an existing event where a second one is inserted
FRESH_SHARE = 0.8  # of mutations with no near miss queued that start afresh (site-hold, frontier)
FRONTIER_JITTER = 4  # decisions kept past the point where an input found a new feature
NEAR_SHARE = 0.8  # of mutations spent on near misses while any is queued
NEAR_RUNS = 8  # continuations of one near miss before it leaves the queue
NEAR_KEPT = 1 << 10  # near misses queued at most (the oldest are dropped)


class _Recorder:
    """Answers draws from the input's bytes, as a plain replay would, and notes each draw's
    name and answer count: where the input's decisions start and what each byte decides."""

    __slots__ = ("data", "whats", "ns")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.whats: list[str] = []
        self.ns: list[int] = []

    def choose(self, what: str, n: int, options: tuple[int, ...] | None) -> int | None:
        pos = len(self.whats)
        if pos >= len(self.data):
            return None
        self.whats.append(what)
        self.ns.append(n)
        return self.data[pos]


class Shapes:
    """Decision structure of recently run inputs, and the inputs that found new features.
    Shared by the harness (which records) and the mutators (which read)."""

    def __init__(self) -> None:
        self.shapes: dict[bytes, tuple[tuple[str, ...], tuple[int, ...]]] = {}
        # inputs that found new features, with the decision counts at which they did
        self.frontier: list[tuple[bytes, tuple[int, ...]]] = []
        self.rng = random.Random(0)
        # inputs whose run came one step from an oracle's violation at a state no run had
        # reached before: [input, decision counts of those states, continuations left]
        self.near: deque[list] = deque(maxlen=NEAR_KEPT)

    def keep(self, data: bytes, whats: tuple[str, ...], ns: tuple[int, ...],
             novel_at: tuple[int, ...]) -> None:
        if len(self.shapes) >= SHAPES_KEPT:
            # dicts keep insertion order: forget the oldest
            for key in list(self.shapes)[: SHAPES_KEPT // 4]:
                del self.shapes[key]
        self.shapes[data] = (whats, ns)
        if novel_at:
            if len(self.frontier) < POOL_KEPT:
                self.frontier.append((data, novel_at))
            else:
                self.frontier[self.rng.randrange(POOL_KEPT)] = (data, novel_at)


SHAPES = Shapes()


def count_files(path: str) -> int:
    try:
        with os.scandir(path) as it:
            return sum(1 for e in it if e.is_file())
    except FileNotFoundError:
        return 0


class Harness:
    """The TestOneInput of one job, and the event lines it writes."""

    def __init__(self, machine: Machine, events: IO[str], corpus_dir: str, max_len: int) -> None:
        self.machine = machine
        self.events = events
        self.corpus_dir = corpus_dir
        self.max_len = max_len
        self.runs = 0
        self.seen: set[int] = set()
        self.fresh: list[int] = []  # features not yet reported to the parent
        self.hits: dict[str, int] = {}
        self.near_misses = 0  # new states one step from a violation (RunResult.near)
        self.base: int | None = None
        self.next_stats = 0.0
        self.corpus_at_start = count_files(corpus_dir)
        # libFuzzer first runs an empty input, then every stored corpus file once
        self.loaded_after = self.corpus_at_start + 1
        self.emit({"type": "start", "corpus_files": self.corpus_at_start, "pid": os.getpid()})

    def emit(self, obj: dict) -> None:
        obj["mono"] = time.monotonic()  # CLOCK_MONOTONIC is shared with the parent process
        self.events.write(json.dumps(obj, separators=(",", ":")) + "\n")
        self.events.flush()

    def stats(self) -> None:
        fresh, self.fresh = self.fresh, []
        self.emit({"type": "stats", "runs": self.runs, "features": len(self.seen), "new": fresh,
                   "corpus": count_files(self.corpus_dir), "hits": self.hits,
                   "near": self.near_misses})

    def test_one_input(self, data: bytes) -> None:
        import atheris

        if self.base is None:
            # Counters can only be registered once libFuzzer runs, and only once per process.
            core = sys.modules["atheris.core_with_libfuzzer"]
            self.base = core._reserve_counters(COUNTERS)
            atheris.UpdateCounterArrays()
        data = data[: self.max_len]
        live = LIVE.take(data)
        if live is not None:
            result, whats, ns = live
        else:
            # replayed through a recorder (the same run as from bytes) so the mutator can
            # later edit this input decision by decision
            rec = _Recorder(data)
            result = self.machine.run(b"", source=rec, coverage=True)
            whats, ns = tuple(rec.whats), tuple(rec.ns)
        self.runs += 1
        # looked up per call: the name is bound to a no-op stub until libFuzzer is running
        trace = atheris._trace_branch
        base, seen = self.base, self.seen
        novel: dict[int, int] = {}  # feature index -> decisions drawn when it occurred
        for i, (f, at) in enumerate(zip(result.features or (), result.feature_at or ())):
            trace(base + f % COUNTERS)
            if f not in seen:
                seen.add(f)
                self.fresh.append(f)
                novel[i] = at
        SHAPES.keep(data, whats, ns, tuple(sorted(set(novel.values()))))
        # a near miss is queued only where its feature is new: in a protocol that comes near
        # in every run (text_poke_bp pokes int3 under running CPUs) the queue stays short
        near_at = sorted({novel[i] for i in result.near or () if i in novel})
        if near_at:
            self.near_misses += len(near_at)
            SHAPES.near.append([data, tuple(near_at), NEAR_RUNS])
        if result.error is not None:
            # the protocol's own code went wrong: say so with the schedule, and stop (no verdict
            # after this one could be trusted); libFuzzer's exit would not run our flush
            self.emit({"type": "error", **result.error.to_dict(), "run": self.runs,
                       "schedule": result.schedule.hex()})
            self.stats()
            os._exit(EXIT_PROTOCOL_ERROR)
        finding = result.finding
        if finding is not None and not result.abandoned:
            sig = finding.signature
            n = self.hits.get(sig, 0)
            self.hits[sig] = n + 1
            if n == 0:
                line = finding.to_dict()
                line.update(type="finding", run=self.runs, schedule=result.schedule.hex())
                self.emit(line)
        if self.runs == self.loaded_after and self.corpus_at_start:
            self.emit({"type": "loaded", "runs": self.runs, "features": len(seen)})
        now = time.monotonic()
        if now >= self.next_stats:
            self.next_stats = now + STATS_PERIOD
            self.stats()


def _steps(whats: tuple[str, ...]) -> list[int]:
    """Start positions of the steps (each scheduler iteration begins with an "event" draw)."""
    return [i for i, w in enumerate(whats) if w == EVENT.name]


# the injectable event kinds, NMIs twice as often (they are what most patching races need)
_EVENT_CHOICES = tuple(k for name in EVENT_RANGES for k in ((name, name) if name == "nmi" else (name,)))


def _event_bytes(rng: random.Random) -> bytes:
    kind = rng.choice(_EVENT_CHOICES)
    out = bytes([EVENT_BYTE[kind] + rng.randrange(8), rng.randrange(8)])
    if kind == "preempt":
        out += bytes([rng.choice((rng.randrange(8), rng.randrange(256)))])
    return out


def _redraw(what: str, n: int, old: int, rng: random.Random) -> int:
    """Another answer to a draw, chosen among the ones that mean something different."""
    spec = DRAWS.get(what)
    return spec.redraw(old, n, rng) if spec is not None else rng.randrange(256)


def decision_mutation(data: bytes, whats: tuple[str, ...], ns: tuple[int, ...], max_size: int,
                      rng: random.Random) -> bytes:
    """Edit one whole decision of `data`, whose draws are named by `whats`. An injected event
    (NMI, foreign trap, preemption, drain) leaves the last-stepped CPU alone, so inserting or
    deleting one keeps the meaning of the round-robin-relative CPU choices after it."""
    steps = _steps(whats)
    bounds = steps + [len(whats)]
    events = [i for i, st in enumerate(steps) if data[st] >= EVENT_BYTE["nmi"]]
    op = rng.choices(range(len(OP_WEIGHTS)), OP_WEIGHTS)[0]
    if op == 0 and events:
        # another event a few steps from an existing one: races need two things to happen in
        # the same window (an NMI overlapping another NMI, a trap during a refresh, ...)
        i = rng.choice(events) + rng.randint(-NEAR, NEAR + 1)
        at = bounds[min(max(i, 0), len(bounds) - 1)]
        out = data[:at] + _event_bytes(rng) + data[at:]
    elif op <= 1 or not steps:  # insert an event at any step boundary
        at = rng.choice(bounds)
        out = data[:at] + _event_bytes(rng) + data[at:]
    elif op == 2 and events:  # move an event elsewhere
        i = rng.choice(events)
        piece = data[bounds[i]:bounds[i + 1]]
        rest = data[:bounds[i]] + data[bounds[i + 1]:]
        rest_bounds = [b for b in bounds if b <= bounds[i]] + \
            [b - len(piece) for b in bounds if b >= bounds[i + 1]]
        at = rng.choice(rest_bounds)
        out = rest[:at] + piece + rest[at:]
    elif op == 3:  # delete a whole step, events first
        i = rng.choice(events) if events and rng.random() < 0.5 else rng.randrange(len(steps))
        out = data[:bounds[i]] + data[bounds[i + 1]:]
    elif op == 4 and SHAPES.frontier:  # splice: this input's first steps, another's later ones
        other = rng.choice(SHAPES.frontier)[0]
        shape = SHAPES.shapes.get(other)
        cut = rng.choice(bounds)
        if shape is not None:
            other_steps = _steps(shape[0]) + [len(shape[0])]
            out = data[:cut] + other[rng.choice(other_steps):]
        else:
            out = data[:cut] + other[cut:]
    else:  # answer one draw differently: which CPU, which view units refresh, drains, slices
        pos = rng.randrange(len(whats))
        value = _redraw(whats[pos], ns[pos], data[pos], rng)
        out = data[:pos] + bytes([value]) + data[pos + 1:]
    return out[:max_size]


def schedule_mutator(data: bytes, max_size: int, seed: int) -> bytes:
    """Half the time libFuzzer's own byte mutation; otherwise keep a prefix of the input and
    replace the rest with random bytes of random length.

    A schedule is a sequence of decisions, so a prefix of a corpus input replays the state
    that input reached, and a random continuation explores from there (from the empty input it
    is a fresh random schedule). Measured against libFuzzer's mutator alone (4 CPUs, seeds
    1..20, medians): schedules to the first finding fell from 115 to 17 on
    text_poke_bp:no-final-sync and from 2944 to 853 on ftrace_nmi_2008:correct."""
    import atheris

    rng = random.Random(seed)
    if rng.random() < TAIL_SHARE:
        cut = rng.randint(0, min(len(data), max_size))
        return data[:cut] + rng.randbytes(rng.randint(0, max_size - cut))
    return atheris.Mutate(data, max_size)


def decision_mutator(data: bytes, max_size: int, seed: int) -> bytes:
    """`schedule_mutator`, with a share of its mutations done on whole decisions (see
    `decision_mutation`) for inputs whose structure the harness recorded. Measured on
    ftrace_nmi_2008:correct (4 CPUs, 6000-schedule budget, seeds 1..22, medians of schedules to
    the first finding): 861 with `schedule_mutator`, 628 with this one. The spread between
    seeds is wide (20 to 3420), so this is a modest gain, not a new class."""
    import atheris

    rng = random.Random(seed)
    shape = SHAPES.shapes.get(data)
    r = rng.random()
    if shape is not None and shape[0] and r < DECISION_SHARE:
        return decision_mutation(data, *shape, max_size, rng)
    if r < DECISION_SHARE + (1 - DECISION_SHARE) * TAIL_SHARE:
        cut = rng.randint(0, min(len(data), max_size))
        return data[:cut] + rng.randbytes(rng.randint(0, max_size - cut))
    return atheris.Mutate(data, max_size)


def _near_miss_prefix(rng: random.Random) -> bytes | None:
    """While a near miss is queued (an input came one step from an oracle's violation at a
    state never reached before, see RunResult.near), most mutations continue from exactly
    that state, NEAR_RUNS times: the decisions that lead there. From there a random
    continuation completes the violation in about a third of the runs
    (ftrace_nmi_2008:correct: 17-100 %, median 35 %, over 23 near misses), against about 1 in
    110 from scratch. None: no near miss this time."""
    near = SHAPES.near
    while near and near[0][2] <= 0:
        near.popleft()
    if not near or rng.random() >= NEAR_SHARE:
        return None
    entry = near[0]
    entry[2] -= 1
    return entry[0][:rng.choice(entry[1])]


def _frontier_prefix(rng: random.Random) -> bytes | None:
    """FRESH_SHARE of the time None (start afresh); otherwise the decisions up to a few past a
    point where an input found new features (input and point uniform)."""
    front = SHAPES.frontier
    if not front or rng.random() < FRESH_SHARE:
        return None
    base, novel_at = rng.choice(front)
    return base[:rng.choice(novel_at) + rng.randint(0, FRONTIER_JITTER)]


def _start(rng: random.Random, max_size: int) -> bytes:
    """Where a `site-hold` or `frontier` mutation starts: a queued near miss, else a frontier
    state, else nothing (a fresh schedule)."""
    prefix = _near_miss_prefix(rng)
    if prefix is None:
        prefix = _frontier_prefix(rng) or b""
    return prefix[:max_size]


class LiveRuns:
    """Site-hold schedules are drawn while the machine runs them (swarm.SiteHoldSource), so
    the mutator has the run before libFuzzer asks for it. libFuzzer runs the mutator's output
    next, and the same bytes give the same run, so the harness takes it from here instead of
    running the schedule twice."""

    def __init__(self) -> None:
        self.machine: Machine | None = None
        self.last: tuple[bytes, RunResult, tuple[str, ...], tuple[int, ...]] | None = None

    def extend(self, prefix: bytes, rng: random.Random, max_size: int) -> bytes:
        if self.machine is None:
            raise RuntimeError("LiveRuns.machine is not set: the worker sets it before fuzzing")
        result, src = site_hold_run(self.machine, rng, prefix, max_size)
        self.last = (result.schedule, result, tuple(src.whats), tuple(src.ns))
        return result.schedule

    def take(self, data: bytes) -> tuple[RunResult, tuple[str, ...], tuple[int, ...]] | None:
        """The run of `data` if the last schedule drawn was `data`, else None."""
        last, self.last = self.last, None
        if last is not None and last[0] == data:
            return last[1:]
        return None


LIVE = LiveRuns()


def site_hold_mutator(data: bytes, max_size: int, seed: int) -> bytes:
    """The default: near misses first; otherwise four fifths fresh schedules, a fifth
    continuations of a state where an input found new features; every schedule (or
    continuation) is drawn by site hold (see swarm.py). libFuzzer's choice of `data` is not
    used: its corpus holds hundreds of inputs after a few hundred runs, and a continuation of
    a state is what a new feature is worth.

    Schedules to the first finding on ftrace_nmi_2008:correct, 4 CPUs, median over three
    blocks of 123 seeds: 13, 14 and 12; `frontier` (the same search with blind swarm bytes)
    50 on the first block, random 464, PCT 365 (BENCHMARKS.md has the controls)."""
    rng = random.Random(seed)
    return LIVE.extend(_start(rng, max_size), rng, max_size)


def frontier_mutator(data: bytes, max_size: int, seed: int) -> bytes:
    """`site_hold_mutator` with blind swarm bytes (`swarm.swarm_schedule`) in place of site
    hold: the default before site hold, kept as its control.

    Schedules to the first finding on ftrace_nmi_2008:correct, 4 CPUs, median over three
    blocks of 123 seeds: 50, 55 and 48 (geometric means 46, 48, 43); `near_mutator`, the same
    without continuations, 46, 48 and 56 (45, 41, 47); `decisions` 790 (BENCHMARKS.md has the
    controls)."""
    rng = random.Random(seed)
    prefix = _start(rng, max_size)
    return prefix + swarm_schedule(rng, max_size - len(prefix))


def near_mutator(data: bytes, max_size: int, seed: int) -> bytes:
    """`frontier_mutator` without continuations: near misses first, otherwise a fresh swarm
    schedule. The control that shows what the continuations add."""
    rng = random.Random(seed)
    prefix = (_near_miss_prefix(rng) or b"")[:max_size]
    return prefix + swarm_schedule(rng, max_size - len(prefix))


MUTATORS: dict[str, Callable[[bytes, int, int], bytes] | None] = {
    "site-hold": site_hold_mutator, "frontier": frontier_mutator, "near": near_mutator,
    "schedule": schedule_mutator, "decisions": decision_mutator, "libfuzzer": None}
DEFAULT_MUTATOR = "site-hold"


def parse_args(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    p = argparse.ArgumentParser(prog="atheris_worker")
    p.add_argument("--protocol", required=True)
    p.add_argument("--variant", required=True)
    p.add_argument("--config", default="{}", help="the Machine's Config as a JSON object")
    p.add_argument("--max-len", type=int, default=256)
    p.add_argument("--corpus", required=True, help="persistent corpus; new entries go here")
    p.add_argument("--events", required=True, help="JSON lines for the parent")
    p.add_argument("--mutator", choices=MUTATORS, default=DEFAULT_MUTATOR)
    p.add_argument("libfuzzer", nargs="*", help="libFuzzer flags, after --")
    args = p.parse_args(list(argv))
    return args, list(args.libfuzzer)


def main(argv: Sequence[str] | None = None) -> None:
    args, flags = parse_args(sys.argv[1:] if argv is None else argv)
    cls, variant = resolve(f"{args.protocol}:{args.variant}")
    # the whole Config (cpus, stop_machine_serializes, step limits) so runs match the parent's
    machine = Machine(cls, variant, Config(**json.loads(args.config)))
    LIVE.machine = machine
    os.makedirs(args.corpus, exist_ok=True)

    import atheris

    with open(args.events, "a", encoding="utf-8") as events:
        harness = Harness(machine, events, args.corpus, args.max_len)
        # the corpus must be the first directory: libFuzzer writes new entries only there
        mutator = MUTATORS[args.mutator]
        atheris.Setup([sys.argv[0], f"-max_len={args.max_len}", *flags, args.corpus],
                      harness.test_one_input, **({"custom_mutator": mutator} if mutator else {}))
        try:
            atheris.Fuzz()
        finally:
            # reached on -atheris_runs (SystemExit); -max_total_time exits without it
            harness.stats()


if __name__ == "__main__":
    main()
