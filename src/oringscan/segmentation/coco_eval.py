"""pycocotools bbox and segm AP of tile predictions (validation during training, and test)."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from tqdm import tqdm

from oringscan.segmentation.dataset import TileRecord, read_gray, to_model_input
from oringscan.segmentation.inference import run_model


def ground_truth(records: Sequence[TileRecord], class_names: Sequence[str]) -> COCO:
    """An in-memory COCO ground truth with the config's class ids (1..K)."""
    images, annotations = [], []
    for record in records:
        images.append({"id": record.image_id, "width": record.width, "height": record.height})
        for ann, mask in zip(record.annotations, record.masks(), strict=True):
            if not mask.any():
                continue
            rle = mask_utils.encode(np.asfortranarray(mask))
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": record.image_id,
                    "category_id": ann.class_index,
                    "segmentation": rle,
                    "area": float(mask_utils.area(rle)),
                    "bbox": [float(v) for v in mask_utils.toBbox(rle)],
                    "iscrowd": 0,
                }
            )
    coco = COCO()
    coco.dataset = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i + 1, "name": n} for i, n in enumerate(class_names)],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def detections(image_id: int, output: dict[str, torch.Tensor], mask_threshold: float) -> list[dict[str, Any]]:
    """One image's raw model output as COCO result entries (every score: AP integrates over them)."""
    out = []
    masks = (output["masks"][:, 0] > mask_threshold).numpy().astype(np.uint8)
    for mask, label, score in zip(masks, output["labels"].tolist(), output["scores"].tolist(), strict=True):
        rle = mask_utils.encode(np.asfortranarray(mask))
        x0, y0, x1, y1 = (float(v) for v in output["boxes"][len(out)])
        out.append(
            {
                "image_id": image_id,
                "category_id": int(label),
                "segmentation": rle,
                "bbox": [x0, y0, x1 - x0, y1 - y0],
                "score": float(score),
            }
        )
    return out


def predict_records(
    model: torch.nn.Module,
    records: Sequence[TileRecord],
    device: torch.device,
    batch_size: int = 4,
    progress: bool = False,
) -> dict[int, dict[str, torch.Tensor]]:
    """Raw model outputs per tile image id."""
    model.eval()
    outputs: dict[int, dict[str, torch.Tensor]] = {}
    for start in tqdm(range(0, len(records), batch_size), desc="evaluate", unit="batch", disable=not progress, leave=False):
        chunk = records[start : start + batch_size]
        images = [to_model_input(read_gray(r.path)) for r in chunk]
        for record, output in zip(chunk, run_model(model, images, device), strict=True):
            outputs[record.image_id] = output
    return outputs


def _summary(evaluator: COCOeval, class_names: Sequence[str]) -> dict[str, Any]:
    """AP, AP50, AP75 overall and per class (area 'all', 100 detections); None where undefined."""
    precision = evaluator.eval["precision"]  # [IoU, recall, class, area, maxDets]
    iou_thrs = evaluator.params.iouThrs

    def mean(p: np.ndarray) -> float | None:
        valid = p[p > -1]
        return float(valid.mean()) if valid.size else None

    def at(iou: float) -> int:
        return int(np.argmin(np.abs(iou_thrs - iou)))

    result: dict[str, Any] = {
        "AP": mean(precision[:, :, :, 0, -1]),
        "AP50": mean(precision[at(0.5), :, :, 0, -1]),
        "AP75": mean(precision[at(0.75), :, :, 0, -1]),
        "per_class": {},
    }
    cat_ids = evaluator.params.catIds
    for k, cat_id in enumerate(cat_ids):
        name = class_names[cat_id - 1]
        result["per_class"][name] = {
            "AP": mean(precision[:, :, k, 0, -1]),
            "AP50": mean(precision[at(0.5), :, k, 0, -1]),
            "AP75": mean(precision[at(0.75), :, k, 0, -1]),
            # Precision at IoU 0.5 along COCO's 101 recall points (for the PR curve plot).
            "pr50": [float(v) for v in precision[at(0.5), :, k, 0, -1]],
        }
    return result


def coco_metrics(
    records: Sequence[TileRecord],
    outputs: dict[int, dict[str, torch.Tensor]],
    class_names: Sequence[str],
    mask_threshold: float = 0.5,
) -> dict[str, Any] | None:
    """{'bbox': {...}, 'segm': {...}} or None when the records hold no labelled defect."""
    gt = ground_truth(records, class_names)
    if not gt.dataset["annotations"]:
        return None
    results = [d for r in records for d in detections(r.image_id, outputs[r.image_id], mask_threshold)]
    metrics: dict[str, Any] = {}
    for iou_type in ("bbox", "segm"):
        if not results:
            metrics[iou_type] = {"AP": 0.0, "AP50": 0.0, "AP75": 0.0, "per_class": {n: {"AP": 0.0, "AP50": 0.0, "AP75": 0.0, "pr50": [0.0] * 101} for n in class_names}}
            continue
        with contextlib.redirect_stdout(io.StringIO()):
            dt = gt.loadRes(results)
            evaluator = COCOeval(gt, dt, iou_type)
            evaluator.params.imgIds = [r.image_id for r in records]
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
        metrics[iou_type] = _summary(evaluator, class_names)
    return metrics
