"""The machine's state records: configuration, patch sites, frames, CPUs, locks, run results.

Each record owns its data: a field derived from others (`Cpu.plain`) is recomputed by the
record whenever one of them changes, and `state()` gives the record's part of the machine's
abstract state (what decides the future of a run; exhaustive search keys on it). `state()`
takes every slot except the ones `NOT_STATE` names with the reason they cannot change what
follows, so a field added later is in the state unless someone argues otherwise.
"""

from __future__ import annotations

import hashlib
from collections import deque
from dataclasses import dataclass, field, fields
from functools import cache, cached_property
from typing import Any

from ..oracles import Finding

MIN_CPUS, MAX_CPUS = 2, 8


@dataclass
class Config:
    cpus: int = 4
    max_steps: int = 20000
    epilogue_steps_per_cpu: int = 3
    stop_machine_serializes: bool | None = None  # None: the architecture's rule
    # seconds a protocol's code may run between two ops before the watchdog stops it (0: never)
    op_timeout: float = 2.0
    # the architecture model's switches (its OPTIONS, e.g. arm64 "idc", "dic")
    arch_options: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        out = {"cpus": self.cpus, "stop_machine_serializes": self.stop_machine_serializes}
        if self.arch_options:  # absent when unset, so older configurations stay as they were
            out["arch_options"] = list(self.arch_options)
        return out


@cache
def _state_slots(cls: type) -> tuple[str, ...]:
    names: list[str] = []
    for klass in reversed(cls.__mro__):
        own = getattr(klass, "__slots__", ())
        names.extend([own] if isinstance(own, str) else own)
    skip = getattr(cls, "NOT_STATE", {})
    return tuple(n for n in names if n not in skip and n not in ("__dict__", "__weakref__"))


_PRISTINE = {"pristine": True}


class SiteState:
    """One patch site: its truth bytes and the versions it may legitimately be executed in."""

    __slots__ = ("name", "addr", "size", "end", "old", "new", "truth", "intended", "func", "verdicts",
                 "completed", "hist", "hist_t", "pou", "program")
    NOT_STATE = {"name": "identity", "addr": "layout", "size": "layout", "end": "layout",
                 "old": "fixed", "new": "fixed", "func": "layout", "program": "layout",
                 "verdicts": "a memo of the fetch verdicts of `intended`"}

    def __init__(self, name: str, addr: int, old: bytes, new: bytes, func: int, program: str = ""):
        self.name, self.addr, self.size = name, addr, len(old)
        self.program = program  # the program this instruction belongs to ("": a patch site)
        self.end = addr + len(old)
        self.old, self.new, self.func = old, new, func
        self.truth = bytearray(old)
        self.intended: set[bytes] = {old}
        self.verdicts: dict = {}
        # the version a protocol declared its patch of this site complete with (k.complete), or
        # None while no operation on it is complete
        self.completed: bytes | None = None
        self.reset()

    def reset(self) -> None:
        self.truth[:] = self.old
        self.intended = {self.old}
        self.verdicts = {}
        self.completed = None
        # Where instruction fetch is not coherent (machine/icache.py): every version memory
        # held, oldest first, and the newest one cleaned to the point of unification.
        self.hist: list[bytes] = [self.old]
        self.hist_t: list[int] = [0]  # the moment each version reached memory
        self.pou = 0

    def state(self) -> dict:
        if len(self.hist) == 1 and self.truth == self.old and len(self.intended) == 1 and self.completed is None:
            return _PRISTINE  # never written (a program's instructions mostly are): one constant
        out = {n: getattr(self, n) for n in _state_slots(type(self))}
        out["truth"] = bytes(self.truth)
        out["intended"] = tuple(sorted(self.intended))
        return out


@dataclass(slots=True)
class Frame:
    kind: str  # "thread" | "irq" | "nmi" | "trap" | "parked"
    gen: Any
    k: Any  # the K of the frame's CPU
    op: Any = None
    irqs_off: bool = False
    pc: int = 0
    code_active: bool = False
    saved_ctx: Any = None
    poke_pos: int = 0
    task: str = ""
    at_site: Any = None  # the site this code frame is stopped in front of
    preempt_count: int = 0  # preempt_disable() nesting of the task this frame runs
    # its fetch there began before the patch of that site was declared complete: bytes stored
    # since may or may not be seen (the architecture's rule), so it may still run the old code
    fetch_excused: bool = False
    # Its pass through a site of several instructions so far: (site name, the bytes of the
    # instructions it ran there, from the site's start); None outside such a pass. What it ran
    # before and what it fetches next must be one version (`FetchModel.check`).
    site_run: Any = None
    tags: dict = field(default_factory=dict)

    NOT_STATE = {"k": "identity (the frame's CPU)"}

    @classmethod
    def state_fields(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls) if f.name not in cls.NOT_STATE)

    def state(self) -> dict:
        """This frame's part of the abstract state; its coroutine is `gen` (the encoder reads
        its live frame) and `saved_ctx` the registers it resumes with."""
        out = {name: getattr(self, name) for name in self.state_fields()}
        if not self.code_active:
            out["pc"] = 0  # the last PC of code that ended: nothing resumes from it
        out["tags"] = tuple(sorted(self.tags.items()))
        return out


class Cpu:
    """One emulated CPU: its emulator (`hw`), its instruction views, store buffer and frames.

    `plain` says the CPU is online with no pending IPI, stop_machine request or preemption,
    so that only its top frame's op decides whether it can run (the scheduler's fast path).
    It is derived from those fields and `roaming` (a task free to migrate runs here), which only
    the CPU's own methods change (`set_online`, `add_ipi`/`take_ipis`, `set_stop_req`,
    `set_preempted`, `set_roaming`), each recomputing it; everyone else
    only reads them (tests/test_machine_parts.py checks that no other module assigns them)."""

    __slots__ = ("idx", "hw", "views", "stale", "frames", "sb", "in_nmi", "preempted_until", "skip",
                 "stop", "code_frame", "k", "plain", "online", "ipis", "stop_req", "preempted", "roaming",
                 "sb_order", "sb_epoch", "ifloor", "ilevel", "maint", "ival", "ftime", "iown")
    NOT_STATE = {"idx": "identity", "k": "identity", "hw": "read through abstract registers",
                 "stop": "reset before every slice reads it",
                 "plain": "derived from online, ipis, stop_req, preempted and roaming"}

    def __init__(self, idx: int, hw, sites: dict[str, SiteState]):
        self.idx = idx
        self.hw = hw
        self.views = {name: bytearray(s.old) for name, s in sites.items()}
        self.k = None
        self.reset()

    def reset(self) -> None:
        self.stale: set = set()
        self.frames: list[Frame] = []
        self.sb: deque = deque()  # this CPU's store buffer (machine/memory.py drains it)
        # Out-of-order buffers only (memory.py): per entry of `sb`, (the store barrier epoch it
        # was made in, is it a store-release); the epoch the next store is made in.
        self.sb_order: deque = deque()
        self.sb_epoch = 0
        # Fetch that is not coherent only (icache.py), by site name: the oldest version index
        # this CPU may still fetch, the version its instruction cache refills from once
        # invalidated, and maintenance it issued that a barrier has not completed yet.
        self.ifloor: dict[str, int] = {}
        self.ilevel: dict[str, int] = {}
        self.maint: list = []
        # ... the invalidations completed here, by site: ((moment, refill level), ...), and
        # the moment of this CPU's latest fetch (fetches happen in program order)
        self.ival: dict[str, tuple] = {}
        self.ftime = 0
        # ... and, by site, what its fetch sees there since a FENCE.I made its own stores still
        # in its buffer visible to it (until they reach memory)
        self.iown: dict[str, bytes] = {}
        self.in_nmi = False
        self.preempted_until = 0
        self.skip = -1
        self.stop = None
        self.code_frame: Frame | None = None
        self.online = True
        self.ipis: list = []  # pending IPIs (the SyncCores ops that sent them), oldest first
        self.stop_req = None  # the stop_machine rendezvous this CPU is asked to park in
        self.preempted = False
        self.roaming = False  # its thread is a task free to migrate, not finished
        self.plain = True

    def _replain(self) -> None:
        self.plain = (self.online and not self.ipis and self.stop_req is None and not self.preempted
                      and not self.roaming)

    def set_roaming(self, value: bool) -> None:
        self.roaming = value
        self._replain()

    def set_online(self, value: bool) -> None:
        self.online = value
        self._replain()

    def set_preempted(self, value: bool) -> None:
        self.preempted = value
        self._replain()

    def set_stop_req(self, sm) -> None:
        self.stop_req = sm
        self._replain()

    def add_ipi(self, sync) -> None:
        self.ipis.append(sync)
        self._replain()

    def take_ipis(self) -> list:
        """Remove and return the pending IPIs."""
        ipis, self.ipis = self.ipis, []
        self._replain()
        return ipis

    def state(self, now: int) -> dict:
        """This CPU's part of the abstract state; `now` is the machine's step, so that a
        preemption is kept as the steps it has left."""
        out = {}
        for name in _state_slots(type(self)):
            out[name] = getattr(self, name)
        out["preempted_until"] = max(0, self.preempted_until - now) if self.preempted else 0
        out["views"] = tuple(bytes(v) for v in self.views.values())
        out["stale"] = tuple(sorted(s.name for s in self.stale))
        out["code_frame"] = next((i for i, f in enumerate(self.frames) if f is self.code_frame), -1)
        return out


class Lock:
    __slots__ = ("name", "owner", "readers", "waiting_writers")

    def __init__(self, name: str):
        self.name = name
        self.owner: Frame | None = None  # mutex owner or rwsem writer
        self.readers: list[Frame] = []
        self.waiting_writers: list[Frame] = []

    @property
    def idle(self) -> bool:
        return self.owner is None and not self.readers and not self.waiting_writers

    def state(self) -> dict:
        return {n: getattr(self, n) for n in _state_slots(type(self))}


class StopMachineState:
    """One stop_machine rendezvous: the calling CPU, the CPUs parked so far, the release; with
    a callback for every CPU, that callback and the CPUs that have returned from it."""

    __slots__ = ("caller", "arrived", "running", "released", "fn", "finished")

    def __init__(self, caller: int, fn=None):
        self.caller = caller
        self.arrived: set[int] = set()
        # the caller has passed the rendezvous too (its IRQs are off): only then does anyone
        # run the callback (multi_cpu_stop() moves every CPU through each state together)
        self.running = False
        self.released = False
        self.fn = fn
        self.finished: set[int] = set()


@dataclass
class RunResult:
    finding: Finding | None
    steps: int
    completed: bool
    schedule_used: int
    schedule: bytes = b""  # the bytes that replay this run (recorded when a source steered it)
    events: list | None = None  # the structured trace (fuzzer/events/), when traced
    renderer: Any = None  # turns `events` into text
    features: list[int] | None = None  # interleaving coverage, when asked for
    # for each feature, how many decisions had been drawn when it occurred: the schedule's
    # first `feature_at[i]` bytes lead to the state that produced `features[i]`
    feature_at: list[int] | None = None
    # indices into `features` of the ones whose state is one step from an oracle's violation
    # (a text store while another CPU fetches other bytes there; a free while a frame that
    # read the variable still runs): where a search should spend its next runs
    near: list[int] | None = None
    abandoned: bool = False  # the choice source stopped the run early (pruned)
    error: Any = None  # a guard.ProtocolError: the protocol's own code went wrong

    @property
    def verdict(self) -> str:
        return "error" if self.error else "crash" if self.finding else "clean"

    @cached_property
    def trace(self) -> list[str]:
        """The text trace: one line per event."""
        return [self.renderer.line(e) for e in self.events] if self.events else []

    @property
    def trace_sha256(self) -> str:
        return hashlib.sha256("\n".join(self.trace).encode()).hexdigest()
