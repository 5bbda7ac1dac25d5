"""Loading a trained segmenter and predicting on tiles and whole frames (stitched)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from oringscan.config import Config, TrainingConfig
from oringscan.errors import ModelFileError, OringscanError
from oringscan.roi import RingROI, find_ring
from oringscan.segmentation.checkpoints import load_checkpoint
from oringscan.segmentation.dataset import to_model_input
from oringscan.segmentation.models import ModelSpec, build_model
from oringscan.segmentation.stitching import stitch, tighten
from oringscan.tiling import ring_tiles
from oringscan.types import Instance, Tile

log = logging.getLogger(__name__)


def resolve_device(name: str | None) -> torch.device:
    """'auto' takes CUDA when present (where the plant trains and infers), else CPU."""
    name = (name or "auto").lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise OringscanError(f"--device {name}: no CUDA GPU is available on this machine (use --device cpu or auto)")
    try:
        return torch.device(name)
    except RuntimeError:
        raise OringscanError(f"--device {name}: unknown device (use auto, cpu or cuda)") from None


@torch.inference_mode()
def run_model(model: torch.nn.Module, images: Sequence[torch.Tensor], device: torch.device) -> list[dict[str, torch.Tensor]]:
    """Raw torchvision outputs (on CPU) for a batch of 3xHxW float images."""
    batch = [img.to(device, non_blocking=True) for img in images]
    with torch.autocast(device_type=device.type, enabled=device.type == "cuda"):
        outputs = model(batch)
    return [{k: v.detach().float().cpu() if v.is_floating_point() else v.cpu() for k, v in o.items()} for o in outputs]


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
        index = int(label) - 1
        name = class_names[index] if 0 <= index < len(class_names) else f"class{int(label)}"
        inst = tighten(Instance(name, float(score), mask, offset))
        if inst is not None and inst.area >= min_area:
            out.append(inst)
    return out


@dataclass(slots=True)
class FramePrediction:
    """A whole frame's stitched defects, with what they were found on."""

    instances: list[Instance]
    roi: RingROI
    tiles: list[Tile] = field(default_factory=list)
    skipped_tiles: int = 0


class Segmenter:
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
            raise ModelFileError(path, f"weights do not fit a {spec.backbone} model ({str(exc).splitlines()[0]})") from None
        if config is not None:
            training = config.training
        else:
            training = TrainingConfig.model_validate(data["config"].get("training", {}))
        meta = {k: data.get(k) for k in ("epoch", "best_metric", "pretrained", "backbone")}
        return cls(model, spec, list(data["class_names"]), str(data["oring_type"]), training, resolve_device(device), path, meta)

    @property
    def fingerprint(self) -> str:
        """Identifies the weights (for 'already inspected with this model' checks)."""
        import hashlib

        if self.checkpoint is not None and self.checkpoint.is_file():
            stat = self.checkpoint.stat()
            return hashlib.sha256(f"{self.checkpoint.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
        return "in-memory"

    def predict_arrays(
        self, images: Sequence[np.ndarray], offsets: Sequence[tuple[int, int]] | None = None, batch_size: int = 4,
        progress: bool = False,
    ) -> list[list[Instance]]:
        """Per image, its instances (not stitched), placed at its offset."""
        offsets = list(offsets) if offsets is not None else [(0, 0)] * len(images)
        # Boxes below the reporting threshold never reach the mask head (an unsure model would
        # otherwise run it, and paste a tile-size mask, for 100 boxes per tile).
        self.model.roi_heads.score_thresh = self.training.score_threshold
        results: list[list[Instance]] = []
        starts = range(0, len(images), max(1, batch_size))
        for start in tqdm(starts, desc="tiles", unit="batch", disable=not progress, leave=False):
            chunk = images[start : start + batch_size]
            outputs = run_model(self.model, [to_model_input(img) for img in chunk], self.device)
            for output, offset in zip(outputs, offsets[start : start + batch_size], strict=True):
                results.append(
                    output_to_instances(
                        output,
                        self.class_names,
                        offset,
                        self.training.score_threshold,
                        self.training.mask_threshold,
                        self.training.min_mask_area,
                    )
                )
        return results

    def stitch(self, instances: Sequence[Instance]) -> list[Instance]:
        return stitch(instances, self.training.stitch_ios, self.training.stitch_window_iou, min_area=self.training.min_mask_area)

    def predict_tiles(self, tiles: Sequence[Tile], batch_size: int = 4, progress: bool = False) -> list[Instance]:
        """Frame-coordinate defects of a frame's tiles, duplicates merged and cut parts re-joined."""
        per_tile = self.predict_arrays(
            [t.image for t in tiles], [(t.box.x, t.box.y) for t in tiles], batch_size=batch_size, progress=progress
        )
        return self.stitch([inst for group in per_tile for inst in group])

    def predict_frame(self, gray: np.ndarray, config: Config, batch_size: int = 4, progress: bool = False) -> FramePrediction:
        """ROI, the shared tile grid, batched prediction and stitching for one full frame."""
        roi = find_ring(gray, config.roi)
        if not roi.usable:
            return FramePrediction([], roi)
        tiles, skipped = ring_tiles(gray, roi, config)
        return FramePrediction(self.predict_tiles(tiles, batch_size, progress), roi, tiles, skipped)
