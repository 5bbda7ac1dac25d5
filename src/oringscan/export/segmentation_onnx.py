"""The trained Mask R-CNN as ONNX (opset 17), and a segmenter that runs it with onnxruntime.

The graph is torchvision's own transform, backbone, RPN and ROI heads for one tile; it returns the
detections with their 28x28 mask probabilities, *not* pasted at tile size (pasting 100 detections on
a 640 px tile is a 164 MB tensor). The onnxruntime segmenter pastes them one at a time with the torch
path's own code (:class:`~oringscan.segmentation.inference.StreamedDetections`), so instances,
stitching, records and evaluation are the torch segmenter's.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from oringscan.errors import ModelFileError, OringscanError
from oringscan.types import Instance

log = logging.getLogger(__name__)

ONNX_FILE = "best_model.onnx"
OPSET = 17


class MaskRCNNGraph(nn.Module):
    """One tile (C, H, W) in [0, 1] -> boxes (tile px), labels, scores, 28x28 mask probabilities."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        from torchvision.models.detection.transform import resize_boxes

        m = self.model
        transformed, _ = m.transform([image])
        features = m.backbone(transformed.tensors)
        if isinstance(features, torch.Tensor):
            features = {"0": features}
        proposals, _ = m.rpn(transformed, features)
        detections, _ = m.roi_heads(features, proposals, transformed.image_sizes)
        det = detections[0]
        boxes = resize_boxes(det["boxes"], transformed.image_sizes[0], list(image.shape[-2:]))
        return boxes, det["labels"], det["scores"], det["masks"]


def export_segmenter_onnx(
    segmenter: Any,
    out: Path,
    score_threshold: float | None = None,
    check_images: list[np.ndarray] | None = None,
) -> dict[str, Any]:
    """Write the segmenter's Mask R-CNN to ``out`` (+ ``out.json``); boxes below ``score_threshold``
    (default: the segmenter's reporting threshold) are not in the graph's output."""
    model = segmenter.model.eval().cpu()
    heads = model.roi_heads
    thr = float(segmenter.training.score_threshold if score_threshold is None else score_threshold)
    old_thr = heads.score_thresh
    heads.score_thresh = thr
    size = int(segmenter.spec.input_size)
    channels = int(segmenter.spec.in_channels)
    dummy = torch.rand(channels, size, size, generator=torch.Generator().manual_seed(0))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer notes on torchvision's Python-side shape logic
            torch.onnx.export(
                MaskRCNNGraph(model).eval(),
                (dummy,),
                str(out),
                input_names=["image"],
                output_names=["boxes", "labels", "scores", "masks"],
                dynamic_axes={k: {0: "detections"} for k in ("boxes", "labels", "scores", "masks")},
                opset_version=OPSET,
                dynamo=False,
            )
    except Exception as exc:  # noqa: BLE001 - the exporter raises many types; one line says which
        raise OringscanError(f"ONNX export of the segmenter failed ({type(exc).__name__}: {exc})") from None
    finally:
        heads.score_thresh = old_thr
        model.eval().to(segmenter.device)
    info: dict[str, Any] = {
        "format": "onnx",
        "opset": OPSET,
        "file": out.name,
        "bytes": out.stat().st_size,
        "input": [channels, size, size],
        "score_threshold": thr,
        "backbone": segmenter.spec.backbone,
        "source_fingerprint": segmenter.fingerprint,
        "export_seconds": round(time.perf_counter() - t0, 2),
    }
    if check_images:
        info["parity"] = segmenter_parity(segmenter, OnnxSegmenter.from_torch(segmenter, out), check_images)
    out.with_name(out.name + ".json").write_text(json.dumps(info, indent=2), encoding="utf-8")
    return info


def _same(a: Instance, b: Instance) -> bool:
    return a.label == b.label and a.offset == b.offset and a.mask.shape == b.mask.shape and a.area == b.area


def segmenter_parity(a: Any, b: Any, images: list[np.ndarray]) -> dict[str, Any]:
    """Instances of two segmenters on the same tiles: counts, identical masks, largest score gap."""
    ia = a.predict_arrays(images, batch_size=1)
    ib = b.predict_arrays(images, batch_size=1)
    n_a = sum(len(x) for x in ia)
    n_b = sum(len(x) for x in ib)
    same = 0
    max_score = 0.0
    max_mask_px = 0
    for xa, xb in zip(ia, ib, strict=True):
        for p, q in zip(xa, xb, strict=False):
            same += int(_same(p, q))
            max_score = max(max_score, abs(p.score - q.score))
            if p.mask.shape == q.mask.shape:
                max_mask_px = max(max_mask_px, int((p.mask != q.mask).sum()))
    return {
        "tiles": len(images),
        "instances_torch": n_a,
        "instances_onnx": n_b,
        "identical": same,
        "max_score_diff": max_score,
        "max_mask_pixels_differing": max_mask_px,
    }


class OnnxSegmenter:
    """The exported Mask R-CNN under onnxruntime with the torch segmenter's interface and post-processing."""

    def __init__(self, session: Any, torch_segmenter: Any, path: Path, exported_threshold: float) -> None:
        self.session = session
        self.base = torch_segmenter
        self.path = path
        self.exported_threshold = exported_threshold

    def __getattr__(self, name: str) -> Any:
        # spec, class_names, training, calibration, meta, stitch, ... come from the torch segmenter.
        if name == "base":
            raise AttributeError(name)
        return getattr(self.base, name)

    @property
    def training(self) -> Any:
        return self.base.training

    @training.setter
    def training(self, value: Any) -> None:
        self.base.training = value

    @classmethod
    def from_torch(cls, segmenter: Any, onnx_path: Path) -> OnnxSegmenter:
        from oringscan.screening.onnx_export import _session

        onnx_path = Path(onnx_path)
        info_path = onnx_path.with_name(onnx_path.name + ".json")
        thr = 0.0
        if info_path.is_file():
            try:
                info = json.loads(info_path.read_text(encoding="utf-8"))
                thr = float(info.get("score_threshold", 0.0))
                source = str(info.get("source_fingerprint", ""))
            except (json.JSONDecodeError, UnicodeDecodeError, TypeError, ValueError, AttributeError):
                raise ModelFileError(info_path, "corrupt export summary") from None
            current = segmenter.fingerprint
            if "in-memory" not in (source, current) and source and source != current:
                raise ModelFileError(
                    onnx_path, "exported from another checkpoint (run: oringscan export model again)"
                )
        return cls(_session(onnx_path), segmenter, onnx_path, thr)

    def _run(self, image: torch.Tensor) -> Any:
        from torchvision.models.detection.roi_heads import expand_boxes, expand_masks

        from oringscan.segmentation.inference import StreamedDetections

        boxes, labels, scores, masks = self.session.run(None, {"image": image.numpy()})
        boxes_t = torch.from_numpy(boxes).float()
        masks_t, scale = expand_masks(torch.from_numpy(masks).float(), padding=1)
        h, w = int(image.shape[-2]), int(image.shape[-1])
        return StreamedDetections(
            h,
            w,
            boxes_t,
            torch.from_numpy(labels),
            torch.from_numpy(scores).float(),
            masks_t,
            expand_boxes(boxes_t, scale).to(torch.int64),
        )

    def predict_arrays(
        self,
        images: Sequence[np.ndarray],
        offsets: Sequence[tuple[int, int]] | None = None,
        batch_size: int = 4,
        progress: bool = False,
        anomaly_maps: Sequence[np.ndarray] | None = None,
    ) -> list[list[Instance]]:
        """As :meth:`Segmenter.predict_arrays`, through onnxruntime (one tile per run)."""
        from oringscan.segmentation.anomaly import scale_anomaly
        from oringscan.segmentation.dataset import to_model_input

        offsets = list(offsets) if offsets is not None else [(0, 0)] * len(images)
        tr = self.base.training
        if tr.score_threshold < self.exported_threshold - 1e-9:
            log.warning(
                "ONNX segmenter exported at score %.3f; instances between %.3f and it are not reported",
                self.exported_threshold,
                tr.score_threshold,
            )
        scaled: list[np.ndarray | None] = [None] * len(images)
        if self.base.needs_anomaly_maps:
            raw = list(anomaly_maps) if anomaly_maps is not None else self.base.anomaly_maps_for(images)
            scale = float(self.base.spec.anomaly_scale or 1.0)
            scaled = [scale_anomaly(m, scale) for m in raw]
        results = []
        for img, amap, offset in zip(images, scaled, offsets, strict=True):
            det = self._run(to_model_input(img, amap))
            results.append(
                det.instances(
                    self.base.class_names, offset, tr.score_threshold, tr.mask_threshold, tr.min_mask_area
                )
            )
        return results

    def predict_tiles(
        self,
        tiles: Sequence[Any],
        batch_size: int = 4,
        progress: bool = False,
        anomaly_maps: Sequence[np.ndarray] | None = None,
    ) -> list[Instance]:
        per_tile = self.predict_arrays(
            [t.image for t in tiles], [(t.box.x, t.box.y) for t in tiles], anomaly_maps=anomaly_maps
        )
        return self.base.stitch([inst for group in per_tile for inst in group])

    def predict_frame(
        self, gray: np.ndarray, config: Any, batch_size: int = 4, progress: bool = False
    ) -> Any:
        """ROI, the shared tile grid, prediction and stitching for one full frame (as the torch segmenter)."""
        from oringscan.roi import find_ring
        from oringscan.segmentation.inference import FramePrediction
        from oringscan.tiling import ring_tiles

        roi = find_ring(gray, config.roi)
        if not roi.usable:
            return FramePrediction([], roi)
        tiles, skipped = ring_tiles(gray, roi, config)
        return FramePrediction(self.predict_tiles(tiles), roi, tiles, skipped)
