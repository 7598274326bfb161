"""One table of draws: every decision a run makes is declared once, and every user reads it."""

import random
import re
from pathlib import Path

import pytest

from fuzzer import draws
from fuzzer.machine import Config, Machine
from fuzzer.protocols import registry, resolve
from fuzzer.strategies.exhaustive import ExhaustiveStrategy, _ReplaySource

FUZZER = Path(__file__).resolve().parents[1] / "fuzzer"


class _Asked:
    def __init__(self, seed):
        self.rng = random.Random(seed)
        self.asked = set()

    def choose(self, what, n, options):
        self.asked.add(what)
        return self.rng.getrandbits(8)


def test_every_draw_the_machine_makes_is_in_the_table():
    from .test_protocol_api import PerCpuCounter  # the registry has no task free to migrate

    asked = set()
    for cls in [*registry().values(), PerCpuCounter]:
        for variant in cls.variants:
            m = Machine(cls, variant, Config(cpus=4))
            for seed in range(30):
                src = _Asked(seed)
                m.run(b"", source=src)
                asked |= src.asked
    assert asked <= set(draws.DRAWS), asked - set(draws.DRAWS)
    assert asked == set(draws.DRAWS)  # and the table declares nothing the machine never draws


def test_the_byte_thresholds_appear_only_in_the_table():
    thresholds = {str(k.lo) for k in draws.EVENT_KINDS if k.lo} | {str(draws.TAKE_IPI_DEFER),
                                                                    str(draws.SLICE_SHORT)}
    users = [p for p in FUZZER.rglob("*.py") if p.name != "draws.py"
             and ("machine" in p.parts or "strategies" in p.parts
                  or p.name in ("decisions.py", "focus.py", "minimize.py", "choices.py"))]
    assert len(users) > 10
    for path in users:
        found = set(re.findall(r"(?<![\w.])(\d+)(?![\w.])", path.read_text())) & thresholds
        assert not found, f"{path.name} repeats draw thresholds {found}"


def test_exhaustive_search_takes_its_bounds_and_alternatives_from_the_table():
    assert ExhaustiveStrategy.BOUNDS == tuple(draws.BUDGETS)
    cls, variant = resolve("x86/text_poke_bp:correct")
    m = Machine(cls, variant, Config(cpus=2))
    st = ExhaustiveStrategy(**{name: 1 for name in draws.BUDGETS})
    st.bind(m)
    src = _ReplaySource(st, None, 0, 0, 0)
    for spec in draws.DRAWS.values():
        if spec.computed or spec.per_option is not None:
            continue
        n = 5
        alts = src._alternatives(spec.name, n, None)
        assert [b for b, _ in alts] == [a.byte for a in spec.alternatives], spec.name
    # a budget at zero removes the answers that spend it
    st0 = ExhaustiveStrategy(store_delays=0, ipi_defers=0)
    st0.bind(m)
    src0 = _ReplaySource(st0, None, 0, 0, 0)
    assert src0._alternatives("drain", 5, None) == [(draws.DRAIN_ALL, -1)]
    assert src0._alternatives("take ipi", 2, None) == [(0, -1)]
    # a draw the table does not know stops the search loudly
    with pytest.raises(ValueError, match="draws.py"):
        src._alternatives("a new decision", 2, None)


@pytest.mark.parametrize("spec", list(draws.DRAWS.values()), ids=lambda d: d.name)
def test_redraw_changes_the_meaning(spec):
    rng = random.Random(3)
    for old in (0, 1, 100, draws.TAKE_IPI_DEFER, draws.SLICE_SHORT, 255):
        new = spec.redraw(old, 4, rng)
        assert 0 <= new <= 255
        if spec.picks_cpu:
            assert new % 4 != old % 4
        elif spec is draws.TAKE_IPI:
            assert draws.takes_ipi(new) != draws.takes_ipi(old)
        elif spec is draws.SLICE:
            assert (new >= draws.SLICE_SHORT) != (old >= draws.SLICE_SHORT)


def test_notes_say_what_a_non_default_answer_did():
    assert draws.DRAIN.note(draws.DRAIN_ALL, 3) is None
    assert draws.DRAIN.note(0, 3) == "2 stores left buffered"
    assert draws.DRAIN.note(1, 3) == "1 store left buffered"
    assert draws.TAKE_IPI.note(0, 256) is None and draws.TAKE_IPI.note(200, 256) == "IPI left pending"
    assert draws.SLICE.note(193, 256) == "slice=193"
    assert draws.CPU.note(3, 4) is None


def test_decoding():
    assert draws.slice_count(0) == draws.RUN_TO_STOP and draws.slice_count(draws.SLICE_SHORT) == 1
    assert draws.drain_count(draws.DRAIN_ALL, 3) == 3 and draws.drain_count(5, 3) == 1
    assert [draws.event_kind(b) for b in (0, 199, 200, 212, 220, 228, 236, 255)] == [
        "step", "step", "nmi", "irq", "foreign", "preempt", "drain", "drain"]
    assert all(draws.event_kind(b) == "step" for b in draws.STAY_BYTES)
