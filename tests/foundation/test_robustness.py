"""The ring ROI and frame reading on plant-like frames from an independent renderer.

The renderer is ``oringscan.testing.plantlike``, which imports nothing else of oringscan.

The plant's frames are not our synthetic generator's: lighting gradients and vignetting, low
contrast, a shadow over one side, lint touching the ring or lying across the bore, dust, JPEG-ish
blur, both polarities, sizes r_out 500-800, centres +/-200 px, colour and 2x2-binned BMPs. Each
frame has an exact truth, so the ROI is checked against it, not against itself.
"""

from __future__ import annotations

import math
from functools import cache
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from oringscan.config import Config, RoiConfig
from oringscan.errors import FrameError
from oringscan.frames import read_frame, write_frame
from oringscan.roi import RingROI, RoiStatus, find_ring
from oringscan.testing.plantlike import (
    PlantFrame,
    PlantScene,
    as_colour,
    bin2x2,
    hard_scenes,
    iou,
    render_plant_frame,
)
from oringscan.tiling import ring_tiles

MIN_IOU = 0.98


SCENES = hard_scenes()


@cache
def frame(name: str, seed: int = 7) -> PlantFrame:
    return render_plant_frame(SCENES[name], seed=seed)


@cache
def roi_of(name: str) -> RingROI:
    return find_ring(frame(name).image)


def _far_from(mask: np.ndarray, px: int) -> np.ndarray:
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * px + 1, 2 * px + 1))
    return cv2.dilate(mask.astype(np.uint8), k) == 0


@pytest.mark.parametrize("name", list(SCENES))
def test_ring_found_with_the_true_mask(name: str):
    fr, roi = frame(name), roi_of(name)
    assert roi.status is RoiStatus.OK, roi.reason
    assert roi.polarity == fr.scene.polarity
    assert iou(roi.ring_mask, fr.ring) >= MIN_IOU, f"ring IoU {iou(roi.ring_mask, fr.ring):.4f}"
    assert iou(roi.bore_mask, fr.bore) >= MIN_IOU, f"bore IoU {iou(roi.bore_mask, fr.bore):.4f}"
    # Lint is not ring: nothing further than the full-resolution band (~16 px) from the ring.
    far_lint = fr.lint & _far_from(fr.ring, 16)
    assert far_lint.any() or not fr.scene.n_lint
    assert not (roi.ring_mask & far_lint).any(), "lint strands were taken as ring"
    # Pits are filled in the ring mask (and still open in the raw mask); the bore stays open.
    for x, y in fr.pits:
        assert roi.ring_mask[y, x], f"pit at {(x, y)} not filled"
    cx, cy = int(fr.scene.cx), int(fr.scene.cy)
    assert roi.bore_mask[cy, cx] and not roi.ring_mask[cy, cx]
    assert roi.raw_mask.sum() <= roi.ring_mask.sum()
    x, y, w, h = roi.bbox
    tx, ty, tw, th = cv2.boundingRect(fr.ring.astype(np.uint8))
    assert (
        max(abs(x - tx), abs(y - ty), abs(x + w - tx - tw), abs(y + h - ty - th)) <= 20
    )  # lint stubs at most
    assert roi.contrast is not None and (roi.contrast > 0) == (fr.scene.polarity == "light")


def test_lint_bridge_across_the_bore_does_not_split_it():
    fr, roi = frame("lint_across_bore_and_edge"), roi_of("lint_across_bore_and_edge")
    # The bore is one region, and none of it was filled into the ring as a "pit".
    assert (roi.bore_mask & fr.bore).sum() >= 0.99 * fr.bore.sum()
    assert not (roi.ring_mask & fr.bore & _far_from(~fr.bore, 16)).any()


def test_edge_defects_do_not_break_the_roi():
    scene = PlantScene(
        ring_level=90,
        belt_level=40,
        gradient=0.25,
        vignette=0.3,
        n_lint=3,
        lint_touching=1,
        n_dust=30,
        n_pits=3,
        bites=[(0.3, 35.0, "outer"), (2.0, 60.0, "outer"), (4.0, 25.0, "inner"), (5.2, 45.0, "inner")],
        bulges=[(1.1, 30.0, "outer"), (3.1, 18.0, "outer"), (2.6, 28.0, "inner")],
        flash=[(4.4, 0.5, 12.0, "outer"), (0.8, 0.4, 6.0, "inner")],
    )
    fr = render_plant_frame(scene, seed=11)
    roi = find_ring(fr.image)
    assert roi.status is RoiStatus.OK, roi.reason
    assert iou(roi.ring_mask, fr.ring) >= MIN_IOU
    assert iou(roi.bore_mask, fr.bore) >= MIN_IOU
    for angle, radius, edge in scene.bites:  # the missing material is missing from the mask
        r = (scene.r_out - radius / 2) if edge == "outer" else (scene.r_in + radius / 2)
        x, y = int(scene.cx + r * math.cos(angle)), int(scene.cy + r * math.sin(angle))
        assert not roi.ring_mask[y, x], f"bite at {angle} filled in"
    for angle, radius, edge in scene.bulges:  # and the extra material is in it
        r = (scene.r_out + radius / 2) if edge == "outer" else (scene.r_in - radius / 2)
        x, y = int(scene.cx + r * math.cos(angle)), int(scene.cy + r * math.sin(angle))
        assert roi.ring_mask[y, x], f"bulge at {angle} cut off"
    for a0, span, height, edge in scene.flash:  # a flash lip several px proud is kept
        a = a0 + span / 2
        r = (scene.r_out + height - 3) if edge == "outer" else (scene.r_in - height + 3)
        x, y = int(scene.cx + r * math.cos(a)), int(scene.cy + r * math.sin(a))
        assert roi.ring_mask[y, x], f"flash at {a0} cut off"


@pytest.mark.parametrize("name", ["low_contrast_90_on_40", "largest_offset"])
def test_ring_tiles_cover_every_ring_pixel(name: str):
    fr, roi = frame(name), roi_of(name)
    config = Config()
    tiles, _ = ring_tiles(fr.image, roi, config)
    covered = np.zeros(fr.ring.shape, bool)
    for tile in tiles:
        covered[tile.box.slices()] = True
        # Background-subtracted tiles keep every true ring pixel's gray level.
        inside = fr.ring[tile.box.slices()]
        np.testing.assert_array_equal(tile.image[inside], fr.image[tile.box.slices()][inside])
    assert covered[fr.ring].all(), f"{int((~covered & fr.ring).sum())} ring px in no tile"


def test_colour_and_binned_bmp_frames(tmp_path: Path):
    fr = frame("low_contrast_60_on_18")
    rng = np.random.default_rng(5)
    colour = as_colour(fr.image, rng)
    paths = {
        "colour full": (tmp_path / "colour full.bmp", colour),
        "colour binned": (tmp_path / "colour binned.bmp", bin2x2(colour)),
        "gray binned": (tmp_path / "gray binned.bmp", bin2x2(fr.image)),
    }
    for label, (path, image) in paths.items():
        write_frame(path, image)
        loaded = read_frame(path)
        assert loaded.image.shape == fr.image.shape, label
        roi = find_ring(loaded.image)
        assert roi.status is RoiStatus.OK, f"{label}: {roi.reason}"
        assert iou(roi.ring_mask, fr.ring) >= MIN_IOU, f"{label}: IoU {iou(roi.ring_mask, fr.ring):.4f}"
        assert loaded.scale == (2.0 if "binned" in label else 1.0)


@pytest.mark.parametrize("variant", ["palette", "inverted_palette", "top_down", "rle8", "rgba32"])
def test_bmp_variants_decode_to_the_same_gray(tmp_path: Path, variant: str):
    gray = (np.arange(2048 * 2448, dtype=np.int64) * 7 % 251).astype(np.uint8).reshape(2048, 2448)
    path = tmp_path / f"{variant}.bmp"
    if variant == "palette":
        Image.fromarray(gray, "L").convert("P").save(path)
    elif (
        variant == "inverted_palette"
    ):  # index i shows gray 255 - i: the palette, not the index, is the image
        indexed = Image.fromarray(255 - gray, "P")
        indexed.putpalette([level for i in range(256) for level in (255 - i,) * 3])
        indexed.save(path)
    elif variant == "rle8":
        Image.fromarray(gray, "L").save(path, compression="bmp_rle")
    elif variant == "rgba32":
        Image.fromarray(np.dstack([gray] * 3 + [np.full_like(gray, 255)]), "RGBA").save(path)
    else:  # rows stored top-down (negative height)
        Image.fromarray(gray, "L").save(path)
        data = bytearray(path.read_bytes())
        height = int.from_bytes(data[22:26], "little", signed=True)
        offset = int.from_bytes(data[10:14], "little")
        rows = np.frombuffer(bytes(data[offset:]), np.uint8).reshape(abs(height), -1)[::-1]
        data[22:26] = (-abs(height)).to_bytes(4, "little", signed=True)
        data[offset:] = rows.tobytes()
        path.write_bytes(bytes(data))
    np.testing.assert_array_equal(read_frame(path).image, gray)


def test_truncated_binned_colour_bmp_is_refused(tmp_path: Path):
    path = tmp_path / "cut short.bmp"
    write_frame(path, np.zeros((1024, 1224, 3), np.uint8))
    path.write_bytes(path.read_bytes()[:-5000])
    with pytest.raises(FrameError, match="truncated"):
        read_frame(path)


FAILURES: dict[str, tuple[PlantScene, RoiStatus]] = {
    "bare_belt_gradient": (
        PlantScene(
            no_ring=True,
            belt_level=40,
            ring_level=90,
            gradient=0.3,
            radial=0.5,
            light_center=(0.2, 0.2),
            vignette=0.35,
            n_lint=8,
            n_dust=80,
            belt_mottle=0.15,
        ),
        RoiStatus.NO_RING,
    ),
    "bare_light_belt": (
        PlantScene(
            no_ring=True,
            belt_level=190,
            ring_level=55,
            gradient=0.3,
            vignette=0.35,
            n_lint=8,
            n_dust=80,
            belt_mottle=0.15,
        ),
        RoiStatus.NO_RING,
    ),
    "two_rings": (
        PlantScene(
            cx=700,
            r_out=520,
            r_in=320,
            second_ring=(1760, 1024, 520, 320),
            gradient=0.25,
            n_lint=3,
            n_dust=30,
        ),
        RoiStatus.TWO_RINGS,
    ),
    "touches_edge": (PlantScene(cx=500, gradient=0.25, n_lint=3, n_dust=30), RoiStatus.TOUCHES_EDGE),
    "cut_through": (
        PlantScene(cut=(0.8, 10), ring_level=60, belt_level=18, gradient=0.25, n_lint=3, n_dust=30),
        RoiStatus.BROKEN,
    ),
    "cut_through_dark": (
        PlantScene(
            cut=(2.5, 8), ring_level=55, belt_level=190, polarity="dark", gradient=0.25, n_lint=3, n_dust=30
        ),
        RoiStatus.BROKEN,
    ),
}


@pytest.mark.parametrize("name", list(FAILURES))
def test_failure_modes_reported(name: str):
    scene, expected = FAILURES[name]
    roi = find_ring(render_plant_frame(scene, seed=3).image)
    assert roi.status is expected, f"{roi.status}: {roi.reason}"
    assert roi.reason
    if expected is RoiStatus.BROKEN:
        assert roi.usable and roi.bore_mask is None and roi.polarity == scene.polarity


def test_find_ring_is_deterministic_and_leaves_the_frame_alone():
    fr = frame("shadow_one_side_low_contrast")
    before = fr.image.copy()
    a, b = find_ring(fr.image), find_ring(fr.image)
    np.testing.assert_array_equal(fr.image, before)
    np.testing.assert_array_equal(a.ring_mask, b.ring_mask)
    assert (a.status, a.bbox, a.threshold) == (b.status, b.bbox, b.threshold)


def test_ring_roi_fields_stay_compatible():
    fr, roi = frame("light_random"), roi_of("light_random")
    # Positional order used by other parts (status, reason, polarity, threshold, ring, raw, bore, bbox).
    rebuilt = RingROI(
        roi.status,
        roi.reason,
        roi.polarity,
        roi.threshold,
        roi.ring_mask,
        roi.raw_mask,
        roi.bore_mask,
        roi.bbox,
    )
    assert rebuilt.ok and rebuilt.usable and rebuilt.contrast is None
    assert roi.ring_mask.dtype == bool and roi.ring_mask.shape == fr.image.shape
    assert not (roi.ring_mask & roi.bore_mask).any()
    assert not (roi.raw_mask & ~roi.ring_mask).any()
    lo, hi = sorted((fr.scene.ring_level, fr.scene.belt_level))
    assert lo * 0.5 < roi.threshold < hi * 1.3  # a gray level between belt and ring


def test_small_frames_of_other_sizes_work():
    """accept_any_size frames (e.g. a crop) go through the same code at another coarse scale."""
    img = np.full((600, 700), 20, np.uint8)
    cv2.circle(img, (350, 300), 200, 160, -1)
    cv2.circle(img, (350, 300), 120, 20, -1)
    img = cv2.GaussianBlur(img, (5, 5), 1.5)
    roi = find_ring(img, RoiConfig())
    assert roi.status is RoiStatus.OK, roi.reason
    truth = np.zeros_like(img)
    cv2.circle(truth, (350, 300), 200, 1, -1)
    cv2.circle(truth, (350, 300), 120, 0, -1)
    assert iou(roi.ring_mask, truth > 0) >= MIN_IOU


# -- files that are not frames: one reason each, never opened when opening could block ---------------


def _huge_bmp(width: int, height: int) -> bytes:
    import struct

    header = b"BM" + struct.pack("<IHHI", 1078 + width * height, 0, 0, 1078)
    return header + struct.pack("<IiiHHIIiiII", 40, width, height, 1, 8, 0, 0, 2835, 2835, 0, 0) + bytes(2048)


def test_files_that_are_not_frames_say_what_they_are(tmp_path: Path):
    import os

    cases: dict[str, tuple[Path, str]] = {}
    fifo = tmp_path / "fifo.bmp"
    os.mkfifo(fifo)
    cases["fifo"] = (fifo, "is a FIFO (named pipe), not an image file")
    loop = tmp_path / "loop.bmp"
    loop.symlink_to(loop.name)
    cases["loop"] = (loop, "symlink loop")
    dangling = tmp_path / "dangling.bmp"
    dangling.symlink_to("gone.bmp")
    cases["dangling"] = (dangling, "dangling symlink (points to gone.bmp")
    cases["missing"] = (tmp_path / "missing.bmp", "file not found")
    (tmp_path / "dir.bmp").mkdir()
    cases["dir"] = (tmp_path / "dir.bmp", "is a directory")
    huge = tmp_path / "huge.bmp"
    huge.write_bytes(_huge_bmp(40000, 40000))
    cases["huge"] = (huge, "image header says 40000x40000, larger than 4x the 2448x2048 frames")
    for name, (path, reason) in cases.items():
        with pytest.raises(FrameError) as caught:
            read_frame(path)
        assert reason in str(caught.value), (name, str(caught.value))
        assert "\n" not in str(caught.value)
    # Under accept_any_size OpenCV's own limit applies, still before decoding.
    config = Config()
    config.frame.accept_any_size = True
    with pytest.raises(FrameError, match="larger than OpenCV's limit"):
        read_frame(huge, config.frame)


def test_a_name_that_is_not_utf8_reads_and_prints(tmp_path: Path):
    import os

    from oringscan.errors import path_text

    frame = np.full((2048, 2448), 20, np.uint8)
    name = os.path.join(os.fsencode(tmp_path), b"cam\xff.bmp")
    ok, buf = cv2.imencode(".bmp", frame)
    with open(name, "wb") as fh:
        fh.write(buf.tobytes())
    path = Path(os.fsdecode(name))
    assert read_frame(path).image.shape == (2048, 2448)
    text = path_text(path)
    assert text.endswith("cam\\xff.bmp") and text.encode("utf-8")
    with pytest.raises(FrameError) as caught:
        read_frame(path.with_name(path.name + ".missing"))
    str(caught.value).encode("utf-8")  # the message itself is printable
