"""Schedules as choice sequences (Hypothesis style).

Every nondeterministic decision of a run is drawn from one byte string. Each draw consumes
exactly one byte; when the bytes run out every draw returns its stated default (no event,
round robin, take the IPI, refresh everything), so any byte string is a
valid schedule and a run is a pure function of protocol, configuration and these bytes.
Shrinking a schedule is shrinking bytes.

Strategies that steer a run as it goes (PCT, exhaustive search) plug in a `ChoiceSource`
instead of bytes: it answers each draw, and every answer is recorded as the byte it stands for,
so the run they steered replays from `Choices.recorded` like any other schedule.
"""

from __future__ import annotations

from typing import Protocol

# Bump when the meaning of the bytes changes: a stored reproducer names the format it was made
# with, and replay refuses one from an incompatible format instead of silently diverging.
# 2: an IRQ event kind in the event bytes (draws.EVENT_KINDS); the kinds after it moved up.
SCHEDULE_FORMAT = 2


class ScheduleError(ValueError):
    """A schedule given by the user cannot be parsed."""


class Abandon(Exception):
    """Raised by a ChoiceSource to stop the current run early (exhaustive search prunes a run
    whose state it has already explored). The run ends with `RunResult.abandoned` set."""


class ChoiceSource(Protocol):
    def choose(self, what: str, n: int, options: tuple[int, ...] | None) -> int | None:
        """Answer one draw with a byte (0..255), or None to let this and every later draw take
        its default. `n` is how many distinct answers matter (the machine reduces the byte
        modulo n, or compares it with thresholds when n is 256); `options` names them where
        that helps (the CPU indices a "cpu" draw chooses among)."""


class Choices:
    __slots__ = ("data", "pos", "n", "source", "recorded", "defaulted")

    def __init__(self, data: bytes = b"", source: ChoiceSource | None = None):
        self.data = bytes(data)
        self.pos = 0
        self.n = len(self.data)
        self.source = source
        self.recorded = bytearray() if source is not None else None
        # set by the first draw that took its default: the same moment in a replay of `used`
        self.defaulted = False

    @property
    def exhausted(self) -> bool:
        return self.defaulted

    @property
    def drawn(self) -> int:
        """Decisions answered from the schedule (or the source) so far."""
        return self.pos if self.recorded is None else len(self.recorded)

    @property
    def used(self) -> bytes:
        """The bytes this run consumed: replaying them gives the same run."""
        if self.recorded is not None:
            return bytes(self.recorded)
        return self.data[: self.pos]

    def byte(self, default: int, what: str = "", n: int = 256,
             options: tuple[int, ...] | None = None) -> int:
        """One decision in 0..255, or `default` once the schedule is used up."""
        src = self.source
        if src is not None:
            v = src.choose(what, n, options)
            if v is None:
                self.source = None  # from here on, defaults, exactly as a replay would see
                self.defaulted = True
                return default
            self.recorded.append(v)
            return v
        pos = self.pos
        if pos >= self.n:
            self.defaulted = True
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
