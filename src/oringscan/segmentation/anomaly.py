"""Screening anomaly maps as the segmenter's 4th input channel (anomaly-guided segmentation).

Screening already knows where a tile looks wrong; the segmenter gets that map so it learns the
outline and class of an anomaly instead of finding it from scratch. Training and inspection use
one scaling (:func:`scale_anomaly`): the map divided by ``anomaly_scale`` (twice the screening
threshold at training time, stored in the model spec), clipped, as uint8. Training tiles' maps are
computed once with the type's fitted screening model and cached under
``output/<type>/anomaly_maps/`` (recomputed when the screening model changes).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from oringscan.errors import ModelFileError

CACHE_DIR = "anomaly_maps"
KEY_FILE = "key.json"
# Map value that becomes 1.0, relative to the screening threshold: a flagged patch lands at >= 0.5.
SCALE_PER_THRESHOLD = 2.0


def anomaly_scale(screening: Any) -> float:
    """The map value that maps to 1.0 for this screening model."""
    return SCALE_PER_THRESHOLD * float(screening.threshold)


def scale_anomaly(amap: np.ndarray, scale: float) -> np.ndarray:
    """A raw screening map -> uint8 (0..255 for 0..scale); the one scaling training and inspection share."""
    if scale <= 0:
        raise ValueError(f"anomaly scale must be > 0, got {scale}")
    return np.clip(np.asarray(amap, dtype=np.float32) * (255.0 / scale), 0, 255).round().astype(np.uint8)


def load_type_screening(output_root: Path, oring_type: str) -> Any:
    """The type's fitted screening model (a clear ModelFileError line when it is not there yet)."""
    from oringscan.screening import ScreeningModel, screening_dir

    directory = screening_dir(output_root, oring_type)
    if not (directory / "metadata.json").is_file():
        raise ModelFileError(
            directory,
            "anomaly-guided segmentation needs the fitted screening model first: "
            f"oringscan train screening --model {oring_type}"
            " (or set training.anomaly_channel = false)",
        )
    return ScreeningModel.load(directory, expected_type=oring_type)


def screening_fingerprint(screening: Any) -> str:
    """Changes whenever the screening model (bank, threshold, backbone) changes."""
    meta = screening.meta.to_json() if hasattr(screening.meta, "to_json") else dict(vars(screening.meta))
    meta = {k: v for k, v in meta.items() if k not in ("created", "versions")}
    text = json.dumps(meta, sort_keys=True, default=str)
    bank = screening.memory_bank
    probe = f"{tuple(bank.shape)}|{float(bank.sum()):.6g}" if bank.numel() else "empty"
    return hashlib.sha256(f"{text}|{probe}".encode()).hexdigest()[:16]


def attach_anomaly_maps(
    records: Sequence[Any],
    screening: Any,
    cache_dir: Path,
    scale: float,
    split: str,
    progress: bool = False,
    batch_size: int = 8,
) -> int:
    """Set ``record.anomaly_path`` for every record, computing missing maps; returns how many were computed."""
    from oringscan.segmentation.dataset import read_gray

    cache_dir = Path(cache_dir)
    key = {"screening": screening_fingerprint(screening), "scale": round(float(scale), 9)}
    key_path = cache_dir / KEY_FILE
    if key_path.is_file():
        try:
            old = json.loads(key_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            old = None
        if old != key:
            shutil.rmtree(cache_dir)
    (cache_dir / split).mkdir(parents=True, exist_ok=True)
    key_path.write_text(json.dumps(key), encoding="utf-8")
    todo = []
    for record in records:
        record.anomaly_path = cache_dir / split / f"{record.image_id}_{Path(record.path).stem}.png"
        if not record.anomaly_path.is_file():
            todo.append(record)
    starts = range(0, len(todo), batch_size)
    for start in tqdm(
        starts, desc=f"anomaly maps ({split})", unit="batch", disable=not progress, leave=False
    ):
        chunk = todo[start : start + batch_size]
        _, maps = screening.score_images(
            [read_gray(r.path) for r in chunk], with_maps=True, batch_size=batch_size
        )
        for record, amap in zip(chunk, maps or [], strict=True):
            tmp = record.anomaly_path.with_name(record.anomaly_path.stem + ".tmp.png")
            cv2.imwrite(str(tmp), scale_anomaly(amap, scale))
            tmp.replace(record.anomaly_path)
    return len(todo)
