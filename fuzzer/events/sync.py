"""Records of locks, stop_machine, hotplug, tasks and completion."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..render import Renderer
from .base import Event


@dataclass(slots=True, eq=False)
class Locked(Event):
    lock: str
    mode: str  # mutex, read, write
    category: ClassVar[str] = "lock"

    def text(self, r: Renderer) -> str:
        prefix = {"read": "read-", "write": "write-"}.get(self.mode, "")
        return f"{prefix}lock {self.lock}"

    def writes(self) -> tuple[str, ...]:
        return (self.lock,)


@dataclass(slots=True, eq=False)
class Unlocked(Locked):
    def text(self, r: Renderer) -> str:
        return f"unlock {self.lock}"


@dataclass(slots=True, eq=False)
class LockWait(Event):
    lock: str
    mode: str
    category: ClassVar[str] = "lock wait"

    def text(self, r: Renderer) -> str:
        return f"waits for {self.lock} ({self.mode})"

    def reads(self) -> tuple[str, ...]:
        return (self.lock,)


@dataclass(slots=True, eq=False)
class Parked(Event):
    category: ClassVar[str] = "stop_machine"

    def text(self, r: Renderer) -> str:
        return "enters stop_machine (IRQs off)"


@dataclass(slots=True, eq=False)
class Unparked(Event):
    category: ClassVar[str] = "stop_machine"

    def text(self, r: Renderer) -> str:
        return "leaves stop_machine"


@dataclass(slots=True, eq=False)
class StopMachineRun(Event):
    category: ClassVar[str] = "stop_machine"

    def text(self, r: Renderer) -> str:
        return "stop_machine: all CPUs parked, running callback with IRQs off"


@dataclass(slots=True, eq=False)
class StopMachineRelease(Event):
    category: ClassVar[str] = "stop_machine"

    def text(self, r: Renderer) -> str:
        return "stop_machine: release"


@dataclass(slots=True, eq=False)
class CpuOffline(Event):
    target: int

    def text(self, r: Renderer) -> str:
        return f"cpu{self.target} goes offline"


@dataclass(slots=True, eq=False)
class CpuOnline(Event):
    target: int

    def text(self, r: Renderer) -> str:
        return f"cpu{self.target} comes online"


@dataclass(slots=True, eq=False)
class TaskDone(Event):
    name: str

    def text(self, r: Renderer) -> str:
        return f"{self.name} finished"


@dataclass(slots=True, eq=False)
class Migrated(Event):
    task: str
    target: int

    def text(self, r: Renderer) -> str:
        return f"{self.task} migrates to cpu{self.target}"


@dataclass(slots=True, eq=False)
class Completed(Event):
    def text(self, r: Renderer) -> str:
        return "protocol declares completion"


@dataclass(slots=True, eq=False)
class SitesCompleted(Event):
    sites: tuple[str, ...]  # k.complete(...): the run goes on

    def text(self, r: Renderer) -> str:
        return f"protocol declares the patch of {', '.join(self.sites)} complete"

    def writes(self) -> tuple[str, ...]:
        return self.sites
