"""Oracles: the ids, and how a violation becomes a stable, deduplicable finding.

Titles follow syzkaller: human-readable, no raw addresses, counts or CPU numbers, so that two
schedules that hit the same bug give the same title. The signature hashes protocol, variant,
oracle and title.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field

ORACLES: dict[str, str] = {
    "torn-fetch": "a CPU executes bytes at a patch site that were never one whole intended version",
    "unhandled-trap": "a breakpoint trap at a patch site is not recognized by the protocol's handler",
    "wrong-target": "control flow or handler emulation matches neither the old nor the new semantics",
    "stale-after-complete": "a CPU executes the old instruction after the protocol declared completion",
    "mid-insn-resume": "a saved or preempted PC points inside a patched range that changed",
    "use-after-free": "a handler touches protocol memory whose lifetime has ended",
    "deadlock": "a cycle in the wait-for graph, an IPI that can never be taken, or no progress",
    "guest-fault": "invalid opcode, unmapped fetch/access raised by the emulated code",
    "protocol-assert": "the protocol's own expected-bytes checks (like ftrace_bug) fail",
}


@dataclass
class Finding:
    oracle: str
    title: str
    protocol: str
    variant: str
    step: int
    cpu: int
    detail: str  # may carry addresses and numbers; the title may not
    consequence: list[str] = field(default_factory=list)

    @property
    def signature(self) -> str:
        return signature(self.protocol, self.variant, self.oracle, self.title)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["signature"] = self.signature
        return d


def signature(protocol: str, variant: str, oracle: str, title: str) -> str:
    key = f"{protocol}:{variant}|{oracle}|{title}".encode()
    return hashlib.sha256(key).hexdigest()[:20]
