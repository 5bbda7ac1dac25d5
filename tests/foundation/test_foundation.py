"""Config, frame I/O, ring ROI and the tile grid: the pieces every stage stands on."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from oringscan.cli.main import cli
from oringscan.config import Config, TilingConfig, load_config
from oringscan.errors import ConfigError, FrameError
from oringscan.frames import iter_image_files, normalize_frame, read_frame, write_frame
from oringscan.roi import RoiStatus, find_ring, subtract_background
from oringscan.tiling import ring_tiles, tile_grid

H, W = 2048, 2448


def ring_image(
    cx: int = 1224, cy: int = 1024, r_out: int = 650, r_in: int = 390, ring: int = 170, belt: int = 18
) -> np.ndarray:
    img = np.full((H, W), belt, np.uint8)
    cv2.circle(img, (cx, cy), r_out, ring, -1)
    cv2.circle(img, (cx, cy), r_in, belt, -1)
    return img


# --- config -----------------------------------------------------------------------------------


def test_defaults_reproduce_the_seed():
    cfg = Config()
    assert cfg.types["model1"].good_folder == "model1good"
    assert cfg.types["model1"].defect_folder == "model1defect"
    assert cfg.types["model2"].good_folder == "good" and cfg.types["model2"].defect_folder == "notok"
    assert (cfg.tiling.tile_size, cfg.tiling.overlap) == (640, 100)
    assert (cfg.split.train, cfg.split.val, cfg.split.test, cfg.split.seed) == (0.70, 0.15, 0.15, 42)
    t = cfg.training
    assert (t.batch_size, t.epochs, t.patience, t.lr, t.trainable_backbone_layers, t.amp) == (
        4,
        50,
        10,
        0.005,
        3,
        True,
    )


def test_config_file_overrides_and_third_type(tmp_path: Path):
    path = tmp_path / "dir with spaces" / "plant.toml"
    path.parent.mkdir()
    path.write_text(
        '[types.model3]\ngood_folder = "m3 ok"\ndefect_folder = "m3_nok"\nmm_per_px = 0.02\n'
        '[tiling]\noverlap = 64\n[classes]\nnames = ["hole", "scratch"]\nlabel_map = { pit = "hole" }\n'
        'default_class = "scratch"\n'
    )
    cfg = load_config(path)
    assert list(cfg.types) == ["model3"]  # [types] replaces the list
    assert cfg.tiling.overlap == 64 and cfg.tiling.tile_size == 640
    assert cfg.classes.class_for("PIT ") == "hole"
    assert cfg.classes.class_for("cut") == "scratch"
    assert cfg.select_types(None) == ["model3"]
    with pytest.raises(ConfigError, match="unknown o-ring type 'model1'"):
        cfg.select_types("model1")


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("[tiling]\noverlap = 700\n", "overlap"),
        ("[split]\ntrain = 0.9\n", "sum to 1"),
        ("[tiling]\nbogus = 1\n", "bogus"),
        ("not = [toml", "not valid TOML"),
        ('[classes]\nlabel_map = { pit = "nothing" }\n', "unknown classes"),
    ],
)
def test_bad_config_names_file_and_field(tmp_path: Path, text: str, match: str):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match) as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_empty_default_class_means_skip(tmp_path: Path):
    path = tmp_path / "c.toml"
    path.write_text('[classes]\ndefault_class = ""\n')
    assert load_config(path).classes.class_for("anything") is None


def test_config_show_cli(tmp_path: Path):
    result = CliRunner().invoke(cli, ["config", "show", "--output", str(tmp_path / "out dir")])
    assert result.exit_code == 0, result.output
    assert 'good_folder = "model1good"' in result.output
    assert "inspections.db" in result.output
    bad = tmp_path / "bad.toml"
    bad.write_text("[tiling]\noverlap = 9999\n")
    result = CliRunner().invoke(cli, ["config", "show", "--config", str(bad)])
    assert result.exit_code != 0
    assert "bad.toml" in result.output and "Traceback" not in result.output


# --- frames -----------------------------------------------------------------------------------


def test_read_gray_colour_and_binned(tmp_path: Path):
    img = ring_image()
    gray_path = tmp_path / "a b" / "gray.bmp"
    write_frame(gray_path, img)
    loaded = read_frame(gray_path)
    assert loaded.image.shape == (H, W) and loaded.scale == 1.0
    np.testing.assert_array_equal(loaded.image, img)

    colour_path = tmp_path / "colour.bmp"
    write_frame(colour_path, cv2.cvtColor(img, cv2.COLOR_GRAY2BGR))
    colour = read_frame(colour_path)
    np.testing.assert_array_equal(colour.image, img)
    assert any("colour" in n for n in colour.notes)

    binned_path = tmp_path / "binned.bmp"
    write_frame(binned_path, cv2.resize(img, (W // 2, H // 2), interpolation=cv2.INTER_AREA))
    binned = read_frame(binned_path)
    assert binned.image.shape == (H, W) and binned.scale == 2.0


@pytest.mark.parametrize(
    "case", ["empty", "truncated", "directory", "missing", "text", "sixteen_bit", "odd_size", "garbage"]
)
def test_bad_frames_give_one_line(tmp_path: Path, case: str):
    path = tmp_path / "frame.bmp"
    if case == "empty":
        path.write_bytes(b"")
    elif case == "truncated":
        write_frame(path, ring_image())
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif case == "directory":
        path.mkdir()
    elif case == "text":
        path = tmp_path / "notes.txt"
        path.write_text("hello")
    elif case == "sixteen_bit":
        path = tmp_path / "deep.png"
        cv2.imwrite(str(path), (ring_image().astype(np.uint16) * 256))
    elif case == "odd_size":
        write_frame(path, np.zeros((1000, 1000), np.uint8))
    elif case == "garbage":
        path.write_bytes(b"BM" + b"\x00" * 100)
    with pytest.raises(FrameError) as info:
        read_frame(path)
    message = str(info.value)
    assert str(path) in message and "\n" not in message
    expected = {
        "empty": "empty",
        "truncated": "truncated",
        "directory": "directory",
        "missing": "not found",
        "text": "not an image",
        "sixteen_bit": "16-bit",
        "odd_size": "1000x1000",
        "garbage": "",
    }[case]
    assert expected in message


def test_png_8bit_is_accepted(tmp_path: Path):
    path = tmp_path / "frame.png"
    cv2.imwrite(str(path), ring_image())
    assert read_frame(path).image.shape == (H, W)


def test_normalize_any_size_when_allowed():
    cfg = Config().frame.model_copy(update={"accept_any_size": True})
    frame = normalize_frame(np.zeros((100, 120), np.uint8), cfg)
    assert frame.image.shape == (100, 120) and frame.notes


def test_iter_image_files_expands_folders_and_globs(tmp_path: Path):
    for name in ["a.bmp", "b.BMP", "c.txt", "sub/d.bmp"]:
        p = tmp_path / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    found = iter_image_files([tmp_path])
    assert sorted(p.name for p in found) == ["a.bmp", "b.BMP", "d.bmp"]
    globbed = iter_image_files([tmp_path / "*.bmp"])
    assert [p.name for p in globbed] == ["a.bmp"]


# --- ROI --------------------------------------------------------------------------------------


@pytest.mark.parametrize("invert", [False, True])
def test_find_ring_either_polarity(invert: bool):
    img = ring_image(cx=1300, cy=950)
    if invert:
        img = 255 - img
    roi = find_ring(img)
    assert roi.status is RoiStatus.OK, roi.reason
    assert roi.polarity == ("dark" if invert else "light")
    x, y, w, h = roi.bbox
    assert abs(x - (1300 - 650)) <= 2 and abs(w - 1301) <= 3
    assert abs(y - (950 - 650)) <= 2 and abs(h - 1301) <= 3
    assert roi.bore_mask[950, 1300] and not roi.ring_mask[950, 1300]


def test_find_ring_fills_pits_keeps_bore_ignores_lint():
    img = ring_image()
    cv2.circle(img, (1224 + 520, 1024), 8, 18, -1)  # a pit in the ring
    cv2.line(img, (50, 50), (300, 120), 170, 3)  # lint on the belt
    roi = find_ring(img)
    assert roi.ok
    assert roi.ring_mask[1024, 1224 + 520]  # pit filled
    assert not roi.raw_mask[1024, 1224 + 520]  # but still visible in the raw mask
    assert not roi.ring_mask[60, 100]  # lint is not ring


def test_find_ring_failure_modes():
    blank = np.full((H, W), 18, np.uint8)
    assert find_ring(blank).status is RoiStatus.NO_RING
    two = ring_image(cx=700, r_out=500, r_in=300)
    cv2.circle(two, (1800, 1024), 500, 170, -1)
    cv2.circle(two, (1800, 1024), 300, 18, -1)
    assert find_ring(two).status is RoiStatus.TWO_RINGS
    edge = ring_image(cx=400)
    assert find_ring(edge).status is RoiStatus.TOUCHES_EDGE
    broken = ring_image()
    cv2.rectangle(broken, (1224 - 20, 0), (1224 + 20, 1024), 18, -1)
    roi = find_ring(broken)
    assert roi.status is RoiStatus.BROKEN and "broken" in roi.reason
    assert roi.usable


def test_subtract_background_keeps_margin():
    img = ring_image()
    img[:] = np.maximum(img, 30)  # belt at 30
    roi = find_ring(img)
    clean = subtract_background(img, roi, margin_px=10)
    assert clean[0, 0] == 0 and clean[1024, 1224] == 0  # belt and bore cleared
    assert clean[1024, 1224 + 655] == 30  # inside the margin kept
    assert clean[1024, 1224 + 500] == 170


# --- tiling -----------------------------------------------------------------------------------


def test_tile_grid_covers_bbox_with_overlap():
    cfg = TilingConfig(tile_size=640, overlap=100)
    boxes = tile_grid((574, 374, 1301, 1301), (H, W), cfg)
    xs = sorted({b.x for b in boxes})
    assert xs[0] == 574 and xs[-1] + 640 == 574 + 1301
    assert all(b.w == 640 and b.h == 640 for b in boxes)
    assert all(b2 - b1 <= 540 for b1, b2 in zip(xs, xs[1:], strict=False))
    covered = np.zeros((H, W), bool)
    for b in boxes:
        covered[b.slices()] = True
    assert covered[374 : 374 + 1301, 574 : 574 + 1301].all()


def test_tile_grid_clamps_to_frame():
    boxes = tile_grid((0, 0, 100, 100), (500, 700), TilingConfig(tile_size=640, overlap=100))
    assert all(b.x >= 0 and b.y >= 0 and b.x2 <= 700 and b.y2 <= 500 for b in boxes)


def test_ring_tiles_skip_empty_and_are_deterministic():
    img = ring_image()
    cfg = Config()
    roi = find_ring(img)
    tiles, skipped = ring_tiles(img, roi, cfg)
    assert tiles and all(t.image.shape == (640, 640) for t in tiles)
    assert all(t.ring_fraction > 0 for t in tiles)
    again, _ = ring_tiles(img, roi, cfg)
    assert [t.box for t in tiles] == [t.box for t in again]
    small_tiles, skipped_small = ring_tiles(
        img, roi, cfg.model_copy(update={"tiling": TilingConfig(tile_size=256, overlap=32)})
    )
    assert skipped_small > 0  # the bore's centre tile has no ring
    assert skipped >= 0
