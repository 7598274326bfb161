"""`patchfuzz litmus`: herd7 litmus tests run on the architecture models, and their agreement
with a verdict file (herdtools7's `kinds.txt` format)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from xml.etree import ElementTree as ET

import click
from rich.table import Table

from ..console import Seconds, UserError, console
from ..litmus import LitmusError, parse_file, parse_kinds
from ..litmus_run import DISAGREEMENTS, Outcome, run_test, witness_trace
from .group import main

STATUS_ORDER = ("agree", "model too weak", "model too strong", "unsupported", "inconclusive", "no expectation")
STYLE = {"agree": "green", "model too weak": "bold red", "model too strong": "bold red",
         "unsupported": "yellow", "inconclusive": "yellow", "no expectation": ""}


def collect(paths: tuple[str, ...]) -> list[Path]:
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(p.rglob("*.litmus"))
            if not found:
                raise UserError(f"{p}: no .litmus files in this directory")
            files += found
        elif p.is_file():
            files.append(p)
        else:
            raise UserError(f"{p}: no such file or directory")
    return files


def read_expect(path: str) -> dict[str, str]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"--expect {path}: cannot read it ({e.strerror or e})") from None
    try:
        return parse_kinds(text, path)
    except LitmusError as e:
        raise UserError(f"--expect {e}") from None


def summary(outcomes: list[Outcome]) -> dict:
    counts = {s: sum(o.status == s for o in outcomes) for s in STATUS_ORDER}
    judged = counts["agree"] + sum(counts[s] for s in DISAGREEMENTS)
    return {"tests": len(outcomes), **counts, "agreement": f"{counts['agree']}/{judged}",
            "seconds": round(sum(o.seconds for o in outcomes), 2)}


def junit(outcomes: list[Outcome], path: str) -> None:
    s = summary(outcomes)
    suite = ET.Element("testsuite", name="patchfuzz litmus", tests=str(len(outcomes)),
                       failures=str(s["model too weak"] + s["model too strong"]),
                       skipped=str(s["unsupported"] + s["inconclusive"]), time=f"{s['seconds']:.3f}")
    for o in outcomes:
        case = ET.SubElement(suite, "testcase", classname="litmus", name=o.name, file=o.path,
                             time=f"{o.seconds:.3f}")
        if o.status in DISAGREEMENTS:
            ET.SubElement(case, "failure", message=f"{o.status}: expected {o.expected}, model says {o.verdict}",
                          type=o.status).text = f"witness schedule: {o.witness}" if o.witness else ""
        elif o.status in ("unsupported", "inconclusive"):
            ET.SubElement(case, "skipped", message=f"{o.status}: {o.reason}")
    try:
        ET.ElementTree(suite).write(path, encoding="utf-8", xml_declaration=True)
    except OSError as e:
        raise UserError(f"--junit {path}: cannot write it ({e.strerror or e})") from None


def table(outcomes: list[Outcome]) -> Table:
    t = Table(title="litmus tests on the model")
    for col in ("test", "expected", "model", "agreement", "time", "runs", "note"):
        t.add_column(col, justify="right" if col in ("time", "runs") else "left")
    for o in outcomes:
        note = o.reason or (f"bounded by {o.bounds.get('max_steps')} steps (a loop)" if o.loops else "")
        t.add_row(o.name, o.expected or "-", o.verdict, f"[{STYLE[o.status]}]{o.status}[/]" if STYLE[o.status]
                  else o.status, f"{o.seconds:.2f} s", str(o.runs), note)
    return t


@main.command("litmus")
@click.argument("paths", nargs=-1, required=True)
@click.option("--expect", "expect_path", metavar="KINDS", help="A verdict file (`name Allowed|Forbidden|"
              "Required` per line, herdtools7's kinds.txt) to compare with: prints the agreement.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON instead of a table.")
@click.option("--junit", "junit_path", metavar="FILE", help="Also write the results as JUnit XML.")
@click.option("--max-runs", type=click.IntRange(min=0), default=0, show_default=True,
              help="Runs per test before its search is cut short (inconclusive); 0: no limit.")
@click.option("--seconds", type=Seconds(zero_ok=True), default=0.0, show_default=True,
              help="Seconds per test before its search is cut short (inconclusive); 0: no limit.")
@click.option("--trace", "show_trace", is_flag=True, help="After the table, the trace of each witness: "
              "the execution that reaches a test's final condition.")
@click.option("--arch-opt", "arch_opts", multiple=True, metavar="OPTION",
              help="Switch on an option of the architecture model for every test, besides what its "
                   "CacheType header asks for (`patchfuzz rules ARCH` lists them; repeatable).")
def litmus(paths: tuple[str, ...], expect_path: str | None, as_json: bool, junit_path: str | None,
           max_runs: int, seconds: float, show_trace: bool, arch_opts: tuple[str, ...]) -> None:
    """Run herd7 litmus tests (files, or directories of .litmus files) on the architecture
    model their header names: Allowed if the final condition is reached, Forbidden if an
    exhaustive search within the bounds the JSON reports never reaches it. Exit 1 if any
    verdict disagrees with --expect."""
    files = collect(paths)
    expect = read_expect(expect_path) if expect_path else {}
    outcomes: list[Outcome] = []
    witnesses = []
    err = console(stderr=True)
    for f in files:
        try:
            test = parse_file(f)
        except LitmusError as e:
            outcomes.append(Outcome(name=f.stem, path=str(f), verdict="unsupported", reason=str(e),
                                    expected=expect.get(f.stem)))
            continue
        if not as_json and sys.stderr.isatty():
            err.print(f"[dim]{test.name} ...[/]", end="\r")
        outcomes.append(run_test(test, expect.get(test.name), max_runs=max_runs, seconds=seconds,
                                 options=arch_opts))
        if show_trace and outcomes[-1].witness:
            witnesses.append((test, outcomes[-1]))
    s = summary(outcomes)
    if as_json:
        click.echo(json.dumps({"summary": s, "tests": [o.to_dict() for o in outcomes]}, indent=1))
    else:
        out = console()
        out.print(table(outcomes))
        parts = [f"{s[k]} {k}" for k in STATUS_ORDER[1:] if s[k]]
        out.print(f"{s['tests']} tests: agreement {s['agreement']}" + (f"; {', '.join(parts)}" if parts else "")
                  + f"; {s['seconds']:.1f} s")
        for test, o in witnesses:
            click.echo(f"\n{test.name}: the witness (schedule {o.witness})")
            for line in witness_trace(test, o):
                click.echo(line)
    if junit_path:
        junit(outcomes, junit_path)
    if any(o.status in DISAGREEMENTS for o in outcomes):
        sys.exit(1)
