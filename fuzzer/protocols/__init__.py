"""Protocol registry: every module under this package that defines a `Protocol` subclass with a
`name` is a protocol. Workers and the CLI load protocols only from here (or a configured
directory), never from job payloads."""

from __future__ import annotations

import importlib
import pkgutil

from ..protocol import Protocol


class UnknownProtocol(LookupError):
    pass


_REGISTRY: dict[str, type[Protocol]] | None = None


def registry() -> dict[str, type[Protocol]]:
    global _REGISTRY
    if _REGISTRY is None:
        found: dict[str, type[Protocol]] = {}
        for info in pkgutil.walk_packages(__path__, __name__ + "."):
            mod = importlib.import_module(info.name)
            for obj in vars(mod).values():
                if (isinstance(obj, type) and issubclass(obj, Protocol) and obj is not Protocol
                        and obj.__module__ == mod.__name__ and obj.variants):
                    found[obj.name] = obj
        _REGISTRY = dict(sorted(found.items()))
    return _REGISTRY


def resolve(spec: str) -> tuple[type[Protocol], str]:
    """`PROTOCOL[:VARIANT]` -> (class, variant). The first variant is the default."""
    name, _, variant = spec.partition(":")
    reg = registry()
    cls = reg.get(name)
    if cls is None:
        raise UnknownProtocol(
            f"unknown protocol {name!r}; known: {', '.join(reg)} (see `patchfuzz protocols`)")
    if not variant:
        variant = next(iter(cls.variants))
    if variant not in cls.variants:
        raise UnknownProtocol(
            f"unknown variant {variant!r} of {name}; known: {', '.join(cls.variants)}")
    return cls, variant
