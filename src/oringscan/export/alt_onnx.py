"""The screening alternatives (PaDiM, FastFlow, EfficientAD-small) as ONNX, with PatchCore's file layout.

The graph is the torch screen's own scoring (:func:`~oringscan.screening.alternatives.alt_maps` and
the ``_finish`` step) from the preprocessed batch (``ScreeningModel.preprocess``: polarity, padding,
resize, ImageNet normalisation stay in numpy/torch, shared by both runtimes) to the same two outputs
as PatchCore's graph: ``scores`` (the map's maximum at the model's input size) and ``anomaly_maps``
(bilinearly resized to the tile). So :class:`~oringscan.screening.onnx_export.OnnxScreeningModel`
runs every exported screen, PatchCore or not, and the stale-graph check (the fingerprint of
``memory_bank.safetensors``, which holds an alternative's state dict) is the same.

Per model: PaDiM's graph holds the per-position Gaussian (mean and inverse covariance, the largest
constant); FastFlow's the flows (FrEIA all-in-one coupling blocks); EfficientAD's the teacher,
student and autoencoder PDNs with the normalisation quantiles fitted here.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from oringscan.errors import ModelFileError
from oringscan.screening.alternatives import ALT_MODELS, AltScreeningModel, alt_maps
from oringscan.screening.onnx_export import ONNX_FILE, OPSET, finish_export

__all__ = ["AltScreeningGraph", "export_alt_onnx"]


class AltScreeningGraph(nn.Module):
    """Preprocessed tiles -> (tile scores, tile-size anomaly maps), exactly as ``score_images``."""

    def __init__(self, screen: AltScreeningModel) -> None:
        super().__init__()
        self.net = screen.net
        self.kind = screen.kind
        self.tile = int(screen.meta.tile_size)
        self.size = int(screen.meta.input_size)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        amap = alt_maps(self.net, self.kind, x)
        scores = amap.amax(dim=(-3, -2, -1))
        if self.size != self.tile:
            amap = F.interpolate(amap, size=(self.tile, self.tile), mode="bilinear")
        return scores, amap


def export_alt_onnx(
    screen: AltScreeningModel,
    directory: Path,
    out: Path | None = None,
    check_tiles: list[np.ndarray] | None = None,
) -> dict[str, Any]:
    """Write ``model.onnx`` (+ ``model.onnx.json``) for a fitted alternative; returns the summary
    (with ``check_tiles``: onnxruntime against torch, scores and maps)."""
    directory = Path(directory)
    if screen.kind not in ALT_MODELS:
        raise ModelFileError(directory, f"no ONNX export for screening model {screen.kind!r}")
    out = Path(out) if out is not None else directory / ONNX_FILE
    out.parent.mkdir(parents=True, exist_ok=True)
    screen.net.eval().cpu()
    screen.device = torch.device("cpu")
    graph = AltScreeningGraph(screen).eval()
    size = int(screen.meta.input_size)
    dummy = torch.zeros(2, 3, size, size)
    t0 = time.perf_counter()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer notes on Python-side checks (anomalib's is_set)
            torch.onnx.export(
                graph,
                (dummy,),
                str(out),
                input_names=["tiles"],
                output_names=["scores", "anomaly_maps"],
                dynamic_axes={"tiles": {0: "batch"}, "scores": {0: "batch"}, "anomaly_maps": {0: "batch"}},
                opset_version=OPSET,
                dynamo=False,
            )
    except Exception as exc:  # noqa: BLE001 - the exporter's own errors (an op ONNX lacks): one line
        out.unlink(missing_ok=True)
        raise ModelFileError(
            directory, f"{screen.kind} cannot be exported to ONNX ({type(exc).__name__}: {exc})"
        ) from None
    seconds = time.perf_counter() - t0
    params = sum(v.numel() for v in screen.net.state_dict().values() if v.is_floating_point())
    info: dict[str, Any] = {
        "format": "onnx",
        "opset": OPSET,
        "model": screen.kind,
        "backbone": screen.meta.backbone,
        "file": out.name,
        "bytes": out.stat().st_size,
        "float_values": int(params),
        "input": ["batch", 3, size, size],
        "export_seconds": round(seconds, 2),
    }
    return finish_export(screen, out, directory, info, check_tiles)
