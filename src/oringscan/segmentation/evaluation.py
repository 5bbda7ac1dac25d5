"""Test-split evaluation: pycocotools AP per class on tiles, and defect recall on whole frames.

Tile AP says how well masks fit; the plant cares whether a defective ring is caught, so the test
frames are also predicted whole (ROI, tile grid, stitching) and every labelled defect is counted
as found or missed at full resolution. Ground truth per frame is the test tiles' annotations
stitched back together; the frame itself is read from ``source_image`` when it can be found,
otherwise the frame is predicted from its test tiles (same grid, same stitching).
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from oringscan.config import Config
from oringscan.errors import FrameError
from oringscan.frames import read_frame
from oringscan.segmentation.coco_eval import coco_metrics, predict_records
from oringscan.segmentation.dataset import TileRecord, read_gray
from oringscan.segmentation.inference import Segmenter
from oringscan.segmentation.stitching import stitch
from oringscan.segmentation.visualize import grid, overlay
from oringscan.types import Instance
from oringscan.workspace import TypeWorkspace

log = logging.getLogger(__name__)

COCO_SCORE_FLOOR = 0.05  # torchvision's default box_score_thresh


def mask_iou(a: Instance, b: Instance) -> float:
    """IoU of two crop+offset masks without a frame-size array."""
    ax0, ay0 = a.offset
    bx0, by0 = b.offset
    ax1, ay1 = ax0 + a.mask.shape[1], ay0 + a.mask.shape[0]
    bx1, by1 = bx0 + b.mask.shape[1], by0 + b.mask.shape[0]
    x0, y0, x1, y1 = max(ax0, bx0), max(ay0, by0), min(ax1, bx1), min(ay1, by1)
    if x1 <= x0 or y1 <= y0:
        return 0.0
    inter = int(
        np.count_nonzero(
            a.mask[y0 - ay0 : y1 - ay0, x0 - ax0 : x1 - ax0]
            & b.mask[y0 - by0 : y1 - by0, x0 - bx0 : x1 - bx0]
        )
    )
    union = a.area + b.area - inter
    return inter / union if union else 0.0


def truth_instances(records: list[TileRecord], class_names: list[str]) -> list[Instance]:
    """A frame's labelled defects, re-assembled from its tiles' annotations."""
    pieces = []
    for record in records:
        for ann, mask in zip(record.annotations, record.masks(), strict=True):
            if mask.any():
                pieces.append(
                    Instance(
                        class_names[ann.class_index - 1],
                        1.0,
                        mask.astype(bool),
                        (record.tile_x, record.tile_y),
                    )
                )
    return stitch(pieces, window_iou=0.5)


def _canvas_from_tiles(records: list[TileRecord]) -> np.ndarray:
    height = max(r.tile_y + r.height for r in records)
    width = max(r.tile_x + r.width for r in records)
    canvas = np.zeros((height, width), dtype=np.uint8)
    for r in records:
        canvas[r.tile_y : r.tile_y + r.height, r.tile_x : r.tile_x + r.width] = read_gray(r.path)
    return canvas


def match_frame(
    truth: list[Instance], predicted: list[Instance], iou: float
) -> tuple[list[bool], list[bool]]:
    """(found per truth instance, matched per prediction) at the given mask IoU."""
    found = [False] * len(truth)
    used = [False] * len(predicted)
    for i, t in enumerate(truth):
        for j, p in enumerate(predicted):
            if mask_iou(t, p) >= iou:
                found[i] = used[j] = True
    return found, used


def frame_metrics(
    stage: Any,
    records: list[TileRecord],
    outputs: dict[Any, Any],
    config: Config,
    workspace: TypeWorkspace,
    data_root: Path | None,
    *,
    full_frames: bool,
    batch_size: int,
    progress: bool = False,
    keep_misses: int = 0,
) -> tuple[dict[str, Any], list[dict[str, Any]], list[np.ndarray]]:
    """Defect recall per source frame, for any segmentation stage (``predict_frame`` on the full
    frame when it can be read, else its tiles' predictions stitched): the summary, one row per frame,
    and up to ``keep_misses`` pictures of missed defects."""
    class_names, cfg = stage.class_names, stage.training
    by_frame: dict[str, list[TileRecord]] = defaultdict(list)
    for r in records:
        by_frame[r.source_image or f"tile:{r.path.name}"].append(r)
    per_frame: list[dict[str, Any]] = []
    misses: list[np.ndarray] = []
    counts = {"defects": 0, "found": 0, "predictions": 0, "false_positives": 0}
    sources: dict[str, int] = defaultdict(int)
    for source, tiles in tqdm(
        sorted(by_frame.items()), desc="frames", unit="frame", disable=not progress, leave=False
    ):
        truth = truth_instances(tiles, class_names)
        frame_path = (
            workspace.source_frame(source, data_root) if full_frames and tiles[0].source_image else None
        )
        frame_path = frame_path if frame_path is not None and frame_path.is_file() else None
        gray = None
        if frame_path is not None:
            try:
                gray = read_frame(frame_path, config.frame).image
            except FrameError as exc:
                log.warning("%s; predicting this frame from its tiles", exc)
        if gray is not None:
            predicted = stage.predict_frame(gray, config, batch_size).instances
            sources["frames"] += 1
        else:
            pieces = [
                inst
                for r in tiles
                for inst in outputs[r.image_id].instances(
                    class_names, (r.tile_x, r.tile_y), cfg.score_threshold, cfg.min_mask_area
                )
            ]
            predicted = stage.stitch(pieces)
            sources["tiles"] += 1
        found, used = match_frame(truth, predicted, cfg.recall_iou)
        counts["defects"] += len(truth)
        counts["found"] += sum(found)
        counts["predictions"] += len(predicted)
        counts["false_positives"] += used.count(False)
        per_frame.append(
            {
                "frame": source,
                "defects": len(truth),
                "found": sum(found),
                "predicted": len(predicted),
                "false_positives": used.count(False),
                "read_from": "frame" if gray is not None else "tiles",
            }
        )
        missed = [t for t, ok in zip(truth, found, strict=True) if not ok]
        if missed and len(misses) < keep_misses:
            canvas = gray if gray is not None else _canvas_from_tiles(tiles)
            for t in missed[: keep_misses - len(misses)]:
                misses.append(_crop_picture(canvas, t, predicted, class_names))

    defect_frames = [f for f in per_frame if f["defects"]]
    good_frames = [f for f in per_frame if not f["defects"]]
    caught = sum(1 for f in defect_frames if f["predicted"])
    frames = {
        "frames": len(per_frame),
        "read_from": dict(sources),
        "defects": counts["defects"],
        "defects_found": counts["found"],
        "defect_recall": counts["found"] / counts["defects"] if counts["defects"] else None,
        "predictions": counts["predictions"],
        "false_positives": counts["false_positives"],
        "precision": 1 - counts["false_positives"] / counts["predictions"] if counts["predictions"] else None,
        "defect_frames": len(defect_frames),
        "defect_frames_caught": caught,
        "frame_recall": caught / len(defect_frames) if defect_frames else None,
        "good_frames": len(good_frames),
        "good_frames_flagged": sum(1 for f in good_frames if f["predicted"]),
        "match_iou": cfg.recall_iou,
        "score_threshold": cfg.score_threshold,
    }
    return frames, per_frame, misses


def evaluate_segmentation(
    config: Config,
    output_root: Path,
    oring_type: str,
    data_root: Path | None = None,
    checkpoint: Path | None = None,
    device: str = "auto",
    full_frames: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """Metrics of the best checkpoint on the test split into ``inference_results/metrics.json`` + plots."""
    if config.segmentation.stage != "maskrcnn":  # a second stage (segmentation/stages.py)
        from oringscan.segmentation.dense_engine import evaluate_dense_stage

        return evaluate_dense_stage(
            config, output_root, oring_type, data_root, checkpoint, device, full_frames, progress
        )
    workspace = TypeWorkspace.from_config(config, output_root, oring_type)
    checkpoint = checkpoint or workspace.best_checkpoint
    segmenter = Segmenter.load(checkpoint, device=device, expected_type=oring_type, config=config)
    class_names = segmenter.class_names
    records = workspace.read_split("test", class_names)
    segmenter.attach_anomaly_maps(records, "test", progress)  # anomaly-guided models only
    out_dir = workspace.inference_results
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg = segmenter.training

    segmenter.model.roi_heads.score_thresh = COCO_SCORE_FLOOR  # AP integrates over low scores too
    # Compact per-tile predictions (RLE masks, <= 100 per tile): memory does not grow with tile area.
    outputs = predict_records(
        segmenter.model,
        records,
        segmenter.device,
        config.pipeline.tile_batch_size,
        progress,
        mask_threshold=cfg.mask_threshold,
    )
    tile_metrics = coco_metrics(records, outputs, class_names, cfg.mask_threshold)

    frames, per_frame, misses = frame_metrics(
        segmenter,
        records,
        outputs,
        config,
        workspace,
        data_root,
        full_frames=full_frames,
        batch_size=config.pipeline.tile_batch_size,
        progress=progress,
        keep_misses=12,
    )
    plots = _plots(out_dir, tile_metrics, misses, class_names)
    metrics = {
        "model": oring_type,
        "checkpoint": str(checkpoint),
        "backbone": segmenter.spec.backbone,
        "test_tiles": len(records),
        "tiles": tile_metrics,
        "frames": frames,
        "per_frame": per_frame,
        "plots": plots,
    }
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    metrics["path"] = str(out_dir / "metrics.json")
    return metrics


def _crop_picture(
    gray: np.ndarray, missed: Instance, predicted: list[Instance], class_names: list[str]
) -> np.ndarray:
    x, y, w, h = missed.bbox
    pad = max(48, w, h)
    x0, y0 = max(0, x - pad), max(0, y - pad)
    x1, y1 = min(gray.shape[1], x + w + pad), min(gray.shape[0], y + h + pad)
    return overlay(gray[y0:y1, x0:x1], predicted, class_names, truth=[missed], origin=(x0, y0))


def _plots(
    out_dir: Path, tile_metrics: dict[str, Any] | None, misses: list[np.ndarray], class_names: list[str]
) -> list[str]:
    import cv2
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    if tile_metrics is not None:
        fig, ax = plt.subplots(figsize=(6, 4.5))
        recall = np.linspace(0, 1, 101)
        for iou_type, style in (("segm", "-"), ("bbox", "--")):
            for name in class_names:
                pr = np.array(tile_metrics[iou_type]["per_class"][name]["pr50"])
                if (pr > -1).any():
                    ap = tile_metrics[iou_type]["per_class"][name]["AP50"] or 0.0
                    ax.plot(
                        recall,
                        np.where(pr < 0, np.nan, pr),
                        style,
                        label=f"{name} {iou_type} (AP50 {ap:.2f})",
                    )
        ax.set(
            xlabel="recall",
            ylabel="precision",
            title="Test tiles: precision-recall at IoU 0.5",
            xlim=(0, 1),
            ylim=(0, 1.02),
        )
        ax.grid(alpha=0.3)
        ax.legend(loc="lower left", fontsize=8)
        fig.tight_layout()
        fig.savefig(out_dir / "pr_curve.png", dpi=110)
        plt.close(fig)
        written.append(str(out_dir / "pr_curve.png"))
    path = out_dir / "missed_defects.png"
    if misses:
        cv2.imwrite(str(path), grid(misses, columns=4, cell=256))
        written.append(str(path))
    elif path.exists():
        path.unlink()
    return written
