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
* `stats`: runs so far, distinct features (and the ones new since the last line), corpus
  files, hits per signature; at most every STATS_PERIOD seconds, plus one at a clean exit.

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
from collections.abc import Callable, Sequence
from typing import IO

from ..machine import Config, Machine
from ..protocols import resolve

COUNTERS = 1 << 16  # one block for every feature: libFuzzer has only 4096 module slots
STATS_PERIOD = 0.2
TAIL_SHARE = 0.5  # of mutations that keep a prefix and draw a random continuation


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
                   "corpus": count_files(self.corpus_dir), "hits": self.hits})

    def test_one_input(self, data: bytes) -> None:
        import atheris

        if self.base is None:
            # Counters can only be registered once libFuzzer runs, and only once per process.
            core = sys.modules["atheris.core_with_libfuzzer"]
            self.base = core._reserve_counters(COUNTERS)
            atheris.UpdateCounterArrays()
        result = self.machine.run(data[: self.max_len], coverage=True)
        self.runs += 1
        # looked up per call: the name is bound to a no-op stub until libFuzzer is running
        trace = atheris._trace_branch
        base, seen = self.base, self.seen
        for f in result.features or ():
            trace(base + f % COUNTERS)
            if f not in seen:
                seen.add(f)
                self.fresh.append(f)
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


MUTATORS: dict[str, Callable[[bytes, int, int], bytes] | None] = {
    "schedule": schedule_mutator, "libfuzzer": None}


def parse_args(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    p = argparse.ArgumentParser(prog="atheris_worker")
    p.add_argument("--protocol", required=True)
    p.add_argument("--variant", required=True)
    p.add_argument("--config", default="{}", help="the Machine's Config as a JSON object")
    p.add_argument("--max-len", type=int, default=256)
    p.add_argument("--corpus", required=True, help="persistent corpus; new entries go here")
    p.add_argument("--events", required=True, help="JSON lines for the parent")
    p.add_argument("--mutator", choices=MUTATORS, default="schedule")
    p.add_argument("libfuzzer", nargs="*", help="libFuzzer flags, after --")
    args = p.parse_args(list(argv))
    return args, list(args.libfuzzer)


def main(argv: Sequence[str] | None = None) -> None:
    args, flags = parse_args(sys.argv[1:] if argv is None else argv)
    cls, variant = resolve(f"{args.protocol}:{args.variant}")
    # the whole Config (cpus, stop_machine_serializes, step limits) so runs match the parent's
    machine = Machine(cls, variant, Config(**json.loads(args.config)))
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
