"""Structured trace records: what happened in a run, one typed record per happening.

The machine emits these (only when a run is traced or collects coverage); the text trace,
`--focus`, the timeline picture and the minimizer's counts are renderings of them, so nothing
parses trace text. A record holds raw values (bytes, addresses, names); turning them into text
needs the run's architecture and symbols, which a `Renderer` carries.

Each record type says what a reader of a race needs to know about it:
* `category`: the kind of box the timeline draws;
* `reads()` / `writes()`: the objects (site, variable or lock names) it observed or changed,
  which is how the focused trace follows the data from a violation back to the other side;
* `folds`: consecutive records of these types on one CPU fold into one line (a CPU's writes
  reaching its store buffer and memory);
* `text(r)` / `brief(r)`: the trace line's message, and the shorter form used when folded.
"""

from ..render import Renderer, fmt
from .base import Event
from .findings import *  # noqa: F403
from .interrupts import *  # noqa: F403
from .memory import *  # noqa: F403
from .sync import *  # noqa: F403
from .text import *  # noqa: F403

__all__ = ["Event", "Renderer", "fmt"]  # and the record types of the modules above
