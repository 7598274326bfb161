"""Locks order memory: the next holder of a lock sees every store the previous holder made
inside its critical section (acquire/release semantics), whatever the store buffers do."""

from fuzzer.arch import get_arch
from fuzzer.arch.x86_64 import NOP5
from fuzzer.campaign import fuzz
from fuzzer.machine import Config, Machine
from fuzzer.protocol import Call, Protocol, Site
from fuzzer.strategies.exhaustive import ExhaustiveStrategy
from fuzzer.strategies.random import RandomStrategy


class HandOver(Protocol):
    """The patcher takes `m`, says so with an atomic, stores `x`, releases `m`; the second task
    waits until the patcher holds `m`, then takes `m` itself and must see `x`."""

    name = "test/lock_hand_over"
    sites = {"fentry": Site(old=NOP5, new=Call("ftrace_caller"))}
    uses_hotplug = True  # the second task
    variants = {"v": {}}
    expect = {"v": None}

    def patcher(self, k):
        yield k.store("y", 2)
        yield k.lock("m")
        yield k.atomic_inc("entered")
        yield k.store("x", 1)
        yield k.unlock("m")

    def hotplug(self, k):
        yield k.wait_until("entered", lambda v: v == 1, "the patcher holds m")
        yield k.lock("m")
        if (yield k.load("x")) != 1:
            yield k.bug("stale value under the lock")
        yield k.unlock("m")


def test_the_next_holder_sees_the_previous_holders_stores():
    m = Machine(HandOver, "v", Config(cpus=2))
    # schedules that keep stores buffered as long as they can (drain answers 0)
    for seed in range(200):
        r = m.run(bytes([0, 1, 0, 0] * 40) if seed == 0 else RandomStrategy(seed=seed).next_schedule())
        assert r.finding is None, (seed, r.finding)
    res = fuzz(Machine(HandOver, "v", Config(cpus=2)), ExhaustiveStrategy(store_delays=2), schedules=20000)
    assert res.exhausted and not res.crashes, res.crashes


def test_release_drains_first_and_on_x86_so_does_acquire():
    from fuzzer import events as ev

    m = Machine(HandOver, "v", Config(cpus=2))
    r = m.run(bytes([0, 0, 0, 0] * 20), trace=True)  # drain answers 0: nothing drains by itself
    mine = [e for e in r.events if e.cpu == 0]
    kinds = [(type(e).__name__, getattr(e, "var", getattr(e, "lock", ""))) for e in mine]
    # acquiring is a locked read-modify-write: the store before it drains first
    assert kinds.index(("Drain", "y")) < kinds.index(("Locked", "m"))
    # releasing: the store inside the critical section is visible before the lock is free
    assert kinds.index(("Drain", "x")) < kinds.index(("Unlocked", "m"))
    assert all(type(e) is not ev.Violation for e in r.events)


class HandOverArm64(Protocol):
    """The same hand-over on arm64's weak store buffer, with two stores in the critical section
    (they may drain in either order, and neither may stay behind the unlock)."""

    name = "test/lock_hand_over_arm64"
    arch = "arm64"
    sites = {"fentry": Site(old=get_arch("arm64").nop(), new=get_arch("arm64").nop())}
    uses_hotplug = True
    variants = {"v": {}}
    expect = {"v": None}

    def patcher(self, k):
        yield k.lock("m")
        yield k.atomic_inc("entered")
        yield k.store("x", 1)
        yield k.store("y", 1)
        yield k.unlock("m")

    def hotplug(self, k):
        yield k.wait_until("entered", lambda v: v == 1, "the patcher holds m")
        yield k.lock("m")
        if (yield k.load("x")) != 1 or (yield k.load("y")) != 1:
            yield k.bug("stale value under the lock")
        yield k.unlock("m")


def test_on_a_weak_store_buffer_the_release_orders_the_critical_section_too():
    # stores kept buffered and drained out of order: the unlock is a store-release
    m = Machine(HandOverArm64, "v", Config(cpus=2))
    res = fuzz(m, ExhaustiveStrategy(store_delays=2, store_reorders=1), schedules=20000)
    assert res.exhausted and not res.crashes, res.crashes
