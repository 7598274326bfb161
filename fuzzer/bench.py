"""Benchmarks behind `patchfuzz bench` (also `python -m fuzzer.bench`, `make bench`).

* `--instructions N`: only run the reference scenario's first N random schedules (seed 0), for
  counting instructions under `valgrind --tool=callgrind` (N = 250 and 50, difference / 200:
  instructions per schedule, independent of the host's noise).
* Throughput on the reference scenario (x86/text_poke_bp:correct, 4 CPUs, random schedules):
  schedules/s, steps per schedule, microseconds per step, and the emulator floor measured in the
  same process (the cheapest code step), as the ratio step / floor. Median of five passes. The
  same for each other ISA's reference (its twin of text_poke_bp), with its ratio to the x86 one
  measured in the same run (`OTHER_REFERENCES`).
* Search: for each buggy variant and each strategy, K trials with different seeds and a time
  cap; success rate, median seconds and median schedules to the first finding of the expected
  oracle, and schedules per second. A trial that finds nothing counts as infinitely slow, so a
  median exists only when at least half the trials succeed.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import tempfile
import time

from .campaign import fuzz
from .machine import Config, Machine
from .protocols import registry, resolve
from .strategies import STRATEGIES
from .strategies.random import RandomStrategy

REFERENCE = "x86/text_poke_bp:correct"
# each other ISA's reference scenario, measured next to REFERENCE
OTHER_REFERENCES = ("arm64/publish_brk:correct", "riscv64/ftrace_call_ops:correct", "arm/ftrace:correct",
                    "arm/jump_label_thumb2:correct")


def emulator_floor(m: Machine, n: int = 20000) -> float:
    """Microseconds of the cheapest code step: enter the emulator at the caller loop, run the
    call, stop (site hook) in front of the first patch site."""
    hw = m.cpus[1].hw
    m.run(b"")  # warm translations
    entry = m.image.thread_entry
    t = time.perf_counter()
    for _ in range(n):
        hw.restore(hw.thread_context)
        hw.run(entry, 1000)
    per = (time.perf_counter() - t) / n * 1e6
    assert hw.pc() in m.site_by_addr, "floor loop must stop at a site"
    return per


def throughput(spec: str = REFERENCE, cpus: int = 4, count: int = 3000, seed: int = 0,
               repeat: int = 5) -> dict:
    """Median of `repeat` timed passes over the same schedules (this VM is noisy)."""
    cls, variant = resolve(spec)
    m = Machine(cls, variant, Config(cpus=cpus))
    strat = RandomStrategy(seed=seed)
    scheds = [strat.next_schedule() for _ in range(count)]
    passes = []
    for _ in range(repeat):
        steps = 0
        t = time.perf_counter()
        for s in scheds:
            steps += m.run(s).steps
        passes.append((time.perf_counter() - t, steps, emulator_floor(m)))
    passes.sort()
    dt, steps, floor = passes[len(passes) // 2]
    per_step = dt / steps * 1e6
    return {
        "scenario": spec, "cpus": cpus, "schedules": count, "repeats": repeat,
        "all_schedules_per_second": [round(count / p[0], 1) for p in passes],
        "schedules_per_second": round(count / dt, 1), "steps_per_schedule": round(steps / count, 1),
        "us_per_step": round(per_step, 2), "emu_start_floor_us": round(floor, 2),
        "step_over_floor": round(per_step / floor, 2),
    }


def reference_ratios(count: int = 3000, cpus: int = 4) -> tuple[dict, list[dict]]:
    """The x86 reference and every other ISA's, each with its schedules/s and us/step as a ratio
    to the x86 figures of this same run (absolute times on these hosts are noisy)."""
    base = throughput(REFERENCE, cpus=cpus, count=count)
    others = []
    for spec in OTHER_REFERENCES:
        th = throughput(spec, cpus=cpus, count=count)
        th["schedules_per_second_vs_x86"] = round(th["schedules_per_second"] / base["schedules_per_second"], 2)
        th["us_per_step_vs_x86"] = round(th["us_per_step"] / base["us_per_step"], 2)
        others.append(th)
    return base, others


def format_other(th: dict) -> str:
    return (f"reference {th['scenario']} ({th['cpus']} CPUs): {th['schedules_per_second']} schedules/s "
            f"= {th['schedules_per_second_vs_x86']} x the x86 reference, {th['steps_per_schedule']} "
            f"steps/schedule, {th['us_per_step']} us/step = {th['us_per_step_vs_x86']} x x86")


def buggy_variants() -> list[str]:
    return [f"{name}:{v}" for name, cls in registry().items()
            for v in cls.variants if cls.expect.get(v)]


def trial(spec: str, strategy: str, seed: int, cap_s: float, cpus: int, **kwargs) -> dict:
    cls, variant = resolve(spec)
    want = cls.expect[variant]
    machine = Machine(cls, variant, Config(cpus=cpus))
    with tempfile.TemporaryDirectory(prefix="patchfuzz-bench-") as tmp:
        if strategy == "atheris":  # a fresh corpus: a resumed one would already hold the bug
            kwargs = {**kwargs, "corpus_dir": f"{tmp}/corpus"}
        strat = STRATEGIES[strategy](seed=seed, **kwargs)
        res = fuzz(machine, strat, seconds=cap_s, stop_on={want})
    hits = [c for c in res.crashes.values() if c.finding.oracle == want]
    first = min(hits, key=lambda c: c.first_schedule) if hits else None
    return {
        "found": first is not None,
        "schedules": first.first_schedule if first else None,
        "seconds": first.first_seconds if first else None,
        "ran_schedules": res.schedules, "ran_seconds": res.seconds, "exhausted": res.exhausted,
    }


def _median(values: list[float | None]) -> float | None:
    m = statistics.median([math.inf if v is None else v for v in values])
    return None if math.isinf(m) else m


def search_rows(variants: list[str], strategies: list[str], trials: int, cap_s: float, cpus: int,
                seed: int = 0, strategy_cpus: dict[str, int] | None = None,
                progress=None) -> list[dict]:
    rows = []
    for spec in variants:
        proto, _, variant = spec.partition(":")
        for strategy in strategies:
            n = (strategy_cpus or {}).get(strategy, cpus)
            # exhaustive search is deterministic: one trial says everything
            k = 1 if strategy == "exhaustive" else trials
            results = [trial(spec, strategy, seed + i, cap_s, n) for i in range(k)]
            ran = sum(r["ran_schedules"] for r in results)
            secs = sum(r["ran_seconds"] for r in results)
            row = {
                "protocol": proto, "variant": variant, "strategy": strategy, "cpus": n,
                "expect": resolve(spec)[0].expect[variant], "trials": k,
                "found": sum(r["found"] for r in results),
                "median_seconds": _round(_median([r["seconds"] for r in results])),
                "median_schedules": _median([r["schedules"] for r in results]),
                "schedules_per_second": round(ran / secs, 1) if secs else 0.0,
                "cap_seconds": cap_s,
            }
            rows.append(row)
            if progress:
                progress(row)
    return rows


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 3)


def format_row(r: dict) -> str:
    med_s = "-" if r["median_seconds"] is None else f"{r['median_seconds']:.2f}"
    med_n = "-" if r["median_schedules"] is None else f"{r['median_schedules']:.0f}"
    return (f"{r['protocol'] + ':' + r['variant']:<40} {r['strategy']:<10} {r['cpus']:>4} "
            f"{r['found']}/{r['trials']:<3} {med_s:>9} {med_n:>10} {r['schedules_per_second']:>9}")


HEADER = (f"{'protocol:variant':<40} {'strategy':<10} {'cpus':>4} {'found':<5} {'median s':>9} "
          f"{'median n':>10} {'sched/s':>9}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--strategies", default=",".join(STRATEGIES))
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--cap", type=float, default=60.0)
    ap.add_argument("--cpus", type=int, default=4)
    ap.add_argument("--count", type=int, default=3000, help="schedules for the throughput run")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--throughput-only", action="store_true")
    ap.add_argument("--instructions", type=int, default=None, metavar="N",
                    help="only run the reference scenario's first N schedules (for callgrind)")
    args = ap.parse_args()
    if args.instructions is not None:
        cls, variant = resolve(REFERENCE)
        m = Machine(cls, variant, Config(cpus=args.cpus))
        strat = RandomStrategy(seed=0)
        steps = sum(m.run(strat.next_schedule()).steps for _ in range(args.instructions))
        print(f"{args.instructions} schedules, {steps} steps")
        return
    base, others = reference_ratios(count=args.count)
    out = {"machine": f"{platform.machine()} python {platform.python_version()}",
           "throughput": base, "other_references": others, "search": []}
    th = out["throughput"]
    if not args.json:
        print(f"reference {th['scenario']} ({th['cpus']} CPUs, {th['schedules']} random schedules): "
              f"{th['schedules_per_second']} schedules/s, {th['steps_per_schedule']} steps/schedule, "
              f"{th['us_per_step']} us/step; emulator floor {th['emu_start_floor_us']} us "
              f"(step = {th['step_over_floor']} x floor); passes: {th['all_schedules_per_second']}")
        for other in others:
            print(format_other(other))
        print(HEADER)
    if not args.throughput_only:
        out["search"] = search_rows(
            buggy_variants(), args.strategies.split(","), args.trials, args.cap, args.cpus,
            args.seed, strategy_cpus={"exhaustive": 2},
            progress=None if args.json else (lambda r: print(format_row(r), flush=True)))
    if args.json:
        print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
