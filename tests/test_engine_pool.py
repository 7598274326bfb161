"""The CPU's speed devices must not change a run: the engine pool (one Unicorn instance per
recently used view), its eviction, and the native site hook against its Python fallback."""

import random

import pytest

import fuzzer.arch.hotpath as hotpath
import fuzzer.arch.unicorn_cpu as unicorn_cpu
from fuzzer.machine import Config, Machine
from fuzzer.protocols import resolve

SPECS = ["x86/text_poke_bp:correct", "x86/text_poke_bp:no-sync-after-int3", "x86/ftrace_nmi_2008:correct"]


def _runs(spec: str, count: int = 120) -> list[tuple]:
    rng = random.Random(3)
    schedules = [rng.randbytes(rng.randint(0, 300)) for _ in range(count)]
    cls, variant = resolve(spec)
    machine = Machine(cls, variant, Config(cpus=4))
    out = []
    for s in schedules:
        r = machine.run(s, trace=True, coverage=True)
        f = r.finding
        out.append((r.steps, r.schedule_used, r.trace_sha256, tuple(r.features),
                    f.signature if f else None, tuple(f.consequence) if f else ()))
    return out


@pytest.mark.parametrize("spec", SPECS)
def test_pool_size_and_site_hook_do_not_change_runs(spec, monkeypatch):
    reference = _runs(spec)
    assert len({k[2] for k in reference}) > 10  # the schedules lead to different runs
    for engines in (1, 2):  # no pool (flush and retranslate), and constant eviction
        monkeypatch.setattr(unicorn_cpu, "ENGINES_PER_CPU", engines)
        assert _runs(spec) == reference, f"{engines} engines per CPU"
    monkeypatch.undo()
    monkeypatch.setattr(hotpath, "NATIVE_SITE_HOOK", None)
    assert _runs(spec) == reference, "Python site hook"


def test_a_view_seen_before_switches_engines_instead_of_retranslating():
    cls, variant = resolve("x86/text_poke_bp:correct")
    machine = Machine(cls, variant, Config(cpus=4))
    machine.run(b"")
    hw = machine.cpus[1].hw
    engines = dict(hw._engines)
    assert len(engines) > 1, "a patch run shows a CPU several views"
    machine.run(b"")  # the same views again: no new engine, no rewritten one
    assert dict(hw._engines) == engines
