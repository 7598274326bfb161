"""The regression corpus: one readable JSON file per case, and its replay.

A case names a protocol, variant and configuration, a schedule, and what it must do: reproduce
a signature (a bug case) or stay clean (a control). Replay reports regressions both ways, a
control that now crashes or a bug that no longer reproduces, and reports a case it cannot read
(corrupt, incomplete, unknown protocol, other schedule format) by name while the rest still run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from . import ENGINE_VERSION, SCHEDULE_FORMAT
from .choices import ScheduleError, parse_schedule_hex
from .machine import MAX_CPUS, MIN_CPUS, Config, Machine
from .protocols import UnknownProtocol, resolve

FIELDS = ("protocol", "variant", "cpus", "schedule_format", "schedule", "expect")


class CaseError(ValueError):
    pass


@dataclass
class Case:
    path: Path
    protocol: str
    variant: str
    cpus: int
    schedule: bytes
    expect: dict  # {"verdict": "clean"} or {"verdict": "crash", "signature", "oracle", "title"}
    note: str = ""

    @property
    def name(self) -> str:
        return self.path.name


@dataclass
class Outcome:
    case: str
    status: str  # "pass" | "regression" | "error"
    message: str

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def write_case(path: Path, *, protocol: str, variant: str, cpus: int, schedule: bytes, expect: dict,
               note: str = "") -> None:
    doc = {"protocol": protocol, "variant": variant, "cpus": cpus, "schedule_format": SCHEDULE_FORMAT,
           "engine_version": ENGINE_VERSION, "schedule": schedule.hex(), "expect": expect, "note": note}
    path.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")


def load_case(path: Path) -> Case:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise CaseError(f"unreadable: {e}") from None
    except json.JSONDecodeError as e:
        raise CaseError(f"not valid JSON (line {e.lineno}): {e.msg}") from None
    if not isinstance(doc, dict):
        raise CaseError("not a JSON object")
    missing = [f for f in FIELDS if f not in doc]
    if missing:
        raise CaseError(f"missing field(s): {', '.join(missing)}")
    if doc["schedule_format"] != SCHEDULE_FORMAT:
        raise CaseError(f"made with schedule format {doc['schedule_format']}; this engine reads format "
                        f"{SCHEDULE_FORMAT}: regenerate the case")
    if not isinstance(doc["cpus"], int) or not MIN_CPUS <= doc["cpus"] <= MAX_CPUS:
        raise CaseError(f"cpus must be an integer in {MIN_CPUS}..{MAX_CPUS}")
    expect = doc["expect"]
    if not isinstance(expect, dict) or expect.get("verdict") not in ("clean", "crash") or (
            expect["verdict"] == "crash" and not expect.get("signature")):
        raise CaseError('expect must be {"verdict": "clean"} or {"verdict": "crash", "signature": ...}')
    try:
        schedule = parse_schedule_hex(str(doc["schedule"]))
    except ScheduleError as e:
        raise CaseError(str(e)) from None
    return Case(path, str(doc["protocol"]), str(doc["variant"]), doc["cpus"], schedule, expect,
                str(doc.get("note", "")))


def replay_case(case: Case, machines: dict) -> Outcome:
    key = (case.protocol, case.variant, case.cpus)
    machine = machines.get(key)
    if machine is None:
        try:
            cls, variant = resolve(f"{case.protocol}:{case.variant}")
        except UnknownProtocol as e:
            return Outcome(case.name, "error", str(e))
        machine = machines[key] = Machine(cls, variant, Config(cpus=case.cpus))
    r = machine.run(case.schedule)
    if r.error is not None:  # neither clean nor the bug: the protocol's own code went wrong
        return Outcome(case.name, "regression", r.error.line())
    f = r.finding
    want = case.expect
    if want["verdict"] == "clean":
        if f is None:
            return Outcome(case.name, "pass", "clean")
        return Outcome(case.name, "regression", f"control now crashes: [{f.oracle}] {f.title}")
    if f is not None and f.signature == want["signature"]:
        return Outcome(case.name, "pass", f"reproduces [{f.oracle}] {f.title}")
    got = f"[{f.oracle}] {f.title}" if f else "clean"
    return Outcome(case.name, "regression",
                   f"bug no longer detected: expected [{want.get('oracle')}] {want.get('title')}, got {got}")


def replay_dir(directory: Path) -> list[Outcome]:
    files = sorted(p for p in directory.rglob("*.json"))
    machines: dict = {}
    out = []
    for path in files:
        try:
            case = load_case(path)
        except CaseError as e:
            out.append(Outcome(str(path.relative_to(directory)), "error", str(e)))
            continue
        result = replay_case(case, machines)
        result.case = str(path.relative_to(directory))
        out.append(result)
    return out


def junit_xml(outcomes: list[Outcome]) -> str:
    from xml.sax.saxutils import escape, quoteattr

    fails = sum(o.status == "regression" for o in outcomes)
    errors = sum(o.status == "error" for o in outcomes)
    lines = ['<?xml version="1.0" encoding="utf-8"?>',
             f'<testsuite name="patchfuzz-corpus" tests="{len(outcomes)}" failures="{fails}" errors="{errors}">']
    for o in outcomes:
        lines.append(f"  <testcase classname=\"corpus\" name={quoteattr(o.case)}>")
        if o.status == "regression":
            lines.append(f"    <failure message={quoteattr(o.message)}>{escape(o.message)}</failure>")
        elif o.status == "error":
            lines.append(f"    <error message={quoteattr(o.message)}>{escape(o.message)}</error>")
        lines.append("  </testcase>")
    lines.append("</testsuite>")
    return "\n".join(lines) + "\n"


def build(directory: Path, seed: int = 1, cpus: int = 4, only: str = "") -> list[Path]:
    """(Re)generate the corpus: a minimized reproducer for every buggy variant, and for every
    variant expected clean, controls that drive into the same windows: the empty schedule, the
    reproducers of its buggy twins (same protocol), and a few random schedules. Every case is
    replayed before it is written. `only`: the protocols whose names start with it (a new
    protocol's cases, the others' left as they are)."""
    from .campaign import fuzz
    from .minimize import minimize
    from .protocols import registry
    from .strategies.random import RandomStrategy

    written: list[Path] = []
    reproducers: dict[str, list[bytes]] = {}
    protocols = {name: cls for name, cls in registry().items() if name.startswith(only)}
    for name, cls in protocols.items():
        folder = directory / name.replace("/", "_")
        folder.mkdir(parents=True, exist_ok=True)
        for variant, want in cls.expect.items():
            if not want:
                continue
            m = Machine(cls, variant, Config(cpus=cpus))
            res = fuzz(m, RandomStrategy(seed=seed), schedules=20000, stop_on={want})
            rec = next(c for c in res.crashes.values() if c.finding.oracle == want)
            small = minimize(m, rec.schedule)[0]  # the full budget: each reproducer a fixed point
            f = m.run(small).finding
            path = folder / f"{variant}.json"
            write_case(path, protocol=name, variant=variant, cpus=cpus, schedule=small,
                       expect={"verdict": "crash", "signature": f.signature, "oracle": f.oracle, "title": f.title},
                       note=f"minimized reproducer, found by random search (seed {seed})")
            written.append(path)
            reproducers.setdefault(name, []).append(small)
    rng = RandomStrategy(seed=seed + 1)
    for name, cls in protocols.items():
        folder = directory / name.replace("/", "_")
        for variant, want in cls.expect.items():
            if want:
                continue
            m = Machine(cls, variant, Config(cpus=cpus))
            controls = [(b"", "the default schedule")]
            controls += [(s, "a buggy twin's reproducer: the same windows, must stay clean")
                         for s in reproducers.get(name, [])]
            controls += [(rng.next_schedule(), f"random schedule (seed {seed + 1})") for _ in range(3)]
            for i, (sched, note) in enumerate(controls):
                r = m.run(sched)
                if r.finding is not None or not r.completed:
                    continue
                path = folder / f"{variant}--control-{i}.json"
                write_case(path, protocol=name, variant=variant, cpus=cpus, schedule=sched,
                           expect={"verdict": "clean"}, note=note)
                written.append(path)
    return written


def main(argv: list[str] | None = None) -> None:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m fuzzer.regress",
                                 description="Regenerate the regression corpus (after a schedule-format change).")
    ap.add_argument("directory", nargs="?", default="corpus", type=Path)
    ap.add_argument("--only", default="", help="only the protocols whose names start with this")
    args = ap.parse_args(argv)
    for p in build(args.directory, only=args.only):
        print(p)


if __name__ == "__main__":
    main()
