"""Dashboard test data: real SQLite databases filled through ``InspectionStore`` (no mocks)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from streamlit.testing.v1 import AppTest

from oringscan.dashboard.server import APP_SCRIPT
from oringscan.dashboard.settings import ENV_VAR, DashboardSettings
from oringscan.db import InspectionStore
from oringscan.frames import write_frame
from oringscan.testing.sample_db import fill_sample_database
from oringscan.types import InspectionResult, Verdict

SMALL_FRAME = (512, 612)  # (h, w): a quarter-size frame keeps the tests fast; overlays scale anyway
# More flagged frames than a real line has, so every page has something to show in 60 frames.
TEST_SHARES = {"good": 0.45, "defect": 0.25, "suspect": 0.1, "rework": 0.15, "error": 0.05}


@dataclass
class SampleDb:
    url: str
    root: Path  # the one image root (it has a space in its name, as Windows paths often do)
    store: InspectionStore
    frame_ids: list[int]
    gone_id: int  # a frame whose image file was deleted after the inspection
    outside_id: int  # a frame whose stored path lies outside every image root
    outside_path: Path

    def settings(self, page_size: int = 10) -> DashboardSettings:
        return DashboardSettings(self.url, [self.root], page_size=page_size, marginal_fraction=0.9)


def _flagged(image: str) -> InspectionResult:
    return InspectionResult(
        image=image,
        verdict=Verdict.SUSPECT,
        reasons=["screening flagged, nothing segmented"],
        oring_type="model1",
        timings_ms={"read": 5.0},
    )


def make_sample_db(folder: Path, n_frames: int = 60, seed: int = 1, with_broken: bool = True) -> SampleDb:
    """Sample frames, plus (``with_broken``) one whose picture is gone and one outside the roots (newest)."""
    root = folder / "plant data"
    root.mkdir(parents=True)
    url = f"sqlite:///{(folder / 'inspections.db').as_posix()}"
    store = InspectionStore(url)
    ids = fill_sample_database(
        store,
        root / "frames",
        n_frames,
        seed=seed,
        n_images=4,
        shape=SMALL_FRAME,
        days=5,
        verdict_shares=TEST_SHARES,
    )
    if not with_broken:
        return SampleDb(url, root, store, ids, -1, -1, root)
    run_id = store.runs(limit=1)[0].id
    gone = root / "frames" / "deleted later.png"
    write_frame(gone, np.full(SMALL_FRAME, 40, np.uint8))
    gone_id = store.record_frame(run_id, _flagged(str(gone)), frame_shape=SMALL_FRAME)
    gone.unlink()
    outside = folder / "elsewhere" / "secret.png"
    write_frame(outside, np.full(SMALL_FRAME, 200, np.uint8))
    outside_id = store.record_frame(run_id, _flagged(str(outside)), frame_shape=SMALL_FRAME)
    return SampleDb(url, root, store, ids, gone_id, outside_id, outside)


def app_test(settings: DashboardSettings, monkeypatch, page: str | None = None, **query: str) -> AppTest:
    """An AppTest of the real app script on ``page`` (a views/ file), already run."""
    monkeypatch.setenv(ENV_VAR, settings.to_json())
    at = AppTest.from_file(str(APP_SCRIPT), default_timeout=60)
    for key, value in query.items():
        at.query_params[key] = value
    at.run()
    if page is not None:
        at.switch_page(page).run()
    return at


def assert_clean(at: AppTest) -> None:
    """No uncaught exception on the page."""
    assert not at.exception, [e.message for e in at.exception]
