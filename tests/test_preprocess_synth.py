"""Preprocess on the synthetic generator's data set (both types): clean input converts cleanly and exactly."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from synthdata import small_dataset_both_types  # noqa: F401

from oringscan.config import Config
from oringscan.preprocess import load_instances, preprocess_all
from oringscan.preprocess.coco import coco_polygon, polygon_parts
from oringscan.preprocess.split import SPLITS


def _frame_mask(geometry, height: int, width: int) -> np.ndarray:
    polys = [coco_polygon(p) for p in polygon_parts(geometry)]
    return mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(polys, height, width))).astype(bool)


def test_synthetic_dataset_converts_without_loss(small_dataset_both_types: Path, tmp_path: Path):  # noqa: F811
    data = small_dataset_both_types
    config = Config()
    summaries = preprocess_all(config, data, tmp_path / "output", progress=False, workers=2)
    assert set(summaries) == {"model1", "model2"}
    for model, summary in summaries.items():
        oring = config.types[model]
        assert summary["skipped"] == []
        (note,) = summary["warnings"]  # the synthetic set has rework frames; they never train
        assert "2 rework frame(s) left out" in note
        assert summary["frames"]["found"] == summary["frames"]["used"] == 7
        label_files = sorted((data / "labels" / oring.defect_folder).glob("*.json"))
        n_shapes = sum(len(json.loads(p.read_text())["shapes"]) for p in label_files)
        assert summary["instances"]["labelled"] == n_shapes > 0

        pieces: dict[tuple[str, int], list[tuple[dict, dict]]] = defaultdict(list)
        sources = set()
        for split in SPLITS:
            coco = COCO(str(tmp_path / "output" / model / "annotations" / f"{split}.json"))
            sources |= {im["source_image"] for im in coco.dataset["images"]}
            for ann in coco.dataset["annotations"]:
                im = coco.imgs[ann["image_id"]]
                pieces[(im["source_image"], ann["frame_instance"])].append((im, ann))
        assert all("rework" not in s for s in sources), "rework frames are never used to train"
        for label_path in label_files:
            source = f"images/{oring.defect_folder}/{label_path.stem}.bmp"
            frame_shape = (config.frame.height, config.frame.width)
            instances, _ = load_instances(label_path, frame_shape, config.classes)
            for k, inst in enumerate(instances):
                full = _frame_mask(inst.geometry, *frame_shape)
                union = np.zeros(frame_shape, bool)
                for im, ann in pieces[(source, k)]:
                    rle = mask_utils.merge(mask_utils.frPyObjects(ann["segmentation"], im["height"], im["width"]))
                    y, x = im["tile_y"], im["tile_x"]
                    union[y : y + im["height"], x : x + im["width"]] |= mask_utils.decode(rle).astype(bool)
                iou = (union & full).sum() / (union | full).sum()
                assert iou >= 0.99, f"{source} instance {k} ({inst.label}): IoU {iou:.4f}"
