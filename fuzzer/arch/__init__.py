"""Architecture models, by name."""

from __future__ import annotations

from .arm import Arm
from .arm64 import Arm64
from .base import Arch, Image, Rule, SiteLayout
from .riscv64 import Riscv64
from .thumb2 import Thumb2
from .x86_64 import X86_64

ARCHES: dict[str, type[Arch]] = {"x86_64": X86_64, "arm64": Arm64, "riscv64": Riscv64, "arm": Arm, "thumb2": Thumb2}


def get_arch(name: str, options: tuple[str, ...] = ()) -> Arch:
    """The model of `name` with `options` (its OPTIONS) switched on."""
    return ARCHES[name](options)


def litmus_arch(header: str) -> str | None:
    """The model that runs litmus tests whose header names `header` ("AArch64"), or None."""
    return next((name for name, cls in ARCHES.items() if cls.litmus_name == header), None)


__all__ = ["ARCHES", "Arch", "Image", "Rule", "SiteLayout", "get_arch", "litmus_arch"]
