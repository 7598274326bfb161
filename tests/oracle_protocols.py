"""Test-only protocols, one per oracle the shipped protocols do not demonstrate.

They are written purely against the protocol API (`fuzzer.protocol`) and are not in the registry:
that the engine needs no change to run them is part of what the oracle tests show.
"""

from fuzzer.arch.x86_64 import NOP5
from fuzzer.protocol import Call, Jmp, Protocol, Site
from fuzzer.protocols.x86.text_poke_bp import TextPokeBP

NOP5_ALT = bytes.fromhex("0f1f440008")  # nopl 0x8(%rax,%rax,1): differs from NOP5 in one byte
ONE_BYTE_NOPS = b"\x90" * 5
UD2_PADDED = bytes.fromhex("0f0b909090")  # ud2; nop; nop; nop
JMP_ZERO = b"\xe9" + (0).to_bytes(4, "little")  # jmp to the next instruction: not a site version


class StaleAfterComplete(Protocol):
    """Writes the one differing byte (atomic, never torn) and declares completion at once,
    without syncing the other CPUs."""

    name = "test/stale_after_complete"
    sites = {"fentry": Site(old=NOP5, new=NOP5_ALT)}
    variants = {"no-sync": {}}
    expect = {"no-sync": "stale-after-complete"}

    def patcher(self, k):
        yield k.poke("fentry", NOP5_ALT[4:], offset=4)


class MidInsnResume(TextPokeBP):
    """Correct text_poke_bp, but the old code is five 1-byte NOPs: a CPU interrupted between
    two of them resumes inside the new 5-byte call."""

    name = "test/mid_insn_resume"
    sites = {"fentry": Site(old=ONE_BYTE_NOPS, new=Call("ftrace_caller"))}
    variants = {"nops": {}}
    expect = {"nops": "mid-insn-resume"}


class WrongTarget(TextPokeBP):
    """The int3 handler owns the trap but emulates an instruction that is no version of the site."""

    name = "test/wrong_target"
    variants = {"bad-emulation": {}}
    expect = {"bad-emulation": "wrong-target"}

    def int3_handler(self, k, ip):
        if k.site_at(ip) is None:
            return k.NOT_MINE
        yield k.load("bp.refs")
        return k.emulate(ip, JMP_ZERO)


class GuestFault(TextPokeBP):
    """Safely patches in an invalid opcode: once it is live, executing it faults."""

    name = "test/guest_fault"
    sites = {"fentry": Site(old=NOP5, new=UD2_PADDED)}
    variants = {"ud2": {}}
    expect = {"ud2": "guest-fault"}


class ProtocolAssert(Protocol):
    """ftrace_bug()-style check that expects the wrong old code."""

    name = "test/protocol_assert"
    sites = {"fentry": Site(old=NOP5, new=Call("ftrace_caller"))}
    variants = {"wrong-old": {}}
    expect = {"wrong-old": "protocol-assert"}

    def patcher(self, k):
        yield k.expect_text("fentry", ONE_BYTE_NOPS)
        yield k.poke("fentry", k.site("fentry").new)


class StaticKey(TextPokeBP):
    """A static key: its count is positive exactly when its site holds the jump, whenever
    jump_label_mutex is free (static_key_enable() under the mutex). `unlock-early` drops the
    mutex before the text is written: the invariant is false in between."""

    name = "test/static_key"
    sites = {"key": Site(old=NOP5, new=Jmp("ftrace_stub"))}
    params = {**TextPokeBP.params, "unlock_early": False}
    variants = {"correct": {}, "unlock-early": dict(unlock_early=True)}
    expect = {"correct": None, "unlock-early": "invariant"}

    def invariants(self):
        return {"key count matches its jump": lambda s: s.locked("jump_label_mutex")
                or (s.var("key.count") > 0) == s.holds("key", "new")}

    def patcher(self, k):
        yield k.lock("jump_label_mutex")
        yield k.atomic_inc("key.count")
        if self.v.unlock_early:
            yield k.unlock("jump_label_mutex")
        yield from self.poke_bp(k, ["key"])
        if not self.v.unlock_early:
            yield k.unlock("jump_label_mutex")


ORACLE_PROTOCOLS = [StaleAfterComplete, MidInsnResume, WrongTarget, GuestFault, ProtocolAssert, StaticKey]
