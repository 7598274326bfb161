"""The x86 image is pinned byte for byte: the runs of every protocol (and every stored
reproducer) depend on where each instruction is. The digests were taken from the image builder
as it was before the generic builder (fuzzer/arch/image.py) replaced it."""

import hashlib

import pytest

from fuzzer.arch import get_arch
from fuzzer.protocols import registry
from tests import oracle_protocols

# sha256(text + repr(sorted(symbols))) of each protocol's image, with and without the caller
# loop's IRQs-off call
PINNED = {
    "x86/ftrace_nmi_2008": "e1c7d0e2c04026649b02149c126f8153a3492f87a0faf537101df8ee81b6647d",
    "x86/ftrace_nmi_2010": "e1c7d0e2c04026649b02149c126f8153a3492f87a0faf537101df8ee81b6647d",
    "x86/stop_machine_naive": "e1c7d0e2c04026649b02149c126f8153a3492f87a0faf537101df8ee81b6647d",
    "x86/text_mutex_hotplug": "b4708934f18d5ae5ba1ea482ad2ad3f021ec88b19d1efe23121d5d6c3468d569",
    "x86/text_poke_bp": "d269507ec1a6336f09c6de6cc2eacb6a7f6b25774f6a7695d3bbca85f204ae3b",
    "test/guest_fault": "d269507ec1a6336f09c6de6cc2eacb6a7f6b25774f6a7695d3bbca85f204ae3b",
    "test/mid_insn_resume": "8178594df82d811bd41654d8b3211000ea36cc21da24e5a20fae149f63818e78",
    "test/protocol_assert": "d269507ec1a6336f09c6de6cc2eacb6a7f6b25774f6a7695d3bbca85f204ae3b",
    "test/stale_after_complete": "d269507ec1a6336f09c6de6cc2eacb6a7f6b25774f6a7695d3bbca85f204ae3b",
    "test/wrong_target": "d269507ec1a6336f09c6de6cc2eacb6a7f6b25774f6a7695d3bbca85f204ae3b",
}
PINNED_NO_IRQS_OFF = {
    "x86/ftrace_nmi_2008": "d265c6405e34e9003a8699772d0f97f20c25e61447c4ffb515bb05bd390d88a5",
    "x86/ftrace_nmi_2010": "d265c6405e34e9003a8699772d0f97f20c25e61447c4ffb515bb05bd390d88a5",
    "x86/stop_machine_naive": "d265c6405e34e9003a8699772d0f97f20c25e61447c4ffb515bb05bd390d88a5",
    "x86/text_mutex_hotplug": "b8a07e9c5f854e07d03599692d67c8eb8bfbd25d0e6b680937993e365e3fa3c3",
    "x86/text_poke_bp": "3a282abe2593e20266f1d090709ca29c7ff109428a88732ec287af086642b632",
}

# The addresses just after the image's stop instruction, as the machine used to find them by
# scanning the text for its opcode byte (the image now says where it put them).
STOP_PCS = {
    **dict.fromkeys(["x86/ftrace_nmi_2008", "x86/ftrace_nmi_2010", "x86/stop_machine_naive",
                     "x86/text_mutex_hotplug"], {0x10007B}),  # two sites
    **dict.fromkeys(["x86/text_poke_bp", "test/guest_fault", "test/mid_insn_resume",
                     "test/protocol_assert", "test/stale_after_complete", "test/wrong_target"],
                    {0x100066}),
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
