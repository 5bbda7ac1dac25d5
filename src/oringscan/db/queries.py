"""Read side of the inspection record: plain dataclasses out, bound parameters only.

Every function takes an open ``Session`` (``InspectionStore.read_session()`` gives one snapshot)
and builds its SQL from SQLAlchemy expressions: user text (a type name, a search string) only
ever travels as a bound parameter. Pagination happens in SQL (LIMIT/OFFSET plus a COUNT).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from datetime import date, datetime
from typing import Any, Generic, TypeVar

from sqlalchemy import Select, and_, case, distinct, exists, func, select
from sqlalchemy.orm import Session

from oringscan.db.errors import StoreError
from oringscan.db.models import (
    REVIEW_VERDICTS,
    Defect,
    Frame,
    Measurement,
    Review,
    ReviewShape,
    Run,
    Tile,
)
from oringscan.db.vocab import FRAME_ORDERS, VERDICTS
from oringscan.timeutil import as_utc

T = TypeVar("T")

# "worst" first: what a person must fix first. Smaller rank = worse.
_VERDICT_RANK = {"defect": 0, "rework": 1, "suspect": 2, "error": 3, "good": 4}


def _as_utc(value: datetime | None) -> datetime | None:
    """Aware UTC from the database (SQLite hands back naive UTC)."""
    if value is None:
        return None
    return as_utc(value)


def _utc_param(value: datetime | date | None) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day)
    return as_utc(value)


def to_jsonable(value: Any) -> Any:
    """JSON-ready Python, the one cleaner for what is stored and what is printed: dataclasses and
    containers recursively, datetimes as ISO 8601, numpy scalars as Python numbers, NaN/inf as
    null (PostgreSQL's json refuses NaN), anything else as its text."""
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, str | bytes):
        value = value.item()  # numpy scalar
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str | int | bool) or value is None:
        return value
    return str(value)


class _Row:
    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(self)


@dataclass(slots=True)
class Page(Generic[T]):
    """One page of rows and how many match in all."""

    items: list[T]
    total: int
    limit: int | None
    offset: int

    def __iter__(self):  # noqa: ANN204 - iterate the rows directly
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> T:
        return self.items[index]


@dataclass(slots=True)
class RunRow(_Row):
    id: int
    started_at: datetime | None
    finished_at: datetime | None
    host: str | None
    oring_type: str | None
    command: str | None
    status: str
    config_fingerprint: str | None
    model_fingerprint: str | None
    model_versions: dict[str, Any] | None
    n_frames: int = 0
    n_good: int = 0
    n_defect: int = 0
    n_rework: int = 0
    n_suspect: int = 0
    n_error: int = 0
    n_skipped: int = 0
    mean_ms: float | None = None

    @property
    def seconds(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()


@dataclass(slots=True)
class FrameRow(_Row):
    id: int
    run_id: int
    image: str
    sha256: str | None
    oring_type: str | None
    station: str | None
    captured_at: datetime | None
    inspected_at: datetime | None
    verdict: str
    reasons: list[Any]
    screen_score: float | None
    screen_threshold: float | None
    n_defects: int
    max_defect_score: float | None
    total_ms: float | None
    error: str | None
    overlay_path: str | None
    model_fingerprint: str | None
    # The newest review, if any (reviews are append-only; the newest is the current decision).
    review_decision: str | None = None
    review_operator: str | None = None
    reviewed_at: datetime | None = None


@dataclass(slots=True)
class TileRow(_Row):
    x: int
    y: int
    w: int
    h: int
    score: float
    flagged: bool


@dataclass(slots=True)
class DefectRow(_Row):
    id: int
    frame_id: int
    label: str
    score: float
    x: int
    y: int
    w: int
    h: int
    area_px: int
    area_mm2: float | None
    mask_rle: dict[str, Any] | None = None
    polygon: list[Any] | None = None
    # Frame context, for listings across frames.
    image: str | None = None
    run_id: int | None = None
    oring_type: str | None = None
    verdict: str | None = None
    inspected_at: datetime | None = None

    @property
    def bbox(self) -> tuple[int, int, int, int]:
        return (self.x, self.y, self.w, self.h)


@dataclass(slots=True)
class MeasurementRow(_Row):
    metric: str
    value: float | None
    lower: float | None
    upper: float | None
    fired: bool
    verdict: str | None
    message: str | None
    unit: str | None


@dataclass(slots=True)
class ShapeRow(_Row):
    """One defect a review marked: a confirmed machine defect (``defect_id``) or the operator's shape."""

    id: int
    review_id: int
    source: str  # "machine" | "operator"
    kind: str  # "mask" | "box" | "polygon"
    label: str
    defect_id: int | None
    x: int
    y: int
    w: int
    h: int
    points: list[Any] | None = None


@dataclass(slots=True)
class ReviewRow(_Row):
    id: int
    frame_id: int
    operator: str
    decision: str
    comment: str | None
    created_at: datetime | None
    shapes: list[ShapeRow] = field(default_factory=list)  # what the review marked (migration 0004)


@dataclass(slots=True)
class FrameDetail(_Row):
    """Everything about one frame: the record, what each stage found, the run, the review history."""

    frame: FrameRow
    run: RunRow
    timings: dict[str, Any]
    frame_shape: tuple[int, int] | None
    screen_flagged: bool | None
    screen_marginal: bool | None
    rework_verdict: str | None
    tiles: list[TileRow] = field(default_factory=list)
    defects: list[DefectRow] = field(default_factory=list)
    measurements: list[MeasurementRow] = field(default_factory=list)
    reviews: list[ReviewRow] = field(default_factory=list)  # oldest first


@dataclass(slots=True)
class YieldRow(_Row):
    day: str
    oring_type: str | None
    total: int
    good: int
    defect: int
    rework: int
    suspect: int
    error: int

    @property
    def yield_rate(self) -> float | None:
        """Good parts over parts with a verdict (errors are not parts judged)."""
        judged = self.total - self.error
        return None if judged <= 0 else self.good / judged

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "yield": self.yield_rate}


@dataclass(slots=True)
class DefectClassRow(_Row):
    day: str | None
    oring_type: str | None
    label: str
    defects: int
    frames: int


@dataclass(slots=True)
class OverrideRow(_Row):
    """Frames whose newest review decided ``decision`` where the machine said ``verdict``."""

    oring_type: str | None
    verdict: str
    decision: str
    frames: int

    @property
    def changed(self) -> bool:
        return self.verdict != self.decision

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "changed": self.changed}


@dataclass(slots=True)
class ScoreHistogram(_Row):
    """Screening scores binned once for all verdicts (``normalized``: score / threshold, 1.0 = limit)."""

    edges: list[float]
    counts: dict[str, list[int]]
    normalized: bool
    n: int
    thresholds: dict[str, float]  # newest threshold per o-ring type


@dataclass(slots=True)
class Stats(_Row):
    n_frames: int
    verdicts: dict[str, int]
    yield_by_day: list[YieldRow]
    defects_by_class: list[DefectClassRow]
    review_overrides: list[OverrideRow]
    n_reviewed: int

    @property
    def n_overridden(self) -> int:
        """Hard verdicts (good / defect / rework) a person changed."""
        return sum(o.frames for o in self.review_overrides if o.changed and o.verdict != "suspect")

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_frames": self.n_frames,
            "verdicts": dict(self.verdicts),
            "n_reviewed": self.n_reviewed,
            "n_overridden": self.n_overridden,
            "yield_by_day": [r.to_dict() for r in self.yield_by_day],
            "defects_by_class": [r.to_dict() for r in self.defects_by_class],
            "review_overrides": [r.to_dict() for r in self.review_overrides],
        }


def _as_list(value: Any) -> list[Any] | None:
    if value is None:
        return None
    if isinstance(value, str | int):
        return [value]
    return list(value)


@dataclass(slots=True)
class FrameFilter:
    """Which frames: every field is optional and they combine with AND.

    ``oring_type``, ``verdict``, ``run_id`` take one value or a list; ``since``/``until`` bound
    the inspection time (UTC; naive times are taken as UTC; ``until`` is exclusive);
    ``reviewed`` False keeps frames nobody reviewed yet; ``image_contains`` matches part of the path.
    """

    oring_type: str | Sequence[str] | None = None
    verdict: str | Sequence[str] | None = None
    run_id: int | Sequence[int] | None = None
    since: datetime | date | None = None
    until: datetime | date | None = None
    station: str | None = None
    sha256: str | None = None
    reviewed: bool | None = None
    image_contains: str | None = None

    def conditions(self) -> list[Any]:
        conds: list[Any] = []
        types = _as_list(self.oring_type)
        if types:
            conds.append(Frame.oring_type.in_(types))
        verdicts = _as_list(self.verdict)
        if verdicts:
            verdicts = [str(v).lower() for v in verdicts]
            unknown = [v for v in verdicts if v not in VERDICTS]
            if unknown:
                raise StoreError(f"unknown verdict {unknown[0]!r}; expected one of {', '.join(VERDICTS)}")
            conds.append(Frame.verdict.in_(verdicts))
        runs = _as_list(self.run_id)
        if runs:
            conds.append(Frame.run_id.in_([int(r) for r in runs]))
        if self.since is not None:
            conds.append(Frame.inspected_at >= _utc_param(self.since))
        if self.until is not None:
            conds.append(Frame.inspected_at < _utc_param(self.until))
        if self.station is not None:
            conds.append(Frame.station == self.station)
        if self.sha256 is not None:
            conds.append(Frame.sha256 == self.sha256)
        if self.reviewed is not None:
            has_review = exists().where(Review.frame_id == Frame.id)
            conds.append(has_review if self.reviewed else ~has_review)
        if self.image_contains:
            needle = self.image_contains.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            conds.append(Frame.path.like(f"%{needle}%", escape="\\"))
        return conds


def _paged(stmt: Select[Any], limit: int | None, offset: int) -> Select[Any]:
    if offset < 0 or (limit is not None and limit < 0):
        raise StoreError(f"limit/offset must not be negative (got limit={limit}, offset={offset})")
    if offset:
        stmt = stmt.offset(offset)
    return stmt if limit is None else stmt.limit(limit)


def run_row(run: Run, live: dict[str, Any] | None = None) -> RunRow:
    counts = live or {}
    row = RunRow(
        id=run.id,
        started_at=_as_utc(run.started_at),
        finished_at=_as_utc(run.finished_at),
        host=run.host,
        oring_type=run.oring_type,
        command=run.command,
        status=run.status,
        config_fingerprint=run.config_fingerprint,
        model_fingerprint=run.model_fingerprint,
        model_versions=run.model_versions,
        n_skipped=run.n_skipped or 0,
    )
    row.n_frames = counts.get("n_frames", run.n_frames or 0)
    for verdict in VERDICTS:
        setattr(row, f"n_{verdict}", counts.get(f"n_{verdict}", getattr(run, f"n_{verdict}") or 0))
    row.mean_ms = counts.get("mean_ms")
    return row


def _run_counts(session: Session, run_ids: Sequence[int]) -> dict[int, dict[str, Any]]:
    """Verdict counts and mean ms per frame of these runs, counted from their frames (index on run_id)."""
    if not run_ids:
        return {}
    cols = [Frame.run_id, func.count(Frame.id).label("n_frames"), func.avg(Frame.total_ms).label("mean_ms")]
    cols += [func.sum(case((Frame.verdict == v, 1), else_=0)).label(f"n_{v}") for v in VERDICTS]
    stmt = select(*cols).where(Frame.run_id.in_(list(run_ids))).group_by(Frame.run_id)
    out: dict[int, dict[str, Any]] = {
        run_id: {"n_frames": 0, "mean_ms": None, **{f"n_{v}": 0 for v in VERDICTS}} for run_id in run_ids
    }
    for row in session.execute(stmt):
        out[row.run_id] = {
            "n_frames": int(row.n_frames),
            "mean_ms": None if row.mean_ms is None else float(row.mean_ms),
            **{f"n_{v}": int(getattr(row, f"n_{v}") or 0) for v in VERDICTS},
        }
    return out


def list_runs(
    session: Session,
    *,
    oring_type: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    status: str | None = None,
    limit: int | None = 100,
    offset: int = 0,
) -> list[RunRow]:
    """Runs, newest first, with verdict counts and mean time per frame counted live from the frames."""
    stmt = select(Run)
    if oring_type:
        stmt = stmt.where(Run.oring_type == oring_type)
    if since is not None:
        stmt = stmt.where(Run.started_at >= _utc_param(since))
    if until is not None:
        stmt = stmt.where(Run.started_at < _utc_param(until))
    if status:
        stmt = stmt.where(Run.status == status)
    runs = list(session.scalars(_paged(stmt.order_by(Run.started_at.desc(), Run.id.desc()), limit, offset)))
    counts = _run_counts(session, [r.id for r in runs])
    return [run_row(r, counts[r.id]) for r in runs]


def get_run(session: Session, run_id: int) -> RunRow | None:
    run = session.get(Run, run_id)
    return None if run is None else run_row(run, _run_counts(session, [run_id])[run_id])


def _frame_order(order: str) -> list[Any]:
    if order == "newest":
        return [Frame.inspected_at.desc(), Frame.id.desc()]
    if order == "oldest":
        return [Frame.inspected_at.asc(), Frame.id.asc()]
    ratio = Frame.screen_score / func.nullif(Frame.screen_threshold, 0.0)
    if order == "score":
        return [ratio.desc().nulls_last(), Frame.id.desc()]
    if order == "worst":
        rank = case(*[(Frame.verdict == v, r) for v, r in _VERDICT_RANK.items()], else_=9)
        return [
            rank.asc(),
            Frame.max_defect_score.desc().nulls_last(),
            ratio.desc().nulls_last(),
            Frame.inspected_at.desc(),
            Frame.id.desc(),
        ]
    if order == "uncertain":  # closest to the screening threshold first, on either side
        return [func.abs(ratio - 1.0).asc().nulls_last(), Frame.inspected_at.desc(), Frame.id.desc()]
    raise StoreError(f"unknown order {order!r}; expected one of {', '.join(FRAME_ORDERS)}")


def _frame_row(frame: Frame, review: Review | None = None) -> FrameRow:
    return FrameRow(
        id=frame.id,
        run_id=frame.run_id,
        image=frame.path,
        sha256=frame.sha256,
        oring_type=frame.oring_type,
        station=frame.station,
        captured_at=_as_utc(frame.captured_at),
        inspected_at=_as_utc(frame.inspected_at),
        verdict=frame.verdict,
        reasons=list(frame.reasons or []),
        screen_score=frame.screen_score,
        screen_threshold=frame.screen_threshold,
        n_defects=frame.n_defects or 0,
        max_defect_score=frame.max_defect_score,
        total_ms=frame.total_ms,
        error=frame.error,
        overlay_path=frame.overlay_path,
        model_fingerprint=frame.model_fingerprint,
        review_decision=None if review is None else review.decision,
        review_operator=None if review is None else review.operator,
        reviewed_at=None if review is None else _as_utc(review.created_at),
    )


def _latest_reviews(session: Session, frame_ids: Sequence[int]) -> dict[int, Review]:
    """The newest review of each of these frames (one query for a whole page)."""
    if not frame_ids:
        return {}
    newest = (
        select(func.max(Review.id))
        .where(Review.frame_id.in_(list(frame_ids)))
        .group_by(Review.frame_id)
        .scalar_subquery()
    )
    return {r.frame_id: r for r in session.scalars(select(Review).where(Review.id.in_(newest)))}


def _frame_page(
    session: Session, conds: list[Any], order: str, limit: int | None, offset: int
) -> Page[FrameRow]:
    order_by = _frame_order(order)
    where = and_(*conds) if conds else None
    stmt = select(Frame)
    count = select(func.count(Frame.id))
    if where is not None:
        stmt, count = stmt.where(where), count.where(where)
    frames = list(session.scalars(_paged(stmt.order_by(*order_by), limit, offset)))
    total = int(session.scalar(count) or 0)
    reviews = _latest_reviews(session, [f.id for f in frames])
    return Page([_frame_row(f, reviews.get(f.id)) for f in frames], total, limit, offset)


def list_frames(
    session: Session,
    filters: FrameFilter | None = None,
    *,
    order: str = "newest",
    limit: int | None = 100,
    offset: int = 0,
) -> Page[FrameRow]:
    return _frame_page(session, (filters or FrameFilter()).conditions(), order, limit, offset)


def review_queue(
    session: Session,
    filters: FrameFilter | None = None,
    *,
    order: str = "newest",
    limit: int | None = 25,
    offset: int = 0,
) -> Page[FrameRow]:
    """Unreviewed frames a person must look at: verdict defect / suspect / rework (or the filter's subset).

    Only current records: one superseded by --reinspect is history, not work.
    """
    filters = filters or FrameFilter()
    conds = filters.conditions()
    conds.append(Frame.superseded_at.is_(None))
    if filters.verdict is None:
        conds.append(Frame.verdict.in_(REVIEW_VERDICTS))
    if filters.reviewed is None:
        conds.append(~exists().where(Review.frame_id == Frame.id))
    return _frame_page(session, conds, order, limit, offset)


def frame_detail(session: Session, frame_id: int) -> FrameDetail | None:
    frame = session.get(Frame, frame_id)
    if frame is None:
        return None
    reviews = list(session.scalars(select(Review).where(Review.frame_id == frame_id).order_by(Review.id)))
    shapes = review_shapes(session, [r.id for r in reviews])
    run = get_run(session, frame.run_id)
    assert run is not None  # foreign key
    tiles = session.scalars(select(Tile).where(Tile.frame_id == frame_id).order_by(Tile.id))
    defects = session.scalars(select(Defect).where(Defect.frame_id == frame_id).order_by(Defect.id))
    measurements = session.scalars(
        select(Measurement).where(Measurement.frame_id == frame_id).order_by(Measurement.id)
    )
    shape = (frame.frame_height, frame.frame_width) if frame.frame_height and frame.frame_width else None
    return FrameDetail(
        frame=_frame_row(frame, reviews[-1] if reviews else None),
        run=run,
        timings=dict(frame.timings or {}),
        frame_shape=shape,
        screen_flagged=frame.screen_flagged,
        screen_marginal=frame.screen_marginal,
        rework_verdict=frame.rework_verdict,
        tiles=[TileRow(t.x, t.y, t.w, t.h, t.score, bool(t.flagged)) for t in tiles],
        defects=[_defect_row(d, with_mask=True) for d in defects],
        measurements=[
            MeasurementRow(m.metric, m.value, m.lower, m.upper, bool(m.fired), m.verdict, m.message, m.unit)
            for m in measurements
        ],
        reviews=[_review_row(r, shapes) for r in reviews],
    )


def _review_row(review: Review, shapes: dict[int, list[ShapeRow]] | None = None) -> ReviewRow:
    return ReviewRow(
        review.id,
        review.frame_id,
        review.operator,
        review.decision,
        review.comment,
        _as_utc(review.created_at),
        list((shapes or {}).get(review.id, [])),
    )


def review_shapes(session: Session, review_ids: Sequence[int]) -> dict[int, list[ShapeRow]]:
    """The shapes of these reviews (one query), per review id, in the order they were marked."""
    if not review_ids:
        return {}
    out: dict[int, list[ShapeRow]] = {}
    stmt = select(ReviewShape).where(ReviewShape.review_id.in_(list(review_ids))).order_by(ReviewShape.id)
    for s in session.scalars(stmt):
        out.setdefault(s.review_id, []).append(
            ShapeRow(s.id, s.review_id, s.source, s.kind, s.label, s.defect_id, s.x, s.y, s.w, s.h, s.points)
        )
    return out


def reference_candidates(session: Session, oring_type: str | None, limit: int = 20) -> list[FrameRow]:
    """Recent ``good`` frames of a type, newest first: the dashboard shows the first whose picture
    it can read beside a suspect's hot spots (a good frame a person overruled is left out)."""
    overruled = exists().where(Review.frame_id == Frame.id, Review.decision != "good")
    stmt = select(Frame).where(Frame.verdict == "good", Frame.superseded_at.is_(None), ~overruled)
    stmt = stmt.where(Frame.oring_type.is_(None) if oring_type is None else Frame.oring_type == oring_type)
    frames = session.scalars(stmt.order_by(Frame.inspected_at.desc(), Frame.id.desc()).limit(limit))
    return [_frame_row(f) for f in frames]


def reviewed_frame_ids(
    session: Session, since: datetime | date | None = None, oring_type: str | None = None
) -> list[tuple[int, int]]:
    """(frame id, newest review id) of every reviewed frame, oldest review first; ``since``: only
    frames whose newest review is at least that recent."""
    newest = (
        select(Review.frame_id, func.max(Review.id).label("review_id")).group_by(Review.frame_id).subquery()
    )
    stmt = select(newest.c.frame_id, newest.c.review_id).join(Review, Review.id == newest.c.review_id)
    if since is not None:
        stmt = stmt.where(Review.created_at >= _utc_param(since))
    if oring_type is not None:
        stmt = stmt.join(Frame, Frame.id == newest.c.frame_id).where(Frame.oring_type == oring_type)
    return [(int(f), int(r)) for f, r in session.execute(stmt.order_by(newest.c.review_id))]


@dataclass(slots=True)
class PromotionRow(_Row):
    """One switch of the models that decide a type's parts (``oringscan models promote/rollback``)."""

    id: int
    oring_type: str
    action: str  # "promote" | "rollback"
    version: str
    previous: str | None
    operator: str | None
    reason: str | None
    created_at: datetime | None
    host: str | None


def list_promotions(
    session: Session, oring_type: str | None = None, limit: int | None = 100
) -> list[PromotionRow]:
    """Promotions and rollbacks, newest first (migration 0005)."""
    from oringscan.db.models import ModelPromotion

    stmt = select(ModelPromotion)
    if oring_type is not None:
        stmt = stmt.where(ModelPromotion.oring_type == oring_type)
    stmt = stmt.order_by(ModelPromotion.created_at.desc(), ModelPromotion.id.desc())
    if limit is not None:
        stmt = stmt.limit(limit)
    return [
        PromotionRow(
            id=p.id,
            oring_type=p.oring_type,
            action=p.action,
            version=p.version,
            previous=p.previous,
            operator=p.operator,
            reason=p.reason,
            created_at=_as_utc(p.created_at),
            host=p.host,
        )
        for p in session.scalars(stmt)
    ]


def _defect_row(defect: Defect, frame: Frame | None = None, with_mask: bool = False) -> DefectRow:
    row = DefectRow(
        id=defect.id,
        frame_id=defect.frame_id,
        label=defect.label,
        score=defect.score,
        x=defect.x,
        y=defect.y,
        w=defect.w,
        h=defect.h,
        area_px=defect.area_px,
        area_mm2=defect.area_mm2,
        mask_rle=defect.mask_rle if with_mask else None,
        polygon=defect.polygon if with_mask else None,
    )
    if frame is not None:
        row.image, row.run_id, row.oring_type = frame.path, frame.run_id, frame.oring_type
        row.verdict, row.inspected_at = frame.verdict, _as_utc(frame.inspected_at)
    return row


def list_reviews(
    session: Session, frame_id: int | None = None, *, limit: int | None = 100, offset: int = 0
) -> list[ReviewRow]:
    """Review history: of one frame oldest first, else of all frames newest first."""
    stmt = select(Review)
    if frame_id is not None:
        stmt = stmt.where(Review.frame_id == frame_id).order_by(Review.id.asc())
    else:
        stmt = stmt.order_by(Review.id.desc())
    found = list(session.scalars(_paged(stmt, limit, offset)))
    shapes = review_shapes(session, [r.id for r in found])
    return [_review_row(r, shapes) for r in found]


def list_defects(
    session: Session,
    filters: FrameFilter | None = None,
    *,
    label: str | None = None,
    limit: int | None = 100,
    offset: int = 0,
) -> Page[DefectRow]:
    """Defects (newest frames first) of the frames matching ``filters``, optionally of one class."""
    conds = (filters or FrameFilter()).conditions()
    if label:
        conds.append(Defect.label == label)
    stmt = select(Defect, Frame).join(Frame, Frame.id == Defect.frame_id)
    count = select(func.count(Defect.id)).join(Frame, Frame.id == Defect.frame_id)
    if conds:
        stmt, count = stmt.where(*conds), count.where(*conds)
    stmt = _paged(stmt.order_by(Frame.inspected_at.desc(), Frame.id.desc(), Defect.id.asc()), limit, offset)
    items = [_defect_row(d, f) for d, f in session.execute(stmt).tuples()]
    return Page(items, int(session.scalar(count) or 0), limit, offset)


def verdict_counts(session: Session, filters: FrameFilter | None = None) -> dict[str, int]:
    """Frames per verdict (every verdict present, zero included)."""
    stmt = select(Frame.verdict, func.count(Frame.id)).group_by(Frame.verdict)
    conds = (filters or FrameFilter()).conditions()
    if conds:
        stmt = stmt.where(*conds)
    found = {v: int(n) for v, n in session.execute(stmt).tuples()}
    return {v: found.get(v, 0) for v in VERDICTS}


def _day(column: Any) -> Any:
    """Calendar day (UTC) of a timestamp, the same on SQLite and PostgreSQL (sessions run in UTC)."""
    return func.date(column)


def _day_text(value: Any) -> str:
    return value.isoformat() if isinstance(value, date) else str(value)


def yield_by_day(session: Session, filters: FrameFilter | None = None) -> list[YieldRow]:
    """Per o-ring type and UTC day: frames per verdict (yield = good / judged)."""
    day = _day(Frame.inspected_at).label("day")
    cols = [day, Frame.oring_type, func.count(Frame.id).label("total")]
    cols += [func.sum(case((Frame.verdict == v, 1), else_=0)).label(v) for v in VERDICTS]
    stmt = select(*cols).group_by(day, Frame.oring_type).order_by(day, Frame.oring_type)
    conds = (filters or FrameFilter()).conditions()
    if conds:
        stmt = stmt.where(*conds)
    return [
        YieldRow(_day_text(r.day), r.oring_type, int(r.total), *(int(getattr(r, v) or 0) for v in VERDICTS))
        for r in session.execute(stmt)
    ]


def defects_by_class(
    session: Session, filters: FrameFilter | None = None, *, by_day: bool = True
) -> list[DefectClassRow]:
    """Defects and defective frames per class (and per UTC day), per o-ring type."""
    day = _day(Frame.inspected_at).label("day")
    keys = ([day] if by_day else []) + [Frame.oring_type, Defect.label]
    stmt = (
        select(*keys, func.count(Defect.id).label("n"), func.count(distinct(Frame.id)).label("frames"))
        .join(Frame, Frame.id == Defect.frame_id)
        .group_by(*keys)
        .order_by(*keys)
    )
    conds = (filters or FrameFilter()).conditions()
    if conds:
        stmt = stmt.where(*conds)
    return [
        DefectClassRow(_day_text(r.day) if by_day else None, r.oring_type, r.label, int(r.n), int(r.frames))
        for r in session.execute(stmt)
    ]


def review_overrides(session: Session, filters: FrameFilter | None = None) -> list[OverrideRow]:
    """Machine verdict against the newest operator decision, counted per type (reviewed frames only)."""
    newest = select(func.max(Review.id)).group_by(Review.frame_id).scalar_subquery()
    stmt = (
        select(Frame.oring_type, Frame.verdict, Review.decision, func.count(Frame.id).label("n"))
        .join(Review, Review.frame_id == Frame.id)
        .where(Review.id.in_(newest))
        .group_by(Frame.oring_type, Frame.verdict, Review.decision)
        .order_by(Frame.oring_type, Frame.verdict, Review.decision)
    )
    conds = (filters or FrameFilter()).conditions()
    if conds:
        stmt = stmt.where(*conds)
    return [OverrideRow(r.oring_type, r.verdict, r.decision, int(r.n)) for r in session.execute(stmt)]


def score_histogram(
    session: Session, filters: FrameFilter | None = None, *, bins: int = 30, normalized: bool = True
) -> ScoreHistogram:
    """Screening scores per verdict on shared bins; normalized scores (score / threshold) compare types."""
    import numpy as np

    if bins < 1:
        raise StoreError(f"bins must be at least 1 (got {bins})")
    stmt = (
        select(Frame.oring_type, Frame.verdict, Frame.screen_score, Frame.screen_threshold)
        .where(Frame.screen_score.is_not(None))
        .order_by(Frame.id)
    )
    conds = (filters or FrameFilter()).conditions()
    if conds:
        stmt = stmt.where(*conds)
    rows = session.execute(stmt).all()
    thresholds: dict[str, float] = {}
    values: dict[str, list[float]] = {}
    for oring_type, verdict, score, threshold in rows:
        if threshold is not None and oring_type is not None:
            thresholds[oring_type] = float(threshold)
        if normalized:
            if not threshold:
                continue
            score = score / threshold
        values.setdefault(verdict, []).append(float(score))
    every = [v for vs in values.values() for v in vs]
    if not every:
        return ScoreHistogram([], {}, normalized, 0, thresholds)
    lo, hi = min(every), max(every)
    if normalized:
        lo, hi = min(lo, 0.0), max(hi, 1.0)
    if hi <= lo:
        hi = lo + 1.0
    edges = np.linspace(lo, hi, bins + 1)
    counts = {v: np.histogram(vs, bins=edges)[0].astype(int).tolist() for v, vs in values.items()}
    return ScoreHistogram([float(e) for e in edges], counts, normalized, len(every), thresholds)


def run_timings(session: Session, run_id: int) -> dict[str, dict[str, float]]:
    """Per stage of one run: frames, mean, median and 95th percentile milliseconds."""
    per_stage: dict[str, list[float]] = {}
    for timings in session.scalars(select(Frame.timings).where(Frame.run_id == run_id)):
        for stage, ms in (timings or {}).items():
            if isinstance(ms, int | float):
                per_stage.setdefault(stage, []).append(float(ms))
    out = {}
    for stage, values in per_stage.items():
        ordered = sorted(values)
        p95 = ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]
        out[stage] = {
            "n": len(values),
            "mean_ms": statistics.fmean(values),
            "median_ms": statistics.median(values),
            "p95_ms": p95,
        }
    return out


def stats(session: Session, filters: FrameFilter | None = None) -> Stats:
    filters = filters or FrameFilter()
    verdicts = verdict_counts(session, filters)
    reviewed_conds = [*filters.conditions(), exists().where(Review.frame_id == Frame.id)]
    n_reviewed = int(session.scalar(select(func.count(Frame.id)).where(*reviewed_conds)) or 0)
    return Stats(
        n_frames=sum(verdicts.values()),
        verdicts=verdicts,
        yield_by_day=yield_by_day(session, filters),
        defects_by_class=defects_by_class(session, filters),
        review_overrides=review_overrides(session, filters),
        n_reviewed=n_reviewed,
    )
