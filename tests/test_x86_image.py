"""The x86 image is pinned byte for byte: the runs of every protocol (and every stored
reproducer) depend on where each instruction is. The digests were first taken from the image
builder as it was before the generic builder (fuzzer/arch/image.py) replaced it, and taken
again when the call targets moved far away (Arch.far_base; that move changed no verdict,
oracle, title or step count over 78,000 runs of every variant at 2, 4 and 8 CPUs) and when the
IRQ handler was added (schedule format 2)."""

import hashlib

import pytest

from fuzzer.arch import get_arch
from fuzzer.protocols import registry
from tests import oracle_protocols

# sha256(text + repr(sorted(symbols))) of each protocol's image, with and without the caller
# loop's IRQs-off call
PINNED = {
    "x86/ftrace_nmi_2008": "ecb6310aa50a156d916b3a3425f8264d70d9fefd2b2efc601bdd9902afe2895c",
    "x86/ftrace_nmi_2010": "ecb6310aa50a156d916b3a3425f8264d70d9fefd2b2efc601bdd9902afe2895c",
    "x86/stop_machine_naive": "ecb6310aa50a156d916b3a3425f8264d70d9fefd2b2efc601bdd9902afe2895c",
    "x86/text_mutex_hotplug": "fddaab2d0ccf926bf7e47ab44dadcea7d8a2a7b3157eb3d8c32dd128f3672fdd",
    "x86/text_poke_bp": "b76e5d86cd0b2d0658fadb44feab2cecad2d8c7592320eea04855a4ef866db34",
    "test/guest_fault": "b76e5d86cd0b2d0658fadb44feab2cecad2d8c7592320eea04855a4ef866db34",
    "test/mid_insn_resume": "2d758890b6ba931a266599e4311769fda9d210fc1334c9e5da2e6d75ee70a7be",
    "test/protocol_assert": "b76e5d86cd0b2d0658fadb44feab2cecad2d8c7592320eea04855a4ef866db34",
    "test/stale_after_complete": "b76e5d86cd0b2d0658fadb44feab2cecad2d8c7592320eea04855a4ef866db34",
    "test/wrong_target": "b76e5d86cd0b2d0658fadb44feab2cecad2d8c7592320eea04855a4ef866db34",
}
PINNED_NO_IRQS_OFF = {
    "x86/ftrace_nmi_2008": "8717400dcce6b8b868d596e6fd5bdc7e92a515e6c42f9915ab495f35e5998c33",
    "x86/ftrace_nmi_2010": "8717400dcce6b8b868d596e6fd5bdc7e92a515e6c42f9915ab495f35e5998c33",
    "x86/stop_machine_naive": "8717400dcce6b8b868d596e6fd5bdc7e92a515e6c42f9915ab495f35e5998c33",
    "x86/text_mutex_hotplug": "c5960025b4db2684dec854c22920a619a27583c8f14de9f4773fbbd1af307f1c",
    "x86/text_poke_bp": "620f9e1dc6608a62e2e20b6a6db14b4bab61eb8edec677aac944a817f9690a80",
}

# The addresses just after the image's stop instruction, as the machine used to find them by
# scanning the text for its opcode byte (the image now says where it put them).
STOP_PCS = {
    **dict.fromkeys(["x86/ftrace_nmi_2008", "x86/ftrace_nmi_2010", "x86/stop_machine_naive",
                     "x86/text_mutex_hotplug"], {0x10005B, 0x10006B}),  # two sites; the NMI and IRQ handlers' stops
    **dict.fromkeys(["x86/text_poke_bp", "test/guest_fault", "test/mid_insn_resume",
                     "test/protocol_assert", "test/stale_after_complete", "test/wrong_target"],
                    {0x100046, 0x100056}),
}


def _protocols() -> dict:
    found = dict(registry())
    for obj in vars(oracle_protocols).values():
        if isinstance(obj, type) and getattr(obj, "variants", None) and obj.name.startswith("test/"):
            found[obj.name] = obj
    return found


def _digest(image) -> str:
    return hashlib.sha256(image.text + repr(sorted(image.symbols.items())).encode()).hexdigest()


def test_every_shipped_x86_protocol_is_pinned():
    # test-only protocols added after the generic builder have no older builder to agree with
    x86 = {name for name, cls in registry().items() if cls.arch == "x86_64"}
    assert x86 <= set(PINNED), "a new x86 protocol: pin its image here"


@pytest.mark.parametrize("name", sorted(PINNED))
def test_image_bytes_and_symbols_are_unchanged(name):
    cls = _protocols()[name]
    image = get_arch(cls.arch).build_image(cls.sites)
    assert _digest(image) == PINNED[name]
    assert image.stop_pcs == STOP_PCS[name]
    if name in PINNED_NO_IRQS_OFF:
        assert _digest(get_arch(cls.arch).build_image(cls.sites, calls_irqs_off=False)) \
            == PINNED_NO_IRQS_OFF[name]
