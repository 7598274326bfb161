"""The oracle interface: check points the machine calls, and the base class.

An oracle subscribes to a check point by defining `on_<point>`; the machine calls every
subscriber at that moment with the arguments listed here, and an oracle that sees a violation
calls `self.report(cpu, title, detail)`. The machine stops at the first report. Titles are
templates held as class data (`TITLES`), filled with names (sites, contexts, variables, locks),
never with addresses or counts; `Machine.report` sanitizes them anyway.
"""

from __future__ import annotations

from typing import Any, ClassVar

# point -> what it means and its arguments (after `self`)
CHECK_POINTS: dict[str, str] = {
    "fetch_torn": "(cpu, frame, site, view): a CPU is about to execute bytes at a site that are no "
                  "whole version the site was ever written to",
    "fetch_foreign": "(cpu, frame, site, view): ... a whole written version, but neither old, new "
                     "nor a trap",
    "fetch_mixed": "(cpu, frame, site, ran, view): a CPU that ran the first instructions of a "
                   "site from one version is about to execute the next one from another, and "
                   "what it ran and runs is no version the site was written to (it was "
                   "interrupted or preempted between two instructions of the site meanwhile)",
    "fetch_after_complete": "(cpu, frame, site, view, off): a CPU whose fetch of the site began "
                            "after the patch of the site was declared complete is about to execute "
                            "a whole instruction of a written version",
    "cmodx": "(cpu, frame, site, off, old, new): a CPU is about to fetch a unit of a site that "
             "may still return either of two versions (a modification not yet made visible to its "
             "fetch) and the architecture allows that only for a list of instructions that "
             "does not hold both",
    "trap_unclaimed": "(cpu, addr, site): the trap handler did not claim a trap that is not foreign",
    "trap_claimed": "(cpu, addr, site, foreign, answer): the trap handlers claim the trap at "
                    "`addr` with an answer (emulate, single-step, retry, detour)",
    "resume": "(cpu, after): interrupted code is about to resume on `cpu` (after an NMI, a "
              "trap, an IPI or a preemption)",
    "freed_access": "(cpu, frame, var): a frame touches protocol memory whose lifetime ended",
    "lock_wait": "(cpu, frame): a frame starts waiting for a lock (a new wait-for edge)",
    "stall": "(): no CPU can make progress and nothing is left to drain",
    "budget_spent": "(why): the run made no progress within its step budget",
    "guest_fault": "(cpu, frame, kind, addr): the emulated code raised a fault",
    "text_mismatch": "(cpu, site, what, expected, found): the protocol's expected-bytes check failed",
    "bug": "(cpu, message): the protocol declared a bug of its own",
    "shared_changed": "(cpu): shared memory, a site's text in memory or a lock changed (a store or "
                      "a poke reached memory, an atomic, a free, a lock taken or released)",
}


class Oracle:
    """Base class: `id` (the oracle's name in findings), `fires_when` (one line for
    `patchfuzz oracles`), `TITLES` (title templates by case)."""

    id: ClassVar[str] = "?"
    fires_when: ClassVar[str] = ""
    TITLES: ClassVar[dict[str, str]] = {}
    # let the offending CPU run on after the finding, so the report shows what it executed
    shows_consequence: ClassVar[bool] = False

    def __init__(self, machine: Any) -> None:
        self.m = machine

    def active(self) -> bool:
        """Does this oracle look at anything on this machine? (An inactive one is left out of
        the check points: it costs nothing.)"""
        return True

    def report(self, cpu: Any, case: str, detail: str, **names: str) -> None:
        self.m.report(cpu, self.id, self.TITLES[case].format(**names), detail)

    @classmethod
    def subscriptions(cls) -> list[str]:
        subs = [p for p in CHECK_POINTS if callable(getattr(cls, f"on_{p}", None))]
        unknown = [n[3:] for n in dir(cls) if n.startswith("on_") and n[3:] not in CHECK_POINTS]
        if unknown:
            raise TypeError(f"oracle {cls.__name__} subscribes to unknown check points: {unknown}")
        return subs
