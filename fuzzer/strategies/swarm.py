"""Swarm and site-hold schedules: a strategy of their own (`--strategy swarm`), and the
generators the atheris mutators draw from.

`swarm_schedule` draws bytes blindly: each event kind at its own random density, and a
random share of "stay" bytes (swarm testing, Groce et al., ISSTA 2012).

`SiteHoldSource` draws the same kinds of decisions while the machine runs them, and holds
back the CPUs that stand in front of a patch site. A text-patching race needs a CPU to stand
still right in front of a site while other CPUs change it: an NMI that read "no patch
pending" waits at the site while another NMI writes it, a CPU stays at an int3 while the
handler's data is torn down. Bytes drawn blindly cannot say "not that CPU": a CPU at a site
is picked at about one step in n, and its fetch ends the window. Drawn while the machine
runs, a decision can see which CPUs stand at a site and pass over them (when another CPU can
run) with a per-schedule probability, the hold. The run's decisions are recorded as bytes (as
PCT's are), so every schedule replays with `patchfuzz run`, and a prefix of it leads to the
same state as any schedule's prefix does.

Fresh schedules on ftrace_nmi_2008:correct, 4 CPUs, 10,000 each (came near / hit): hold 0
(the swarm schedule drawn live) 1 in 85 / 1 in 127; hold always 1 in 9 / 1 in 17; hold
uniform in [0, 1] 1 in 20 / 1 in 34; the mix used here (always in half the schedules,
uniform in the other half) 1 in 12 / 1 in 23. The mix keeps the bugs that need a CPU to
fetch early easy: text_poke_bp:publish-after-int3 hits in 1 run in 1 with swarm bytes, 1 in
8 with hold always, 1 in 4 with the mix.
"""

from __future__ import annotations

import random
from bisect import bisect_right
from itertools import accumulate

from ..draws import CPU, EVENT, EVENT_RANGES, KIND, STAY_BYTES
from ..machine import Machine, RunResult
from .base import Run, Stepwise

# the most each event kind can add to a schedule's share of steps
SWARM_DENSITY = 0.15
# the most a schedule's CPU picks can keep the CPU that ran last
SWARM_STAY = 0.7
HOLD_ALWAYS = 0.5  # of site-hold schedules that always pass over CPUs at a site
_RANGES = tuple(EVENT_RANGES.values())


def _densities(rng: random.Random) -> list[float]:
    """A schedule's own event densities, cumulative: a draw x in [0, 1) asks for event kind k
    when it falls in [ends[k-1], ends[k]), and for no event from ends[-1] on."""
    return list(accumulate(rng.uniform(0, SWARM_DENSITY) for _ in _RANGES))


def _event_byte(rng: random.Random, ends: list[float], x: float) -> int | None:
    """The event byte that draw `x` asks for under `ends`, or None: no event."""
    if x >= ends[-1]:
        return None
    lo, hi = _RANGES[bisect_right(ends, x)]
    return rng.randrange(lo, hi)


def swarm_schedule(rng: random.Random, size: int) -> bytes:
    """Random bytes, with each event kind (NMI, foreign trap, preemption, drain) made more
    frequent by its own random amount, and a random share of the other bytes replaced by
    "stay" bytes (decisions.STAY_BYTES: the CPU that ran last runs again): swarm testing
    (Groce et al., ISSTA 2012). A uniform byte asks for an NMI at 1 step in 16 and switches
    CPU at almost every step; races that need two NMIs in one window want schedules dense in
    NMIs, others want few, and a race that needs one CPU to stand still at a patch site while
    another takes many steps wants long runs of one CPU. One fixed distribution serves none.

    Measured on ftrace_nmi_2008:correct (4 CPUs, 20,000 schedules each, near / hit): uniform
    bytes 1 in 172 / 1 in 417; event densities of up to 10 % only, 1 in 109 / 1 in 204; with
    stay bytes at up to SWARM_STAY of the rest, 1 in 76 / 1 in 112. Controls for the stay
    bytes: the same share of random plain-step bytes 1 in 130 / 1 in 357, of "next CPU" bytes
    1 in 191 / 1 in 435, so it is the runs of one CPU that help, not the fewer events. Event
    densities of up to 15 % (SWARM_DENSITY) rather than 10 % come near as often (1 in 77 / 1
    in 110) but earlier in a campaign: median schedules to the first finding 50 against 57
    (seeds 1..123). The easy bugs move within noise (3,000 schedules each)."""
    ends = _densities(rng)
    stay = ends[-1] + (1 - ends[-1]) * rng.uniform(0, SWARM_STAY)
    out = bytearray(rng.randbytes(size))
    for i in range(size):
        x = rng.random()
        event = _event_byte(rng, ends, x)
        if event is not None:
            out[i] = event
        elif x < stay:
            out[i] = rng.choice(STAY_BYTES)
    return bytes(out)


class SiteHoldSource:
    """A ChoiceSource: answers the first draws from `prefix` (the state to continue from),
    then draws site-hold decisions until `size` draws in all. Notes each draw's name and
    answer count, as the atheris harness's recorder does. `hold`: the probability of passing
    over the CPUs at a site; None draws it (HOLD_ALWAYS of the schedules hold always, else uniform)."""

    def __init__(self, machine: Machine, rng: random.Random, prefix: bytes, size: int,
                 hold: float | None = None) -> None:
        self.machine = machine
        self.rng = rng
        self.prefix = prefix
        self.size = size
        self.whats: list[str] = []
        self.ns: list[int] = []
        self.ends = _densities(rng)
        self.stay = rng.uniform(0, SWARM_STAY)
        if hold is None:
            hold = 1.0 if rng.random() < HOLD_ALWAYS else rng.random()
        self.hold = hold

    def choose(self, what: str, n: int, options: tuple[int, ...] | None) -> int | None:
        pos = len(self.whats)
        if pos >= self.size:
            return None
        self.whats.append(what)
        self.ns.append(n)
        if pos < len(self.prefix):
            return self.prefix[pos]
        rng = self.rng
        if what == EVENT.name:
            event = _event_byte(rng, self.ends, rng.random())
            return rng.randrange(KIND["step"].hi) if event is None else event  # None: a plain step
        if what == CPU.name and options:
            return self._pick(options)
        return rng.getrandbits(8)

    def _pick(self, options: tuple[int, ...]) -> int:
        """Which runnable CPU steps, as its position in `options` (the machine's round-robin
        order from the CPU after the last one, so the last one, if runnable, is at the end)."""
        rng = self.rng
        picks = range(len(options))
        if rng.random() < self.hold:
            free = [i for i in picks if not self.machine.waiting_at_site(options[i])]
            if free:
                picks = free
        last = len(options) - 1
        if options[last] == self.machine.last_cpu and last in picks and rng.random() < self.stay:
            return last
        return rng.choice(picks)


def site_hold_run(machine: Machine, rng: random.Random, prefix: bytes, size: int,
                  hold: float | None = None, coverage: bool = True
                  ) -> tuple[RunResult, SiteHoldSource]:
    """Run `prefix` and then site-hold decisions, up to `size` draws. `result.schedule` is
    the bytes that replay the run."""
    source = SiteHoldSource(machine, rng, prefix, size, hold)
    return machine.run(b"", source=source, coverage=coverage), source


class SwarmStrategy(Stepwise):
    """Fresh site-hold schedules, in this process: each with its own event densities, share of
    runs of one CPU and hold (see `SiteHoldSource`), none learned from the ones before. What
    the atheris strategy's default mutator draws when it has no near miss or new feature to
    continue from, without libFuzzer: a baseline between random search and atheris, and the
    search to use where a subprocess per campaign is unwelcome."""

    name = "swarm"

    def __init__(self, seed: int = 0, max_len: int = 256, hold: float | None = None, **_ignored) -> None:
        self._rng = random.Random(seed)  # a private generator: the campaign is a pure function of the seed
        self.max_len = max_len
        self.hold = hold
        self.machine: Machine | None = None

    def bind(self, machine: Machine) -> None:
        self.machine = machine

    def next_run(self) -> Run:
        return Run(source=SiteHoldSource(self.machine, self._rng, b"", self.max_len, self.hold))
