"""The arm64 protocols: every `correct` variant proved clean by exhaustive search on 2 CPUs
within the bounds below, every mutant found under the same bounds with its expected oracle, and
a long random run on 4 CPUs clean for every variant expected clean. The bounds are large enough:
each mutant shows up within them (the same test)."""

from __future__ import annotations

import pytest

from fuzzer.protocols import registry

from .isa_proofs import check_exhaustive_verdict, check_long_random_run_clean, clean_only, variants_of

# The default bounds, plus what the weak model needs: two store delays (keeping two stores
# buffered across the second one's step), a reordered drain and a stale fetch.
BOUNDS = dict(store_delays=2, store_reorders=1, stale_fetches=1)
CEILING = 40_000
ARM64 = {name: cls for name, cls in registry().items() if cls.arch == "arm64"}
VARIANTS = variants_of("arm64")


def test_every_arm64_protocol_is_registered():
    assert set(ARM64) == {"arm64/ftrace", "arm64/patch_text", "arm64/jump_label", "arm64/publish_brk"}
    for cls in ARM64.values():
        assert cls.expect.get("correct", "missing") is None, cls.name
        assert sum(e is not None for e in cls.expect.values()) >= 2, f"{cls.name}: fewer than two mutants"
        doc = cls.__module__ and __import__(cls.__module__, fromlist=["_"]).__doc__
        assert "commit" in doc or "v6." in doc, cls.name  # the kernel code it models


@pytest.mark.parametrize(("cls", "variant"), VARIANTS)
def test_exhaustive_verdict_on_two_cpus(cls, variant):
    check_exhaustive_verdict(cls, variant, BOUNDS, CEILING)


@pytest.mark.parametrize(("cls", "variant"), clean_only(VARIANTS))
def test_clean_variants_stay_clean_under_a_long_random_run(cls, variant):
    check_long_random_run_clean(cls, variant)
