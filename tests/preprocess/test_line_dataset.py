"""The second renderer's line data set: plant-shaped folders that preprocess reads like the plant's."""

from __future__ import annotations

import json
from pathlib import Path

from oringscan.config import Config
from oringscan.preprocess import preprocess_type
from oringscan.testing.plantlike import line_scene, write_line_dataset


def test_line_dataset_is_read_like_plant_data(tmp_path: Path) -> None:
    root = tmp_path / "data"
    write_line_dataset(root, "model1good", "model1defect", n_good=1, n_defect=2, seed=11)
    good = sorted((root / "images" / "model1good").glob("*.bmp"))
    defect = sorted((root / "images" / "model1defect").glob("*.bmp"))
    labels = sorted((root / "labels" / "model1defect").glob("*.json"))
    assert len(good) == 1 and len(defect) == 2 and not (root / "labels" / "model1good").exists()
    assert [p.stem for p in labels] == [p.stem for p in defect]
    shapes = [json.loads(p.read_text())["shapes"] for p in labels]
    assert all(s and {x["label"] for x in s} <= {"pit", "bulge"} for s in shapes), shapes
    # Deterministic: the same seed renders the same frame.
    again = tmp_path / "again"
    write_line_dataset(again, "model1good", "model1defect", n_good=0, n_defect=1, seed=11)
    assert (again / "images" / "model1defect" / defect[0].name).read_bytes() == defect[0].read_bytes()

    summary = preprocess_type(Config(), root, tmp_path / "out", "model1", progress=False, workers=1)
    assert summary["skipped"] == [], summary
    assert summary["instances"]["outside_ring_tiles"] == 0, summary["warnings"]
    written = sum(
        len(
            json.loads((tmp_path / "out" / "model1" / "annotations" / f"{split}.json").read_text())[
                "annotations"
            ]
        )
        for split in ("train", "val", "test")
        if (tmp_path / "out" / "model1" / "annotations" / f"{split}.json").is_file()
    )
    assert written >= sum(len(s) for s in shapes)


def test_line_scene_puts_a_labelled_defect_on_every_defect_frame() -> None:
    for seed in range(20):
        scene = line_scene("defect", seed)
        assert scene.labelled_pits or scene.labelled_bulges
        assert not line_scene("good", seed).labelled_pits and not line_scene("good", seed).labelled_bulges
