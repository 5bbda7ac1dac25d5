"""The hot-spot view and marking in Streamlit's AppTest, on real SQLite databases (no mocks)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from support.dashboard import SampleDb, app_test, assert_clean, make_sample_db

from oringscan.dashboard.hotspots import HotSpot, crop_window, find_hotspots, marginal_level, spot_crop
from oringscan.dashboard.settings import DashboardSettings

QUEUE, SPOTS = "views/review_queue.py", "views/hot_spots.py"
CLASSES = ["pit", "scratch", "bite", "bulge", "particle", "hole"]


def plain(markdown: str) -> str:
    return re.sub(r"\\(.)", r"\1", markdown)


def settings(db: SampleDb, page_size: int = 10) -> DashboardSettings:
    return DashboardSettings(db.url, [db.root], page_size=page_size, marginal_fraction=0.9, classes=CLASSES)


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> SampleDb:
    return make_sample_db(tmp_path_factory.mktemp("spots"), n_frames=40, seed=2)


@pytest.fixture()
def own_db(tmp_path) -> SampleDb:
    return make_sample_db(tmp_path, n_frames=24, seed=3)


def _defect_frame(db: SampleDb) -> int:
    page = db.store.review_queue(verdict="defect", order="worst", limit=None)
    return next(r.id for r in page.items if r.n_defects > 0)


def test_hot_spots_are_every_defect_hot_tile_and_rule_largest_first(sample: SampleDb) -> None:
    for frame in sample.store.review_queue(limit=None).items:
        detail = sample.store.frame_detail(frame.id)
        level = marginal_level(detail, 0.9)
        spots = find_hotspots(detail, level=level, frame_shape=detail.frame_shape)
        assert [s.area for s in spots] == sorted((s.area for s in spots), reverse=True)
        assert sorted(s.defect_id for s in spots if s.kind == "defect") == sorted(
            d.id for d in detail.defects
        )
        hot = [t for t in detail.tiles if level is not None and t.score > level]
        screening = [s for s in spots if s.kind == "screening"]
        assert len(screening) <= len(hot)
        for s in screening:  # each is a hot tile's box, not one holding a defect already shown
            assert any((t.x, t.y, t.w, t.h) == s.box for t in hot)


def test_spot_crop_is_full_resolution_and_outlines_the_spot() -> None:
    gray = np.full((512, 612), 100, np.uint8)
    gray[200:204, 300:303] = 10  # a 3x4 px pit
    spot = HotSpot("defect", "pit", 0.9, (300, 200, 3, 4), 12.0)
    x0, y0, x1, y1 = crop_window(spot.box, gray.shape)
    assert (x1 - x0, y1 - y0) == (96, 96)  # the minimum window, cut 1:1 (no scaling)
    crop = spot_crop(gray, spot)
    assert crop.shape[:2] == (96, 96)
    assert (crop[200 - y0 : 204 - y0, 300 - x0 : 303 - x0, 0] == 10).all()  # the pit's own pixels
    assert (crop != 100).any(axis=2).sum() > 12  # plus an outline


def test_queue_opens_hot_spots_with_reference_crops(sample: SampleDb, monkeypatch) -> None:
    frame_id = _defect_frame(sample)
    detail = sample.store.frame_detail(frame_id)
    at = app_test(settings(sample), monkeypatch, SPOTS, frame=str(frame_id))
    assert_clean(at)
    assert at.title[0].value == f"Frame #{frame_id}: defect"
    spots = find_hotspots(detail, level=marginal_level(detail, 0.9), frame_shape=detail.frame_shape)
    assert at.subheader[0].value.startswith(f"Hot spots ({len(spots)})")
    assert len(at.get("image")) == 2 * min(len(spots), 12)  # each spot and the same place on a good part
    assert any("same place on good frame" in plain(c.value) for c in at.caption)
    classes = {sb.key: sb.value for sb in at.selectbox if sb.key.startswith(f"s_cls_{frame_id}_")}
    assert sorted(classes.values()) == sorted(d.label for d in detail.defects)


def test_uncertain_order_and_keyboard_navigation(sample: SampleDb, monkeypatch) -> None:
    at = app_test(settings(sample, page_size=5), monkeypatch)
    at.radio(key="q_order").set_value("uncertain").run()
    assert_clean(at)
    table = at.dataframe[0].value
    expected = sample.store.review_queue(order="uncertain", limit=5)
    assert table["frame"].tolist() == [r.id for r in expected.items]
    ratios = [abs(r.screen_score / r.screen_threshold - 1) for r in expected.items if r.screen_threshold]
    assert ratios == sorted(ratios)
    assert table["picture"].str.startswith("data:image/jpeg;base64,").all()  # thumbnails
    at.selectbox(key="q_open").select(table["frame"].iloc[0])
    at.button(key="q_open_button").click().run()
    assert at.title[0].value.startswith(f"Frame #{table['frame'].iloc[0]}:")
    assert at.button(key="s_next").proto.shortcut  # J, from the keyboard
    at.button(key="s_next").click().run()
    assert at.title[0].value.startswith(f"Frame #{table['frame'].iloc[1]}:")
    at.button(key="s_prev").click().run()
    assert at.title[0].value.startswith(f"Frame #{table['frame'].iloc[0]}:")
    at.button(key="s_whole").click().run()  # the whole frame, one click (F) away
    assert at.toggle(key="f_masks") is not None


def test_confirm_correct_and_mark_new_defect(own_db: SampleDb, monkeypatch) -> None:
    frame_id = _defect_frame(own_db)
    detail = own_db.store.frame_detail(frame_id)
    first = detail.defects[0]
    at = app_test(settings(own_db), monkeypatch, SPOTS, frame=str(frame_id))
    new_class = next(c for c in CLASSES if c != first.label)
    at.selectbox(key=f"s_cls_{frame_id}_{first.id}").set_value(new_class)
    for other in detail.defects[1:]:
        at.checkbox(key=f"s_conf_{frame_id}_{other.id}").uncheck()
    at.selectbox(key=f"s_new_cls_{frame_id}").set_value("hole")
    at.text_input(key=f"s_new_box_{frame_id}").input("10,12,30,20")
    at.button(key=f"s_add_{frame_id}").click().run()
    assert_clean(at)
    assert any("pending: hole box 10,12,30,20" in plain(c.value) for c in at.caption)
    at.text_input(key="f_operator").input("Ana Lopes")
    next(b for b in at.button if b.label == "Record decision").click().run()
    assert_clean(at)
    assert any("2 defect(s) marked" in s.value for s in at.success)
    review = own_db.store.reviews(frame_id)[-1]
    assert review.decision == "defect"
    assert [(s.source, s.label, s.defect_id) for s in review.shapes] == [
        ("machine", new_class, first.id),
        ("operator", "hole", None),
    ]
    assert (review.shapes[1].x, review.shapes[1].y, review.shapes[1].w, review.shapes[1].h) == (
        10,
        12,
        30,
        20,
    )


def test_box_outside_the_frame_is_one_line_and_nothing_is_written(own_db: SampleDb, monkeypatch) -> None:
    frame_id = _defect_frame(own_db)
    at = app_test(settings(own_db), monkeypatch, SPOTS, frame=str(frame_id))
    at.text_input(key=f"s_new_box_{frame_id}").input("600,500,40,40")  # the frame is 612x512
    at.button(key=f"s_add_{frame_id}").click().run()
    at.text_input(key="f_operator").input("Ana Lopes")
    next(b for b in at.button if b.label == "Record decision").click().run()
    assert_clean(at)
    errors = [plain(e.value) for e in at.error]
    assert errors == [f"frame {frame_id}: box 600,500,40,40 reaches outside the frame (612x512 px)"]
    assert own_db.store.reviews(frame_id) == []
    at.text_input(key=f"s_new_box_{frame_id}").input("1,2,3")  # not a box at all: refused when added
    at.button(key=f"s_add_{frame_id}").click().run()
    assert any("expected X,Y,W,H" in plain(e.value) for e in at.error)


def test_override_with_a_reason_and_a_frame_whose_image_is_gone(own_db: SampleDb, monkeypatch) -> None:
    at = app_test(settings(own_db), monkeypatch, SPOTS, frame=str(own_db.gone_id))
    assert_clean(at)
    assert any("image file is gone" in plain(w.value) for w in at.warning)
    at.radio(key=f"f_decision_{own_db.gone_id}").set_value("good")
    at.text_input(key="f_operator").input("Ana Lopes")
    at.text_area(key=f"f_comment_{own_db.gone_id}").input("lint on the lens")
    next(b for b in at.button if b.label == "Record decision").click().run()
    assert_clean(at)
    review = own_db.store.reviews(own_db.gone_id)[-1]
    assert (review.decision, review.comment, review.shapes) == ("good", "lint on the lens", [])


def test_hot_spots_of_a_frame_outside_the_roots_are_refused(sample: SampleDb, monkeypatch) -> None:
    at = app_test(settings(sample), monkeypatch, SPOTS, frame=str(sample.outside_id))
    assert_clean(at)
    assert any("refused, not under a configured image root" in plain(e.value) for e in at.error)
    assert not at.get("image")


def test_runs_page_shows_who_promoted_which_model_version(tmp_path, monkeypatch) -> None:
    from oringscan.db import InspectionStore

    url = f"sqlite:///{(tmp_path / 'empty.db').as_posix()}"
    store = InspectionStore(url)
    at = app_test(DashboardSettings(url, [tmp_path]), monkeypatch, "views/runs.py")
    assert_clean(at)
    assert not at.dataframe  # nothing promoted, no runs: no table
    store.record_promotion("model1", "promote", "v0002", "v0001", "anna", "fewer false rejects")
    store.record_promotion("model1", "rollback", "v0001", "v0002", "bob", "line 2 complaints")
    store.dispose()
    at.run()
    assert_clean(at)
    table = at.dataframe[0].value
    assert table[["action", "from", "to", "operator"]].values.tolist() == [
        ["rollback", "v0002", "v0001", "bob"],
        ["promote", "v0001", "v0002", "anna"],
    ]


def test_a_box_or_lasso_drawn_on_the_frame_fills_the_mark_fields() -> None:
    from oringscan.dashboard.drawing import mark_from_selection
    from oringscan.review.shapes import parse_box, parse_polygon

    box = {"xref": "x", "yref": "y", "x": [121.9, 243.8], "y": [226.7, 153.6]}
    assert mark_from_selection({"box": [box], "lasso": []}, 612, 512) == ("121,153,123,74", "")
    # Dragged past the picture's edge: clipped to the frame, so it passes the review's checks.
    wide = {"x": [-20.0, 700.0], "y": [500.2, 530.0]}
    text, _ = mark_from_selection({"box": [box, wide]}, 612, 512)  # the newest box counts
    assert text == "0,500,612,12" and parse_box(text) == (0, 500, 612, 12)
    lasso = {"x": [10.04, 40.0, 30.0, 650.0], "y": [10.0, 12.0, 35.5, -3.0]}
    assert mark_from_selection({"box": [], "lasso": [lasso]}, 612, 512) == ("", "10,10 40,12 30,35.5 612,0")
    assert len(parse_polygon(mark_from_selection({"lasso": [lasso]}, 612, 512)[1])) == 4
    for nothing in (None, {}, {"box": [], "lasso": []}, {"box": [{"x": [5.0, 5.0], "y": [1.0, 9.0]}]}):
        assert mark_from_selection(nothing, 612, 512) is None


def test_the_frame_to_draw_on_is_shown_with_the_machine_defects(sample: SampleDb, monkeypatch) -> None:
    frame_id = _defect_frame(sample)
    at = app_test(settings(sample), monkeypatch, SPOTS, frame=str(frame_id))
    assert_clean(at)
    charts = at.get("plotly_chart")
    assert len(charts) == 1
    figure = json.loads(charts[0].proto.spec)
    assert figure["layout"]["dragmode"] == "select"
    assert figure["layout"]["images"][0]["source"].startswith("data:image/jpeg;base64,")
    assert figure["layout"]["xaxis"]["range"] == [0, 612] and figure["layout"]["yaxis"]["range"] == [512, 0]
    defects = sample.store.frame_detail(frame_id).defects
    assert len(figure["layout"]["shapes"]) == len(defects)
    gone = app_test(settings(sample), monkeypatch, SPOTS, frame=str(sample.gone_id))
    assert not gone.get("plotly_chart")  # no picture, nothing to draw on: the typed fields stay
