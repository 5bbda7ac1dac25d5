"""The segmentation stage the config selects: Mask R-CNN, a semantic segmenter or a tile classifier.

``[segmentation] stage`` picks one; it trains into the type's usual files (``checkpoints/
best_model.pth``, ``latest.pth``, ``segmentation_calibration.json``), so model versions, the model
fingerprint and promotion treat every stage alike, and the Inspector loads whichever it is through
:func:`stage_from_config`. The two second stages share :class:`DenseStage`: tiles resized to the
model's input, one forward pass per batch, per-tile :class:`~oringscan.types.Instance` s (mask crop +
offset) stitched like Mask R-CNN's, so records, overlays and pycocotools evaluation are shared.

Their checkpoints are plain dicts (``torch.load(weights_only=True)``) with their own format marker;
a checkpoint of another stage than the config's is one :class:`ModelFileError` that says so.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from oringscan.config import Config, SegmentationConfig
from oringscan.errors import ModelFileError
from oringscan.segmentation.dense_models import DenseSpec, build_dense_model
from oringscan.segmentation.inference import TiledPrediction
from oringscan.types import Instance
from oringscan.workspace import TypeWorkspace

if TYPE_CHECKING:
    from oringscan.segmentation.calibration import SegmentationCalibration
    from oringscan.segmentation.classifier import TileClassifier
    from oringscan.segmentation.coco_eval import TilePrediction
    from oringscan.segmentation.inference import Segmenter
    from oringscan.segmentation.semantic import SemanticSegmenter

log = logging.getLogger(__name__)

STAGES = ("maskrcnn", "semantic", "classifier")
FORMAT = "oringscan-second-stage/1"
_REQUIRED = ("format", "stage", "model", "spec", "class_names", "oring_type", "epoch", "config")
SCORE_FLOOR = 0.05  # what evaluation and calibration keep (AP integrates over the low scores too)


def save_stage_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write atomically (a crash mid-write never leaves a half checkpoint behind)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"format": FORMAT, **payload}, tmp)
    os.replace(tmp, path)


def _read(path: Path) -> Any:
    if path.is_dir():
        path = path / "best_model.pth"
    if not path.is_file():
        raise ModelFileError(
            path, "segmentation checkpoint not found; train one with `oringscan train segmentation`"
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - corrupt file, foreign pickle, truncated zip: all unusable
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelFileError(path, f"not a readable segmentation checkpoint ({first[:160]})") from None


def checkpoint_stage(data: Any) -> str | None:
    """Which stage a loaded checkpoint dict holds (None: not an oringscan segmentation checkpoint)."""
    from oringscan.segmentation.checkpoints import FORMAT as MASKRCNN_FORMAT

    if not isinstance(data, dict):
        return None
    if data.get("format") == MASKRCNN_FORMAT:
        return "maskrcnn"
    if data.get("format") == FORMAT and data.get("stage") in STAGES:
        return str(data["stage"])
    return None


def load_stage_checkpoint(
    path: Path | str, stage: str | None = None, expected_type: str | None = None
) -> dict[str, Any]:
    """Read and check a second stage's checkpoint; every problem is one :class:`ModelFileError` line."""
    path = Path(path)
    data = _read(path)
    found = checkpoint_stage(data)
    if found is None:
        raise ModelFileError(path, "not an oringscan segmentation checkpoint (no format marker)")
    if stage is not None and found != stage:
        raise ModelFileError(path, _mismatch(found, stage))
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        raise ModelFileError(path, f"checkpoint lacks {', '.join(missing)}")
    if expected_type is not None and data["oring_type"] != expected_type:
        raise ModelFileError(
            path, f"checkpoint was trained for o-ring type {data['oring_type']!r}, not {expected_type!r}"
        )
    return data


def _mismatch(found: str, wanted: str) -> str:
    return (
        f"holds a {found} segmentation stage, but [segmentation] stage = {wanted!r}; set stage = "
        f"{found!r} or train the {wanted} stage: oringscan train segmentation"
    )


def resize_input(images: torch.Tensor, size: int) -> torch.Tensor:
    """(B, 3, H, W) in [0, 1] to the model's ``size`` x ``size`` (training and inference alike)."""
    if tuple(images.shape[-2:]) == (size, size):
        return images
    shrink = images.shape[-1] > size or images.shape[-2] > size
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=shrink)


def gray_input(gray: np.ndarray) -> torch.Tensor:
    """uint8 HxW gray -> float 3xHxW in [0, 1] (the networks take three channels)."""
    tensor = torch.from_numpy(np.ascontiguousarray(gray)).to(torch.float32).div_(255.0)
    return tensor.unsqueeze(0).expand(3, -1, -1)


def instances_to_prediction(
    instances: Sequence[Instance], height: int, width: int, class_names: Sequence[str]
) -> TilePrediction:
    """A tile's instances (tile coordinates) in the compact form pycocotools evaluation takes."""
    from pycocotools import mask as mask_utils

    from oringscan.segmentation.coco_eval import MAX_DETECTIONS, TilePrediction

    ordered = sorted(instances, key=lambda i: -i.score)[:MAX_DETECTIONS]
    index = {n: k + 1 for k, n in enumerate(class_names)}
    boxes, rles = [], []
    for inst in ordered:
        x, y, w, h = inst.bbox
        boxes.append([x, y, x + w, y + h])
        rles.append(mask_utils.encode(np.asfortranarray(inst.full_mask(height, width), dtype=np.uint8)))
    return TilePrediction(
        height,
        width,
        np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
        np.asarray([index.get(i.label, 1) for i in ordered], dtype=np.int64),
        np.asarray([i.score for i in ordered], dtype=np.float32),
        rles,
    )


class DenseStage(TiledPrediction):
    """A second stage: a network that sees whole tiles, turned into instances per tile."""

    stage: ClassVar[str] = ""
    # What val showed it can do (set by load()); None: never calibrated, it calls no defect.
    calibration: SegmentationCalibration | None

    def __init__(
        self,
        model: torch.nn.Module,
        spec: DenseSpec,
        class_names: list[str],
        oring_type: str,
        training: SegmentationConfig,
        device: torch.device,
        checkpoint: Path | None = None,
        meta: dict[str, Any] | None = None,
    ) -> None:
        self.model = model.eval().to(device)
        self.spec = spec
        self.class_names = class_names
        self.oring_type = oring_type
        self.training = training
        self.device = device
        self.checkpoint = checkpoint
        self.meta = meta or {}
        self.calibration = None

    # ------------------------------------------------------------------ the Protocol
    @property
    def needs_anomaly_maps(self) -> bool:
        """The second stages take no screening map as input (the classifier uses one when given)."""
        return False

    def report_scores_from(self, score: float) -> None:
        """Report instances down to ``score`` (the pipeline gate's lowest); the config stays as it is."""
        if self.training.score_threshold > score:
            self.training = self.training.model_copy(update={"score_threshold": float(score)})

    def describe(self) -> dict[str, Any]:
        """What this model was made from (stored with every run)."""
        out = {"stage": self.stage, "backbone": self.spec.arch, "input_size": self.spec.input_size}
        out.update({k: v for k, v in self.meta.items() if isinstance(v, str | int | float | None)})
        return out

    @property
    def fingerprint(self) -> str:
        if self.checkpoint is not None and self.checkpoint.is_file():
            stat = self.checkpoint.stat()
            return hashlib.sha256(
                f"{self.checkpoint.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()
            ).hexdigest()[:16]
        return "in-memory"

    # ------------------------------------------------------------------ prediction
    def tile_instances(
        self,
        logits: torch.Tensor,
        gray: np.ndarray,
        offset: tuple[int, int],
        anomaly_map: np.ndarray | None,
        score_threshold: float,
    ) -> list[Instance]:
        """One tile's instances from its logits (at the model's input size); per stage."""
        raise NotImplementedError

    @torch.inference_mode()
    def logits(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """The network's output for a batch of uint8 gray tiles (resized to the input size)."""
        batch = torch.stack(
            [resize_input(gray_input(g).unsqueeze(0), self.spec.input_size)[0] for g in images]
        )
        return self.model(batch.to(self.device)).float().cpu()

    def predict_arrays(
        self,
        images: Sequence[np.ndarray],
        offsets: Sequence[tuple[int, int]] | None = None,
        batch_size: int = 4,
        progress: bool = False,
        anomaly_maps: Sequence[np.ndarray] | None = None,
        score_threshold: float | None = None,
    ) -> list[list[Instance]]:
        """Per image, its instances (not stitched), placed at its offset."""
        from tqdm import tqdm

        offsets = list(offsets) if offsets is not None else [(0, 0)] * len(images)
        maps: list[np.ndarray | None] = (
            list(anomaly_maps) if anomaly_maps is not None else [None] * len(images)
        )
        if len(maps) != len(images):
            from oringscan.errors import OringscanError

            raise OringscanError(f"{len(maps)} anomaly maps for {len(images)} tiles")
        threshold = self.training.score_threshold if score_threshold is None else score_threshold
        results: list[list[Instance]] = []
        starts = range(0, len(images), max(1, batch_size))
        for start in tqdm(starts, desc="tiles", unit="batch", disable=not progress, leave=False):
            chunk = list(images[start : start + batch_size])
            out = self.logits(chunk)
            for i, gray in enumerate(chunk):
                results.append(
                    self.tile_instances(out[i], gray, offsets[start + i], maps[start + i], threshold)
                )
        return results

    def predict_records(
        self, records: Sequence[Any], batch_size: int = 4, progress: bool = False
    ) -> dict[int, TilePrediction]:
        """Compact predictions per tile image id down to :data:`SCORE_FLOOR` (evaluation, calibration)."""
        from oringscan.segmentation.dataset import read_gray

        out: dict[int, TilePrediction] = {}
        for start in range(0, len(records), max(1, batch_size)):
            chunk = records[start : start + batch_size]
            grays = [read_gray(r.path) for r in chunk]
            found = self.predict_arrays(grays, batch_size=len(grays), score_threshold=SCORE_FLOOR)
            for record, gray, instances in zip(chunk, grays, found, strict=True):
                out[record.image_id] = instances_to_prediction(
                    instances, gray.shape[0], gray.shape[1], self.class_names
                )
        return out

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(
        cls,
        checkpoint: Path | str,
        device: str = "auto",
        expected_type: str | None = None,
        config: Config | None = None,
    ) -> DenseStage:
        """Rebuild the stage from its checkpoint (weights_only) with its calibration."""
        from oringscan.segmentation.calibration import load_calibration
        from oringscan.segmentation.inference import resolve_device

        path = Path(checkpoint)
        path = path / "best_model.pth" if path.is_dir() else path
        data = load_stage_checkpoint(path, cls.stage or None, expected_type)
        stage_cls = _STAGE_CLASSES()[str(data["stage"])]
        try:
            spec = DenseSpec.from_dict(data["spec"])
            model = build_dense_model(spec)
            model.load_state_dict(data["model"])
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise ModelFileError(
                path, f"weights do not fit the saved {data['stage']} model ({str(exc).splitlines()[0][:160]})"
            ) from None
        if config is not None:
            training = config.segmentation
        else:
            training = SegmentationConfig.model_validate(dict(data["config"]).get("segmentation", {}))
        meta = {k: data.get(k) for k in ("epoch", "best_metric", "pretrained")}
        stage = stage_cls(
            model,
            spec,
            list(data["class_names"]),
            str(data["oring_type"]),
            training,
            resolve_device(device),
            path,
            meta,
        )
        stage.calibration = load_calibration(path)
        return stage

    @classmethod
    def from_config(
        cls, config: Config, workspace: TypeWorkspace, device: str | None = None, version: str | None = None
    ) -> DenseStage:
        """The type's checkpoint in use (:attr:`TypeWorkspace.models`), settings from ``config``."""
        stage = cls.load(
            workspace.models_for(version).segmentation_checkpoint,
            device=device or config.segmentation.device,
            expected_type=workspace.oring_type,
            config=config,
        )
        if config.pipeline.runtime == "onnx":
            # The exported network (oringscan export model); resizing and post-processing stay these.
            from oringscan.export.dense_onnx import onnx_dense_stage

            return onnx_dense_stage(stage)
        return stage


def _STAGE_CLASSES() -> dict[str, type[DenseStage]]:  # noqa: N802 - a constant, built on first use
    from oringscan.segmentation.classifier import TileClassifier
    from oringscan.segmentation.semantic import SemanticSegmenter

    return {"semantic": SemanticSegmenter, "classifier": TileClassifier}


def load_stage(
    checkpoint: Path | str,
    device: str = "auto",
    expected_type: str | None = None,
    config: Config | None = None,
) -> Segmenter | SemanticSegmenter | TileClassifier:
    """Whatever stage ``checkpoint`` holds (``oringscan predict --checkpoint``)."""
    path = Path(checkpoint)
    found = checkpoint_stage(_read(path))
    if found == "maskrcnn" or found is None:  # Segmenter.load names every other problem
        from oringscan.segmentation.inference import Segmenter

        return Segmenter.load(path, device=device, expected_type=expected_type, config=config)
    return _STAGE_CLASSES()[found].load(path, device, expected_type, config)  # type: ignore[return-value]


def stage_from_config(
    config: Config, workspace: TypeWorkspace, device: str | None = None, version: str | None = None
) -> Segmenter | SemanticSegmenter | TileClassifier:
    """The segmentation stage ``[segmentation] stage`` names, from the type's models in use
    (what :meth:`Inspector.load` builds). A checkpoint of another stage is one clear error."""
    from oringscan.segmentation.inference import Segmenter

    wanted = config.segmentation.stage
    if wanted == "maskrcnn":
        try:
            return Segmenter.from_config(config, workspace, device, version)
        except ModelFileError as exc:
            path = workspace.models_for(version).segmentation_checkpoint
            found = (
                checkpoint_stage(_read(path)) if path.is_file() and "format marker" in exc.problem else None
            )
            if found is not None and found != wanted:
                raise ModelFileError(path, _mismatch(found, wanted)) from None
            raise
    return _STAGE_CLASSES()[wanted].from_config(config, workspace, device, version)  # type: ignore[return-value]
