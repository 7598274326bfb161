"""arm64 twin of x86/text_poke_bp:no-wmb: a BRK handler's descriptor published before the BRK.

The shape of text_poke_bp() (arch/x86/kernel/alternative.c, v5.6+, refcounted descriptor of
commit 1f676247f36a: the descriptor, then atomic_set_release(&bp_desc.refs, 1), then smp_wmb()
"for making sure the nr_entries and handler are correctly ordered wrt. patching", then the int3)
on a weak architecture: the patcher publishes the descriptor a BRK handler reads (the new
instruction, and a reference count), then writes BRK over the site with
aarch64_insn_patch_text_nosync(), kicks every CPU (kick_all_cpus_sync()), writes the new
instruction, kicks again, drops its reference and waits for handlers still holding one before
the descriptor goes away. The handler takes a reference with atomic_inc_not_zero() (a fully
ordered atomic), reads the descriptor and emulates the new instruction, passing foreign BRKs on.
NOP, BRK and BL are all in the CMODX list, so a BRK may be written while CPUs run the site.

On arm64 the descriptor stores and the BRK store may become visible in any order unless
smp_wmb() (DMB ISHST) separates them: this is what `no-wmb` shows; on x86-TSO the FIFO store
buffer keeps them in order and x86/text_poke_bp:no-wmb is clean.

Variants (expected verdict on 2 and 4 CPUs):
* correct -- clean.
* no-wmb -- unhandled-trap: the descriptor is published with plain stores and no smp_wmb(), so
  the BRK reaches memory before the reference count, and a CPU that fetches it finds no
  descriptor (the missing barrier).
* early-free -- use-after-free: the descriptor is freed before the last kick, without waiting
  for the handlers that hold a reference.
"""

from __future__ import annotations

from ...arch.arm64 import BRK, NOP
from ...protocol import Call, Protocol, Site


class Arm64PublishBrk(Protocol):
    name = "arm64/publish_brk"
    arch = "arm64"
    summary = "publish a BRK handler's descriptor, smp_wmb(), BRK, kick, new insn, kick, refcounted free"
    sites = {"fentry": Site(old=NOP, new=Call("ftrace_caller"))}
    params = dict(wmb=True, wait_refs=True)
    variants = {"correct": {}, "no-wmb": dict(wmb=False), "early-free": dict(wait_refs=False)}
    expect = {"correct": None, "no-wmb": "unhandled-trap", "early-free": "use-after-free"}

    def patcher(self, k):
        site = k.site("fentry")
        yield k.alloc("bp.vec", (site.addr, site.new))
        if self.v.wmb:
            yield k.store_release("bp.refs", 1)  # atomic_set_release(&bp_desc.refs, 1)
            yield k.wmb()  # the descriptor before the BRK
        else:
            yield k.store("bp.refs", 1)
        yield from k.patch_text_nosync("fentry", BRK)
        yield k.sync_cores()
        yield from k.patch_text_nosync("fentry", site.new)
        if not self.v.wait_refs:
            yield k.free("bp.vec")
        yield k.sync_cores()
        if self.v.wait_refs:
            if not (yield k.atomic_dec_and_test("bp.refs")):
                yield k.wait_until("bp.refs", lambda r: r == 0, "bp.refs drops to 0")
            yield k.free("bp.vec")

    def trap_handler(self, k, ip):
        if not (yield k.inc_not_zero("bp.refs")):
            return k.NOT_MINE
        vec = yield k.load("bp.vec")
        yield k.atomic_dec("bp.refs")
        if not vec or vec[0] != ip:  # not published yet (0), or not this site
            return k.NOT_MINE
        return k.emulate(ip, vec[1])
