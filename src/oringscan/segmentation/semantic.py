"""The semantic second stage: a per-pixel class map whose connected components are the instances.

Lighter than Mask R-CNN (one dense pass, no proposals), and it outlines what it finds: a pixel is a
defect where the background probability is below ``1 - mask_threshold``; each 8-connected region of
such pixels is one :class:`~oringscan.types.Instance` (tight mask crop + offset), labelled with the
class of highest mean probability over it and scored with that mean probability. Two touching
defects of one class are one instance (a semantic map cannot tell instances apart).
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from oringscan.segmentation.stages import DenseStage
from oringscan.types import Instance

# COCO's largest maxDets (as coco_eval.MAX_DETECTIONS): more per tile only costs memory.
MAX_INSTANCES_PER_TILE = 100


class SemanticSegmenter(DenseStage):
    """``[segmentation] stage = "semantic"``."""

    stage = "semantic"

    def tile_instances(
        self,
        logits: torch.Tensor,
        gray: np.ndarray,
        offset: tuple[int, int],
        anomaly_map: np.ndarray | None,
        score_threshold: float,
    ) -> list[Instance]:
        height, width = gray.shape[:2]
        probs = F.interpolate(logits[None], size=(height, width), mode="bilinear", align_corners=False)
        return components_to_instances(
            probs[0].softmax(0).numpy(),
            self.class_names,
            offset,
            self.training.mask_threshold,
            score_threshold,
            self.training.min_mask_area,
        )


def components_to_instances(
    probs: np.ndarray,
    class_names: list[str],
    offset: tuple[int, int] = (0, 0),
    mask_threshold: float = 0.5,
    score_threshold: float = 0.5,
    min_area: int = 1,
) -> list[Instance]:
    """(K+1, H, W) class probabilities (0: background) -> instances, best score first.

    Pure numpy/OpenCV so it is tested on hand-made maps.
    """
    foreground = (1.0 - probs[0]) > mask_threshold
    count, labels, stats, _ = cv2.connectedComponentsWithStats(foreground.astype(np.uint8), connectivity=8)
    out: list[Instance] = []
    for j in range(1, count):
        x, y, w, h, area = (int(v) for v in stats[j])
        if area < min_area:
            continue
        mask = labels[y : y + h, x : x + w] == j
        means = probs[1:, y : y + h, x : x + w][:, mask].mean(axis=1)
        k = int(np.argmax(means))
        score = float(means[k])
        if score < score_threshold:
            continue
        name = class_names[k] if k < len(class_names) else f"class{k + 1}"
        out.append(Instance(name, score, np.ascontiguousarray(mask), (offset[0] + x, offset[1] + y)))
    out.sort(key=lambda i: -i.score)
    return out[:MAX_INSTANCES_PER_TILE]
