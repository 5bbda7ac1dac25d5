"""Review shapes in the database: recorded with the review, checked, append-only, migration 0004."""

from __future__ import annotations

import pytest
from alembic import command
from sqlalchemy import inspect, update
from sqlalchemy.exc import DBAPIError

from oringscan.db import InspectionStore
from oringscan.db.migrate import alembic_config, head_revision
from oringscan.db.models import ReviewShape
from oringscan.review.shapes import ReviewInputError, ShapeMark, parse_box, parse_polygon
from oringscan.testing.results import make_result

CLASSES = ["defect", "hole", "pit"]


def _frame(store: InspectionStore) -> tuple[int, int]:
    run_id = store.start_run(oring_type="model1", model_fingerprint="fp")
    frame_id = store.record_frame(
        run_id, make_result("defect", defects=[("pit", 0.9)], sha256="a" * 64), frame_shape=(2048, 2448)
    )
    return frame_id, store.frame_detail(frame_id).defects[0].id


def test_a_review_records_its_shapes_in_one_transaction(store: InspectionStore) -> None:
    frame_id, defect_id = _frame(store)
    marks = [
        ShapeMark("Hole", box=(100, 200, 30, 20)),  # spelt as the operator typed it
        ShapeMark("defect", defect_id=defect_id),  # the machine's pit, class corrected
        ShapeMark("pit", polygon=((10.0, 10.0), (40.0, 12.0), (30.5, 35.0))),
    ]
    review_id = store.add_review(frame_id, "anna", "defect", "two more", shapes=marks, classes=CLASSES)
    shapes = store.reviews(frame_id)[-1].shapes
    assert [(s.review_id, s.source, s.kind, s.label) for s in shapes] == [
        (review_id, "operator", "box", "hole"),
        (review_id, "machine", "mask", "defect"),
        (review_id, "operator", "polygon", "pit"),
    ]
    defect = store.frame_detail(frame_id).defects[0]
    assert (shapes[1].x, shapes[1].y, shapes[1].w, shapes[1].h) == (defect.x, defect.y, defect.w, defect.h)
    assert shapes[2].points == [[10.0, 10.0], [40.0, 12.0], [30.5, 35.0]]
    assert (shapes[2].x, shapes[2].y, shapes[2].w, shapes[2].h) == (10, 10, 30, 25)
    with pytest.raises(DBAPIError), store.write_session() as s:  # append-only, like the reviews
        s.execute(update(ReviewShape).values(label="x"))


@pytest.mark.parametrize(
    "mark, message",
    [
        (ShapeMark("hole", box=(2440, 10, 20, 20)), "box 2440,10,20,20 reaches outside the frame (2448x"),
        (ShapeMark("hole", polygon=((1, 1), (3000, 5), (4, 9))), "vertex 3000,5 lies outside the frame"),
        (ShapeMark("crack", box=(1, 1, 5, 5)), "unknown class 'crack'; the config's classes are defect,"),
        (ShapeMark("pit", defect_id=999), "defect 999 is not one the machine found on this frame"),
        (ShapeMark("", box=(1, 1, 5, 5)), "a marked defect needs a class"),
    ],
)
def test_bad_shapes_are_one_line_and_nothing_is_written(store: InspectionStore, mark, message) -> None:
    frame_id, _ = _frame(store)
    with pytest.raises(ReviewInputError) as err:
        store.add_review(frame_id, "anna", "defect", shapes=[mark], classes=CLASSES)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert store.reviews(frame_id) == []


def test_shapes_go_with_a_defect_decision_only(store: InspectionStore) -> None:
    frame_id, _ = _frame(store)
    with pytest.raises(ReviewInputError, match="go with --decision defect"):
        store.add_review(frame_id, "anna", "good", shapes=[ShapeMark("hole", box=(1, 1, 2, 2))])
    assert store.reviews(frame_id) == []


@pytest.mark.parametrize(
    "text, problem",
    [("1,2,3", "expected X,Y,W,H"), ("a,b,c,d", "expected X,Y,W,H"), ("1,2,0,4", "must be positive")],
)
def test_box_text_is_checked(text: str, problem: str) -> None:
    with pytest.raises(ReviewInputError, match=problem):
        parse_box(text)


def test_polygon_text_is_checked() -> None:
    assert parse_polygon("1,2 3,4 5.5,6") == ((1.0, 2.0), (3.0, 4.0), (5.5, 6.0))
    with pytest.raises(ReviewInputError, match="at least three vertices"):
        parse_polygon("1,2 3,4")
    with pytest.raises(ReviewInputError, match="is not a vertex"):
        parse_polygon("1,2 3;4 5,6")


def test_migration_0004_keeps_earlier_reviews(store: InspectionStore) -> None:
    frame_id, _ = _frame(store)
    store.add_review(frame_id, "anna", "defect", "before 0004")
    cfg = alembic_config(store.url)
    with store.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0003")
    assert "review_shapes" not in inspect(store.engine).get_table_names()
    assert store.migrate() == head_revision()  # 0004 and every later one
    assert "review_shapes" in inspect(store.engine).get_table_names()
    assert [r.comment for r in store.reviews(frame_id)] == ["before 0004"]
    assert store.reviews(frame_id)[0].shapes == []
