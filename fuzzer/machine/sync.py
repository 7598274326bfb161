"""Synchronization: locks and their wait-for graph, the stop_machine rendezvous, CPU hotplug.

* Locks have owners and waiters: a mutex, or a percpu rwsem whose queued writer blocks new
  readers (cpu_hotplug_lock). A frame that starts waiting adds an edge to the wait-for graph,
  and the deadlock oracle looks for a cycle through it then: deadlocks are found when the last
  edge appears, not by timeout.
* stop_machine is a rendezvous: every other online CPU must reach a point where its stopper
  thread can run (thread context, IRQs on) and park with IRQs off before the callback runs;
  parked CPUs still take NMIs. Leaving it serializes when the architecture says so.
* CPU hotplug takes a CPU offline (its pending IPIs are flushed) and brings it back through
  reset (serializing).
"""

from __future__ import annotations

from .. import events as ev
from .. import ops
from .part import Part
from .state import Cpu, Frame, Lock, StopMachineState


class Sync(Part):
    SIBLINGS = ('checks', 'interrupts', 'memory', 'views')
    NOT_STATE = {
                 "lock_ops": "matters only while a lock op is on some CPU's stack, and is then "
                             "True in every state"}

    def __init__(self, machine) -> None:
        super().__init__(machine)
        self.locks: dict[str, Lock] = {}
        # a lock op was yielded in this run: from then on, the fair scheduler checks the CPUs
        # after the one it picks for lock ops (their readiness check queues waiting writers)
        self.lock_ops = False



    def reset(self) -> None:
        self.locks = {}
        self.lock_ops = False

    def state(self) -> dict:
        return {"locks": [lk.state() for _, lk in sorted(self.locks.items()) if not lk.idle]}

    def handlers(self) -> dict:
        return {ops.LockOp: self.op_lock, ops.UnlockOp: self.op_unlock,
                ops.StopMachineEnter: self.op_stop_enter, ops.StopMachineExit: self.op_stop_exit,
                ops.Park: self.op_park, ops.CpuDown: self.op_cpu_down, ops.CpuUp: self.op_cpu_up,
                ops.SynchronizeRcu: self.op_synchronize_rcu}

    def readiness(self) -> dict:
        return {ops.LockOp: self.lock_ready, ops.Park: self.park_ready,
                ops.StopMachineEnter: self.stop_ready, ops.StopMachineExit: self.stop_exit_ready,
                ops.CpuDown: self.cpu_down_ready, ops.SynchronizeRcu: self.grace_period_over}

    def on_yield(self) -> dict:
        """Ops whose yield itself has an effect, at the moment the coroutine yields them."""
        return {ops.LockOp: self.lock_yielded, ops.StopMachineEnter: self.stop_requested}

    # ---- locks ---------------------------------------------------------------------------------
    def lock(self, name: str) -> Lock:
        lock = self.locks.get(name)
        if lock is None:
            lock = self.locks[name] = Lock(name)
        return lock

    def lock_yielded(self, cpu: Cpu, frame: Frame, op: ops.LockOp) -> None:
        self.lock_ops = True

    def lock_ready(self, cpu: Cpu, frame: Frame, op: ops.LockOp) -> bool:
        lock = self.lock(op.lock)
        if op.mode == "read":
            # percpu-rwsem: a reader waits behind a queued writer (writer preference)
            ok = lock.owner is None and not lock.waiting_writers
        elif op.mode == "write":
            ok = lock.owner is None and not lock.readers
            if not ok and frame not in lock.waiting_writers:
                lock.waiting_writers.append(frame)
        else:
            ok = lock.owner is None
        if not ok and "waits" not in frame.tags:
            m = self.m
            frame.tags["waits"] = op.lock
            if m.observing:
                m.emit(cpu, ev.LockWait, op.lock, op.mode)
            self.checks.lock_wait(cpu, frame)
        return ok

    def op_lock(self, cpu: Cpu, frame: Frame, op: ops.LockOp) -> None:
        self.memory.acquire(cpu)
        lock = self.lock(op.lock)
        if frame in lock.waiting_writers:
            lock.waiting_writers.remove(frame)
        if op.mode == "read":
            lock.readers.append(frame)
        else:
            lock.owner = frame
        frame.tags.pop("waits", None)
        m = self.m
        if m.observing:
            m.emit(cpu, ev.Locked, op.lock, op.mode)
        self.checks.shared_changed(cpu)
        if m.finding is None:
            m.advance(cpu, frame, None)

    def op_unlock(self, cpu: Cpu, frame: Frame, op: ops.UnlockOp) -> None:
        self.memory.release(cpu)
        lock = self.lock(op.lock)
        if op.mode == "read":
            lock.readers.remove(next(f for f in lock.readers if f is frame))
        else:
            lock.owner = None
        m = self.m
        if m.observing:
            m.emit(cpu, ev.Unlocked, op.lock, op.mode)
        self.checks.shared_changed(cpu)
        if m.finding is None:
            m.advance(cpu, frame, None)

    def held_by(self, frame: Frame) -> tuple[str, ...]:
        return tuple(sorted(n for n, lk in self.locks.items() if lk.owner is frame or frame in lk.readers))

    def waits_for(self, frame: Frame) -> list[Frame]:
        """The frames `frame` waits for: the wait-for graph's edges out of it."""
        name = frame.tags.get("waits")
        if name is None:
            return []
        lock = self.locks[name]
        out = [lock.owner] if lock.owner is not None else []
        if frame.op.mode == "read":
            out.extend(w for w in lock.waiting_writers if w is not frame)
        else:
            out.extend(r for r in lock.readers if r is not frame)
        return out

    def cycle_from(self, start: Frame) -> list[Frame] | None:
        """A cycle of the wait-for graph through `start`, as the frames along it, or None."""
        seen = {id(start)}

        def dfs(f: Frame) -> list[Frame] | None:
            for g in self.waits_for(f):
                if g is start:
                    return [f]
                if id(g) in seen:
                    continue
                seen.add(id(g))
                rest = dfs(g)
                if rest is not None:
                    return [f] + rest
            return None

        return dfs(start)

    # ---- stop_machine -----------------------------------------------------------------------------
    def stop_requested(self, cpu: Cpu, frame: Frame, op: ops.StopMachineEnter) -> None:
        """The caller's coroutine asked for stop_machine: drain its stores, ask every other
        online CPU to park."""
        sm = op.sm = StopMachineState(cpu.idx, op.fn)
        self.memory.drain(cpu, len(cpu.sb))
        for other in self.m.cpus:
            if other.idx != cpu.idx and other.online:
                other.set_stop_req(sm)

    def stop_ready(self, cpu: Cpu, frame: Frame, op: ops.StopMachineEnter) -> bool:
        return self._all_arrived(op.sm)

    def _all_arrived(self, sm: StopMachineState) -> bool:
        return all(c.idx in sm.arrived for c in self.m.cpus if c.online and c.idx != sm.caller)

    def stop_exit_ready(self, cpu: Cpu, frame: Frame, op: ops.StopMachineExit) -> bool:
        sm = op.enter.sm
        return sm.fn is None or sm.finished >= sm.arrived

    def op_stop_enter(self, cpu: Cpu, frame: Frame, op: ops.StopMachineEnter) -> None:
        m = self.m
        if m.observing:
            m.emit(cpu, ev.StopMachineRun)
        frame.irqs_off = True
        op.sm.running = True
        m.advance(cpu, frame, None)

    def op_stop_exit(self, cpu: Cpu, frame: Frame, op: ops.StopMachineExit) -> None:
        op.enter.sm.released = True
        frame.irqs_off = False
        m = self.m
        self.memory.drain(cpu, len(cpu.sb))
        if m.observing:
            m.emit(cpu, ev.StopMachineRelease)
        m.advance(cpu, frame, None)

    def can_park(self, cpu: Cpu) -> bool:
        # The stopper thread runs once the CPU can schedule: thread context, IRQs on,
        # preemption enabled.
        top = cpu.frames[0]
        return (len(cpu.frames) == 1 and not top.preempt_count
                and (not top.code_active or (self.interrupts.irqs_on(cpu)
                                             and self.interrupts.may_schedule_out(top))))

    def park(self, cpu: Cpu) -> None:
        m = self.m
        sm = cpu.stop_req
        cpu.set_stop_req(None)
        sm.arrived.add(cpu.idx)
        if m.observing:
            m.emit(cpu, ev.Parked)

        k = cpu.k

        def parked():
            if sm.fn is not None:  # multi_cpu_stop: every CPU runs the callback
                yield ops.Park(sm, until_run=True)
                yield from sm.fn(k)
                sm.finished.add(k.cpu)
            yield ops.Park(sm)

        m.push(cpu, Frame("parked", parked(), k, irqs_off=True))

    def park_ready(self, cpu: Cpu, frame: Frame, op: ops.Park) -> bool:
        return op.sm.running if op.until_run else op.sm.released

    def op_park(self, cpu: Cpu, frame: Frame, op: ops.Park) -> None:
        # released: this CPU leaves the rendezvous when it is next scheduled
        self.m.advance(cpu, frame, None)

    def unparked(self, cpu: Cpu) -> None:
        m = self.m
        if m.observing:
            m.emit(cpu, ev.Unparked)
        if m.stop_machine_serializes:
            self.views.serialize(cpu)

    # ---- RCU -----------------------------------------------------------------------------------
    def quiescent(self, cpu: Cpu) -> bool:
        """Outside every RCU read-side critical section: its thread alone (no handler), IRQs on
        and preemption on (classic RCU), or offline."""
        if not cpu.online:
            return True
        top = cpu.frames[-1]
        return len(cpu.frames) == 1 and not top.preempt_count and self.interrupts.irqs_on(cpu)

    def grace_period_over(self, cpu: Cpu, frame: Frame, op: ops.SynchronizeRcu) -> bool:
        # Each look takes off the CPUs that are quiescent now: they have passed a quiescent
        # state since the call (the set only shrinks, so how often the scheduler looks changes
        # only how soon, not whether).
        if op.pending is None:
            return True  # the call runs first: it starts the grace period
        op.pending = {c for c in op.pending if not self.quiescent(self.m.cpus[c])}
        return not op.pending

    def op_synchronize_rcu(self, cpu: Cpu, frame: Frame, op: ops.SynchronizeRcu) -> None:
        if op.pending is None:
            op.pending = {c.idx for c in self.m.cpus if c is not cpu and c.online}
            if self.grace_period_over(cpu, frame, op):
                self.m.advance(cpu, frame, None)
            return
        self.m.advance(cpu, frame, None)

    # ---- hotplug -------------------------------------------------------------------------------
    def cpu_down_ready(self, cpu: Cpu, frame: Frame, op: ops.CpuDown) -> bool:
        target = self.m.cpus[op.cpu]
        return (target.online and len(target.frames) == 1 and not target.frames[0].preempt_count
                and self.interrupts.irqs_on(target))

    def op_cpu_down(self, cpu: Cpu, frame: Frame, op: ops.CpuDown) -> None:
        m = self.m
        target = m.cpus[op.cpu]
        target.set_online(False)
        for sync in target.take_ipis():  # a dying CPU flushes its pending IPIs
            sync.pending.discard(target.idx)
        if m.observing:
            m.emit(cpu, ev.CpuOffline, op.cpu)
        m.advance(cpu, frame, None)

    def op_cpu_up(self, cpu: Cpu, frame: Frame, op: ops.CpuUp) -> None:
        m = self.m
        target = m.cpus[op.cpu]
        target.set_online(True)
        self.views.serialize(target)  # a CPU comes up through reset and the trampoline
        if m.observing:
            m.emit(cpu, ev.CpuOnline, op.cpu)
        m.advance(cpu, frame, None)
