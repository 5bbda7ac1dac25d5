"""oringscan.db: the inspection record (runs, frames, tiles, defects, measurements, reviews).

The pipeline writes through ``InspectionStore``; the dashboard and ``oringscan db ...`` read through
its query methods, which return the plain dataclasses below.
"""

from oringscan.db.errors import StoreError
from oringscan.db.models import REVIEW_DECISIONS, REVIEW_VERDICTS, RUN_STATUSES, VERDICTS
from oringscan.db.queries import (
    FRAME_ORDERS,
    DefectClassRow,
    DefectRow,
    FrameDetail,
    FrameFilter,
    FrameRow,
    MeasurementRow,
    OverrideRow,
    Page,
    ReviewRow,
    RunRow,
    ScoreHistogram,
    Stats,
    TileRow,
    YieldRow,
    to_jsonable,
)
from oringscan.db.store import DEFAULT_FRAME_SHAPE, InspectionStore, config_fingerprint, safe_url

__all__ = [
    "DEFAULT_FRAME_SHAPE",
    "FRAME_ORDERS",
    "REVIEW_DECISIONS",
    "REVIEW_VERDICTS",
    "RUN_STATUSES",
    "VERDICTS",
    "DefectClassRow",
    "DefectRow",
    "FrameDetail",
    "FrameFilter",
    "FrameRow",
    "InspectionStore",
    "MeasurementRow",
    "OverrideRow",
    "Page",
    "ReviewRow",
    "RunRow",
    "ScoreHistogram",
    "Stats",
    "StoreError",
    "TileRow",
    "YieldRow",
    "config_fingerprint",
    "safe_url",
    "to_jsonable",
]
