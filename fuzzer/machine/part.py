"""The base of the machine's parts: each holds the machine (`m`) and caches the sibling parts it
calls (`SIBLINGS`), bound once every part exists. A part declares which of its own attributes
are not machine state, with the reason (`NOT_STATE`); `Machine.unclassified_state` checks that
every other attribute is in its `state()`."""

from __future__ import annotations

from typing import Any, ClassVar


class Part:
    SIBLINGS: ClassVar[tuple[str, ...]] = ()
    NOT_STATE: ClassVar[dict[str, str]] = {}

    def __init__(self, machine: Any) -> None:
        self.m = machine

    def bind(self) -> None:
        """Cache the sibling parts this one calls (all exist once the machine is built)."""
        for name in self.SIBLINGS:
            setattr(self, name, getattr(self.m, name))

    # The ops this part gives meaning to, by op type: their handlers, the readiness checks of the
    # blocking ones, and the effects a yield itself has (called when the coroutine yields it).
    def handlers(self) -> dict:
        return {}

    def readiness(self) -> dict:
        return {}

    def on_yield(self) -> dict:
        return {}

    @classmethod
    def not_state(cls) -> set[str]:
        return {"m", *cls.SIBLINGS, *cls.NOT_STATE}
