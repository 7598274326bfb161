"""Trap handler chains, someone else's breakpoints at any site, and what a handler can answer."""

import pytest

from fuzzer import events as ev
from fuzzer.arch.x86_64 import NOP5
from fuzzer.machine import Config, Machine
from fuzzer.protocol import Call, Site
from fuzzer.protocols.x86.text_poke_bp import TextPokeBP
from fuzzer.strategies.random import RandomStrategy

ONE_BYTE_NOPS = b"\x90" * 5


class KprobeNextDoor(TextPokeBP):
    """text_poke_bp patches `fentry` while kprobes arms a probe on `kfunc` (another traced
    function, at `offset` into its NOPs). The kernel calls kprobes' handler after
    text_poke_bp's: `greedy` puts a handler first that claims every breakpoint at a site."""

    name = "test/kprobe_next_door"
    sites = {"fentry": Site(old=NOP5, new=Call("ftrace_caller")), "kfunc": Site(old=ONE_BYTE_NOPS, new=ONE_BYTE_NOPS)}
    tasks = {"patcher": 0, "kprober": 1}
    params = {**TextPokeBP.params, "greedy": False, "offset": 0}
    variants = {"correct": {}, "inside": dict(offset=2), "greedy": dict(greedy=True)}
    expect = {"correct": None, "inside": None, "greedy": "wrong-target"}

    @property
    def trap_handlers(self):
        return ("greedy_handler", "int3_handler") if self.v.greedy else ("int3_handler",)

    def patcher(self, k):
        yield from self.poke_bp(k, ["fentry"])

    def kprober(self, k):
        replaced = yield from k.arm_kprobe("kfunc", self.v.offset)
        assert replaced == b"\x90"
        yield k.atomic_inc("armed")

    def greedy_handler(self, k, ip):
        site = k.site_at(ip)
        if site is None:
            return k.NOT_MINE
        return k.emulate(ip, site.new)
        yield  # pragma: no cover


def _runs(cls, variant, n=300, cpus=4, seed=1):
    m = Machine(cls, variant, Config(cpus=cpus))
    strat = RandomStrategy(seed=seed)
    return m, [m.run(strat.next_schedule()) for _ in range(n)]


def test_a_kprobe_at_any_site_is_foreign_passed_on_and_single_stepped():
    for variant in ("correct", "inside"):
        m, runs = _runs(KprobeNextDoor, variant)
        assert not [r.finding for r in runs if r.finding], variant
    # the kprobe really is hit, passed on by the protocol's handler, and single-stepped
    m = Machine(KprobeNextDoor, "correct", Config(cpus=4))
    strat = RandomStrategy(seed=2)
    hits = 0
    for _ in range(200):
        r = m.run(strat.next_schedule(), trace=True)
        kfunc = m.sites["kfunc"].addr
        hits += sum(type(e) is ev.Trap and e.addr == kfunc and e.foreign for e in r.events)
    assert hits > 0


def test_the_chain_asks_each_handler_in_turn():
    # the greedy handler comes first and claims the kprobe's breakpoint: a foreign claim
    m, runs = _runs(KprobeNextDoor, "greedy", n=600)
    titles = {r.finding.title for r in runs if r.finding}
    assert "int3 handler claims a foreign breakpoint in thread" in titles


class RetryingTextPokeBP(TextPokeBP):
    """text_poke_bp whose handler, instead of emulating the new call, sends the CPU back to the
    site to run it again once the breakpoint is gone (`retry`), or to the tracer (`detour`)."""

    name = "test/retrying_text_poke_bp"
    params = {**TextPokeBP.params, "answer": "retry"}
    variants = {"retry": {}, "detour": dict(answer="detour"), "single-step-old": dict(answer="step")}
    # retry: a CPU sent back to a breakpoint inside the caller loop's IRQs-off call traps again
    # and again and never takes the patcher's sync IPI: a livelock (the hang oracle); this is
    # why text_poke_bp emulates
    expect = {"retry": "deadlock", "detour": None, "single-step-old": None}

    def int3_handler(self, k, ip):
        if not (yield k.inc_not_zero("bp.refs")):
            return k.NOT_MINE
        yield k.atomic_dec("bp.refs")
        if k.site_at(ip) is None:
            return k.NOT_MINE
        if self.v.answer == "retry":
            return k.retry()
        if self.v.answer == "detour":
            return k.detour("ftrace_caller")
        return k.single_step(k.site_at(ip).old)


@pytest.mark.parametrize("variant", ["retry", "detour", "single-step-old"])
def test_handlers_can_retry_detour_or_single_step(variant):
    m, runs = _runs(RetryingTextPokeBP, variant, n=300)
    found = {r.finding.oracle for r in runs if r.finding}
    want = RetryingTextPokeBP.expect[variant]
    assert found == ({want} if want else set()), (variant, found)
    # and what the answer asked for happened: after a trap at the site the CPU runs the site
    # again (retry), the tracer (detour), or the instruction after the old NOP (single step)
    strat = RandomStrategy(seed=5)
    for _ in range(300):
        r = m.run(strat.next_schedule(), trace=True)
        traps = [i for i, e in enumerate(r.events) if type(e) is ev.Trap and not e.foreign]
        if traps:
            break
    assert traps, "no trap at the site in 300 schedules"
    site = m.sites["fentry"]
    i = traps[0]
    cpu = r.events[i].cpu
    after = [e for e in r.events[i + 1:] if e.cpu == cpu]
    answers = [e for e in after if type(e) is ev.TrapAnswer]
    assert answers, "the handler's answer is not in the trace"
    a = answers[0]
    text = a.text(r.renderer)
    if variant == "retry":
        assert a.how == "retry" and a.target == site.addr and "runs again" in text
        assert any(type(e) is ev.Fetch and e.site == "fentry" and e.off == 0 for e in after)
    elif variant == "detour":
        assert a.how == "detour" and a.target == m.image.symbols["ftrace_caller"]
        assert "detours to ftrace_caller" in text
    else:  # the old instruction out of line, then on after it
        assert a.how == "single_step" and a.insn == site.old
        assert a.target == site.addr + len(site.old) and "single-steps" in text


def test_detour_names_a_symbol_that_exists():
    m = Machine(RetryingTextPokeBP, "detour", Config(cpus=2))
    with pytest.raises(KeyError, match="nope"):
        m.cpus[0].k.detour("nope")
