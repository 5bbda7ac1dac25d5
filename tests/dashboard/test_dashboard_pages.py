"""Every dashboard page in Streamlit's AppTest, against real SQLite databases filled through the DB layer."""

from __future__ import annotations

import io
import re

import pandas as pd
import pytest
from support.dashboard import SampleDb, app_test, assert_clean, make_sample_db

from oringscan.dashboard.page_queue import QueueQuery, queue_csv
from oringscan.dashboard.settings import DashboardSettings
from oringscan.db import REVIEW_VERDICTS, InspectionStore

QUEUE, FRAME, OVERVIEW, RUNS = (
    "views/review_queue.py",
    "views/frame_view.py",
    "views/overview.py",
    "views/runs.py",
)


def plain(markdown: str) -> str:
    """The text a markdown source shows (the dashboard escapes every punctuation character)."""
    return re.sub(r"\\(.)", r"\1", markdown)


@pytest.fixture(scope="session")
def sample(tmp_path_factory: pytest.TempPathFactory) -> SampleDb:
    """Read-only for the tests that use it (decisions are made in a database of their own)."""
    return make_sample_db(tmp_path_factory.mktemp("dash"))


@pytest.fixture()
def own_db(tmp_path) -> SampleDb:
    return make_sample_db(tmp_path, n_frames=24, seed=3)


def _queue_table(at) -> pd.DataFrame:
    return at.dataframe[0].value


def _first_defect_frame(sample: SampleDb) -> int:
    page = sample.store.frames(verdict="defect", order="worst", limit=1)
    assert page.items and page.items[0].n_defects > 0
    return page.items[0].id


# -- review queue ---------------------------------------------------------------------------------


def test_queue_lists_unreviewed_flagged_frames_newest_first(sample: SampleDb, monkeypatch) -> None:
    at = app_test(sample.settings(page_size=10), monkeypatch)
    assert_clean(at)
    expected = sample.store.review_queue(limit=10)
    assert at.title[0].value == "Review queue"
    assert at.metric[0].value == f"{expected.total:,}"
    table = _queue_table(at)
    assert table["frame"].tolist() == [r.id for r in expected.items]
    assert set(table["verdict"]) <= set(REVIEW_VERDICTS)
    assert (table["reviewed as"] == "").all()
    assert len(table) == 10 < expected.total  # one page, not everything


def test_queue_filters_order_and_pages_in_sql(sample: SampleDb, monkeypatch) -> None:
    at = app_test(sample.settings(page_size=5), monkeypatch)
    at.multiselect(key="q_verdicts").select("defect").run()
    at.radio(key="q_order").set_value("worst").run()
    assert_clean(at)
    first = _queue_table(at)
    assert set(first["verdict"]) == {"defect"}
    scores = first["worst defect score"].tolist()
    assert scores == sorted(scores, reverse=True)
    total = sample.store.review_queue(verdict="defect").total
    assert at.metric[0].value == f"{total:,}"
    at.number_input(key="q_page").set_value(2).run()
    second = _queue_table(at)
    assert set(second["frame"]).isdisjoint(first["frame"])
    expected = sample.store.review_queue(verdict="defect", order="worst", limit=5, offset=5)
    assert second["frame"].tolist() == [r.id for r in expected.items]
    # A new filter starts at its first page again.
    at.multiselect(key="q_types").select("model2").run()
    assert at.number_input(key="q_page").value == 1
    assert set(_queue_table(at)["type"]) == {"model2"}


def test_queue_include_reviewed_and_run_filter(sample: SampleDb, monkeypatch) -> None:
    reviewed = sample.store.frames(reviewed=True, verdict=list(REVIEW_VERDICTS), limit=1).items[0]
    run = sample.store.run(reviewed.run_id)
    at = app_test(sample.settings(page_size=200), monkeypatch)
    at.toggle(key="q_reviewed").set_value(True).run()
    at.multiselect(key="q_runs").select(run.id).run()
    assert_clean(at)
    table = _queue_table(at)
    assert set(table["run"]) == {run.id}
    flagged = sample.store.frames(run_id=run.id, verdict=list(REVIEW_VERDICTS), limit=None)
    assert sorted(table["frame"]) == sorted(r.id for r in flagged.items)
    assert (table["reviewed as"] != "").any()


def test_queue_opens_a_frame(sample: SampleDb, monkeypatch) -> None:
    at = app_test(sample.settings(), monkeypatch)
    first_id = _queue_table(at)["frame"].iloc[1]
    at.selectbox(key="q_open").select(first_id)
    at.button(key="q_open_button").click().run()
    assert_clean(at)
    assert at.title[0].value.startswith(f"Frame #{first_id}:")
    assert at.query_params["frame"] == [str(first_id)] or at.query_params["frame"] == str(first_id)


def test_queue_csv_holds_every_row_of_the_filter(sample: SampleDb) -> None:
    query = QueueQuery(types=["model1"], verdicts=[], run_ids=[], order="newest")
    table = pd.read_csv(io.BytesIO(queue_csv(sample.store, query)))
    expected = sample.store.review_queue(oring_type="model1", limit=None)
    assert table["frame"].tolist() == [r.id for r in expected.items]
    assert set(table["type"]) == {"model1"}
    assert {"image", "screening score", "threshold", "reasons"} <= set(table.columns)
    assert table["image"].iloc[0] == expected.items[0].image  # the full path, for finding the file


# -- frame view -----------------------------------------------------------------------------------


def test_frame_view_shows_picture_crops_measurements_and_reasons(sample: SampleDb, monkeypatch) -> None:
    frame_id = _first_defect_frame(sample)
    detail = sample.store.frame_detail(frame_id)
    at = app_test(sample.settings(), monkeypatch, FRAME, frame=str(frame_id))
    assert_clean(at)
    assert at.title[0].value == f"Frame #{frame_id}: defect"
    images = at.get("image")
    assert len(images) == 1 + len(detail.defects)  # the frame and one zoomed crop per defect
    markdown = " ".join(plain(m.value) for m in at.markdown)
    for reason in detail.frame.reasons:
        assert reason in markdown
    frames = [df.value for df in at.dataframe]
    measurement = next(df for df in frames if "metric" in getattr(df, "columns", []))
    assert measurement["metric"].tolist() == [m.metric for m in detail.measurements]
    defects = next(df for df in frames if "class" in getattr(df, "columns", []))
    assert defects["class"].tolist() == [d.label for d in detail.defects]
    # Every overlay layer can be switched on without trouble.
    for key in ("f_heat", "f_geometry"):
        at.toggle(key=key).set_value(True)
    at.toggle(key="f_masks").set_value(False)
    at.run()
    assert_clean(at)
    assert len(at.get("image")) == 1 + len(detail.defects)


def test_frame_view_fired_rules_for_rework(sample: SampleDb, monkeypatch) -> None:
    frame = sample.store.frames(verdict="rework", limit=1).items[0]
    detail = sample.store.frame_detail(frame.id)
    fired = [m.metric for m in detail.measurements if m.fired]
    assert fired
    at = app_test(sample.settings(), monkeypatch, FRAME, frame=str(frame.id))
    assert_clean(at)
    assert any(plain(c.value) == f"Fired rules: {', '.join(fired)}" for c in at.caption)


@pytest.mark.parametrize("verdict", ["good", "error", "suspect"])
def test_frame_view_of_every_other_verdict(sample: SampleDb, monkeypatch, verdict: str) -> None:
    frame = sample.store.frames(verdict=verdict, order="oldest", limit=1).items[0]  # not the broken extras
    at = app_test(sample.settings(), monkeypatch, FRAME, frame=str(frame.id))
    assert_clean(at)
    assert at.title[0].value == f"Frame #{frame.id}: {verdict}"
    assert len(at.get("image")) == 1
    if verdict == "error":  # the reason is shown as the page's one error line
        assert [plain(e.value) for e in at.error] == [frame.error] and "no ring found" in frame.error
    else:
        assert not at.error


def test_frame_whose_image_is_gone_still_shows_its_record(sample: SampleDb, monkeypatch) -> None:
    at = app_test(sample.settings(), monkeypatch, FRAME, frame=str(sample.gone_id))
    assert_clean(at)
    assert any("image file is gone" in plain(w.value) for w in at.warning)
    assert not at.get("image")
    assert at.button[0].label == "Record decision"  # a person can still decide


def test_frame_outside_the_image_roots_is_refused(sample: SampleDb, monkeypatch) -> None:
    at = app_test(sample.settings(), monkeypatch, FRAME, frame=str(sample.outside_id))
    assert_clean(at)
    errors = [plain(e.value) for e in at.error]
    assert any("refused, not under a configured image root" in e and "secret.png" in e for e in errors)
    assert not at.get("image")


@pytest.mark.parametrize(
    "value, message",
    [("abc", "not a frame number"), ("1 OR 1=1", "not a frame number"), ("999999", "not in the database")],
)
def test_frame_view_bad_frame_numbers(sample: SampleDb, monkeypatch, value: str, message: str) -> None:
    at = app_test(sample.settings(), monkeypatch, FRAME, frame=value)
    assert_clean(at)
    assert any(message in plain(e.value) for e in at.error)


def test_decisions_are_appended_with_history(own_db: SampleDb, monkeypatch) -> None:
    frame = own_db.store.review_queue(limit=1).items[0]
    at = app_test(own_db.settings(), monkeypatch, FRAME, frame=str(frame.id))
    form_button = at.button[0]
    form_button.click().run()  # no operator name: refused, nothing written
    assert any("Enter your name" in e.value for e in at.error)
    assert own_db.store.reviews(frame.id) == []

    at.radio(key=f"f_decision_{frame.id}").set_value("good")
    at.text_input(key="f_operator").input("Ana Lopes")
    at.text_area(key=f"f_comment_{frame.id}").input("lint on the belt, part is fine")
    at.button[0].click().run()
    assert_clean(at)
    assert any(s.value.startswith("Recorded: Override to good by Ana Lopes") for s in at.success)
    at.radio(key=f"f_decision_{frame.id}").set_value("defect")
    at.button[0].click().run()

    reviews = own_db.store.reviews(frame.id)
    assert [(r.operator, r.decision, r.comment) for r in reviews] == [
        ("Ana Lopes", "good", "lint on the belt, part is fine"),
        ("Ana Lopes", "defect", None),  # the comment box was cleared after the first decision
    ]
    assert reviews[0].created_at <= reviews[1].created_at
    history = next(df.value for df in at.dataframe if "operator" in df.value.columns)
    assert history["decision"].tolist() == ["defect", "good"]  # newest first, both kept
    assert frame.id not in [r.id for r in own_db.store.review_queue(limit=None).items]


# -- overview and runs ----------------------------------------------------------------------------


def test_overview_numbers_match_the_database(sample: SampleDb, monkeypatch) -> None:
    at = app_test(sample.settings(), monkeypatch, OVERVIEW)
    assert_clean(at)
    stats = sample.store.stats()
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Frames"] == f"{stats.n_frames:,}"
    judged = stats.n_frames - stats.verdicts["error"]
    assert metrics["Yield (good / judged)"] == f"{100 * stats.verdicts['good'] / judged:.1f} %"
    assert metrics["Defect"] == f"{stats.verdicts['defect']:,}"
    assert len(at.get("vega_lite_chart")) >= 5  # yield, verdicts, classes, scores, reviews
    at.multiselect(key="o_types").select("model2").run()
    assert_clean(at)
    assert {m.label: m.value for m in at.metric}[
        "Frames"
    ] == f"{sample.store.stats(oring_type='model2').n_frames:,}"


def test_runs_page_lists_runs_timings_and_models(sample: SampleDb, monkeypatch) -> None:
    at = app_test(sample.settings(), monkeypatch, RUNS)
    assert_clean(at)
    runs = sample.store.runs(limit=50)
    tables = [df.value for df in at.dataframe]
    listing = tables[0]
    assert listing["run"].tolist() == [r.id for r in runs]
    assert listing["frames"].tolist() == [r.n_frames for r in runs]
    timings = next(t for t in tables if "stage" in t.columns)
    assert {"read", "screening", "segmentation", "total"} <= set(timings["stage"])
    assert any("maskrcnn" in str(v) for t in tables if "version" in t.columns for v in t["version"])


# -- an empty database, and no settings -----------------------------------------------------------


@pytest.mark.parametrize("page", [QUEUE, FRAME, OVERVIEW, RUNS])
def test_every_page_on_an_empty_database(tmp_path, monkeypatch, page: str) -> None:
    url = f"sqlite:///{(tmp_path / 'empty.db').as_posix()}"
    InspectionStore(url).dispose()
    at = app_test(DashboardSettings(url, [tmp_path]), monkeypatch, page)
    assert_clean(at)
    assert not at.error
    assert at.info, "an empty database should say what to do"


def test_without_settings_the_page_says_how_to_start(monkeypatch) -> None:
    monkeypatch.delenv("ORINGSCAN_DASHBOARD", raising=False)
    from streamlit.testing.v1 import AppTest

    from oringscan.dashboard.server import APP_SCRIPT

    at = AppTest.from_file(str(APP_SCRIPT), default_timeout=30).run()
    assert_clean(at)
    assert "oringscan dashboard" in at.error[0].value


def test_a_file_that_is_not_a_database_gets_one_line(tmp_path, monkeypatch) -> None:
    broken = tmp_path / "inspections.db"
    broken.write_bytes(b"this is not an SQLite file" * 100)
    at = app_test(DashboardSettings(f"sqlite:///{broken.as_posix()}", [tmp_path]), monkeypatch)
    assert_clean(at)
    assert len(at.error) == 1 and "inspections.db" in plain(at.error[0].value)
    assert "\n" not in plain(at.error[0].value).strip()


@pytest.mark.postgres
def test_every_page_on_postgresql(tmp_path, monkeypatch) -> None:
    """The same pages on PostgreSQL (a database of its own, dropped afterwards)."""
    import os
    import uuid

    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    server = os.environ.get("ORINGSCAN_TEST_PG_URL")
    if not server:
        pytest.skip("ORINGSCAN_TEST_PG_URL is not set (start PostgreSQL as .ci/run does)")
    name = f"oringscan_dash_{uuid.uuid4().hex[:8]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))  # a generated name, not user text
    url = make_url(server).set(database=name).render_as_string(hide_password=False)
    try:
        from oringscan.testing.sample_db import fill_sample_database

        store = InspectionStore(url)
        root = tmp_path / "pg frames"
        fill_sample_database(
            store,
            root,
            30,
            seed=2,
            n_images=3,
            shape=(512, 612),
            days=3,
            verdict_shares={"good": 0.4, "defect": 0.3, "suspect": 0.15, "rework": 0.15},
        )
        settings = DashboardSettings(url, [root])
        at = app_test(settings, monkeypatch)
        assert_clean(at)
        assert at.metric[0].value == f"{store.review_queue().total:,}"
        frame = store.frames(verdict="defect", limit=1).items[0]
        for page, query in ((FRAME, {"frame": str(frame.id)}), (OVERVIEW, {}), (RUNS, {})):
            at = app_test(settings, monkeypatch, page, **query)
            assert_clean(at)
            assert not at.error
        store.dispose()
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def test_queue_date_filter_takes_whole_utc_days(sample: SampleDb, monkeypatch) -> None:
    from datetime import timedelta

    first = sample.store.frames(order="oldest", limit=1).items[0].inspected_at.date()
    at = app_test(sample.settings(page_size=200), monkeypatch)
    at.date_input(key="q_dates").set_value((first, first + timedelta(days=1))).run()
    assert_clean(at)
    table = _queue_table(at)
    days = {d[:10] for d in table["inspected (UTC)"]}
    assert days and days <= {str(first), str(first + timedelta(days=1))}
    expected = sample.store.review_queue(since=first, until=first + timedelta(days=2), limit=None)
    assert sorted(table["frame"]) == sorted(r.id for r in expected.items)
