"""Loading a trained segmenter and predicting on tiles and whole frames (stitched)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tqdm import tqdm

from oringscan.config import Config, SegmentationConfig, TrainingConfig
from oringscan.errors import ModelFileError, OringscanError
from oringscan.roi import RingROI, find_ring
from oringscan.segmentation.anomaly import scale_anomaly
from oringscan.segmentation.calibration import SegmentationCalibration, load_calibration
from oringscan.segmentation.checkpoints import load_checkpoint
from oringscan.segmentation.dataset import to_model_input
from oringscan.segmentation.models import ModelSpec, build_model
from oringscan.segmentation.stitching import stitch, tighten
from oringscan.tiling import ring_tiles
from oringscan.types import Instance, Tile

if TYPE_CHECKING:
    from oringscan.workspace import TypeWorkspace

log = logging.getLogger(__name__)


def resolve_device(name: str | None) -> torch.device:
    """'auto' takes CUDA when present (where the plant trains and infers), else CPU
    (:func:`oringscan.devices.resolve_device`, as a torch device)."""
    from oringscan.devices import resolve_device as resolve_name

    return torch.device(resolve_name(name))


@torch.inference_mode()
def run_model(
    model: torch.nn.Module, images: Sequence[torch.Tensor], device: torch.device
) -> list[dict[str, torch.Tensor]]:
    """Raw torchvision outputs (on CPU) for a batch of 3xHxW float images."""
    batch = [img.to(device, non_blocking=True) for img in images]
    with torch.autocast(device_type=device.type, enabled=device.type == "cuda"):
        outputs = model(batch)
    return [
        {k: v.detach().float().cpu() if v.is_floating_point() else v.cpu() for k, v in o.items()}
        for o in outputs
    ]


def output_to_instances(
    output: dict[str, torch.Tensor],
    class_names: Sequence[str],
    offset: tuple[int, int] = (0, 0),
    score_threshold: float = 0.5,
    mask_threshold: float = 0.5,
    min_area: int = 1,
) -> list[Instance]:
    """One image's detections as tight mask crops placed at ``offset`` in the frame."""
    out: list[Instance] = []
    scores = output["scores"].numpy()
    keep = np.flatnonzero(scores >= score_threshold)
    if keep.size == 0:
        return out
    masks = (output["masks"][keep, 0] > mask_threshold).numpy()
    labels = output["labels"][keep].numpy()
    for mask, label, score in zip(masks, labels, scores[keep], strict=True):
        inst = _instance(int(label), float(score), mask, offset, class_names, min_area)
        if inst is not None:
            out.append(inst)
    return out


def _instance(
    label: int,
    score: float,
    mask: np.ndarray,
    offset: tuple[int, int],
    class_names: Sequence[str],
    min_area: int,
) -> Instance | None:
    """One detection as a tight crop, or None when its mask is smaller than ``min_area``.

    Shared by the dense and the streamed paths so both name classes and drop specks alike."""
    index = label - 1
    name = class_names[index] if 0 <= index < len(class_names) else f"class{label}"
    inst = tighten(Instance(name, score, mask, offset))
    return inst if inst is not None and inst.area >= min_area else None


@dataclass(slots=True)
class StreamedDetections:
    """One image's detections with its masks still at 28x28: each is pasted at image size on demand.

    torchvision's ``postprocess`` pastes every detection's mask into a dense image-size float
    tensor and stacks them (100 detections on a 640 px tile: 164 MB, twice over while stacking).
    :meth:`mask` runs the same paste (``paste_mask_in_image``, same padding and box expansion) for
    one detection, so a caller that encodes or crops each mask before the next holds one at a time.
    """

    height: int
    width: int
    boxes: torch.Tensor  # (N, 4) in image pixels, as torchvision's postprocess gives them
    labels: torch.Tensor  # (N,) 1-based class index
    scores: torch.Tensor  # (N,) in the model's output order (best first)
    _masks: torch.Tensor  # (N, 1, M+2, M+2) expanded mask probabilities
    _paste_boxes: torch.Tensor  # (N, 4) int64 expanded boxes

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    def mask(self, index: int) -> torch.Tensor:
        """Detection ``index``'s mask probabilities at image size (what torchvision's output holds)."""
        from torchvision.models.detection.roi_heads import paste_mask_in_image

        return paste_mask_in_image(self._masks[index, 0], self._paste_boxes[index], self.height, self.width)

    def instances(
        self,
        class_names: Sequence[str],
        offset: tuple[int, int] = (0, 0),
        score_threshold: float = 0.5,
        mask_threshold: float = 0.5,
        min_area: int = 1,
    ) -> list[Instance]:
        """As :func:`output_to_instances` on the raw output, one pasted mask at a time."""
        out: list[Instance] = []
        labels = self.labels.tolist()
        for i, score in enumerate(self.scores.tolist()):
            if score < score_threshold:
                continue
            inst = _instance(
                int(labels[i]),
                float(score),
                (self.mask(i) > mask_threshold).numpy(),
                offset,
                class_names,
                min_area,
            )
            if inst is not None:
                out.append(inst)
        return out


@torch.inference_mode()
def run_model_streamed(
    model: torch.nn.Module, images: Sequence[torch.Tensor], device: torch.device
) -> list[StreamedDetections] | None:
    """A batch through a torchvision Mask R-CNN without pasting its masks (see :class:`StreamedDetections`).

    Runs the model's own stages (transform, backbone, RPN, ROI heads); None for a model without
    that structure (the caller then uses :func:`run_model`).
    """
    heads = getattr(model, "roi_heads", None)
    stages = [getattr(model, name, None) for name in ("transform", "backbone", "rpn")]
    if (
        heads is None
        or any(stage is None for stage in stages)
        or not callable(getattr(heads, "has_mask", None))
        or not heads.has_mask()
    ):
        return None
    from torchvision.models.detection.roi_heads import expand_boxes, expand_masks
    from torchvision.models.detection.transform import resize_boxes

    batch = [img.to(device, non_blocking=True) for img in images]
    original_sizes = [(int(img.shape[-2]), int(img.shape[-1])) for img in batch]
    with torch.autocast(device_type=device.type, enabled=device.type == "cuda"):
        transformed, _ = model.transform(batch)
        features = model.backbone(transformed.tensors)
        if isinstance(features, torch.Tensor):
            features = {"0": features}
        proposals, _ = model.rpn(transformed, features)
        detections, _ = heads(features, proposals, transformed.image_sizes)
    resized_sizes = list(transformed.image_sizes)
    del batch, transformed, features, proposals
    out = []
    for det, resized, (height, width) in zip(detections, resized_sizes, original_sizes, strict=True):
        boxes = resize_boxes(det["boxes"].float(), resized, [height, width])
        masks, scale = expand_masks(det["masks"].float(), padding=1)
        out.append(
            StreamedDetections(
                height,
                width,
                boxes.cpu(),
                det["labels"].cpu(),
                det["scores"].float().cpu(),
                masks.cpu(),
                expand_boxes(boxes, scale).to(torch.int64).cpu(),
            )
        )
    return out


@dataclass(slots=True)
class FramePrediction:
    """A whole frame's stitched defects, with what they were found on."""

    instances: list[Instance]
    roi: RingROI
    tiles: list[Tile] = field(default_factory=list)
    skipped_tiles: int = 0


class TiledPrediction:
    """Tiles -> stitched frame defects, and a whole frame through the shared tile grid: the same for
    every segmentation stage, which brings ``predict_arrays`` (per-tile Instances in frame
    coordinates) and its ``training`` settings (stitching)."""

    training: TrainingConfig

    def predict_arrays(
        self,
        images: Sequence[np.ndarray],
        offsets: Sequence[tuple[int, int]] | None = None,
        batch_size: int = 4,
        progress: bool = False,
        anomaly_maps: Sequence[np.ndarray] | None = None,
    ) -> list[list[Instance]]:
        raise NotImplementedError

    def stitch(self, instances: Sequence[Instance]) -> list[Instance]:
        return stitch(
            instances,
            self.training.stitch_ios,
            self.training.stitch_window_iou,
            min_area=self.training.min_mask_area,
        )

    def predict_tiles(
        self,
        tiles: Sequence[Tile],
        batch_size: int = 4,
        progress: bool = False,
        anomaly_maps: Sequence[np.ndarray] | None = None,
    ) -> list[Instance]:
        """Frame-coordinate defects of a frame's tiles, duplicates merged and cut parts re-joined.

        ``anomaly_maps``: the tiles' raw screening maps, in tile order (see :meth:`predict_arrays`).
        """
        per_tile = self.predict_arrays(
            [t.image for t in tiles],
            [(t.box.x, t.box.y) for t in tiles],
            batch_size=batch_size,
            progress=progress,
            anomaly_maps=anomaly_maps,
        )
        return self.stitch([inst for group in per_tile for inst in group])

    def predict_frame(
        self, gray: np.ndarray, config: Config, batch_size: int = 4, progress: bool = False
    ) -> FramePrediction:
        """ROI, the shared tile grid, batched prediction and stitching for one full frame."""
        roi = find_ring(gray, config.roi)
        if not roi.usable:
            return FramePrediction([], roi)
        tiles, skipped = ring_tiles(gray, roi, config)
        return FramePrediction(self.predict_tiles(tiles, batch_size, progress), roi, tiles, skipped)


class Segmenter(TiledPrediction):
    """A trained Mask R-CNN for one o-ring type, ready to predict tiles and frames."""

    def __init__(
        self,
        model: torch.nn.Module,
        spec: ModelSpec,
        class_names: list[str],
        oring_type: str,
        training: TrainingConfig,
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
        # Screening model that provides anomaly maps when a caller passes none (loaded lazily from
        # the type's output folder next to the checkpoint, or set by the caller).
        self.screening: Any = None
        # What val showed it can do (segmentation/calibration.py; set by load()). None: never
        # calibrated, so the pipeline does not let it call defects unless told to.
        self.calibration: SegmentationCalibration | None = None

    @property
    def needs_anomaly_maps(self) -> bool:
        """True when the model takes the screening anomaly map as an input channel."""
        return bool(self.spec.anomaly_channel)

    def _screening(self) -> Any:
        if self.screening is None:
            from oringscan.segmentation.anomaly import load_type_screening

            if self.checkpoint is None:
                raise OringscanError(
                    "this segmenter takes screening anomaly maps: pass anomaly_maps or set segmenter.screening"
                )
            output_root = self._checkpoint_file().resolve().parent.parent.parent
            self.screening = load_type_screening(output_root, self.oring_type)
        return self.screening

    def _checkpoint_file(self) -> Path:
        assert self.checkpoint is not None
        return self.checkpoint / "best_model.pth" if self.checkpoint.is_dir() else self.checkpoint

    def anomaly_maps_for(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Screening maps of ``images`` from this segmenter's screening model (see :attr:`screening`)."""
        _, maps = self._screening().score_images(list(images), with_maps=True)
        return list(maps or [])

    def attach_anomaly_maps(self, records: Sequence[Any], split: str, progress: bool = False) -> None:
        """Give tile records (e.g. a test split) their cached anomaly maps when the model needs them."""
        if not self.needs_anomaly_maps:
            return
        from oringscan.segmentation.anomaly import CACHE_DIR, attach_anomaly_maps

        screening = self._screening()
        assert self.checkpoint is not None and self.spec.anomaly_scale is not None
        cache = self._checkpoint_file().resolve().parent.parent / CACHE_DIR
        attach_anomaly_maps(records, screening, cache, self.spec.anomaly_scale, split, progress)

    @classmethod
    def load(
        cls,
        checkpoint: Path | str,
        device: str = "auto",
        expected_type: str | None = None,
        config: Config | None = None,
    ) -> Segmenter:
        """Rebuild the model from a checkpoint (weights_only); thresholds from ``config`` if given."""
        path = Path(checkpoint)
        data = load_checkpoint(path, expected_type=expected_type)
        spec = ModelSpec.from_dict(data["spec"])
        model = build_model(spec)
        try:
            model.load_state_dict(data["model"])
        except RuntimeError as exc:
            raise ModelFileError(
                path, f"weights do not fit a {spec.backbone} model ({str(exc).splitlines()[0]})"
            ) from None
        if config is not None:
            training = config.training
        else:
            saved = data["config"]  # made before or after [training] became [segmentation]
            training = SegmentationConfig.model_validate(
                {**saved.get("training", {}), **saved.get("segmentation", {})}
            )
        meta = {
            k: data.get(k) for k in ("epoch", "best_metric", "pretrained", "backbone", "backbone_requested")
        }
        meta["anomaly_channel"] = spec.anomaly_channel
        segmenter = cls(
            model,
            spec,
            list(data["class_names"]),
            str(data["oring_type"]),
            training,
            resolve_device(device),
            path,
            meta,
        )
        segmenter.calibration = load_calibration(path if path.is_file() else path / "best_model.pth")
        return segmenter

    @classmethod
    def from_config(
        cls, config: Config, workspace: TypeWorkspace, device: str | None = None, version: str | None = None
    ) -> Segmenter:
        """The type's checkpoint in use (:attr:`TypeWorkspace.models`) with its calibration,
        inference settings from ``config``."""
        segmenter = cls.load(
            workspace.models_for(version).segmentation_checkpoint,
            device=device or config.training.device,
            expected_type=workspace.oring_type,
            config=config,
        )
        if getattr(config.pipeline, "runtime", "torch") == "onnx":
            # The exported graph (oringscan export model); calibration and post-processing stay these.
            from oringscan.export.models import onnx_segmenter

            return onnx_segmenter(segmenter)  # type: ignore[return-value]
        return segmenter

    def report_scores_from(self, score: float) -> None:
        """Report instances down to ``score`` (the lowest score the pipeline's gate accepts); the
        config's section stays as it is (a copy is changed)."""
        if self.training.score_threshold > score:
            self.training = self.training.model_copy(update={"score_threshold": float(score)})

    def describe(self) -> dict[str, Any]:
        """What this model was made from (stored with every run)."""
        return {k: v for k, v in self.meta.items() if isinstance(v, str | int | float | None)}

    @property
    def fingerprint(self) -> str:
        """Identifies the weights (for 'already inspected with this model' checks)."""
        import hashlib

        if self.checkpoint is not None and self.checkpoint.is_file():
            stat = self.checkpoint.stat()
            return hashlib.sha256(
                f"{self.checkpoint.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()
            ).hexdigest()[:16]
        return "in-memory"

    def predict_arrays(
        self,
        images: Sequence[np.ndarray],
        offsets: Sequence[tuple[int, int]] | None = None,
        batch_size: int = 4,
        progress: bool = False,
        anomaly_maps: Sequence[np.ndarray] | None = None,
    ) -> list[list[Instance]]:
        """Per image, its instances (not stitched), placed at its offset.

        ``anomaly_maps``: the screening maps of the images (raw, as ``ScreeningModel.score_tiles(...,
        with_maps=True)`` gives them) for a model with the anomaly channel; computed with the type's
        screening model when omitted. Ignored by models without the channel.
        """
        offsets = list(offsets) if offsets is not None else [(0, 0)] * len(images)
        scaled: list[np.ndarray | None] = [None] * len(images)
        if self.needs_anomaly_maps:
            raw = list(anomaly_maps) if anomaly_maps is not None else self.anomaly_maps_for(images)
            if len(raw) != len(images):
                raise OringscanError(f"{len(raw)} anomaly maps for {len(images)} tiles")
            scale = float(self.spec.anomaly_scale or 1.0)
            scaled = [scale_anomaly(m, scale) for m in raw]
        # Boxes below the reporting threshold never reach the mask head (an unsure model would
        # otherwise run it, and paste a tile-size mask, for 100 boxes per tile).
        self.model.roi_heads.score_thresh = self.training.score_threshold
        results: list[list[Instance]] = []
        starts = range(0, len(images), max(1, batch_size))
        for start in tqdm(starts, desc="tiles", unit="batch", disable=not progress, leave=False):
            chunk = images[start : start + batch_size]
            inputs = [
                to_model_input(img, amap)
                for img, amap in zip(chunk, scaled[start : start + batch_size], strict=True)
            ]
            thresholds = (
                self.training.score_threshold,
                self.training.mask_threshold,
                self.training.min_mask_area,
            )
            streamed = run_model_streamed(self.model, inputs, self.device)
            if streamed is None:  # not a torchvision Mask R-CNN: its own (dense) outputs
                for output, offset in zip(
                    run_model(self.model, inputs, self.device),
                    offsets[start : start + batch_size],
                    strict=True,
                ):
                    results.append(output_to_instances(output, self.class_names, offset, *thresholds))
                continue
            # Bounded: each detection's mask is pasted, thresholded and cropped before the next
            # (never a detections x tile-size array, whatever the model emits).
            for detections, offset in zip(streamed, offsets[start : start + batch_size], strict=True):
                results.append(detections.instances(self.class_names, offset, *thresholds))
        return results
