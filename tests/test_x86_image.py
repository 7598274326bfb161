"""The x86 image is pinned byte for byte: the runs of every protocol (and every stored
reproducer) depend on where each instruction is. The digests were first taken from the image
builder as it was before the generic builder (fuzzer/arch/image.py) replaced it, and taken
again when the call targets moved far away (Arch.far_base): that move changed no verdict,
oracle, title or step count over 78,000 runs of every variant at 2, 4 and 8 CPUs."""

import hashlib

import pytest

from fuzzer.arch import get_arch
from fuzzer.protocols import registry
from tests import oracle_protocols

# sha256(text + repr(sorted(symbols))) of each protocol's image, with and without the caller
# loop's IRQs-off call
PINNED = {
    "x86/ftrace_nmi_2008": "6b59311a874ba663344057a7c74cff020610687c7e68bdd175c23f128a8af2b5",
    "x86/ftrace_nmi_2010": "6b59311a874ba663344057a7c74cff020610687c7e68bdd175c23f128a8af2b5",
    "x86/stop_machine_naive": "6b59311a874ba663344057a7c74cff020610687c7e68bdd175c23f128a8af2b5",
    "x86/text_mutex_hotplug": "46fa02102480a5a975794a6081457ed054ab7fff06bc71032eaa038e222cdc12",
    "x86/text_poke_bp": "341267b0c86375adebea9da273e984bdb43d04fc489dbf4809e3e981b92f975b",
    "test/guest_fault": "341267b0c86375adebea9da273e984bdb43d04fc489dbf4809e3e981b92f975b",
    "test/mid_insn_resume": "2e1b35d436004c236b71e670b8b90ffd8abba5682e1b02623f37ba1a9b2cfd2f",
    "test/protocol_assert": "341267b0c86375adebea9da273e984bdb43d04fc489dbf4809e3e981b92f975b",
    "test/stale_after_complete": "341267b0c86375adebea9da273e984bdb43d04fc489dbf4809e3e981b92f975b",
    "test/wrong_target": "341267b0c86375adebea9da273e984bdb43d04fc489dbf4809e3e981b92f975b",
}
PINNED_NO_IRQS_OFF = {
    "x86/ftrace_nmi_2008": "b893212e8db75b38d5a17eab8b8bc183786b6eb3a28f1466a94c45c89b4091d2",
    "x86/ftrace_nmi_2010": "b893212e8db75b38d5a17eab8b8bc183786b6eb3a28f1466a94c45c89b4091d2",
    "x86/stop_machine_naive": "b893212e8db75b38d5a17eab8b8bc183786b6eb3a28f1466a94c45c89b4091d2",
    "x86/text_mutex_hotplug": "c916018d1e5200d9a9fef642b3b2bc0714d55fa66bcf016cd888142183b6b459",
    "x86/text_poke_bp": "8683a0abd9f565ed605429856cca27f505a068711ba3e32536e13392b8a0f600",
}

# The addresses just after the image's stop instruction, as the machine used to find them by
# scanning the text for its opcode byte (the image now says where it put them).
STOP_PCS = {
    **dict.fromkeys(["x86/ftrace_nmi_2008", "x86/ftrace_nmi_2010", "x86/stop_machine_naive",
                     "x86/text_mutex_hotplug"], {0x10005B}),  # two sites
    **dict.fromkeys(["x86/text_poke_bp", "test/guest_fault", "test/mid_insn_resume",
                     "test/protocol_assert", "test/stale_after_complete", "test/wrong_target"],
                    {0x100046}),
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
