"""The review loop in a real headless Chromium: queue -> hot spots -> mark -> export -> preprocess."""

from __future__ import annotations

import json
import re

import pytest
from click.testing import CliRunner
from support.dashboard import SMALL_FRAME, make_sample_db

from oringscan.cli.main import cli
from oringscan.dashboard.browser import CHROMIUM_ENV, chromium, chromium_path, served_dashboard, wait_for_page
from oringscan.db.users import add_user

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CONFIG = """
[classes]
names = ["defect", "hole"]

[classes.label_map]
hole = "hole"
pit = "defect"
scratch = "defect"
bite = "defect"
bulge = "defect"
particle = "defect"

[frame]
accept_any_size = true
"""


@pytest.fixture(scope="module")
def browser_executable():
    path = chromium_path()
    if path is None:
        pytest.skip(f"no chromium binary (install Debian's `chromium` package or set {CHROMIUM_ENV})")
    return path


def _drag_box(page, start: tuple[float, float], end: tuple[float, float]) -> tuple[int, ...]:
    """Drag a box on the hot-spots page's frame with the mouse (fractions of the picture); returns
    the box the page filled in (X, Y, W, H in frame px)."""
    area = page.locator(".js-plotly-plot .nsewdrag").first
    area.scroll_into_view_if_needed()
    area.wait_for(timeout=60_000)
    page.wait_for_timeout(500)  # let the figure settle after scrolling
    bounds = area.bounding_box()
    assert bounds is not None

    def at(fx: float, fy: float) -> tuple[float, float]:
        return bounds["x"] + fx * bounds["width"], bounds["y"] + fy * bounds["height"]

    page.mouse.move(*at(*start))
    page.mouse.down()
    page.mouse.move(*at((start[0] + end[0]) / 2, (start[1] + end[1]) / 2), steps=4)
    page.mouse.move(*at(*end), steps=4)
    page.mouse.up()
    from playwright.sync_api import expect

    field = page.get_by_label("Box X,Y,W,H (frame px)")
    expect(field).to_have_value(re.compile(r"^\d+,\d+,\d+,\d+$"), timeout=60_000)
    return tuple(int(v) for v in field.input_value().split(","))


def test_mark_a_defect_in_chromium_then_export_and_preprocess(tmp_path, browser_executable) -> None:
    db = make_sample_db(tmp_path, n_frames=20, seed=5, with_broken=False)
    add_user(db.store, "Browser Tester", "operator", "tester password")
    config = tmp_path / "plant.toml"
    config.write_text(CONFIG, encoding="utf-8")
    worst = db.store.review_queue(order="worst", limit=1).items[0]
    assert worst.verdict == "defect" and worst.n_defects > 0
    with (
        served_dashboard(db.url, db.root, db.root, config=config) as base_url,
        chromium(browser_executable) as browser,
    ):
        page = browser.new_page(viewport={"width": 1500, "height": 1100})
        page.goto(base_url + "/")
        wait_for_page(page, "oringscan review")
        page.get_by_role("textbox", name="Name").fill("Browser Tester")
        page.get_by_role("textbox", name="Password").fill("tester password")
        page.get_by_role("button", name="Log in").click()
        wait_for_page(page, "Review queue")
        page.get_by_text("Worst first").click()
        page.wait_for_timeout(1500)
        wait_for_page(page, "Review queue")  # the worst frame is now the first row
        page.get_by_role("button", name="Open frame").click()  # one step to the hot spots
        page.get_by_role("heading", name=f"Frame #{worst.id}: defect").first.wait_for(timeout=60_000)
        wait_for_page(page, f"Frame #{worst.id}")
        assert "/spots" in page.url and f"frame={worst.id}" in page.url
        page.get_by_text("same place on good frame").first.wait_for(timeout=30_000)

        # A new defect's box drawn with the mouse on the frame (a Plotly box selection in frame px).
        drawn = _drag_box(page, start=(0.10, 0.20), end=(0.30, 0.35))
        height, width = SMALL_FRAME
        expected = (0.10 * width, 0.20 * height, 0.20 * width, 0.15 * height)
        assert all(abs(a - b) <= 4 for a, b in zip(drawn, expected, strict=True)), (drawn, expected)
        page.get_by_role("button", name="Add mark").click()
        page.get_by_text("pending: defect box " + ",".join(map(str, drawn))).wait_for(timeout=60_000)
        page.get_by_role("button", name="Record decision").click()
        page.get_by_text(
            re.compile(r"Recorded: Confirm defect by Browser Tester .*defect\(s\) marked")
        ).wait_for(timeout=60_000)

    review = db.store.reviews(worst.id)[-1]
    assert (review.operator, review.decision) == ("Browser Tester", "defect")
    operator_marks = [(s.label, s.x, s.y, s.w, s.h) for s in review.shapes if s.source == "operator"]
    assert operator_marks == [("defect", *drawn)]
    assert len([s for s in review.shapes if s.source == "machine"]) == worst.n_defects

    data = tmp_path / "training set"
    out = CliRunner().invoke(
        cli,
        ["export", "reviews", "--db", db.url, "--data", str(data), "--config", str(config)],
        catch_exceptions=False,
    )
    assert out.exit_code == 0, out.output
    manifest = json.loads((data / "reviews_manifest.json").read_text(encoding="utf-8"))["frames"]
    entry = next(e for e in manifest.values() if e["frame_id"] == worst.id)
    label = json.loads((data / entry["label"]).read_text(encoding="utf-8"))
    kinds = sorted(s["shape_type"] for s in label["shapes"])
    assert kinds == sorted(["rectangle"] + ["mask"] * worst.n_defects)
    output = tmp_path / "output"
    out = CliRunner().invoke(
        cli,
        [
            "preprocess",
            "--model",
            worst.oring_type,
            "--data",
            str(data),
            "--output",
            str(output),
            "--config",
            str(config),
        ],
        catch_exceptions=False,
    )
    assert out.exit_code in (0, 3), out.output
    n_annotations = sum(  # a two-frame data set fills only some splits
        len(json.loads(f.read_text())["annotations"])
        for f in (output / worst.oring_type / "annotations").glob("*.json")
    )
    assert n_annotations >= 1 + worst.n_defects
