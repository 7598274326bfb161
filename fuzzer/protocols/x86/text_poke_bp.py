"""x86 text_poke_bp(): patch a live 5-byte instruction through a temporary breakpoint.

Models text_poke_bp_batch() in arch/x86/kernel/alternative.c as of v5.6 (refcounted descriptor,
commit 1f676247f36a): publish the descriptor (vector + refs=1), smp_wmb(), write int3 on the
first byte (a 1-byte store is atomic), sync every CPU, write the tail, sync, write the first
byte, sync, then drop the ref and wait for handlers still holding one before the vector (on the
caller's stack) goes away. poke_int3_handler() takes a ref with atomic_inc_not_zero(), looks
the address up, emulates the new instruction, and passes foreign int3s on.

Variants (expected verdict on 4 CPUs):
* correct -- clean.
* no-sync-after-int3 -- torn-fetch: a CPU that never saw the int3 fetches old first byte + new tail.
* no-final-sync -- unhandled-trap: a CPU still sees the int3 after the descriptor is released.
* publish-after-int3 -- unhandled-trap: a CPU traps before refs/vector are visible.
* no-wmb -- clean, and that is the point: x86-TSO keeps the descriptor stores ahead of the int3
  store in the FIFO store buffer, so the barrier is only a compiler barrier on x86. A crash here
  would mean the memory model is wrong. (On arm64 the same mutant must break.)
* early-free -- use-after-free: the vector is freed before the final sync without waiting for
  the refcount, so a handler still running reads freed memory.
"""

from __future__ import annotations

from ...arch.x86_64 import INT3, NOP5
from ...protocol import Call, Protocol, Site


class TextPokeBP(Protocol):
    name = "x86/text_poke_bp"
    summary = "breakpoint patching: int3, sync, tail, sync, head, sync, refcounted teardown"
    sites = {"fentry": Site(old=NOP5, new=Call("ftrace_caller"))}
    params = dict(sync_after_int3=True, final_sync=True, publish_first=True, wmb=True,
                  wait_refs=True)
    variants = {
        "correct": {},
        "no-sync-after-int3": dict(sync_after_int3=False),
        "no-final-sync": dict(final_sync=False),
        "publish-after-int3": dict(publish_first=False),
        "no-wmb": dict(wmb=False),
        "early-free": dict(wait_refs=False),
    }
    expect = {"correct": None, "no-sync-after-int3": "torn-fetch", "no-final-sync": "unhandled-trap",
              "publish-after-int3": "unhandled-trap", "no-wmb": None, "early-free": "use-after-free"}

    def patcher(self, k):
        yield from self.poke_bp(k, list(self.sites))

    def poke_bp(self, k, names):
        """text_poke_bp_batch() for `names`, each patched from old to new."""
        vec = tuple((k.site(n).addr, k.site(n).new) for n in names)
        if self.v.publish_first:
            yield from self._publish(k, vec)
        for n in names:
            yield k.poke(n, INT3)
        if not self.v.publish_first:
            yield from self._publish(k, vec)
        if self.v.sync_after_int3:
            yield k.sync_cores()
        for n in names:
            yield k.poke(n, k.site(n).new[1:], offset=1)
        yield k.sync_cores()
        for n in names:
            yield k.poke(n, k.site(n).new[:1])
        if not self.v.wait_refs:
            yield k.free("bp.vec")
        if self.v.final_sync:
            yield k.sync_cores()
        if self.v.wait_refs:
            if not (yield k.atomic_dec_and_test("bp.refs")):
                yield k.wait_until("bp.refs", lambda r: r == 0, "bp.refs drops to 0")
            yield k.free("bp.vec")

    def _publish(self, k, vec):
        yield k.alloc("bp.vec", vec)
        if self.v.wmb:
            yield k.wmb()
        yield k.store("bp.refs", 1)

    def int3_handler(self, k, ip):
        if not (yield k.inc_not_zero("bp.refs")):
            return k.NOT_MINE
        vec = yield k.load("bp.vec")
        insn = next((new for addr, new in vec or () if addr == ip), None)
        yield k.atomic_dec("bp.refs")
        if insn is None:
            return k.NOT_MINE
        return k.emulate(ip, insn)
