"""The database layer's one error type."""

from __future__ import annotations

from oringscan.errors import OringscanError


class StoreError(OringscanError):
    """A database problem the user can act on (bad URL, unknown run or frame, invalid review)."""
