"""Column types shared by the models and the migrations."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import BigInteger, DateTime, Integer, LargeBinary
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.types import JSON, TypeDecorator

# SQLite numbers rows by itself only for a column declared exactly INTEGER PRIMARY KEY.
Id = BigInteger().with_variant(Integer, "sqlite")

# JSONB on Postgres so the farm can index and query configs; plain JSON text on SQLite.
Json = JSON().with_variant(JSONB(), "postgresql")

Bytes = LargeBinary()


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator):
    """Aware UTC datetimes in and out, on both dialects.

    SQLite has no time zones and hands back naive values, so we store naive UTC there (the
    text then sorts and compares correctly, which the views rely on) and re-attach UTC on the
    way out. Postgres stores timestamptz and returns it in the session's zone, so we convert.
    A naive datetime given to us is taken to be UTC already.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError(f"expected a datetime, got {type(value).__name__}")
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)
