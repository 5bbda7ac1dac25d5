"""Fitting: stream good train tiles into a bounded coreset; thresholds cross-fitted on every good frame."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from oringscan.budget import split_false_reject_budget
from oringscan.config import Config
from oringscan.errors import ModelFileError
from oringscan.timeutil import utc_iso

from .backbones import RINGTEXTURE
from .calibration import calibrate_good_scores, history_entry, ring_size, size_profile
from .coreset import StreamingCoreset
from .data import (
    TileRecord,
    fingerprint,
    good_frame_tiles,
    group_frames,
    iter_tile_batches,
    load_split,
    read_tile,
)
from .metrics import best_f1, frame_scores
from .model import ScreeningMeta, ScreeningModel, _versions, build_patchcore, quantile_higher, resolve_device
from .shape import fit_shape_screen, flag_rates

log = logging.getLogger(__name__)


def screening_dir(output_root: Path, oring_type: str) -> Path:
    """Where a type's screening model lives (see :mod:`oringscan.workspace`)."""
    from oringscan.workspace import TypeWorkspace

    return TypeWorkspace(Path(output_root), oring_type).screening_dir


def new_model(config: Config, oring_type: str) -> ScreeningModel:
    """An unfitted model with the configured backbone (weights from local caches only)."""
    sc = config.screening
    patchcore, source = build_patchcore(
        sc.backbone, list(sc.layers_for_backbone()), sc.num_neighbors, sc.weights
    )
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
    bar = tqdm(
        total=n_tiles, desc=f"screening fit {model.meta.oring_type}", unit="tile", disable=not progress
    )

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
    model: ScreeningModel,
    records: list[TileRecord],
    batch_size: int,
    progress: bool = False,
    desc: str = "scoring",
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
    """The old calibration, kept for comparison (benchmarks): the empirical quantile of the given
    good frames' scores (scored by the final bank, so biased low on few frames), fixed marginal band."""
    sc = config.screening
    rate = split_false_reject_budget(config).screening
    fscores, fdefect, _ = frame_scores(records, scores)
    good = fscores[~fdefect]
    if good.size == 0:
        raise ModelFileError(Path("val"), "no good frames to calibrate the screening threshold on")
    thr = quantile_higher(good, 1.0 - rate)
    fraction = 0.9 if sc.marginal_fraction is None else sc.marginal_fraction
    model.meta.threshold = thr
    model.meta.marginal_threshold = thr * fraction
    info: dict[str, Any] = {
        "method": "empirical quantile of val frames (old)",
        "false_reject_rate_target": rate,
        "threshold": thr,
        "marginal_threshold": model.meta.marginal_threshold,
        "n_frames": int(fscores.size),
        "n_good_frames": int(good.size),
        "good_frame_score_p50": float(np.median(good)),
        "good_frame_score_max": float(good.max()),
        "frame_false_reject_rate": float((good > thr).mean()),
    }
    info.update(_defect_info(records, scores, thr))
    return info


def _defect_info(records: list[TileRecord], scores: np.ndarray, thr: float) -> dict[str, Any]:
    """Recall and best F1 on labelled frames (when there are any) at threshold ``thr``."""
    info: dict[str, Any] = {}
    if not records:
        return info
    fscores, fdefect, _ = frame_scores(records, scores)
    tile_defect = np.array([r.is_defect for r in records])
    if tile_defect.any():
        info["frame_recall_at_threshold"] = float((fscores[fdefect] > thr).mean()) if fdefect.any() else None
        info["tile_recall_at_threshold"] = float((scores[tile_defect] > thr).mean())
        info["best_f1_tile"] = best_f1(scores, tile_defect)
        if fdefect.any() and (~fdefect).any():
            info["best_f1_frame"] = best_f1(fscores, fdefect)
    return info


def assign_folds(frames: list[str], k: int, seed: int) -> dict[str, int]:
    """Source frame -> fold (0..k-1), seeded, as even as possible (tiles of a frame share a fold)."""
    order = np.random.default_rng(seed).permutation(len(frames))
    return {frames[i]: int(j % k) for j, i in enumerate(order)}


def cross_fit(
    model: ScreeningModel,
    pool: list[TileRecord],
    in_final: list[bool],
    config: Config,
    progress: bool = True,
) -> tuple[dict[str, float], dict[str, Any]]:
    """Out-of-fold worst-tile score of every good frame in ``pool``, and the final bank.

    One pass of the extractor feeds k+1 streaming coresets: fold f's bank gets every tile not in
    fold f, the final bank every tile flagged ``in_final`` (the good train tiles). Each fold's frames
    are then scored by their fold's bank; the model is left holding the final bank.
    """
    sc = config.screening
    t0 = time.perf_counter()
    frames = sorted(group_frames(pool))
    k = min(sc.calibration_folds, len(frames))
    if k < 2:
        raise ModelFileError(
            Path("train"), f"{len(frames)} good frame(s): at least 2 are needed to cross-fit a threshold"
        )
    fold_of = assign_folds(frames, k, sc.seed)
    folds = np.array([fold_of[r.source] for r in pool])
    final_mask = np.asarray(in_final, dtype=bool)
    if not final_mask.any():
        raise ModelFileError(Path("train"), "no good training tiles to fit the screening model on")
    batch = sc.batch_size
    extractor = model.patchcore.feature_extractor
    streams: list[StreamingCoreset] = []
    per_tile = 0
    bar = tqdm(
        total=len(pool),
        desc=f"screening fit {model.meta.oring_type} ({k} folds)",
        unit="tile",
        disable=not progress,
    )
    left = {name: len(idx) for name, idx in group_frames(pool).items()}
    pending: dict[str, list[tuple[int, int, np.ndarray]]] = {}
    sizes: list[tuple[float, float]] = []
    for start in range(0, len(pool), batch):
        part = pool[start : start + batch]
        images = [read_tile(r.path) for r in part]
        for r, img in zip(part, images, strict=True):
            pending.setdefault(r.source, []).append((r.tile_x, r.tile_y, img))
            left[r.source] -= 1
            if left[r.source] == 0:
                sizes.append(ring_size(pending.pop(r.source)))
        x = model.preprocess(images)
        if not streams and model.meta.backbone == RINGTEXTURE:
            extractor.set_scales(x)
        emb = model.embed(x)
        flat = emb.permute(0, 2, 3, 1).reshape(len(part), -1, emb.shape[1]).cpu()
        if not streams:
            per_tile = flat.shape[1]
            counts = [int((folds != f).sum()) for f in range(k)] + [int(final_mask.sum())]
            for i, n_tiles in enumerate(counts):
                total = per_tile * n_tiles
                target = min(sc.max_bank_size, max(1, math.ceil(sc.coreset_ratio * total)))
                streams.append(
                    StreamingCoreset(
                        dim=flat.shape[2],
                        target=target,
                        total=total,
                        chunk_rows=max(sc.chunk_rows, 2 * per_tile),
                        proj_dim=sc.projection_dim or None,
                        batch=sc.coreset_batch,
                        seed=sc.seed + i,
                    )
                )
        for j in range(len(part)):
            idx = start + j
            for f in range(k):
                if folds[idx] != f:
                    streams[f].add(flat[j])
            if final_mask[idx]:
                streams[k].add(flat[j])
        bar.update(len(part))
    bar.close()
    banks = [s.finish() for s in streams]
    oof: dict[str, float] = {}
    for f in range(k):
        model.set_memory_bank(banks[f])
        members = [r for r, g in zip(pool, folds, strict=True) if g == f]
        scores = score_records(model, members, batch, progress, desc=f"cross-fit fold {f + 1}/{k}")
        fs, _, names = frame_scores(members, scores)
        oof.update(zip(names, (float(v) for v in fs), strict=True))
    model.set_memory_bank(banks[k])
    stats = {
        "patches_seen": int(streams[k].seen),
        "patches_per_tile": int(per_tile),
        "bank_size": int(banks[k].shape[0]),
        "folds": k,
        "fold_bank_sizes": [int(b.shape[0]) for b in banks[:k]],
        "fit_seconds": round(time.perf_counter() - t0, 2),
        "ring_size": size_profile(sizes),
    }
    return oof, stats


def calibrate_thresholds(
    model: ScreeningModel, oof: dict[str, float], config: Config, flag_rate: float | None = None
) -> dict[str, Any]:
    """Set the model's two thresholds from out-of-fold good frame scores (the line's budget shares).

    ``flag_rate``: the texture threshold's share when a ring-shape screen takes part of screening's
    (:func:`oringscan.screening.shape.flag_rates`); None: all of it.
    """
    sc = config.screening
    budget = split_false_reject_budget(config)
    review = budget.review if (sc.review_rate is not None or sc.marginal_fraction is None) else None
    names = sorted(oof)
    info = calibrate_good_scores(
        [oof[n] for n in names],
        names,
        budget.screening if flag_rate is None else flag_rate,
        review,
        marginal_fraction=sc.marginal_fraction,
        tail_fraction=sc.tail_fraction,
        min_tail_points=sc.min_tail_points,
        confidence=sc.confidence,
        seed=sc.seed,
    )
    info["false_reject_budget"] = budget.as_dict()
    model.meta.threshold = float(info["threshold"])
    model.meta.marginal_threshold = (
        None if info["marginal_threshold"] is None else float(info["marginal_threshold"])
    )
    return info


def fit_screening(
    config: Config,
    output_root: Path,
    oring_type: str,
    progress: bool = True,
    directory: Path | None = None,
    data_root: Path | None = None,
) -> ScreeningModel:
    """Fit the bank on the good train tiles, cross-fit thresholds on every good train+val frame, save
    to ``output/<model>/screening/`` (or ``directory``). ``[screening] model`` other than patchcore:
    :func:`oringscan.screening.alternatives.fit_alternative` (same data, calibration and files).

    With ``data_root`` (where the source frames are) and ``screening.shape_share`` > 0, the same good
    frames are measured and the ring-shape screen is calibrated too (``screening/shape.py``)."""
    if config.screening.model != "patchcore":
        from .alternatives import fit_alternative

        return fit_alternative(config, output_root, oring_type, directory, progress)
    config.oring_type(oring_type)
    torch.manual_seed(config.screening.seed)
    split_false_reject_budget(config)  # a budget the explicit settings overrun fails before any work
    train = load_split(output_root, oring_type, "train")
    train_good = good_frame_tiles(train)
    if not train_good:
        train_good = [r for r in train if not r.is_defect]
        log.warning("%s: no all-good train frames; fitting on the defect frames' clean tiles", oring_type)
    val = load_split(output_root, oring_type, "val")
    val_good = good_frame_tiles(val)
    bad_sources = {r.source for r in val if r.is_defect}
    val_defect = [r for r in val if r.source in bad_sources]
    pool = train_good + val_good
    screen = new_model(config, oring_type)
    oof, stats = cross_fit(screen, pool, [True] * len(train_good) + [False] * len(val_good), config, progress)
    texture_rate, shape_rate = flag_rates(config)
    shape = None
    if shape_rate > 0 and data_root is not None:
        shape = fit_shape_screen(
            config, output_root, oring_type, sorted(group_frames(pool)), data_root, progress
        )
    calibration = calibrate_thresholds(screen, oof, config, flag_rate=texture_rate)
    if shape is not None:
        calibration["shape_screen"] = shape.to_json()
        log.info("%s: %s", oring_type, shape.info["statement"])
    if val_defect:
        scores = score_records(
            screen, val_defect, config.screening.batch_size, progress, desc=f"val defects {oring_type}"
        )
        calibration.update(_defect_info(val_defect, scores, screen.meta.threshold))
    meta = screen.meta
    meta.calibration = {**calibration, **stats}
    meta.oof_scores = {k: round(v, 6) for k, v in sorted(oof.items())}
    meta.n_train_tiles = len(train_good)
    meta.n_train_frames = len(group_frames(train_good))
    meta.train_fingerprint = fingerprint(train_good, extra=config.screening.model_dump_json())
    meta.versions = _versions()
    meta.created = utc_iso()
    meta.history = [history_entry({}, calibration, sorted(oof), "train screening")]
    screen.save(Path(directory) if directory is not None else screening_dir(output_root, oring_type))
    log.info("%s: %s", oring_type, calibration["statement"])
    return screen
