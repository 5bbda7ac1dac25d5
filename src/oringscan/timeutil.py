"""One time zone for records, file names and metadata: UTC, always timezone-aware."""

from __future__ import annotations

from datetime import UTC, datetime


def utc_now() -> datetime:
    """Now, aware UTC."""
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """Aware UTC (naive input, as SQLite hands it back, is taken as UTC)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utc_iso(value: datetime | None = None) -> str:
    """ISO 8601 to the second, e.g. ``2026-11-29T23:40:00+00:00`` (metadata files)."""
    return as_utc(value or utc_now()).isoformat(timespec="seconds")


def utc_stamp(value: datetime | None = None) -> str:
    """Compact stamp for file and run names, e.g. ``20261129T234000Z``."""
    return as_utc(value or utc_now()).strftime("%Y%m%dT%H%M%SZ")
