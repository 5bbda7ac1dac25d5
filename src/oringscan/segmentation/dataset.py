"""COCO tile dataset from the preprocess output, with joint image/mask/box augmentations.

Unlike torchvision's reference code, tiles without annotations (good tiles) are *kept* as
negatives: a fresh, seeded sample of ``negative_ratio`` good tiles per defect tile each epoch, so
the model learns what the ring's normal texture looks like and stops flagging it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.ops import masks_to_boxes
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from oringscan.config import TrainingConfig
from oringscan.errors import LabelError, ModelFileError

# The data set's record types are the workspace's; re-exported for the segmentation code.
from oringscan.workspace import TileAnnotation as TileAnnotation
from oringscan.workspace import TileRecord, TypeWorkspace
from oringscan.workspace import decode_segmentation as decode_segmentation


def read_gray(path: Path) -> np.ndarray:
    """Any 8-bit image file as uint8 gray (paths with spaces/non-ASCII work)."""
    from oringscan.errors import FrameError

    if not path.is_file():
        raise FrameError(path, "file not found")
    data = np.fromfile(path, dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if image is None:
        raise FrameError(path, "cannot be decoded as an image (corrupt or not an image)")
    if image.dtype != np.uint8:
        raise FrameError(path, f"{image.dtype} image; oringscan takes 8-bit images")
    if image.ndim == 3:
        code = cv2.COLOR_BGRA2GRAY if image.shape[2] == 4 else cv2.COLOR_BGR2GRAY
        image = cv2.cvtColor(image, code) if image.shape[2] in (3, 4) else image[:, :, 0]
    return np.ascontiguousarray(image)


def load_coco_split(ann_path: Path, class_names: list[str]) -> list[TileRecord]:
    """Tile records of ``output/<type>/annotations/<split>.json`` (see :mod:`oringscan.workspace`);
    COCO category names must be among the config's classes."""
    ann_path = Path(ann_path)
    type_root = ann_path.parent.parent
    workspace = TypeWorkspace(type_root.parent, type_root.name)
    if ann_path != workspace.annotations(ann_path.stem):
        raise ModelFileError(
            ann_path, "not a preprocess split (expected <output>/<type>/annotations/<split>.json)"
        )
    return workspace.read_split(ann_path.stem, class_names)


class RandomRot90(v2.Transform):
    """Rotate by 90, 180 or 270 degrees (exact pixel permutation for images and masks)."""

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        self.p = p

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        apply = torch.rand(1).item() < self.p
        return {"k": int(torch.randint(1, 4, (1,)).item()) if apply else 0}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        k = params["k"]
        if k == 0:
            return inpt
        if isinstance(inpt, tv_tensors.BoundingBoxes):
            return F.rotate(inpt, angle=90.0 * k, expand=True)
        if isinstance(inpt, (tv_tensors.Image, tv_tensors.Mask)):
            return tv_tensors.wrap(
                torch.rot90(inpt.as_subclass(torch.Tensor), k=-k, dims=(-2, -1)).contiguous(), like=inpt
            )
        return inpt


def train_transforms(cfg: TrainingConfig) -> v2.Compose:
    """The seed's augmentations, applied jointly to image, masks and boxes."""
    steps: list[v2.Transform] = []
    if cfg.hflip > 0:
        steps.append(v2.RandomHorizontalFlip(cfg.hflip))
    if cfg.vflip > 0:
        steps.append(v2.RandomVerticalFlip(cfg.vflip))
    if cfg.rot90 > 0:
        steps.append(RandomRot90(cfg.rot90))
    if cfg.rotation_degrees > 0:
        steps.append(v2.RandomRotation(cfg.rotation_degrees, interpolation=v2.InterpolationMode.BILINEAR))
    if cfg.brightness > 0 or cfg.contrast > 0:
        steps.append(v2.ColorJitter(brightness=cfg.brightness or None, contrast=cfg.contrast or None))
    return v2.Compose(steps)


def _boxes_from_masks(masks: torch.Tensor) -> torch.Tensor:
    """Tight pixel-extent boxes (x2/y2 exclusive) recomputed after geometric augmentation."""
    if masks.shape[0] == 0:
        return torch.zeros((0, 4), dtype=torch.float32)
    boxes = masks_to_boxes(masks.bool().float()).float()
    boxes[:, 2:] += 1.0
    empty = masks.flatten(1).sum(1) == 0
    boxes[empty] = 0.0
    return boxes


_sanitize = v2.SanitizeBoundingBoxes(min_size=1.0, min_area=1.0)


def to_model_input(gray: np.ndarray, anomaly: np.ndarray | None = None) -> torch.Tensor:
    """uint8 HxW gray -> float 3xHxW in [0, 1] (the backbone expects three channels).

    With ``anomaly`` (a uint8 HxW scaled screening map) a 4th channel in [0, 1] follows; the
    model's own transform normalises (ImageNet or [-1, 1] statistics, per backbone).
    """
    tensor = torch.from_numpy(np.ascontiguousarray(gray)).to(torch.float32).div_(255.0)
    image = tensor.unsqueeze(0).expand(3, -1, -1)
    if anomaly is None:
        return image.contiguous()
    if anomaly.shape != gray.shape:
        raise ValueError(f"anomaly map is {anomaly.shape}, tile is {gray.shape}")
    extra = torch.from_numpy(np.ascontiguousarray(anomaly)).to(torch.float32).div_(255.0).unsqueeze(0)
    return torch.cat([image, extra], dim=0)


def read_anomaly(record: TileRecord) -> np.ndarray | None:
    """The record's cached uint8 anomaly map (None when the model does not use one)."""
    if record.anomaly_path is None:
        return None
    amap = cv2.imread(str(record.anomaly_path), cv2.IMREAD_UNCHANGED)
    if amap is None or amap.shape != (record.height, record.width):
        raise ModelFileError(
            record.anomaly_path, "anomaly map cache unreadable or of the wrong size; delete it to recompute"
        )
    return amap


def record_input(record: TileRecord) -> torch.Tensor:
    """A tile record as model input (with its anomaly channel when it has one)."""
    return to_model_input(read_gray(record.path), read_anomaly(record))


class TileDataset(torch.utils.data.Dataset):
    """Defect tiles plus a seeded, per-epoch sample of good tiles as negatives."""

    def __init__(
        self,
        records: list[TileRecord],
        transforms: v2.Compose | None = None,
        negative_ratio: float | None = None,
        seed: int = 0,
    ) -> None:
        self.positives = [r for r in records if r.is_defect]
        self.negatives = [r for r in records if not r.is_defect]
        self.transforms = transforms
        self.negative_ratio = negative_ratio
        self.seed = seed
        self.items: list[TileRecord] = []
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        """Re-draw the negatives for this epoch (seeded by epoch, so a resumed run draws the same)."""
        if self.negative_ratio is None:
            self.items = self.positives + self.negatives
            return
        want = min(len(self.negatives), int(round(self.negative_ratio * len(self.positives))))
        rng = np.random.default_rng(self.seed + 1009 * epoch)
        picks = rng.choice(len(self.negatives), size=want, replace=False) if want else []
        self.items = self.positives + [self.negatives[i] for i in sorted(picks)]

    def __len__(self) -> int:
        return len(self.items)

    def raw_sample(self, index: int) -> tuple[np.ndarray, np.ndarray, list[int], np.ndarray | None]:
        """Item ``index`` before augmentation: gray, (N, H, W) uint8 masks, classes, anomaly map.

        A hook: ``segmentation.pasting.PastingTileDataset`` pastes defects and crops here.
        """
        record = self.items[index]
        gray = read_gray(record.path)
        if gray.shape != (record.height, record.width):
            raise LabelError(
                record.path,
                f"tile is {gray.shape[1]}x{gray.shape[0]}, COCO says {record.width}x{record.height}",
            )
        return gray, record.masks(), [a.class_index for a in record.annotations], read_anomaly(record)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        record = self.items[index]
        gray, mask_array, classes, anomaly = self.raw_sample(index)
        h, w = gray.shape
        image = tv_tensors.Image(torch.from_numpy(gray).unsqueeze(0).expand(3, -1, -1).contiguous())
        masks = tv_tensors.Mask(torch.from_numpy(mask_array))
        labels = torch.tensor(classes, dtype=torch.int64)
        boxes = tv_tensors.BoundingBoxes(_boxes_from_masks(masks), format="XYXY", canvas_size=(h, w))
        target: dict[str, Any] = {"boxes": boxes, "masks": masks, "labels": labels}
        if anomaly is not None:
            # A Mask follows every geometric augmentation (nearest-neighbour) and no photometric one.
            target["anomaly"] = tv_tensors.Mask(torch.from_numpy(anomaly).unsqueeze(0))
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        image = F.to_dtype(image, torch.float32, scale=True)
        if anomaly is not None:
            extra = target.pop("anomaly").as_subclass(torch.Tensor).to(torch.float32).div_(255.0)
            image = tv_tensors.Image(torch.cat([image.as_subclass(torch.Tensor), extra], dim=0))
        size = tuple(image.shape[-2:])
        target["boxes"] = tv_tensors.BoundingBoxes(
            _boxes_from_masks(target["masks"]), format="XYXY", canvas_size=size
        )
        image, target = _sanitize(image, target)
        out = {
            "boxes": target["boxes"].as_subclass(torch.Tensor).float(),
            "labels": target["labels"],
            "masks": target["masks"].as_subclass(torch.Tensor).to(torch.uint8),
            "image_id": torch.tensor(record.image_id),
        }
        return image.as_subclass(torch.Tensor), out


def collate(batch: list[Any]) -> tuple[Any, ...]:
    return tuple(zip(*batch, strict=True))
