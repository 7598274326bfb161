"""Ctrl-C and SIGTERM during a campaign. The first ends the search; what it found is then stored
with signals held back (a signal landing inside a database write would lose that write), and a
second one during the short minimization that follows skips it."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager


class Interrupts:
    """Turns SIGINT and SIGTERM into KeyboardInterrupt where it is safe to stop, and counts
    them where it is not."""

    def __init__(self) -> None:
        self.count = 0  # signals received so far
        self._held = 0  # depth of `held()` blocks: a signal now is raised when the outermost ends

    @contextmanager
    def installed(self) -> Iterator[None]:
        """The handlers for the block; the previous ones after it."""
        saved = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, handler in saved.items():
                signal.signal(s, handler)

    def _on_signal(self, signum: int, frame: object) -> None:
        self.count += 1
        if not self._held:
            raise KeyboardInterrupt

    def requested(self) -> bool:
        """A signal has come. Python drops an exception raised inside a __del__ (it only prints
        it), so loops ask this too rather than trust that the KeyboardInterrupt arrived."""
        return self.count > 0

    @contextmanager
    def held(self) -> Iterator[None]:
        """Signals wait until the block ends; then the first of them is raised."""
        before = self.count
        self._held += 1
        try:
            yield
        finally:
            self._held -= 1
        if not self._held and self.count > before:
            raise KeyboardInterrupt

    @contextmanager
    def stoppable(self) -> Iterator[None]:
        """A signal inside the block raises KeyboardInterrupt at once, even inside `quiet()`."""
        saved, self._held = self._held, 0
        try:
            yield
        finally:
            self._held = saved

    @contextmanager
    def quiet(self) -> Iterator[None]:
        """Signals are counted and never raised inside the block or at its end."""
        self._held += 1
        try:
            yield
        finally:
            self._held -= 1
