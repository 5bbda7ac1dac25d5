"""Reading LabelMe files as LabelMe writes them, and every messy-file case of DATASET.md."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils
from support.preprocess import H, W, image_b64, mask_b64, ring_frame, shape, write_labelme

from oringscan.config import ClassesConfig
from oringscan.errors import LabelError
from oringscan.preprocess import load_instances, mask_to_geometry
from oringscan.preprocess.coco import coco_polygon, polygon_parts

CLASSES = ClassesConfig()
SHAPE = (H, W)


def rasterize(geometry, height: int, width: int) -> np.ndarray:
    """The COCO mask pycocotools makes of a geometry's (hole-free) polygons."""
    polys = [coco_polygon(p) for p in polygon_parts(geometry)]
    return mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(polys, height, width))).astype(bool)


def donut_mask() -> np.ndarray:
    mask = np.zeros((41, 53), np.uint8)
    cv2.circle(mask, (26, 20), 18, 1, -1)
    cv2.circle(mask, (26, 20), 7, 0, -1)
    mask[2, 2] = 1  # a lone pixel: a second part
    return mask.astype(bool)


@pytest.mark.parametrize("with_image_data", [False, True], ids=["imageData-null", "imageData-base64"])
def test_every_shape_type_as_labelme_writes_it(tmp_path: Path, with_image_data: bool):
    blob = donut_mask()
    shapes = [
        shape("scratch", [[100, 100], [180, 104], [178, 112], [99, 108]]),
        shape("bite", [[300.5, 400.25], [340.5, 430.25]], "rectangle"),
        shape("pit", [[600, 600], [610, 600]], "circle"),
        shape(
            "particle",
            [[800, 900], [800 + blob.shape[1] - 1, 900 + blob.shape[0] - 1]],
            "mask",
            mask=mask_b64(blob),
        ),
        shape("bulge", [[1000, 1000], [1040, 1000], [1040, 1030], [1000, 1030]], "oriented_rectangle"),
        shape("scratch", [[10, 10], [50, 50]], "line"),
        shape("scratch", [[10, 10], [50, 50], [90, 10]], "linestrip"),
        shape("pit", [[20, 20]], "point"),
    ]
    image_data = image_b64(ring_frame(colour=True)[:256, :256]) if with_image_data else None
    path = write_labelme(tmp_path / "frame 1.json", shapes, image_data=image_data)

    instances, warnings = load_instances(path, SHAPE, CLASSES)

    assert [i.label for i in instances] == ["scratch", "bite", "pit", "particle", "bulge"]
    assert all(i.class_name == "defect" for i in instances)
    polygon, rect, circle, mask, oriented = instances
    assert polygon.area == pytest.approx(
        0.5
        * abs(
            sum(
                x0 * y1 - x1 * y0
                for (x0, y0), (x1, y1) in zip(
                    [(100, 100), (180, 104), (178, 112), (99, 108)],
                    [(180, 104), (178, 112), (99, 108), (100, 100)],
                    strict=True,
                )
            )
        )
    )
    assert rect.bbox == pytest.approx((300.5, 400.25, 40, 30)) and rect.area == pytest.approx(1200)
    assert circle.area == pytest.approx(math.pi * 100, rel=0.01)
    assert oriented.area == pytest.approx(1200)
    # The mask shape is exact to the pixel, placed at its first point, hole kept.
    assert mask.area == blob.sum()
    full = np.zeros((1000, 1000), bool)
    full[900 : 900 + blob.shape[0], 800 : 800 + blob.shape[1]] = blob
    assert np.array_equal(rasterize(mask.geometry, 1000, 1000), full)
    # Area-less shapes are reported by name, never dropped silently.
    text = "\n".join(warnings)
    for kind, index in (("line", 5), ("linestrip", 6), ("point", 7)):
        assert f"shape {index} ('{'pit' if kind == 'point' else 'scratch'}', {kind})" in text
    assert text.count("encloses no area") == 3
    assert all(str(path) in w for w in warnings)
    assert ("imageData holds an embedded image" in text) == with_image_data


def test_mask_with_newlines_base64_and_mask_geometry_is_pixel_exact(tmp_path: Path):
    blob = donut_mask()
    path = write_labelme(
        tmp_path / "m.json", [shape("pit", [[5, 7], [57, 47]], "mask", mask=mask_b64(blob, True))]
    )
    (inst,), warnings = load_instances(path, SHAPE, CLASSES)
    assert warnings == [] and inst.area == blob.sum()
    geometry = mask_to_geometry(blob)
    parts = polygon_parts(geometry)
    assert all(not p.interiors for p in parts)  # COCO polygons cannot hold holes
    assert np.array_equal(rasterize(geometry, *blob.shape), blob)


def test_group_id_merges_shapes_into_one_instance(tmp_path: Path):
    shapes = [
        shape("scratch", [[0, 0], [10, 0], [10, 10], [0, 10]], group_id=3),
        shape("scratch", [[50, 0], [60, 0], [60, 10], [50, 10]], group_id=3),
        shape("scratch", [[5, 0], [20, 0], [20, 10], [5, 10]], group_id=3),  # overlaps the first
        shape("pit", [[100, 100], [104, 100], [104, 104]]),
        shape("pit", [[200, 100], [204, 100], [204, 104]]),  # group_id null: each its own
    ]
    path = write_labelme(tmp_path / "g.json", shapes)
    instances, warnings = load_instances(path, SHAPE, CLASSES)
    assert len(instances) == 3 and warnings == []
    grouped = instances[0]
    assert grouped.shape_indices == (0, 1, 2) and grouped.group_id == 3
    assert grouped.area == pytest.approx(200 + 100)  # union, overlap counted once
    assert grouped.geometry.geom_type == "MultiPolygon"


def test_group_with_conflicting_classes_warns(tmp_path: Path):
    classes = ClassesConfig(names=["hole", "scratch"], label_map={"pit": "hole"}, default_class="scratch")
    shapes = [
        shape("pit", [[0, 0], [4, 0], [4, 4], [0, 4]], group_id=1),
        shape("cut", [[10, 0], [40, 0], [40, 10], [10, 10]], group_id=1),
    ]
    path = write_labelme(tmp_path / "c.json", shapes)
    (inst,), warnings = load_instances(path, SHAPE, classes)
    assert inst.class_name == "scratch"
    assert len(warnings) == 1 and "share group_id 1" in warnings[0] and "'scratch'" in warnings[0]


def test_label_map_and_unmapped_labels(tmp_path: Path):
    classes = ClassesConfig(
        names=["hole", "scratch"], label_map={"Pit": "hole", "cut": "scratch"}, default_class=None
    )
    shapes = [
        shape("PIT ", [[0, 0], [4, 0], [4, 4]]),
        shape("cut", [[10, 0], [40, 0], [40, 10]]),
        shape("smudge", [[50, 0], [60, 0], [60, 10]]),
    ]
    path = write_labelme(tmp_path / "l.json", shapes)
    instances, warnings = load_instances(path, SHAPE, classes)
    assert [i.class_name for i in instances] == ["hole", "scratch"]
    assert len(warnings) == 1 and "'smudge' maps to no class" in warnings[0] and "shape 2" in warnings[0]


# --- the messy real files of DATASET.md -------------------------------------------------------


def test_points_outside_the_image_are_clipped(tmp_path: Path):
    shapes = [
        shape("bite", [[W - 20, 100], [W + 30, 100], [W + 30, 140], [W - 20, 140]]),
        shape("bite", [[-5, -5], [20, -5], [20, 20]], "polygon"),
        shape("bite", [[W + 10, 10], [W + 40, 10], [W + 40, 40]]),  # wholly outside
    ]
    path = write_labelme(tmp_path / "out.json", shapes)
    instances, warnings = load_instances(path, SHAPE, CLASSES)
    assert len(instances) == 2
    assert instances[0].geometry.bounds == pytest.approx((W - 20, 100, W, 140))
    assert instances[0].area == pytest.approx(20 * 40)
    assert all(
        x0 >= 0 and y0 >= 0 and x1 <= W and y1 <= H
        for x0, y0, x1, y1 in (i.geometry.bounds for i in instances)
    )
    assert "shape 0 ('bite', polygon): 2 point(s) outside the 2448x2048 image; clipped" in warnings[0]
    assert "shape 2" in warnings[2] and "lies outside" in warnings[2] and "skipped" in warnings[2]


def test_self_intersecting_polygon_is_repaired(tmp_path: Path):
    bowtie = [[100, 100], [200, 200], [200, 100], [100, 200]]
    path = write_labelme(tmp_path / "bow.json", [shape("scratch", bowtie)])
    (inst,), warnings = load_instances(path, SHAPE, CLASSES)
    assert inst.geometry.is_valid and inst.area == pytest.approx(5000)
    assert len(warnings) == 1 and "Self-intersection" in warnings[0] and "make_valid" in warnings[0]
    assert str(path) in warnings[0]


@pytest.mark.parametrize("n_points", [1, 2])
def test_polygon_with_fewer_than_three_points_is_an_error_for_that_shape(tmp_path: Path, n_points: int):
    shapes = [shape("pit", [[10, 10], [20, 20]][:n_points]), shape("pit", [[0, 0], [4, 0], [4, 4]])]
    path = write_labelme(tmp_path / "few.json", shapes)
    instances, warnings = load_instances(path, SHAPE, CLASSES)
    assert len(instances) == 1 and instances[0].shape_indices == (1,)
    assert f"needs at least 3 points, this one has {n_points}; shape skipped" in warnings[0]


def test_unknown_shape_type_is_reported(tmp_path: Path):
    shapes = [shape("pit", [[0, 0], [4, 0], [4, 4]], "cuboid"), shape("pit", [[0, 0], [4, 0], [4, 4]])]
    path = write_labelme(tmp_path / "u.json", shapes)
    instances, warnings = load_instances(path, SHAPE, CLASSES)
    assert len(instances) == 1
    assert "unknown shape_type 'cuboid'" in warnings[0] and str(path) in warnings[0]


def test_labels_of_a_binned_image_are_scaled_by_two(tmp_path: Path):
    shapes = [shape("pit", [[100, 100], [110, 100], [110, 110], [100, 110]])]
    path = write_labelme(tmp_path / "bin.json", shapes, width=W // 2, height=H // 2)
    (inst,), warnings = load_instances(path, SHAPE, CLASSES, image_name="images/x/bin.bmp")
    assert inst.geometry.bounds == pytest.approx((200, 200, 220, 220))
    assert "1224x1024" in warnings[0] and "exactly 2x" in warnings[0] and "images/x/bin.bmp" in warnings[0]


def test_labels_for_another_size_are_refused(tmp_path: Path):
    path = write_labelme(
        tmp_path / "size.json", [shape("pit", [[0, 0], [4, 0], [4, 4]])], width=1920, height=1080
    )
    with pytest.raises(
        LabelError, match=r"says the image is 1920x1080 but images/x/size.bmp is 2448x2048"
    ) as info:
        load_instances(path, SHAPE, CLASSES, image_name="images/x/size.bmp")
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b'{"version": "5.5.0", "shapes": [', "not valid JSON"),
        (b"", "empty label file"),
        (b"[1, 2]", "top level is a JSON list"),
        (b'{"version": "5.5.0"}', "no 'shapes' list"),
        (b'{"shapes": {"label": "x"}}', "'shapes' is a dict"),
        (b'{"shapes": []}\xff\xfe', "not UTF-8"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    ],
)
def test_unreadable_json_names_the_file(tmp_path: Path, content: bytes, match: str):
    path = tmp_path / "dir with spaces" / "bad.json"
    path.parent.mkdir()
    path.write_bytes(content)
    with pytest.raises(LabelError, match=match) as info:
        load_instances(path, SHAPE, CLASSES)
    assert str(info.value).startswith(str(path)) and "\n" not in str(info.value)


def test_bad_shapes_inside_a_good_file(tmp_path: Path):
    shapes = [
        "not a shape",
        {"label": "pit", "points": [[0, 0], ["a", 1], [3, 3]], "shape_type": "polygon"},
        {"label": "", "points": [[0, 0], [4, 0], [4, 4]], "shape_type": "polygon"},
        shape("pit", [[5, 5], [5, 5]], "circle"),
        shape("pit", [[5, 5], [5, 9]], "rectangle"),
        {"label": "pit", "points": [[0, 0], [40, 0], [40, 4]]},  # no shape_type: LabelMe reads polygon
        shape("pit", [[0, 0], [4, 4]], "mask", mask="!!notbase64png"),
        shape(
            "pit",
            [[0, 0], [199, 199]],
            "mask",
            mask=mask_b64(np.random.default_rng(0).random((200, 200)) < 0.5),
        ),
    ]
    path = write_labelme(tmp_path / "odd.json", shapes)
    instances, warnings = load_instances(path, SHAPE, CLASSES)
    assert [i.shape_indices for i in instances] == [(5,)]
    assert len(warnings) == 7 and all(w.endswith("shape skipped") for w in warnings)
    assert "'mask' is speckle" in warnings[-1]


def test_bom_and_imagedata_are_read_fine(tmp_path: Path):
    path = write_labelme(
        tmp_path / "bom.json",
        [shape("pit", [[0, 0], [4, 0], [4, 4]])],
        image_data=image_b64(ring_frame()[:64, :64]),
    )
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    instances, warnings = load_instances(path, SHAPE, CLASSES)
    assert (
        len(instances) == 1
        and len(warnings) == 1
        and "it is ignored and the image file is used" in warnings[0]
    )


def test_image_path_naming_another_frame_is_reported(tmp_path: Path):
    shapes = [shape("pit", [[0, 0], [4, 0], [4, 4]])]
    path = write_labelme(tmp_path / "x.json", shapes, image_path="..\\..\\images\\model1defect\\y.bmp")
    _, warnings = load_instances(path, SHAPE, CLASSES, image_name="images/model1defect/x.bmp")
    assert len(warnings) == 1 and "imagePath names 'y.bmp', not images/model1defect/x.bmp" in warnings[0]
    path = write_labelme(tmp_path / "x.json", shapes, image_path="..\\..\\images\\model1defect\\X.BMP")
    assert load_instances(path, SHAPE, CLASSES, image_name="images/model1defect/x.bmp")[1] == []


def _on_canvas(raster: tuple[np.ndarray, int, int], height: int, width: int) -> np.ndarray:
    pixels, x, y = raster
    out = np.zeros((height, width), bool)
    out[y : y + pixels.shape[0], x : x + pixels.shape[1]] = pixels
    return out


def _fill(points: list[list[float]], height: int, width: int, scale: float = 1.0) -> np.ndarray:
    canvas = np.zeros((height, width), np.uint8)
    cv2.fillPoly(canvas, [np.round(np.array(points) * scale).astype(np.int32)], 1)
    return canvas.astype(bool)


def test_instance_pixels_are_the_labelling_tools_fill(tmp_path: Path):
    """What COCO masks are written from: cv2.fillPoly of the rounded points (boundary pixels included),
    a mask shape's own pixels, groups united, clipped to the frame, scaled with a binned frame."""
    blob = donut_mask()
    tri = [[10.4, 10.6], [17.5, 10.2], [12.2, 16.8]]  # a 3-7 px pit: pycocotools' polygon fill loses ~half
    rect = [[40.2, 5.7], [52.6, 9.4]]
    shapes = [
        shape("pit", tri),
        shape("bite", rect, "rectangle"),
        shape(
            "particle",
            [[60, 20], [60 + blob.shape[1] - 1, 20 + blob.shape[0] - 1]],
            "mask",
            mask=mask_b64(blob),
        ),
        shape("scratch", [[130, 5], [150, 5], [150, 8]], group_id=4),
        shape("scratch", [[150, 5], [170, 9], [150, 9]], group_id=4),
        shape("lint", [[W - 5, 100], [W + 30, 100], [W + 30, 110], [W - 5, 110]]),  # half outside the frame
    ]
    path = write_labelme(tmp_path / "px.json", shapes)
    pit, bite, particle, scratch, lint = load_instances(path, SHAPE, CLASSES)[0]
    small = (200, 200)
    assert np.array_equal(_on_canvas(pit.pixels(), *small), _fill(tri, *small))
    assert pit.pixels()[0].sum() > rasterize(pit.geometry, *small).sum()  # more than pycocotools keeps
    (x0, y0), (x1, y1) = rect
    assert np.array_equal(
        _on_canvas(bite.pixels(), *small), _fill([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], *small)
    )
    expected = np.zeros(small, bool)
    expected[20 : 20 + blob.shape[0], 60 : 60 + blob.shape[1]] = blob
    assert np.array_equal(_on_canvas(particle.pixels(), *small), expected)  # exact: no boundary added
    assert np.array_equal(
        _on_canvas(scratch.pixels(), *small),
        _fill([[130, 5], [150, 5], [150, 8]], *small) | _fill([[150, 5], [170, 9], [150, 9]], *small),
    )
    pixels, x, y = lint.pixels()
    assert (x, y, pixels.shape) == (W - 5, 100, (11, 5)) and pixels.all()  # clipped at the frame's edge
    binned = write_labelme(tmp_path / "bin.json", [shape("pit", tri)], width=W // 2, height=H // 2)
    (scaled,), _ = load_instances(binned, SHAPE, CLASSES)
    assert np.array_equal(_on_canvas(scaled.pixels(), *small), _fill(tri, *small, scale=2.0))
