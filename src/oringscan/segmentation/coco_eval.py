"""pycocotools bbox and segm AP of tile predictions (validation during training, and test).

Memory stays bounded by design, as in torchvision's ``references/detection/coco_eval.py``: each
tile's masks are thresholded and encoded to COCO RLE as soon as its batch leaves the model, and
the dense tile-size mask tensor is dropped with the batch. What is kept per tile is a
:class:`TilePrediction` (boxes, labels, scores and at most ``MAX_DETECTIONS`` RLEs, a few hundred
bytes each), never a (detections x H x W) array, so validating 2,000 tiles costs about what one
batch does plus the RLEs COCO evaluation needs anyway.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from tqdm import tqdm

from oringscan.segmentation.dataset import TileRecord, record_input
from oringscan.segmentation.inference import run_model, run_model_streamed
from oringscan.segmentation.stitching import tighten
from oringscan.types import Instance

# COCO's largest maxDets: AP never looks past the 100 best detections of an image, so keeping more
# only costs memory (torchvision's ``detections_per_img`` default is the same 100).
MAX_DETECTIONS = 100


@dataclass(slots=True)
class TilePrediction:
    """One tile's detections in compact form: masks as compressed COCO RLE at tile size."""

    height: int
    width: int
    boxes: np.ndarray  # (N, 4) float32, x0 y0 x1 y1 in tile pixels
    labels: np.ndarray  # (N,) int64, 1-based class index
    scores: np.ndarray  # (N,) float32, best first
    rles: list[dict[str, Any]]  # N compressed RLEs ({'size': [h, w], 'counts': bytes})

    def __len__(self) -> int:
        return len(self.rles)

    @classmethod
    def from_output(
        cls,
        output: Mapping[str, torch.Tensor],
        mask_threshold: float = 0.5,
        max_detections: int = MAX_DETECTIONS,
    ) -> TilePrediction:
        """Encode one raw torchvision output (masks ``(N, 1, H, W)`` probabilities), best scores first."""
        masks = output["masks"]
        height, width = int(masks.shape[-2]), int(masks.shape[-1])
        scores = output["scores"].detach().float().cpu().numpy()
        order = np.argsort(-scores, kind="stable")[:max_detections]
        rles = []
        for i in order.tolist():
            # One tile-size mask at a time (pycocotools wants uint8 in Fortran order).
            binary = (masks[i, 0] > mask_threshold).cpu().numpy()
            rles.append(mask_utils.encode(np.asfortranarray(binary, dtype=np.uint8)))
        return cls(
            height,
            width,
            output["boxes"].detach().float().cpu().numpy()[order].reshape(-1, 4),
            output["labels"].detach().cpu().numpy().astype(np.int64)[order],
            scores[order].astype(np.float32),
            rles,
        )

    @property
    def nbytes(self) -> int:
        """Bytes held by the arrays and RLE strings (what evaluation keeps per tile)."""
        return int(
            self.boxes.nbytes
            + self.labels.nbytes
            + self.scores.nbytes
            + sum(len(r["counts"]) for r in self.rles)
        )

    def coco_results(self, image_id: int) -> list[dict[str, Any]]:
        """COCO result entries (every score: AP integrates over them); the RLEs are shared, not copied."""
        out = []
        for (x0, y0, x1, y1), label, score, rle in zip(
            self.boxes.tolist(), self.labels.tolist(), self.scores.tolist(), self.rles, strict=True
        ):
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

    def instances(
        self,
        class_names: Sequence[str],
        offset: tuple[int, int] = (0, 0),
        score_threshold: float = 0.5,
        min_area: int = 1,
    ) -> list[Instance]:
        """Detections at or above ``score_threshold`` as tight crops at ``offset`` (decoded one by one)."""
        out: list[Instance] = []
        for label, score, rle in zip(self.labels.tolist(), self.scores.tolist(), self.rles, strict=True):
            if score < score_threshold:
                continue
            index = int(label) - 1
            name = class_names[index] if 0 <= index < len(class_names) else f"class{int(label)}"
            inst = tighten(Instance(name, float(score), mask_utils.decode(rle).astype(bool), offset))
            if inst is not None and inst.area >= min_area:
                out.append(inst)
        return out


@torch.inference_mode()
def predict_compact(
    model: torch.nn.Module,
    images: Sequence[torch.Tensor],
    device: torch.device,
    mask_threshold: float = 0.5,
    max_detections: int = MAX_DETECTIONS,
) -> list[TilePrediction]:
    """A batch of CxHxW images straight to :class:`TilePrediction`, one pasted mask at a time.

    torchvision's ``postprocess`` pastes every detection's 28x28 mask into a dense image-size
    float tensor and stacks them (100 detections on a 640 px tile: 164 MB, twice over while
    stacking, per image of the batch). This runs the same stages (transform, backbone, RPN, ROI
    heads) and the same paste (``paste_mask_in_image``, same padding and box expansion), but
    thresholds and RLE-encodes each pasted mask before the next, so a batch costs its features
    plus one tile-size mask. Models without that structure go through :func:`run_model`.
    """
    streamed = run_model_streamed(model, images, device)
    if streamed is None:
        return [
            TilePrediction.from_output(o, mask_threshold, max_detections)
            for o in run_model(model, images, device)
        ]
    out = []
    for det in streamed:
        scores = det.scores.numpy()
        order = np.argsort(-scores, kind="stable")[:max_detections]
        rles = []
        for i in order.tolist():
            binary = (det.mask(i) > mask_threshold).numpy()
            rles.append(mask_utils.encode(np.asfortranarray(binary, dtype=np.uint8)))
        out.append(
            TilePrediction(
                det.height,
                det.width,
                det.boxes.numpy()[order].reshape(-1, 4),
                det.labels.numpy().astype(np.int64)[order],
                scores[order].astype(np.float32),
                rles,
            )
        )
    return out


def as_prediction(
    value: TilePrediction | Mapping[str, torch.Tensor], mask_threshold: float = 0.5
) -> TilePrediction:
    """A :class:`TilePrediction` as is, or a raw model output encoded with ``mask_threshold``."""
    return value if isinstance(value, TilePrediction) else TilePrediction.from_output(value, mask_threshold)


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


def detections(
    image_id: int, output: Mapping[str, torch.Tensor], mask_threshold: float
) -> list[dict[str, Any]]:
    """One image's raw model output as COCO result entries (its best ``MAX_DETECTIONS``)."""
    return TilePrediction.from_output(output, mask_threshold).coco_results(image_id)


def predict_records(
    model: torch.nn.Module,
    records: Sequence[TileRecord],
    device: torch.device,
    batch_size: int = 4,
    progress: bool = False,
    mask_threshold: float = 0.5,
    max_detections: int = MAX_DETECTIONS,
) -> dict[int, TilePrediction]:
    """Compact predictions per tile image id, encoded as they come (memory: one batch + RLEs).

    The model's ``roi_heads.detections_per_img`` is capped at ``max_detections`` for the call, so
    no more than that many masks per tile are ever pasted at tile size.
    """
    model.eval()
    heads = getattr(model, "roi_heads", None)
    saved = getattr(heads, "detections_per_img", None)
    if saved is not None:
        heads.detections_per_img = min(int(saved), max_detections)
    predictions: dict[int, TilePrediction] = {}
    try:
        starts = range(0, len(records), max(1, batch_size))
        for start in tqdm(starts, desc="evaluate", unit="batch", disable=not progress, leave=False):
            chunk = records[start : start + batch_size]
            batch = predict_compact(
                model, [record_input(r) for r in chunk], device, mask_threshold, max_detections
            )
            for record, prediction in zip(chunk, batch, strict=True):
                predictions[record.image_id] = prediction
    finally:
        if saved is not None:
            heads.detections_per_img = saved
    return predictions


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
    outputs: Mapping[int, TilePrediction | Mapping[str, torch.Tensor]],
    class_names: Sequence[str],
    mask_threshold: float = 0.5,
) -> dict[str, Any] | None:
    """{'bbox': {...}, 'segm': {...}} or None when the records hold no labelled defect.

    ``outputs`` maps image id to a :class:`TilePrediction` (from :func:`predict_records`; its masks
    were thresholded when encoded) or to a raw model output, encoded here with ``mask_threshold``.
    """
    gt = ground_truth(records, class_names)
    if not gt.dataset["annotations"]:
        return None
    results = [
        d
        for r in records
        for d in as_prediction(outputs[r.image_id], mask_threshold).coco_results(r.image_id)
    ]
    metrics: dict[str, Any] = {}
    for iou_type in ("bbox", "segm"):
        if not results:
            metrics[iou_type] = {
                "AP": 0.0,
                "AP50": 0.0,
                "AP75": 0.0,
                "per_class": {
                    n: {"AP": 0.0, "AP50": 0.0, "AP75": 0.0, "pr50": [0.0] * 101} for n in class_names
                },
            }
            continue
        with contextlib.redirect_stdout(io.StringIO()):
            dt = gt.loadRes(results)
            evaluator = COCOeval(gt, dt, iou_type)
            evaluator.params.imgIds = [r.image_id for r in records]
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
        metrics[iou_type] = _summary(evaluator, class_names)
        del dt, evaluator
    return metrics
