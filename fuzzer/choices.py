"""Schedules as choice sequences (Hypothesis style).

Every nondeterministic decision of a run is drawn from one byte string. Each draw consumes
exactly one byte; when the bytes run out every draw returns its stated default (no event, round
robin, take the IPI, refresh everything), so any byte string is a valid schedule and a run is a
pure function of protocol, configuration and these bytes. Shrinking a schedule is shrinking
bytes.
"""

from __future__ import annotations

# Bump when the meaning of the bytes changes: a stored reproducer names the format it was made
# with, and replay refuses one from an incompatible format instead of silently diverging.
SCHEDULE_FORMAT = 1


class ScheduleError(ValueError):
    """A schedule given by the user cannot be parsed."""


class Choices:
    __slots__ = ("data", "pos", "n")

    def __init__(self, data: bytes):
        self.data = bytes(data)
        self.pos = 0
        self.n = len(self.data)

    @property
    def exhausted(self) -> bool:
        return self.pos >= self.n

    def byte(self, default: int, what: str = "") -> int:
        """One decision in 0..255, or `default` once the schedule is used up."""
        pos = self.pos
        if pos >= self.n:
            return default
        self.pos = pos + 1
        return self.data[pos]


def parse_schedule_hex(text: str) -> bytes:
    """Parse a user-given schedule: hex digits, optional whitespace and an optional `0x`."""
    cleaned = "".join(text.split())
    if cleaned.lower().startswith("0x"):
        cleaned = cleaned[2:]
    if len(cleaned) % 2:
        raise ScheduleError(f"schedule hex has an odd number of digits ({len(cleaned)})")
    try:
        return bytes.fromhex(cleaned)
    except ValueError:
        bad = next((c for c in cleaned if c not in "0123456789abcdefABCDEF"), "?")
        raise ScheduleError(f"schedule is not hex: unexpected character {bad!r}") from None
