"""Fitting: stream good train tiles into a bounded coreset, then calibrate on val frames."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from oringscan.config import Config
from oringscan.errors import ModelFileError

from .backbones import RINGTEXTURE
from .coreset import StreamingCoreset
from .data import TileRecord, fingerprint, good_frame_tiles, group_frames, iter_tile_batches, load_split
from .metrics import best_f1, frame_scores
from .model import ScreeningMeta, ScreeningModel, _versions, build_patchcore, quantile_higher, resolve_device

log = logging.getLogger(__name__)


def screening_dir(output_root: Path, model: str) -> Path:
    return Path(output_root) / model / "screening"


def new_model(config: Config, oring_type: str) -> ScreeningModel:
    """An unfitted model with the configured backbone (weights from local caches only)."""
    sc = config.screening
    patchcore, source = build_patchcore(sc.backbone, list(sc.layers_for_backbone()), sc.num_neighbors, sc.weights)
    meta = ScreeningMeta(
        oring_type=oring_type,
        backbone=sc.backbone,
        layers=list(sc.layers_for_backbone()),
        input_size=sc.input_size_for_backbone(config.tiling.tile_size),
        tile_size=config.tiling.tile_size,
        num_neighbors=sc.num_neighbors,
        threshold=math.inf,
        normalize_polarity=sc.normalize_polarity,
        pretrained=source is not None,
        weights_source=source,
    )
    return ScreeningModel(patchcore, meta, device=resolve_device(sc.device))


def fit_bank(
    model: ScreeningModel,
    records: list[TileRecord],
    config: Config,
    progress: bool = True,
) -> dict[str, Any]:
    """Stream ``records`` (tile files) through the extractor into the memory bank."""
    if not records:
        raise ModelFileError(Path("train"), "no good training tiles to fit the screening model on")
    batches = (images for _, images in iter_tile_batches(records, config.screening.batch_size))
    return fit_stream(model, batches, len(records), config, progress)


def fit_stream(
    model: ScreeningModel,
    batches: Iterable[list[np.ndarray]],
    n_tiles: int,
    config: Config,
    progress: bool = True,
) -> dict[str, Any]:
    """Fit from batches of gray tiles; memory is the bank plus one chunk, whatever ``n_tiles`` is."""
    sc = config.screening
    t0 = time.perf_counter()
    batches = iter(batches)
    first_images = next(batches)
    extractor = model.patchcore.feature_extractor
    if model.meta.backbone == RINGTEXTURE:
        extractor.set_scales(model.preprocess(first_images))
    first = model.embed(model.preprocess(first_images))
    per_tile = first.shape[2] * first.shape[3]
    total = per_tile * n_tiles
    target = min(sc.max_bank_size, max(1, math.ceil(sc.coreset_ratio * total)))
    stream = StreamingCoreset(
        dim=first.shape[1],
        target=target,
        total=total,
        chunk_rows=max(sc.chunk_rows, 2 * per_tile),
        proj_dim=sc.projection_dim or None,
        batch=sc.coreset_batch,
        seed=sc.seed,
    )
    bar = tqdm(total=n_tiles, desc=f"screening fit {model.meta.oring_type}", unit="tile", disable=not progress)

    def consume(emb: torch.Tensor, n: int) -> None:
        stream.add(emb.permute(0, 2, 3, 1).reshape(-1, emb.shape[1]).cpu())
        bar.update(n)
        bar.set_postfix(bank=stream.bank.shape[0])

    consume(first, len(first_images))
    for images in batches:
        consume(model.embed(model.preprocess(images)), len(images))
    bank = stream.finish()
    bar.close()
    model.set_memory_bank(bank)
    return {
        "patches_seen": int(stream.seen),
        "patches_per_tile": int(per_tile),
        "bank_size": int(bank.shape[0]),
        "fit_seconds": round(time.perf_counter() - t0, 2),
    }


def score_records(
    model: ScreeningModel, records: list[TileRecord], batch_size: int, progress: bool = False, desc: str = "scoring"
) -> np.ndarray:
    out = []
    bar = tqdm(total=len(records), desc=desc, unit="tile", disable=not progress)
    for part, images in iter_tile_batches(records, batch_size):
        s, _ = model.score_images(images, batch_size=batch_size)
        out.append(s)
        bar.update(len(part))
    bar.close()
    return np.concatenate(out) if out else np.zeros(0)


def calibrate(
    model: ScreeningModel, records: list[TileRecord], scores: np.ndarray, config: Config
) -> dict[str, Any]:
    """Threshold at the configured false-reject rate on good frames (frame score = worst tile)."""
    sc = config.screening
    fscores, fdefect, _ = frame_scores(records, scores)
    good = fscores[~fdefect]
    if good.size == 0:
        raise ModelFileError(Path("val"), "no good frames to calibrate the screening threshold on")
    thr = quantile_higher(good, 1.0 - sc.false_reject_rate)
    model.meta.threshold = thr
    model.meta.marginal_threshold = None if sc.marginal_fraction is None else thr * sc.marginal_fraction
    info: dict[str, Any] = {
        "false_reject_rate_target": sc.false_reject_rate,
        "threshold": thr,
        "marginal_threshold": model.meta.marginal_threshold,
        "n_frames": int(fscores.size),
        "n_good_frames": int(good.size),
        "good_frame_score_p50": float(np.median(good)),
        "good_frame_score_max": float(good.max()),
        "frame_false_reject_rate": float((good > thr).mean()),
    }
    tile_defect = np.array([r.is_defect for r in records])
    if tile_defect.any():
        info["frame_recall_at_threshold"] = float((fscores[fdefect] > thr).mean()) if fdefect.any() else None
        info["tile_recall_at_threshold"] = float((scores[tile_defect] > thr).mean())
        info["best_f1_tile"] = best_f1(scores, tile_defect)
        if fdefect.any():
            info["best_f1_frame"] = best_f1(fscores, fdefect)
    return info


def fit_screening(config: Config, output_root: Path, model: str, progress: bool = True) -> ScreeningModel:
    """Fit on the good train tiles, calibrate on val, save to ``output/<model>/screening/``."""
    config.oring_type(model)
    torch.manual_seed(config.screening.seed)
    train = load_split(output_root, model, "train")
    train_good = good_frame_tiles(train)
    if not train_good:
        train_good = [r for r in train if not r.is_defect]
        log.warning("%s: no all-good train frames; fitting on the defect frames' clean tiles", model)
    val = load_split(output_root, model, "val")
    calib = val
    if not any(not r.is_defect for r in good_frame_tiles(val)):
        # Tiny data sets: hold out a fifth of the good train frames for the threshold.
        frames = sorted(group_frames(train_good))
        rng = np.random.default_rng(config.screening.seed)
        held = set(rng.choice(frames, size=max(1, len(frames) // 5), replace=False).tolist()) if len(frames) > 1 else set()
        if not held:
            raise ModelFileError(Path(output_root) / model, "not enough good frames to fit and calibrate screening")
        log.warning("%s: no good val frames; calibrating on %d held-out good train frames", model, len(held))
        calib = [r for r in train_good if r.source in held] + [r for r in val if r.is_defect]
        train_good = [r for r in train_good if r.source not in held]
    screen = new_model(config, model)
    stats = fit_bank(screen, train_good, config, progress=progress)
    calib_scores = score_records(screen, calib, config.screening.batch_size, progress, desc=f"calibrating {model}")
    calibration = calibrate(screen, calib, calib_scores, config)
    meta = screen.meta
    meta.calibration = {**calibration, **stats}
    meta.n_train_tiles = len(train_good)
    meta.n_train_frames = len(group_frames(train_good))
    meta.train_fingerprint = fingerprint(train_good, extra=config.screening.model_dump_json())
    meta.versions = _versions()
    meta.created = datetime.now(UTC).isoformat(timespec="seconds")
    screen.save(screening_dir(output_root, model))
    return screen
