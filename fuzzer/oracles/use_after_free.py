"""use-after-free: a handler touches protocol memory whose lifetime has ended (`k.free`)."""

from __future__ import annotations

from .base import Oracle


class UseAfterFree(Oracle):
    id = "use-after-free"
    fires_when = "a handler touches protocol memory whose lifetime has ended"
    TITLES = {"uaf": "use after free of {var} in {where}"}

    def on_freed_access(self, cpu, frame, var) -> None:
        where = self.m.frame_name(frame)
        self.report(cpu, "uaf", f"{var} was freed before this access", var=var, where=where)
