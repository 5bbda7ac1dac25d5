"""Image serving (roots only), overlay drawing, settings and the `oringscan dashboard` command."""

from __future__ import annotations

import os

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from oringscan.cli.main import cli
from oringscan.config import Config
from oringscan.dashboard.images import ImageRefused, ImageRoots, ImageUnavailable, encode_jpeg
from oringscan.dashboard.overlays import (
    DefectMark,
    OverlayLayers,
    TileHeat,
    class_color,
    defect_crop,
    heat_from_tiles,
    render_overlay,
    ring_geometry,
)
from oringscan.dashboard.server import check_database_url, is_loopback, streamlit_options
from oringscan.dashboard.settings import DashboardSettings
from oringscan.errors import ConfigError
from oringscan.frames import write_frame
from oringscan.types import Instance

# -- which files may be shown ---------------------------------------------------------------------


@pytest.fixture()
def roots(tmp_path):
    allowed = tmp_path / "plant data" / "images"
    allowed.mkdir(parents=True)
    outside = tmp_path / "private"
    outside.mkdir()
    write_frame(allowed / "ring 1.png", np.full((20, 30), 77, np.uint8))
    write_frame(outside / "secret.png", np.full((20, 30), 1, np.uint8))
    return ImageRoots.of([tmp_path / "plant data"]), allowed, outside


def test_an_image_under_a_root_is_read(roots) -> None:
    image_roots, allowed, _ = roots
    gray = image_roots.read(allowed / "ring 1.png")
    assert gray.shape == (20, 30) and int(gray[0, 0]) == 77
    assert image_roots.read(str(allowed / "ring 1.png"), color=True).shape == (20, 30, 3)


@pytest.mark.parametrize(
    "make_path",
    [
        lambda allowed, outside: outside / "secret.png",
        lambda allowed, outside: allowed / ".." / ".." / "private" / "secret.png",  # climbing out with ..
        lambda allowed, outside: "/etc/passwd",
    ],
)
def test_paths_outside_the_roots_are_refused(roots, make_path) -> None:
    image_roots, allowed, outside = roots
    with pytest.raises(ImageRefused, match="refused, not under a configured image root"):
        image_roots.read(make_path(allowed, outside))


@pytest.mark.skipif(os.name == "nt", reason="symlinks need privileges on Windows")
def test_a_symlink_leading_out_of_a_root_is_refused(roots) -> None:
    image_roots, allowed, outside = roots
    link = allowed / "looks harmless.png"
    link.symlink_to(outside / "secret.png")
    with pytest.raises(ImageRefused):
        image_roots.read(link)


def test_relative_paths_are_looked_up_under_the_roots(roots) -> None:
    image_roots, allowed, _ = roots
    assert image_roots.allowed("images/ring 1.png") == (allowed / "ring 1.png").resolve()
    with pytest.raises(ImageRefused):
        image_roots.allowed("../private/secret.png")


def test_missing_and_corrupt_files_get_one_line_each(roots) -> None:
    image_roots, allowed, _ = roots
    with pytest.raises(ImageUnavailable, match="image file is gone"):
        image_roots.read(allowed / "deleted.bmp")
    (allowed / "broken.bmp").write_bytes(b"BM not really")
    with pytest.raises(ImageUnavailable, match="cannot be decoded"):
        image_roots.read(allowed / "broken.bmp")


def test_no_roots_means_nothing_is_served(roots) -> None:
    _, allowed, _ = roots
    with pytest.raises(ImageRefused, match=r"\(none configured\)"):
        ImageRoots.of([]).read(allowed / "ring 1.png")


# -- drawing --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ring_frame():
    gray = np.full((1024, 1224), 18, np.uint8)
    cv2.circle(gray, (612, 512), 325, 190, -1)
    cv2.circle(gray, (615, 510), 195, 18, -1)
    mask = np.zeros((12, 16), bool)
    mask[2:10, 3:13] = True
    pit = Instance("pit", 0.91, mask, (900, 500))
    return gray, DefectMark("pit", 0.91, pit.bbox, pit.rle(1024, 1224)), pit


def test_masks_from_rle_are_painted_where_the_defect_is(ring_frame) -> None:
    gray, mark, pit = ring_frame
    plain, _ = render_overlay(gray, [], OverlayLayers(masks=False, boxes=False))
    painted, notes = render_overlay(gray, [mark], OverlayLayers(masks=True, boxes=False))
    assert notes == []
    changed = np.any(painted != plain, axis=2)
    ys, xs = np.nonzero(changed)
    x, y, w, h = pit.bbox  # frame is shown at full size (1224 < display width)
    assert xs.min() >= x - 1 and xs.max() <= x + w and ys.min() >= y - 1 and ys.max() <= y + h
    assert changed[y + h // 2, x + w // 2]
    assert np.allclose(
        painted[y + h // 2, x + w // 2],
        0.45 * plain[y + h // 2, x + w // 2] + 0.55 * np.array(class_color("pit")),
        atol=2,
    )


def test_boxes_carry_class_and_score(ring_frame) -> None:
    gray, mark, pit = ring_frame
    boxed, _ = render_overlay(gray, [mark], OverlayLayers(masks=False, boxes=True))
    x, y, w, h = pit.bbox
    assert tuple(boxed[y + h // 2, x - 2]) == class_color("pit")  # left edge of the box
    label_area = boxed[max(0, y - 30) : y - 3, x - 2 : x + 80]
    assert np.any(np.all(label_area == class_color("pit"), axis=2))  # the label background


def test_big_frames_are_drawn_at_display_size(ring_frame) -> None:
    gray, mark, _ = ring_frame
    big = cv2.resize(gray, (2448, 2048))
    canvas, _ = render_overlay(big, [mark], OverlayLayers(), max_width=1000)
    assert canvas.shape[1:] == (1000, 3) and abs(canvas.shape[0] - 2048 * 1000 / 2448) <= 1


def test_heat_from_tiles_is_the_worst_covering_tile_over_the_threshold() -> None:
    tiles = [TileHeat(0, 0, 100, 100, 0.5), TileHeat(50, 0, 100, 100, 2.0)]
    heat = heat_from_tiles((100, 150), tiles, threshold=1.0, scale=1.0)
    assert (
        heat[10, 10] == pytest.approx(0.5)
        and heat[10, 75] == pytest.approx(2.0)
        and heat[10, 140] == pytest.approx(2.0)
    )


def test_heatmap_layer_from_tiles_or_a_saved_file(ring_frame, tmp_path) -> None:
    gray, _, _ = ring_frame
    layers = OverlayLayers(masks=False, boxes=False, heatmap=True)
    none, notes = render_overlay(gray, [], layers)
    assert notes == ["no screening heatmap stored for this frame"]
    tiles = [TileHeat(800, 400, 300, 300, 3.0)]
    hot, _ = render_overlay(gray, [], layers, tiles=tiles, threshold=1.5)
    assert np.any(hot[500, 900] != none[500, 900]) and np.all(hot[100, 100] == none[100, 100])
    saved = np.zeros((512, 612), np.uint8)
    saved[100:200, 100:200] = 255
    write_frame(tmp_path / "x_heat.png", saved)
    from_file, notes = render_overlay(gray, [], layers, heatmap_file=tmp_path / "x_heat.png")
    assert (
        notes == []
        and np.any(from_file[300, 300] != none[300, 300])
        and np.all(from_file[800, 800] == none[800, 800])
    )


def test_ring_geometry_finds_both_edges(ring_frame) -> None:
    gray, _, _ = ring_frame
    geometry = ring_geometry(gray)
    assert geometry.outer.r == pytest.approx(325, abs=2) and geometry.inner.r == pytest.approx(195, abs=2)
    assert (geometry.inner.cx, geometry.inner.cy) == pytest.approx((615, 510), abs=1.5)
    canvas, notes = render_overlay(
        gray, [], OverlayLayers(masks=False, boxes=False, geometry=True), geometry=geometry
    )
    assert notes == [] and np.any(canvas != cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR))


def test_no_ring_means_a_note_not_a_crash() -> None:
    dark = np.full((200, 240), 18, np.uint8)
    _, notes = render_overlay(dark, [], OverlayLayers(geometry=True), geometry=ring_geometry(dark))
    assert notes and notes[0].startswith("ring geometry could not be found")


def test_defect_crop_zooms_tiny_defects(ring_frame) -> None:
    gray, mark, _ = ring_frame
    crop = defect_crop(gray, mark, size=240)
    assert max(crop.shape[:2]) == 240
    assert np.any(np.all(crop == class_color("pit"), axis=2))  # outline drawn
    assert encode_jpeg(crop)[:2] == b"\xff\xd8"


def test_a_broken_rle_is_reported_not_fatal(ring_frame) -> None:
    gray, _, _ = ring_frame
    bad = DefectMark("pit", 0.5, (10, 10, 5, 5), {"size": [1024, 1224], "counts": "!!not rle"})
    _, notes = render_overlay(gray, [bad], OverlayLayers())
    assert notes == ["mask of a pit defect could not be decoded"]


# -- settings, server options, CLI ----------------------------------------------------------------


def test_settings_travel_as_json_with_all_roots(tmp_path) -> None:
    config = Config()
    config.dashboard.image_roots = [tmp_path / "extra root"]
    settings = DashboardSettings.from_config(config, "sqlite:///x.db", tmp_path / "data", tmp_path / "out")
    assert settings.image_roots == [tmp_path / "extra root", tmp_path / "data", tmp_path / "out"]
    assert DashboardSettings.from_json(settings.to_json()) == settings
    with pytest.raises(ConfigError, match="ORINGSCAN_DASHBOARD"):
        DashboardSettings.from_json("{not json")


def test_server_binds_loopback_without_telemetry() -> None:
    options = streamlit_options("127.0.0.1", 8600)
    assert options["server_address"] == "127.0.0.1" and options["server_port"] == 8600
    assert options["browser_gatherUsageStats"] is False and options["server_enableStaticServing"] is False
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.1.2.3")


def test_cli_help_and_one_line_errors(tmp_path) -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["dashboard", "--help"])
    assert result.exit_code == 0
    for option in ("--db", "--host", "--port", "127.0.0.1"):
        assert option in result.output
    missing = tmp_path / "no such.db"
    result = runner.invoke(cli, ["dashboard", "--db", f"sqlite:///{missing.as_posix()}"])
    assert result.exit_code != 0
    assert "no inspection database here" in result.output and len(result.output.strip().splitlines()) == 1
    with pytest.raises(ConfigError, match="not a database URL"):
        check_database_url("no scheme at all")
