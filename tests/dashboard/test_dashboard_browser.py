"""End to end in a real headless Chromium: queue -> frame -> decision -> row in the database."""

from __future__ import annotations

import re

import pytest
from support.dashboard import make_sample_db

from oringscan.dashboard.browser import CHROMIUM_ENV, chromium, chromium_path, served_dashboard, wait_for_page
from oringscan.db.users import add_user

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def browser_executable():
    path = chromium_path()
    if path is None:
        pytest.skip(f"no chromium binary (install Debian's `chromium` package or set {CHROMIUM_ENV})")
    return path


def test_review_a_frame_in_chromium(tmp_path, browser_executable) -> None:
    db = make_sample_db(tmp_path, n_frames=20, seed=5, with_broken=False)
    add_user(db.store, "Browser Tester", "operator", "tester password")
    waiting_before = db.store.review_queue(limit=None).total
    with served_dashboard(db.url, db.root, db.root) as base_url, chromium(browser_executable) as browser:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(base_url + "/")
        wait_for_page(page, "oringscan review")  # login is on by default: the form comes first
        page.get_by_role("textbox", name="Name").fill("Browser Tester")
        page.get_by_role("textbox", name="Password").fill("tester password")
        page.get_by_role("button", name="Log in").click()
        wait_for_page(page, "Review queue")
        assert page.get_by_test_id("stMetricValue").first.inner_text().strip() == f"{waiting_before:,}"

        page.get_by_role("button", name="Open frame").click()
        heading = page.get_by_role("heading", name=re.compile(r"^Frame #\d+"))
        heading.first.wait_for(timeout=60_000)
        frame_id = int(re.search(r"#(\d+)", heading.first.inner_text()).group(1))
        assert f"frame={frame_id}" in page.url
        page.get_by_role("img").first.wait_for(timeout=30_000)  # the frame itself is shown

        page.get_by_text("Rework", exact=True).click()
        assert page.get_by_label("Operator name").count() == 0  # the decision is the logged-in user's
        page.get_by_label("Comment").fill("flash along the outer edge")
        page.get_by_role("button", name="Record decision").click()
        page.get_by_text("Recorded: Rework by Browser Tester").wait_for(timeout=60_000)

    reviews = db.store.reviews(frame_id)
    assert [(r.operator, r.decision, r.comment) for r in reviews] == [
        ("Browser Tester", "rework", "flash along the outer edge")
    ]
    assert db.store.review_queue(limit=None).total == waiting_before - 1
