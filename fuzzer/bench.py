"""Benchmarks: `python -m fuzzer.bench` (or `make bench`).

Prints, measured in one run:
* schedules/s on the reference scenario (x86/text_poke_bp:correct, 4 CPUs, random schedules),
  steps per schedule and microseconds per scheduling step;
* the emulator floor in the same run: one `emu_start` that executes a site and stops at the
  next one, which is the least a code step can cost, and the ratio step cost / floor;
* for every protocol variant: schedules and seconds until random search first reports the
  expected oracle (or that it stayed clean within the budget).
"""

from __future__ import annotations

import argparse
import json
import platform
import time

from .machine import Config, Machine
from .protocols import registry, resolve
from .strategies.random import RandomStrategy


def emulator_floor(m: Machine, n: int = 20000) -> float:
    """Microseconds of the cheapest code step: enter the emulator at the caller loop, run the
    call, stop (Python hook) in front of the first patch site."""
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


def throughput(spec: str, cpus: int, count: int, seed: int, repeat: int = 3) -> dict:
    """Median of `repeat` timed passes over the same schedules (this VM is noisy), and the
    emulator floor measured right after each pass."""
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
        "seconds": round(dt, 3),
        "schedules_per_second": round(count / dt, 1), "steps_per_schedule": round(steps / count, 1),
        "us_per_step": round(per_step, 2), "emu_start_floor_us": round(floor, 2),
        "step_over_floor": round(per_step / floor, 2),
    }


def time_to_find(spec: str, cpus: int, seed: int, cap_s: float) -> dict:
    cls, variant = resolve(spec)
    want = cls.expect.get(variant)
    m = Machine(cls, variant, Config(cpus=cpus))
    strat = RandomStrategy(seed=seed)
    t = time.perf_counter()
    n = 0
    while time.perf_counter() - t < cap_s:
        s = strat.next_schedule()
        r = m.run(s)
        n += 1
        if r.finding is not None and (want is None or r.finding.oracle == want):
            return {"scenario": spec, "expect": want or "clean", "found": r.finding.oracle,
                    "schedules": n, "seconds": round(time.perf_counter() - t, 3)}
    return {"scenario": spec, "expect": want or "clean", "found": None, "schedules": n,
            "seconds": round(time.perf_counter() - t, 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--count", type=int, default=3000, help="schedules for the throughput run")
    ap.add_argument("--cap", type=float, default=60.0, help="seconds per variant for time-to-find")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--throughput-only", action="store_true")
    args = ap.parse_args()
    out = {
        "machine": f"{platform.machine()} {platform.processor() or ''} python {platform.python_version()}".strip(),
        "throughput": throughput("x86/text_poke_bp:correct", 4, args.count, args.seed),
        "time_to_find": [] if args.throughput_only else [
            time_to_find(f"{name}:{v}", 4, args.seed, args.cap)
            for name, cls in registry().items() for v in cls.variants],
    }
    if args.json:
        print(json.dumps(out, indent=2))
        return
    th = out["throughput"]
    print(f"reference {th['scenario']} ({th['cpus']} CPUs, {th['schedules']} random schedules): "
          f"{th['schedules_per_second']} schedules/s, {th['steps_per_schedule']} steps/schedule, "
          f"{th['us_per_step']} us/step; emulator floor {th['emu_start_floor_us']} us "
          f"(step = {th['step_over_floor']} x floor); passes: {th['all_schedules_per_second']}")
    print(f"{'scenario':<40} {'expect':<16} {'found':<16} {'schedules':>9} {'seconds':>8}")
    for r in out["time_to_find"]:
        print(f"{r['scenario']:<40} {r['expect']:<16} {str(r['found']):<16} {r['schedules']:>9} {r['seconds']:>8}")


if __name__ == "__main__":
    main()
