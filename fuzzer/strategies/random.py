"""Random search: uniformly random schedule bytes of random length. The baseline."""

from __future__ import annotations

import random

from .base import Run, Stepwise

DEFAULT_MAX_LEN = 256


class RandomStrategy(Stepwise):
    name = "random"

    def __init__(self, seed: int = 0, max_len: int = DEFAULT_MAX_LEN, **_ignored):
        # a private generator: the campaign is a pure function of the seed
        self._rng = random.Random(seed)
        self.max_len = max_len

    def next_schedule(self) -> bytes:
        rng = self._rng
        return rng.randbytes(rng.randint(0, self.max_len))

    def next_run(self) -> Run:
        return Run(self.next_schedule())
