"""PatchCore as one ONNX graph, and an onnxruntime screen with the same ``score_tiles`` as the torch one.

The graph takes the preprocessed batch (``ScreeningModel.preprocess``: polarity, padding, ImageNet
normalisation stay in numpy/torch, shared by both runtimes) and returns tile scores and tile-size
anomaly maps. Sized for line PCs (what anomalib users hit, issues #967/#1224): the memory bank is one
constant of its real size (rows x dims x 4 bytes), the nearest-neighbour search walks it in constant
chunks of ``chunk_rows`` so the largest intermediate is queries x chunk, never queries x bank. The
nearest distance is recomputed exactly from the chosen bank row (no ``|q|^2 - 2qb + |b|^2``
cancellation), which keeps the scores within 1e-4 of the torch path (k-d tree, double precision).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from oringscan.errors import ModelFileError

from .model import BANK_FILE, META_FILE, ScreeningModel, validate_meta

log = logging.getLogger(__name__)

ONNX_FILE = "model.onnx"
ONNX_META_FILE = "model.onnx.json"
OPSET = 17


class PatchcoreGraph(nn.Module):
    """Extractor -> embedding -> chunked exact 1-NN -> anomalib's re-weighted score and map."""

    def __init__(self, screen: ScreeningModel, chunk_rows: int = 2048) -> None:
        super().__init__()
        pc = screen.patchcore
        self.extractor = pc.feature_extractor
        self.pooler = pc.feature_pooler
        self.embedder = pc
        self.blur = pc.anomaly_map_generator.blur
        bank = pc.memory_bank.detach().float().cpu()
        # Centre the bank: smaller norms, smaller float error in the chunked argmin.
        self.register_buffer("centre", bank.mean(0, keepdim=True))
        self.register_buffer("bank", (bank - bank.mean(0, keepdim=True)).contiguous())
        self.num_neighbors = min(int(pc.num_neighbors), bank.shape[0])
        self.chunk_rows = max(1, int(chunk_rows))
        self.candidates = 8  # per chunk, measured exactly
        self.tile = int(screen.meta.tile_size)

    def _nearest(self, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact distance to and index of the nearest bank row, bank walked in constant chunks."""
        bank = self.bank
        best = idx = None
        for start in range(0, bank.shape[0], self.chunk_rows):
            chunk = bank[start : start + self.chunk_rows]
            d2 = (chunk * chunk).sum(1).unsqueeze(0) - 2.0 * (q @ chunk.T)
            # |b|^2 - 2qb loses digits for far-out (defect) patches: rank by it, then measure the few
            # best candidates exactly, so a near-tie cannot pick a row that is not the nearest.
            r = min(self.candidates, int(chunk.shape[0]))
            ids = d2.topk(r, dim=1, largest=False).indices
            exact = (q.unsqueeze(1) - chunk[ids]).pow(2).sum(2)
            m, j = exact.min(1)
            i = ids.gather(1, j.unsqueeze(1)).squeeze(1) + start
            if best is None:
                best, idx = m, i
            else:
                better = m < best
                best = torch.where(better, m, best)
                idx = torch.where(better, i, idx)
        assert idx is not None and best is not None
        return best.sqrt(), idx

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.extractor(x)
        feats = {k: self.pooler(v) for k, v in feats.items()}
        emb = self.embedder.generate_embedding(feats)
        b, d, h, w = emb.shape
        flat = emb.permute(0, 2, 3, 1).reshape(-1, d) - self.centre
        dist, idx = self._nearest(flat)
        patch = dist.reshape(b, h * w)
        loc = idx.reshape(b, h * w)
        if self.num_neighbors == 1:
            scores = patch.amax(1)
        else:
            worst = patch.argmax(1, keepdim=True)
            score = patch.gather(1, worst).squeeze(1)
            worst_feat = flat.reshape(b, h * w, d).gather(1, worst.unsqueeze(2).expand(b, 1, d)).squeeze(1)
            nn_sample = self.bank[loc.gather(1, worst).squeeze(1)]
            bank_sq = (self.bank * self.bank).sum(1)
            nd2 = bank_sq.unsqueeze(0) - 2.0 * (nn_sample @ self.bank.T)
            support = nd2.topk(self.num_neighbors, largest=False, dim=1).indices
            # anomalib's euclidean_dist (matmul form) on the worst patch and its support set.
            y = self.bank[support]
            xn = worst_feat.pow(2).sum(-1, keepdim=True)
            yn = y.pow(2).sum(-1)
            res = (xn - 2.0 * (y @ worst_feat.unsqueeze(2)).squeeze(2) + yn).clamp_min(0).sqrt()
            weights = 1 - F.softmax(res, 1)[:, 0]
            scores = weights * score
        amap = F.interpolate(patch.reshape(b, 1, h, w), size=(self.tile, self.tile))
        return scores, self.blur(amap)


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def export_screening_onnx(
    screen: ScreeningModel,
    directory: Path,
    out: Path | None = None,
    chunk_rows: int = 2048,
    check_tiles: list[np.ndarray] | None = None,
) -> dict[str, Any]:
    """Write ``model.onnx`` (+ ``model.onnx.json``) for a fitted screen; returns the summary.

    PatchCore: the graph below; an alternative (PaDiM, FastFlow, EfficientAD): ``export/alt_onnx.py``.

    ``directory`` is the screening model folder (its bank file is fingerprinted so a refitted model
    is never paired with an old graph). ``check_tiles``: compare onnxruntime against torch on them.
    """
    kind = str(getattr(screen.meta, "model", "patchcore"))
    if kind != "patchcore":
        # PaDiM / FastFlow / EfficientAD: their own graph, the same files and outputs.
        from oringscan.export.alt_onnx import export_alt_onnx
        from oringscan.screening.alternatives import AltScreeningModel

        if not isinstance(screen, AltScreeningModel):
            raise ModelFileError(directory, f"no ONNX export for screening model {kind!r}")
        return export_alt_onnx(screen, Path(directory), out=out, check_tiles=check_tiles)
    if not hasattr(screen, "patchcore"):
        raise ModelFileError(directory, "not a fitted PatchCore screen (nothing to export)")
    directory = Path(directory)
    out = Path(out) if out is not None else directory / ONNX_FILE
    out.parent.mkdir(parents=True, exist_ok=True)
    graph = PatchcoreGraph(screen, chunk_rows=chunk_rows).eval().cpu()
    size = screen.meta.input_size
    dummy = torch.zeros(2, 3, size, size)
    t0 = time.perf_counter()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer notes on Python ints in shapes: sizes are fixed per model
        torch.onnx.export(
            graph,
            (dummy,),
            str(out),
            input_names=["tiles"],
            output_names=["scores", "anomaly_maps"],
            dynamic_axes={"tiles": {0: "batch"}, "scores": {0: "batch"}, "anomaly_maps": {0: "batch"}},
            opset_version=OPSET,
            # Folding would store each bank chunk (and its transpose) again: keep one bank constant.
            do_constant_folding=False,
            dynamo=False,
        )
    seconds = time.perf_counter() - t0
    bank = screen.memory_bank
    info: dict[str, Any] = {
        "format": "onnx",
        "opset": OPSET,
        "model": "patchcore",
        "file": out.name,
        "bytes": out.stat().st_size,
        "bank_rows": int(bank.shape[0]),
        "bank_dims": int(bank.shape[1]),
        "bank_bytes": int(bank.numel() * 4),
        "chunk_rows": int(chunk_rows),
        "input": ["batch", 3, size, size],
        "export_seconds": round(seconds, 2),
    }
    return finish_export(screen, out, directory, info, check_tiles)


def finish_export(
    screen: ScreeningModel,
    out: Path,
    directory: Path,
    info: dict[str, Any],
    check_tiles: list[np.ndarray] | None,
) -> dict[str, Any]:
    """What every screening export records: the tile size, the fit it came from, the parity check
    against the torch screen (when tiles are given); written next to the graph as ``<file>.json``."""
    bank = directory / BANK_FILE
    info["tile_size"] = int(screen.meta.tile_size)
    info["source_bank_sha"] = _file_digest(bank) if bank.is_file() else ""
    if check_tiles:
        info["parity"] = parity(screen, OnnxScreeningModel.from_files(out, screen.meta), check_tiles)
    (out.parent / (out.name + ".json")).write_text(json.dumps(info, indent=2), encoding="utf-8")
    return info


def parity(a: ScreeningModel, b: ScreeningModel, tiles: list[np.ndarray]) -> dict[str, float]:
    """Largest absolute score and map differences between two screens on the same tiles."""
    sa, ma = a.score_images(tiles, with_maps=True)
    sb, mb = b.score_images(tiles, with_maps=True)
    assert ma is not None and mb is not None
    return {
        "tiles": len(tiles),
        "max_score_diff": float(np.abs(sa - sb).max()) if len(tiles) else 0.0,
        "max_map_diff": float(max((np.abs(x - y).max() for x, y in zip(ma, mb, strict=True)), default=0.0)),
    }


def _session(path: Path) -> Any:
    try:
        import onnxruntime as ort
    except ImportError:
        raise ModelFileError(path, "onnxruntime is not installed (pip install 'oringscan[onnx]')") from None
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = max(1, torch.get_num_threads())
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3  # no per-run notes on data-dependent output shapes (detections)
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types for bad files
        raise ModelFileError(path, f"cannot load ONNX model ({type(exc).__name__}: {exc})") from None


class OnnxScreeningModel(ScreeningModel):
    """An exported screen (PatchCore, PaDiM, FastFlow or EfficientAD: the graphs share their input and
    outputs) run by onnxruntime; thresholds and preprocessing as the torch model's."""

    def __init__(self, session: Any, meta: Any, path: Path) -> None:  # noqa: D107 - no torch model
        self.session = session
        self.meta = meta
        self.device = torch.device("cpu")
        self.path = path

    @classmethod
    def from_files(cls, onnx_path: Path, meta: Any) -> OnnxScreeningModel:
        return cls(_session(Path(onnx_path)), meta, Path(onnx_path))

    @classmethod
    def load(  # type: ignore[override]
        cls, directory: Path, expected_type: str | None = None, device: str = "cpu"
    ) -> OnnxScreeningModel:
        """metadata.json + model.onnx of a screening folder; an ONNX file older than the bank is refused."""
        directory = Path(directory)
        onnx_path, meta_path = directory / ONNX_FILE, directory / META_FILE
        for p in (meta_path, onnx_path):
            if not p.is_file():
                hint = "oringscan export model --format onnx" if p == onnx_path else "train screening"
                raise ModelFileError(p, f"screening model file not found (run: {hint})")
        try:
            raw = json.loads(meta_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ModelFileError(meta_path, f"corrupt screening metadata ({exc})") from None
        meta = validate_meta(raw, meta_path)
        if expected_type is not None and meta.oring_type != expected_type:
            raise ModelFileError(
                meta_path, f"screening model is for o-ring type {meta.oring_type!r}, not {expected_type!r}"
            )
        info_path = directory / ONNX_META_FILE
        bank_path = directory / BANK_FILE
        if info_path.is_file():
            try:
                info = json.loads(info_path.read_text(encoding="utf-8"))
                sha, kind = str(info.get("source_bank_sha", "")), str(info.get("model", "patchcore"))
            except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
                sha, kind = "", meta.model
            if kind != meta.model:  # a graph of another model (refitted as PaDiM, ...): never paired
                raise ModelFileError(
                    onnx_path,
                    f"holds a {kind} screen, the fitted model is {meta.model} (run: oringscan export model again)",
                )
            if sha and bank_path.is_file() and sha != _file_digest(bank_path):
                raise ModelFileError(
                    onnx_path, "exported from an older fit of this model (run: oringscan export model again)"
                )
        return cls.from_files(onnx_path, meta)

    def score_images(
        self, images: list[np.ndarray], with_maps: bool = False, batch_size: int = 8
    ) -> tuple[np.ndarray, list[np.ndarray] | None]:
        """Tile scores (and tile-size anomaly maps) for gray tile images, through onnxruntime."""
        scores: list[np.ndarray] = []
        maps: list[np.ndarray] | None = [] if with_maps else None
        for start in range(0, len(images), batch_size):
            part = images[start : start + batch_size]
            x = self.preprocess(part).cpu().numpy()
            s, amap = self.session.run(None, {"tiles": np.ascontiguousarray(x, dtype=np.float32)})
            scores.append(np.asarray(s, dtype=np.float32))
            if maps is not None:
                for img, m in zip(part, amap[:, 0], strict=True):
                    maps.append(np.ascontiguousarray(m[: img.shape[0], : img.shape[1]]))
        return (np.concatenate(scores) if scores else np.zeros(0, dtype=np.float32)), maps

    def save(self, directory: Path) -> Path:  # pragma: no cover - an exported graph is not refitted
        raise ModelFileError(Path(directory), "an ONNX screen is exported from the torch model, not saved")
