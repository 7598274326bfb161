"""Protocol registry: every module under this package that defines a `Protocol` subclass with a
`name` is a protocol, and so is every `*.py` file in the directories named by
$PATCHFUZZ_PROTOCOL_DIR (os.pathsep-separated; set by whoever runs the CLI or the workers, so a
kernel developer can fuzz a new scheme without touching the package). Workers and the CLI load
protocols only from these places, never from job payloads."""

from __future__ import annotations

import importlib
import importlib.util
import os
import pkgutil
import sys
from pathlib import Path
from types import ModuleType

from ..protocol import Protocol

ENV_DIR = "PATCHFUZZ_PROTOCOL_DIR"


class UnknownProtocol(LookupError):
    pass


class ProtocolDirError(UnknownProtocol):
    """A configured protocol directory or file cannot be used."""


def _protocols_in(mod: ModuleType) -> list[type[Protocol]]:
    return [obj for obj in vars(mod).values()
            if isinstance(obj, type) and issubclass(obj, Protocol) and obj is not Protocol
            and obj.__module__ == mod.__name__ and obj.variants]


def _user_modules() -> list[ModuleType]:
    mods = []
    for entry in filter(None, os.environ.get(ENV_DIR, "").split(os.pathsep)):
        directory = Path(entry)
        if not directory.is_dir():
            raise ProtocolDirError(f"${ENV_DIR} names {directory}, which is not a directory")
        for path in sorted(directory.glob("*.py")):
            name = f"patchfuzz_user_protocols.{path.stem}"
            try:
                spec = importlib.util.spec_from_file_location(name, path)
                mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
                sys.modules[name] = mod  # dataclasses and pickling look modules up by name
                spec.loader.exec_module(mod)  # type: ignore[union-attr]
            except Exception as e:  # a user's file: say which one and why, in one line
                sys.modules.pop(name, None)
                raise ProtocolDirError(f"cannot load protocol file {path}: {type(e).__name__}: {e}") from None
            mods.append(mod)
    return mods


_REGISTRY: dict[str, type[Protocol]] | None = None


def registry() -> dict[str, type[Protocol]]:
    global _REGISTRY
    if _REGISTRY is None:
        found: dict[str, type[Protocol]] = {}
        for info in pkgutil.walk_packages(__path__, __name__ + "."):
            for cls in _protocols_in(importlib.import_module(info.name)):
                found[cls.name] = cls
        for mod in _user_modules():
            for cls in _protocols_in(mod):
                if cls.name in found:
                    raise ProtocolDirError(f"protocol {cls.name!r} in {mod.__file__} is already defined by "
                                           f"{found[cls.name].__module__}; give it another name")
                found[cls.name] = cls
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
