"""The inspection store on SQLite and PostgreSQL: schema, writing, queries, reviews."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from pycocotools import mask as mask_utils
from sqlalchemy import func, inspect, select, text

from oringscan.db import FrameFilter, InspectionStore, StoreError
from oringscan.db.migrate import alembic_config, head_revision
from oringscan.db.models import Base, Defect, Frame, Measurement, Tile
from oringscan.testing.results import make_result

DAY1 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


def _counts(store: InspectionStore) -> dict[str, int]:
    with store.read_session() as s:
        return {
            m.__tablename__: s.scalar(select(func.count()).select_from(m))
            for m in (Frame, Tile, Defect, Measurement)
        }


def test_migrated_schema_equals_the_models(store: InspectionStore) -> None:
    with store.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        assert context.get_current_revision() == head_revision()
        diff = compare_metadata(context, Base.metadata)
    assert diff == [], f"models and migrations differ: {diff}"
    names = set(inspect(store.engine).get_table_names())
    assert {"runs", "frames", "tiles", "defects", "measurements", "reviews", "alembic_version"} <= names
    indexes = {ix["name"] for ix in inspect(store.engine).get_indexes("frames")}
    assert {
        "ix_frames_verdict_inspected_at",
        "ix_frames_sha256_model_fingerprint",
        "ix_frames_run_id",
    } <= indexes


def test_downgrade_then_upgrade_round_trips(store: InspectionStore) -> None:
    cfg = alembic_config(store.url)
    with store.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "base")
    assert set(inspect(store.engine).get_table_names()) <= {"alembic_version"}
    assert store.migrate() == head_revision()
    reopened = InspectionStore(store.url)  # migrating an up-to-date database changes nothing
    try:
        run_id = reopened.start_run(oring_type="model1")
        reopened.add_review(reopened.record_frame(run_id, make_result("defect")), "anna", "good")
    finally:
        reopened.dispose()


def test_a_frame_round_trips_with_everything_it_found(store: InspectionStore) -> None:
    run_id = store.start_run(
        oring_type="model1",
        model_fingerprint="fp-a",
        config={"tiling": {"tile_size": 640}},
        model_versions={"screening": "abc", "segmentation": "def"},
        command="inspect",
    )
    result = make_result(
        "defect", score=2.5, defects=[("cut", 0.93), ("pit", 0.61)], fired=["ovality"], seed=3
    )
    result.overlay_path = "/out/model1/inspections/run-1/frame_0001.png"
    frame_id = store.record_frame(
        run_id, result, frame_shape=(2048, 2448), station="cam 2", mm_per_px=0.05, captured_at=DAY1
    )
    detail = store.frame_detail(frame_id)
    assert detail is not None
    f = detail.frame
    assert (f.image, f.verdict, f.run_id, f.station, f.oring_type) == (
        result.image,
        "defect",
        run_id,
        "cam 2",
        "model1",
    )
    assert f.model_fingerprint == "fp-a"  # the run's, when the caller gives none
    assert f.sha256 == result.sha256 and f.captured_at == DAY1 and f.inspected_at.tzinfo is not None
    assert (
        f.screen_score == pytest.approx(2.5)
        and f.n_defects == 2
        and f.max_defect_score == pytest.approx(0.93)
    )
    assert f.overlay_path == result.overlay_path and f.total_ms == pytest.approx(203.0)
    assert detail.timings["screening"] == pytest.approx(123.0) and detail.frame_shape == (2048, 2448)
    assert [(t.x, t.y, t.w, t.h) for t in detail.tiles] == [
        tuple(t.box.as_dict().values()) for t in result.screening.tiles
    ]
    assert [m.metric for m in detail.measurements if m.fired] == ["ovality"]
    assert detail.run.model_fingerprint == "fp-a" and detail.run.oring_type == "model1"
    for stored, inst in zip(detail.defects, result.defects, strict=True):
        assert stored.label == inst.label and stored.bbox == inst.bbox and stored.area_px == inst.area
        assert stored.area_mm2 == pytest.approx(inst.area * 0.05**2)
        rle = {"size": stored.mask_rle["size"], "counts": stored.mask_rle["counts"].encode()}
        decoded = mask_utils.decode(rle).astype(bool)
        assert decoded.shape == (2048, 2448)
        np.testing.assert_array_equal(decoded, inst.full_mask(2048, 2448))
        assert stored.polygon and len(stored.polygon[0]) >= 6


def test_error_frames_are_recorded_with_their_reason(store: InspectionStore) -> None:
    run_id = store.start_run(oring_type="model1")
    frame_id = store.record_frame(run_id, make_result("error", image="/plant/broken.bmp"))
    detail = store.frame_detail(frame_id)
    assert detail.frame.verdict == "error" and "truncated" in detail.frame.error
    assert detail.tiles == [] and detail.measurements == []


def test_one_transaction_per_frame(store: InspectionStore) -> None:
    """A failure while writing a frame's rows leaves nothing of that frame, and the store goes on."""
    run_id = store.start_run(oring_type="model1")
    store.record_frame(run_id, make_result("good", seed=1))
    before = _counts(store)
    broken = make_result("rework", fired=["ovality"], seed=2)
    broken.rework.checks[-1].name = None  # the last row written (a measurement) violates NOT NULL
    with pytest.raises(StoreError, match="not recorded"):
        store.record_frame(run_id, broken)
    assert _counts(store) == before
    store.record_frame(run_id, make_result("defect", defects=[("cut", 0.9)], seed=3))
    assert _counts(store)["frames"] == before["frames"] + 1
    with pytest.raises(StoreError, match="run 999"):
        store.record_frame(999, make_result("good", seed=4))
    assert _counts(store)["frames"] == before["frames"] + 1


def test_find_inspected_needs_same_content_and_models(store: InspectionStore) -> None:
    run_id = store.start_run(oring_type="model1", model_fingerprint="fp-1")
    first = store.record_frame(run_id, make_result(sha256="a" * 64))
    assert store.find_inspected("a" * 64, "fp-1") == first
    assert store.find_inspected("a" * 64, "fp-2") is None
    assert store.find_inspected("b" * 64, "fp-1") is None
    assert store.find_inspected(None, "fp-1") is None
    second = store.record_frame(
        run_id, make_result(sha256="a" * 64), replace=True
    )  # --reinspect: a new record
    assert store.find_inspected("a" * 64, "fp-1") == second


def test_reviews_are_appended_never_overwritten(store: InspectionStore) -> None:
    run_id = store.start_run(oring_type="model1")
    frame_id = store.record_frame(run_id, make_result("suspect", score=1.2))
    first = store.add_review(frame_id, "anna", "defect", "looks like a cut")
    second = store.add_review(frame_id, " ben ", "GOOD", "lint on the belt")
    history = store.reviews(frame_id)
    assert [(r.id, r.operator, r.decision, r.comment) for r in history] == [
        (first, "anna", "defect", "looks like a cut"),
        (second, "ben", "good", "lint on the belt"),
    ]
    row = store.frames().items[0]
    assert (row.review_decision, row.review_operator) == ("good", "ben")
    for statement in ("UPDATE reviews SET decision = 'rework'", "DELETE FROM reviews"):
        with pytest.raises(Exception, match="append-only"), store.engine.begin() as conn:
            conn.execute(text(statement))
    assert [r.decision for r in store.reviews(frame_id)] == ["defect", "good"]
    with pytest.raises(StoreError, match="decision"):
        store.add_review(frame_id, "anna", "maybe")
    with pytest.raises(StoreError, match="operator"):
        store.add_review(frame_id, "  ", "good")
    with pytest.raises(StoreError, match="frame 4242"):
        store.add_review(4242, "anna", "good")
    assert len(store.reviews(frame_id)) == 2


def _fill(store: InspectionStore) -> dict[str, int]:
    """Two types over three days, every verdict, some reviews; returns frame ids by name."""
    ids: dict[str, int] = {}
    run1 = store.start_run(oring_type="model1", model_fingerprint="fp1", started_at=DAY1)
    run2 = store.start_run(oring_type="model2", model_fingerprint="fp2", started_at=DAY1 + timedelta(days=1))
    plan = [
        ("m1-good-a", run1, "good", 0, 0.3, None, None),
        ("m1-good-b", run1, "good", 0, 0.5, None, None),
        ("m1-defect", run1, "defect", 0, 3.0, [("cut", 0.95), ("pit", 0.5)], None),
        ("m1-suspect", run1, "suspect", 1, 1.1, None, None),
        ("m1-rework", run1, "rework", 1, 0.6, None, ["ovality"]),
        ("m2-good", run2, "good", 1, 0.2, None, None),
        ("m2-defect", run2, "defect", 2, 2.0, [("cut", 0.7)], None),
        ("m2-error", run2, "error", 2, 0.0, None, None),
    ]
    for i, (name, run_id, verdict, day, score, defects, fired) in enumerate(plan):
        result = make_result(
            verdict,
            image=f"/plant/{name}.bmp",
            score=score,
            defects=defects,
            fired=fired,
            seed=i,
            oring_type=None,
        )  # the run's type
        ids[name] = store.record_frame(run_id, result, inspected_at=DAY1 + timedelta(days=day, minutes=i))
    store.finish_run(run1, n_skipped=3)
    store.add_review(ids["m1-defect"], "anna", "good", "false alarm")
    store.add_review(ids["m1-good-b"], "anna", "good")
    return ids


def test_review_queue_pages_in_sql(store: InspectionStore) -> None:
    ids = _fill(store)
    queue = store.review_queue()
    assert queue.total == 3  # defect / suspect / rework nobody reviewed yet (m1-defect was reviewed)
    assert [r.id for r in queue] == [ids["m2-defect"], ids["m1-rework"], ids["m1-suspect"]]
    worst = store.review_queue(order="worst")
    assert [r.verdict for r in worst] == ["defect", "rework", "suspect"]
    store.add_review(ids["m2-defect"], "ben", "defect")
    store.record_frame(
        store.frame_detail(ids["m1-suspect"]).frame.run_id,
        make_result("defect", score=5.0, defects=[("pit", 0.6)], seed=20),
        inspected_at=DAY1,
    )
    store.record_frame(
        store.frame_detail(ids["m1-suspect"]).frame.run_id,
        make_result("defect", score=4.0, defects=[("cut", 0.99)], seed=21),
        inspected_at=DAY1,
    )
    worst = store.review_queue(order="worst")
    assert [(r.verdict, r.max_defect_score) for r in worst][:2] == [
        ("defect", pytest.approx(0.99)),
        ("defect", pytest.approx(0.6)),
    ]
    assert worst.items[2].id == ids["m1-rework"]
    by_score = store.review_queue(order="score")
    assert [r.screen_score for r in by_score][:2] == [pytest.approx(5.0), pytest.approx(4.0)]
    ids["new"] = worst.items[0].id
    page = store.review_queue(limit=2, offset=1, order="newest")
    assert page.total == 4 and [r.id for r in page] == [ids["m1-suspect"], ids["new"]]  # new ones: DAY1
    assert store.review_queue(oring_type="model2").total == 0
    assert [r.id for r in store.review_queue(verdict="suspect")] == [ids["m1-suspect"]]
    assert store.review_queue(since=DAY1 + timedelta(days=1)).total == 2
    assert store.review_queue(until=DAY1 + timedelta(days=1)).total == 2
    run1 = store.frame_detail(ids["m1-suspect"]).frame.run_id
    assert store.review_queue(run_id=run1).total == 4
    store.add_review(ids["m1-rework"], "ben", "rework")
    assert store.review_queue().total == 3


def test_listings_and_statistics(store: InspectionStore) -> None:
    ids = _fill(store)
    frames = store.frames(oring_type="model1", order="oldest")
    assert frames.total == 5 and [r.id for r in frames][0] == ids["m1-good-a"]
    assert store.frames(verdict=["good", "error"]).total == 4
    assert store.frames(reviewed=True).total == 2
    with pytest.raises(StoreError, match="unknown verdict"):
        store.frames(verdict="great")

    counts = store.verdict_counts()
    assert counts == {"good": 3, "defect": 2, "rework": 1, "suspect": 1, "error": 1}

    days = {(r.day, r.oring_type): r for r in store.yield_by_day()}
    assert set(days) == {
        ("2026-03-02", "model1"),
        ("2026-03-03", "model1"),
        ("2026-03-03", "model2"),
        ("2026-03-04", "model2"),
    }
    assert (days["2026-03-02", "model1"].total, days["2026-03-02", "model1"].good) == (3, 2)
    assert days["2026-03-02", "model1"].yield_rate == pytest.approx(2 / 3)
    assert days["2026-03-04", "model2"].yield_rate == 0.0  # a defect and an error: 0 of 1 judged
    by_class = {(r.oring_type, r.label): r.defects for r in store.defects_by_class(by_day=False)}
    assert by_class == {("model1", "cut"): 1, ("model1", "pit"): 1, ("model2", "cut"): 1}
    assert store.defects(label="cut").total == 2

    overrides = {(r.verdict, r.decision): r.frames for r in store.review_overrides()}
    assert overrides == {("defect", "good"): 1, ("good", "good"): 1}
    stats = store.stats(oring_type="model1")
    assert stats.n_frames == 5 and stats.n_reviewed == 2 and stats.n_overridden == 1
    assert stats.to_dict()["yield_by_day"][0]["yield"] == pytest.approx(2 / 3)

    hist = store.score_histogram(bins=10)
    assert sum(sum(c) for c in hist.counts.values()) == hist.n == 7 and len(hist.edges) == 11
    assert hist.edges[0] == 0.0 and hist.edges[-1] == pytest.approx(3.0) and hist.thresholds["model1"] == 1.0

    runs = store.runs()
    assert [r.oring_type for r in runs] == ["model2", "model1"]  # newest first
    model1 = runs[1]
    assert (model1.status, model1.n_frames, model1.n_good, model1.n_defect, model1.n_skipped) == (
        "done",
        5,
        2,
        1,
        3,
    )
    assert model1.seconds is not None and model1.mean_ms == pytest.approx(202.0)
    assert runs[0].status == "running" and runs[0].n_frames == 3  # counted live before finish_run
    timings = store.run_timings(model1.id)
    assert timings["total"]["n"] == 5 and timings["total"]["median_ms"] == pytest.approx(202.0)


def test_user_text_is_only_ever_a_bound_parameter(store: InspectionStore) -> None:
    hostile = "x'; DROP TABLE frames; --"
    run_id = store.start_run(oring_type=hostile)
    frame_id = store.record_frame(
        run_id, make_result("suspect", image=f"/plant/{hostile}_100%.bmp", oring_type=hostile)
    )
    store.add_review(frame_id, hostile, "good", hostile)
    store.record_frame(run_id, make_result("suspect", image="/plant/a100b.bmp", oring_type=hostile, seed=1))
    assert store.frames(oring_type=hostile).total == 2
    assert [r.image for r in store.frames(image_contains="_100%")] == [f"/plant/{hostile}_100%.bmp"]
    assert store.frames(image_contains="%").total == 1  # LIKE wildcards are escaped
    assert store.reviews(frame_id)[0].comment == hostile
    assert store.frames(oring_type="model1' OR '1'='1").total == 0


def test_bad_urls_fail_in_one_line(tmp_path) -> None:
    with pytest.raises(StoreError, match="not a database URL"):
        InspectionStore("no such thing")
    with pytest.raises(StoreError, match="cannot open the database"):
        InspectionStore("postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=2")
    with pytest.raises(StoreError, match="cannot open the database|cannot create"):
        (tmp_path / "file").write_text("x")
        InspectionStore(f"sqlite:///{(tmp_path / 'file' / 'inspections.db').as_posix()}")


def test_filters_validate(store: InspectionStore) -> None:
    with pytest.raises(StoreError, match="order"):
        store.frames(order="sideways")
    with pytest.raises(StoreError, match="negative"):
        store.frames(limit=-1)
    with pytest.raises(TypeError):
        store.frames(FrameFilter(), verdict="good")


def test_non_ascii_text_round_trips(store: InspectionStore) -> None:
    run_id = store.start_run(oring_type="model1", host="prüfstand-2")
    image = "C:/Prüfstand 2/Bilder mit Leerzeichen/ö-ring 001.bmp"
    frame_id = store.record_frame(run_id, make_result("suspect", image=image, score=1.2))
    store.add_review(frame_id, "Jürgen Groß", "good", "Fussel auf dem Band (kein Riss) ✓")
    row = store.frames(image_contains="Prüfstand").items[0]
    assert row.image == image and (row.review_operator, row.review_decision) == ("Jürgen Groß", "good")
    assert store.reviews(frame_id)[0].comment.endswith("✓") and store.runs()[0].host == "prüfstand-2"


def test_stored_rle_is_exactly_the_instance_rle() -> None:
    """The store builds RLE from the crop (no frame-size mask): same string as Instance.rle, clipping
    included."""
    from oringscan.db.store import mask_rle
    from oringscan.types import Instance

    rng = np.random.default_rng(7)
    for _ in range(200):
        mask = rng.random(tuple(rng.integers(1, 30, 2))) < rng.random()
        height, width = (int(v) for v in rng.integers(4, 60, 2))
        offset = (int(rng.integers(-8, width)), int(rng.integers(-8, height)))
        assert mask_rle(mask, offset, height, width) == Instance("cut", 0.5, mask, offset).rle(height, width)


def test_a_database_from_a_newer_oringscan_is_refused_clearly(store: InspectionStore) -> None:
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = 'f00dcafe1234'"))
    with pytest.raises(StoreError, match="f00dcafe1234.*newer than this oringscan"):
        InspectionStore(store.url)
