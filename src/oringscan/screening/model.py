"""The fitted screening model: anomalib's PatchCore torch model, a memory bank, a threshold.

Scoring gives the same numbers as anomalib's ``PatchcoreModel.forward`` (nearest-neighbour distance
per patch, the paper's re-weighting for the tile score, anomalib's upsampled and blurred anomaly
map), computed faster: bank norms are computed once, square roots are taken only of the minima,
identical patches (the black belt) are scored once, and the queries go in large chunks.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812

from oringscan.devices import resolve_device as resolve_device  # one rule for every stage
from oringscan.errors import ModelFileError
from oringscan.types import ScreeningResult, Tile, TileScore

if TYPE_CHECKING:
    from oringscan.config import Config
    from oringscan.screening.shape import ShapeScreen
    from oringscan.workspace import TypeWorkspace

from .backbones import IMAGENET_MEAN, IMAGENET_STD, RINGTEXTURE, build_extractor

log = logging.getLogger(__name__)

BANK_FILE = "memory_bank.safetensors"
META_FILE = "metadata.json"
FORMAT_VERSION = 1
KDTREE_MAX_DIM = 24


@dataclass
class ScreeningMeta:
    """Everything needed to rebuild and trust a fitted model (stored as metadata.json)."""

    oring_type: str
    backbone: str
    layers: list[str]
    input_size: int
    tile_size: int
    num_neighbors: int
    threshold: float
    normalize_polarity: bool = True
    marginal_threshold: float | None = None
    pretrained: bool = False
    weights_source: str | None = None
    train_fingerprint: str = ""
    n_train_tiles: int = 0
    n_train_frames: int = 0
    bank_size: int = 0
    embedding_dim: int = 0
    calibration: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    created: str = ""
    format_version: int = FORMAT_VERSION
    # Out-of-fold worst-tile score of every good frame the thresholds rest on (frame -> score).
    oof_scores: dict[str, float] = field(default_factory=dict)
    # Every (re)calibration: date, source, old/new thresholds, frames used (newest last).
    history: list[dict[str, Any]] = field(default_factory=list)
    # Which anomaly model ("patchcore", or an alternative of screening/alternatives.py) and its settings.
    model: str = "patchcore"
    model_params: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


REQUIRED_KEYS = ("oring_type", "backbone", "layers", "input_size", "tile_size", "num_neighbors", "threshold")


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def validate_meta(raw: Any, path: Path) -> ScreeningMeta:
    """metadata.json as a ScreeningMeta; anything that would silently change what screening does
    (a missing key, a NaN, infinite, negative or text threshold, a list as format_version) is a
    one-line ModelFileError naming the file and the key."""
    if not isinstance(raw, dict):
        raise ModelFileError(path, f"screening metadata must be a JSON object, not {type(raw).__name__}")
    for key in REQUIRED_KEYS:
        if key not in raw:
            raise ModelFileError(path, f"screening metadata has no {key!r} key")
    fv = raw.get("format_version", FORMAT_VERSION)
    if not isinstance(fv, int) or isinstance(fv, bool):
        raise ModelFileError(path, f"'format_version' must be an integer, not {fv!r}")
    for key in ("oring_type", "backbone"):
        if not isinstance(raw[key], str) or not raw[key]:
            raise ModelFileError(path, f"{key!r} must be a non-empty string, not {raw[key]!r}")
    if not isinstance(raw["layers"], list) or not all(isinstance(x, str) for x in raw["layers"]):
        raise ModelFileError(path, f"'layers' must be a list of layer names, not {raw['layers']!r}")
    for key in ("input_size", "tile_size", "num_neighbors"):
        v = raw[key]
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ModelFileError(path, f"{key!r} must be a positive integer, not {v!r}")
    thr = raw["threshold"]
    if not _is_number(thr) or not math.isfinite(thr) or thr < 0:
        raise ModelFileError(
            path, f"'threshold' must be a finite number >= 0, not {thr!r} (screening would be off)"
        )
    low = raw.get("marginal_threshold")
    if low is not None and (not _is_number(low) or not math.isfinite(low) or low < 0 or low > thr):
        raise ModelFileError(
            path, f"'marginal_threshold' must be empty or a number between 0 and the threshold, not {low!r}"
        )
    for key, kind in (("calibration", dict), ("versions", dict), ("oof_scores", dict), ("history", list)):
        if key in raw and not isinstance(raw[key], kind):
            raise ModelFileError(path, f"{key!r} must be a JSON {'object' if kind is dict else 'array'}")
    known = {k: v for k, v in raw.items() if k in ScreeningMeta.__dataclass_fields__}
    try:
        return ScreeningMeta(**known)
    except TypeError as exc:
        raise ModelFileError(path, f"corrupt screening metadata ({exc})") from None


def _versions() -> dict[str, str]:
    import anomalib
    import timm

    import oringscan

    return {
        "oringscan": getattr(oringscan, "__version__", "0"),
        "anomalib": anomalib.__version__,
        "torch": torch.__version__,
        "timm": timm.__version__,
    }


def build_patchcore(
    backbone: str, layers: list[str], num_neighbors: int, weights: Path | None, lookup: bool = True
) -> tuple[Any, str | None]:
    """anomalib's PatchcoreModel around our extractor; returns (model, weights source or None)."""
    from oringscan._deps import anomalib_import

    with anomalib_import():  # anomalib 2.7's import-time FutureWarnings (timm.models.layers, dinov2)
        from anomalib.models.image.patchcore.torch_model import PatchcoreModel

    extractor, source = build_extractor(backbone, layers, weights, lookup=lookup)
    # Build with a cheap placeholder, then put our extractor in: anomalib's forward only calls it.
    model = PatchcoreModel(
        layers=["layer1"], backbone="resnet18", pre_trained=False, num_neighbors=num_neighbors
    )
    model.backbone, model.layers = backbone, list(layers)
    model.feature_extractor = extractor
    if backbone == RINGTEXTURE:
        # Its cells are already pooled; anomalib's 3x3 average would dilute a few-pixel hole 9x.
        model.feature_pooler = torch.nn.Identity()
    return model.eval(), source


class ScreeningModel:
    """A fitted PatchCore screen for one o-ring type."""

    def __init__(self, patchcore: Any, meta: ScreeningMeta, device: str = "cpu") -> None:
        self.patchcore = patchcore
        self.meta = meta
        self.device = torch.device(device)
        self.patchcore.to(self.device)
        self._refresh_bank()

    # ----------------------------------------------------------------------------- properties
    @property
    def threshold(self) -> float:
        return float(self.meta.threshold)

    @property
    def shape_screen(self) -> ShapeScreen | None:
        """The ring-shape screen calibrated with this model (``screening/shape.py``), or None: the
        Inspector flags a frame whose measured edge protrusion passes its threshold."""
        from oringscan.screening.shape import ShapeScreen

        return ShapeScreen.from_json(self.meta.calibration.get("shape_screen"))

    @property
    def memory_bank(self) -> torch.Tensor:
        return self.patchcore.memory_bank

    def set_memory_bank(self, bank: torch.Tensor) -> None:
        self.patchcore.memory_bank = bank.float().to(self.device).contiguous()
        self.meta.bank_size = int(bank.shape[0])
        self.meta.embedding_dim = int(bank.shape[1]) if bank.ndim == 2 else 0
        self._refresh_bank()

    def _refresh_bank(self) -> None:
        bank = self.patchcore.memory_bank
        self._bank_sq = bank.pow(2).sum(1) if bank.numel() else None
        self._tree = None
        if bank.numel() and bank.shape[1] <= KDTREE_MAX_DIM and self.device.type == "cpu":
            from scipy.spatial import cKDTree

            # Low-dimensional banks (ringtexture): an exact k-d tree beats brute force by far.
            self._tree = cKDTree(bank.double().numpy())

    # ----------------------------------------------------------------------------- features
    def preprocess(self, images: list[np.ndarray]) -> torch.Tensor:
        """Gray tiles -> ImageNet-normalised 3-channel batch at ``input_size`` (small tiles padded)."""
        size, tile = self.meta.input_size, self.meta.tile_size
        batch = np.empty((len(images), size, size), dtype=np.float32)
        for i, img in enumerate(images):
            if img.ndim == 3:
                img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
            if self.meta.normalize_polarity:
                img = light_ring(img)
            if img.shape != (tile, tile):
                padded = np.zeros((tile, tile), dtype=img.dtype)
                h, w = min(tile, img.shape[0]), min(tile, img.shape[1])
                padded[:h, :w] = img[:h, :w]
                img = padded
            if size != tile:
                img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
            batch[i] = img.astype(np.float32) / 255.0
        x = torch.from_numpy(batch).unsqueeze(1).expand(-1, 3, -1, -1)
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        return ((x - mean) / std).to(self.device)

    @torch.no_grad()
    def embed(self, inputs: torch.Tensor) -> torch.Tensor:
        """(B, D, h, w) patch embeddings exactly as anomalib's PatchcoreModel builds them."""
        pc = self.patchcore
        features = pc.feature_extractor(inputs)
        features = {layer: pc.feature_pooler(feat) for layer, feat in features.items()}
        return pc.generate_embedding(features)

    # ----------------------------------------------------------------------------- scoring
    @torch.no_grad()
    def _nearest(self, queries: torch.Tensor, chunk: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
        """Distance to and index of the nearest bank entry for each query row."""
        bank, bank_sq = self.patchcore.memory_bank, self._bank_sq
        if bank.numel() == 0 or bank_sq is None:
            raise ModelFileError(Path("<memory bank>"), "memory bank is empty: fit the model first")
        if self._tree is not None:
            d, i = self._tree.query(queries.double().cpu().numpy(), k=1, workers=torch.get_num_threads())
            return torch.from_numpy(d).float(), torch.from_numpy(i).long()
        dists = torch.empty(queries.shape[0], device=queries.device)
        idx = torch.empty(queries.shape[0], dtype=torch.long, device=queries.device)
        for start in range(0, queries.shape[0], chunk):
            q = queries[start : start + chunk]
            d2 = torch.addmm(bank_sq.unsqueeze(0), q, bank.T, alpha=-2.0)
            m, i = d2.min(1)
            dists[start : start + chunk] = (m + q.pow(2).sum(1)).clamp_min_(0).sqrt_()
            idx[start : start + chunk] = i
        return dists, idx

    @torch.no_grad()
    def _tile_scores(self, embedding: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(tile scores (B,), patch distance maps (B, 1, h, w)) for a batch of embeddings."""
        pc = self.patchcore
        b, d, h, w = embedding.shape
        flat = embedding.permute(0, 2, 3, 1).reshape(-1, d)
        # Belt pixels are zero after background subtraction: many rows are identical, score once.
        unique, inverse = torch.unique(flat, dim=0, return_inverse=True)
        ud, ui = self._nearest(unique)
        patch = ud[inverse].reshape(b, h * w)
        loc = ui[inverse].reshape(b, h * w)
        if pc.num_neighbors == 1:
            scores = patch.amax(1)
        else:
            # The paper's re-weighting (same formula as anomalib's compute_anomaly_score).
            rows = torch.arange(b, device=flat.device)
            worst = patch.argmax(1)
            worst_feat = flat.reshape(b, h * w, d)[rows, worst]
            score = patch[rows, worst]
            nn_sample = pc.memory_bank[loc[rows, worst]]
            k = min(pc.num_neighbors, pc.memory_bank.shape[0])
            nd2 = torch.addmm(self._bank_sq.unsqueeze(0), nn_sample, pc.memory_bank.T, alpha=-2.0)
            support = nd2.topk(k, largest=False, dim=1).indices
            dist = pc.euclidean_dist(worst_feat.unsqueeze(1), pc.memory_bank[support])
            weights = (1 - F.softmax(dist.squeeze(1), 1))[..., 0]
            scores = weights * score
        return scores, patch.reshape(b, 1, h, w)

    @torch.no_grad()
    def score_images(
        self, images: list[np.ndarray], with_maps: bool = False, batch_size: int = 8
    ) -> tuple[np.ndarray, list[np.ndarray] | None]:
        """Tile scores (and tile-size anomaly maps) for gray tile images."""
        scores: list[np.ndarray] = []
        maps: list[np.ndarray] | None = [] if with_maps else None
        for start in range(0, len(images), batch_size):
            part = images[start : start + batch_size]
            emb = self.embed(self.preprocess(part))
            s, patch = self._tile_scores(emb)
            scores.append(s.float().cpu().numpy())
            if maps is not None:
                tile = self.meta.tile_size
                amap = self.patchcore.anomaly_map_generator(patch, (tile, tile))[:, 0].float().cpu().numpy()
                for img, m in zip(part, amap, strict=True):
                    maps.append(np.ascontiguousarray(m[: img.shape[0], : img.shape[1]]))
        return (np.concatenate(scores) if scores else np.zeros(0, dtype=np.float32)), maps

    def score_tiles(self, tiles: list[Tile], with_maps: bool = False) -> ScreeningResult:
        """A frame's verdict from its ring tiles: the frame scores as its worst tile."""
        scores, maps = self.score_images([t.image for t in tiles], with_maps=with_maps)
        thr = self.threshold
        tile_scores = [TileScore(t.box, float(s), bool(s > thr)) for t, s in zip(tiles, scores, strict=True)]
        frame = float(scores.max()) if len(scores) else 0.0
        low = self.meta.marginal_threshold
        return ScreeningResult(
            score=frame,
            threshold=thr,
            flagged=frame > thr,
            marginal=bool(low is not None and low < frame <= thr),
            tiles=tile_scores,
            anomaly_maps=maps,
            marginal_threshold=None if low is None else float(low),
        )

    def score_frame(self, gray: np.ndarray, config: Any = None, with_maps: bool = False) -> ScreeningResult:
        """Convenience: ROI, the one tile grid, then :meth:`score_tiles` (no ring: an empty result)."""
        from oringscan.config import Config
        from oringscan.roi import find_ring
        from oringscan.tiling import ring_tiles

        config = config or Config()
        roi = find_ring(gray, config.roi)
        tiles, _ = ring_tiles(gray, roi, config) if roi.usable else ([], 0)
        return self.score_tiles(tiles, with_maps=with_maps)

    # ----------------------------------------------------------------------------- persistence
    def save(self, directory: Path) -> Path:
        """memory_bank.safetensors (bank + extractor weights) and metadata.json."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {"memory_bank": self.patchcore.memory_bank.detach().float().cpu().contiguous()}
        for k, v in self.patchcore.feature_extractor.state_dict().items():
            tensors[f"extractor.{k}"] = v.detach().cpu().contiguous()
        self.meta.versions = self.meta.versions or _versions()
        tmp = directory / (BANK_FILE + ".tmp")
        save_file(
            tensors, str(tmp), metadata={"oring_type": self.meta.oring_type, "backbone": self.meta.backbone}
        )
        tmp.replace(directory / BANK_FILE)
        self.save_meta(directory)
        return directory

    def save_meta(self, directory: Path) -> Path:
        """Write metadata.json atomically (recalibration rewrites only this file)."""
        path = Path(directory) / META_FILE
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.meta.to_json(), indent=2), encoding="utf-8")
        tmp.replace(path)
        return path

    @classmethod
    def from_config(
        cls, config: Config, workspace: TypeWorkspace, device: str | None = None, version: str | None = None
    ) -> ScreeningModel:
        """The type's model in use (see :attr:`TypeWorkspace.models`), on ``device`` or ``[screening] device``."""
        if getattr(config.pipeline, "runtime", "torch") == "onnx":
            from .onnx_export import OnnxScreeningModel  # the exported graph (oringscan export model)

            return OnnxScreeningModel.load(
                workspace.models_for(version).screening_dir, expected_type=workspace.oring_type
            )
        return cls.load(
            workspace.models_for(version).screening_dir,
            expected_type=workspace.oring_type,
            device=resolve_device(device or config.screening.device),
        )

    def describe(self) -> dict[str, Any]:
        """What this model was made from (stored with every run)."""
        keys = ("backbone", "threshold", "marginal_threshold", "train_fingerprint", "created")
        return {k: getattr(self.meta, k, None) for k in keys}

    @classmethod
    def load(
        cls, directory: Path | str, expected_type: str | None = None, device: str = "cpu"
    ) -> ScreeningModel:
        """Load a fitted model; a missing, corrupt or other-type model is a ModelFileError."""
        directory = Path(directory)
        meta_path, bank_path = directory / META_FILE, directory / BANK_FILE
        for p in (meta_path, bank_path):
            if not p.is_file():
                raise ModelFileError(p, "screening model file not found (run: oringscan train screening)")
        try:
            raw = json.loads(meta_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ModelFileError(meta_path, f"corrupt screening metadata ({exc})") from None
        meta = validate_meta(raw, meta_path)
        if meta.model != "patchcore" and cls is ScreeningModel:
            # PaDiM / FastFlow / EfficientAD (screening/alternatives.py): same files, same interface.
            from .alternatives import load_any_screening

            return load_any_screening(directory, expected_type=expected_type, device=device)
        if meta.format_version > FORMAT_VERSION:
            raise ModelFileError(meta_path, f"made by a newer oringscan (format {meta.format_version})")
        if expected_type is not None and meta.oring_type != expected_type:
            raise ModelFileError(
                meta_path, f"screening model is for o-ring type {meta.oring_type!r}, not {expected_type!r}"
            )
        try:
            from safetensors.torch import load_file

            tensors = load_file(str(bank_path))
        except Exception as exc:  # noqa: BLE001 - safetensors raises several types for bad files
            raise ModelFileError(bank_path, f"corrupt memory bank ({type(exc).__name__}: {exc})") from None
        bank = tensors.pop("memory_bank", None)
        if bank is None or bank.ndim != 2 or bank.shape[0] == 0:
            raise ModelFileError(bank_path, "memory bank missing or empty")
        if not torch.isfinite(bank).all():
            raise ModelFileError(bank_path, "memory bank holds NaN/inf values")
        try:
            patchcore, _ = build_patchcore(
                meta.backbone, meta.layers, meta.num_neighbors, weights=None, lookup=False
            )
        except Exception as exc:  # noqa: BLE001 - an unknown backbone name in the metadata
            raise ModelFileError(meta_path, f"cannot build backbone {meta.backbone!r}: {exc}") from None
        ext_state = {
            k.removeprefix("extractor."): v for k, v in tensors.items() if k.startswith("extractor.")
        }
        try:
            patchcore.feature_extractor.load_state_dict(ext_state, strict=True)
        except RuntimeError as exc:
            raise ModelFileError(
                bank_path, f"extractor weights do not match {meta.backbone}: {exc}"
            ) from None
        if meta.embedding_dim and bank.shape[1] != meta.embedding_dim:
            raise ModelFileError(
                bank_path, f"bank has {bank.shape[1]} dims, metadata says {meta.embedding_dim}"
            )
        model = cls(patchcore, meta, device=device)
        model.set_memory_bank(bank)
        return model


def light_ring(tile: np.ndarray, margin_px: int = 24) -> np.ndarray:
    """The tile with the ring made the light side (dark rings inverted), judged from the tile alone.

    Background-subtracted tiles are 0 beyond the ring's margin, so pixels next to the zero region are
    belt and pixels deep inside the non-zero region are ring. Types and stations differ in polarity;
    one orientation lets one memory bank cover both, and a hole is always darker than its ring.
    """
    inside = tile > 0
    if inside.all() or not inside.any():
        return tile
    depth = cv2.distanceTransform(inside.astype(np.uint8), cv2.DIST_L2, 3)
    belt = tile[(depth > 0) & (depth <= margin_px / 3)]
    ring = tile[depth > margin_px * 1.5]
    if belt.size < 50 or ring.size < 50:
        return tile
    if float(np.median(ring)) >= float(np.median(belt)):
        return tile
    out = tile.copy()
    out[inside] = np.maximum(255 - tile[inside], 1)  # 0 stays reserved for the subtracted belt
    return out


def quantile_higher(values: np.ndarray, q: float) -> float:
    """The smallest sample value with at least ``q`` of the samples at or below it."""
    v = np.sort(np.asarray(values, dtype=np.float64))
    if v.size == 0:
        return math.inf
    return float(v[min(v.size - 1, max(0, math.ceil(q * v.size) - 1))])
