"""A finding: what an oracle reports, with a stable title and a signature for deduplication.

Titles follow syzkaller: human-readable, no raw addresses, counts or CPU numbers (the
sanitizer in `titles.py` removes any that slip in), so that two schedules that hit the same
bug give the same title. The signature hashes protocol, variant, oracle and title.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field


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
