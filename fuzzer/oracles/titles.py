"""The one title sanitizer (syzkaller's `pkg/report` does the same): every finding's title goes
through `sanitize` before its signature is computed, so a title never carries what differs
between two runs of the same bug: addresses, numbers, CPU indices. A protocol's own assertion
text (`k.bug("...")`) is a title too and is cleaned the same way.

Names keep their digits (`fentry_2`, `mod_code_ip`): only standalone numbers are replaced.
"""

from __future__ import annotations

import re

_RULES = (
    (re.compile(r"\b0x[0-9a-fA-F]+\b"), "ADDR"),  # addresses and hex values
    (re.compile(r"\bcpu\d+\b"), "cpuN"),  # CPU indices
    (re.compile(r"(?<![\w.])[-+]?\d+(?![\w.])"), "N"),  # counts, offsets, values
    (re.compile(r"\s+"), " "),
)


def sanitize(title: str) -> str:
    for pattern, repl in _RULES:
        title = pattern.sub(repl, title)
    return title.strip()
