"""Segmentation parts that need no training: stitching (oracle), dataset, models, exports, checkpoints."""

from __future__ import annotations

import json
import logging

import cv2
import numpy as np
import pytest
import torch
from support.segmentation import tiny_config, write_tiny_coco
from torchvision import tv_tensors

from oringscan.config import Config, TilingConfig
from oringscan.errors import ModelFileError
from oringscan.segmentation import models as seg_models
from oringscan.segmentation.checkpoints import load_checkpoint, save_checkpoint
from oringscan.segmentation.dataset import (
    RandomRot90,
    TileDataset,
    decode_segmentation,
    load_coco_split,
    train_transforms,
)
from oringscan.segmentation.evaluation import mask_iou
from oringscan.segmentation.labelme_export import to_labelme
from oringscan.segmentation.stitching import stitch
from oringscan.tiling import tile_grid
from oringscan.types import Instance, TileBox

FRAME = (2048, 2448)


def _pieces(
    defect: np.ndarray, boxes: list[TileBox], label: str = "defect", score: float = 0.9
) -> list[Instance]:
    """What a perfect model would predict: the defect's mask as each tile sees it."""
    out = []
    for box in boxes:
        crop = defect[box.slices()]
        if crop.any():
            out.append(Instance(label, score, crop.copy(), (box.x, box.y)))
    return out


def _tiles_touched(defect: np.ndarray, boxes: list[TileBox]) -> int:
    return sum(1 for b in boxes if defect[b.slices()].any())


def _assert_same(found: list[Instance], truth: list[np.ndarray]) -> None:
    assert len(found) == len(truth)
    h, w = FRAME
    for mask in truth:
        target = Instance("defect", 1.0, mask, (0, 0))
        best = max(mask_iou(target, f) for f in found)
        dense = max(float((f.full_mask(h, w) & mask).sum() / (f.full_mask(h, w) | mask).sum()) for f in found)
        assert best >= 0.99 and dense >= 0.99


def test_oracle_stitching_gives_back_frame_defects_spanning_two_and_four_tiles() -> None:
    boxes = tile_grid((300, 200, 1800, 1600), FRAME, TilingConfig())
    b = boxes[0]
    x_seam, y_seam = b.x + b.w, b.y + b.h  # the first tile's far edges (inside the next tiles)
    defects = []
    two = np.zeros(FRAME, np.uint8)  # a scratch across a vertical tile border, well beyond the overlap
    cv2.line(two, (x_seam - 250, b.y + 300), (x_seam + 120, b.y + 340), 1, 4)
    defects.append(two)
    four = np.zeros(FRAME, np.uint8)  # a bite over a tile corner: four tiles see a part of it
    cv2.ellipse(four, (x_seam - 50, y_seam - 50), (160, 70), 35, 0, 360, 1, -1)
    defects.append(four)
    inside_overlap = np.zeros(FRAME, np.uint8)  # fully inside an overlap strip: seen whole twice
    cv2.circle(inside_overlap, (x_seam - 50, b.y + 120), 12, 1, -1)
    defects.append(inside_overlap)
    pit = np.zeros(FRAME, np.uint8)  # a small pit inside one tile
    cv2.circle(pit, (b.x + 100, b.y + 100), 3, 1, -1)
    defects.append(pit)
    assert [_tiles_touched(d, boxes) for d in defects] == [2, 4, 2, 1]

    pieces = [p for d in defects for p in _pieces(d, boxes)]
    assert len(pieces) == 9
    found = stitch(pieces)
    _assert_same(found, [d.astype(bool) for d in defects])


def test_oracle_stitching_without_tile_overlap_joins_parts_across_the_seam() -> None:
    boxes = tile_grid((0, 0, 1280, 1280), FRAME, TilingConfig(tile_size=640, overlap=0))
    defect = np.zeros(FRAME, np.uint8)
    cv2.line(defect, (600, 620), (700, 680), 1, 5)  # crosses the corner of four abutting tiles
    assert _tiles_touched(defect, boxes) >= 3
    _assert_same(stitch(_pieces(defect, boxes)), [defect.astype(bool)])


def test_stitching_keeps_crossing_scratches_apart_and_merges_duplicates() -> None:
    boxes = tile_grid((0, 0, 1500, 1200), FRAME, TilingConfig())
    a = np.zeros(FRAME, np.uint8)
    b = np.zeros(FRAME, np.uint8)
    cv2.line(a, (300, 300), (700, 420), 1, 3)  # an X of two scratches, both cut by the x=640 border
    cv2.line(b, (300, 420), (700, 300), 1, 3)
    pieces = _pieces(a, boxes) + _pieces(b, boxes)
    # A duplicate of the first scratch's left part (a slightly fatter second detection).
    left = pieces[0]
    fat = cv2.dilate(left.mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    pieces.append(Instance("defect", 0.6, fat, left.offset))
    found = stitch(pieces)
    assert len(found) == 2
    assert all(f.score == pytest.approx(0.9) for f in found)
    # Class-aware: the same mask predicted as another class stays separate unless agnostic.
    other = Instance("bulge", 0.7, a[0:1000, 0:1000].astype(bool), (0, 0))
    assert len(stitch([*pieces, other])) == 3
    assert len(stitch([*pieces, other], class_agnostic=True)) == 2


def test_stitching_output_is_crops_not_frames_and_drops_empty() -> None:
    mask = np.zeros((640, 640), bool)
    mask[10:20, 30:50] = True
    found = stitch(
        [Instance("defect", 0.5, mask, (100, 200)), Instance("defect", 0.4, np.zeros((5, 5), bool), (0, 0))]
    )
    assert len(found) == 1
    assert found[0].mask.shape == (10, 20) and found[0].offset == (130, 210)
    assert found[0].bbox == (130, 210, 20, 10)


def test_dataset_keeps_good_tiles_as_seeded_negatives(tmp_path) -> None:
    type_dir = write_tiny_coco(tmp_path, counts={"train": (4, 6)})
    records = load_coco_split(type_dir / "annotations" / "train.json", ["defect"])
    ds = TileDataset(records, None, negative_ratio=0.5, seed=3)
    assert len(ds.positives) == 4 and len(ds.negatives) == 6
    assert len(ds) == 6 and sum(not r.is_defect for r in ds.items) == 2
    first = [r.image_id for r in ds.items]
    ds.set_epoch(1)
    ds.set_epoch(0)
    assert [r.image_id for r in ds.items] == first  # same epoch, same draw (resume-safe)
    assert len(TileDataset(records, None, negative_ratio=None)) == 10
    image, target = ds[len(ds) - 1]  # a good tile: empty but well-formed target
    assert image.shape == (3, 96, 96) and target["boxes"].shape == (0, 4) and target["masks"].shape[0] == 0


def test_augmentations_keep_masks_boxes_and_labels_together(tmp_path) -> None:
    type_dir = write_tiny_coco(tmp_path, counts={"train": (6, 0)}, seed=5)
    records = load_coco_split(type_dir / "annotations" / "train.json", ["defect"])
    cfg = tiny_config().training.model_copy(update={"rot90": 1.0, "rotation_degrees": 10.0})
    torch.manual_seed(0)
    ds = TileDataset(records, train_transforms(cfg), negative_ratio=0.0)
    for i in range(len(ds)):
        image, target = ds[i]
        masks, boxes = target["masks"], target["boxes"]
        assert image.dtype == torch.float32 and 0 <= float(image.min()) and float(image.max()) <= 1
        assert len(masks) == len(boxes) == len(target["labels"]) >= 1
        for mask, box in zip(masks, boxes, strict=True):
            ys, xs = torch.nonzero(mask, as_tuple=True)
            assert box.tolist() == [
                float(xs.min()),
                float(ys.min()),
                float(xs.max()) + 1,
                float(ys.max()) + 1,
            ]
            # Defects are drawn dark (35) on a ~150 texture: the mask must still sit on dark pixels.
            assert float(image[0][mask.bool()].mean()) < 0.45


def test_rot90_is_an_exact_permutation() -> None:
    img = torch.arange(2 * 5 * 7, dtype=torch.uint8).reshape(1, 10, 7).expand(3, -1, -1)
    mask = torch.zeros(1, 10, 7, dtype=torch.uint8)
    mask[0, 1:3, 4:6] = 1
    boxes = tv_tensors.BoundingBoxes([[4, 1, 6, 3]], format="XYXY", canvas_size=(10, 7))
    torch.manual_seed(1)
    out_img, out_mask, out_boxes = RandomRot90(p=1.0)(tv_tensors.Image(img), tv_tensors.Mask(mask), boxes)
    k = next(k for k in (1, 2, 3) if torch.equal(out_img, torch.rot90(img, k=-k, dims=(1, 2))))
    assert torch.equal(out_mask, torch.rot90(mask, k=-k, dims=(1, 2)))
    assert tuple(out_boxes.canvas_size) == tuple(out_img.shape[-2:])


def test_decode_segmentation_polygons_and_rle() -> None:
    poly = [[10, 10, 30, 10, 30, 20, 10, 20]]
    mask = decode_segmentation(poly, 40, 50)
    assert mask.shape == (40, 50) and 180 <= mask.sum() <= 231
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask))
    assert np.array_equal(
        decode_segmentation({"size": rle["size"], "counts": rle["counts"].decode()}, 40, 50), mask
    )


@pytest.mark.parametrize("backbone", seg_models.BACKBONES)
def test_every_backbone_builds_with_config_classes(backbone: str) -> None:
    training = Config().training.model_copy(update={"backbone": backbone})
    model, spec, source = seg_models.create_model(training, num_classes=4, tile_size=640)
    # lite0_fpn always starts from the ImageNet weights of its pip package; the others from random init here.
    assert source == "random-init" or (backbone == "lite0_fpn" and source.startswith("imagenet:"))
    assert spec.num_classes == 4
    assert model.roi_heads.box_predictor.cls_score.out_features == 4
    assert model.roi_heads.mask_predictor.mask_fcn_logits.out_channels == 4
    rebuilt = seg_models.build_model(seg_models.ModelSpec.from_dict(spec.to_dict()))
    assert rebuilt.state_dict().keys() == model.state_dict().keys()


def test_random_init_warns_once_and_explicit_weights_load(tmp_path, monkeypatch, caplog) -> None:
    monkeypatch.setattr(seg_models, "_warned_random_init", False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "empty_cache"))
    training = Config().training.model_copy(update={"backbone": "resnet18_fpn", "input_size": 128})
    with caplog.at_level(logging.WARNING, logger="oringscan"):
        seg_models.create_model(training, 2, 640)
        seg_models.create_model(training, 2, 640)
    assert sum("random init" in r.getMessage() for r in caplog.records) == 1

    from torchvision.models import resnet18

    imagenet = resnet18().state_dict()
    weights = tmp_path / "my weights" / "resnet18.pth"
    weights.parent.mkdir()
    torch.save(imagenet, weights)
    model, spec, source = seg_models.create_model(training.model_copy(update={"weights": weights}), 2, 640)
    assert source == f"file:{weights}" and spec.frozen_bn and spec.trainable_backbone_layers == 3
    assert torch.equal(model.backbone.body.conv1.weight, imagenet["conv1.weight"])
    assert not model.backbone.body.layer1[0].conv1.weight.requires_grad  # frozen like torchvision
    assert model.backbone.body.layer4[0].conv1.weight.requires_grad

    bad = tmp_path / "notweights.pth"
    bad.write_text("hello")
    with pytest.raises(ModelFileError, match="notweights.pth"):
        seg_models.create_model(training.model_copy(update={"weights": bad}), 2, 640)


def test_checkpoint_loader_refuses_foreign_and_mismatched_files(tmp_path) -> None:
    with pytest.raises(ModelFileError, match="not found"):
        load_checkpoint(tmp_path / "nothing.pth")
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint")
    with pytest.raises(ModelFileError, match="not a readable"):
        load_checkpoint(text)
    plain = tmp_path / "plain.pth"
    torch.save({"weights": torch.zeros(2)}, plain)
    with pytest.raises(ModelFileError, match="not an oringscan segmentation checkpoint"):
        load_checkpoint(plain)
    good = tmp_path / "ck.pth"
    save_checkpoint(
        good,
        {
            "model": {},
            "spec": {},
            "class_names": ["defect"],
            "oring_type": "model1",
            "epoch": 0,
            "config": {},
        },
    )
    assert load_checkpoint(good, expected_type="model1")["epoch"] == 0
    with pytest.raises(ModelFileError, match="trained for o-ring type 'model1', not 'model2'"):
        load_checkpoint(good, expected_type="model2")


def test_labelme_export_round_trips_polygons(tmp_path) -> None:
    mask = np.zeros((60, 80), bool)
    cv2.ellipse(mask.view(np.uint8), (40, 30), (25, 12), 20, 0, 360, 1, -1)
    inst = Instance("scratch", 0.87, mask, (1000, 500))
    frame = tmp_path / "frames with space" / "f 1.bmp"
    doc = to_labelme([inst], frame, tmp_path / "out" / "f 1.json", 2048, 2448)
    assert doc["imagePath"] == "../frames with space/f 1.bmp" and doc["imageData"] is None
    (shape,) = doc["shapes"]
    assert (
        shape["label"] == "scratch" and shape["shape_type"] == "polygon" and "0.870" in shape["description"]
    )
    canvas = np.zeros((2048, 2448), np.uint8)
    cv2.fillPoly(canvas, [np.round(np.array(shape["points"])).astype(np.int32)], 1)
    full = inst.full_mask(2048, 2448)
    assert (canvas.astype(bool) & full).sum() / (canvas.astype(bool) | full).sum() > 0.9
    json.dumps(doc)  # JSON-ready


def test_coco_metrics_score_perfect_predictions_one_and_none_zero(tmp_path) -> None:
    from oringscan.segmentation.coco_eval import coco_metrics

    type_dir = write_tiny_coco(tmp_path, counts={"test": (4, 2)}, seed=2)
    records = load_coco_split(type_dir / "annotations" / "test.json", ["defect"])
    perfect, empty = {}, {}
    for r in records:
        masks = torch.from_numpy(r.masks()).float()
        boxes = torch.tensor(
            [Instance("d", 1.0, m.astype(bool), (0, 0)).bbox for m in r.masks()], dtype=torch.float32
        )
        boxes = boxes.reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]  # xywh -> xyxy
        perfect[r.image_id] = {
            "boxes": boxes,
            "labels": torch.ones(len(masks), dtype=torch.int64),
            "scores": torch.full((len(masks),), 0.9),
            "masks": masks[:, None],
        }
        empty[r.image_id] = {
            "boxes": torch.zeros(0, 4),
            "labels": torch.zeros(0, dtype=torch.int64),
            "scores": torch.zeros(0),
            "masks": torch.zeros(0, 1, r.height, r.width),
        }
    good = coco_metrics(records, perfect, ["defect"])
    assert good["segm"]["AP50"] == pytest.approx(1.0) and good["bbox"]["AP"] > 0.9
    assert good["segm"]["per_class"]["defect"]["AP75"] == pytest.approx(1.0)
    assert coco_metrics(records, empty, ["defect"])["segm"]["AP50"] == 0.0
    assert coco_metrics([r for r in records if not r.is_defect], empty, ["defect"]) is None
