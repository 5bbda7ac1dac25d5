"""Checkpoints as plain dicts of tensors and primitives, so ``torch.load(weights_only=True)`` reads them.

Nothing in a checkpoint is a pickled class: the model is rebuilt from its spec (backbone, number of
classes, input size, anchors, norm layer), the config is stored as its JSON dump.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from oringscan.errors import ModelFileError

FORMAT = "oringscan-segmentation/1"
_REQUIRED = ("format", "model", "spec", "class_names", "oring_type", "epoch", "config")


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write atomically (a crash mid-write never leaves a half checkpoint behind)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"format": FORMAT, **payload}, tmp)
    os.replace(tmp, path)


def load_checkpoint(
    path: Path | str, expected_type: str | None = None, map_location: str = "cpu"
) -> dict[str, Any]:
    """Read and check a segmentation checkpoint; every problem is one :class:`ModelFileError` line."""
    path = Path(path)
    if path.is_dir():
        path = path / "best_model.pth"
    if not path.is_file():
        raise ModelFileError(
            path, "segmentation checkpoint not found; train one with `oringscan train segmentation`"
        )
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - corrupt file, foreign pickle, truncated zip: all unusable
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelFileError(path, f"not a readable segmentation checkpoint ({first[:160]})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ModelFileError(path, "not an oringscan segmentation checkpoint (no segmentation format marker)")
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        raise ModelFileError(path, f"checkpoint lacks {', '.join(missing)}")
    if expected_type is not None and data["oring_type"] != expected_type:
        raise ModelFileError(
            path, f"checkpoint was trained for o-ring type {data['oring_type']!r}, not {expected_type!r}"
        )
    return data
