"""patchfuzz engine: emulated CPUs running real code, protocols, oracles and search.

The engine knows nothing about Redis or SQL: it returns findings; others store them.
"""

from .choices import SCHEDULE_FORMAT

ENGINE_VERSION = "0.1.0"

__all__ = ["ENGINE_VERSION", "SCHEDULE_FORMAT"]
