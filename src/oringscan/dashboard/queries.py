"""The few reads the dashboard needs that ``InspectionStore`` does not offer.

SQLAlchemy expressions only: user input reaches the database as bound parameters, never as SQL
text. Each function takes a session from ``store.read_session()`` (one consistent snapshot).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import and_, case, func, select
from sqlalchemy.orm import Session

from oringscan.db import FrameFilter
from oringscan.db.models import Frame, Review
from oringscan.timeutil import as_utc


def known_types(session: Session) -> list[str]:
    """O-ring types that have frames (for the filter lists)."""
    stmt = select(Frame.oring_type).distinct().where(Frame.oring_type.is_not(None)).order_by(Frame.oring_type)
    return [t for t in session.scalars(stmt)]


def inspected_span(session: Session) -> tuple[date, date] | None:
    """First and last UTC day with frames, or None for an empty database."""
    first, last = session.execute(select(func.min(Frame.inspected_at), func.max(Frame.inspected_at))).one()
    if first is None or last is None:
        return None
    return _utc(first).date(), _utc(last).date()


@dataclass(slots=True)
class OverrideDay:
    day: str
    reviews: int
    overrides: int


def overrides_by_day(session: Session, filters: FrameFilter | None = None) -> list[OverrideDay]:
    """Per UTC day of the decision: frames decided, and how many the person changed from a hard verdict.

    Only each frame's newest review counts (earlier ones were superseded). A ``suspect`` frame has no
    hard verdict to disagree with, so deciding it either way is not an override.
    """
    newest = select(func.max(Review.id)).group_by(Review.frame_id).scalar_subquery()
    day = func.date(Review.created_at).label("day")
    changed = and_(Frame.verdict != "suspect", Review.decision != Frame.verdict)
    stmt = (
        select(
            day,
            func.count(Review.id).label("reviews"),
            func.sum(case((changed, 1), else_=0)).label("overrides"),
        )
        .join(Frame, Frame.id == Review.frame_id)
        .where(Review.id.in_(newest))
        .group_by(day)
        .order_by(day)
    )
    conds = (filters or FrameFilter()).conditions()
    if conds:
        stmt = stmt.where(*conds)
    return [OverrideDay(str(r.day), int(r.reviews), int(r.overrides or 0)) for r in session.execute(stmt)]


def _utc(value: datetime) -> datetime:
    return as_utc(value)
