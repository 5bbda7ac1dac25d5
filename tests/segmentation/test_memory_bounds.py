"""Evaluation memory is bounded by design (issue 17): it must not grow with tiles x detections x tile area.

A real torchvision Mask R-CNN (small heads, so 100 tiles run in ~7 s on one thread) with
``box_score_thresh=0`` emits the maximum of 100 detections on every tile, as an untrained model
does. Validation (``predict_records`` + pycocotools ``coco_metrics``, the path training,
``predict --evaluate`` and ``evaluate segmentation`` share) of 100 such tiles must raise the
process's peak resident memory by no more than a bound computed from one batch plus the RLEs;
keeping each tile's dense masks, as before, would cost 100 x 100 x 128 x 128 x 4 bytes = 0.65 GB.
"""

from __future__ import annotations

import gc
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch import nn
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.ops import MultiScaleRoIAlign

from oringscan.config import TrainingConfig
from oringscan.segmentation.anomaly import scale_anomaly
from oringscan.segmentation.coco_eval import (
    MAX_DETECTIONS,
    TilePrediction,
    coco_metrics,
    predict_compact,
    predict_records,
)
from oringscan.segmentation.dataset import load_coco_split, to_model_input
from oringscan.segmentation.inference import Segmenter, output_to_instances, run_model
from oringscan.segmentation.models import ModelSpec

TILE = 128
TILES = 100  # 200 caught the same regression at twice the CPU time (the gathering is linear)
BATCH = 4
CLASSES = ["scratch", "pit"]

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="reads peak RSS from /proc/self/status"
)


def max_detection_model(seed: int = 0, channels: int = 3) -> MaskRCNN:
    """An untrained Mask R-CNN that keeps every box (score threshold 0): 100 detections per tile."""
    torch.manual_seed(seed)
    backbone = nn.Sequential(nn.Conv2d(channels, 16, 3, stride=4, padding=1), nn.ReLU())
    backbone.out_channels = 16  # type: ignore[assignment]
    model = MaskRCNN(
        backbone,
        num_classes=None,
        min_size=64,
        max_size=64,
        image_mean=[0.5] * channels,
        image_std=[0.25] * channels,
        rpn_anchor_generator=AnchorGenerator(sizes=((4, 8, 16, 32),), aspect_ratios=((0.5, 1.0, 2.0),)),
        rpn_post_nms_top_n_test=300,
        box_roi_pool=MultiScaleRoIAlign(["0"], 7, 2),
        box_head=TwoMLPHead(16 * 7 * 7, 32),
        box_predictor=FastRCNNPredictor(32, len(CLASSES) + 1),
        box_score_thresh=0.0,
        mask_roi_pool=MultiScaleRoIAlign(["0"], 14, 2),
        mask_head=MaskRCNNHeads(16, [8], 1),
        mask_predictor=MaskRCNNPredictor(8, 8, len(CLASSES) + 1),
    )
    return model.eval()


def write_split(root: Path, tiles: int) -> Path:
    """A COCO split of ``tiles`` random 128 px tiles, every fourth with one labelled square."""
    rng = np.random.default_rng(0)
    img_dir = root / "images" / "val"
    img_dir.mkdir(parents=True)
    images, annotations = [], []
    for i in range(1, tiles + 1):
        cv2.imwrite(str(img_dir / f"t{i}.png"), rng.integers(0, 255, (TILE, TILE), dtype=np.uint8))
        images.append({"id": i, "file_name": f"t{i}.png", "width": TILE, "height": TILE})
        if i % 4 == 0:
            x, y = (int(v) for v in rng.integers(10, 80, 2))
            poly = [x, y, x + 30, y, x + 30, y + 20, x, y + 20]
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i,
                    "category_id": 1 + i % 2,
                    "segmentation": [poly],
                    "area": 600.0,
                    "bbox": [x, y, 30, 20],
                    "iscrowd": 0,
                }
            )
    ann = root / "annotations" / "val.json"
    ann.parent.mkdir(parents=True)
    categories = [{"id": k + 1, "name": n} for k, n in enumerate(CLASSES)]
    ann.write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": categories}), encoding="utf-8"
    )
    return ann


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def peak_growth_mb(run):  # noqa: ANN001, ANN201 - any zero-argument callable, and its result
    """(peak RSS during ``run()`` above the RSS before it in MB, its result); peak reset via clear_refs."""
    gc.collect()
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pytest.skip("cannot reset the peak RSS (/proc/self/clear_refs)")
    before = _status_kb("VmRSS")
    result = run()
    return (_status_kb("VmHWM") - before) / 1024, result


def test_evaluating_many_max_detection_tiles_keeps_memory_bounded(tmp_path) -> None:
    torch.set_num_threads(1)
    ann = write_split(tmp_path, TILES)
    records = load_coco_split(ann, CLASSES)
    model = max_detection_model()
    device = torch.device("cpu")

    def evaluate(subset: list) -> tuple[dict, dict]:
        predictions = predict_records(model, subset, device, BATCH)
        return predictions, coco_metrics(subset, predictions, CLASSES)

    evaluate(records[:BATCH])  # warm-up: allocator pools, lazy imports
    one_batch, _ = peak_growth_mb(lambda: evaluate(records[:BATCH]))
    many, (predictions, metrics) = peak_growth_mb(lambda: evaluate(records))

    # The model really emits the maximum, and what is kept per tile is RLE, not masks.
    assert all(len(p) == MAX_DETECTIONS for p in predictions.values())
    assert all(
        isinstance(p, TilePrediction) and isinstance(p.rles[0]["counts"], bytes) for p in predictions.values()
    )
    kept_mb = sum(p.nbytes for p in predictions.values()) / 2**20
    dense_mb = TILES * MAX_DETECTIONS * TILE * TILE * 4 / 2**20  # what keeping the masks would cost
    assert metrics is not None and metrics["segm"]["AP"] is not None

    # Bound: one batch's working set, plus the RLEs and COCOeval's per-detection bookkeeping
    # (~1.5 KB per detection) for the whole split, plus allocator slack. Measured on one CPU
    # thread: one batch ~48 MB, 100 tiles ~47 MB, bound ~152 MB, dense masks 625 MB.
    bound = 1.5 * one_batch + 4 * kept_mb + TILES * MAX_DETECTIONS * 1.5 / 1024 + 48
    print(
        f"one batch {one_batch:.1f} MB, {TILES} tiles {many:.1f} MB, RLE {kept_mb:.1f} MB, bound {bound:.0f} "
        "MB"
    )
    assert bound < dense_mb / 3, "the bound must be able to catch dense masks being kept"
    assert many <= bound, (
        f"evaluating {TILES} tiles raised peak RSS by {many:.0f} MB (one batch: {one_batch:.0f} MB, bound "
        f"{bound:.0f} MB)"
    )


def test_streamed_masks_equal_torchvision_postprocess() -> None:
    """predict_compact pastes one mask at a time yet encodes exactly torchvision's pasted masks."""
    torch.set_num_threads(1)
    model = max_detection_model(seed=3)
    rng = np.random.default_rng(1)
    images = [to_model_input(rng.integers(0, 255, (96, 112), dtype=np.uint8)) for _ in range(2)]
    device = torch.device("cpu")
    outputs = run_model(model, images, device)
    reference = [TilePrediction.from_output(o, 0.5) for o in outputs]
    streamed = predict_compact(model, images, device, 0.5)
    for ref, got in zip(reference, streamed, strict=True):
        assert len(got) == len(ref) == MAX_DETECTIONS
        assert (
            (got.labels == ref.labels).all()
            and np.allclose(got.scores, ref.scores)
            and np.allclose(got.boxes, ref.boxes)
        )
        assert [r["counts"] for r in got.rles] == [r["counts"] for r in ref.rles]
        assert got.rles[0]["size"] == [96, 112]
    # Instances decoded from the RLEs are the ones the raw output gives (training's picture grid,
    # evaluate's frame-from-tiles path).
    threshold = float(np.median(outputs[0]["scores"].numpy()))
    expected = output_to_instances(outputs[0], CLASSES, (5, 7), threshold, 0.5, 4)
    decoded = streamed[0].instances(CLASSES, (5, 7), threshold, 4)
    assert len(decoded) == len(expected) > 0
    for d, e in zip(decoded, expected, strict=True):
        assert (d.label, d.score, d.offset) == (e.label, e.score, e.offset) and np.array_equal(d.mask, e.mask)
    # The cap holds even when the model's own limit is higher.
    model.roi_heads.detections_per_img = 300
    assert all(len(p) <= 20 for p in predict_compact(model, images, device, 0.5, max_detections=20))


def max_detection_segmenter(seed: int = 0, anomaly_channel: bool = False) -> Segmenter:
    """The inspection wrapper around :func:`max_detection_model`, reporting every detection (score >= 0)."""
    spec = ModelSpec(
        "tiny", len(CLASSES) + 1, 64, None, False, 0, anomaly_channel, 2.0 if anomaly_channel else None
    )
    training = TrainingConfig(score_threshold=0.0, mask_threshold=0.5, min_mask_area=1)
    model = max_detection_model(seed, channels=4 if anomaly_channel else 3)
    return Segmenter(model, spec, list(CLASSES), "model1", training, torch.device("cpu"))


@pytest.mark.parametrize("anomaly_channel", [False, True])
def test_inspection_instances_equal_the_dense_path(anomaly_channel: bool) -> None:
    """predict_arrays pastes one mask at a time, yet gives exactly the instances of torchvision's
    dense output."""
    torch.set_num_threads(1)
    segmenter = max_detection_segmenter(seed=5, anomaly_channel=anomaly_channel)
    rng = np.random.default_rng(2)
    images = [rng.integers(0, 255, (96, 112), dtype=np.uint8) for _ in range(3)]
    maps = [rng.random((96, 112), dtype=np.float32) * 4 for _ in images] if anomaly_channel else None
    offsets = [(0, 0), (40, 8), (300, 200)]
    got = segmenter.predict_arrays(images, offsets, batch_size=2, anomaly_maps=maps)

    # The old path: the model's own outputs, every mask pasted at tile size, then cropped.
    scaled = [scale_anomaly(m, 2.0) for m in maps] if maps is not None else [None] * len(images)
    inputs = [to_model_input(i, a) for i, a in zip(images, scaled, strict=True)]
    outputs = [
        o for start in (0, 2) for o in run_model(segmenter.model, inputs[start : start + 2], segmenter.device)
    ]
    assert all(len(o["scores"]) == MAX_DETECTIONS for o in outputs)
    for output, offset, instances in zip(outputs, offsets, got, strict=True):
        expected = output_to_instances(output, CLASSES, offset, 0.0, 0.5, 1)
        assert len(instances) == len(expected) > MAX_DETECTIONS // 2
        for g, e in zip(instances, expected, strict=True):
            assert (g.label, g.score, g.offset) == (e.label, e.score, e.offset) and np.array_equal(
                g.mask, e.mask
            )
    if anomaly_channel:  # the maps really reach the model
        hot = segmenter.predict_arrays(images[:1], anomaly_maps=[np.full((96, 112), 9.0, np.float32)])[0]
        assert [i.score for i in hot] != [i.score for i in got[0]]


def test_inspecting_max_detection_tiles_keeps_memory_bounded() -> None:
    """An unsure model on inspection: per batch, one tile-size mask at a time, not 100 per tile."""
    torch.set_num_threads(1)
    size, tiles = 384, 8
    segmenter = max_detection_segmenter(seed=1)
    rng = np.random.default_rng(3)
    images = [rng.integers(0, 255, (size, size), dtype=np.uint8) for _ in range(tiles)]
    segmenter.predict_arrays(images[:BATCH], batch_size=BATCH)  # warm-up
    growth, instances = peak_growth_mb(lambda: segmenter.predict_arrays(images, batch_size=BATCH))

    assert all(len(group) == MAX_DETECTIONS for group in instances)
    kept_mb = sum(inst.mask.nbytes for group in instances for inst in group) / 2**20
    # torchvision's postprocess holds a batch's masks as float at tile size, twice while stacking.
    dense_mb = 2 * BATCH * MAX_DETECTIONS * size * size * 4 / 2**20
    bound = 2 * kept_mb + 64  # measured on one CPU thread: ~38 MB (the old dense path: ~280 MB)
    print(
        f"{tiles} tiles at {size} px: peak +{growth:.1f} MB, crops {kept_mb:.1f} MB, bound {bound:.0f} MB, "
        f"dense {dense_mb:.0f} MB"
    )
    assert bound < dense_mb / 4, "the bound must be able to catch dense masks per batch"
    assert growth <= bound, (
        f"inspecting {tiles} max-detection tiles raised peak RSS by {growth:.0f} MB (bound {bound:.0f} MB)"
    )
