"""The engine's own commands: protocols, run, bench, minimize, replay, rules, oracles."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from .. import ENGINE_VERSION, SCHEDULE_FORMAT
from ..console import Seconds, UserError
from ..diagram_text import render_text
from ..machine import MAX_CPUS, MIN_CPUS
from ..minimize import DEFAULT_ORDER, ORDERS
from ..oracles import ORACLES
from ..protocols import UnknownProtocol, registry, resolve
from ..strategies import STRATEGIES
from .common import (
    EXIT_PROTOCOL_ERROR,
    arch_opt_option,
    build_machine,
    check_timeline,
    diagram_option,
    exit_protocol_error,
    focused,
    op_timeout_option,
    race_diagram,
    read_schedule,
    smz_option,
    write_timeline,
)
from .group import main


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def protocols(as_json: bool) -> None:
    """List protocols and their variants, one line each."""
    rows = []
    try:
        known = registry()
    except UnknownProtocol as e:  # a broken file in $PATCHFUZZ_PROTOCOL_DIR
        raise UserError(str(e)) from None
    for name, cls in known.items():
        for variant in cls.variants:
            exp = cls.expect.get(variant)
            rows.append({"protocol": name, "variant": variant, "arch": cls.arch,
                         "expect": exp or "clean", "summary": cls.summary})
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    width = max(len(f"{r['protocol']}:{r['variant']}") for r in rows)
    ewidth = max(len(r["expect"]) for r in rows)
    for r in rows:
        click.echo(f"{r['protocol'] + ':' + r['variant']:<{width}}  expect {r['expect']:<{ewidth}} {r['summary']}")


@main.command()
@click.argument("spec", metavar="PROTOCOL[:VARIANT]")
@click.option("--schedule", "schedule", required=True, metavar="HEX|@FILE",
              help="Schedule bytes as hex, or @FILE holding the hex.")
@click.option("--cpus", default=4, show_default=True, type=int)
@click.option("--trace", is_flag=True, help="Print the event trace.")
@diagram_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@smz_option
@arch_opt_option
@op_timeout_option
def run(spec: str, schedule: str, cpus: int, trace: bool, focus: bool | None, timeline: Path | None,
        race_diagram_text: bool, as_json: bool, stop_machine_serializes: bool | None,
        arch_opts: tuple[str, ...], op_timeout: float) -> None:
    """Replay one schedule and report the verdict (exit 0 clean, 1 a finding, 3 the protocol's
    own code went wrong)."""
    check_timeline(timeline)
    data = read_schedule(schedule)
    machine = build_machine(spec, cpus, stop_machine_serializes, op_timeout, arch_opts)
    result = machine.run(data, trace=True)
    lines = focused(machine, data, result) if focus else result.trace
    f = result.finding
    text: list[str] = []
    if timeline is not None or race_diagram_text:
        title = f"{spec} [{f.oracle}] {f.title}" if f else f"{spec}: {result.verdict}"
        diagram = race_diagram(machine, data, result, title, focus is not False)
        if timeline is not None:
            write_timeline(timeline, diagram, lines)
        text = render_text(diagram) if race_diagram_text else []
    out = {
        "protocol": machine.protocol_cls.name,
        "variant": machine.variant,
        "cpus": cpus,
        "verdict": result.verdict,
        "oracle": f.oracle if f else None,
        "title": f.title if f else None,
        "signature": f.signature if f else None,
        "detail": f.detail if f else None,
        "consequence": f.consequence if f else [],
        "steps": result.steps,
        "completed": result.completed,
        "schedule_bytes_used": result.schedule_used,
        "schedule_format": SCHEDULE_FORMAT,
        "engine_version": ENGINE_VERSION,
        "trace_sha256": result.trace_sha256,
        "error": result.error.to_dict() if result.error else None,
    }
    if trace and as_json:
        out["trace"] = result.trace
    if focus and as_json:
        out["focus"] = lines
    if race_diagram_text and as_json:
        out["race_diagram"] = text
    if as_json:
        click.echo(json.dumps(out, indent=2))
    else:
        if trace or focus or race_diagram_text:
            for line in text or lines:
                click.echo(line)
            click.echo("")
        if result.error:
            click.echo(f"PROTOCOL ERROR at {result.error.where}: {result.error.what}")
            click.echo("  the protocol's own code went wrong (not a verdict about the scheme); fix it and "
                       "replay this schedule")
        elif f:
            click.echo(f"CRASH [{f.oracle}] {f.title}")
            click.echo(f"  {f.detail}")
            for line in f.consequence:
                click.echo(f"  consequence: {line}")
            click.echo(f"  signature {f.signature}, step {f.step} on cpu{f.cpu}")
        else:
            click.echo(f"clean ({result.steps} steps, protocol {'completed' if result.completed else 'did not complete'})")
        click.echo(f"trace sha256 {result.trace_sha256}")
    if result.error:
        sys.exit(EXIT_PROTOCOL_ERROR)
    if f:
        sys.exit(1)


@main.command()
@click.option("--strategies", default=",".join(STRATEGIES), show_default=True)
@click.option("--trials", type=int, default=5, show_default=True)
@click.option("--cap", type=Seconds(), default=60.0, show_default=True, help="Seconds per trial.")
@click.option("--cpus", type=int, default=4, show_default=True)
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--variants", default=None, help="Comma-separated PROTOCOL:VARIANT list (default: every buggy variant).")
@click.option("--count", type=int, default=3000, show_default=True,
              help="Schedules per throughput pass on the reference scenario.")
@click.option("--throughput-only", is_flag=True)
@click.option("--json", "as_json", is_flag=True, help="Print a list of rows.")
def bench(strategies: str, trials: int, cap: float, cpus: int, seed: int, variants: str | None,
          count: int, throughput_only: bool, as_json: bool) -> None:
    """Measure throughput and time-to-first-finding per strategy (see BENCHMARKS.md)."""
    from .. import bench as b

    names = [x for x in strategies.split(",") if x]
    unknown = [x for x in names if x not in STRATEGIES]
    if unknown:
        raise UserError(f"unknown strategy {unknown[0]!r}; known: {', '.join(STRATEGIES)}")
    if not MIN_CPUS <= cpus <= MAX_CPUS:
        raise UserError(f"--cpus must be between {MIN_CPUS} and {MAX_CPUS}, got {cpus}")
    specs = variants.split(",") if variants else b.buggy_variants()
    for spec in specs:
        try:
            cls, variant = resolve(spec)
        except UnknownProtocol as e:
            raise UserError(str(e)) from None
        if not cls.expect.get(variant):
            raise UserError(f"{spec} is expected clean: bench measures time to a known bug")
    th, others = b.reference_ratios(count=count)
    rows: list[dict] = []
    for ref in (th, *others):
        proto, _, variant = ref["scenario"].partition(":")
        rows.append({"protocol": proto, "variant": variant, "strategy": "random", "kind": "throughput",
                     "trials": ref["repeats"], "found": None, "median_seconds": None,
                     "median_schedules": None, **ref})
    if not as_json:
        click.echo(f"reference {th['scenario']} ({th['cpus']} CPUs): {th['schedules_per_second']} schedules/s "
                   f"(passes {th['all_schedules_per_second']}), {th['steps_per_schedule']} steps/schedule, "
                   f"{th['us_per_step']} us/step, emulator floor {th['emu_start_floor_us']} us")
        for other in others:
            click.echo(b.format_other(other))
        click.echo(b.HEADER)
    if not throughput_only:
        rows += b.search_rows(specs, names, trials, cap, cpus, seed, strategy_cpus={"exhaustive": 2},
                              progress=None if as_json else (lambda r: click.echo(b.format_row(r))))
    if as_json:
        click.echo(json.dumps(rows, indent=2))


@main.command("minimize")
@click.argument("spec", metavar="PROTOCOL[:VARIANT]")
@click.option("--schedule", "schedule", required=True, metavar="HEX|@FILE")
@click.option("--cpus", default=4, show_default=True, type=int)
@click.option("--max-runs", default=20000, show_default=True, type=int)
@click.option("--order", default=DEFAULT_ORDER, show_default=True, metavar="steps|bytes",
              help="What smaller means: steps = fewest scheduling steps, then fewest bytes (a short "
                   "trace); bytes = shortlex on the bytes (a short schedule, round robin after it).")
@click.option("--json", "as_json", is_flag=True)
@smz_option
@arch_opt_option
def minimize_cmd(spec: str, schedule: str, cpus: int, max_runs: int, order: str, as_json: bool,
                 stop_machine_serializes: bool | None, arch_opts: tuple[str, ...]) -> None:
    """Shrink a finding's schedule while the same signature reproduces."""
    from ..minimize import minimize

    if order not in ORDERS:
        raise UserError(f"--order takes {' or '.join(ORDERS)}, got {order!r}")
    if max_runs < 1:
        raise UserError(f"--max-runs must be positive, got {max_runs}")
    data = read_schedule(schedule)
    machine = build_machine(spec, cpus, stop_machine_serializes, arch_opts=arch_opts)
    r = machine.run(data)
    if r.error is not None:
        exit_protocol_error(r.error, as_json)
    f = r.finding
    if f is None:
        raise UserError("that schedule runs clean on this protocol and configuration: nothing to minimize")
    small, before, after, runs = minimize(machine, data, max_runs=max_runs, order=order)
    if as_json:
        click.echo(json.dumps({"oracle": f.oracle, "title": f.title, "signature": f.signature,
                               "order": order, "schedule": small.hex(), "before": before.to_dict(),
                               "after": after.to_dict(), "runs": runs}, indent=2))
        return
    click.echo(f"[{f.oracle}] {f.title}  ({runs} runs, order {order})")
    for name, b, a in (("bytes", before.bytes, after.bytes), ("steps", before.steps, after.steps),
                       ("decisions", before.decisions, after.decisions), ("NMIs", before.nmis, after.nmis), ("preemptions", before.preemptions, after.preemptions),
                       ("foreign traps", before.foreign_traps, after.foreign_traps)):
        click.echo(f"  {name:<14} {b:>5} -> {a}")
    click.echo(f"minimized schedule: {small.hex() or '(empty)'}")


@main.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path), required=False)
@click.option("--junit", "junit", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write a JUnit XML report here.")
@click.option("--json", "as_json", is_flag=True)
def replay(directory: Path | None, junit: Path | None, as_json: bool) -> None:
    """Replay the regression corpus (DIRECTORY, else $PATCHFUZZ_CORPUS, else ./corpus); exit 1
    on a regression either way or an unreadable case."""
    from ..regress import junit_xml, replay_dir

    if directory is None:  # the farm's nightly job reads the same variable
        directory = Path(os.environ.get("PATCHFUZZ_CORPUS") or "corpus")
    if not directory.is_dir():
        raise UserError(f"corpus directory not found: {directory} (give DIRECTORY or set PATCHFUZZ_CORPUS)")
    outcomes = replay_dir(directory)
    if not outcomes:
        raise UserError(f"no cases (*.json) under {directory}")
    if junit:
        junit.write_text(junit_xml(outcomes), encoding="utf-8")
    bad = [o for o in outcomes if o.status != "pass"]
    if as_json:
        click.echo(json.dumps({"corpus": str(directory.resolve()), "cases": len(outcomes),
                               "passed": len(outcomes) - len(bad),
                               "regressions": sum(o.status == "regression" for o in bad),
                               "errors": sum(o.status == "error" for o in bad),
                               "outcomes": [o.to_dict() for o in outcomes]}, indent=2))
    else:
        for o in outcomes:
            click.echo(f"{o.status.upper():<10} {o.case}: {o.message}")
        click.echo(f"corpus {directory.resolve()}: {len(outcomes) - len(bad)} passed, {len(bad)} failed")
    if bad:
        sys.exit(1)


@main.command()
@click.argument("arch", default="x86_64")
def rules(arch: str) -> None:
    """Print an architecture model's rules and the source of each."""
    from ..arch import ARCHES, get_arch

    if arch not in ARCHES:
        raise UserError(f"unknown architecture {arch!r}; known: {', '.join(ARCHES)}")
    model = get_arch(arch)
    click.echo(f"{arch}: fetch unit {model.fetch_unit} byte(s), atomic text store {model.atomic_store} "
               f"byte(s), store buffer {model.store_buffer}, fetch model {model.fetch_model}")
    for i, rule in enumerate(model.RULES, 1):
        click.echo(f"{i}. {rule.what}\n   source: {rule.source}")
    if model.OPTIONS:
        click.echo("options:")
        for name, what in model.OPTIONS.items():
            click.echo(f"  {name}: {what}")


@main.command()
def oracles() -> None:
    """List the oracle ids and what each detects."""
    for oid, what in ORACLES.items():
        click.echo(f"{oid:<22} {what}")
