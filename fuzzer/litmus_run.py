"""Running litmus tests on the model: a verdict per test, and its agreement with a verdict file.

A test's final condition is looked for by exhaustive search (`strategies/exhaustive.py`) over
every interleaving of its threads' instructions, every store-buffer drain and order, and every
version each instruction fetch may return. Reached: Allowed (for `forall`: a counterexample,
so not Required). Not reached once the search is exhausted: Forbidden (Required). The bounds
are the test's own size: every budget is at least the number of decisions of its kind a run of
a loop-free test can make (one per step, and a run of the test has at most that many steps),
so for such a test "exhausted" covers every execution; a test with a backward branch is
bounded by its step limit, which the report says. A search cut short by `max_runs` or
`seconds` is no verdict ("inconclusive").
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

from .litmus import LitmusTest
from .litmus_machine import Unsupported, build
from .machine import Config, Machine
from .strategies.exhaustive import ExhaustiveStrategy

REACHED = {"exists": "Allowed", "~exists": "Allowed", "forall": "Allowed"}
UNREACHED = {"exists": "Forbidden", "~exists": "Forbidden", "forall": "Required"}
# agreement of a verdict with an expected one
AGREE, TOO_WEAK, TOO_STRONG, UNSUPPORTED, INCONCLUSIVE, NO_EXPECTATION = (
    "agree", "model too weak", "model too strong", "unsupported", "inconclusive", "no expectation")
DISAGREEMENTS = (TOO_WEAK, TOO_STRONG)


@dataclass
class Outcome:
    """What running one test gave."""

    name: str
    path: str
    verdict: str  # Allowed, Forbidden, Required, unsupported, inconclusive
    expected: str | None = None
    reason: str = ""  # why unsupported or inconclusive
    seconds: float = 0.0
    runs: int = 0
    pruned: int = 0
    states: int = 0
    faulted: int = 0  # runs that ended in a guest fault before the condition
    bounds: dict = field(default_factory=dict)
    loops: bool = False  # a backward branch: the bounds do not cover every execution
    witness: str = ""  # a schedule (hex) that reaches the condition, for `patchfuzz run`
    arch_options: tuple[str, ...] = ()

    @property
    def status(self) -> str:
        if self.verdict == "unsupported":
            return UNSUPPORTED
        if self.verdict == "inconclusive":
            return INCONCLUSIVE
        if self.expected is None:
            return NO_EXPECTATION
        if self.verdict == self.expected:
            return AGREE
        return TOO_WEAK if self.verdict == "Allowed" else TOO_STRONG

    def to_dict(self) -> dict:
        return {**asdict(self), "status": self.status}


def witness_trace(test: LitmusTest, out: Outcome) -> list[str]:
    """The trace of `out`'s witness: the schedule that reaches the condition, run again."""
    proto, arch = build(test, out.arch_options)
    machine = Machine(proto, "test", Config(cpus=max(2, len(test.threads)), arch_options=arch.options))
    return machine.run(bytes.fromhex(out.witness), trace=True).trace


def bounds_for(test: LitmusTest) -> tuple[dict, int]:
    """The exhaustive bounds for `test` (see the module docstring) and its step limit."""
    n = sum(1 for t in test.threads for ln in t.lines if ln.text)
    threads = len(test.threads)
    steps = 4 * (n + 6 * threads)  # each instruction a step, a few harness ops per thread
    return {"context_switches": steps, "store_delays": n, "store_reorders": n, "stale_fetches": n,
            "nmis": 0, "irqs": 0, "foreign_traps": 0, "preemptions": 0, "migrations": 0,
            "partial_refresh": 0, "ipi_defers": 0, "short_slices": 0}, steps


def has_loop(test: LitmusTest) -> bool:
    """Does a thread branch back to a label at or before the branch (a loop the bounds do
    not cover)? Labels are found by name in the instruction text."""
    for t in test.threads:
        seen: set[str] = set()
        for ln in t.lines:
            if ln.label:
                seen.add(ln.label)
            words = set(ln.text.replace(",", " ").split()[1:])
            if words & seen:
                return True
    return False


def run_test(test: LitmusTest, expected: str | None = None, max_runs: int = 0,
             seconds: float = 0.0, options: tuple[str, ...] = ()) -> Outcome:
    """Run one test to a verdict (`max_runs`/`seconds`: 0 for no limit; `options`: more of
    the architecture model's OPTIONS than the test's CacheType asks for)."""
    t0 = time.perf_counter()
    out = Outcome(name=test.name, path=test.path, verdict="unsupported", expected=expected)
    try:
        proto, arch = build(test, options)
    except Unsupported as e:
        out.reason = str(e)
        out.seconds = time.perf_counter() - t0
        return out
    bounds, steps = bounds_for(test)
    out.bounds = {**{k: v for k, v in bounds.items() if v}, "max_steps": steps}
    out.loops = has_loop(test)
    out.arch_options = arch.options
    config = Config(cpus=max(2, len(test.threads)), max_steps=steps * 2, arch_options=arch.options)
    machine = Machine(proto, "test", config)
    search = ExhaustiveStrategy(max_steps=steps, **bounds)
    search.bind(machine)
    verdict = None
    while True:
        if (max_runs and out.runs >= max_runs) or (seconds and time.perf_counter() - t0 > seconds):
            out.verdict, out.reason = "inconclusive", f"search cut short after {out.runs} runs"
            break
        run = search.next_run()
        if run is None:
            verdict = UNREACHED[test.condition.quantifier]
            break
        result = machine.run(run.schedule, source=run.source)
        out.runs += 1
        if result.error is not None:
            out.verdict, out.reason = "unsupported", f"the run failed: {result.error.what}"
            break
        search.observe(run, result)
        f = result.finding
        if f is None or result.abandoned:
            continue
        if f.oracle == "protocol-assert":
            verdict = REACHED[test.condition.quantifier]
            out.witness = result.schedule.hex()
            break
        out.faulted += 1
    if verdict is not None:
        out.verdict = verdict
    stats = search.stats()
    out.pruned, out.states = stats["pruned"], stats["states"]
    out.seconds = time.perf_counter() - t0
    return out
