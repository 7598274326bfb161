"""A digest of many runs, to prove that a refactor changes no run (old commit against new).

`python fuzzer/digest.py --root CHECKOUT [--runs N] [--cpus 2,4,8] [--jobs J] [--out FILE]`
imports the engine from CHECKOUT (so the same script measures an old commit's worktree and the
new one) and, for every registered protocol variant and CPU count, runs N schedules and hashes
everything a run decides:

* every run: verdict, oracle, title, signature, detail, consequence, finding step and CPU, step
  count, completion, the bytes used;
* a third of the runs are steered by a `ChoiceSource` that answers from a seeded stream and
  hashes each draw's name, answer count and options (so the draw sequence itself is pinned);
* every 8th run again with the trace (its text) and with coverage (features, where each
  occurred, near misses);
* per variant at 4 CPUs, campaigns of the in-process strategies (random, pct, exhaustive at 2
  CPUs) and the minimizer on the first finding.

It uses only the API both sides share (`Machine`, `Config`, `run`, `RunResult`, `fuzz`,
`minimize`), and prints one line per (variant, CPUs) and a total digest. Equal totals: the
runs are identical.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
from concurrent.futures import ProcessPoolExecutor


class _Source:
    """Answers every draw from a seeded stream (independent of the draw's name, so a renamed
    draw still gets the same answer) and hashes what was asked."""

    def __init__(self, seed: int, limit: int, h) -> None:
        self.rng = random.Random(seed)
        self.left = limit
        self.h = h

    def choose(self, what, n, options):
        self.h.update(repr((what, n, options)).encode())
        if self.left <= 0:
            return None
        self.left -= 1
        return self.rng.getrandbits(8)


def _schedule(rng: random.Random) -> bytes:
    kind = rng.randrange(3)
    size = rng.randint(0, 300)
    if kind == 0:
        return rng.randbytes(size)
    out = bytearray(rng.randbytes(size))
    dense = rng.uniform(0, 0.3)  # event-dense bytes: NMIs, traps, preemptions, drains
    for i in range(size):
        if rng.random() < dense:
            out[i] = rng.randrange(200, 256)
        elif kind == 2 and rng.random() < 0.5:
            out[i] = rng.choice((11, 23, 35, 47))  # runs of one CPU
    return bytes(out)


def _result(h, r) -> None:
    f = r.finding
    h.update(repr((r.verdict, r.steps, r.completed, r.schedule_used, bytes(r.schedule))).encode())
    if f is not None:
        h.update(repr((f.oracle, f.title, f.signature, f.detail, f.step, f.cpu,
                       list(f.consequence))).encode())


def digest_one(root: str, spec: str, cpus: int, runs: int) -> tuple[str, str, dict]:
    sys.path.insert(0, root)
    from fuzzer.machine import Config, Machine
    from fuzzer.protocols import resolve

    cls, variant = resolve(spec)
    m = Machine(cls, variant, Config(cpus=cpus))
    h = hashlib.sha256()
    seed = int.from_bytes(hashlib.sha256(f"{spec}/{cpus}".encode()).digest()[:8], "little")
    rng = random.Random(seed)
    counts = {"crash": 0, "clean": 0}
    for i in range(runs):
        if i % 3 == 2:
            r = m.run(b"", source=_Source(rng.getrandbits(32), rng.randint(0, 300), h))
        else:
            r = m.run(_schedule(rng))
        _result(h, r)
        counts[r.verdict] += 1
        if i % 8 == 0:
            s = bytes(r.schedule)
            t = m.run(s, trace=True)
            _result(h, t)
            h.update("\n".join(t.trace).encode())
            c = m.run(s, coverage=True)
            _result(h, c)
            h.update(repr((c.features, c.feature_at, c.near)).encode())
    return spec, f"{cpus}", {"digest": h.hexdigest(), **counts}


def campaigns_one(root: str, spec: str) -> tuple[str, dict]:
    sys.path.insert(0, root)
    from fuzzer.campaign import fuzz
    from fuzzer.machine import Config, Machine
    from fuzzer.minimize import minimize
    from fuzzer.protocols import resolve
    from fuzzer.strategies.exhaustive import ExhaustiveStrategy
    from fuzzer.strategies.pct import PctStrategy
    from fuzzer.strategies.random import RandomStrategy

    cls, variant = resolve(spec)
    out: dict = {}
    m = Machine(cls, variant, Config(cpus=4))
    first = None
    for name, strat in (("random", RandomStrategy(seed=3)), ("pct", PctStrategy(seed=3))):
        res = fuzz(m, strat, schedules=400)
        out[name] = sorted((sig, rec.schedule.hex(), rec.first_schedule, rec.hits)
                           for sig, rec in res.crashes.items())
        if first is None and res.crashes:
            first = min(res.crashes.values(), key=lambda rec: rec.first_schedule).schedule
    if first is not None:
        small, before, after, used = minimize(m, first, max_runs=400)
        out["minimized"] = (small.hex(), before.to_dict(), after.to_dict(), used)
    m2 = Machine(cls, variant, Config(cpus=2))
    ex = ExhaustiveStrategy(max_steps=120)
    res = fuzz(m2, ex, schedules=1500)
    out["exhaustive"] = (res.schedules, res.exhausted, res.stats,
                         sorted((sig, rec.schedule.hex(), rec.first_schedule, rec.hits)
                                for sig, rec in res.crashes.items()))
    return spec, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", required=True, help="the checkout whose engine is measured")
    ap.add_argument("--runs", type=int, default=20000, help="runs per variant and CPU count")
    ap.add_argument("--cpus", default="2,4,8")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--only", default="", help="comma-separated PROTOCOL:VARIANT (default: all)")
    ap.add_argument("--no-campaigns", action="store_true")
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    sys.path.insert(0, args.root)
    from fuzzer.protocols import registry

    specs = [f"{n}:{v}" for n, cls in registry().items() for v in cls.variants]
    if args.only:
        specs = [s for s in specs if s in args.only.split(",")]
    cpus = [int(c) for c in args.cpus.split(",")]
    rows: dict = {}
    with ProcessPoolExecutor(args.jobs) as pool:
        futs = [pool.submit(digest_one, args.root, s, c, args.runs) for s in specs for c in cpus]
        if not args.no_campaigns:
            futs += [pool.submit(campaigns_one, args.root, s) for s in specs]
        for fut in futs:
            res = fut.result()
            if len(res) == 3:
                spec, c, d = res
                rows[f"{spec}@{c}"] = d
                print(f"{spec:<40} cpus={c}  {d['digest'][:16]}  crash={d['crash']} clean={d['clean']}",
                      flush=True)
            else:
                spec, d = res
                rows[f"{spec}@campaigns"] = hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()
                print(f"{spec:<40} campaigns {rows[spec + '@campaigns'][:16]}", flush=True)
    total = hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()
    n = args.runs * len(specs) * len(cpus)
    print(f"total digest over {n} runs ({len(specs)} variants x cpus {args.cpus}): {total}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"total": total, "rows": rows}, f, indent=1, sort_keys=True)


if __name__ == "__main__":
    main()
