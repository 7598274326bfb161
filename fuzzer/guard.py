"""Guarding the machine against the protocol's own code.

A protocol is user code, and its mistakes are normal input: a coroutine that raises, one that
yields something that is not an op, one that runs on without ever yielding. None of them may
look like a clean run or like an oracle's finding: each ends the run with a `ProtocolError`,
its own outcome, naming the protocol's file and line and what was wrong.

The watchdog stops a protocol's code that runs too long between two ops (`Config.op_timeout`
seconds; the shipped protocols take microseconds): the machine counts every entry into
protocol code, a daemon thread samples the count, and when protocol code has been running with
the count unchanged for the budget, it raises `ProtocolTimeout` in the machine's thread (at the
next bytecode, so a `while True: pass` stops too).
"""

from __future__ import annotations

import ctypes
import os
import threading
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path

_ENGINE = Path(__file__).resolve().parent  # fuzzer/
_PROTOCOLS = _ENGINE / "protocols"


@dataclass
class ProtocolError:
    """What was wrong with the protocol's code, and where."""

    protocol: str
    variant: str
    where: str  # file:line of the protocol's code, or "?"
    what: str  # the exception, the op that was not an op, the timeout
    step: int
    cpu: int

    def to_dict(self) -> dict:
        return asdict(self)

    def line(self) -> str:
        return f"protocol error in {self.protocol}:{self.variant} at {self.where}: {self.what}"


class ProtocolFault(Exception):
    """Raised inside the machine when the protocol's code went wrong; ends the run."""

    def __init__(self, what: str, where: str = "?", cpu: int = -1) -> None:
        super().__init__(what)
        self.what = what
        self.where = where
        self.cpu = cpu


class ProtocolTimeout(BaseException):  # noqa: N818 - raised into the protocol's code; a BaseException
    """Raised asynchronously into protocol code that ran past its budget (a BaseException, so
    that the protocol's own `except Exception` cannot swallow it)."""


def _is_engine(filename: str) -> bool:
    try:
        path = Path(filename).resolve()
    except (OSError, ValueError):
        return False
    return _ENGINE in path.parents and _PROTOCOLS not in path.parents


def where(tb) -> str:
    """file:line of the innermost frame of a traceback that is not the engine's own code."""
    frames = [f for f in traceback.extract_tb(tb) if not _is_engine(f.filename)]
    if not frames:
        return "?"
    f = frames[-1]
    return f"{os.path.relpath(f.filename) if not os.path.isabs(f.filename) else f.filename}:{f.lineno}"


def where_suspended(gen) -> str:
    """file:line where a suspended coroutine (and the sub-coroutine it delegates to) stands."""
    g, last = gen, "?"
    while g is not None and getattr(g, "gi_frame", None) is not None:
        fr = g.gi_frame
        if not _is_engine(fr.f_code.co_filename):
            last = f"{fr.f_code.co_filename}:{fr.f_lineno}"
        g = getattr(g, "gi_yieldfrom", None)
    return last


def protected(cpu: int, fn, *args):
    """Call the protocol's `fn` (a predicate, a handler, a hook) under the watchdog; what it
    raises becomes a ProtocolFault."""
    wd = WATCHDOG
    wd.entries += 1
    wd.inside = True
    try:
        return fn(*args)
    except (Exception, ProtocolTimeout) as e:
        if isinstance(e, ProtocolFault):
            raise
        raise fault_from(e, cpu) from None
    finally:
        wd.inside = False


def fault_from(exc: BaseException, cpu: int = -1) -> ProtocolFault:
    """The fault of protocol code that raised `exc` (or was stopped by the watchdog)."""
    if isinstance(exc, ProtocolTimeout):
        text = (f"ran for {WATCHDOG.budget:g} s without yielding an op (the watchdog's budget, "
                "Config.op_timeout / --op-timeout)")
    else:
        text = f"{type(exc).__name__}: {exc}"
    return ProtocolFault(text, where(exc.__traceback__), cpu)


class Watchdog:
    """One per process, armed by each run for its thread and budget. `inside` is set while
    protocol code runs and `entries` counts entries into it; the sampler fires when protocol
    code has been running for `budget` seconds with `entries` unchanged."""

    def __init__(self) -> None:
        self.budget = 0.0  # 0: off
        self.inside = False
        self.entries = 0
        self.fired = False
        self._thread_id = threading.get_ident()
        self._sampler: threading.Thread | None = None

    def arm(self, budget: float | None) -> None:
        self.budget = budget or 0.0
        self._thread_id = threading.get_ident()
        self.inside = False
        if self.budget and self._sampler is None:
            self._sampler = threading.Thread(target=self._run, name="patchfuzz-watchdog", daemon=True)
            self._sampler.start()

    def disarm(self) -> None:
        """After a run: an exception the sampler raised too late (the protocol's code had just
        returned) must not land in whatever runs next."""
        self.inside = False
        if self.fired:
            ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(self._thread_id), None)
            self.fired = False

    def _run(self) -> None:
        seen, since = -1, time.monotonic()
        while True:
            time.sleep(max(0.01, (self.budget or 1.0) / 4))
            now = time.monotonic()
            if not self.budget or not self.inside or self.entries != seen:
                seen, since = self.entries, now
                continue
            if now - since >= self.budget:
                self.fired = True
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(self._thread_id),
                                                           ctypes.py_object(ProtocolTimeout))
                seen, since = -1, now


WATCHDOG = Watchdog()
