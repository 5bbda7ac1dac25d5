"""COCO tile dataset from the preprocess output, with joint image/mask/box augmentations.

Unlike torchvision's reference code, tiles without annotations (good tiles) are *kept* as
negatives: a fresh, seeded sample of ``negative_ratio`` good tiles per defect tile each epoch, so
the model learns what the ring's normal texture looks like and stops flagging it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from pycocotools import mask as mask_utils
from torchvision import tv_tensors
from torchvision.ops import masks_to_boxes
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from oringscan.config import TrainingConfig
from oringscan.errors import LabelError, ModelFileError


@dataclass(slots=True)
class TileAnnotation:
    class_index: int  # 1-based: 0 is background
    segmentation: Any  # COCO polygons or RLE
    area: float


@dataclass(slots=True)
class TileRecord:
    image_id: int
    path: Path
    width: int
    height: int
    annotations: list[TileAnnotation] = field(default_factory=list)
    source_image: str | None = None
    tile_x: int = 0
    tile_y: int = 0
    # The tile's screening anomaly map, scaled to uint8 (see segmentation.anomaly), when the model
    # takes it as an input channel.
    anomaly_path: Path | None = None

    @property
    def is_defect(self) -> bool:
        return bool(self.annotations)

    def masks(self) -> np.ndarray:
        """(N, H, W) uint8 masks of this tile's annotations."""
        out = np.zeros((len(self.annotations), self.height, self.width), dtype=np.uint8)
        for i, ann in enumerate(self.annotations):
            out[i] = decode_segmentation(ann.segmentation, self.height, self.width)
        return out


def decode_segmentation(segmentation: Any, height: int, width: int) -> np.ndarray:
    """COCO polygons / uncompressed RLE / compressed RLE -> HxW uint8 mask."""
    if isinstance(segmentation, list):
        polys = [p for p in segmentation if len(p) >= 6]
        if not polys:
            return np.zeros((height, width), dtype=np.uint8)
        rles = mask_utils.frPyObjects(polys, height, width)
        return mask_utils.decode(mask_utils.merge(rles)).astype(np.uint8)
    if isinstance(segmentation, dict):
        rle = segmentation
        if isinstance(rle.get("counts"), list):
            rle = mask_utils.frPyObjects(rle, height, width)
        elif isinstance(rle.get("counts"), str):
            rle = {"size": rle["size"], "counts": rle["counts"].encode("ascii")}
        return mask_utils.decode(rle).astype(np.uint8)
    raise ValueError(f"unsupported segmentation type {type(segmentation).__name__}")


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


def _resolve_image(ann_path: Path, split: str, file_name: str) -> Path:
    """Tile paths in COCO files may be relative to images/<split>/, to output/<model>/ or absolute."""
    name = Path(file_name)
    model_dir = ann_path.parent.parent
    candidates = [name] if name.is_absolute() else []
    candidates += [
        model_dir / "images" / split / name,
        model_dir / name,
        model_dir / "images" / name,
        ann_path.parent / name,
        model_dir / "images" / split / name.name,
    ]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    return candidates[0] if name.is_absolute() else model_dir / "images" / split / name


def load_coco_split(ann_path: Path, class_names: list[str]) -> list[TileRecord]:
    """Tile records of one split; COCO category names must be among the config's classes."""
    ann_path = Path(ann_path)
    if not ann_path.is_file():
        raise ModelFileError(ann_path, "COCO annotation file not found; run `oringscan preprocess` first")
    try:
        coco = json.loads(ann_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise LabelError(ann_path, f"not valid JSON: {exc}") from None
    split = ann_path.stem
    cat_to_index: dict[int, int] = {}
    for cat in coco.get("categories", []):
        if cat["name"] not in class_names:
            raise LabelError(
                ann_path,
                f"category {cat['name']!r} is not in classes.names {class_names}; re-run preprocess with this config",
            )
        cat_to_index[int(cat["id"])] = class_names.index(cat["name"]) + 1
    records: dict[int, TileRecord] = {}
    for img in coco.get("images", []):
        records[int(img["id"])] = TileRecord(
            image_id=int(img["id"]),
            path=_resolve_image(ann_path, split, img["file_name"]),
            width=int(img["width"]),
            height=int(img["height"]),
            source_image=img.get("source_image"),
            tile_x=int(img.get("tile_x", 0)),
            tile_y=int(img.get("tile_y", 0)),
        )
    for ann in coco.get("annotations", []):
        record = records.get(int(ann["image_id"]))
        if record is None or int(ann.get("iscrowd", 0)):
            continue
        if int(ann["category_id"]) not in cat_to_index:
            raise LabelError(
                ann_path, f"annotation {ann.get('id')} has unknown category_id {ann['category_id']}"
            )
        record.annotations.append(
            TileAnnotation(
                cat_to_index[int(ann["category_id"])], ann["segmentation"], float(ann.get("area", 0))
            )
        )
    return [records[k] for k in sorted(records)]


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

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        record = self.items[index]
        gray = read_gray(record.path)
        if gray.shape != (record.height, record.width):
            raise LabelError(
                record.path,
                f"tile is {gray.shape[1]}x{gray.shape[0]}, COCO says {record.width}x{record.height}",
            )
        h, w = gray.shape
        image = tv_tensors.Image(torch.from_numpy(gray).unsqueeze(0).expand(3, -1, -1).contiguous())
        masks = tv_tensors.Mask(torch.from_numpy(record.masks()))
        labels = torch.tensor([a.class_index for a in record.annotations], dtype=torch.int64)
        boxes = tv_tensors.BoundingBoxes(_boxes_from_masks(masks), format="XYXY", canvas_size=(h, w))
        target: dict[str, Any] = {"boxes": boxes, "masks": masks, "labels": labels}
        anomaly = read_anomaly(record)
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
