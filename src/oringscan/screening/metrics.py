"""Small, dependency-free detection metrics (AUROC, ROC, best F1, frame aggregation)."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.stats import rankdata

from .data import TileRecord, group_frames

# Defect size bins by labelled area (px^2): "few px" holes up to ~10 px across, "tens of px" up to ~50 px.
SIZE_BINS: tuple[tuple[str, float, float], ...] = (
    ("few_px", 0.0, 100.0),
    ("tens_of_px", 100.0, 2500.0),
    ("large", 2500.0, float("inf")),
)


def auroc(scores: np.ndarray, positive: np.ndarray) -> float | None:
    """Mann-Whitney AUROC (ties count half); None when one class is missing."""
    scores, positive = np.asarray(scores, dtype=np.float64), np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = rankdata(scores)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def roc_curve(scores: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(false positive rate, true positive rate, thresholds), flagged meaning score > threshold."""
    scores, positive = np.asarray(scores, dtype=np.float64), np.asarray(positive, dtype=bool)
    thresholds = np.concatenate([[np.inf], np.unique(scores)[::-1], [-np.inf]])
    n_pos, n_neg = max(1, int(positive.sum())), max(1, int((~positive).sum()))
    tpr = np.array([(scores[positive] >= t).sum() / n_pos for t in thresholds])
    fpr = np.array([(scores[~positive] >= t).sum() / n_neg for t in thresholds])
    return fpr, tpr, thresholds


def best_f1(scores: np.ndarray, positive: np.ndarray) -> dict[str, float]:
    """The threshold (flag when score >= it) with the best F1, and its precision and recall."""
    scores, positive = np.asarray(scores, dtype=np.float64), np.asarray(positive, dtype=bool)
    best = {"f1": 0.0, "threshold": float("inf"), "precision": 0.0, "recall": 0.0}
    for t in np.unique(scores):
        flagged = scores >= t
        tp = int((flagged & positive).sum())
        if tp == 0:
            continue
        precision, recall = tp / int(flagged.sum()), tp / max(1, int(positive.sum()))
        f1 = 2 * precision * recall / (precision + recall)
        if f1 > best["f1"]:
            best = {"f1": f1, "threshold": float(t), "precision": precision, "recall": recall}
    return best


def frame_scores(records: list[TileRecord], scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(worst-tile score per frame, frame has a labelled defect, frame names)."""
    frames = group_frames(records)
    names = sorted(frames)
    fs = np.array([max(float(scores[i]) for i in frames[n]) for n in names])
    fd = np.array([any(records[i].is_defect for i in frames[n]) for n in names], dtype=bool)
    return fs, fd, names


def recall_at(scores: np.ndarray, positive: np.ndarray, threshold: float) -> float | None:
    positive = np.asarray(positive, dtype=bool)
    return float((np.asarray(scores)[positive] > threshold).mean()) if positive.any() else None


def recall_at_frr(scores: np.ndarray, positive: np.ndarray, frr: float) -> tuple[float | None, float]:
    """Recall when the threshold lets at most ``frr`` of the negatives through as flagged."""
    from .model import quantile_higher

    positive = np.asarray(positive, dtype=bool)
    thr = quantile_higher(np.asarray(scores)[~positive], 1.0 - frr)
    return recall_at(scores, positive, thr), thr


def recall_by_size(records: list[TileRecord], scores: np.ndarray, threshold: float) -> dict[str, Any]:
    """Share of labelled defects (per tile) whose tile is flagged, by defect area."""
    out: dict[str, Any] = {}
    for name, lo, hi in SIZE_BINS:
        hits = [
            bool(scores[i] > threshold) for i, r in enumerate(records) for a in r.defect_areas if lo <= a < hi
        ]
        out[name] = {"n": len(hits), "recall": (sum(hits) / len(hits)) if hits else None, "area_px": [lo, hi]}
    return out
