"""Synthetic frames: deterministic, exact polygons, LabelMe as LabelMe writes it, rework truth that
measures."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import shapely
from click.testing import CliRunner
from shapely.geometry import Polygon
from support.synthdata import load_manifest, make_small_dataset

from oringscan.cli.main import cli
from oringscan.config import Config, OringType
from oringscan.errors import ConfigError
from oringscan.frames import read_frame
from oringscan.roi import find_ring
from oringscan.synth import (
    DEFECT_LABELS,
    REWORK_KINDS,
    render_frame,
    render_with_reference,
    style_for,
    synthesize_dataset,
)
from oringscan.synth.render import Ellipse

BINNED = (1224, 1024)
LABELME_KEYS = ["version", "flags", "shapes", "imagePath", "imageData", "imageHeight", "imageWidth"]
SHAPE_KEYS = ["label", "points", "group_id", "description", "shape_type", "flags", "mask"]


def rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def gray_of(image: np.ndarray) -> np.ndarray:
    return image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)


def polygon_mask(shape: tuple[int, int], polygons: list[list[list[float]]]) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    cv2.fillPoly(mask, [np.asarray(p, dtype=np.float64).round().astype(np.int32) for p in polygons], 1)
    return mask


def bmp_bits(path: Path) -> int:
    return int.from_bytes(path.read_bytes()[28:30], "little")


# --- single frames ------------------------------------------------------------------------------


def test_same_seed_same_bytes_and_different_seed_differs():
    a = render_frame("defect", rng(5), oring_type="model2", color=True)
    b = render_frame("defect", rng(5), oring_type="model2", color=True)
    c = render_frame("defect", rng(6), oring_type="model2", color=True)
    assert a.image.tobytes() == b.image.tobytes()
    assert json.dumps(a.labelme) == json.dumps(b.labelme) and json.dumps(a.truth) == json.dumps(b.truth)
    assert a.image.tobytes() != c.image.tobytes()


@pytest.mark.parametrize("seed", range(6))
def test_polygons_cover_exactly_what_was_drawn(seed: int):
    """Outside the polygons (grown by the 1-px optical blur) not one pixel differs from the defect-free
    scene."""
    frame, reference = render_with_reference(
        "defect",
        rng(100 + seed),
        oring_type=("model1", "model2")[seed % 2],
        polarity="dark" if seed == 3 else None,
    )
    diff = np.abs(frame.image.astype(np.int16) - reference.astype(np.int16))
    shapes = frame.labelme["shapes"]
    assert shapes and len(frame.truth["defects"]) >= 1
    union = polygon_mask(diff.shape, [s["points"] for s in shapes])
    grown = cv2.dilate(union, np.ones((3, 3), np.uint8))
    assert int(np.count_nonzero(diff[grown == 0])) == 0
    for defect in frame.truth["defects"]:
        mask = polygon_mask(diff.shape, defect["polygons"])
        assert int(mask.sum()) == defect["area"]
        changed = float((diff[mask > 0] >= 3).mean())
        assert changed > 0.6, (defect["label"], defect["area"], changed)
        x, y, w, h = defect["bbox"]
        ys, xs = np.nonzero(mask)
        assert (x, y, w, h) == (xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)


def test_labelme_document_is_what_labelme_writes():
    frame = render_frame("defect", rng(11), image_path="../../images/model1defect/x.bmp")
    doc = json.loads(json.dumps(frame.labelme))
    assert list(doc) == LABELME_KEYS
    assert doc["version"].startswith("5.") and doc["imageData"] is None and doc["flags"] == {}
    assert (doc["imageHeight"], doc["imageWidth"]) == frame.image.shape[:2] == (2048, 2448)
    assert doc["imagePath"] == "../../images/model1defect/x.bmp"
    for shape in doc["shapes"]:
        assert list(shape) == SHAPE_KEYS
        assert shape["shape_type"] == "polygon" and shape["mask"] is None and shape["description"] == ""
        assert shape["label"] in DEFECT_LABELS
        points = shape["points"]
        assert len(points) >= 3 and all(isinstance(v, float) for p in points for v in p)
        assert all(0 <= x < 2448 and 0 <= y < 2048 for x, y in points)
        assert Polygon(points).is_valid


def test_defect_kinds_and_sizes_span_the_plants_range():
    sizes: dict[str, list[int]] = {}
    for seed in range(14):
        frame = render_frame("defect", rng(200 + seed))
        assert 1 <= len(frame.truth["defects"]) <= 4
        for d in frame.truth["defects"]:
            sizes.setdefault(d["label"], []).append(max(d["bbox"][2:]))
    assert set(sizes) == set(DEFECT_LABELS)
    every = [s for v in sizes.values() for s in v]
    assert min(every) <= 8 and max(every) >= 100 and max(every) <= 320


@pytest.mark.parametrize(
    ("kind", "options"),
    [
        ("good", {}),
        ("good", {"polarity": "dark"}),
        ("good", {"color": True, "oring_type": "model2"}),
        ("defect", {"color": True, "polarity": "dark"}),
        ("rework", {"rework_kind": "flash"}),
        ("good", {"size": BINNED}),
    ],
)
def test_find_ring_sees_the_ring_as_the_truth_says(kind: str, options: dict):
    frame = render_frame(kind, rng(7), **options)
    assert frame.image.ndim == (3 if options.get("color") else 2)
    roi = find_ring(gray_of(frame.image))
    assert roi.ok, roi.reason
    assert roi.polarity == frame.truth["polarity"] == options.get("polarity", "light")
    cx, cy = frame.truth["ring_center"]
    x, y, w, h = roi.bbox
    assert abs(x + w / 2 - cx) < 25 and abs(y + h / 2 - cy) < 25


def test_models_differ_and_an_unknown_type_gets_a_stable_style():
    m1 = [render_frame("good", rng(s), oring_type="model1").truth for s in range(4)]
    m2 = [render_frame("good", rng(s), oring_type="model2").truth for s in range(4)]
    assert min(t["outer_radius"] for t in m1) > max(t["outer_radius"] for t in m2) - 40
    assert np.mean([t["ring_shade"] for t in m1]) > np.mean([t["ring_shade"] for t in m2]) + 10
    assert style_for("model3") == style_for("model3") and style_for("model3") not in (style_for("model1"),)


def test_good_frames_vary_only_a_little_and_lint_stays_off_the_ring():
    for seed in range(3):
        frame = render_frame("good", rng(300 + seed))
        t = frame.truth
        assert t["bore_offset_px"] < 3 and t["ovality_pct"] < 1 and t["rework"] is None and t["defects"] == []
        assert 560 < t["outer_radius"] < 700 and 300 < t["inner_radius"] < 430
        assert frame.labelme["shapes"] == []
        roi = find_ring(frame.image)
        # Lint never joins the ring: the ring mask area is the ellipse annulus area (within 1%).
        o, i = t["outer"]["semi_axes"], t["inner"]["semi_axes"]
        expected = math.pi * (o[0] * o[1] - i[0] * i[1])
        assert abs(roi.ring_mask.sum() / expected - 1) < 0.01
        assert t["lint_count"] >= 0


# --- rework truth measures what was drawn ----------------------------------------------------------


def _measured(frame) -> tuple[np.ndarray, np.ndarray]:
    roi = find_ring(gray_of(frame.image))
    assert roi.ok, roi.reason
    return roi.ring_mask, roi.bore_mask


def test_bore_offset_truth_is_what_the_frame_shows():
    frame = render_frame("rework", rng(21), rework_kind="bore_offset")
    info = frame.truth["rework"]
    assert info["kind"] == "bore_offset" and 10 <= info["bore_offset_px"] <= 40
    ring, bore = _measured(frame)
    outer = (ring | bore).astype(np.uint8)
    mo, mb = cv2.moments(outer, True), cv2.moments(bore.astype(np.uint8), True)
    outer_c = np.array([mo["m10"], mo["m01"]]) / mo["m00"]
    bore_c = np.array([mb["m10"], mb["m01"]]) / mb["m00"]
    assert abs(np.linalg.norm(bore_c - outer_c) - info["bore_offset_px"]) < 1.0
    assert np.allclose(bore_c, frame.truth["bore_center"], atol=1.0)


def test_ovality_truth_is_what_the_frame_shows():
    frame = render_frame("rework", rng(22), rework_kind="ovality")
    info = frame.truth["rework"]
    assert 3 <= info["ovality_pct"] <= 8
    ring, bore = _measured(frame)
    contours, _ = cv2.findContours((ring | bore).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    (_, _), (d1, d2), _ = cv2.fitEllipse(max(contours, key=cv2.contourArea))
    measured = 100 * (max(d1, d2) - min(d1, d2)) / ((d1 + d2) / 2)
    assert abs(measured - info["ovality_pct"]) < 0.3


@pytest.mark.parametrize("seed", [23, 24, 25, 26])
def test_flash_truth_is_what_the_frame_shows(seed: int):
    frame = render_frame("rework", rng(seed), rework_kind="flash")
    flash = frame.truth["rework"]["flash"]
    assert 6 <= flash["height_px"] <= 20 and 20 <= flash["arc_deg"] <= 90
    ring, bore = _measured(frame)
    mid = math.radians(flash["arc_start_deg"] + flash["arc_deg"] / 2)
    edge = flash["edge"]
    spec = frame.truth[edge]
    ellipse = Ellipse(*spec["center"], *spec["semi_axes"], spec["angle_deg"])
    nominal = float(ellipse.radius_at(math.degrees(mid)))
    cx, cy = spec["center"]
    radii = np.arange(nominal - 60, nominal + 60, 0.25)
    xs = np.round(cx + radii * math.cos(mid)).astype(int)
    ys = np.round(cy + radii * math.sin(mid)).astype(int)
    material = ring[ys, xs]
    if edge == "outer":
        measured = radii[np.nonzero(material)[0].max()] - nominal
    else:
        measured = nominal - radii[np.nonzero(material)[0].min()]
    assert abs(measured - flash["height_px"]) < 2.0, (edge, measured, flash)


def test_bad_arguments_are_refused_clearly():
    with pytest.raises(ValueError, match="frame kind"):
        render_frame("broken", rng(0))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="rework kind"):
        render_frame("rework", rng(0), rework_kind="wobble")
    with pytest.raises(ValueError, match="only meaningful"):
        render_frame("good", rng(0), rework_kind="flash")
    assert set(REWORK_KINDS) == {"bore_offset", "ovality", "flash"}


# --- data sets ----------------------------------------------------------------------------------


def test_dataset_layout_labels_and_truth(tmp_path: Path):
    root = make_small_dataset(
        tmp_path / "with space",
        n_good=4,
        n_defect=2,
        n_rework=3,
        types=("model1", "model2"),
        color_fraction=0.5,
        size=BINNED,
    )
    manifest = load_manifest(root)
    entries = manifest["entries"]
    assert len(entries) == 2 * (4 + 2 + 3) and manifest["types"]["model2"]["folders"]["good"] == "good"
    assert manifest["types"]["model1"]["rework_folder_is_default"] is True
    bits = set()
    for e in entries:
        image = root / e["image"]
        loaded = read_frame(image)
        assert loaded.scale == 2.0  # binned frames are accepted and scaled up
        bits.add(bmp_bits(image))
        assert bmp_bits(image) == (24 if e["color"] else 8)
        if e["label"] is None:
            assert e["kind"] == "good"
            continue
        doc = json.loads((root / e["label"]).read_text(encoding="utf-8"))
        assert list(doc) == LABELME_KEYS
        assert (root / e["label"]).parent.joinpath(doc["imagePath"]).resolve() == image.resolve()
        assert (doc["imageWidth"], doc["imageHeight"]) == BINNED
        assert bool(doc["shapes"]) == (e["kind"] == "defect")
        if e["kind"] == "rework":
            truth = json.loads((root / e["truth_file"]).read_text(encoding="utf-8"))
            assert truth["rework"]["kind"] in REWORK_KINDS and truth == e["truth"]
    assert bits == {8, 24}
    goods = [e for e in entries if e["kind"] == "good"]
    assert sum(e["label"] is None for e in goods) == len(goods) // 2
    # Only LabelMe files (and rework truth sidecars) in the label folders.
    for folder in ("model1good", "model1defect", "good", "notok"):
        assert not list((root / "labels" / folder).glob("*.truth.json"))


def test_dataset_is_deterministic_and_frames_do_not_depend_on_counts(tmp_path: Path):
    small = make_small_dataset(tmp_path / "a", n_good=1, n_defect=1, n_rework=1, seed=9, size=BINNED)
    big = make_small_dataset(tmp_path / "b", n_good=2, n_defect=2, n_rework=1, seed=9, size=BINNED)
    files = sorted(
        p.relative_to(small) for p in small.rglob("*") if p.is_file() and p.name != "manifest.json"
    )
    assert len(files) >= 5
    for rel in files:
        assert (small / rel).read_bytes() == (big / rel).read_bytes(), rel
    other = make_small_dataset(tmp_path / "c", n_good=1, n_defect=0, n_rework=0, seed=10, size=BINNED)
    image = Path("images/model1good/model1_good_0000.bmp")
    assert (other / image).read_bytes() != (small / image).read_bytes()


def test_two_workers_write_the_same_files(tmp_path: Path):
    kwargs = dict(types=("model1",), n_good=2, n_defect=1, n_rework=0, seed=4, progress=False, size=BINNED)
    synthesize_dataset(tmp_path / "one", Config(), workers=1, **kwargs)
    synthesize_dataset(tmp_path / "two", Config(), workers=2, **kwargs)
    for path in (tmp_path / "one").rglob("*.bmp"):
        assert path.read_bytes() == (tmp_path / "two" / path.relative_to(tmp_path / "one")).read_bytes()


def test_configured_rework_folder_and_third_type(tmp_path: Path):
    config = Config()
    config.types = {"model3": OringType(good_folder="m3 ok", defect_folder="m3 nok", rework_folder="m3 rw")}
    summary = synthesize_dataset(
        tmp_path, config, types=("model3",), n_good=1, n_defect=1, n_rework=1, progress=False, size=BINNED
    )
    assert summary["types"]["model3"]["rework_folder_is_default"] is False
    assert len(list((tmp_path / "labels" / "m3 rw").glob("*.truth.json"))) == 1
    assert len(list((tmp_path / "images" / "m3 nok").glob("*.bmp"))) == 1
    with pytest.raises(ConfigError, match="model1"):
        synthesize_dataset(
            tmp_path, config, types=("model1",), n_good=1, n_defect=0, n_rework=0, progress=False
        )


def test_cli_writes_frames_and_prints_a_summary(tmp_path: Path):
    out = tmp_path / "synth out"
    runner = CliRunner()
    result = runner.invoke(
        cli,
        [
            "synth",
            str(out),
            "--types",
            "model2",
            "--good",
            "1",
            "--defect",
            "1",
            "--rework",
            "1",
            "--seed",
            "3",
            "--binned",
            "--quiet",
            "--color-fraction",
            "1",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "wrote 3 frames" in result.output and "model2_rework/ (default name" in result.output
    assert len(list(out.rglob("*.bmp"))) == 3 and (out / "manifest.json").is_file()
    assert all(bmp_bits(p) == 24 for p in out.rglob("*.bmp"))
    bad = runner.invoke(cli, ["synth", str(out), "--types", "model9"])
    assert bad.exit_code != 0 and "unknown o-ring type 'model9'" in bad.output
    assert "Usage" not in bad.output and len(bad.output.strip().splitlines()) == 1


def test_snapping_keeps_thin_shapes_valid():
    from oringscan.synth.render import _snap_parts

    thin = shapely.LineString([(10.2, 10.7), (60.4, 13.1), (110.9, 9.6)]).buffer(1.5, cap_style="flat")
    parts = _snap_parts(thin)
    assert parts and all(Polygon(p).is_valid for p in parts)


def test_cli_defaults_to_the_data_root_and_refuses_a_file_as_out(tmp_path: Path):
    runner = CliRunner()
    data = tmp_path / "plant data"
    result = runner.invoke(
        cli,
        [
            "synth",
            "--data",
            str(data),
            "--types",
            "model1",
            "--good",
            "1",
            "--defect",
            "0",
            "--rework",
            "0",
            "--binned",
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    assert (data / "images" / "model1good" / "model1_good_0000.bmp").is_file()
    blocker = tmp_path / "a file"
    blocker.write_text("x")
    bad = runner.invoke(cli, ["synth", str(blocker), "--good", "1", "--quiet"])
    assert bad.exit_code != 0 and "is not a folder" in bad.output and str(blocker) in bad.output
