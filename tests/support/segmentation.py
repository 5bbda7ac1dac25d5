"""Tiny COCO tile sets for the segmentation tests: mottled ring texture with dark, drawn defects.

Self-contained (no dependency on the preprocess stage): the files follow the preprocess contract
(``output/<model>/annotations/<split>.json`` + ``images/<split>/``, good tiles without annotations,
images carrying ``source_image``, ``tile_x``, ``tile_y``).
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from oringscan.config import Config


def tiny_config(tile: int = 96, backbone: str = "resnet18_fpn") -> Config:
    """A config whose model (input ``tile`` px) trains a few iterations on one CPU thread; frames keep
    the 640 grid."""
    config = Config()
    return config.model_copy(
        update={
            "training": config.training.model_copy(
                update={
                    "backbone": backbone,
                    "input_size": tile,
                    "batch_size": 2,
                    "epochs": 2,
                    "num_workers": 0,
                    "warmup_iters": 2,
                    "negative_ratio": 0.5,
                    "score_threshold": 0.3,
                }
            ),
        }
    )


def ring_texture(rng: np.random.Generator, size: int) -> np.ndarray:
    base = rng.normal(150, 12, (size, size)).astype(np.float32)
    base = cv2.GaussianBlur(base, (5, 5), 0)
    return np.clip(base, 0, 255).astype(np.uint8)


def draw_defect(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """Draws one dark defect (blob or scratch) on ``image``; returns its mask."""
    size = image.shape[0]
    mask = np.zeros_like(image)
    cx, cy = (int(v) for v in rng.integers(size // 5, size - size // 5, 2))
    if rng.random() < 0.5:
        axes = (int(rng.integers(6, size // 5)), int(rng.integers(4, size // 8)))
        cv2.ellipse(mask, (cx, cy), axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
    else:
        dx, dy = (int(v) for v in rng.integers(-size // 4, size // 4, 2))
        cv2.line(mask, (cx - dx, cy - dy), (cx + dx, cy + dy), 1, int(rng.integers(3, 6)))
    image[mask > 0] = 35
    return mask


def polygons(mask: np.ndarray) -> list[list[float]]:
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    return [c.reshape(-1).astype(float).tolist() for c in contours if len(c) >= 3]


def write_tiny_coco(
    output_root: Path,
    oring_type: str = "model1",
    tile: int = 96,
    counts: dict[str, tuple[int, int]] | None = None,
    seed: int = 0,
) -> Path:
    """output_root/model with COCO splits of ``(defect, good)`` tile counts per split."""
    counts = counts or {"train": (6, 3), "val": (3, 1), "test": (3, 1)}
    rng = np.random.default_rng(seed)
    type_dir = output_root / oring_type
    image_id, ann_id = 1, 1
    for split, (n_defect, n_good) in counts.items():
        images, annotations = [], []
        img_dir = type_dir / "images" / split
        img_dir.mkdir(parents=True, exist_ok=True)
        for k in range(n_defect + n_good):
            image = ring_texture(rng, tile)
            masks = [draw_defect(rng, image) for _ in range(int(rng.integers(1, 3)))] if k < n_defect else []
            name = f"{split}_{k:03d}.png"
            cv2.imwrite(str(img_dir / name), image)
            images.append(
                {
                    "id": image_id,
                    "file_name": name,
                    "width": tile,
                    "height": tile,
                    "source_image": f"images/{'model1defect' if masks else 'model1good'}/frame{k}.bmp",
                    "tile_x": 0,
                    "tile_y": 0,
                }
            )
            for mask in masks:
                polys = polygons(mask)
                if not polys:
                    continue
                ys, xs = np.nonzero(mask)
                annotations.append(
                    {
                        "id": ann_id,
                        "image_id": image_id,
                        "category_id": 1,
                        "segmentation": polys,
                        "area": float(mask.sum()),
                        "iscrowd": 0,
                        "bbox": [
                            float(xs.min()),
                            float(ys.min()),
                            float(xs.max() - xs.min() + 1),
                            float(ys.max() - ys.min() + 1),
                        ],
                    }
                )
                ann_id += 1
            image_id += 1
        ann_dir = type_dir / "annotations"
        ann_dir.mkdir(parents=True, exist_ok=True)
        coco = {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "defect"}]}
        (ann_dir / f"{split}.json").write_text(json.dumps(coco), encoding="utf-8")
    return type_dir
