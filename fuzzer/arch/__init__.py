"""Architecture models, by name."""

from __future__ import annotations

from .base import Arch, Image, Rule, SiteLayout
from .x86_64 import X86_64

ARCHES: dict[str, type[Arch]] = {"x86_64": X86_64}


def get_arch(name: str) -> Arch:
    return ARCHES[name]()


__all__ = ["ARCHES", "Arch", "Image", "Rule", "SiteLayout", "get_arch"]
