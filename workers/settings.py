"""Farm settings, all from the environment (credentials never travel in job payloads).

PATCHFUZZ_REDIS      Redis URL of the queue (default redis://127.0.0.1:6379/0)
PATCHFUZZ_DB         crash database URL (see db.resolve_url); the farm wants PostgreSQL
PATCHFUZZ_QUEUE      queue name (default "patchfuzz")
PATCHFUZZ_PROTOCOL_DIR  directories of the user's protocol files (read by fuzzer.protocols)
PATCHFUZZ_CORPUS     regression corpus directory replayed nightly (default: corpus/ of this checkout)
PATCHFUZZ_NIGHTLY    cron expression of the nightly replay (default "0 2 * * *", in $TZ)
PATCHFUZZ_WORK_DIR   scratch space for job corpora and libFuzzer logs (default: the system temp dir)
PATCHFUZZ_PROGRESS   seconds between a job's progress writes (default 5)
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def _float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"${name} must be a number of seconds, got {raw!r}") from None
    if value <= 0:
        raise ValueError(f"${name} must be positive, got {raw!r}")
    return value


@dataclass(frozen=True)
class FarmSettings:
    redis_url: str = field(default_factory=lambda: os.environ.get("PATCHFUZZ_REDIS")
                           or "redis://127.0.0.1:6379/0")
    db_url: str | None = field(default_factory=lambda: os.environ.get("PATCHFUZZ_DB") or None)
    queue: str = field(default_factory=lambda: os.environ.get("PATCHFUZZ_QUEUE") or "patchfuzz")
    corpus_dir: Path = field(default_factory=lambda: Path(os.environ.get("PATCHFUZZ_CORPUS")
                                                          or REPO_ROOT / "corpus"))
    nightly_cron: str = field(default_factory=lambda: os.environ.get("PATCHFUZZ_NIGHTLY") or "0 2 * * *")
    work_dir: str | None = field(default_factory=lambda: os.environ.get("PATCHFUZZ_WORK_DIR") or None)
    progress_seconds: float = field(default_factory=lambda: _float("PATCHFUZZ_PROGRESS", 5.0))


def masked_redis(url: str) -> str:
    """The URL without its password, for messages."""
    from redis.connection import parse_url

    try:
        parts = parse_url(url)
    except ValueError:
        return url.split("@")[-1]
    host = parts.get("host") or parts.get("path") or "?"
    port = f":{parts['port']}" if parts.get("port") else ""
    return f"redis://{host}{port}/{parts.get('db', 0)}"
