"""oringscan.db: the inspection record (runs, frames, tiles, defects, measurements, reviews).

The pipeline writes through ``InspectionStore``; the dashboard and ``oringscan db ...`` read through
its query methods, which return the plain dataclasses below.
"""

from typing import TYPE_CHECKING

from oringscan._lazy import lazy_exports

if TYPE_CHECKING:
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
        ShapeRow,
        Stats,
        TileRow,
        YieldRow,
        to_jsonable,
    )
    from oringscan.db.store import DEFAULT_FRAME_SHAPE, InspectionStore, config_fingerprint, safe_url

# Names are imported on first use, so `oringscan db --help` does not load SQLAlchemy (see oringscan/_lazy.py).
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "StoreError": "errors",
        "REVIEW_DECISIONS": "vocab",
        "REVIEW_VERDICTS": "models",
        "RUN_STATUSES": "models",
        "VERDICTS": "vocab",
        "FRAME_ORDERS": "vocab",
        "DefectClassRow": "queries",
        "DefectRow": "queries",
        "FrameDetail": "queries",
        "FrameFilter": "queries",
        "FrameRow": "queries",
        "MeasurementRow": "queries",
        "OverrideRow": "queries",
        "Page": "queries",
        "ReviewRow": "queries",
        "RunRow": "queries",
        "ScoreHistogram": "queries",
        "ShapeRow": "queries",
        "Stats": "queries",
        "TileRow": "queries",
        "YieldRow": "queries",
        "to_jsonable": "queries",
        "DEFAULT_FRAME_SHAPE": "store",
        "InspectionStore": "store",
        "config_fingerprint": "store",
        "safe_url": "store",
    },
)

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
    "ShapeRow",
    "Stats",
    "StoreError",
    "TileRow",
    "YieldRow",
    "config_fingerprint",
    "safe_url",
    "to_jsonable",
]
