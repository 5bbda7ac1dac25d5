"""Frames + LabelMe -> COCO tiles: a small plant-like data set with every messy case, converted once."""

from __future__ import annotations

import functools
import json
import os
from collections import Counter, defaultdict
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from support.preprocess import (
    CENTRE,
    R_IN,
    R_OUT,
    H,
    W,
    blank_frame,
    draw_defects,
    image_b64,
    mask_b64,
    put_frame,
    put_labels,
    ring_frame,
    shape,
)

from oringscan.cli.main import cli
from oringscan.config import Config, SplitConfig
from oringscan.frames import read_frame, write_frame
from oringscan.preprocess import DatasetError, load_instances, preprocess_all, preprocess_type, split_frames
from oringscan.preprocess.split import SPLITS, split_counts
from oringscan.roi import find_ring, kept_region, subtract_background
from oringscan.tiling import ring_tile_boxes

GOOD, DEFECT = "model1good", "model1defect"

DONUT = np.zeros((31, 41), bool)
cv2.circle(DONUT.view(np.uint8), (20, 15), 14, 1, -1)
cv2.circle(DONUT.view(np.uint8), (20, 15), 5, 0, -1)


def _on_ring(x0: float, y0: float, x1: float, y1: float) -> bool:
    corners = [(x0, y0), (x1, y0), (x0, y1), (x1, y1)]
    return all(R_IN + 20 < np.hypot(x - CENTRE[0], y - CENTRE[1]) < R_OUT - 20 for x, y in corners)


@functools.cache
def defect_placements() -> dict[str, list[list[float]]]:
    """Defects placed against the shared tile grid of d0's ring (whatever the grid's rules are):
    a polygon inside exactly 2 tiles, a rectangle inside exactly 4, and a rectangle with only
    one pixel column of it in one tile (a sliver there) that another tile holds whole."""
    frame = ring_frame(seed=10)
    roi = find_ring(frame)
    boxes = [b for b, _ in ring_tile_boxes(roi, frame.shape, Config(), keep=kept_region(frame, roi))]

    def overlapping(x0: float, y0: float, x1: float, y1: float) -> list:
        return [b for b in boxes if min(x1, b.x2) > max(x0, b.x) and min(y1, b.y2) > max(y0, b.y)]

    found: dict[str, list[list[float]]] = {}
    for angle in np.arange(0, 360, 3):
        for radius in (470, 520, 570):
            cx = CENTRE[0] + radius * np.cos(np.radians(angle))
            cy = CENTRE[1] + radius * np.sin(np.radians(angle))
            x0, y0, x1, y1 = round(cx) - 25, round(cy) - 15, round(cx) + 25, round(cy) + 15
            if not _on_ring(x0, y0, x1, y1):
                continue
            n = len(overlapping(x0, y0, x1, y1))
            if n == 2 and "two" not in found:
                found["two"] = [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]
            if n == 4 and "four" not in found:
                found["four"] = [[x0, y0], [x1, y1]]
    for b in boxes:
        for y0 in range(b.y, b.y2 - 30, 10):
            x0, x1, y1 = b.x2 - 1, b.x2 + 26, y0 + 10  # filled: 1 column x 11 rows (< 16 px) in tile b
            whole = [
                o
                for o in overlapping(x0, y0, x1, y1)
                if o.x <= x0 and x1 <= o.x2 and o.y <= y0 and y1 <= o.y2
            ]
            if _on_ring(x0, y0, x1, y1) and whole and "sliver" not in found:
                found["sliver"] = [[x0, y0], [x1, y1]]
    assert set(found) == {"two", "four", "sliver"}, (
        f"no placement for {set(found) ^ {'two', 'four', 'sliver'}}"
    )
    return found


def _defect_shapes_d0() -> list[dict]:
    place = defect_placements()
    return [
        shape("scratch", place["two"]),
        shape("bite", place["four"], "rectangle"),
        shape("pit", [[1224 - 500, 1030], [1224 - 497, 1030]], "circle"),
        shape("particle", [[1190, 1520], [1190 + 40, 1520 + 30]], "mask", mask=mask_b64(DONUT)),
        shape("cut", place["sliver"], "rectangle"),
    ]


def build_dataset(root: Path) -> Path:
    """19 frames of model1: 13 usable, 6 broken in the ways DATASET.md lists, plus two stray files."""
    for i in range(6):
        centre = (1100, 950) if i == 2 else CENTRE
        put_frame(root, GOOD, f"g{i}.bmp", ring_frame(seed=i, centre=centre, colour=i in (1, 5)))
    put_labels(root, GOOD, "g1.bmp", [])  # a good frame's JSON with no shapes
    put_frame(root, GOOD, "g_blank.bmp", blank_frame())
    truncated = put_frame(root, GOOD, "g_cut.bmp", ring_frame(seed=40))
    truncated.write_bytes(truncated.read_bytes()[:3_000_000])  # a copy that broke off half way
    put_frame(root, GOOD, "g_labelled.bmp", ring_frame(seed=41))  # mis-filed: it has a defect label
    put_labels(root, GOOD, "g_labelled.bmp", [shape("pit", [[1224, 500], [1234, 500], [1234, 510]])])
    put_frame(root, "model1_rework", "r0.bmp", ring_frame(seed=42))
    two = np.full((H, W), 18, np.uint8)
    for cx in (620, 1830):
        cv2.circle(two, (cx, 1024), 560, 170, -1)
        cv2.circle(two, (cx, 1024), 330, 18, -1)
    put_frame(root, GOOD, "g_two.bmp", two)
    put_labels(root, GOOD, "ghost.bmp", [shape("pit", [[0, 0], [4, 0], [4, 4]])])  # its image is missing
    (root / "images" / GOOD / "notes.txt").write_text("camera 2 serviced")

    d0 = _defect_shapes_d0()
    put_frame(root, DEFECT, "d0.bmp", draw_defects(ring_frame(seed=10), [defect_placements()["two"]]))
    put_labels(root, DEFECT, "d0.bmp", d0)
    bowtie = [[1600, 700], [1640, 740], [1640, 700], [1600, 740]]
    d1_img = draw_defects(ring_frame(seed=11, colour=True), [bowtie])
    put_frame(root, DEFECT, "d1.bmp", d1_img)
    put_labels(
        root,
        DEFECT,
        "d1.bmp",
        [shape("scratch", bowtie), shape("lint", [[W - 30, 10], [W + 20, 10], [W + 20, 40], [W - 30, 40]])],
        image_data=image_b64(d1_img[::8, ::8]),
    )
    put_frame(root, DEFECT, "d2.bmp", ring_frame(seed=12))
    put_labels(
        root,
        DEFECT,
        "d2.bmp",
        [
            shape("pit", [[700, 1000], [705, 1005]]),  # two points: an error for this shape
            shape("scratch", [[650, 900], [700, 900], [700, 910], [650, 910]], group_id=1),
            shape("scratch", [[700, 900], [760, 930], [755, 940], [700, 910]], group_id=1),
            shape("pit", [[650, 1100], [660, 1100], [660, 1110]], "cuboid"),
        ],
    )
    binned = cv2.resize(ring_frame(seed=13), (W // 2, H // 2), interpolation=cv2.INTER_AREA)
    put_frame(root, DEFECT, "d3.bmp", binned)
    put_labels(
        root,
        DEFECT,
        "d3.bmp",
        [shape("pit", [[612, 250], [622, 250], [622, 260], [612, 260]])],
        width=W // 2,
        height=H // 2,
    )
    for i in (4, 5):
        put_frame(root, DEFECT, f"d{i}.bmp", ring_frame(seed=20 + i))
        put_labels(
            root, DEFECT, f"d{i}.bmp", [shape("bulge", [[1224 - 30, 1580], [1224 + 30, 1580], [1224, 1640]])]
        )
    put_frame(root, DEFECT, "d_badjson.bmp", ring_frame(seed=30))
    (root / "labels" / DEFECT / "d_badjson.json").write_text(
        '{"version": "5.5.0", "shapes": [{"label": "pit",'
    )
    put_frame(root, DEFECT, "d_size.bmp", ring_frame(seed=31))
    put_labels(root, DEFECT, "d_size.bmp", [shape("pit", [[0, 0], [4, 0], [4, 4]])], width=1920, height=1080)
    put_frame(root, DEFECT, "d_nolabel.bmp", ring_frame(seed=32))
    return root


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    base = tmp_path_factory.mktemp("prep")
    data = build_dataset(base / "plant data")  # a space in the path, as on the plant's drive
    out = base / "out put"
    summary = preprocess_type(Config(), data, out, "model1", progress=False, workers=2)
    return data, out, summary


def _coco(out: Path, split: str) -> COCO:
    return COCO(str(out / "model1" / "annotations" / f"{split}.json"))


def _frame_pixels(instance, height: int, width: int) -> np.ndarray:
    """The instance's labelled pixels (cv2.fillPoly of its points) on a frame-sized canvas."""
    pixels, x, y = instance.pixels()
    out = np.zeros((height, width), bool)
    out[y : y + pixels.shape[0], x : x + pixels.shape[1]] = pixels
    return out


def test_pycocotools_loads_every_file_and_records_are_complete(converted):
    data, out, summary = converted
    seen_good_tile = False
    for split in SPLITS:
        coco = _coco(out, split)
        images = coco.dataset["images"]
        assert [im["id"] for im in images] == list(range(1, len(images) + 1))
        anns = coco.dataset["annotations"]
        assert [a["id"] for a in anns] == list(range(1, len(anns) + 1))
        assert [c["name"] for c in coco.dataset["categories"]] == ["defect"]
        for im in images:
            assert (data / im["source_image"]).is_file() and "\\" not in im["source_image"]
            tile = cv2.imread(str(out / "model1" / "images" / split / im["file_name"]), cv2.IMREAD_UNCHANGED)
            assert tile is not None and tile.shape == (im["height"], im["width"]) == (640, 640)
            assert 0 <= im["tile_x"] <= W - 640 and 0 <= im["tile_y"] <= H - 640
            if im["frame_kind"] == "good":
                assert coco.getAnnIds(imgIds=[im["id"]]) == []
                seen_good_tile = True
        for ann in anns:
            im = coco.imgs[ann["image_id"]]
            x, y, w, h = ann["bbox"]
            assert ann["iscrowd"] == 0 and ann["area"] > 0 and w > 0 and h > 0
            assert 0 <= x and 0 <= y and x + w <= im["width"] and y + h <= im["height"]
            assert ann["segmentation"]["size"] == [im["height"], im["width"]]  # compressed RLE
            assert isinstance(ann["segmentation"]["counts"], str)
            mask = coco.annToMask(ann).astype(bool)
            ys, xs = np.nonzero(mask)
            assert ann["area"] == mask.sum() and ann["bbox"] == [
                xs.min(),
                ys.min(),
                np.ptp(xs) + 1,
                np.ptp(ys) + 1,
            ]
    assert seen_good_tile
    assert summary["tiles"]["written"] == sum(len(_coco(out, s).dataset["images"]) for s in SPLITS)


def test_tile_pixels_and_offsets_map_back_to_the_frame(converted):
    data, out, _ = converted
    coco = _coco(out, "train")
    im = coco.dataset["images"][0]
    frame = read_frame(data / im["source_image"]).image
    clean = subtract_background(frame, find_ring(frame), Config().roi.background_margin_px)
    tile = cv2.imread(str(out / "model1" / "images" / "train" / im["file_name"]), cv2.IMREAD_UNCHANGED)
    x, y = im["tile_x"], im["tile_y"]
    assert np.array_equal(tile, clean[y : y + 640, x : x + 640])


def _instance_tiles(out: Path, source_image: str) -> dict[int, list[tuple[dict, dict]]]:
    found: dict[int, list[tuple[dict, dict]]] = defaultdict(list)
    for split in SPLITS:
        coco = _coco(out, split)
        for ann in coco.dataset["annotations"]:
            im = coco.imgs[ann["image_id"]]
            if im["source_image"] == source_image:
                found[ann["frame_instance"]].append((im, ann))
    return found


def test_round_trip_union_of_tile_masks_equals_the_frame_mask(converted):
    data, out, _ = converted
    instances, _ = load_instances(data / "labels" / DEFECT / "d0.json", (H, W), Config().classes)
    per_instance = _instance_tiles(out, f"images/{DEFECT}/d0.bmp")
    n_tiles = {k: len(v) for k, v in per_instance.items()}
    assert n_tiles[0] == 2 and n_tiles[1] == 4
    assert any(ann["truncated"] for _, ann in per_instance[1])
    for k, inst in enumerate(instances):
        full = _frame_pixels(inst, H, W)
        union = np.zeros((H, W), bool)
        for im, ann in per_instance[k]:
            part = mask_utils.decode(
                {"size": ann["segmentation"]["size"], "counts": ann["segmentation"]["counts"].encode()}
            )
            union[im["tile_y"] : im["tile_y"] + im["height"], im["tile_x"] : im["tile_x"] + im["width"]] |= (
                part.astype(bool)
            )
        # Exact, pixel for pixel (the sliver's column dropped in one tile is whole in another).
        assert (union == full).all(), f"instance {k} ({inst.label}): {int((union ^ full).sum())} px differ"


def test_split_by_frame_without_leakage_and_stratified(converted):
    _, out, summary = converted
    splits_of: dict[str, set[str]] = defaultdict(set)
    for split in SPLITS:
        for im in _coco(out, split).dataset["images"]:
            splits_of[im["source_image"]].add(split)
    assert all(len(s) == 1 for s in splits_of.values())
    assert len(splits_of) == summary["frames"]["used"] == 13
    per_split = summary["frames"]["per_split"]
    for kind, n in (("good", 6), ("defect", 7)):  # the labelled good-folder frame counts as defect
        assert {s: per_split[s][kind] for s in SPLITS} == split_counts(n, Config().split)


def test_summary_reports_every_bad_case_by_file(converted):
    data, out, summary = converted
    on_disk = json.loads((out / "model1" / "dataset_summary.json").read_text())
    assert on_disk == json.loads(json.dumps(summary))
    skipped = {item.get("frame", item["file"]): item["reason"] for item in summary["skipped"]}
    at_fault = {item.get("frame", item["file"]): item["file"] for item in summary["skipped"]}
    assert at_fault[f"images/{DEFECT}/d_badjson.bmp"] == f"labels/{DEFECT}/d_badjson.json"
    assert at_fault[f"images/{DEFECT}/d_size.bmp"] == f"labels/{DEFECT}/d_size.json"
    assert at_fault[f"images/{GOOD}/g_two.bmp"] == f"images/{GOOD}/g_two.bmp"
    expected = {
        f"images/{GOOD}/g_blank.bmp": "no single ring",
        f"images/{GOOD}/g_cut.bmp": "truncated BMP",
        f"images/{GOOD}/g_two.bmp": "two_rings",
        f"labels/{GOOD}/ghost.json": "label file without image",
        f"images/{GOOD}/notes.txt": "not a frame file type",
        f"images/{DEFECT}/d_badjson.bmp": "not valid JSON",
        f"images/{DEFECT}/d_size.bmp": "says the image is 1920x1080",
        f"images/{DEFECT}/d_nolabel.bmp": "defect frame with no label file",
    }
    assert set(skipped) == set(expected)
    for file, reason in expected.items():
        assert reason in skipped[file] and str(data) not in skipped[file], (file, skipped[file])
    warnings = "\n".join(summary["warnings"])
    for needle in (
        f"labels/{DEFECT}/d1.json: imageData holds an embedded image",
        "d1.json: shape 0 ('scratch', polygon): invalid polygon (Self-intersection",
        "d1.json: shape 1 ('lint', polygon): 2 point(s) outside the 2448x2048 image; clipped",
        "outside the ring's tiles or blanked as belt",
        "d2.json: shape 0 ('pit', polygon): a polygon needs at least 3 points",
        "d2.json: shape 3 ('pit', cuboid): unknown shape_type 'cuboid'",
        "d3.json: labels were drawn on a 1224x1024 image",
        f"images/{DEFECT}/d3.bmp: 2x2-binned frame scaled up",
        f"labels/{GOOD}/g_labelled.json: a frame in the good folder with 1 labelled defect(s); used as a "
        "defect frame",
        "model1_rework: 1 rework frame(s) left out",
    ):
        assert needle in warnings, needle
    frames = summary["frames"]
    assert (frames["found"], frames["used"], frames["skipped"]) == (19, 13, 6)
    instances = summary["instances"]
    # d0: 5, d1: bowtie + clipped lint, d2: one grouped scratch, d3: 1, d4/d5: 1 each, g_labelled: 1
    assert instances["labelled"] == 5 + 2 + 1 + 1 + 2 + 1
    assert sum(instances["per_class_and_split"]["defect"].values()) == instances["labelled"]
    assert instances["slivers_dropped"] >= 1 and instances["outside_ring_tiles"] == 1
    assert sum(summary["defect_size_histogram"]["per_class"]["defect"]) == instances["labelled"]
    assert summary["tiles"]["skipped_without_ring"] >= 0


def test_binned_frame_labels_land_on_the_full_size_tiles(converted):
    _, out, _ = converted
    (parts,) = _instance_tiles(out, f"images/{DEFECT}/d3.bmp").values()
    boxes = [
        (im["tile_x"] + x, im["tile_y"] + y, im["tile_x"] + x + w, im["tile_y"] + y + h)
        for im, ann in parts
        for x, y, w, h in [ann["bbox"]]
    ]
    frame_box = (
        min(b[0] for b in boxes),
        min(b[1] for b in boxes),
        max(b[2] for b in boxes),
        max(b[3] for b in boxes),
    )
    # drawn at (612, 250)-(622, 260) on the binned frame: x2 = 2 x 622 = 1244, filled inclusively
    assert frame_box == (1224, 500, 1245, 521)


def test_rerun_through_the_cli_is_idempotent(converted):
    data, out, summary = converted
    before = {s: (out / "model1" / "annotations" / f"{s}.json").read_bytes() for s in SPLITS}
    files_before = sorted(p.relative_to(out).as_posix() for p in (out / "model1" / "images").rglob("*"))
    (out / "model1" / "images" / "train" / "stale_tile.png").write_bytes(b"old run")
    (out / "model1" / "checkpoints").mkdir()
    (out / "model1" / "checkpoints" / "best_model.pth").write_bytes(b"keep me")
    result = CliRunner().invoke(
        cli,
        [
            "preprocess",
            "--model",
            "model1",
            "--data",
            str(data),
            "--output",
            str(out),
            "--workers",
            "1",
            "--no-progress",
        ],
    )
    assert result.exit_code == 3, result.output  # done, but some inputs were errors (each listed)
    assert "model1" in result.output and "13/19" in result.output and "8 skipped" in result.output
    assert {s: (out / "model1" / "annotations" / f"{s}.json").read_bytes() for s in SPLITS} == before
    assert (
        sorted(p.relative_to(out).as_posix() for p in (out / "model1" / "images").rglob("*")) == files_before
    )
    assert (out / "model1" / "checkpoints" / "best_model.pth").read_bytes() == b"keep me"
    assert not (out / "model1" / ".preprocess-staging").exists()
    assert json.loads((out / "model1" / "dataset_summary.json").read_text())["frames"] == summary["frames"]


def test_missing_folders_give_one_line_errors(tmp_path: Path):
    empty = tmp_path / "empty data"
    empty.mkdir()
    result = CliRunner().invoke(
        cli, ["preprocess", "--data", str(empty), "--output", str(tmp_path / "o"), "--no-progress"]
    )
    assert result.exit_code == 1
    assert "neither images/model1good nor images/model1defect exists" in result.output
    assert "neither images/good nor images/notok exists" in result.output
    assert "preprocessing failed for model1, model2" in result.output
    result = CliRunner().invoke(cli, ["preprocess", "--model", "model2", "--data", str(tmp_path / "nope")])
    assert result.exit_code == 2 and result.output.count("\n") == 1  # a named folder that does not exist
    assert "nope" in result.output
    with pytest.raises(DatasetError, match="neither images/good"):
        preprocess_all(Config(), empty, tmp_path / "o", oring_type="model2", progress=False)
    (empty / "images" / "good").mkdir(parents=True)
    (empty / "images" / "good" / "readme.txt").write_text("frames go here")
    with pytest.raises(DatasetError, match="no frames for model2 in images/good or images/notok"):
        preprocess_type(Config(), empty, tmp_path / "o", "model2", progress=False)


def test_split_frames_is_seeded_stratified_and_order_free():
    strata = {f"images/g/{i:03d}.bmp": "good" for i in range(150)} | {
        f"images/d/{i:03d}.bmp": "defect" for i in range(50)
    }
    cfg = SplitConfig()
    first = split_frames(strata, cfg)
    assert set(first) == set(strata)
    assert split_frames(dict(reversed(list(strata.items()))), cfg) == first
    assert split_frames(strata, SplitConfig(seed=7)) != first
    for kind, n in (("good", 150), ("defect", 50)):
        counts = Counter(first[k] for k, s in strata.items() if s == kind)
        assert dict(counts) == split_counts(n, cfg)
    assert split_counts(150, cfg) == {"train": 105, "val": 23, "test": 22} or split_counts(150, cfg) == {
        "train": 105,
        "val": 22,
        "test": 23,
    }
    assert sum(split_counts(7, cfg).values()) == 7
    # Small sets: every split still gets a frame of each kind when there are enough.
    assert split_counts(3, cfg) == {"train": 1, "val": 1, "test": 1}
    assert split_counts(4, cfg) == {"train": 2, "val": 1, "test": 1}
    assert split_counts(2, cfg) == {"train": 2, "val": 0, "test": 0}
    assert split_counts(5, SplitConfig(train=0.8, val=0.2, test=0.0)) == {"train": 4, "val": 1, "test": 0}


# --- the fault catalogue (issue 15): one bad entry is reported and skipped, the rest converts ----------

NON_UTF8 = os.fsdecode(b"caf\xe9 frame.bmp")  # Latin-1 bytes: not valid UTF-8 (surrogate-escaped in Python)


def _fault_dataset(root: Path) -> Path:
    put_frame(root, GOOD, "g_ok.bmp", ring_frame(seed=50))
    put_frame(
        root, DEFECT, "d_ok.bmp", draw_defects(ring_frame(seed=51), [[[1224, 460], [1240, 460], [1240, 476]]])
    )
    put_labels(root, DEFECT, "d_ok.bmp", [shape("pit", [[1224, 460], [1240, 460], [1240, 476]])])
    good = root / "images" / GOOD
    write_frame(good / NON_UTF8, ring_frame(seed=52))
    (good / "folder.bmp").mkdir()
    os.mkfifo(good / "pipe.bmp")
    os.symlink("loop.bmp", good / "loop.bmp")
    os.symlink("gone/frame.bmp", good / "dangling.bmp")
    os.symlink(good, good / "linked_folder")
    bits = Image.fromarray(ring_frame(seed=53) > 90)  # mode "1": a 1-bit BMP of a ring
    bits.save(good / "one_bit.bmp")
    put_frame(root, DEFECT, "d_nested.bmp", ring_frame(seed=54))
    (root / "labels" / DEFECT / "d_nested.json").write_text("[" * 200_000 + "]" * 200_000)
    put_frame(root, DEFECT, "d_fifo_label.bmp", ring_frame(seed=55))
    os.mkfifo(root / "labels" / DEFECT / "d_fifo_label.json")
    (root / "labels" / DEFECT / "d_dir.json").mkdir()
    huge = put_frame(root, GOOD, "huge_header.bmp", np.zeros((16, 16), np.uint8))
    raw = bytearray(huge.read_bytes())
    raw[18:26] = (40000).to_bytes(4, "little") * 2  # a header declaring 40000x40000 pixels
    huge.write_bytes(bytes(raw))
    locked = put_frame(root, GOOD, "locked.bmp", ring_frame(seed=56))
    locked.chmod(0)
    return root


@pytest.fixture(scope="module")
def faults(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    base = tmp_path_factory.mktemp("faults")
    data = _fault_dataset(base / "data")
    summary = preprocess_type(Config(), data, base / "out", "model1", progress=False, workers=1)
    return data, base / "out", summary


AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0

_ROWS = [
    ("folder named x.bmp", f"images/{GOOD}/folder.bmp", "a folder named like a .bmp file"),
    ("FIFO", f"images/{GOOD}/pipe.bmp", "a FIFO (named pipe), not a frame file"),
    ("looping symlink", f"images/{GOOD}/loop.bmp", "symbolic link loop"),
    ("dangling symlink", f"images/{GOOD}/dangling.bmp", "dangling symbolic link (points to gone/frame.bmp"),
    ("symlink to a folder", f"images/{GOOD}/linked_folder", "symbolic link to a folder: not followed"),
    ("1-bit BMP", f"images/{GOOD}/one_bit.bmp", "1-bit BMP (2 levels): not a camera frame"),
    ("header of 40000x40000", f"images/{GOOD}/huge_header.bmp", "image header says 40000x40000"),
    ("label nested 200000 deep", f"labels/{DEFECT}/d_nested.json", "nested too deeply"),
    ("label file is a FIFO", f"labels/{DEFECT}/d_fifo_label.json", "label file: a FIFO"),
    ("label file is a folder", f"labels/{DEFECT}/d_dir.json", "label file: a folder named like a .json file"),
]
FAULTS = [pytest.param(*row, id=row[0]) for row in _ROWS] + [
    pytest.param(
        "unreadable frame",
        f"images/{GOOD}/locked.bmp",
        "cannot be read (Permission denied)",
        id="unreadable frame (no permission)",
        marks=pytest.mark.skipif(AS_ROOT, reason="root reads a file without permissions"),
    ),
]


@pytest.mark.parametrize(("case", "file", "reason"), FAULTS)
def test_fault_is_skipped_with_its_reason(faults, case: str, file: str, reason: str):
    _, _, summary = faults
    reasons = {item["file"]: item["reason"] for item in summary["skipped"]}
    assert file in reasons, f"{case}: not reported; skipped: {sorted(reasons)}"
    assert reason in reasons[file] and "\n" not in reasons[file], (case, reasons[file])


def test_faults_leave_the_rest_converted_and_the_summary_written(faults):
    data, out, summary = faults
    used = summary["frames"]["used"]
    assert used == (4 if AS_ROOT else 3)  # g_ok, d_ok, the non-UTF-8 name (and locked.bmp as root)
    on_disk = json.loads((out / "model1" / "dataset_summary.json").read_text(encoding="utf-8"))
    assert on_disk["frames"]["used"] == used
    sources = {im["source_image"] for s in SPLITS for im in _coco(out, s).dataset["images"]}
    bad_name = f"images/{GOOD}/{NON_UTF8}"
    assert bad_name in sources  # the COCO file gives the exact name back (as a JSON \udcNN escape) ...
    assert read_frame(data / bad_name).image.shape == (H, W)  # ... so the frame opens again
    for tile in (out / "model1" / "images").rglob("*"):
        tile.name.encode("utf-8")  # tile names are text (the odd bytes written as \xNN), never raw bytes


def test_fault_catalogue_through_the_cli_prints_every_name(faults, tmp_path: Path):
    data, _, summary = faults
    result = CliRunner().invoke(
        cli,
        [
            "preprocess",
            "--model",
            "model1",
            "--data",
            str(data),
            "--output",
            str(tmp_path / "o"),
            "--no-progress",
        ],
    )
    assert result.exit_code == 3, result.output  # done, with input errors listed
    assert "Traceback" not in result.output and "d_nested.json: JSON nested too deeply" in result.output
    assert json.loads((tmp_path / "o" / "model1" / "dataset_summary.json").read_text(encoding="utf-8"))[
        "skipped"
    ]
