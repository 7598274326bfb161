"""docker-compose.yml read and validated as Docker Compose does, without Docker or a system package:

1. YAML, with anchors and merge keys (`<<: *farm`);
2. interpolation from a given environment, by the Compose specification's rules: `$$`, `$VAR`,
   `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:?error}`, `${VAR?error}`,
   `${VAR:+replacement}`, `${VAR+replacement}` (nested in defaults too);
3. the Compose specification's JSON schema (tests/data/compose-spec.json, draft 7);
4. what the schema cannot say and Compose refuses all the same: a service runs an image or
   builds one, depends_on names services of the file, a `service_healthy` dependency has a
   healthcheck, a named volume is declared under the top-level `volumes`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft7Validator
from jsonschema.exceptions import best_match

SCHEMA = Path(__file__).resolve().parent / "data" / "compose-spec.json"
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
OPERATORS = (":-", ":?", ":+", "-", "?", "+")  # two-character ones first


class ComposeError(Exception):
    """The file is not a valid Compose file; the message lists every problem, one per line."""


# ---------------------------------------------------------------------------------------------
# Interpolation


def _closing_brace(s: str, start: int) -> int:
    depth = 1
    for i in range(start, len(s)):
        if s[i] == "{":
            depth += 1
        elif s[i] == "}":
            depth -= 1
            if depth == 0:
                return i
    return -1


def _substitute(body: str, env: Mapping[str, str], where: str) -> str:
    m = NAME.match(body)
    if m is None:
        raise ComposeError(f"{where}: invalid interpolation format ${{{body}}}")
    name, rest = m.group(), body[m.end():]
    value = env.get(name)
    if rest == "":
        return value or ""
    op = next((op for op in OPERATORS if rest.startswith(op)), None)
    if op is None:
        raise ComposeError(f"{where}: invalid interpolation format ${{{body}}}")
    arg = rest[len(op):]
    empty_counts_as_unset = op.startswith(":")
    present = value is not None and (value != "" or not empty_counts_as_unset)
    if op.endswith("-"):
        return value if present else interpolate(arg, env, where)
    if op.endswith("?"):
        if not present:
            raise ComposeError(f"{where}: required variable {name} is missing a value: "
                               f"{interpolate(arg, env, where)}")
        return value
    return interpolate(arg, env, where) if present else ""  # "+": the replacement when set


def interpolate(s: str, env: Mapping[str, str], where: str = "") -> str:
    out: list[str] = []
    i = 0
    while i < len(s):
        if s[i] != "$":
            out.append(s[i])
            i += 1
        elif s.startswith("$$", i):
            out.append("$")
            i += 2
        elif s.startswith("${", i):
            end = _closing_brace(s, i + 2)
            if end < 0:
                raise ComposeError(f"{where}: invalid interpolation format {s!r} (unterminated ${{)")
            out.append(_substitute(s[i + 2:end], env, where))
            i = end + 1
        elif m := NAME.match(s, i + 1):
            out.append(env.get(m.group()) or "")
            i = m.end()
        else:
            raise ComposeError(f"{where}: invalid interpolation format {s!r} (a lone $; write $$)")
    return "".join(out)


def _interpolate_tree(node: Any, env: Mapping[str, str], path: str) -> Any:
    if isinstance(node, str):
        return interpolate(node, env, path or "(top level)")
    if isinstance(node, dict):
        return {k: _interpolate_tree(v, env, f"{path}.{k}" if path else str(k)) for k, v in node.items()}
    if isinstance(node, list):
        return [_interpolate_tree(v, env, f"{path}[{i}]") for i, v in enumerate(node)]
    return node


# ---------------------------------------------------------------------------------------------
# Loading and checking


def load(text: str, env: Mapping[str, str]) -> dict:
    """The file as Compose sees it: YAML with merge keys resolved, variables interpolated."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ComposeError(f"not YAML: {e}") from None
    if not isinstance(doc, dict):
        raise ComposeError("a Compose file is a mapping at the top level")
    return _interpolate_tree(doc, env, "")


@cache
def validator() -> Draft7Validator:
    schema = json.loads(SCHEMA.read_text())
    return Draft7Validator(schema, format_checker=Draft7Validator.FORMAT_CHECKER)


def schema_errors(doc: dict) -> list[str]:
    errors = sorted(validator().iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))
    # best_match descends into a oneOf's alternatives: "'x' is not one of [...]" rather than
    # "... is not valid under any of the given schemas"
    shown = [best_match([e]) for e in errors]
    return [f"{e.json_path}: {e.message}" for e in shown]


def _depends_on(service: dict) -> dict[str, dict]:
    deps = service.get("depends_on") or {}
    return {name: {"condition": "service_started"} for name in deps} if isinstance(deps, list) else deps


def _is_named_volume(source: str) -> bool:
    return not source.startswith((".", "/", "~", "$"))


def reference_errors(doc: dict) -> list[str]:
    services: dict = doc.get("services") or {}
    volumes: dict = doc.get("volumes") or {}
    errors = []
    for name, service in services.items():
        if not isinstance(service, dict):
            continue  # the schema reports it
        where = f"$.services.{name}"
        if "image" not in service and "build" not in service:
            errors.append(f"{where}: has neither an image nor a build")
        for dep, how in _depends_on(service).items():
            if dep not in services:
                errors.append(f"{where}.depends_on: no service named {dep!r}")
            elif isinstance(how, dict) and how.get("condition") == "service_healthy":
                check = services[dep].get("healthcheck") or {}
                if not check or check.get("disable") is True:
                    errors.append(f"{where}.depends_on: {dep!r} must be healthy but has no healthcheck")
        for mount in service.get("volumes") or []:
            if isinstance(mount, str):
                source = mount.split(":", 1)[0] if ":" in mount else None
            else:
                source = mount.get("source") if mount.get("type") == "volume" else None
            if source and _is_named_volume(source) and source not in volumes:
                errors.append(f"{where}.volumes: volume {source!r} is not declared under the top-level volumes")
    return errors


def check(text: str, env: Mapping[str, str]) -> dict:
    """The interpolated document, or ComposeError listing everything wrong with it."""
    doc = load(text, env)
    errors = schema_errors(doc) or reference_errors(doc)  # references only mean something in a valid file
    if errors:
        raise ComposeError("\n".join(errors))
    return doc
