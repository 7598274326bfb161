"""PCT: probabilistic concurrency testing (Burckhardt et al., ASPLOS 2010), as in Coyote and
Shuttle.

Each run gives the CPUs random distinct priorities and picks d-1 change points among the
scheduling steps; at every step the highest-priority runnable CPU runs, and at a change point
the CPU that just ran drops below all initial priorities. A bug of depth d is found with
probability at least 1/(n k^(d-1)) per run. Decisions that are not "which CPU" (NMIs, foreign
traps, store-buffer drains, fetch refreshes, slice lengths) are drawn as random search draws
them, so PCT and random differ only in scheduling. After `max_len` decisions the run hands over
to the fair defaults, like a random schedule of that length, so every run terminates.
"""

from __future__ import annotations

import random

from ..draws import CPU
from ..machine import Machine, RunResult
from .base import Run, Stepwise
from .random import DEFAULT_MAX_LEN


class _PctSource:
    def __init__(self, rng: random.Random, ncpus: int, depth: int, steps: int, max_len: int):
        self.rng = rng
        prios = list(range(depth, depth + ncpus))
        rng.shuffle(prios)
        self.prio = prios  # per CPU index; higher runs first
        self.change = set(rng.sample(range(1, max(steps, depth) + 1), depth - 1)) if depth > 1 else set()
        self.lowered = depth - 1  # priorities below every initial one: d-1, d-2, ...
        self.step = 0
        self.left = max_len

    def choose(self, what: str, n: int, options: tuple[int, ...] | None) -> int | None:
        if self.left <= 0:
            return None
        self.left -= 1
        if what != CPU.name or not options:
            return self.rng.getrandbits(8)
        self.step += 1
        best = max(range(len(options)), key=lambda i: self.prio[options[i]])
        if self.step in self.change:
            self.prio[options[best]] = self.lowered
            self.lowered -= 1
            best = max(range(len(options)), key=lambda i: self.prio[options[i]])
        return best


class PctStrategy(Stepwise):
    name = "pct"

    def __init__(self, seed: int = 0, depth: int = 3, max_len: int = DEFAULT_MAX_LEN, **_ignored):
        if depth < 1:
            raise ValueError("PCT depth must be at least 1")
        self._rng = random.Random(seed)
        self.depth = depth
        self.max_len = max_len
        self._ncpus = 2
        # k, the number of scheduling steps change points are drawn from: learned from the runs
        self._steps_seen = max_len // 3

    def bind(self, machine: Machine) -> None:
        self._ncpus = machine.ncpus

    def next_run(self) -> Run:
        return Run(source=_PctSource(self._rng, self._ncpus, self.depth, self._steps_seen, self.max_len))

    def observe(self, run: Run, result: RunResult) -> None:
        steps = run.source.step
        if steps > self._steps_seen:
            self._steps_seen = steps

    def stats(self) -> dict:
        return {"depth": self.depth, "k": self._steps_seen}
