"""The second stages (semantic segmenter, tile classifier) as ONNX, and their onnxruntime twins.

The graph is the stage's network with its normalisation (``Normalized``): a batch of tiles
``(B, 3, S, S)`` in [0, 1], already resized to the model's input ``S``, to logits (per pixel for
the semantic stage, per tile for the classifier); the batch axis is dynamic. Resizing and the
post-processing (softmax, connected components or the tile region, stitching) stay the torch
stage's own code: the twin is the same :class:`~oringscan.segmentation.stages.DenseStage` with its
network swapped for an onnxruntime session, so instances, records, calibration and evaluation are
the torch stage's. It sits next to the checkpoint as ``best_model.onnx`` (one stage per checkpoint
folder, as Mask R-CNN's), with ``best_model.onnx.json`` naming the stage and the checkpoint it
came from.
"""

from __future__ import annotations

import copy
import json
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from oringscan.errors import ModelFileError, OringscanError
from oringscan.export.segmentation_onnx import ONNX_FILE, OPSET, _same
from oringscan.segmentation.stages import DenseStage

__all__ = ["ONNX_FILE", "OnnxNet", "dense_parity", "export_dense_onnx", "onnx_dense_stage"]


class OnnxNet(nn.Module):
    """Stands in for a stage's network: the same call (a float batch -> logits), run by onnxruntime."""

    def __init__(self, session: Any, path: Path) -> None:
        super().__init__()
        self.session = session
        self.path = path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (out,) = self.session.run(None, {"image": x.detach().cpu().numpy().astype(np.float32)})
        return torch.from_numpy(out)


def export_dense_onnx(
    stage: DenseStage, out: Path, check_images: list[np.ndarray] | None = None
) -> dict[str, Any]:
    """Write the stage's network to ``out`` (+ ``out.json``); with ``check_images`` (uint8 gray
    tiles) onnxruntime is compared with torch on them (:func:`dense_parity`)."""
    model = stage.model.eval().cpu()
    size = int(stage.spec.input_size)
    dummy = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer notes on Python-side shape logic
            torch.onnx.export(
                model,
                (dummy,),
                str(out),
                input_names=["image"],
                output_names=["logits"],
                dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
                opset_version=OPSET,
                dynamo=False,
            )
    except Exception as exc:  # noqa: BLE001 - the exporter raises many types; one line says which
        raise OringscanError(
            f"ONNX export of the {stage.stage} stage failed ({type(exc).__name__}: {exc})"
        ) from None
    finally:
        model.to(stage.device)
    info: dict[str, Any] = {
        "format": "onnx",
        "opset": OPSET,
        "file": out.name,
        "bytes": out.stat().st_size,
        "stage": stage.stage,
        "arch": stage.spec.arch,
        "input": [3, size, size],
        "output": "logits per pixel (B, K+1, S, S)" if stage.stage == "semantic" else "logits (B, 2)",
        "source_fingerprint": stage.fingerprint,
        "export_seconds": round(time.perf_counter() - t0, 2),
    }
    if check_images:
        info["parity"] = dense_parity(stage, onnx_dense_stage(stage, out), check_images)
    out.with_name(out.name + ".json").write_text(json.dumps(info, indent=2), encoding="utf-8")
    return info


def onnx_dense_stage(stage: DenseStage, onnx_path: Path | None = None) -> DenseStage:
    """The torch stage's twin whose network is ``onnx_path`` (default: ``best_model.onnx`` next to
    its checkpoint) under onnxruntime; a graph of another stage or checkpoint is refused."""
    from oringscan.screening.onnx_export import _session

    if onnx_path is None:
        if stage.checkpoint is None:
            raise OringscanError(f"the {stage.stage} stage has no checkpoint to find its ONNX file by")
        onnx_path = stage.checkpoint.parent / ONNX_FILE
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise ModelFileError(onnx_path, "not found (run: oringscan export model --format onnx)")
    info_path = onnx_path.with_name(onnx_path.name + ".json")
    if info_path.is_file():
        try:
            info = json.loads(info_path.read_text(encoding="utf-8"))
            found, source = str(info.get("stage", "maskrcnn")), str(info.get("source_fingerprint", ""))
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            raise ModelFileError(info_path, "corrupt export summary") from None
        if found != stage.stage:
            raise ModelFileError(
                onnx_path, f"holds the {found} stage, not {stage.stage} (run: oringscan export model again)"
            )
        current = stage.fingerprint
        if "in-memory" not in (source, current) and source and source != current:
            raise ModelFileError(
                onnx_path, "exported from another checkpoint (run: oringscan export model again)"
            )
    twin = copy.copy(stage)  # shares spec, classes, settings and calibration; only the network differs
    twin.model = OnnxNet(_session(onnx_path), onnx_path)
    twin.device = torch.device("cpu")
    return twin


def dense_parity(a: DenseStage, b: DenseStage, images: list[np.ndarray]) -> dict[str, Any]:
    """Two stages on the same tiles: the largest probability gap (per pixel or per tile), the
    instances at the reporting score (same label, place and area) and the tiles each calls."""
    pa = a.logits(images).softmax(1)
    pb = b.logits(images).softmax(1)
    threshold = a.training.score_threshold
    ia = a.predict_arrays(images, batch_size=len(images), score_threshold=threshold)
    ib = b.predict_arrays(images, batch_size=len(images), score_threshold=threshold)
    same = sum(int(_same(p, q)) for xa, xb in zip(ia, ib, strict=True) for p, q in zip(xa, xb, strict=False))
    score_gap = max(
        (abs(p.score - q.score) for xa, xb in zip(ia, ib, strict=True) for p, q in zip(xa, xb, strict=False)),
        default=0.0,
    )
    return {
        "tiles": len(images),
        "max_probability_diff": float((pa - pb).abs().max()),
        "max_score_diff": float(score_gap),
        "instances_torch": sum(map(len, ia)),
        "instances_onnx": sum(map(len, ib)),
        "identical": same,
        "same_tile_decisions": [bool(x) for x in ia] == [bool(x) for x in ib],
        "score_threshold": threshold,
    }
