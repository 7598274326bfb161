"""The protocol API reaches the kernel's code: sites that are calls or jumps to any symbol,
sites per variant, symbol lookup, any number of tasks."""

import pytest

from fuzzer.arch import get_arch
from fuzzer.arch.x86_64 import NOP5, call_to, jmp_to
from fuzzer.machine import Config, Machine
from fuzzer.protocol import Call, Jmp, Protocol, Site
from fuzzer.protocols.x86.text_poke_bp import TextPokeBP
from fuzzer.strategies.random import RandomStrategy


class Retarget(TextPokeBP):
    """ftrace_update_ftrace_func(): the call at the site moves from one tracer to another,
    through text_poke_bp."""

    name = "test/retarget"
    symbols = ("ftrace_regs_caller",)
    variants = {"correct": {}, "no-sync-after-int3": dict(sync_after_int3=False)}
    expect = {"correct": None, "no-sync-after-int3": "torn-fetch"}

    @property
    def sites(self):
        # a property: the variant could choose the target
        return {"fentry": Site(old=Call("ftrace_caller"), new=Call("ftrace_regs_caller"))}


def test_a_site_can_be_a_call_to_any_declared_symbol_resolved_per_layout():
    m = Machine(Retarget, "correct", Config(cpus=2))
    site = m.sites["fentry"]
    syms = m.image.symbols
    assert site.old == call_to(site.addr, syms["ftrace_caller"])
    assert site.new == call_to(site.addr, syms["ftrace_regs_caller"])
    assert m.image.text[site.addr - m.image.base:][:5] == site.old  # the image holds the old call
    assert m.cpus[0].k.symbol("ftrace_regs_caller") == syms["ftrace_regs_caller"]
    with pytest.raises(KeyError, match="no_such"):
        m.cpus[0].k.symbol("no_such")
    r = m.run(b"", trace=True)
    assert r.finding is None and r.completed
    fetched = [ln for ln in r.trace if "fetch fentry" in ln]
    assert f"call {syms['ftrace_caller']:#x}" in fetched[0]
    assert f"call {syms['ftrace_regs_caller']:#x}" in fetched[-1]


def test_an_unknown_symbol_is_a_clear_error():
    class Typo(Retarget):
        name = "test/typo"
        symbols = ()

    with pytest.raises(ValueError, match="ftrace_regs_caller"):
        Machine(Typo, "correct", Config(cpus=2))


class PerVariant(Protocol):
    """A static key whose jump target depends on the variant."""

    name = "test/per_variant"
    params = dict(target="ftrace_stub")
    variants = {"stub": {}, "tracer": dict(target="ftrace_caller")}
    expect = {"stub": None, "tracer": None}

    @property
    def sites(self):
        return {"key": Site(old=NOP5, new=Jmp(self.v.target))}

    def patcher(self, k):
        yield k.poke("key", k.site("key").new)


def test_variants_can_change_a_sites_bytes():
    stub = Machine(PerVariant, "stub", Config(cpus=2)).sites["key"]
    tracer = Machine(PerVariant, "tracer", Config(cpus=2)).sites["key"]
    image = get_arch("x86_64").build_image(PerVariant("stub").sites)
    assert stub.new == jmp_to(stub.addr, image.symbols["ftrace_stub"])
    assert tracer.new == jmp_to(tracer.addr, image.symbols["ftrace_caller"])


class ThreeTasks(Protocol):
    """A patcher, a module loader and CPU hotplug, each on its own CPU."""

    name = "test/three_tasks"
    sites = {"fentry": Site(old=NOP5, new=Call("ftrace_caller"))}
    tasks = {"patcher": 0, "loader": 1, "hotplug": -1}
    variants = {"v": {}}
    expect = {"v": None}

    def patcher(self, k):
        yield k.lock("text_mutex")
        yield k.atomic_inc("patched")
        yield k.unlock("text_mutex")

    def loader(self, k):
        yield k.lock("module_mutex")
        yield k.lock("text_mutex")
        yield k.atomic_inc("loaded")
        yield k.unlock("text_mutex")
        yield k.unlock("module_mutex")

    def hotplug(self, k):
        yield k.write_lock("cpu_hotplug_lock")
        yield k.atomic_inc("plugged")
        yield k.write_unlock("cpu_hotplug_lock")


def test_any_number_of_tasks_each_on_its_cpu():
    m = Machine(ThreeTasks, "v", Config(cpus=4))
    r = m.run(b"", trace=True)
    assert r.finding is None and r.completed
    assert m.memory.mem == {"patched": 1, "loaded": 1, "plugged": 1}
    done = {ln.split()[1]: ln.split()[-2] for ln in r.trace if ln.endswith(" finished")}
    assert done == {"cpu0": "patcher", "cpu1": "loader", "cpu3": "hotplug"}
    strat = RandomStrategy(seed=1)
    for _ in range(200):
        res = m.run(strat.next_schedule())
        assert res.finding is None


def test_task_placement_errors_are_clear():
    class Crowded(ThreeTasks):
        name = "test/crowded"
        tasks = {"patcher": 0, "loader": 0}

    with pytest.raises(ValueError, match="share CPU 0"):
        Machine(Crowded, "v", Config(cpus=4))

    class TooFar(ThreeTasks):
        name = "test/too_far"
        tasks = {"patcher": 0, "loader": 5}

    with pytest.raises(ValueError, match="CPU 5"):
        Machine(TooFar, "v", Config(cpus=4))

    class NoMethod(ThreeTasks):
        name = "test/no_method"
        tasks = {"patcher": 0, "unloader": 1}

    with pytest.raises(ValueError, match="unloader"):
        Machine(NoMethod, "v", Config(cpus=4))


class SpinAndSync(Protocol):
    """The patcher syncs every CPU (IPIs) while another CPU spins for a lock the patcher holds.
    With the spin done with IRQs off (raw_spin_lock_irqsave), the IPI can never be taken."""

    name = "test/spin_and_sync"
    sites = {"fentry": Site(old=NOP5, new=Call("ftrace_caller"))}
    tasks = {"patcher": 0, "other": 1}
    params = dict(irqsave=True, sync_under_lock=True)
    variants = {"deadlock": {}, "irqs-on": dict(irqsave=False), "sync-after-unlock": dict(sync_under_lock=False)}
    expect = {"deadlock": "deadlock", "irqs-on": None, "sync-after-unlock": None}

    def patcher(self, k):
        flags = yield from k.spin_lock_irqsave("L")
        yield k.atomic_inc("held")
        if self.v.sync_under_lock:
            yield k.sync_cores()
        yield from k.spin_unlock_irqrestore("L", flags)
        if not self.v.sync_under_lock:
            yield k.sync_cores()

    def other(self, k):
        yield k.wait_until(("held", "never"), lambda held, never: held == 1 and never == 0, "the patcher holds L")
        if self.v.irqsave:
            flags = yield from k.spin_lock_irqsave("L")
            yield from k.spin_unlock_irqrestore("L", flags)
        else:
            yield k.lock("L")
            yield k.unlock("L")


def test_spinning_with_irqs_off_cannot_take_an_ipi():
    from fuzzer.campaign import fuzz
    from fuzzer.strategies.exhaustive import ExhaustiveStrategy

    for variant, expected in SpinAndSync.expect.items():
        m = Machine(SpinAndSync, variant, Config(cpus=2))
        res = fuzz(m, ExhaustiveStrategy(), schedules=50000)
        found = {rec.finding.oracle for rec in res.crashes.values()}
        if expected:
            assert found == {"deadlock"}, (variant, found)
            titles = {rec.finding.title for rec in res.crashes.values()}
            assert titles == {"deadlock: IPI can never be taken"}
        else:
            assert res.exhausted and not found, (variant, found)


class StopWhileNotPreemptible(Protocol):
    """A task spins with preemption disabled until the patcher's stop_machine is over: the
    stopper thread can never run on its CPU."""

    name = "test/stop_while_not_preemptible"
    sites = {"fentry": Site(old=NOP5, new=Call("ftrace_caller"))}
    tasks = {"patcher": 0, "other": 1}
    params = dict(preempt_off=True)
    variants = {"deadlock": {}, "preemptible": dict(preempt_off=False)}
    expect = {"deadlock": "deadlock", "preemptible": None}

    def patcher(self, k):
        yield k.wait_until("spinning", lambda v: v == 1)
        yield from k.stop_machine(lambda k: iter([k.poke("fentry", k.site("fentry").new)]))
        yield k.atomic_inc("done")

    def other(self, k):
        if self.v.preempt_off:
            yield k.preempt_disable()
        yield k.atomic_inc("spinning")
        if self.v.preempt_off:
            yield k.wait_until("done", lambda v: v == 1)
            yield k.preempt_enable()


def test_a_task_with_preemption_disabled_cannot_be_parked():
    dead = Machine(StopWhileNotPreemptible, "deadlock", Config(cpus=2)).run(b"")
    assert dead.finding is not None and dead.finding.oracle == "deadlock"
    fine = Machine(StopWhileNotPreemptible, "preemptible", Config(cpus=2))
    strat = RandomStrategy(seed=2)
    for _ in range(100):
        f = fine.run(strat.next_schedule()).finding
        assert f is None or f.oracle != "deadlock", f  # (NMIs still tear the naive write)


def test_wait_until_reads_several_variables():
    m = Machine(SpinAndSync, "sync-after-unlock", Config(cpus=2))
    r = m.run(b"", trace=True)
    assert any("waited until the patcher holds L (held, never = (1, 0))" in ln for ln in r.trace)


class LastCpuPatches(Protocol):
    """aarch64_insn_patch_text_cb() on every CPU: the last CPU to arrive patches, then adds one
    more to cpu_count to let the others go; they wait for it, then resynchronize
    (isb(), sync_core() here). `no-notify` leaves out the extra increment."""

    name = "test/last_cpu_patches"
    sites = {"fentry": Site(old=NOP5, new=Call("ftrace_caller"))}
    params = dict(notify=True)
    variants = {"correct": {}, "no-notify": dict(notify=False)}
    expect = {"correct": None, "no-notify": "deadlock"}

    def patcher(self, k):
        patched = yield from k.stop_machine(self._cb, every_cpu=True)
        if patched:
            yield k.atomic_inc("patched_by_caller")

    def _cb(self, k):
        if (yield k.atomic_inc_return("cpu_count")) == k.ncpus:
            yield k.poke("fentry", k.site("fentry").new)
            yield k.atomic_inc("patches")
            if self.v.notify:
                yield k.atomic_inc("cpu_count")
            return True
        yield k.wait_until("cpu_count", lambda n: n > k.ncpus, "the patch is written")
        yield k.sync_core()
        return False


def test_stop_machine_runs_the_callback_on_every_cpu():
    from fuzzer.campaign import fuzz
    from fuzzer.strategies.exhaustive import ExhaustiveStrategy

    m = Machine(LastCpuPatches, "correct", Config(cpus=3))
    strat = RandomStrategy(seed=4)
    callers_patched = set()
    for _ in range(200):
        s = bytes(b if b < 200 else 0 for b in strat.next_schedule())  # no NMIs: a clean rendezvous
        r = m.run(s)
        assert r.finding is None, r.finding
        assert m.memory.mem["patches"] == 1 and m.memory.mem["cpu_count"] == 4
        callers_patched.add(m.memory.mem.get("patched_by_caller", 0))
    assert callers_patched == {0, 1}  # arrival order decides who patches: skew is real
    dead = fuzz(Machine(LastCpuPatches, "no-notify", Config(cpus=2)), ExhaustiveStrategy(nmis=0), schedules=5000)
    assert {rec.finding.oracle for rec in dead.crashes.values()} == {"deadlock"}


def test_a_retargeted_call_can_tear_because_targets_are_far_apart():
    # laid out next to each other, the two tracers' calls differed in one byte of the offset
    # and no fetch could mix them; as in a kernel, they are now far apart
    m = Machine(Retarget, "no-sync-after-int3", Config(cpus=4))
    old, new = m.sites["fentry"].old, m.sites["fentry"].new
    assert all(a != b for a, b in zip(old[1:], new[1:]))
    strat = RandomStrategy(seed=0)
    torn = [f for _ in range(300) if (f := m.run(strat.next_schedule()).finding) and f.oracle == "torn-fetch"]
    # a mix that is neither call: impossible while the offsets differed in one byte only
    assert any(f.detail.split(" = ")[0].removeprefix("executes ") not in (old.hex(" "), new.hex(" "))
               for f in torn)
    good = Machine(Retarget, "correct", Config(cpus=4))
    assert not any(good.run(strat.next_schedule()).finding for _ in range(300))


def test_the_new_instruction_is_never_torn_even_before_it_is_whole_in_memory():
    # an old first byte and a new tail can spell the new call exactly (two calls whose offsets
    # differ in one byte): a CPU running it early runs a legitimate instruction, not a torn one
    from fuzzer.machine.fetch import TORN, WHOLE

    m = Machine(Retarget, "no-sync-after-int3", Config(cpus=2))
    site = m.sites["fentry"]
    assert site.intended == {site.old}  # nothing written yet
    assert m.fetch.classify(site, site.new, 0) is WHOLE
    assert m.fetch.classify(site, site.old[:2] + site.new[2:], 0) is TORN  # far apart: a real mix


class ThreeParties(Protocol):
    """cpus_read_lock is a percpu rwsem whose queued writer blocks new readers: a patcher
    holding text_mutex and wanting cpus_read_lock, CPU hotplug queued for writing behind a
    reader, and that reader wanting text_mutex deadlock, three parties and no two of them alone."""

    name = "test/three_parties"
    sites = {"fentry": Site(old=NOP5, new=Call("ftrace_caller"))}
    tasks = {"patcher": 0, "reader": 1, "hotplug": 2}
    variants = {"v": {}}
    expect = {"v": "deadlock"}

    def patcher(self, k):
        yield k.lock("text_mutex")
        yield k.read_lock("cpu_hotplug_lock")
        yield k.read_unlock("cpu_hotplug_lock")
        yield k.unlock("text_mutex")

    def reader(self, k):
        yield k.read_lock("cpu_hotplug_lock")
        yield k.lock("text_mutex")
        yield k.unlock("text_mutex")
        yield k.read_unlock("cpu_hotplug_lock")

    def hotplug(self, k):
        yield k.write_lock("cpu_hotplug_lock")
        yield k.write_unlock("cpu_hotplug_lock")


def test_a_queued_writer_lets_three_parties_deadlock():
    from fuzzer.campaign import fuzz
    from fuzzer.strategies.exhaustive import ExhaustiveStrategy

    res = fuzz(Machine(ThreeParties, "v", Config(cpus=3)), ExhaustiveStrategy(nmis=0), schedules=20000)
    cycles = [rec.finding for rec in res.crashes.values() if rec.finding.oracle == "deadlock"]
    assert cycles, res.crashes
    detail = cycles[0].detail
    assert all(who in detail for who in ("patcher@cpu0", "reader@cpu1", "hotplug@cpu2")), detail


class PerCpuCounter(Protocol):
    """A free task bumps this CPU's counter in two steps (read, then write back): migrating in
    between writes another CPU's counter with this one's value, unless preemption is off
    (this_cpu_* under preempt_disable())."""

    name = "test/per_cpu_counter"
    sites = {"fentry": Site(old=NOP5, new=Call("ftrace_caller"))}
    tasks = {"worker": None}
    params = dict(preempt_off=False)
    variants = {"preemptible": {}, "preempt-off": dict(preempt_off=True)}
    expect = {"preemptible": "protocol-assert", "preempt-off": None}

    def worker(self, k):
        if self.v.preempt_off:
            yield k.preempt_disable()
        first = k.cpu
        v = yield k.load(f"count{first}")
        yield k.store(f"count{k.cpu}", v + 1)
        if k.cpu != first:
            yield k.bug("per-CPU update moved to another CPU half way")
        if self.v.preempt_off:
            yield k.preempt_enable()


def test_a_free_task_migrates_unless_preemption_is_off():
    from fuzzer.campaign import fuzz
    from fuzzer.strategies.exhaustive import ExhaustiveStrategy

    bad = fuzz(Machine(PerCpuCounter, "preemptible", Config(cpus=2)), ExhaustiveStrategy(nmis=0), schedules=20000)
    assert {r.finding.title for r in bad.crashes.values()} == {
        "protocol assertion: per-CPU update moved to another CPU half way"}
    good = fuzz(Machine(PerCpuCounter, "preempt-off", Config(cpus=2)), ExhaustiveStrategy(nmis=0), schedules=20000)
    assert good.exhausted and not good.crashes
    # the free task starts on the first CPU no task holds, and migrates with k.cpu following it
    m = Machine(PerCpuCounter, "preemptible", Config(cpus=3))
    rec = next(iter(bad.crashes.values()))
    r = Machine(PerCpuCounter, "preemptible", Config(cpus=2)).run(rec.schedule, trace=True)
    assert any("worker migrates to cpu1" in ln for ln in r.trace)
    assert m.tasks.on_cpu == {0: "worker"}


def test_the_minimizer_the_focused_trace_and_the_picture_keep_the_migration():
    # the task's first half ran on the CPU it left: the focused trace and the race diagram show
    # that CPU, its load and the migration, not only the CPU where the assertion fired
    from fuzzer.campaign import fuzz
    from fuzzer.diagram import Diagram
    from fuzzer.diagram_svg import render_svg
    from fuzzer.focus import focus_view
    from fuzzer.minimize import minimize
    from fuzzer.strategies.exhaustive import ExhaustiveStrategy

    m = Machine(PerCpuCounter, "preemptible", Config(cpus=2))
    rec = next(iter(fuzz(m, ExhaustiveStrategy(nmis=0), schedules=20000).crashes.values()))
    small, before, after, _ = minimize(m, rec.schedule, max_runs=2000)
    assert m.run(small).finding.signature == rec.finding.signature
    lines, rows, cpus = focus_view(m, small)
    text = "\n".join(lines)
    assert sorted(cpus) == [0, 1], text
    assert "cpu0 thread load count0" in text and "cpu0 thread worker migrates to cpu1" in text, text
    assert "migrates to cpu1" in render_svg(Diagram("t", cpus, rows))


def test_free_tasks_need_a_cpu_each():
    class Crowd(PerCpuCounter):
        name = "test/crowd"
        tasks = {"worker": None, "patcher": 0}

    assert Crowd("preemptible").task_cpus(2) == {"worker": 1, "patcher": 0}
    with pytest.raises(ValueError, match="no CPU left for the free task"):
        Crowd("preemptible").task_cpus(1)


class RcuFree(Protocol):
    """An updater swaps a pointer and frees the old object; a reader follows the pointer inside
    rcu_read_lock(). The updater waits for a grace period before the free, unless `no-sync`."""

    name = "test/rcu_free"
    sites = {"fentry": Site(old=NOP5, new=Call("ftrace_caller"))}
    tasks = {"updater": 0, "reader": 1}
    params = dict(grace=True)
    variants = {"correct": {}, "no-sync": dict(grace=False)}
    expect = {"correct": None, "no-sync": "use-after-free"}

    def initial_memory(self):
        return {"ptr": "obj1", "obj1": 1}

    def updater(self, k):
        yield k.alloc("obj2", 2)
        yield k.store_release("ptr", "obj2")
        yield k.mb()
        if self.v.grace:
            yield k.synchronize_rcu()
        yield k.free("obj1")

    def reader(self, k):
        yield k.rcu_read_lock()
        obj = yield k.load("ptr")
        yield k.load(obj)
        yield k.rcu_read_unlock()


def test_synchronize_rcu_waits_for_readers():
    from fuzzer.campaign import fuzz
    from fuzzer.strategies.exhaustive import ExhaustiveStrategy

    for variant, want in RcuFree.expect.items():
        res = fuzz(Machine(RcuFree, variant, Config(cpus=2)), ExhaustiveStrategy(nmis=0), schedules=30000)
        found = {r.finding.oracle for r in res.crashes.values()}
        assert found == ({want} if want else set()) and (want or res.exhausted), (variant, found)
