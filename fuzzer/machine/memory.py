"""Shared memory and the per-CPU store buffers: protocol variables and the text's truth.

Protocol variables live in one shared memory under string names; a CPU's stores, to variables
and to text, go through its store buffer (a FIFO on x86-TSO, `Cpu.sb`) and reach memory when
they drain: at the CPU's own steps (a draw), at fences and locked operations, or when nothing
else can run. A CPU reads its own buffered stores. Text stores (pokes) are split into the
architecture's store units; the bytes a site holds in memory are its `truth`.

This module also holds the op handlers for the data and text operations a protocol yields
(load, store, fences, atomics, alloc/free, wait_until; poke, read_text, expect_text, bug).
"""

from __future__ import annotations

from typing import Any

from .. import draws, ops
from .. import events as ev
from ..guard import protected
from ..protocol import Addr
from .part import Part
from .state import Cpu, Frame, SiteState

_PICK = draws.DRAIN_PICK


def _holds(pred, values: tuple) -> bool:
    try:
        return bool(pred(*values))
    except TypeError:  # a value of another type than the predicate expects yet: not ready
        return False


class Memory(Part):
    SIBLINGS = ('checks', 'fetch', 'views')
    NOT_STATE = {"store_in_order": "the architecture's memory model",
                 "writer": "who wrote each value: coverage features only"}

    def __init__(self, machine) -> None:
        super().__init__(machine)
        self.store_in_order = machine.arch.store_buffer == "fifo"
        self.mem: dict[str, Any] = {}
        self.freed: set[str] = set()
        # var -> who wrote the value memory holds (coverage only: reads-from pairs)
        self.writer: dict[str, str] = {}



    def reset(self) -> None:
        symbols = self.m.image.symbols
        self.mem = {var: symbols[v.symbol] if type(v) is Addr else v
                    for var, v in protected(-1, self.m.proto.initial_memory).items()}
        self.freed = set()
        self.writer = {}

    def state(self) -> dict:
        return {"mem": tuple(sorted(self.mem.items(), key=lambda kv: kv[0])),
                "freed": tuple(sorted(self.freed))}

    def handlers(self) -> dict:
        return {ops.Load: self.op_load, ops.Store: self.op_store, ops.Fence: self.op_fence,
                ops.Atomic: self.op_atomic, ops.Alloc: self.op_alloc, ops.Free: self.op_free,
                ops.WaitUntil: self.op_wait, ops.Poke: self.op_poke, ops.ReadText: self.op_read_text,
                ops.ExpectText: self.op_expect_text, ops.Bug: self.op_bug}

    def readiness(self) -> dict:
        return {ops.WaitUntil: self.wait_ready}

    # ---- reading -------------------------------------------------------------------------------
    def peek(self, cpu: Cpu, var: str):
        """`var` as `cpu` sees it: its own newest buffered store, else memory."""
        for key, value in reversed(cpu.sb):
            if key == var:
                return value
        return self.mem.get(var, 0)

    def load(self, cpu: Cpu, var: str, frame: Frame):
        if self.live(cpu, var, frame):
            return self.peek(cpu, var)
        return None

    def live(self, cpu: Cpu, var: str, frame: Frame) -> bool:
        """False (and the oracles told) if `var`'s lifetime has ended."""
        if var in self.freed:
            self.checks.freed_access(cpu, frame, var)
            return False
        return True

    def text_as_seen(self, cpu: Cpu, site: SiteState) -> bytes:
        """The site's bytes as `cpu` sees memory: the truth with its own buffered pokes."""
        if not cpu.sb:
            return bytes(site.truth)
        data = bytearray(site.truth)
        for key, value in cpu.sb:
            if type(key) is tuple and key[1] is site:
                off, b = value
                data[off:off + len(b)] = b
        return bytes(data)

    # ---- draining ------------------------------------------------------------------------------
    def push(self, cpu: Cpu, key, value, release: bool = False) -> None:
        """A store enters `cpu`'s store buffer (a store-release: every earlier one drains first
        on an out-of-order buffer; a FIFO keeps that order anyway)."""
        cpu.sb.append((key, value))
        if not self.store_in_order:
            cpu.sb_order.append((cpu.sb_epoch, release))

    def drainable(self, cpu: Cpu) -> list[int]:
        """Out-of-order buffers: the entries (indices into `cpu.sb`) that may reach memory next.
        Stores to one variable or one site stay in order; nothing passes a store barrier (an
        entry of an earlier epoch left); a store-release waits until it is the oldest."""
        order = cpu.sb_order
        epoch = order[0][0]
        seen = set()
        out = []
        for i, (key, _value) in enumerate(cpu.sb):
            e, release = order[i]
            if e != epoch:
                break
            where = key[1] if type(key) is tuple else key
            if where in seen:
                continue
            seen.add(where)
            if not (release and i):
                out.append(i)
        return out

    def drain(self, cpu: Cpu, count: int) -> None:
        """`count` entries of `cpu`'s store buffer reach memory: the oldest ones on a FIFO, or
        all of them in program order; otherwise on an out-of-order buffer each one is a
        decision of the schedule among the entries free to drain (draws.DRAIN_PICK)."""
        sb = cpu.sb
        n = min(count, len(sb))
        if self.store_in_order or n == len(sb):
            for _ in range(n):
                self.reach(cpu, *sb.popleft())
            if not self.store_in_order:
                cpu.sb_order.clear()
                cpu.sb_epoch = 0  # epochs only order what is buffered
            return
        ch = self.m.ch
        for _ in range(n):
            free = self.drainable(cpu)
            self._drain_entry(cpu, free[0] if len(free) == 1 else free[
                ch.byte(_PICK.default, _PICK.name, len(free), tuple(range(len(free)))) % len(free)])

    def drain_site(self, cpu: Cpu, site: SiteState) -> None:
        """`cpu`'s buffered stores to `site`'s text reach memory, with only what must go
        before them (a cache clean of the site is ordered after them)."""
        self.drain_to(cpu, lambda key: type(key) is tuple and key[1] is site)

    def drain_to(self, cpu: Cpu, hit) -> None:
        """`cpu`'s buffered stores whose key `hit` accepts reach memory, with only what must go
        before them."""
        sb = cpu.sb
        if self.store_in_order:
            self.drain(cpu, max((j + 1 for j, (key, _) in enumerate(sb) if hit(key)), default=0))
            return
        while any(hit(key) for key, _ in sb):
            free = self.drainable(cpu)
            self._drain_entry(cpu, next((j for j in free if hit(sb[j][0])), free[0]))

    def _drain_entry(self, cpu: Cpu, i: int) -> None:
        """Out-of-order buffers: entry `i` of `cpu`'s store buffer reaches memory."""
        sb = cpu.sb
        entry = sb[i]
        del sb[i]
        del cpu.sb_order[i]
        if not sb:
            cpu.sb_epoch = 0  # epochs only order what is buffered
        self.reach(cpu, *entry)

    def reach(self, cpu: Cpu, key, value) -> None:
        """One buffered store reaches memory."""
        m = self.m
        if type(key) is tuple:
            site = key[1]
            off, data = value
            site.truth[off:off + len(data)] = data
            self.views.text_reached(site)
            if m.observing:
                m.emit(cpu, ev.TextDrain, site.name, off, data)
        else:
            self.mem[key] = value
            self.writer[key] = "patcher-cpu" if cpu.idx == 0 else "cpu"
            if m.observing:
                m.emit(cpu, ev.Drain, key, value)
        self.checks.shared_changed(cpu)

    def drain_all(self, cpu: Cpu) -> None:
        if cpu.sb:
            self.drain(cpu, len(cpu.sb))

    def acquire(self, cpu: Cpu) -> None:
        """A lock is taken. On a FIFO (x86-TSO) machine that is a locked read-modify-write,
        which drains the store buffer; acquire semantics order nothing else here, since a CPU's
        own ops run in program order."""
        if self.store_in_order and cpu.sb:
            self.drain(cpu, len(cpu.sb))

    def release(self, cpu: Cpu) -> None:
        """A lock is released: every store made before it is visible before the lock is seen
        free (x86: the unlock store follows them in the FIFO; weak ISAs: release semantics), so
        the next holder sees them."""
        if cpu.sb:
            self.drain(cpu, len(cpu.sb))

    def drain_every_cpu(self) -> bool:
        """Drain every buffer (nothing else can run); True if anything drained."""
        drained = False
        for c in self.m.cpus:
            if c.sb:
                self.drain(c, len(c.sb))
                drained = True
        return drained

    # ---- data ops ------------------------------------------------------------------------------
    def op_load(self, cpu: Cpu, frame: Frame, op: ops.Load) -> None:
        m = self.m
        var = op.var
        if var in self.freed:
            v = self.load(cpu, var, frame)
        elif cpu.sb:
            v = self.peek(cpu, var)
        else:
            v = self.mem.get(var, 0)
        if m.observing:
            m.emit(cpu, ev.Load, var, v, record=m.finding is None)
        if m.finding is None:
            m.advance(cpu, frame, v)

    def op_store(self, cpu: Cpu, frame: Frame, op: ops.Store) -> None:
        if not self.live(cpu, op.var, frame):
            return
        self.push(cpu, op.var, op.value, op.release)
        m = self.m
        if m.observing:
            m.emit(cpu, ev.Store, op.var, op.value)
        m.advance(cpu, frame, None)

    def op_fence(self, cpu: Cpu, frame: Frame, op: ops.Fence) -> None:
        self.fence(cpu, op.kind)
        self.m.advance(cpu, frame, None)

    def fence(self, cpu: Cpu, kind: str) -> None:
        """A barrier of `kind` (mb, wmb, rmb, dsb, drain) on `cpu`, from a protocol or a program."""
        # A full barrier drains (a later load must not read before an earlier store is
        # visible). x86-TSO: wmb/rmb are compiler barriers. Out of order: a store barrier makes
        # a new epoch no store passes; loads run in program order, so a read barrier adds
        # nothing. A DSB also completes the CPU's cache maintenance.
        if kind == "mb" or kind == "dsb":
            self.drain(cpu, len(cpu.sb))
            if kind == "dsb":
                self.views.barrier(cpu)
            elif cpu.maint:
                self.views.order_cleans(cpu)
        elif kind == "wmb" and cpu.sb and not self.store_in_order:
            cpu.sb_epoch += 1
        elif kind == "drain":  # the earlier stores complete, nothing else is ordered (DSB ST)
            self.drain(cpu, len(cpu.sb))
        m = self.m
        if m.observing:
            m.emit(cpu, ev.Fence, kind)

    def op_atomic(self, cpu: Cpu, frame: Frame, op: ops.Atomic) -> None:
        var = op.var
        if var in self.freed:
            self.live(cpu, var, frame)
            return
        if cpu.sb:
            if op.ordered or self.store_in_order:  # a locked instruction, a fully ordered RMW
                self.drain(cpu, len(cpu.sb))
            else:  # a relaxed RMW needs only this CPU's newest value of the variable
                self.drain_to(cpu, lambda key: key == var)
        mem = self.mem
        old = mem.get(var, 0)
        new, result = op.fn(old)
        mem[var] = new
        m = self.m
        if m.observing:
            m.emit(cpu, ev.Atomic, op.name, var, old, new, result)
        self.writer[var] = frame.task or frame.kind
        self.checks.shared_changed(cpu)
        if m.finding is None:
            m.advance(cpu, frame, result)

    def op_alloc(self, cpu: Cpu, frame: Frame, op: ops.Alloc) -> None:
        # a new lifetime begins; the initializing store goes through the store buffer
        self.freed.discard(op.var)
        self.push(cpu, op.var, op.value)
        m = self.m
        if m.observing:
            m.emit(cpu, ev.Alloc, op.var, op.value)
        m.advance(cpu, frame, None)

    def op_free(self, cpu: Cpu, frame: Frame, op: ops.Free) -> None:
        self.drain(cpu, len(cpu.sb))
        self.freed.add(op.var)
        m = self.m
        if m.observing:
            m.emit(cpu, ev.Free, op.var)
        self.checks.shared_changed(cpu)
        if m.finding is None:
            m.advance(cpu, frame, None)

    def wait_ready(self, cpu: Cpu, frame: Frame, op: ops.WaitUntil) -> bool:
        values = (self.peek(cpu, op.var),) if type(op.var) is str else tuple(self.peek(cpu, v) for v in op.var)
        return protected(cpu.idx, _holds, op.pred, values)

    def op_wait(self, cpu: Cpu, frame: Frame, op: ops.WaitUntil) -> None:
        m = self.m
        if type(op.var) is str:
            v = self.load(cpu, op.var, frame)
        else:
            v = tuple(self.load(cpu, var, frame) for var in op.var)
        if m.finding is None:
            if m.observing:
                m.emit(cpu, ev.Waited, op.what, op.var, v)
            m.advance(cpu, frame, v)

    # ---- text ops ------------------------------------------------------------------------------
    def op_poke(self, cpu: Cpu, frame: Frame, op: ops.Poke) -> None:
        m = self.m
        site = m.sites[op.site]
        units = m.arch.store_units(op.offset, op.data)
        if frame.poke_pos == 0:
            self.begin_text_write(cpu, site, op.offset, op.data)
        off, data = units[frame.poke_pos]
        frame.poke_pos += 1
        self.text_store(cpu, site, off, data)
        if frame.poke_pos == len(units):
            frame.poke_pos = 0
            m.advance(cpu, frame, None)

    def begin_text_write(self, cpu: Cpu, site: SiteState, off: int, data: bytes) -> None:
        """`cpu` begins writing `data` at `off` in `site` (a poke, a program's store to code):
        the whole version it leaves the site in, as the writer sees memory, is one the site was
        written to, and a new operation on the site begins."""
        whole = bytearray(self.text_as_seen(cpu, site))
        whole[off:off + len(data)] = data
        self.fetch.written(site, bytes(whole))
        site.completed = None

    def text_store(self, cpu: Cpu, site: SiteState, off: int, data: bytes, release: bool = False) -> None:
        """One text store unit enters `cpu`'s store buffer (and its own fetch, where the
        architecture lets a CPU fetch its own stores at once)."""
        self.push(cpu, ("text", site), (off, data), release)
        m = self.m
        if m.arch.own_store_visible_to_fetch:
            self.views.set(cpu, site, off, data)
        if m.observing:
            m.emit(cpu, ev.Poke, site.name, off, data)

    def op_read_text(self, cpu: Cpu, frame: Frame, op: ops.ReadText) -> None:
        m = self.m
        data = self.text_as_seen(cpu, m.sites[op.site])
        if m.observing:
            m.emit(cpu, ev.ReadText, op.site, data)
        m.advance(cpu, frame, data)

    def op_expect_text(self, cpu: Cpu, frame: Frame, op: ops.ExpectText) -> None:
        m = self.m
        site = m.sites[op.site]
        data = self.text_as_seen(cpu, site)
        if data != op.data:
            self.checks.text_mismatch(cpu, site, op.what, op.data, data)
            return
        if m.observing:
            m.emit(cpu, ev.TextChecked, site.name, op.what)
        m.advance(cpu, frame, None)

    def op_bug(self, cpu: Cpu, frame: Frame, op: ops.Bug) -> None:
        self.checks.bug(cpu, op.message)
